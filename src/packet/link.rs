//! Link-layer frames from capture files → [`Summary`]: Ethernet (with VLAN tags), Linux
//! cooked captures v1 and v2, BSD loopback, and raw IP.

use std::net::Ipv4Addr;

use etherparse::{ArpPacketSlice, Ethernet2Slice, SingleVlanSlice};

use super::decode::decode_ip;
use super::summary::{Net, Summary};

/// Link types (the pcap/pcapng `LINKTYPE_*` numbers) [`decode_link`] understands.
pub mod linktype {
    /// BSD loopback: a 4-byte address family in the capturing host's byte order.
    pub const NULL: u32 = 0;
    /// Ethernet II (also what Linux `lo` captures are).
    pub const ETHERNET: u32 = 1;
    /// Raw IP, as some BSDs number it (DLT_RAW 12).
    pub const DLT_RAW_12: u32 = 12;
    /// Raw IP, as other BSDs number it (DLT_RAW 14).
    pub const DLT_RAW_14: u32 = 14;
    /// Raw IP (LINKTYPE_RAW): what ustack's devices and recorder carry.
    pub const RAW: u32 = 101;
    /// OpenBSD loopback: like [`NULL`] with the family in network byte order.
    pub const LOOP: u32 = 108;
    /// Linux cooked capture v1 (`tcpdump -i any`, older libpcap).
    pub const LINUX_SLL: u32 = 113;
    /// Raw IPv4.
    pub const IPV4: u32 = 228;
    /// Raw IPv6.
    pub const IPV6: u32 = 229;
    /// Linux cooked capture v2 (`tcpdump -i any`, libpcap ≥ 1.10).
    pub const LINUX_SLL2: u32 = 276;
}

/// A link-layer header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkHeader {
    /// The capture's link type.
    pub linktype: u32,
    /// Header bytes before the network layer (VLAN tags included).
    pub header_len: usize,
    /// Source hardware address (Ethernet, cooked captures), as `aa:bb:cc:dd:ee:ff`.
    pub src: Option<String>,
    /// Destination hardware address (Ethernet).
    pub dst: Option<String>,
    /// The payload's ethertype (or loopback address family).
    pub protocol: Option<u16>,
    /// 802.1Q/802.1ad VLAN ids, outermost first.
    pub vlan_ids: Vec<u16>,
    /// Direction of a cooked capture, as tcpdump shows it: `In`, `Out`, `B`, `M`, `P`.
    pub direction: Option<&'static str>,
    /// Interface index of a cooked v2 capture.
    pub ifindex: Option<u32>,
}

impl LinkHeader {
    fn new(linktype: u32) -> Self {
        LinkHeader {
            linktype,
            header_len: 0,
            src: None,
            dst: None,
            protocol: None,
            vlan_ids: Vec::new(),
            direction: None,
            ifindex: None,
        }
    }
}

/// An ARP packet (RFC 826).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arp {
    /// 1 request, 2 reply, 3/4 RARP.
    pub operation: u16,
    /// Sender hardware address.
    pub sender_hw: Vec<u8>,
    /// Sender protocol address, for IPv4 over Ethernet.
    pub sender_ip: Option<Ipv4Addr>,
    /// Target hardware address.
    pub target_hw: Vec<u8>,
    /// Target protocol address, for IPv4 over Ethernet.
    pub target_ip: Option<Ipv4Addr>,
    /// Bytes after the link-layer header (tcpdump's ARP "length", padding included).
    pub len: usize,
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: [u16; 3] = [0x8100, 0x88a8, 0x9100];

/// Decodes a frame of the given pcap link type (see [`linktype`]). Never panics; an
/// unknown link type is described in [`Summary::problems`], not dropped.
pub fn decode_link(linktype: u32, frame: &[u8]) -> Summary {
    let mut problems = Vec::new();
    let (link, net) = match linktype {
        linktype::RAW | linktype::DLT_RAW_12 | linktype::DLT_RAW_14 | linktype::IPV4 | linktype::IPV6 => {
            (None, decode_ip(frame, &mut problems))
        }
        linktype::ETHERNET => ethernet(frame, &mut problems),
        linktype::LINUX_SLL => sll(frame, &mut problems),
        linktype::LINUX_SLL2 => sll2(frame, &mut problems),
        linktype::NULL | linktype::LOOP => null(linktype, frame, &mut problems),
        other => {
            problems.push(format!("link type {other} not supported ({} bytes)", frame.len()));
            (Some(LinkHeader::new(other)), Net::None)
        }
    };
    Summary { link, net, len: frame.len(), problems }
}

