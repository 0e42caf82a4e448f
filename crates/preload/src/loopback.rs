//! Loopback is the kernel's. A Linux process reaches its host's local services at
//! 127.0.0.1 and ::1; ustack's stack has no loopback of its own to offer them (its packets
//! to 127.0.0.1 would go out of the TUN and be dropped by the kernel as martians). So a
//! ustack socket that is bound or connected to a loopback address is handed to the kernel
//! first: a kernel socket of the same family and type, with the options set so far and the
//! fd's flags, takes the program's fd number (dup3), and the ustack socket is let go.

use std::net::{IpAddr, SocketAddr};

use libc::{c_int, c_void, socklen_t};
use ustack::{Domain, Type};

use crate::real;
use crate::table::{self, Sock};

pub fn is_loopback(addr: &SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// Whether the socket has no local address yet (a connect to loopback can still move it).
pub fn unbound(sock: &Sock) -> bool {
    sock.socket.local_addr().is_ok_and(|a| a.port() == 0)
}

/// Makes `fd` a kernel socket in place of `sock` (see the module's documentation).
pub fn hand_to_kernel(sock: &Sock, fd: c_int) -> Result<(), c_int> {
    let domain = if sock.domain == Domain::Inet6 { libc::AF_INET6 } else { libc::AF_INET };
    let ty = if sock.ty == Type::Stream { libc::SOCK_STREAM } else { libc::SOCK_DGRAM };
    // SAFETY: plain calls on fds this function owns or the caller passed.
    unsafe {
        let kernel = real::socket(domain, ty | libc::SOCK_CLOEXEC, 0);
        if kernel < 0 {
            return Err(table::last_errno());
        }
        let o = sock.options().clone();
        let int = |level: c_int, name: c_int, value: c_int| {
            real::setsockopt(kernel, level, name, (&value as *const c_int).cast::<c_void>(), 4);
        };
        int(libc::SOL_SOCKET, libc::SO_REUSEADDR, o.reuseaddr.into());
        int(libc::SOL_SOCKET, libc::SO_REUSEPORT, o.reuseport.into());
        int(libc::SOL_SOCKET, libc::SO_KEEPALIVE, o.keepalive.into());
        int(libc::SOL_SOCKET, libc::SO_BROADCAST, o.broadcast.into());
        if domain == libc::AF_INET6 {
            int(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, o.v6only.into());
        }
        if ty == libc::SOCK_STREAM {
            int(libc::IPPROTO_TCP, libc::TCP_NODELAY, o.nodelay.into());
        }
        let linger = libc::linger { l_onoff: o.linger.0.into(), l_linger: o.linger.1 };
        real::setsockopt(
            kernel,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast::<c_void>(),
            size_of::<libc::linger>() as socklen_t,
        );
        for (name, timeout) in [(libc::SO_RCVTIMEO, o.rcvtimeo), (libc::SO_SNDTIMEO, o.sndtimeo)] {
            let t = timeout.unwrap_or_default();
            let tv = libc::timeval { tv_sec: t.as_secs() as _, tv_usec: t.subsec_micros() as _ };
            real::setsockopt(
                kernel,
                libc::SOL_SOCKET,
                name,
                (&tv as *const libc::timeval).cast::<c_void>(),
                size_of::<libc::timeval>() as socklen_t,
            );
        }
        if table::is_nonblocking(fd) {
            real::fcntl(kernel, libc::F_SETFL, (libc::O_RDWR | libc::O_NONBLOCK) as usize);
        }
        let cloexec = real::fcntl(fd, libc::F_GETFD, 0) & libc::FD_CLOEXEC != 0;
        let moved = real::dup3(kernel, fd, if cloexec { libc::O_CLOEXEC } else { 0 });
        let failed = table::last_errno();
        real::close(kernel);
        if moved < 0 {
            return Err(failed);
        }
    }
    table::remove(fd);
    Ok(())
}
