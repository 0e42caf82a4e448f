//! `struct sockaddr` in and out, checked as Linux checks it.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use libc::{c_int, sockaddr, sockaddr_in, sockaddr_in6, socklen_t};
use ustack::Domain;

/// Linux's SIN6_LEN_RFC2133: a sockaddr_in6 without its scope id is accepted.
const SIN6_LEN_RFC2133: usize = 24;

/// The address a caller passed for a socket of `domain`: EFAULT for null, EINVAL if too
/// short (or longer than any sockaddr), EAFNOSUPPORT for another family — except that an
/// AF_INET6 datagram socket takes a sockaddr_in (`dgram_v4`), as Linux's UDP does.
///
/// # Safety
/// `addr` must point to `len` readable bytes, or be null.
pub unsafe fn read(domain: Domain, addr: *const sockaddr, len: socklen_t, dgram_v4: bool) -> Result<SocketAddr, c_int> {
    let len = len as usize;
    if len > size_of::<libc::sockaddr_storage>() {
        return Err(libc::EINVAL);
    }
    if addr.is_null() {
        return Err(if len == 0 { libc::EINVAL } else { libc::EFAULT });
    }
    if len < size_of::<libc::sa_family_t>() {
        return Err(libc::EINVAL);
    }
    // SAFETY: at least the family's bytes are readable.
    let family = c_int::from(unsafe { addr.cast::<libc::sa_family_t>().read_unaligned() });
    let v4 = |len: usize| -> Result<SocketAddr, c_int> {
        if len < size_of::<sockaddr_in>() {
            return Err(libc::EINVAL);
        }
        // SAFETY: `len` bytes are readable, enough for a sockaddr_in.
        let sin = unsafe { addr.cast::<sockaddr_in>().read_unaligned() };
        let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        Ok(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
    };
    match domain {
        Domain::Inet => {
            if len < size_of::<sockaddr_in>() {
                return Err(libc::EINVAL);
            }
            if family != libc::AF_INET {
                return Err(libc::EAFNOSUPPORT);
            }
            v4(len)
        }
        Domain::Inet6 => {
            if family == libc::AF_INET && dgram_v4 {
                return v4(len);
            }
            if len < SIN6_LEN_RFC2133 {
                return Err(libc::EINVAL);
            }
            if family != libc::AF_INET6 {
                return Err(libc::EAFNOSUPPORT);
            }
            let mut sin6: sockaddr_in6 = unsafe { std::mem::zeroed() };
            // SAFETY: `len` (>= 24) bytes are readable; at most a sockaddr_in6 is copied.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    addr.cast::<u8>(),
                    (&mut sin6 as *mut sockaddr_in6).cast::<u8>(),
                    len.min(size_of::<sockaddr_in6>()),
                )
            };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Ok(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                u32::from_be(sin6.sin6_flowinfo),
                sin6.sin6_scope_id,
            )))
        }
    }
}

/// Writes `value` where accept/getsockname/recvfrom give an address: cut to `*len` bytes,
/// `*len` set to the full size (as Linux). A null `addr` wants none; a null `len` with an
/// address is EFAULT, a negative one EINVAL.
///
/// # Safety
/// `addr` must point to `*len` writable bytes and `len` to a socklen_t, or be null.
pub unsafe fn write(value: SocketAddr, addr: *mut sockaddr, len: *mut socklen_t) -> Result<(), c_int> {
    if addr.is_null() {
        return Ok(());
    }
    if len.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: see the function's contract.
    let room = unsafe { len.read_unaligned() } as i32;
    if room < 0 {
        return Err(libc::EINVAL);
    }
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let size = match value {
        SocketAddr::V4(v4) => {
            let sin = sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: a sockaddr_in fits in a sockaddr_storage.
            unsafe { (&mut storage as *mut libc::sockaddr_storage).cast::<sockaddr_in>().write(sin) };
            size_of::<sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo().to_be(),
                sin6_addr: libc::in6_addr { s6_addr: v6.ip().octets() },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: a sockaddr_in6 fits in a sockaddr_storage.
            unsafe { (&mut storage as *mut libc::sockaddr_storage).cast::<sockaddr_in6>().write(sin6) };
            size_of::<sockaddr_in6>()
        }
    };
    let n = size.min(room as usize);
    // SAFETY: see the function's contract; n <= *len.
    unsafe {
        std::ptr::copy_nonoverlapping((&storage as *const libc::sockaddr_storage).cast::<u8>(), addr.cast::<u8>(), n);
        len.write_unaligned(size as socklen_t);
    }
    Ok(())
}
