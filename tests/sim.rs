//! The simulator on its virtual clock: runs that are the same every time, whatever they
//! cost in virtual time. The runs with loss and damage take their seed from `USTACK_SEED`
//! or draw one, and print it (tests/seed), so a failure can be replayed exactly.

mod seed;

use std::time::Duration;

use ustack::Congestion;
use ustack::sim::echo::{self, EchoConfig};
use ustack::sim::{Fate, LinkConfig};

fn lossy(seed: u64, bytes: usize, drop_pct: f64, corrupt_pct: f64) -> EchoConfig {
    EchoConfig {
        seed,
        bytes,
        link: LinkConfig {
            drop_chance: drop_pct / 100.0,
            corrupt_chance: corrupt_pct / 100.0,
            ..LinkConfig::default()
        },
        ..EchoConfig::default()
    }
}

/// A packet of a run: when (µs), who sent it, its bytes, and what the link did to it.
type Seen = (u64, usize, Vec<u8>, Fate);

/// Every packet of a run, and the report.
fn run(config: &EchoConfig) -> (Vec<Seen>, String) {
    let mut packets = Vec::new();
    let report = echo::run(config, |c, _| packets.push((c.at.total_micros() as u64, c.from, c.packet.clone(), c.fate)))
        .expect("the simulation runs");
    (packets, format!("{report:?}"))
}

#[test]
fn the_same_seed_gives_the_same_packets_and_report() {
    let seed = seed::seed();
    let config = EchoConfig { clients: 3, ..lossy(seed, 300_000, 5.0, 2.0) };
    let (first, first_report) = run(&config);
    let (second, second_report) = run(&config);
    assert!(first.len() > 100, "a run of {} packets", first.len());
    assert_eq!(first, second, "packet for packet, time for time");
    assert_eq!(first_report, second_report);
    let (other, _) = run(&EchoConfig { seed: seed::derived(seed, 1), ..config });
    assert_ne!(first, other, "another seed, another run");
}

#[test]
fn two_mebibytes_each_way_through_five_percent_loss_and_one_percent_damage_come_back_intact() {
    // Each byte goes to the echo server and back, the two directions at once.
    let report = echo::run(&lossy(seed::seed(), 2 * 1024 * 1024, 5.0, 1.0), |_, _| {}).expect("the simulation runs");
    assert!(report.intact, "{report:?}");
    assert_eq!(report.bytes_echoed, 2 * 1024 * 1024);
    assert!(report.link.dropped > 100, "the link lost packets: {:?}", report.link);
    assert!(report.link.corrupted > 20, "the link damaged packets: {:?}", report.link);
    assert!(report.link.retransmissions >= report.link.dropped / 2, "lost data was sent again: {:?}", report.link);
    // Every connection closed, and the client's TIME-WAIT ran out, inside the run.
    assert!(report.client_connections.iter().all(|c| c.timeline.last().map(|(_, s)| s.as_str()) == Some("CLOSED")));
}

#[test]
fn a_full_backlog_and_a_slow_accept_still_serve_every_client() {
    let config =
        EchoConfig { clients: 8, backlog: 1, accept_delay: Duration::from_millis(500), ..lossy(3, 80_000, 0.0, 0.0) };
    let report = echo::run(&config, |_, _| {}).expect("the simulation runs");
    assert!(report.intact, "{report:?}");
    let demux = report.server_demux;
    assert!(demux.cookies_sent + demux.overflow_dropped > 0, "the SYN queue overflowed: {demux:?}");
    assert_eq!(report.server_connections.len(), 8, "each client was served once");
    // Accepted no faster than one per 500 ms: the last client's echo cannot be done
    // before 7 accept delays have passed.
    assert!(report.virtual_time >= Duration::from_millis(3500), "{:?}", report.virtual_time);
}

#[test]
fn eight_connections_through_loss_and_damage_each_finish_their_exchange_and_close() {
    // Every handshake, transfer and close (FINs lost and resent included) under 5% loss
    // and 2% damage; each connection ends, on both stacks, in CLOSED.
    let config = EchoConfig { clients: 8, ..lossy(seed::seed(), 8 * 64 * 1024, 5.0, 2.0) };
    let report = echo::run(&config, |_, _| {}).expect("the simulation runs");
    assert!(report.intact && report.finished, "{report:?}");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    for info in report.client_connections.iter().chain(&report.server_connections) {
        assert_eq!(info.timeline.last().map(|(_, s)| s.as_str()), Some("CLOSED"), "{info:?}");
    }
    assert_eq!(report.server_connections.len(), 8);
}

/// With smoltcp's congestion control, a retransmission timeout leaves smoltcp one segment to send,
/// from a rewound SND.NXT; the peer's ACKs of what it had sent before used to be refused
/// by smoltcp (above SND.NXT), and its own bare ACKs, sent at the rewound SND.NXT, dropped
/// by the peer as out of window: both ends resent one segment per timeout, forever. These
/// five seeds each did (engine/send_front.rs).
#[test]
fn congestion_control_recovers_from_timeouts_instead_of_stalling() {
    for seed in 1..=5 {
        for congestion in [Congestion::Cubic, Congestion::Reno, Congestion::SmoltcpCubic, Congestion::SmoltcpReno] {
            let config = EchoConfig {
                congestion,
                time_limit: Duration::from_secs(600),
                link: LinkConfig { delay: Duration::from_millis(5), ..lossy(seed, 0, 5.0, 0.0).link },
                ..lossy(seed, 2 * 1024 * 1024, 5.0, 0.0)
            };
            let report = echo::run(&config, |_, _| {}).expect("the simulation runs");
            assert!(report.intact, "{congestion}, seed {seed}: {report:?}");
        }
    }
}
