//! packetdrill's shared-object interface: `packetdrill --so_filename=libustack_preload.so`
//! runs a script against ustack with no TUN, no kernel stack and no real clock.
//!
//! packetdrill dlopens the library, calls [`packetdrill_interface_init`] with its
//! `--so_flags` string, and from then on makes the script's system calls, injects its
//! packets, sniffs the stack's and reads and passes time through the table of functions
//! that call fills ([`PacketdrillInterface`]). Behind the table is one [`Instance`]: an
//! engine on a virtual clock (see [`instance`]).
//!
//! The table's layout is the ABI: it follows `struct packetdrill_interface` in
//! packetdrill's `gtests/net/packetdrill/packetdrill.h` (google/packetdrill commit
//! 2c4001c4d6fc04a3bbd01d4b92be62717a37648a), field for field. Nothing of packetdrill's
//! code is here.
//!
//! Supported: socket (AF_INET/AF_INET6, SOCK_STREAM/SOCK_DGRAM, SOCK_NONBLOCK), bind,
//! listen, accept, connect, read, readv, recv, recvfrom, recvmsg, write, writev, send,
//! sendto, sendmsg, fcntl (F_GETFL/F_SETFL O_NONBLOCK, F_GETFD/F_SETFD), ioctl (FIONBIO),
//! close, shutdown, getsockopt (SO_ERROR, SO_TYPE), setsockopt (SO_REUSEADDR), poll.
//! epoll, pipe and splice fail with ENOSYS; other options with ENOPROTOOPT, other ioctls
//! with ENOTTY. A call that blocks waits for packetdrill's main thread to inject a packet
//! or let time pass; it never moves the clock itself.

mod addr;
mod flags;
mod instance;

use std::ffi::CStr;
use std::net::Shutdown;
use std::os::fd::RawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};

use libc::{
    c_char, c_int, c_longlong, c_uint, c_ulong, c_void, epoll_event, iovec, msghdr, nfds_t, pollfd, size_t, sockaddr,
    socklen_t, ssize_t, timeval, useconds_t,
};
use smoltcp::time::Duration;
use ustack::engine::calls::Events;
use ustack::engine::{Domain, SockId, Type};
use ustack::errno::Errno;

use instance::{EPOCH_MICROS, Instance, State};

/// `loff_t`, splice's offset type.
type Loff = i64;