fn mac(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn ethernet(frame: &[u8], problems: &mut Vec<String>) -> (Option<LinkHeader>, Net) {
    let mut link = LinkHeader::new(linktype::ETHERNET);
    let Ok(eth) = Ethernet2Slice::from_slice_without_fcs(frame) else {
        problems.push(format!("truncated Ethernet header ({} of 14 bytes)", frame.len()));
        return (Some(link), Net::None);
    };
    link.src = Some(mac(&eth.source()));
    link.dst = Some(mac(&eth.destination()));
    let mut ether_type = eth.ether_type().0;
    let mut payload = eth.payload_slice();
    while ETHERTYPE_VLAN.contains(&ether_type) {
        let Ok(vlan) = SingleVlanSlice::from_slice(payload) else {
            problems.push(format!("truncated VLAN tag ({} of 4 bytes)", payload.len()));
            link.header_len = frame.len();
            return (Some(link), Net::None);
        };
        link.vlan_ids.push(vlan.vlan_identifier().value());
        ether_type = vlan.ether_type().0;
        payload = vlan.payload_slice();
    }
    link.header_len = frame.len() - payload.len();
    link.protocol = Some(ether_type);
    let net = by_ether_type(ether_type, payload, problems);
    (Some(link), net)
}

fn by_ether_type(ether_type: u16, payload: &[u8], problems: &mut Vec<String>) -> Net {
    match ether_type {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => decode_ip(payload, problems),
        ETHERTYPE_ARP => arp(payload, problems),
        _ => Net::Other { ether_type, len: payload.len() },
    }
}

fn arp(payload: &[u8], problems: &mut Vec<String>) -> Net {
    let Ok(arp) = ArpPacketSlice::from_slice(payload) else {
        problems.push(format!("truncated ARP packet ({} bytes)", payload.len()));
        return Net::None;
    };
    let ipv4 = |bytes: &[u8]| -> Option<Ipv4Addr> { Some(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?)) };
    let is_ipv4 = arp.proto_addr_type().0 == ETHERTYPE_IPV4;
    Net::Arp(Arp {
        operation: arp.operation().0,
        sender_hw: arp.sender_hw_addr().to_vec(),
        sender_ip: if is_ipv4 { ipv4(arp.sender_protocol_addr()) } else { None },
        target_hw: arp.target_hw_addr().to_vec(),
        target_ip: if is_ipv4 { ipv4(arp.target_protocol_addr()) } else { None },
        len: payload.len(),
    })
}

fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// tcpdump's names for the Linux packet types of cooked captures.
fn direction(packet_type: u16) -> Option<&'static str> {
    Some(match packet_type {
        0 => "In",
        1 => "B",
        2 => "M",
        3 => "P",
        4 => "Out",
        _ => return None,
    })
}

/// Linux cooked v1: packet type, ARPHRD type, address length, 8 address bytes, protocol.
fn sll(frame: &[u8], problems: &mut Vec<String>) -> (Option<LinkHeader>, Net) {
    let mut link = LinkHeader::new(linktype::LINUX_SLL);
    if frame.len() < 16 {
        problems.push(format!("truncated Linux cooked header ({} of 16 bytes)", frame.len()));
        return (Some(link), Net::None);
    }
    let addr_len = usize::from(be16(frame, 4)).min(8);
    link.src = Some(mac(&frame[6..6 + addr_len]));
    link.direction = direction(be16(frame, 0));
    cooked(link, be16(frame, 14), &frame[16..], problems)
}

/// Linux cooked v2: protocol, reserved, interface index, ARPHRD type, packet type,
/// address length, 8 address bytes.
fn sll2(frame: &[u8], problems: &mut Vec<String>) -> (Option<LinkHeader>, Net) {
    let mut link = LinkHeader::new(linktype::LINUX_SLL2);
    if frame.len() < 20 {
        problems.push(format!("truncated Linux cooked v2 header ({} of 20 bytes)", frame.len()));
        return (Some(link), Net::None);
    }
    link.ifindex = Some(u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]));
    link.direction = direction(u16::from(frame[10]));
    let addr_len = usize::from(frame[11]).min(8);
    link.src = Some(mac(&frame[12..12 + addr_len]));
    cooked(link, be16(frame, 0), &frame[20..], problems)
}

fn cooked(
    mut link: LinkHeader,
    protocol: u16,
    payload: &[u8],
    problems: &mut Vec<String>,
) -> (Option<LinkHeader>, Net) {
    link.header_len = if link.linktype == linktype::LINUX_SLL2 { 20 } else { 16 };
    link.protocol = Some(protocol);
    let net = by_ether_type(protocol, payload, problems);
    (Some(link), net)
}

/// BSD loopback: the address family in the capturing host's byte order (NULL) or in
/// network order (LOOP). IPv6 is 24, 28 or 30 depending on the BSD.
fn null(linktype: u32, frame: &[u8], problems: &mut Vec<String>) -> (Option<LinkHeader>, Net) {
    let mut link = LinkHeader::new(linktype);
    let Some(bytes) = frame.get(..4) else {
        problems.push(format!("truncated loopback header ({} of 4 bytes)", frame.len()));
        return (Some(link), Net::None);
    };
    let bytes: [u8; 4] = [bytes[0], bytes[1], bytes[2], bytes[3]];
    let family = if linktype == linktype::LOOP {
        u32::from_be_bytes(bytes)
    } else {
        // The capturing host's order is unknown here: a family is small, so the order
        // that yields a small number is the right one (as tcpdump does).
        let le = u32::from_le_bytes(bytes);
        if le & 0xffff_0000 != 0 { u32::from_be_bytes(bytes) } else { le }
    };
    link.header_len = 4;
    link.protocol = u16::try_from(family).ok();
    let payload = &frame[4..];
    let net = match family {
        2 | 24 | 28 | 30 => decode_ip(payload, problems),
        _ => {
            problems.push(format!("loopback address family {family} is not IP"));
            Net::Other { ether_type: u16::try_from(family).unwrap_or(u16::MAX), len: payload.len() }
        }
    };
    (Some(link), net)
}
