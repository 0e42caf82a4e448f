//! What TCP does over time, on the simulator's virtual clock: every timeout, retransmission
//! and expiry the engine decides, pinned to the virtual time it happens at. Nothing here
//! sleeps or reads a clock, so a run is the same on any machine however loaded it is, and
//! a 127 s connect timeout costs no more to wait for than a millisecond.
//!
//! The network is two engines on a simulated link with 1 ms of delay each way: the
//! "client" at 10.0.0.1 and the "server" at 10.0.0.2. Where the test must play a peer
//! that misbehaves in a chosen way, the server runs alone and the test answers for
//! 10.0.0.1 with segments of its own ([`Peer`]).
//!
//! The times pinned here are smoltcp 0.14's (an initial RTO of 1 s, doubling up to 60 s;
//! TIME-WAIT of 10 s) and ustack's (the connect timeout, the 63 s half-open timeout, SYN
//! cookies valid for the minute they were made and the next). docs/linux-differences.md
//! says where they differ from Linux.

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::IpCidr;
use ustack::Events;
use ustack::engine::{Domain, SockId, StackConfig, Type};
use ustack::errno::Errno;
use ustack::sim::{LinkConfig, Node, Simulation, node_addr};

const CLIENT: usize = 0;
const SERVER: usize = 1;
const PORT: u16 = 80;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The virtual time `d` after the start.
fn at(d: Duration) -> Instant {
    Instant::ZERO + d
}

/// Node `index`'s configuration: its address 10.0.0.(index + 1)/24, the rest default.
fn config(index: usize) -> StackConfig {
    StackConfig { addrs: vec![IpCidr::new(node_addr(index, 0).ip().into(), 24)], ..StackConfig::default() }
}

/// The client and the server on a link that delays each packet by 1 ms and loses none,
/// each configured by `tweak` after [`config`].
fn network(tweak: impl Fn(&mut StackConfig)) -> Simulation {
    let mut configs = [config(CLIENT), config(SERVER)];
    configs.iter_mut().for_each(&tweak);
    let [client, server] = configs;
    let mut sim = Simulation::new(1, vec![("client", client), ("server", server)], LinkConfig::default(), 1500)
        .expect("a simulation");
    sim.keep_crossings(true);
    sim
}

/// A non-blocking connect() from the client to the server's [`PORT`], now.
fn connect(sim: &mut Simulation) -> SockId {
    let now = sim.now();
    let engine = &mut sim.nodes[CLIENT].engine;
    let c = engine.socket(Domain::Inet, Type::Stream);
    assert_eq!(engine.connect(now, c, node_addr(SERVER, PORT)), Err(Errno::EINPROGRESS));
    c
}

/// How the client's connect() `c` ended, once it has (None while in progress).
fn outcome(nodes: &mut [Node], c: SockId) -> Option<Result<(), Errno>> {
    Some(nodes[CLIENT].engine.connect_outcome(c)).filter(|r| *r != Err(Errno::EINPROGRESS))
}

/// Lets the network run for `d` of virtual time.
fn run_for(sim: &mut Simulation, d: Duration) {
    let until = sim.now() + d;
    sim.run_to(until);
}

/// A TCP segment that crossed the link (or was sent to the test's peer).
#[derive(Debug, Clone, Copy)]
struct Seg {
    at: Instant,
    from: usize,
    syn: bool,
    ack: bool,
    fin: bool,
    rst: bool,
    seq: u32,
    ack_no: u32,
    len: usize,
}

/// The TCP segments sent since the last call, in order.
fn segments(sim: &mut Simulation) -> Vec<Seg> {
    sim.take_crossings()
        .into_iter()
        .filter_map(|c| {
            let packet = SlicedPacket::from_ip(&c.packet).ok()?;
            let Some(TransportSlice::Tcp(t)) = packet.transport else { return None };
            Some(Seg {
                at: c.at,
                from: c.from,
                syn: t.syn(),
                ack: t.ack(),
                fin: t.fin(),
                rst: t.rst(),
                seq: t.sequence_number(),
                ack_no: t.acknowledgment_number(),
                len: t.payload().len(),
            })
        })
        .collect()
}

