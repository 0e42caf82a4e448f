//! The server end of a scenario, ustack or the kernel, behind one interface, so each
//! scenario is written once and run against both. Clients are always kernel sockets.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsFd;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::lab::{TUN_STACK, VETH_SERVER};
use super::os;
use ustack::sys::NetNs;
use ustack::{Stack, TcpListener, TcpStream, UdpSocket};
use ustack_testkit::servers;

/// How long a blocking accept() or recv() on the server side waits before looking whether
/// it should stop: short enough that stopping is quick, long enough to cost nothing.
pub const STOP_CHECK: Duration = Duration::from_millis(50);

/// How long any one read or write may block before the measurement is declared failed:
/// a stall must fail the scenario, never hang the bench.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the server end runs.
#[derive(Clone, Copy)]
pub enum Server<'a> {
    /// ustack, in this process, at [`TUN_STACK`].
    Ustack(&'a Stack),
    /// The kernel, in the veth lab's server namespace, at [`VETH_SERVER`].
    Kernel(&'a NetNs),
}

impl Server<'_> {
    /// The server's address.
    pub fn ip(&self) -> Ipv4Addr {
        match self {
            Server::Ustack(_) => TUN_STACK,
            Server::Kernel(_) => VETH_SERVER,
        }
    }

    /// `ip():port`.
    pub fn addr(&self, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(self.ip(), port)
    }

    /// A TCP listener on `port` with `backlog`; its accept() gives up after [`STOP_CHECK`].
    /// A kernel listener's connections use [`KERNEL_CONGESTION`].
    pub fn listen(&self, port: u16, backlog: u32) -> io::Result<Box<dyn Listener>> {
        let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
        match self {
            Server::Ustack(stack) => {
                let listener = TcpListener::bind_with_backlog(stack, any, backlog)?;
                listener.socket().set_read_timeout(Some(STOP_CHECK))?;
                Ok(Box::new(listener))
            }
            Server::Kernel(ns) => {
                // Sockets belong to the namespace they are made in and then work from any thread.
                let listener = ns.run(|| std::net::TcpListener::bind(any))??;
                os::set_backlog(&listener, backlog)?;
                os::set_accept_timeout(&listener, STOP_CHECK)?;
                // Accepted connections take the listener's.
                os::set_congestion(&listener, KERNEL_CONGESTION)?;
                Ok(Box::new(listener))
            }
        }
    }

    /// A UDP socket bound to `port`; its recv_from() times out after [`STOP_CHECK`].
    pub fn udp(&self, port: u16) -> io::Result<Box<dyn Datagram>> {
        let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
        match self {
            Server::Ustack(stack) => {
                let socket = UdpSocket::bind(stack, any)?;
                socket.set_read_timeout(Some(STOP_CHECK))?;
                Ok(Box::new(socket))
            }
            Server::Kernel(ns) => {
                let socket = ns.run(|| std::net::UdpSocket::bind(any))??;
                socket.set_read_timeout(Some(STOP_CHECK))?;
                Ok(Box::new(socket))
            }
        }
    }
}

/// The next connection on `listener`, waiting at most `limit` for one.
pub fn accept_within(listener: &dyn Listener, limit: Duration) -> io::Result<Box<dyn Stream>> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some((stream, _)) = listener.accept()? {
            return Ok(stream);
        }
        if std::time::Instant::now() > deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no connection to accept"));
        }
    }
}

/// A listening TCP socket.
pub trait Listener: Send + Sync {
    /// The next connection, with read and write timeouts of [`IO_TIMEOUT`] and the peer's
    /// port; `None` if none came within [`STOP_CHECK`].
    fn accept(&self) -> io::Result<Option<(Box<dyn Stream>, u16)>>;
}

/// A connected TCP socket.
pub trait Stream: Read + Write + Send {
    /// Sends FIN after what is queued.
    fn shutdown_write(&self) -> io::Result<()>;

    /// Bytes the kernel resent on this connection; 0 for ustack's (which counts its own).
    fn resent_bytes(&self) -> u64 {
        0
    }
}

/// A bound UDP socket.
pub trait Datagram: Send + Sync {
    /// The next datagram and its sender; an error of kind `WouldBlock` if none came
    /// within [`STOP_CHECK`].
    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
    fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize>;
}

