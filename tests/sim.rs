//! The simulator on its virtual clock: runs that are the same every time, whatever they
//! cost in virtual time.

use std::time::Duration;

use ustack::sim::echo::{self, EchoConfig};
use ustack::sim::{Fate, LinkConfig};

fn lossy(seed: u64, bytes: usize, drop_pct: f64) -> EchoConfig {
    EchoConfig {
        seed,
        bytes,
        link: LinkConfig { drop_chance: drop_pct / 100.0, ..LinkConfig::default() },
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
    let config = EchoConfig {
        clients: 3,
        link: LinkConfig { corrupt_chance: 0.02, ..lossy(11, 0, 5.0).link },
        ..lossy(11, 300_000, 5.0)
    };
    let (first, first_report) = run(&config);
    let (second, second_report) = run(&config);
    assert!(first.len() > 100, "a run of {} packets", first.len());
    assert_eq!(first, second, "packet for packet, time for time");
    assert_eq!(first_report, second_report);
    let (other, _) = run(&EchoConfig { seed: 12, ..config });
    assert_ne!(first, other, "another seed, another run");
}

#[test]
fn two_mebibytes_through_five_percent_loss_come_back_intact() {
    let report = echo::run(&lossy(7, 2 * 1024 * 1024, 5.0), |_, _| {}).expect("the simulation runs");
    assert!(report.intact, "{report:?}");
    assert_eq!(report.bytes_echoed, 2 * 1024 * 1024);
    assert!(report.link.dropped > 100, "the link lost packets: {:?}", report.link);
    assert!(report.link.retransmissions >= report.link.dropped / 2, "lost data was sent again: {:?}", report.link);
    // Every connection closed, and the client's TIME-WAIT ran out, inside the run.
    assert!(report.client_connections.iter().all(|c| c.timeline.last().map(|(_, s)| s.as_str()) == Some("CLOSED")));
}

#[test]
fn a_full_backlog_and_a_slow_accept_still_serve_every_client() {
    let config =
        EchoConfig { clients: 8, backlog: 1, accept_delay: Duration::from_millis(500), ..lossy(3, 80_000, 0.0) };
    let report = echo::run(&config, |_, _| {}).expect("the simulation runs");
    assert!(report.intact, "{report:?}");
    let demux = report.server_demux;
    assert!(demux.cookies_sent + demux.overflow_dropped > 0, "the SYN queue overflowed: {demux:?}");
    assert_eq!(report.server_connections.len(), 8, "each client was served once");
    // Accepted no faster than one per 500 ms: the last client's echo cannot be done
    // before 7 accept delays have passed.
    assert!(report.virtual_time >= Duration::from_millis(3500), "{:?}", report.virtual_time);
}
