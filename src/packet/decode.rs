//! Raw IP packet → [`Summary`]: parse once at the edge, then pass meaning around.
//!
//! etherparse does the IP layer (lax, so a packet cut short still yields what it has),
//! IPv6 extension headers, UDP and the ICMP length checks. The fixed TCP header and its
//! options are read here, because etherparse refuses a header whose data offset lies,
//! and the 20 fixed bytes are still worth showing then; options are read the way the
//! receiver (and tcpdump) walks them, unknown kinds included.
//!
//! Lengths follow the headers' own claims, as tcpdump's do: `payload_len` is what the
//! IP (or UDP) header says, and `Summary::problems` notes where the bytes disagree.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::err::{ipv4, ipv6, ipv6_exts};
use etherparse::{Icmpv4Slice, Icmpv6Slice, LaxIpv4Slice, LaxIpv6Slice, UdpSlice};

use super::dns::{decode_dns, decode_dns_over_tcp, dns_port};
use super::summary::{
    Echo, ExtHeader, Fragment, Icmp, Ip, IpVersion, Net, Summary, Tcp, TcpFlags, TcpOption, Transport, Udp,
};

/// Decodes a raw IPv4 or IPv6 packet (`Medium::Ip`, LINKTYPE_RAW). Never panics: what
/// cannot be decoded is described in [`Summary::problems`].
pub fn decode(packet: &[u8]) -> Summary {
    let mut problems = Vec::new();
    let net = decode_ip(packet, &mut problems);
    Summary { link: None, net, len: packet.len(), problems }
}

/// An ICMP error's quote, decoded like a packet but without decoding quotes within it:
/// RFC 1122 forbids errors about errors, and a crafted chain of them must not recurse
/// thousands of levels deep.
fn decode_quote(packet: &[u8]) -> Summary {
    let mut problems = Vec::new();
    let net = decode_ip_at(packet, &mut problems, Depth::Quote);
    Summary { link: None, net, len: packet.len(), problems }
}

/// Whether a packet is the packet itself or an ICMP error's quote of one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Depth {
    Packet,
    Quote,
}

/// The network layer of a raw IP packet, by its first nibble.
pub(crate) fn decode_ip(packet: &[u8], problems: &mut Vec<String>) -> Net {
    decode_ip_at(packet, problems, Depth::Packet)
}

fn decode_ip_at(packet: &[u8], problems: &mut Vec<String>, depth: Depth) -> Net {
    match packet.first().map(|b| b >> 4) {
        None => {
            problems.push("empty packet".into());
            Net::None
        }
        Some(4) => decode_ipv4(packet, problems, depth),
        Some(6) => decode_ipv6(packet, problems, depth),
        Some(nibble) => {
            problems.push(format!("not IP: first nibble {nibble:#x}"));
            Net::None
        }
    }
}

