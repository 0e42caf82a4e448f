//! Steering frames to stack shards: each shard reads its own queue of a multi-queue TUN
//! ([`TunDevice::open_queues`](super::TunDevice::open_queues)) through a [`Steered`]
//! device, which hands its shard only the frames of flows that shard owns and forwards
//! the others to their owner's inbox.
//!
//! Who owns a frame is a pure function of its header ([`Steering::owner`]): TCP segments
//! to a port that listens on every shard ([`Steering::share_port`]), and UDP datagrams to
//! a port a UDP socket is bound to on every shard ([`Steering::share_udp_port`]), belong
//! to the shard their 4-tuple hashes to; everything else (ICMP, fragments, other UDP,
//! connections the stack opened) belongs to shard 0, where the other sockets live. A flow's
//! frames thus always reach the same engine, whichever queue the kernel put them on.
//! The kernel mostly puts them on the right one already: it sends a flow's packets back
//! on the queue that flow was last written on (drivers/net/tun.c, `tun_flow_update`),
//! and the owner writes them on its own queue; only the first SYN of a connection (which
//! the kernel queues by its own hash) and packets after the kernel's flow entry aged out
//! (3 s without a write) may arrive on another shard's queue and be forwarded.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use smoltcp::phy::{Device, DeviceCapabilities};
use smoltcp::time::Instant;

use super::Link;

/// Bytes of frames waiting in one shard's inbox, at most: beyond that, forwarded frames
/// are dropped (and counted), as a full device queue drops them, so a flood aimed at one
/// shard cannot grow another's memory by more than this.
const INBOX_BYTES: usize = 4 << 20;

/// Frames a receive may forward before it gives the shard a turn (so a stream of other
/// shards' frames cannot keep one shard's thread in one call).
const MAX_FORWARDS: usize = 64;

/// What the shards of one stack share to steer frames: who owns which flow, and each
/// shard's inbox of frames forwarded to it.
pub struct Steering {
    inboxes: Box<[Inbox]>,
    /// TCP ports that listen on every shard, one bit each.
    shared_ports: Box<[AtomicU64]>,
    /// UDP ports bound on every shard, one bit each.
    shared_udp_ports: Box<[AtomicU64]>,
    /// The flow hash's key: random per stack, so nobody can aim every flow at one shard.
    hasher: std::collections::hash_map::RandomState,
}

/// Frames forwarded to one shard.
struct Inbox {
    /// The frames, and their bytes in all.
    frames: Mutex<(VecDeque<Vec<u8>>, usize)>,
    /// How many frames wait, read without the lock on every receive.
    len: AtomicUsize,
    /// Written after a frame is pushed: wakes the shard's thread.
    wake: EventFd,
    /// Frames forwarded to this shard so far.
    forwarded: AtomicU64,
    /// Frames dropped because the inbox was full.
    dropped: AtomicU64,
}

impl Steering {
    /// Steering for `shards` shards (at least 1).
    pub fn new(shards: usize) -> io::Result<Arc<Steering>> {
        let inboxes = (0..shards.max(1))
            .map(|_| {
                Ok(Inbox {
                    frames: Mutex::new((VecDeque::new(), 0)),
                    len: AtomicUsize::new(0),
                    wake: EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?,
                    forwarded: AtomicU64::new(0),
                    dropped: AtomicU64::new(0),
                })
            })
            .collect::<io::Result<_>>()?;
        Ok(Arc::new(Steering {
            inboxes,
            shared_ports: (0..1024).map(|_| AtomicU64::new(0)).collect(),
            shared_udp_ports: (0..1024).map(|_| AtomicU64::new(0)).collect(),
            hasher: Default::default(),
        }))
    }

    /// How many shards.
    pub fn shards(&self) -> usize {
        self.inboxes.len()
    }

    /// From now on, TCP segments to `port` belong to the shard their 4-tuple hashes to:
    /// the port listens on every shard. A port stays shared for the stack's life, as the
    /// connections accepted on it outlive its listener.
    pub fn share_port(&self, port: u16) {
        self.shared_ports[usize::from(port / 64)].fetch_or(1 << (port % 64), Ordering::Release);
    }

