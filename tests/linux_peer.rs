//! The same crafted segments to the Linux kernel and to ustack, and their answers compared.
//!
//! The test plays a TCP peer at 10.7.0.2 segment by segment. The side under test is at
//! 10.7.0.1: either the kernel, behind a TUN in a namespace the test makes (the test
//! writes the TUN's frames and reads what the kernel routes back into it), or a ustack
//! engine on the virtual clock, alone in a simulation. Each scenario is one function run
//! against both; the kernel's outcome is asserted as what the RFCs say, and ustack's must
//! equal it. The kernel runs need root and a TUN (`require_tun!`); ustack's run anywhere.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener as KernelListener};
use std::sync::mpsc;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use smoltcp::time::{Duration, Instant};
use ustack::device::{Link, TunDevice};
use ustack::engine::{Domain, SockId, StackConfig, Type};
use ustack::sim::{LinkConfig, Simulation};
use ustack::sys::NetNs;
use ustack_testkit::lab::{LabNet, cidr};

/// The side under test.
const UNDER_TEST: [u8; 4] = [10, 7, 0, 1];
/// The peer the test plays.
const PEER: [u8; 4] = [10, 7, 0, 2];
const PORT: u16 = 80;
/// The side under test and the peer, over IPv6.
const UNDER_TEST6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfd00, 7, 0, 0, 0, 0, 0, 1);
const PEER6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfd00, 7, 0, 0, 0, 0, 0, 2);
/// How long an answer may take: real time for the kernel, virtual time for ustack.
const PATIENCE: StdDuration = StdDuration::from_secs(5);

/// A TCP segment the side under test sent.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    syn: bool,
    ack: bool,
    rst: bool,
    fin: bool,
    seq: u32,
    ack_no: u32,
    len: usize,
    /// The MSS option, if any.
    mss: Option<u16>,
    /// The peer's port it went to.
    to_port: u16,
    /// It carries a timestamps option (RFC 7323).
    timestamps: bool,
    /// Its window field.
    window: u16,
    /// The window scale option, if any.
    wscale: Option<u8>,
}

fn seen(packet: &[u8]) -> Option<Seen> {
    let sliced = SlicedPacket::from_ip(packet).ok()?;
    let Some(TransportSlice::Tcp(tcp)) = sliced.transport else { return None };
    let mss = tcp.options_iterator().find_map(|o| match o {
        Ok(etherparse::TcpOptionElement::MaximumSegmentSize(mss)) => Some(mss),
        _ => None,
    });
    let wscale = tcp.options_iterator().find_map(|o| match o {
        Ok(etherparse::TcpOptionElement::WindowScale(s)) => Some(s),
        _ => None,
    });
    let timestamps = tcp.options_iterator().any(|o| matches!(o, Ok(etherparse::TcpOptionElement::Timestamp(..))));
    Some(Seen {
        timestamps,
        syn: tcp.syn(),
        ack: tcp.ack(),
        rst: tcp.rst(),
        fin: tcp.fin(),
        seq: tcp.sequence_number(),
        ack_no: tcp.acknowledgment_number(),
        len: tcp.payload().len(),
        mss,
        to_port: tcp.destination_port(),
        window: tcp.window_size(),
        wscale,
    })
}

/// A segment from the peer (10.7.0.2:`from`) to the side under test's [`PORT`].
fn segment(from: u16, seq: u32, ack: Option<u32>, syn: bool, options: &[u8], payload: &[u8]) -> Vec<u8> {
    urgent_segment(from, seq, ack, syn, options, payload, None)
}

/// An acknowledgment from the peer offering `window`, with `payload` if any.
fn ack_with_window(from: u16, seq: u32, ack: u32, window: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ipv4(PEER, UNDER_TEST, 64)
        .tcp(from, PORT, seq, window)
        .ack(ack)
        .write(&mut frame, payload)
        .expect("a segment");
    frame
}

