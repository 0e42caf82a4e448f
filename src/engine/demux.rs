//! ustack's demux, in front of smoltcp: every arriving packet is classified by its 5-tuple
//! and the decision is made — and recorded — here, not inside smoltcp.
//!
//! - A TCP segment of a known connection goes to it. A RST is noted, so the socket API can
//!   tell "refused"/"reset" from a timeout (smoltcp closes the socket either way).
//! - A SYN for a listener is admitted only if its queues have room (Linux's rules, see
//!   [`Listener`](super::Listener)); then a fresh smoltcp socket is made to take exactly
//!   that SYN. Otherwise the SYN is dropped, so the client retransmits, or with
//!   `reset_on_overflow` smoltcp answers RST (it finds no socket).
//! - UDP goes to the bound socket; ICMP echo requests are answered by smoltcp.
//! - A packet for no socket goes to smoltcp, which answers TCP with RST and UDP with ICMP
//!   port unreachable.
//!
//! Each decision is a [`Decision`] value: logged (new connections and refusals at info,
//! every data packet at trace), counted, and kept in a short history tests can assert on.

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::{
    Icmpv4Message, Icmpv4Packet, Icmpv6Message, Icmpv6Packet, IpListenEndpoint, IpProtocol, IpVersion, Ipv4Packet,
    Ipv6Packet, TcpPacket, UdpPacket,
};

use super::{Conn, Engine, Entry, Owner, SockId, SockState};

/// A TCP connection's identity, from ustack's side: local and remote address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpTuple {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl fmt::Display for TcpTuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tcp {} <-> {}", self.local, self.remote)
    }
}

/// What happens to an arriving frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// smoltcp processes it.
    Deliver,
    /// A SYN admitted to a listener: smoltcp processes it with the new socket `handle`
    /// waiting for it in LISTEN.
    Admit(SocketHandle),
    /// Dropped before smoltcp sees it.
    Drop,
    /// Not for smoltcp: the stack sends this packet back instead (a SYN cookie's SYN-ACK).
    Reply(Vec<u8>),
    /// A valid SYN cookie ACK: smoltcp gets `syn` (the client's SYN, rebuilt) for the new
    /// socket `handle`, then, its own SYN-ACK suppressed, the ACK itself.
    Cookie { handle: SocketHandle, syn: Vec<u8> },
    /// A segment with data and FIN, split for smoltcp (see `rewrite::split_fin`): it
    /// processes this, the data, then the frame, now the FIN alone.
    DataThenFin(Vec<u8>),
}

/// Which of a listener's queues was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    Syn,
    Accept,
}

/// Why a packet went where it went: the demux's decision, as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A segment of a known TCP connection (`owner` says whose it is).
    Connection { handle: SocketHandle, state: tcp::State, owner: Owner },
    /// A SYN admitted to listener `listener`: a new half-open connection in its SYN queue.
    Admitted { listener: SockId, handle: SocketHandle, syn_queue: usize, accept_queue: usize, backlog: u32 },
    /// A SYN for a listener whose `queue` was full: dropped (the client retransmits), or
    /// answered with RST when `reset` (reset on overflow).
    Overflow { listener: SockId, queue: Queue, reset: bool },
    /// The ACK completing a handshake, dropped because the accept queue was full; the
    /// connection stays half-open and the SYN-ACK is resent.
    AckDropped { listener: SockId },
    /// A SYN for a listener whose SYN queue was full (but not its accept queue): answered
    /// with a SYN cookie, keeping no state (Linux's `tcp_syncookies=1`).
    CookieSent { listener: SockId },
    /// An ACK carrying a valid SYN cookie: the connection is made now, straight into the
    /// accept queue.
    CookieAccepted { listener: SockId, handle: SocketHandle },
    /// A RST for a connection whose sequence number is in the receive window but not
    /// exactly the next expected one, or a SYN for an established connection: answered
    /// with a challenge ACK (RFC 5961 §3.2, §4.2), and the connection lives on; a peer
    /// that really reset it (or restarted) answers the challenge with an exact RST.
    ChallengeAck { handle: SocketHandle },
    /// A RST outside the receive window: ignored (RFC 5961 §3.2).
    RstOutOfWindow { handle: SocketHandle },
    /// A duplicate ACK while only ustack's FIN is unacknowledged: kept from smoltcp, whose
    /// fast retransmit (smoltcp 0.14) would otherwise never send the FIN again. Its
    /// retransmission timer resends the FIN instead.
    FinDuplicateAck { handle: SocketHandle },
    /// TCP for no socket: smoltcp answers with RST (unless it is itself a RST).
    TcpNoSocket { syn: bool },
    /// A datagram for bound UDP socket `socket`.
    Udp { socket: SockId },
    /// A datagram for no socket: smoltcp answers ICMP port unreachable.
    UdpNoSocket,
    /// An ICMP or ICMPv6 echo request: smoltcp answers it.
    Ping,
    /// Anything else: not addressed to the stack, IPv6 neighbour discovery and MLD, other
    /// ICMP, other protocols, or not a packet at all. smoltcp looks at it and most likely
    /// ignores it.
    Other(&'static str),
}

