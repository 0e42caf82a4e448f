//! The transmit path: what smoltcp sends goes to the outbox (for the driver to write to
//! the device) or, addressed to one of the stack's own addresses, back into the engine,
//! as Linux routes such packets through `lo` (smoltcp has no loopback of its own for an
//! IP-medium device, so without this a socket could not reach a listener on its own
//! stack). On the way each TCP segment's sequence numbers are put in the wire's numbering.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;

use smoltcp::iface::SocketHandle;
use smoltcp::phy::{self, Device, DeviceCapabilities};
use smoltcp::time::Instant;
use smoltcp::wire::{IpAddress, IpProtocol, IpVersion, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket};

use super::HashMap;
use super::conn::LastSent;
use super::isn::Secret;
use super::rcv_window;
use super::{Conn, TcpTuple, rewrite};

/// The destination of an IP packet, if it parses.
fn destination(packet: &[u8]) -> Option<IpAddr> {
    match super::rewrite::ip_version(packet)? {
        IpVersion::Ipv4 => Some(IpAddr::V4(Ipv4Packet::new_checked(packet).ok()?.dst_addr())),
        IpVersion::Ipv6 => Some(IpAddr::V6(Ipv6Packet::new_checked(packet).ok()?.dst_addr())),
    }
}

/// The device smoltcp transmits through: packets to `local` addresses go to `queue`, the
/// engine's loopback queue, and everything else to the outbox, from which the driver
/// takes them for the real device. It never receives.
pub struct Egress<'a> {
    pub capabilities: &'a DeviceCapabilities,
    pub local: &'a [IpAddr],
    pub queue: &'a mut VecDeque<Vec<u8>>,
    pub outbox: &'a mut Outbox,
    pub seq: SeqNumbers<'a>,
}

/// Bytes, and packets, the outbox holds at most: past that smoltcp is told the device has
/// no room, keeps what it would send, and the engine asks to be polled again once the
/// driver has emptied the outbox.
const OUTBOX_BYTES: usize = 1 << 20;
const OUTBOX_PACKETS: usize = 1024;

/// A packet buffer that the outbox and loss recovery can hold at once: recovery keeps each
/// segment it may have to resend by taking another reference to the buffer smoltcp built
/// it in, not a copy (a copy of every segment cost a third of the send rate at MTU 65000).
/// Whoever changes a packet someone else still holds changes a copy (`Arc::make_mut`).
pub type Packet = Arc<Vec<u8>>;

/// Packet buffers to reuse: recovery gives back what the peer acknowledged, the outbox
/// takes from here for the next packets, so a steady transfer allocates nothing.
#[derive(Default)]
pub struct PacketPool(Vec<Packet>);

/// Buffers the pool keeps at most.
const POOL_MAX: usize = 1024;

impl PacketPool {
    /// Keeps `packet` for reuse (if the pool has room).
    pub fn give(&mut self, packet: Packet) {
        if self.0.len() < POOL_MAX {
            self.0.push(packet);
        }
    }

    /// A buffer nobody else holds. One the driver has not yet let go of (it was written
    /// out and then acknowledged before the driver cleared its outbox) is left to it.
    fn take(&mut self) -> Packet {
        while let Some(mut packet) = self.0.pop() {
            if Arc::get_mut(&mut packet).is_some() {
                return packet;
            }
        }
        Packet::default()
    }
}

/// Packets for the device, built by smoltcp in the engine and written out by the driver
/// (the stack thread writes them once it has let go of the lock, so its writes — in which
/// the kernel does its own receive processing — overlap with API calls instead of taking
/// turns with them). Its buffers are reused: a packet costs neither an allocation nor a
/// copy on its way.
#[derive(Default)]
pub struct Outbox {
    packets: Vec<Packet>,
    /// How many of `packets` are waiting to be written, and their bytes.
    ready: usize,
    bytes: usize,
}

