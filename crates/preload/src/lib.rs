//! `libustack_preload.so`: loaded with `LD_PRELOAD` (as `ustack run` does), it serves a
//! program's AF_INET and AF_INET6 stream and datagram sockets from a ustack stack inside
//! the program, on the TUN `ustack run` opened; every other call (files, pipes, AF_UNIX,
//! netlink) goes to libc unchanged. docs/preload.md describes the design.
//!
//! The same library exports packetdrill's shared-object interface ([`packetdrill`],
//! docs/packetdrill.md): an engine on a virtual clock, with no TUN, for packetdrill's
//! `--so_filename`.
//!
//! Every exported function catches panics (a panic must not unwind into C): the call fails
//! with EIO and one line on standard error. Pointers from the caller are checked where
//! Linux checks them (null: EFAULT; short lengths: EINVAL).

use std::io::Write as _;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use libc::{c_int, c_ulong, c_void, iovec, msghdr, size_t, sockaddr, socklen_t, ssize_t};
use ustack::{Domain, Errno, Shutdown, Socket, Type};

mod addr;
mod demux;
mod init;
mod loopback;
mod options;
pub mod packetdrill;
mod real;
mod table;

use table::{Sock, Way, lookup};

fn set_errno(code: c_int) {
    // SAFETY: the calling thread's errno.
    unsafe { *libc::__errno_location() = code };
}

/// Runs one call: Ok is returned, Err(errno) sets errno and returns `fail`, a panic is
/// reported in one line and fails with EIO.
fn entry<T>(fail: T, call: impl FnOnce() -> Result<T, c_int>) -> T {
    one_line_panics();
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(Ok(value)) => value,
        Ok(Err(code)) => {
            set_errno(code);
            fail
        }
        Err(_) => {
            set_errno(libc::EIO);
            fail
        }
    }
}

/// A panic is reported in one line on standard error (the default report is several).
fn one_line_panics() {
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let line = format!("ustack: internal error (panic) at {info}: the call fails with EIO");
            let _ = writeln!(std::io::stderr(), "{}", line.replace('\n', " ").trim_end());
        }))
    });
}

/// The table's bookkeeping after a libc call (close, dup, F_DUPFD): a panic in it is
/// reported and goes no further; the libc call's result and errno stand.
fn bookkeeping(f: impl FnOnce()) {
    one_line_panics();
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let _ = catch_unwind(AssertUnwindSafe(f));
    set_errno(errno);
}

/// A call on `fd`: on a ustack socket `call`, on anything else `pass` (libc).
fn on_fd<T>(
    fd: c_int,
    what: &str,
    fail: T,
    pass: impl FnOnce() -> T,
    call: impl FnOnce(&Arc<Sock>) -> Result<T, c_int>,
) -> T {
    let Some(sock) = lookup(fd) else { return pass() };
    if table::forked() {
        let code = table::refuse_in_child(&format!("{what}() on fd {fd}"));
        set_errno(code);
        return fail;
    }
    entry(fail, || call(&sock))
}

/// A libc call's result as a call's: -1 is its errno.
fn kernel_result(result: c_int) -> Result<c_int, c_int> {
    if result < 0 { Err(table::last_errno()) } else { Ok(result) }
}

fn ok(result: Result<(), Errno>) -> Result<c_int, c_int> {
    result.map(|()| 0).map_err(Errno::code)
}

/// Raises SIGPIPE for an EPIPE, as Linux does unless MSG_NOSIGNAL.
fn epipe(result: Result<usize, c_int>, flags: c_int) -> Result<usize, c_int> {
    if result == Err(libc::EPIPE) && flags & libc::MSG_NOSIGNAL == 0 {
        // SAFETY: raise has no memory preconditions.
        unsafe { libc::raise(libc::SIGPIPE) };
    }
    result
}

fn domain_of(domain: c_int) -> Option<Domain> {
    match domain {
        libc::AF_INET => Some(Domain::Inet),
        libc::AF_INET6 => Some(Domain::Inet6),
        _ => None,
    }
}

// ---- socket, bind, listen, accept, connect ----