/// `struct packetdrill_interface`, in packetdrill.h's order (that order is the ABI).
///
/// `fcntl` and `ioctl` are C-variadic there. Ours take their one optional argument as a
/// fixed third word, which the Linux calling conventions (x86-64 SysV, AArch64 AAPCS64)
/// pass where a variadic caller puts it; the table stores them under the variadic type.
#[repr(C)]
pub struct PacketdrillInterface {
    pub userdata: *mut c_void,
    pub free: unsafe extern "C" fn(*mut c_void),
    pub socket: unsafe extern "C" fn(*mut c_void, c_int, c_int, c_int) -> c_int,
    pub bind: unsafe extern "C" fn(*mut c_void, c_int, *const sockaddr, socklen_t) -> c_int,
    pub listen: unsafe extern "C" fn(*mut c_void, c_int, c_int) -> c_int,
    pub accept: unsafe extern "C" fn(*mut c_void, c_int, *mut sockaddr, *mut socklen_t) -> c_int,
    pub connect: unsafe extern "C" fn(*mut c_void, c_int, *const sockaddr, socklen_t) -> c_int,
    pub read: unsafe extern "C" fn(*mut c_void, c_int, *mut c_void, size_t) -> ssize_t,
    pub readv: unsafe extern "C" fn(*mut c_void, c_int, *const iovec, c_int) -> ssize_t,
    pub recv: unsafe extern "C" fn(*mut c_void, c_int, *mut c_void, size_t, c_int) -> ssize_t,
    pub recvfrom:
        unsafe extern "C" fn(*mut c_void, c_int, *mut c_void, size_t, c_int, *mut sockaddr, *mut socklen_t) -> ssize_t,
    pub recvmsg: unsafe extern "C" fn(*mut c_void, c_int, *mut msghdr, c_int) -> ssize_t,
    pub write: unsafe extern "C" fn(*mut c_void, c_int, *const c_void, size_t) -> ssize_t,
    pub writev: unsafe extern "C" fn(*mut c_void, c_int, *const iovec, c_int) -> ssize_t,
    pub send: unsafe extern "C" fn(*mut c_void, c_int, *const c_void, size_t, c_int) -> ssize_t,
    pub sendto:
        unsafe extern "C" fn(*mut c_void, c_int, *const c_void, size_t, c_int, *const sockaddr, socklen_t) -> ssize_t,
    pub sendmsg: unsafe extern "C" fn(*mut c_void, c_int, *const msghdr, c_int) -> ssize_t,
    pub fcntl: unsafe extern "C" fn(*mut c_void, c_int, c_int, ...) -> c_int,
    pub ioctl: unsafe extern "C" fn(*mut c_void, c_int, c_ulong, ...) -> c_int,
    pub close: unsafe extern "C" fn(*mut c_void, c_int) -> c_int,
    pub shutdown: unsafe extern "C" fn(*mut c_void, c_int, c_int) -> c_int,
    pub getsockopt: unsafe extern "C" fn(*mut c_void, c_int, c_int, c_int, *mut c_void, *mut socklen_t) -> c_int,
    pub setsockopt: unsafe extern "C" fn(*mut c_void, c_int, c_int, c_int, *const c_void, socklen_t) -> c_int,
    pub poll: unsafe extern "C" fn(*mut c_void, *mut pollfd, nfds_t, c_int) -> c_int,
    pub netdev_send: unsafe extern "C" fn(*mut c_void, *const c_void, size_t) -> c_int,
    pub netdev_receive: unsafe extern "C" fn(*mut c_void, *mut c_void, *mut size_t, *mut c_longlong) -> c_int,
    pub usleep: unsafe extern "C" fn(*mut c_void, useconds_t) -> c_int,
    pub gettimeofday: unsafe extern "C" fn(*mut c_void, *mut timeval, *mut c_void) -> c_int,
    pub epoll_create: unsafe extern "C" fn(*mut c_void, c_int) -> c_int,
    pub epoll_ctl: unsafe extern "C" fn(*mut c_void, c_int, c_int, c_int, *mut epoll_event) -> c_int,
    pub epoll_wait: unsafe extern "C" fn(*mut c_void, c_int, *mut epoll_event, c_int, c_int) -> c_int,
    pub pipe: unsafe extern "C" fn(*mut c_void, *mut c_int) -> c_int,
    pub splice: unsafe extern "C" fn(*mut c_void, c_int, *mut Loff, c_int, *mut Loff, size_t, c_uint) -> c_int,
}

/// packetdrill's entry point: makes an instance from `flags` (see [`flags`]) and fills
/// `interface`. Bad flags are reported on stderr; every call of that table then fails
/// with EINVAL.
///
/// # Safety
/// `flags` must be null or a C string; `interface` null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn packetdrill_interface_init(flags: *const c_char, interface: *mut PacketdrillInterface) {
    if interface.is_null() {
        return;
    }
    let made = catch_unwind(|| {
        let text = match flags.is_null() {
            true => String::new(),
            // SAFETY: the caller passes a C string.
            false => unsafe { CStr::from_ptr(flags) }.to_string_lossy().into_owned(),
        };
        flags::parse(&text).and_then(|flags| Instance::new(&flags))
    });
    let userdata = match made {
        Ok(Ok(instance)) => Box::into_raw(Box::new(instance)).cast::<c_void>(),
        Ok(Err(err)) => {
            eprintln!("ustack: packetdrill_interface_init: {err}");
            std::ptr::null_mut()
        }
        Err(_) => {
            eprintln!("ustack: packetdrill_interface_init: internal error");
            std::ptr::null_mut()
        }
    };
    let table = PacketdrillInterface {
        userdata,
        free: pd_free,
        socket: pd_socket,
        bind: pd_bind,
        listen: pd_listen,
        accept: pd_accept,
        connect: pd_connect,
        read: pd_read,
        readv: pd_readv,
        recv: pd_recv,
        recvfrom: pd_recvfrom,
        recvmsg: pd_recvmsg,
        write: pd_write,
        writev: pd_writev,
        send: pd_send,
        sendto: pd_sendto,
        sendmsg: pd_sendmsg,
        // SAFETY: see the struct's docs: same registers for the fixed and the variadic call.
        fcntl: unsafe {
            std::mem::transmute::<
                unsafe extern "C" fn(*mut c_void, c_int, c_int, libc::c_long) -> c_int,
                unsafe extern "C" fn(*mut c_void, c_int, c_int, ...) -> c_int,
            >(pd_fcntl)
        },
        // SAFETY: as for fcntl.
        ioctl: unsafe {
            std::mem::transmute::<
                unsafe extern "C" fn(*mut c_void, c_int, c_ulong, *mut c_void) -> c_int,
                unsafe extern "C" fn(*mut c_void, c_int, c_ulong, ...) -> c_int,
            >(pd_ioctl)
        },
        close: pd_close,
        shutdown: pd_shutdown,
        getsockopt: pd_getsockopt,
        setsockopt: pd_setsockopt,
        poll: pd_poll,
        netdev_send: pd_netdev_send,
        netdev_receive: pd_netdev_receive,
        usleep: pd_usleep,
        gettimeofday: pd_gettimeofday,
        epoll_create: pd_epoll_create,
        epoll_ctl: pd_epoll_ctl,
        epoll_wait: pd_epoll_wait,
        pipe: pd_pipe,
        splice: pd_splice,
    };
    // SAFETY: the caller gives a writable struct.
    unsafe { interface.write(table) };
}