impl Outbox {
    /// The next packet's buffer, `len` bytes long, held by nobody else.
    fn next(&mut self, len: usize, pool: &mut PacketPool) -> &mut Packet {
        if self.ready == self.packets.len() {
            self.packets.push(pool.take());
        }
        let slot = &mut self.packets[self.ready];
        // Shared with recovery, or the empty placeholder `clear` left where recovery kept
        // the buffer: the pool has buffers recovery gave back once acknowledged, already
        // long enough for most packets (growing an empty one zero-fills all of it).
        if Arc::get_mut(slot).is_none_or(|buffer| buffer.capacity() == 0) {
            *slot = pool.take();
        }
        // Unique by now, so this neither copies nor allocates.
        let buffer = Arc::make_mut(slot);
        // Not zeroed for the payload (that would cost as much as a copy of the packet):
        // smoltcp writes all of it. Headers are, since smoltcp leaves the bytes after a
        // TCP option list's end-of-list as they were.
        buffer.resize(len, 0);
        buffer[..len.min(HEADERS_MAX)].fill(0);
        slot
    }

    /// Keeps the packet just built in `next`'s buffer, to be written.
    fn commit(&mut self) {
        self.bytes += self.packets[self.ready].len();
        self.ready += 1;
    }

    /// Adds a packet built elsewhere (a retransmission by ustack's recovery), without
    /// copying it. It goes in even when the outbox is full: recovery's bursts are bounded
    /// by what is in flight.
    pub fn push(&mut self, packet: &Packet) {
        if self.ready == self.packets.len() {
            self.packets.push(Arc::clone(packet));
        } else {
            self.packets[self.ready] = Arc::clone(packet);
        }
        self.commit();
    }

    /// Whether it holds as much as it may.
    pub fn is_full(&self) -> bool {
        self.bytes >= OUTBOX_BYTES || self.ready >= OUTBOX_PACKETS
    }

    /// Whether it holds no packet.
    pub fn is_empty(&self) -> bool {
        self.ready == 0
    }

    /// The waiting packets, in order.
    pub fn packets(&self) -> impl Iterator<Item = &[u8]> {
        self.packets[..self.ready].iter().map(|packet| packet.as_slice())
    }

    /// Forgets the waiting packets, keeping the buffers nobody else holds. Those recovery
    /// holds are let go of here, so that recovery can change them (trim, resend) in place
    /// and give them back to the pool once acknowledged.
    pub fn clear(&mut self) {
        for packet in &mut self.packets[..self.ready] {
            if Arc::strong_count(packet) > 1 {
                *packet = Packet::default();
            }
        }
        self.ready = 0;
        self.bytes = 0;
    }
}

/// What the transmit path needs to put TCP sequence numbers into the wire's numbering.
pub struct SeqNumbers<'a> {
    pub conns: &'a mut HashMap<SocketHandle, Box<Conn>>,
    pub demux: &'a HashMap<TcpTuple, SocketHandle>,
    pub secret: &'a Secret,
    /// Now (RFC 6528's 4 µs clock counts from it).
    pub now: Instant,
    /// Whether ustack's loss recovery is on: it records what goes out.
    pub recovery: bool,
    pub pool: &'a mut PacketPool,
}