#[unsafe(no_mangle)]
pub extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    let flags = ty & (libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    let kind = match ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) {
        libc::SOCK_STREAM if matches!(protocol, 0 | libc::IPPROTO_TCP) => Some(Type::Stream),
        libc::SOCK_DGRAM if matches!(protocol, 0 | libc::IPPROTO_UDP) => Some(Type::Dgram),
        _ => None,
    };
    let (Some(family), Some(kind)) = (domain_of(domain), kind) else {
        // SAFETY: libc's socket with the caller's arguments.
        return unsafe { real::socket(domain, ty, protocol) };
    };
    if table::forked() {
        set_errno(table::refuse_in_child("socket()"));
        return -1;
    }
    entry(-1, || {
        let stack = init::stack().map_err(|_| libc::EAFNOSUPPORT)?;
        let socket = Socket::new(stack, family, kind).map_err(Errno::code)?;
        Sock::open(socket, family, kind, flags).map(|(fd, _)| fd)
    })
}

/// # Safety
/// As bind(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    on_fd(
        fd,
        "bind",
        -1,
        || unsafe { real::bind(fd, addr, len) },
        |sock| {
            let to = unsafe { addr::read(sock.domain, addr, len, false) }?;
            if loopback::is_loopback(&to) {
                loopback::hand_to_kernel(sock, fd)?;
                // SAFETY: libc's bind on what is now a kernel socket.
                return kernel_result(unsafe { real::bind(fd, addr, len) });
            }
            ok(sock.socket.bind(to))
        },
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    on_fd(
        fd,
        "listen",
        -1,
        || unsafe { real::listen(fd, backlog) },
        |sock| {
            if sock.ty != Type::Stream {
                return Err(libc::EOPNOTSUPP);
            }
            // Linux: a negative or huge backlog is SOMAXCONN.
            let backlog = u32::try_from(backlog).unwrap_or(u32::MAX);
            let result = ok(sock.socket.listen(backlog));
            if result.is_ok() {
                sock.listening.store(true, Ordering::Relaxed);
            }
            sock.refresh(false);
            result
        },
    )
}

/// # Safety
/// As accept(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    on_fd(
        fd,
        "accept",
        -1,
        || unsafe { real::accept(fd, addr, len) },
        |sock| unsafe { accept_on(sock, fd, addr, len, 0) },
    )
}

/// # Safety
/// As accept4(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int {
    on_fd(
        fd,
        "accept4",
        -1,
        || unsafe { real::accept4(fd, addr, len, flags) },
        |sock| unsafe { accept_on(sock, fd, addr, len, flags) },
    )
}

unsafe fn accept_on(
    sock: &Sock,
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> Result<c_int, c_int> {
    if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 {
        return Err(libc::EINVAL);
    }
    if sock.ty != Type::Stream {
        return Err(libc::EOPNOTSUPP);
    }
    if !addr.is_null() && len.is_null() {
        return Err(libc::EFAULT);
    }
    let (conn, peer) = sock.blocking(fd, Way::In, false, || sock.socket.accept())?;
    let (new_fd, _) = Sock::open(conn, sock.domain, Type::Stream, flags)?;
    if let Err(e) = unsafe { addr::write(peer, addr, len) } {
        table::remove(new_fd);
        unsafe { real::close(new_fd) };
        return Err(e);
    }
    Ok(new_fd)
}

/// # Safety
/// As connect(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    on_fd(
        fd,
        "connect",
        -1,
        || unsafe { real::connect(fd, addr, len) },
        |sock| {
            let to = unsafe { addr::read(sock.domain, addr, len, sock.ty == Type::Dgram) }?;
            if loopback::is_loopback(&to) && loopback::unbound(sock) {
                loopback::hand_to_kernel(sock, fd)?;
                // SAFETY: libc's connect on what is now a kernel socket.
                return kernel_result(unsafe { real::connect(fd, addr, len) });
            }
            if sock.ty == Type::Dgram {
                let result = ok(sock.socket.connect(to));
                sock.refresh(false);
                return result;
            }
            if let Some(code) = sock.collected().take() {
                return if code == 0 { Ok(0) } else { Err(code) };
            }
            let result = if table::is_nonblocking(fd) {
                let result = sock.socket.connect(to);
                let mut connecting = sock.connecting();
                match result {
                    Err(Errno::EINPROGRESS) => *connecting = Some(to),
                    Err(Errno::EALREADY) => {}
                    _ => *connecting = None,
                }
                result
            } else {
                // The stack's own blocking connect, with its timeout (ETIMEDOUT).
                let _ = sock.socket.set_nonblocking(false);
                let result = sock.socket.connect(to);
                let _ = sock.socket.set_nonblocking(true);
                *sock.connecting() = None;
                result
            };
            sock.refresh(false);
            ok(result)
        },
    )
}

