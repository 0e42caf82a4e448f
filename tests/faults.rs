//! TCP under loss and corruption: megabytes each way through a `FaultInjector`, over the
//! in-memory wire between two ustack stacks and over a TUN with the kernel as the peer.
//! Every byte must arrive exactly once and in order (compared by length and FNV-1a hash);
//! a stall fails the test through the sockets' timeouts instead of hanging it (no test
//! compares how long it took: that is printed, for docs/robustness.md). Most transfers
//! read exactly the bytes sent; one waits for end of stream on both sides. The smoltcp
//! 0.14 bugs in closing under loss that ustack works around are reproduced on the virtual
//! clock, in tests/virtual_time.rs.
//! UDP through the same faults has a test of its own: datagrams whole or not at all.
//!
//! Every run takes its seed from `USTACK_SEED` or draws one, and prints it (tests/seed):
//! the seed fixes what the injectors do and the stacks' own random choices, so a failure
//! is replayed as closely as threads on real time allow.

mod seed;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream as KernelStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ustack::device::{Corruption, FaultConfig, FaultCounters, FaultInjector, Faults, Tracer, Wire};
use ustack::{Stack, StackConfig, TcpListener, TcpStream, UdpSocket};
use ustack_testkit::lab::{KERNEL, USTACK, lab_with_device};
use ustack_testkit::{A, A6, B, B6, addr, config, pattern};

/// How long one blocking call may wait, so that only a real stall trips it. smoltcp's
/// retransmission timeout backs off from 1 s up to 60 s, and under sustained loss it can
/// stay high (an RTT sample is dropped whenever a retransmission happens), so one lost
/// segment can legitimately cost a 60 s wait: a 60 s patience failed a fresh-clone run
/// (docs/robustness.md). Two and a half such timeouts is still a bound.
const PATIENCE: Duration = Duration::from_secs(150);

/// The transfers' size each way.
const MIB4: usize = 4 << 20;

/// The loss and damage the brief asks TCP to survive.
fn lossy() -> Faults {
    Faults::lossy(5.0, 1.0)
}

/// FNV-1a, 64-bit, fed incrementally.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn of(bytes: &[u8]) -> Fnv {
        let mut h = Fnv::new();
        h.update(bytes);
        h
    }
}

/// What one side of a connection received: how many bytes, and their hash.
#[derive(Debug, PartialEq, Eq)]
struct Received {
    len: usize,
    hash: Fnv,
}

impl Received {
    fn of(data: &[u8]) -> Received {
        Received { len: data.len(), hash: Fnv::of(data) }
    }
}

/// One side of a full-duplex exchange: sends `data` then shuts down writing (on a thread
/// of its own), while reading `expect` bytes; then, if `eof`, waits for end of stream.
/// Returns what it read.
fn exchange<S>(
    stream: S,
    data: Arc<Vec<u8>>,
    expect: usize,
    eof: bool,
    shut_write: fn(&S) -> io::Result<()>,
) -> JoinHandle<io::Result<Received>>
where
    S: Send + Sync + 'static,
    for<'a> &'a S: Read + Write,
{
    std::thread::spawn(move || {
        let stream = Arc::new(stream);
        let writer = stream.clone();
        let sender = std::thread::spawn(move || -> io::Result<()> {
            (&*writer).write_all(&data)?;
            shut_write(&writer)
        });
        let mut buf = vec![0; 64 * 1024];
        let mut got = Received { len: 0, hash: Fnv::new() };
        while got.len < expect || eof {
            let want = if got.len < expect { (expect - got.len).min(buf.len()) } else { buf.len() };
            let n = (&*stream).read(&mut buf[..want])?;
            if n == 0 {
                break;
            }
            got.len += n;
            got.hash.update(&buf[..n]);
        }
        sender.join().map_err(|_| io::Error::other("sender panicked"))??;
        Ok(got)
    })
}

fn ustack_shut_write(s: &TcpStream) -> io::Result<()> {
    s.shutdown(Shutdown::Write)
}

fn kernel_shut_write(s: &KernelStream) -> io::Result<()> {
    s.shutdown(Shutdown::Write)
}

