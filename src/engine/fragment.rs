//! IPv6 fragmentation at the source (RFC 8200 §4.5), which smoltcp 0.14 lacks: its
//! interface drops an IPv6 packet larger than the MTU ("IPv6 fragmentation support is
//! unimplemented", `iface/interface/mod.rs`, `dispatch_ip`), where Linux sends a UDP
//! datagram of up to 65,527 bytes, or the reply to `ping -6 -s 3000`, in fragments. So a
//! UDP datagram over IPv6 that does not fit the link, and the echo reply that would not,
//! are built here, whole, and cut into fragments that go to the device as they are;
//! smoltcp never sees them.
//!
//! Fragments are cut as Linux cuts them (`ip6_fragment`): every one but the last carries
//! as many 8-byte units as fit the MTU after the fixed header and the Fragment header
//! (1448 bytes on a 1500-byte link), and all share one identification. Linux draws it
//! from a keyed hash per destination; a random one is as hard to guess (RFC 7739).

use std::net::Ipv6Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{Icmpv6Message, Icmpv6Packet, IpAddress, IpProtocol, Ipv6Packet, Ipv6Repr, UdpPacket, UdpRepr};

/// The IPv6 fixed header.
const FIXED: usize = 40;
/// The Fragment header (RFC 8200 §4.5).
const FRAGMENT_HEADER: usize = 8;
/// The UDP header.
const UDP_HEADER: usize = 8;
/// The largest UDP payload over IPv6 without jumbograms: the Payload Length field (16
/// bits) counts the UDP header and data, less nothing else here.
pub const MAX_UDP_PAYLOAD: usize = 65_535 - UDP_HEADER;

/// One UDP datagram over IPv6: `src_port` at `src` to `dst_port` at `dst`, whole (no
/// Fragment header), checksummed. `None` if `payload` is too long for one datagram.
pub fn udp_ipv6(src: (Ipv6Addr, u16), dst: (Ipv6Addr, u16), hop_limit: u8, payload: &[u8]) -> Option<Vec<u8>> {
    if payload.len() > MAX_UDP_PAYLOAD {
        return None;
    }
    let udp_len = UDP_HEADER + payload.len();
    let ip =
        Ipv6Repr { src_addr: src.0, dst_addr: dst.0, next_header: IpProtocol::Udp, payload_len: udp_len, hop_limit };
    let mut packet = vec![0; FIXED + udp_len];
    ip.emit(&mut Ipv6Packet::new_unchecked(&mut packet[..]));
    let udp = UdpRepr { src_port: src.1, dst_port: dst.1 };
    udp.emit(
        &mut UdpPacket::new_unchecked(&mut packet[FIXED..]),
        &IpAddress::Ipv6(src.0),
        &IpAddress::Ipv6(dst.0),
        payload.len(),
        |buf| buf.copy_from_slice(payload),
        &ChecksumCapabilities::default(),
    );
    Some(packet)
}

/// Cuts `packet` (an IPv6 packet with no extension headers, as [`udp_ipv6`] makes) into
/// fragments of at most `mtu` bytes, each with a Fragment header carrying `ident`. A
/// packet that fits goes as it is, in one piece. `None` if it is not such a packet, or
/// the MTU leaves no room for 8 bytes of data in a fragment.
pub fn fragment_ipv6(packet: &[u8], mtu: usize, ident: u32) -> Option<Vec<Vec<u8>>> {
    let ip = Ipv6Packet::new_checked(packet).ok()?;
    let next_header = u8::from(ip.next_header());
    // Only a packet without extension headers: everything after the fixed header is the
    // fragmentable part.
    if matches!(next_header, 0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140) {
        return None;
    }
    let payload = packet.get(FIXED..FIXED + usize::from(ip.payload_len()))?;
    if packet.len() <= mtu {
        return Some(vec![packet.to_vec()]);
    }
    // Every fragment but the last carries a multiple of 8 bytes (RFC 8200 §4.5).
    let per = mtu.checked_sub(FIXED + FRAGMENT_HEADER)? & !7;
    if per == 0 {
        return None;
    }
    let mut fragments = Vec::with_capacity(payload.len().div_ceil(per));
    for (k, chunk) in payload.chunks(per).enumerate() {
        let offset = k * per;
        let more = offset + chunk.len() < payload.len();
        let mut fragment = Vec::with_capacity(FIXED + FRAGMENT_HEADER + chunk.len());
        fragment.extend_from_slice(&packet[..FIXED]);
        // Payload Length: the Fragment header and this fragment's data.
        let len = u16::try_from(FRAGMENT_HEADER + chunk.len()).ok()?;
        fragment[4..6].copy_from_slice(&len.to_be_bytes());
        fragment[6] = 44;
        // Next Header, Reserved, Fragment Offset (13 bits, in 8-byte units) | Res | M,
        // Identification.
        let offset_field = u16::try_from(offset).ok()? | u16::from(more);
        fragment.extend_from_slice(&[next_header, 0]);
        fragment.extend_from_slice(&offset_field.to_be_bytes());
        fragment.extend_from_slice(&ident.to_be_bytes());
        fragment.extend_from_slice(chunk);
        fragments.push(fragment);
    }
    Some(fragments)
}

