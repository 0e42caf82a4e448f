//! Arbitrary frames into a live ustack stack, which must keep working.
//!
//! One stack per process (10.0.0.2, fd00::2), on one end of an in-memory wire, reused by
//! every input — as a long-running stack would meet a stream of junk. It has a TCP
//! listener on port 7 and a UDP socket on port 7. Each input is split into frames (a
//! control byte and a big-endian u16 length before each); the control byte may ask the
//! harness to address the frame from 10.0.0.1 / fd00::1 to the stack and to fix its
//! checksums, so mutations reach the demux and smoltcp's TCP and UDP code instead of
//! dying at a checksum. After the frames, the stack must still
//!
//! - answer a ping (which also proves it handled every frame before it),
//! - deliver a UDP datagram to the bound socket,
//! - answer a SYN to the listener with a SYN-ACK (unless junk filled its SYN queue),
//! - keep its demux history within its bound.
//!
//! A panic anywhere, in the stack thread too, aborts the process: libFuzzer reports it.

#![no_main]

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use ustack::Cidr;
use ustack::device::{Link, Wire, WireEnd};
use ustack::{Stack, StackConfig, TcpListener, UdpSocket};

const PORT: u16 = 7;
/// Longest wait for the stack's answer; a stack that is merely slow answers in well
/// under a millisecond.
const PATIENCE: Duration = Duration::from_secs(5);
const MAX_FRAMES: usize = 32;
/// Where the SYN probes come from.
const PROBE_FROM: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 3));

struct Harness {
    stack: Stack,
    wire: WireEnd,
    listener: TcpListener,
    udp: UdpSocket,
    /// Probe counters, so each probe is distinguishable from earlier ones.
    seq: u16,
}

fn harness() -> &'static Mutex<Harness> {
    static HARNESS: OnceLock<Mutex<Harness>> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let (raw, end) = Wire::pair(1500).expect("wire");
        let config = StackConfig {
            addrs: vec![Cidr::from_str("10.0.0.2/24").unwrap(), Cidr::from_str("fd00::2/64").unwrap()],
            ..StackConfig::default()
        };
        let stack = Stack::new(end, config).expect("stack");
        let listener = TcpListener::bind_with_backlog(&stack, addr("0.0.0.0", PORT), 4096).expect("listen");
        listener.set_nonblocking(true).expect("nonblocking");
        let udp = UdpSocket::bind(&stack, addr("0.0.0.0", PORT)).expect("udp");
        udp.set_nonblocking(true).expect("nonblocking");
        Mutex::new(Harness { stack, wire: raw, listener, udp, seq: 0 })
    })
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

// ---- Frames from the input ----

/// Control byte bits.
const ADDRESS: u8 = 1;
const CHECKSUM: u8 = 2;

fn frames(mut data: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while data.len() >= 3 && out.len() < MAX_FRAMES {
        let control = data[0];
        let len = usize::from(u16::from_be_bytes([data[1], data[2]])).min(data.len() - 3);
        out.push((control, data[3..3 + len].to_vec()));
        data = &data[3 + len..];
    }
    out
}

fn sum16(bytes: &[u8], mut sum: u32) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Makes `frame` from 10.0.0.1 (fd00::1) to the stack, and/or fixes its checksums, as
/// far as its (maybe lying) header allows.
fn doctor(control: u8, frame: &mut [u8]) {
    match frame.first().map(|b| b >> 4) {
        Some(4) if frame.len() >= 20 => {
            let ihl = usize::from(frame[0] & 0x0f) * 4;
            if control & ADDRESS != 0 {
                frame[12..16].copy_from_slice(&[10, 0, 0, 1]);
                frame[16..20].copy_from_slice(&[10, 0, 0, 2]);
            }
            if control & CHECKSUM == 0 || ihl < 20 || ihl > frame.len() {
                return;
            }
            frame[10..12].fill(0);
            let c = fold(sum16(&frame[..ihl], 0));
            frame[10..12].copy_from_slice(&c.to_be_bytes());
            let total = usize::from(u16::from_be_bytes([frame[2], frame[3]])).clamp(ihl, frame.len());
            let proto = frame[9];
            let mut pseudo = sum16(&frame[12..20], 0);
            pseudo += u32::from(proto) + (total - ihl) as u32;
            fix_transport(proto, &mut frame[ihl..total], pseudo, false);
        }
        Some(6) if frame.len() >= 40 => {
            if control & ADDRESS != 0 {
                let src: std::net::Ipv6Addr = "fd00::1".parse().unwrap();
                let dst: std::net::Ipv6Addr = "fd00::2".parse().unwrap();
                frame[8..24].copy_from_slice(&src.octets());
                frame[24..40].copy_from_slice(&dst.octets());
            }
            if control & CHECKSUM == 0 {
                return;
            }
            let total = (40 + usize::from(u16::from_be_bytes([frame[4], frame[5]]))).min(frame.len());
            let proto = frame[6];
            let mut pseudo = sum16(&frame[8..40], 0);
            pseudo += u32::from(proto) + (total - 40) as u32;
            fix_transport(proto, &mut frame[40..total], pseudo, true);
        }
        _ => {}
    }
}