/// The server running alone, node 0 of its simulation (at 10.0.0.2), for a test that
/// plays 10.0.0.1 itself with [`Out`] segments; what the server sends it is in
/// [`segments`].
fn lone_server() -> Simulation {
    let mut sim = Simulation::new(1, vec![("server", config(SERVER))], LinkConfig::default(), 1500).unwrap();
    sim.keep_crossings(true);
    sim
}

/// The server's node in [`lone_server`].
const LONE: usize = 0;

/// A segment the test sends as 10.0.0.1:`port` to the server's [`PORT`].
#[derive(Debug, Clone, Copy)]
struct Out {
    port: u16,
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    fin: bool,
    rst: bool,
    window: u16,
}

/// A bare segment from 10.0.0.1:`port` with sequence number `seq`; flags are added with
/// struct update syntax.
fn out(port: u16, seq: u32) -> Out {
    Out { port, seq, ack: None, syn: false, fin: false, rst: false, window: 65535 }
}

impl Out {
    fn with_syn(self) -> Out {
        Out { syn: true, ..self }
    }

    fn with_ack(self, ack: u32) -> Out {
        Out { ack: Some(ack), ..self }
    }

    fn frame(self, payload: &[u8]) -> Vec<u8> {
        let mut b = PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).tcp(self.port, PORT, self.seq, self.window);
        if self.syn {
            b = b.syn();
        }
        if self.fin {
            b = b.fin();
        }
        if self.rst {
            b = b.rst();
        }
        if let Some(ack) = self.ack {
            b = b.ack(ack);
        }
        let mut frame = Vec::new();
        b.write(&mut frame, payload).unwrap();
        frame
    }

    /// Hands the segment to the lone server now.
    fn send(self, sim: &mut Simulation, payload: &[u8]) {
        sim.inject(LONE, self.frame(payload));
    }
}

/// When each of `segs` was sent, as time since `start`.
fn offsets(segs: &[Seg], start: Instant) -> Vec<Duration> {
    segs.iter().map(|s| s.at - start).collect()
}

// ---- Connecting ----

#[test]
fn a_connect_to_a_closed_port_is_refused_after_one_round_trip_without_retries() {
    let mut sim = network(|_| {});
    let c = connect(&mut sim);
    let refused = sim.run_until(at(secs(10)), |_, nodes| outcome(nodes, c).is_some());
    assert_eq!(refused, Some(at(ms(2))), "the RST answers the SYN: 1 ms there, 1 ms back");
    run_for(&mut sim, secs(10));
    let segs = segments(&mut sim);
    assert_eq!(segs.iter().filter(|s| s.syn).count(), 1, "no SYN retransmission: {segs:?}");
}

/// Runs a connect() nobody answers until it ends: when it ended and how, and the client's
/// segments.
fn unanswered_connect(connect_timeout: std::time::Duration) -> (Instant, Result<(), Errno>, Vec<Seg>) {
    let mut sim = network(|c| c.connect_timeout = connect_timeout);
    sim.link.lose_if(|_, from, _| from == CLIENT); // the server never hears of it
    let c = connect(&mut sim);
    let mut ended = None;
    let end = sim
        .run_until(at(secs(600)), |_, nodes| {
            // Until it ends, poll() says nothing but "not ready"; then ERR, once.
            let ready = nodes[CLIENT].engine.readiness(c);
            ended = outcome(nodes, c);
            assert_eq!(ready.contains(Events::ERR), ended.is_some(), "{ready:?} and {ended:?}");
            ended.is_some()
        })
        .expect("the connect() ends");
    run_for(&mut sim, secs(1));
    (end, ended.unwrap(), segments(&mut sim))
}

