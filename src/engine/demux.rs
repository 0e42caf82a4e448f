//! ustack's demux, in front of smoltcp: every arriving packet is classified by its 5-tuple
//! and the decision is made — and recorded — here, not inside smoltcp.
//!
//! - A TCP segment of a known connection goes to it. A RST is noted, so the socket API can
//!   tell "refused"/"reset" from a timeout (smoltcp closes the socket either way).
//! - A SYN for a listener is admitted only if its queues have room (Linux's rules, see
//!   `Listener`); then a fresh smoltcp socket is made to take exactly
//!   that SYN. Otherwise the SYN is dropped, so the client retransmits (also with
//!   `reset_on_overflow`, as Linux's `tcp_abort_on_overflow`: that answers with RST only
//!   the handshake's last ACK that finds the accept queue full).
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

use super::{Conn, Engine, Entry, Listener, Owner, SockId, SockState};

/// A TCP connection's identity, from ustack's side: local and remote address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpTuple {
    /// ustack's address and port.
    pub local: SocketAddr,
    /// The peer's.
    pub remote: SocketAddr,
}

impl fmt::Display for TcpTuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tcp {} <-> {}", self.local, self.remote)
    }
}

/// What happens to an arriving frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Disposition {
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
    /// socket `handle`, then, its own SYN-ACK suppressed, the ACK itself (whose TCP header
    /// starts at `offset`).
    Cookie { handle: SocketHandle, syn: Vec<u8>, offset: usize },
    /// smoltcp processes this segment first, then the frame: the data of a segment split
    /// from its FIN (see `rewrite::split_fin`), or the acknowledgment carried by data that
    /// smoltcp refuses where Linux takes it (see `ack_smoltcp_refuses`).
    First(Vec<u8>),
}

/// Which of a listener's queues was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// The SYN queue: half-open connections.
    Syn,
    /// The accept queue: established connections accept() has not taken.
    Accept,
}

/// Why a packet went where it went: the demux's decision, as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A segment of a known TCP connection (`owner` says whose it is).
    Connection {
        /// The connection (smoltcp's handle of its socket).
        handle: SocketHandle,
        /// Its state when the segment arrived.
        state: tcp::State,
        /// Who has it: a socket, a listener's queue, or nobody (closing).
        owner: Owner,
    },
    /// A SYN admitted to listener `listener`: a new half-open connection in its SYN queue.
    Admitted {
        /// The listening socket.
        listener: SockId,
        /// The new connection.
        handle: SocketHandle,
        /// The listener's SYN queue length, this connection included.
        syn_queue: usize,
        /// Its accept queue length.
        accept_queue: usize,
        /// Its backlog.
        backlog: u32,
    },
    /// A SYN for a listener whose `queue` was full: dropped (the client retransmits).
    Overflow {
        /// The listening socket.
        listener: SockId,
        /// The queue that was full.
        queue: Queue,
    },
    /// The ACK completing a handshake, dropped because the accept queue was full: the
    /// connection stays half-open and the SYN-ACK is resent. With `reset` (reset on
    /// overflow, Linux's `tcp_abort_on_overflow=1`) it is answered with RST instead, and
    /// the half-open connection is gone.
    AckDropped {
        /// The listening socket.
        listener: SockId,
        /// Answered with RST instead of dropped.
        reset: bool,
    },
    /// A SYN for a listener whose SYN queue was full (but not its accept queue): answered
    /// with a SYN cookie, keeping no state (Linux's `tcp_syncookies=1`).
    CookieSent {
        /// The listening socket.
        listener: SockId,
    },
    /// An ACK carrying a valid SYN cookie: the connection is made now, straight into the
    /// accept queue.
    CookieAccepted {
        /// The listening socket.
        listener: SockId,
        /// The connection made.
        handle: SocketHandle,
    },
    /// A RST for a connection whose sequence number is in the receive window but not
    /// exactly the next expected one, or a SYN for an established connection: answered
    /// with a challenge ACK (RFC 5961 §3.2, §4.2), and the connection lives on; a peer
    /// that really reset it (or restarted) answers the challenge with an exact RST.
    ChallengeAck {
        /// The connection.
        handle: SocketHandle,
    },
    /// A RST outside the receive window: ignored (RFC 5961 §3.2).
    RstOutOfWindow {
        /// The connection.
        handle: SocketHandle,
    },
    /// The client's SYN again, for a half-open connection: answered at once with the
    /// SYN-ACK again, as Linux does (smoltcp would ignore it and wait for its timer), or
    /// ignored within 500 ms of the last such answer (`limited`).
    SynAckResent {
        /// The half-open connection.
        handle: SocketHandle,
        /// Ignored, because the last answer was less than 500 ms ago.
        limited: bool,
    },
    /// A duplicate ACK while only ustack's FIN is unacknowledged: kept from smoltcp, whose
    /// fast retransmit (smoltcp 0.14) would otherwise never send the FIN again. Its
    /// retransmission timer resends the FIN instead.
    FinDuplicateAck {
        /// The connection.
        handle: SocketHandle,
    },
    /// TCP for no socket: answered with RST (unless it is itself a RST) — by smoltcp, or
    /// for a segment without ACK by the demux itself, as RST+ACK (see `cookie::rst_ack`).
    TcpNoSocket {
        /// The segment was a SYN (a connection attempt to a closed port).
        syn: bool,
    },
    /// A datagram for bound UDP socket `socket`.
    Udp {
        /// The socket.
        socket: SockId,
    },
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
pub struct PacketEnds {
    /// "tcp", "udp", "icmp", "icmpv6", or "ip".
    pub proto: &'static str,
    /// The packet's destination (ustack's side) and source (the peer's side); the port is
    /// 0 where the protocol has none.
    pub local: SocketAddr,
    /// The packet's source.
    pub remote: SocketAddr,
}

