//! Socket options (setsockopt/getsockopt), as the engine keeps and applies them: TCP_NODELAY,
//! SO_KEEPALIVE, SO_LINGER, SO_RCVBUF/SO_SNDBUF, IP_TTL, IPV6_V6ONLY, SO_ERROR.
//!
//! The options that shape a connection live with the socket (`SockOpts`) and are applied
//! to each smoltcp socket the socket makes: its own connection (connect) or, for a
//! listener, every connection it accepts, which inherits them as in Linux. Set on a socket
//! that already has a connection, the ones smoltcp can change are changed on it at once.

use std::time::Duration;

use smoltcp::socket::tcp;

use super::{Domain, Engine, SockId, SockState, Type, buffers};
use crate::errno::Errno;

type Result<T> = std::result::Result<T, Errno>;

/// Linux's smallest receive buffer (`SOCK_MIN_RCVBUF`, as getsockopt reports it, doubled):
/// a smaller SO_RCVBUF is raised to it.
pub const MIN_RECV_BUFFER: usize = 2304;
/// Linux's smallest send buffer (`SOCK_MIN_SNDBUF`, doubled).
pub const MIN_SEND_BUFFER: usize = 4608;

/// IP_TTL when none is set: Linux's `net.ipv4.ip_default_ttl`, and smoltcp's default too.
pub const DEFAULT_TTL: u8 = 64;

/// The options a socket gives the connections it makes (and a listener those it accepts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct SockOpts {
    /// TCP_NODELAY: Nagle's algorithm off.
    pub nodelay: bool,
    /// SO_KEEPALIVE on, probing after this long idle (TCP_KEEPIDLE).
    pub keepalive: Option<Duration>,
    /// SO_LINGER: zero resets on close; longer makes close() wait that long for the FIN's ACK.
    pub linger: Option<Duration>,
    /// SO_RCVBUF and SO_SNDBUF as set, in bytes of data (half what getsockopt reports).
    pub recv_buffer: Option<usize>,
    pub send_buffer: Option<usize>,
    /// IP_TTL / IPV6_UNICAST_HOPS.
    pub ttl: Option<u8>,
}

impl SockOpts {
    /// Applies the options smoltcp keeps per connection to `socket`.
    pub fn apply(&self, socket: &mut tcp::Socket) {
        socket.set_nagle_enabled(!self.nodelay);
        socket.set_keep_alive(self.keepalive.map(Into::into));
        socket.set_hop_limit(self.ttl);
    }
}

/// Which of a socket's two buffers.
#[derive(Clone, Copy)]
enum Direction {
    Receive,
    Send,
}

/// SO_RCVBUF/SO_SNDBUF's value as Linux takes it: bytes of data, half of what getsockopt
/// then reports, at least half the minimum and at most what ustack's buffers hold.
fn buffer_bytes(requested: usize, min_reported: usize, max: usize) -> usize {
    requested.clamp(min_reported / 2, max.max(min_reported / 2))
}

impl Engine {
    /// The options of socket `id`.
    pub(super) fn opts(&self, id: SockId) -> Result<SockOpts> {
        self.entries.get(&id).map(|e| e.opts).ok_or(Errno::EBADF)
    }

    /// A smoltcp TCP socket made with `opts`: its buffers sized by SO_RCVBUF/SO_SNDBUF,
    /// its Nagle, keep-alive and TTL set. None if there is no memory for buffers.
    pub(super) fn new_tcp_socket(&mut self, opts: &SockOpts) -> Option<(tcp::Socket<'static>, buffers::Slot)> {
        let (rx, tx) =
            (opts.recv_buffer.unwrap_or(self.buffers.rx_size()), opts.send_buffer.unwrap_or(self.buffers.tx_size()));
        let (mut socket, slot) = self.buffers.tcp_socket_sized(rx, tx)?;
        opts.apply(&mut socket);
        Some((socket, slot))
    }

    /// Changes the options of socket `id` with `change`, and applies them to its
    /// connection, if it has one.
    fn change_opts(&mut self, id: SockId, change: impl FnOnce(&mut SockOpts)) -> Result<()> {
        let e = self.entry(id)?;
        change(&mut e.opts);
        let opts = e.opts;
        match e.state {
            SockState::Connected(handle) => opts.apply(self.tcp_mut(handle)),
            SockState::Udp { handle, .. } => self.udp_mut(handle).set_hop_limit(opts.ttl),
            _ => {}
        }
        Ok(())
    }

    /// ENOPROTOOPT for a TCP-level option on a UDP socket, as Linux answers.
    fn tcp_only(&self, id: SockId) -> Result<()> {
        match self.socket_type(id)? {
            Type::Stream => Ok(()),
            Type::Dgram => Err(Errno::ENOPROTOOPT),
        }
    }

    /// TCP_NODELAY: with `true`, small writes go out at once instead of waiting, while
    /// earlier data is unacknowledged, to be sent with more (Nagle's algorithm, on by
    /// default). ENOPROTOOPT on a UDP socket.
    pub fn set_nodelay(&mut self, id: SockId, nodelay: bool) -> Result<()> {
        self.tcp_only(id)?;
        self.change_opts(id, |o| o.nodelay = nodelay)
    }

