//! IP fragments (IPv4, and IPv6's Fragment header) put back together before the demux
//! sees anything, so that a reassembled datagram goes through the same decisions as one
//! that came whole, and smoltcp only ever gets whole datagrams.
//!
//! Bounded as Linux bounds it, and then some:
//! - in memory: at most [`BYTES_LIMIT`] bytes of all datagrams being reassembled (Linux's
//!   `ipfrag_high_thresh` is 4 MiB), of which one source address may hold a quarter, and
//!   at most [`DATAGRAMS_LIMIT`] datagrams of at most [`FRAGMENTS_LIMIT`] fragments each.
//!   A fragment that would go beyond is dropped; nothing already held is evicted for it
//!   (Linux since 4.17 does the same), so a flood from one source cannot push out another
//!   source's datagrams, and cannot take more than its quarter;
//! - in time: a datagram not complete [`TIMEOUT`] after its first fragment is dropped
//!   (Linux's `ipfrag_time`, 30 s for IPv4 and 60 s for IPv6; one time here).
//!
//! A fragment overlapping another of its datagram (not an exact duplicate) drops the whole
//! datagram: RFC 5722 for IPv6, and what Linux also does for IPv4 since 4.19. An exact
//! duplicate is ignored. A fragment that is not the last must carry a multiple of 8 bytes
//! (RFC 791, RFC 8200), and no datagram may end beyond 65,535 bytes.
//!
//! Only an IPv6 Fragment header straight after the fixed header is reassembled here;
//! anything else goes on as it came.
//!
//! Why not smoltcp's own (`proto-ipv4-fragmentation`, `proto-ipv6-fragmentation`): in
//! 0.14 it reassembles inside the interface, after ustack's demux has had to classify the
//! packet (a later fragment has no ports); it keeps one datagram at a time
//! (`reassembly-buffer-count-1` by default), so any second fragmented datagram, a
//! spoofed one too, takes the place of the first; it holds them 60 s; and it takes
//! overlapping fragments, the later data overwriting the earlier
//! (`iface/fragmentation.rs`, `PacketAssembler::add` and its test
//! `packet_assembler_overlap`), where RFC 5722 asks to drop the datagram.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::Ipv4Packet;

use super::HashMap;

/// Bytes of datagrams being reassembled, all sources together.
pub const BYTES_LIMIT: usize = 1 << 20;
/// Bytes one source address may have in reassembly.
pub const PER_SOURCE_LIMIT: usize = BYTES_LIMIT / 4;
/// Datagrams being reassembled at once.
pub const DATAGRAMS_LIMIT: usize = 64;
/// Fragments one datagram may have (a 64 KiB datagram over a 1280-byte MTU has 52).
pub const FRAGMENTS_LIMIT: usize = 64;
/// How long a datagram may take to arrive whole.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// What one datagram costs besides its bytes: its record and fragment list.
const OVERHEAD: usize = 256;

/// A fragment's datagram: RFC 791's (source, destination, protocol, identification),
/// RFC 8200's (source, destination, identification).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    id: u32,
}

/// One fragment, as read from its packet.
struct Fragment<'a> {
    key: Key,
    /// Where its data goes in the datagram, in bytes.
    offset: usize,
    more: bool,
    data: &'a [u8],
    /// The header the whole datagram gets, from the first fragment: IPv4's own header,
    /// or IPv6's fixed header (its next header is `key.proto`).
    header: &'a [u8],
}

/// A datagram being reassembled.
struct Partial {
    header: Option<Vec<u8>>,
    data: Vec<u8>,
    /// The fragments received, as byte ranges, in arrival order.
    have: Vec<(usize, usize)>,
    /// The datagram's length, once its last fragment came.
    total: Option<usize>,
    expires: Instant,
    /// The bytes it is charged for.
    cost: usize,
}

/// What became of a packet offered to reassembly.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// Not a fragment: it goes on as it is.
    NotFragment,
    /// A fragment, kept (or dropped) for now: nothing goes on. Says what happened.
    Held {
        /// The fragment's source.
        src: IpAddr,
        /// Its destination.
        dst: IpAddr,
        /// What happened to it.
        what: &'static str,
    },
    /// The fragment that completed a datagram: the whole datagram goes on instead.
    Whole(Vec<u8>),
}

