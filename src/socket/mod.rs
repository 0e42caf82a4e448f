//! The Berkeley socket API over the stack: socket, bind, listen, accept, connect,
//! send/recv, sendto/recvfrom, shutdown, close — with the kernel's blocking semantics and
//! errno names.
//!
//! A [`Socket`] is like a file descriptor: [`Socket::try_clone`] is `dup()`, and the
//! socket closes when its last handle does. Calls block like the kernel's unless the
//! socket is non-blocking, in which case they return [`Errno::EAGAIN`] (or
//! `EINPROGRESS` for connect). Where ustack differs from Linux, the doc says so.
//!
//! This layer only waits: every call is answered by the engine ([`crate::engine::calls`]),
//! which never blocks; where it says EAGAIN and the socket blocks, the call waits until
//! the stack thread has done something to the socket, and asks again.
//!
//! # std parity
//!
//! [`TcpListener`], [`TcpStream`] and [`UdpSocket`] have `std::net`'s methods with std's
//! names, signatures and `io::Result`s; the errors carry Linux's errno as their raw OS
//! error, so `kind()` and `raw_os_error()` are what std would give. Constructors take the
//! [`Stack`] first (`TcpListener::bind(&stack, "10.0.0.2:7")`) and, like std's, try each
//! address an `impl ToSocketAddrs` resolves to. (Resolving a host name asks the system's
//! resolver, which uses the kernel's network, not ustack's; give addresses to avoid it.)
//!
//! | std method | on ustack |
//! |---|---|
//! | `bind`, `connect`, `connect_timeout`, `accept`, `incoming`, `local_addr`, `peer_addr`, `shutdown`, `try_clone`, `Read`/`Write` (owned and `&`) | as std |
//! | `set_read_timeout`/`set_write_timeout` and getters, `set_nonblocking` | as std (a zero timeout is `InvalidInput`, as std) |
//! | `peek`, `peek_from` | as std (MSG_PEEK) |
//! | `set_nodelay`/`nodelay` | as std: Nagle's algorithm off/on |
//! | `set_ttl`/`ttl` | as std: the TTL (IPv6: hop limit) of the socket's packets |
//! | `take_error` | as std for TCP (a failed non-blocking connect, a reset); always `None` for UDP, as ustack does not turn ICMP errors into socket errors |
//! | `set_linger`/`linger` (unstable in std) | as Linux: zero resets on close, longer waits for the peer's ACK of everything |
//! | `TcpListener::set_only_v6`/`only_v6` (deprecated in std) | EINVAL to set, as on Linux once bound; [`Socket::set_only_v6`] before bind works |
//! | `into_incoming` (unstable in std) | as std's |
//! | `UdpSocket::set_broadcast`/`broadcast` | as std: sending to 255.255.255.255 or a subnet's broadcast address needs it (else EACCES). Receiving broadcasts: not honoured, the demux takes only datagrams for the stack's own addresses |
//! | `UdpSocket` multicast (`join_multicast_v4`/`v6`, `leave_*`, `set_multicast_loop_*`, `set_multicast_ttl_v4` and getters) | **not honoured**: each says ENOPROTOOPT. ustack is built without smoltcp's IGMP/MLD and its demux delivers only unicast for its own addresses, so a joined group would never deliver |
//! | `set_keepalive` (not in std; on [`Socket`]) | keep-alive probes after the idle time; unlike Linux, unanswered probes do not end the connection (smoltcp counts no probes) |
//! | `set_recv_buffer_size`/`set_send_buffer_size` (not in std; on [`Socket`]) | Linux's rules (doubled when read back, a minimum, a cap at [`StackConfig::tcp_receive_max`](crate::StackConfig::tcp_receive_max) and [`tcp_send_max`](crate::StackConfig::tcp_send_max), and the buffer's autotuning off); they size the connections made after the call, as smoltcp cannot resize an existing connection's buffers |
//!
//! [`Socket`] adds what std lacks: MSG_PEEK, MSG_DONTWAIT, MSG_WAITALL, MSG_TRUNC and
//! MSG_NOSIGNAL ([`MsgFlags`]) on send/recv/sendto/recvfrom, sendmsg/recvmsg with
//! scatter/gather buffers ([`Socket::send_msg`], [`Socket::recv_msg`]), and the options
//! above as `set_`/getter pairs. MSG_NOSIGNAL changes nothing (ustack raises no SIGPIPE;
//! a broken connection's send says EPIPE either way), and flags ustack does not know are
//! EOPNOTSUPP.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smoltcp::socket::tcp;

