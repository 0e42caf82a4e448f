//! Buffer autotuning on the simulator's virtual clock. The receive window
//! (engine/rcv_window.rs): a receiver that keeps up grows its window from the 64 KiB it
//! starts with, and a transfer then runs many times faster than with a fixed 64 KiB
//! (SO_RCVBUF); a receiver that does not read never lets its peer park more than the
//! starting window; data a peer sends beyond the window offered is refused and answered
//! with an ACK. The send buffer (engine/snd_buffer.rs): a sender's buffer grows with its
//! congestion window (with the peer's window, without ustack's congestion control), and a
//! transfer runs many times faster than with a fixed 64 KiB (SO_SNDBUF). Then both against the Linux kernel over a real TUN ([`over_a_tun`]).

use etherparse::{PacketBuilder, TcpOptionElement};
use smoltcp::time::Duration;
use ustack::engine::SockId;
use ustack::sim::{LinkConfig, Simulation};

mod two_nodes;
use two_nodes::*;

const KIB: usize = 1024;

/// Bytes waiting to be read on `s` (peeked, not taken).
fn unread(engine: &mut ustack::Engine, s: SockId) -> usize {
    let mut buf = vec![0; 8 << 20];
    engine.recv_msg(s, &mut buf, true).map_or(0, |r| r.len)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A connection from a client with 4 MiB send buffers (so that only the server's window
/// limits the transfer) to a server with the default configuration, `setup` applied to
/// the server's listener; the handshake's segments taken.
fn connected(setup: impl FnOnce(&mut ustack::Engine, SockId)) -> (Simulation, SockId, SockId) {
    let client = config(CLIENT).addrs;
    let mut sim = network(|c| {
        if c.addrs == client {
            c.tcp_buffer = 4 << 20;
        }
    });
    let l = listen_with(&mut sim, SERVER, 1, setup);
    let (c, s) = establish_with(&mut sim, l, |_, _| {});
    segments(&mut sim);
    (sim, c, s)
}

/// Sends `len` bytes from the client while the server reads as fast as they come; returns
/// how long it took and the server's largest SO_RCVBUF on the way.
fn timed_transfer(sim: &mut Simulation, (c, s): (SockId, SockId), len: usize) -> (Duration, usize) {
    let mut rcvbuf = 0;
    let took = transfer(sim, (c, s), len, |sim| {
        rcvbuf = rcvbuf.max(sim.nodes[SERVER].engine.recv_buffer_size(s).unwrap());
    });
    (took, rcvbuf)
}

#[test]
fn a_receiver_that_keeps_up_grows_its_window_and_the_transfer_runs_many_times_faster() {
    let len = 16 << 20;
    let (mut sim, c, s) = connected(|_, _| {});
    assert_eq!(sim.nodes[SERVER].engine.recv_buffer_size(s).unwrap(), 2 * 64 * KIB, "it starts at 64 KiB");
    let (autotuned, rcvbuf) = timed_transfer(&mut sim, (c, s), len);

    let (mut sim, c, s) = connected(|engine, l| engine.set_recv_buffer_size(l, 64 * KIB).unwrap());
    let (fixed, fixed_rcvbuf) = timed_transfer(&mut sim, (c, s), len);
    eprintln!("16 MiB over a 2 ms round trip: {autotuned} autotuned, {fixed} at a fixed 64 KiB");

    assert!(rcvbuf >= 2 * (2 << 20), "the window grew to {} bytes only", rcvbuf / 2);
    assert_eq!(fixed_rcvbuf, 2 * 64 * KIB, "SO_RCVBUF fixes the window");
    // A 64 KiB window over a 2 ms round trip moves 32 MiB/s: 16 MiB take ~500 ms.
    assert!(fixed >= ms(450), "{fixed}");
    assert!(autotuned * 5 < fixed, "autotuned {autotuned}, fixed at 64 KiB {fixed}");
}

#[test]
fn a_receiver_that_does_not_read_holds_no_more_than_its_starting_window() {
    let (mut sim, c, s) = connected(|_, _| {});
    let data = vec![7u8; 1 << 20];
    let mut sent = 0;
    let until = sim.now() + Duration::from_secs(2);
    let ended = sim.run_until(until, |_, nodes| {
        if let Ok(n) = nodes[CLIENT].engine.send(c, &data[sent..], false) {
            sent += n;
        }
        false
    });
    assert!(ended.is_none(), "nothing ends the wait: the server does not read");
    // Filled to the last of its 128-byte window units (scale 7, for a 6 MiB buffer).
    let held = unread(&mut sim.nodes[SERVER].engine, s);
    assert!((64 * KIB - 127..=64 * KIB).contains(&held), "the peer filled the starting window, and no more: {held}");
    let windows: Vec<u16> = segments(&mut sim).iter().filter(|s| s.from == SERVER).map(|s| s.window).collect();
    assert!(windows.iter().all(|&w| w <= 512), "never more than 64 KiB offered: {windows:?}");
    assert_eq!(sim.nodes[SERVER].engine.recv_buffer_size(s).unwrap(), 2 * 64 * KIB, "nothing read: no growth");
}

/// The server running alone with the default configuration, for a test that plays the
/// client: what it sends is in [`segments`].
fn alone() -> Simulation {
    let mut sim = Simulation::new(1, vec![("alone", config(SERVER))], LinkConfig::default(), 1500).unwrap();
    sim.keep_crossings(true);
    sim
}

/// A segment from 10.0.0.1:4000 to the server's [`PORT`], with window scaling (shift 7)
/// if it is a SYN.
fn client_segment(seq: u32, ack: Option<u32>, syn: bool, payload: &[u8]) -> Vec<u8> {
    let mut b = PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).tcp(4000, PORT, seq, 65535);
    if syn {
        b = b.syn().options(&[TcpOptionElement::MaximumSegmentSize(1460), TcpOptionElement::WindowScale(7)]).unwrap();
    }
    if let Some(ack) = ack {
        b = b.ack(ack);
    }
    let mut frame = Vec::new();
    b.write(&mut frame, payload).unwrap();
    frame
}

#[test]
fn data_beyond_the_window_offered_is_refused_and_answered_with_an_ack() {
    let mut sim = alone();
    let l = listen_with(&mut sim, 0, 1, |_, _| {});
    let isn = 1000u32;
    sim.inject(0, client_segment(isn, None, true, &[]));
    run_for(&mut sim, ms(1));
    let syn_ack = segments(&mut sim).into_iter().find(|s| s.syn && s.ack).expect("a SYN-ACK");
    assert_eq!(syn_ack.window, 65535, "a SYN's window is not scaled: 64 KiB at most");
    let ours = syn_ack.seq.wrapping_add(1);
    sim.inject(0, client_segment(isn + 1, Some(ours), false, &[]));
    run_for(&mut sim, ms(1));
    let (s, _) = sim.nodes[0].engine.accept(l).unwrap();

    // 1000 bytes ending 900 bytes beyond the 65535 offered.
    let beyond = isn + 1 + 65535 - 100;
    sim.inject(0, client_segment(beyond, Some(ours), false, &[1; 1000]));
    run_for(&mut sim, ms(1));
    let replies = segments(&mut sim);
    assert!(
        replies.iter().any(|r| r.ack && r.ack_no == isn + 1 && r.len == 0),
        "an ACK repeating RCV.NXT: {replies:?}"
    );
    sim.inject(0, client_segment(isn + 1, Some(ours), false, &[2; 1000]));
    run_for(&mut sim, ms(1));
    assert_eq!(unread(&mut sim.nodes[0].engine, s), 1000, "only the data within the window is taken");
    // Nor was the data beyond kept out of order: filling the gap up to it takes no more.
    let mut seq = isn + 1001;
    while seq != beyond {
        let len = (beyond - seq).min(1400);
        sim.inject(0, client_segment(seq, Some(ours), false, &vec![3; len as usize]));
        seq += len;
        run_for(&mut sim, ms(1));
    }
    assert_eq!(unread(&mut sim.nodes[0].engine, s), 65_435);
}

#[test]
fn a_sender_s_buffer_grows_with_its_congestion_window_and_the_transfer_runs_many_times_faster() {
    let len = 16 << 20;
    let connect = |setup: fn(&mut ustack::Engine, SockId)| {
        let mut sim = network(|_| {});
        let l = listen_with(&mut sim, SERVER, 1, |_, _| {});
        let (c, s) = establish_with(&mut sim, l, setup);
        (sim, c, s)
    };
    let (mut sim, c, s) = connect(|_, _| {});
    assert_eq!(sim.nodes[CLIENT].engine.send_buffer_size(c).unwrap(), 2 * 64 * KIB, "it starts at 64 KiB");
    let mut sndbuf = 0;
    let autotuned = transfer(&mut sim, (c, s), len, |sim| {
        sndbuf = sndbuf.max(sim.nodes[CLIENT].engine.send_buffer_size(c).unwrap());
    });
    let (mut sim, c, s) = connect(|engine, c| engine.set_send_buffer_size(c, 64 * 1024).unwrap());
    let fixed = transfer(&mut sim, (c, s), len, |_| {});
    eprintln!("16 MiB over a 2 ms round trip: {autotuned} with the send buffer autotuned, {fixed} at a fixed 64 KiB");
    assert!(sndbuf >= 2 * (1 << 20), "the send buffer grew to {} bytes only", sndbuf / 2);
    assert_eq!(sim.nodes[CLIENT].engine.send_buffer_size(c).unwrap(), 2 * 64 * KIB, "SO_SNDBUF fixes it");
    assert!(autotuned * 5 < fixed, "autotuned {autotuned}, fixed at 64 KiB {fixed}");
}

#[test]
fn without_ustack_s_congestion_control_a_sender_s_buffer_grows_with_the_peer_s_window() {
    // `--congestion none` (and smoltcp's own controllers): no congestion window to go by,
    // so the peer's window sets how far the buffer grows.
    let mut sim = network(|c| c.congestion = ustack::Congestion::None);
    let l = listen_with(&mut sim, SERVER, 1, |_, _| {});
    let (c, s) = establish_with(&mut sim, l, |_, _| {});
    assert_eq!(sim.nodes[CLIENT].engine.send_buffer_size(c).unwrap(), 2 * 64 * KIB, "it starts at 64 KiB");
    let mut sndbuf = 0;
    transfer(&mut sim, (c, s), 16 << 20, |sim| {
        sndbuf = sndbuf.max(sim.nodes[CLIENT].engine.send_buffer_size(c).unwrap());
    });
    assert!(sndbuf >= 2 * (1 << 20), "the send buffer grew to {} bytes only", sndbuf / 2);
}

/// Autotuning with the Linux kernel on the other side of a real TUN, in a namespace each
/// test makes: Linux's sender takes ustack's clamped, scaled window and its window updates,
/// and ustack's send buffer grows with a window the kernel's receiver grows.
mod over_a_tun {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener as KernelListener, TcpStream as KernelStream};
    use std::time::Duration;

    use ustack::{TcpListener, TcpStream};
    use ustack_testkit::lab::{KERNEL, USTACK, lab};
    use ustack_testkit::{addr, pattern};

    const PATIENCE: Duration = Duration::from_secs(10);
    /// Enough for either buffer to grow whatever the build: a debug build's is slow.
    const LEN: usize = 16 << 20;
    /// What growth the tests ask for: at least twice the 64 KiB start (they report it
    /// doubled, as Linux does). A release build reaches the 4 and 6 MiB maxima.
    const GROWN: usize = 2 * (128 << 10);

    #[test]
    fn a_kernel_sender_grows_ustack_s_receive_window_and_every_byte_arrives() {
        ustack::require_tun!();
        let lab = lab();
        let listener = TcpListener::bind(&lab.stack, addr("0.0.0.0", 9001)).unwrap();
        let data = pattern(LEN, 0x5bd1_e995);
        let sent = data.clone();
        let client = lab
            .ns
            .spawn(move || -> std::io::Result<()> {
                let mut stream = KernelStream::connect_timeout(&addr(USTACK, 9001), PATIENCE)?;
                stream.set_write_timeout(Some(PATIENCE))?;
                stream.write_all(&sent)?;
                stream.shutdown(Shutdown::Write)
            })
            .unwrap();
        let (stream, _) = listener.accept().unwrap();
        assert_eq!(stream.socket().recv_buffer_size().unwrap(), 2 * 64 * 1024, "it starts at 64 KiB");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut received = Vec::with_capacity(LEN);
        (&stream).read_to_end(&mut received).unwrap();
        client.join().unwrap().expect("the kernel client");
        assert!(received == data, "the bytes differ ({} of {} arrived)", received.len(), data.len());
        let rcvbuf = stream.socket().recv_buffer_size().unwrap();
        eprintln!("ustack's receive window grew to {} KiB", rcvbuf / 2048);
        assert!(rcvbuf >= GROWN, "the window grew to {} bytes only", rcvbuf / 2);
    }

    #[test]
    fn ustack_s_send_buffer_grows_sending_to_a_kernel_receiver() {
        ustack::require_tun!();
        let lab = lab();
        let (bound, wait_bound) = std::sync::mpsc::channel();
        let kernel = lab
            .ns
            .spawn(move || -> std::io::Result<Vec<u8>> {
                let listener = KernelListener::bind(addr(KERNEL, 9002))?;
                let _ = bound.send(());
                let (mut stream, _) = listener.accept()?;
                stream.set_read_timeout(Some(PATIENCE))?;
                let mut received = Vec::new();
                stream.read_to_end(&mut received)?;
                Ok(received)
            })
            .unwrap();
        wait_bound.recv_timeout(PATIENCE).expect("the kernel listens");
        let data = pattern(LEN, 0x85eb_ca6b);
        let stream = TcpStream::connect_timeout(&lab.stack, &addr(KERNEL, 9002), PATIENCE).unwrap();
        assert_eq!(stream.socket().send_buffer_size().unwrap(), 2 * 64 * 1024, "it starts at 64 KiB");
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
        (&stream).write_all(&data).unwrap();
        let sndbuf = stream.socket().send_buffer_size().unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let received = kernel.join().unwrap().unwrap();
        assert!(received == data, "the kernel received different bytes ({} of {})", received.len(), data.len());
        eprintln!("ustack's send buffer grew to {} KiB", sndbuf / 2048);
        assert!(sndbuf >= GROWN, "the send buffer grew to {} bytes only", sndbuf / 2);
    }
}