/// Runs `f` on the instance behind `userdata`, turning an error into `failed` with errno
/// set, and a panic into EIO (it never unwinds into C).
fn with<T>(userdata: *mut c_void, failed: T, f: impl FnOnce(&Instance) -> Result<T, c_int>) -> T {
    if userdata.is_null() {
        crate::set_errno(libc::EINVAL);
        return failed;
    }
    // SAFETY: non-null userdata is the instance init made, alive until free.
    let instance = unsafe { &*userdata.cast::<Instance>() };
    crate::entry(failed, || f(instance))
}

fn code(errno: Errno) -> c_int {
    errno.code()
}

/// Whether `id`'s calls block (no O_NONBLOCK).
fn blocking(state: &State, id: SockId) -> bool {
    state.engine.blocking(id).is_ok_and(|b| !b.nonblocking)
}

/// The bytes at `buf`, or EFAULT for a null pointer with a length.
///
/// # Safety
/// `buf` must be null or valid for `len` bytes.
unsafe fn bytes<'a>(buf: *const c_void, len: size_t) -> Result<&'a [u8], c_int> {
    match (buf.is_null(), len) {
        (_, 0) => Ok(&[]),
        (true, _) => Err(libc::EFAULT),
        // SAFETY: the caller's promise.
        (false, _) => Ok(unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) }),
    }
}

/// As [`bytes`], writable.
///
/// # Safety
/// As for [`bytes`], writable.
unsafe fn bytes_mut<'a>(buf: *mut c_void, len: size_t) -> Result<&'a mut [u8], c_int> {
    match (buf.is_null(), len) {
        (_, 0) => Ok(&mut []),
        (true, _) => Err(libc::EFAULT),
        // SAFETY: the caller's promise.
        (false, _) => Ok(unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) }),
    }
}

/// The iovecs as slices.
///
/// # Safety
/// `iov` must point to `count` iovecs, each valid for its length.
unsafe fn iovecs<'a>(iov: *const iovec, count: c_int) -> Result<&'a [iovec], c_int> {
    let count = usize::try_from(count).ok().filter(|&c| c <= libc::UIO_MAXIOV as usize).ok_or(libc::EINVAL)?;
    match (iov.is_null(), count) {
        (_, 0) => Ok(&[]),
        (true, _) => Err(libc::EFAULT),
        // SAFETY: the caller's promise.
        (false, _) => Ok(unsafe { std::slice::from_raw_parts(iov, count) }),
    }
}

/// The bytes the iovecs hold, in order.
///
/// # Safety
/// As for [`iovecs`].
unsafe fn gather(iov: *const iovec, count: c_int) -> Result<Vec<u8>, c_int> {
    let mut all = Vec::new();
    // SAFETY: the caller's promise, passed on.
    for v in unsafe { iovecs(iov, count)? } {
        all.extend_from_slice(unsafe { bytes(v.iov_base, v.iov_len)? });
    }
    Ok(all)
}

/// Spreads `data` over the iovecs.
///
/// # Safety
/// As for [`iovecs`], writable.
unsafe fn scatter(data: &[u8], iov: *const iovec, count: c_int) -> Result<(), c_int> {
    let mut rest = data;
    // SAFETY: the caller's promise, passed on.
    for v in unsafe { iovecs(iov, count)? } {
        let n = rest.len().min(v.iov_len);
        unsafe { bytes_mut(v.iov_base, n)? }.copy_from_slice(&rest[..n]);
        rest = &rest[n..];
    }
    Ok(())
}

/// Room in the iovecs.
///
/// # Safety
/// As for [`iovecs`].
unsafe fn room(iov: *const iovec, count: c_int) -> Result<usize, c_int> {
    // SAFETY: the caller's promise.
    Ok(unsafe { iovecs(iov, count)? }.iter().map(|v| v.iov_len).sum())
}