/// The protocol and endpoints of a packet, as the demux saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// "tcp", "udp", "icmp", "icmpv6", or "ip".
    pub proto: &'static str,
    /// The packet's destination (ustack's side) and source (the peer's side); the port is
    /// 0 where the protocol has none.
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if matches!(self.proto, "tcp" | "udp") {
            write!(f, "{} {} <- {}", self.proto, self.local, self.remote)
        } else {
            write!(f, "{} {} <- {}", self.proto, self.local.ip(), self.remote.ip())
        }
    }
}

/// One decision, with when and for what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemuxEvent {
    /// Milliseconds since the stack started.
    pub at_ms: u64,
    /// None when the packet could not be parsed at all.
    pub flow: Option<Flow>,
    pub decision: Decision,
}

impl fmt::Display for DemuxEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.flow {
            Some(flow) => write!(f, "{flow}: {}", self.decision),
            None => write!(f, "{}", self.decision),
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Decision::Connection { handle, state, owner } => {
                let whose = match owner {
                    Owner::Socket(id) => format!("socket #{id}"),
                    Owner::Listener(id) => format!("listener #{id}'s queue"),
                    Owner::Orphan => "closed socket".into(),
                };
                write!(f, "to connection {handle} ({whose}, {state})")
            }
            Decision::Admitted { listener, syn_queue, accept_queue, backlog, .. } => write!(
                f,
                "SYN to listener #{listener}: admitted, SYN queue {syn_queue}/{}, accept queue {accept_queue}/{}",
                backlog.max(1),
                backlog + 1
            ),
            Decision::Overflow { listener, queue, reset } => {
                let queue = if queue == Queue::Syn { "SYN queue" } else { "accept queue" };
                let action = if reset { "answered with RST" } else { "dropped; the client will retransmit" };
                write!(f, "SYN to listener #{listener}: {queue} full, {action}")
            }
            Decision::AckDropped { listener } => {
                write!(f, "handshake ACK for listener #{listener}: accept queue full, dropped")
            }
            Decision::CookieSent { listener } => {
                write!(f, "SYN to listener #{listener}: SYN queue full, answered with a SYN cookie")
            }
            Decision::CookieAccepted { listener, handle } => {
                write!(f, "ACK with a valid SYN cookie for listener #{listener}: connection {handle} made")
            }
            Decision::ChallengeAck { handle } => {
                write!(f, "SYN, or RST not at the next sequence number, for connection {handle}: challenge ACK")
            }
            Decision::RstOutOfWindow { handle } => write!(f, "RST outside the window of connection {handle}: ignored"),
            Decision::FinDuplicateAck { handle } => write!(
                f,
                "duplicate ACK for connection {handle}, whose FIN alone is unacknowledged: kept from smoltcp, its timer resends the FIN"
            ),
            Decision::TcpNoSocket { syn: true } => write!(f, "SYN to a port nobody listens on: answered with RST"),
            Decision::TcpNoSocket { syn: false } => write!(f, "no connection: answered with RST"),
            Decision::Udp { socket } => write!(f, "to UDP socket #{socket}"),
            Decision::UdpNoSocket => write!(f, "no UDP socket: answered with ICMP port unreachable"),
            Decision::Ping => write!(f, "echo request: answered"),
            Decision::Other(what) => write!(f, "{what}"),
        }
    }
}

/// How many decisions of each kind the demux made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DemuxCounters {
    pub connection: u64,
    pub admitted: u64,
    pub overflow_dropped: u64,
    pub overflow_reset: u64,
    pub ack_dropped: u64,
    pub cookies_sent: u64,
    pub cookies_accepted: u64,
    /// RSTs answered with a challenge ACK, or ignored as out of window (RFC 5961).
    pub challenge_acks: u64,
    pub rst_ignored: u64,
    /// Duplicate ACKs kept from smoltcp while only ustack's FIN was unacknowledged.
    pub fin_duplicate_acks: u64,
    pub tcp_no_socket: u64,
    pub udp: u64,
    /// Datagrams for a UDP socket whose receive buffer was full: dropped.
    pub udp_dropped: u64,
    pub udp_no_socket: u64,
    pub ping: u64,
    pub other: u64,
}

/// Decisions the stack remembers, newest last; older ones are forgotten.
pub const HISTORY: usize = 1024;

/// The demux's record: counters and recent decisions.
#[derive(Debug, Default)]
pub struct DemuxLog {
    pub counters: DemuxCounters,
    pub recent: VecDeque<DemuxEvent>,
    limit: LogLimit,
}