fn decode_ipv4(packet: &[u8], problems: &mut Vec<String>, depth: Depth) -> Net {
    let (slice, auth_err) = match LaxIpv4Slice::from_slice(packet) {
        Ok(ok) => ok,
        Err(ipv4::HeaderSliceError::Len(e)) => {
            problems.push(format!("truncated IPv4 header ({} of {} bytes)", e.len, e.required_len));
            return Net::None;
        }
        Err(ipv4::HeaderSliceError::Content(ipv4::HeaderError::HeaderLengthSmallerThanHeader { ihl })) => {
            problems.push(format!("IPv4 header length {} bytes (IHL {ihl}) is below the minimum 20", ihl * 4));
            return Net::None;
        }
        Err(e) => {
            problems.push(format!("bad IPv4 header: {e}"));
            return Net::None;
        }
    };
    let header = slice.header();
    let header_len = header.slice().len();
    let total_len = usize::from(header.total_len());
    if total_len < header_len {
        problems.push(format!("IPv4 total length {total_len} is shorter than its {header_len}-byte header"));
    }
    let missing = total_len.saturating_sub(packet.len());
    if missing > 0 {
        problems.push(format!("IPv4 total length {total_len} but only {} bytes present", packet.len()));
    }
    // A total length below the header length is nonsense; then the bytes present decide.
    let mut payload_len = if total_len >= header_len { total_len - header_len } else { packet.len() - header_len };
    let mut ext_headers = Vec::new();
    let payload = slice.payload();
    if let Some(e) = auth_err {
        problems.push(format!("bad IPv4 authentication header: {e}"));
    } else if header.protocol() == etherparse::IpNumber::AUTHENTICATION_HEADER {
        ext_headers.push(ExtHeader::Authentication);
        let auth_len = slice.extensions().auth.map_or(0, |a| a.slice().len());
        payload_len = payload_len.saturating_sub(auth_len);
    }
    let offset = u32::from(header.fragments_offset().value()) * 8;
    let more = header.more_fragments();
    let fragment = (offset != 0 || more).then_some(Fragment { id: u32::from(header.identification()), offset, more });
    let protocol = payload.ip_number.0;
    let transport = if offset != 0 {
        Transport::Fragment
    } else {
        decode_transport(IpVersion::V4, protocol, payload.payload, payload_len, more, problems, depth)
    };
    Net::Ip(Ip {
        version: IpVersion::V4,
        src: IpAddr::V4(header.source_addr()),
        dst: IpAddr::V4(header.destination_addr()),
        hop_limit: header.ttl(),
        header_len,
        total_len,
        missing,
        fragment,
        ext_headers,
        protocol,
        payload_len,
        transport,
    })
}

fn decode_ipv6(packet: &[u8], problems: &mut Vec<String>, depth: Depth) -> Net {
    let (slice, ext_err) = match LaxIpv6Slice::from_slice(packet) {
        Ok(ok) => ok,
        Err(ipv6::HeaderSliceError::Len(e)) => {
            problems.push(format!("truncated IPv6 header ({} of {} bytes)", e.len, e.required_len));
            return Net::None;
        }
        Err(e) => {
            problems.push(format!("bad IPv6 header: {e}"));
            return Net::None;
        }
    };
    let header = slice.header();
    let declared = usize::from(header.payload_length());
    // Payload length 0 with more bytes is a jumbogram (RFC 2675) as far as we can tell.
    let stated = if declared == 0 { packet.len().saturating_sub(40) } else { declared };
    let total_len = 40 + stated;
    let missing = total_len.saturating_sub(packet.len());
    if missing > 0 {
        problems.push(format!("IPv6 payload length {declared} but only {} bytes present", packet.len() - 40));
    }

    let (ext_headers, consumed, fragment, later_fragment) =
        ipv6_ext_headers(header.next_header(), slice.extensions().slice(), stated);
    // Past a later fragment etherparse parsed data as headers: its complaints don't count.
    let ext_err = if later_fragment.is_some() { None } else { ext_err };
    if let Some((e, _layer)) = &ext_err {
        problems.push(match e {
            ipv6_exts::HeaderSliceError::Len(e) => {
                format!("truncated IPv6 extension header ({} of {} bytes)", e.len, e.required_len)
            }
            ipv6_exts::HeaderSliceError::Content(ipv6_exts::HeaderError::HopByHopNotAtStart) => {
                "IPv6 hop-by-hop header not directly after the IPv6 header".into()
            }
            ipv6_exts::HeaderSliceError::Content(e) => format!("bad IPv6 extension header: {e}"),
        });
    }
    let payload = slice.payload();
    let protocol = later_fragment.unwrap_or(payload.ip_number.0);
    let payload_len = stated.saturating_sub(consumed);
    let transport = if later_fragment.is_some() {
        Transport::Fragment
    } else if ext_err.is_some() {
        Transport::Other
    } else {
        decode_transport(IpVersion::V6, protocol, payload.payload, payload_len, fragment.is_some(), problems, depth)
    };
    Net::Ip(Ip {
        version: IpVersion::V6,
        src: IpAddr::V6(header.source_addr()),
        dst: IpAddr::V6(header.destination_addr()),
        hop_limit: header.hop_limit(),
        header_len: 40,
        total_len,
        missing,
        fragment,
        ext_headers,
        protocol,
        payload_len,
        transport,
    })
}