unsafe extern "C" fn pd_free(userdata: *mut c_void) {
    if userdata.is_null() {
        return;
    }
    // SAFETY: init made it with Box::into_raw; packetdrill frees it once.
    let instance = unsafe { Box::from_raw(userdata.cast::<Instance>()) };
    let _ = catch_unwind(AssertUnwindSafe(move || drop(instance)));
}

unsafe extern "C" fn pd_socket(userdata: *mut c_void, domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    with(userdata, -1, |inst| {
        let domain = match domain {
            libc::AF_INET => Domain::Inet,
            libc::AF_INET6 => Domain::Inet6,
            _ => return Err(libc::EAFNOSUPPORT),
        };
        let nonblocking = ty & libc::SOCK_NONBLOCK != 0;
        let ty = match (ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC), protocol) {
            (libc::SOCK_STREAM, 0 | libc::IPPROTO_TCP) => Type::Stream,
            (libc::SOCK_DGRAM, 0 | libc::IPPROTO_UDP) => Type::Dgram,
            (libc::SOCK_STREAM | libc::SOCK_DGRAM, _) => return Err(libc::EPROTONOSUPPORT),
            _ => return Err(libc::ESOCKTNOSUPPORT),
        };
        inst.call(
            |_| false,
            |s| {
                let id = s.engine.socket(domain, ty);
                s.engine.set_nonblocking(id, nonblocking)?;
                s.add_fd(id)
            },
        )
        .map_err(code)
    })
}

unsafe extern "C" fn pd_bind(userdata: *mut c_void, fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    with(userdata, -1, |inst| {
        // SAFETY: packetdrill passes `len` bytes.
        let addr = unsafe { addr::read(addr, len)? };
        inst.call(|_| false, |s| s.engine.bind(s.socket(fd)?, addr)).map(|()| 0).map_err(code)
    })
}

unsafe extern "C" fn pd_listen(userdata: *mut c_void, fd: c_int, backlog: c_int) -> c_int {
    with(userdata, -1, |inst| {
        // A negative backlog is a huge unsigned one to Linux, clamped to somaxconn.
        inst.call(|_| false, |s| s.engine.listen(s.socket(fd)?, backlog as u32)).map(|()| 0).map_err(code)
    })
}

unsafe extern "C" fn pd_accept(userdata: *mut c_void, fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    with(userdata, -1, |inst| {
        let (new_fd, peer) = inst
            .call(
                |s| s.socket(fd).is_ok_and(|id| blocking(s, id)),
                |s| {
                    let (new, peer) = s.engine.accept(s.socket(fd)?)?;
                    Ok((s.add_fd(new)?, peer))
                },
            )
            .map_err(code)?;
        // SAFETY: packetdrill passes a sockaddr_storage and its size.
        unsafe { addr::write(peer, addr, len) };
        Ok(new_fd)
    })
}

unsafe extern "C" fn pd_connect(userdata: *mut c_void, fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    with(userdata, -1, |inst| {
        // SAFETY: packetdrill passes `len` bytes.
        let addr = unsafe { addr::read(addr, len)? };
        let mut started = false;
        inst.call(
            |s| s.socket(fd).is_ok_and(|id| blocking(s, id)),
            |s| {
                let id = s.socket(fd)?;
                let outcome = match started {
                    false => s.engine.connect(s.now, id, addr),
                    true => s.engine.connect_outcome(id),
                };
                started = true;
                // A blocking connect() waits out EINPROGRESS (as EAGAIN) for the outcome.
                match outcome {
                    Err(Errno::EINPROGRESS) if blocking(s, id) => Err(Errno::EAGAIN),
                    other => other,
                }
            },
        )
        .map(|()| 0)
        .map_err(code)
    })
}

/// recv()'s flags this library takes: MSG_DONTWAIT, and MSG_NOSIGNAL (it never raises
/// SIGPIPE anyway).
fn call_blocks(s: &State, fd: RawFd, flags: c_int) -> Result<bool, c_int> {
    if flags & !(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) != 0 {
        return Err(libc::EOPNOTSUPP);
    }
    let id = s.socket(fd).map_err(code)?;
    Ok(flags & libc::MSG_DONTWAIT == 0 && blocking(s, id))
}

