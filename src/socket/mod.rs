//! The Berkeley socket API over the stack: socket, bind, listen, accept, connect,
//! send/recv, sendto/recvfrom, shutdown, close — with the kernel's blocking rules and
//! errno names.
//!
//! A [`Socket`] is like a file descriptor: [`Socket::try_clone`] is `dup()`, and the
//! socket closes when its last handle does. Calls block like the kernel's unless the
//! socket is non-blocking, in which case they return [`Errno::EAGAIN`] (or
//! `EINPROGRESS` for connect). Where ustack differs from Linux, the doc says so.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use smoltcp::socket::{tcp, udp};
use smoltcp::wire::IpListenEndpoint;

use crate::stack::ports::{Holder, Proto};
use crate::stack::{Core, Entry, Listener, Owner, SOMAXCONN, Shared, SockId, SockState, Stack};

mod datagram;
mod errno;
mod net;
mod poll;

pub use crate::stack::{Domain, FiveTuple, Type};
pub use errno::{Errno, Result};
pub use net::{TcpListener, TcpStream, UdpSocket};
pub use poll::{Events, PollFd, poll};
pub use std::net::Shutdown;

pub use crate::stack::DEFAULT_CONNECT_TIMEOUT;

/// A socket: the handle every call goes through, like a file descriptor.
pub struct Socket {
    shared: Arc<Shared>,
    id: SockId,
    open: AtomicBool,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Socket({})", self.id)
    }
}

fn entry(core: &mut Core, id: SockId) -> Result<&mut Entry> {
    core.entries.get_mut(&id).ok_or(Errno::EBADF)
}

/// The address as the socket's family shows it: IPv4 peers of an AF_INET6 socket appear
/// as v4-mapped IPv6 addresses (`::ffff:10.7.0.1`), as in Linux.
fn to_user(domain: Domain, addr: SocketAddr) -> SocketAddr {
    match (domain, addr) {
        (Domain::Inet6, SocketAddr::V4(v4)) => SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()),
        _ => addr,
    }
}

/// Checks an address against the socket's family and unmaps v4-mapped IPv6 addresses.
///
/// As Linux: an AF_INET socket given an IPv6 address says EAFNOSUPPORT; an AF_INET6 socket
/// given an IPv4 one says EINVAL (a `sockaddr_in` is shorter than a `sockaddr_in6`).
fn from_user(domain: Domain, addr: SocketAddr) -> Result<SocketAddr> {
    match (domain, addr) {
        (Domain::Inet, SocketAddr::V4(_)) => Ok(addr),
        (Domain::Inet6, SocketAddr::V6(v6)) => Ok(match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        }),
        (Domain::Inet, SocketAddr::V6(_)) => Err(Errno::EAFNOSUPPORT),
        (Domain::Inet6, SocketAddr::V4(_)) => Err(Errno::EINVAL),
    }
}

/// [`from_user`] for UDP's connect() and sendto(): there Linux takes a plain IPv4 address
/// on an AF_INET6 socket as IPv4 (dual-stack), where bind() and TCP's connect() say EINVAL.
fn from_user_dgram(domain: Domain, addr: SocketAddr) -> Result<SocketAddr> {
    match (domain, addr) {
        (Domain::Inet6, SocketAddr::V4(_)) => Ok(addr),
        _ => from_user(domain, addr),
    }
}