/// A kernel socket in the lab's namespace connected to ustack's port 7 through the lossy
/// TUN, with [`PATIENCE`] for its reads and writes.
fn kernel_connect(lab: &ustack_testkit::lab::Lab) -> KernelStream {
    let target: SocketAddr = addr(USTACK, 7);
    lab.ns
        .run(move || -> io::Result<KernelStream> {
            let stream = KernelStream::connect_timeout(&target, PATIENCE)?;
            stream.set_read_timeout(Some(PATIENCE))?;
            stream.set_write_timeout(Some(PATIENCE))?;
            Ok(stream)
        })
        .unwrap()
        .expect("kernel connect through the lossy TUN")
}

fn patient(stream: &TcpStream) {
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
}

/// Two stacks on a wire, each end wrapped in a fault injector with its own config, all
/// of it seeded from this run's seed (printed). Returns the stacks ("a" at 10.0.0.1, "b"
/// at 10.0.0.2) and both injectors' counters.
fn faulty_pair(on_a: FaultConfig, on_b: FaultConfig) -> (Stack, Stack, FaultCounters, FaultCounters) {
    ustack_testkit::init_test_logging();
    let seed = seed::seed();
    let (end_a, end_b) = Wire::pair(1500).unwrap();
    let end_a = FaultInjector::new(end_a, on_a.with_seed(seed::derived(seed, 0))).unwrap();
    let end_b = FaultInjector::new(end_b, on_b.with_seed(seed::derived(seed, 1))).unwrap();
    let (counters_a, counters_b) = (end_a.counters(), end_b.counters());
    // Tracers outside the injectors: RUST_LOG=ustack::trace=info shows what each stack
    // sent and what reached it.
    let seeded = |config: StackConfig, index| StackConfig { seed: Some(seed::derived(seed, index)), ..config };
    let a = Stack::new(Tracer::new(end_a), seeded(config(A, A6), 2)).unwrap();
    let b = Stack::new(Tracer::new(end_b), seeded(config(B, B6), 3)).unwrap();
    (a, b, counters_a, counters_b)
}

/// `size` bytes each way at once between a client on `a` and a server on `b`, to `b_ip`;
/// asserts both arrive intact (and, if `eof`, that both sides then see end of stream)
/// and returns how long it took.
fn duplex_over(a: &Stack, b: &Stack, b_ip: &str, size: usize, eof: bool) -> Duration {
    let listener = TcpListener::bind(b, addr(b_ip, 0)).unwrap();
    let at = listener.local_addr().unwrap();
    let (up, down) = (Arc::new(pattern(size, 1)), Arc::new(pattern(size, 2)));
    let started = Instant::now();
    let client = TcpStream::connect_timeout(a, &at, PATIENCE).expect("connect over the lossy wire");
    let (server, _) = listener.accept().expect("accept over the lossy wire");
    patient(&client);
    patient(&server);
    let client = exchange(client, up.clone(), size, eof, ustack_shut_write);
    let server = exchange(server, down.clone(), size, eof, ustack_shut_write);
    let at_server = server.join().unwrap().expect("server side");
    let at_client = client.join().unwrap().expect("client side");
    let took = started.elapsed();
    assert_eq!(at_server, Received::of(&up), "client to server is not byte-exact");
    assert_eq!(at_client, Received::of(&down), "server to client is not byte-exact");
    took
}

/// Prints the figures of a run, so `cargo test -- --nocapture` shows them.
fn report(what: &str, took: Duration, counters: &[&FaultCounters]) {
    let stats: Vec<_> = counters.iter().map(|c| c.get()).collect();
    eprintln!("{what}: {took:.2?}; injected {stats:?}");
}

#[test]
fn four_mebibytes_each_way_through_a_lossy_wire() {
    // One injector, both directions: every packet meets 5% loss and 1% corruption once.
    let (a, b, faults, _) = faulty_pair(FaultConfig::both(lossy()), FaultConfig::default());
    let took = duplex_over(&a, &b, B, MIB4, false);
    report("4 MiB each way, 5% loss + 1% corruption", took, &[&faults]);
    let stats = faults.get();
    assert!(stats.rx.dropped > 0 && stats.tx.dropped > 0, "the injector dropped nothing: {stats:?}");
    assert!(stats.rx.corrupted > 0 && stats.tx.corrupted > 0, "the injector corrupted nothing: {stats:?}");
}

