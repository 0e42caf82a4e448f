//! sendto()/recvfrom(): UDP, one datagram per call, boundaries kept.

use std::net::SocketAddr;
use std::time::Instant;

use smoltcp::socket::udp;

use super::{autobind, entry, from_user, to_user, Errno, Result, Socket, Type};
use crate::stack::SockState;

/// IP and UDP header bytes in front of a datagram's payload.
fn header_len(remote: &SocketAddr) -> usize {
    if remote.is_ipv4() { 20 + 8 } else { 40 + 8 }
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
        let remote = from_user(e.domain, addr)?;
        let deadline = e.write_timeout.map(|t| Instant::now() + t);
        if remote.port() == 0 || remote.ip().is_unspecified() {
            return Err(Errno::EINVAL);
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
            let socket = core.sockets.get_mut::<udp::Socket>(handle);
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
            drop(core);
            let n = self.recv(buf)?;
            return Ok((n, self.peer_addr()?));
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
            let socket = core.sockets.get_mut::<udp::Socket>(handle);
            while let Ok((data, meta)) = socket.recv() {
                let from = SocketAddr::new(meta.endpoint.addr.into(), meta.endpoint.port);
                if peer.is_some_and(|p| p != from) {
                    continue;
                }
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                return Ok((n, to_user(domain, from)));
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
