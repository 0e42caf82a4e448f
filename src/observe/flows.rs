//! The flow table: every conversation of a capture, both directions together, with what
//! each side sent and, for TCP, how the connection began and ended.
//!
//! Flows are keyed like [`FlowKey`] (protocol and both endpoints, either order) and kept
//! in first-seen order. The client is the side that sent the first SYN, else the first
//! sender. A new SYN on a TCP flow that has already closed (FIN or RST) and carries a
//! new initial sequence number starts a new flow: the 5-tuple was reused.
//!
//! Time is an argument: [`FlowTable::observe`] takes each packet's capture time, so the
//! table is the same whenever and however fast the capture is read.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::time::Duration;

use crate::packet::{FlowKey, FragmentFlows, Summary, TcpFlags, Transport};

use super::ladder::{Ladder, LadderStep};

/// Flows a table holds by default; packets of flows beyond it are only counted.
pub const DEFAULT_CAPACITY: usize = 16384;

/// One side of a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The side that opened the conversation.
    Client,
    /// The other side.
    Server,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Server => "server",
        })
    }
}

/// What one direction of a flow carried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Packets.
    pub packets: u64,
    /// Payload bytes: after the TCP or UDP header (ICMP: after its 8-byte header; other
    /// protocols: the IP payload), as the headers state them.
    pub bytes: u64,
}

/// One conversation.
#[derive(Clone, Debug)]
pub struct Flow {
    /// The 5-tuple key, shared by both directions.
    pub key: FlowKey,
    /// The side that sent the first SYN, else the first sender. For ICMP echoes the port
    /// is the echo identifier; for other protocols without ports, 0.
    pub client: SocketAddr,
    /// The other side.
    pub server: SocketAddr,
    /// Client to server.
    pub to_server: Counts,
    /// Server to client.
    pub to_client: Counts,
    /// Capture time of the first packet.
    pub first: Duration,
    /// Capture time of the last packet.
    pub last: Duration,
    /// TCP's handshake and close; `None` for other protocols.
    pub tcp: Option<TcpConnection>,
}

/// How a TCP connection began and ended, as the capture saw it.
#[derive(Clone, Debug, Default)]
pub struct TcpConnection {
    /// The client's first SYN.
    pub syn: Option<Duration>,
    /// The client's last SYN before the SYN-ACK (later than `syn` when it was retransmitted).
    pub last_syn: Option<Duration>,
    /// SYNs the client sent (more than one: retransmissions).
    pub syns: u32,
    /// The server's SYN-ACK.
    pub syn_ack: Option<Duration>,
    /// The client's ACK of the SYN-ACK, which completes the handshake.
    pub ack: Option<Duration>,
    /// The client's initial sequence number (its SYN's).
    pub client_isn: Option<u32>,
    /// The server's initial sequence number (its SYN-ACK's).
    pub server_isn: Option<u32>,
    /// The client's first FIN.
    pub client_fin: Option<Duration>,
    /// The server's first FIN.
    pub server_fin: Option<Duration>,
    /// The first RST, and who sent it.
    pub rst: Option<(Side, Duration)>,
    /// What relative numbers count from, per side: the ISN when the SYN was seen; for a
    /// connection met mid-stream, one less than the first number seen, so that it reads
    /// as 1 (as after a handshake).
    pub(crate) base: [Option<u32>; 2],
    /// Every packet, bounded (when the table records ladders).
    pub ladder: Option<Ladder>,
}

/// How far a TCP handshake got in the capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handshake {
    /// SYN, SYN-ACK and the ACK of the SYN-ACK.
    Complete,
    /// SYN and SYN-ACK, no ACK of it.
    NoAck,
    /// A SYN only (unanswered, or answered by RST).
    SynOnly,
    /// No SYN: the capture began mid-connection.
    NotSeen,
}

impl fmt::Display for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Handshake::Complete => "complete",
            Handshake::NoAck => "SYN, SYN-ACK",
            Handshake::SynOnly => "SYN only",
            Handshake::NotSeen => "not seen",
        })
    }
}