#[test]
fn a_mebibyte_each_way_over_ipv6_with_injectors_on_both_ends() {
    // Each end damages what it sends: every packet still meets the faults once.
    let (a, b, fa, fb) = faulty_pair(FaultConfig::tx_only(lossy()), FaultConfig::tx_only(lossy()));
    let took = duplex_over(&a, &b, B6, 1 << 20, false);
    report("1 MiB each way over IPv6, injectors on both ends", took, &[&fa, &fb]);
    assert!(fa.get().tx.dropped > 0 && fb.get().tx.dropped > 0);
}

#[test]
fn half_a_mebibyte_each_way_through_duplication_reordering_and_damaged_headers() {
    let chaos = Faults { drop_pct: 2.0, corrupt_pct: 2.0, duplicate_pct: 5.0, reorder_pct: 5.0 };
    let config = FaultConfig::both(chaos).with_corruption(Corruption::Anywhere);
    let (a, b, faults, _) = faulty_pair(config, FaultConfig::default());
    let took = duplex_over(&a, &b, B, 512 << 10, false);
    let took6 = duplex_over(&a, &b, B6, 512 << 10, false);
    report("512 KiB each way over IPv4 then IPv6, duplicates, reordering, damage anywhere", took + took6, &[&faults]);
    let stats = faults.get();
    assert!(stats.rx.duplicated > 0 && stats.rx.reordered > 0 && stats.tx.reordered > 0, "{stats:?}");
}

#[test]
fn the_stacks_still_connect_after_a_lossy_exchange() {
    // After a lossy exchange, the same stacks still make new connections and their
    // demux history stays within its bound.
    let (a, b, _, _) = faulty_pair(FaultConfig::both(lossy()), FaultConfig::default());
    duplex_over(&a, &b, B, 256 << 10, false);
    for _ in 0..3 {
        duplex_over(&a, &b, B, 16 << 10, false);
    }
    assert!(a.demux_events().len() <= ustack::engine::demux::HISTORY);
    assert!(b.demux_events().len() <= ustack::engine::demux::HISTORY);
}

/// The same exchanges, waiting for end of stream. Without ustack's workarounds for
/// smoltcp 0.14 bugs in closing under loss (tests/virtual_time.rs reproduces each
/// deterministically; docs/robustness.md has the details) this often stalls for good.
#[test]
fn lossy_exchanges_end_with_end_of_stream_on_both_sides() {
    let (a, b, _, _) = faulty_pair(FaultConfig::both(lossy()), FaultConfig::default());
    for _ in 0..8 {
        duplex_over(&a, &b, B, 64 << 10, true);
    }
}

#[test]
fn four_mebibytes_each_way_with_the_kernel_through_a_lossy_tun() {
    ustack::require_tun!();
    let mut counters = None;
    let seed = seed::seed();
    let stack_config = StackConfig { seed: Some(seed::derived(seed, 1)), ..StackConfig::default() };
    let lab = lab_with_device(stack_config, |tun| {
        let config = FaultConfig::both(lossy()).with_seed(seed::derived(seed, 0));
        let injector = FaultInjector::new(tun, config).expect("fault injector");
        counters = Some(injector.counters());
        injector
    });
    let counters = counters.unwrap();
    let listener = TcpListener::bind(&lab.stack, addr(USTACK, 7)).unwrap();
    let (up, down) = (Arc::new(pattern(MIB4, 3)), Arc::new(pattern(MIB4, 4)));
    let started = Instant::now();
    let kernel = kernel_connect(&lab);
    let (server, peer) = listener.accept().expect("accept");
    assert_eq!(peer.ip().to_string(), KERNEL);
    patient(&server);
    let at_kernel = exchange(kernel, up.clone(), MIB4, false, kernel_shut_write);
    let at_ustack = exchange(server, down.clone(), MIB4, false, ustack_shut_write);
    let at_ustack = at_ustack.join().unwrap().expect("ustack side");
    let at_kernel = at_kernel.join().unwrap().expect("kernel side");
    let took = started.elapsed();
    report("4 MiB each way with the kernel, 5% loss + 1% corruption", took, &[&counters]);
    assert_eq!(at_ustack, Received::of(&up), "kernel to ustack is not byte-exact");
    assert_eq!(at_kernel, Received::of(&down), "ustack to kernel is not byte-exact");
    let stats = counters.get();
    assert!(stats.rx.dropped > 0 && stats.tx.corrupted > 0, "{stats:?}");
}