    /// From now on, UDP datagrams to `port` belong to the shard their 4-tuple hashes to: a
    /// socket is bound to it on every shard. Until [`Steering::unshare_udp_port`].
    pub fn share_udp_port(&self, port: u16) {
        self.shared_udp_ports[usize::from(port / 64)].fetch_or(1 << (port % 64), Ordering::Release);
    }

    /// UDP datagrams to `port` belong to shard 0 again: its socket closed, and the next one
    /// bound to it may be on shard 0 alone.
    pub fn unshare_udp_port(&self, port: u16) {
        self.shared_udp_ports[usize::from(port / 64)].fetch_and(!(1 << (port % 64)), Ordering::Release);
    }

    fn is_shared(&self, proto: u8, port: u16) -> bool {
        let ports = if proto == TCP { &self.shared_ports } else { &self.shared_udp_ports };
        ports[usize::from(port / 64)].load(Ordering::Acquire) & (1 << (port % 64)) != 0
    }

    /// The shard that owns the UDP flow between `local` (the stack's end) and `peer`: where
    /// the datagrams `peer` sends to `local` go, so where the stack should send to `peer`
    /// from (the kernel then keeps that flow on the shard's queue). Shard 0 unless
    /// `local`'s port is shared.
    pub fn udp_owner(&self, local: SocketAddr, peer: SocketAddr) -> usize {
        let shards = self.inboxes.len();
        if shards == 1 || !self.is_shared(UDP, local.port()) {
            return 0;
        }
        let mut ports = [0; 4];
        ports[..2].copy_from_slice(&peer.port().to_be_bytes());
        ports[2..].copy_from_slice(&local.port().to_be_bytes());
        match (peer.ip(), local.ip()) {
            (IpAddr::V4(p), IpAddr::V4(l)) => self.shard_of(&p.octets(), &l.octets(), &ports),
            (IpAddr::V6(p), IpAddr::V6(l)) => self.shard_of(&p.octets(), &l.octets(), &ports),
            _ => 0,
        }
    }

    /// The shard a flow hashes to, from its source and destination addresses and its
    /// ports (as they stand in an arriving packet: source port, then destination port).
    fn shard_of(&self, src: &[u8], dst: &[u8], ports: &[u8]) -> usize {
        let mut hasher = self.hasher.build_hasher();
        hasher.write(src);
        hasher.write(dst);
        hasher.write(ports);
        (hasher.finish() % self.inboxes.len() as u64) as usize
    }

    /// Frames forwarded to each shard so far, and frames dropped because its inbox was full.
    pub fn forwarded(&self) -> Vec<(u64, u64)> {
        self.inboxes.iter().map(|i| (i.forwarded.load(Ordering::Relaxed), i.dropped.load(Ordering::Relaxed))).collect()
    }

    /// The shard that owns the flow of `frame`, an IP packet arriving at the stack.
    pub fn owner(&self, frame: &[u8]) -> usize {
        let shards = self.inboxes.len();
        if shards == 1 {
            return 0;
        }
        let Some((proto, src, dst, l4)) = transport_addresses(frame) else { return 0 };
        let Some(ports) = frame.get(l4..l4 + 4) else { return 0 };
        let dst_port = u16::from_be_bytes([ports[2], ports[3]]);
        if !self.is_shared(proto, dst_port) {
            return 0;
        }
        self.shard_of(src, dst, ports)
    }