/// How many fragments and datagrams met each fate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReassemblyCounters {
    /// Fragments received.
    pub fragments: u64,
    /// Datagrams made whole.
    pub reassembled: u64,
    /// Datagrams dropped for an overlap (RFC 5722) or inconsistent fragments.
    pub overlaps: u64,
    /// Datagrams given up for not arriving whole in time.
    pub timed_out: u64,
    /// Fragments dropped because the limits were reached.
    pub no_room: u64,
    /// Fragments dropped as malformed.
    pub malformed: u64,
}

/// The datagrams being reassembled; see the [module docs](self).
#[derive(Default)]
pub struct Reassembly {
    partial: HashMap<Key, Partial>,
    bytes: usize,
    per_source: HashMap<IpAddr, usize>,
    /// What happened so far.
    pub counters: ReassemblyCounters,
}

impl Reassembly {
    /// Bytes held now, all datagrams together.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Datagrams being reassembled now.
    pub fn datagrams(&self) -> usize {
        self.partial.len()
    }

    /// Takes `packet` if it is a fragment; see [`Offer`].
    pub fn offer(&mut self, now: Instant, packet: &[u8]) -> Offer {
        let fragment = match read_fragment(packet) {
            Read::NotFragment => return Offer::NotFragment,
            Read::Malformed(src, dst) => {
                self.counters.malformed += 1;
                return Offer::Held { src, dst, what: "malformed IP fragment: dropped" };
            }
            Read::Atomic(whole) => return Offer::Whole(whole),
            Read::Fragment(f) => f,
        };
        self.counters.fragments += 1;
        self.expire(now);
        let (src, dst) = (fragment.key.src, fragment.key.dst);
        let held = |what| Offer::Held { src, dst, what };
        let end = fragment.offset + fragment.data.len();
        if (fragment.more && fragment.data.len() % 8 != 0) || end > 65535 {
            self.counters.malformed += 1;
            return held("IP fragment of a bad length: dropped");
        }
        if !self.partial.contains_key(&fragment.key) && self.partial.len() >= DATAGRAMS_LIMIT {
            self.counters.no_room += 1;
            return held("IP fragment: too many datagrams in reassembly, dropped");
        }
        let key = fragment.key;
        let partial = self.partial.entry(key).or_insert_with(|| Partial {
            header: None,
            data: Vec::new(),
            have: Vec::new(),
            total: None,
            expires: now + TIMEOUT,
            cost: 0,
        });
        if partial.have.contains(&(fragment.offset, end)) {
            return held("IP fragment: a duplicate, ignored");
        }
        let overlaps = partial.have.iter().any(|&(s, e)| fragment.offset < e && s < end);
        let beyond_end = partial.total.is_some_and(|t| end > t || (!fragment.more && end != t));
        let before_known_data = !fragment.more && partial.have.iter().any(|&(_, e)| e > end);
        if overlaps || beyond_end || before_known_data {
            self.counters.overlaps += 1;
            self.discard(key);
            return held("IP fragment overlapping another (RFC 5722): the whole datagram dropped");
        }
        if partial.have.len() >= FRAGMENTS_LIMIT {
            self.counters.no_room += 1;
            self.discard(key);
            return held("IP fragment: too many fragments in one datagram, the datagram dropped");
        }
        let cost = OVERHEAD + partial.data.len().max(end) + fragment.header.len();
        let more_cost = cost.saturating_sub(partial.cost);
        let source_bytes = self.per_source.get(&src).copied().unwrap_or(0);
        if self.bytes + more_cost > BYTES_LIMIT || source_bytes + more_cost > PER_SOURCE_LIMIT {
            self.counters.no_room += 1;
            if partial.have.is_empty() {
                self.partial.remove(&key);
            }
            return held("IP fragment: reassembly memory full, dropped");
        }
        partial.cost += more_cost;
        self.bytes += more_cost;
        *self.per_source.entry(src).or_insert(0) += more_cost;
        if partial.data.len() < end {
            partial.data.resize(end, 0);
        }
        partial.data[fragment.offset..end].copy_from_slice(fragment.data);
        partial.have.push((fragment.offset, end));
        if fragment.offset == 0 {
            partial.header = Some(fragment.header.to_vec());
        }
        if !fragment.more {
            partial.total = Some(end);
        }
        if !is_complete(partial) {
            return held("IP fragment: held for reassembly");
        }
        let Some(partial) = self.take(key) else { return held("IP fragment: held for reassembly") };
        let Some(whole) = assemble(&key, partial) else {
            self.counters.malformed += 1;
            return held("IP fragments reassembled into a datagram too long: dropped");
        };
        self.counters.reassembled += 1;
        Offer::Whole(whole)
    }