/// [`segment`], with URG set and the urgent pointer `urgent` if given.
fn urgent_segment(
    from: u16,
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    options: &[u8],
    payload: &[u8],
    urgent: Option<u16>,
) -> Vec<u8> {
    let mut b = PacketBuilder::ipv4(PEER, UNDER_TEST, 64).tcp(from, PORT, seq, 65535);
    if let Some(pointer) = urgent {
        b = b.urg(pointer);
    }
    if syn {
        b = b.syn();
    }
    if let Some(ack) = ack {
        b = b.ack(ack);
    }
    if !options.is_empty() {
        b = b.options_raw(options).expect("options of a length a TCP header can hold");
    }
    let mut frame = Vec::new();
    b.write(&mut frame, payload).expect("a segment");
    frame
}

/// What a scenario needs of the side under test.
trait UnderTest {
    /// Starts a listener on [`PORT`] whose connections are each sent `greeting` once
    /// accepted; the first one is then read from ([`UnderTest::read`]).
    fn serve(&mut self, greeting: &'static [u8]);
    /// Hands it a frame from the peer.
    fn send(&mut self, frame: Vec<u8>);
    /// The next segment it sends that `wanted` accepts, within [`PATIENCE`].
    fn expect(&mut self, wanted: &dyn Fn(&Seen) -> bool) -> Option<Seen>;
    /// What the accepted connection has read, once it has `n` bytes or [`PATIENCE`] passed.
    /// Until this is called, the application reads nothing: what arrives fills the
    /// connection's receive buffer.
    fn read(&mut self, n: usize) -> Vec<u8>;
    /// The next packet it sends that `wanted` picks (and says what of), within [`PATIENCE`].
    fn expect_packet(&mut self, wanted: &dyn Fn(&[u8]) -> Option<u16>) -> Option<u16>;
}

/// The kernel behind a TUN in a namespace of its own.
struct Kernel {
    tun: TunDevice,
    accepted: Option<mpsc::Receiver<std::net::TcpStream>>,
    // Last: the namespace goes once the TUN and the threads in it are gone.
    ns: NetNs,
}

impl Kernel {
    fn new() -> Kernel {
        let mut net = LabNet::ipv4(UNDER_TEST.into(), PEER.into());
        net.kernel.push(cidr(UNDER_TEST6, 64));
        // The test reads the kernel's segments as a peer on a wire would see them: the
        // kernel must cut its data by the MSS it was given, not hand over super-segments.
        net.offload = false;
        let (ns, tun) = net.open().expect("a namespace with a TUN");
        Kernel { tun, accepted: None, ns }
    }
}

impl Kernel {
    /// Feeds what the kernel sends to `take` until it takes one, or [`PATIENCE`] passed.
    fn next_packet(&mut self, take: &mut dyn FnMut(&[u8]) -> bool) {
        let deadline = StdInstant::now() + PATIENCE;
        let mut frame = Vec::new();
        loop {
            while self.tun.receive_into(smoltcp::time::Instant::now(), &mut frame) {
                if take(&frame) {
                    return;
                }
            }
            let left = deadline.saturating_duration_since(StdInstant::now());
            if left.is_zero() {
                return;
            }
            let mut fds = [PollFd::new(self.tun.wait_fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)).expect("poll");
        }
    }
}

impl UnderTest for Kernel {
    fn serve(&mut self, greeting: &'static [u8]) {
        let (bound_tx, bound_rx) = mpsc::channel();
        let (accepted_tx, accepted_rx) = mpsc::channel();
        self.ns
            .spawn(move || -> io::Result<()> {
                let listener = KernelListener::bind(SocketAddr::from((UNDER_TEST, PORT)));
                let listener = match listener {
                    Ok(l) => {
                        let _ = bound_tx.send(Ok(()));
                        l
                    }
                    Err(e) => {
                        let _ = bound_tx.send(Err(e.to_string()));
                        return Err(e);
                    }
                };
                // Until the namespace's TUN goes and the test stops taking connections.
                loop {
                    let (mut conn, _) = listener.accept()?;
                    conn.write_all(greeting)?;
                    if accepted_tx.send(conn).is_err() {
                        return Ok(());
                    }
                }
            })
            .expect("a kernel thread");
        bound_rx.recv_timeout(PATIENCE).expect("the kernel thread").expect("bind");
        self.accepted = Some(accepted_rx);
    }