    /// Hands a copy of `frame` (its own size, not the read buffer's) to shard `to`'s
    /// inbox and wakes it, or drops it if the inbox is full.
    fn forward(&self, to: usize, frame: &[u8]) {
        let inbox = &self.inboxes[to];
        {
            let mut guard = inbox.frames.lock().unwrap_or_else(|p| p.into_inner());
            let (frames, bytes) = &mut *guard;
            if *bytes + frame.len() > INBOX_BYTES {
                inbox.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            *bytes += frame.len();
            frames.push_back(frame.to_vec());
            inbox.len.fetch_add(1, Ordering::Release);
        }
        inbox.forwarded.fetch_add(1, Ordering::Relaxed);
        let _ = inbox.wake.write(1);
    }

    /// The next frame forwarded to shard `to`, if any.
    fn take(&self, to: usize) -> Option<Vec<u8>> {
        let inbox = &self.inboxes[to];
        if inbox.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut guard = inbox.frames.lock().unwrap_or_else(|p| p.into_inner());
        let frame = guard.0.pop_front()?;
        guard.1 -= frame.len();
        inbox.len.fetch_sub(1, Ordering::Release);
        Some(frame)
    }
}

const TCP: u8 = 6;
const UDP: u8 = 17;

/// The protocol (TCP or UDP) and the source and destination addresses of a TCP segment or
/// UDP datagram in an unfragmented IPv4 packet or an IPv6 packet without extension
/// headers, and where its TCP or UDP header starts.
fn transport_addresses(frame: &[u8]) -> Option<(u8, &[u8], &[u8], usize)> {
    match frame.first()? >> 4 {
        4 if frame.len() >= 20 => {
            let header = usize::from(frame[0] & 0x0f) * 4;
            // More fragments, or a fragment offset: not the whole packet (shard 0 reassembles).
            let fragmented = u16::from_be_bytes([frame[6], frame[7]]) & 0x3fff != 0;
            let proto = frame[9];
            ((proto == TCP || proto == UDP) && !fragmented && header >= 20)
                .then(|| (proto, &frame[12..16], &frame[16..20], header))
        }
        6 if frame.len() >= 40 => {
            let proto = frame[6];
            (proto == TCP || proto == UDP).then(|| (proto, &frame[8..24], &frame[24..40], 40))
        }
        _ => None,
    }
}

/// One shard's device: a queue of the TUN (or any [`Link`]) whose frames for other shards
/// are forwarded to them, and which also yields the frames other shards forwarded to
/// this one. Its [`Link::wait_fd`] is readable when either has a frame.
pub struct Steered<D> {
    inner: D,
    shard: usize,
    steering: Arc<Steering>,
    /// Watches the queue and this shard's inbox.
    epoll: Epoll,
}

impl<D: Link> Steered<D> {
    /// Shard `shard`'s device over `inner`.
    pub fn new(inner: D, shard: usize, steering: Arc<Steering>) -> io::Result<Steered<D>> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(inner.wait_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 0))?;
        epoll.add(steering.inboxes[shard].wake.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 1))?;
        Ok(Steered { inner, shard, steering, epoll })
    }

    /// The device underneath.
    pub fn inner(&self) -> &D {
        &self.inner
    }
}

impl<D: Link> Device for Steered<D> {
    type RxToken<'a>
        = super::OwnedRxToken
    where
        D: 'a;
    type TxToken<'a>
        = D::TxToken<'a>
    where
        D: 'a;

    fn receive(&mut self, now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let mut frame = Vec::new();
        if !self.receive_into(now, &mut frame) {
            return None;
        }
        let tx = self.inner.transmit(now)?;
        Some((super::OwnedRxToken(frame), tx))
    }

    fn transmit(&mut self, now: Instant) -> Option<Self::TxToken<'_>> {
        self.inner.transmit(now)
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.inner.capabilities()
    }
}