use crate::engine::calls::Blocking;
use crate::engine::{ConnectionInfo, SockId};
use crate::stack::{AFTER_STACK, DriveNext, Locked, ShardSet, Shared, Stack};

mod msg;
mod net;
mod options;
mod poll;
mod shards;
use shards::call_on;
#[cfg(feature = "tokio")]
mod task;

pub use crate::engine::calls::Events;
pub use crate::engine::{DEFAULT_CONNECT_TIMEOUT, Domain, SOMAXCONN, TcpTuple, Type};
pub use crate::errno::{Errno, Result};
pub use msg::MsgFlags;
pub use net::{Incoming, IntoIncoming, TcpListener, TcpStream, UdpSocket};
pub use poll::{PollFd, poll};
pub use std::net::Shutdown;

/// A socket: the handle every call goes through, like a file descriptor.
///
/// The Berkeley calls with their C names' meaning, setsockopt's options as
/// `set_x`/`x` pairs (the `socket2` crate's names), and errno as Linux gives it:
///
/// ```
/// use ustack::{Domain, Errno, MsgFlags, Socket, Stack, StackConfig, Type, device::Wire};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (a, b) = Wire::pair(1500)?;
/// let server = Stack::new(b, StackConfig { addrs: vec!["10.0.0.2/24".parse()?], ..Default::default() })?;
/// let client = Stack::new(a, StackConfig { addrs: vec!["10.0.0.1/24".parse()?], ..Default::default() })?;
///
/// let listener = Socket::new(&server, Domain::Inet, Type::Stream)?;
/// listener.set_reuse_address(true)?;
/// listener.bind("10.0.0.2:80".parse()?)?;
/// listener.listen(16)?;
///
/// let socket = Socket::new(&client, Domain::Inet, Type::Stream)?;
/// socket.set_nodelay(true)?;
/// assert_eq!(socket.recv(&mut [0; 8]), Err(Errno::ENOTCONN));
/// socket.connect("10.0.0.2:80".parse()?)?;
/// socket.send(b"GET /")?;
///
/// let (conn, _peer) = listener.accept()?;
/// let mut buf = [0; 5];
/// assert_eq!(conn.recv_flags(&mut buf, MsgFlags::WAITALL | MsgFlags::PEEK)?, 5);
/// assert_eq!(conn.recv_flags(&mut buf, MsgFlags::WAITALL)?, 5, "peeked data is read again");
/// assert_eq!(conn.recv_flags(&mut buf, MsgFlags::DONTWAIT), Err(Errno::EAGAIN));
/// # Ok(())
/// # }
/// ```
pub struct Socket {
    shared: Arc<Shared>,
    id: SockId,
    open: AtomicBool,
    /// On a stack of several shards, a listener's (or a bound UDP socket's) copies on
    /// shards 1 and up (see [`Stack::sharded`] and `socket/shards.rs`); shared by the
    /// handles of one socket, as its state is. None
    /// on a stack of one shard: every accepted connection is a socket, and the 64 bytes
    /// of an empty list were some 2.5% of an idle connection's heap.
    mirrors: Option<Arc<Mutex<Vec<Mirror>>>>,
}

/// A socket's copy on another shard: that shard, and the copy's id there.
type Mirror = (Arc<Shared>, SockId);

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Socket({})", self.id)
    }
}

/// Which of a socket's timeouts a call waits under.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Read,
    Write,
    /// Neither (connect: only its own deadline).
    Connect,
}