/// The extension headers etherparse found, walked again with its checked views.
///
/// etherparse 0.21's own iterator over them trusts that every header it announces is
/// there, which is false after lax parsing stopped at a broken one: it then reads past
/// the slice. Returns the headers, their bytes, the fragment (if this packet is one),
/// and the upper-layer protocol when a later fragment ends the headers (what follows it
/// is data, whatever etherparse made of it).
fn ipv6_ext_headers(
    first: etherparse::IpNumber,
    mut rest: &[u8],
    stated: usize,
) -> (Vec<ExtHeader>, usize, Option<Fragment>, Option<u8>) {
    use etherparse::{IpAuthHeaderSlice, IpNumber, Ipv6FragmentHeaderSlice, Ipv6RawExtHeaderSlice};
    let (mut headers, mut consumed, mut fragment) = (Vec::new(), 0, None);
    let mut next = first;
    while !rest.is_empty() {
        let (header, len, next_header) = match next {
            IpNumber::IPV6_HEADER_HOP_BY_HOP | IpNumber::IPV6_DESTINATION_OPTIONS | IpNumber::IPV6_ROUTE_HEADER => {
                let Ok(h) = Ipv6RawExtHeaderSlice::from_slice(rest) else { break };
                let data = h.slice();
                let header = match next {
                    IpNumber::IPV6_HEADER_HOP_BY_HOP => ExtHeader::HopByHop,
                    IpNumber::IPV6_DESTINATION_OPTIONS => ExtHeader::DestinationOptions,
                    _ => ExtHeader::Routing { routing_type: data[2], segments_left: data[3] },
                };
                (header, data.len(), h.next_header())
            }
            IpNumber::IPV6_FRAGMENTATION_HEADER => {
                let Ok(h) = Ipv6FragmentHeaderSlice::from_slice(rest) else { break };
                let frag = Fragment {
                    id: h.identification(),
                    offset: u32::from(h.fragment_offset().value()) * 8,
                    more: h.more_fragments(),
                };
                let len = h.slice().len();
                if frag.offset != 0 || frag.more {
                    fragment = Some(frag);
                }
                let after = stated.saturating_sub(consumed + len);
                headers.push(ExtHeader::Fragment { fragment: frag, len: after });
                consumed += len;
                if frag.offset != 0 {
                    return (headers, consumed, fragment, Some(h.next_header().0));
                }
                rest = &rest[len..];
                next = h.next_header();
                continue;
            }
            IpNumber::AUTHENTICATION_HEADER => {
                let Ok(h) = IpAuthHeaderSlice::from_slice(rest) else { break };
                (ExtHeader::Authentication, h.slice().len(), h.next_header())
            }
            _ => break,
        };
        headers.push(header);
        consumed += len;
        rest = &rest[len..];
        next = next_header;
    }
    (headers, consumed, fragment, None)
}