/// With TUN offloads the device vouches for received TCP checksums and smoltcp stops
/// verifying them; frames damaged after the device, on their way in only (the TUN's
/// offloads stay on), must still be caught: the injector turns smoltcp's checks back on.
#[test]
fn frames_damaged_on_the_way_in_from_an_offloading_tun_are_caught() {
    ustack::require_tun!();
    let mut counters = None;
    let seed = seed::seed();
    let stack_config = StackConfig { seed: Some(seed::derived(seed, 1)), ..StackConfig::default() };
    let lab = lab_with_device(stack_config, |tun| {
        assert!(tun.offload(), "the kernel gave no offloads: this test means nothing without them");
        // A super-segment carries up to 64 KiB: 4 MiB is only ~70 of them, so damage many.
        let config = FaultConfig::rx_only(Faults::lossy(2.0, 20.0)).with_seed(seed::derived(seed, 0));
        let injector = FaultInjector::new(tun, config).expect("fault injector");
        counters = Some(injector.counters());
        injector
    });
    let counters = counters.unwrap();
    let listener = TcpListener::bind(&lab.stack, addr(USTACK, 7)).unwrap();
    let up = Arc::new(pattern(MIB4, 5));
    let kernel = kernel_connect(&lab);
    let (server, _) = listener.accept().expect("accept");
    patient(&server);
    let at_kernel = exchange(kernel, up.clone(), 0, false, kernel_shut_write);
    let at_ustack = exchange(server, Arc::new(Vec::new()), MIB4, false, ustack_shut_write);
    let at_ustack = at_ustack.join().unwrap().expect("ustack side");
    at_kernel.join().unwrap().expect("kernel side");
    assert_eq!(at_ustack, Received::of(&up), "kernel to ustack is not byte-exact");
    let stats = counters.get();
    assert!(stats.rx.corrupted > 0, "{stats:?}");
}

// ---- UDP under loss and corruption ----

/// How many frames stack `s`'s demux has classified, of every kind.
fn frames_classified(s: &Stack) -> u64 {
    s.demux_table().counters.decisions()
}

/// Datagram `i`: its index, its length and the FNV-1a hash of its body, then the body, an
/// xorshift pattern seeded by `i`, 14 to 1472 bytes in all (the most one IPv4 packet holds).
fn datagram(i: u32) -> Vec<u8> {
    let len = 14 + (i as usize * 7919) % (1472 - 14 + 1);
    let body = pattern(len - 14, i);
    let mut d = Vec::with_capacity(len);
    d.extend_from_slice(&i.to_be_bytes());
    d.extend_from_slice(&(len as u16).to_be_bytes());
    d.extend_from_slice(&Fnv::of(&body).0.to_be_bytes());
    d.extend_from_slice(&body);
    d
}