// ---- send and receive ----

/// send() on a ustack socket: `to` for sendto on a datagram socket.
fn send_on(sock: &Sock, fd: c_int, data: &[u8], flags: c_int, to: Option<SocketAddr>) -> Result<usize, c_int> {
    if flags & libc::MSG_OOB != 0 {
        return Err(libc::EOPNOTSUPP);
    }
    let dontwait = flags & libc::MSG_DONTWAIT != 0;
    let result = match (sock.ty, to) {
        (Type::Dgram, Some(to)) => sock.blocking(fd, Way::Out, dontwait, || sock.socket.send_to(data, to)),
        (Type::Dgram, None) => sock.blocking(fd, Way::Out, dontwait, || sock.socket.send(data)),
        (Type::Stream, _) => {
            // A blocking stream send returns once all of it is queued, as Linux's does.
            let mut sent = 0;
            let nonblocking = dontwait || table::is_nonblocking(fd);
            loop {
                match sock.blocking(fd, Way::Out, dontwait, || sock.socket.send(&data[sent..])) {
                    Ok(n) => {
                        sent += n;
                        if sent == data.len() || nonblocking {
                            break Ok(sent);
                        }
                    }
                    Err(_) if sent > 0 => break Ok(sent),
                    Err(e) => break Err(e),
                }
            }
        }
    };
    epipe(result, flags)
}

/// recv() on a ustack socket: the data's length and, for a datagram, its sender.
fn recv_on(sock: &Sock, fd: c_int, buf: &mut [u8], flags: c_int) -> Result<(usize, Option<SocketAddr>), c_int> {
    if flags & libc::MSG_OOB != 0 {
        return Err(libc::EINVAL);
    }
    let dontwait = flags & libc::MSG_DONTWAIT != 0;
    let peek = flags & libc::MSG_PEEK != 0;
    let stream = sock.ty == Type::Stream;
    // Linux's TCP recv of 0 bytes returns 0 at once (a listener: ENOTCONN).
    if stream && buf.is_empty() {
        return if sock.listening.load(Ordering::Relaxed) { Err(libc::ENOTCONN) } else { Ok((0, None)) };
    }
    // What was read ahead (MSG_PEEK, FIONREAD) comes first. (Kept here rather than with
    // Socket's MSG_PEEK: FIONREAD needs the count of what is readable, which is what was
    // read ahead.)
    {
        let mut peeked = sock.peeked();
        if !peeked.is_empty() {
            let n = peeked.data.len().min(buf.len());
            buf[..n].copy_from_slice(&peeked.data[..n]);
            let from = peeked.from;
            if !peek {
                if stream {
                    peeked.data.drain(..n);
                } else {
                    *peeked = table::Peeked::default();
                }
                drop(peeked);
                sock.refresh(false);
            }
            return Ok((n, from));
        }
    }
    if peek {
        let mut ahead = vec![0; if stream { buf.len() } else { 65_536 }];
        let (n, from) = if stream {
            (sock.blocking(fd, Way::In, dontwait, || sock.socket.recv(&mut ahead))?, None)
        } else {
            let (n, from) = sock.blocking(fd, Way::In, dontwait, || sock.socket.recv_from(&mut ahead))?;
            (n, Some(from))
        };
        if n == 0 && stream {
            return Ok((0, None));
        }
        ahead.truncate(n);
        let shown = n.min(buf.len());
        buf[..shown].copy_from_slice(&ahead[..shown]);
        *sock.peeked() = table::Peeked { data: ahead, from, datagram: !stream };
        sock.refresh(false);
        return Ok((shown, from));
    }
    if !stream {
        let (n, from) = sock.blocking(fd, Way::In, dontwait, || sock.socket.recv_from(buf))?;
        return Ok((n, Some(from)));
    }
    let mut got = sock.blocking(fd, Way::In, dontwait, || sock.socket.recv(buf))?;
    if flags & libc::MSG_WAITALL != 0 && !dontwait && !table::is_nonblocking(fd) {
        while got > 0 && got < buf.len() {
            match sock.blocking(fd, Way::In, false, || sock.socket.recv(&mut buf[got..])) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
    }
    Ok((got, None))
}

/// # Safety
/// `buf` must point to `len` bytes (or `len` be 0).
unsafe fn bytes<'a>(buf: *const c_void, len: size_t) -> Result<&'a [u8], c_int> {
    if len == 0 {
        return Ok(&[]);
    }
    if buf.is_null() {
        return Err(libc::EFAULT);
    }
    Ok(unsafe { std::slice::from_raw_parts(buf.cast(), len) })
}

/// # Safety
/// `buf` must point to `len` writable bytes (or `len` be 0).
unsafe fn bytes_mut<'a>(buf: *mut c_void, len: size_t) -> Result<&'a mut [u8], c_int> {
    if len == 0 {
        return Ok(&mut []);
    }
    if buf.is_null() {
        return Err(libc::EFAULT);
    }
    Ok(unsafe { std::slice::from_raw_parts_mut(buf.cast(), len) })
}

/// # Safety
/// As send(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t {
    on_fd(
        fd,
        "send",
        -1,
        || unsafe { real::send(fd, buf, len, flags) },
        |sock| {
            let data = unsafe { bytes(buf, len) }?;
            send_on(sock, fd, data, flags, None).map(|n| n as ssize_t)
        },
    )
}

