//! setsockopt()/getsockopt(): the options of a [`Socket`], each a `set_x`/`x` pair of
//! methods (socket2's names; `set_keepalive` takes the idle time as well). What each does
//! is the engine's ([`crate::engine::options`]).

use std::time::Duration;

use super::{Errno, Result, Socket};

impl Socket {
    /// TCP_NODELAY: with `true`, small writes go out at once rather than wait, while
    /// earlier data is unacknowledged, to be sent together (Nagle's algorithm, on by
    /// default). Inherited by accepted connections. ENOPROTOOPT on a UDP socket.
    pub fn set_nodelay(&self, nodelay: bool) -> Result<()> {
        self.set_option(|engine, id| engine.set_nodelay(id, nodelay))
    }

    /// TCP_NODELAY's value.
    pub fn nodelay(&self) -> Result<bool> {
        self.call(|l| l.engine.nodelay(self.id))
    }

    /// SO_KEEPALIVE with TCP_KEEPIDLE: `Some(idle)` sends a keep-alive probe after the
    /// connection has been idle that long, and every `idle` after that while no answer
    /// comes; `None` (the default) sends none. EINVAL for zero. Unlike Linux, unanswered
    /// probes do not end the connection (smoltcp has no probe count).
    pub fn set_keepalive(&self, idle: Option<Duration>) -> Result<()> {
        self.set_option(|engine, id| engine.set_keepalive(id, idle))
    }

    /// SO_KEEPALIVE's idle time, if on.
    pub fn keepalive(&self) -> Result<Option<Duration>> {
        self.call(|l| l.engine.keepalive(self.id))
    }

    /// SO_LINGER: `Some(Duration::ZERO)` makes [`Socket::close`] reset the connection
    /// (the peer sees RST, unsent data is discarded); `Some(t)` makes the last handle's
    /// close wait up to `t` until the peer has acknowledged all data and the FIN; `None`
    /// (the default) closes in the background.
    pub fn set_linger(&self, linger: Option<Duration>) -> Result<()> {
        self.set_option(|engine, id| engine.set_linger(id, linger))
    }

    /// SO_LINGER's value.
    pub fn linger(&self) -> Result<Option<Duration>> {
        self.call(|l| l.engine.linger(self.id))
    }

    /// SO_RCVBUF: the receive buffer (TCP's advertised window, fixed instead of autotuned)
    /// of the connections this socket makes after the call — set it before connect() or
    /// listen(), as with Linux for the window scale. As in Linux,
    /// [`Socket::recv_buffer_size`] then reports twice `bytes`, raised to Linux's minimum;
    /// ustack caps it at [`StackConfig::tcp_receive_max`](crate::StackConfig::tcp_receive_max)
    /// (`udp_buffer` for UDP, before bind()) as Linux caps it at `net.core.rmem_max`. An
    /// existing connection keeps its size: smoltcp cannot resize it.
    pub fn set_recv_buffer_size(&self, bytes: usize) -> Result<()> {
        self.set_option(|engine, id| engine.set_recv_buffer_size(id, bytes))
    }

    /// SO_RCVBUF as Linux's getsockopt reports it: twice the bytes of data the buffer
    /// holds (the connection's own, once there is one).
    pub fn recv_buffer_size(&self) -> Result<usize> {
        self.call(|l| l.engine.recv_buffer_size(self.id))
    }

    /// SO_SNDBUF: as [`Socket::set_recv_buffer_size`], for the send buffer — how much
    /// send() takes before it blocks or says EAGAIN.
    pub fn set_send_buffer_size(&self, bytes: usize) -> Result<()> {
        self.set_option(|engine, id| engine.set_send_buffer_size(id, bytes))
    }

    /// SO_SNDBUF as Linux's getsockopt reports it (twice the bytes of data).
    pub fn send_buffer_size(&self) -> Result<usize> {
        self.call(|l| l.engine.send_buffer_size(self.id))
    }

    /// SO_REUSEADDR's value (see [`Socket::set_reuse_address`]).
    pub fn reuse_address(&self) -> Result<bool> {
        self.call(|l| l.engine.reuse_address(self.id))
    }

    /// IPV6_V6ONLY: an AF_INET6 socket that takes IPv6 alone (IPv4 through v4-mapped
    /// addresses is refused: ENETUNREACH to connect or send, EINVAL to bind, and a
    /// listener or UDP socket gets no IPv4 packets). Set it before bind(): EINVAL after,
    /// ENOPROTOOPT on an AF_INET socket, as Linux says.
    pub fn set_only_v6(&self, only_v6: bool) -> Result<()> {
        self.set_option(|engine, id| engine.set_only_v6(id, only_v6))
    }

    /// IPV6_V6ONLY's value; ENOPROTOOPT on an AF_INET socket.
    pub fn only_v6(&self) -> Result<bool> {
        self.call(|l| l.engine.only_v6(self.id))
    }

    /// IP_TTL: the TTL (IPv6: hop limit) of the socket's packets, 1 to 255 (EINVAL
    /// otherwise).
    pub fn set_ttl(&self, ttl: u32) -> Result<()> {
        self.set_option(|engine, id| engine.set_ttl(id, ttl))
    }

    /// IP_TTL's value: 64 unless set, as Linux's default.
    pub fn ttl(&self) -> Result<u32> {
        self.call(|l| l.engine.ttl(self.id))
    }

    /// SO_ERROR: the pending error, cleared by reading it — a failed non-blocking
    /// connect()'s, or a reset's.
    pub fn take_error(&self) -> Result<Option<Errno>> {
        self.call(|l| l.engine.take_error(self.id))
    }

    /// SO_RCVTIMEO's value.
    pub fn read_timeout(&self) -> Result<Option<Duration>> {
        self.call(|l| Ok(l.engine.blocking(self.id)?.read_timeout))
    }

    /// SO_SNDTIMEO's value.
    pub fn write_timeout(&self) -> Result<Option<Duration>> {
        self.call(|l| Ok(l.engine.blocking(self.id)?.write_timeout))
    }

    /// Whether the socket is non-blocking (O_NONBLOCK).
    pub fn nonblocking(&self) -> Result<bool> {
        self.call(|l| Ok(l.engine.blocking(self.id)?.nonblocking))
    }

    /// SO_BROADCAST: lets a UDP socket send to the limited broadcast address
    /// (255.255.255.255) or a directed broadcast of one of the stack's IPv4 subnets;
    /// without it such a sendto() says EACCES, as in Linux.
    pub fn set_broadcast(&self, broadcast: bool) -> Result<()> {
        self.set_option(|engine, id| engine.set_broadcast(id, broadcast))
    }

    /// SO_BROADCAST's value.
    pub fn broadcast(&self) -> Result<bool> {
        self.call(|l| l.engine.broadcast(self.id))
    }
}
