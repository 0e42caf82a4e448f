//! What a packet means: the types [`decode`](super::decode) and
//! [`decode_link`](super::decode_link) produce, and the renderings read.

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use super::dns::{Dns, DnsOverTcp};
use super::link::{Arp, LinkHeader};

/// What a packet (or frame) means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The link-layer header, for frames decoded by [`decode_link`](super::decode_link);
    /// `None` for raw IP packets.
    pub link: Option<LinkHeader>,
    /// The network layer.
    pub net: Net,
    /// Bytes given to the decoder (the whole frame or packet).
    pub len: usize,
    /// Everything that could not be decoded or did not add up, first found first:
    /// "truncated TCP header (12 of 20 bytes)", "not IP: first nibble 0x0", ...
    pub problems: Vec<String>,
}

/// The network layer of a [`Summary`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Net {
    /// IPv4 or IPv6.
    Ip(Ip),
    /// ARP (from link-layer frames only).
    Arp(Arp),
    /// A link-layer payload that is neither IP nor ARP, by its ethertype (or the
    /// link type's own protocol number).
    Other {
        /// The ethertype (or protocol number) naming the payload.
        ether_type: u16,
        /// Payload bytes after the link-layer header.
        len: usize,
    },
    /// Nothing decodable; [`Summary::problems`] says why.
    None,
}

/// IP version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpVersion {
    /// IPv4 (RFC 791).
    V4,
    /// IPv6 (RFC 8200).
    V6,
}

/// An IPv4 or IPv6 header and what it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ip {
    /// 4 or 6.
    pub version: IpVersion,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// TTL (IPv4) or hop limit (IPv6).
    pub hop_limit: u8,
    /// Header bytes: IHL × 4 for IPv4 (options included), 40 for IPv6 (extension headers
    /// are in [`Ip::ext_headers`]).
    pub header_len: usize,
    /// The packet's length as its header states it (IPv4 total length; IPv6 40 + payload
    /// length).
    pub total_len: usize,
    /// Bytes the header claims beyond those present (tcpdump's "truncated-ip - N bytes
    /// missing!").
    pub missing: usize,
    /// Fragmentation, when this packet is a fragment (IPv4 MF/offset or an IPv6
    /// fragment header that fragments).
    pub fragment: Option<Fragment>,
    /// IPv6 extension headers and the IPv4 authentication header, in order.
    pub ext_headers: Vec<ExtHeader>,
    /// The upper-layer protocol number (after any extension headers).
    pub protocol: u8,
    /// Upper-layer bytes as the headers state them (after all IP headers).
    pub payload_len: usize,
    /// The upper layer.
    pub transport: Transport,
}

/// Where a fragment sits in its datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment {
    /// Identification (16 bits for IPv4, 32 for IPv6).
    pub id: u32,
    /// Offset of this fragment's data in the datagram, in bytes.
    pub offset: u32,
    /// More fragments follow.
    pub more: bool,
}

/// An IP extension header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtHeader {
    /// IPv6 hop-by-hop options (tcpdump "HBH").
    HopByHop,
    /// IPv6 destination options (tcpdump "DSTOPT").
    DestinationOptions,
    /// IPv6 routing header.
    Routing {
        /// Routing type.
        routing_type: u8,
        /// Segments left.
        segments_left: u8,
    },
    /// IPv6 fragment header.
    Fragment {
        /// Where the fragment sits.
        fragment: Fragment,
        /// Bytes after this header, as the IPv6 payload length states it.
        len: usize,
    },
    /// Authentication header (RFC 4302), IPv4 or IPv6.
    Authentication,
}

/// The upper layer of an IP packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A TCP segment (at least its 20 fixed header bytes were present).
    Tcp(Tcp),
    /// A UDP datagram.
    Udp(Udp),
    /// ICMP for IPv4.
    Icmpv4(Icmp),
    /// ICMPv6.
    Icmpv6(Icmp),
    /// A fragment other than the first: its upper-layer header is in the first one.
    Fragment,
    /// An upper-layer header cut short; the ports when at least 4 bytes were present
    /// (TCP and UDP), as an ICMP error's quote of 8 bytes shows them.
    Truncated {
        /// Bytes of the header that were present.
        present: usize,
        /// Source and destination port, when readable.
        ports: Option<(u16, u16)>,
    },
    /// A protocol this decoder does not look into ([`Ip::protocol`] names it).
    Other,
}

/// TCP flags, as in the header's flags byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer field is significant.
    pub const URG: u8 = 0x20;
    /// ECN echo (RFC 3168).
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced (RFC 3168).
    pub const CWR: u8 = 0x80;

    /// Whether every flag in `mask` is set.
    pub fn has(self, mask: u8) -> bool {
        self.0 & mask == mask
    }

    /// tcpdump's letters in tcpdump's order, `F S R P . U E W`.
    const LETTERS: [(u8, char); 8] = [
        (TcpFlags::FIN, 'F'),
        (TcpFlags::SYN, 'S'),
        (TcpFlags::RST, 'R'),
        (TcpFlags::PSH, 'P'),
        (TcpFlags::ACK, '.'),
        (TcpFlags::URG, 'U'),
        (TcpFlags::ECE, 'E'),
        (TcpFlags::CWR, 'W'),
    ];

    /// The `Display` text appended to a line without going through `fmt`.
    pub(crate) fn push_letters(self, out: &mut String) {
        if self.0 == 0 {
            out.push_str("none");
        }
        for (bit, letter) in Self::LETTERS {
            if self.0 & bit != 0 {
                out.push(letter);
            }
        }
    }
}

