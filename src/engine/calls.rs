//! The socket calls, as the engine answers them: socket, bind, listen, accept, connect,
//! send/recv, sendto/recvfrom, shutdown, close, the options, and readiness for poll().
//!
//! None of them waits. A call that would block on Linux returns [`Errno::EAGAIN`] (for
//! connect, `EINPROGRESS` or `EALREADY`), and the caller decides what waiting means: the
//! blocking socket layer ([`crate::socket`]) waits for the stack thread to touch the
//! socket and calls again; a simulation calls again after its next step. Each call takes
//! the time, like everything else the engine does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::{BitOr, BitOrAssign};
use std::time::Duration;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::IpListenEndpoint;

use super::one_socket::Which;
use super::ports::{Holder, Proto};
use super::{Domain, Engine, Entry, Listener, Owner, SOMAXCONN, SockId, SockState, TcpTuple, Type, fragment, unindex};
use crate::errno::Errno;

type Result<T> = std::result::Result<T, Errno>;

/// poll(2) event bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Events(u8);

impl Events {
    /// Nothing.
    pub const NONE: Events = Events(0);
    /// Data to read, a connection to accept, or end of stream.
    pub const IN: Events = Events(1);
    /// Room to send (or a connect() finished, either way).
    pub const OUT: Events = Events(2);
    /// An error is pending (read it with recv/send/connect).
    pub const ERR: Events = Events(4);
    /// Both directions are closed (or the socket was never connected).
    pub const HUP: Events = Events(8);

    /// Whether every bit of `other` (which is not empty) is set.
    pub fn contains(self, other: Events) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    /// Whether any bit of `other` is set.
    pub fn intersects(self, other: Events) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether no bit is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The bits set in both.
    pub fn and(self, other: Events) -> Events {
        Events(self.0 & other.0)
    }
}

impl BitOr for Events {
    type Output = Events;
    fn bitor(self, rhs: Events) -> Events {
        Events(self.0 | rhs.0)
    }
}

impl BitOrAssign for Events {
    fn bitor_assign(&mut self, rhs: Events) {
        self.0 |= rhs.0;
    }
}

/// What one [`Engine::recv_msg`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes copied into the buffer.
    pub len: usize,
    /// The sender: the datagram's, or a TCP socket's peer (the wildcard once there is none).
    pub from: SocketAddr,
    /// The datagram's whole length, which is more than `len` if it was cut to fit (what
    /// MSG_TRUNC reports); `len` for TCP.
    pub full_len: usize,
}

/// A socket's blocking behaviour, which the caller of the engine carries out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocking {
    /// O_NONBLOCK.
    pub nonblocking: bool,
    /// SO_RCVTIMEO.
    pub read_timeout: Option<Duration>,
    /// SO_SNDTIMEO.
    pub write_timeout: Option<Duration>,
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

/// IP and UDP header bytes in front of a datagram's payload.
fn udp_header_len(remote: &SocketAddr) -> usize {
    if remote.is_ipv4() { 20 + 8 } else { 40 + 8 }
}

/// Whether a datagram from `from` is for the socket: on a connected socket only the
/// peer's are, and an AF_INET socket takes no IPv6 (smoltcp's wildcard binding covers
/// both families; Linux would not deliver it).
fn wanted(domain: Domain, peer: Option<SocketAddr>, from: SocketAddr) -> bool {
    !(domain == Domain::Inet && from.is_ipv6()) && peer.is_none_or(|p| p == from)
}

/// Drops the queued datagrams that are not for the socket (Linux drops them on arrival),
/// so that the head of the queue is what recv() returns and poll() reports readable
/// only when recv() has something.
fn discard_unwanted(socket: &mut udp::Socket, domain: Domain, peer: Option<SocketAddr>) {
    loop {
        let from = match socket.peek() {
            Ok((_, meta)) => SocketAddr::new(meta.endpoint.addr.into(), meta.endpoint.port),
            Err(_) => return,
        };
        if wanted(domain, peer, from) {
            return;
        }
        log::debug!(target: "ustack::udp", "datagram from {from} dropped: not for this socket");
        let _ = socket.recv();
    }
}

impl Engine {
    pub(super) fn entry(&mut self, id: SockId) -> Result<&mut Entry> {
        self.entries.get_mut(&id).map(|e| &mut **e).ok_or(Errno::EBADF)
    }

    /// Whether socket `id` is open.
    pub fn is_open(&self, id: SockId) -> bool {
        self.entries.contains_key(&id)
    }

