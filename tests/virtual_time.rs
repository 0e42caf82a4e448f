//! What TCP does over time, on the simulator's virtual clock: every timeout, retransmission
//! and expiry the engine decides, pinned to the virtual time it happens at. Nothing here
//! sleeps or reads a clock, so a run is the same on any machine however loaded it is, and
//! a 127 s connect timeout costs no more to wait for than a millisecond.
//!
//! The network is two engines on a simulated link with 1 ms of delay each way: the
//! "client" at 10.0.0.1 and the "server" at 10.0.0.2, with the test making socket calls
//! on their engines at chosen virtual instants and losing chosen packets
//! (`Link::lose_if`). Where the test must play a peer that misbehaves in a chosen way, one
//! node runs alone ([`alone`]) and the test answers for 10.0.0.1 with segments of its own
//! ([`Out`]).
//!
//! The times pinned here are smoltcp 0.14's (a SYN's RTO of 1 s, doubling up to 60 s;
//! TIME-WAIT of 10 s), ustack's loss recovery's for data (Linux's: an RTO of SRTT +
//! max(4·RTTVAR, 200 ms) doubling up to 120 s, tail loss probes, RACK; engine/recovery.rs)
//! and ustack's (the connect timeout, the 63 s half-open timeout, SYN
//! cookies valid for the minute they were made and the next). docs/linux-differences.md
//! says where they differ from Linux.

use std::net::Shutdown;

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use smoltcp::time::{Duration, Instant};
use ustack::Events;
use ustack::engine::{Decision, Domain, SockId, Type};
use ustack::errno::Errno;
use ustack::sim::{Fate, LinkConfig, Simulation, node_addr};

mod two_nodes;
use two_nodes::*;

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

/// A listener on the server's address and [`PORT`], in node `node` of the simulation
/// ([`SERVER`], or [`LONE`] when the server runs alone).
fn listen(sim: &mut Simulation, node: usize, backlog: u32) -> SockId {
    listen_with(sim, node, backlog, |_, _| {})
}

/// A non-blocking connect() from the client to the server's [`PORT`], now.
fn connect(sim: &mut Simulation) -> SockId {
    connect_with(sim, |_, _| {})
}

/// A connection from the client to listener `l` on the server, made now: (client socket,
/// accepted socket). Takes 3 ms of virtual time.
fn establish(sim: &mut Simulation, l: SockId) -> (SockId, SockId) {
    establish_with(sim, l, |_, _| {})
}

/// The server (or the client) running alone, node [`LONE`] of its simulation with its
/// usual address, for a test that plays the other end itself: [`Out`] segments come from
/// 10.0.0.1, and what the node sends to an address no node has is in [`segments`].
fn alone(index: usize) -> Simulation {
    let mut sim = Simulation::new(1, vec![("alone", config(index))], LinkConfig::default(), 1500).unwrap();
    sim.keep_crossings(true);
    sim
}

/// The node of a simulation made by [`alone`].
const LONE: usize = 0;

/// The decisions the lone node's demux made for packets from 10.0.0.1:`port`, oldest first.
fn decisions(sim: &Simulation, port: u16) -> Vec<Decision> {
    let events = sim.nodes[LONE].engine.demux_events();
    events.filter(|e| e.flow.is_some_and(|f| f.remote.port() == port)).map(|e| e.decision).collect()
}

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

/// A bare segment from 10.0.0.1:`port` with sequence number `seq`; the `with_` methods
/// add the rest.
fn out(port: u16, seq: u32) -> Out {
    Out { port, seq, ack: None, syn: false, fin: false, rst: false, window: 65535 }
}

impl Out {
    fn with_syn(self) -> Out {
        Out { syn: true, ..self }
    }

    fn with_rst(self) -> Out {
        Out { rst: true, ..self }
    }

    fn with_fin(self) -> Out {
        Out { fin: true, ..self }
    }