impl<D: Link> Link for Steered<D> {
    fn wait_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }

    fn take_error(&mut self) -> Option<io::Error> {
        self.inner.take_error()
    }

    fn receive_into(&mut self, now: Instant, frame: &mut Vec<u8>) -> bool {
        if let Some(forwarded) = self.steering.take(self.shard) {
            frame.clear();
            frame.extend_from_slice(&forwarded);
            return true;
        }
        for _ in 0..MAX_FORWARDS {
            if !self.inner.receive_into(now, frame) {
                break;
            }
            let owner = self.steering.owner(frame);
            if owner == self.shard {
                return true;
            }
            self.steering.forward(owner, frame);
        }
        // Nothing more: empty the inbox's eventfd (so poll(2) sleeps), then look once more
        // for a frame forwarded before that read, whose wake-up it just consumed.
        let _ = self.steering.inboxes[self.shard].wake.read();
        match self.steering.take(self.shard) {
            Some(forwarded) => {
                // Copied into the caller's buffer, which keeps its size for the next read.
                frame.clear();
                frame.extend_from_slice(&forwarded);
                true
            }
            None => false,
        }
    }

    fn transmit_from(&mut self, now: Instant, frame: &[u8]) -> bool {
        self.inner.transmit_from(now, frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 packet of `proto` from 10.7.0.1:`sport` to 10.7.0.2:`dport`, with the
    /// fragment field `frag`.
    fn ipv4(proto: u8, sport: u16, dport: u16, frag: u16) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[6..8].copy_from_slice(&frag.to_be_bytes());
        p[9] = proto;
        p[12..16].copy_from_slice(&[10, 7, 0, 1]);
        p[16..20].copy_from_slice(&[10, 7, 0, 2]);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p
    }

    #[test]
    fn only_tcp_to_a_shared_port_spreads_and_a_flow_stays_on_its_shard() {
        let steering = Steering::new(2).unwrap();
        let owners = |dport| (40000..40200).map(|sport| steering.owner(&ipv4(6, sport, dport, 0))).collect::<Vec<_>>();
        assert!(owners(7).iter().all(|&o| o == 0), "not shared yet: shard 0");
        steering.share_port(7);
        let spread = owners(7);
        assert_eq!(spread, owners(7), "the same flow, the same shard");
        let on_1 = spread.iter().filter(|&&o| o == 1).count();
        assert!((50..150).contains(&on_1), "{on_1} of 200 on shard 1");
        assert!(owners(8).iter().all(|&o| o == 0), "another port is not shared");
        assert_eq!(steering.owner(&ipv4(17, 40000, 7, 0)), 0, "UDP to a port shared for TCP: shard 0");
        // A fragment (more fragments set, or an offset) goes to shard 0, which reassembles.
        assert!((40000..40100).all(|sport| steering.owner(&ipv4(6, sport, 7, 0x2000)) == 0));
        assert!((40000..40100).all(|sport| steering.owner(&ipv4(6, sport, 7, 0x0010)) == 0));
        // "Don't fragment" is not a fragment.
        assert_eq!((40000..40200).map(|sport| steering.owner(&ipv4(6, sport, 7, 0x4000))).collect::<Vec<_>>(), spread);
    }

    #[test]
    fn udp_to_a_shared_udp_port_spreads_where_the_stack_sends_from_until_unshared() {
        let steering = Steering::new(2).unwrap();
        let owners = || (40000..40200).map(|sport| steering.owner(&ipv4(17, sport, 7, 0))).collect::<Vec<_>>();
        assert!(owners().iter().all(|&o| o == 0), "not shared yet: shard 0");
        steering.share_udp_port(7);
        let spread = owners();
        let on_1 = spread.iter().filter(|&&o| o == 1).count();
        assert!((50..150).contains(&on_1), "{on_1} of 200 on shard 1");
        assert!((40000..40200).all(|sport| steering.owner(&ipv4(6, sport, 7, 0)) == 0), "TCP to it: shard 0");
        // The stack sends each flow from the shard its datagrams arrive at.
        let local: SocketAddr = "10.7.0.2:7".parse().unwrap();
        let from = |sport: u16| steering.udp_owner(local, SocketAddr::from(([10, 7, 0, 1], sport)));
        assert_eq!((40000..40200).map(from).collect::<Vec<_>>(), spread);
        steering.unshare_udp_port(7);
        assert!(owners().iter().all(|&o| o == 0), "unshared: shard 0 again");
        assert_eq!(from(40000), 0);
    }

    #[test]
    fn garbage_goes_to_shard_0_without_a_panic() {
        let steering = Steering::new(3).unwrap();
        steering.share_port(7);
        for len in 0..64 {
            for first in [0x00, 0x45, 0x4f, 0x60, 0xff] {
                let mut p = vec![6u8; len];
                if let Some(b) = p.first_mut() {
                    *b = first;
                }
                assert!(steering.owner(&p) < 3);
            }
        }
        // A header length past the end of the packet.
        let mut short = ipv4(6, 40000, 7, 0);
        short[0] = 0x4f;
        short.truncate(30);
        assert_eq!(steering.owner(&short), 0);
    }

    #[test]
    fn a_full_inbox_drops_and_counts() {
        let steering = Steering::new(2).unwrap();
        let frame = [0; 1024];
        for _ in 0..INBOX_BYTES / frame.len() + 10 {
            steering.forward(1, &frame);
        }
        assert_eq!(steering.forwarded()[1], ((INBOX_BYTES / frame.len()) as u64, 10));
        assert!(steering.take(1).is_some());
        assert!(steering.take(0).is_none());
    }
}
