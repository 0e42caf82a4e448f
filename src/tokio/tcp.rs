//! TCP: a listener whose `accept()` is a future, and a stream with tokio's I/O traits.

use std::future::poll_fn;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ::tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::domain_of;
use crate::engine::ConnectionInfo;
use crate::errno::Errno;
use crate::socket::{Socket, Type};
use crate::stack::{Interest, Stack};

/// A TCP listener, like `tokio::net::TcpListener`.
#[derive(Debug)]
pub struct TcpListener {
    socket: Socket,
}

impl TcpListener {
    /// Binds `addr` and listens (backlog 128), with SO_REUSEADDR as tokio sets it. Not
    /// async: nothing here waits.
    pub fn bind(stack: &Stack, addr: SocketAddr) -> io::Result<TcpListener> {
        Self::bind_with_backlog(stack, addr, 128)
    }

    /// As [`TcpListener::bind`], with listen()'s `backlog`.
    pub fn bind_with_backlog(stack: &Stack, addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
        let socket = Socket::new(stack, domain_of(&addr), Type::Stream)?;
        socket.set_reuse_address(true)?;
        socket.bind(addr)?;
        socket.listen(backlog)?;
        Ok(TcpListener { socket })
    }

    /// The next established connection and its peer's address.
    ///
    /// Cancel safe: a connection leaves the accept queue only in the poll that returns
    /// it, so if this future is dropped before it completes, no connection is lost; the
    /// next `accept()` gets it.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// [`TcpListener::accept`] as a poll: Pending (the task is woken when a connection may
    /// be waiting) or the connection.
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(TcpStream, SocketAddr)>> {
        self.socket.poll_accept(cx).map(|r| r.map(|(socket, peer)| (TcpStream { socket }, peer)).map_err(Into::into))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    /// The socket underneath (its blocking calls block the thread: not for async code).
    pub fn socket(&self) -> &Socket {
        &self.socket
    }
}

/// A TCP connection, like `tokio::net::TcpStream`: `AsyncRead` and `AsyncWrite`, and
/// halves for reading and writing from two tasks ([`TcpStream::split`],
/// [`TcpStream::into_split`]). Dropping it closes the connection.
#[derive(Debug)]
pub struct TcpStream {
    socket: Socket,
}

impl TcpStream {
    /// Connects to `addr` from an ephemeral port and waits for the handshake: Ok once
    /// established, ECONNREFUSED on a RST, ETIMEDOUT after the stack's connect timeout.
    ///
    /// Not cancel safe, as tokio's is not: dropping the future abandons the attempt.
    pub async fn connect(stack: &Stack, addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = Socket::new(stack, domain_of(&addr), Type::Stream)?;
        match socket.start_connect(addr) {
            Ok(()) => {}
            Err(Errno::EINPROGRESS) => poll_fn(|cx| socket.poll_connected(cx)).await?,
            Err(e) => return Err(e.into()),
        }
        Ok(TcpStream { socket })
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.socket.peer_addr()?)
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    /// What ustack recorded about the connection: its 5-tuple, the states it went
    /// through (timed from the first SYN), the handshake's round trip.
    pub fn connection_info(&self) -> Option<ConnectionInfo> {
        self.socket.connection_info()
    }

    /// Waits until the stream may be read: data, end of stream, or an error. Cancel safe.
    pub async fn readable(&self) -> io::Result<()> {
        poll_fn(|cx| self.poll_read_ready(cx)).await
    }

    /// Waits until the stream may be written: room in the send buffer, or an error.
    /// Cancel safe.
    pub async fn writable(&self) -> io::Result<()> {
        poll_fn(|cx| self.poll_write_ready(cx)).await
    }

    /// [`TcpStream::readable`] as a poll.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.socket.poll_ready(cx, Interest::Read).map_err(Into::into)
    }