impl SeqNumbers<'_> {
    /// Rewrites an outgoing TCP segment's sequence number; false if the segment must not
    /// go out at all (smoltcp's SYN-ACK for a connection made from a SYN cookie: the
    /// client already has the cookie's).
    fn outgoing(&mut self, slot: &mut Packet, local: bool) -> bool {
        // Unique: the outbox has just handed it out.
        let packet = Arc::make_mut(slot).as_mut_slice();
        let Some((offset, src, dst)) = rewrite::tcp_header(packet) else { return true };
        let Some(conn) = self.demux.get(&TcpTuple { local: src, remote: dst }).and_then(|h| self.conns.get_mut(h))
        else {
            return true;
        };
        let (syn, ack, seq) = rewrite::flags_and_seq(packet, offset);
        if conn.gave_up && rewrite::flags(packet, offset) & rewrite::RST != 0 {
            // A connection given up on closes without a RST, as Linux's (tcp_write_err).
            return false;
        }
        if syn {
            let (scale, mss) = rewrite::syn_options(&packet[offset..]);
            conn.rcv_scale = scale.unwrap_or(0);
            conn.rcv_mss = mss.unwrap_or(0);
            if let Some(cookie) = conn.cookie.take() {
                conn.shift = Some(seq.wrapping_sub(cookie));
                return false;
            }
            if conn.shift.is_none() {
                conn.shift = Some(seq.wrapping_sub(self.secret.isn(&conn.tuple, self.now.total_micros() as u64)));
            }
            if ack
                && matches!(conn.state, smoltcp::socket::tcp::State::Listen | smoltcp::socket::tcp::State::SynReceived)
            {
                conn.syn_ack = Some(packet.to_vec());
            }
        }
        if let Some(shift) = conn.shift {
            rewrite::outgoing(packet, offset, shift);
        }
        if let (seq_end, Some(ack), window) = rewrite::position(packet, offset) {
            let seq = rewrite::flags_and_seq(packet, offset).2;
            // No data, SYN or FIN (an RST aside): an ACK alone.
            let pure_ack = seq_end == seq && rewrite::flags(packet, offset) & rewrite::RST == 0;
            let seq_end = match conn.send_front.pure_ack_seq(seq, seq_end, conn.sent_max) {
                Some(moved) => {
                    rewrite::set_seq(packet, offset, moved);
                    moved
                }
                None => seq_end,
            };
            let sent_max = conn.sent_max;
            let fin = rewrite::flags(packet, offset) & rewrite::FIN != 0;
            let own_window = window;
            // How far past this ACK the window already offered reaches: the edge never
            // moves back (RFC 9293 §3.8.6.2.2).
            let edge_room = match conn.sent {
                Some(LastSent { edge, .. }) if rewrite::seq_after(edge, ack) => edge.wrapping_sub(ack),
                _ => 0,
            };
            let window = match &conn.rcv_window {
                Some(tuning) if syn => window.min(u16::try_from(tuning.clamp()).unwrap_or(u16::MAX)),
                Some(tuning) if conn.rcv_scale > 0 => {
                    rcv_window::clamp_field(window, conn.rcv_scale, tuning.hidden(), edge_room)
                }
                _ => window,
            };
            let window = if syn {
                window
            } else {
                let worth = rcv_window::avoid_silly_window(window, conn.rcv_scale, conn.sws_floor(), edge_room);
                // smoltcp's window update that offered too little to be worth it now says
                // what the last segment said: a duplicate ACK, which the peer could count
                // toward a fast retransmit. It does not go out. (Not one with SACK blocks,
                // an answer to data out of order, which the peer needs; nor a keep-alive,
                // which sits one byte below the last segment's end.)
                if worth != window
                    && pure_ack
                    && conn.sent.is_some_and(|last| last.ack == ack && last.window == worth && last.seq_end == seq_end)
                    && !rewrite::has_sack_blocks(&packet[offset..])
                {
                    return false;
                }
                worth
            };
            if window != own_window {
                rewrite::set_window(packet, offset, window);
            }
            // A SYN's window is never scaled (RFC 7323 §2.2).
            let scale = if syn { 0 } else { conn.rcv_scale };
            let offered = ack.wrapping_add(u32::from(window) << scale);
            let edge = match conn.sent {
                Some(LastSent { edge, .. }) if !syn && !rewrite::seq_after(offered, edge) => edge,
                _ => offered,
            };
            conn.sent = Some(LastSent { seq_end, ack, window, edge, own_window });
            conn.received_since_sent = 0;
            conn.send_front.on_sent(seq, seq_end);
            if self.recovery && !local && !syn {
                let sent = conn.recovery.on_sent(self.now, slot, offset, (seq, seq_end), sent_max);
                if let Some(rtt) = conn.handshake_rtt {
                    conn.recovery.seed_rtt(rtt);
                }
                if sent == super::recovery::Sent::Suppress {
                    return false;
                }
            }
            if conn.sent_max.is_none_or(|max| rewrite::seq_after(seq_end, max)) {
                conn.sent_max = Some(seq_end);
            }
            if fin {
                conn.fin_end = Some(seq_end);
            }
        } else if let (seq_end, None, _) = rewrite::position(packet, offset)
            && rewrite::flags(packet, offset) & rewrite::SYN != 0
        {
            // An active open's SYN: what an ICMP error about it must quote.
            conn.sent_max = Some(seq_end);
        }
        true
    }
}

/// Room for any IP + TCP header (at most 60 + 60 bytes).
const HEADERS_MAX: usize = 128;