/// Info lines per kind of decision per second, at most; the rest are counted and the
/// count logged once the second is over (the kernel's `net_ratelimit` in spirit). A flood
/// of SYNs or of packets to closed ports must not become a flood of log lines.
const LOG_BURST: u32 = 20;

/// The decisions logged at info level, which a flood can make by the thousand.
const LIMITED: [&str; 8] = [
    "SYN admissions",
    "SYNs to closed ports",
    "datagrams to closed ports",
    "queue overflows",
    "dropped handshake ACKs",
    "SYN cookies sent",
    "SYN cookies accepted",
    "RFC 5961 decisions",
];

#[derive(Debug, Default)]
struct LogLimit {
    second: u64,
    logged: [u32; LIMITED.len()],
    suppressed: [u64; LIMITED.len()],
}

impl LogLimit {
    /// Whether a decision of kind `kind` (an index into [`LIMITED`]) may be logged now.
    fn allow(&mut self, kind: usize, at_ms: u64) -> bool {
        if at_ms / 1000 != self.second {
            for (name, &n) in LIMITED.iter().zip(&self.suppressed) {
                if n > 0 {
                    log::info!(target: "ustack::demux", "{n} more {name} in the last second, not logged one by one");
                }
            }
            *self = LogLimit { second: at_ms / 1000, ..LogLimit::default() };
        }
        self.logged[kind] += 1;
        let allowed = self.logged[kind] <= LOG_BURST;
        if !allowed {
            self.suppressed[kind] += 1;
        }
        allowed
    }
}

impl DemuxLog {
    fn record(&mut self, event: DemuxEvent) {
        let c = &mut self.counters;
        match event.decision {
            Decision::Connection { .. } => c.connection += 1,
            Decision::Admitted { .. } => c.admitted += 1,
            Decision::Overflow { reset: false, .. } => c.overflow_dropped += 1,
            Decision::Overflow { reset: true, .. } => c.overflow_reset += 1,
            Decision::AckDropped { .. } => c.ack_dropped += 1,
            Decision::CookieSent { .. } => c.cookies_sent += 1,
            Decision::CookieAccepted { .. } => c.cookies_accepted += 1,
            Decision::ChallengeAck { .. } => c.challenge_acks += 1,
            Decision::RstOutOfWindow { .. } => c.rst_ignored += 1,
            Decision::FinDuplicateAck { .. } => c.fin_duplicate_acks += 1,
            Decision::TcpNoSocket { .. } => c.tcp_no_socket += 1,
            Decision::Udp { .. } => c.udp += 1,
            Decision::UdpNoSocket => c.udp_no_socket += 1,
            Decision::Ping => c.ping += 1,
            Decision::Other(_) => c.other += 1,
        }
        let limited = match event.decision {
            Decision::Admitted { .. } => Some((0, "ustack::demux")),
            Decision::TcpNoSocket { syn: true } => Some((1, "ustack::demux")),
            Decision::UdpNoSocket => Some((2, "ustack::demux")),
            Decision::Overflow { .. } => Some((3, "ustack::backlog")),
            Decision::AckDropped { .. } => Some((4, "ustack::backlog")),
            Decision::CookieSent { .. } => Some((5, "ustack::backlog")),
            Decision::CookieAccepted { .. } => Some((6, "ustack::backlog")),
            Decision::ChallengeAck { .. } | Decision::RstOutOfWindow { .. } => Some((7, "ustack::demux")),
            _ => None,
        };
        if let Some((kind, target)) = limited {
            if log::log_enabled!(target: target, log::Level::Info) && self.limit.allow(kind, event.at_ms) {
                log::info!(target: target, "{event}");
            }
        } else if matches!(
            event.decision,
            Decision::TcpNoSocket { syn: false }
                | Decision::Udp { .. }
                | Decision::Ping
                | Decision::FinDuplicateAck { .. }
        ) {
            log::debug!(target: "ustack::demux", "{event}");
        } else {
            log::trace!(target: "ustack::demux", "{event}");
        }
        if self.recent.len() == HISTORY {
            self.recent.pop_front();
        }
        self.recent.push_back(event);
    }
}

/// What the demux reads of a packet.
enum Parsed {
    Tcp {
        flow: Flow,
        syn: bool,
        ack: bool,
        rst: bool,
        tcp: std::ops::Range<usize>,
    },
    /// `unchecked`: UDP over IPv6 with a checksum of zero, which RFC 8200 forbids.
    Udp {
        flow: Flow,
        unchecked: bool,
    },
    Icmp {
        flow: Flow,
        echo_request: bool,
        neighbour: bool,
    },
    Other {
        flow: Flow,
    },
}