    fn send(&mut self, frame: Vec<u8>) {
        assert!(self.tun.transmit_from(smoltcp::time::Instant::now(), &frame), "writing to the TUN");
    }

    fn expect(&mut self, wanted: &dyn Fn(&Seen) -> bool) -> Option<Seen> {
        let mut found = None;
        self.next_packet(&mut |frame| {
            found = seen(frame).filter(|s| wanted(s));
            found.is_some()
        });
        found
    }

    fn expect_packet(&mut self, wanted: &dyn Fn(&[u8]) -> Option<u16>) -> Option<u16> {
        let mut found = None;
        self.next_packet(&mut |frame| {
            found = wanted(frame);
            found.is_some()
        });
        found
    }

    fn read(&mut self, n: usize) -> Vec<u8> {
        let Some(accepted) = &self.accepted else { panic!("nothing served") };
        let mut conn = accepted.recv_timeout(PATIENCE).expect("an accepted connection");
        conn.set_read_timeout(Some(PATIENCE)).expect("SO_RCVTIMEO");
        let mut got = vec![0; n];
        let mut have = 0;
        while have < n {
            match conn.read(&mut got[have..]) {
                Ok(0) | Err(_) => break,
                Ok(k) => have += k,
            }
        }
        got.truncate(have);
        got
    }
}

/// A ustack engine alone on the virtual clock.
struct Ustack {
    sim: Simulation,
    listener: Option<SockId>,
    /// Every connection accepted, first first.
    conns: Vec<SockId>,
    greeting: &'static [u8],
    /// The application reads (from [`UnderTest::read`] on).
    reading: bool,
    got: Vec<u8>,
    /// The packet the last `expect` took, as a segment.
    last: Option<Seen>,
    /// Packets it sent that no `expect` has taken yet.
    unread: std::collections::VecDeque<Vec<u8>>,
}

impl Ustack {
    fn new() -> Ustack {
        let config = StackConfig {
            addrs: vec![cidr(std::net::Ipv4Addr::from(UNDER_TEST), 24), cidr(UNDER_TEST6, 64)],
            // Larger than 64 KiB, so that the window is scaled, as Linux's is.
            tcp_buffer: 256 * 1024,
            ..StackConfig::default()
        };
        let mut sim = Simulation::new(1, vec![("ustack", config)], LinkConfig::default(), 1500).expect("a simulation");
        sim.keep_crossings(true);
        Ustack {
            sim,
            listener: None,
            conns: Vec::new(),
            greeting: b"",
            reading: false,
            got: Vec::new(),
            last: None,
            unread: Default::default(),
        }
    }

    /// The application: accepts, greets, reads.
    fn app(&mut self) {
        let engine = &mut self.sim.nodes[0].engine;
        if let Some(l) = self.listener {
            while let Ok((c, _)) = engine.accept(l) {
                assert_eq!(engine.send(c, self.greeting, false), Ok(self.greeting.len()));
                self.conns.push(c);
            }
        }
        if let (Some(&c), true) = (self.conns.first(), self.reading) {
            let mut buf = [0; 4096];
            while let Ok(n @ 1..) = engine.recv(c, &mut buf) {
                self.got.extend_from_slice(&buf[..n]);
            }
        }
    }

    /// A millisecond of virtual time, the application run after it.
    fn tick(&mut self) {
        let until = self.sim.now() + Duration::from_millis(1);
        self.sim.run_to(until);
        self.app();
        let crossings = self.sim.take_crossings();
        self.unread.extend(crossings.into_iter().map(|c| c.packet));
    }

    fn patience() -> u64 {
        PATIENCE.as_millis() as u64
    }
}

impl UnderTest for Ustack {
    fn serve(&mut self, greeting: &'static [u8]) {
        let engine = &mut self.sim.nodes[0].engine;
        let l = engine.socket(Domain::Inet, Type::Stream);
        engine.bind(l, SocketAddr::from((UNDER_TEST, PORT))).expect("bind");
        engine.listen(l, 8).expect("listen");
        self.listener = Some(l);
        self.greeting = greeting;
    }

