//! The `virtio_net_hdr` a TUN opened with `IFF_VNET_HDR` puts before every packet, and
//! the checksum work that goes with it.
//!
//! With offloads on, the kernel hands the TUN TCP super-segments of up to 64 KiB (GSO)
//! whose checksum it has not computed (`NEEDS_CSUM`: the field holds only the
//! pseudo-header's sum), and takes such packets from us: it computes what is missing
//! and cuts super-segments into segments of `gso_size` where needed. The header stays
//! inside [`TunDevice`](super::TunDevice): above it every frame is a plain IP packet,
//! possibly longer than the MTU, with a complete checksum on receive.
//!
//! Layout (`include/uapi/linux/virtio_net.h`, little-endian on the hosts ustack runs on):
//! `flags: u8, gso_type: u8, hdr_len: u16, gso_size: u16, csum_start: u16, csum_offset: u16`.

use std::fmt;

use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Address, Ipv6Address};

/// Bytes of the header (`TUNSETVNETHDRSZ`'s default, which ustack keeps).
pub const VNET_HDR_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum from `csum_start` on is still to be computed.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the kernel has verified the checksum.
pub const F_DATA_VALID: u8 = 2;

/// `VIRTIO_NET_HDR_GSO_NONE`: an ordinary packet.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`: an IPv4 TCP super-segment.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_UDP`: UDP fragmentation offload (UFO; ustack never asks for it).
pub const GSO_UDP: u8 = 3;
/// `VIRTIO_NET_HDR_GSO_TCPV6`: an IPv6 TCP super-segment.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_UDP_L4`: UDP segmentation offload (USO; ustack never asks for it).
pub const GSO_UDP_L4: u8 = 5;
/// Flag bit on `gso_type`: the super-segment carries ECN's CWR.
pub const GSO_ECN: u8 = 0x80;

/// Offset of the checksum field in a TCP header, and in a UDP header.
const TCP_CSUM_OFFSET: u16 = 16;
const UDP_CSUM_OFFSET: u16 = 6;

/// A parsed `virtio_net_hdr`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// [`F_NEEDS_CSUM`], [`F_DATA_VALID`].
    pub flags: u8,
    /// `GSO_*`, perhaps with [`GSO_ECN`].
    pub gso_type: u8,
    /// Bytes of IP and TCP header in a super-segment (a hint).
    pub hdr_len: u16,
    /// Payload bytes per segment a super-segment is cut into.
    pub gso_size: u16,
    /// Where the checksummed part begins (the TCP or UDP header).
    pub csum_start: u16,
    /// Where the checksum field is, from `csum_start`.
    pub csum_offset: u16,
}

/// Why a header, or the packet it describes, cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VnetError {
    /// Fewer bytes than a header.
    Short(usize),
    /// A GSO type ustack did not ask for (it enables TCP offloads only).
    GsoType(u8),
    /// A TCP packet the kernel did not vouch for (neither [`F_NEEDS_CSUM`] nor
    /// [`F_DATA_VALID`]) whose checksum is wrong.
    BadChecksum,
    /// `csum_start`/`csum_offset` point outside the packet.
    ChecksumRange {
        /// The header's `csum_start`.
        start: u16,
        /// The header's `csum_offset`.
        offset: u16,
        /// The packet's length.
        len: usize,
    },
}

impl fmt::Display for VnetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VnetError::Short(n) => write!(f, "virtio_net_hdr: {n} bytes, need {VNET_HDR_LEN}"),
            VnetError::GsoType(t) => write!(f, "virtio_net_hdr: unexpected GSO type {t:#x}"),
            VnetError::BadChecksum => write!(f, "TCP checksum wrong (the kernel had not verified it)"),
            VnetError::ChecksumRange { start, offset, len } => {
                write!(f, "virtio_net_hdr: checksum at {start}+{offset} outside a {len}-byte packet")
            }
        }
    }
}

impl std::error::Error for VnetError {}