impl Socket {
    /// socket(): a new, unbound socket on `stack`.
    pub fn new(stack: &Stack, domain: Domain, ty: Type) -> Result<Socket> {
        let shared = stack.shared().clone();
        let id = {
            let mut locked = shared.lock();
            if locked.down.is_some() {
                return Err(Errno::ENETDOWN);
            }
            locked.engine.socket(domain, ty)
        };
        Ok(Socket::on(shared, id))
    }

    /// A handle to socket `id` of the shard with `shared`.
    pub(crate) fn on(shared: Arc<Shared>, id: SockId) -> Socket {
        // A stack's shard set is in place before any of its sockets is made.
        let mirrors = shared.set.get().map(|_| Arc::default());
        Socket { shared, id, open: AtomicBool::new(true), mirrors }
    }

    /// The socket's number in its stack (what a file descriptor would be).
    pub fn id(&self) -> SockId {
        self.id
    }

    /// Makes one call on the engine: EBADF once this handle is closed. Sends what the
    /// call made ready, and wakes the callers waiting on other sockets, as the call's
    /// effects require.
    fn call<T>(&self, f: impl FnOnce(&mut Locked) -> Result<T>) -> Result<T> {
        if !self.open.load(Ordering::Acquire) {
            return Err(Errno::EBADF);
        }
        let mut locked = self.shared.lock();
        if !locked.engine.is_open(self.id) {
            return Err(Errno::EBADF);
        }
        let result = f(&mut locked);
        self.shared.after_call(&mut locked, self.id);
        self.shared.unlock(locked);
        result
    }

    /// Sets an option with `set`: on the socket, then on its copies on other shards (a
    /// listener, or a bound UDP socket, of a sharded stack), so that what every shard does
    /// with the socket, and the connections every shard accepts, follow it, whenever it
    /// was set.
    fn set_option(&self, set: impl Fn(&mut crate::engine::Engine, SockId) -> Result<()>) -> Result<()> {
        self.call(|l| set(&mut l.engine, self.id))?;
        for (shared, id) in self.mirror_list() {
            call_on(&shared, id, |l| set(&mut l.engine, id))?;
        }
        Ok(())
    }

    /// Makes a call until it does not say EAGAIN, waiting between tries for the stack to
    /// do something to this socket, as a blocking socket does: at once for a non-blocking
    /// one, up to its SO_RCVTIMEO/SO_SNDTIMEO for `direction`, or until `deadline`.
    /// ENETDOWN if the stack stops meanwhile.
    fn blocking<T>(
        &self,
        direction: Direction,
        deadline: Option<Instant>,
        f: impl FnMut(&mut Locked) -> Result<T>,
    ) -> Result<T> {
        self.blocking_unless(false, direction, deadline, f)
    }