/// The reply to an ICMPv6 echo request (`request`: an IPv6 packet, reassembled, with no
/// extension headers) when it does not fit in `mtu` and so must go in fragments, which
/// smoltcp's automatic echo reply cannot do: the request's identifier, sequence number
/// and data back from the address it was sent to (RFC 4443 §4.2). `None` for anything
/// else, which smoltcp answers (or not) as before: a reply that fits, another message, a
/// bad checksum.
pub fn echo_reply_ipv6(request: &[u8], mtu: usize) -> Option<Vec<u8>> {
    let ip = Ipv6Packet::new_checked(request).ok()?;
    let len = FIXED + usize::from(ip.payload_len());
    if ip.next_header() != IpProtocol::Icmpv6 || len <= mtu || request.len() < len {
        return None;
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let icmp = Icmpv6Packet::new_checked(&request[FIXED..len]).ok()?;
    if icmp.msg_type() != Icmpv6Message::EchoRequest || icmp.msg_code() != 0 || !icmp.verify_checksum(&src, &dst) {
        return None;
    }
    let mut reply = request[..len].to_vec();
    Ipv6Repr { src_addr: dst, dst_addr: src, next_header: IpProtocol::Icmpv6, payload_len: len - FIXED, hop_limit: 64 }
        .emit(&mut Ipv6Packet::new_unchecked(&mut reply[..]));
    let mut icmp = Icmpv6Packet::new_unchecked(&mut reply[FIXED..]);
    icmp.set_msg_type(Icmpv6Message::EchoReply);
    icmp.fill_checksum(&dst, &src);
    Some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::reassembly::{Offer, Reassembly};
    use smoltcp::time::Instant;

    const A: Ipv6Addr = Ipv6Addr::new(0xfd00, 7, 0, 0, 0, 0, 0, 1);
    const B: Ipv6Addr = Ipv6Addr::new(0xfd00, 7, 0, 0, 0, 0, 0, 2);

    fn datagram(len: usize) -> (Vec<u8>, Vec<u8>) {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let packet = udp_ipv6((A, 4000), (B, 7), 64, &payload).expect("a datagram");
        (payload, packet)
    }

    #[test]
    fn a_3000_byte_datagram_goes_in_three_fragments_cut_as_linux_cuts_them() {
        let (_, packet) = datagram(3000);
        let fragments = fragment_ipv6(&packet, 1500, 0xdead_beef).expect("fragments");
        // 3008 bytes of UDP: 1448 + 1448 + 112, as tcpdump shows Linux's (`frag (0|1448)`).
        let lens: Vec<usize> = fragments.iter().map(Vec::len).collect();
        assert_eq!(lens, [1496, 1496, 40 + 8 + 112]);
        for (k, f) in fragments.iter().enumerate() {
            let ip = Ipv6Packet::new_checked(&f[..]).expect("an IPv6 packet");
            assert_eq!(u8::from(ip.next_header()), 44, "a Fragment header follows");
            assert_eq!(usize::from(ip.payload_len()), f.len() - FIXED);
            assert_eq!((ip.src_addr(), ip.dst_addr(), ip.hop_limit()), (A, B, 64));
            assert_eq!(f[40], 17, "UDP after the Fragment header");
            let field = u16::from_be_bytes([f[42], f[43]]);
            assert_eq!(usize::from(field & !7), k * 1448, "offset");
            assert_eq!(field & 1 == 1, k < 2, "M set on all but the last");
            assert_eq!(u32::from_be_bytes([f[44], f[45], f[46], f[47]]), 0xdead_beef);
        }
    }

    #[test]
    fn fragments_reassemble_into_the_datagram_with_a_good_checksum() {
        for len in [1453, 3000, MAX_UDP_PAYLOAD] {
            let (payload, packet) = datagram(len);
            let fragments = fragment_ipv6(&packet, 1500, 7).expect("fragments");
            assert!(fragments.iter().all(|f| f.len() <= 1500));
            let mut r = Reassembly::default();
            let mut whole = None;
            for f in &fragments {
                if let Offer::Whole(d) = r.offer(Instant::ZERO, f) {
                    whole = Some(d);
                }
            }
            let whole = whole.unwrap_or_else(|| panic!("{len}: reassembled"));
            assert_eq!(whole, packet, "{len}: the datagram, byte for byte");
            let ip = Ipv6Packet::new_checked(&whole[..]).expect("IPv6");
            let udp = UdpPacket::new_checked(ip.payload()).expect("UDP");
            assert!(udp.verify_checksum(&IpAddress::Ipv6(A), &IpAddress::Ipv6(B)), "{len}: checksum");
            assert_eq!(udp.payload(), &payload[..]);
        }
    }

    #[test]
    fn a_large_echo_request_is_answered_from_its_destination_and_a_small_one_left_to_smoltcp() {
        let request = |len: usize| -> Vec<u8> {
            let mut icmp = vec![0u8; 8 + len];
            icmp[0] = 128;
            icmp[4..8].copy_from_slice(&[0, 77, 0, 3]);
            for (i, b) in icmp[8..].iter_mut().enumerate() {
                *b = i as u8;
            }
            let mut packet = vec![0; FIXED + icmp.len()];
            Ipv6Repr {
                src_addr: A,
                dst_addr: B,
                next_header: IpProtocol::Icmpv6,
                payload_len: icmp.len(),
                hop_limit: 64,
            }
            .emit(&mut Ipv6Packet::new_unchecked(&mut packet[..]));
            packet[FIXED..].copy_from_slice(&icmp);
            Icmpv6Packet::new_unchecked(&mut packet[FIXED..]).fill_checksum(&A, &B);
            packet
        };
        let big = request(3000);
        let reply = echo_reply_ipv6(&big, 1500).expect("a reply");
        let ip = Ipv6Packet::new_checked(&reply[..]).expect("IPv6");
        assert_eq!((ip.src_addr(), ip.dst_addr()), (B, A));
        let icmp = Icmpv6Packet::new_checked(ip.payload()).expect("ICMPv6");
        assert_eq!(icmp.msg_type(), Icmpv6Message::EchoReply);
        assert!(icmp.verify_checksum(&B, &A));
        assert_eq!(&reply[FIXED + 4..], &big[FIXED + 4..], "identifier, sequence number and data");
        assert_eq!(fragment_ipv6(&reply, 1500, 9).expect("fragments").len(), 3);
        assert_eq!(echo_reply_ipv6(&request(1000), 1500), None, "fits: smoltcp's to answer");
        let mut bad = big.clone();
        bad[FIXED + 20] ^= 1;
        assert_eq!(echo_reply_ipv6(&bad, 1500), None, "a bad checksum");
        let (_, udp) = datagram(3000);
        assert_eq!(echo_reply_ipv6(&udp, 1500), None, "not ICMPv6");
    }

    #[test]
    fn what_fits_goes_whole_and_what_cannot_be_cut_is_refused() {
        let (_, packet) = datagram(1452);
        assert_eq!(packet.len(), 1500);
        assert_eq!(fragment_ipv6(&packet, 1500, 1).expect("one piece"), std::slice::from_ref(&packet));
        assert_eq!(fragment_ipv6(&packet, 48, 1), None, "no room for 8 bytes of data");
        assert_eq!(fragment_ipv6(&packet[..30], 1280, 1), None, "not a packet");
        let (_, big) = datagram(2000);
        let fragments = fragment_ipv6(&big, 1280, 1).expect("the IPv6 minimum MTU");
        assert!(fragments.iter().all(|f| f.len() <= 1280));
        assert_eq!(fragment_ipv6(&fragments[0], 576, 2), None, "already a fragment");
        assert!(udp_ipv6((A, 1), (B, 2), 64, &vec![0; MAX_UDP_PAYLOAD + 1]).is_none());
    }
}