impl fmt::Display for TcpFlags {
    /// tcpdump's letters in tcpdump's order, `F S R P . U E W` (e.g. `S.`, `P.`, `FP.`),
    /// or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("none");
        }
        for (bit, letter) in Self::LETTERS {
            if self.0 & bit != 0 {
                f.write_char(letter)?;
            }
        }
        Ok(())
    }
}

/// A TCP segment's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tcp {
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Sequence number (absolute, as on the wire).
    pub seq: u32,
    /// Acknowledgment number (meaningful when [`TcpFlags::ACK`] is set).
    pub ack: u32,
    /// Flags.
    pub flags: TcpFlags,
    /// Window field, unscaled.
    pub window: u16,
    /// Urgent pointer.
    pub urgent: u16,
    /// Data offset × 4: header bytes as the header states them.
    pub header_len: usize,
    /// Options, in order; decoding stops after `Eol` or a `Malformed` option.
    pub options: Vec<TcpOption>,
    /// The header runs past the end of the packet: options were read up to the end.
    pub cut: bool,
    /// Payload bytes: the IP-stated segment length less the header length.
    pub payload_len: usize,
    /// The DNS message of a segment to or from port 53 with a payload.
    pub dns: Option<Box<DnsOverTcp>>,
}

/// One TCP option (RFC 9293 §3.1, RFC 7323, RFC 2018).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TcpOption {
    /// End of option list (kind 0).
    Eol,
    /// No-operation (kind 1).
    Nop,
    /// Maximum segment size (kind 2).
    Mss(u16),
    /// Window scale shift count (kind 3).
    WindowScale(u8),
    /// SACK permitted (kind 4).
    SackPermitted,
    /// SACK blocks, left and right edges (kind 5).
    Sack(Vec<(u32, u32)>),
    /// Timestamps (kind 8).
    Timestamp {
        /// TSval.
        val: u32,
        /// TSecr.
        ecr: u32,
    },
    /// A kind not interpreted here, or a known kind with an unexpected length: the
    /// option's data bytes (after kind and length).
    Unknown {
        /// Option kind.
        kind: u8,
        /// Data bytes.
        data: Vec<u8>,
    },
    /// An option whose length byte is missing, below 2, or runs past the header; the
    /// receiver cannot find the next option, so decoding stops here.
    Malformed {
        /// Option kind.
        kind: u8,
        /// The length byte, when present.
        len: Option<u8>,
    },
}

/// A UDP header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Udp {
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// The length field (header included).
    pub length: u16,
    /// Payload bytes: the UDP length field less 8, bounded by what the IP header states.
    pub payload_len: usize,
    /// The DNS message carried, for datagrams to or from port 53 (or 5353, mDNS).
    pub dns: Option<Box<Dns>>,
}

/// An ICMP or ICMPv6 message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Icmp {
    /// Type.
    pub icmp_type: u8,
    /// Code.
    pub code: u8,
    /// The second 32-bit word (identifier/sequence, MTU, pointer, gateway, ...).
    pub rest: [u8; 4],
    /// Message length (header included) as the IP header states it.
    pub len: usize,
    /// Identifier and sequence number of echo requests and replies.
    pub echo: Option<Echo>,
    /// Next-hop MTU of "fragmentation needed" (ICMP) and "packet too big" (ICMPv6).
    pub mtu: Option<u32>,
    /// The IPv4 redirect gateway; the IPv6 neighbor discovery or redirect target.
    pub target: Option<IpAddr>,
    /// The IPv6 redirect's destination.
    pub destination: Option<IpAddr>,
    /// The number of multicast address records an MLDv2 report (ICMPv6 type 143) states.
    pub group_records: Option<u16>,
    /// The offending packet an error message quotes (IP header and the start of its
    /// transport header), decoded; quotes within a quote are not decoded.
    pub quoted: Option<Box<Summary>>,
}

/// Identifier and sequence number of an ICMP echo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Echo {
    /// Identifier.
    pub id: u16,
    /// Sequence number.
    pub seq: u16,
}

impl Summary {
    /// The IP layer, if any.
    pub fn ip(&self) -> Option<&Ip> {
        match &self.net {
            Net::Ip(ip) => Some(ip),
            _ => None,
        }
    }

    /// The transport layer, if the packet is IP.
    pub fn transport(&self) -> Option<&Transport> {
        self.ip().map(|ip| &ip.transport)
    }

    /// Source and destination ports of TCP and UDP (also when the header is cut short).
    pub fn ports(&self) -> Option<(u16, u16)> {
        match self.transport()? {
            Transport::Tcp(t) => Some((t.sport, t.dport)),
            Transport::Udp(u) => Some((u.sport, u.dport)),
            Transport::Truncated { ports, .. } => *ports,
            _ => None,
        }
    }
}
