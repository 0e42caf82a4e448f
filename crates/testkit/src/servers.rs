//! Echo (RFC 862) and discard (RFC 863), written once for every server that runs them:
//! `ustack serve`, the replay's servers, the bench's ustack and kernel servers, the tests'.
//!
//! [`serve_stream`] serves one TCP connection, [`serve_datagrams`] one bound UDP socket.
//! Both are generic over the socket ([`Stream`], [`Datagrams`]: ustack's [`Socket`] and
//! [`TcpStream`]/[`UdpSocket`], and the kernel's `std::net` sockets) and steered by a
//! [`Watch`]: it sees what was read, says whether to stop, whether to wait on through a
//! timeout (`SO_RCVTIMEO`, `SO_SNDTIMEO`), and whether a datagram whose reply could not
//! be sent is lost (UDP's normal) or ends the server.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};

use ustack::{Errno, Socket, TcpStream, UdpSocket};

/// Bytes read at a time: a few segments' worth, or any datagram.
pub const BUF: usize = 64 * 1024;

/// What a server does with what it receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum App {
    /// Echo (RFC 862): everything back; for TCP, FIN after the client's FIN.
    Echo,
    /// Discard (RFC 863): reads and drops; for TCP, FIN after the client's FIN.
    Discard,
}

impl fmt::Display for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            App::Echo => "echo",
            App::Discard => "discard",
        })
    }
}

/// The socket call that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Recv,
    Send,
    Shutdown,
    RecvFrom,
    SendTo,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Call::Recv => "recv()",
            Call::Send => "send()",
            Call::Shutdown => "shutdown()",
            Call::RecvFrom => "recvfrom()",
            Call::SendTo => "sendto()",
        })
    }
}

/// How serving ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending<E> {
    /// The client closed its side (recv() gave 0) and ours was closed after it (TCP only).
    Closed,
    /// The [`Watch`] said to stop.
    Stopped,
    /// A call failed (a timeout too, unless the watch waits through timeouts).
    Failed(Call, E),
}

/// How a TCP connection's serving ended.
#[derive(Debug)]
pub struct StreamEnd<E> {
    /// Bytes received (and, for echo, sent back).
    pub bytes: u64,
    /// Why it ended.
    pub ending: Ending<E>,
}

/// What a server tells its owner, and asks it. Every method has a default: the unit
/// type `()` is a watch that never stops, fails on a timeout and ends on a lost reply.
pub trait Watch<E> {
    /// What one recv() on a connection read (before it is echoed).
    fn received(&mut self, _data: &[u8]) {}

    /// One datagram and its sender (before it is echoed).
    fn received_from(&mut self, _from: SocketAddr, _data: &[u8]) {}

    /// Whether to stop: asked before each datagram is waited for, and whenever a call
    /// times out.
    fn stopped(&self) -> bool {
        false
    }

    /// Whether a call that timed out (and was not told to stop) is made again, or ends
    /// the server as failed.
    fn waits_through_timeouts(&self) -> bool {
        false
    }

    /// A datagram's reply could not be sent: whether to go on (that one is lost) or end
    /// the server with the error.
    fn reply_failed(&mut self, _to: SocketAddr, _error: &E) -> bool {
        false
    }
}

impl<E> Watch<E> for () {}

/// A watch for a test that knows how many datagrams will come: the server stops after
/// that many; a timeout before then fails it.
#[derive(Debug)]
pub struct StopAfter {
    /// Datagrams still to come.
    pub left: usize,
}

impl<E> Watch<E> for StopAfter {
    fn received_from(&mut self, _from: SocketAddr, _data: &[u8]) {
        self.left = self.left.saturating_sub(1);
    }

    fn stopped(&self) -> bool {
        self.left == 0
    }
}

/// A connected TCP socket a server can serve.
pub trait Stream {
    /// What its calls fail with.
    type Error;
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error>;
    fn send(&mut self, data: &[u8]) -> Result<usize, Self::Error>;
    /// Sends FIN after what is queued.
    fn shutdown_write(&mut self) -> Result<(), Self::Error>;
    /// What kind of error `error` is: a timeout (`WouldBlock`, `TimedOut`), a socket no
    /// longer connected (`NotConnected`), ...
    fn kind(error: &Self::Error) -> io::ErrorKind;
}

/// A bound UDP socket a server can serve.
pub trait Datagrams {
    /// What its calls fail with.
    type Error;
    fn recv_from(&mut self, buf: &mut [u8]) -> Result<(usize, SocketAddr), Self::Error>;
    fn send_to(&mut self, data: &[u8], to: SocketAddr) -> Result<usize, Self::Error>;
    /// As [`Stream::kind`].
    fn kind(error: &Self::Error) -> io::ErrorKind;
}