/// How a TCP connection ended in the capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Neither FIN nor RST.
    Open,
    /// One side sent FIN; the other had not when the capture ended.
    HalfClosed {
        /// Who sent the FIN.
        by: Side,
    },
    /// FIN both ways.
    Closed {
        /// Who sent the first FIN.
        first: Side,
    },
    /// A RST (whether or not FINs came before it).
    Reset {
        /// Who sent it.
        by: Side,
    },
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::Open => f.write_str("open"),
            Ending::HalfClosed { by } => write!(f, "FIN by {by} only"),
            Ending::Closed { first } => write!(f, "FIN both ways, {first} first"),
            Ending::Reset { by } => write!(f, "RST by {by}"),
        }
    }
}

impl TcpConnection {
    /// How far the handshake got.
    pub fn handshake(&self) -> Handshake {
        match (self.syn, self.syn_ack, self.ack) {
            (Some(_), Some(_), Some(_)) => Handshake::Complete,
            (Some(_), Some(_), None) => Handshake::NoAck,
            (Some(_), None, _) => Handshake::SynOnly,
            (None, _, _) => Handshake::NotSeen,
        }
    }

    /// How the connection ended.
    pub fn ending(&self) -> Ending {
        match (self.rst, self.client_fin, self.server_fin) {
            (Some((by, _)), _, _) => Ending::Reset { by },
            (None, Some(c), Some(s)) => Ending::Closed { first: if s < c { Side::Server } else { Side::Client } },
            (None, Some(_), None) => Ending::HalfClosed { by: Side::Client },
            (None, None, Some(_)) => Ending::HalfClosed { by: Side::Server },
            (None, None, None) => Ending::Open,
        }
    }

    /// The side that closed first (its first FIN or a RST, whichever came first), when
    /// it was, whether by RST.
    pub fn closed_first(&self) -> Option<(Side, Duration, bool)> {
        let fins = [(Side::Client, self.client_fin), (Side::Server, self.server_fin)];
        let mut first: Option<(Side, Duration, bool)> = None;
        for (side, at) in fins.into_iter().filter_map(|(s, t)| Some((s, t?))) {
            if first.is_none_or(|(_, t, _)| at < t) {
                first = Some((side, at, false));
            }
        }
        if let Some((side, at)) = self.rst
            && first.is_none_or(|(_, t, _)| at < t)
        {
            first = Some((side, at, true));
        }
        first
    }

    /// The base relative numbers of `side` count from.
    pub fn base(&self, side: Side) -> Option<u32> {
        self.base[side as usize]
    }

    /// Whether the connection is over (FIN or RST seen): a new SYN starts another.
    fn closed(&self) -> bool {
        self.rst.is_some() || self.client_fin.is_some() || self.server_fin.is_some()
    }

    fn observe(&mut self, at: Duration, from: Side, flags: TcpFlags, seq: u32, ack: u32, len: usize) {
        let syn = flags.has(TcpFlags::SYN);
        let has_ack = flags.has(TcpFlags::ACK);
        match from {
            Side::Client if syn && !has_ack => {
                if self.syn.is_none() {
                    self.syn = Some(at);
                    self.client_isn = Some(seq);
                    self.base[Side::Client as usize] = Some(seq);
                }
                if self.syn_ack.is_none() {
                    self.last_syn = Some(at);
                }
                self.syns = self.syns.saturating_add(1);
            }
            Side::Server if syn && has_ack && self.syn_ack.is_none() => {
                self.syn_ack = Some(at);
                self.server_isn = Some(seq);
                self.base[Side::Server as usize] = Some(seq);
            }
            // The ACK that completes the handshake acknowledges the server's SYN.
            Side::Client
                if has_ack
                    && !syn
                    && self.syn_ack.is_some()
                    && self.ack.is_none()
                    && self.server_isn.is_none_or(|isn| ack == isn.wrapping_add(1)) =>
            {
                self.ack = Some(at);
            }
            _ => {}
        }
        // A side met mid-stream: its first number reads as 1.
        let sender = &mut self.base[from as usize];
        if sender.is_none() {
            *sender = Some(seq.wrapping_sub(1));
        }
        let receiver = &mut self.base[from.other() as usize];
        if receiver.is_none() && has_ack {
            *receiver = Some(ack.wrapping_sub(1));
        }
        if flags.has(TcpFlags::FIN) {
            let fin = if from == Side::Client { &mut self.client_fin } else { &mut self.server_fin };
            fin.get_or_insert(at);
        }
        if flags.has(TcpFlags::RST) {
            self.rst.get_or_insert((from, at));
        }
        if let Some(ladder) = &mut self.ladder {
            ladder.push(LadderStep { at, from, flags, seq, ack: has_ack.then_some(ack), len });
        }
    }
}