/// # Safety
/// As sendto(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
    addr: *const sockaddr,
    alen: socklen_t,
) -> ssize_t {
    on_fd(
        fd,
        "sendto",
        -1,
        || unsafe { real::sendto(fd, buf, len, flags, addr, alen) },
        |sock| {
            let data = unsafe { bytes(buf, len) }?;
            // Linux ignores the address of a TCP sendto (EISCONN only with MSG_FASTOPEN).
            let to = if addr.is_null() || sock.ty == Type::Stream {
                None
            } else {
                Some(unsafe { addr::read(sock.domain, addr, alen, true) }?)
            };
            send_on(sock, fd, data, flags, to).map(|n| n as ssize_t)
        },
    )
}

/// # Safety
/// As recv(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t {
    on_fd(
        fd,
        "recv",
        -1,
        || unsafe { real::recv(fd, buf, len, flags) },
        |sock| {
            let data = unsafe { bytes_mut(buf, len) }?;
            recv_on(sock, fd, data, flags).map(|(n, _)| n as ssize_t)
        },
    )
}

/// # Safety
/// As recvfrom(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    alen: *mut socklen_t,
) -> ssize_t {
    on_fd(
        fd,
        "recvfrom",
        -1,
        || unsafe { real::recvfrom(fd, buf, len, flags, addr, alen) },
        |sock| {
            let data = unsafe { bytes_mut(buf, len) }?;
            let (n, from) = recv_on(sock, fd, data, flags)?;
            let from = match from {
                Some(from) => Some(from),
                None if !addr.is_null() => sock.socket.peer_addr().ok(),
                None => None,
            };
            if let Some(from) = from {
                unsafe { addr::write(from, addr, alen) }?;
            } else if !alen.is_null() && !addr.is_null() {
                unsafe { alen.write_unaligned(0) };
            }
            Ok(n as ssize_t)
        },
    )
}

/// The caller's iovecs as one buffer's worth of slices.
///
/// # Safety
/// `iov` must point to `count` iovecs, each pointing to its `iov_len` bytes.
unsafe fn iovecs<'a>(iov: *const iovec, count: c_int) -> Result<&'a [iovec], c_int> {
    if !(0..=libc::UIO_MAXIOV).contains(&count) {
        return Err(libc::EINVAL);
    }
    if count == 0 {
        return Ok(&[]);
    }
    if iov.is_null() {
        return Err(libc::EFAULT);
    }
    Ok(unsafe { std::slice::from_raw_parts(iov, count as usize) })
}