    /// TCP_NODELAY's value.
    pub fn nodelay(&self, id: SockId) -> Result<bool> {
        self.tcp_only(id)?;
        Ok(self.opts(id)?.nodelay)
    }

    /// SO_KEEPALIVE (with TCP_KEEPIDLE): `Some(idle)` sends a keep-alive probe after the
    /// connection has been idle that long, and again each `idle` while it stays idle;
    /// `None` turns them off (the default). EINVAL for a zero interval. Accepted on a UDP
    /// socket, where it does nothing, as in Linux.
    pub fn set_keepalive(&mut self, id: SockId, idle: Option<Duration>) -> Result<()> {
        if idle == Some(Duration::ZERO) {
            return Err(Errno::EINVAL);
        }
        self.change_opts(id, |o| o.keepalive = idle)
    }

    /// SO_KEEPALIVE's interval, if on.
    pub fn keepalive(&self, id: SockId) -> Result<Option<Duration>> {
        Ok(self.opts(id)?.keepalive)
    }

    /// SO_LINGER: `Some(ZERO)` makes close() reset the connection (RST) instead of closing
    /// it with a FIN, discarding unsent data; `Some(t)` makes the socket layer's close()
    /// wait up to `t` for the data and the FIN to be acknowledged; `None` (the default)
    /// closes in the background.
    pub fn set_linger(&mut self, id: SockId, linger: Option<Duration>) -> Result<()> {
        self.change_opts(id, |o| o.linger = linger)
    }

    /// SO_LINGER's value.
    pub fn linger(&self, id: SockId) -> Result<Option<Duration>> {
        Ok(self.opts(id)?.linger)
    }

    /// SO_RCVBUF: the receive buffer of the connections the socket makes from now on (its
    /// connect(), or a listener's accepted connections) — the window TCP advertises, fixed
    /// from then on instead of autotuned, as in Linux — or of a UDP socket bound after it.
    /// Linux's rules: `bytes` is doubled for bookkeeping, [`Engine::recv_buffer_size`]
    /// reports the doubled value, and it is raised to Linux's minimum; ustack also caps it
    /// at [`StackConfig::tcp_receive_max`](super::StackConfig) (or `udp_buffer`), as Linux
    /// caps it at `net.core.rmem_max`. smoltcp cannot resize a connection's buffers, so an
    /// existing connection keeps its own size.
    pub fn set_recv_buffer_size(&mut self, id: SockId, bytes: usize) -> Result<()> {
        let max = self.buffer_max(id, Direction::Receive)?;
        self.change_opts(id, |o| o.recv_buffer = Some(buffer_bytes(bytes, MIN_RECV_BUFFER, max)))
    }

    /// SO_RCVBUF as getsockopt reports it: twice the bytes of data the buffer holds (of
    /// the socket's connection, if it has one; an autotuned one's as far as it grew).
    pub fn recv_buffer_size(&self, id: SockId) -> Result<usize> {
        let e = self.entries.get(&id).ok_or(Errno::EBADF)?;
        let bytes = match e.state {
            SockState::Connected(handle) => match self.conns.get(&handle).and_then(|c| c.rcv_window.as_ref()) {
                Some(tuning) => tuning.clamp() as usize,
                None => self.tcp(handle).recv_capacity(),
            },
            SockState::Udp { handle, .. } => self.udp(handle).payload_recv_capacity(),
            _ if e.ty == Type::Stream => e.opts.recv_buffer.unwrap_or(self.config.tcp_buffer),
            _ => e.opts.recv_buffer.unwrap_or(self.config.udp_buffer),
        };
        Ok(2 * bytes)
    }

    /// SO_SNDBUF: as [`Engine::set_recv_buffer_size`], for the send buffer: how much a
    /// send() takes before it blocks.
    pub fn set_send_buffer_size(&mut self, id: SockId, bytes: usize) -> Result<()> {
        let max = self.buffer_max(id, Direction::Send)?;
        self.change_opts(id, |o| o.send_buffer = Some(buffer_bytes(bytes, MIN_SEND_BUFFER, max)))
    }

    /// SO_SNDBUF as getsockopt reports it (doubled; an autotuned one's as far as it grew).
    pub fn send_buffer_size(&self, id: SockId) -> Result<usize> {
        let e = self.entries.get(&id).ok_or(Errno::EBADF)?;
        let bytes = match e.state {
            SockState::Connected(handle) => match self.conns.get(&handle).and_then(|c| c.snd_buffer.as_ref()) {
                Some(buffer) => buffer.clamp() as usize,
                None => self.tcp(handle).send_capacity(),
            },
            SockState::Udp { handle, .. } => self.udp(handle).payload_send_capacity(),
            _ if e.ty == Type::Stream => e.opts.send_buffer.unwrap_or(self.config.tcp_buffer),
            _ => e.opts.send_buffer.unwrap_or(self.config.udp_buffer),
        };
        Ok(2 * bytes)
    }