fn parse(frame: &[u8]) -> Option<Parsed> {
    let (src, dst, protocol, payload): (IpAddr, IpAddr, IpProtocol, &[u8]) = match super::rewrite::ip_version(frame)? {
        IpVersion::Ipv4 => {
            let ip = Ipv4Packet::new_checked(frame).ok()?;
            let header = usize::from(ip.header_len());
            let total = usize::from(ip.total_len()).min(frame.len());
            let payload = frame.get(header..total)?;
            // Fragments carry no (or a partial) transport header; smoltcp does not reassemble.
            let protocol =
                if ip.more_frags() || ip.frag_offset() != 0 { IpProtocol::Unknown(0) } else { ip.next_header() };
            (IpAddr::V4(ip.src_addr()), IpAddr::V4(ip.dst_addr()), protocol, payload)
        }
        IpVersion::Ipv6 => {
            let ip = Ipv6Packet::new_checked(frame).ok()?;
            let end = (40 + usize::from(ip.payload_len())).min(frame.len());
            (IpAddr::V6(ip.src_addr()), IpAddr::V6(ip.dst_addr()), ip.next_header(), frame.get(40..end)?)
        }
    };
    let flow =
        |proto, sport, dport| Flow { proto, local: SocketAddr::new(dst, dport), remote: SocketAddr::new(src, sport) };
    Some(match protocol {
        IpProtocol::Tcp => match TcpPacket::new_checked(payload) {
            Ok(tcp) => {
                // Where the segment lies in the frame (payload is a subslice of it).
                let start = payload.as_ptr() as usize - frame.as_ptr() as usize;
                Parsed::Tcp {
                    flow: flow("tcp", tcp.src_port(), tcp.dst_port()),
                    syn: tcp.syn(),
                    ack: tcp.ack(),
                    rst: tcp.rst(),
                    tcp: start..start + payload.len(),
                }
            }
            Err(_) => Parsed::Other { flow: flow("tcp", 0, 0) },
        },
        IpProtocol::Udp => match UdpPacket::new_checked(payload) {
            Ok(udp) => Parsed::Udp {
                flow: flow("udp", udp.src_port(), udp.dst_port()),
                // smoltcp takes a zero checksum as "none" for IPv6 too.
                unchecked: dst.is_ipv6() && udp.checksum() == 0,
            },
            Err(_) => Parsed::Other { flow: flow("udp", 0, 0) },
        },
        IpProtocol::Icmp => {
            let echo_request =
                Icmpv4Packet::new_checked(payload).is_ok_and(|p| p.msg_type() == Icmpv4Message::EchoRequest);
            Parsed::Icmp { flow: flow("icmp", 0, 0), echo_request, neighbour: false }
        }
        IpProtocol::Icmpv6 => {
            let message = Icmpv6Packet::new_checked(payload).map(|p| p.msg_type()).ok();
            Parsed::Icmp {
                flow: flow("icmpv6", 0, 0),
                echo_request: message == Some(Icmpv6Message::EchoRequest),
                neighbour: matches!(
                    message,
                    Some(
                        Icmpv6Message::RouterSolicit
                            | Icmpv6Message::RouterAdvert
                            | Icmpv6Message::NeighborSolicit
                            | Icmpv6Message::NeighborAdvert
                            | Icmpv6Message::Redirect
                            | Icmpv6Message::MldQuery
                            | Icmpv6Message::MldReport
                    )
                ),
            }
        }
        _ => Parsed::Other { flow: flow("ip", 0, 0) },
    })
}

/// Whether a socket bound to `bound` receives packets sent to `dst`.
pub fn bound_matches(bound: IpAddr, dst: IpAddr) -> bool {
    match bound {
        IpAddr::V6(any) if any.is_unspecified() => true,
        IpAddr::V4(any) if any.is_unspecified() => dst.is_ipv4(),
        _ => bound == dst,
    }
}

/// Of the sockets `ids` bound to `dst`'s port, the one `dst` goes to: one bound to exactly
/// `dst` before a wildcard one.
fn find_bound(core: &Engine, ids: Option<&Vec<SockId>>, dst: SocketAddr) -> Option<SockId> {
    let ids = ids?;
    let bound = |id: &&SockId| core.entries.get(id).and_then(|e| e.local).map(|l| l.ip());
    ids.iter()
        .find(|id| bound(id) == Some(dst.ip()))
        .or_else(|| ids.iter().find(|id| bound(id).is_some_and(|b| bound_matches(b, dst.ip()))))
        .copied()
}

