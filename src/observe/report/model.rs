//! What the report draws, as data: each TCP connection's ladder rows and time-sequence
//! series, each UDP flow's datagrams. Built packet by packet ([`ReportBuilder::observe`]),
//! bounded in memory whatever the capture, and free of any drawing, so tests can check
//! what a picture will show without looking at SVG.

use std::collections::VecDeque;
use std::time::Duration;

use crate::packet::{Summary, TcpFlags, TcpOption, Transport};

use super::super::flows::{Flow, FlowTable, Side};

/// Connections and UDP flows drawn; later ones are in the flow table only.
pub const MAX_DRAWN: usize = 100;
/// Packets of one TCP connection kept for its time-sequence graph (and the ladder's head).
pub const MAX_PACKETS: usize = 4000;
/// Packets kept for all drawings together; beyond it packets are only counted, so a
/// capture of many busy connections cannot grow the report without bound.
pub const MAX_KEPT: usize = 200_000;
/// Rows a ladder draws from the start of a connection.
pub const LADDER_HEAD: usize = 60;
/// Rows a ladder draws from the end of a connection.
pub const LADDER_TAIL: usize = 12;
/// SACK blocks kept per packet (TCP options have room for four).
const MAX_SACKS: usize = 4;

/// What became of a packet, when the recorder knows (a simulated link does; a capture
/// only says it was seen).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mark {
    /// Seen on the wire (and, as far as anyone knows, delivered).
    #[default]
    Seen,
    /// Sent, and lost on the way.
    Lost,
    /// Sent, and damaged on the way (the receiver's checksum drops it).
    Damaged,
}

/// One TCP packet as the report keeps it: numbers as on the wire.
#[derive(Clone, Debug)]
struct TcpPacket {
    /// Its place among the connection's packets, from 0.
    index: u64,
    at: Duration,
    from: Side,
    flags: TcpFlags,
    seq: u32,
    ack: Option<u32>,
    len: u32,
    window: u16,
    window_scale: Option<u8>,
    sacks: Vec<(u32, u32)>,
    /// It carried sequence space (data, SYN or FIN) that its sender had sent before.
    retransmission: bool,
    mark: Mark,
}

impl TcpPacket {
    /// Sequence space it occupies: its data, plus one each for SYN and FIN.
    fn occupies(&self) -> u32 {
        self.len + u32::from(self.flags.has(TcpFlags::SYN)) + u32::from(self.flags.has(TcpFlags::FIN))
    }
}

/// What the report keeps of one TCP connection while the capture is read.
#[derive(Debug, Default)]
struct TcpTrace {
    /// The first packets (up to [`MAX_PACKETS`]).
    packets: Vec<TcpPacket>,
    /// The last [`LADDER_TAIL`] packets.
    tail: VecDeque<TcpPacket>,
    total: u64,
    /// The furthest sequence number each side has sent (for telling retransmissions).
    highest: [Option<u32>; 2],
}

/// One UDP datagram.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Datagram {
    /// Milliseconds since the flow's first packet.
    pub ms: f64,
    /// The sender.
    pub from: Side,
    /// Payload bytes.
    pub len: usize,
    /// What became of it.
    pub mark: Mark,
}

#[derive(Debug, Default)]
struct UdpTrace {
    datagrams: Vec<(Duration, Side, usize, Mark)>,
    total: u64,
}

#[derive(Debug)]
enum Trace {
    Tcp(TcpTrace),
    Udp(UdpTrace),
    /// Other protocols, or beyond [`MAX_DRAWN`]: in the flow table only.
    None,
}

/// Builds a report packet by packet: the flow table (as `inspect --flows` computes it)
/// and what the drawings need. See the [module docs](self).
#[derive(Debug)]
pub struct ReportBuilder {
    table: FlowTable,
    traces: Vec<Trace>,
    drawn: usize,
    kept: usize,
    packets: u64,
    lost: u64,
}

