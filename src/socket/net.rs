//! [`TcpListener`], [`TcpStream`] and [`UdpSocket`]: `std::net`'s types on ustack, with the
//! same methods, signatures and errors, plus the stack as the constructors' first argument.
//! The [module docs](super#std-parity) list what differs and why.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::{Domain, Errno, MsgFlags, Socket, Type};
use crate::stack::Stack;

fn domain_of(addr: &SocketAddr) -> Domain {
    if addr.is_ipv4() { Domain::Inet } else { Domain::Inet6 }
}

/// Calls `f` with each address `addr` resolves to until one succeeds, as std does;
/// the last error if none does.
fn each_addr<T>(addr: impl ToSocketAddrs, mut f: impl FnMut(SocketAddr) -> io::Result<T>) -> io::Result<T> {
    let mut last = None;
    for addr in addr.to_socket_addrs()? {
        match f(addr) {
            Ok(done) => return Ok(done),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "could not resolve to any addresses")))
}

/// std's answer to a zero timeout.
fn zero_timeout() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "cannot set a 0 duration timeout")
}

/// SO_ERROR as std reports it.
fn take_error(socket: &Socket) -> io::Result<Option<io::Error>> {
    Ok(socket.take_error()?.map(io::Error::from))
}

/// Multicast is not available: ustack joins no groups and takes only unicast for its own
/// addresses (see the [module docs](super#std-parity)).
fn no_multicast<T>() -> io::Result<T> {
    Err(Errno::ENOPROTOOPT.into())
}

/// A TCP listener on a ustack [`Stack`], like [`std::net::TcpListener`].
///
/// ```no_run
/// use std::io::{Read, Write};
/// use ustack::{Stack, StackConfig, TcpListener, device::TunDevice, device::TunConfig};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // As root: the TUN ustack0, the kernel at 10.7.0.1 on its side, ustack at 10.7.0.2.
/// let tun = TunDevice::open(&TunConfig { name: "ustack0".into(), peer_addrs: vec!["10.7.0.1/24".parse()?], ..TunConfig::default() })?;
/// let stack = Stack::new(tun, StackConfig { addrs: vec!["10.7.0.2/24".parse()?], ..Default::default() })?;
/// let listener = TcpListener::bind(&stack, "0.0.0.0:7")?;
/// for stream in listener.incoming() {
///     let mut stream = stream?;
///     let mut buf = [0; 1024];
///     let n = stream.read(&mut buf)?;
///     stream.write_all(&buf[..n])?;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct TcpListener(Socket);

impl TcpListener {
    /// Binds to `addr` (each address it resolves to in turn, until one binds) and listens
    /// with a backlog of 128, setting SO_REUSEADDR first as std does on Unix.
    pub fn bind(stack: &Stack, addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        Self::bind_with_backlog(stack, addr, 128)
    }

    /// [`TcpListener::bind`] with the listen backlog given (see [`Socket::listen`]).
    pub fn bind_with_backlog(stack: &Stack, addr: impl ToSocketAddrs, backlog: u32) -> io::Result<TcpListener> {
        each_addr(addr, |addr| {
            let socket = Socket::new(stack, domain_of(&addr), Type::Stream)?;
            socket.set_reuse_address(true)?;
            socket.bind(addr)?;
            socket.listen(backlog)?;
            Ok(TcpListener(socket))
        })
    }

    /// The next established connection and its peer's address.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        Ok(self.0.accept().map(|(s, addr)| (TcpStream(s), addr))?)
    }

    /// An endless iterator of accepted connections, as std's.
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// [`TcpListener::incoming`] that owns the listener (std's is still unstable).
    pub fn into_incoming(self) -> IntoIncoming {
        IntoIncoming { listener: self }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.0.local_addr()?)
    }

    /// Another handle to the same listener (dup).
    pub fn try_clone(&self) -> io::Result<TcpListener> {
        Ok(self.0.try_clone().map(TcpListener)?)
    }

    /// IP_TTL of the connections it accepts.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        Ok(self.0.set_ttl(ttl)?)
    }

    /// IP_TTL's value.
    pub fn ttl(&self) -> io::Result<u32> {
        Ok(self.0.ttl()?)
    }

    /// IPV6_V6ONLY: the listener is bound already, so this says EINVAL, as on std.
    #[deprecated(note = "IPV6_V6ONLY can only be set before the socket is bound; use Socket::set_only_v6")]
    pub fn set_only_v6(&self, only_v6: bool) -> io::Result<()> {
        Ok(self.0.set_only_v6(only_v6)?)
    }

    /// IPV6_V6ONLY's value.
    #[deprecated(note = "IPV6_V6ONLY can only be set before the socket is bound; use Socket::only_v6")]
    pub fn only_v6(&self) -> io::Result<bool> {
        Ok(self.0.only_v6()?)
    }

    /// SO_ERROR: the pending error, cleared by reading it.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        take_error(&self.0)
    }

    /// O_NONBLOCK: accept() says `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        Ok(self.0.set_nonblocking(nonblocking)?)
    }

    /// The Berkeley socket underneath, for the options std does not have.
    pub fn socket(&self) -> &Socket {
        &self.0
    }
}

