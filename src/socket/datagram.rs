//! sendto()/recvfrom(): UDP, one datagram per call, boundaries kept.

use std::net::SocketAddr;
use std::time::Instant;

use smoltcp::socket::udp;

use super::{Domain, Errno, Result, Socket, Type, autobind, entry, from_user_dgram, to_user, unspecified};
use crate::stack::SockState;

/// IP and UDP header bytes in front of a datagram's payload.
fn header_len(remote: &SocketAddr) -> usize {
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
pub(super) fn discard_unwanted(socket: &mut udp::Socket, domain: Domain, peer: Option<SocketAddr>) {
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

impl Socket {
    /// sendto(): sends one datagram to `addr` (binding an ephemeral port first if unbound).
    /// For TCP, `addr` is ignored and this is send(), as in Linux.
    ///
    /// EMSGSIZE if the datagram does not fit in one IP packet on the link: ustack does not
    /// fragment (Linux would, up to 65,507 bytes). Blocks while the send buffer is full.
    pub fn send_to(&self, buf: &[u8], addr: SocketAddr) -> Result<usize> {
        let mut core = self.lock()?;
        if entry(&mut core, self.id)?.ty == Type::Stream {
            drop(core);
            return self.send(buf);
        }
        drop(core);
        self.udp_send_to(buf, addr)
    }

    pub(super) fn udp_send_to(&self, buf: &[u8], addr: SocketAddr) -> Result<usize> {
        let mut core = self.lock()?;
        let e = entry(&mut core, self.id)?;
        let remote = from_user_dgram(e.domain, addr)?;
        let deadline = e.write_timeout.map(|t| Instant::now() + t);
        if remote.port() == 0 || remote.ip().is_unspecified() {
            return Err(Errno::EINVAL);
        }
        if e.shut_write {
            return Err(Errno::EPIPE);
        }
        let max = core.mtu.saturating_sub(header_len(&remote)).min(core.config.udp_buffer);
        if buf.len() > max {
            return Err(Errno::EMSGSIZE);
        }
        autobind(&mut core, self.id)?;
        loop {
            let e = entry(&mut core, self.id)?;
            let nonblocking = e.nonblocking;
            let SockState::Udp { handle, .. } = e.state else { return Err(Errno::EINVAL) };
            let socket = core.udp_mut(handle);
            match socket.send_slice(buf, (remote.ip(), remote.port())) {
                Ok(()) => {
                    self.shared.wake();
                    return Ok(buf.len());
                }
                Err(udp::SendError::BufferFull) => {}
                Err(udp::SendError::Unaddressable) => return Err(Errno::ENETUNREACH),
            }
            if nonblocking {
                return Err(Errno::EAGAIN);
            }
            let (next, timed_out) = self.wait(core, deadline)?;
            core = next;
            if timed_out {
                return Err(Errno::EAGAIN);
            }
        }
    }

    /// recvfrom(): the next datagram and its sender. A datagram longer than `buf` is cut
    /// to fit and the rest discarded, as in Linux. On a connected UDP socket, datagrams
    /// from other senders are dropped. For TCP, this is recv() with the peer's address.
    pub fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr)> {
        let mut core = self.lock()?;
        let e = entry(&mut core, self.id)?;
        if e.ty == Type::Stream {
            let domain = e.domain;
            drop(core);
            let n = self.recv(buf)?;
            // Linux gives no address for TCP; the peer's, while there is one, is more use.
            // After a reset or a full close there is none: the wildcard, not ENOTCONN.
            let peer = self.peer_addr().unwrap_or_else(|_| SocketAddr::new(unspecified(domain), 0));
            return Ok((n, peer));
        }
        let deadline = e.read_timeout.map(|t| Instant::now() + t);
        loop {
            let e = entry(&mut core, self.id)?;
            let (domain, nonblocking) = (e.domain, e.nonblocking);
            let SockState::Udp { handle, peer } = e.state else {
                // Unbound: nothing can arrive yet.
                if nonblocking {
                    return Err(Errno::EAGAIN);
                }
                let (next, timed_out) = self.wait(core, deadline)?;
                core = next;
                if timed_out {
                    return Err(Errno::EAGAIN);
                }
                continue;
            };
            let shut_read = e.shut_read;
            let socket = core.udp_receiving(handle);
            discard_unwanted(socket, domain, peer);
            if let Ok((data, meta)) = socket.recv() {
                let from = SocketAddr::new(meta.endpoint.addr.into(), meta.endpoint.port);
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                return Ok((n, to_user(domain, from)));
            }
            // After shutdown(SHUT_RD), recv() returns 0 instead of waiting (datagrams that
            // still arrive are returned, as in Linux).
            if shut_read {
                let from = peer.unwrap_or_else(|| SocketAddr::new(unspecified(domain), 0));
                return Ok((0, to_user(domain, from)));
            }
            if nonblocking {
                return Err(Errno::EAGAIN);
            }
            let (next, timed_out) = self.wait(core, deadline)?;
            core = next;
            if timed_out {
                return Err(Errno::EAGAIN);
            }
        }
    }
}