impl Default for ReportBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether `a` comes before `b` in sequence space (RFC 9293's modular comparison).
fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

impl ReportBuilder {
    /// An empty report.
    pub fn new() -> Self {
        ReportBuilder { table: FlowTable::new(), traces: Vec::new(), drawn: 0, kept: 0, packets: 0, lost: 0 }
    }

    /// Adds one packet, captured (or sent, for a simulation) at `at`; `mark` says what
    /// became of it when that is known.
    pub fn observe(&mut self, at: Duration, summary: &Summary, mark: Mark) {
        self.packets += 1;
        if mark != Mark::Seen {
            self.lost += 1;
        }
        let Some((i, from)) = self.table.observe(at, summary) else { return };
        while self.traces.len() <= i {
            let protocol = self.table.flows()[self.traces.len()].protocol();
            let trace = match protocol {
                _ if self.drawn >= MAX_DRAWN => Trace::None,
                6 => Trace::Tcp(TcpTrace::default()),
                17 => Trace::Udp(UdpTrace::default()),
                _ => Trace::None,
            };
            if !matches!(trace, Trace::None) {
                self.drawn += 1;
            }
            self.traces.push(trace);
        }
        let room = self.kept < MAX_KEPT;
        match (&mut self.traces[i], summary.transport()) {
            (Trace::Tcp(trace), Some(Transport::Tcp(tcp))) => {
                let mut packet = TcpPacket {
                    index: trace.total,
                    at,
                    from,
                    flags: tcp.flags,
                    seq: tcp.seq,
                    ack: tcp.flags.has(TcpFlags::ACK).then_some(tcp.ack),
                    len: u32::try_from(tcp.payload_len).unwrap_or(u32::MAX),
                    window: tcp.window,
                    window_scale: None,
                    sacks: Vec::new(),
                    retransmission: false,
                    mark,
                };
                for option in &tcp.options {
                    match option {
                        TcpOption::WindowScale(shift) => packet.window_scale = Some(*shift),
                        TcpOption::Sack(blocks) => packet.sacks.extend(blocks.iter().take(MAX_SACKS)),
                        _ => {}
                    }
                }
                let occupies = packet.occupies();
                let highest = &mut trace.highest[from as usize];
                if occupies > 0 {
                    let end = packet.seq.wrapping_add(occupies);
                    packet.retransmission = highest.is_some_and(|h| seq_lt(packet.seq, h));
                    if highest.is_none_or(|h| seq_lt(h, end)) {
                        *highest = Some(end);
                    }
                }
                trace.total += 1;
                if trace.packets.len() < MAX_PACKETS && room {
                    trace.packets.push(packet.clone());
                    self.kept += 1;
                }
                if trace.tail.len() == LADDER_TAIL {
                    trace.tail.pop_front();
                }
                trace.tail.push_back(packet);
            }
            (Trace::Udp(trace), Some(Transport::Udp(udp))) => {
                trace.total += 1;
                if trace.datagrams.len() < MAX_PACKETS && room {
                    trace.datagrams.push((at, from, udp.payload_len, mark));
                    self.kept += 1;
                }
            }
            _ => {}
        }
    }

    /// The flow table so far.
    pub fn table(&self) -> &FlowTable {
        &self.table
    }

    /// The finished model.
    pub fn finish(self) -> Report {
        let mut connections = Vec::new();
        let mut udp = Vec::new();
        let flows = self.table.flows();
        for (i, trace) in self.traces.iter().enumerate() {
            match trace {
                Trace::Tcp(trace) => connections.push(connection(i + 1, &flows[i], trace)),
                Trace::Udp(trace) => udp.push(udp_flow(i + 1, &flows[i], trace)),
                Trace::None => {}
            }
        }
        Report { packets: self.packets, lost: self.lost, table: self.table, connections, udp }
    }
}

/// Everything a report shows.
#[derive(Debug)]
pub struct Report {
    /// Packets read.
    pub packets: u64,
    /// Packets marked lost or damaged.
    pub lost: u64,
    /// The flow table, as `inspect --flows` computes it.
    pub table: FlowTable,
    /// The TCP connections drawn, in flow-table order.
    pub connections: Vec<Connection>,
    /// The UDP flows drawn, in flow-table order.
    pub udp: Vec<UdpFlow>,
}

impl Report {
    /// What the page draws, in words: `4 TCP connections and 0 UDP flows drawn, of 4 flows`.
    pub fn drawn(&self) -> String {
        let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        format!(
            "{} and {} drawn, of {}",
            plural(self.connections.len(), "TCP connection"),
            plural(self.udp.len(), "UDP flow"),
            plural(self.table.flows().len(), "flow")
        )
    }
}

/// How a ladder row is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowKind {
    /// An ordinary segment.
    Normal,
    /// It carried sequence space sent before.
    Retransmission,
    /// It has RST set.
    Reset,
}