impl fmt::Display for PacketEnds {
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
    pub flow: Option<PacketEnds>,
    /// What the demux decided.
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
            Decision::Overflow { listener, queue } => {
                let queue = if queue == Queue::Syn { "SYN queue" } else { "accept queue" };
                write!(f, "SYN to listener #{listener}: {queue} full, dropped; the client will retransmit")
            }
            Decision::AckDropped { listener, reset: false } => {
                write!(f, "handshake ACK for listener #{listener}: accept queue full, dropped")
            }
            Decision::AckDropped { listener, reset: true } => {
                write!(
                    f,
                    "handshake ACK for listener #{listener}: accept queue full, answered with RST (abort on overflow)"
                )
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
            Decision::SynAckResent { handle, limited: false } => {
                write!(f, "the SYN again, for half-open connection {handle}: its SYN-ACK sent again")
            }
            Decision::SynAckResent { handle, limited: true } => {
                write!(
                    f,
                    "the SYN again, for half-open connection {handle}: SYN-ACK resent less than 500 ms ago, ignored"
                )
            }
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
    /// Segments of known connections.
    pub connection: u64,
    /// SYNs admitted to a listener's SYN queue.
    pub admitted: u64,
    /// SYNs dropped because a listener's queue was full.
    pub overflow_dropped: u64,
    /// Handshake-completing ACKs answered with RST because the accept queue was full
    /// (reset on overflow).
    pub overflow_reset: u64,
    /// Handshake-completing ACKs dropped because the accept queue was full.
    pub ack_dropped: u64,
    /// SYNs answered with a SYN cookie.
    pub cookies_sent: u64,
    /// ACKs with a valid SYN cookie, made into connections.
    pub cookies_accepted: u64,
    /// RSTs answered with a challenge ACK, or ignored as out of window (RFC 5961).
    pub challenge_acks: u64,
    /// RSTs outside the receive window, ignored (RFC 5961).
    pub rst_ignored: u64,
    /// Retransmitted SYNs of half-open connections answered with the SYN-ACK again.
    pub syn_acks_resent: u64,
    /// Duplicate ACKs kept from smoltcp while only ustack's FIN was unacknowledged.
    pub fin_duplicate_acks: u64,
    /// TCP segments for no socket (answered with RST).
    pub tcp_no_socket: u64,
    /// Datagrams for a bound UDP socket.
    pub udp: u64,
    /// Datagrams for a UDP socket whose receive buffer was full: dropped.
    pub udp_dropped: u64,
    /// Datagrams for no socket (answered with ICMP port unreachable).
    pub udp_no_socket: u64,
    /// Echo requests (answered).
    pub ping: u64,
    /// Everything else.
    pub other: u64,
}

impl DemuxCounters {
    /// Adds `other`'s counts to these: the counters of a stack of several shards.
    pub fn add(&mut self, other: &DemuxCounters) {
        let DemuxCounters {
            connection,
            admitted,
            overflow_dropped,
            overflow_reset,
            ack_dropped,
            cookies_sent,
            cookies_accepted,
            challenge_acks,
            rst_ignored,
            syn_acks_resent,
            fin_duplicate_acks,
            tcp_no_socket,
            udp,
            udp_dropped,
            udp_no_socket,
            ping,
            other: others,
        } = *other;
        self.connection += connection;
        self.admitted += admitted;
        self.overflow_dropped += overflow_dropped;
        self.overflow_reset += overflow_reset;
        self.ack_dropped += ack_dropped;
        self.cookies_sent += cookies_sent;
        self.cookies_accepted += cookies_accepted;
        self.challenge_acks += challenge_acks;
        self.rst_ignored += rst_ignored;
        self.syn_acks_resent += syn_acks_resent;
        self.fin_duplicate_acks += fin_duplicate_acks;
        self.tcp_no_socket += tcp_no_socket;
        self.udp += udp;
        self.udp_dropped += udp_dropped;
        self.udp_no_socket += udp_no_socket;
        self.ping += ping;
        self.other += others;
    }

