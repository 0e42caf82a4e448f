//! The packets of a replay: those the replayer builds for the captured peer (with new
//! checksums, lengths and acknowledgment numbers), and those ustack sends, read with
//! [`decode`].

use std::net::{IpAddr, SocketAddr};

use etherparse::{Icmpv4Type, Icmpv6Type, PacketBuilder, PacketBuilderStep, TcpHeader, TcpOptionElement};

use ustack::packet::{Net, TcpFlags, TcpOption, Transport, decode};

/// A packet ustack sent, as the replay reads it.
#[derive(Clone, Debug)]
pub struct Out {
    /// Source address and port (port 0 for ICMP).
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// TTL or hop limit.
    pub hop_limit: u8,
    /// IPv4 "don't fragment".
    pub dont_fragment: bool,
    /// IPv6 flow label.
    pub flow_label: u32,
    /// What it carries.
    pub kind: OutKind,
    /// The whole packet (an ICMP error the replayer sends quotes it).
    pub bytes: Vec<u8>,
}

/// What a packet from ustack carries.
#[derive(Clone, Debug)]
pub enum OutKind {
    /// A TCP segment.
    Tcp {
        /// Flags.
        flags: TcpFlags,
        /// Sequence number.
        seq: u32,
        /// Acknowledgment number.
        ack: u32,
        /// Window field, unscaled.
        window: u16,
        /// Options.
        options: Vec<TcpOption>,
        /// Payload.
        payload: Vec<u8>,
    },
    /// A UDP datagram.
    Udp {
        /// Payload.
        payload: Vec<u8>,
    },
    /// An ICMP destination-unreachable error about a TCP or UDP packet.
    Unreachable {
        /// Type.
        icmp_type: u8,
        /// Code.
        code: u8,
        /// The quoted packet's source and destination.
        about: (SocketAddr, SocketAddr),
        /// The quoted packet's protocol.
        protocol: u8,
        /// Bytes quoted.
        quote_len: usize,
    },
    /// An echo reply (the replayer's barrier pings).
    EchoReply {
        /// Identifier.
        id: u16,
        /// Sequence number.
        seq: u16,
    },
    /// Anything else, described.
    Other(String),
}

/// Reads a packet ustack sent. Never panics.
pub fn parse(frame: &[u8]) -> Out {
    let summary = decode(frame);
    let Net::Ip(ip) = &summary.net else {
        let why = summary.problems.first().cloned().unwrap_or_else(|| "not IP".into());
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        return Out {
            src: unspecified,
            dst: unspecified,
            hop_limit: 0,
            dont_fragment: false,
            flow_label: 0,
            kind: OutKind::Other(why),
            bytes: frame.to_vec(),
        };
    };
    let end = ip.total_len.min(frame.len());
    let payload_start = end.saturating_sub(ip.payload_len);
    let (dont_fragment, flow_label) = match frame.first().map(|b| b >> 4) {
        Some(4) if frame.len() >= 8 => (frame[6] & 0x40 != 0, 0),
        Some(6) if frame.len() >= 4 => (false, u32::from_be_bytes([0, frame[1] & 0x0f, frame[2], frame[3]])),
        _ => (false, 0),
    };
    let mut ports = (0, 0);
    let kind = match &ip.transport {
        Transport::Tcp(t) => {
            ports = (t.sport, t.dport);
            let start = (payload_start + t.header_len).min(end);
            OutKind::Tcp {
                flags: t.flags,
                seq: t.seq,
                ack: t.ack,
                window: t.window,
                options: t.options.clone(),
                payload: frame[start..end].to_vec(),
            }
        }
        Transport::Udp(u) => {
            ports = (u.sport, u.dport);
            let start = (payload_start + 8).min(end);
            OutKind::Udp { payload: frame[start..(start + u.payload_len).min(end)].to_vec() }
        }
        Transport::Icmpv4(i) | Transport::Icmpv6(i) => match (&i.echo, i.icmp_type, &i.quoted) {
            (Some(echo), 0 | 129, _) => OutKind::EchoReply { id: echo.id, seq: echo.seq },
            (_, 3, Some(q)) | (_, 1, Some(q)) if q.ip().is_some() => {
                let qip = q.ip().expect("checked");
                let (sport, dport) = q.ports().unwrap_or((0, 0));
                OutKind::Unreachable {
                    icmp_type: i.icmp_type,
                    code: i.code,
                    about: (SocketAddr::new(qip.src, sport), SocketAddr::new(qip.dst, dport)),
                    protocol: qip.protocol,
                    quote_len: q.len,
                }
            }
            _ => OutKind::Other(format!("ICMP type {} code {}", i.icmp_type, i.code)),
        },
        _ => OutKind::Other(format!("IP protocol {}", ip.protocol)),
    };
    Out {
        src: SocketAddr::new(ip.src, ports.0),
        dst: SocketAddr::new(ip.dst, ports.1),
        hop_limit: ip.hop_limit,
        dont_fragment,
        flow_label,
        kind,
        bytes: frame.to_vec(),
    }
}

