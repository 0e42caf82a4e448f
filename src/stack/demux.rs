//! ustack's demux, in front of smoltcp: every arriving TCP segment is matched against the
//! 5-tuple table and the listeners, and the decision is made here, not inside smoltcp.
//!
//! - A segment of a known connection goes to it. A RST is noted, so the socket API can
//!   tell "refused"/"reset" from a timeout (smoltcp closes the socket either way).
//! - A SYN for a listener is admitted only if its queues have room (Linux's rules, see
//!   [`Listener`]); then a fresh smoltcp socket is made to take exactly that SYN. Otherwise
//!   the SYN is dropped, so the client retransmits, or with `reset_on_overflow` smoltcp
//!   answers RST (it finds no socket).
//! - Anything else (UDP, ICMP, a segment for no socket) goes to smoltcp, which delivers
//!   it to a bound UDP socket, answers pings, or replies RST / ICMP port unreachable.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpListenEndpoint, IpProtocol, IpVersion, Ipv4Packet, Ipv6Packet, TcpPacket};

use super::{Core, Entry, Owner, SockState};

/// A TCP connection's identity, from ustack's side: local and remote address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl fmt::Display for FiveTuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tcp {} <-> {}", self.local, self.remote)
    }
}

/// What happens to an arriving frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// smoltcp processes it.
    Deliver,
    /// A SYN admitted to a listener: smoltcp processes it with the new socket `handle`
    /// waiting for it in LISTEN.
    Admit(SocketHandle),
    /// Dropped before smoltcp sees it.
    Drop,
}

/// The header fields the demux needs from a TCP segment.
struct Segment {
    src: SocketAddr,
    dst: SocketAddr,
    syn: bool,
    ack: bool,
    rst: bool,
}

fn parse_tcp(frame: &[u8]) -> Option<Segment> {
    let (src, dst, payload): (IpAddr, IpAddr, &[u8]) = match IpVersion::of_packet(frame).ok()? {
        IpVersion::Ipv4 => {
            let ip = Ipv4Packet::new_checked(frame).ok()?;
            if ip.next_header() != IpProtocol::Tcp || ip.more_frags() || ip.frag_offset() != 0 {
                return None;
            }
            let header = usize::from(ip.header_len());
            let total = usize::from(ip.total_len()).min(frame.len());
            (IpAddr::V4(ip.src_addr()), IpAddr::V4(ip.dst_addr()), frame.get(header..total)?)
        }
        IpVersion::Ipv6 => {
            let ip = Ipv6Packet::new_checked(frame).ok()?;
            if ip.next_header() != IpProtocol::Tcp {
                return None;
            }
            let end = (40 + usize::from(ip.payload_len())).min(frame.len());
            (IpAddr::V6(ip.src_addr()), IpAddr::V6(ip.dst_addr()), frame.get(40..end)?)
        }
    };
    let tcp = TcpPacket::new_checked(payload).ok()?;
    Some(Segment {
        src: SocketAddr::new(src, tcp.src_port()),
        dst: SocketAddr::new(dst, tcp.dst_port()),
        syn: tcp.syn(),
        ack: tcp.ack(),
        rst: tcp.rst(),
    })
}

/// Whether a socket bound to `bound` receives packets sent to `dst`.
pub fn bound_matches(bound: IpAddr, dst: IpAddr) -> bool {
    match bound {
        IpAddr::V6(any) if any.is_unspecified() => true,
        IpAddr::V4(any) if any.is_unspecified() => dst.is_ipv4(),
        _ => bound == dst,
    }
}

/// The listener a SYN to `dst` goes to: one bound to exactly `dst` before a wildcard one.
fn find_listener(core: &Core, dst: SocketAddr) -> Option<super::SockId> {
    let ids = core.listeners.get(&dst.port())?;
    let bound = |id: &&super::SockId| core.entries.get(id).and_then(|e| e.local).map(|l| l.ip());
    ids.iter()
        .find(|id| bound(id) == Some(dst.ip()))
        .or_else(|| ids.iter().find(|id| bound(id).is_some_and(|b| bound_matches(b, dst.ip()))))
        .copied()
}