    /// [`TcpStream::writable`] as a poll.
    pub fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.socket.poll_ready(cx, Interest::Write).map_err(Into::into)
    }

    /// Reads what is there without waiting: `WouldBlock` if nothing is; 0 at end of stream.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(self.socket.try_call(|l| l.engine.recv(self.socket.id(), buf))?)
    }

    /// Queues what fits of `buf` without waiting: `WouldBlock` if nothing fits.
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        Ok(self.socket.try_call(|l| l.engine.send(self.socket.id(), buf, false))?)
    }

    /// shutdown(): see [`Socket::shutdown`]. (`AsyncWriteExt::shutdown` is `Write`.)
    pub fn shutdown_std(&self, how: Shutdown) -> io::Result<()> {
        Ok(self.socket.shutdown(how)?)
    }

    /// A read half and a write half borrowing the stream, to read and write at once (in
    /// one task's `join!`/`select!`, or two scoped tasks).
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        (ReadHalf(self), WriteHalf(self))
    }

    /// An owned read half and write half, to move into two tasks. Dropping the write half
    /// shuts the write direction down (sends FIN), as tokio's does; the connection closes
    /// when both are gone. [`OwnedReadHalf::reunite`] puts them back together.
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        let stream = Arc::new(self);
        (OwnedReadHalf(stream.clone()), OwnedWriteHalf { stream, shutdown_on_drop: true })
    }

    /// The socket underneath (its blocking calls block the thread: not for async code).
    pub fn socket(&self) -> &Socket {
        &self.socket
    }

    /// One read: what is there, or Pending until the stack touches the connection.
    /// Cancel safe: bytes are taken only in the poll that returns them.
    fn read_once(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        // Nothing to read into: done at once, as tokio's streams are (the engine would
        // answer 0, which is end of stream).
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let id = self.socket.id();
        let unfilled = buf.initialize_unfilled();
        match self.socket.poll_call(cx, Interest::Read, |l| l.engine.recv(id, unfilled)) {
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Pending => Poll::Pending,
        }
    }

    /// One write: queues what fits, or Pending while the send buffer is full.
    fn write_once(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let id = self.socket.id();
        self.socket.poll_call(cx, Interest::Write, |l| l.engine.send(id, buf, false)).map_err(Into::into)
    }

    /// FIN once queued data is sent; the stream can still be read.
    fn shutdown_write(&self) -> Poll<io::Result<()>> {
        Poll::Ready(self.socket.shutdown(Shutdown::Write).map_err(Into::into))
    }
}

/// Reading is cancel safe: bytes leave the receive buffer only in the poll that returns them.
impl AsyncRead for TcpStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.read_once(cx, buf)
    }
}

/// A write completes when the stack has queued the bytes (as a kernel socket's does);
/// there is nothing to flush. Shutdown sends FIN.
impl AsyncWrite for TcpStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.write_once(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shutdown_write()
    }
}

/// The read half of a borrowed [`TcpStream`] ([`TcpStream::split`]).
#[derive(Debug)]
pub struct ReadHalf<'a>(&'a TcpStream);

/// The write half of a borrowed [`TcpStream`] ([`TcpStream::split`]). Its shutdown sends FIN.
#[derive(Debug)]
pub struct WriteHalf<'a>(&'a TcpStream);

/// The read half of a [`TcpStream`] moved into two ([`TcpStream::into_split`]).
#[derive(Debug)]
pub struct OwnedReadHalf(Arc<TcpStream>);

/// The write half of a [`TcpStream`] moved into two ([`TcpStream::into_split`]). Dropping
/// it sends FIN, as tokio's does.
#[derive(Debug)]
pub struct OwnedWriteHalf {
    stream: Arc<TcpStream>,
    shutdown_on_drop: bool,
}

/// [`OwnedReadHalf::reunite`] was given halves of two different streams; here they are back.
#[derive(Debug)]
pub struct ReuniteError(pub OwnedReadHalf, pub OwnedWriteHalf);

impl std::fmt::Display for ReuniteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("tried to reunite halves that are not from the same stream")
    }
}

impl std::error::Error for ReuniteError {}

impl OwnedReadHalf {
    /// The stream again, from its two halves; an error if they are of different streams.
    pub fn reunite(self, mut other: OwnedWriteHalf) -> Result<TcpStream, ReuniteError> {
        if !Arc::ptr_eq(&self.0, &other.stream) {
            return Err(ReuniteError(self, other));
        }
        other.shutdown_on_drop = false;
        let stream = other.stream.clone();
        drop(other);
        drop(self);
        Ok(Arc::into_inner(stream).expect("both halves are gone"))
    }
}

/// The stream both halves borrow (peer address, readiness, connection info).
impl AsRef<TcpStream> for ReadHalf<'_> {
    fn as_ref(&self) -> &TcpStream {
        self.0
    }
}

/// The stream both halves borrow.
impl AsRef<TcpStream> for WriteHalf<'_> {
    fn as_ref(&self) -> &TcpStream {
        self.0
    }
}

/// The stream both halves share (peer address, readiness, connection info).
impl AsRef<TcpStream> for OwnedReadHalf {
    fn as_ref(&self) -> &TcpStream {
        &self.0
    }
}

/// The stream both halves share.
impl AsRef<TcpStream> for OwnedWriteHalf {
    fn as_ref(&self) -> &TcpStream {
        &self.stream
    }
}

impl Drop for OwnedWriteHalf {
    fn drop(&mut self) {
        if self.shutdown_on_drop {
            let _ = self.stream.socket.shutdown(Shutdown::Write);
        }
    }
}

impl AsyncRead for ReadHalf<'_> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.0.read_once(cx, buf)
    }
}

impl AsyncRead for OwnedReadHalf {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.0.read_once(cx, buf)
    }
}

impl AsyncWrite for WriteHalf<'_> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.0.write_once(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.shutdown_write()
    }
}

impl AsyncWrite for OwnedWriteHalf {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.stream.write_once(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream.shutdown_write()
    }
}