    fn send(&mut self, frame: Vec<u8>) {
        self.sim.inject(0, frame);
        self.sim.settle(|_, _| false);
    }

    fn expect(&mut self, wanted: &dyn Fn(&Seen) -> bool) -> Option<Seen> {
        self.expect_packet(&|p| seen(p).filter(|s| wanted(s)).map(|_| 0)).map(|_| ())?;
        self.last.take()
    }

    fn expect_packet(&mut self, wanted: &dyn Fn(&[u8]) -> Option<u16>) -> Option<u16> {
        for _ in 0..=Ustack::patience() {
            while let Some(p) = self.unread.pop_front() {
                if let Some(found) = wanted(&p) {
                    self.last = seen(&p);
                    return Some(found);
                }
            }
            self.tick();
        }
        None
    }

    fn read(&mut self, n: usize) -> Vec<u8> {
        let start: Instant = self.sim.now();
        self.reading = true;
        while self.got.len() < n && self.sim.now() - start < Duration::from_millis(Ustack::patience()) {
            self.tick();
        }
        self.got.clone()
    }
}

/// Runs `scenario` against the kernel (if a TUN can be had) and against ustack: the
/// kernel's outcome must be `linux`, and ustack's the same.
fn compare<T: std::fmt::Debug + PartialEq>(linux: T, scenario: impl Fn(&mut dyn UnderTest) -> T) {
    let ustack = scenario(&mut Ustack::new());
    check_kernel(&linux, &scenario);
    assert_eq!(ustack, linux, "ustack's outcome, compared with the kernel's");
}

/// Runs `scenario` against both where ustack differs from Linux on purpose
/// (docs/linux-differences.md): the kernel's outcome must be `linux`, ustack's `ours`.
fn differ<T: std::fmt::Debug + PartialEq>(linux: T, ours: T, scenario: impl Fn(&mut dyn UnderTest) -> T) {
    assert_ne!(linux, ours, "a difference");
    let ustack = scenario(&mut Ustack::new());
    check_kernel(&linux, &scenario);
    assert_eq!(ustack, ours, "ustack's outcome (Linux's is {linux:?})");
}

/// The kernel's outcome of `scenario`, which must be `linux`; skipped without a TUN
/// (but not under CI=true, where the lab must be had).
fn check_kernel<T: std::fmt::Debug + PartialEq>(linux: &T, scenario: &impl Fn(&mut dyn UnderTest) -> T) {
    if ustack::device::tun_support().is_ok() || std::env::var("CI").is_ok_and(|v| v == "true") {
        let kernel = scenario(&mut Kernel::new());
        assert_eq!(&kernel, linux, "the kernel's outcome");
    } else {
        eprintln!("no TUN here: ustack's outcome compared with the kernel's as recorded in the test");
    }
}

/// Completes a handshake from peer port `from` (ISN 1000): the side's ISN.
fn handshake(side: &mut dyn UnderTest, from: u16) -> u32 {
    side.send(segment(from, 1000, None, true, &[], b""));
    let syn_ack = side.expect(&|s| s.syn && s.ack).expect("a SYN-ACK");
    side.send(segment(from, 1001, Some(syn_ack.seq.wrapping_add(1)), false, &[], b""));
    syn_ack.seq
}

/// RFC 9293 §3.10.7.4: a segment whose ACK is older than SND.UNA is not dropped; the ACK
/// is ignored and the data processed. The peer sent "abc" acknowledging nothing new, then
/// (after the side's greeting arrived) "def" acknowledging it; the two arrive swapped.
/// Both are delivered at once and acknowledged, with no retransmission from the peer.
#[test]
fn data_with_an_ack_older_than_snd_una_is_delivered_as_linux_delivers_it() {
    compare((true, b"abcdef".to_vec()), |side| {
        side.serve(b"0123456789");
        let isn = handshake(side, 40000);
        side.expect(&|s| s.len == 10).expect("the greeting");
        side.send(segment(40000, 1004, Some(isn.wrapping_add(11)), false, &[], b"def"));
        side.send(segment(40000, 1001, Some(isn.wrapping_add(1)), false, &[], b"abc"));
        let all_acked = side.expect(&|s| s.ack && s.ack_no == 1007).is_some();
        (all_acked, side.read(6))
    });
}

/// A receiver should not move its window's right edge back (RFC 9293 §3.8.6.2.2), and
/// Linux never does; smoltcp rounds its window down to its scale, so its edge can move
/// back a few bytes as its buffer fills. The side greets with 1000 bytes; the peer (MSS
/// 100, window 500, window scaling on) lets 500 through, then sends up to every edge it
/// is offered, never acknowledging, until the side's buffer, which nothing reads, is full
/// and its window zero. Its bare ACK, at its SND.NXT (the furthest edge offered), then
/// acknowledges the 500 bytes and offers 2000: the side must take it and send the rest
/// of its greeting. (ustack, whose edge had moved back, refused that ACK: a bulk echo with
/// 1 MiB buffers deadlocked.)
#[test]
fn an_ack_from_the_edge_of_the_window_offered_is_taken_once_the_window_is_zero() {
    compare(Some(0), |side| {
        const FROM: u16 = 40100;
        side.serve(&GREETING);
        // MSS 100, window scale 0: the side may scale its own.
        side.send(segment(FROM, 1000, None, true, &[2, 4, 0, 100, 1, 3, 3, 0], b""));
        let syn_ack = side.expect(&|s| s.syn && s.ack).expect("a SYN-ACK");
        let (isn, scale) = (syn_ack.seq, syn_ack.wscale.unwrap_or(0));
        assert!(scale > 0, "the side scales its window, so its edge can be rounded");
        side.send(ack_with_window(FROM, 1001, isn.wrapping_add(1), 500, b""));
        let mut last =
            side.expect(&|s| s.seq.wrapping_add(s.len as u32) == isn.wrapping_add(501)).expect("500 bytes of greeting");
        let (mut snd_nxt, mut edge) = (1001u32, 1001u32);
        for _ in 0..2000 {
            let offered = last.ack_no.wrapping_add(u32::from(last.window) << scale);
            if offered.wrapping_sub(edge) as i32 > 0 {
                edge = offered;
            }
            if last.window == 0 && snd_nxt == edge {
                break;
            }
            while snd_nxt != edge {
                let n = edge.wrapping_sub(snd_nxt).min(1001);
                side.send(ack_with_window(FROM, snd_nxt, isn.wrapping_add(1), 500, &[b'f'; 1001][..n as usize]));
                snd_nxt = snd_nxt.wrapping_add(n);
            }
            // Bare, or on a retransmission of the greeting.
            last = side.expect(&|s| s.ack && !s.syn).expect("an ACK of the peer's data");
        }
        assert_eq!((last.window, snd_nxt), (0, edge), "the side's window closed at the edge it offered");
        side.send(ack_with_window(FROM, snd_nxt, isn.wrapping_add(501), 2000, b""));
        let rest = side.expect(&|s| s.len > 0 && s.seq.wrapping_add(s.len as u32) == isn.wrapping_add(1001))?;
        Some(rest.window)
    });
}

/// A sender that filled the window it was offered has its SND.NXT at the window's right
/// edge, and its bare ACKs carry that sequence number. With its last segment lost, RCV.NXT
/// is before it: RFC 9293's acceptability test (SEG.SEQ < RCV.NXT + RCV.WND) refuses such
/// an ACK, Linux's `tcp_sequence` takes it. Here the peer fills the side's window but for
/// its last 100 bytes, then acknowledges the side's first 500 bytes from the edge, with
/// room for the rest: the side must send the rest of its greeting. (ustack refused those
/// ACKs: the loss bench's echo stalled ~200 ms, until the kernel's retransmission timeout.)
#[test]
fn a_bare_ack_from_the_right_edge_is_taken_while_a_segment_before_it_is_missing() {
    compare(Some(true), |side| {
        const FROM: u16 = 40200;
        const LOST: u32 = 100;
        side.serve(&GREETING);
        side.send(segment(FROM, 1000, None, true, &[2, 4, 0, 100, 1, 3, 3, 0], b""));
        let syn_ack = side.expect(&|s| s.syn && s.ack).expect("a SYN-ACK");
        let (isn, scale) = (syn_ack.seq, syn_ack.wscale.unwrap_or(0));
        side.send(ack_with_window(FROM, 1001, isn.wrapping_add(1), 500, b""));
        side.expect(&|s| s.seq.wrapping_add(s.len as u32) == isn.wrapping_add(501)).expect("500 bytes of greeting");
        // A SYN-ACK's window is not scaled. The edge grows as long as the side offers more.
        let (mut snd_nxt, mut edge) = (1001u32, 1001u32.wrapping_add(u32::from(syn_ack.window)));
        for _ in 0..100 {
            let hole = edge.wrapping_sub(LOST);
            while snd_nxt != hole {
                let n = hole.wrapping_sub(snd_nxt).min(1000);
                side.send(ack_with_window(FROM, snd_nxt, isn.wrapping_add(1), 500, &[b'f'; 1000][..n as usize]));
                snd_nxt = snd_nxt.wrapping_add(n);
            }
            let acked =
                side.expect(&|s| s.ack && !s.syn && s.ack_no == hole).expect("an ACK of the data before the hole");
            let offered = acked.ack_no.wrapping_add(u32::from(acked.window) << scale);
            if offered.wrapping_sub(edge) as i32 <= 0 {
                break;
            }
            edge = offered;
        }
        side.send(ack_with_window(FROM, edge, isn.wrapping_add(501), 2000, b""));
        side.expect(&|s| s.len > 0 && s.seq.wrapping_add(s.len as u32) == isn.wrapping_add(1001)).map(|_| true)
    });
}

/// A greeting longer than any MSS the peer's SYN may have announced, so the first data
/// segment's length shows the MSS the side took from it.
static GREETING: [u8; 1000] = [b'g'; 1000];

/// A SYN with a malformed option area (RFC 9293 §3.1 lets a receiver meet any option
/// area): Linux answers it, reading its options up to where one's length is below 2 or
/// runs past the header, and skipping a known option of the wrong length
/// (`tcp_parse_options`). Which options it read shows in the first data segment: the
/// peer's MSS of 400 if it read it, Linux's default of 536 if not. smoltcp rejects such a
/// segment whole; ustack's demux turns what Linux ignores into NOPs first.
#[test]
fn a_syn_with_a_malformed_option_area_is_answered_as_linux_answers_it() {
    // MSS 400 = [2, 4, 1, 144].
    let cases: [(&str, &[u8]); 7] = [
        ("well formed", &[2, 4, 1, 144]),
        ("length 0 before the MSS", &[3, 0, 2, 4, 1, 144, 0, 0]),
        ("length 1 after the MSS", &[2, 4, 1, 144, 8, 1, 0, 0]),
        ("an option running past the header, after the MSS", &[2, 4, 1, 144, 254, 10, 0, 0]),
        ("an option running past the header, before the MSS", &[254, 10, 0, 0, 2, 4, 1, 144]),
        ("a truncated MSS (length 3), then the MSS", &[2, 3, 1, 2, 4, 1, 144, 0]),
        ("SACK-permitted of length 3, then the MSS", &[4, 3, 0, 2, 4, 1, 144, 0]),
    ];
    let linux: Vec<(&str, bool, Option<usize>)> = vec![
        (cases[0].0, true, Some(400)),
        (cases[1].0, true, Some(536)),
        (cases[2].0, true, Some(400)),
        (cases[3].0, true, Some(400)),
        (cases[4].0, true, Some(536)),
        (cases[5].0, true, Some(400)),
        (cases[6].0, true, Some(400)),
    ];
    compare(linux, |side| {
        side.serve(&GREETING);
        cases
            .iter()
            .enumerate()
            .map(|(i, (name, options))| {
                let port = 41000 + i as u16;
                side.send(segment(port, 1000, None, true, options, b""));
                let Some(syn_ack) = side.expect(&|s| s.to_port == port && s.syn && s.ack) else {
                    return (*name, false, None);
                };
                side.send(segment(port, 1001, Some(syn_ack.seq.wrapping_add(1)), false, &[], b""));
                let first = side.expect(&|s| s.to_port == port && s.len > 0).map(|s| s.len);
                (*name, true, first)
            })
            .collect::<Vec<_>>()
    });
}

/// RFC 7323 timestamps: Linux (`tcp_timestamps=1`) answers a SYN that offers them with a
/// SYN-ACK that carries them, and puts them on every segment after. ustack does not use
/// them (docs/linux-differences.md: smoltcp 0.14's timestamp source is a bare `fn() ->
/// u32` with no clock of the engine's nor a per-connection offset, and it has no PAWS),
/// so its SYN-ACK leaves them out and the connection goes on without, as RFC 7323 §3.2
/// has it when one side does not answer.
#[test]
fn timestamps_offered_in_a_syn_are_answered_by_linux_and_not_by_ustack() {
    // Linux's own SYN options: MSS 1460, SACK permitted, timestamps, NOP, window scale 7.
    let linux_syn = [2, 4, 5, 180, 4, 2, 8, 10, 0, 0, 3, 232, 0, 0, 0, 0, 1, 3, 3, 7];
    let scenario = |side: &mut dyn UnderTest| {
        side.serve(b"hi");
        side.send(segment(42000, 1000, None, true, &linux_syn, b""));
        let syn_ack = side.expect(&|s| s.syn && s.ack).expect("a SYN-ACK");
        syn_ack.timestamps
    };
    differ(true, false, scenario);
}

/// Urgent data with SO_OOBINLINE off (Linux's default): the byte the urgent pointer marks
/// (the last byte before it, RFC 9293 §3.8.5 as Linux reads it) is taken out of the
/// stream, to be read with MSG_OOB, so the normal read skips it. smoltcp has no urgent
/// mode: ustack delivers that byte in the stream like any other
/// (docs/linux-differences.md).
#[test]
fn urgent_data_is_taken_out_of_the_stream_by_linux_and_left_in_by_ustack() {
    let scenario = |side: &mut dyn UnderTest| {
        side.serve(b"");
        let isn = handshake(side, 43000);
        side.send(urgent_segment(43000, 1001, Some(isn.wrapping_add(1)), false, &[], b"abc", Some(3)));
        side.send(segment(43000, 1004, Some(isn.wrapping_add(1)), false, &[], b"def"));
        side.expect(&|s| s.ack && s.ack_no == 1007).expect("all six bytes acknowledged");
        // Five bytes are what Linux has for the reader; ustack has all six by then.
        String::from_utf8_lossy(&side.read(5)).into_owned()
    };
    differ("abdef".to_string(), "abcdef".to_string(), scenario);
}

/// An ICMP echo request (id 77, `seq`) from the peer with `len` bytes of data: its IP
/// header and its IP payload, for [`fragment`] to cut.
fn echo_request(v6: bool, seq: u16, len: u32) -> (Vec<u8>, Vec<u8>) {
    let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let mut packet = Vec::new();
    if v6 {
        PacketBuilder::ipv6(PEER6.octets(), UNDER_TEST6.octets(), 64)
            .icmpv6_echo_request(77, seq)
            .write(&mut packet, &payload)
            .expect("an echo request");
        (packet[..40].to_vec(), packet[40..].to_vec())
    } else {
        PacketBuilder::ipv4(PEER, UNDER_TEST, 64)
            .icmpv4_echo_request(77, seq)
            .write(&mut packet, &payload)
            .expect("an echo request");
        (packet[..20].to_vec(), packet[20..].to_vec())
    }
}

/// The fragment of `ip_payload` from `from` to `to` (bytes), with `header` (the whole
/// datagram's IP header) made a fragment's: identification `id`.
fn fragment(v6: bool, header: &[u8], ip_payload: &[u8], id: u32, from: usize, to: usize) -> Vec<u8> {
    let more = to < ip_payload.len();
    let data = &ip_payload[from..to];
    let mut packet = header.to_vec();
    if v6 {
        packet[4..6].copy_from_slice(&((8 + data.len()) as u16).to_be_bytes());
        let next = packet[6];
        packet[6] = 44;
        packet.extend_from_slice(&[next, 0]);
        packet.extend_from_slice(&((from as u16) | u16::from(more)).to_be_bytes());
        packet.extend_from_slice(&id.to_be_bytes());
    } else {
        let mut ip = smoltcp::wire::Ipv4Packet::new_unchecked(&mut packet[..]);
        ip.set_total_len((20 + data.len()) as u16);
        ip.set_ident(id as u16);
        ip.set_frag_offset(from as u16);
        ip.set_more_frags(more);
        ip.fill_checksum();
    }
    packet.extend_from_slice(data);
    packet
}

/// The sequence number of an echo reply to id 77, whole or its first fragment.
fn echo_reply(packet: &[u8]) -> Option<u16> {
    let (icmp, reply_type) = match packet.first()? >> 4 {
        4 if packet.get(9) == Some(&1) && u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff == 0 => {
            (packet.get(usize::from(packet[0] & 0x0f) * 4..)?, 0)
        }
        6 if packet.get(6) == Some(&58) => (packet.get(40..)?, 129),
        6 if packet.get(6) == Some(&44) && packet.get(40) == Some(&58) && packet.get(42..44)? == [0, 1] => {
            (packet.get(48..)?, 129)
        }
        _ => return None,
    };
    (icmp.first() == Some(&reply_type) && icmp.get(4..6)? == [0, 77]).then(|| u16::from_be_bytes([icmp[6], icmp[7]]))
}

/// IP fragments, IPv4 and IPv6: a datagram whose fragments arrive in any order is
/// reassembled (its echo request answered); an exact duplicate fragment is ignored; a
/// fragment overlapping another drops the whole datagram, as RFC 5722 has it for IPv6 and
/// Linux does for IPv4 too. A small echo request after each (seq 100+) shows the answers
/// are in: whatever was not answered by then never is. The IPv4 requests are 3000 bytes,
/// so the replies go in fragments too; the IPv6 ones 1000, cut in three, their replies
/// whole (a larger IPv6 reply is ustack's to fragment: `interop_tun`).
#[test]
fn ip_fragments_are_reassembled_and_overlaps_dropped_as_linux_does() {
    let scenario = |side: &mut dyn UnderTest| {
        let mut answered = Vec::new();
        for v6 in [false, true] {
            // The data length, and where the fragments are cut.
            let (len, a, b) = if v6 { (1000, 496, 752) } else { (3000, 1480, 2960) };
            let end = len as usize + 8;
            let cases: [(u16, Vec<(usize, usize)>); 3] = [
                (1, vec![(b, end), (a, b), (0, a)]),
                (2, vec![(0, a), (a, b), (a, b), (b, end)]),
                (3, vec![(0, a), (a - 8, b), (b, end)]),
            ];
            for (seq, pieces) in cases {
                let (header, body) = echo_request(v6, seq, len);
                for &(from, to) in &pieces {
                    side.send(fragment(
                        v6,
                        &header,
                        &body,
                        0x5000 + u32::from(seq) + u32::from(v6) * 16,
                        from,
                        to.min(body.len()),
                    ));
                }
                // The marker: a small request, whole.
                let mut marker = Vec::new();
                if v6 {
                    PacketBuilder::ipv6(PEER6.octets(), UNDER_TEST6.octets(), 64)
                        .icmpv6_echo_request(77, 100 + seq)
                        .write(&mut marker, b"marker")
                        .unwrap();
                } else {
                    PacketBuilder::ipv4(PEER, UNDER_TEST, 64)
                        .icmpv4_echo_request(77, 100 + seq)
                        .write(&mut marker, b"marker")
                        .unwrap();
                }
                side.send(marker);
                loop {
                    match side.expect_packet(&echo_reply) {
                        Some(s) if s == 100 + seq => break,
                        Some(s) => answered.push((v6, s)),
                        None => panic!("no answer to the marker ping {}", 100 + seq),
                    }
                }
            }
        }
        answered
    };
    compare(vec![(false, 1), (false, 2), (true, 1), (true, 2)], scenario);
}