/// A permission to send one packet, granted while the outbox has room.
pub struct Tx<'a, 'b> {
    /// Whether smoltcp leaves TCP and UDP checksums to the device (TUN offloads).
    partial_checksums: bool,
    local: &'a [IpAddr],
    queue: &'a mut VecDeque<Vec<u8>>,
    outbox: &'a mut Outbox,
    seq: &'a mut SeqNumbers<'b>,
}

impl phy::TxToken for Tx<'_, '_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let slot = self.outbox.next(len, self.seq.pool);
        let result = f(Arc::make_mut(slot).as_mut_slice());
        let local = destination(slot).is_some_and(|dst| self.local.contains(&dst));
        if !self.seq.outgoing(slot, local) {
            return result;
        }
        if local {
            let mut packet = slot.to_vec();
            // No device computes it on the way back in, where smoltcp verifies it.
            if self.partial_checksums {
                fill_transport_checksum(&mut packet);
            }
            self.queue.push_back(packet);
        } else {
            self.outbox.commit();
        }
        result
    }
}

/// Computes the TCP or UDP checksum of an IP packet smoltcp built without it.
fn fill_transport_checksum(packet: &mut [u8]) {
    let (src, dst, protocol, offset) = match super::rewrite::ip_version(packet) {
        Some(IpVersion::Ipv4) => {
            let Ok(ip) = Ipv4Packet::new_checked(&*packet) else { return };
            (ip.src_addr().into(), ip.dst_addr().into(), ip.next_header(), ip.header_len().into())
        }
        Some(IpVersion::Ipv6) => {
            let Ok(ip) = Ipv6Packet::new_checked(&*packet) else { return };
            (ip.src_addr().into(), ip.dst_addr().into(), ip.next_header(), ip.header_len())
        }
        None => return,
    };
    let (src, dst): (IpAddress, IpAddress) = (src, dst);
    let Some(payload) = packet.get_mut(offset..) else { return };
    match protocol {
        IpProtocol::Tcp => {
            if let Ok(mut tcp) = TcpPacket::new_checked(payload) {
                tcp.fill_checksum(&src, &dst);
            }
        }
        IpProtocol::Udp => {
            if let Ok(mut udp) = UdpPacket::new_checked(payload) {
                udp.fill_checksum(&src, &dst);
            }
        }
        _ => {}
    }
}

pub struct NoRx;

/// A token never handed out (see `ProbeOnly`).
pub struct NoTx;

impl phy::TxToken for NoTx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        f(&mut vec![0; len])
    }
}

impl phy::RxToken for NoRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&[])
    }
}

impl<'a> Device for Egress<'a> {
    type RxToken<'b>
        = NoRx
    where
        Self: 'b;
    type TxToken<'b>
        = Tx<'b, 'a>
    where
        Self: 'b;

    fn receive(&mut self, _now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        None
    }

    /// A token only while the outbox has room, so smoltcp keeps what it cannot send.
    fn transmit(&mut self, _now: Instant) -> Option<Self::TxToken<'_>> {
        if self.outbox.is_full() {
            return None;
        }
        Some(Tx {
            partial_checksums: !self.capabilities.checksum.tcp.tx(),
            local: self.local,
            queue: &mut *self.queue,
            outbox: &mut *self.outbox,
            seq: &mut self.seq,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.capabilities.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a TCP sender's steady state does to the outbox: each data packet is built,
    /// kept by recovery until acknowledged, written out (the outbox cleared), and given
    /// back to the pool once the ACK comes.
    #[test]
    fn a_steady_transfer_reuses_the_buffers_recovery_gives_back() {
        const LEN: usize = 64_000;
        let (mut outbox, mut pool) = (Outbox::default(), PacketPool::default());
        let packet = outbox.next(LEN, &mut pool);
        Arc::make_mut(packet).fill(0xab);
        let kept_by_recovery = Arc::clone(packet);
        outbox.commit();
        // Written out; recovery still holds the packet.
        outbox.clear();
        let address = kept_by_recovery.as_ptr();
        // Acknowledged: recovery lets go of it.
        pool.give(kept_by_recovery);
        let next = outbox.next(LEN, &mut pool);
        assert_eq!(next.as_ptr(), address, "the next packet is built in the buffer given back, not a new one");
        assert_eq!(next.len(), LEN);
        // Headers are zeroed, the rest is smoltcp's to write.
        assert!(next[..HEADERS_MAX].iter().all(|&b| b == 0));
    }
}