#[test]
fn a_connect_nobody_answers_resends_its_syn_at_1_3_7_15_31_63_123_s_and_fails_at_127_s() {
    let (end, result, segs) = unanswered_connect(ustack::engine::DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(result, Err(Errno::ETIMEDOUT));
    // As Linux (tcp_syn_retries = 6): 127 s. The sweep that notices runs at most 100 ms late.
    assert!(end >= at(secs(127)) && end <= at(secs(127) + ms(100)), "ETIMEDOUT at {end}");
    let syns: Vec<Seg> = segs.iter().filter(|s| s.syn).copied().collect();
    // smoltcp doubles the RTO from 1 s; Linux's SYNs go at the same times (up to 63 s; its
    // 127 s attempt has no seventh retransmission, ustack's has one at 123 s).
    assert_eq!(offsets(&syns, Instant::ZERO), [0, 1, 3, 7, 15, 31, 63, 123].map(secs));
    assert!(syns.iter().all(|s| s.seq == syns[0].seq), "the same SYN each time");
    // Giving up, ustack aborts the connection: one RST (linux-differences.md).
    let after: Vec<&Seg> = segs.iter().filter(|s| s.at >= end).collect();
    assert!(matches!(after[..], [rst] if rst.rst && rst.at == end), "{after:?}");
}

#[test]
fn a_short_connect_timeout_ends_the_attempt_at_that_time_not_at_the_next_syn() {
    let (end, result, segs) = unanswered_connect(std::time::Duration::from_millis(400));
    assert_eq!(result, Err(Errno::ETIMEDOUT));
    assert!(end >= at(ms(400)) && end <= at(ms(500)), "ETIMEDOUT at {end}");
    assert_eq!(segs.iter().filter(|s| s.syn).count(), 1, "over before the first retransmission: {segs:?}");
}

// ---- Half-open connections and the SYN queue ----

#[test]
fn a_half_open_connection_is_dropped_after_63_s_and_frees_its_place_in_the_syn_queue() {
    let mut sim = lone_server();
    let engine = &mut sim.nodes[LONE].engine;
    let l = engine.socket(Domain::Inet, Type::Stream);
    engine.bind(l, node_addr(SERVER, PORT)).unwrap();
    engine.listen(l, 1).unwrap(); // the SYN queue holds one
    out(40000, 1000).with_syn().send(&mut sim, b""); // and never completes the handshake
    let mut dropped = None;
    sim.run_until(at(secs(100)), |now, nodes| {
        if dropped.is_none() && nodes[LONE].engine.listen_queues(l) == Some((0, 0, 0)) {
            dropped = Some(now);
        }
        false
    });
    // As Linux: SYN-ACK retransmissions at 1, 3, 7, 15 and 31 s, then given up at 63 s
    // (tcp_synack_retries = 5). smoltcp's timer, due at 63 s too, sends one more first.
    assert_eq!(dropped, Some(at(secs(63))), "the half-open connection is dropped at 63 s");
    let syn_acks: Vec<Seg> = segments(&mut sim).into_iter().filter(|s| s.syn && s.ack).collect();
    assert_eq!(offsets(&syn_acks, Instant::ZERO), [0, 1, 3, 7, 15, 31, 63].map(secs));
    assert!(syn_acks.iter().all(|s| s.ack_no == 1001 && s.seq == syn_acks[0].seq), "the same SYN-ACK: {syn_acks:?}");
    // The client's ACK, too late: the connection is gone, and the client is told with a
    // RST (its ACK carries no cookie).
    out(40000, 1001).with_ack(syn_acks[0].seq.wrapping_add(1)).send(&mut sim, b"");
    run_for(&mut sim, ms(10));
    let answer = segments(&mut sim);
    assert!(matches!(answer[..], [rst] if rst.rst && rst.seq == syn_acks[0].seq.wrapping_add(1)), "{answer:?}");
    assert_eq!(sim.nodes[LONE].engine.accept(l), Err(Errno::EAGAIN), "nothing to accept");
    // The SYN queue has room again: the next SYN is admitted, not answered with a cookie.
    out(40001, 5000).with_syn().send(&mut sim, b"");
    run_for(&mut sim, ms(10));
    assert_eq!(sim.nodes[LONE].engine.listen_queues(l), Some((1, 0, 0)));
}