    /// [`Socket::blocking`], or non-blocking for this call alone with `dontwait`
    /// (MSG_DONTWAIT).
    fn blocking_unless<T>(
        &self,
        dontwait: bool,
        direction: Direction,
        deadline: Option<Instant>,
        mut f: impl FnMut(&mut Locked) -> Result<T>,
    ) -> Result<T> {
        if !self.open.load(Ordering::Acquire) {
            return Err(Errno::EBADF);
        }
        let mut locked = self.shared.lock();
        let Blocking { nonblocking, read_timeout, write_timeout } = locked.engine.blocking(self.id)?;
        let nonblocking = nonblocking || dontwait;
        let timeout = match direction {
            Direction::Read => read_timeout,
            Direction::Write => write_timeout,
            Direction::Connect => None,
        };
        let deadline = match (deadline, timeout.map(|t| Instant::now() + t)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // A datagram receive may wait on the device itself (see `stack::drive`): a request
        // then reaches the caller without a hand-off from the stack thread.
        let datagram_read =
            direction == Direction::Read && locked.engine.socket_type(self.id) == Ok(crate::engine::Type::Dgram);
        let mut may_drive = datagram_read;
        loop {
            if !locked.engine.is_open(self.id) {
                return Err(Errno::EBADF);
            }
            let result = f(&mut locked);
            let after = self.shared.after_call(&mut locked, self.id);
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if !matches!(result, Err(Errno::EAGAIN)) || nonblocking || left == Some(Duration::ZERO) {
                self.shared.unlock(locked);
                return result;
            }
            if after.queued {
                // What the call sent goes out before it waits, from this thread; the
                // lock was let go meanwhile, so the call is made again before waiting.
                self.shared.unlock(locked);
                locked = self.shared.lock();
            } else if after.touched {
                // The call's own poll changed the socket: ask again.
            } else if may_drive && self.shared.may_drive(&locked, self.id) {
                let (guard, next) = self.shared.drive(locked, self.id, left);
                locked = guard;
                match next {
                    DriveNext::Again => {}
                    DriveNext::AfterStack => {
                        let brief = left.map_or(AFTER_STACK, |left| left.min(AFTER_STACK));
                        locked = self.shared.wait_socket(locked, self.id, Some(brief)).0;
                    }
                    // The stack thread reads until this socket is woken.
                    DriveNext::Wait => may_drive = false,
                }
            } else {
                locked = self.shared.wait_socket(locked, self.id, left).0;
                may_drive = datagram_read;
            }
            if locked.down.is_some() {
                return Err(Errno::ENETDOWN);
            }
        }
    }

    /// bind(): gives the socket a local address. Port 0 picks a free ephemeral port.
    ///
    /// EADDRINUSE if another socket holds the port (see [`Socket::set_reuse_address`]),
    /// EADDRNOTAVAIL if the address is not the stack's, EINVAL if already bound.
    ///
    /// On a stack of several shards, a UDP socket is bound on every shard, and datagrams
    /// to it spread over them (see `socket/shards.rs`).
    pub fn bind(&self, addr: SocketAddr) -> Result<()> {
        self.call(|l| l.engine.bind(self.id, addr))?;
        self.bind_on_every_shard()
    }

    /// listen(): makes a TCP socket a listener (binding an ephemeral port if unbound, as
    /// Linux does). `backlog` bounds the accept queue: up to `backlog + 1` established
    /// connections wait for accept() (Linux's rule); beyond that new SYNs are dropped.
    /// Backlogs over [`SOMAXCONN`] are clamped to it. A second listen() changes the backlog.
    ///
    /// On a stack of several shards ([`Stack::sharded`]) the listener listens on every
    /// shard, each with this backlog, and new connections spread over them.
    pub fn listen(&self, backlog: u32) -> Result<()> {
        self.call(|l| l.engine.listen(self.id, backlog))?;
        self.listen_on_every_shard(backlog)
    }

    /// On a stack of several shards: makes (or updates) the listener's copies on shards
    /// 1 and up, bound to its address, then has the port's new connections spread over
    /// the shards. Shard 0's engine already holds the port, so the copies cannot clash
    /// with another socket of the stack: sockets are only ever bound on shard 0.
    fn listen_on_every_shard(&self, backlog: u32) -> Result<()> {
        let (Some(set), Some(mirrors)) = (self.shared.set.get(), &self.mirrors) else { return Ok(()) };
        let mut mirrors = mirrors.lock().unwrap_or_else(|p| p.into_inner());
        if !mirrors.is_empty() {
            for (shared, id) in mirrors.iter() {
                call_on(shared, *id, |l| l.engine.listen(*id, backlog))?;
            }
            return Ok(());
        }
        let local = self.call(|l| l.engine.local_addr(self.id))?;
        self.make_copies(set, &mut mirrors, local, |engine, id| engine.listen(id, backlog))?;
        set.steering.share_port(local.port());
        Ok(())
    }

    /// accept(): the next established connection and its peer's address. Only connections
    /// that completed the 3-way handshake are returned. EINVAL if not listening.
    ///
    /// On a stack of several shards it takes from any shard's accept queue (starting
    /// with a different shard each time, so none is left behind); the connection stays
    /// on its shard.
    pub fn accept(&self) -> Result<(Socket, SocketAddr)> {
        let mirrors = self.mirror_list();
        if let (false, Some(set)) = (mirrors.is_empty(), self.shared.set.get()) {
            return self.accept_any(set, &mirrors);
        }
        let (id, peer) = self.blocking(Direction::Read, None, |l| l.engine.accept(self.id))?;
        Ok((Socket::on(self.shared.clone(), id), peer))
    }

    /// accept() on a listener of every shard: tries each shard's queue, and waits for a
    /// round of any shard between tries, as [`Socket::blocking`] waits for one.
    fn accept_any(&self, set: &ShardSet, mirrors: &[Mirror]) -> Result<(Socket, SocketAddr)> {
        let listeners = self.with_mirrors(mirrors);
        let _accepting = set.accepting();
        self.on_shards(set, &listeners, Direction::Read, false, |shared, engine, id| {
            engine.accept(id).map(|(conn, peer)| (Socket::on(shared.clone(), conn), peer))
        })
    }

    /// connect(): for TCP, opens a connection and (blocking) waits until it is established
    /// (Ok), refused by RST (ECONNREFUSED), or [`DEFAULT_CONNECT_TIMEOUT`] passes
    /// (ETIMEDOUT); non-blocking, it returns EINPROGRESS and [`poll`] reports writable
    /// when done, EALREADY while in progress, and the next connect() after that reports
    /// the outcome (Ok or the error) once; then EISCONN, as in Linux. For UDP, fixes the
    /// peer datagrams go to and come from. Binds an ephemeral port first if the socket
    /// is unbound. An AF_INET6 TCP socket given an IPv4 address: EINVAL (Linux).
    pub fn connect(&self, addr: SocketAddr) -> Result<()> {
        let timeout = self.call(|l| Ok(l.engine.config().connect_timeout))?;
        self.connect_timeout(addr, timeout)
    }

    /// connect() that gives up with ETIMEDOUT after `timeout`.
    pub fn connect_timeout(&self, addr: SocketAddr, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let (started, nonblocking) = self.call(|l| {
            let now = l.now();
            let started = l.engine.connect(now, self.id, addr);
            Ok((started, l.engine.blocking(self.id)?.nonblocking))
        })?;
        match started {
            Err(Errno::EINPROGRESS | Errno::EALREADY) if !nonblocking => {}
            Ok(()) => return self.connect_mirrors(addr),
            other => return other,
        }
        // The connect_outcome call says EINPROGRESS while the handshake goes on: as EAGAIN
        // to the wait loop.
        let outcome = self.blocking(Direction::Connect, Some(deadline), |l| match l.engine.connect_outcome(self.id) {
            Err(Errno::EINPROGRESS) => Err(Errno::EAGAIN),
            outcome => outcome,
        });
        match outcome {
            Err(Errno::EAGAIN) => self.call(|l| l.engine.abandon_connect(self.id)),
            outcome => outcome,
        }
    }

    /// send(): queues `buf` on a connected socket. Blocking, it returns once all of `buf`
    /// is queued (as Linux's blocking send does); non-blocking, it queues what fits and
    /// returns EAGAIN if nothing does. After a RST: ECONNRESET once, then EPIPE. After
    /// shutdown(Write) or on an unconnected TCP socket: EPIPE (Linux's answer too). An
    /// error after part of the data went out is kept for the next call, as in Linux.
    pub fn send(&self, buf: &[u8]) -> Result<usize> {
        self.send_flags(buf, MsgFlags::NONE)
    }

    /// recv(): waits for data and returns what is there (up to `buf.len()`); 0 at end of
    /// stream (the peer's FIN, or after shutdown(Read)). After a RST: ECONNRESET once,
    /// then 0. ENOTCONN on an unconnected TCP socket. For UDP, one datagram (see
    /// [`Socket::recv_from`]).
    pub fn recv(&self, buf: &mut [u8]) -> Result<usize> {
        if self.has_mirrors() {
            return self.recv_flags(buf, MsgFlags::NONE);
        }
        self.blocking(Direction::Read, None, |l| l.engine.recv(self.id, buf))
    }

    /// sendto(): sends one datagram to `addr` (binding an ephemeral port first if unbound).
    /// For TCP, `addr` is ignored and this is send(), as in Linux.
    ///
    /// A datagram larger than the link's MTU goes in IP fragments, as in Linux; EMSGSIZE
    /// beyond 65,507 bytes (IPv4) or 65,527 (IPv6). Blocks while the send buffer is full.
    pub fn send_to(&self, buf: &[u8], addr: SocketAddr) -> Result<usize> {
        self.send_to_flags(buf, addr, MsgFlags::NONE)
    }

    /// recvfrom(): the next datagram and its sender. A datagram longer than `buf` is cut
    /// to fit and the rest discarded, as in Linux. On a connected UDP socket, datagrams
    /// from other senders are dropped. For TCP, this is recv() with the peer's address.
    pub fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr)> {
        if self.has_mirrors() {
            return self.recv_from_flags(buf, MsgFlags::NONE);
        }
        self.blocking(Direction::Read, None, |l| l.engine.recv_from(self.id, buf))
    }