/// recv() into `buf`, with the sender's address for a datagram (the peer's for TCP).
fn receive(
    inst: &Instance,
    fd: RawFd,
    buf: &mut [u8],
    flags: c_int,
) -> Result<(usize, Option<std::net::SocketAddr>), c_int> {
    let blocks = call_blocks(&*inst.lock().map_err(code)?, fd, flags)?;
    inst.call(
        |_| blocks,
        |s| {
            let id = s.socket(fd)?;
            match s.engine.socket_type(id)? {
                Type::Dgram => s.engine.recv_from(id, buf).map(|(n, from)| (n, Some(from))),
                Type::Stream => s.engine.recv(id, buf).map(|n| (n, s.engine.peer_addr(id).ok())),
            }
        },
    )
    .map_err(code)
}

/// send() of all of `data` (a blocking TCP send waits until all is queued, as Linux's
/// does), or one datagram, to `to` if given (ignored for TCP, as Linux ignores it).
fn transmit(
    inst: &Instance,
    fd: RawFd,
    data: &[u8],
    flags: c_int,
    to: Option<std::net::SocketAddr>,
) -> Result<usize, c_int> {
    let blocks = call_blocks(&*inst.lock().map_err(code)?, fd, flags)?;
    let mut done = 0;
    inst.call(
        |_| blocks,
        |s| {
            let id = s.socket(fd)?;
            if s.engine.socket_type(id)? == Type::Dgram {
                return match to {
                    Some(to) => s.engine.send_to(id, data, to),
                    None => s.engine.send(id, data, false),
                };
            }
            loop {
                match s.engine.send(id, &data[done..], done > 0) {
                    Ok(n) => {
                        done += n;
                        if done == data.len() || n == 0 {
                            return Ok(done);
                        }
                    }
                    Err(Errno::EAGAIN) if done > 0 && !blocks => return Ok(done),
                    Err(Errno::EAGAIN) => return Err(Errno::EAGAIN),
                    Err(_) if done > 0 => return Ok(done),
                    Err(e) => return Err(e),
                }
            }
        },
    )
    .map_err(code)
}