    /// Drops datagrams whose time ran out.
    pub fn expire(&mut self, now: Instant) {
        let expired: Vec<Key> = self.partial.iter().filter(|(_, p)| p.expires <= now).map(|(k, _)| *k).collect();
        for key in expired {
            self.counters.timed_out += 1;
            self.discard(key);
        }
    }

    fn discard(&mut self, key: Key) {
        self.take(key);
    }

    /// Removes a datagram, giving back what it was charged.
    fn take(&mut self, key: Key) -> Option<Partial> {
        let partial = self.partial.remove(&key)?;
        self.bytes -= partial.cost;
        if let Some(source) = self.per_source.get_mut(&key.src) {
            *source -= partial.cost;
            if *source == 0 {
                self.per_source.remove(&key.src);
            }
        }
        Some(partial)
    }
}

fn is_complete(partial: &Partial) -> bool {
    let Some(total) = partial.total else { return false };
    if partial.header.is_none() {
        return false;
    }
    let mut ranges = partial.have.clone();
    ranges.sort_unstable();
    let mut covered = 0;
    for (start, end) in ranges {
        if start > covered {
            return false;
        }
        covered = covered.max(end);
    }
    covered == total
}

/// The whole datagram: the first fragment's header, made whole, and the data.
fn assemble(key: &Key, partial: Partial) -> Option<Vec<u8>> {
    let mut header = partial.header?;
    let total = header.len() + partial.data.len();
    match key.src {
        IpAddr::V4(_) => {
            let total = u16::try_from(total).ok()?;
            let mut ip = Ipv4Packet::new_unchecked(&mut header[..]);
            ip.set_total_len(total);
            ip.set_more_frags(false);
            ip.set_frag_offset(0);
            ip.fill_checksum();
        }
        IpAddr::V6(_) => {
            header[4..6].copy_from_slice(&u16::try_from(partial.data.len()).ok()?.to_be_bytes());
            header[6] = key.proto;
        }
    }
    header.extend_from_slice(&partial.data);
    Some(header)
}

/// Whether a reassembled datagram's TCP checksum is right; true if it is not TCP (the
/// datagrams [`assemble`] makes: IPv4, or IPv6 with the protocol straight after the fixed
/// header).
pub fn tcp_checksum_ok(datagram: &[u8]) -> bool {
    use smoltcp::wire::{IpAddress, IpProtocol, Ipv6Packet, TcpPacket};
    let (src, dst, payload): (IpAddress, IpAddress, &[u8]) = match datagram.first().map(|b| b >> 4) {
        Some(4) => match Ipv4Packet::new_checked(datagram) {
            Ok(ip) if ip.next_header() == IpProtocol::Tcp => {
                (ip.src_addr().into(), ip.dst_addr().into(), &datagram[ip.header_len().into()..ip.total_len().into()])
            }
            _ => return true,
        },
        Some(6) => match Ipv6Packet::new_checked(datagram) {
            Ok(ip) if ip.next_header() == IpProtocol::Tcp => {
                (ip.src_addr().into(), ip.dst_addr().into(), &datagram[ip.header_len()..ip.total_len()])
            }
            _ => return true,
        },
        _ => return true,
    };
    TcpPacket::new_checked(payload).is_ok_and(|tcp| tcp.verify_checksum(&src, &dst))
}

enum Read<'a> {
    NotFragment,
    Malformed(IpAddr, IpAddr),
    /// An IPv6 "atomic fragment" (offset 0, no more fragments; RFC 6946): the datagram
    /// without its Fragment header.
    Atomic(Vec<u8>),
    Fragment(Fragment<'a>),
}

/// IPv6's Fragment header's next-header number.
const IPV6_FRAGMENT: u8 = 44;