/// A msghdr's iovecs: more than UIO_MAXIOV is EMSGSIZE, as Linux says for sendmsg/recvmsg.
///
/// # Safety
/// As [`iovecs`].
unsafe fn msg_iovecs<'a>(msg: &msghdr) -> Result<&'a [iovec], c_int> {
    if msg.msg_iovlen > libc::UIO_MAXIOV as usize {
        return Err(libc::EMSGSIZE);
    }
    unsafe { iovecs(msg.msg_iov, msg.msg_iovlen as c_int) }
}

unsafe fn gather(iov: &[iovec]) -> Result<Vec<u8>, c_int> {
    let mut data = Vec::new();
    for v in iov {
        data.extend_from_slice(unsafe { bytes(v.iov_base, v.iov_len) }?);
    }
    Ok(data)
}

unsafe fn scatter(iov: &[iovec], mut data: &[u8]) -> Result<(), c_int> {
    for v in iov {
        if data.is_empty() {
            break;
        }
        let n = v.iov_len.min(data.len());
        let to = unsafe { bytes_mut(v.iov_base, n) }?;
        to.copy_from_slice(&data[..n]);
        data = &data[n..];
    }
    Ok(())
}

fn total(iov: &[iovec]) -> usize {
    iov.iter().map(|v| v.iov_len).fold(0usize, usize::saturating_add)
}

/// # Safety
/// As sendmsg(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    on_fd(
        fd,
        "sendmsg",
        -1,
        || unsafe { real::sendmsg(fd, msg, flags) },
        |sock| {
            if msg.is_null() {
                return Err(libc::EFAULT);
            }
            let msg = unsafe { &*msg };
            let iov = unsafe { msg_iovecs(msg) }?;
            let data = unsafe { gather(iov) }?;
            let to = if msg.msg_name.is_null() || sock.ty == Type::Stream {
                None
            } else {
                Some(unsafe { addr::read(sock.domain, msg.msg_name.cast(), msg.msg_namelen, true) }?)
            };
            send_on(sock, fd, &data, flags, to).map(|n| n as ssize_t)
        },
    )
}

/// # Safety
/// As recvmsg(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    on_fd(
        fd,
        "recvmsg",
        -1,
        || unsafe { real::recvmsg(fd, msg, flags) },
        |sock| {
            if msg.is_null() {
                return Err(libc::EFAULT);
            }
            let msg = unsafe { &mut *msg };
            let iov = unsafe { msg_iovecs(msg) }?;
            let mut data = vec![0; total(iov).min(1 << 20)];
            let (n, from) = recv_on(sock, fd, &mut data, flags)?;
            unsafe { scatter(iov, &data[..n]) }?;
            match from {
                Some(from) if !msg.msg_name.is_null() => {
                    unsafe { addr::write(from, msg.msg_name.cast(), &mut msg.msg_namelen) }?
                }
                _ => msg.msg_namelen = 0,
            }
            // No control messages: ustack produces none.
            msg.msg_controllen = 0;
            msg.msg_flags = 0;
            Ok(n as ssize_t)
        },
    )
}

/// # Safety
/// As read(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, len: size_t) -> ssize_t {
    on_fd(
        fd,
        "read",
        -1,
        || unsafe { real::read(fd, buf, len) },
        |sock| {
            let data = unsafe { bytes_mut(buf, len) }?;
            recv_on(sock, fd, data, 0).map(|(n, _)| n as ssize_t)
        },
    )
}

/// # Safety
/// As write(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, len: size_t) -> ssize_t {
    on_fd(
        fd,
        "write",
        -1,
        || unsafe { real::write(fd, buf, len) },
        |sock| {
            let data = unsafe { bytes(buf, len) }?;
            send_on(sock, fd, data, 0, None).map(|n| n as ssize_t)
        },
    )
}

/// # Safety
/// As readv(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, count: c_int) -> ssize_t {
    on_fd(
        fd,
        "readv",
        -1,
        || unsafe { real::readv(fd, iov, count) },
        |sock| {
            let iov = unsafe { iovecs(iov, count) }?;
            let mut data = vec![0; total(iov).min(1 << 20)];
            let (n, _) = recv_on(sock, fd, &mut data, 0)?;
            unsafe { scatter(iov, &data[..n]) }?;
            Ok(n as ssize_t)
        },
    )
}

