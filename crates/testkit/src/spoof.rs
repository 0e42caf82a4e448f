//! Raw IPv4 packets sent through the kernel from inside a namespace, with any source
//! address: spoofed SYNs whose answers go nowhere.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A raw IPv4 socket that sends whole packets, IP header included (IPPROTO_RAW).
pub fn raw_ipv4_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked and owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_RAW) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is fresh and ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `packet` (an IPv4 packet) through `socket`, routed to `to`.
pub fn send_ipv4(socket: &OwnedFd, packet: &[u8], to: [u8; 4]) -> io::Result<()> {
    // SAFETY: all-zero is a valid sockaddr_in; the fields are set below.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    addr.sin_family = libc::AF_INET as _;
    addr.sin_addr.s_addr = u32::from_ne_bytes(to);
    // SAFETY: packet and addr are valid for the lengths given.
    let n = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}