/// IP protocol numbers this decoder looks into.
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// The upper layer: `bytes` are those present, `stated` what the IP header claims.
fn decode_transport(
    version: IpVersion,
    protocol: u8,
    bytes: &[u8],
    stated: usize,
    first_fragment: bool,
    problems: &mut Vec<String>,
    depth: Depth,
) -> Transport {
    match (protocol, version) {
        (TCP, _) => decode_tcp(bytes, stated, problems),
        (UDP, _) => decode_udp(bytes, stated, first_fragment, problems),
        (ICMP, IpVersion::V4) | (ICMPV6, IpVersion::V6) => decode_icmp(version, bytes, stated, problems, depth),
        _ => Transport::Other,
    }
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn ports(bytes: &[u8]) -> Option<(u16, u16)> {
    Some((be16(bytes, 0)?, be16(bytes, 2)?))
}

fn decode_tcp(bytes: &[u8], stated: usize, problems: &mut Vec<String>) -> Transport {
    let Some(fixed) = bytes.get(..20) else {
        problems.push(format!("truncated TCP header ({} of 20 bytes)", bytes.len()));
        return Transport::Truncated { present: bytes.len(), ports: ports(bytes) };
    };
    let word = |at: usize| u16::from_be_bytes([fixed[at], fixed[at + 1]]);
    let long = |at: usize| u32::from_be_bytes([fixed[at], fixed[at + 1], fixed[at + 2], fixed[at + 3]]);
    let (sport, dport, seq, ack) = (word(0), word(2), long(4), long(8));
    let (offset, flags, window, urgent) = (fixed[12], fixed[13], word(14), word(18));
    let header_len = usize::from(offset >> 4) * 4;
    let mut options = Vec::new();
    let mut cut = false;
    if header_len < 20 {
        problems.push(format!("TCP data offset {header_len} bytes is below the minimum 20"));
    } else {
        if header_len > stated {
            problems.push(format!("TCP data offset {header_len} bytes exceeds the {stated}-byte segment"));
        }
        let end = header_len.min(bytes.len());
        cut = end < header_len;
        if cut {
            problems.push(format!("TCP header cut short ({} of {header_len} bytes)", bytes.len()));
        }
        let (opts, malformed) = decode_tcp_options(&bytes[20..end], header_len - 20);
        options = opts;
        if let Some(what) = malformed {
            problems.push(what);
        }
    }
    let payload_len = stated.saturating_sub(header_len.max(20));
    let dns = (payload_len > 0 && header_len >= 20 && (sport == 53 || dport == 53)).then(|| {
        let payload = bytes.get(header_len..).unwrap_or_default();
        Box::new(decode_dns_over_tcp(payload, payload_len))
    });
    Transport::Tcp(Tcp {
        sport,
        dport,
        seq,
        ack,
        flags: TcpFlags(flags),
        window,
        urgent,
        header_len,
        options,
        cut,
        payload_len,
        dns,
    })
}

/// Walks the option bytes present (`bytes`) of an option area `declared` bytes long,
/// following each option's length byte as a receiver does. An option running past the
/// bytes present but within the declared area is cut by the capture, not malformed.
fn decode_tcp_options(bytes: &[u8], declared: usize) -> (Vec<TcpOption>, Option<String>) {
    let mut options = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let kind = bytes[at];
        match kind {
            0 => {
                options.push(TcpOption::Eol);
                break;
            }
            1 => {
                options.push(TcpOption::Nop);
                at += 1;
                continue;
            }
            _ => {}
        }
        let Some(&len) = bytes.get(at + 1) else {
            if at + 1 >= declared {
                options.push(TcpOption::Malformed { kind, len: None });
                return (options, Some(format!("TCP option kind {kind} has no length byte")));
            }
            break; // cut by the capture
        };
        let room = declared - at;
        if len < 2 || usize::from(len) > room {
            options.push(TcpOption::Malformed { kind, len: Some(len) });
            return (options, Some(format!("TCP option kind {kind} length {len} does not fit the {room} bytes left")));
        }
        let Some(data) = bytes.get(at + 2..at + usize::from(len)) else {
            break; // cut by the capture
        };
        options.push(match (kind, data.len()) {
            (2, 2) => TcpOption::Mss(u16::from_be_bytes([data[0], data[1]])),
            (3, 1) => TcpOption::WindowScale(data[0]),
            (4, 0) => TcpOption::SackPermitted,
            (5, n) if n % 8 == 0 => TcpOption::Sack(
                data.chunks_exact(8)
                    .map(|b| {
                        (u32::from_be_bytes([b[0], b[1], b[2], b[3]]), u32::from_be_bytes([b[4], b[5], b[6], b[7]]))
                    })
                    .collect(),
            ),
            (8, 8) => TcpOption::Timestamp {
                val: u32::from_be_bytes([data[0], data[1], data[2], data[3]]),
                ecr: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
            },
            _ => TcpOption::Unknown { kind, data: data.to_vec() },
        });
        at += usize::from(len);
    }
    (options, None)
}