/// 2000 datagrams of varied sizes through 5% loss and 5% corruption of any byte: each one
/// arrives whole and byte-exact or not at all, none twice, the loss is what the injector
/// caused (none from the stack itself: batches are small enough for the receive buffer),
/// and the socket works afterwards.
#[test]
fn udp_datagrams_arrive_whole_or_not_at_all_through_loss_and_corruption() {
    const COUNT: u32 = 2000;
    const BATCH: u32 = 32; // 32 × at most 1472 bytes fits the 64-datagram, 64 KiB buffer
    let faults = Faults { drop_pct: 5.0, corrupt_pct: 5.0, ..Faults::NONE };
    let config = FaultConfig::tx_only(faults).with_corruption(Corruption::Anywhere);
    let (a, b, injected, _) = faulty_pair(config, FaultConfig::default());
    let started = Instant::now();
    let receiver = UdpSocket::bind(&b, addr(B, 0)).unwrap();
    let to = receiver.local_addr().unwrap();
    let sender = UdpSocket::bind(&a, addr(A, 0)).unwrap();
    receiver.set_nonblocking(true).unwrap();
    let mut seen = vec![false; COUNT as usize];
    let mut buf = [0; 2048];
    for batch in (0..COUNT).step_by(BATCH as usize) {
        let end = (batch + BATCH).min(COUNT);
        for i in batch..end {
            sender.send_to(&datagram(i), to).expect("send_to");
        }
        // send_to() returns once the datagram is queued in a: wait until the batch has
        // left a, then until b has classified every frame the injector let through, so
        // each is in the receiver's buffer or lost. Then drain it, without waiting blind.
        ustack_testkit::eventually("a sends the batch", || injected.get().tx.packets >= u64::from(end));
        let stats = injected.get().tx;
        let passed = stats.packets - stats.dropped;
        ustack_testkit::eventually("b classifies every frame that got through", || frames_classified(&b) >= passed);
        loop {
            let n = match receiver.recv_from(&mut buf) {
                Ok((n, from)) => {
                    assert_eq!(from, sender.local_addr().unwrap());
                    n
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("recv_from: {e}"),
            };
            let got = &buf[..n];
            assert!(n >= 14, "a {n}-byte datagram: cut short");
            let i = u32::from_be_bytes(got[..4].try_into().unwrap());
            assert!(i < COUNT, "index {i}: damaged");
            assert_eq!(got, &datagram(i)[..], "datagram {i} ({n} bytes) is not whole and byte-exact");
            assert!(!seen[i as usize], "datagram {i} arrived twice; no duplication was configured");
            seen[i as usize] = true;
        }
    }
    let received = seen.iter().filter(|&&s| s).count() as u64;
    let stats = injected.get().tx;
    let counters = b.demux_table().counters;
    eprintln!(
        "UDP: {received} of {COUNT} datagrams received in {:.2?}; injected {stats:?}; b's demux {counters:?}",
        started.elapsed()
    );
    assert_eq!(stats.packets, u64::from(COUNT), "one packet per datagram");
    // Every loss is the injector's: a dropped packet, or a damaged one that a checksum
    // caught. (A damaged packet may still arrive: a UDP checksum turned into 0, "none",
    // leaves the data intact, and is caught above if not.)
    let undamaged = u64::from(COUNT) - stats.dropped - stats.corrupted;
    assert!(received >= undamaged, "{received} received, but {undamaged} went through untouched");
    assert!(received <= u64::from(COUNT) - stats.dropped, "more received than the injector let through");
    assert_eq!(counters.udp_dropped, 0, "the receive buffer never filled, so no datagram was dropped for room");
    // About 1 - 0.95² = 9.75% lost (~195 of 2000, standard deviation ~13).
    let lost = u64::from(COUNT) - received;
    assert!((100..=300).contains(&lost), "{lost} of {COUNT} lost, for 5% loss and 5% damage");

    // The socket keeps working: both ways, through the same faults (each try has a ~10%
    // chance of loss, so twenty tries all lost would be a failure, not bad luck).
    receiver.set_nonblocking(false).unwrap();
    receiver.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let got_one = (0..20).any(|_| {
        sender.send_to(b"after", to).unwrap();
        matches!(receiver.recv_from(&mut buf), Ok((5, _)) if &buf[..5] == b"after")
    });
    assert!(got_one, "no datagram got through after the run");
    let reply = UdpSocket::bind(&b, addr(B, 0)).unwrap();
    reply.send_to(b"back", sender.local_addr().unwrap()).unwrap();
    sender.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (n, _) = sender.recv_from(&mut buf).expect("a datagram the other way, where nothing is injected");
    assert_eq!(&buf[..n], b"back");
}