fn is_timeout(kind: io::ErrorKind) -> bool {
    matches!(kind, io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// What to do after `call` failed with `error`: try again (a timeout the watch waits
/// through), or end as the watch and the error say.
fn after_failure<E>(call: Call, error: E, kind: io::ErrorKind, watch: &impl Watch<E>) -> Option<Ending<E>> {
    if !is_timeout(kind) {
        return Some(Ending::Failed(call, error));
    }
    if watch.stopped() {
        Some(Ending::Stopped)
    } else if watch.waits_through_timeouts() {
        None
    } else {
        Some(Ending::Failed(call, error))
    }
}

/// Serves one connection with `app` until the client closes its side (recv() gives 0),
/// then closes ours: echo sends its FIN after the last echoed byte. A socket no longer
/// connected by then (the client reset it) is no failure of the close.
pub fn serve_stream<S: Stream>(app: App, conn: &mut S, watch: &mut impl Watch<S::Error>) -> StreamEnd<S::Error> {
    let mut buf = vec![0; BUF];
    let mut bytes = 0;
    let end = |bytes, ending| StreamEnd { bytes, ending };
    loop {
        let n = match conn.recv(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let kind = S::kind(&e);
                match after_failure(Call::Recv, e, kind, watch) {
                    Some(ending) => return end(bytes, ending),
                    None => continue,
                }
            }
        };
        bytes += n as u64;
        watch.received(&buf[..n]);
        if app == App::Echo {
            let mut sent = 0;
            while sent < n {
                match conn.send(&buf[sent..n]) {
                    Ok(k) => sent += k,
                    Err(e) => {
                        let kind = S::kind(&e);
                        if let Some(ending) = after_failure(Call::Send, e, kind, watch) {
                            return end(bytes, ending);
                        }
                    }
                }
            }
        }
    }
    match conn.shutdown_write() {
        Err(e) if S::kind(&e) != io::ErrorKind::NotConnected => end(bytes, Ending::Failed(Call::Shutdown, e)),
        _ => end(bytes, Ending::Closed),
    }
}

/// Serves a bound UDP socket with `app` until the watch says stop or a call fails:
/// echo answers every datagram to its sender, whole.
pub fn serve_datagrams<D: Datagrams>(app: App, socket: &mut D, watch: &mut impl Watch<D::Error>) -> Ending<D::Error> {
    let mut buf = vec![0; BUF];
    loop {
        if watch.stopped() {
            return Ending::Stopped;
        }
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) => {
                let kind = D::kind(&e);
                match after_failure(Call::RecvFrom, e, kind, watch) {
                    Some(ending) => return ending,
                    None => continue,
                }
            }
        };
        watch.received_from(from, &buf[..n]);
        if app == App::Echo
            && let Err(e) = socket.send_to(&buf[..n], from)
            && !watch.reply_failed(from, &e)
        {
            return Ending::Failed(Call::SendTo, e);
        }
    }
}

fn errno_kind(errno: &Errno) -> io::ErrorKind {
    io::Error::from(*errno).kind()
}

impl Stream for Socket {
    type Error = Errno;
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, Errno> {
        Socket::recv(self, buf)
    }
    fn send(&mut self, data: &[u8]) -> Result<usize, Errno> {
        Socket::send(self, data)
    }
    fn shutdown_write(&mut self) -> Result<(), Errno> {
        self.shutdown(Shutdown::Write)
    }
    fn kind(error: &Errno) -> io::ErrorKind {
        errno_kind(error)
    }
}

impl Datagrams for Socket {
    type Error = Errno;
    fn recv_from(&mut self, buf: &mut [u8]) -> Result<(usize, SocketAddr), Errno> {
        Socket::recv_from(self, buf)
    }
    fn send_to(&mut self, data: &[u8], to: SocketAddr) -> Result<usize, Errno> {
        Socket::send_to(self, data, to)
    }
    fn kind(error: &Errno) -> io::ErrorKind {
        errno_kind(error)
    }
}

impl Stream for TcpStream {
    type Error = Errno;
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, Errno> {
        self.socket().recv(buf)
    }
    fn send(&mut self, data: &[u8]) -> Result<usize, Errno> {
        self.socket().send(data)
    }
    fn shutdown_write(&mut self) -> Result<(), Errno> {
        self.socket().shutdown(Shutdown::Write)
    }
    fn kind(error: &Errno) -> io::ErrorKind {
        errno_kind(error)
    }
}

impl Datagrams for UdpSocket {
    type Error = Errno;
    fn recv_from(&mut self, buf: &mut [u8]) -> Result<(usize, SocketAddr), Errno> {
        self.socket().recv_from(buf)
    }
    fn send_to(&mut self, data: &[u8], to: SocketAddr) -> Result<usize, Errno> {
        self.socket().send_to(data, to)
    }
    fn kind(error: &Errno) -> io::ErrorKind {
        errno_kind(error)
    }
}

impl Stream for std::net::TcpStream {
    type Error = io::Error;
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read(buf)
    }
    fn send(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write(data)
    }
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
    fn kind(error: &io::Error) -> io::ErrorKind {
        error.kind()
    }
}

impl Datagrams for std::net::UdpSocket {
    type Error = io::Error;
    fn recv_from(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        std::net::UdpSocket::recv_from(self, buf)
    }
    fn send_to(&mut self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        std::net::UdpSocket::send_to(self, data, to)
    }
    fn kind(error: &io::Error) -> io::ErrorKind {
        error.kind()
    }
}