/// Decides what happens to `frame`, does the ustack side of it, and records the decision
/// as made at `now` (the round's time: a clock read per packet showed in profiles).
/// Also returns the socket the packet is for, if any, so the stack can look at it right
/// after smoltcp has processed the packet.
pub fn admit(core: &mut Engine, frame: &mut Vec<u8>, now: smoltcp::time::Instant) -> (Disposition, Option<Target>) {
    let (flow, decision, mut disposition) = match parse(frame) {
        None if frame.is_empty() => (None, Decision::Other("empty frame"), Disposition::Drop),
        None => (None, Decision::Other("not an IP packet ustack can parse"), Disposition::Deliver),
        Some(parsed) => {
            let (flow, decision, disposition) = decide(core, parsed, frame);
            (Some(flow), decision, disposition)
        }
    };
    // A connection whose ISN on the wire is not smoltcp's: its acknowledgments (and SACK
    // blocks) name the wire's numbering; smoltcp must see its own.
    if let Decision::Connection { handle, .. } = decision
        && disposition == Disposition::Deliver
        && let Some((offset, src, dst)) = super::rewrite::tcp_header(frame)
    {
        if let Some(conn) = core.conns.get(&handle) {
            keep_window_open_while_in_flight(conn, frame, offset);
            if let Some(shift) = conn.shift {
                super::rewrite::incoming(frame, offset, shift);
            }
        }
        if let Some(data) = super::rewrite::split_fin(frame, offset, src.ip(), dst.ip()) {
            disposition = Disposition::DataThenFin(data);
        }
    }
    let at_ms = now.total_millis() as u64;
    core.demux_log.record(DemuxEvent { at_ms, flow, decision });
    let target = match decision {
        Decision::Connection { handle, .. }
        | Decision::Admitted { handle, .. }
        | Decision::CookieAccepted { handle, .. } => Some(Target::Tcp(handle)),
        Decision::Udp { socket } => match core.entries.get(&socket).map(|e| &e.state) {
            Some(SockState::Udp { handle, .. }) => {
                Some(Target::Udp { socket, handle: *handle, len: udp_payload_len(frame).unwrap_or(0) })
            }
            _ => None,
        },
        _ => None,
    };
    (disposition, target)
}

/// The socket a packet went to, for the stack to look at after smoltcp processed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A TCP connection: its state may have changed.
    Tcp(SocketHandle),
    /// A bound UDP socket: the datagram (`len` bytes of payload) may not have fit in its
    /// buffer.
    Udp { socket: SockId, handle: SocketHandle, len: usize },
}

/// Whether a UDP datagram's checksums (the IPv4 header's and the UDP one) are right, as
/// smoltcp checks them before it queues the datagram. Only asked when a datagram did not
/// reach its socket, to tell damage from a full buffer.
pub fn udp_checksums_ok(frame: &[u8]) -> bool {
    let Some(version) = super::rewrite::ip_version(frame) else { return false };
    let (src, dst, payload): (smoltcp::wire::IpAddress, smoltcp::wire::IpAddress, &[u8]) = match version {
        IpVersion::Ipv4 => {
            let Ok(ip) = Ipv4Packet::new_checked(frame) else { return false };
            if !ip.verify_checksum() {
                return false;
            }
            (ip.src_addr().into(), ip.dst_addr().into(), ip.payload())
        }
        IpVersion::Ipv6 => {
            let Ok(ip) = Ipv6Packet::new_checked(frame) else { return false };
            (ip.src_addr().into(), ip.dst_addr().into(), ip.payload())
        }
    };
    UdpPacket::new_checked(payload).is_ok_and(|udp| udp.verify_checksum(&src, &dst))
}

fn udp_payload_len(frame: &[u8]) -> Option<usize> {
    let payload = match super::rewrite::ip_version(frame)? {
        IpVersion::Ipv4 => Ipv4Packet::new_checked(frame).ok().map(|ip| ip.payload().len())?,
        IpVersion::Ipv6 => Ipv6Packet::new_checked(frame).ok().map(|ip| ip.payload().len())?,
    };
    Some(payload.saturating_sub(8))
}

fn decide(core: &mut Engine, parsed: Parsed, frame: &[u8]) -> (Flow, Decision, Disposition) {
    use Disposition::Deliver;
    let flow = match &parsed {
        Parsed::Tcp { flow, .. } | Parsed::Udp { flow, .. } | Parsed::Icmp { flow, .. } | Parsed::Other { flow } => {
            *flow
        }
    };
    if !core.is_local(flow.local.ip()) {
        return (flow, Decision::Other("not addressed to this stack"), Deliver);
    }
    match parsed {
        Parsed::Tcp { syn, ack, rst, tcp, .. } => {
            let segment = Segment {
                tuple: TcpTuple { local: flow.local, remote: flow.remote },
                syn,
                ack,
                rst,
                bytes: &frame[tcp],
            };
            let (decision, disposition) = decide_tcp(core, segment);
            (flow, decision, disposition)
        }
        Parsed::Udp { unchecked: true, .. } => (
            flow,
            Decision::Other("UDP over IPv6 without a checksum (RFC 8200 forbids it): dropped"),
            Disposition::Drop,
        ),
        Parsed::Udp { .. } => match find_bound(core, core.udp_ports.get(&flow.local.port()), flow.local) {
            Some(socket) => (flow, Decision::Udp { socket }, Deliver),
            None => (flow, Decision::UdpNoSocket, Deliver),
        },
        Parsed::Icmp { echo_request: true, .. } => (flow, Decision::Ping, Deliver),
        Parsed::Icmp { neighbour: true, .. } => {
            (flow, Decision::Other("IPv6 neighbour discovery or MLD: ignored"), Deliver)
        }
        Parsed::Icmp { .. } => (flow, Decision::Other("ICMP message"), Deliver),
        Parsed::Other { .. } => (flow, Decision::Other("protocol ustack does not serve"), Deliver),
    }
}

