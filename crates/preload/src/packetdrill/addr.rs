//! `struct sockaddr` to and from [`SocketAddr`], checked as the kernel checks them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use libc::{c_int, sa_family_t, sockaddr, sockaddr_in, sockaddr_in6, socklen_t};

/// Reads the address at `addr` (`len` bytes): EINVAL if too short for its family (or for
/// a sockaddr_in), EAFNOSUPPORT for a family other than AF_INET and AF_INET6.
///
/// # Safety
/// `addr` must be null or point to `len` readable bytes.
pub unsafe fn read(addr: *const sockaddr, len: socklen_t) -> Result<SocketAddr, c_int> {
    if addr.is_null() {
        return Err(libc::EFAULT);
    }
    let len = len as usize;
    if len < std::mem::size_of::<sa_family_t>() {
        return Err(libc::EINVAL);
    }
    // SAFETY: at least the family is readable (checked above); unaligned reads throughout.
    let family = unsafe { std::ptr::read_unaligned(addr.cast::<sa_family_t>()) };
    match c_int::from(family) {
        libc::AF_INET if len >= std::mem::size_of::<sockaddr_in>() => {
            // SAFETY: `len` covers a sockaddr_in.
            let sin = unsafe { std::ptr::read_unaligned(addr.cast::<sockaddr_in>()) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Ok(SocketAddr::new(IpAddr::V4(ip), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<sockaddr_in6>() => {
            // SAFETY: `len` covers a sockaddr_in6.
            let sin6 = unsafe { std::ptr::read_unaligned(addr.cast::<sockaddr_in6>()) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Ok(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        // Linux checks the length before the family.
        _ if len < std::mem::size_of::<sockaddr_in>() => Err(libc::EINVAL),
        libc::AF_INET | libc::AF_INET6 => Err(libc::EINVAL),
        _ => Err(libc::EAFNOSUPPORT),
    }
}

/// Writes `from` to `addr` as accept() and recvfrom() do: truncated to `*len` bytes, with
/// `*len` set to the address's full size. Nothing if `addr` or `len` is null.
///
/// # Safety
/// `addr` and `len` must be null or valid, `addr` for `*len` bytes.
pub unsafe fn write(from: SocketAddr, addr: *mut sockaddr, len: *mut socklen_t) {
    if addr.is_null() || len.is_null() {
        return;
    }
    // SAFETY: plain C structs, all zeroes valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let size = match from {
        SocketAddr::V4(v4) => {
            let sin = sockaddr_in {
                sin_family: libc::AF_INET as sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: a sockaddr_storage holds any sockaddr.
            unsafe { std::ptr::write_unaligned((&raw mut storage).cast::<sockaddr_in>(), sin) };
            std::mem::size_of::<sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = sockaddr_in6 {
                sin6_family: libc::AF_INET6 as sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: v6.ip().octets() },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: as above.
            unsafe { std::ptr::write_unaligned((&raw mut storage).cast::<sockaddr_in6>(), sin6) };
            std::mem::size_of::<sockaddr_in6>()
        }
    };
    // SAFETY: the caller gives `*len` writable bytes at `addr`.
    unsafe {
        let room = (*len as usize).min(size);
        std::ptr::copy_nonoverlapping((&raw const storage).cast::<u8>(), addr.cast::<u8>(), room);
        *len = size as socklen_t;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_survive_the_round_trip_and_short_buffers_are_truncated() {
        for text in ["10.0.0.1:8080", "[fd00::1]:443"] {
            let addr: SocketAddr = text.parse().unwrap();
            let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of_val(&storage) as socklen_t;
            unsafe { write(addr, (&raw mut storage).cast(), &mut len) };
            assert_eq!(unsafe { read((&raw const storage).cast(), len) }, Ok(addr));
        }
        let mut short = [0u8; 4];
        let mut len = 4;
        unsafe { write("10.0.0.1:8080".parse().unwrap(), short.as_mut_ptr().cast(), &mut len) };
        assert_eq!(len as usize, std::mem::size_of::<sockaddr_in>());
        assert_eq!(u16::from_ne_bytes([short[0], short[1]]), libc::AF_INET as u16);
    }

    #[test]
    fn bad_addresses_get_the_kernels_errors() {
        let unix = libc::AF_UNIX as sa_family_t;
        assert_eq!(unsafe { read((&raw const unix).cast(), 16) }, Err(libc::EAFNOSUPPORT));
        let inet = [libc::AF_INET as u8, 0, 0, 0];
        assert_eq!(unsafe { read(inet.as_ptr().cast(), 4) }, Err(libc::EINVAL));
        assert_eq!(unsafe { read(std::ptr::null(), 16) }, Err(libc::EFAULT));
    }
}
