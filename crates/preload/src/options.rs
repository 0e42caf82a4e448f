//! setsockopt and getsockopt: the options ustack sockets answer, with Linux's value
//! conventions (SO_RCVBUF/SO_SNDBUF read back doubled, booleans as 0/1, timeouts as
//! `struct timeval`), and Linux's errors for the rest (ENOPROTOOPT for an option or level
//! it does not know, EINVAL for a short value, EFAULT for a null pointer).
//!
//! Values are kept here, per socket, so that getsockopt returns what setsockopt set, in
//! Linux's conventions; the ones ustack acts on are passed on to the socket as well
//! (SO_REUSEADDR, SO_KEEPALIVE with TCP_KEEPIDLE, SO_LINGER, SO_RCVBUF/SO_SNDBUF,
//! SO_BROADCAST, TCP_NODELAY, IP_TTL, IPV6_V6ONLY); SO_RCVTIMEO/SO_SNDTIMEO are carried
//! out by the library's own waits. SO_REUSEPORT, TCP_KEEPINTVL/TCP_KEEPCNT and IP_TOS are
//! kept but change nothing (docs/linux-differences.md).

use std::time::Duration;

use libc::{c_int, c_void, socklen_t};
use ustack::{Domain, Errno, Type};

use crate::table::Sock;

/// Linux's defaults (net.core.rmem_max etc. as a fresh namespace has them).
const RMEM_MAX: c_int = 212_992;
const WMEM_MAX: c_int = 212_992;
const TCP_RCVBUF: c_int = 131_072;
const TCP_SNDBUF: c_int = 16_384;
const UDP_BUF: c_int = 212_992;
/// SOCK_MIN_RCVBUF and SOCK_MIN_SNDBUF on x86-64.
const MIN_RCVBUF: c_int = 2_304;
const MIN_SNDBUF: c_int = 4_608;

/// What a socket's options are set to.
#[derive(Debug, Clone)]
pub struct Options {
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub keepalive: bool,
    pub broadcast: bool,
    pub rcvbuf: c_int,
    pub sndbuf: c_int,
    /// SO_LINGER: (l_onoff, l_linger).
    pub linger: (bool, c_int),
    pub rcvtimeo: Option<Duration>,
    pub sndtimeo: Option<Duration>,
    pub nodelay: bool,
    pub keepidle: c_int,
    pub keepintvl: c_int,
    pub keepcnt: c_int,
    pub v6only: bool,
    pub tos: c_int,
    pub ttl: c_int,
}

impl Options {
    pub fn new(_domain: Domain, ty: Type) -> Options {
        let (rcvbuf, sndbuf) = if ty == Type::Stream { (TCP_RCVBUF, TCP_SNDBUF) } else { (UDP_BUF, UDP_BUF) };
        Options {
            reuseaddr: false,
            reuseport: false,
            keepalive: false,
            broadcast: false,
            rcvbuf,
            sndbuf,
            linger: (false, 0),
            rcvtimeo: None,
            sndtimeo: None,
            nodelay: false,
            keepidle: 7200,
            keepintvl: 75,
            keepcnt: 9,
            v6only: false,
            tos: 0,
            ttl: 64,
        }
    }
}

/// The value of an option, as read from or written to the caller's memory.
enum Value {
    Int(c_int),
    Linger(bool, c_int),
    Time(Option<Duration>),
}

/// Reads an int option's value: EFAULT for null, EINVAL if shorter than an int.
unsafe fn int(value: *const c_void, len: socklen_t) -> Result<c_int, c_int> {
    if (len as usize) < size_of::<c_int>() {
        return Err(libc::EINVAL);
    }
    if value.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: the caller says `value` points to `len` >= 4 bytes.
    Ok(unsafe { value.cast::<c_int>().read_unaligned() })
}

unsafe fn timeval(value: *const c_void, len: socklen_t) -> Result<Option<Duration>, c_int> {
    if (len as usize) < size_of::<libc::timeval>() {
        return Err(libc::EINVAL);
    }
    if value.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: as in `int`.
    let tv = unsafe { value.cast::<libc::timeval>().read_unaligned() };
    if tv.tv_usec < 0 || tv.tv_usec >= 1_000_000 {
        return Err(libc::EDOM);
    }
    if tv.tv_sec < 0 {
        // Linux: a negative timeout is no wait at all... it treats it as zero, i.e. none.
        return Ok(None);
    }
    let d = Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64);
    Ok((!d.is_zero()).then_some(d))
}