unsafe extern "C" fn pd_read(userdata: *mut c_void, fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t {
    // SAFETY: packetdrill passes `count` writable bytes.
    unsafe { pd_recv(userdata, fd, buf, count, 0) }
}

unsafe extern "C" fn pd_recv(userdata: *mut c_void, fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t {
    with(userdata, -1, |inst| {
        // SAFETY: packetdrill passes `len` writable bytes.
        let buf = unsafe { bytes_mut(buf, len)? };
        receive(inst, fd, buf, flags).map(|(n, _)| n as ssize_t)
    })
}

unsafe extern "C" fn pd_recvfrom(
    userdata: *mut c_void,
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> ssize_t {
    with(userdata, -1, |inst| {
        // SAFETY: packetdrill passes `len` writable bytes.
        let buf = unsafe { bytes_mut(buf, len)? };
        let (n, from) = receive(inst, fd, buf, flags)?;
        if let Some(from) = from {
            // SAFETY: packetdrill passes room for an address, or nulls.
            unsafe { addr::write(from, addr, addrlen) };
        }
        Ok(n as ssize_t)
    })
}

unsafe extern "C" fn pd_readv(userdata: *mut c_void, fd: c_int, iov: *const iovec, count: c_int) -> ssize_t {
    with(userdata, -1, |inst| {
        // SAFETY: packetdrill passes valid iovecs.
        let mut buf = vec![0; unsafe { room(iov, count)? }];
        let (n, _) = receive(inst, fd, &mut buf, 0)?;
        // SAFETY: as above.
        unsafe { scatter(&buf[..n], iov, count)? };
        Ok(n as ssize_t)
    })
}

unsafe extern "C" fn pd_recvmsg(userdata: *mut c_void, fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    with(userdata, -1, |inst| {
        if msg.is_null() {
            return Err(libc::EFAULT);
        }
        // SAFETY: packetdrill passes a valid msghdr.
        let msg = unsafe { &mut *msg };
        let count = c_int::try_from(msg.msg_iovlen).map_err(|_| libc::EINVAL)?;
        // SAFETY: its iovecs are valid.
        let mut buf = vec![0; unsafe { room(msg.msg_iov, count)? }];
        let (n, from) = receive(inst, fd, &mut buf, flags)?;
        // SAFETY: as above.
        unsafe { scatter(&buf[..n], msg.msg_iov, count)? };
        match from {
            // SAFETY: msg_name is null or msg_namelen bytes.
            Some(from) => unsafe { addr::write(from, msg.msg_name.cast(), &mut msg.msg_namelen) },
            None => msg.msg_namelen = 0,
        }
        msg.msg_controllen = 0;
        msg.msg_flags = 0;
        Ok(n as ssize_t)
    })
}

unsafe extern "C" fn pd_write(userdata: *mut c_void, fd: c_int, buf: *const c_void, count: size_t) -> ssize_t {
    // SAFETY: packetdrill passes `count` readable bytes.
    unsafe { pd_send(userdata, fd, buf, count, 0) }
}

unsafe extern "C" fn pd_send(
    userdata: *mut c_void,
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
) -> ssize_t {
    with(userdata, -1, |inst| {
        // SAFETY: packetdrill passes `len` readable bytes.
        let data = unsafe { bytes(buf, len)? };
        transmit(inst, fd, data, flags, None).map(|n| n as ssize_t)
    })
}

unsafe extern "C" fn pd_sendto(
    userdata: *mut c_void,
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
    addr: *const sockaddr,
    addrlen: socklen_t,
) -> ssize_t {
    with(userdata, -1, |inst| {
        // SAFETY: packetdrill passes `len` readable bytes and a null or valid address.
        let data = unsafe { bytes(buf, len)? };
        let to = if addr.is_null() { None } else { Some(unsafe { addr::read(addr, addrlen)? }) };
        transmit(inst, fd, data, flags, to).map(|n| n as ssize_t)
    })
}

unsafe extern "C" fn pd_writev(userdata: *mut c_void, fd: c_int, iov: *const iovec, count: c_int) -> ssize_t {
    with(userdata, -1, |inst| {
        // SAFETY: packetdrill passes valid iovecs.
        let data = unsafe { gather(iov, count)? };
        transmit(inst, fd, &data, 0, None).map(|n| n as ssize_t)
    })
}

unsafe extern "C" fn pd_sendmsg(userdata: *mut c_void, fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    with(userdata, -1, |inst| {
        if msg.is_null() {
            return Err(libc::EFAULT);
        }
        // SAFETY: packetdrill passes a valid msghdr.
        let msg = unsafe { &*msg };
        let count = c_int::try_from(msg.msg_iovlen).map_err(|_| libc::EINVAL)?;
        // SAFETY: its iovecs and name are valid.
        let data = unsafe { gather(msg.msg_iov, count)? };
        let to = match msg.msg_name.is_null() {
            true => None,
            false => Some(unsafe { addr::read(msg.msg_name.cast(), msg.msg_namelen)? }),
        };
        transmit(inst, fd, &data, flags, to).map(|n| n as ssize_t)
    })
}

unsafe extern "C" fn pd_fcntl(userdata: *mut c_void, fd: c_int, cmd: c_int, arg: libc::c_long) -> c_int {
    with(userdata, -1, |inst| {
        let mut state = inst.lock().map_err(code)?;
        let id = state.socket(fd).map_err(code)?;
        match cmd {
            libc::F_GETFL => Ok(libc::O_RDWR | if blocking(&state, id) { 0 } else { libc::O_NONBLOCK }),
            libc::F_SETFL => {
                let nonblocking = arg as c_int & libc::O_NONBLOCK != 0;
                state.engine.set_nonblocking(id, nonblocking).map(|()| 0).map_err(code)
            }
            // The close-on-exec flag is not kept: there is no exec here.
            libc::F_GETFD => Ok(0),
            libc::F_SETFD => Ok(0),
            _ => Err(libc::EINVAL),
        }
    })
}

unsafe extern "C" fn pd_ioctl(userdata: *mut c_void, fd: c_int, request: c_ulong, arg: *mut c_void) -> c_int {
    with(userdata, -1, |inst| {
        let mut state = inst.lock().map_err(code)?;
        let id = state.socket(fd).map_err(code)?;
        match request {
            libc::FIONBIO => {
                if arg.is_null() {
                    return Err(libc::EFAULT);
                }
                // SAFETY: FIONBIO's argument is an int*.
                let on = unsafe { std::ptr::read_unaligned(arg.cast::<c_int>()) } != 0;
                state.engine.set_nonblocking(id, on).map(|()| 0).map_err(code)
            }
            _ => Err(libc::ENOTTY),
        }
    })
}

unsafe extern "C" fn pd_close(userdata: *mut c_void, fd: c_int) -> c_int {
    with(userdata, -1, |inst| inst.call(|_| false, |s| s.close_fd(fd)).map(|()| 0).map_err(code))
}

unsafe extern "C" fn pd_shutdown(userdata: *mut c_void, fd: c_int, how: c_int) -> c_int {
    with(userdata, -1, |inst| {
        let how = match how {
            libc::SHUT_RD => Shutdown::Read,
            libc::SHUT_WR => Shutdown::Write,
            libc::SHUT_RDWR => Shutdown::Both,
            _ => return Err(libc::EINVAL),
        };
        inst.call(|_| false, |s| s.engine.shutdown(s.socket(fd)?, how)).map(|()| 0).map_err(code)
    })
}

unsafe extern "C" fn pd_getsockopt(
    userdata: *mut c_void,
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *mut c_void,
    len: *mut socklen_t,
) -> c_int {
    with(userdata, -1, |inst| {
        let mut state = inst.lock().map_err(code)?;
        let id = state.socket(fd).map_err(code)?;
        let answer = match (level, name) {
            (libc::SOL_SOCKET, libc::SO_TYPE) => match state.engine.socket_type(id).map_err(code)? {
                Type::Stream => libc::SOCK_STREAM,
                Type::Dgram => libc::SOCK_DGRAM,
            },
            // The outcome of a connect(), read (and cleared) as Linux's SO_ERROR is.
            (libc::SOL_SOCKET, libc::SO_ERROR) => match state.engine.tcp_state(id) {
                Some(tcp) if tcp != smoltcp::socket::tcp::State::Listen => match state.engine.connect_outcome(id) {
                    Ok(()) | Err(Errno::EINPROGRESS) => 0,
                    Err(err) => err.code(),
                },
                _ => 0,
            },
            _ => return Err(libc::ENOPROTOOPT),
        };
        if value.is_null() || len.is_null() {
            return Err(libc::EFAULT);
        }
        // SAFETY: `len` is valid, `value` has `*len` bytes.
        unsafe {
            let room = (*len as usize).min(std::mem::size_of::<c_int>());
            std::ptr::copy_nonoverlapping(answer.to_ne_bytes().as_ptr(), value.cast::<u8>(), room);
            *len = room as socklen_t;
        }
        Ok(0)
    })
}

unsafe extern "C" fn pd_setsockopt(
    userdata: *mut c_void,
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *const c_void,
    len: socklen_t,
) -> c_int {
    with(userdata, -1, |inst| {
        let mut state = inst.lock().map_err(code)?;
        let id = state.socket(fd).map_err(code)?;
        match (level, name) {
            (libc::SOL_SOCKET, libc::SO_REUSEADDR) => {
                if (len as usize) < std::mem::size_of::<c_int>() {
                    return Err(libc::EINVAL);
                }
                // SAFETY: `len` readable bytes at `value` (at least an int).
                let on = unsafe { std::ptr::read_unaligned(bytes(value, len as usize)?.as_ptr().cast::<c_int>()) } != 0;
                state.engine.set_reuse_address(id, on).map(|()| 0).map_err(code)
            }
            _ => Err(libc::ENOPROTOOPT),
        }
    })
}

/// poll()'s bits for the engine's readiness: errors and hang-ups always, the rest as asked.
fn revents(ready: Events, asked: i16) -> i16 {
    let mut bits = 0;
    if ready.contains(Events::IN) {
        bits |= libc::POLLIN;
    }
    if ready.contains(Events::OUT) {
        bits |= libc::POLLOUT;
    }
    let mut always = 0;
    if ready.contains(Events::ERR) {
        always |= libc::POLLERR;
    }
    if ready.contains(Events::HUP) {
        always |= libc::POLLHUP;
    }
    (bits & asked) | always
}

unsafe extern "C" fn pd_poll(userdata: *mut c_void, fds: *mut pollfd, nfds: nfds_t, timeout: c_int) -> c_int {
    with(userdata, -1, |inst| {
        let fds: &mut [pollfd] = match (fds.is_null(), nfds) {
            (_, 0) => &mut [],
            (true, _) => return Err(libc::EFAULT),
            // SAFETY: packetdrill passes `nfds` pollfds.
            (false, n) => unsafe { std::slice::from_raw_parts_mut(fds, usize::try_from(n).map_err(|_| libc::EINVAL)?) },
        };
        // The timeout runs on the virtual clock, from now.
        let deadline = {
            let state = inst.lock().map_err(code)?;
            (timeout >= 0).then(|| state.now + Duration::from_millis(timeout as u64))
        };
        inst.call(
            |s| deadline.is_none_or(|at| s.now < at),
            |s| {
                let mut ready = 0;
                for pfd in fds.iter_mut() {
                    pfd.revents = match s.socket(pfd.fd) {
                        _ if pfd.fd < 0 => 0,
                        Ok(id) => revents(s.engine.readiness(id), pfd.events),
                        Err(_) => libc::POLLNVAL,
                    };
                    ready += c_int::from(pfd.revents != 0);
                }
                match ready {
                    0 if deadline.is_none_or(|at| s.now < at) => Err(Errno::EAGAIN),
                    n => Ok(n),
                }
            },
        )
        .map_err(code)
    })
}

unsafe extern "C" fn pd_netdev_send(userdata: *mut c_void, buf: *const c_void, count: size_t) -> c_int {
    with(userdata, -1, |inst| {
        if count == 0 || count > 65535 {
            return Err(libc::EINVAL);
        }
        // SAFETY: packetdrill passes `count` bytes.
        let packet = unsafe { bytes(buf, count)? };
        inst.inject(packet).map(|()| 0).map_err(code)
    })
}

unsafe extern "C" fn pd_netdev_receive(
    userdata: *mut c_void,
    buf: *mut c_void,
    count: *mut size_t,
    time_usecs: *mut c_longlong,
) -> c_int {
    with(userdata, -1, |inst| {
        if count.is_null() || time_usecs.is_null() {
            return Err(libc::EFAULT);
        }
        // SAFETY: `count` is valid and `buf` has `*count` bytes.
        let buf = unsafe { bytes_mut(buf, *count)? };
        match inst.sniff().map_err(code)? {
            Some((at, packet)) => {
                let n = packet.len().min(buf.len());
                buf[..n].copy_from_slice(&packet[..n]);
                // SAFETY: checked non-null above.
                unsafe {
                    *count = n;
                    *time_usecs = EPOCH_MICROS + at.total_micros();
                }
            }
            None => {
                // packetdrill reads an empty packet as a parse error and stops: say why.
                eprintln!(
                    "ustack: netdev_receive: the stack has nothing to send and no timer that could send anything"
                );
                // SAFETY: checked non-null above.
                unsafe {
                    *count = 0;
                    *time_usecs = inst.time_of_day().map_err(code)?;
                }
            }
        }
        Ok(0)
    })
}

unsafe extern "C" fn pd_usleep(userdata: *mut c_void, usec: useconds_t) -> c_int {
    with(userdata, -1, |inst| inst.sleep(u64::from(usec)).map(|()| 0).map_err(code))
}

unsafe extern "C" fn pd_gettimeofday(userdata: *mut c_void, tv: *mut timeval, _tz: *mut c_void) -> c_int {
    with(userdata, -1, |inst| {
        let micros = inst.time_of_day().map_err(code)?;
        if !tv.is_null() {
            // SAFETY: a non-null tv is writable.
            unsafe {
                (*tv).tv_sec = (micros / 1_000_000) as libc::time_t;
                (*tv).tv_usec = (micros % 1_000_000) as libc::suseconds_t;
            }
        }
        Ok(0)
    })
}

unsafe extern "C" fn pd_epoll_create(userdata: *mut c_void, _size: c_int) -> c_int {
    with(userdata, -1, |_| Err(libc::ENOSYS))
}

unsafe extern "C" fn pd_epoll_ctl(userdata: *mut c_void, _: c_int, _: c_int, _: c_int, _: *mut epoll_event) -> c_int {
    with(userdata, -1, |_| Err(libc::ENOSYS))
}

unsafe extern "C" fn pd_epoll_wait(userdata: *mut c_void, _: c_int, _: *mut epoll_event, _: c_int, _: c_int) -> c_int {
    with(userdata, -1, |_| Err(libc::ENOSYS))
}

unsafe extern "C" fn pd_pipe(userdata: *mut c_void, _: *mut c_int) -> c_int {
    with(userdata, -1, |_| Err(libc::ENOSYS))
}

unsafe extern "C" fn pd_splice(
    userdata: *mut c_void,
    _: c_int,
    _: *mut Loff,
    _: c_int,
    _: *mut Loff,
    _: size_t,
    _: c_uint,
) -> c_int {
    with(userdata, -1, |_| Err(libc::ENOSYS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_one_pointer_per_field_of_packetdrill_h() {
        // userdata, free, 22 socket calls, netdev_send/receive, usleep, gettimeofday,
        // 3 epoll calls, pipe, splice: 33 pointers.
        assert_eq!(std::mem::size_of::<PacketdrillInterface>(), 33 * std::mem::size_of::<*const c_void>());
    }

    #[test]
    fn poll_bits_report_errors_unasked() {
        assert_eq!(revents(Events::IN | Events::OUT, libc::POLLIN), libc::POLLIN);
        assert_eq!(revents(Events::HUP, libc::POLLOUT), libc::POLLHUP);
        assert_eq!(revents(Events::NONE, libc::POLLIN | libc::POLLOUT), 0);
    }
}