fn unspecified(domain: Domain) -> IpAddr {
    match domain {
        Domain::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Domain::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

fn listen_endpoint(addr: SocketAddr) -> IpListenEndpoint {
    let ip = (!addr.ip().is_unspecified()).then(|| addr.ip().into());
    IpListenEndpoint { addr: ip, port: addr.port() }
}

/// The time left until `deadline`, or `None` to wait without limit.
fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

impl Socket {
    /// socket(): a new, unbound socket on `stack`.
    pub fn new(stack: &Stack, domain: Domain, ty: Type) -> Result<Socket> {
        let shared = stack.shared().clone();
        let id = {
            let mut core = shared.lock();
            if core.down.is_some() {
                return Err(Errno::ENETDOWN);
            }
            let id = core.new_id();
            core.entries.insert(
                id,
                Entry {
                    domain,
                    ty,
                    refs: 1,
                    nonblocking: false,
                    reuse_addr: false,
                    local: None,
                    state: SockState::Idle,
                    shut_read: false,
                    shut_write: false,
                    connecting: false,
                    read_timeout: None,
                    write_timeout: None,
                    udp_dropped: 0,
                },
            );
            id
        };
        Ok(Socket { shared, id, open: AtomicBool::new(true) })
    }

    /// The socket's number in its stack (what a file descriptor would be).
    pub fn id(&self) -> SockId {
        self.id
    }

    /// Locks the stack for a call on this handle: EBADF once this handle is closed.
    fn lock(&self) -> Result<MutexGuard<'_, Core>> {
        if !self.open.load(Ordering::Acquire) {
            return Err(Errno::EBADF);
        }
        let core = self.shared.lock();
        if !core.entries.contains_key(&self.id) {
            return Err(Errno::EBADF);
        }
        Ok(core)
    }

    /// Waits until the stack has done something to this socket; ENETDOWN if the stack has
    /// stopped.
    fn wait<'a>(&self, core: MutexGuard<'a, Core>, deadline: Option<Instant>) -> Result<(MutexGuard<'a, Core>, bool)> {
        let (core, timed_out) = self.shared.wait_socket(core, self.id, remaining(deadline));
        if core.down.is_some() {
            return Err(Errno::ENETDOWN);
        }
        Ok((core, timed_out || deadline.is_some_and(|d| Instant::now() >= d)))
    }

    /// bind(): gives the socket a local address. Port 0 picks a free ephemeral port.
    ///
    /// EADDRINUSE if another socket holds the port (see [`Socket::set_reuse_address`]),
    /// EADDRNOTAVAIL if the address is not the stack's, EINVAL if already bound.
    pub fn bind(&self, addr: SocketAddr) -> Result<()> {
        let mut core = self.lock()?;
        bind_locked(&mut core, self.id, addr)
    }

    /// listen(): makes a TCP socket a listener (binding an ephemeral port if unbound, as
    /// Linux does). `backlog` bounds the accept queue: up to `backlog + 1` established
    /// connections wait for accept() (Linux's rule); beyond that new SYNs are dropped.
    /// Backlogs over [`SOMAXCONN`] are clamped to it. A second listen() changes the backlog.
    pub fn listen(&self, backlog: u32) -> Result<()> {
        let mut core = self.lock()?;
        let core = &mut *core;
        let e = entry(core, self.id)?;
        if e.ty == Type::Dgram {
            return Err(Errno::EOPNOTSUPP);
        }
        let backlog = backlog.min(SOMAXCONN);
        match &mut e.state {
            SockState::Listening(l) => {
                l.backlog = backlog;
                return Ok(());
            }
            SockState::Connected(_) => return Err(Errno::EINVAL),
            SockState::Idle => {}
            SockState::Udp { .. } => return Err(Errno::EOPNOTSUPP),
        }
        let local = match e.local {
            Some(local) => local,
            None => {
                let any = SocketAddr::new(unspecified(e.domain), 0);
                bind_locked(core, self.id, any)?;
                core.entries[&self.id].local.expect("bound above")
            }
        };
        let e = entry(core, self.id)?;
        e.state = SockState::Listening(Listener { backlog, ..Listener::default() });
        core.listeners.entry(local.port()).or_default().push(self.id);
        core.generation += 1;
        core.ports.set_listening(Proto::Tcp, local.port(), self.id, true);
        log::info!(target: "ustack::backlog", "listener #{} on {local}: backlog {backlog} (accept queue holds {})", self.id, backlog + 1);
        Ok(())
    }

    /// accept(): the next established connection and its peer's address. Only connections
    /// that completed the 3-way handshake are returned. EINVAL if not listening.
    pub fn accept(&self) -> Result<(Socket, SocketAddr)> {
        let mut core = self.lock()?;
        let deadline = core.entries[&self.id].read_timeout.map(|t| Instant::now() + t);
        loop {
            let core_ref = &mut *core;
            let e = entry(core_ref, self.id)?;
            let (domain, nonblocking, reuse_addr) = (e.domain, e.nonblocking, e.reuse_addr);
            let listener = match &mut e.state {
                SockState::Listening(l) => l,
                _ if e.ty == Type::Dgram => return Err(Errno::EOPNOTSUPP),
                _ => return Err(Errno::EINVAL),
            };
            if let Some(handle) = listener.accept_queue.pop_front() {
                let waiting = listener.accept_queue.len();
                let id = core_ref.new_id();
                let conn = core_ref.conns.get_mut(&handle).expect("queued connections are registered");
                conn.owner = Owner::Socket(id);
                conn.holds_port = true;
                let tuple = conn.tuple;
                // The accepted socket inherits the listener's SO_REUSEADDR, as in Linux.
                core_ref.ports.hold(
                    Proto::Tcp,
                    tuple.local.ip(),
                    tuple.local.port(),
                    Holder::Connection(handle),
                    reuse_addr,
                );
                core_ref.entries.insert(
                    id,
                    Entry {
                        domain,
                        ty: Type::Stream,
                        refs: 1,
                        nonblocking: false,
                        reuse_addr,
                        local: Some(tuple.local),
                        state: SockState::Connected(handle),
                        shut_read: false,
                        shut_write: false,
                        connecting: false,
                        read_timeout: None,
                        write_timeout: None,
                        udp_dropped: 0,
                    },
                );
                // The connection's owner and the listener's accept queue changed: the demux table did.
                core_ref.generation += 1;
                log::info!(target: "ustack::backlog", "{tuple}: accepted as socket #{id}; {waiting} still in the accept queue");
                let socket = Socket { shared: self.shared.clone(), id, open: AtomicBool::new(true) };
                return Ok((socket, to_user(domain, tuple.remote)));
            }
            if nonblocking {
                return Err(Errno::EAGAIN);
            }
            let (next, timed_out) = self.wait(core, deadline)?;
            core = next;
            if timed_out {
                return Err(Errno::EAGAIN);
            }
        }
    }

    /// connect(): for TCP, opens a connection and (blocking) waits until it is established
    /// (Ok), refused by RST (ECONNREFUSED), or [`DEFAULT_CONNECT_TIMEOUT`] passes
    /// (ETIMEDOUT); non-blocking, it returns EINPROGRESS and [`poll`] reports writable
    /// when done, EALREADY while in progress, and the next connect() after that reports
    /// the outcome (Ok or the error) once; then EISCONN, as in Linux. For UDP, fixes the
    /// peer datagrams go to and come from. Binds an ephemeral port first if the socket
    /// is unbound. An AF_INET6 TCP socket given an IPv4 address: EINVAL (Linux).
    pub fn connect(&self, addr: SocketAddr) -> Result<()> {
        let timeout = self.lock()?.config.connect_timeout;
        self.connect_timeout(addr, timeout)
    }

    /// connect() that gives up with ETIMEDOUT after `timeout`.
    pub fn connect_timeout(&self, addr: SocketAddr, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut core = self.lock()?;
        let e = entry(&mut core, self.id)?;
        if e.ty == Type::Dgram {
            let remote = from_user_dgram(e.domain, addr)?;
            return udp_connect(&mut core, self.id, remote);
        }
        let remote = from_user(e.domain, addr)?;
        let (nonblocking, connecting) = (e.nonblocking, e.connecting);
        match e.state {
            SockState::Listening(_) => return Err(Errno::EISCONN),
            SockState::Udp { .. } => unreachable!("stream sockets have no UDP state"),
            SockState::Connected(handle) => {
                let conn = &core.conns[&handle];
                return match conn.state {
                    tcp::State::SynSent if nonblocking => Err(Errno::EALREADY),
                    tcp::State::SynSent => {
                        drop(core);
                        self.wait_connected(deadline)
                    }
                    // A non-blocking connect that failed: report it, then allow a new one.
                    // (A connection that was established and reported stays "connected"
                    // for connect() even after a RST: EISCONN, as in Linux.)
                    tcp::State::Closed if connecting => {
                        let err = core.conns.get_mut(&handle).and_then(|c| c.pending_error.take());
                        core.free_conn(handle);
                        let e = entry(&mut core, self.id)?;
                        e.state = SockState::Idle;
                        e.connecting = false;
                        Err(err.unwrap_or(Errno::ECONNREFUSED))
                    }
                    // The first connect() after a non-blocking one succeeded reports the
                    // success; later ones say EISCONN (Linux).
                    _ if connecting => {
                        entry(&mut core, self.id)?.connecting = false;
                        Ok(())
                    }
                    _ => Err(Errno::EISCONN),
                };
            }
            SockState::Idle => {}
        }
        start_connect(&mut core, self.id, remote)?;
        drop(core);
        self.shared.wake();
        if nonblocking {
            return Err(Errno::EINPROGRESS);
        }
        self.wait_connected(deadline)
    }

    fn wait_connected(&self, deadline: Instant) -> Result<()> {
        let mut core = self.lock()?;
        loop {
            let SockState::Connected(handle) = entry(&mut core, self.id)?.state else {
                return Err(Errno::ECONNABORTED);
            };
            let conn = core.conns.get_mut(&handle).ok_or(Errno::ECONNABORTED)?;
            match conn.state {
                tcp::State::SynSent => {}
                tcp::State::Closed => {
                    let err = conn.pending_error.take().unwrap_or(Errno::ECONNREFUSED);
                    core.free_conn(handle);
                    entry(&mut core, self.id)?.state = SockState::Idle;
                    return Err(err);
                }
                _ => {
                    entry(&mut core, self.id)?.connecting = false;
                    return Ok(());
                }
            }
            let (next, timed_out) = self.wait(core, Some(deadline))?;
            core = next;
            if timed_out
                && let SockState::Connected(handle) = entry(&mut core, self.id)?.state
                && core.conns.get(&handle).is_some_and(|c| c.state == tcp::State::SynSent)
            {
                log::info!(target: "ustack::handshake", "{}: connect() timed out", core.conns[&handle].tuple);
                core.free_conn(handle);
                entry(&mut core, self.id)?.state = SockState::Idle;
                return Err(Errno::ETIMEDOUT);
            }
        }
    }

    /// send(): queues `buf` on a connected socket. Blocking, it returns once all of `buf`
    /// is queued (as Linux's blocking send does); non-blocking, it queues what fits and
    /// returns EAGAIN if nothing does. After a RST: ECONNRESET once, then EPIPE. After
    /// shutdown(Write) or on an unconnected TCP socket: EPIPE (Linux's answer too).
    pub fn send(&self, buf: &[u8]) -> Result<usize> {
        let mut core = self.lock()?;
        let e = entry(&mut core, self.id)?;
        if e.ty == Type::Dgram {
            let peer = match e.state {
                SockState::Udp { peer: Some(peer), .. } => peer,
                _ => return Err(Errno::EDESTADDRREQ),
            };
            drop(core);
            return self.udp_send_to(buf, peer);
        }
        let deadline = e.write_timeout.map(|t| Instant::now() + t);
        let mut sent = 0;
        loop {
            let e = entry(&mut core, self.id)?;
            let nonblocking = e.nonblocking;
            let SockState::Connected(handle) = e.state else { return Err(Errno::EPIPE) };
            let conn = core.conns.get_mut(&handle).ok_or(Errno::EPIPE)?;
            // An error after part of the data went out is kept for the next call, as in Linux.
            if conn.pending_error.is_some() {
                return if sent > 0 { Ok(sent) } else { Err(conn.pending_error.take().expect("checked")) };
            }
            let socket = core.tcp_mut(handle);
            let connecting = matches!(socket.state(), tcp::State::SynSent | tcp::State::SynReceived);
            if !connecting {
                if !socket.may_send() {
                    return if sent > 0 { Ok(sent) } else { Err(Errno::EPIPE) };
                }
                let n = socket.send_slice(&buf[sent..]).unwrap_or(0);
                if n > 0 {
                    sent += n;
                    self.shared.wake();
                }
                if sent == buf.len() {
                    return Ok(sent);
                }
            }
            if nonblocking {
                return if sent > 0 { Ok(sent) } else { Err(Errno::EAGAIN) };
            }
            let (next, timed_out) = self.wait(core, deadline)?;
            core = next;
            if timed_out {
                return if sent > 0 { Ok(sent) } else { Err(Errno::EAGAIN) };
            }
        }
    }

    /// recv(): waits for data and returns what is there (up to `buf.len()`); 0 at end of
    /// stream (the peer's FIN, or after shutdown(Read)). After a RST: ECONNRESET once,
    /// then 0. ENOTCONN on an unconnected TCP socket. For UDP, one datagram (see
    /// [`Socket::recv_from`]).
    pub fn recv(&self, buf: &mut [u8]) -> Result<usize> {
        let mut core = self.lock()?;
        let e = entry(&mut core, self.id)?;
        if e.ty == Type::Dgram {
            drop(core);
            return self.recv_from(buf).map(|(n, _)| n);
        }
        let deadline = e.read_timeout.map(|t| Instant::now() + t);
        loop {
            let e = entry(&mut core, self.id)?;
            let (nonblocking, shut_read) = (e.nonblocking, e.shut_read);
            let SockState::Connected(handle) = e.state else { return Err(Errno::ENOTCONN) };
            // As in Linux: data already received first, then a pending error, then end
            // of stream (shutdown(Read) included). An empty buffer waits like any other.
            let socket = core.tcp_mut(handle);
            if socket.can_recv() {
                let n = socket.recv_slice(buf).unwrap_or(0);
                // The window opened: let the stack thread tell the peer.
                self.shared.wake();
                return Ok(n);
            }
            let conn = core.conns.get_mut(&handle).ok_or(Errno::ENOTCONN)?;
            if let Some(err) = conn.pending_error.take() {
                return Err(err);
            }
            if shut_read {
                return Ok(0);
            }
            let socket = core.tcp(handle);
            let connecting = matches!(socket.state(), tcp::State::SynSent | tcp::State::SynReceived);
            if !connecting && !socket.may_recv() {
                return Ok(0);
            }
            if nonblocking {
                return Err(Errno::EAGAIN);
            }
            let (next, timed_out) = self.wait(core, deadline)?;
            core = next;
            if timed_out {
                return Err(Errno::EAGAIN);
            }
        }
    }

    /// shutdown(): `Write` sends FIN once queued data is sent, and the socket can still
    /// receive; `Read` makes recv() report end of stream once received data is read;
    /// `Both` does both. On a listener, `Read`/`Both` stops listening and wakes accept()
    /// with EINVAL (`Write` does nothing), as in Linux. ENOTCONN if there is no connection
    /// (or it is over: reset, or closed both ways).
    pub fn shutdown(&self, how: Shutdown) -> Result<()> {
        let mut core = self.lock()?;
        let e = entry(&mut core, self.id)?;
        let handle = match e.state {
            SockState::Connected(handle) => Some(handle),
            SockState::Udp { peer: Some(_), .. } => None,
            // Linux: SHUT_WR means nothing to a listener; SHUT_RD stops it listening, and
            // a thread blocked in accept() gets EINVAL (how servers wake an accept loop).
            SockState::Listening(_) => {
                if matches!(how, Shutdown::Read | Shutdown::Both) {
                    let local = e.local;
                    let SockState::Listening(l) = std::mem::replace(&mut e.state, SockState::Idle) else {
                        unreachable!("matched above")
                    };
                    core.unlisten(self.id, local, l);
                    if let Some(local) = local {
                        core.ports.set_listening(Proto::Tcp, local.port(), self.id, false);
                    }
                    log::info!(target: "ustack::backlog", "listener #{} shut down", self.id);
                    self.shared.notify(&core, self.id);
                    drop(core);
                    self.shared.wake();
                }
                return Ok(());
            }
            _ => return Err(Errno::ENOTCONN),
        };
        // A connection that is over (reset, or closed both ways): ENOTCONN, as in Linux.
        if handle.is_some_and(|h| core.tcp(h).state() == tcp::State::Closed) {
            return Err(Errno::ENOTCONN);
        }
        let e = entry(&mut core, self.id)?;
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            e.shut_read = true;
        }
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            e.shut_write = true;
        }
        if let (Some(handle), Shutdown::Write | Shutdown::Both) = (handle, how) {
            core.tcp_mut(handle).close();
            core.dirty.push(handle);
            self.shared.wake();
        }
        self.shared.notify(&core, self.id);
        Ok(())
    }

    /// close(): lets go of this handle; when it was the last, the socket closes. Returns
    /// at once: the stack finishes the FIN exchange and TIME-WAIT by itself, and frees the
    /// connection and its port after that. As in Linux, unread received data turns the
    /// FIN into a RST, and a listener's queued connections are reset. EBADF if this handle
    /// is already closed.
    pub fn close(&self) -> Result<()> {
        if !self.open.swap(false, Ordering::AcqRel) {
            return Err(Errno::EBADF);
        }
        let mut core = self.shared.lock();
        core.release(self.id);
        self.shared.notify(&core, self.id);
        drop(core);
        self.shared.wake();
        Ok(())
    }

    /// dup(): another handle to the same socket.
    pub fn try_clone(&self) -> Result<Socket> {
        let mut core = self.lock()?;
        entry(&mut core, self.id)?.refs += 1;
        Ok(Socket { shared: self.shared.clone(), id: self.id, open: AtomicBool::new(true) })
    }

    /// O_NONBLOCK: calls that would wait return EAGAIN (EINPROGRESS for connect) instead.
    pub fn set_nonblocking(&self, nonblocking: bool) -> Result<()> {
        let mut core = self.lock()?;
        entry(&mut core, self.id)?.nonblocking = nonblocking;
        Ok(())
    }

    /// SO_REUSEADDR: lets bind() take a port that only lingering connections (closing,
    /// TIME-WAIT, accepted) hold — so a restarted server can listen again at once. It
    /// never shares a port with another open socket (that would be SO_REUSEPORT).
    pub fn set_reuse_address(&self, reuse: bool) -> Result<()> {
        let mut core = self.lock()?;
        entry(&mut core, self.id)?.reuse_addr = reuse;
        Ok(())
    }

    /// SO_RCVTIMEO: recv() and accept() give EAGAIN after waiting this long.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        if timeout == Some(Duration::ZERO) {
            return Err(Errno::EINVAL);
        }
        let mut core = self.lock()?;
        entry(&mut core, self.id)?.read_timeout = timeout;
        Ok(())
    }

    /// SO_SNDTIMEO: send() gives EAGAIN (or what it queued) after waiting this long.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        if timeout == Some(Duration::ZERO) {
            return Err(Errno::EINVAL);
        }
        let mut core = self.lock()?;
        entry(&mut core, self.id)?.write_timeout = timeout;
        Ok(())
    }

    /// getsockname(): the local address; the family's wildcard with port 0 if unbound.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        let mut core = self.lock()?;
        let e = entry(&mut core, self.id)?;
        let domain = e.domain;
        // A connection knows the source address routing chose for it, as getsockname shows.
        let local = match e.state {
            SockState::Connected(handle) => Some(core.conns[&handle].tuple.local),
            // A connected UDP socket on a wildcard address shows the source address its
            // datagrams go out with, as Linux does.
            SockState::Udp { peer: Some(peer), .. } => e.local.map(|local| match local.ip().is_unspecified() {
                true => match core.iface.get_source_address(&peer.ip().into()) {
                    Some(source) => SocketAddr::new(source.into(), local.port()),
                    None => local,
                },
                false => local,
            }),
            _ => e.local,
        };
        Ok(to_user(domain, local.unwrap_or_else(|| SocketAddr::new(unspecified(domain), 0))))
    }

    /// getpeername(): the connected peer's address; ENOTCONN if there is none.
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        let mut core = self.lock()?;
        let e = entry(&mut core, self.id)?;
        let domain = e.domain;
        match e.state {
            SockState::Connected(handle) => {
                let conn = &core.conns[&handle];
                let established = !matches!(conn.state, tcp::State::SynSent | tcp::State::Closed);
                if established { Ok(to_user(domain, conn.tuple.remote)) } else { Err(Errno::ENOTCONN) }
            }
            SockState::Udp { peer: Some(peer), .. } => Ok(to_user(domain, peer)),
            _ => Err(Errno::ENOTCONN),
        }
    }

    /// The TCP state of the socket's connection (RFC 9293 names via `Display`), if any.
    pub fn tcp_state(&self) -> Option<tcp::State> {
        let mut core = self.lock().ok()?;
        match entry(&mut core, self.id).ok()?.state {
            SockState::Connected(handle) => Some(core.tcp(handle).state()),
            SockState::Listening(_) => Some(tcp::State::Listen),
            _ => None,
        }
    }

    /// A listener's queue lengths: (SYN queue, accept queue, SYNs dropped so far).
    pub fn listen_queues(&self) -> Option<(usize, usize, u64)> {
        let mut core = self.lock().ok()?;
        match &entry(&mut core, self.id).ok()?.state {
            SockState::Listening(l) => Some((l.syn_queue.len(), l.accept_queue.len(), l.syns_dropped + l.acks_dropped)),
            _ => None,
        }
    }

    /// What ustack recorded about this socket's TCP connection: its 5-tuple, every state
    /// it entered (timed from its first SYN), the handshake RTT and who closed first.
    pub fn connection_info(&self) -> Option<crate::stack::ConnectionInfo> {
        self.lock().ok()?.connection_info(self.id)
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        if self.open.load(Ordering::Acquire) {
            let _ = self.close();
        }
    }
}