impl From<Socket> for TcpListener {
    /// A listening TCP socket as a listener.
    fn from(socket: Socket) -> TcpListener {
        TcpListener(socket)
    }
}

/// The connections a [`TcpListener`] accepts, from [`TcpListener::incoming`]; never ends.
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<TcpStream>;

    fn next(&mut self) -> Option<io::Result<TcpStream>> {
        Some(self.listener.accept().map(|(stream, _)| stream))
    }
}

/// The connections a [`TcpListener`] accepts, from [`TcpListener::into_incoming`].
#[derive(Debug)]
pub struct IntoIncoming {
    listener: TcpListener,
}

impl Iterator for IntoIncoming {
    type Item = io::Result<TcpStream>;

    fn next(&mut self) -> Option<io::Result<TcpStream>> {
        Some(self.listener.accept().map(|(stream, _)| stream))
    }
}

/// A TCP connection on a ustack [`Stack`], like [`std::net::TcpStream`].
///
/// ```no_run
/// use std::io::{Read, Write};
/// use ustack::{Stack, StackConfig, TcpStream, device::TunDevice, device::TunConfig};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // As root: the TUN ustack0, the kernel at 10.7.0.1 on its side, ustack at 10.7.0.2.
/// let tun = TunDevice::open(&TunConfig { name: "ustack0".into(), peer_addrs: vec!["10.7.0.1/24".parse()?], ..TunConfig::default() })?;
/// let stack = Stack::new(tun, StackConfig { addrs: vec!["10.7.0.2/24".parse()?], ..Default::default() })?;
/// let mut stream = TcpStream::connect(&stack, "10.7.0.1:8000")?;
/// stream.set_nodelay(true)?;
/// stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
/// let mut reply = String::new();
/// stream.read_to_string(&mut reply)?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct TcpStream(Socket);

impl TcpStream {
    /// Connects to `addr` (each address it resolves to in turn, until one answers) from an
    /// ephemeral port; returns once the connection is established.
    pub fn connect(stack: &Stack, addr: impl ToSocketAddrs) -> io::Result<TcpStream> {
        each_addr(addr, |addr| {
            let socket = Socket::new(stack, domain_of(&addr), Type::Stream)?;
            socket.connect(addr)?;
            Ok(TcpStream(socket))
        })
    }

    /// Connects, giving up with `TimedOut` after `timeout` (`InvalidInput` for zero, as std).
    pub fn connect_timeout(stack: &Stack, addr: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        if timeout.is_zero() {
            return Err(zero_timeout());
        }
        let socket = Socket::new(stack, domain_of(addr), Type::Stream)?;
        socket.connect_timeout(*addr, timeout)?;
        Ok(TcpStream(socket))
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.0.peer_addr()?)
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.0.local_addr()?)
    }

    /// Shuts down reading, writing or both (see [`Socket::shutdown`]).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        Ok(self.0.shutdown(how)?)
    }

    /// Another handle to the same connection (dup), e.g. one thread reads while another writes.
    pub fn try_clone(&self) -> io::Result<TcpStream> {
        Ok(self.0.try_clone().map(TcpStream)?)
    }

    /// SO_RCVTIMEO: reads give `WouldBlock` after waiting this long (`InvalidInput` for zero).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        if timeout == Some(Duration::ZERO) {
            return Err(zero_timeout());
        }
        Ok(self.0.set_read_timeout(timeout)?)
    }

    /// SO_SNDTIMEO: writes give `WouldBlock` (or what they queued) after waiting this long.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        if timeout == Some(Duration::ZERO) {
            return Err(zero_timeout());
        }
        Ok(self.0.set_write_timeout(timeout)?)
    }

    /// SO_RCVTIMEO's value.
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.0.read_timeout()?)
    }

    /// SO_SNDTIMEO's value.
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.0.write_timeout()?)
    }

    /// Reads without taking the data: the next read returns it again (MSG_PEEK).
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(self.0.recv_flags(buf, MsgFlags::PEEK)?)
    }

    /// SO_LINGER (std's is still unstable): `Some(ZERO)` makes dropping the last handle
    /// reset the connection; `Some(t)` makes it wait up to `t` for the peer to acknowledge
    /// everything. See [`Socket::set_linger`].
    pub fn set_linger(&self, linger: Option<Duration>) -> io::Result<()> {
        Ok(self.0.set_linger(linger)?)
    }

    /// SO_LINGER's value.
    pub fn linger(&self) -> io::Result<Option<Duration>> {
        Ok(self.0.linger()?)
    }

    /// TCP_NODELAY: small writes are sent at once instead of waiting for earlier data's
    /// acknowledgment (Nagle's algorithm off).
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        Ok(self.0.set_nodelay(nodelay)?)
    }

    /// TCP_NODELAY's value.
    pub fn nodelay(&self) -> io::Result<bool> {
        Ok(self.0.nodelay()?)
    }

    /// IP_TTL of the connection's packets.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        Ok(self.0.set_ttl(ttl)?)
    }

    /// IP_TTL's value.
    pub fn ttl(&self) -> io::Result<u32> {
        Ok(self.0.ttl()?)
    }

    /// SO_ERROR: the pending error (a reset), cleared by reading it.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        take_error(&self.0)
    }

    /// O_NONBLOCK: reads and writes say `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        Ok(self.0.set_nonblocking(nonblocking)?)
    }

    /// The Berkeley socket underneath, for the options std does not have.
    pub fn socket(&self) -> &Socket {
        &self.0
    }
}