/// A TCP segment as the demux sees it.
struct Segment<'a> {
    tuple: TcpTuple,
    syn: bool,
    ack: bool,
    rst: bool,
    /// The TCP header and payload.
    bytes: &'a [u8],
}

impl Segment<'_> {
    fn info(&self) -> Option<super::cookie::SegmentInfo> {
        super::cookie::segment_info(self.bytes, self.tuple.remote.ip().into(), self.tuple.local.ip().into())
    }
}

fn decide_tcp(core: &mut Engine, seg: Segment) -> (Decision, Disposition) {
    let tuple = seg.tuple;
    if let Some(&handle) = core.demux.get(&tuple) {
        if !core.conns.contains_key(&handle) {
            return (Decision::Other("stale demux entry"), Disposition::Deliver);
        }
        if (seg.rst || seg.syn)
            && let Some(answer) = check_control(core, handle, &seg)
        {
            return answer;
        }
        let Some(conn) = core.conns.get_mut(&handle) else { unreachable!("looked up above") };
        conn.reset |= seg.rst;
        if is_duplicate_ack_for_fin(conn, &seg) {
            return (Decision::FinDuplicateAck { handle }, Disposition::Drop);
        }
        let decision = Decision::Connection { handle, state: conn.state, owner: conn.owner };
        // Linux drops the ACK that would complete a handshake while the accept queue is
        // full; the client's connection stays half-open here and the SYN-ACK is resent.
        if let (Owner::Listener(listener), tcp::State::SynReceived) = (conn.owner, conn.state)
            && seg.ack
            && !seg.syn
            && !seg.rst
            && let Some(Entry { state: SockState::Listening(l), .. }) = core.entries.get_mut(&listener)
            && l.accept_queue_full()
        {
            l.acks_dropped += 1;
            core.generation += 1;
            return (Decision::AckDropped { listener }, Disposition::Drop);
        }
        return (decision, Disposition::Deliver);
    }
    let listener = find_bound(core, core.listeners.get(&tuple.local.port()), tuple.local);
    if seg.ack
        && !seg.syn
        && !seg.rst
        && core.config.syn_cookies
        && let Some(listener) = listener
        && let Some(made) = accept_cookie(core, &seg, listener)
    {
        return made;
    }
    if !seg.syn || seg.ack || seg.rst {
        return (Decision::TcpNoSocket { syn: false }, Disposition::Deliver);
    }
    let Some(listener) = listener else {
        return (Decision::TcpNoSocket { syn: true }, Disposition::Deliver);
    };
    // smoltcp drops a damaged SYN: admitted, it would leave a half-open connection that
    // never was (counted, and kept in the connection history with only LISTEN).
    if seg.info().is_none() {
        return (Decision::Other("SYN with a bad checksum"), Disposition::Drop);
    }
    let (reset_on_overflow, syn_cookies) = (core.config.reset_on_overflow, core.config.syn_cookies);
    let Some(Entry { state: SockState::Listening(l), .. }) = core.entries.get_mut(&listener) else {
        return (Decision::TcpNoSocket { syn: true }, Disposition::Deliver);
    };
    let accept_full = l.accept_queue_full();
    if !accept_full && l.syn_queue_full() && syn_cookies {
        l.cookies_sent += 1;
        return match send_cookie(core, &seg) {
            Some(reply) => (Decision::CookieSent { listener }, Disposition::Reply(reply)),
            None => (Decision::Other("SYN with a bad checksum"), Disposition::Drop),
        };
    }
    if accept_full || l.syn_queue_full() {
        let queue = if accept_full { Queue::Accept } else { Queue::Syn };
        core.generation += 1;
        if reset_on_overflow {
            l.syns_reset += 1;
            // smoltcp finds no socket for the SYN and answers it with RST.
            return (Decision::Overflow { listener, queue, reset: true }, Disposition::Deliver);
        }
        l.syns_dropped += 1;
        return (Decision::Overflow { listener, queue, reset: false }, Disposition::Drop);
    }
    let handle = match new_half_open(core, tuple, listener) {
        Ok(handle) => handle,
        Err(NoSocket::PortZero) => return (Decision::Other("listener port 0"), Disposition::Deliver),
        // Like a full SYN queue: the client retransmits.
        Err(NoSocket::NoMemory) => {
            return (Decision::Other("SYN for a listener: no memory for socket buffers, dropped"), Disposition::Drop);
        }
    };
    let Some(Entry { state: SockState::Listening(l), .. }) = core.entries.get(&listener) else {
        unreachable!("checked above")
    };
    let decision = Decision::Admitted {
        listener,
        handle,
        syn_queue: l.syn_queue.len(),
        accept_queue: l.accept_queue.len(),
        backlog: l.backlog,
    };
    (decision, Disposition::Admit(handle))
}

