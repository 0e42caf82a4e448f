//! Congestion control (engine/congestion.rs) on the simulator's virtual clock: the window
//! in slow start, its cut on a loss (β = 0.7 for CUBIC, ½ for Reno), one segment after a
//! retransmission timeout, and no cut when the path only reorders. What the engine
//! reports (`Engine::congestion_info`, Linux's `TCP_INFO` figures) is checked against what
//! crossed the link.

use smoltcp::time::Duration;
use ustack::engine::{Congestion, SockId};
use ustack::sim::Simulation;

mod two_nodes;
use two_nodes::*;

const MSS: u32 = 1460;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A connection under `congestion` with 4 MiB socket buffers (so that only the congestion
/// window limits the sender), established, the handshake's segments taken.
fn connected(congestion: Congestion) -> (Simulation, SockId, SockId) {
    connected_with(congestion, 4 << 20)
}

/// A connection under `congestion` with socket buffers of `buffer` bytes.
fn connected_with(congestion: Congestion, buffer: usize) -> (Simulation, SockId, SockId) {
    let mut sim = network(|c| {
        c.congestion = congestion;
        c.tcp_buffer = buffer;
    });
    let l = listen_with(&mut sim, SERVER, 1, |_, _| {});
    let (c, s) = establish_with(&mut sim, l, |_, _| {});
    segments(&mut sim);
    (sim, c, s)
}

#[test]
fn slow_start_sends_ten_segments_first_and_grows_by_what_each_ack_delivers() {
    let (mut sim, c, s) = connected(Congestion::Cubic);
    let info = sim.nodes[CLIENT].engine.congestion_info(c).expect("CUBIC is on by default");
    assert_eq!((info.cwnd, info.ssthresh, info.mss), (10 * MSS, u32::MAX, MSS));
    transfer(&mut sim, (c, s), 300 * MSS as usize, |_| {});
    let data: Vec<Seg> = segments(&mut sim).into_iter().filter(|s| s.from == CLIENT && s.len > 0).collect();
    // Segments sent in each round trip (2 ms): the initial window of 10, then twice the
    // window every round trip, as each segment acknowledged lets two go.
    let start = data[0].at;
    let mut rounds = [0; 6];
    for seg in &data {
        let round = ((seg.at - start).total_micros() / 2000) as usize;
        if round < rounds.len() {
            rounds[round] += 1;
        }
    }
    assert_eq!(rounds[..5], [10, 20, 40, 80, 150], "the last round sends what is left");
    let info = sim.nodes[CLIENT].engine.congestion_info(c).unwrap();
    assert!(info.cwnd >= 160 * MSS, "no loss: the window doubled every round trip: {info:?}");
    assert_eq!(info.reductions, 0);
}

/// One segment lost in the middle of a window: one cut, to β times the window it was
/// found in — 0.7 for CUBIC (RFC 9438), ½ for Reno (RFC 5681). The send buffer (64 KiB)
/// keeps the window from growing before the loss (it is no longer what limits the
/// sender: Linux's `tcp_is_cwnd_limited`), so the window it was found in is the last
/// one seen.
#[test]
fn a_loss_cuts_the_window_once_to_seven_tenths_with_cubic_and_half_with_reno() {
    for (congestion, beta) in [(Congestion::Cubic, 0.7), (Congestion::Reno, 0.5)] {
        let (mut sim, c, s) = connected_with(congestion, 64 << 10);
        let mut data_segments = 0;
        sim.link.lose_if(move |_, from, p| {
            let data = from == CLIENT && p.len() > 60;
            data_segments += usize::from(data);
            data && data_segments == 100
        });
        let mut before = None;
        let mut after = None;
        transfer(&mut sim, (c, s), 400 * MSS as usize, |sim| {
            let info = sim.nodes[CLIENT].engine.congestion_info(c).unwrap();
            if info.reductions == 0 {
                before = Some(info);
            } else if after.is_none() {
                after = Some(info);
            }
        });
        let (before, after) = (before.unwrap(), after.expect("the loss was noticed"));
        assert_eq!(after.ssthresh, (f64::from(before.cwnd) * beta) as u32, "{congestion}: {before:?} → {after:?}");
        let info = sim.nodes[CLIENT].engine.congestion_info(c).unwrap();
        assert_eq!((info.reductions, info.timeouts), (1, 0), "{congestion}");
        assert_eq!(info.ssthresh, after.ssthresh, "{congestion}: one cut for one loss");
        assert!(info.cwnd >= info.ssthresh, "{congestion}: grows again after recovery: {info:?}");
    }
}

/// A 300 ms outage both ways in the middle of a transfer: the retransmission timeout
/// leaves a window of one segment (Linux's loss state), and slow start takes it back up.
#[test]
fn a_retransmission_timeout_leaves_one_segment_then_slow_start() {
    let (mut sim, c, s) = connected(Congestion::Cubic);
    let (mut outage, mut healed) = (None, None);
    let mut data_segments = 0;
    let mut cut = None;
    let cell = std::rc::Rc::new(std::cell::Cell::new(None));
    let window = cell.clone();
    sim.link.lose_if(move |now, from, p| {
        data_segments += usize::from(from == CLIENT && p.len() > 60);
        if data_segments == 50 && outage.is_none() {
            outage = Some(now);
            healed = Some(now + ms(300));
            window.set(healed);
        }
        healed.is_some_and(|h| now < h)
    });
    transfer(&mut sim, (c, s), 200 * MSS as usize, |sim| {
        let info = sim.nodes[CLIENT].engine.congestion_info(c).unwrap();
        if info.timeouts == 1 && cut.is_none() {
            cut = Some(info);
        }
    });
    let cut = cut.expect("a timeout");
    assert_eq!(cut.cwnd, MSS, "{cut:?}");
    assert!(cell.get().is_some());
    let info = sim.nodes[CLIENT].engine.congestion_info(c).unwrap();
    assert!(info.cwnd > 4 * MSS, "slow start after the outage: {info:?}");
    assert_eq!(info.reductions, 0, "a timeout is not also a fast-recovery cut");
}

/// A segment overtaken by the one after it, arriving 0.1 ms late: no loss, no cut, and
/// nothing resent. (Overtaken by three or more, a segment is taken for lost at once by
/// ustack as by Linux — RACK's DupThresh rule while no reordering was seen — and Linux
/// then undoes the cut when a D-SACK shows the retransmission was needless, which ustack
/// does not: docs/linux-differences.md.)
#[test]
fn reordering_without_loss_does_not_cut_the_window() {
    let (mut sim, c, s) = connected(Congestion::Cubic);
    let held = hold_back_client_data_segment(&mut sim, 4);
    let start = sim.now();
    let mut injected = false;
    transfer(&mut sim, (c, s), 5 * MSS as usize, |sim| {
        if !injected && sim.now() >= start + ms(1) {
            let late = held.borrow_mut().take().expect("the fourth segment was held back");
            sim.link.inject(sim.now() + Duration::from_micros(100), SERVER, late);
            injected = true;
        }
    });
    let info = sim.nodes[CLIENT].engine.congestion_info(c).unwrap();
    assert_eq!((info.reductions, info.timeouts), (0, 0), "{info:?}");
    assert_eq!(info.cwnd, 10 * MSS, "{info:?}");
    let data: Vec<Seg> = segments(&mut sim).into_iter().filter(|s| s.from == CLIENT && s.len > 0).collect();
    assert_eq!(data.len(), 5, "nothing resent");
}
