//! Silly window syndrome avoidance on receive (RFC 1122 §4.2.3.3; Linux's
//! `__tcp_select_window`), on the simulator's virtual clock: a receiver whose buffer is
//! full and whose application reads a little at a time does not offer the little it
//! freed. It keeps its window's edge where it was until a useful amount is free — a
//! segment's worth, or half its buffer — so its peer sends a segment's worth at a time,
//! not one tiny segment for every read.

use etherparse::{SlicedPacket, TcpOptionElement, TransportSlice};
use smoltcp::time::Duration;
use ustack::engine::SockId;
use ustack::sim::Simulation;

mod two_nodes;
use two_nodes::*;

const KIB: usize = 1024;
/// The MSS both ends advertise (the simulator's MTU is 1500).
const MSS: u32 = 1460;
/// Reads of 100 bytes, one every 5 ms, for 2 s.
const READS: usize = 400;
const STEP: usize = 100;

/// The window scale the server's SYN-ACK announced.
fn server_window_scale(sim: &mut Simulation) -> u8 {
    sim.take_crossings()
        .iter()
        .filter(|c| c.from == SERVER)
        .find_map(|c| {
            let Some(TransportSlice::Tcp(t)) = SlicedPacket::from_ip(&c.packet).ok()?.transport else { return None };
            t.syn().then(|| {
                t.options_iterator()
                    .find_map(|o| match o {
                        Ok(TcpOptionElement::WindowScale(s)) => Some(s),
                        _ => None,
                    })
                    .unwrap_or(0)
            })
        })
        .expect("the server's SYN-ACK crossed")
}

/// What a slow reader made happen: the client's data segments and the server's segments.
struct SlowRead {
    client_data: Vec<usize>,
    server: Vec<Seg>,
    scale: u8,
}

/// A connection whose server, set up by `setup`, lets the client fill its window without
/// reading for a second; then reads [`STEP`] bytes every 5 ms, [`READS`] times.
fn slow_reader(setup: impl FnOnce(&mut ustack::Engine, SockId)) -> SlowRead {
    let mut sim = network(|_| {});
    let l = listen_with(&mut sim, SERVER, 1, setup);
    let (c, s) = establish_with(&mut sim, l, |_, _| {});
    let scale = server_window_scale(&mut sim);
    let data = vec![7u8; 4 << 20];
    let mut sent = 0;
    let until = sim.now() + Duration::from_secs(1);
    sim.run_until(until, |_, nodes| {
        if let Ok(n) = nodes[CLIENT].engine.send(c, &data[sent..], false) {
            sent += n;
        }
        false
    });
    segments(&mut sim);
    let mut buf = [0; STEP];
    for _ in 0..READS {
        assert_eq!(sim.nodes[SERVER].engine.recv(s, &mut buf).unwrap(), STEP, "the buffer holds more than a read");
        if let Ok(n) = sim.nodes[CLIENT].engine.send(c, &data[sent..], false) {
            sent += n;
        }
        run_for(&mut sim, Duration::from_millis(5));
    }
    let segs = segments(&mut sim);
    SlowRead {
        client_data: segs.iter().filter(|s| s.from == CLIENT && s.len > 0).map(|s| s.len).collect(),
        server: segs.into_iter().filter(|s| s.from == SERVER && s.ack).collect(),
        scale,
    }
}

/// The server's offers that moved its window's right edge forward while offering less
/// than a segment's worth: silly windows.
fn silly_offers(r: &SlowRead) -> Vec<(u32, u32)> {
    let mut edge: Option<u32> = None;
    let mut silly = Vec::new();
    for seg in &r.server {
        let window = u32::from(seg.window) << r.scale;
        let offered = seg.ack_no.wrapping_add(window);
        let advanced = edge.is_none_or(|e| (offered.wrapping_sub(e) as i32) > 0);
        if advanced && edge.is_some() && window < MSS {
            silly.push((seg.ack_no, window));
        }
        if advanced {
            edge = Some(offered);
        }
    }
    silly
}

fn check(r: &SlowRead) {
    eprintln!("client data segments: {:?}", r.client_data);
    assert!(!r.client_data.is_empty(), "the reads opened the window now and then");
    assert_eq!(silly_offers(r), Vec::new(), "windows of less than a segment that moved the edge (ack, window)");
    // Without the avoidance, every 100-byte read brought a 100-byte segment.
    assert!(r.client_data.len() * 4 < READS, "{} segments for {READS} reads of {STEP} bytes", r.client_data.len());
}

#[test]
fn an_autotuned_receiver_reading_100_bytes_at_a_time_offers_no_silly_window() {
    check(&slow_reader(|_, _| {}));
}

#[test]
fn a_receiver_with_a_fixed_buffer_reading_100_bytes_at_a_time_offers_no_silly_window() {
    check(&slow_reader(|e, l| e.set_recv_buffer_size(l, 64 * KIB).unwrap()));
}