fn bind_locked(core: &mut Core, id: SockId, addr: SocketAddr) -> Result<()> {
    let e = entry(core, id)?;
    let addr = from_user(e.domain, addr)?;
    if e.local.is_some() {
        return Err(Errno::EINVAL);
    }
    let (ty, reuse) = (e.ty, e.reuse_addr);
    let ip = addr.ip();
    if !ip.is_unspecified() && !core.is_local(ip) {
        return Err(Errno::EADDRNOTAVAIL);
    }
    let proto = ty.proto();
    let port = match addr.port() {
        0 => core.ports.ephemeral(proto, ip, crate::stack::random_u32()).ok_or(Errno::EADDRINUSE)?,
        port if core.ports.is_free(proto, ip, port, reuse) => port,
        _ => return Err(Errno::EADDRINUSE),
    };
    let local = SocketAddr::new(ip, port);
    if ty == Type::Dgram {
        let (packets, bytes) = (core.config.udp_packets, core.config.udp_buffer);
        let buffer = || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; packets], vec![0; bytes]);
        let mut socket = udp::Socket::new(buffer(), buffer());
        socket.bind(listen_endpoint(local)).map_err(|_| Errno::EINVAL)?;
        let handle = core.add_udp_socket(socket, id);
        entry(core, id)?.state = SockState::Udp { handle, peer: None };
        core.udp_ports.entry(port).or_default().push(id);
        core.generation += 1;
    }
    core.ports.hold(proto, ip, port, Holder::Socket { id, listening: false }, reuse);
    entry(core, id)?.local = Some(local);
    Ok(())
}

