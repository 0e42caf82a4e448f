//! Thin std::net-like wrappers over [`Socket`], for code that wants `Read`/`Write`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

use super::{Domain, Errno, Socket, Type};
use crate::stack::Stack;

fn domain_of(addr: &SocketAddr) -> Domain {
    if addr.is_ipv4() { Domain::Inet } else { Domain::Inet6 }
}

/// A TCP listener, like [`std::net::TcpListener`].
#[derive(Debug)]
pub struct TcpListener(Socket);

impl TcpListener {
    /// Binds and listens with backlog 128, setting SO_REUSEADDR first as std does on Unix.
    pub fn bind(stack: &Stack, addr: SocketAddr) -> Result<TcpListener, Errno> {
        Self::bind_with_backlog(stack, addr, 128)
    }

    /// Binds and listens with the given backlog.
    pub fn bind_with_backlog(stack: &Stack, addr: SocketAddr, backlog: u32) -> Result<TcpListener, Errno> {
        let socket = Socket::new(stack, domain_of(&addr), Type::Stream)?;
        socket.set_reuse_address(true)?;
        socket.bind(addr)?;
        socket.listen(backlog)?;
        Ok(TcpListener(socket))
    }

    /// The next established connection and its peer.
    pub fn accept(&self) -> Result<(TcpStream, SocketAddr), Errno> {
        self.0.accept().map(|(s, addr)| (TcpStream(s), addr))
    }

    pub fn local_addr(&self) -> Result<SocketAddr, Errno> {
        self.0.local_addr()
    }

    pub fn set_nonblocking(&self, nonblocking: bool) -> Result<(), Errno> {
        self.0.set_nonblocking(nonblocking)
    }

    /// The socket underneath.
    pub fn socket(&self) -> &Socket {
        &self.0
    }
}

/// A TCP connection, like [`std::net::TcpStream`].
#[derive(Debug)]
pub struct TcpStream(Socket);

impl TcpStream {
    /// Connects from an ephemeral port; waits for the handshake.
    pub fn connect(stack: &Stack, addr: SocketAddr) -> Result<TcpStream, Errno> {
        let socket = Socket::new(stack, domain_of(&addr), Type::Stream)?;
        socket.connect(addr)?;
        Ok(TcpStream(socket))
    }

    /// Connects, giving up with ETIMEDOUT after `timeout`.
    pub fn connect_timeout(stack: &Stack, addr: SocketAddr, timeout: Duration) -> Result<TcpStream, Errno> {
        let socket = Socket::new(stack, domain_of(&addr), Type::Stream)?;
        socket.connect_timeout(addr, timeout)?;
        Ok(TcpStream(socket))
    }

    /// Another handle to the same connection (dup), e.g. one thread reads while another writes.
    pub fn try_clone(&self) -> Result<TcpStream, Errno> {
        self.0.try_clone().map(TcpStream)
    }

    pub fn shutdown(&self, how: Shutdown) -> Result<(), Errno> {
        self.0.shutdown(how)
    }

    pub fn peer_addr(&self) -> Result<SocketAddr, Errno> {
        self.0.peer_addr()
    }

    pub fn local_addr(&self) -> Result<SocketAddr, Errno> {
        self.0.local_addr()
    }

    pub fn set_nonblocking(&self, nonblocking: bool) -> Result<(), Errno> {
        self.0.set_nonblocking(nonblocking)
    }

    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> Result<(), Errno> {
        self.0.set_read_timeout(timeout)
    }

    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> Result<(), Errno> {
        self.0.set_write_timeout(timeout)
    }

    /// The socket underneath.
    pub fn socket(&self) -> &Socket {
        &self.0
    }
}

impl Read for &TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(self.0.recv(buf)?)
    }
}

impl Write for &TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(self.0.send(buf)?)
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
}

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A UDP socket, like [`std::net::UdpSocket`].
#[derive(Debug)]
pub struct UdpSocket(Socket);

impl UdpSocket {
    pub fn bind(stack: &Stack, addr: SocketAddr) -> Result<UdpSocket, Errno> {
        let socket = Socket::new(stack, domain_of(&addr), Type::Dgram)?;
        socket.bind(addr)?;
        Ok(UdpSocket(socket))
    }

    pub fn send_to(&self, buf: &[u8], addr: SocketAddr) -> Result<usize, Errno> {
        self.0.send_to(buf, addr)
    }

    pub fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr), Errno> {
        self.0.recv_from(buf)
    }

    pub fn connect(&self, addr: SocketAddr) -> Result<(), Errno> {
        self.0.connect(addr)
    }

    pub fn send(&self, buf: &[u8]) -> Result<usize, Errno> {
        self.0.send(buf)
    }

    pub fn recv(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        self.0.recv(buf)
    }

    pub fn try_clone(&self) -> Result<UdpSocket, Errno> {
        self.0.try_clone().map(UdpSocket)
    }

    pub fn local_addr(&self) -> Result<SocketAddr, Errno> {
        self.0.local_addr()
    }

    pub fn set_nonblocking(&self, nonblocking: bool) -> Result<(), Errno> {
        self.0.set_nonblocking(nonblocking)
    }

    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> Result<(), Errno> {
        self.0.set_read_timeout(timeout)
    }

    /// The socket underneath.
    pub fn socket(&self) -> &Socket {
        &self.0
    }
}
