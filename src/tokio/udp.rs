//! UDP: datagrams sent and received as futures.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use super::domain_of;
use crate::socket::{MsgFlags, Socket, Type};
use crate::stack::{Interest, Stack};

/// A UDP socket, like `tokio::net::UdpSocket`. Its methods take `&self`: several tasks
/// may send and receive on one socket (share it in an `Arc`).
#[derive(Debug)]
pub struct UdpSocket {
    socket: Socket,
}

impl UdpSocket {
    /// Binds `addr` (port 0: an ephemeral port). Not async: nothing here waits.
    pub fn bind(stack: &Stack, addr: SocketAddr) -> io::Result<UdpSocket> {
        let socket = Socket::new(stack, domain_of(&addr), Type::Dgram)?;
        socket.bind(addr)?;
        Ok(UdpSocket { socket })
    }

    /// Fixes the peer that [`UdpSocket::send`] sends to and [`UdpSocket::recv`] receives
    /// from; datagrams from others are dropped. Not async: nothing here waits.
    pub fn connect(&self, addr: SocketAddr) -> io::Result<()> {
        Ok(self.socket.connect(addr)?)
    }

    /// Sends one datagram to `addr`, waiting while the send buffer has no room for it.
    ///
    /// Cancel safe: the datagram is queued whole in the poll that completes, or not at all.
    pub async fn send_to(&self, buf: &[u8], addr: SocketAddr) -> io::Result<usize> {
        poll_fn(|cx| self.poll_send_to(cx, buf, addr)).await
    }

    /// Waits for the next datagram; returns its length (cut to `buf`, as in Linux) and its
    /// sender.
    ///
    /// Cancel safe: a datagram leaves the receive buffer only in the poll that returns it,
    /// so if this future is dropped before it completes, no datagram is lost.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        poll_fn(|cx| self.poll_recv_from(cx, buf)).await
    }

    /// Sends one datagram to the connected peer. Cancel safe, as [`UdpSocket::send_to`].
    pub async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        poll_fn(|cx| {
            self.socket.poll_send_from_owner(cx, None, |engine, id| engine.send(id, buf, false)).map_err(Into::into)
        })
        .await
    }

    /// Waits for the next datagram from the connected peer. Cancel safe, as
    /// [`UdpSocket::recv_from`].
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| self.socket.poll_recv_any(cx, |engine, id| engine.recv(id, buf)).map_err(Into::into)).await
    }

    /// [`UdpSocket::send_to`] as a poll.
    pub fn poll_send_to(&self, cx: &mut Context<'_>, buf: &[u8], addr: SocketAddr) -> Poll<io::Result<usize>> {
        self.socket.poll_send_from_owner(cx, Some(addr), |engine, id| engine.send_to(id, buf, addr)).map_err(Into::into)
    }

    /// [`UdpSocket::recv_from`] as a poll.
    pub fn poll_recv_from(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<(usize, SocketAddr)>> {
        self.socket.poll_recv_any(cx, |engine, id| engine.recv_from(id, buf)).map_err(Into::into)
    }

    /// Sends without waiting: `WouldBlock` if the send buffer has no room.
    pub fn try_send_to(&self, buf: &[u8], addr: SocketAddr) -> io::Result<usize> {
        Ok(self.socket.send_to_flags(buf, addr, MsgFlags::DONTWAIT)?)
    }

    /// Receives without waiting: `WouldBlock` if no datagram is there.
    pub fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        Ok(self.socket.recv_from_flags(buf, MsgFlags::DONTWAIT)?)
    }

    /// Waits until a datagram is there (or the socket is shut down). Cancel safe.
    pub async fn readable(&self) -> io::Result<()> {
        poll_fn(|cx| self.socket.poll_ready(cx, Interest::Read).map_err(Into::into)).await
    }

    /// Waits until the send buffer has room. Cancel safe.
    pub async fn writable(&self) -> io::Result<()> {
        poll_fn(|cx| self.socket.poll_ready(cx, Interest::Write).map_err(Into::into)).await
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    /// The connected peer's address; `NotConnected` if there is none.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.socket.peer_addr()?)
    }

    /// The socket underneath (its blocking calls block the thread: not for async code).
    pub fn socket(&self) -> &Socket {
        &self.socket
    }
}