/// The IP layer of a packet the replayer builds.
fn ip_step(src: IpAddr, dst: IpAddr, hop_limit: u8) -> Option<PacketBuilderStep<etherparse::IpHeaders>> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Some(PacketBuilder::ipv4(s.octets(), d.octets(), hop_limit)),
        (IpAddr::V6(s), IpAddr::V6(d)) => Some(PacketBuilder::ipv6(s.octets(), d.octets(), hop_limit)),
        _ => None,
    }
}

/// A TCP segment the replayer sends.
#[derive(Clone, Debug)]
pub struct TcpSpec<'a> {
    /// Source.
    pub src: SocketAddr,
    /// Destination.
    pub dst: SocketAddr,
    /// TTL or hop limit.
    pub hop_limit: u8,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number, with the ACK flag.
    pub ack: Option<u32>,
    /// SYN, FIN, RST and PSH are taken from here (ACK follows `ack`).
    pub flags: TcpFlags,
    /// Window field.
    pub window: u16,
    /// Options, in order.
    pub options: Vec<TcpOptionElement>,
    /// Payload.
    pub payload: &'a [u8],
}

/// Builds a TCP segment with correct lengths and checksums. `None` when the addresses
/// are of different families (which the replayer never asks for).
pub fn tcp(spec: &TcpSpec<'_>) -> Option<Vec<u8>> {
    let mut header = TcpHeader::new(spec.src.port(), spec.dst.port(), spec.seq, spec.window);
    header.syn = spec.flags.has(TcpFlags::SYN);
    header.fin = spec.flags.has(TcpFlags::FIN);
    header.rst = spec.flags.has(TcpFlags::RST);
    header.psh = spec.flags.has(TcpFlags::PSH);
    if let Some(ack) = spec.ack {
        header.ack = true;
        header.acknowledgment_number = ack;
    }
    // Options that do not fit (more than 40 bytes) are left out rather than failing.
    let _ = header.set_options(&spec.options);
    let builder = ip_step(spec.src.ip(), spec.dst.ip(), spec.hop_limit)?.tcp_header(header);
    let mut out = Vec::with_capacity(builder.size(spec.payload.len()));
    builder.write(&mut out, spec.payload).ok()?;
    Some(out)
}

/// Builds a UDP datagram.
pub fn udp(src: SocketAddr, dst: SocketAddr, hop_limit: u8, payload: &[u8]) -> Option<Vec<u8>> {
    let builder = ip_step(src.ip(), dst.ip(), hop_limit)?.udp(src.port(), dst.port());
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).ok()?;
    Some(out)
}

/// Builds an ICMP (IPv4) or ICMPv6 error of `icmp_type`/`code` from `src` to `dst`,
/// quoting `quote`.
pub fn icmp_error(src: IpAddr, dst: IpAddr, hop_limit: u8, icmp_type: u8, code: u8, quote: &[u8]) -> Option<Vec<u8>> {
    let step = ip_step(src, dst, hop_limit)?;
    let mut out = Vec::new();
    if src.is_ipv4() {
        let b = step.icmpv4(Icmpv4Type::Unknown { type_u8: icmp_type, code_u8: code, bytes5to8: [0; 4] });
        b.write(&mut out, quote).ok()?;
    } else {
        let b = step.icmpv6(Icmpv6Type::Unknown { type_u8: icmp_type, code_u8: code, bytes5to8: [0; 4] });
        b.write(&mut out, quote).ok()?;
    }
    Some(out)
}

/// Builds an ICMP or ICMPv6 echo request (the replayer's barrier).
pub fn ping(src: IpAddr, dst: IpAddr, id: u16, seq: u16) -> Option<Vec<u8>> {
    let step = ip_step(src, dst, 64)?;
    let mut out = Vec::new();
    if src.is_ipv4() {
        step.icmpv4_echo_request(id, seq).write(&mut out, b"ustack replay barrier").ok()?;
    } else {
        step.icmpv6_echo_request(id, seq).write(&mut out, b"ustack replay barrier").ok()?;
    }
    Some(out)
}