    /// shutdown(): `Write` sends FIN once queued data is sent, and the socket can still
    /// receive; `Read` makes recv() report end of stream once received data is read;
    /// `Both` does both. On a listener, `Read`/`Both` stops listening and wakes accept()
    /// with EINVAL (`Write` does nothing), as in Linux. ENOTCONN if there is no connection
    /// (or it is over: reset, or closed both ways).
    pub fn shutdown(&self, how: Shutdown) -> Result<()> {
        self.call(|l| l.engine.shutdown(self.id, how))?;
        let mirrors = self.mirrors.as_ref().map(|m| m.lock().unwrap_or_else(|p| p.into_inner()));
        for (shared, id) in mirrors.iter().flat_map(|m| m.iter()) {
            let _ = call_on(shared, *id, |l| l.engine.shutdown(*id, how));
        }
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
        let mut locked = self.shared.lock();
        // SO_LINGER: the last handle's close() waits (even on a non-blocking socket, as in
        // Linux) until the peer has acknowledged the data and the FIN, or the time is up;
        // then the close goes on in the background as usual.
        if let Ok(Some(linger)) = locked.engine.start_linger(self.id) {
            self.shared.after_call(&mut locked, self.id);
            // The data and FIN go out before the wait.
            self.shared.unlock(locked);
            locked = self.shared.lock();
            let deadline = Instant::now() + linger;
            while locked.engine.lingering(self.id) && locked.down.is_none() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                locked = self.shared.wait_socket(locked, self.id, Some(left)).0;
            }
        }
        // A UDP socket's port, should its last handle close it: its copies on other shards
        // close with it, and the port's datagrams go back to shard 0.
        let udp_port = match (locked.engine.socket_type(self.id), locked.engine.local_addr(self.id)) {
            (Ok(Type::Dgram), Ok(local)) => Some(local.port()),
            _ => None,
        };
        locked.engine.close(self.id);
        self.shared.after_call(&mut locked, self.id);
        let last = !locked.engine.is_open(self.id);
        self.shared.unlock(locked);
        if let (true, Some(mirrors)) = (last, &self.mirrors) {
            let mut mirrors = mirrors.lock().unwrap_or_else(|p| p.into_inner());
            if let (Some(port), false, Some(set)) = (udp_port, mirrors.is_empty(), self.shared.set.get()) {
                set.steering.unshare_udp_port(port);
            }
            close_all(&mut mirrors);
        }
        Ok(())
    }

    /// dup(): another handle to the same socket.
    pub fn try_clone(&self) -> Result<Socket> {
        self.call(|l| l.engine.dup(self.id))?;
        Ok(Socket {
            shared: self.shared.clone(),
            id: self.id,
            open: AtomicBool::new(true),
            mirrors: self.mirrors.clone(),
        })
    }

    /// O_NONBLOCK: calls that would wait return EAGAIN (EINPROGRESS for connect) instead.
    pub fn set_nonblocking(&self, nonblocking: bool) -> Result<()> {
        self.set_option(|engine, id| engine.set_nonblocking(id, nonblocking))
    }

    /// SO_REUSEADDR: lets bind() take a port that only lingering connections (closing,
    /// TIME-WAIT, accepted) hold — so a restarted server can listen again at once. It
    /// never shares a port with another open socket (that would be SO_REUSEPORT).
    pub fn set_reuse_address(&self, reuse: bool) -> Result<()> {
        self.set_option(|engine, id| engine.set_reuse_address(id, reuse))
    }

    /// SO_RCVTIMEO: recv() and accept() give EAGAIN after waiting this long.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        self.set_option(|engine, id| engine.set_timeout(id, true, timeout))
    }

    /// SO_SNDTIMEO: send() gives EAGAIN (or what it queued) after waiting this long.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        self.set_option(|engine, id| engine.set_timeout(id, false, timeout))
    }

    /// getsockname(): the local address; the family's wildcard with port 0 if unbound.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.call(|l| l.engine.local_addr(self.id))
    }

    /// getpeername(): the connected peer's address; ENOTCONN if there is none.
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        self.call(|l| l.engine.peer_addr(self.id))
    }

    /// The TCP state of the socket's connection (RFC 9293 names via `Display`), if any.
    pub fn tcp_state(&self) -> Option<tcp::State> {
        self.call(|l| Ok(l.engine.tcp_state(self.id))).ok().flatten()
    }

    /// A listener's queue lengths: (SYN queue, accept queue, SYNs dropped so far).
    pub fn listen_queues(&self) -> Option<(usize, usize, u64)> {
        self.call(|l| Ok(l.engine.listen_queues(self.id))).ok().flatten()
    }

    /// What ustack recorded about this socket's TCP connection: its 5-tuple, every state
    /// it entered (timed from its first SYN), the handshake RTT and who closed first.
    pub fn connection_info(&self) -> Option<ConnectionInfo> {
        self.call(|l| Ok(l.engine.connection_info(self.id))).ok().flatten()
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// What poll() reports for the socket, on every shard it is on (a listener of a
    /// stack of several shards is ready if any shard's queue has a connection).
    /// ENETDOWN once its stack has stopped.
    pub(crate) fn readiness(&self) -> Result<Events> {
        let mirrors = self.mirror_list();
        let mut events = Events::NONE;
        for (shared, id) in std::iter::once((&self.shared, self.id)).chain(mirrors.iter().map(|(s, id)| (s, *id))) {
            let mut locked = shared.lock();
            if locked.down.is_some() {
                return Err(Errno::ENETDOWN);
            }
            events |= locked.engine.readiness(id);
        }
        Ok(events)
    }

    /// A listener's copies on shards 1 and up (empty unless it listens on a stack of
    /// several shards).
    #[cfg(feature = "tokio")]
    pub(crate) fn mirrors(&self) -> Vec<Mirror> {
        self.mirror_list()
    }

    /// Whether the socket has copies on other shards (a listener, or a bound UDP socket,
    /// of a stack of several shards).
    fn has_mirrors(&self) -> bool {
        self.mirrors.as_ref().is_some_and(|m| !m.lock().unwrap_or_else(|p| p.into_inner()).is_empty())
    }

    /// The socket's copies on other shards, as they are now.
    fn mirror_list(&self) -> Vec<Mirror> {
        self.mirrors.as_ref().map(|m| m.lock().unwrap_or_else(|p| p.into_inner()).clone()).unwrap_or_default()
    }
}

/// Closes a socket's copies on the other shards (its last handle closed, or making them
/// failed).
fn close_all(mirrors: &mut Vec<Mirror>) {
    for (shared, id) in mirrors.drain(..) {
        call_on(&shared, id, |l| l.engine.close(id));
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        if self.open.load(Ordering::Acquire) {
            let _ = self.close();
        }
    }
}