/// RFC 5961 for a RST or SYN on a synchronized connection, which smoltcp gets wrong: it
/// accepts any RST in the window (a blind attacker hits one with a chance of window / 2^32,
/// not 1 / 2^32), and drops a SYN without an ACK silently (a restarted peer then never
/// learns its old connection is still there). So:
/// - a RST resets the connection only if its sequence number is exactly RCV.NXT (what
///   ustack last acknowledged); in the window but not exact, it gets a challenge ACK
///   (§3.2); outside the window it is ignored;
/// - a SYN, whatever its sequence number, gets a challenge ACK (§4.2).
///
/// Challenge ACKs go out at most once a second per connection (§7). A peer that really
/// reset the connection, or restarted, answers the challenge with an exact RST. None lets
/// the segment through to smoltcp.
fn check_control(core: &mut Engine, handle: SocketHandle, seg: &Segment) -> Option<(Decision, Disposition)> {
    let window = core.tcp(handle).recv_capacity() as u32;
    let now = core.now;
    let conn = core.conns.get_mut(&handle)?;
    let synchronized =
        !matches!(conn.state, tcp::State::Listen | tcp::State::SynSent | tcp::State::SynReceived | tcp::State::Closed);
    let sent = conn.sent?;
    if !synchronized {
        return None;
    }
    if seg.rst && !seg.syn {
        let seq = u32::from_be_bytes(seg.bytes.get(4..8)?.try_into().ok()?);
        if seq == sent.ack {
            return None;
        }
        if seq.wrapping_sub(sent.ack) >= window.max(1) {
            return Some((Decision::RstOutOfWindow { handle }, Disposition::Drop));
        }
    }
    if conn.challenged_at.is_some_and(|at| now - at < smoltcp::time::Duration::from_secs(1)) {
        return Some((Decision::ChallengeAck { handle }, Disposition::Drop));
    }
    conn.challenged_at = Some(now);
    // Built in smoltcp's numbering, like everything that goes out: the transmit path
    // shifts it to the wire's.
    let unshifted = super::conn::Sent { seq_end: sent.seq_end.wrapping_add(conn.shift.unwrap_or(0)), ..sent };
    Some((Decision::ChallengeAck { handle }, Disposition::Reply(super::cookie::ack(&conn.tuple, &unshifted))))
}

/// Whether `seg` is a duplicate ACK (no data, no SYN/FIN/RST, the same acknowledgment and
/// window as the segment before) of everything but ustack's FIN. smoltcp 0.14 counts these
/// toward a fast retransmit even with only the FIN in flight, then has nothing to resend
/// and no timer left: the FIN never goes out again. Without them, its retransmission
/// timer resends the FIN. Remembers `seg`'s acknowledgment for the next call.
fn is_duplicate_ack_for_fin(conn: &mut Conn, seg: &Segment) -> bool {
    use super::rewrite::{ACK, FIN, RST, SYN};
    let bytes = seg.bytes;
    let flags = bytes[13];
    if flags & ACK == 0 {
        return false;
    }
    let (ack, window) = super::rewrite::ack_and_window(bytes);
    let previous = conn.last_ack_in.replace((ack, window));
    let empty = bytes.len() == usize::from(bytes[12] >> 4) * 4;
    empty
        && flags & (SYN | FIN | RST) == 0
        && conn.fin_end == Some(ack.wrapping_add(1))
        && previous == Some((ack, window))
}

/// Why no half-open connection could be made.
enum NoSocket {
    PortZero,
    NoMemory,
}

/// A zero window advertised while ustack has data or a FIN in flight reaches smoltcp as
/// a window of one unit. smoltcp 0.14 answers a zero window with its zero-window-probe
/// timer in place of the retransmission timer, and when the window opens it stops that
/// timer by making the connection idle — with the data in flight never retransmitted: the
/// transfer stalls for good if that data was lost. A window of one unit keeps the
/// retransmission timer running; the retransmissions are then the probes (RFC 9293 §3.8.6.1
/// lets a sender probe with what it has), and a receiver with no room drops them and
/// answers with its window, as it would a probe.
fn keep_window_open_while_in_flight(conn: &Conn, frame: &mut [u8], offset: usize) {
    use super::rewrite::{ACK, RST, SYN, ack_and_window, seq_after};
    let tcp = &frame[offset..];
    let (ack, window) = ack_and_window(tcp);
    if window != 0 || tcp[13] & ACK == 0 || tcp[13] & (SYN | RST) != 0 {
        return;
    }
    if conn.sent_max.is_some_and(|max| seq_after(max, ack)) {
        super::rewrite::set_window(frame, offset, 1);
        log::debug!(target: "ustack::demux", "{}: zero window with data in flight, given to smoltcp as 1", conn.tuple);
    }
}