    fn with_window(self, window: u16) -> Out {
        Out { window, ..self }
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

    /// Hands the segment to the lone node, at the current instant.
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
            // poll() reports ERR when, and only when, it has ended.
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
    // As Linux (tcp_syn_retries = 6): 127 s. The sweep that notices may run up to 100 ms
    // late (SWEEP_INTERVAL); here it is on time, at 127 s exactly.
    assert!(end >= at(secs(127)) && end <= at(secs(127) + ms(100)), "ETIMEDOUT at {end}");
    let syns: Vec<Seg> = segs.iter().filter(|s| s.syn).copied().collect();
    // smoltcp doubles the RTO from 1 s; Linux's SYNs go at the same times (up to 63 s; its
    // 127 s attempt has no seventh retransmission, ustack's has one at 123 s).
    assert_eq!(offsets(&syns, Instant::ZERO), [0, 1, 3, 7, 15, 31, 63, 123].map(secs));
    assert!(syns.iter().all(|s| s.seq == syns[0].seq), "the same SYN each time");
    // Giving up, ustack sends nothing, as Linux (tcp_write_err: no RST).
    let after: Vec<&Seg> = segs.iter().filter(|s| s.at >= end).collect();
    assert!(after.is_empty(), "{after:?}");
}

#[test]
fn a_short_connect_timeout_ends_the_attempt_at_that_time_not_at_the_next_syn() {
    let (end, result, segs) = unanswered_connect(std::time::Duration::from_millis(400));
    assert_eq!(result, Err(Errno::ETIMEDOUT));
    assert!(end >= at(ms(400)) && end <= at(ms(500)), "ETIMEDOUT at {end}"); // 400 ms exactly
    assert_eq!(segs.iter().filter(|s| s.syn).count(), 1, "over before the first retransmission: {segs:?}");
}

#[test]
fn a_connect_timeout_falling_just_after_a_sweep_is_noticed_at_the_next_one() {
    // The SYN resent at 1 s makes the engine sweep its connections then; sweeps are at
    // least SWEEP_INTERVAL (100 ms) apart, so a timeout of 1.05 s is noticed at 1.1 s.
    let (end, result, _) = unanswered_connect(std::time::Duration::from_millis(1050));
    assert_eq!(result, Err(Errno::ETIMEDOUT));
    assert_eq!(end, at(secs(1) + ms(100)));
    assert_eq!(ustack::engine::SWEEP_INTERVAL, std::time::Duration::from_millis(100));
}

// ---- Half-open connections and the SYN queue ----

/// A client that did not get the SYN-ACK sends its SYN again: Linux answers with the
/// SYN-ACK at once (`tcp_check_req`), at most once every 500 ms; smoltcp alone would make
/// it wait for the SYN-ACK's retransmission at 1 s.
#[test]
fn a_retransmitted_syn_is_answered_with_the_syn_ack_at_once() {
    let mut sim = alone(SERVER);
    let l = listen(&mut sim, LONE, 8);
    out(40000, 1000).with_syn().send(&mut sim, b"");
    run_for(&mut sim, ms(300));
    out(40000, 1000).with_syn().send(&mut sim, b""); // answered at once
    run_for(&mut sim, ms(100));
    out(40000, 1000).with_syn().send(&mut sim, b""); // 100 ms later: not again
    run_for(&mut sim, ms(700));
    let syn_acks: Vec<Seg> = segments(&mut sim).into_iter().filter(|s| s.syn && s.ack).collect();
    // At 0 (the SYN), 300 ms (its repetition), and 1 s (smoltcp's own retransmission).
    assert_eq!(offsets(&syn_acks, Instant::ZERO), [ms(0), ms(300), secs(1)]);
    assert!(syn_acks.iter().all(|s| s.seq == syn_acks[0].seq && s.ack_no == 1001), "the same SYN-ACK: {syn_acks:?}");
    let resent: Vec<Decision> =
        decisions(&sim, 40000).into_iter().filter(|d| matches!(d, Decision::SynAckResent { .. })).collect();
    assert!(
        matches!(
            resent[..],
            [Decision::SynAckResent { limited: false, .. }, Decision::SynAckResent { limited: true, .. }]
        ),
        "{resent:?}"
    );
    // The handshake still completes, once.
    out(40000, 1001).with_ack(syn_acks[0].seq.wrapping_add(1)).send(&mut sim, b"");
    run_for(&mut sim, ms(10));
    assert!(sim.nodes[LONE].engine.accept(l).is_ok(), "the connection is accepted");
    assert_eq!(sim.nodes[LONE].engine.accept(l), Err(Errno::EAGAIN), "and only one");
}

#[test]
fn a_half_open_connection_is_dropped_after_63_s_and_frees_its_place_in_the_syn_queue() {
    let mut sim = alone(SERVER);
    let l = listen(&mut sim, LONE, 1); // the SYN queue holds one
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

#[test]
fn a_syn_beyond_a_full_accept_queue_is_dropped_silently_and_its_retransmission_gets_in_after_accept() {
    let mut sim = network(|_| {});
    let l = listen(&mut sim, SERVER, 1); // the accept queue holds two
    let _waiting = [connect(&mut sim), connect(&mut sim)];
    run_for(&mut sim, ms(10));
    assert_eq!(sim.nodes[SERVER].engine.listen_queues(l), Some((0, 2, 0)), "two wait for accept()");
    segments(&mut sim);
    let start = sim.now();
    let third = connect(&mut sim);
    // Two seconds on, the server accepts one: its SYN at 0 and at 1 s were dropped without
    // an answer; the one at 3 s gets in.
    run_for(&mut sim, secs(2));
    assert_eq!(outcome(&mut sim.nodes, third), None, "not refused: still trying");
    assert_eq!(sim.nodes[SERVER].engine.listen_queues(l), Some((0, 2, 2)), "two SYNs dropped, counted");
    sim.nodes[SERVER].engine.accept(l).expect("the first connection");
    let mut result = None;
    let connected = sim.run_until(start + secs(10), |_, nodes| {
        result = outcome(nodes, third);
        result.is_some()
    });
    assert_eq!(result, Some(Ok(())));
    assert_eq!(connected, Some(start + secs(3) + ms(2)), "in with the SYN resent at 3 s");
    let segs = segments(&mut sim);
    let from_server_before: Vec<&Seg> = segs.iter().filter(|s| s.from == SERVER && s.at < start + secs(3)).collect();
    assert!(from_server_before.is_empty(), "no SYN-ACK and no RST before: {from_server_before:?}");
    let syns: Vec<Seg> = segs.iter().filter(|s| s.syn && !s.ack).copied().collect();
    assert_eq!(offsets(&syns, start), [0, 1, 3].map(secs));
}

#[test]
fn a_client_kept_out_by_a_full_accept_queue_times_out_instead_of_being_refused() {
    let mut sim = network(|c| c.connect_timeout = std::time::Duration::from_millis(1500));
    let l = listen(&mut sim, SERVER, 1);
    let _waiting = [connect(&mut sim), connect(&mut sim)]; // and nobody accepts them
    run_for(&mut sim, ms(10));
    let start = sim.now();
    let late = connect(&mut sim);
    let mut result = None;
    let ended = sim.run_until(start + secs(10), |_, nodes| {
        result = outcome(nodes, late);
        result.is_some()
    });
    assert_eq!(result, Some(Err(Errno::ETIMEDOUT)), "not ECONNREFUSED: no RST came");
    assert_eq!(ended, Some(start + ms(1500)), "at the connect timeout");
    let (_, accept_queue, dropped) = sim.nodes[SERVER].engine.listen_queues(l).unwrap();
    assert_eq!((accept_queue, dropped), (2, 2), "the SYN and its retransmission at 1 s were dropped");
}

/// The engine tells its driver when an accept queue passes half its backlog — the
/// application accepts more slowly than handshakes complete, and SYNs will soon be dropped
/// — so that the stack thread can give a woken acceptor a turn; and says when accept()
/// has brought it back to a quarter.
#[test]
fn an_accept_queue_past_half_its_backlog_is_reported_crowded_until_accept_takes_it_down() {
    let mut sim = network(|_| {});
    let l = listen(&mut sim, SERVER, 4); // half is 2, a quarter 1
    let _clients = [connect(&mut sim), connect(&mut sim)];
    run_for(&mut sim, ms(10));
    let engine = &mut sim.nodes[SERVER].engine;
    assert_eq!(engine.listen_queues(l), Some((0, 2, 0)));
    assert_eq!(engine.take_crowded(), None, "two of backlog 4 is not past half");
    let _third = connect(&mut sim);
    run_for(&mut sim, ms(10));
    let engine = &mut sim.nodes[SERVER].engine;
    assert_eq!(engine.listen_queues(l), Some((0, 3, 0)));
    assert_eq!(engine.take_crowded(), Some(l));
    assert_eq!(engine.take_crowded(), None, "reported once");
    assert!(engine.still_crowded(l));
    engine.accept(l).unwrap();
    assert!(engine.still_crowded(l), "two waiting: more than a quarter");
    engine.accept(l).unwrap();
    assert!(!engine.still_crowded(l), "one waiting: caught up");
}

// ---- SYN cookies ----

#[test]
fn a_syn_cookie_is_honoured_in_the_minute_it_was_made_and_the_next() {
    let mut sim = alone(SERVER);
    let l = listen(&mut sim, LONE, 1); // the SYN queue holds one
    out(40000, 1000).with_syn().send(&mut sim, b""); // half-open until 63 s: the queue is full
    for port in [40001, 40002] {
        out(port, 5000).with_syn().send(&mut sim, b"");
    }
    sim.run_to(at(secs(59) + ms(999)));
    out(40003, 5000).with_syn().send(&mut sim, b"");
    run_for(&mut sim, ms(1));
    let cookie = |segs: &[Seg], port: u16| {
        segs.iter().find(|s| s.syn && s.ack && s.to_port == port).map(|s| s.seq).expect("a cookie SYN-ACK")
    };
    let segs = segments(&mut sim);
    let cookies = [40001, 40002, 40003].map(|port| cookie(&segs, port));
    assert!(decisions(&sim, 40001).contains(&Decision::CookieSent { listener: l }));
    // Made at 0 s (minute 0): still good at 119.999 s, no longer at 120 s. Made at
    // 59.999 s, also in minute 0: gone at 120 s too, 60.001 s later.
    sim.run_to(at(secs(119) + ms(999)));
    out(40001, 5001).with_ack(cookies[0].wrapping_add(1)).send(&mut sim, b"");
    run_for(&mut sim, ms(1));
    let (_, peer) = sim.nodes[LONE].engine.accept(l).expect("the cookie made the connection");
    assert_eq!(peer.port(), 40001);
    sim.run_to(at(secs(120)));
    out(40002, 5001).with_ack(cookies[1].wrapping_add(1)).send(&mut sim, b"");
    out(40003, 5001).with_ack(cookies[2].wrapping_add(1)).send(&mut sim, b"");
    run_for(&mut sim, ms(1));
    let answers = segments(&mut sim);
    for port in [40002, 40003] {
        assert!(
            answers.iter().any(|s| s.rst && s.to_port == port),
            "{port}: an expired cookie is refused: {answers:?}"
        );
    }
    assert_eq!(sim.nodes[LONE].engine.accept(l), Err(Errno::EAGAIN));
}

/// A SYN cookie names the client's ISN, as Linux's does: only the segment right after the
/// SYN completes the handshake. A later one (its predecessors lost) does not open the
/// connection with SEG.SEQ - 1 as the ISN, which would put its data at the start of the
/// stream; it is refused, and the first segment, resent, gets in with the data in place.
#[test]
fn a_syn_cookie_is_completed_only_by_the_segment_right_after_the_syn() {
    let mut sim = alone(SERVER);
    let l = listen(&mut sim, LONE, 1);
    out(40000, 1000).with_syn().send(&mut sim, b""); // fills the SYN queue
    out(40001, 5000).with_syn().send(&mut sim, b"");
    run_for(&mut sim, ms(1));
    let cookie =
        segments(&mut sim).iter().find(|s| s.syn && s.ack && s.to_port == 40001).expect("a cookie SYN-ACK").seq;
    out(40001, 5004).with_ack(cookie.wrapping_add(1)).send(&mut sim, b"efgh");
    run_for(&mut sim, ms(1));
    assert!(segments(&mut sim).iter().any(|s| s.rst && s.to_port == 40001), "refused, as by Linux");
    assert_eq!(sim.nodes[LONE].engine.accept(l), Err(Errno::EAGAIN));
    out(40001, 5001).with_ack(cookie.wrapping_add(1)).send(&mut sim, b"abcdefgh");
    run_for(&mut sim, ms(1));
    let (s, _) = sim.nodes[LONE].engine.accept(l).expect("the first segment completes the handshake");
    assert_eq!(drain(&mut sim, LONE, s), b"abcdefgh");
}

// ---- TIME-WAIT ----

#[test]
fn time_wait_lasts_10_s_and_holds_the_port_until_it_ends() {
    let mut sim = network(|_| {});
    let l = listen(&mut sim, SERVER, 1);
    let (c, s) = establish(&mut sim, l);
    let mine = sim.nodes[CLIENT].engine.local_addr(c).unwrap();
    // The client closes first, so its side ends in TIME-WAIT.
    sim.nodes[CLIENT].engine.close(c);
    let mut server_done = false;
    let mut time_wait = None;
    sim.run_until(sim.now() + secs(1), |now, nodes| {
        if !server_done && nodes[SERVER].engine.recv(s, &mut [0; 8]) == Ok(0) {
            nodes[SERVER].engine.close(s);
            server_done = true;
        }
        let info = nodes[CLIENT].engine.connections().into_iter().find(|i| i.tuple.local == mine);
        if time_wait.is_none() && info.is_some_and(|i| i.timeline.last().is_some_and(|(_, s)| s == "TIME-WAIT")) {
            time_wait = Some(now);
        }
        false
    });
    let time_wait = time_wait.expect("the client's side entered TIME-WAIT");
    let bind_again = |sim: &mut Simulation| {
        let engine = &mut sim.nodes[CLIENT].engine;
        let again = engine.socket(Domain::Inet, Type::Stream);
        let result = engine.bind(again, mine);
        engine.close(again);
        result
    };
    // smoltcp's TIME-WAIT is 10 s (Linux's 60 s: linux-differences.md).
    sim.run_to(time_wait + secs(10) - Duration::from_micros(1));
    assert_eq!(bind_again(&mut sim), Err(Errno::EADDRINUSE), "TIME-WAIT holds the port");
    sim.run_to(time_wait + secs(10));
    assert_eq!(bind_again(&mut sim), Ok(()), "free when TIME-WAIT ends");
    let info = sim.nodes[CLIENT].engine.connections().into_iter().find(|i| i.tuple.local == mine).unwrap();
    let states: Vec<&str> = info.timeline.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(states[states.len() - 2..], ["TIME-WAIT", "CLOSED"]);
}

// ---- Retransmission ----

/// The data segments `from` sent, with when.
fn data_from(segs: &[Seg], from: usize) -> Vec<Seg> {
    segs.iter().filter(|s| s.from == from && s.len > 0).copied().collect()
}

/// Everything node `node` has received on `s` and not read yet.
fn drain(sim: &mut Simulation, node: usize, s: SockId) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    while let Ok(n @ 1..) = sim.nodes[node].engine.recv(s, &mut buf) {
        got.extend_from_slice(&buf[..n]);
    }
    got
}

#[test]
fn a_lost_syn_is_resent_after_1_s_and_the_connect_completes_then() {
    let mut sim = network(|_| {});
    let l = listen(&mut sim, SERVER, 1);
    let mut first = true;
    sim.link.lose_if(move |_, from, _| from == CLIENT && std::mem::take(&mut first));
    let c = connect(&mut sim);
    let mut result = None;
    let connected = sim.run_until(at(secs(10)), |_, nodes| {
        result = outcome(nodes, c);
        result.is_some()
    });
    assert_eq!(result, Some(Ok(())));
    assert_eq!(connected, Some(at(secs(1) + ms(2))), "the SYN resent at 1 s, answered 2 ms later");
    run_for(&mut sim, ms(1)); // the handshake's last ACK reaches the server
    assert!(sim.nodes[SERVER].engine.accept(l).is_ok());
}

/// A connection, client socket `c` and server socket `s`, whose client's next segment
/// carrying data (longer than 40 bytes) is lost on the link; what crossed before is taken.
fn connected_losing_the_first_data_segment() -> (Simulation, SockId, SockId) {
    let mut sim = network(|_| {});
    let l = listen(&mut sim, SERVER, 1);
    let (c, s) = establish(&mut sim, l);
    segments(&mut sim);
    let mut first = true;
    sim.link.lose_if(move |_, from, p| from == CLIENT && p.len() > 40 && std::mem::take(&mut first));
    (sim, c, s)
}

#[test]
fn a_lost_segment_alone_in_flight_arrives_with_its_retransmission_202_ms_later() {
    let (mut sim, c, s) = connected_losing_the_first_data_segment();
    let start = sim.now();
    assert_eq!(sim.nodes[CLIENT].engine.send(c, b"hello", false), Ok(5));
    let mut arrived = None;
    sim.run_until(start + secs(5), |now, nodes| {
        if arrived.is_none() && nodes[SERVER].engine.readiness(s).contains(Events::IN) {
            arrived = Some(now);
        }
        false
    });
    // No duplicate ACKs can come (nothing else is in flight): the RTO resends it, at
    // SRTT + max(4·RTTVAR, 200 ms) = 2 + 200 ms as Linux would (the handshake measured the
    // RTT), before the tail loss probe would at 2·SRTT + 200 ms. smoltcp alone: 1 s.
    assert_eq!(arrived, Some(start + ms(203)));
    assert_eq!(drain(&mut sim, SERVER, s), b"hello");
    let sent = data_from(&segments(&mut sim), CLIENT);
    assert_eq!(offsets(&sent, start), [ms(0), ms(202)]);
    assert_eq!(sent[0].fate, Fate::Dropped);
}

#[test]
fn a_lost_first_segment_of_many_is_resent_when_the_sacks_behind_it_come_back() {
    let (mut sim, c, s) = connected_losing(|i, nth| i == 0 && nth == 0);
    let (done, sent) = transfer(&mut sim, c, s, 20_000);
    // The segments behind the lost one arrive 1 ms on, and the server SACKs them; back 1 ms
    // later, three SACKed segments above the hole make RACK resend it at once, not after
    // the timeout. Everything is there 5 ms after the send.
    assert_eq!(resent(&sent), [(0, ms(2))]);
    assert_eq!(done, Some(ms(5)));
}

#[test]
fn through_a_100_s_outage_data_is_resent_with_a_doubling_timeout_from_202_ms_and_arrives_after_it() {
    let mut sim = network(|_| {});
    let l = listen(&mut sim, SERVER, 1);
    let (c, s) = establish(&mut sim, l);
    segments(&mut sim);
    let start = sim.now();
    let healed = start + secs(100);
    sim.link.lose_if(move |now, _, _| now < healed); // both ways
    assert_eq!(sim.nodes[CLIENT].engine.send(c, b"hello", false), Ok(5));
    let mut arrived = None;
    sim.run_until(start + secs(200), |now, nodes| {
        // Through the outage, nothing fails and nothing arrives.
        assert_eq!(nodes[CLIENT].engine.tcp_state(c), Some(smoltcp::socket::tcp::State::Established));
        if arrived.is_none() && nodes[SERVER].engine.readiness(s).contains(Events::IN) {
            arrived = Some(now);
        }
        false
    });
    // RFC 6298's backoff: the RTO doubles from 202 ms (Linux's floor of 200 ms above the
    // 2 ms RTT). The first resend after the outage, at 103.222 s, gets through.
    let sent = data_from(&segments(&mut sim), CLIENT);
    let at = [0, 202, 606, 1414, 3030, 6262, 12_726, 25_654, 51_510, 103_222].map(ms);
    assert_eq!(offsets(&sent, start), at);
    assert_eq!(arrived, Some(start + ms(103_223)));
    assert_eq!(drain(&mut sim, SERVER, s), b"hello");
    // And the connection carries on.
    assert_eq!(sim.nodes[SERVER].engine.send(s, b"back", false), Ok(4));
    run_for(&mut sim, ms(20));
    assert_eq!(drain(&mut sim, CLIENT, c), b"back");
}

/// Linux's `tcp_retries2` (15): data to a peer gone for good is resent with a doubling
/// timeout up to 120 s, and once 924.6 s have passed since the first retransmission
/// (what 15 timeouts doubling from 200 ms would take), at the next timeout the connection
/// is given up: ETIMEDOUT to the caller, and no RST (Linux's `tcp_write_err`).
#[test]
fn data_to_a_peer_gone_for_good_is_resent_15_times_and_the_connection_fails_with_etimedout_after_924_6_s() {
    let mut sim = network(|_| {});
    let l = listen(&mut sim, SERVER, 1);
    let (c, _s) = establish(&mut sim, l);
    segments(&mut sim);
    let start = sim.now();
    sim.link.lose_if(|_, _, _| true);
    assert_eq!(sim.nodes[CLIENT].engine.send(c, b"hello", false), Ok(5));
    let failed = sim.run_until(start + secs(3600), |_, nodes| nodes[CLIENT].engine.readiness(c).contains(Events::ERR));
    let sent = segments(&mut sim);
    let data = data_from(&sent, CLIENT);
    let gaps: Vec<Duration> = data.windows(2).map(|w| w[1].at - w[0].at).collect();
    let doubling = [202, 404, 808, 1616, 3232, 6464, 12_928, 25_856, 51_712, 103_424].map(ms);
    assert_eq!(gaps[..10], doubling, "the RTO doubles from 202 ms…");
    assert_eq!(gaps[10..], [secs(120); 5], "…up to 120 s: 15 retransmissions in all");
    // The 16th timeout, 120 s after the 15th, is 926.444 s after the first retransmission
    // (at 202 ms): past 924.6 s, so the connection is given up then, sending nothing.
    assert_eq!(failed, Some(start + ms(202 + 926_444)));
    assert!(!sent.iter().any(|s| s.from == CLIENT && s.rst), "no RST, as Linux");
    let engine = &mut sim.nodes[CLIENT].engine;
    assert_eq!(engine.recv(c, &mut [0; 8]), Err(Errno::ETIMEDOUT));
    assert_eq!(engine.tcp_state(c), Some(smoltcp::socket::tcp::State::Closed));
}

// ---- Closing ----

#[test]
fn a_lost_fin_is_resent_after_202_ms_and_both_sides_then_see_end_of_stream() {
    let mut sim = network(|_| {});
    let l = listen(&mut sim, SERVER, 1);
    let (c, s) = establish(&mut sim, l);
    segments(&mut sim);
    let mut first = true;
    sim.link.lose_if(move |_, from, p| {
        let fin =
            SlicedPacket::from_ip(p).is_ok_and(|p| matches!(p.transport, Some(TransportSlice::Tcp(t)) if t.fin()));
        from == CLIENT && fin && std::mem::take(&mut first)
    });
    let start = sim.now();
    sim.nodes[CLIENT].engine.shutdown(c, Shutdown::Write).unwrap();
    let (mut server_eof, mut client_eof) = (None, None);
    sim.run_until(start + secs(5), |now, nodes| {
        if server_eof.is_none() && nodes[SERVER].engine.recv(s, &mut [0; 8]) == Ok(0) {
            server_eof = Some(now);
            nodes[SERVER].engine.close(s);
        }
        if client_eof.is_none() && nodes[CLIENT].engine.recv(c, &mut [0; 8]) == Ok(0) {
            client_eof = Some(now);
        }
        server_eof.is_some() && client_eof.is_some()
    });
    assert_eq!(server_eof, Some(start + ms(203)), "the FIN resent at 202 ms");
    assert_eq!(client_eof, Some(start + ms(204)), "and the server's own FIN right after");
    let fins: Vec<Seg> = segments(&mut sim).into_iter().filter(|s| s.fin).collect();
    assert_eq!(
        fins.iter().map(|s| (s.from, s.at - start, s.fate)).collect::<Vec<_>>(),
        [(CLIENT, ms(0), Fate::Dropped), (CLIENT, ms(202), Fate::Delivered), (SERVER, ms(203), Fate::Delivered)]
    );
}

// ---- Segments a peer plays by hand ----

/// A connection to a listener on the lone server, handshaken by hand from
/// 10.0.0.1:`port` with ISN 1000: the accepted socket and the server's ISN.
fn handshake(sim: &mut Simulation, port: u16) -> (SockId, u32) {
    let l = listen(sim, LONE, 1);
    out(port, 1000).with_syn().send(sim, b"");
    run_for(sim, ms(1));
    let syn_ack = *segments(sim).iter().find(|s| s.syn && s.ack).expect("a SYN-ACK");
    out(port, 1001).with_ack(syn_ack.seq.wrapping_add(1)).send(sim, b"");
    run_for(sim, ms(1));
    let (s, _) = sim.nodes[LONE].engine.accept(l).expect("the handshake completed");
    (s, syn_ack.seq)
}

/// RFC 5961 §7: at most one challenge ACK a second per connection, so a blind attacker
/// cannot make the stack flood its peer.
#[test]
fn challenge_acks_go_out_at_most_once_a_second() {
    let mut sim = alone(SERVER);
    let (s, isn) = handshake(&mut sim, 40000);
    let in_window_rst = |sim: &mut Simulation| out(40000, 1001 + 100).with_rst().send(sim, b"");
    let start = sim.now();
    let mut challenges = Vec::new();
    for after in [ms(0), ms(500), ms(999), secs(1), secs(1) + ms(1), secs(3)] {
        sim.run_to(start + after);
        in_window_rst(&mut sim);
        run_for(&mut sim, Duration::from_micros(1));
        for seg in segments(&mut sim) {
            assert!(seg.ack && !seg.rst && (seg.seq, seg.ack_no) == (isn.wrapping_add(1), 1001), "{seg:?}");
            challenges.push(seg.at - start);
        }
    }
    assert_eq!(challenges, [ms(0), secs(1), secs(3)]);
    let counted = decisions(&sim, 40000).iter().filter(|d| matches!(d, Decision::ChallengeAck { .. })).count();
    assert_eq!(counted, 6, "every RST is still recognised as one to challenge");
    assert_eq!(sim.nodes[LONE].engine.tcp_state(s), Some(smoltcp::socket::tcp::State::Established));
}

/// RFC 6528: an ISN is a keyed hash of the 4-tuple plus a clock ticking every 4 µs, so two
/// connections of the same 4-tuple get ISNs as far apart as the time between them.
#[test]
fn isns_follow_rfc_6528_a_keyed_hash_of_the_tuple_plus_a_4_microsecond_clock() {
    let mut sim = alone(CLIENT);
    let isn = |sim: &mut Simulation, port: u16, when: Duration| {
        sim.run_to(at(when));
        let now = sim.now();
        let engine = &mut sim.nodes[LONE].engine;
        let c = engine.socket(Domain::Inet, Type::Stream);
        engine.set_reuse_address(c, true).unwrap(); // the last attempt may still hold the port
        engine.bind(c, node_addr(CLIENT, port)).unwrap();
        assert_eq!(engine.connect(now, c, node_addr(SERVER, PORT)), Err(Errno::EINPROGRESS));
        run_for(sim, Duration::from_micros(1));
        sim.nodes[LONE].engine.close(c); // in SYN-SENT: reset, and the 4-tuple is free
        run_for(sim, ms(1));
        let syn = segments(sim).into_iter().find(|s| s.syn).expect("a SYN");
        assert_eq!(syn.at, at(when));
        syn.seq
    };
    let first = isn(&mut sim, 50000, secs(1));
    let second = isn(&mut sim, 50000, secs(1) + Duration::from_micros(1_234_568));
    assert_eq!(second.wrapping_sub(first), 1_234_568 / 4, "the ISN advanced with the clock, exactly");
    let other = isn(&mut sim, 50001, secs(5));
    let apart = other.wrapping_sub(second).min(second.wrapping_sub(other));
    assert!(apart > 1_000_000, "another tuple, an unrelated ISN: {first} {second} {other}");
}

// ---- Closing under loss: two smoltcp 0.14 bugs ustack works around (docs/robustness.md) ----

/// The peer got the data but not the FIN after it, and says so with duplicate ACKs (as it
/// does when older segments of a go-back-N retransmission arrive). smoltcp counts them
/// and starts a fast retransmit, which has no data to resend (tcp.rs `seq_to_transmit`:
/// `pending_fast_retransmit && !tx_buffer.is_empty()`) and does not rewind
/// `remote_last_seq`, so it sends nothing — and it has already replaced the retransmit
/// timer with an idle one (`dispatch`: `timer.set_for_idle` in the fast-retransmit
/// branch). The FIN is never sent again: the peer waits in FIN-WAIT-2 forever. ustack's
/// demux keeps such duplicates from smoltcp, so its retransmission timer resends the FIN.
#[test]
fn a_fin_alone_in_flight_is_retransmitted_after_duplicate_acks() {
    let mut sim = alone(SERVER);
    let (s, isn) = handshake(&mut sim, 4000);
    let start = sim.now();
    assert_eq!(sim.nodes[LONE].engine.send(s, b"hello", false), Ok(5));
    sim.nodes[LONE].engine.shutdown(s, Shutdown::Write).unwrap();
    run_for(&mut sim, ms(1));
    let sent = segments(&mut sim);
    assert!(sent.iter().any(|s| s.fin && s.at == start), "the stack sent its FIN: {sent:?}");
    // ACK the data, not the FIN, then three duplicates of that ACK.
    for _ in 0..4 {
        out(4000, 1001).with_ack(isn.wrapping_add(6)).send(&mut sim, b"");
    }
    run_for(&mut sim, secs(5));
    // The ACK at 1 ms restarted the retransmission timer: the FIN goes again one RTO
    // later (200 ms above the RTT), then (unanswered) at twice, four and eight times that.
    let fins: Vec<(Duration, u32)> =
        segments(&mut sim).iter().filter(|s| s.fin).map(|s| (s.at - start, s.seq.wrapping_sub(isn))).collect();
    assert_eq!(fins, [(202, 6), (604, 6), (1408, 6), (3016, 6)].map(|(at, seq)| (ms(at), seq)));
    let withheld = decisions(&sim, 4000).iter().filter(|d| matches!(d, Decision::FinDuplicateAck { .. })).count();
    assert_eq!(withheld, 3, "the three duplicates, not the first ACK, are kept from smoltcp");
}

/// A retransmitted segment carrying data the stack already has and a FIN right after it
/// (SEG.SEQ < RCV.NXT = SEG.SEQ + data length): RFC 9293's acceptability test counts the
/// FIN in SEG.LEN, so the segment is acceptable and the FIN must be processed. smoltcp
/// 0.14 (tcp.rs `process`, `segment_end = seq + payload.len()`) leaves the FIN out, finds
/// the segment "not in receive window", answers a duplicate ACK and drops the FIN — so
/// after a lost FIN whose data arrived, a sender that retransmits data and FIN together
/// (smoltcp itself, after an RTO) never gets its FIN through. ustack's demux hands smoltcp
/// such a segment in two: the data, then the FIN alone.
#[test]
fn a_fin_behind_already_received_data_is_accepted() {
    let mut sim = alone(SERVER);
    let (s, isn) = handshake(&mut sim, 4000);
    out(4000, 1001).with_ack(isn.wrapping_add(1)).send(&mut sim, b"abc");
    run_for(&mut sim, ms(20));
    assert_eq!(drain(&mut sim, LONE, s), b"abc");
    segments(&mut sim);
    // The same data again, now with the FIN (at 1004 = RCV.NXT).
    let start = sim.now();
    out(4000, 1001).with_ack(isn.wrapping_add(1)).with_fin().send(&mut sim, b"abc");
    run_for(&mut sim, ms(20));
    // At once: a duplicate ACK for the data, then the ACK of the FIN.
    let answers: Vec<(Duration, u32)> = segments(&mut sim).iter().map(|s| (s.at - start, s.ack_no)).collect();
    assert_eq!(answers, [(ms(0), 1004), (ms(0), 1005)], "the FIN was acknowledged");
    assert_eq!(sim.nodes[LONE].engine.recv(s, &mut [0; 8]), Ok(0), "end of stream");
}

/// The peer acknowledges part of the data with a zero window, then opens the window
/// without acknowledging the rest (which it lost). smoltcp 0.14 swaps its retransmission
/// timer for the zero-window-probe timer and, when the window opens, stops that by going
/// idle (tcp.rs `process`: "stopping zero-window-probe timer"): the data in flight is
/// never sent again. ustack's demux shows smoltcp a window of one unit instead of zero
/// while data is in flight, so the retransmission timer keeps running.
#[test]
fn data_in_flight_is_retransmitted_after_a_zero_window_opens() {
    let mut sim = alone(SERVER);
    let (s, isn) = handshake(&mut sim, 4000);
    let start = sim.now();
    assert_eq!(sim.nodes[LONE].engine.send(s, b"ab", false), Ok(2));
    run_for(&mut sim, ms(1));
    let sent = segments(&mut sim);
    assert!(sent.iter().any(|s| s.seq == isn.wrapping_add(1) && s.len == 2), "{sent:?}");
    out(4000, 1001).with_ack(isn.wrapping_add(2)).with_window(0).send(&mut sim, b"");
    out(4000, 1001).with_ack(isn.wrapping_add(2)).send(&mut sim, b"");
    run_for(&mut sim, secs(5));
    // The partial ACK at 1 ms restarted the retransmission timer: the unacknowledged byte
    // (alone: the acknowledged one is trimmed off) goes again one RTO later, then at
    // twice, four and eight times that.
    let later: Vec<(Duration, u32, usize)> =
        segments(&mut sim).iter().map(|s| (s.at - start, s.seq.wrapping_sub(isn), s.len)).collect();
    assert_eq!(later, [202, 604, 1408, 3016].map(|at| (ms(at), 2, 1)));
}

// ---- Loss recovery (engine/recovery.rs): each mechanism on its own ----

const MSS: u32 = 1460;

/// A connection whose client's data segments are lost on the link when `lose(index,
/// nth)` says so: `index` is the segment's place in the stream (MSS-sized segments from
/// 0), `nth` how many times a segment at that place was sent before. Returns the client
/// and server sockets. Congestion control is off, so that each burst goes out whole and
/// the timings below are recovery's alone (tests/congestion.rs has the window's).
fn connected_losing(lose: impl Fn(u32, usize) -> bool + 'static) -> (Simulation, SockId, SockId) {
    let mut sim = network(|c| c.congestion = ustack::Congestion::None);
    let l = listen(&mut sim, SERVER, 1);
    let (c, s) = establish(&mut sim, l);
    let isn = segments(&mut sim).iter().find(|s| s.syn && s.from == CLIENT).expect("the client's SYN").seq;
    let mut sent: std::collections::HashMap<u32, usize> = Default::default();
    sim.link.lose_if(move |_, from, p| {
        let Ok(packet) = SlicedPacket::from_ip(p) else { return false };
        let Some(TransportSlice::Tcp(t)) = packet.transport else { return false };
        if from != CLIENT || t.payload().is_empty() {
            return false;
        }
        let index = t.sequence_number().wrapping_sub(isn).wrapping_sub(1) / MSS;
        let nth = sent.entry(index).or_default();
        *nth += 1;
        lose(index, *nth - 1)
    });
    (sim, c, s)
}

/// Sends `len` bytes from `c` and runs until `s` has them all (at most 5 s): when that
/// was, counted from the send, and the client's data segments (retransmissions included).
fn transfer(sim: &mut Simulation, c: SockId, s: SockId, len: u32) -> (Option<Duration>, Vec<Seg>) {
    let start = sim.now();
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    assert_eq!(sim.nodes[CLIENT].engine.send(c, &data, false), Ok(data.len()));
    let mut got = Vec::new();
    let done = sim.run_until(start + secs(5), |_, nodes| {
        let mut buf = [0; 4096];
        while let Ok(n @ 1..) = nodes[SERVER].engine.recv(s, &mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        got.len() == data.len()
    });
    assert_eq!(got, data);
    (done.map(|at| at - start), data_from(&segments(sim), CLIENT))
}

/// The segments sent more than once: their place in the stream, and when (from the first send).
fn resent(sent: &[Seg]) -> Vec<(u32, Duration)> {
    let first = sent.iter().map(|s| s.seq).min().unwrap_or(0);
    let start = sent.first().map_or(Instant::ZERO, |s| s.at);
    let mut seen = std::collections::HashSet::new();
    sent.iter().filter(|s| !seen.insert(s.seq)).map(|s| (s.seq.wrapping_sub(first) / MSS, s.at - start)).collect()
}

/// The last two segments of a burst are lost: nothing after them can report the loss.
/// The tail loss probe resends the last one 2·SRTT + 2 ms after the last ACK (Linux's
/// `tcp_schedule_loss_probe`; the ACKs of the others came at 2 ms, SRTT is 2 ms); its SACK
/// shows the other missing, which RACK resends at once. smoltcp alone waits for its 1 s
/// timeout.
#[test]
fn a_lost_tail_is_probed_after_two_round_trips_instead_of_waiting_for_the_timeout() {
    let (mut sim, c, s) = connected_losing(|i, nth| (i == 12 || i == 13) && nth == 0);
    let (done, sent) = transfer(&mut sim, c, s, 14 * MSS);
    assert_eq!(resent(&sent), [(13, ms(8)), (12, ms(10))]);
    assert_eq!(done, Some(ms(11)));
}

/// The first segment is lost, and so is its retransmission. Three SACKed segments make
/// RACK resend it at once when the first SACK comes back (2 ms); that copy is lost too,
/// and nothing sent after it can show it: the tail loss probe, 2·SRTT + 2 ms after the
/// send, resends the only segment not SACKed.
#[test]
fn a_lost_retransmission_is_resent_by_the_probe() {
    let (mut sim, c, s) = connected_losing(|i, nth| i == 0 && nth < 2);
    let (done, sent) = transfer(&mut sim, c, s, 14 * MSS);
    assert_eq!(resent(&sent), [(0, ms(2)), (0, ms(6))]);
    assert_eq!(done, Some(ms(7)));
}

/// Three holes in one window: the SACK blocks show all three, and each is resent once,
/// in the same round trip.
#[test]
fn several_holes_in_one_window_are_all_resent_in_one_round_trip() {
    let (mut sim, c, s) = connected_losing(|i, nth| [2, 7, 15].contains(&i) && nth == 0);
    let (done, sent) = transfer(&mut sim, c, s, 30 * MSS);
    assert_eq!(resent(&sent), [(2, ms(2)), (7, ms(2)), (15, ms(2))]);
    assert_eq!(done, Some(ms(3)));
}

/// The segment before the one carrying the FIN is lost. smoltcp's SACK block for the FIN
/// segment covers its data and not its FIN, and smoltcp forgets a FIN that arrives out of
/// order: RACK must still take the block as the FIN segment's delivery and resend the
/// hole at once (it used to wait for the 200 ms timeout), and the FIN, which the
/// cumulative ACK then stops short of, goes again right away.
#[test]
fn a_hole_before_the_fin_segment_is_resent_at_once_and_the_forgotten_fin_after_it() {
    let (mut sim, c, s) = connected_losing(|i, nth| i == 3 && nth == 0);
    let start = sim.now();
    let data: Vec<u8> = (0..5 * MSS).map(|i| (i % 251) as u8).collect();
    assert_eq!(sim.nodes[CLIENT].engine.send(c, &data, false), Ok(data.len()));
    sim.nodes[CLIENT].engine.shutdown(c, Shutdown::Write).unwrap();
    let mut got = Vec::new();
    let mut eof = None;
    sim.run_until(start + secs(5), |now, nodes| {
        let mut buf = [0; 4096];
        loop {
            match nodes[SERVER].engine.recv(s, &mut buf) {
                Ok(0) => {
                    eof.get_or_insert(now);
                    break;
                }
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        eof.is_some()
    });
    assert_eq!(got, data);
    let client: Vec<Seg> =
        segments(&mut sim).into_iter().filter(|s| s.from == CLIENT && (s.len > 0 || s.fin)).collect();
    let fin_sends: Vec<Duration> = client.iter().filter(|s| s.fin).map(|s| s.at - start).collect();
    assert_eq!(fin_sends.len(), 2, "the FIN goes twice: {fin_sends:?}");
    assert!(eof.is_some_and(|at| at - start <= ms(10)), "end of stream within a few round trips, not 200 ms: {eof:?}");
}

/// A segment overtaken by the one after it arrives 0.1 ms late: one SACKed segment is
/// not enough to call it lost at once, and RACK's reordering window (a quarter of the
/// RTT) gives its ACK time to come. Nothing is resent.
#[test]
fn reordering_without_loss_resends_nothing() {
    let mut sim = network(|_| {});
    let l = listen(&mut sim, SERVER, 1);
    let (c, s) = establish(&mut sim, l);
    segments(&mut sim);
    let held = hold_back_client_data_segment(&mut sim, 4);
    let start = sim.now();
    let data: Vec<u8> = (0..5 * MSS).map(|i| (i % 251) as u8).collect();
    assert_eq!(sim.nodes[CLIENT].engine.send(c, &data, false), Ok(data.len()));
    sim.run_to(start + ms(1));
    let late = held.borrow_mut().take().expect("the fourth segment was held back");
    sim.link.inject(start + ms(1) + Duration::from_micros(100), SERVER, late);
    run_for(&mut sim, ms(50));
    assert_eq!(drain(&mut sim, SERVER, s), data);
    let sent = data_from(&segments(&mut sim), CLIENT);
    assert_eq!(sent.len(), 5, "five segments, none resent: {sent:?}");
}

/// The peer sends "abc" acknowledging nothing new, receives ustack's data, then sends
/// "def" acknowledging it; the network swaps the two. "def" arrives first (held out of
/// order, SND.UNA advances), then "abc", whose ACK is now older than SND.UNA. RFC 9293
/// §3.10.7.4 and Linux take its data (the ACK is merely old); smoltcp 0.14 drops the
/// whole segment as a "duplicate ACK", and the data waits for the peer's retransmission.
/// ustack's demux gives smoltcp the segment with ACK = SND.UNA, so both arrive at once.
#[test]
fn data_whose_ack_is_older_than_snd_una_is_delivered_at_once() {
    let mut sim = alone(SERVER);
    let (s, isn) = handshake(&mut sim, 4000);
    assert_eq!(sim.nodes[LONE].engine.send(s, b"0123456789", false), Ok(10));
    run_for(&mut sim, ms(1));
    segments(&mut sim);
    out(4000, 1004).with_ack(isn.wrapping_add(11)).send(&mut sim, b"def");
    run_for(&mut sim, ms(1));
    assert_eq!(sim.nodes[LONE].engine.recv(s, &mut [0; 8]), Err(Errno::EAGAIN), "\"def\" waits for \"abc\"");
    out(4000, 1001).with_ack(isn.wrapping_add(1)).send(&mut sim, b"abc");
    run_for(&mut sim, ms(1));
    assert_eq!(drain(&mut sim, LONE, s), b"abcdef");
    let acks: Vec<u32> = segments(&mut sim).iter().map(|s| s.ack_no).collect();
    assert_eq!(acks.last(), Some(&1007), "everything acknowledged: {acks:?}");
    // An acknowledgment older than anything ever in flight is not one a reordered segment
    // can carry: smoltcp gets it as it is, and drops it.
    out(4000, 1007).with_ack(isn.wrapping_sub(100_000)).send(&mut sim, b"ghi");
    run_for(&mut sim, ms(1));
    assert_eq!(sim.nodes[LONE].engine.recv(s, &mut [0; 8]), Err(Errno::EAGAIN));
}

// ---- IP reassembly ----

/// Fragment `from..to` of the IP payload of a 3000-byte echo request (ICMP id 1, `seq`)
/// from 10.0.0.1 to the server, identification `id`.
fn ping_fragment(seq: u16, id: u16, from: usize, to: usize) -> Vec<u8> {
    let mut whole = Vec::new();
    PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .icmpv4_echo_request(1, seq)
        .write(&mut whole, &[7; 3000])
        .unwrap();
    let body = &whole[20..];
    let mut packet = whole[..20].to_vec();
    packet.extend_from_slice(&body[from..to]);
    let mut ip = smoltcp::wire::Ipv4Packet::new_unchecked(&mut packet[..]);
    ip.set_total_len((20 + to - from) as u16);
    ip.set_ident(id);
    ip.set_frag_offset(from as u16);
    ip.set_more_frags(to < body.len());
    ip.fill_checksum();
    packet
}

/// A datagram has 30 s from its first fragment to arrive whole (Linux's `ipfrag_time`):
/// one whose last fragment comes just before is answered; one whose last fragment comes
/// at 30 s is forgotten, and that fragment waits alone until it too is forgotten, 30 s
/// later. Nothing is held after.
#[test]
fn a_datagram_has_30_s_from_its_first_fragment_to_arrive_whole() {
    let mut sim = alone(SERVER);
    let pieces = [(0, 1480), (1480, 2960), (2960, 3008)];
    let held = |sim: &Simulation| sim.nodes[LONE].engine.reassembly();
    for &(from, to) in &pieces[..2] {
        sim.inject(LONE, ping_fragment(1, 100, from, to));
    }
    run_for(&mut sim, secs(30) - ms(1));
    sim.inject(LONE, ping_fragment(1, 100, pieces[2].0, pieces[2].1));
    run_for(&mut sim, ms(1));
    let (counters, bytes, datagrams) = held(&sim);
    assert_eq!((counters.reassembled, counters.timed_out, bytes, datagrams), (1, 0, 0, 0));
    assert_eq!(sim.nodes[LONE].engine.demux_counters().ping, 1, "answered");

    let start = sim.now();
    for &(from, to) in &pieces[..2] {
        sim.inject(LONE, ping_fragment(2, 101, from, to));
    }
    sim.run_to(start + secs(30));
    sim.inject(LONE, ping_fragment(2, 101, pieces[2].0, pieces[2].1));
    run_for(&mut sim, ms(1));
    let (counters, _, datagrams) = held(&sim);
    assert_eq!((counters.reassembled, counters.timed_out, datagrams), (1, 1, 1), "the last fragment waits alone");
    // The engine forgets expired datagrams at its next poll (or fragment), whenever that is.
    sim.run_to(start + secs(60) + ms(1));
    let now = sim.now();
    sim.nodes[LONE].engine.poll(now);
    let (counters, bytes, datagrams) = held(&sim);
    assert_eq!((counters.timed_out, bytes, datagrams), (2, 0, 0));
    assert_eq!(sim.nodes[LONE].engine.demux_counters().ping, 1, "the second request was never whole");
}

/// An ICMP "host unreachable" (from a router, here 10.0.0.254) quoting a connect()'s SYN
/// ends the connect() at once with EHOSTUNREACH, as Linux's `tcp_v4_err` does in
/// SYN-SENT; smoltcp alone ignores it and resends the SYN until the connect timeout. One
/// that quotes another sequence number (not a SYN of ours) is ignored.
#[test]
fn an_icmp_host_unreachable_about_the_syn_fails_the_connect_with_ehostunreach() {
    let mut sim = alone(CLIENT);
    let c = connect(&mut sim);
    run_for(&mut sim, ms(1));
    let syn = sim.take_crossings().into_iter().next().expect("the SYN").packet;
    let unreachable = |quote: &[u8]| {
        let mut icmp = vec![3, 1, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&quote[..28]);
        let sum = icmp.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]))).sum::<u32>();
        let sum = (sum & 0xffff) + (sum >> 16);
        icmp[2..4].copy_from_slice(&(!((sum & 0xffff) + (sum >> 16)) as u16).to_be_bytes());
        let mut frame = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 254], [10, 0, 0, 1], 64).write(&mut frame, 1.into(), &icmp).unwrap();
        frame
    };
    let mut other_seq = syn.clone();
    other_seq[24] ^= 0x80;
    sim.inject(LONE, unreachable(&other_seq));
    run_for(&mut sim, ms(1));
    assert_eq!(sim.nodes[LONE].engine.connect_outcome(c), Err(Errno::EINPROGRESS), "not about our SYN");
    sim.inject(LONE, unreachable(&syn));
    run_for(&mut sim, ms(1));
    let seen: Vec<String> = sim.nodes[LONE].engine.demux_events().map(|e| e.to_string()).collect();
    assert_eq!(sim.nodes[LONE].engine.connect_outcome(c), Err(Errno::EHOSTUNREACH), "{seen:?}");
}