impl Flow {
    /// The IP protocol number.
    pub fn protocol(&self) -> u8 {
        self.key.protocol
    }

    /// The protocol's name: `tcp`, `udp`, `icmp`, `icmpv6`, `ip-proto-N`.
    pub fn protocol_name(&self) -> String {
        match self.key.protocol {
            6 => "tcp".into(),
            17 => "udp".into(),
            1 => "icmp".into(),
            58 => "icmpv6".into(),
            p => format!("ip-proto-{p}"),
        }
    }

    /// Time from the first packet to the last.
    pub fn duration(&self) -> Duration {
        self.last.saturating_sub(self.first)
    }

    /// What `side` sent.
    pub fn sent_by(&self, side: Side) -> Counts {
        match side {
            Side::Client => self.to_server,
            Side::Server => self.to_client,
        }
    }

    /// An endpoint as people write it: `10.0.0.1:80`, `[fd00::1]:80`; the address alone
    /// for protocols without ports.
    pub fn endpoint(&self, side: Side) -> String {
        let addr = match side {
            Side::Client => self.client,
            Side::Server => self.server,
        };
        match self.key.protocol {
            6 | 17 => addr.to_string(),
            _ => addr.ip().to_string(),
        }
    }
}

/// A packet's part in its flow.
struct Seen {
    key: FlowKey,
    src: SocketAddr,
    dst: SocketAddr,
    /// TCP flags, sequence and acknowledgment numbers.
    tcp: Option<(TcpFlags, u32, u32)>,
    payload: usize,
    /// The sender's side when the packet itself says (ICMP echo request or reply): on
    /// loopback both directions have the same addresses.
    side: Option<Side>,
}

fn seen(summary: &Summary, fragments: &mut FragmentFlows) -> Option<Seen> {
    let (key, reversed) = fragments.key(summary)?;
    let ip = summary.ip()?;
    let (a, b) = (SocketAddr::from(key.a), SocketAddr::from(key.b));
    let (src, dst) = if reversed { (b, a) } else { (a, b) };
    let mut side = None;
    let (tcp, payload) = match &ip.transport {
        Transport::Tcp(t) => (Some((t.flags, t.seq, t.ack)), t.payload_len),
        Transport::Udp(u) => (None, u.payload_len),
        Transport::Icmpv4(i) | Transport::Icmpv6(i) => {
            side = match (i.echo.is_some(), i.icmp_type) {
                (true, 8 | 128) => Some(Side::Client),
                (true, 0 | 129) => Some(Side::Server),
                _ => None,
            };
            (None, i.len.saturating_sub(8))
        }
        _ => (None, ip.payload_len),
    };
    Some(Seen { key, src, dst, tcp, payload, side })
}

/// The flows of a capture, in first-seen order, bounded.
#[derive(Debug)]
pub struct FlowTable {
    flows: Vec<Flow>,
    index: HashMap<FlowKey, usize>,
    capacity: usize,
    ladders: Option<(usize, usize)>,
    untracked: u64,
    not_ip: u64,
    fragments: FragmentFlows,
}

impl Default for FlowTable {
    fn default() -> Self {
        Self::new()
    }
}

impl FlowTable {
    /// A table of up to [`DEFAULT_CAPACITY`] flows.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// A table of up to `capacity` flows; packets of later flows are only counted
    /// ([`FlowTable::untracked`]), so that a port scan cannot grow it without bound.
    pub fn with_capacity(capacity: usize) -> Self {
        FlowTable {
            flows: Vec::new(),
            index: HashMap::new(),
            capacity,
            ladders: None,
            untracked: 0,
            not_ip: 0,
            fragments: FragmentFlows::default(),
        }
    }