impl From<Socket> for TcpStream {
    /// A connected TCP socket as a stream.
    fn from(socket: Socket) -> TcpStream {
        TcpStream(socket)
    }
}

impl Read for &TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(self.0.recv(buf)?)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        Ok(self.0.recv_msg(bufs, MsgFlags::NONE)?.0)
    }
}

impl Write for &TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(self.0.send(buf)?)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Ok(self.0.send_msg(bufs, None, MsgFlags::NONE)?)
    }

    /// Data is handed to the stack by `write`; there is nothing further to flush.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        (&*self).read_vectored(bufs)
    }
}

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A UDP socket on a ustack [`Stack`], like [`std::net::UdpSocket`].
///
/// ```no_run
/// use ustack::{Stack, StackConfig, UdpSocket, device::TunDevice, device::TunConfig};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // As root: the TUN ustack0, the kernel at 10.7.0.1 on its side, ustack at 10.7.0.2.
/// let tun = TunDevice::open(&TunConfig { name: "ustack0".into(), peer_addrs: vec!["10.7.0.1/24".parse()?], ..TunConfig::default() })?;
/// let stack = Stack::new(tun, StackConfig { addrs: vec!["10.7.0.2/24".parse()?], ..Default::default() })?;
/// let socket = UdpSocket::bind(&stack, "0.0.0.0:7")?;
/// let mut buf = [0; 1500];
/// loop {
///     let (n, from) = socket.recv_from(&mut buf)?;
///     socket.send_to(&buf[..n], from)?;
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct UdpSocket(Socket);

impl UdpSocket {
    /// Binds to `addr` (each address it resolves to in turn, until one binds).
    pub fn bind(stack: &Stack, addr: impl ToSocketAddrs) -> io::Result<UdpSocket> {
        each_addr(addr, |addr| {
            let socket = Socket::new(stack, domain_of(&addr), Type::Dgram)?;
            socket.bind(addr)?;
            Ok(UdpSocket(socket))
        })
    }