fn fix_transport(proto: u8, segment: &mut [u8], pseudo: u32, v6: bool) {
    let at = match proto {
        6 => 16,
        17 => 6,
        1 if !v6 => 2,
        58 if v6 => 2,
        _ => return,
    };
    if segment.len() < at + 2 {
        return;
    }
    segment[at..at + 2].fill(0);
    // ICMPv4 has no pseudo-header.
    let start = if proto == 1 { 0 } else { pseudo };
    let c = fold(sum16(segment, start));
    segment[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

// ---- Probes ----

/// An IPv4 packet from 10.0.0.`from` to the stack.
fn ipv4(from: u8, proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut p =
        vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, proto, 0, 0, 10, 0, 0, from, 10, 0, 0, 2];
    p.extend_from_slice(payload);
    doctor(CHECKSUM, &mut p);
    p
}

fn ping(seq: u16) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0, 0x7e, 0x57];
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(b"fuzz");
    ipv4(1, 1, &icmp)
}

fn udp(from: u16, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut u = Vec::new();
    u.extend_from_slice(&from.to_be_bytes());
    u.extend_from_slice(&PORT.to_be_bytes());
    u.extend_from_slice(&(len as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    ipv4(1, 17, &u)
}

fn tcp(from: u16, seq: u32, flags: u8) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&from.to_be_bytes());
    t.extend_from_slice(&PORT.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    // From 10.0.0.3, which the frames from the input do not use (ADDRESS makes them
    // 10.0.0.1), so a probe never lands in a connection the junk opened.
    ipv4(3, 6, &t)
}

/// Prints what the stack knows, for a failure's report.
fn dump(stack: &Stack) {
    eprintln!("stack error: {:?}", stack.error());
    eprintln!("demux table: {:#?}", stack.demux_table());
    for event in stack.demux_events().iter().rev().take(40).rev() {
        eprintln!("  {event}");
    }
}

/// Waits for a frame from the stack that `want` accepts, dropping others; false if
/// none came within [`PATIENCE`].
fn wait_for(wire: &WireEnd, want: impl Fn(&[u8]) -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    loop {
        while let Some(frame) = wire.recv_raw() {
            if want(&frame) {
                return true;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        // Sleep on the wire's eventfd until the stack sends something.
        let mut fds = [PollFd::new(wire.wait_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::try_from(left.min(Duration::from_secs(1))).unwrap_or(PollTimeout::MAX));
    }
}

fn is_echo_reply(frame: &[u8], seq: u16) -> bool {
    frame.len() >= 28 && frame[0] == 0x45 && frame[9] == 1 && frame[20] == 0 && frame[26..28] == seq.to_be_bytes()
}

fn is_syn_ack_to(frame: &[u8], port: u16) -> bool {
    frame.len() >= 40
        && frame[0] == 0x45
        && frame[9] == 6
        && frame[16..20] == [10, 0, 0, 3]
        && frame[22..24] == port.to_be_bytes()
        && frame[33] & 0x12 == 0x12
}

fuzz_target!(|data: &[u8]| {
    let mut h = harness().lock().unwrap_or_else(|p| p.into_inner());
    for (control, mut frame) in frames(data) {
        doctor(control, &mut frame);
        h.wire.send_raw(&frame);
    }
    h.seq = h.seq.wrapping_add(1);
    let seq = h.seq;

    // The stack handles frames in order: its echo reply means it got through the junk.
    h.wire.send_raw(&ping(seq));
    if !wait_for(&h.wire, |f| is_echo_reply(f, seq)) {
        dump(&h.stack);
        panic!("the stack stopped answering: no echo reply {seq} within {PATIENCE:?}");
    }

    // A datagram reaches the bound socket (junk may have queued datagrams before it).
    h.wire.send_raw(&udp(40000, &seq.to_be_bytes()));
    let deadline = Instant::now() + PATIENCE;
    let mut buf = [0u8; 2048];
    loop {
        match h.udp.recv_from(&mut buf) {
            Ok((n, _)) if buf[..n] == seq.to_be_bytes() => break,
            Ok(_) => {}
            Err(_) => {
                assert!(Instant::now() < deadline, "UDP datagram {seq} never reached the socket");
                std::thread::yield_now();
            }
        }
    }

    // A SYN from a fresh port gets a SYN-ACK, unless junk SYNs filled the SYN queue.
    // A RST frees the half-open connection.
    let (syn_queue, _, _) = h.listener.socket().listen_queues().unwrap_or((0, 0, 0));
    if syn_queue < 4000 {
        // A port no connection from 10.0.0.3 uses: the fuzzer learns that address from
        // the harness's comparisons, and a SYN into a connection of its own making gets no
        // SYN-ACK, rightly.
        let taken: Vec<u16> = h
            .stack
            .demux_table()
            .rows
            .iter()
            .filter_map(|r| r.remote.filter(|a| a.ip() == PROBE_FROM).map(|a| a.port()))
            .collect();
        let from =
            (0..64u16).map(|i| 1024 + (seq.wrapping_add(i) % 32768)).find(|p| !taken.contains(p)).unwrap_or(1024);
        h.wire.send_raw(&tcp(from, 1000, 0x02));
        if !wait_for(&h.wire, |f| is_syn_ack_to(f, from)) {
            dump(&h.stack);
            panic!("the stack stopped answering: no SYN-ACK to port {from} within {PATIENCE:?}");
        }
        h.wire.send_raw(&tcp(from, 1001, 0x04));
    }
    // Drain what accept() has (junk can complete handshakes) so the queue stays small.
    while h.listener.accept().is_ok() {}

    assert!(h.stack.demux_events().len() <= ustack::engine::demux::HISTORY);
});