    /// Also records each TCP connection's packets for its [`Ladder`]: the first `head`
    /// and the last `tail` of them.
    pub fn with_ladders(mut self, head: usize, tail: usize) -> Self {
        self.ladders = Some((head, tail));
        self
    }

    /// Adds one packet captured at `at`. Returns the index of its flow in
    /// [`FlowTable::flows`] and the side that sent it; `None` when it is not IP or its flow
    /// did not fit in the table.
    pub fn observe(&mut self, at: Duration, summary: &Summary) -> Option<(usize, Side)> {
        let Some(seen) = seen(summary, &mut self.fragments) else {
            self.not_ip += 1;
            return None;
        };
        let syn_only = seen.tcp.is_some_and(|(f, _, _)| f.has(TcpFlags::SYN) && !f.has(TcpFlags::ACK));
        let existing = self.index.get(&seen.key).copied().filter(|&i| {
            // A fresh SYN on a closed connection, with a new ISN: the 5-tuple was reused.
            let reused = match (&self.flows[i].tcp, seen.tcp) {
                (Some(tcp), Some((_, seq, _))) => syn_only && tcp.closed() && tcp.client_isn != Some(seq),
                _ => false,
            };
            !reused
        });
        let i = match existing {
            Some(i) => i,
            None => {
                if self.flows.len() >= self.capacity {
                    self.untracked += 1;
                    return None;
                }
                self.flows.push(self.new_flow(at, &seen));
                self.index.insert(seen.key, self.flows.len() - 1);
                self.flows.len() - 1
            }
        };
        let flow = &mut self.flows[i];
        let from = seen.side.unwrap_or(if seen.src == flow.client { Side::Client } else { Side::Server });
        let counts = if from == Side::Client { &mut flow.to_server } else { &mut flow.to_client };
        counts.packets += 1;
        counts.bytes += seen.payload as u64;
        flow.last = flow.last.max(at);
        if let (Some(tcp), Some((flags, seq, ack))) = (&mut flow.tcp, seen.tcp) {
            tcp.observe(at, from, flags, seq, ack, seen.payload);
        }
        Some((i, from))
    }

    fn new_flow(&self, at: Duration, seen: &Seen) -> Flow {
        // A SYN-ACK (the SYN was missed) or an echo reply first: its receiver is the client.
        let server_first =
            seen.tcp.is_some_and(|(f, _, _)| f.has(TcpFlags::SYN | TcpFlags::ACK)) || seen.side == Some(Side::Server);
        let (client, server) = if server_first { (seen.dst, seen.src) } else { (seen.src, seen.dst) };
        let tcp = seen.tcp.map(|_| TcpConnection {
            ladder: self.ladders.map(|(head, tail)| Ladder::new(head, tail)),
            ..TcpConnection::default()
        });
        Flow {
            key: seen.key,
            client,
            server,
            to_server: Counts::default(),
            to_client: Counts::default(),
            first: at,
            last: at,
            tcp,
        }
    }

    /// The flows, in the order their first packet came.
    pub fn flows(&self) -> &[Flow] {
        &self.flows
    }

    /// Packets of flows that did not fit in the table.
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    /// Records that were not IP (ARP, other link-layer protocols, undecodable frames).
    pub fn not_ip(&self) -> u64 {
        self.not_ip
    }

