//! One JSON object per packet, for scripts: `jq`, pandas, a test's assertions.
//!
//! Written by hand: the schema is flat, the values are numbers, addresses and short
//! fixed words, and a dependency would buy nothing but the escaping of `problem`.

use std::fmt::Write as _;
use std::time::Duration;

use super::flow::FlowIds;
use super::summary::{Net, Summary, Transport};

/// Formats packets as JSON lines, numbering flows as it meets them.
#[derive(Debug, Default)]
pub struct JsonFormatter {
    flows: FlowIds,
}

impl JsonFormatter {
    /// A formatter with a fresh [`FlowIds`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The JSON object (one line, no trailing newline) for a packet captured at `ts`
    /// (time since the Unix epoch).
    pub fn format(&mut self, ts: Duration, summary: &Summary) -> String {
        let flow = self.flows.of(summary);
        to_json(ts, summary, flow)
    }
}

/// The JSON object for one packet. Keys, `null` where a field does not apply:
///
/// | key | value |
/// | --- | --- |
/// | `ts` | seconds since the Unix epoch, microsecond precision |
/// | `src`, `dst` | IP addresses (ARP: sender and target protocol addresses) |
/// | `proto` | `tcp`, `udp`, `icmp`, `icmpv6`, `ip-proto-N`, `arp`, `ethertype-0xNNNN` |
/// | `sport`, `dport` | TCP and UDP ports |
/// | `flags` | TCP flags in tcpdump's letters (`S.`, `P.`, `none`) |
/// | `seq`, `win` | TCP sequence number and window, raw header values |
/// | `ack` | TCP acknowledgment number, raw, when the ACK flag is set |
/// | `len` | transport payload bytes (ICMP: after its 8-byte header; other protocols: the IP payload) |
/// | `flow` | the conversation's id from [`FlowIds`] |
/// | `problem` | the first thing that could not be decoded, as text |
pub fn to_json(ts: Duration, summary: &Summary, flow: Option<u64>) -> String {
    let mut f = Fields::default();
    match &summary.net {
        Net::Ip(ip) => {
            f.src = Some(quote(&ip.src.to_string()));
            f.dst = Some(quote(&ip.dst.to_string()));
            f.proto = Some(quote(&match ip.protocol {
                6 => "tcp".to_string(),
                17 => "udp".to_string(),
                1 => "icmp".to_string(),
                58 => "icmpv6".to_string(),
                p => format!("ip-proto-{p}"),
            }));
            f.len = Some(ip.payload_len as u64);
            match &ip.transport {
                Transport::Tcp(tcp) => {
                    f.ports = Some((tcp.sport, tcp.dport));
                    f.flags = Some(quote(&tcp.flags.to_string()));
                    f.seq = Some(tcp.seq);
                    f.ack = tcp.flags.has(super::TcpFlags::ACK).then_some(tcp.ack);
                    f.win = Some(tcp.window);
                    f.len = Some(tcp.payload_len as u64);
                }
                Transport::Udp(udp) => {
                    f.ports = Some((udp.sport, udp.dport));
                    f.len = Some(udp.payload_len as u64);
                }
                Transport::Icmpv4(icmp) | Transport::Icmpv6(icmp) => {
                    f.len = Some(icmp.len.saturating_sub(8) as u64);
                }
                Transport::Truncated { ports, .. } => {
                    f.ports = *ports;
                    f.len = None;
                }
                Transport::Fragment | Transport::Other => {}
            }
        }
        Net::Arp(arp) => {
            f.src = arp.sender_ip.map(|a| quote(&a.to_string()));
            f.dst = arp.target_ip.map(|a| quote(&a.to_string()));
            f.proto = Some(quote("arp"));
        }
        Net::Other { ether_type, len } => {
            f.proto = Some(quote(&format!("ethertype-0x{ether_type:04x}")));
            f.len = Some(*len as u64);
        }
        Net::None => {}
    }
    let null = || "null".to_string();
    let num = |v: Option<u64>| v.map_or_else(null, |v| v.to_string());
    let mut out = String::with_capacity(200);
    let _ = write!(
        out,
        "{{\"ts\":{}.{:06},\"src\":{},\"dst\":{},\"proto\":{},\"sport\":{},\"dport\":{},\"flags\":{},\
         \"seq\":{},\"ack\":{},\"win\":{},\"len\":{},\"flow\":{},\"problem\":{}}}",
        ts.as_secs(),
        ts.subsec_micros(),
        f.src.unwrap_or_else(null),
        f.dst.unwrap_or_else(null),
        f.proto.unwrap_or_else(null),
        num(f.ports.map(|p| u64::from(p.0))),
        num(f.ports.map(|p| u64::from(p.1))),
        f.flags.unwrap_or_else(null),
        num(f.seq.map(u64::from)),
        num(f.ack.map(u64::from)),
        num(f.win.map(u64::from)),
        num(f.len),
        num(flow),
        summary.problems.first().map_or_else(null, |p| quote(p)),
    );
    out
}

/// The values of one line; strings already quoted.
#[derive(Default)]
struct Fields {
    src: Option<String>,
    dst: Option<String>,
    proto: Option<String>,
    ports: Option<(u16, u16)>,
    flags: Option<String>,
    seq: Option<u32>,
    ack: Option<u32>,
    win: Option<u16>,
    len: Option<u64>,
}

/// A JSON string literal (RFC 8259 §7).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