/// Binds an unbound socket to an ephemeral port on the wildcard address (connect,
/// sendto and listen do this implicitly, as in Linux).
fn autobind(core: &mut Core, id: SockId) -> Result<SocketAddr> {
    let e = entry(core, id)?;
    if let Some(local) = e.local {
        return Ok(local);
    }
    let any = SocketAddr::new(unspecified(e.domain), 0);
    bind_locked(core, id, any)?;
    Ok(core.entries[&id].local.expect("bound above"))
}

fn start_connect(core: &mut Core, id: SockId, remote: SocketAddr) -> Result<()> {
    if remote.port() == 0 || remote.ip().is_unspecified() {
        return Err(Errno::ECONNREFUSED);
    }
    let bound = autobind(core, id)?;
    let local_ip = if bound.ip().is_unspecified() {
        let source = core.iface.get_source_address(&remote.ip().into()).ok_or(Errno::ENETUNREACH)?;
        IpAddr::from(source)
    } else {
        bound.ip()
    };
    if local_ip.is_ipv4() != remote.ip().is_ipv4() {
        return Err(Errno::ENETUNREACH);
    }
    let local = SocketAddr::new(local_ip, bound.port());
    let tuple = FiveTuple { local, remote };
    if core.demux.contains_key(&tuple) {
        return Err(Errno::EADDRNOTAVAIL);
    }
    let (mut socket, slot) = core.buffers.tcp_socket().ok_or(Errno::ENOBUFS)?;
    if socket.connect(core.iface.context(), (remote.ip(), remote.port()), (local_ip, local.port())).is_err() {
        core.buffers.give_back(socket, slot);
        return Err(Errno::ENETUNREACH);
    }
    let handle = core.add_tcp_socket(socket, slot);
    core.add_conn(handle, tuple, Owner::Socket(id), tcp::State::SynSent);
    let e = entry(core, id)?;
    e.state = SockState::Connected(handle);
    e.connecting = true;
    log::info!(target: "ustack::handshake", "{tuple} CLOSED -> SYN-SENT (connect)");
    Ok(())
}

fn udp_connect(core: &mut Core, id: SockId, remote: SocketAddr) -> Result<()> {
    autobind(core, id)?;
    if let SockState::Udp { peer, .. } = &mut entry(core, id)?.state {
        *peer = Some(remote);
    }
    Ok(())
}