    /// Every decision made, of all kinds: one per frame classified. A watcher that
    /// remembers this number knows how many of [`Engine::demux_events`](super::Engine::demux_events)
    /// are new since it last looked, even once older ones have been forgotten.
    pub fn decisions(&self) -> u64 {
        // Exhaustive, so that a new counter cannot be left out.
        let DemuxCounters {
            connection,
            admitted,
            overflow_dropped,
            overflow_reset,
            ack_dropped,
            cookies_sent,
            cookies_accepted,
            challenge_acks,
            rst_ignored,
            syn_acks_resent,
            fin_duplicate_acks,
            tcp_no_socket,
            udp,
            udp_dropped: _, // also counted in `udp`
            udp_no_socket,
            ping,
            other,
        } = *self;
        connection
            + admitted
            + overflow_dropped
            + overflow_reset
            + ack_dropped
            + cookies_sent
            + cookies_accepted
            + challenge_acks
            + rst_ignored
            + syn_acks_resent
            + fin_duplicate_acks
            + tcp_no_socket
            + udp
            + udp_no_socket
            + ping
            + other
    }
}

/// Decisions the stack remembers, newest last; older ones are forgotten.
/// How many recent decisions [`DemuxLog::recent`] keeps.
pub const HISTORY: usize = 1024;

/// The demux's record: counters and recent decisions.
#[derive(Debug, Default)]
pub struct DemuxLog {
    /// Every decision, counted by kind.
    pub counters: DemuxCounters,
    /// The last [`HISTORY`] decisions, oldest first.
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
    "RFC 5961 and repeated-SYN decisions",
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
    pub(super) fn record(&mut self, event: DemuxEvent) {
        let c = &mut self.counters;
        match event.decision {
            Decision::Connection { .. } => c.connection += 1,
            Decision::Admitted { .. } => c.admitted += 1,
            Decision::Overflow { .. } => c.overflow_dropped += 1,
            Decision::AckDropped { reset: false, .. } => c.ack_dropped += 1,
            Decision::AckDropped { reset: true, .. } => c.overflow_reset += 1,
            Decision::CookieSent { .. } => c.cookies_sent += 1,
            Decision::CookieAccepted { .. } => c.cookies_accepted += 1,
            Decision::ChallengeAck { .. } => c.challenge_acks += 1,
            Decision::RstOutOfWindow { .. } => c.rst_ignored += 1,
            Decision::SynAckResent { .. } => c.syn_acks_resent += 1,
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
            Decision::ChallengeAck { .. } | Decision::RstOutOfWindow { .. } | Decision::SynAckResent { .. } => {
                Some((7, "ustack::demux"))
            }
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

/// An arriving packet, parsed once: what the demux, the rewriting, the cookie path and
/// RFC 5961's checks read of it. smoltcp parses it again (it takes bytes), nothing else does.
enum Parsed {
    Tcp {
        flow: PacketEnds,
        seg: TcpSegment,
    },
    /// `unchecked`: UDP over IPv6 with a checksum of zero, which RFC 8200 forbids.
    /// `payload`: the datagram's length.
    Udp {
        flow: PacketEnds,
        unchecked: bool,
        payload: usize,
    },
    Icmp {
        flow: PacketEnds,
        echo_request: bool,
        neighbour: bool,
    },
    Other {
        flow: PacketEnds,
    },
}

impl Parsed {
    fn flow(&self) -> PacketEnds {
        match self {
            Parsed::Tcp { flow, .. }
            | Parsed::Udp { flow, .. }
            | Parsed::Icmp { flow, .. }
            | Parsed::Other { flow } => *flow,
        }
    }
}

/// A TCP segment within its frame.
#[derive(Debug, Clone, Copy)]
struct TcpSegment {
    /// Where the TCP header starts in the frame, and where the segment ends.
    offset: usize,
    end: usize,
    flags: u8,
    seq: u32,
    ack: u32,
    window: u16,
    /// Header and payload bytes (TCP only).
    header_len: usize,
}

impl TcpSegment {
    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    fn bytes<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        &frame[self.offset..self.end]
    }

    /// An empty segment: no data (a bare ACK, a RST, a SYN).
    fn is_empty(&self) -> bool {
        self.payload_len() == 0
    }

    fn payload_len(&self) -> usize {
        self.end - self.offset - self.header_len
    }

    /// SEG.LEN as RFC 9293 counts it: the data, and SYN and FIN.
    fn seq_len(&self) -> u32 {
        self.payload_len() as u32 + u32::from(self.has(super::rewrite::SYN)) + u32::from(self.has(super::rewrite::FIN))
    }
}

fn parse(frame: &[u8]) -> Option<Parsed> {
    let (src, dst, protocol, payload): (IpAddr, IpAddr, IpProtocol, &[u8]) = match super::rewrite::ip_version(frame)? {
        IpVersion::Ipv4 => {
            let ip = Ipv4Packet::new_checked(frame).ok()?;
            let header = usize::from(ip.header_len());
            let total = usize::from(ip.total_len()).min(frame.len());
            let payload = frame.get(header..total)?;
            // Fragments are reassembled before the demux (`engine::reassembly`); one that
            // reaches it anyway (it failed there) carries no whole transport header.
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
    let flow = |proto, sport, dport| PacketEnds {
        proto,
        local: SocketAddr::new(dst, dport),
        remote: SocketAddr::new(src, sport),
    };
    Some(match protocol {
        IpProtocol::Tcp => match TcpPacket::new_checked(payload) {
            Ok(tcp) => {
                // Where the segment lies in the frame (payload is a subslice of it).
                let offset = payload.as_ptr() as usize - frame.as_ptr() as usize;
                let seg = TcpSegment {
                    offset,
                    end: offset + payload.len(),
                    flags: payload[13],
                    seq: tcp.seq_number().0 as u32,
                    ack: tcp.ack_number().0 as u32,
                    window: tcp.window_len(),
                    header_len: usize::from(tcp.header_len()),
                };
                Parsed::Tcp { flow: flow("tcp", tcp.src_port(), tcp.dst_port()), seg }
            }
            Err(_) => Parsed::Other { flow: flow("tcp", 0, 0) },
        },
        IpProtocol::Udp => match UdpPacket::new_checked(payload) {
            Ok(udp) => Parsed::Udp {
                flow: flow("udp", udp.src_port(), udp.dst_port()),
                // smoltcp takes a zero checksum as "none" for IPv6 too.
                unchecked: dst.is_ipv6() && udp.checksum() == 0,
                payload: payload.len().saturating_sub(8),
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
    // An IPV6_V6ONLY socket is not there for IPv4.
    let bound = |id: &&SockId| {
        core.entries.get(id).filter(|e| !(e.v6only && dst.is_ipv4())).and_then(|e| e.local).map(|l| l.ip())
    };
    ids.iter()
        .find(|id| bound(id) == Some(dst.ip()))
        .or_else(|| ids.iter().find(|id| bound(id).is_some_and(|b| bound_matches(b, dst.ip()))))
        .copied()
}

/// What the demux decided for a packet, before anything changed: [`decide`] looks, and
/// [`apply`] does it. The [`Decision`] logged is what `apply` made of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// A segment of a known connection, for smoltcp.
    Connection(SocketHandle),
    /// The handshake's last ACK while the listener's accept queue is full: dropped, or with
    /// reset on overflow answered with RST, the half-open connection (if it has one: a
    /// cookie's has none) gone.
    AckDropped {
        listener: SockId,
        half_open: Option<SocketHandle>,
    },
    /// A RST or SYN on a synchronized connection (RFC 5961): a challenge ACK, unless one
    /// went out less than a second ago (`limited`).
    ChallengeAck {
        handle: SocketHandle,
        limited: bool,
    },
    RstOutOfWindow(SocketHandle),
    /// The client's SYN again for a half-open connection (see [`Decision::SynAckResent`]).
    ResendSynAck {
        handle: SocketHandle,
        limited: bool,
    },
    FinDuplicateAck(SocketHandle),
    /// An ACK carrying a valid SYN cookie of `listener`'s (`cookie`, which carries `mss`).
    CookieAccepted {
        listener: SockId,
        cookie: u32,
        mss: u16,
    },
    /// A SYN (its ISN `client_isn`) the SYN queue has no room for, answered with a cookie
    /// carrying the client's `mss`.
    CookieSent {
        listener: SockId,
        client_isn: u32,
        mss: u16,
    },
    Overflow {
        listener: SockId,
        queue: Queue,
    },
    Admit {
        listener: SockId,
    },
    TcpNoSocket {
        syn: bool,
    },
    Udp(SockId),
    UdpNoSocket,
    Ping,
    /// An ICMP destination unreachable about the SYN of connection `handle` in SYN-SENT:
    /// its connect() fails with `errno`.
    Unreachable {
        handle: SocketHandle,
        errno: crate::errno::Errno,
    },
    /// Not for the demux to decide: smoltcp sees it (`deliver`) or not.
    Other {
        what: &'static str,
        deliver: bool,
    },
}

fn decide(core: &Engine, parsed: &Parsed, frame: &[u8]) -> Verdict {
    let flow = parsed.flow();
    if !core.is_local(flow.local.ip()) {
        return Verdict::Other { what: "not addressed to this stack", deliver: true };
    }
    match *parsed {
        Parsed::Tcp { seg, .. } => decide_tcp(core, TcpTuple { local: flow.local, remote: flow.remote }, &seg, frame),
        Parsed::Udp { unchecked: true, .. } => {
            Verdict::Other { what: "UDP over IPv6 without a checksum (RFC 8200 forbids it): dropped", deliver: false }
        }
        Parsed::Udp { .. } => match find_bound(core, core.udp_ports.get(&flow.local.port()), flow.local) {
            Some(socket) => Verdict::Udp(socket),
            None => Verdict::UdpNoSocket,
        },
        Parsed::Icmp { echo_request: true, .. } => Verdict::Ping,
        Parsed::Icmp { neighbour: true, .. } => {
            Verdict::Other { what: "IPv6 neighbour discovery or MLD: ignored", deliver: true }
        }
        Parsed::Icmp { .. } => {
            check_unreachable(core, frame).unwrap_or(Verdict::Other { what: "ICMP message", deliver: true })
        }
        Parsed::Other { .. } => Verdict::Other { what: "protocol ustack does not serve", deliver: true },
    }
}

fn listener_of(core: &Engine, id: SockId) -> Option<&Listener> {
    match core.entries.get(&id).map(|e| &**e) {
        Some(Entry { state: SockState::Listening(l), .. }) => Some(l),
        _ => None,
    }
}

fn listener_mut(core: &mut Engine, id: SockId) -> Option<&mut Listener> {
    match core.entries.get_mut(&id).map(|e| &mut **e) {
        Some(Entry { state: SockState::Listening(l), .. }) => Some(l),
        _ => None,
    }
}

fn decide_tcp(core: &Engine, tuple: TcpTuple, seg: &TcpSegment, frame: &[u8]) -> Verdict {
    use super::rewrite::{ACK, RST, SYN};
    let (syn, ack, rst) = (seg.has(SYN), seg.has(ACK), seg.has(RST));
    if let Some(&handle) = core.demux.get(&tuple) {
        let Some(conn) = core.conns.get(&handle) else {
            return Verdict::Other { what: "stale demux entry", deliver: true };
        };
        if let Some(verdict) = check_repeated_syn(core, handle, conn, seg) {
            return verdict;
        }
        if (rst || syn)
            && let Some(verdict) = check_control(core, handle, conn, seg)
        {
            return verdict;
        }
        if is_duplicate_ack_for_fin(conn, seg) {
            return Verdict::FinDuplicateAck(handle);
        }
        // Linux drops the ACK that would complete a handshake while the accept queue is
        // full; the client's connection stays half-open here and the SYN-ACK is resent.
        if let (Owner::Listener(listener), tcp::State::SynReceived) = (conn.owner, conn.state)
            && ack
            && !syn
            && !rst
            && listener_of(core, listener).is_some_and(Listener::accept_queue_full)
        {
            return Verdict::AckDropped { listener, half_open: Some(handle) };
        }
        return Verdict::Connection(handle);
    }
    let listener = find_bound(core, core.listeners.get(&tuple.local.port()), tuple.local);
    if ack
        && !syn
        && !rst
        && core.config.syn_cookies
        && let Some(listener) = listener
        && let Some(verdict) = check_cookie(core, &tuple, seg, frame, listener)
    {
        return verdict;
    }
    // Data behind a cookie ACK the full accept queue dropped fails the cookie check (only
    // the segment right after the SYN passes it). Linux answers it with RST, resetting a
    // client whose handshake would have completed with its next retransmission; ustack
    // drops it as it dropped the ACK before it (docs/linux-differences.md).
    if ack
        && !syn
        && !rst
        && core.config.syn_cookies
        && let Some(listener) = listener
        && listener_of(core, listener).is_some_and(Listener::accept_queue_full)
    {
        return Verdict::AckDropped { listener, half_open: None };
    }
    if !syn || ack || rst {
        return Verdict::TcpNoSocket { syn: false };
    }
    let Some(listener) = listener else { return Verdict::TcpNoSocket { syn: true } };
    // smoltcp drops a damaged SYN: admitted, it would leave a half-open connection that
    // never was (counted, and kept in the connection history with only LISTEN).
    let Some(info) = super::cookie::segment_info(seg.bytes(frame), tuple.remote.ip().into(), tuple.local.ip().into())
    else {
        return Verdict::Other { what: "SYN with a bad checksum", deliver: false };
    };
    let Some(l) = listener_of(core, listener) else { return Verdict::TcpNoSocket { syn: true } };
    let accept_full = l.accept_queue_full();
    if !accept_full && l.syn_queue_full() && core.config.syn_cookies {
        return Verdict::CookieSent { listener, client_isn: info.seq, mss: info.mss.unwrap_or(536) };
    }
    if accept_full || l.syn_queue_full() {
        let queue = if accept_full { Queue::Accept } else { Queue::Syn };
        // Dropped also with reset on overflow: Linux's tcp_abort_on_overflow resets only
        // the handshake's last ACK (below), never a SYN.
        return Verdict::Overflow { listener, queue };
    }
    Verdict::Admit { listener }
}

/// A SYN without ACK for a half-open connection, with the sequence number of the SYN that
/// made it: the client did not get the SYN-ACK (or not yet), and sent its SYN again. Linux
/// answers with the SYN-ACK at once (`tcp_check_req`, at most once every 500 ms); smoltcp
/// drops the SYN ("expecting an ACK") and the client waits for the SYN-ACK's own
/// retransmission timer. None for any other segment.
fn check_repeated_syn(core: &Engine, handle: SocketHandle, conn: &Conn, seg: &TcpSegment) -> Option<Verdict> {
    use super::rewrite::{ACK, RST, SYN};
    if !seg.has(SYN) || seg.has(ACK) || seg.has(RST) || conn.state != tcp::State::SynReceived {
        return None;
    }
    let syn_ack = conn.syn_ack.as_deref()?;
    let (offset, _, _) = super::rewrite::tcp_header(syn_ack)?;
    let (client_isn_plus_one, _) = super::rewrite::ack_and_window(&syn_ack[offset..]);
    if seg.seq.wrapping_add(1) != client_isn_plus_one {
        return None;
    }
    let limited = conn.syn_ack_resent_at.is_some_and(|at| core.now - at < smoltcp::time::Duration::from_millis(500));
    Some(Verdict::ResendSynAck { handle, limited })
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
fn check_control(core: &Engine, handle: SocketHandle, conn: &Conn, seg: &TcpSegment) -> Option<Verdict> {
    use super::rewrite::{RST, SYN};
    let synchronized =
        !matches!(conn.state, tcp::State::Listen | tcp::State::SynSent | tcp::State::SynReceived | tcp::State::Closed);
    let sent = conn.sent?;
    if !synchronized {
        return None;
    }
    if seg.has(RST) && !seg.has(SYN) {
        if seg.seq == sent.ack {
            return None;
        }
        let window = core.tcp(handle).recv_capacity() as u32;
        if seg.seq.wrapping_sub(sent.ack) >= window.max(1) {
            return Some(Verdict::RstOutOfWindow(handle));
        }
    }
    let limited = conn.challenged_at.is_some_and(|at| core.now - at < smoltcp::time::Duration::from_secs(1));
    Some(Verdict::ChallengeAck { handle, limited })
}

/// An ICMP or ICMPv6 destination unreachable quoting the SYN of a connection in
/// SYN-SENT: Linux ends the connect() with the error it names (`tcp_v4_err`,
/// `tcp_v6_err`: in SYN-SENT every such error is fatal, once the quoted sequence number is
/// one in flight; the errno from `icmp_err_convert` and `icmpv6_err_convert`). smoltcp
/// ignores ICMP errors for TCP: the connect() would wait for its timeout. None for any
/// other ICMP message, which goes on to smoltcp as before.
fn check_unreachable(core: &Engine, frame: &[u8]) -> Option<Verdict> {
    use crate::errno::Errno::*;
    let v4 = frame.first()? >> 4 == 4;
    let icmp = if v4 { frame.get(usize::from(frame[0] & 0x0f) * 4..)? } else { frame.get(40..)? };
    let (kind, code) = (*icmp.first()?, *icmp.get(1)?);
    let errno = match (v4, kind, code) {
        (true, 3, 0 | 6 | 9 | 11) => ENETUNREACH,
        (true, 3, 1 | 10 | 12..=15) => EHOSTUNREACH,
        (true, 3, 2) => ENOPROTOOPT,
        (true, 3, 3) => ECONNREFUSED,
        (true, 3, 5) => EOPNOTSUPP,
        (true, 3, 7) => EHOSTDOWN,
        (true, 3, 8) => ENONET,
        (false, 1, 0) => ENETUNREACH,
        (false, 1, 1 | 5 | 6) => EACCES,
        (false, 1, 2 | 3) => EHOSTUNREACH,
        (false, 1, 4) => ECONNREFUSED,
        _ => return None,
    };
    let quoted = icmp.get(8..)?;
    // A quote is cut short (IPv4's ICMP quotes 8 bytes past the IP header): the views
    // below are unchecked, over a header whose length is checked here.
    let (src, dst, tcp): (IpAddr, IpAddr, &[u8]) = if v4 {
        let header = usize::from(quoted.first()? & 0x0f) * 4;
        let ip = Ipv4Packet::new_unchecked(quoted.get(..header.max(20))?);
        if ip.next_header() != IpProtocol::Tcp {
            return None;
        }
        (ip.src_addr().into(), ip.dst_addr().into(), quoted.get(header..)?)
    } else {
        let ip = Ipv6Packet::new_unchecked(quoted.get(..40)?);
        if ip.next_header() != IpProtocol::Tcp {
            return None;
        }
        (ip.src_addr().into(), ip.dst_addr().into(), quoted.get(40..)?)
    };
    let port = |at: usize| Some(u16::from_be_bytes([*tcp.get(at)?, *tcp.get(at + 1)?]));
    let seq = u32::from_be_bytes(tcp.get(4..8)?.try_into().ok()?);
    let tuple = TcpTuple { local: SocketAddr::new(src, port(0)?), remote: SocketAddr::new(dst, port(2)?) };
    let &handle = core.demux.get(&tuple)?;
    let conn = core.conns.get(&handle)?;
    (conn.state == tcp::State::SynSent && conn.sent_max == Some(seq.wrapping_add(1)))
        .then_some(Verdict::Unreachable { handle, errno })
}

/// Whether `seg` is a duplicate ACK (no data, no SYN/FIN/RST, the same acknowledgment and
/// window as the segment before) of everything but ustack's FIN. smoltcp 0.14 counts these
/// toward a fast retransmit even with only the FIN in flight, then has nothing to resend
/// and no timer left: the FIN never goes out again. Without them, its retransmission
/// timer resends the FIN.
fn is_duplicate_ack_for_fin(conn: &Conn, seg: &TcpSegment) -> bool {
    use super::rewrite::{ACK, FIN, RST, SYN};
    seg.has(ACK)
        && seg.is_empty()
        && seg.flags & (SYN | FIN | RST) == 0
        && conn.fin_end == Some(seg.ack.wrapping_add(1))
        && conn.last_ack_in == Some((seg.ack, seg.window))
}

/// The minute SYN cookies are made for (they stay valid for two).
fn cookie_minute(core: &Engine) -> u32 {
    (core.now.total_millis() / 60_000) as u32
}

/// If `seg` is an ACK carrying a valid cookie of `listener`'s: the connection it makes, or
/// the ACK dropped because the accept queue is full. None if it carries no valid cookie
/// (or its checksum is wrong: no cookie is honoured for a damaged segment).
fn check_cookie(core: &Engine, tuple: &TcpTuple, seg: &TcpSegment, frame: &[u8], listener: SockId) -> Option<Verdict> {
    super::cookie::segment_info(seg.bytes(frame), tuple.remote.ip().into(), tuple.local.ip().into())?;
    let cookie = seg.ack.wrapping_sub(1);
    let mss = core.secret.check_cookie(tuple, cookie_minute(core), seg.seq.wrapping_sub(1), cookie)?;
    if listener_of(core, listener)?.accept_queue_full() {
        // A cookie ACK that finds the accept queue full is dropped, also with reset on
        // overflow: Linux's cookie_v4_check discards it (no request to reset).
        return Some(Verdict::AckDropped { listener, half_open: None });
    }
    Some(Verdict::CookieAccepted { listener, cookie, mss })
}

/// Does what `verdict` says — the only place the demux changes anything — and gives the
/// decision as applied, and what happens to the frame next.
fn apply(core: &mut Engine, verdict: Verdict, parsed: &Parsed, frame: &mut Vec<u8>) -> (Decision, Disposition) {
    use super::rewrite::{ACK, RST};
    use Disposition::{Deliver, Drop, Reply};
    let flow = parsed.flow();
    let tuple = TcpTuple { local: flow.local, remote: flow.remote };
    let seg = match parsed {
        Parsed::Tcp { seg, .. } => Some(*seg),
        _ => None,
    };
    match verdict {
        Verdict::Connection(handle) => {
            let mss = local_mss(core, &flow);
            let Some(conn) = core.conns.get_mut(&handle) else {
                return (Decision::Other("stale demux entry"), Deliver);
            };
            let decision = Decision::Connection { handle, state: conn.state, owner: conn.owner };
            let Some(seg) = seg else { return (decision, Deliver) };
            // A segment with an old ACK (never a RST) says nothing new about acknowledgments.
            // Both below may need to know the checksum is right: it is computed once.
            let mut intact = None;
            if seg.has(super::rewrite::SYN) {
                note_peer_syn(conn, frame, &seg, mss);
            }
            let old_ack = accept_old_ack(conn, frame, &seg, &flow, &mut intact);
            if !old_ack {
                note_segment(conn, &seg);
                let recovery = (core.now, &mut core.recovery_pool, &mut core.outbox);
                recover_on_ack(conn, frame, &seg, &flow, &mut intact, recovery);
            }
            // A connection whose ISN on the wire is not smoltcp's: its acknowledgments (and
            // SACK blocks) name the wire's numbering; smoltcp must see its own.
            keep_window_open_while_in_flight(conn, frame, seg.offset);
            if !old_ack {
                lower_ack_to_send_front(conn, frame, &seg);
            }
            limit_window_to_congestion(conn, frame, &seg);
            if let Some(shift) = conn.shift {
                super::rewrite::incoming(frame, seg.offset, shift);
            }
            if let Some(our_ack) = refuse_beyond_offered_edge(conn, frame, &seg, &flow, &mut intact) {
                core.outbox.push(&std::sync::Arc::new(our_ack));
                return (decision, Deliver);
            }
            note_data(conn, &seg, core.now);
            if let Some(ack) = ack_smoltcp_refuses(conn, frame, &seg, &flow, &mut intact) {
                return (decision, Disposition::First(ack));
            }
            match super::rewrite::split_fin(frame, seg.offset, flow.remote.ip(), flow.local.ip()) {
                Some(data) => (decision, Disposition::First(data)),
                None => (decision, Deliver),
            }
        }
        Verdict::FinDuplicateAck(handle) => {
            if let (Some(conn), Some(seg)) = (core.conns.get_mut(&handle), seg) {
                note_segment(conn, &seg);
            }
            (Decision::FinDuplicateAck { handle }, Drop)
        }
        Verdict::RstOutOfWindow(handle) => (Decision::RstOutOfWindow { handle }, Drop),
        Verdict::ResendSynAck { handle, limited } => {
            let now = core.now;
            let decision = Decision::SynAckResent { handle, limited };
            match core.conns.get_mut(&handle) {
                Some(conn) if !limited => match conn.syn_ack.clone() {
                    Some(syn_ack) => {
                        conn.syn_ack_resent_at = Some(now);
                        // In smoltcp's numbering, as it was built: the transmit path shifts it.
                        (decision, Reply(syn_ack))
                    }
                    None => (decision, Drop),
                },
                _ => (decision, Drop),
            }
        }
        Verdict::ChallengeAck { handle, limited } => {
            let now = core.now;
            let Some(conn) = core.conns.get_mut(&handle) else { return (Decision::Other("stale demux entry"), Drop) };
            let (Some(sent), false) = (conn.sent, limited) else { return (Decision::ChallengeAck { handle }, Drop) };
            conn.challenged_at = Some(now);
            // Built in smoltcp's numbering, like everything that goes out: the transmit
            // path shifts it to the wire's.
            let unshifted =
                super::conn::LastSent { seq_end: sent.seq_end.wrapping_add(conn.shift.unwrap_or(0)), ..sent };
            (Decision::ChallengeAck { handle }, Reply(super::cookie::ack(&conn.tuple, &unshifted)))
        }
        Verdict::AckDropped { listener, half_open } => {
            core.generation += 1;
            match half_open.filter(|_| core.config.reset_on_overflow) {
                // As Linux's tcp_check_req with tcp_abort_on_overflow=1: the request is
                // dropped and the ACK answered with RST — by smoltcp, which finds no socket
                // for it once the half-open connection is gone (RST seq = the ACK's ack).
                Some(handle) => {
                    if let Some(l) = listener_mut(core, listener) {
                        l.acks_reset += 1;
                    }
                    forget_half_open(core, handle);
                    (Decision::AckDropped { listener, reset: true }, Deliver)
                }
                None => {
                    if let Some(l) = listener_mut(core, listener) {
                        l.acks_dropped += 1;
                    }
                    (Decision::AckDropped { listener, reset: false }, Drop)
                }
            }
        }
        Verdict::CookieSent { listener, client_isn, mss } => {
            if let Some(l) = listener_mut(core, listener) {
                l.cookies_sent += 1;
            }
            (Decision::CookieSent { listener }, Reply(cookie_syn_ack(core, &tuple, client_isn, mss)))
        }
        Verdict::CookieAccepted { listener, cookie, mss } => {
            // With no socket to be had, smoltcp answers the ACK as one for no connection: RST.
            let Ok(handle) = new_half_open(core, tuple, listener) else {
                return (Decision::TcpNoSocket { syn: false }, Deliver);
            };
            if let Some(conn) = core.conns.get_mut(&handle) {
                conn.cookie = Some(cookie);
                conn.via_cookie = true;
            }
            let client_isn = seg.map_or(0, |s| s.seq.wrapping_sub(1));
            let syn = super::cookie::replayed_syn(&tuple, client_isn, mss);
            let offset = seg.map_or(0, |s| s.offset);
            (Decision::CookieAccepted { listener, handle }, Disposition::Cookie { handle, syn, offset })
        }
        Verdict::Overflow { listener, queue } => {
            core.generation += 1;
            if let Some(l) = listener_mut(core, listener) {
                l.syns_dropped += 1;
            }
            (Decision::Overflow { listener, queue }, Drop)
        }
        Verdict::Admit { listener } => match new_half_open(core, tuple, listener) {
            Ok(handle) => {
                let mss = local_mss(core, &flow);
                if let (Some(conn), Some(seg)) = (core.conns.get_mut(&handle), seg) {
                    note_peer_syn(conn, frame, &seg, mss);
                }
                let Some(l) = listener_of(core, listener) else { unreachable!("decided on a listener") };
                let decision = Decision::Admitted {
                    listener,
                    handle,
                    syn_queue: l.syn_queue.len(),
                    accept_queue: l.accept_queue.len(),
                    backlog: l.backlog,
                };
                (decision, Disposition::Admit(handle))
            }
            Err(NoSocket::PortZero) => (Decision::Other("listener port 0"), Deliver),
            // Like a full SYN queue: the client retransmits.
            Err(NoSocket::NoMemory) => {
                (Decision::Other("SYN for a listener: no memory for socket buffers, dropped"), Drop)
            }
        },
        // A segment without ACK (but not a SYN, which smoltcp answers right) gets RST+ACK.
        Verdict::TcpNoSocket { syn: false } if seg.is_some_and(|s| !s.has(ACK) && !s.has(RST)) => {
            let seg = seg.expect("checked above");
            (
                Decision::TcpNoSocket { syn: false },
                Reply(super::cookie::rst_ack(&tuple, seg.seq.wrapping_add(seg.seq_len()))),
            )
        }
        Verdict::TcpNoSocket { syn } => (Decision::TcpNoSocket { syn }, Deliver),
        Verdict::Udp(socket) => (Decision::Udp { socket }, Deliver),
        Verdict::UdpNoSocket => (Decision::UdpNoSocket, Deliver),
        Verdict::Ping => (Decision::Ping, Deliver),
        Verdict::Unreachable { handle, errno } => {
            if let Some(conn) = core.conns.get_mut(&handle) {
                log::info!(target: "ustack::handshake", "{}: ICMP destination unreachable: connect() fails with {errno}", conn.tuple);
                conn.pending_error.get_or_insert(errno);
                core.tcp_mut(handle).abort();
                let now = core.now;
                core.observe(handle, now);
            }
            (Decision::Other("ICMP destination unreachable about a SYN: the connect() fails"), Drop)
        }
        Verdict::Other { what, deliver } => (Decision::Other(what), if deliver { Deliver } else { Drop }),
    }
}

/// What a connection remembers of every segment it gets: a RST (so the socket API can
/// tell "refused"/"reset" from a timeout) and the last acknowledgment (for duplicate ACKs).
fn note_segment(conn: &mut Conn, seg: &TcpSegment) {
    use super::rewrite::{ACK, RST};
    conn.reset |= seg.has(RST);
    if seg.has(ACK) {
        conn.last_ack_in = Some((seg.ack, seg.window));
    }
}

/// What a segment's acknowledgment and SACK blocks tell ustack's loss recovery; what it
/// finds lost goes out again at once.
fn recover_on_ack(
    conn: &mut Conn,
    frame: &[u8],
    seg: &TcpSegment,
    flow: &PacketEnds,
    intact: &mut Option<bool>,
    (now, pool, outbox): (smoltcp::time::Instant, &mut super::egress::PacketPool, &mut super::Outbox),
) {
    use super::rewrite::{ACK, RST, SYN};
    if !seg.has(ACK) || seg.has(SYN | RST) || conn.recovery.in_flight() == 0 {
        return;
    }
    // smoltcp drops a damaged segment later; recovery must not believe its ACK or SACK
    // blocks first (a SACK block damaged into covering a hole would hide the loss).
    if !checksum_ok(seg.bytes(frame), flow, intact) {
        return;
    }
    let (blocks, n) = super::recovery::sack_blocks(&frame[seg.offset..seg.end]);
    let before = conn.cc.is_some().then(|| (conn.recovery.unsacked_bytes(), conn.recovery.counters().bytes));
    let lost = conn.recovery.on_ack(now, (seg.ack, seg.window, seg.is_empty()), &blocks[..n], pool);
    super::resend(conn, &lost, outbox);
    if let (Some(cc), Some((pipe_before, resent_before)), Some(sent_max)) = (conn.cc.as_mut(), before, conn.sent_max) {
        let pipe = conn.recovery.unsacked_bytes();
        let resent = (conn.recovery.counters().bytes - resent_before) as u32;
        let delivered = (pipe_before + resent).saturating_sub(pipe);
        let ack = conn.snd_una.unwrap_or(seg.ack);
        let srtt = conn.recovery.srtt();
        let sample =
            super::congestion::AckSample { ack, delivered, pipe, resent, loss: !lost.is_empty(), sent_max, srtt };
        let cuts = cc.counters().reductions;
        cc.on_ack(now, sample);
        if cc.counters().reductions > cuts {
            log::debug!(target: "ustack::congestion", "{}: loss, window cut: {cc:?}", conn.tuple);
        }
    }
}

/// The MSS this stack offers for a connection between `flow`'s ends: its MTU less the IP
/// and TCP headers (as smoltcp computes its own).
fn local_mss(core: &Engine, flow: &PacketEnds) -> u32 {
    let ip_header = if flow.local.is_ipv4() { 20 } else { 40 };
    (core.capabilities.max_transmission_unit as u32).saturating_sub(ip_header + 20)
}

/// What the peer's SYN (or SYN-ACK) tells: its window scale (RFC 7323), which scales its
/// window fields, and its MSS, which with `local_mss` sizes the segments this side sends.
/// Without the peer's window scale, neither side scales (RFC 7323 §2.2).
fn note_peer_syn(conn: &mut Conn, frame: &[u8], seg: &TcpSegment, local_mss: u32) {
    let (scale, mss) = super::rewrite::syn_options(seg.bytes(frame));
    if scale.is_none() {
        conn.rcv_scale = 0;
    }
    conn.snd_scale = scale.unwrap_or(0);
    let Some(cc) = conn.cc.as_mut() else { return };
    cc.set_mss(mss.map_or(super::congestion::DEFAULT_MSS, u32::from).min(local_mss));
}

/// A segment's window field reaches smoltcp lowered to what congestion control allows
/// (see [`super::congestion`]); in smoltcp's view of the acknowledgment, after the other
/// rewrites.
fn limit_window_to_congestion(conn: &Conn, frame: &mut [u8], seg: &TcpSegment) {
    use super::rewrite::{ACK, RST, SYN, ack_and_window};
    let (Some(cc), Some(sent_max)) = (conn.cc.as_ref(), conn.sent_max) else { return };
    if !seg.has(ACK) || seg.has(RST) {
        return;
    }
    let (ack, window) = ack_and_window(&frame[seg.offset..]);
    let limited = if seg.has(SYN) {
        // A SYN-ACK's window is not scaled: the initial window is the room.
        window.min(u16::try_from(cc.cwnd()).unwrap_or(u16::MAX))
    } else {
        cc.limit_window(ack, window, conn.snd_scale, sent_max, conn.recovery.in_flight() > 0)
    };
    if limited != window {
        super::rewrite::set_window(frame, seg.offset, limited);
    }
}

/// An acknowledgment beyond smoltcp's SND.NXT, of data it sent before a retransmission
/// timeout rewound it, reaches smoltcp lowered to SND.NXT (see [`super::send_front`]).
fn lower_ack_to_send_front(conn: &mut Conn, frame: &mut [u8], seg: &TcpSegment) {
    use super::rewrite::{ACK, RST, SYN};
    if !seg.has(ACK) || seg.has(SYN | RST) {
        return;
    }
    let ack = conn.send_front.on_ack(seg.ack, seg.window, seg.is_empty(), conn.sent_max);
    if ack != seg.ack {
        super::rewrite::set_ack(frame, seg.offset, ack);
        log::debug!(
            target: "ustack::demux",
            "{}: ACK {} beyond smoltcp's rewound SND.NXT, given to it as {ack}",
            conn.tuple,
            seg.ack
        );
    }
}

/// A segment carrying data (or a FIN) whose acknowledgment is older than SND.UNA — a data
/// segment overtaken by a later one, say — is acceptable: RFC 9293 §3.10.7.4 ignores such
/// an ACK and processes the data, and Linux (`tcp_ack`'s `old_ack`) does so for an ACK no
/// older than SND.UNA − MAX.SND.WND (RFC 5961 §5.2). smoltcp 0.14 drops the whole segment
/// ("duplicate ACK", tcp.rs `process`: `ack_number < ack_min` returns None; smoltcp issue
/// #12, open since 2017), data and all, and the peer must retransmit it. So its ACK is
/// raised to SND.UNA, which says nothing new, and smoltcp takes the data.
///
/// The bound used is the most ustack ever had in flight, which no genuine reordering
/// exceeds (an ACK cannot fall further behind than what was in flight when it was sent);
/// older ones go to smoltcp as they are, and it drops them.
///
/// Its window field says what the peer offered before its newer segments did, which
/// Linux does not take (RFC 9293's SND.WL1/SND.WL2 rule): smoltcp gets the window of the
/// last segment that acknowledged SND.UNA instead, and the segment is not remembered as
/// the last acknowledgment (a duplicate ACK is one that repeats the newest).
///
/// Also keeps SND.UNA: raised by an ACK of something ustack sent, from a segment whose
/// checksum is right (a damaged ACK must not make ustack think more was acknowledged).
/// Returns whether the segment's ACK was rewritten.
fn accept_old_ack(
    conn: &mut Conn,
    frame: &mut [u8],
    seg: &TcpSegment,
    flow: &PacketEnds,
    intact: &mut Option<bool>,
) -> bool {
    use super::rewrite::{ACK, FIN, RST, SYN, seq_after};
    if !seg.has(ACK) || seg.has(SYN) || seg.has(RST) {
        return false;
    }
    let Some(sent_max) = conn.sent_max else { return false };
    // Measured before SND.UNA moves: what was in flight while this segment was on its way.
    if let Some(una) = conn.snd_una {
        conn.max_flight = conn.max_flight.max(sent_max.wrapping_sub(una));
    }
    match conn.snd_una {
        Some(una) if seq_after(una, seg.ack) => {
            let behind = una.wrapping_sub(seg.ack);
            if (!seg.is_empty() || seg.has(FIN)) && behind <= conn.max_flight {
                super::rewrite::set_ack(frame, seg.offset, una);
                if let Some((last_ack, window)) = conn.last_ack_in
                    && last_ack == una
                {
                    super::rewrite::set_window(frame, seg.offset, window);
                }
                log::debug!(target: "ustack::demux", "{}: data with an ACK {behind} behind SND.UNA, given to smoltcp with ACK = SND.UNA", conn.tuple);
                return true;
            }
        }
        una => {
            let advances = una.is_none_or(|una| seq_after(seg.ack, una));
            if advances && !seq_after(seg.ack, sent_max) && checksum_ok(seg.bytes(frame), flow, intact) {
                conn.snd_una = Some(seg.ack);
            }
        }
    }
    false
}

/// Whether a TCP segment's checksum is right; `known` keeps the answer for the next asker.
/// A segment that smoltcp refuses where Linux, having offered the same window, takes it:
/// its acknowledgment and window, for smoltcp to take. For data, a copy of the segment
/// without the data, at RCV.NXT, which smoltcp takes before it refuses the frame (and
/// answers it with an ACK); a bare ACK is moved to RCV.NXT in place (smoltcp reads nothing
/// else from a bare ACK's sequence number).
///
/// Two cases, both met by the loss bench against Linux senders:
/// - **A bare ACK at the window's right edge** (or beyond smoltcp's, below). A sender that
///   filled the window has SND.NXT at its edge, and its bare ACKs carry that sequence
///   number. If its last segment was lost, RCV.NXT is before it, and RFC 9293's test
///   (SEG.SEQ < RCV.NXT + RCV.WND), which smoltcp applies, refuses those ACKs; Linux's
///   `tcp_sequence` takes a segment starting at the edge. smoltcp then sees none of the
///   sender's acknowledgments, so ustack's data stayed unacknowledged and the echo
///   blocked until the kernel's retransmission timeout resent the lost segment, ~200 ms
///   later (the loss bench at 1%, nearly every run).
/// - **Any segment, once a window smoltcp shrank is zero.** smoltcp 0.14 rounds its window
///   down to its scale, so as its buffer fills the right edge it offers can move back by up
///   to 2^scale − 1 bytes (RFC 9293 §3.8.6.2.2 says it should not; Linux's
///   `tcp_select_window` never does). A peer that already sent up to the edge it was
///   offered then has data beyond smoltcp's.
///   Once the window is zero smoltcp refuses everything that peer sends, and with it every
///   acknowledgment: an echo whose reader waited for its own writes deadlocked (the loss
///   bench with 1 MiB buffers, every run).
///
/// Taken as far as Linux takes them: a segment ending within the furthest edge offered
/// (Linux 6.17+ refuses data ending beyond its window while its queue holds data,
/// `tcp_sequence`), not before RCV.NXT, and not once the peer's FIN is in (smoltcp's
/// RCV.NXT counts it; ustack's reckoning does not).
fn ack_smoltcp_refuses(
    conn: &Conn,
    frame: &mut [u8],
    seg: &TcpSegment,
    flow: &PacketEnds,
    intact: &mut Option<bool>,
) -> Option<Vec<u8>> {
    use super::rewrite::{ACK, RST, SYN, seq_after};
    let sent = conn.sent?;
    let before_fin = matches!(conn.state, tcp::State::Established | tcp::State::FinWait1 | tcp::State::FinWait2);
    // In an open window smoltcp's refusal of data stands (`split_fin` mends its one slip).
    let bare = seg.seq_len() == 0;
    if !before_fin || !seg.has(ACK) || seg.has(SYN) || seg.has(RST) || (sent.own_window != 0 && !bare) {
        return None;
    }
    let rcv_nxt = conn.rcv_nxt()?;
    // smoltcp's right edge: its last segment's ACK and window, however stale.
    let window_end = sent.ack.wrapping_add(u32::from(sent.own_window) << conn.rcv_scale);
    let seg_end = seg.seq.wrapping_add(seg.seq_len());
    let linux_takes = !seq_after(rcv_nxt, seg_end) && !seq_after(seg_end, sent.edge);
    if !linux_takes || smoltcp_takes(seg, rcv_nxt, window_end) || !checksum_ok(seg.bytes(frame), flow, intact) {
        return None;
    }
    log::debug!(target: "ustack::demux", "{}: a segment Linux takes within the window offered and smoltcp refuses; its ACK taken", conn.tuple);
    if bare {
        super::rewrite::set_seq(frame, seg.offset, rcv_nxt);
        return None;
    }
    Some(super::rewrite::ack_alone(frame, seg.offset, rcv_nxt, flow.remote.ip(), flow.local.ip()))
}

/// Data ending beyond the right edge ustack offered, for a connection whose window is
/// autotuned: smoltcp would take it (its own edge lies further, see [`super::rcv_window`]),
/// into buffer pages ustack may have given back. The segment reaches smoltcp without its
/// data (its acknowledgment still counts), and the peer gets ustack's last ACK again, as
/// Linux answers data beyond its window (`tcp_data_queue`). A peer keeping to its window
/// never sends such data. Returns that ACK, in the wire's numbering.
fn refuse_beyond_offered_edge(
    conn: &mut Conn,
    frame: &mut Vec<u8>,
    seg: &TcpSegment,
    flow: &PacketEnds,
    intact: &mut Option<bool>,
) -> Option<Vec<u8>> {
    use super::rewrite::{RST, SYN, seq_after};
    let sent = conn.sent?;
    let payload = seg.payload_len() as u32;
    if conn.rcv_window.is_none() || conn.rcv_scale == 0 || payload == 0 || seg.has(SYN | RST) {
        return None;
    }
    if !seq_after(seg.seq.wrapping_add(payload), sent.edge) || !checksum_ok(seg.bytes(frame), flow, intact) {
        return None;
    }
    log::debug!(target: "ustack::demux", "{}: data beyond the window offered, dropped and acknowledged", conn.tuple);
    let rcv_nxt = conn.rcv_nxt()?;
    *frame = super::rewrite::ack_alone(frame, seg.offset, rcv_nxt, flow.remote.ip(), flow.local.ip());
    Some(super::cookie::ack(&conn.tuple, &sent))
}

/// Notes the data of a segment smoltcp is about to get: how far the peer's data reaches
/// (for [`Conn::rcv_high`]) and when it came.
fn note_data(conn: &mut Conn, seg: &TcpSegment, now: smoltcp::time::Instant) {
    let payload = seg.payload_len() as u32;
    if payload == 0 {
        return;
    }
    let end = seg.seq.wrapping_add(payload);
    if conn.rcv_high.is_none_or(|high| super::rewrite::seq_after(end, high)) {
        conn.rcv_high = Some(end);
    }
    conn.received.note(payload as usize, now);
}

/// Whether smoltcp 0.14 finds `seg` acceptable (RFC 9293 §3.10.7.4, as `tcp::Socket`
/// `process` applies it): its window is [`rcv_nxt`, `window_end`), and it measures a
/// segment by its data alone (a FIN does not count).
fn smoltcp_takes(seg: &TcpSegment, rcv_nxt: u32, window_end: u32) -> bool {
    use super::rewrite::seq_after;
    let start = seg.seq;
    let end = start.wrapping_add(seg.payload_len() as u32);
    let within = |at: u32| !seq_after(rcv_nxt, at) && seq_after(window_end, at);
    match (start == end, rcv_nxt == window_end) {
        (true, true) => start == rcv_nxt,
        (true, false) => within(start),
        (false, true) => false,
        (false, false) => within(start) || (seq_after(end, rcv_nxt) && !seq_after(end, window_end)),
    }
}

fn checksum_ok(tcp: &[u8], flow: &PacketEnds, known: &mut Option<bool>) -> bool {
    *known.get_or_insert_with(|| {
        TcpPacket::new_checked(tcp).is_ok_and(|t| t.verify_checksum(&flow.remote.ip().into(), &flow.local.ip().into()))
    })
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
    let opts = core.opts(listener).unwrap_or_default();
    let (mut socket, slot) = core.new_tcp_socket(&opts).ok_or(NoSocket::NoMemory)?;
    let endpoint = IpListenEndpoint { addr: Some(tuple.local.ip().into()), port: tuple.local.port() };
    if socket.listen(endpoint).is_err() {
        core.buffers.give_back(socket, slot);
        return Err(NoSocket::PortZero);
    }
    let handle = core.add_tcp_socket(socket, slot);
    if let Some(l) = listener_mut(core, listener) {
        l.syn_queue.push(handle);
    }
    core.add_conn(handle, tuple, Owner::Listener(listener), tcp::State::Listen);
    Ok(handle)
}

/// A SYN-ACK whose ISN is a cookie carrying `mss`, for the SYN (ISN `client_isn`) the SYN
/// queue has no room for.
fn cookie_syn_ack(core: &Engine, tuple: &TcpTuple, client_isn: u32, mss: u16) -> Vec<u8> {
    let cookie = core.secret.cookie(tuple, cookie_minute(core), client_isn, mss);
    let ip_and_tcp = if tuple.local.is_ipv4() { 40 } else { 60 };
    let our_mss = u16::try_from(core.mtu().saturating_sub(ip_and_tcp)).unwrap_or(u16::MAX);
    super::cookie::syn_ack(tuple, client_isn, cookie, our_mss)
}

/// Decides what happens to `frame` (`decide`, which changes nothing), does the ustack
/// side of it (`apply`), and records the decision as applied at `now` (the round's time:
/// a clock read per packet showed in profiles). Also returns the socket the packet is for,
/// if any, so the engine can look at it right after smoltcp has processed the packet.
pub(crate) fn admit(
    core: &mut Engine,
    frame: &mut Vec<u8>,
    now: smoltcp::time::Instant,
) -> (Disposition, Option<Target>) {
    let (flow, decision, disposition, udp_len) = match parse(frame) {
        None if frame.is_empty() => (None, Decision::Other("empty frame"), Disposition::Drop, 0),
        None => (None, Decision::Other("not an IP packet ustack can parse"), Disposition::Deliver, 0),
        Some(parsed) => {
            if let Parsed::Tcp { seg, flow } = &parsed
                && seg.header_len > 20
                && super::rewrite::sanitize_options(frame, seg.offset)
            {
                log::debug!(target: "ustack::demux", "{flow}: malformed TCP options ignored from where Linux stops reading them");
            }
            let verdict = decide(core, &parsed, frame);
            let (decision, disposition) = apply(core, verdict, &parsed, frame);
            let udp_len = match parsed {
                Parsed::Udp { payload, .. } => payload,
                _ => 0,
            };
            (Some(parsed.flow()), decision, disposition, udp_len)
        }
    };
    let at_ms = now.total_millis() as u64;
    core.demux_log.record(DemuxEvent { at_ms, flow, decision });
    let target = match decision {
        Decision::Connection { handle, .. }
        | Decision::Admitted { handle, .. }
        | Decision::CookieAccepted { handle, .. } => Some(Target::Tcp(handle)),
        Decision::Udp { socket } => match core.entries.get(&socket).map(|e| &e.state) {
            Some(SockState::Udp { handle, .. }) => Some(Target::Udp { socket, handle: *handle, len: udp_len }),
            _ => None,
        },
        _ => None,
    };
    (disposition, target)
}

/// The socket a packet went to, for the stack to look at after smoltcp processed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
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

/// After smoltcp processed an admitted SYN: if it rejected it (a bad checksum, say), the
/// socket made for it is still listening and must not catch another client's SYN.
pub(crate) fn settle(core: &mut Engine, handle: SocketHandle) {
    if core.tcp(handle).state() == tcp::State::Listen {
        forget_half_open(core, handle);
    }
}

/// Removes a half-open connection from its listener's SYN queue and frees it, sending
/// nothing.
pub(crate) fn forget_half_open(core: &mut Engine, handle: SocketHandle) {
    if let Some(Owner::Listener(id)) = core.conns.get(&handle).map(|c| c.owner)
        && let Some(Entry { state: SockState::Listening(l), .. }) = core.entries.get_mut(&id).map(|e| &mut **e)
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

    #[test]
    fn every_decision_is_counted_once_also_past_the_history() {
        let mut log = DemuxLog::default();
        let kinds = [Decision::Udp { socket: 3 }, Decision::UdpNoSocket, Decision::Ping, Decision::Other("x")];
        for i in 0..HISTORY + 10 {
            log.record(DemuxEvent { at_ms: 0, flow: None, decision: kinds[i % kinds.len()] });
        }
        log.counters.udp_dropped += 1; // a dropped datagram is one of the `udp` decisions
        assert_eq!(log.counters.decisions(), (HISTORY + 10) as u64);
        assert_eq!(log.recent.len(), HISTORY);
    }
}