/// The test kit's echo server runs on either end.
impl servers::Stream for Box<dyn Stream> {
    type Error = io::Error;
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read(buf)
    }
    fn send(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write(data)
    }
    fn shutdown_write(&mut self) -> io::Result<()> {
        Stream::shutdown_write(&**self)
    }
    fn kind(error: &io::Error) -> io::ErrorKind {
        error.kind()
    }
}

/// The test kit's echo server runs on either end.
impl servers::Datagrams for &dyn Datagram {
    type Error = io::Error;
    fn recv_from(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        Datagram::recv_from(*self, buf)
    }
    fn send_to(&mut self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        Datagram::send_to(*self, data, to)
    }
    fn kind(error: &io::Error) -> io::ErrorKind {
        error.kind()
    }
}

fn timed_out(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

impl Listener for TcpListener {
    fn accept(&self) -> io::Result<Option<(Box<dyn Stream>, u16)>> {
        match TcpListener::accept(self) {
            Ok((stream, peer)) => {
                stream.set_read_timeout(Some(IO_TIMEOUT))?;
                stream.set_write_timeout(Some(IO_TIMEOUT))?;
                Ok(Some((Box::new(stream), peer.port())))
            }
            Err(e) => {
                if timed_out(&e) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }
}

impl Stream for TcpStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

impl Datagram for UdpSocket {
    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        UdpSocket::recv_from(self, buf)
    }

    fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        UdpSocket::send_to(self, buf, to)
    }
}

impl Listener for std::net::TcpListener {
    fn accept(&self) -> io::Result<Option<(Box<dyn Stream>, u16)>> {
        match std::net::TcpListener::accept(self) {
            Ok((stream, peer)) => {
                stream.set_read_timeout(Some(IO_TIMEOUT))?;
                stream.set_write_timeout(Some(IO_TIMEOUT))?;
                Ok(Some((Box::new(stream), peer.port())))
            }
            Err(e) if timed_out(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Stream for std::net::TcpStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }

    fn resent_bytes(&self) -> u64 {
        os::TcpInfo::of(self).bytes_retrans
    }
}

impl Datagram for std::net::UdpSocket {
    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        std::net::UdpSocket::recv_from(self, buf)
    }

    fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        std::net::UdpSocket::send_to(self, buf, to)
    }
}

/// The congestion control of every kernel TCP socket that moves data in the bench: CUBIC,
/// Linux's default and ustack's, set with `TCP_CONGESTION` whatever this machine's default
/// is. Some machines (this bench's among them) default to BBR, whose pacing sets the pace
/// of a bulk transfer on a path this short: the kernel's own over veth moved 18–26 Gbit/s
/// with BBR and 58–78 with CUBIC (BENCHMARKS.md §30), and a ratio against it would say
/// more about the machine's setting than about ustack.
pub const KERNEL_CONGESTION: &[u8; 5] = b"cubic";

/// A kernel client connection from the calling thread's namespace, with read and write
/// timeouts of [`IO_TIMEOUT`] and [`KERNEL_CONGESTION`] from its SYN on. (Set after the
/// handshake, the machine's default would already have run: BBR turns the socket's pacing
/// on, and a switch to CUBIC leaves it on.)
pub fn connect(addr: SocketAddrV4) -> io::Result<std::net::TcpStream> {
    let stream = os::start_connect_with(addr, |fd| os::set_congestion(fd, KERNEL_CONGESTION))?;
    let mut writable = [PollFd::new(stream.as_fd(), PollFlags::POLLOUT)];
    let timeout = PollTimeout::try_from(IO_TIMEOUT.as_millis() as i32).unwrap_or(PollTimeout::MAX);
    loop {
        match nix::poll::poll(&mut writable, timeout) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::TimedOut, format!("connect to {addr}: no answer"))),
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// Joins a scenario thread: its error, or a panic turned into one.
pub fn join<T>(handle: std::thread::JoinHandle<io::Result<T>>) -> io::Result<T> {
    handle.join().unwrap_or_else(|_| Err(io::Error::other("a bench thread panicked")))
}

/// Joins a scoped scenario thread: its error, or a panic turned into one.
pub fn join_scoped<T>(handle: std::thread::ScopedJoinHandle<'_, io::Result<T>>) -> io::Result<T> {
    handle.join().unwrap_or_else(|_| Err(io::Error::other("a bench thread panicked")))
}