/// One arrow of a ladder diagram.
#[derive(Clone, Debug, PartialEq)]
pub struct LadderRow {
    /// The packet's place among the connection's packets, from 0.
    pub index: u64,
    /// Milliseconds since the connection's first SYN (else its first packet).
    pub ms: f64,
    /// The sender.
    pub from: Side,
    /// tcpdump's flag letters: `S`, `S.`, `P.`, `R.`.
    pub flags: String,
    /// Sequence number relative to the sender's initial one.
    pub seq: u32,
    /// Acknowledgment number relative to the receiver's initial one, if ACK is set.
    pub ack: Option<u32>,
    /// Payload bytes.
    pub len: u32,
    /// The advertised window in bytes (scaled, when both SYNs agreed on scaling).
    pub window: u64,
    /// SACK blocks, relative.
    pub sacks: Vec<(u32, u32)>,
    /// Retransmission, reset or neither.
    pub kind: RowKind,
    /// What became of it.
    pub mark: Mark,
}

impl LadderRow {
    /// The arrow's label: `[S.] seq 0 ack 1 len 0`, as the terminal ladder writes it.
    pub fn label(&self) -> String {
        let mut s = format!("[{}] seq {}", self.flags, self.seq);
        if let Some(ack) = self.ack {
            s.push_str(&format!(" ack {ack}"));
        }
        s.push_str(&format!(" len {}", self.len));
        s
    }
}

/// One data segment in a time-sequence graph.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SeqSegment {
    /// Milliseconds since the connection's first packet.
    pub ms: f64,
    /// Relative sequence numbers it covers, `start..end`.
    pub start: i64,
    /// End (exclusive).
    pub end: i64,
    /// It was sent before.
    pub retransmission: bool,
    /// What became of it.
    pub mark: Mark,
}

/// A time-sequence (Stevens, tcptrace) graph of one direction: the sender's segments,
/// and the receiver's acknowledgments, window and SACK blocks, all in the sender's
/// relative sequence numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct TimeSequence {
    /// The side whose data is drawn.
    pub sender: Side,
    /// Segments carrying sequence space (data, SYN, FIN).
    pub segments: Vec<SeqSegment>,
    /// The receiver's cumulative acknowledgments: (ms, ack).
    pub acks: Vec<(f64, i64)>,
    /// The receiver's window's right edge, ack + window: (ms, edge).
    pub window: Vec<(f64, i64)>,
    /// The receiver's SACK blocks: (ms, left, right).
    pub sacks: Vec<(f64, i64, i64)>,
    /// The receiver advertised a zero window: (ms, ack).
    pub zero_windows: Vec<(f64, i64)>,
}

impl TimeSequence {
    /// Whether there is anything to draw.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty() && self.acks.is_empty()
    }

    /// Retransmitted segments.
    pub fn retransmissions(&self) -> usize {
        self.segments.iter().filter(|s| s.retransmission).count()
    }
}

/// One TCP connection, ready to draw.
#[derive(Clone, Debug)]
pub struct Connection {
    /// Its number in the flow table, from 1.
    pub number: usize,
    /// The flow (endpoints, counts, handshake and ending).
    pub flow: Flow,
    /// The ladder's first rows.
    pub head: Vec<LadderRow>,
    /// The ladder's last rows, after `elided` rows not drawn.
    pub tail: Vec<LadderRow>,
    /// Packets between the head and the tail, not drawn.
    pub elided: u64,
    /// SYN to SYN-ACK, and SYN-ACK to the ACK that completed the handshake.
    pub handshake_rtt: (Option<Duration>, Option<Duration>),
    /// Client to server, and server to client.
    pub graphs: [TimeSequence; 2],
    /// Packets of the connection left out of the graphs (beyond the bound).
    pub not_graphed: u64,
}

/// One UDP flow, ready to draw.
#[derive(Clone, Debug)]
pub struct UdpFlow {
    /// Its number in the flow table, from 1.
    pub number: usize,
    /// The flow.
    pub flow: Flow,
    /// Its datagrams (the first [`MAX_PACKETS`]).
    pub datagrams: Vec<Datagram>,
    /// Datagrams left out.
    pub not_drawn: u64,
}

/// The window scale each side uses: both SYNs must carry the option (RFC 7323 §2.2).
fn window_shifts(packets: &[TcpPacket]) -> [u8; 2] {
    let syn_scale =
        |side: Side| packets.iter().find(|p| p.from == side && p.flags.has(TcpFlags::SYN)).and_then(|p| p.window_scale);
    match (syn_scale(Side::Client), syn_scale(Side::Server)) {
        // RFC 7323: a shift above 14 is taken as 14.
        (Some(c), Some(s)) => [c.min(14), s.min(14)],
        _ => [0, 0],
    }
}