/// setsockopt() on a ustack socket.
///
/// # Safety
/// `value` must point to `len` readable bytes (or be null).
pub unsafe fn set(sock: &Sock, level: c_int, name: c_int, value: *const c_void, len: socklen_t) -> Result<(), c_int> {
    let stream = sock.ty == Type::Stream;
    let v6 = sock.domain == Domain::Inet6;
    match (level, name) {
        (libc::SOL_SOCKET, libc::SO_RCVTIMEO | libc::SO_SNDTIMEO) => {
            // SAFETY: see the function's contract.
            let t = unsafe { timeval(value, len) }?;
            let mut o = sock.options();
            if name == libc::SO_RCVTIMEO {
                o.rcvtimeo = t
            } else {
                o.sndtimeo = t
            }
            return Ok(());
        }
        (libc::SOL_SOCKET, libc::SO_LINGER) => {
            if (len as usize) < size_of::<libc::linger>() {
                return Err(libc::EINVAL);
            }
            if value.is_null() {
                return Err(libc::EFAULT);
            }
            // SAFETY: see the function's contract.
            let l = unsafe { value.cast::<libc::linger>().read_unaligned() };
            let mut o = sock.options();
            // Linux keeps the old time when l_onoff is 0.
            let linger = (l.l_onoff != 0).then(|| Duration::from_secs(l.l_linger.max(0) as u64));
            sock.socket.set_linger(linger).map_err(Errno::code)?;
            o.linger = if l.l_onoff != 0 { (true, l.l_linger.max(0)) } else { (false, o.linger.1) };
            return Ok(());
        }
        _ => {}
    }
    let known = matches!(
        (level, name),
        (
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR
                | libc::SO_REUSEPORT
                | libc::SO_KEEPALIVE
                | libc::SO_BROADCAST
                | libc::SO_RCVBUF
                | libc::SO_SNDBUF
                | libc::SO_TYPE
                | libc::SO_ERROR
                | libc::SO_DOMAIN
                | libc::SO_PROTOCOL
                | libc::SO_ACCEPTCONN
        ) | (libc::IPPROTO_TCP, libc::TCP_NODELAY | libc::TCP_KEEPIDLE | libc::TCP_KEEPINTVL | libc::TCP_KEEPCNT)
            | (libc::IPPROTO_IP, libc::IP_TOS | libc::IP_TTL)
            | (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)
    );
    // Linux: TCP options on a UDP socket, IPv6 ones on an IPv4 socket: unknown.
    if !known || (level == libc::IPPROTO_TCP && !stream) || (level == libc::IPPROTO_IPV6 && !v6) {
        return Err(libc::ENOPROTOOPT);
    }
    // SAFETY: see the function's contract.
    let v = unsafe { int(value, len) }?;
    let mut o = sock.options();
    match (level, name) {
        (libc::SOL_SOCKET, libc::SO_REUSEADDR) => {
            sock.socket.set_reuse_address(v != 0).map_err(Errno::code)?;
            o.reuseaddr = v != 0;
        }
        (libc::SOL_SOCKET, libc::SO_REUSEPORT) => o.reuseport = v != 0,
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => {
            let idle = (v != 0).then(|| Duration::from_secs(o.keepidle as u64));
            sock.socket.set_keepalive(idle).map_err(Errno::code)?;
            o.keepalive = v != 0;
        }
        (libc::SOL_SOCKET, libc::SO_BROADCAST) => {
            sock.socket.set_broadcast(v != 0).map_err(Errno::code)?;
            o.broadcast = v != 0;
        }
        // Linux doubles the value (room for its bookkeeping) within [min, max], and reads it
        // back so; ustack's own size for the socket is capped by its configured buffer.
        (libc::SOL_SOCKET, libc::SO_RCVBUF) => {
            sock.socket.set_recv_buffer_size(v.max(0) as usize).map_err(Errno::code)?;
            o.rcvbuf = (v.clamp(0, RMEM_MAX) * 2).max(MIN_RCVBUF);
        }
        (libc::SOL_SOCKET, libc::SO_SNDBUF) => {
            sock.socket.set_send_buffer_size(v.max(0) as usize).map_err(Errno::code)?;
            o.sndbuf = (v.clamp(0, WMEM_MAX) * 2).max(MIN_SNDBUF);
        }
        (libc::SOL_SOCKET, _) => return Err(libc::ENOPROTOOPT),
        (libc::IPPROTO_TCP, libc::TCP_NODELAY) => {
            sock.socket.set_nodelay(v != 0).map_err(Errno::code)?;
            o.nodelay = v != 0;
        }
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE | libc::TCP_KEEPINTVL) if !(1..=32_767).contains(&v) => {
            return Err(libc::EINVAL);
        }
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE) => {
            if o.keepalive {
                sock.socket.set_keepalive(Some(Duration::from_secs(v as u64))).map_err(Errno::code)?;
            }
            o.keepidle = v;
        }
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL) => o.keepintvl = v,
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT) if !(1..=127).contains(&v) => return Err(libc::EINVAL),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT) => o.keepcnt = v,
        (libc::IPPROTO_IP, libc::IP_TOS) => o.tos = v & 0xff,
        (libc::IPPROTO_IP, libc::IP_TTL) if !(-1..=255).contains(&v) || v == 0 => return Err(libc::EINVAL),
        (libc::IPPROTO_IP, libc::IP_TTL) => {
            let ttl = if v == -1 { 64 } else { v };
            sock.socket.set_ttl(ttl as u32).map_err(Errno::code)?;
            o.ttl = ttl;
        }
        (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) => {
            sock.socket.set_only_v6(v != 0).map_err(Errno::code)?;
            o.v6only = v != 0;
        }
        _ => return Err(libc::ENOPROTOOPT),
    }
    Ok(())
}