/// `first_fragment`: the packet is the first fragment of a datagram, whose UDP length
/// counts the whole datagram's, not this packet's.
fn decode_udp(bytes: &[u8], stated: usize, first_fragment: bool, problems: &mut Vec<String>) -> Transport {
    let Ok(udp) = UdpSlice::from_slice_lax(bytes) else {
        problems.push(format!("truncated UDP header ({} of 8 bytes)", bytes.len()));
        return Transport::Truncated { present: bytes.len(), ports: ports(bytes) };
    };
    let length = udp.length();
    if length < 8 {
        problems.push(format!("UDP length field {length} is below the 8-byte header"));
    } else if usize::from(length) > stated && !first_fragment {
        problems.push(format!("UDP length field {length} exceeds the {stated} bytes IP carries"));
    }
    let (sport, dport) = (udp.source_port(), udp.destination_port());
    let payload_len = usize::from(length).min(stated).saturating_sub(8);
    let dns = dns_port(sport, dport).map(|mdns| Box::new(decode_dns(udp.payload(), payload_len, mdns)));
    Transport::Udp(Udp { sport, dport, length, payload_len, dns })
}

fn decode_icmp(version: IpVersion, bytes: &[u8], stated: usize, problems: &mut Vec<String>, depth: Depth) -> Transport {
    let v4 = version == IpVersion::V4;
    // The etherparse views check the 8-byte header is there; the fields are read raw
    // because the renderings need the numeric type and code, known or not.
    let header = if v4 {
        Icmpv4Slice::from_slice(bytes).map(|s| s.slice()).ok()
    } else {
        Icmpv6Slice::from_slice(bytes).map(|s| s.slice()).ok()
    };
    let Some(message) = header else {
        let name = if v4 { "ICMP" } else { "ICMPv6" };
        problems.push(format!("truncated {name} header ({} of 8 bytes)", bytes.len()));
        return Transport::Truncated { present: bytes.len(), ports: None };
    };
    let (icmp_type, code) = (message[0], message[1]);
    let rest = [message[4], message[5], message[6], message[7]];
    let body = &message[8..];
    let id_seq = Echo { id: u16::from_be_bytes([rest[0], rest[1]]), seq: u16::from_be_bytes([rest[2], rest[3]]) };
    let word = u32::from_be_bytes(rest);
    let addr6 = |at: usize| -> Option<IpAddr> {
        let octets: [u8; 16] = body.get(at..at + 16)?.try_into().ok()?;
        Some(IpAddr::V6(Ipv6Addr::from(octets)))
    };
    let mut icmp = Icmp {
        icmp_type,
        code,
        rest,
        len: stated,
        echo: None,
        mtu: None,
        target: None,
        destination: None,
        group_records: None,
        quoted: None,
    };
    let quotes = if v4 {
        match icmp_type {
            0 | 8 => {
                icmp.echo = Some(id_seq);
                false
            }
            3 => {
                if code == 4 {
                    icmp.mtu = Some(u32::from(id_seq.seq));
                }
                true
            }
            5 => {
                icmp.target = Some(IpAddr::V4(Ipv4Addr::from(rest)));
                true
            }
            4 | 11 | 12 => true,
            _ => false,
        }
    } else {
        match icmp_type {
            128 | 129 => {
                icmp.echo = Some(id_seq);
                false
            }
            2 => {
                icmp.mtu = Some(word);
                true
            }
            1 | 3 | 4 => true,
            135 | 136 => {
                icmp.target = addr6(0);
                false
            }
            137 => {
                icmp.target = addr6(0);
                icmp.destination = addr6(16);
                false
            }
            143 => {
                icmp.group_records = Some(id_seq.seq);
                false
            }
            _ => false,
        }
    };
    if quotes && !body.is_empty() && depth == Depth::Packet {
        icmp.quoted = Some(Box::new(decode_quote(body)));
    }
    if v4 { Transport::Icmpv4(icmp) } else { Transport::Icmpv6(icmp) }
}