fn connection(number: usize, flow: &Flow, trace: &TcpTrace) -> Connection {
    let tcp = flow.tcp.clone().unwrap_or_default();
    let base = |side: Side| tcp.base(side).unwrap_or(0);
    let origin = tcp.syn.unwrap_or(flow.first);
    let since = |at: Duration, from: Duration| match at.checked_sub(from) {
        Some(d) => d.as_secs_f64() * 1000.0,
        None => -((from - at).as_secs_f64() * 1000.0),
    };
    let shifts = window_shifts(&trace.packets);
    let window = |p: &TcpPacket| {
        // The window of a SYN is never scaled (RFC 7323 §2.2).
        let shift = if p.flags.has(TcpFlags::SYN) { 0 } else { shifts[p.from as usize] };
        u64::from(p.window) << shift
    };
    let row = |p: &TcpPacket| LadderRow {
        index: p.index,
        ms: since(p.at, origin),
        from: p.from,
        flags: p.flags.to_string(),
        seq: p.seq.wrapping_sub(base(p.from)),
        ack: p.ack.map(|a| a.wrapping_sub(base(p.from.other()))),
        len: p.len,
        window: window(p),
        sacks: p
            .sacks
            .iter()
            .map(|&(l, r)| (l.wrapping_sub(base(p.from.other())), r.wrapping_sub(base(p.from.other()))))
            .collect(),
        kind: if p.flags.has(TcpFlags::RST) {
            RowKind::Reset
        } else if p.retransmission {
            RowKind::Retransmission
        } else {
            RowKind::Normal
        },
        mark: p.mark,
    };
    let head: Vec<LadderRow> = trace.packets.iter().take(LADDER_HEAD).map(row).collect();
    let after_head = head.len() as u64;
    let tail: Vec<LadderRow> = trace.tail.iter().filter(|p| p.index >= after_head).map(row).collect();
    let elided = trace.total - after_head - tail.len() as u64;

    // Graph times count from the connection's first packet, so nothing is negative.
    let start = flow.first;
    let graph = |sender: Side| {
        let receiver = sender.other();
        // Relative to the sender's base; i64 so that a number just below the base (a
        // mid-stream capture's retransmission) reads as negative, not as 4 GiB.
        let rel = |n: u32| i64::from(n.wrapping_sub(base(sender)) as i32);
        let mut g = TimeSequence {
            sender,
            segments: Vec::new(),
            acks: Vec::new(),
            window: Vec::new(),
            sacks: Vec::new(),
            zero_windows: Vec::new(),
        };
        for p in &trace.packets {
            let ms = since(p.at, start);
            if p.from == sender && p.occupies() > 0 {
                let start = rel(p.seq);
                g.segments.push(SeqSegment {
                    ms,
                    start,
                    end: start + i64::from(p.occupies()),
                    retransmission: p.retransmission,
                    mark: p.mark,
                });
            } else if p.from == receiver
                && !p.flags.has(TcpFlags::RST)
                && p.mark == Mark::Seen
                && let Some(ack) = p.ack
            {
                let ack = rel(ack);
                let win = window(p);
                g.acks.push((ms, ack));
                g.window.push((ms, ack.saturating_add(i64::try_from(win).unwrap_or(i64::MAX))));
                if win == 0 {
                    g.zero_windows.push((ms, ack));
                }
                g.sacks.extend(p.sacks.iter().map(|&(l, r)| (ms, rel(l), rel(r))));
            }
        }
        g
    };
    let rtt_syn = match (tcp.last_syn, tcp.syn_ack) {
        (Some(syn), Some(syn_ack)) => syn_ack.checked_sub(syn),
        _ => None,
    };
    let rtt_ack = match (tcp.syn_ack, tcp.ack) {
        (Some(syn_ack), Some(ack)) => ack.checked_sub(syn_ack),
        _ => None,
    };
    Connection {
        number,
        flow: flow.clone(),
        head,
        tail,
        elided,
        handshake_rtt: (rtt_syn, rtt_ack),
        graphs: [graph(Side::Client), graph(Side::Server)],
        not_graphed: trace.total - trace.packets.len() as u64,
    }
}

fn udp_flow(number: usize, flow: &Flow, trace: &UdpTrace) -> UdpFlow {
    let datagrams = trace
        .datagrams
        .iter()
        .map(|&(at, from, len, mark)| Datagram {
            ms: at.saturating_sub(flow.first).as_secs_f64() * 1000.0,
            from,
            len,
            mark,
        })
        .collect::<Vec<_>>();
    UdpFlow { number, flow: flow.clone(), not_drawn: trace.total - datagrams.len() as u64, datagrams }
}