/// A fresh smoltcp socket listening for exactly `tuple`'s SYN, in `listener`'s SYN queue.
fn new_half_open(core: &mut Engine, tuple: TcpTuple, listener: SockId) -> Result<SocketHandle, NoSocket> {
    let (mut socket, slot) = core.buffers.tcp_socket().ok_or(NoSocket::NoMemory)?;
    let endpoint = IpListenEndpoint { addr: Some(tuple.local.ip().into()), port: tuple.local.port() };
    if socket.listen(endpoint).is_err() {
        core.buffers.give_back(socket, slot);
        return Err(NoSocket::PortZero);
    }
    let handle = core.add_tcp_socket(socket, slot);
    if let Some(Entry { state: SockState::Listening(l), .. }) = core.entries.get_mut(&listener) {
        l.syn_queue.push(handle);
    }
    core.add_conn(handle, tuple, Owner::Listener(listener), tcp::State::Listen);
    Ok(handle)
}

/// The minute SYN cookies are made for (they stay valid for two).
fn cookie_minute(core: &Engine) -> u32 {
    (core.now.total_millis() / 60_000) as u32
}

/// A SYN-ACK whose ISN is a cookie, for a SYN the SYN queue has no room for; None if the
/// SYN's checksum is wrong.
fn send_cookie(core: &Engine, seg: &Segment) -> Option<Vec<u8>> {
    let info = seg.info()?;
    let cookie = core.secret.cookie(&seg.tuple, cookie_minute(core), info.mss.unwrap_or(536));
    let ip_and_tcp = if seg.tuple.local.is_ipv4() { 40 } else { 60 };
    let our_mss = u16::try_from(core.mtu().saturating_sub(ip_and_tcp)).unwrap_or(u16::MAX);
    Some(super::cookie::syn_ack(&seg.tuple, info.seq, cookie, our_mss))
}

/// If `seg` is an ACK carrying a valid cookie of `listener`'s, the connection it makes (or
/// the ACK dropped because the accept queue is full); None if it carries no valid cookie.
fn accept_cookie(core: &mut Engine, seg: &Segment, listener: SockId) -> Option<(Decision, Disposition)> {
    let info = seg.info()?;
    let cookie = info.ack?.wrapping_sub(1);
    let mss = core.secret.check_cookie(&seg.tuple, cookie_minute(core), cookie)?;
    let Some(Entry { state: SockState::Listening(l), .. }) = core.entries.get_mut(&listener) else { return None };
    if l.accept_queue_full() {
        l.acks_dropped += 1;
        core.generation += 1;
        return Some((Decision::AckDropped { listener }, Disposition::Drop));
    }
    let handle = new_half_open(core, seg.tuple, listener).ok()?;
    if let Some(conn) = core.conns.get_mut(&handle) {
        conn.cookie = Some(cookie);
        conn.via_cookie = true;
    }
    let syn = super::cookie::replayed_syn(&seg.tuple, info.seq.wrapping_sub(1), mss);
    Some((Decision::CookieAccepted { listener, handle }, Disposition::Cookie { handle, syn }))
}

/// After smoltcp processed an admitted SYN: if it rejected it (a bad checksum, say), the
/// socket made for it is still listening and must not catch another client's SYN.
pub fn settle(core: &mut Engine, handle: SocketHandle) {
    if core.tcp(handle).state() == tcp::State::Listen {
        forget_half_open(core, handle);
    }
}

/// Removes a half-open connection from its listener's SYN queue and frees it, sending
/// nothing.
pub fn forget_half_open(core: &mut Engine, handle: SocketHandle) {
    if let Some(Owner::Listener(id)) = core.conns.get(&handle).map(|c| c.owner)
        && let Some(Entry { state: SockState::Listening(l), .. }) = core.entries.get_mut(&id)
    {
        l.syn_queue.retain(|&h| h != handle);
    }
    core.free_conn(handle);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_one_kind_of_decision_is_logged_twenty_lines_a_second() {
        let mut limit = LogLimit::default();
        let allowed = (0..1000).filter(|i| limit.allow(5, 5_000 + i % 1000)).count();
        assert_eq!(allowed, LOG_BURST as usize);
        assert_eq!(limit.suppressed[5], 1000 - u64::from(LOG_BURST));
        assert!(limit.allow(3, 5_999), "other kinds have their own budget");
        assert!(limit.allow(5, 6_000), "a new second starts afresh");
        assert_eq!(limit.suppressed, [0; LIMITED.len()]);
    }
}