fn read_fragment(packet: &[u8]) -> Read<'_> {
    match packet.first().map(|b| b >> 4) {
        Some(4) if packet.len() >= 20 => {
            let flags_offset = u16::from_be_bytes([packet[6], packet[7]]);
            if flags_offset & 0x3fff == 0 {
                return Read::NotFragment;
            }
            let src = IpAddr::V4(Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]));
            let dst = IpAddr::V4(Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]));
            let Ok(ip) = Ipv4Packet::new_checked(packet) else { return Read::Malformed(src, dst) };
            if !ip.verify_checksum() {
                return Read::Malformed(src, dst);
            }
            let header = usize::from(ip.header_len());
            let end = usize::from(ip.total_len());
            Read::Fragment(Fragment {
                key: Key { src, dst, proto: packet[9], id: u32::from(ip.ident()) },
                offset: usize::from(flags_offset & 0x1fff) * 8,
                more: ip.more_frags(),
                data: &packet[header..end],
                header: &packet[..header],
            })
        }
        Some(6) if packet.len() >= 48 && packet[6] == IPV6_FRAGMENT => {
            let address = |at: usize| {
                let octets: [u8; 16] = packet[at..at + 16].try_into().unwrap_or([0; 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            let (src, dst) = (address(8), address(24));
            let end = 40 + usize::from(u16::from_be_bytes([packet[4], packet[5]]));
            if end < 48 || end > packet.len() {
                return Read::Malformed(src, dst);
            }
            let next = packet[40];
            let offset_more = u16::from_be_bytes([packet[42], packet[43]]);
            let offset = usize::from(offset_more >> 3) * 8;
            let more = offset_more & 1 != 0;
            if offset == 0 && !more {
                let mut whole = Vec::with_capacity(end - 8);
                whole.extend_from_slice(&packet[..40]);
                whole[4..6].copy_from_slice(&((end - 48) as u16).to_be_bytes());
                whole[6] = next;
                whole.extend_from_slice(&packet[48..end]);
                return Read::Atomic(whole);
            }
            let id = u32::from_be_bytes([packet[44], packet[45], packet[46], packet[47]]);
            Read::Fragment(Fragment {
                key: Key { src, dst, proto: next, id },
                offset,
                more,
                data: &packet[48..end],
                header: &packet[..40],
            })
        }
        _ => Read::NotFragment,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 UDP datagram of `len` bytes of payload, whole.
    fn datagram_v4(len: usize) -> Vec<u8> {
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let mut packet = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1000, 2000)
            .write(&mut packet, &payload)
            .unwrap();
        packet
    }

    /// `whole`'s IP payload bytes `from..to` as a fragment (IPv4, id `id`).
    fn fragment_v4(whole: &[u8], id: u16, from: usize, to: usize) -> Vec<u8> {
        let payload = &whole[20..];
        let mut packet = whole[..20].to_vec();
        packet.extend_from_slice(&payload[from..to]);
        let mut ip = Ipv4Packet::new_unchecked(&mut packet[..]);
        ip.set_total_len((20 + to - from) as u16);
        ip.set_ident(id);
        ip.set_frag_offset((from / 8 * 8) as u16);
        ip.set_more_frags(to < payload.len());
        ip.fill_checksum();
        packet
    }

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms as i64)
    }

    #[test]
    fn a_reassembled_tcp_segment_damaged_in_a_fragment_fails_its_checksum() {
        let payload: Vec<u8> = (0..3000).map(|i| (i * 7) as u8).collect();
        let mut whole = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1000, 2000, 1, 4096)
            .write(&mut whole, &payload)
            .unwrap();
        let reassemble = |whole: &[u8]| {
            let mut r = Reassembly::default();
            let _ = r.offer(at(0), &fragment_v4(whole, 9, 1480, whole.len() - 20));
            match r.offer(at(1), &fragment_v4(whole, 9, 0, 1480)) {
                Offer::Whole(datagram) => datagram,
                other => panic!("not reassembled: {other:?}"),
            }
        };
        assert!(tcp_checksum_ok(&reassemble(&whole)));
        let mut damaged = whole.clone();
        damaged[2000] ^= 0x08;
        assert!(!tcp_checksum_ok(&reassemble(&damaged)));
        // Not TCP: not for this check.
        assert!(tcp_checksum_ok(&datagram_v4(100)));
    }

    #[test]
    fn fragments_in_any_order_make_the_datagram_again() {
        let whole = datagram_v4(3000);
        let mut r = Reassembly::default();
        let pieces = [(1480, 2960), (2960, 3008), (0, 1480)];
        let mut got = None;
        for (from, to) in pieces {
            match r.offer(at(0), &fragment_v4(&whole, 7, from, to)) {
                Offer::Whole(d) => got = Some(d),
                Offer::Held { .. } => {}
                Offer::NotFragment => panic!("a fragment"),
            }
        }
        let mut expected = whole.clone();
        let mut ip = Ipv4Packet::new_unchecked(&mut expected[..]);
        ip.set_ident(7);
        ip.fill_checksum();
        assert_eq!(got, Some(expected));
        assert_eq!((r.bytes(), r.datagrams()), (0, 0), "nothing held once whole");
        assert_eq!(r.offer(at(0), &whole), Offer::NotFragment);
    }

    #[test]
    fn an_overlap_drops_the_whole_datagram_and_a_duplicate_is_ignored() {
        let whole = datagram_v4(3000);
        let mut r = Reassembly::default();
        assert!(matches!(r.offer(at(0), &fragment_v4(&whole, 1, 0, 1480)), Offer::Held { .. }));
        assert!(matches!(r.offer(at(0), &fragment_v4(&whole, 1, 0, 1480)), Offer::Held { .. }));
        assert_eq!(r.datagrams(), 1, "a duplicate keeps the datagram");
        let offer = r.offer(at(0), &fragment_v4(&whole, 1, 1472, 2960));
        assert!(matches!(offer, Offer::Held { what, .. } if what.contains("RFC 5722")), "{offer:?}");
        assert_eq!((r.datagrams(), r.bytes(), r.counters.overlaps), (0, 0, 1));
        // The rest of it alone no longer makes a datagram.
        assert!(matches!(r.offer(at(0), &fragment_v4(&whole, 1, 2960, 3008)), Offer::Held { .. }));
        assert_eq!(r.datagrams(), 1);
    }

    #[test]
    fn a_datagram_not_whole_in_30_s_is_forgotten() {
        let whole = datagram_v4(3000);
        let mut r = Reassembly::default();
        r.offer(at(0), &fragment_v4(&whole, 1, 0, 1480));
        r.expire(at(29_999));
        assert_eq!(r.datagrams(), 1);
        r.expire(at(30_000));
        assert_eq!((r.datagrams(), r.bytes(), r.counters.timed_out), (0, 0, 1));
    }

    /// A flood of first fragments from one source fills its quarter of the memory, no
    /// more: another source's datagram still gets through whole.
    #[test]
    fn a_fragment_flood_from_one_source_cannot_crowd_out_another() {
        let big = datagram_v4(60_000);
        let mut r = Reassembly::default();
        for id in 0..1000u16 {
            // The last fragment of a 60 kB datagram: memory for all of it.
            r.offer(at(0), &fragment_v4(&big, id, 59_200, 60_008));
        }
        assert!(r.bytes() <= PER_SOURCE_LIMIT, "{}", r.bytes());
        assert!(r.counters.no_room > 900);
        let mut other = datagram_v4(3000);
        other[15] = 9; // from 10.0.0.9
        let mut ip = Ipv4Packet::new_unchecked(&mut other[..]);
        ip.fill_checksum();
        let mut whole = None;
        for (from, to) in [(0, 1480), (1480, 2960), (2960, 3008)] {
            if let Offer::Whole(d) = r.offer(at(1), &fragment_v4(&other, 5, from, to)) {
                whole = Some(d);
            }
        }
        assert!(whole.is_some(), "the other source's datagram was reassembled");
    }

    #[test]
    fn an_ipv6_atomic_fragment_is_the_datagram_without_its_fragment_header() {
        let mut packet = vec![0x60, 0, 0, 0, 0, 12, IPV6_FRAGMENT, 64];
        packet.extend_from_slice(&[0xfd; 32]);
        packet.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 1]);
        packet.extend_from_slice(&[1, 2, 3, 4]);
        let Offer::Whole(whole) = Reassembly::default().offer(at(0), &packet) else { panic!() };
        assert_eq!((whole.len(), whole[5], whole[6]), (44, 4, 17));
    }
}