    /// The next datagram and its sender; a datagram longer than `buf` is cut to fit.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        Ok(self.0.recv_from(buf)?)
    }

    /// [`UdpSocket::recv_from`] that leaves the datagram queued (MSG_PEEK).
    pub fn peek_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        Ok(self.0.recv_from_flags(buf, MsgFlags::PEEK)?)
    }

    /// Sends one datagram to the first address `addr` resolves to, as std does.
    pub fn send_to(&self, buf: &[u8], addr: impl ToSocketAddrs) -> io::Result<usize> {
        let Some(addr) = addr.to_socket_addrs()?.next() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no addresses to send data to"));
        };
        Ok(self.0.send_to(buf, addr)?)
    }

    /// The connected peer's address (`NotConnected` if there is none).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.0.peer_addr()?)
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.0.local_addr()?)
    }

    /// Another handle to the same socket (dup).
    pub fn try_clone(&self) -> io::Result<UdpSocket> {
        Ok(self.0.try_clone().map(UdpSocket)?)
    }

    /// SO_RCVTIMEO: receives give `WouldBlock` after waiting this long.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        if timeout == Some(Duration::ZERO) {
            return Err(zero_timeout());
        }
        Ok(self.0.set_read_timeout(timeout)?)
    }

    /// SO_SNDTIMEO: sends give `WouldBlock` after waiting this long for buffer room.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        if timeout == Some(Duration::ZERO) {
            return Err(zero_timeout());
        }
        Ok(self.0.set_write_timeout(timeout)?)
    }

    /// SO_RCVTIMEO's value.
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.0.read_timeout()?)
    }

    /// SO_SNDTIMEO's value.
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.0.write_timeout()?)
    }

    /// SO_BROADCAST: lets send_to() address the limited broadcast address
    /// (255.255.255.255) or a directed broadcast of the stack's subnets; without it such a
    /// send says `PermissionDenied` (EACCES), as in Linux.
    pub fn set_broadcast(&self, broadcast: bool) -> io::Result<()> {
        Ok(self.0.set_broadcast(broadcast)?)
    }

    /// SO_BROADCAST's value.
    pub fn broadcast(&self) -> io::Result<bool> {
        Ok(self.0.broadcast()?)
    }

    /// IP_MULTICAST_LOOP: not available (ENOPROTOOPT); see [`UdpSocket::join_multicast_v4`].
    pub fn set_multicast_loop_v4(&self, _on: bool) -> io::Result<()> {
        no_multicast()
    }

    /// IP_MULTICAST_LOOP: not available (ENOPROTOOPT).
    pub fn multicast_loop_v4(&self) -> io::Result<bool> {
        no_multicast()
    }

    /// IP_MULTICAST_TTL: not available (ENOPROTOOPT).
    pub fn set_multicast_ttl_v4(&self, _ttl: u32) -> io::Result<()> {
        no_multicast()
    }

    /// IP_MULTICAST_TTL: not available (ENOPROTOOPT).
    pub fn multicast_ttl_v4(&self) -> io::Result<u32> {
        no_multicast()
    }

    /// IPV6_MULTICAST_LOOP: not available (ENOPROTOOPT).
    pub fn set_multicast_loop_v6(&self, _on: bool) -> io::Result<()> {
        no_multicast()
    }

    /// IPV6_MULTICAST_LOOP: not available (ENOPROTOOPT).
    pub fn multicast_loop_v6(&self) -> io::Result<bool> {
        no_multicast()
    }

    /// IP_ADD_MEMBERSHIP: not available (ENOPROTOOPT). ustack's stack has no multicast
    /// groups: it is built without smoltcp's IGMP/MLD, and its demux takes only datagrams
    /// for the stack's own unicast addresses — a joined group would never deliver.
    pub fn join_multicast_v4(&self, _group: &Ipv4Addr, _interface: &Ipv4Addr) -> io::Result<()> {
        no_multicast()
    }

    /// IPV6_ADD_MEMBERSHIP: not available (ENOPROTOOPT); see [`UdpSocket::join_multicast_v4`].
    pub fn join_multicast_v6(&self, _group: &Ipv6Addr, _interface: u32) -> io::Result<()> {
        no_multicast()
    }

    /// IP_DROP_MEMBERSHIP: not available (ENOPROTOOPT).
    pub fn leave_multicast_v4(&self, _group: &Ipv4Addr, _interface: &Ipv4Addr) -> io::Result<()> {
        no_multicast()
    }

    /// IPV6_DROP_MEMBERSHIP: not available (ENOPROTOOPT).
    pub fn leave_multicast_v6(&self, _group: &Ipv6Addr, _interface: u32) -> io::Result<()> {
        no_multicast()
    }

    /// IP_TTL of the socket's datagrams.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        Ok(self.0.set_ttl(ttl)?)
    }

    /// IP_TTL's value.
    pub fn ttl(&self) -> io::Result<u32> {
        Ok(self.0.ttl()?)
    }

    /// SO_ERROR: always `None` — ustack does not turn ICMP errors into socket errors.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        take_error(&self.0)
    }

    /// Fixes the peer datagrams go to and come from: the first address `addr` resolves to
    /// that works, as std.
    pub fn connect(&self, addr: impl ToSocketAddrs) -> io::Result<()> {
        each_addr(addr, |addr| Ok(self.0.connect(addr)?))
    }

    /// Sends one datagram to the connected peer.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        Ok(self.0.send(buf)?)
    }

    /// The next datagram from the connected peer.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(self.0.recv(buf)?)
    }

    /// [`UdpSocket::recv`] that leaves the datagram queued (MSG_PEEK).
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(self.0.recv_flags(buf, MsgFlags::PEEK)?)
    }

    /// O_NONBLOCK: sends and receives say `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        Ok(self.0.set_nonblocking(nonblocking)?)
    }

    /// The Berkeley socket underneath, for the options std does not have.
    pub fn socket(&self) -> &Socket {
        &self.0
    }
}

impl From<Socket> for UdpSocket {
    /// A UDP socket as a [`UdpSocket`].
    fn from(socket: Socket) -> UdpSocket {
        UdpSocket(socket)
    }
}