    /// socket(): a new, unbound socket.
    pub fn socket(&mut self, domain: Domain, ty: Type) -> SockId {
        let id = self.new_id();
        self.entries.insert(id, Box::new(Entry::new(domain, ty)));
        id
    }

    /// socket() on this engine for a copy of socket `id` of engine `from`: the same
    /// domain, type and options (those its connections inherit), for a listener that
    /// listens on every shard of a stack. Not bound: bind it to the original's address.
    pub fn socket_like(&mut self, from: &Engine, id: SockId) -> Result<SockId> {
        let original = from.entries.get(&id).ok_or(Errno::EBADF)?;
        let mut entry = Entry::new(original.domain, original.ty);
        entry.opts = original.opts;
        entry.v6only = original.v6only;
        entry.broadcast = original.broadcast;
        entry.reuse_addr = original.reuse_addr;
        let copy = self.new_id();
        self.entries.insert(copy, Box::new(entry));
        Ok(copy)
    }

    /// The socket's type.
    pub fn socket_type(&self, id: SockId) -> Result<Type> {
        self.entries.get(&id).map(|e| e.ty).ok_or(Errno::EBADF)
    }

    /// bind(): gives the socket a local address. Port 0 picks a free ephemeral port.
    ///
    /// EADDRINUSE if another socket holds the port, EADDRNOTAVAIL if the address is not
    /// the stack's, EINVAL if already bound.
    pub fn bind(&mut self, id: SockId, addr: SocketAddr) -> Result<()> {
        let e = self.entry(id)?;
        let addr = from_user(e.domain, addr)?;
        // Linux: a v4-mapped address on an IPV6_V6ONLY socket is EINVAL to bind().
        if e.v6only && addr.is_ipv4() {
            return Err(Errno::EINVAL);
        }
        if e.local.is_some() {
            return Err(Errno::EINVAL);
        }
        let (ty, reuse) = (e.ty, e.reuse_addr);
        let ip = addr.ip();
        if !ip.is_unspecified() && !self.is_local(ip) {
            return Err(Errno::EADDRNOTAVAIL);
        }
        let proto = ty.proto();
        let port = match addr.port() {
            0 => self.ports.ephemeral(proto, ip, self.rng.next_u32()).ok_or(Errno::EADDRINUSE)?,
            port if self.ports.is_free(proto, ip, port, reuse) => port,
            _ => return Err(Errno::EADDRINUSE),
        };
        let local = SocketAddr::new(ip, port);
        if ty == Type::Dgram {
            let packets = self.config.udp_packets;
            let opts = self.opts(id)?;
            let (rx, tx) = (opts.recv_buffer, opts.send_buffer);
            let buffer = |bytes: Option<usize>| {
                let bytes = bytes.unwrap_or(self.config.udp_buffer);
                udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; packets], vec![0; bytes])
            };
            let mut socket = udp::Socket::new(buffer(rx), buffer(tx));
            socket.set_hop_limit(opts.ttl);
            socket.bind(listen_endpoint(local)).map_err(|_| Errno::EINVAL)?;
            let handle = self.add_udp_socket(socket, id);
            self.entry(id)?.state = SockState::Udp { handle, peer: None };
            self.udp_ports.entry(port).or_default().push(id);
            self.generation += 1;
        }
        self.ports.hold(proto, ip, port, Holder::Socket { id, listening: false }, reuse);
        self.entry(id)?.local = Some(local);
        Ok(())
    }

    /// Binds an unbound socket to an ephemeral port on the wildcard address (connect,
    /// sendto and listen do this implicitly, as in Linux).
    fn autobind(&mut self, id: SockId) -> Result<SocketAddr> {
        let e = self.entry(id)?;
        if let Some(local) = e.local {
            return Ok(local);
        }
        let any = SocketAddr::new(unspecified(e.domain), 0);
        self.bind(id, any)?;
        Ok(self.entries[&id].local.expect("bound above"))
    }

    /// listen(): makes a TCP socket a listener (binding an ephemeral port if unbound, as
    /// Linux does). Up to `backlog + 1` established connections wait for accept() (Linux's
    /// rule), beyond that new SYNs are dropped; over [`SOMAXCONN`] it is clamped. A second
    /// listen() changes the backlog.
    pub fn listen(&mut self, id: SockId, backlog: u32) -> Result<()> {
        let e = self.entry(id)?;
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
        let local = self.autobind(id)?;
        self.entry(id)?.state = SockState::Listening(Listener { backlog, ..Listener::default() });
        self.listeners.entry(local.port()).or_default().push(id);
        self.generation += 1;
        self.ports.set_listening(Proto::Tcp, local.port(), id, true);
        log::info!(target: "ustack::backlog", "listener #{id} on {local}: backlog {backlog} (accept queue holds {})", backlog + 1);
        Ok(())
    }

    /// accept(): the next established connection, as a new socket, and its peer's address;
    /// EAGAIN if none is waiting, EINVAL if not listening.
    pub fn accept(&mut self, id: SockId) -> Result<(SockId, SocketAddr)> {
        let e = self.entry(id)?;
        let (domain, reuse_addr, opts) = (e.domain, e.reuse_addr, e.opts);
        let listener = match &mut e.state {
            SockState::Listening(l) => l,
            _ if e.ty == Type::Dgram => return Err(Errno::EOPNOTSUPP),
            _ => return Err(Errno::EINVAL),
        };
        let handle = listener.accept_queue.pop_front().ok_or(Errno::EAGAIN)?;
        let waiting = listener.accept_queue.len();
        let new = self.new_id();
        let conn = self.conns.get_mut(&handle).expect("queued connections are registered");
        conn.owner = Owner::Socket(new);
        conn.holds_port = true;
        let tuple = conn.tuple;
        // The accepted socket inherits the listener's SO_REUSEADDR, as in Linux.
        self.ports.hold(Proto::Tcp, tuple.local.ip(), tuple.local.port(), Holder::Connection(handle), reuse_addr);
        let mut entry = Entry::new(domain, Type::Stream);
        entry.reuse_addr = reuse_addr;
        // Linux's accepted sockets inherit the listener's options (TCP_NODELAY, SO_LINGER,
        // buffer sizes, ...); the connection was made with them already.
        entry.opts = opts;
        entry.local = Some(tuple.local);
        entry.state = SockState::Connected(handle);
        self.entries.insert(new, Box::new(entry));
        // The connection's owner and the listener's accept queue changed: the demux table did.
        self.generation += 1;
        log::info!(target: "ustack::backlog", "{tuple}: accepted as socket #{new}; {waiting} still in the accept queue");
        Ok((new, to_user(domain, tuple.remote)))
    }

    /// connect(). For TCP on an idle socket: starts the handshake and returns EINPROGRESS;
    /// while it is under way, EALREADY; the first connect() after it ended reports the
    /// outcome (Ok, or the error, after which the socket is idle again); after that
    /// EISCONN, as in Linux. For UDP: fixes the peer. Binds an ephemeral port first if the
    /// socket is unbound. An AF_INET6 TCP socket given an IPv4 address: EINVAL (Linux).
    pub fn connect(&mut self, now: Instant, id: SockId, addr: SocketAddr) -> Result<()> {
        self.now = self.now.max(now);
        let e = self.entry(id)?;
        if e.ty == Type::Dgram {
            let remote = from_user_dgram(e.domain, addr)?;
            if e.v6only && remote.is_ipv4() {
                return Err(Errno::ENETUNREACH);
            }
            // Linux: no route is ENETUNREACH; a broadcast peer needs SO_BROADCAST (EACCES),
            // as sendto() to it does (`route`).
            let may_broadcast = e.broadcast;
            self.route(remote.ip(), Type::Dgram, may_broadcast)?;
            self.autobind(id)?;
            if let SockState::Udp { peer, .. } = &mut self.entry(id)?.state {
                *peer = Some(remote);
            }
            return Ok(());
        }
        let remote = from_user(e.domain, addr)?;
        // Linux: no IPv4 for an IPV6_V6ONLY socket.
        if e.v6only && remote.is_ipv4() {
            return Err(Errno::ENETUNREACH);
        }
        match e.state {
            SockState::Listening(_) => Err(Errno::EISCONN),
            SockState::Udp { .. } => unreachable!("stream sockets have no UDP state"),
            SockState::Connected(_) if !e.connecting => Err(Errno::EISCONN),
            SockState::Connected(_) => match self.connect_outcome(id) {
                Err(Errno::EINPROGRESS) => Err(Errno::EALREADY),
                outcome => outcome,
            },
            SockState::Idle => {
                self.start_connect(id, remote)?;
                Err(Errno::EINPROGRESS)
            }
        }
    }

    /// How a connect() in progress on `id` ended: Ok once established (reported once:
    /// later connect() calls say EISCONN), the error (refused, timed out) once it failed,
    /// after which the socket is idle again, or EINPROGRESS while the handshake goes on.
    pub fn connect_outcome(&mut self, id: SockId) -> Result<()> {
        let SockState::Connected(handle) = self.entry(id)?.state else { return Err(Errno::ECONNABORTED) };
        let conn = self.conns.get_mut(&handle).ok_or(Errno::ECONNABORTED)?;
        match conn.state {
            tcp::State::SynSent => Err(Errno::EINPROGRESS),
            tcp::State::Closed => {
                let err = conn.pending_error.take().unwrap_or(Errno::ECONNREFUSED);
                self.free_conn(handle);
                let e = self.entry(id)?;
                e.state = SockState::Idle;
                e.connecting = false;
                Err(err)
            }
            _ => {
                self.entry(id)?.connecting = false;
                Ok(())
            }
        }
    }

    /// Gives up a connect() still in SYN-SENT (a blocking connect()'s own timeout): the
    /// socket is idle again. ETIMEDOUT if it was given up, or the outcome if it ended.
    pub fn abandon_connect(&mut self, id: SockId) -> Result<()> {
        let outcome = self.connect_outcome(id);
        if outcome != Err(Errno::EINPROGRESS) {
            return outcome;
        }
        let SockState::Connected(handle) = self.entry(id)?.state else { return Err(Errno::ECONNABORTED) };
        log::info!(target: "ustack::handshake", "{}: connect() timed out", self.conns[&handle].tuple);
        self.free_conn(handle);
        let e = self.entry(id)?;
        e.state = SockState::Idle;
        e.connecting = false;
        Err(Errno::ETIMEDOUT)
    }

    fn start_connect(&mut self, id: SockId, remote: SocketAddr) -> Result<()> {
        if remote.port() == 0 || remote.ip().is_unspecified() {
            return Err(Errno::ECONNREFUSED);
        }
        self.route(remote.ip(), Type::Stream, false)?;
        let bound = self.autobind(id)?;
        let local_ip = if bound.ip().is_unspecified() {
            let source = self.iface.get_source_address(&remote.ip().into()).ok_or(Errno::ENETUNREACH)?;
            IpAddr::from(source)
        } else {
            bound.ip()
        };
        if local_ip.is_ipv4() != remote.ip().is_ipv4() {
            return Err(Errno::ENETUNREACH);
        }
        let local = SocketAddr::new(local_ip, bound.port());
        let tuple = TcpTuple { local, remote };
        if self.demux.contains_key(&tuple) {
            return Err(Errno::EADDRNOTAVAIL);
        }
        let opts = self.opts(id)?;
        let (mut socket, slot) = self.new_tcp_socket(&opts).ok_or(Errno::ENOBUFS)?;
        if socket.connect(self.iface.context(), (remote.ip(), remote.port()), (local_ip, local.port())).is_err() {
            self.buffers.give_back(socket, slot);
            return Err(Errno::ENETUNREACH);
        }
        let handle = self.add_tcp_socket(socket, slot);
        self.add_conn(handle, tuple, Owner::Socket(id), tcp::State::SynSent);
        let e = self.entry(id)?;
        e.state = SockState::Connected(handle);
        e.connecting = true;
        log::info!(target: "ustack::handshake", "{tuple} CLOSED -> SYN-SENT (connect)");
        Ok(())
    }

    /// send() on a TCP socket: queues what fits of `buf`, and returns how much; EAGAIN if
    /// nothing fits (or the handshake is still under way). After a RST: ECONNRESET once,
    /// then EPIPE. After shutdown(Write) or on an unconnected socket: EPIPE (Linux's
    /// answer too). With `partial` (this call already queued part of its data) an error is
    /// reported but kept for the next call, as Linux keeps it.
    pub fn send(&mut self, id: SockId, buf: &[u8], partial: bool) -> Result<usize> {
        let e = self.entry(id)?;
        if e.ty == Type::Dgram {
            let peer = match e.state {
                SockState::Udp { peer: Some(peer), .. } => peer,
                _ => return Err(Errno::EDESTADDRREQ),
            };
            return self.send_to(id, buf, peer);
        }
        let SockState::Connected(handle) = e.state else { return Err(Errno::EPIPE) };
        let conn = self.conns.get_mut(&handle).ok_or(Errno::EPIPE)?;
        if let Some(err) = conn.pending_error {
            if !partial {
                conn.pending_error = None;
            }
            return Err(err);
        }
        let socket = self.tcp_mut(handle);
        if matches!(socket.state(), tcp::State::SynSent | tcp::State::SynReceived) {
            return Err(Errno::EAGAIN);
        }
        if !socket.may_send() {
            return Err(Errno::EPIPE);
        }
        self.grow_send_buffer(handle);
        let room = self.send_room(handle);
        match self.tcp_mut(handle).send_slice(&buf[..buf.len().min(room)]).unwrap_or(0) {
            0 if !buf.is_empty() => Err(Errno::EAGAIN),
            n => {
                let now = self.now;
                if let Some(conn) = self.conns.get_mut(&handle) {
                    conn.queued.note(n, now);
                }
                Ok(n)
            }
        }
    }

    /// recv() on a TCP socket: what is there, up to `buf.len()`; 0 at end of stream (the
    /// peer's FIN, or after shutdown(Read)); EAGAIN if nothing is there yet. After a RST:
    /// ECONNRESET once, then 0. ENOTCONN on an unconnected socket. For UDP, one datagram
    /// (see [`Engine::recv_from`]).
    pub fn recv(&mut self, id: SockId, buf: &mut [u8]) -> Result<usize> {
        self.recv_msg(id, buf, false).map(|r| r.len)
    }

    /// recvmsg(): [`Engine::recv`] or [`Engine::recv_from`], and with `peek` (MSG_PEEK)
    /// the data stays queued for the next call. Says how long the datagram was, so the
    /// caller can report MSG_TRUNC.
    pub fn recv_msg(&mut self, id: SockId, buf: &mut [u8], peek: bool) -> Result<Received> {
        let e = self.entry(id)?;
        let domain = e.domain;
        if e.ty == Type::Dgram {
            return self.recv_datagram(id, buf, peek);
        }
        let len = self.recv_stream(id, buf, peek)?;
        let from = self.peer_addr(id).unwrap_or_else(|_| SocketAddr::new(unspecified(domain), 0));
        Ok(Received { len, from, full_len: len })
    }

    fn recv_stream(&mut self, id: SockId, buf: &mut [u8], peek: bool) -> Result<usize> {
        let e = self.entry(id)?;
        let shut_read = e.shut_read;
        let SockState::Connected(handle) = e.state else { return Err(Errno::ENOTCONN) };
        // As in Linux: data already received first, then a pending error, then end of
        // stream (shutdown(Read) included). An empty buffer waits like any other.
        let socket = self.tcp_mut(handle);
        if socket.can_recv() {
            let got = if peek { socket.peek_slice(buf) } else { socket.recv_slice(buf) };
            let got = got.unwrap_or(0);
            if !peek && got > 0 {
                self.after_read(handle, got);
            }
            return Ok(got);
        }
        let conn = self.conns.get_mut(&handle).ok_or(Errno::ENOTCONN)?;
        if let Some(err) = conn.pending_error.take() {
            return Err(err);
        }
        if shut_read {
            return Ok(0);
        }
        let socket = self.tcp(handle);
        let connecting = matches!(socket.state(), tcp::State::SynSent | tcp::State::SynReceived);
        if !connecting && !socket.may_recv() {
            return Ok(0);
        }
        Err(Errno::EAGAIN)
    }

    /// sendto() on a UDP socket: one datagram to `addr` (binding an ephemeral port first if
    /// unbound); EAGAIN while the send buffer has no room for it. For TCP, `addr` is
    /// ignored and this is send(), as in Linux.
    ///
    /// A datagram larger than the MTU goes in fragments, as in Linux: up to 65,507 bytes
    /// over IPv4 (smoltcp's fragmentation), 65,527 over IPv6 (ustack's, [`fragment`]: smoltcp
    /// 0.14 has none), EMSGSIZE beyond.
    pub fn send_to(&mut self, id: SockId, buf: &[u8], addr: SocketAddr) -> Result<usize> {
        let e = self.entry(id)?;
        if e.ty == Type::Stream {
            return self.send(id, buf, false);
        }
        let remote = from_user_dgram(e.domain, addr)?;
        if e.v6only && remote.is_ipv4() {
            return Err(Errno::ENETUNREACH);
        }
        let may_broadcast = e.broadcast;
        if remote.port() == 0 || remote.ip().is_unspecified() {
            return Err(Errno::EINVAL);
        }
        if e.shut_write {
            return Err(Errno::EPIPE);
        }
        self.route(remote.ip(), Type::Dgram, may_broadcast)?;
        // IPv4's Total Length counts the IP header; IPv6's Payload Length does not.
        let largest_packet: usize = if remote.is_ipv4() { 65535 } else { 65535 + 40 };
        let max = largest_packet.saturating_sub(udp_header_len(&remote)).min(self.config.udp_buffer);
        if buf.len() > max {
            return Err(Errno::EMSGSIZE);
        }
        let local = self.autobind(id)?;
        let SockState::Udp { handle, .. } = self.entry(id)?.state else { return Err(Errno::EINVAL) };
        if let IpAddr::V6(dst) = remote.ip()
            && buf.len() + udp_header_len(&remote) > self.mtu()
        {
            return self.send_ipv6_fragments(handle, local, (dst, remote.port()), buf);
        }
        match self.udp_mut(handle).send_slice(buf, (remote.ip(), remote.port())) {
            Ok(()) => Ok(buf.len()),
            Err(udp::SendError::BufferFull) => Err(Errno::EAGAIN),
            Err(udp::SendError::Unaddressable) => Err(Errno::ENETUNREACH),
        }
    }

    /// Sends a UDP datagram over IPv6 that does not fit the link, built by ustack
    /// ([`fragment`]) and sent by `Engine::send_ipv6`: in fragments, or whole to the stack's
    /// own addresses, or dropped with the outbox full (UDP promises no delivery, and
    /// nothing grows). The socket's datagrams smoltcp still holds go first, so the order
    /// is kept.
    fn send_ipv6_fragments(
        &mut self,
        handle: SocketHandle,
        local: SocketAddr,
        dst: (Ipv6Addr, u16),
        buf: &[u8],
    ) -> Result<usize> {
        let now = self.now;
        let which = Which::Udp(handle);
        self.with_one(Some(which), |iface, set, out| {
            while iface.poll_egress(now, out, set) == smoltcp::iface::PollResult::SocketStateChanged {}
        });
        let socket = self.udp_mut(handle);
        let hop_limit = socket.hop_limit().unwrap_or(64);
        let src = match local.ip() {
            IpAddr::V6(ip) if !ip.is_unspecified() => ip,
            _ => self.iface.get_source_address_ipv6(&dst.0),
        };
        let packet = fragment::udp_ipv6((src, local.port()), dst, hop_limit, buf).ok_or(Errno::EMSGSIZE)?;
        self.send_ipv6(packet);
        Ok(buf.len())
    }

    /// recvfrom() on a UDP socket: the next datagram and its sender; EAGAIN if none is
    /// there. A datagram longer than `buf` is cut to fit and the rest discarded, as in
    /// Linux. On a connected UDP socket, datagrams from other senders are dropped. For
    /// TCP, this is recv() with the peer's address (Linux gives none; the peer's, while
    /// there is one, is more use, and the wildcard after a reset or a full close).
    pub fn recv_from(&mut self, id: SockId, buf: &mut [u8]) -> Result<(usize, SocketAddr)> {
        self.recv_msg(id, buf, false).map(|r| (r.len, r.from))
    }

    fn recv_datagram(&mut self, id: SockId, buf: &mut [u8], peek: bool) -> Result<Received> {
        let e = self.entry(id)?;
        let domain = e.domain;
        // Unbound: nothing can arrive yet.
        let SockState::Udp { handle, peer } = e.state else { return Err(Errno::EAGAIN) };
        let shut_read = e.shut_read;
        let socket = self.udp_receiving(handle);
        discard_unwanted(socket, domain, peer);
        let got = if peek { socket.peek().map(|(d, m)| (d, *m)) } else { socket.recv() };
        if let Ok((data, meta)) = got {
            let from = SocketAddr::new(meta.endpoint.addr.into(), meta.endpoint.port);
            let len = data.len().min(buf.len());
            buf[..len].copy_from_slice(&data[..len]);
            return Ok(Received { len, from: to_user(domain, from), full_len: data.len() });
        }
        // After shutdown(SHUT_RD), recv() returns 0 instead of waiting (datagrams that
        // still arrive are returned, as in Linux).
        if shut_read {
            let from = peer.unwrap_or_else(|| SocketAddr::new(unspecified(domain), 0));
            return Ok(Received { len: 0, from: to_user(domain, from), full_len: 0 });
        }
        Err(Errno::EAGAIN)
    }

    /// shutdown(): `Write` sends FIN once queued data is sent, and the socket can still
    /// receive; `Read` makes recv() report end of stream once received data is read;
    /// `Both` does both. On a listener, `Read`/`Both` stops listening and wakes accept()
    /// with EINVAL (`Write` does nothing), as in Linux. ENOTCONN if there is no connection
    /// (or it is over: reset, or closed both ways).
    pub fn shutdown(&mut self, id: SockId, how: std::net::Shutdown) -> Result<()> {
        use std::net::Shutdown;
        let e = self.entry(id)?;
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
                    self.unlisten(id, local, l);
                    if let Some(local) = local {
                        self.ports.set_listening(Proto::Tcp, local.port(), id, false);
                    }
                    log::info!(target: "ustack::backlog", "listener #{id} shut down");
                    self.touched.push(id);
                }
                return Ok(());
            }
            _ => return Err(Errno::ENOTCONN),
        };
        // A connection that is over (reset, or closed both ways): ENOTCONN, as in Linux.
        if handle.is_some_and(|h| self.tcp(h).state() == tcp::State::Closed) {
            return Err(Errno::ENOTCONN);
        }
        let e = self.entry(id)?;
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            e.shut_read = true;
        }
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            e.shut_write = true;
        }
        if let (Some(handle), Shutdown::Write | Shutdown::Both) = (handle, how) {
            self.tcp_mut(handle).close();
            self.dirty.push(handle);
        }
        self.touched.push(id);
        Ok(())
    }

    /// close() of one handle: when it was the last, the socket closes. The engine then
    /// finishes the FIN exchange and TIME-WAIT by itself, and frees the connection and its
    /// port after that. As in Linux, unread received data turns the FIN into a RST, and a
    /// listener's queued connections are reset.
    pub fn close(&mut self, id: SockId) {
        self.touched.push(id);
        self.release(id);
    }

    /// Closes every socket as a process's exit closes its descriptors.
    pub fn close_all(&mut self) {
        let mut ids: Vec<SockId> = self.entries.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(entry) = self.entries.get_mut(&id) {
                entry.refs = 1;
            }
            self.close(id);
        }
    }

    /// dup(): one more handle on socket `id`.
    pub fn dup(&mut self, id: SockId) -> Result<()> {
        self.entry(id)?.refs += 1;
        Ok(())
    }

    /// How the socket's calls block.
    pub fn blocking(&self, id: SockId) -> Result<Blocking> {
        let e = self.entries.get(&id).ok_or(Errno::EBADF)?;
        Ok(Blocking { nonblocking: e.nonblocking, read_timeout: e.read_timeout, write_timeout: e.write_timeout })
    }

    /// O_NONBLOCK.
    pub fn set_nonblocking(&mut self, id: SockId, nonblocking: bool) -> Result<()> {
        self.entry(id)?.nonblocking = nonblocking;
        Ok(())
    }

    /// SO_REUSEADDR: lets bind() take a port that only lingering connections (closing,
    /// TIME-WAIT, accepted) hold — so a restarted server can listen again at once. It
    /// never shares a port with another open socket (that would be SO_REUSEPORT).
    pub fn set_reuse_address(&mut self, id: SockId, reuse: bool) -> Result<()> {
        self.entry(id)?.reuse_addr = reuse;
        Ok(())
    }

    /// SO_RCVTIMEO (`read`) or SO_SNDTIMEO: EINVAL for zero, as Linux's setsockopt takes
    /// a zero timeval to mean "no timeout" and ustack's callers say None for that.
    pub fn set_timeout(&mut self, id: SockId, read: bool, timeout: Option<Duration>) -> Result<()> {
        if timeout == Some(Duration::ZERO) {
            return Err(Errno::EINVAL);
        }
        let e = self.entry(id)?;
        *(if read { &mut e.read_timeout } else { &mut e.write_timeout }) = timeout;
        Ok(())
    }

    /// getsockname(): the local address; the family's wildcard with port 0 if unbound.
    pub fn local_addr(&self, id: SockId) -> Result<SocketAddr> {
        let e = self.entries.get(&id).ok_or(Errno::EBADF)?;
        let domain = e.domain;
        // A connection knows the source address routing chose for it, as getsockname shows.
        let local = match e.state {
            SockState::Connected(handle) => Some(self.conns[&handle].tuple.local),
            // A connected UDP socket on a wildcard address shows the source address its
            // datagrams go out with, as Linux does.
            SockState::Udp { peer: Some(peer), .. } => e.local.map(|local| match local.ip().is_unspecified() {
                true => match self.iface.get_source_address(&peer.ip().into()) {
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
    pub fn peer_addr(&self, id: SockId) -> Result<SocketAddr> {
        let e = self.entries.get(&id).ok_or(Errno::EBADF)?;
        match e.state {
            SockState::Connected(handle) => {
                let conn = &self.conns[&handle];
                let established = !matches!(conn.state, tcp::State::SynSent | tcp::State::Closed);
                if established { Ok(to_user(e.domain, conn.tuple.remote)) } else { Err(Errno::ENOTCONN) }
            }
            SockState::Udp { peer: Some(peer), .. } => Ok(to_user(e.domain, peer)),
            _ => Err(Errno::ENOTCONN),
        }
    }

    /// The TCP state of the socket's connection (RFC 9293 names via `Display`), if any.
    pub fn tcp_state(&self, id: SockId) -> Option<tcp::State> {
        match self.entries.get(&id)?.state {
            SockState::Connected(handle) => Some(self.tcp(handle).state()),
            SockState::Listening(_) => Some(tcp::State::Listen),
            _ => None,
        }
    }

    /// The congestion state of the socket's connection, as Linux's `TCP_INFO` reports its
    /// own (`tcpi_snd_cwnd`, `tcpi_snd_ssthresh`, but in bytes): None without a connection
    /// or with ustack's congestion control off (`StackConfig::congestion`).
    pub fn congestion_info(&self, id: SockId) -> Option<super::CongestionInfo> {
        let SockState::Connected(handle) = self.entries.get(&id)?.state else { return None };
        let cc = self.conns.get(&handle)?.cc.as_ref()?;
        Some(super::CongestionInfo {
            cwnd: cc.cwnd(),
            ssthresh: cc.ssthresh(),
            mss: cc.mss(),
            reductions: cc.counters().reductions,
            timeouts: cc.counters().timeouts,
        })
    }

    /// A listener's queue lengths: (SYN queue, accept queue, SYNs and ACKs dropped so far).
    pub fn listen_queues(&self, id: SockId) -> Option<(usize, usize, u64)> {
        match &self.entries.get(&id)?.state {
            SockState::Listening(l) => Some((l.syn_queue.len(), l.accept_queue.len(), l.syns_dropped + l.acks_dropped)),
            _ => None,
        }
    }

    /// What the socket is ready for, as poll() reports it ([`Events::ERR`] and
    /// [`Events::HUP`] included); a closed socket is ERR and HUP.
    pub fn readiness(&mut self, id: SockId) -> Events {
        let Some(entry) = self.entries.get(&id) else { return Events::ERR | Events::HUP };
        let mut ready = Events::NONE;
        match &entry.state {
            // Linux: an unconnected TCP socket is writable (send fails at once) and hung up;
            // an unbound UDP socket is just writable.
            SockState::Idle if entry.ty == Type::Stream => ready |= Events::OUT | Events::HUP,
            SockState::Idle => ready |= Events::OUT,
            SockState::Listening(l) => {
                if !l.accept_queue.is_empty() {
                    ready |= Events::IN;
                }
            }
            SockState::Connected(handle) => {
                let conn = &self.conns[handle];
                let tcp = self.tcp(*handle);
                let state = tcp.state();
                let connecting = matches!(state, tcp::State::SynSent | tcp::State::SynReceived);
                if conn.pending_error.is_some() {
                    ready |= Events::ERR | Events::IN | Events::OUT;
                }
                if tcp.can_recv() || entry.shut_read || (!connecting && !tcp.may_recv()) {
                    ready |= Events::IN;
                }
                // Writable when there is room, or when a send would fail at once (EPIPE).
                if !connecting && (self.send_room(*handle) > 0 || !tcp.may_send()) {
                    ready |= Events::OUT;
                }
                if state == tcp::State::Closed || (!tcp.may_send() && !tcp.may_recv() && !connecting) {
                    ready |= Events::HUP;
                }
            }
            SockState::Udp { handle, peer } => {
                let (domain, peer, shut_read) = (entry.domain, *peer, entry.shut_read);
                let udp = self.udp_receiving(*handle);
                discard_unwanted(udp, domain, peer);
                if udp.can_recv() || shut_read {
                    ready |= Events::IN;
                }
                if udp.can_send() {
                    ready |= Events::OUT;
                }
            }
        }
        ready
    }

    /// What ustack recorded about the connection of socket `id`, if it has one.
    pub fn connection_info(&self, id: SockId) -> Option<super::ConnectionInfo> {
        let SockState::Connected(handle) = self.entries.get(&id)?.state else { return None };
        Some(self.conns.get(&handle)?.info())
    }

    /// Takes listener `id` (bound to `local`) off the demux and resets the connections
    /// waiting in its queues.
    pub(super) fn unlisten(&mut self, id: SockId, local: Option<SocketAddr>, l: Listener) {
        if let Some(local) = local {
            unindex(&mut self.listeners, local.port(), id);
        }
        self.generation += 1;
        for handle in l.syn_queue.into_iter().chain(l.accept_queue) {
            self.tcp_mut(handle).abort();
            if let Some(conn) = self.conns.get_mut(&handle) {
                conn.owner = Owner::Orphan;
            }
            self.dirty.push(handle);
        }
    }
}
