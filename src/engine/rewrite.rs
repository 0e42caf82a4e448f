//! Rewriting TCP sequence numbers in place, between smoltcp's numbering and the wire's.
//!
//! A connection's `shift` is smoltcp's ISN minus the ISN ustack put on the wire (an
//! RFC 6528 ISN or a SYN cookie). Outgoing segments carry `seq - shift`; incoming ones
//! have `shift` added to their acknowledgment number and SACK blocks (which name our
//! sequence space). The checksum is patched incrementally (RFC 1624), so a rewrite costs
//! a few arithmetic operations, not a pass over the payload.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The IP version of a packet; None for an empty one (smoltcp's `IpVersion::of_packet`
/// indexes the first byte unchecked, and nothing from the wire may panic the stack).
pub fn ip_version(packet: &[u8]) -> Option<smoltcp::wire::IpVersion> {
    if packet.is_empty() {
        return None;
    }
    smoltcp::wire::IpVersion::of_packet(packet).ok()
}

/// Where the TCP header of an IP packet starts, and its endpoints (source, destination);
/// None for anything but a plain IPv4/IPv6 packet carrying TCP (IPv6 extension headers
/// and IP fragments are left alone).
pub fn tcp_header(packet: &[u8]) -> Option<(usize, SocketAddr, SocketAddr)> {
    let (offset, src, dst): (usize, IpAddr, IpAddr) = match packet.first()? >> 4 {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let fragmented = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]) & 0x3fff != 0;
            if ihl < 20 || *packet.get(9)? != 6 || fragmented {
                return None;
            }
            let src: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            (ihl, Ipv4Addr::from(src).into(), Ipv4Addr::from(dst).into())
        }
        6 => {
            if *packet.get(6)? != 6 {
                return None;
            }
            let src: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            (40, Ipv6Addr::from(src).into(), Ipv6Addr::from(dst).into())
        }
        _ => return None,
    };
    let tcp = packet.get(offset..)?;
    let data_offset = usize::from(*tcp.get(12)? >> 4) * 4;
    if data_offset < 20 || tcp.len() < data_offset {
        return None;
    }
    let port = |at: usize| u16::from_be_bytes([tcp[at], tcp[at + 1]]);
    Some((offset, SocketAddr::new(src, port(0)), SocketAddr::new(dst, port(2))))
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// RFC 1624's incremental update: the checksum after a 32-bit word changes old → new.
fn patch_checksum(tcp: &mut [u8], old: u32, new: u32) {
    let mut sum = u32::from(!u16::from_be_bytes([tcp[16], tcp[17]]));
    for (o, n) in [(old >> 16, new >> 16), (old & 0xffff, new & 0xffff)] {
        sum += (!o & 0xffff) + n;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    tcp[16..18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// [`patch_checksum`] for a 16-bit word.
fn patch_checksum16(tcp: &mut [u8], old: u16, new: u16) {
    let mut sum = u32::from(!u16::from_be_bytes([tcp[16], tcp[17]])) + u32::from(!old) + u32::from(new);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    tcp[16..18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

fn set_u32(tcp: &mut [u8], at: usize, value: u32) {
    let old = read_u32(tcp, at);
    tcp[at..at + 4].copy_from_slice(&value.to_be_bytes());
    patch_checksum(tcp, old, value);
}

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// The flags byte of the TCP segment at `offset`.
pub fn flags(packet: &[u8], offset: usize) -> u8 {
    packet[offset + 13]
}

/// The acknowledgment number and window field of a TCP header (`tcp` starts at it).
pub fn ack_and_window(tcp: &[u8]) -> (u32, u16) {
    (read_u32(tcp, 8), u16::from_be_bytes([tcp[14], tcp[15]]))
}

/// Whether sequence number `a` comes after `b` (modulo 2^32, RFC 9293's comparison).
pub fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// The SYN and ACK flags and the sequence number of the TCP segment at `offset`.
pub fn flags_and_seq(packet: &[u8], offset: usize) -> (bool, bool, u32) {
    let tcp = &packet[offset..];
    (tcp[13] & SYN != 0, tcp[13] & ACK != 0, read_u32(tcp, 4))
}

/// What a segment tells about its sender's position: the sequence number just after it
/// (counting SYN and FIN), its acknowledgment number (if ACK is set), and its window field.
pub fn position(packet: &[u8], offset: usize) -> (u32, Option<u32>, u16) {
    let tcp = &packet[offset..];
    let header = usize::from(tcp[12] >> 4) * 4;
    let ip_payload = match packet[0] >> 4 {
        4 => usize::from(u16::from_be_bytes([packet[2], packet[3]])).saturating_sub(offset),
        _ => usize::from(u16::from_be_bytes([packet[4], packet[5]])),
    };
    let flags = tcp[13];
    let len = ip_payload.saturating_sub(header) as u32 + u32::from(flags & SYN != 0) + u32::from(flags & FIN != 0);
    let (ack, window) = ack_and_window(tcp);
    (read_u32(tcp, 4).wrapping_add(len), (flags & ACK != 0).then_some(ack), window)
}

/// The options of a TCP header (`tcp` starts at it), up to its end or the first one
/// smoltcp cannot parse.
fn options(tcp: &[u8]) -> impl Iterator<Item = smoltcp::wire::TcpOption<'_>> {
    use smoltcp::wire::{TcpOption, TcpPacket};
    let mut rest = TcpPacket::new_checked(tcp).map_or(&[][..], |packet| {
        let header = usize::from(packet.header_len()).min(tcp.len());
        &tcp[20.min(header)..header]
    });
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (next, option) = TcpOption::parse(rest).ok()?;
        rest = next;
        (option != TcpOption::EndOfList).then_some(option)
    })
}

/// The window scale and MSS options of a SYN's TCP header (`tcp` starts at it), if present.
pub fn syn_options(tcp: &[u8]) -> (Option<u8>, Option<u16>) {
    use smoltcp::wire::TcpOption;
    let (mut scale, mut mss) = (None, None);
    for option in options(tcp) {
        match option {
            TcpOption::WindowScale(s) => scale = Some(s),
            TcpOption::MaxSegmentSize(m) => mss = Some(m),
            _ => {}
        }
    }
    (scale, mss)
}

/// Whether a TCP header (`tcp` starts at it) carries SACK blocks.
pub fn has_sack_blocks(tcp: &[u8]) -> bool {
    options(tcp).any(
        |option| matches!(option, smoltcp::wire::TcpOption::SackRange(ranges) if ranges.iter().any(Option::is_some)),
    )
}

/// Sets the window field of the TCP segment at `offset`.
pub fn set_window(packet: &mut [u8], offset: usize, window: u16) {
    let tcp = &mut packet[offset..];
    let word = read_u32(tcp, 12);
    set_u32(tcp, 12, (word & 0xffff_0000) | u32::from(window));
}

/// Sets the sequence number of the TCP segment at `offset`.
pub fn set_seq(packet: &mut [u8], offset: usize, seq: u32) {
    set_u32(&mut packet[offset..], 4, seq);
}

/// Sets the acknowledgment number of the TCP segment at `offset`.
pub fn set_ack(packet: &mut [u8], offset: usize, ack: u32) {
    set_u32(&mut packet[offset..], 8, ack);
}

/// Makes a TCP option area smoltcp can parse, meaning what Linux makes of it: an option
/// whose length field is below 2 or runs past the header ends Linux's parsing (the rest is
/// ignored, `tcp_parse_options`: "silly options", "don't parse partial options"), and a
/// known option of the wrong length (an MSS of 3 bytes, say) is skipped. smoltcp 0.14
/// rejects the whole segment for either (`TcpOption::parse` returns an error, and
/// `TcpRepr::parse` with it), so a SYN Linux answers would go unanswered. What Linux
/// ignores becomes NOPs here, the checksum patched (a wrong one stays wrong). Returns
/// whether anything changed.
pub fn sanitize_options(packet: &mut [u8], offset: usize) -> bool {
    let Some(tcp) = packet.get_mut(offset..) else { return false };
    let end = (usize::from(tcp.get(12).copied().unwrap_or(0) >> 4) * 4).min(tcp.len());
    let mut at = 20;
    let mut changed = false;
    while at < end {
        let kind = tcp[at];
        if kind == 0 {
            break;
        }
        if kind == 1 {
            at += 1;
            continue;
        }
        let len = tcp.get(at + 1).map_or(0, |&l| usize::from(l));
        if at + 1 >= end || len < 2 || at + len > end {
            nop_out(tcp, at, end);
            return true;
        }
        let right_length = match kind {
            2 => len == 4,
            3 => len == 3,
            4 => len == 2,
            5 => len >= 10 && (len - 2) % 8 == 0,
            _ => true,
        };
        if !right_length {
            nop_out(tcp, at, at + len);
            changed = true;
        }
        at += len;
    }
    changed
}

/// Turns bytes `from..to` of a TCP header into NOPs, the checksum patched per 16-bit word.
fn nop_out(tcp: &mut [u8], from: usize, to: usize) {
    let mut word_start = from & !1;
    while word_start < to {
        let old = u16::from_be_bytes([tcp[word_start], tcp[word_start + 1]]);
        tcp[word_start.max(from)..(word_start + 2).min(to)].fill(1);
        let new = u16::from_be_bytes([tcp[word_start], tcp[word_start + 1]]);
        patch_checksum16(tcp, old, new);
        word_start += 2;
    }
}

/// An outgoing segment: `seq -= shift`.
pub fn outgoing(packet: &mut [u8], offset: usize, shift: u32) {
    let tcp = &mut packet[offset..];
    let seq = read_u32(tcp, 4);
    set_u32(tcp, 4, seq.wrapping_sub(shift));
}

/// An incoming segment: `ack += shift`, and every SACK block edge too.
pub fn incoming(packet: &mut [u8], offset: usize, shift: u32) {
    let tcp = &mut packet[offset..];
    if tcp[13] & ACK != 0 {
        let ack = read_u32(tcp, 8);
        set_u32(tcp, 8, ack.wrapping_add(shift));
    }
    if let Some(blocks) = sack_option(tcp) {
        for edge in blocks.step_by(4) {
            let value = read_u32(tcp, edge);
            set_u32(tcp, edge, value.wrapping_add(shift));
        }
    }
}

/// Where the SACK blocks of the TCP header `tcp` (from its first byte) lie: the option's
/// bytes after its kind and length, whole 4-byte edges only. The option list is read up to
/// its end, or up to an option whose length is impossible.
pub fn sack_option(tcp: &[u8]) -> Option<std::ops::Range<usize>> {
    let end = (usize::from(*tcp.get(12)? >> 4) * 4).min(tcp.len());
    let mut at = 20;
    while at < end {
        match tcp[at] {
            0 => return None,
            1 => at += 1,
            kind => {
                let len = usize::from(*tcp.get(at + 1)?);
                if len < 2 || at + len > end {
                    return None;
                }
                if kind == 5 {
                    let edges = (len - 2) / 4 * 4;
                    return Some(at + 2..at + 2 + edges);
                }
                at += len;
            }
        }
    }
    None
}

/// Splits a segment carrying data and a FIN in two: returns the data without the FIN, and
/// leaves in `packet` the FIN alone, at the sequence number after the data. None, with
/// `packet` untouched, for any other segment.
///
/// smoltcp 0.14 judges a segment's acceptability by its data alone (`segment_end = seq +
/// payload.len()`), so data it already has followed by a FIN at RCV.NXT is dropped as out
/// of window, FIN and all — which after a lost FIN is exactly what a retransmission looks
/// like. Given the two halves, it drops the stale data and takes the FIN. For a segment
/// it would have taken whole, the halves have the same effect: it reads the data, then
/// the FIN at the end of it.
pub fn split_fin(packet: &mut Vec<u8>, offset: usize, src: IpAddr, dst: IpAddr) -> Option<Vec<u8>> {
    let flags = *packet.get(offset + 13)?;
    if flags & FIN == 0 || flags & (SYN | RST) != 0 {
        return None;
    }
    let header = usize::from(packet[offset + 12] >> 4) * 4;
    let end = segment_end(packet);
    let data_len = end.checked_sub(offset + header).filter(|&n| n > 0)?;

    let mut data = packet[..end].to_vec();
    let word = read_u32(&data[offset..], 12);
    set_u32(&mut data[offset..], 12, word & !(u32::from(FIN) << 16));

    let seq = read_u32(&packet[offset..], 4);
    keep_header_only(packet, offset, seq.wrapping_add(data_len as u32), src, dst);
    Some(data)
}

/// A copy of the TCP segment at `offset` without its data, FIN, PSH or URG, at sequence
/// number `seq`: its acknowledgment, window and options alone.
pub fn ack_alone(packet: &[u8], offset: usize, seq: u32, src: IpAddr, dst: IpAddr) -> Vec<u8> {
    const PSH_URG: u8 = 0x08 | 0x20;
    let header = usize::from(packet[offset + 12] >> 4) * 4;
    let mut ack = packet[..offset + header].to_vec();
    ack[offset + 13] &= !(FIN | PSH_URG);
    keep_header_only(&mut ack, offset, seq, src, dst);
    ack
}

/// Where the IP packet's stated length ends it (at most the buffer's end).
fn segment_end(packet: &[u8]) -> usize {
    let length = |at: usize| usize::from(u16::from_be_bytes([packet[at], packet[at + 1]]));
    let stated = if packet[0] >> 4 == 4 { length(2) } else { 40 + length(4) };
    stated.min(packet.len())
}

/// Cuts the segment at `offset` to its TCP header, at sequence number `seq`, and makes the
/// IP length and the checksums right.
fn keep_header_only(packet: &mut Vec<u8>, offset: usize, seq: u32, src: IpAddr, dst: IpAddr) {
    use smoltcp::wire::{IpAddress, Ipv4Packet, Ipv6Packet, TcpPacket};
    let header = usize::from(packet[offset + 12] >> 4) * 4;
    packet.truncate(offset + header);
    packet[offset + 4..offset + 8].copy_from_slice(&seq.to_be_bytes());
    if packet[0] >> 4 == 4 {
        let mut ip = Ipv4Packet::new_unchecked(&mut packet[..]);
        ip.set_total_len((offset + header) as u16);
        ip.fill_checksum();
    } else {
        Ipv6Packet::new_unchecked(&mut packet[..]).set_payload_len(header as u16);
    }
    TcpPacket::new_unchecked(&mut packet[offset..]).fill_checksum(&IpAddress::from(src), &IpAddress::from(dst));
}

/// Drops the first `k` bytes of the payload of the TCP segment at `offset` (which must
/// carry at least `k`), moving its sequence number on by `k`: what is left of a segment the
/// peer acknowledged in part. Lengths and checksums are made right.
pub fn trim_front(packet: &mut Vec<u8>, offset: usize, k: usize) {
    use smoltcp::wire::{IpAddress, Ipv4Address, Ipv4Packet, Ipv6Address, Ipv6Packet, TcpPacket};
    let header = usize::from(packet[offset + 12] >> 4) * 4;
    let seq = read_u32(&packet[offset..], 4);
    packet.drain(offset + header..offset + header + k);
    packet[offset + 4..offset + 8].copy_from_slice(&seq.wrapping_add(k as u32).to_be_bytes());
    let (src, dst) = if packet[0] >> 4 == 4 {
        let mut ip = Ipv4Packet::new_unchecked(&mut packet[..]);
        ip.set_total_len(ip.total_len() - k as u16);
        ip.fill_checksum();
        let addr = |at: usize| {
            IpAddress::Ipv4(Ipv4Address::from_octets([packet[at], packet[at + 1], packet[at + 2], packet[at + 3]]))
        };
        (addr(12), addr(16))
    } else {
        let mut ip = Ipv6Packet::new_unchecked(&mut packet[..]);
        ip.set_payload_len(ip.payload_len() - k as u16);
        let addr = |at: usize| {
            let octets: [u8; 16] = packet[at..at + 16].try_into().unwrap_or([0; 16]);
            IpAddress::Ipv6(Ipv6Address::from_octets(octets))
        };
        (addr(8), addr(24))
    };
    TcpPacket::new_unchecked(&mut packet[offset..]).fill_checksum(&src, &dst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket, TcpOptionElement, TransportSlice};

    fn segment(seq: u32, ack: u32, sack: Option<(u32, u32)>) -> Vec<u8> {
        let mut builder = PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).tcp(1, 2, seq, 1000).ack(ack);
        if let Some(block) = sack {
            builder = builder.options(&[TcpOptionElement::SelectiveAcknowledgement(block, [None; 3])]).unwrap();
        }
        let mut packet = Vec::new();
        builder.write(&mut packet, b"payload").unwrap();
        packet
    }

    fn checksum_ok(packet: &[u8]) -> bool {
        let sliced = SlicedPacket::from_ip(packet).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = sliced.transport else { panic!() };
        let Some(etherparse::NetSlice::Ipv4(ip)) = sliced.net else { panic!() };
        tcp.calc_checksum_ipv4(ip.header().source(), ip.header().destination()).unwrap() == tcp.checksum()
    }

    #[test]
    fn rewrites_keep_the_checksum_valid_and_round_trip() {
        let mut packet = segment(0xffff_fff0, 0x10, Some((0x20, 0x30)));
        let (offset, src, dst) = tcp_header(&packet).unwrap();
        assert_eq!((src.port(), dst.port()), (1, 2));
        outgoing(&mut packet, offset, 0x20);
        assert_eq!(flags_and_seq(&packet, offset).2, 0xffff_ffd0, "wraps around");
        assert!(checksum_ok(&packet));
        incoming(&mut packet, offset, 0x1_0000);
        assert!(checksum_ok(&packet));
        let sliced = SlicedPacket::from_ip(&packet).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = sliced.transport else { panic!() };
        assert_eq!(tcp.acknowledgment_number(), 0x1_0010);
        let sack = tcp.options_iterator().find_map(|o| match o {
            Ok(TcpOptionElement::SelectiveAcknowledgement(block, _)) => Some(block),
            _ => None,
        });
        assert_eq!(sack, Some((0x1_0020, 0x1_0030)), "SACK edges name our sequence space too");
    }

    #[test]
    fn data_and_fin_split_into_the_data_then_the_fin_after_it() {
        let mut v4 = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1, 2, 1000, 500)
            .ack(7)
            .fin()
            .write(&mut v4, b"abc")
            .unwrap();
        let mut v6 = Vec::new();
        PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64)
            .tcp(1, 2, u32::MAX - 1, 500)
            .ack(7)
            .fin()
            .write(&mut v6, b"abc")
            .unwrap();
        for (mut packet, fin_seq) in [(v4, 1003u32), (v6, 1)] {
            let (offset, src, dst) = tcp_header(&packet).unwrap();
            let data = split_fin(&mut packet, offset, src.ip(), dst.ip()).expect("split");
            for (half, seq, fin, payload) in
                [(&data, fin_seq.wrapping_sub(3), false, &b"abc"[..]), (&packet, fin_seq, true, b"")]
            {
                let sliced = SlicedPacket::from_ip(half).unwrap();
                let Some(TransportSlice::Tcp(tcp)) = sliced.transport else { panic!() };
                assert_eq!((tcp.sequence_number(), tcp.fin(), tcp.payload()), (seq, fin, payload));
                assert_eq!(tcp.acknowledgment_number(), 7);
                let checksum = match sliced.net.unwrap() {
                    etherparse::NetSlice::Ipv4(ip) => {
                        assert!(ip.header().to_header().calc_header_checksum() == ip.header().header_checksum());
                        tcp.calc_checksum_ipv4(ip.header().source(), ip.header().destination())
                    }
                    etherparse::NetSlice::Ipv6(ip) => {
                        tcp.calc_checksum_ipv6(ip.header().source(), ip.header().destination())
                    }
                    _ => panic!(),
                };
                assert_eq!(checksum.unwrap(), tcp.checksum());
            }
        }
        let mut bare_fin = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1, 2, 1000, 500)
            .ack(7)
            .fin()
            .write(&mut bare_fin, b"")
            .unwrap();
        let mut data_only = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1, 2, 1000, 500)
            .ack(7)
            .write(&mut data_only, b"abc")
            .unwrap();
        for mut packet in [bare_fin, data_only] {
            let before = packet.clone();
            let (offset, src, dst) = tcp_header(&packet).unwrap();
            assert!(split_fin(&mut packet, offset, src.ip(), dst.ip()).is_none());
            assert_eq!(packet, before, "left untouched");
        }
    }

    #[test]
    fn a_malformed_option_area_becomes_nops_where_linux_stops_or_skips() {
        let with_options = |options: &[u8]| {
            let mut packet = Vec::new();
            PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .tcp(1, 2, 7, 100)
                .syn()
                .options_raw(options)
                .unwrap()
                .write(&mut packet, b"")
                .unwrap();
            packet
        };
        let cases: [(&[u8], &[u8]); 6] = [
            (&[2, 4, 1, 144, 1, 1, 1, 1], &[2, 4, 1, 144, 1, 1, 1, 1]),
            (&[3, 0, 2, 4, 1, 144, 0, 0], &[1, 1, 1, 1, 1, 1, 1, 1]),
            (&[2, 4, 1, 144, 8, 1, 0, 0], &[2, 4, 1, 144, 1, 1, 1, 1]),
            (&[2, 4, 1, 144, 254, 10, 0, 0], &[2, 4, 1, 144, 1, 1, 1, 1]),
            (&[2, 3, 1, 2, 4, 1, 144, 0], &[1, 1, 1, 2, 4, 1, 144, 0]),
            (&[1, 1, 1, 2], &[1, 1, 1, 1]),
        ];
        for (options, linux_reads) in cases {
            let mut packet = with_options(options);
            let (offset, _, _) = tcp_header(&packet).unwrap();
            let changed = sanitize_options(&mut packet, offset);
            assert_eq!(changed, options != linux_reads, "{options:?}");
            assert_eq!(&packet[offset + 20..offset + 28.min(20 + options.len())], linux_reads);
            assert!(checksum_ok(&packet), "{options:?}: checksum patched");
            let tcp = smoltcp::wire::TcpPacket::new_checked(&packet[offset..]).unwrap();
            let ip = (smoltcp::wire::IpAddress::v4(10, 0, 0, 1), smoltcp::wire::IpAddress::v4(10, 0, 0, 2));
            let caps = smoltcp::phy::ChecksumCapabilities::default();
            assert!(smoltcp::wire::TcpRepr::parse(&tcp, &ip.0, &ip.1, &caps).is_ok(), "{options:?}: smoltcp parses it");
        }
    }

    #[test]
    fn anything_but_plain_tcp_is_left_alone() {
        assert!(tcp_header(&[]).is_none());
        assert!(tcp_header(&[0x45; 10]).is_none());
        let mut udp = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).udp(1, 2).write(&mut udp, b"x").unwrap();
        assert!(tcp_header(&udp).is_none());
    }
}