    /// The largest buffer a socket of `id`'s type can have, for receiving or sending.
    fn buffer_max(&self, id: SockId, direction: Direction) -> Result<usize> {
        Ok(match (self.socket_type(id)?, direction) {
            (Type::Stream, Direction::Receive) => self.buffers.rx_size(),
            (Type::Stream, Direction::Send) => self.buffers.tx_size(),
            (Type::Dgram, _) => self.config.udp_buffer,
        })
    }

    /// SO_REUSEADDR's value.
    pub fn reuse_address(&self, id: SockId) -> Result<bool> {
        self.entries.get(&id).map(|e| e.reuse_addr).ok_or(Errno::EBADF)
    }

    /// SO_BROADCAST: lets a UDP socket send to a broadcast address (255.255.255.255 or
    /// a subnet's: `engine/route.rs`); without it, EACCES.
    pub fn set_broadcast(&mut self, id: SockId, broadcast: bool) -> Result<()> {
        self.entry(id)?.broadcast = broadcast;
        Ok(())
    }

    /// SO_BROADCAST's value.
    pub fn broadcast(&self, id: SockId) -> Result<bool> {
        self.entries.get(&id).map(|e| e.broadcast).ok_or(Errno::EBADF)
    }

    /// IPV6_V6ONLY: an AF_INET6 socket that takes IPv6 alone — no IPv4 traffic through
    /// v4-mapped addresses. ENOPROTOOPT on an AF_INET socket, EINVAL once bound (Linux).
    pub fn set_only_v6(&mut self, id: SockId, only_v6: bool) -> Result<()> {
        let e = self.entry(id)?;
        if e.domain == Domain::Inet {
            return Err(Errno::ENOPROTOOPT);
        }
        if e.local.is_some() {
            return Err(Errno::EINVAL);
        }
        e.v6only = only_v6;
        Ok(())
    }

    /// IPV6_V6ONLY's value; ENOPROTOOPT on an AF_INET socket.
    pub fn only_v6(&self, id: SockId) -> Result<bool> {
        let e = self.entries.get(&id).ok_or(Errno::EBADF)?;
        if e.domain == Domain::Inet {
            return Err(Errno::ENOPROTOOPT);
        }
        Ok(e.v6only)
    }

    /// IP_TTL: the TTL (hop limit for IPv6) of the socket's packets, 1 to 255; EINVAL
    /// otherwise, as Linux says.
    pub fn set_ttl(&mut self, id: SockId, ttl: u32) -> Result<()> {
        let ttl = u8::try_from(ttl).ok().filter(|&t| t > 0).ok_or(Errno::EINVAL)?;
        self.change_opts(id, |o| o.ttl = Some(ttl))
    }

    /// IP_TTL's value ([`DEFAULT_TTL`] unless set).
    pub fn ttl(&self, id: SockId) -> Result<u32> {
        Ok(u32::from(self.opts(id)?.ttl.unwrap_or(DEFAULT_TTL)))
    }

    /// SO_ERROR: the socket's pending error, cleared by reading it. A non-blocking
    /// connect() that failed reports its error here once (and the socket is idle again),
    /// as Linux does; a reset connection reports ECONNRESET.
    pub fn take_error(&mut self, id: SockId) -> Result<Option<Errno>> {
        let e = self.entry(id)?;
        let SockState::Connected(handle) = e.state else { return Ok(None) };
        if e.connecting {
            return match self.connect_outcome(id) {
                Err(Errno::EINPROGRESS) | Ok(()) => Ok(None),
                Err(err) => Ok(Some(err)),
            };
        }
        Ok(self.conns.get_mut(&handle).and_then(|conn| conn.pending_error.take()))
    }

    /// Starts a lingering close of socket `id`'s last handle: the FIN is queued now, and
    /// the linger time returned, during which the caller waits while
    /// [`Engine::lingering`] says so. None if the socket does not linger: SO_LINGER is off
    /// or zero, the socket has other handles or no connection, or unread data will make
    /// close() reset the connection anyway.
    pub fn start_linger(&mut self, id: SockId) -> Result<Option<Duration>> {
        let e = self.entry(id)?;
        let Some(linger) = e.opts.linger.filter(|l| !l.is_zero()) else { return Ok(None) };
        let SockState::Connected(handle) = e.state else { return Ok(None) };
        if e.refs > 1 || self.tcp(handle).recv_queue() > 0 {
            return Ok(None);
        }
        self.tcp_mut(handle).close();
        self.dirty.push(handle);
        Ok(Some(linger))
    }

    /// Whether socket `id`'s connection still has data or a FIN the peer has not
    /// acknowledged (FIN-WAIT-1, CLOSING, LAST-ACK: what Linux's lingering close waits out).
    pub fn lingering(&self, id: SockId) -> bool {
        let Some(SockState::Connected(handle)) = self.entries.get(&id).map(|e| &e.state) else { return false };
        matches!(self.tcp(*handle).state(), tcp::State::FinWait1 | tcp::State::Closing | tcp::State::LastAck)
    }
}