    /// The table as aligned text columns, one line per flow under a header, then a
    /// legend and what the table left out.
    pub fn render(&self) -> String {
        let header = [
            "#",
            "proto",
            "client",
            "server",
            "pkts →",
            "bytes →",
            "pkts ←",
            "bytes ←",
            "handshake",
            "end",
            "duration",
        ];
        // Columns aligned to the right: numbers.
        let right = [true, false, false, false, true, true, true, true, false, false, true];
        let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
        for (i, flow) in self.flows.iter().enumerate() {
            let (handshake, end) = match &flow.tcp {
                Some(tcp) => (tcp.handshake().to_string(), tcp.ending().to_string()),
                None => ("-".into(), "-".into()),
            };
            rows.push(vec![
                (i + 1).to_string(),
                flow.protocol_name(),
                flow.endpoint(Side::Client),
                flow.endpoint(Side::Server),
                flow.to_server.packets.to_string(),
                flow.to_server.bytes.to_string(),
                flow.to_client.packets.to_string(),
                flow.to_client.bytes.to_string(),
                handshake,
                end,
                duration(flow.duration()),
            ]);
        }
        let mut widths = vec![0; header.len()];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                let pad = widths[c] - cell.chars().count();
                if c > 0 {
                    line.push_str("  ");
                }
                if right[c] {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out.push_str("→ client to server, ← server to client; bytes are payload bytes (after the transport header)\n");
        if self.not_ip > 0 {
            let _ =
                writeln!(out, "{} records not IP (ARP, other link protocols, undecodable) are in no flow", self.not_ip);
        }
        if self.untracked > 0 {
            let _ = writeln!(
                out,
                "{} packets of flows beyond the first {} are not in the table",
                self.untracked, self.capacity
            );
        }
        out
    }
}

/// A duration for people: `150.601 ms`, `2.503 s`.
pub fn duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.3} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.3} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::packet::decode;

    pub(crate) fn tcp_packet(
        src: ([u8; 4], u16),
        dst: ([u8; 4], u16),
        seq: u32,
        ack: u32,
        flags: u8,
        data: usize,
    ) -> Vec<u8> {
        let total = 40 + data;
        let mut p = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, 6, 0, 0];
        p.extend(src.0);
        p.extend(dst.0);
        p.extend(src.1.to_be_bytes());
        p.extend(dst.1.to_be_bytes());
        p.extend(seq.to_be_bytes());
        p.extend(ack.to_be_bytes());
        p.extend([5 << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
        p.extend(vec![b'x'; data]);
        p
    }

    const C: ([u8; 4], u16) = ([10, 0, 0, 1], 40000);
    const S: ([u8; 4], u16) = ([10, 0, 0, 2], 7);
    const SYN: u8 = TcpFlags::SYN;
    const ACK: u8 = TcpFlags::ACK;
    const FIN: u8 = TcpFlags::FIN;
    const RST: u8 = TcpFlags::RST;
    const PSH: u8 = TcpFlags::PSH;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A whole connection: handshake, 5 bytes each way, the client closes first.
    pub(crate) fn echo_connection() -> Vec<(Duration, Vec<u8>)> {
        vec![
            (ms(0), tcp_packet(C, S, 1000, 0, SYN, 0)),
            (ms(2), tcp_packet(S, C, 5000, 1001, SYN | ACK, 0)),
            (ms(3), tcp_packet(C, S, 1001, 5001, ACK, 0)),
            (ms(10), tcp_packet(C, S, 1001, 5001, PSH | ACK, 5)),
            (ms(11), tcp_packet(S, C, 5001, 1006, PSH | ACK, 5)),
            (ms(20), tcp_packet(C, S, 1006, 5006, FIN | ACK, 0)),
            (ms(21), tcp_packet(S, C, 5006, 1007, FIN | ACK, 0)),
            (ms(22), tcp_packet(C, S, 1007, 5007, ACK, 0)),
        ]
    }

    fn table(packets: &[(Duration, Vec<u8>)]) -> FlowTable {
        let mut t = FlowTable::new().with_ladders(20, 10);
        for (at, p) in packets {
            t.observe(*at, &decode(p));
        }
        t
    }

    #[test]
    fn a_whole_connection() {
        let t = table(&echo_connection());
        assert_eq!(t.flows().len(), 1);
        let f = &t.flows()[0];
        assert_eq!(f.client, SocketAddr::from((Ipv4Addr::new(10, 0, 0, 1), 40000)));
        assert_eq!(f.server, SocketAddr::from((Ipv4Addr::new(10, 0, 0, 2), 7)));
        assert_eq!(f.to_server, Counts { packets: 5, bytes: 5 });
        assert_eq!(f.to_client, Counts { packets: 3, bytes: 5 });
        let tcp = f.tcp.as_ref().unwrap();
        assert_eq!(tcp.handshake(), Handshake::Complete);
        assert_eq!(tcp.ending(), Ending::Closed { first: Side::Client });
        assert_eq!((tcp.syn, tcp.syn_ack, tcp.ack), (Some(ms(0)), Some(ms(2)), Some(ms(3))));
        assert_eq!(tcp.closed_first(), Some((Side::Client, ms(20), false)));
        assert_eq!(f.duration(), ms(22));
    }

    #[test]
    fn refused_connection() {
        let t = table(&[(ms(0), tcp_packet(C, S, 1000, 0, SYN, 0)), (ms(1), tcp_packet(S, C, 0, 1001, RST | ACK, 0))]);
        let tcp = t.flows()[0].tcp.as_ref().unwrap();
        assert_eq!(tcp.handshake(), Handshake::SynOnly);
        assert_eq!(tcp.ending(), Ending::Reset { by: Side::Server });
        assert_eq!(tcp.ending().to_string(), "RST by server");
    }

    #[test]
    fn client_is_the_syn_sender_even_when_the_syn_ack_comes_first() {
        let t = table(&[
            (ms(0), tcp_packet(S, C, 5000, 1001, SYN | ACK, 0)),
            (ms(1), tcp_packet(C, S, 1001, 5001, ACK, 0)),
        ]);
        let f = &t.flows()[0];
        assert_eq!(f.client.port(), 40000);
        assert_eq!(f.tcp.as_ref().unwrap().handshake(), Handshake::NotSeen);
    }

    #[test]
    fn mid_stream_counts_from_one() {
        let t = table(&[(ms(0), tcp_packet(C, S, 7777, 9999, PSH | ACK, 3))]);
        let tcp = t.flows()[0].tcp.as_ref().unwrap();
        assert_eq!(tcp.base(Side::Client), Some(7776));
        assert_eq!(tcp.base(Side::Server), Some(9998));
        assert_eq!(tcp.ending(), Ending::Open);
    }

    #[test]
    fn a_reused_five_tuple_is_a_new_flow_but_a_retransmitted_syn_is_not() {
        let mut packets = echo_connection();
        packets.insert(1, (ms(1), tcp_packet(C, S, 1000, 0, SYN, 0))); // retransmitted SYN
        packets.push((ms(100), tcp_packet(C, S, 80000, 0, SYN, 0)));
        let t = table(&packets);
        assert_eq!(t.flows().len(), 2);
        let first = t.flows()[0].tcp.as_ref().unwrap();
        assert_eq!(first.syns, 2);
        assert_eq!(first.last_syn, Some(ms(1)));
        assert_eq!(t.flows()[1].tcp.as_ref().unwrap().client_isn, Some(80000));
    }

    #[test]
    fn capacity_bounds_the_table() {
        let mut t = FlowTable::with_capacity(2);
        for port in 0..5u16 {
            t.observe(ms(0), &decode(&tcp_packet(C, ([10, 0, 0, 2], port), 1, 0, SYN, 0)));
        }
        assert_eq!(t.flows().len(), 2);
        assert_eq!(t.untracked(), 3);
        assert!(t.render().contains("3 packets of flows beyond the first 2"));
    }

    #[test]
    fn not_ip_is_counted() {
        let mut t = FlowTable::new();
        t.observe(ms(0), &decode(&[0x00, 1, 2]));
        assert_eq!((t.flows().len(), t.not_ip()), (0, 1));
    }

    #[test]
    fn render_aligns_columns() {
        let t = table(&echo_connection());
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("#  proto  client"), "{text}");
        assert!(lines[1].starts_with("1  tcp    10.0.0.1:40000  10.0.0.2:7"), "{text}");
        assert!(lines[1].contains("complete   FIN both ways, client first  22.000 ms"), "{text}");
        // Every column starts where its header does (in characters: the arrows are wide).
        let column = |line: &str, word: &str| line[..line.find(word).unwrap()].chars().count();
        assert_eq!(column(lines[0], "handshake"), column(lines[1], "complete"));
        assert_eq!(column(lines[0], "end"), column(lines[1], "FIN both"));
    }
}