/// Decides what happens to `frame`, and does the ustack side of it.
pub fn admit(core: &mut Core, frame: &[u8]) -> Disposition {
    let Some(seg) = parse_tcp(frame) else { return Disposition::Deliver };
    if !core.is_local(seg.dst.ip()) {
        return Disposition::Deliver;
    }
    let tuple = FiveTuple { local: seg.dst, remote: seg.src };
    if let Some(&handle) = core.demux.get(&tuple) {
        let Some(conn) = core.conns.get_mut(&handle) else { return Disposition::Deliver };
        if seg.rst {
            conn.reset = true;
        }
        log::trace!(target: "ustack::demux", "{tuple}: to connection {handle} ({})", conn.state);
        // Linux drops the ACK that would complete a handshake while the accept queue is
        // full; the client's connection stays half-open here and the SYN-ACK is resent.
        if let (Owner::Listener(id), tcp::State::SynReceived) = (conn.owner, conn.state)
            && seg.ack && !seg.syn && !seg.rst
                && let Some(Entry { state: SockState::Listening(l), .. }) = core.entries.get_mut(&id)
                    && l.accept_queue_full() {
                        l.acks_dropped += 1;
                        log::info!(target: "ustack::backlog", "{tuple}: accept queue full ({}/{}), handshake ACK dropped", l.accept_queue.len(), l.backlog + 1);
                        return Disposition::Drop;
                    }
        return Disposition::Deliver;
    }
    if !seg.syn || seg.ack || seg.rst {
        log::debug!(target: "ustack::demux", "{tuple}: no connection, smoltcp answers RST");
        return Disposition::Deliver;
    }
    let Some(id) = find_listener(core, seg.dst) else {
        log::info!(target: "ustack::demux", "{tuple}: SYN to a port nobody listens on, answered with RST");
        return Disposition::Deliver;
    };
    let reset_on_overflow = core.config.reset_on_overflow;
    let Some(Entry { state: SockState::Listening(l), .. }) = core.entries.get_mut(&id) else {
        return Disposition::Deliver;
    };
    if l.accept_queue_full() || l.syn_queue_full() {
        let which = if l.accept_queue_full() { "accept queue" } else { "SYN queue" };
        if reset_on_overflow {
            l.syns_reset += 1;
            log::info!(target: "ustack::backlog", "{tuple}: {which} full, SYN answered with RST (reset on overflow)");
            return Disposition::Deliver;
        }
        l.syns_dropped += 1;
        log::info!(
            target: "ustack::backlog",
            "{tuple}: {which} full (accept {}/{}, SYN {}), SYN dropped ({} so far); the client will retransmit",
            l.accept_queue.len(),
            l.backlog + 1,
            l.syn_queue.len(),
            l.syns_dropped
        );
        return Disposition::Drop;
    }
    let mut socket = core.new_tcp_socket();
    let endpoint = IpListenEndpoint { addr: Some(seg.dst.ip().into()), port: seg.dst.port() };
    if socket.listen(endpoint).is_err() {
        return Disposition::Deliver;
    }
    let handle = core.sockets.add(socket);
    let Some(Entry { state: SockState::Listening(l), .. }) = core.entries.get_mut(&id) else { unreachable!() };
    l.syn_queue.push(handle);
    log::info!(
        target: "ustack::demux",
        "{tuple}: SYN to listener #{id}: SYN queue {}/{}, accept queue {}/{}",
        l.syn_queue.len(),
        (l.backlog).max(1),
        l.accept_queue.len(),
        l.backlog + 1
    );
    core.add_conn(handle, tuple, Owner::Listener(id), tcp::State::Listen);
    Disposition::Admit(handle)
}

/// After smoltcp processed an admitted SYN: if it rejected it (a bad checksum, say), the
/// socket made for it is still listening and must not catch another client's SYN.
pub fn settle(core: &mut Core, handle: SocketHandle) {
    if core.sockets.get::<tcp::Socket>(handle).state() != tcp::State::Listen {
        return;
    }
    if let Some(Owner::Listener(id)) = core.conns.get(&handle).map(|c| c.owner)
        && let Some(Entry { state: SockState::Listening(l), .. }) = core.entries.get_mut(&id) {
            l.syn_queue.retain(|&h| h != handle);
        }
    core.free_conn(handle);
}