/// getsockopt() on a ustack socket.
///
/// # Safety
/// `len` must point to a socklen_t and `value` to `*len` writable bytes (or be null).
pub unsafe fn get(
    sock: &Sock,
    level: c_int,
    name: c_int,
    value: *mut c_void,
    len: *mut socklen_t,
) -> Result<(), c_int> {
    let stream = sock.ty == Type::Stream;
    let v6 = sock.domain == Domain::Inet6;
    let o = sock.options().clone();
    let found = match (level, name) {
        (libc::SOL_SOCKET, libc::SO_REUSEADDR) => Value::Int(o.reuseaddr.into()),
        (libc::SOL_SOCKET, libc::SO_REUSEPORT) => Value::Int(o.reuseport.into()),
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => Value::Int(o.keepalive.into()),
        (libc::SOL_SOCKET, libc::SO_BROADCAST) => Value::Int(o.broadcast.into()),
        (libc::SOL_SOCKET, libc::SO_RCVBUF) => Value::Int(o.rcvbuf),
        (libc::SOL_SOCKET, libc::SO_SNDBUF) => Value::Int(o.sndbuf),
        (libc::SOL_SOCKET, libc::SO_TYPE) => Value::Int(if stream { libc::SOCK_STREAM } else { libc::SOCK_DGRAM }),
        (libc::SOL_SOCKET, libc::SO_DOMAIN) => Value::Int(if v6 { libc::AF_INET6 } else { libc::AF_INET }),
        (libc::SOL_SOCKET, libc::SO_PROTOCOL) => Value::Int(if stream { libc::IPPROTO_TCP } else { libc::IPPROTO_UDP }),
        (libc::SOL_SOCKET, libc::SO_ACCEPTCONN) => {
            Value::Int(sock.listening.load(std::sync::atomic::Ordering::Relaxed).into())
        }
        (libc::SOL_SOCKET, libc::SO_ERROR) => Value::Int(pending_error(sock)),
        (libc::SOL_SOCKET, libc::SO_LINGER) => Value::Linger(o.linger.0, o.linger.1),
        (libc::SOL_SOCKET, libc::SO_RCVTIMEO) => Value::Time(o.rcvtimeo),
        (libc::SOL_SOCKET, libc::SO_SNDTIMEO) => Value::Time(o.sndtimeo),
        (libc::IPPROTO_TCP, libc::TCP_NODELAY) if stream => Value::Int(o.nodelay.into()),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE) if stream => Value::Int(o.keepidle),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL) if stream => Value::Int(o.keepintvl),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT) if stream => Value::Int(o.keepcnt),
        (libc::IPPROTO_IP, libc::IP_TOS) => Value::Int(o.tos),
        (libc::IPPROTO_IP, libc::IP_TTL) => Value::Int(o.ttl),
        (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) if v6 => Value::Int(o.v6only.into()),
        _ => return Err(libc::ENOPROTOOPT),
    };
    if len.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: see the function's contract.
    let room = unsafe { len.read_unaligned() } as i32;
    if room < 0 {
        return Err(libc::EINVAL);
    }
    let bytes: Vec<u8> = match found {
        Value::Int(v) => v.to_ne_bytes().to_vec(),
        Value::Linger(on, secs) => {
            let l = libc::linger { l_onoff: on.into(), l_linger: secs };
            // SAFETY: a plain C struct viewed as its bytes.
            unsafe { std::slice::from_raw_parts((&l as *const libc::linger).cast::<u8>(), size_of::<libc::linger>()) }
                .to_vec()
        }
        Value::Time(t) => {
            let t = t.unwrap_or_default();
            let tv = libc::timeval { tv_sec: t.as_secs() as _, tv_usec: t.subsec_micros() as _ };
            // SAFETY: as above.
            unsafe {
                std::slice::from_raw_parts((&tv as *const libc::timeval).cast::<u8>(), size_of::<libc::timeval>())
            }
            .to_vec()
        }
    };
    // Linux cuts the value to the room given.
    let n = bytes.len().min(room as usize);
    if n > 0 && value.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: see the function's contract; n <= *len.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), value.cast::<u8>(), n);
        len.write_unaligned(n as socklen_t);
    }
    Ok(())
}

/// SO_ERROR: the outcome of a non-blocking connect() the first time it is known (and then
/// the connection counts as made, as in Linux); 0 otherwise.
fn pending_error(sock: &Sock) -> c_int {
    let mut connecting = sock.connecting();
    let Some(addr) = *connecting else {
        // An asynchronous error (ECONNRESET on an established connection, say), once.
        return match sock.socket.take_error() {
            Ok(Some(e)) => e.code(),
            Ok(None) | Err(_) => 0,
        };
    };
    match sock.socket.connect(addr) {
        Err(Errno::EALREADY | Errno::EINPROGRESS) => 0,
        Ok(()) | Err(Errno::EISCONN) => {
            *connecting = None;
            *sock.collected() = Some(0);
            0
        }
        Err(e) => {
            *connecting = None;
            *sock.collected() = Some(libc::ECONNABORTED);
            e.code()
        }
    }
}