impl VnetHdr {
    /// Parses the first [`VNET_HDR_LEN`] bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<VnetHdr, VnetError> {
        let b: &[u8; VNET_HDR_LEN] =
            bytes.get(..VNET_HDR_LEN).and_then(|b| b.try_into().ok()).ok_or(VnetError::Short(bytes.len()))?;
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Ok(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    /// The header's wire form.
    pub fn to_bytes(self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }

    /// Whether the packet is a TCP super-segment (any size; the kernel may mark one
    /// that fits a single segment).
    pub fn is_gso(self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }

    /// Makes `packet`, received with this header, an ordinary IP packet whose TCP checksum
    /// is known to be right, so that the stack need not check it again (the device says so
    /// in its capabilities). A super-segment stays one packet (its IP length covers all of
    /// it, as tcpdump shows it on the kernel side).
    ///
    /// What the kernel's `virtio_net_hdr_from_skb` tells: `NEEDS_CSUM` is a packet that went
    /// from memory to memory (the kernel's own TCP, or a guest's), whose checksum was never
    /// computed — it is computed here, and there is nothing to verify; `DATA_VALID` is one
    /// whose checksum the kernel or a NIC verified. Anything else (a forwarded packet whose
    /// checksum nobody checked) has its TCP checksum verified here: a wrong one is
    /// [`VnetError::BadChecksum`]. A TCP packet this cannot find the header of (an IPv4 or
    /// IPv6 fragment) goes on unverified: the stack verifies what it reassembles.
    pub fn complete_rx(self, packet: &mut [u8]) -> Result<(), VnetError> {
        match self.gso_type & !GSO_ECN {
            GSO_NONE | GSO_TCPV4 | GSO_TCPV6 => {}
            other => return Err(VnetError::GsoType(other)),
        }
        if self.flags & F_NEEDS_CSUM == 0 {
            if self.flags & F_DATA_VALID == 0 && !tcp_checksum_ok(packet) {
                return Err(VnetError::BadChecksum);
            }
            return Ok(());
        }
        let start = usize::from(self.csum_start);
        let field = start + usize::from(self.csum_offset);
        if field + 2 > packet.len() || start >= packet.len() {
            return Err(VnetError::ChecksumRange {
                start: self.csum_start,
                offset: self.csum_offset,
                len: packet.len(),
            });
        }
        // The field holds the pseudo-header's sum, so summing everything from `start`
        // (the field included) and complementing gives the final checksum.
        let sum = !fold(sum(&packet[start..]));
        // UDP (the only other NEEDS_CSUM user) sends an all-zero sum as all ones.
        let sum = if sum == 0 && self.csum_offset == UDP_CSUM_OFFSET { 0xffff } else { sum };
        packet[field..field + 2].copy_from_slice(&sum.to_be_bytes());
        Ok(())
    }

    /// [`VnetHdr::plan_tx`], with the checksum field set in `packet`.
    pub fn for_tx(packet: &mut [u8], mtu: usize) -> VnetHdr {
        let (hdr, field) = VnetHdr::plan_tx(packet, mtu);
        if let Some((at, value)) = field {
            packet[at..at + 2].copy_from_slice(&value);
        }
        hdr
    }

    /// The header for sending `packet` (a plain IP packet from the stack, whose TCP or
    /// UDP checksum need not be computed) on a TUN of `mtu`, and what its checksum field
    /// must hold instead (offset, bytes): for TCP and UDP the checksum is left to the
    /// kernel (`NEEDS_CSUM`, the field set to the pseudo-header's sum); a TCP segment
    /// longer than `mtu` becomes a super-segment the kernel cuts into segments that fit
    /// it. Anything else (ICMP, a header ustack cannot follow) goes as it is, with a zero
    /// header. The packet is not changed, so the device can write it without a copy.
    pub fn plan_tx(packet: &[u8], mtu: usize) -> (VnetHdr, Option<(usize, [u8; 2])>) {
        let none = (VnetHdr::default(), None);
        let Some(l4) = Transport::find(packet) else { return none };
        let (csum_offset, tcp) = match l4.protocol {
            IpProtocol::Tcp => (TCP_CSUM_OFFSET, true),
            IpProtocol::Udp => (UDP_CSUM_OFFSET, false),
            _ => return none,
        };
        let start = l4.start;
        let field = start + usize::from(csum_offset);
        let l4_len = packet.len() - start;
        if field + 2 > packet.len() {
            return none;
        }
        let (Ok(csum_start), Ok(l4_len32)) = (u16::try_from(start), u32::try_from(l4_len)) else {
            return none;
        };
        let pseudo = pseudo_header(&l4.src, &l4.dst, l4.protocol, l4_len32);
        let mut hdr = VnetHdr { flags: F_NEEDS_CSUM, csum_start, csum_offset, ..VnetHdr::default() };
        if tcp && packet.len() > mtu {
            let tcp_header = usize::from(packet[start + 12] >> 4) * 4;
            let headers = start + tcp_header;
            // The segment size a packet of `mtu` bytes with these headers carries.
            let gso_size = mtu.saturating_sub(headers);
            if let (Ok(hdr_len), Ok(gso_size)) = (u16::try_from(headers), u16::try_from(gso_size))
                && gso_size > 0
                && headers <= packet.len()
            {
                hdr.gso_type = if l4.src.version() == smoltcp::wire::IpVersion::Ipv4 { GSO_TCPV4 } else { GSO_TCPV6 };
                hdr.hdr_len = hdr_len;
                hdr.gso_size = gso_size;
            }
        }
        (hdr, Some((field, pseudo.to_be_bytes())))
    }
}

/// The ones' complement sum (RFC 1071) of `data` as big-endian 16-bit words, folded or
/// not (callers [`fold`] it).
///
/// Four bytes at a time, as native-endian words, into a 64-bit accumulator that cannot
/// overflow (a 64 KiB packet adds at most 2^14 words of 2^32): no carry to chase from one
/// word to the next, so the compiler vectorizes the loop. Byte order does not matter to a
/// ones' complement sum but for swapping its result (RFC 1071, 2.(B)). Every received
/// super-segment is summed once, so the loop is also built for AVX2, used where the CPU
/// has it: about five times the speed of the SSE2 build x86-64 targets by default.
fn sum(data: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, the only feature the function is built with.
        return finish(unsafe { sum_words_avx2(data) });
    }
    finish(sum_words(data))
}