/// # Safety
/// As writev(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, count: c_int) -> ssize_t {
    on_fd(
        fd,
        "writev",
        -1,
        || unsafe { real::writev(fd, iov, count) },
        |sock| {
            let iov = unsafe { iovecs(iov, count) }?;
            let data = unsafe { gather(iov) }?;
            send_on(sock, fd, &data, 0, None).map(|n| n as ssize_t)
        },
    )
}

// glibc's _FORTIFY_SOURCE versions, which fortified programs (nc, ...) call instead.

/// # Safety
/// As read(2); `room` is the buffer's size as the compiler knew it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __read_chk(fd: c_int, buf: *mut c_void, len: size_t, room: size_t) -> ssize_t {
    if len > room {
        fortify_fail();
    }
    unsafe { read(fd, buf, len) }
}

/// # Safety
/// As recv(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __recv_chk(fd: c_int, buf: *mut c_void, len: size_t, room: size_t, flags: c_int) -> ssize_t {
    if len > room {
        fortify_fail();
    }
    unsafe { recv(fd, buf, len, flags) }
}

/// # Safety
/// As recvfrom(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __recvfrom_chk(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    room: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    alen: *mut socklen_t,
) -> ssize_t {
    if len > room {
        fortify_fail();
    }
    unsafe { recvfrom(fd, buf, len, flags, addr, alen) }
}

/// What glibc does when a fortified call would overflow its buffer.
fn fortify_fail() -> ! {
    let _ = writeln!(std::io::stderr(), "*** buffer overflow detected ***: terminated");
    std::process::abort()
}

// ---- close, shutdown, names ----

#[unsafe(no_mangle)]
pub extern "C" fn close(fd: c_int) -> c_int {
    // The kernel closes the fd (the program's dup of the socket pair); the ustack socket
    // closes when its last fd does (the table held the last reference).
    bookkeeping(|| table::remove(fd));
    // SAFETY: libc's close.
    unsafe { real::close(fd) }
}

#[unsafe(no_mangle)]
pub extern "C" fn shutdown(fd: c_int, how: c_int) -> c_int {
    on_fd(
        fd,
        "shutdown",
        -1,
        || unsafe { real::shutdown(fd, how) },
        |sock| {
            let how = match how {
                libc::SHUT_RD => Shutdown::Read,
                libc::SHUT_WR => Shutdown::Write,
                libc::SHUT_RDWR => Shutdown::Both,
                _ => return Err(libc::EINVAL),
            };
            let result = ok(sock.socket.shutdown(how));
            sock.refresh(false);
            result
        },
    )
}

/// # Safety
/// As getsockname(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    on_fd(
        fd,
        "getsockname",
        -1,
        || unsafe { real::getsockname(fd, addr, len) },
        |sock| {
            if addr.is_null() || len.is_null() {
                return Err(libc::EFAULT);
            }
            let local = sock.socket.local_addr().map_err(Errno::code)?;
            unsafe { addr::write(local, addr, len) }.map(|()| 0)
        },
    )
}

/// # Safety
/// As getpeername(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    on_fd(
        fd,
        "getpeername",
        -1,
        || unsafe { real::getpeername(fd, addr, len) },
        |sock| {
            let peer = sock.socket.peer_addr().map_err(Errno::code)?;
            if addr.is_null() || len.is_null() {
                return Err(libc::EFAULT);
            }
            unsafe { addr::write(peer, addr, len) }.map(|()| 0)
        },
    )
}

/// # Safety
/// As setsockopt(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *const c_void,
    len: socklen_t,
) -> c_int {
    on_fd(
        fd,
        "setsockopt",
        -1,
        || unsafe { real::setsockopt(fd, level, name, value, len) },
        |sock| unsafe { options::set(sock, level, name, value, len) }.map(|()| 0),
    )
}

/// # Safety
/// As getsockopt(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *mut c_void,
    len: *mut socklen_t,
) -> c_int {
    on_fd(
        fd,
        "getsockopt",
        -1,
        || unsafe { real::getsockopt(fd, level, name, value, len) },
        |sock| unsafe { options::get(sock, level, name, value, len) }.map(|()| 0),
    )
}

// ---- fcntl, ioctl, dup ----