/// [`sum_words`]' native-endian sum as [`sum`]'s big-endian one.
fn finish(native: u64) -> u64 {
    u64::from(u16::from_be(fold(native)))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sum_words_avx2(data: &[u8]) -> u64 {
    sum_words(data)
}

/// See [`sum`]: the native-endian sum of `data`'s 32-bit words, unfolded.
#[inline(always)]
fn sum_words(data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(4);
    let mut acc: u64 = 0;
    for word in &mut words {
        acc += u64::from(u32::from_ne_bytes(word.try_into().expect("4 bytes")));
    }
    // The last 0–3 bytes, zero-padded: an odd last byte is the high half of its word.
    let mut tail = [0u8; 4];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    acc + u64::from(u32::from_ne_bytes(tail))
}

/// Folds a [`sum`] into 16 bits.
fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The pseudo-header's sum, folded, not complemented: what `NEEDS_CSUM` wants in the field.
fn pseudo_header(src: &IpAddress, dst: &IpAddress, protocol: IpProtocol, len: u32) -> u16 {
    let addrs = match (src, dst) {
        (IpAddress::Ipv4(s), IpAddress::Ipv4(d)) => {
            u64::from(fold(sum(&s.octets()))) + u64::from(fold(sum(&d.octets())))
        }
        (IpAddress::Ipv6(s), IpAddress::Ipv6(d)) => {
            u64::from(fold(sum(&s.octets()))) + u64::from(fold(sum(&d.octets())))
        }
        _ => 0,
    };
    fold(addrs + u64::from(u8::from(protocol)) + u64::from(len >> 16) + u64::from(len & 0xffff))
}

/// Whether `packet`'s TCP checksum is right; true for anything that is not a TCP packet
/// whose header can be found here. Not found: an IPv4 or IPv6 fragment (the engine
/// reassembles it and verifies the datagram), a header chain this does not follow, or a
/// packet shorter than its IP length (smoltcp drops it).
fn tcp_checksum_ok(packet: &[u8]) -> bool {
    let Some(&first) = packet.first() else { return true };
    let (start, end, src, dst) = match first >> 4 {
        4 if packet.len() >= 20 => {
            let ihl = usize::from(first & 0x0f) * 4;
            let end = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
            let fragment = u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff != 0;
            if packet[9] != u8::from(IpProtocol::Tcp) || fragment || ihl < 20 || end < ihl || end > packet.len() {
                return true;
            }
            let src: [u8; 4] = packet[12..16].try_into().expect("4 bytes");
            let dst: [u8; 4] = packet[16..20].try_into().expect("4 bytes");
            (ihl, end, IpAddress::Ipv4(Ipv4Address::from(src)), IpAddress::Ipv4(Ipv4Address::from(dst)))
        }
        6 if packet.len() >= 40 => {
            let end = 40 + usize::from(u16::from_be_bytes([packet[4], packet[5]]));
            if end > packet.len() {
                return true;
            }
            // Hop-by-hop, destination options and a spent routing header (the destination
            // is the final one, as the pseudo-header needs) may come before TCP; 8 at most.
            let (mut next, mut at) = (packet[6], 40);
            for _ in 0..8 {
                match next {
                    0 | 60 if at + 2 <= end => {
                        next = packet[at];
                        at += (usize::from(packet[at + 1]) + 1) * 8;
                    }
                    43 if at + 4 <= end && packet[at + 3] == 0 => {
                        next = packet[at];
                        at += (usize::from(packet[at + 1]) + 1) * 8;
                    }
                    _ => break,
                }
            }
            if next != u8::from(IpProtocol::Tcp) || at > end {
                return true;
            }
            let src: [u8; 16] = packet[8..24].try_into().expect("16 bytes");
            let dst: [u8; 16] = packet[24..40].try_into().expect("16 bytes");
            (at, end, IpAddress::Ipv6(Ipv6Address::from(src)), IpAddress::Ipv6(Ipv6Address::from(dst)))
        }
        _ => return true,
    };
    let Ok(len) = u32::try_from(end - start) else { return true };
    let pseudo = pseudo_header(&src, &dst, IpProtocol::Tcp, len);
    fold(u64::from(pseudo) + sum(&packet[start..end])) == 0xffff
}

/// Where an IP packet's TCP or UDP header starts, and the addresses of its pseudo-header.
struct Transport {
    protocol: IpProtocol,
    start: usize,
    src: IpAddress,
    dst: IpAddress,
}

impl Transport {
    /// None for anything but an unfragmented IPv4 packet, or an IPv6 packet without
    /// extension headers, whose lengths agree with `packet`.
    fn find(packet: &[u8]) -> Option<Transport> {
        match packet.first()? >> 4 {
            4 => {
                let ihl = usize::from(packet[0] & 0x0f) * 4;
                if ihl < 20
                    || packet.len() < ihl
                    || usize::from(u16::from_be_bytes([packet[2], packet[3]])) != packet.len()
                {
                    return None;
                }
                // More fragments, or a fragment offset: the checksum spans fragments.
                if u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff != 0 {
                    return None;
                }
                let src: [u8; 4] = packet[12..16].try_into().ok()?;
                let dst: [u8; 4] = packet[16..20].try_into().ok()?;
                Some(Transport {
                    protocol: IpProtocol::from(packet[9]),
                    start: ihl,
                    src: IpAddress::Ipv4(Ipv4Address::from(src)),
                    dst: IpAddress::Ipv4(Ipv4Address::from(dst)),
                })
            }
            6 => {
                if packet.len() < 40 || usize::from(u16::from_be_bytes([packet[4], packet[5]])) + 40 != packet.len() {
                    return None;
                }
                let src: [u8; 16] = packet[8..24].try_into().ok()?;
                let dst: [u8; 16] = packet[24..40].try_into().ok()?;
                Some(Transport {
                    protocol: IpProtocol::from(packet[6]),
                    start: 40,
                    src: IpAddress::Ipv6(Ipv6Address::from(src)),
                    dst: IpAddress::Ipv6(Ipv6Address::from(dst)),
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber};

    const SRC: Ipv4Address = Ipv4Address::new(10, 7, 0, 1);
    const DST: Ipv4Address = Ipv4Address::new(10, 7, 0, 2);

    /// An IPv4 TCP packet with `payload`, its checksum computed.
    fn tcp_packet(payload: &[u8]) -> Vec<u8> {
        let tcp = TcpRepr {
            src_port: 5000,
            dst_port: 80,
            control: TcpControl::Psh,
            seq_number: TcpSeqNumber(1000),
            ack_number: Some(TcpSeqNumber(7)),
            window_len: 512,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload,
        };
        let ip = Ipv4Repr {
            src_addr: SRC,
            dst_addr: DST,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let mut buf = vec![0; ip.buffer_len() + tcp.buffer_len()];
        let caps = ChecksumCapabilities::default();
        ip.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]), &caps);
        tcp.emit(&mut TcpPacket::new_unchecked(&mut buf[20..]), &SRC.into(), &DST.into(), &caps);
        buf
    }

    fn checksum_ok(packet: &[u8]) -> bool {
        TcpPacket::new_checked(&packet[20..]).unwrap().verify_checksum(&SRC.into(), &DST.into())
    }

    #[test]
    fn the_sum_is_rfc_1071s_for_every_length_and_alignment() {
        let naive = |data: &[u8]| -> u16 {
            let mut s: u32 = 0;
            for pair in data.chunks(2) {
                s += u32::from(u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]));
                s = (s & 0xffff) + (s >> 16);
            }
            s as u16
        };
        let bytes: Vec<u8> = (0..200u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 | 0x80).collect();
        for start in 0..4 {
            for len in 0..bytes.len() - start {
                let data = &bytes[start..start + len];
                assert_eq!(fold(sum(data)), naive(data), "len {len}");
                // The build without AVX2 too, wherever the CPU has it.
                assert_eq!(fold(finish(sum_words(data))), naive(data), "len {len}");
            }
        }
        assert_eq!(fold(sum(&[0xff; 4096])), 0xffff);
    }

    #[test]
    fn header_round_trips() {
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV6 | GSO_ECN,
            hdr_len: 72,
            gso_size: 1428,
            csum_start: 40,
            csum_offset: 16,
        };
        assert_eq!(VnetHdr::parse(&hdr.to_bytes()), Ok(hdr));
        assert!(hdr.is_gso());
        assert!(!VnetHdr::default().is_gso());
    }

    #[test]
    fn short_header_is_an_error() {
        for len in 0..VNET_HDR_LEN {
            assert_eq!(VnetHdr::parse(&[0; VNET_HDR_LEN][..len]), Err(VnetError::Short(len)));
        }
    }

    #[test]
    fn a_tx_header_completed_as_the_kernel_would_gives_the_right_checksum() {
        let payload: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        let mut packet = tcp_packet(&payload);
        assert!(checksum_ok(&packet));
        packet[36] ^= 0x55; // any garbage where the checksum goes: for_tx replaces it
        let hdr = VnetHdr::for_tx(&mut packet, 1500);
        assert_eq!((hdr.flags, hdr.gso_type, hdr.csum_start, hdr.csum_offset), (F_NEEDS_CSUM, GSO_TCPV4, 20, 16));
        assert_eq!((hdr.hdr_len, hdr.gso_size), (40, 1460));
        // Our receive side does what the kernel does with NEEDS_CSUM.
        let rx = VnetHdr { gso_type: GSO_NONE, ..hdr };
        rx.complete_rx(&mut packet).unwrap();
        assert!(checksum_ok(&packet));
    }

    #[test]
    fn a_tcp_checksum_nobody_verified_is_verified_and_one_the_kernel_vouched_for_is_not() {
        let payload: Vec<u8> = (0..3000u32).map(|i| (i * 13) as u8).collect();
        let good = tcp_packet(&payload);
        let mut bad = good.clone();
        bad[100] ^= 0x04;
        let unchecked = VnetHdr::default();
        assert_eq!(unchecked.complete_rx(&mut good.clone()), Ok(()));
        assert_eq!(unchecked.complete_rx(&mut bad.clone()), Err(VnetError::BadChecksum));
        // Verified by the kernel or a NIC: taken as it is.
        let valid = VnetHdr { flags: F_DATA_VALID, ..VnetHdr::default() };
        assert_eq!(valid.complete_rx(&mut bad.clone()), Ok(()));
        // A fragment's checksum spans fragments: the engine verifies the datagram.
        let mut fragment = bad.clone();
        fragment[6] |= 0x20; // more fragments
        assert_eq!(unchecked.complete_rx(&mut fragment), Ok(()));
        // Not TCP (UDP's checksum smoltcp still verifies): not looked at.
        let mut udp = bad.clone();
        udp[9] = 17;
        assert_eq!(unchecked.complete_rx(&mut udp), Ok(()));
    }

    #[test]
    fn an_ipv6_tcp_checksum_is_found_behind_extension_headers() {
        let (src, dst) = (Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 1), Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 2));
        let payload = b"behind a destination options header";
        let tcp = TcpRepr {
            src_port: 5000,
            dst_port: 80,
            control: TcpControl::Psh,
            seq_number: TcpSeqNumber(1),
            ack_number: Some(TcpSeqNumber(2)),
            window_len: 512,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload,
        };
        let mut segment = vec![0; tcp.buffer_len()];
        let caps = ChecksumCapabilities::default();
        tcp.emit(&mut TcpPacket::new_unchecked(&mut segment[..]), &src.into(), &dst.into(), &caps);
        // Fixed header, then an 8-byte destination options header (PadN), then TCP.
        let mut good = vec![0x60, 0, 0, 0];
        good.extend_from_slice(&u16::try_from(8 + segment.len()).unwrap().to_be_bytes());
        good.extend_from_slice(&[60, 64]);
        good.extend_from_slice(&src.octets());
        good.extend_from_slice(&dst.octets());
        good.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
        good.extend_from_slice(&segment);
        let mut bad = good.clone();
        *bad.last_mut().unwrap() ^= 0x10;
        assert_eq!(VnetHdr::default().complete_rx(&mut good), Ok(()));
        assert_eq!(VnetHdr::default().complete_rx(&mut bad), Err(VnetError::BadChecksum));
    }

    #[test]
    fn a_packet_within_the_mtu_is_not_a_super_segment() {
        let mut packet = tcp_packet(b"hello");
        let hdr = VnetHdr::for_tx(&mut packet, 1500);
        assert_eq!((hdr.flags, hdr.gso_type, hdr.gso_size), (F_NEEDS_CSUM, GSO_NONE, 0));
    }

    #[test]
    fn non_ip_or_inconsistent_packets_get_a_zero_header() {
        for mut bad in [vec![], vec![0x45], vec![0x60; 39], vec![0x12; 100], {
            let mut p = tcp_packet(b"x");
            p[3] += 1; // IP total length disagrees with the packet
            p
        }] {
            assert_eq!(VnetHdr::for_tx(&mut bad, 1500), VnetHdr::default());
        }
    }

    #[test]
    fn bad_rx_headers_are_errors_not_panics() {
        let mut packet = tcp_packet(b"data");
        let len = packet.len();
        let cases = [
            VnetHdr { flags: F_NEEDS_CSUM, csum_start: 20, csum_offset: 200, ..VnetHdr::default() },
            VnetHdr { flags: F_NEEDS_CSUM, csum_start: u16::MAX, csum_offset: u16::MAX, ..VnetHdr::default() },
            VnetHdr { flags: F_NEEDS_CSUM, csum_start: len as u16, csum_offset: 0, ..VnetHdr::default() },
        ];
        for hdr in cases {
            assert!(matches!(hdr.complete_rx(&mut packet), Err(VnetError::ChecksumRange { .. })), "{hdr:?}");
        }
        let udp_gso = VnetHdr { gso_type: GSO_UDP_L4, ..VnetHdr::default() };
        assert_eq!(udp_gso.complete_rx(&mut packet), Err(VnetError::GsoType(GSO_UDP_L4)));
        assert_eq!(VnetHdr { gso_type: GSO_UDP, ..udp_gso }.complete_rx(&mut packet), Err(VnetError::GsoType(GSO_UDP)));
        // Arbitrary packets nobody vouched for are verified without a panic, whatever
        // their lengths and extension headers claim.
        let mut x = 0x9e37_79b9_u32;
        for len in 0..600usize {
            let mut bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            if let Some(first) = bytes.first_mut() {
                *first = if len % 2 == 0 { 0x45 } else { 0x60 };
            }
            // Mostly lengths that agree, so the extension headers are walked.
            if len % 2 == 0 && len >= 20 && len % 3 != 0 {
                bytes[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                bytes[6..8].copy_from_slice(&[0, 0]);
                bytes[9] = 6;
            }
            if len % 2 == 1 && len >= 40 && len % 3 != 0 {
                bytes[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
                bytes[6] = [6, 0, 43, 60][len / 2 % 4];
            }
            let _ = VnetHdr::default().complete_rx(&mut bytes);
        }
        // Arbitrary headers on arbitrary bytes never panic.
        for seed in 0..2000u32 {
            let bytes: Vec<u8> =
                (0..VNET_HDR_LEN as u32).map(|i| (seed.wrapping_mul(2654435761) >> (i % 24)) as u8).collect();
            let hdr = VnetHdr::parse(&bytes).unwrap();
            let _ = hdr.complete_rx(&mut packet.clone());
            let _ = hdr.complete_rx(&mut []);
        }
    }
}