/// fcntl: O_NONBLOCK and FD_CLOEXEC live on the real fd (the kernel keeps them per file
/// and per fd, as for any socket), so only F_DUPFD needs the table.
///
/// # Safety
/// As fcntl(2); the optional argument is read as a machine word, as glibc reads it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    // SAFETY: libc's fcntl with the caller's arguments.
    let result = unsafe { real::fcntl(fd, cmd, arg) };
    if result >= 0 && matches!(cmd, libc::F_DUPFD | libc::F_DUPFD_CLOEXEC) {
        bookkeeping(|| {
            if let Some(sock) = lookup(fd) {
                table::insert(result, sock);
            }
        });
    }
    result
}

/// # Safety
/// As [`fcntl`] (glibc's name for it with 64-bit offsets).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    unsafe { fcntl(fd, cmd, arg) }
}

/// ioctl: FIONREAD says how many bytes recv() would return now; FIONBIO goes to the real
/// fd (O_NONBLOCK); others as on a socket that has none of them.
///
/// # Safety
/// As ioctl(2); the argument is read as a machine word (a pointer).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ioctl(fd: c_int, request: c_ulong, arg: usize) -> c_int {
    on_fd(
        fd,
        "ioctl",
        -1,
        || unsafe { real::ioctl(fd, request, arg) },
        |sock| match request {
            libc::FIONBIO => {
                // SAFETY: libc's ioctl on the real fd.
                let r = unsafe { real::ioctl(fd, request, arg) };
                if r < 0 { Err(table::last_errno()) } else { Ok(r) }
            }
            libc::FIONREAD => {
                let out = arg as *mut c_int;
                if out.is_null() {
                    return Err(libc::EFAULT);
                }
                if sock.listening.load(Ordering::Relaxed) {
                    return Err(libc::EINVAL);
                }
                let n = readable_now(sock)?;
                unsafe { out.write_unaligned(n.min(c_int::MAX as usize) as c_int) };
                Ok(0)
            }
            _ => Err(libc::ENOTTY),
        },
    )
}

/// Bytes a recv() would return now (for a datagram socket: the next datagram's size), read
/// ahead into the socket's peek buffer (recv() gives them first).
fn readable_now(sock: &Sock) -> Result<usize, c_int> {
    let mut peeked = sock.peeked();
    if sock.ty == Type::Dgram {
        if !peeked.datagram {
            let mut ahead = vec![0; 65_536];
            match sock.socket.recv_from(&mut ahead) {
                Ok((n, from)) => {
                    ahead.truncate(n);
                    *peeked = table::Peeked { data: ahead, from: Some(from), datagram: true };
                }
                Err(Errno::EAGAIN) => return Ok(0),
                Err(e) => return Err(e.code()),
            }
        }
        return Ok(peeked.data.len());
    }
    let mut ahead = [0u8; 16_384];
    loop {
        match sock.socket.recv(&mut ahead) {
            Ok(0) | Err(_) => break,
            Ok(n) => peeked.data.extend_from_slice(&ahead[..n]),
        }
        if peeked.data.len() > 1 << 20 {
            break;
        }
    }
    Ok(peeked.data.len())
}

#[unsafe(no_mangle)]
pub extern "C" fn dup(fd: c_int) -> c_int {
    // SAFETY: libc's dup.
    let new = unsafe { real::dup(fd) };
    if new >= 0 {
        bookkeeping(|| {
            if let Some(sock) = lookup(fd) {
                table::insert(new, sock);
            }
        });
    }
    new
}

#[unsafe(no_mangle)]
pub extern "C" fn dup2(fd: c_int, to: c_int) -> c_int {
    // SAFETY: libc's dup2.
    let new = unsafe { real::dup2(fd, to) };
    if new >= 0 && fd != to {
        bookkeeping(|| redirect(fd, to));
    }
    new
}

#[unsafe(no_mangle)]
pub extern "C" fn dup3(fd: c_int, to: c_int, flags: c_int) -> c_int {
    // SAFETY: libc's dup3.
    let new = unsafe { real::dup3(fd, to, flags) };
    if new >= 0 {
        bookkeeping(|| redirect(fd, to));
    }
    new
}

/// After dup2/dup3 made `to` a copy of `fd`: whatever `to` was is gone (the kernel closed
/// it), and it is now what `fd` is.
fn redirect(fd: c_int, to: c_int) {
    table::remove(to);
    if let Some(sock) = lookup(fd) {
        table::insert(to, sock);
    }
}
