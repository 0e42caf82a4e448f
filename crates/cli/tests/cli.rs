//! The `ustack` binary: help, usage errors, the demo, and (where TUN devices are
//! available) `serve` and `connect` against the kernel, each inside a network namespace
//! the test creates — nothing is configured in the host's namespace.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use ustack::sys::NetNs;
use ustack_testkit::process::{Finished, Proc};

const BIN: &str = env!("CARGO_BIN_EXE_ustack");
/// The longest any child process may run.
const DEADLINE: Duration = Duration::from_secs(30);
/// How long a test waits for `serve` to come up, or for a kernel socket call.
const READY: Duration = Duration::from_secs(10);

fn ustack(args: &[&str]) -> Finished {
    let mut command = Command::new(BIN);
    command.args(args).env_remove("RUST_LOG");
    Proc::spawn(command).finish(DEADLINE)
}

/// Runs `ustack args` inside the namespace `ns` (setns between fork and exec).
fn ustack_in(ns: &NetNs, args: &[&str]) -> Proc {
    let fd = ns.as_fd().as_raw_fd();
    let mut command = Command::new(BIN);
    command.args(args).env_remove("RUST_LOG");
    // SAFETY: setns is a plain system call, safe between fork and exec; `fd` stays open
    // in the parent (and so in the child) until the child has been spawned.
    unsafe {
        command.pre_exec(move || setns(BorrowedFd::borrow_raw(fd), CloneFlags::CLONE_NEWNET).map_err(io::Error::from));
    }
    Proc::spawn(command)
}

#[test]
fn help_for_every_subcommand() {
    for args in [&["--help"][..], &["serve", "--help"], &["connect", "--help"], &["demo", "--help"], &["help", "serve"]]
    {
        let out = ustack(args);
        assert_eq!(out.code(), Some(0), "{args:?}: {out:?}");
        assert!(out.stdout.contains("Usage: ustack"), "{args:?}: {}", out.stdout);
    }
    let out = ustack(&["serve", "--help"]);
    for flag in [
        "--tun",
        "--addr",
        "--peer-addr",
        "--tcp",
        "--udp",
        "--app",
        "--backlog",
        "--mtu",
        "--tcp-buffer",
        "--trace",
        "--pcap",
        "--show-demux",
        "--on-overflow",
        "--syn-cookies",
        "--accept-delay",
        "http",
        "SIGUSR1",
    ] {
        assert!(out.stdout.contains(flag), "serve --help lacks {flag}");
    }
    let out = ustack(&["connect", "--help"]);
    for flag in ["--tun", "--addr", "--peer-addr", "--udp", "--timeout", "--wait", "HOST:PORT", "--trace", "--pcap"] {
        assert!(out.stdout.contains(flag), "connect --help lacks {flag}");
    }
    let out = ustack(&["demo", "--help"]);
    for flag in ["--trace", "--pcap", "--sim", "--seed", "--drop-chance", "--corrupt-chance", "simulator"] {
        assert!(out.stdout.contains(flag), "demo --help lacks {flag}");
    }
    // The old name still works, but is not offered.
    assert!(!out.stdout.contains("--wire"), "{}", out.stdout);
}

#[test]
fn bad_usage_exits_2_with_one_line() {
    let cases: &[(&[&str], &str)] = &[
        (&["serve", "--addr", "nonsense"], "--addr"),
        (&["serve", "--addr", "10.7.0.2/33"], "--addr"),
        (&["serve", "--peer-addr", "10.7.0.1"], "--peer-addr"),
        (&["serve", "--tcp", "99999"], "--tcp"),
        (&["serve", "--udp", "0"], "--udp"),
        (&["serve", "--tun", "a-name-longer-than-15"], "--tun"),
        (&["serve", "--backlog", "lots"], "--backlog"),
        (&["serve", "--mtu", "1000"], "IPv6"),
        (&["serve", "--tcp", "7", "--tcp", "7"], "twice"),
        (&["serve", "--addr", "10.7.0.1/24"], "--peer-addr"),
        (&["connect", "nonsense"], "HOST:PORT"),
        (&["connect", "10.7.0.1:0"], "HOST:PORT"),
        (&["connect", "--timeout", "soon", "10.7.0.1:7"], "--timeout"),
        (&["connect", "--addr", "10.7.0.2/24", "[fd00:7::1]:7"], "IPv6"),
        (&["serve", "--app", "bogus"], "possible values: echo, discard, http"),
        (&["serve", "--app", "http", "--udp", "80"], "--udp"),
        (&["serve", "--on-overflow", "maybe"], "possible values: drop, rst"),
        (&["serve", "--syn-cookies", "maybe"], "possible values: on, off"),
        (&["serve", "--accept-delay", "0"], "--accept-delay"),
        (&["serve", "--accept-delay", "soon"], "--accept-delay"),
        (&["serve", "--pcap"], "--pcap"),
        (&["serve", "--tcp", "80", "--ui-port", "80"], "--ui-port"),
        (&["serve", "--app", "http", "--ui-port", "80"], "--ui-port"),
        (&["serve", "--ui-port", "0"], "--ui-port"),
        (&["connect"], "<HOST:PORT>"),
        (&["connect", "--wait", "5", "10.7.0.1:7"], "--udp"),
        (&["demo", "--bogus"], "--bogus"),
        (&["demo", "--seed", "first"], "--seed"),
        (&["demo", "--sim", "--drop-chance", "101"], "--drop-chance"),
        (&["frobnicate"], "frobnicate"),
    ];
    for (args, mentions) in cases {
        let out = ustack(args);
        assert_eq!(out.code(), Some(2), "{args:?}: {out:?}");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: not one line: {:?}", out.stderr);
        assert!(lines[0].starts_with("error: "), "{args:?}: {:?}", lines[0]);
        assert!(lines[0].contains(mentions), "{args:?}: {:?} does not mention {mentions}", lines[0]);
        assert!(out.stdout.is_empty(), "{args:?}: {:?}", out.stdout);
    }
    // No subcommand: the help, on stderr, and still exit 2.
    let out = ustack(&[]);
    assert_eq!(out.code(), Some(2), "{out:?}");
}

/// The tour a user sees, in either mode: five steps in order, each call's outcome, the
/// handshake's states, ECONNREFUSED for the closed port, end of stream and TIME-WAIT.
fn assert_tour(out: &Finished) {
    assert_eq!(out.code(), Some(0), "demo failed: {out:?}");
    let steps = [
        "\n1. TCP handshake: connect() meets accept()\n",
        "\n2. Echo: TCP is a byte stream\n",
        "\n3. UDP: datagrams, boundaries kept\n",
        "\n4. A refused connection: RST and ECONNREFUSED\n",
        "\n5. Closing: FIN, and end of stream as recv() == 0\n",
    ];
    let at: Vec<Option<usize>> = steps.iter().map(|step| out.stdout.find(step)).collect();
    assert!(at.iter().all(Option::is_some) && at.is_sorted(), "not the five steps in order:\n{}", out.stdout);
    for line in [
        "server: socket(AF_INET, SOCK_STREAM) = #3; bind(10.7.0.2:7); listen(backlog 8). State: LISTEN",
        "-> 10.7.0.2:7. State: ESTABLISHED",
        "server: recv() = 0: end of stream, the client's FIN. State: CLOSE-WAIT",
        "client: recv() = 0: end of stream, the server's FIN",
        "client: State: TIME-WAIT",
    ] {
        assert!(out.stdout.contains(line), "the demo does not show {line:?}:\n{}", out.stdout);
    }
    let refused = out.stdout.lines().find(|l| l.contains("client: connect() failed after "));
    assert!(refused.is_some_and(|l| l.ends_with(": ECONNREFUSED (Connection refused)")), "{}", out.stdout);
    assert!(out.stdout.contains("SYN-RECEIVED -> ESTABLISHED"), "{}", out.stdout);
}

#[test]
fn demo_tours_handshake_echo_udp_refusal_and_close() {
    // `ustack` gives up on the run after DEADLINE: a hang fails, no duration is asserted.
    let out = ustack(&["demo"]);
    assert_tour(&out);
    if ustack::device::tun_support().is_ok() {
        assert!(out.stdout.contains("Mode: the Linux kernel and ustack, over a TUN device"), "{}", out.stdout);
        // ustack's own logs, inline.
        assert!(out.stdout.contains("· handshake:"), "{}", out.stdout);
        // The kernel's RST, seen by ustack's connect().
        assert!(out.stdout.contains("ustack connects to port 9 of the kernel"), "{}", out.stdout);
    } else {
        assert!(out.stdout.contains("Mode: two ustack stacks in the simulator"), "{}", out.stdout);
    }
}

/// Without a TUN (here forced with --sim), the same tour between two ustack engines on
/// the simulator's virtual clock: the states and demux decisions read from the engines,
/// the errno of the refused connect(), virtual times only.
#[test]
fn demo_in_the_simulator_shows_states_demux_decisions_and_errnos() {
    let out = ustack(&["demo", "--sim"]);
    assert_tour(&out);
    assert_eq!(out.stderr, "", "{out:?}");
    let stdout = &out.stdout;
    for line in [
        "Mode: two ustack stacks in the simulator, on a virtual clock.",
        "   Why: --sim was given.",
        "   Seed: 1 (",
        // The handshake, from both sides, and the listener's demux admitting the SYN.
        "· client 0.000000 state: tcp 10.7.0.1:",
        ": SYN-SENT -> ESTABLISHED (handshake RTT 2.000 ms)",
        ": LISTEN -> SYN-RECEIVED",
        ": SYN-RECEIVED -> ESTABLISHED",
        "demux: tcp 10.7.0.2:7 <- 10.7.0.1:",
        ": SYN to listener #3: admitted, SYN queue 1/8, accept queue 0/9",
        "client: connect() returned after 2.00 ms: 10.7.0.1:",
        // UDP: each datagram to the bound socket.
        ": to UDP socket #5",
        // The refusal: the server's RST, the client's ECONNREFUSED.
        ": SYN to a port nobody listens on: answered with RST",
        "client: connect() failed after 2.00 ms: ECONNREFUSED (Connection refused)",
        // The close, state by state, to the end of TIME-WAIT.
        ": ESTABLISHED -> FIN-WAIT-1",
        ": FIN-WAIT-1 -> FIN-WAIT-2",
        ": ESTABLISHED -> CLOSE-WAIT",
        ": CLOSE-WAIT -> LAST-ACK",
        ": LAST-ACK -> CLOSED",
        ": FIN-WAIT-2 -> TIME-WAIT",
        ": TIME-WAIT -> CLOSED",
        "client: State: FIN-WAIT-2 (its FIN was acknowledged; it waits for the server's)",
        "server: State: CLOSED (its FIN was acknowledged: the connection is gone)",
        " s of virtual time: handshake, echo, UDP, ECONNREFUSED and close.",
    ] {
        assert!(stdout.contains(line), "the demo does not show {line:?}:\n{stdout}");
    }
    // The kernel's part of step 4 needs the kernel.
    assert!(!stdout.contains("port 9 of the kernel"), "{stdout}");
    // Without --trace: no packets, and no decisions for a connection's own segments.
    assert!(!stdout.contains(" IP 10.7.0."), "{stdout}");
    assert!(!stdout.contains(": to connection #"), "{stdout}");
}

/// The simulator's demo is deterministic: the same seed prints the same bytes, packets
/// and all; another seed, other ISNs and ports. `--wire`, its old name, still works.
#[test]
fn demo_in_the_simulator_prints_the_same_bytes_every_run() {
    let first = ustack(&["demo", "--sim", "--trace"]);
    assert_tour(&first);
    let second = ustack(&["demo", "--sim", "--trace"]);
    assert_eq!(second.code(), Some(0), "{second:?}");
    assert!(first.stdout == second.stdout, "two runs differ:\n{}\n----\n{}", first.stdout, second.stdout);
    let seeded = ustack(&["demo", "--sim", "--trace", "--seed", "1"]);
    assert!(seeded.stdout == first.stdout, "--seed 1 is not the default:\n{}", seeded.stdout);
    let other = ustack(&["demo", "--sim", "--trace", "--seed", "2"]);
    assert_tour(&other);
    assert!(other.stdout != first.stdout && other.stdout.contains("Seed: 2 ("), "{}", other.stdout);
    let wire = ustack(&["demo", "--wire", "--trace"]);
    assert!(wire.stdout == first.stdout, "--wire is not --sim:\n{}", wire.stdout);
}

/// The server stack's packets, inline in the demo over a TUN as tcpdump lines: the
/// client's SYN arriving, the server's SYN-ACK leaving, each arriving one followed by its
/// demux line.
fn assert_traced_inline(stdout: &str) {
    let syn = stdout.lines().find(|l| l.contains("· in ") && l.contains(".7: Flags [S], seq "));
    let syn_ack =
        stdout.lines().find(|l| l.contains("· out ") && l.contains("10.7.0.2.7 > ") && l.contains("Flags [S.]"));
    assert!(syn.is_some() && syn_ack.is_some(), "no SYN in and SYN-ACK out:\n{stdout}");
    assert!(stdout.contains("· demux: tcp 10.7.0.2:7 <- 10.7.0.1:"), "{stdout}");
    assert!(stdout.contains("Flags [F.]") && stdout.contains("Flags [P.]"), "{stdout}");
}

/// The link's packets, inline in the simulator's demo: each after the name of the stack
/// that sent it, at its virtual time; returns how many.
fn assert_traced_in_the_simulator(stdout: &str) -> usize {
    let packets: Vec<&str> = stdout.lines().filter(|l| l.contains(" IP 10.7.0.")).collect();
    let syn = "           · client 0.000000 IP 10.7.0.1.";
    assert!(
        packets.first().is_some_and(|l| l.starts_with(syn) && l.contains(" > 10.7.0.2.7: Flags [S], seq ")),
        "{stdout}"
    );
    assert!(packets.get(1).is_some_and(|l| l.starts_with("           · server 0.001000 IP 10.7.0.2.7 > ") && l.contains("Flags [S.]")), "{stdout}");
    for flags in ["Flags [P.]", "Flags [F.]", "Flags [R.]", "UDP, length 5"] {
        assert!(packets.iter().any(|l| l.contains(flags)), "no {flags}:\n{stdout}");
    }
    // With --trace, the decisions for a connection's own segments too.
    assert!(stdout.contains("· server 0.003000 demux: tcp 10.7.0.2:7 <- 10.7.0.1:"), "{stdout}");
    assert!(stdout.contains(": to connection #0 (listener #3's queue, SYN-RECEIVED)"), "{stdout}");
    packets.len()
}

#[test]
fn demo_traces_and_records_the_server_side() {
    let dir = scratch("demo");
    let pcap = dir.join("demo.pcap");
    let out = ustack(&["demo", "--trace", "--pcap", pcap.to_str().unwrap()]);
    assert_tour(&out);
    if out.stdout.contains("Mode: the Linux kernel") {
        assert_traced_inline(&out.stdout);
    } else {
        assert_traced_in_the_simulator(&out.stdout);
    }
    assert!(out.stdout.contains(&format!("tcpdump -nn -r {}", pcap.display())), "{}", out.stdout);
    let packets = read_pcap(&pcap);
    assert!(count_tcp(&packets, |f| f.has(TcpFlags::SYN) && !f.has(TcpFlags::ACK)) >= 2, "{packets:?}");
    assert!(count_tcp(&packets, |f| f.has(TcpFlags::SYN | TcpFlags::ACK)) >= 1, "{packets:?}");
    // UDP and the refused connection's RST are there too: every packet of the server stack.
    assert!(count_tcp(&packets, |f| f.has(TcpFlags::RST)) >= 1, "{packets:?}");
    let _ = std::fs::remove_dir_all(dir);
}

/// In the simulator, --pcap records what crossed the link, as traced, at virtual times
/// from the Unix epoch; the same seed writes the same file.
#[test]
fn demo_in_the_simulator_records_the_link_at_virtual_times() {
    let dir = scratch("demo-sim");
    let (a, b) = (dir.join("a.pcap"), dir.join("b.pcap"));
    let out = ustack(&["demo", "--sim", "--trace", "--pcap", a.to_str().unwrap()]);
    assert_tour(&out);
    let traced = assert_traced_in_the_simulator(&out.stdout);
    assert!(
        out.stdout.contains(&format!("simulated link are in {0}: tcpdump -nn -r {0}", a.display())),
        "{}",
        out.stdout
    );
    assert_eq!(read_pcap(&a).len(), traced, "the pcap holds what was traced");
    let mut reader = pcap_file::pcap::PcapReader::new(File::open(&a).unwrap()).unwrap();
    let mut times = Vec::new();
    while let Some(packet) = reader.next_packet() {
        times.push(packet.unwrap().timestamp);
    }
    assert_eq!(times.first(), Some(&Duration::ZERO), "the first packet is at virtual time 0");
    assert!(times.is_sorted() && times.iter().all(|t| *t < Duration::from_secs(60)), "{times:?}");
    ustack(&["demo", "--sim", "--trace", "--pcap", b.to_str().unwrap()]);
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(), "two runs recorded different files");
    let _ = std::fs::remove_dir_all(dir);
}

/// --drop-chance and --corrupt-chance act on the simulated link: packets are lost and
/// damaged, TCP recovers, and the tour still ends.
#[test]
fn demo_in_the_simulator_survives_a_lossy_link() {
    let out = ustack(&["demo", "--sim", "--trace", "--drop-chance", "30", "--corrupt-chance", "10"]);
    assert_tour(&out);
    assert!(
        out.stdout.contains("  [lost]") && out.stdout.contains("Link: 30% of the packets lost, 10% damaged"),
        "{}",
        out.stdout
    );
    // Everything lost: connect() times out; one line, exit 1, never a panic.
    let out = ustack(&["demo", "--sim", "--drop-chance", "100"]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert_eq!(out.stderr, "ustack: demo: connect() failed: ETIMEDOUT (Connection timed out)\n");
}

/// Connects from the kernel inside `ns` to `addr`, retrying while `serve` starts (the
/// address appears with its TUN; the port, once it listens), up to [`READY`].
fn connect_when_ready(ns: &NetNs, serve: &mut Proc, addr: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + READY;
    loop {
        match ns.run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(1))).unwrap() {
            Ok(stream) => return stream,
            Err(e) => {
                assert!(serve.running(), "serve exited early");
                assert!(Instant::now() < deadline, "no connection to {addr} within {READY:?}: {e}");
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn tcp_echo(mut stream: TcpStream, data: &[u8]) -> Vec<u8> {
    stream.set_read_timeout(Some(READY)).unwrap();
    stream.write_all(data).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    stream.read_to_end(&mut back).unwrap();
    back
}

/// One datagram to `addr` from the kernel in `ns`, and its answer; retried (the UDP
/// port may be bound a moment after the TCP ones).
fn udp_echo(ns: &NetNs, addr: SocketAddr, data: &'static [u8]) -> (Vec<u8>, SocketAddr) {
    ns.run(move || {
        let any: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().unwrap();
        let socket = UdpSocket::bind(any).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut buf = [0; 2048];
        for _ in 0..10 {
            socket.send_to(data, addr).unwrap();
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                return (buf[..n].to_vec(), from);
            }
        }
        panic!("no UDP answer from {addr}");
    })
    .unwrap()
}

#[test]
fn serve_echoes_tcp_and_udp_over_ipv4_and_ipv6_until_sigterm() {
    ustack::require_tun!();
    let ns = NetNs::new().unwrap();
    let mut serve = ustack_in(&ns, &["serve", "--tcp", "7", "--udp", "7", "--tcp", "9", "--backlog", "4"]);

    for target in ["10.7.0.2:7", "[fd00:7::2]:7"] {
        let addr: SocketAddr = target.parse().unwrap();
        let stream = connect_when_ready(&ns, &mut serve, addr);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        // A writer thread, so that neither side waits on a full window.
        let reader = stream.try_clone().unwrap();
        let expected = data.clone();
        let writer = thread::spawn(move || {
            let mut stream = stream;
            stream.write_all(&data).unwrap();
            stream.shutdown(Shutdown::Write).unwrap();
        });
        let mut back = Vec::new();
        let mut reader = reader;
        reader.set_read_timeout(Some(READY)).unwrap();
        reader.read_to_end(&mut back).unwrap();
        writer.join().unwrap();
        assert!(back == expected, "{target}: echoed {} bytes, sent {}", back.len(), expected.len());
    }
    let port9 = connect_when_ready(&ns, &mut serve, "10.7.0.2:9".parse().unwrap());
    assert_eq!(tcp_echo(port9, b"second port\n"), b"second port\n");

    let (reply, from) = udp_echo(&ns, "10.7.0.2:7".parse().unwrap(), b"datagram over IPv4");
    assert_eq!((reply.as_slice(), from), (&b"datagram over IPv4"[..], "10.7.0.2:7".parse().unwrap()));
    let (reply, from) = udp_echo(&ns, "[fd00:7::2]:7".parse().unwrap(), b"datagram over IPv6");
    assert_eq!((reply.as_slice(), from), (&b"datagram over IPv6"[..], "[fd00:7::2]:7".parse().unwrap()));

    // A port not served: the stack answers RST.
    let refused = ns.run(|| TcpStream::connect_timeout(&"10.7.0.2:8".parse().unwrap(), READY)).unwrap();
    assert_eq!(refused.unwrap_err().kind(), io::ErrorKind::ConnectionRefused);

    serve.signal(libc::SIGUSR1);
    serve.signal(libc::SIGTERM);
    let out = serve.finish(READY);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(
        out.stderr.contains(
            "serving echo on tcp 7, 9, udp 7 at 10.7.0.2, fd00:7::2 (TUN ustack0, kernel side 10.7.0.1, fd00:7::1)"
        ),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("SIGTERM: closing every connection"), "{}", out.stderr);
    assert!(!out.stderr.contains("warning: running in the host's network namespace"), "{}", out.stderr);
}

#[test]
fn serve_discard_reads_and_closes() {
    ustack::require_tun!();
    let ns = NetNs::new().unwrap();
    let mut serve = ustack_in(&ns, &["serve", "--app", "discard", "--tcp", "9", "--tun", "ustackd0"]);
    let stream = connect_when_ready(&ns, &mut serve, "10.7.0.2:9".parse().unwrap());
    assert_eq!(tcp_echo(stream, b"into the void\n"), b"");
    serve.signal(libc::SIGINT);
    let out = serve.finish(READY);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.stderr.contains("serving discard on tcp 9"), "{}", out.stderr);
}

/// A kernel TCP listener on `bind` (a wildcard address, so it works before the TUN and
/// its 10.7.0.1 exist) for one connection: reads until the client's FIN, answers with
/// `reply(what it read)`, closes. Gives what it read and the client's address.
fn kernel_tcp_server(ns: &NetNs, bind: &'static str, reply: fn(&[u8]) -> Vec<u8>) -> JoinHandle<(Vec<u8>, SocketAddr)> {
    let listener = ns.run(move || TcpListener::bind(bind)).unwrap().unwrap();
    listener.set_nonblocking(true).unwrap();
    thread::spawn(move || {
        let deadline = Instant::now() + READY;
        let (mut conn, peer) = loop {
            match listener.accept() {
                Ok(accepted) => break accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("kernel accept: {e}"),
            }
        };
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(READY)).unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        conn.write_all(&reply(&got)).unwrap();
        (got, peer)
    })
}

#[test]
fn connect_sends_stdin_and_prints_the_reply() {
    ustack::require_tun!();
    let ns = NetNs::new().unwrap();
    let server = kernel_tcp_server(&ns, "0.0.0.0:5000", |got| format!("kernel got {} bytes\n", got.len()).into_bytes());
    let mut client = ustack_in(&ns, &["connect", "10.7.0.1:5000"]);
    client.write_stdin(b"hello from ustack\n");
    let out = client.finish(DEADLINE);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, "kernel got 18 bytes\n");
    let (got, peer) = server.join().unwrap();
    assert_eq!(got, b"hello from ustack\n");
    assert_eq!(peer.ip().to_string(), "10.7.0.2");
    assert_eq!(out.stderr, "", "a clean run is quiet");
}

/// SIGTERM (or SIGINT) to `ustack connect` closes its connection as `serve` closes its own:
/// the kernel peer reads end of stream, instead of staying ESTABLISHED with a peer that
/// vanished with its TUN.
#[test]
fn connect_closes_its_connection_on_sigterm() {
    ustack::require_tun!();
    let ns = NetNs::new().unwrap();
    let listener = ns.run(|| TcpListener::bind("0.0.0.0:5002")).unwrap().unwrap();
    let (got_data, data_seen) = mpsc::channel();
    let kernel = thread::spawn(move || -> io::Result<io::Result<Vec<u8>>> {
        let (mut conn, _) = listener.accept()?;
        conn.set_read_timeout(Some(READY))?;
        let mut hello = [0; 6];
        conn.read_exact(&mut hello)?;
        let _ = got_data.send(());
        // Blocks until the client's FIN (Ok) or RST (an error), or READY passes.
        let mut rest = Vec::new();
        Ok(conn.read_to_end(&mut rest).map(|_| rest))
    });
    let mut client = ustack_in(&ns, &["connect", "10.7.0.1:5002"]);
    client.write_stdin(b"hello\n");
    data_seen.recv_timeout(READY).expect("the kernel got the data");
    assert!(client.running(), "standard input is still open: the connection stays up");
    client.signal(libc::SIGTERM);
    let end = kernel.join().unwrap().expect("kernel socket");
    assert_eq!(end.expect("the kernel reads end of stream (a FIN), not a timeout or reset"), b"");
    let out = client.finish(DEADLINE);
    assert_eq!(out.code(), Some(128 + 15), "the status a shell gives a process SIGTERM ended: {out:?}");
}

/// `--gateway`: a destination outside the stack's subnets goes through the kernel side,
/// which routes it (here to an address of its own on another network); without a
/// gateway the same connect is ENETUNREACH, as Linux says without a default route.
#[test]
fn connect_reaches_another_network_through_the_gateway_and_without_one_is_enetunreach() {
    ustack::require_tun!();
    let ns = NetNs::new().unwrap();
    for args in [&["link", "set", "lo", "up"][..], &["addr", "add", "10.50.0.1/32", "dev", "lo"]] {
        let status = ns.run(|| Command::new("ip").args(args).status()).unwrap().expect("ip (iproute2)");
        assert!(status.success(), "ip {args:?}");
    }
    let unrouted = ustack_in(&ns, &["connect", "10.50.0.1:5003"]).finish(DEADLINE);
    assert_eq!(unrouted.code(), Some(1), "{unrouted:?}");
    assert!(unrouted.stderr.contains("ENETUNREACH"), "{}", unrouted.stderr);

    let server = kernel_tcp_server(&ns, "10.50.0.1:5003", |got| got.to_ascii_uppercase());
    let mut client = ustack_in(&ns, &["connect", "--gateway", "10.7.0.1", "10.50.0.1:5003"]);
    client.write_stdin(b"through the gateway\n");
    let out = client.finish(DEADLINE);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, "THROUGH THE GATEWAY\n");
    assert_eq!(server.join().unwrap().1.ip().to_string(), "10.7.0.2");

    // A network the kernel has no route to either: forwarding, it answers the SYN with
    // ICMP "net unreachable", and the connect fails with ENETUNREACH at once, as Linux's
    // does (tcp_v4_err), not after its 10 s timeout.
    let forwarding = ns.run(|| Command::new("sysctl").args(["-qw", "net.ipv4.ip_forward=1"]).status()).unwrap();
    assert!(forwarding.expect("sysctl").success());
    let unreachable = ustack_in(&ns, &["connect", "--gateway", "10.7.0.1", "10.99.0.1:5003"]).finish(DEADLINE);
    assert_eq!(unreachable.code(), Some(1), "{unreachable:?}");
    assert!(unreachable.stderr.contains("ENETUNREACH"), "{}", unreachable.stderr);
}

#[test]
fn connect_over_ipv6() {
    ustack::require_tun!();
    let ns = NetNs::new().unwrap();
    let server = kernel_tcp_server(&ns, "[::]:5001", <[u8]>::to_vec);
    let mut client = ustack_in(&ns, &["connect", "--tun", "ustack6", "[fd00:7::1]:5001"]);
    client.write_stdin(b"v6");
    let out = client.finish(DEADLINE);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, "v6");
    assert_eq!(server.join().unwrap().1.ip().to_string(), "fd00:7::2");
}

#[test]
fn connect_to_a_closed_port_is_refused() {
    ustack::require_tun!();
    let ns = NetNs::new().unwrap();
    let client = ustack_in(&ns, &["connect", "10.7.0.1:5002"]);
    let out = client.finish(DEADLINE);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert_eq!(out.stderr, "ustack: connect 10.7.0.1:5002: ECONNREFUSED (Connection refused)\n");
    assert_eq!(out.stdout, "");
}

#[test]
fn connect_times_out_when_nobody_answers() {
    ustack::require_tun!();
    let ns = NetNs::new().unwrap();
    // 10.7.0.9 is routed into the TUN but is nobody's: the kernel drops the SYNs.
    let client = ustack_in(&ns, &["connect", "--timeout", "0.5", "10.7.0.9:7"]);
    let out = client.finish(DEADLINE);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert_eq!(out.stderr, "ustack: connect 10.7.0.9:7: ETIMEDOUT (Connection timed out)\n");
}

#[test]
fn connect_udp_sends_a_datagram_per_chunk() {
    ustack::require_tun!();
    let ns = NetNs::new().unwrap();
    let socket = ns.run(|| UdpSocket::bind("0.0.0.0:5003")).unwrap().unwrap();
    socket.set_read_timeout(Some(READY)).unwrap();
    let (got_tx, got_rx) = mpsc::channel();
    let server = thread::spawn(move || {
        let mut buf = [0; 2048];
        for _ in 0..2 {
            let (n, from) = socket.recv_from(&mut buf).unwrap();
            got_tx.send(buf[..n].to_vec()).unwrap();
            socket.send_to(&[b"re:", &buf[..n]].concat(), from).unwrap();
        }
    });
    let mut client = ustack_in(&ns, &["connect", "--udp", "--wait", "300", "10.7.0.1:5003"]);
    // One chunk at a time: the second is written only once the first has arrived, so
    // the client cannot read them as one.
    client.write_stdin(b"one\n");
    assert_eq!(got_rx.recv_timeout(READY).unwrap(), b"one\n");
    client.write_stdin(b"two\n");
    assert_eq!(got_rx.recv_timeout(READY).unwrap(), b"two\n");
    server.join().unwrap();
    let out = client.finish(DEADLINE);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, "re:one\nre:two\n");
}

// ---- Seeing inside: --trace, --pcap, --show-demux, the backlog, --app http ----

use ustack::packet::{Summary, TcpFlags, Transport, decode};

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ustack-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every packet of a pcap file ustack wrote, decoded; the file must be LINKTYPE_RAW.
fn read_pcap(path: &Path) -> Vec<Summary> {
    let mut reader = pcap_file::pcap::PcapReader::new(File::open(path).unwrap()).unwrap();
    assert_eq!(reader.header().datalink, pcap_file::DataLink::RAW, "{}", path.display());
    let mut packets = Vec::new();
    while let Some(packet) = reader.next_packet() {
        packets.push(decode(&packet.unwrap().data));
    }
    packets
}

fn count_tcp(packets: &[Summary], flags: impl Fn(TcpFlags) -> bool) -> usize {
    packets.iter().filter(|p| matches!(p.transport(), Some(Transport::Tcp(t)) if flags(t.flags))).count()
}

/// `ustack serve ARGS` in `ns`, once it logs that it is serving (its TUN, addresses and
/// listeners are all up by then).
fn serve_in(ns: &NetNs, args: &[&str]) -> Proc {
    let serve = ustack_in(ns, args);
    serve.expect_stderr("] serving ", READY);
    serve
}

/// SIGTERM, and a clean exit.
fn stop(serve: Proc) -> Finished {
    serve.signal(libc::SIGTERM);
    let out = serve.finish(READY);
    assert_eq!(out.code(), Some(0), "{out:?}");
    out
}

/// The issue's "done when": five kernel clients at once against a backlog of 1 and a slow
/// accept(). SYNs beyond the queues are dropped and retransmitted by the clients, every
/// client gets its echo in the end, and the trace, the logs and the pcap show all of it.
#[test]
fn serve_backlog_overflow_traced_and_recorded() {
    ustack::require_tun!();
    let started = Instant::now();
    let ns = NetNs::new().unwrap();
    let dir = scratch("backlog");
    let pcap = dir.join("s.pcap");
    let serve = serve_in(
        &ns,
        &[
            "serve",
            "--backlog",
            "1",
            "--accept-delay",
            "2000",
            "--tcp",
            "7100",
            "--trace",
            "--pcap",
            pcap.to_str().unwrap(),
        ],
    );
    // Clients retransmit a dropped SYN after 1 s, then (Linux's defaults) 1 s apart four
    // times, then backing off; accept() takes one connection per 2 s.
    let patience = Duration::from_secs(30);
    let barrier = Arc::new(Barrier::new(5));
    let clients: Vec<_> = (0..5)
        .map(|i| {
            let (barrier, ns) = (barrier.clone(), ns.clone());
            thread::spawn(move || {
                ns.run(move || {
                    barrier.wait();
                    let mut stream = TcpStream::connect_timeout(&"10.7.0.2:7100".parse().unwrap(), patience)?;
                    stream.set_read_timeout(Some(patience))?;
                    stream.write_all(format!("client {i}\n").as_bytes())?;
                    stream.shutdown(Shutdown::Write)?;
                    let mut back = String::new();
                    stream.read_to_string(&mut back)?;
                    io::Result::Ok(back)
                })
                .unwrap()
            })
        })
        .collect();
    for (i, client) in clients.into_iter().enumerate() {
        let back = client.join().unwrap().unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert_eq!(back, format!("client {i}\n"));
    }
    let echoed = started.elapsed();
    let out = stop(serve);
    let err = &out.stderr;
    let syns_traced = err.lines().filter(|l| l.starts_with("in  ") && l.contains(": Flags [S], seq")).count();
    assert!(syns_traced >= 5, "{syns_traced} SYNs traced:\n{err}");
    assert!(err.lines().any(|l| l.starts_with("out ") && l.contains("Flags [S.]")), "{err}");
    assert!(
        err.contains("SYN to listener #3: SYN queue full, dropped") || err.contains("accept queue full, dropped"),
        "{err}"
    );
    assert!(err.contains("handshake complete, RTT "), "{err}");
    assert_eq!(err.matches("tcp 7100: accepted 10.7.0.1:").count(), 5, "{err}");
    assert!(err.contains("accept queue now "), "{err}");

    let packets = read_pcap(&pcap);
    let syns = count_tcp(&packets, |f| f.has(TcpFlags::SYN) && !f.has(TcpFlags::ACK));
    assert!(syns >= 5, "{syns} SYNs in the pcap");
    assert_eq!(syns, syns_traced, "the trace and the pcap see the same packets");

    let inspected = ustack(&["inspect", "--handshakes", pcap.to_str().unwrap()]);
    assert_eq!(inspected.code(), Some(0), "{inspected:?}");
    assert!(inspected.stdout.matches("10.7.0.2:7100").count() >= 5, "{}", inspected.stdout);
    eprintln!("five clients echoed after {echoed:?}, test done after {:?}", started.elapsed());
    let _ = std::fs::remove_dir_all(dir);
}

/// --on-overflow rst is Linux's tcp_abort_on_overflow=1: it resets only the handshake's
/// last ACK that finds the accept queue full (tests/demux.rs shows that, on the wire). A
/// SYN that finds it full is still dropped, so a kernel client's connect() is not refused:
/// it retransmits, and here, with nothing accepted for a minute, times out.
#[test]
fn serve_on_overflow_rst_still_drops_a_syn_that_finds_the_accept_queue_full() {
    ustack::require_tun!();
    let ns = NetNs::new().unwrap();
    let serve =
        serve_in(&ns, &["serve", "--tcp", "7", "--backlog", "1", "--accept-delay", "60000", "--on-overflow", "rst"]);
    let connect = |timeout| ns.run(|| TcpStream::connect_timeout(&"10.7.0.2:7".parse().unwrap(), timeout)).unwrap();
    // Nothing is accepted for a minute: backlog + 1 = 2 connections fill the accept queue.
    let waiting: Vec<TcpStream> = (0..2).map(|_| connect(READY).unwrap()).collect();
    serve.expect_stderr("to listener #3's accept queue: 2/2", READY);
    // The SYN and its retransmission after 1 s are dropped: no RST refuses the connect().
    let third = connect(Duration::from_millis(1500));
    assert_eq!(third.err().map(|e| e.kind()), Some(io::ErrorKind::TimedOut));
    drop(waiting);
    let out = stop(serve);
    assert!(out.stderr.contains("SYN to listener #3: accept queue full, dropped"), "{}", out.stderr);
    assert!(!out.stderr.contains("accept queue full, answered with RST"), "{}", out.stderr);
}

/// A SYN from `from` to 10.7.0.2:`port`, sent through a raw socket (run it inside the
/// namespace): the SYN-ACK goes to an address nobody has, so the connection stays half-open.
fn spoofed_syn(from: [u8; 4], port: u16) -> io::Result<()> {
    let raw = ustack_testkit::spoof::raw_ipv4_socket()?;
    let mut packet = Vec::new();
    etherparse::PacketBuilder::ipv4(from, [10, 7, 0, 2], 64)
        .tcp(40000, port, 1, 64240)
        .syn()
        .write(&mut packet, &[])
        .map_err(io::Error::other)?;
    ustack_testkit::spoof::send_ipv4(&raw, &packet, [10, 7, 0, 2])
}

/// `--syn-cookies`: with a backlog of 1 and one half-open connection filling the SYN
/// queue, a kernel client gets in at once through a SYN cookie (on, the default); with
/// `off` its SYN and the retransmission 1 s later are dropped, so connect() times out.
#[test]
fn serve_syn_cookies_off_drops_syns_beyond_the_syn_queue() {
    ustack::require_tun!();
    let ns = NetNs::new().unwrap();
    for cookies in ["on", "off"] {
        // One shard: one SYN queue of 1 to fill (each shard would have its own).
        let serve =
            serve_in(&ns, &["serve", "--tcp", "7", "--backlog", "1", "--syn-cookies", cookies, "--shards", "1"]);
        ns.run(|| spoofed_syn([10, 7, 0, 9], 7)).unwrap().unwrap();
        serve.expect_stderr("admitted, SYN queue 1/1", READY);
        let started = Instant::now();
        let connected =
            ns.run(|| TcpStream::connect_timeout(&"10.7.0.2:7".parse().unwrap(), Duration::from_millis(2500))).unwrap();
        let took = started.elapsed();
        let out = stop(serve);
        if cookies == "on" {
            assert!(connected.is_ok(), "{connected:?}");
            assert!(took < Duration::from_millis(900), "a cookie answers the first SYN: {took:?}");
            assert!(out.stderr.contains("SYN queue full, answered with a SYN cookie"), "{}", out.stderr);
        } else {
            assert_eq!(connected.map_err(|e| e.kind()).err(), Some(io::ErrorKind::TimedOut));
            assert!(out.stderr.contains("SYN cookies off"), "{}", out.stderr);
            // The first SYN and at least its retransmission after 1 s.
            let dropped = out.stderr.matches("SYN queue full, dropped; the client will retransmit").count();
            assert!(dropped >= 2, "{dropped} SYNs dropped:\n{}", out.stderr);
            assert!(!out.stderr.contains("answered with a SYN cookie"), "{}", out.stderr);
        }
    }
}

/// --show-demux prints the table at start (the listener) and when a connection comes;
/// SIGUSR1 prints it once more.
#[test]
fn serve_show_demux_prints_the_table_as_it_changes() {
    ustack::require_tun!();
    let ns = NetNs::new().unwrap();
    // One shard: the table without the SHARD column (serve_shards_spread_... has it).
    let serve = serve_in(&ns, &["serve", "--tcp", "7", "--show-demux", "--shards", "1"]);
    let listener_row =
        |text: &str| text.lines().any(|l| l.starts_with("tcp ") && l.contains("[::]:7 ") && l.contains("LISTEN"));
    let start = serve.expect_stdout_with("listener row", READY, |t| t.contains("PROTO  LOCAL") && listener_row(t));
    assert!(start.starts_with("demux table at "), "{start}");

    let stream = ns.run(|| TcpStream::connect_timeout(&"10.7.0.2:7".parse().unwrap(), READY)).unwrap().unwrap();
    let client = stream.local_addr().unwrap().to_string();
    let row = |text: &str| {
        text.lines().any(|l| {
            l.starts_with("tcp ") && l.contains("10.7.0.2:7 ") && l.contains(&client) && l.contains("ESTABLISHED")
        })
    };
    serve.expect_stdout_with(&format!("a row for {client}"), READY, row);

    serve.signal(libc::SIGUSR1);
    let usr1 = |t: &str| t.find("(SIGUSR1):").map(|at| t[at..].to_string());
    let text = serve
        .expect_stdout_with("the SIGUSR1 table", READY, |t| usr1(t).is_some_and(|table| table.contains("\npackets: ")));
    let after = usr1(&text).unwrap();
    let after = after.as_str();
    assert!(listener_row(after) && row(after), "{after}");
    drop(stream);
    stop(serve);
}

/// The issue's "done when" for shards: `serve --shards 2` with 100 kernel clients holds
/// them on both shards, as the demux table shows (a SHARD column; the listener on each
/// shard); every client gets its echo, and UDP is answered from a sharded stack too.
#[test]
fn serve_shards_spread_kernel_clients_over_both_shards() {
    ustack::require_tun!();
    const CLIENTS: usize = 100;
    let ns = NetNs::new().unwrap();
    let mut serve = serve_in(&ns, &["serve", "--tcp", "7", "--udp", "7", "--shards", "2"]);
    serve.expect_stderr("] 2 shards", READY);
    let addr: SocketAddr = "10.7.0.2:7".parse().unwrap();
    let mut clients = vec![connect_when_ready(&ns, &mut serve, addr)];
    while clients.len() < CLIENTS {
        clients.push(ns.run(move || TcpStream::connect_timeout(&addr, READY)).unwrap().unwrap());
    }
    for (i, client) in clients.iter_mut().enumerate() {
        client.set_read_timeout(Some(READY)).unwrap();
        let hello = format!("hello {i}\n");
        client.write_all(hello.as_bytes()).unwrap();
        let mut back = vec![0; hello.len()];
        client.read_exact(&mut back).unwrap();
        assert_eq!(back, hello.as_bytes());
    }
    for data in [&b"one"[..], b"two", b"three"] {
        assert_eq!(udp_echo(&ns, addr, data).0, data);
    }

    serve.signal(libc::SIGUSR1);
    let usr1 = |t: &str| t.find("(SIGUSR1):").map(|at| t[at..].to_string());
    let text = serve.expect_stdout_with("the SIGUSR1 table", READY, |t| {
        usr1(t).is_some_and(|table| table.contains("\nframes forwarded between shards: "))
    });
    let table = usr1(&text).unwrap();
    assert!(table.lines().nth(1).is_some_and(|l| l.starts_with("SHARD  PROTO  LOCAL")), "{table}");
    let rows = |shard: &str, what: &str| {
        table.lines().filter(|l| l.split_whitespace().next() == Some(shard) && l.contains(what)).count()
    };
    for shard in ["0", "1"] {
        assert_eq!(rows(shard, "LISTEN"), 1, "a listener on shard {shard}:\n{table}");
    }
    let (on_0, on_1) = (rows("0", "ESTABLISHED"), rows("1", "ESTABLISHED"));
    assert_eq!(on_0 + on_1, CLIENTS, "{table}");
    // By a keyed hash, each shard's share of 100 is binomial: below 20 once in 10^9 runs.
    assert!(on_0 >= 20 && on_1 >= 20, "{on_0} on shard 0, {on_1} on shard 1:\n{table}");
    drop(clients);
    stop(serve);
}

/// A kernel client's HTTP request to `serve --app http`: the whole response, and the
/// client's own address.
fn http(ns: &NetNs, to: &'static str, request: Vec<u8>) -> (String, SocketAddr) {
    ns.run(move || {
        let mut stream = TcpStream::connect_timeout(&to.parse().unwrap(), READY).unwrap();
        stream.set_read_timeout(Some(READY)).unwrap();
        let me = stream.local_addr().unwrap();
        stream.write_all(&request).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        (String::from_utf8(response).unwrap(), me)
    })
    .unwrap()
}

/// Status code, headers (lower-case names) and body of a response.
fn split_response(response: &str) -> (u16, Vec<(String, String)>, &str) {
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head: {response:?}"));
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap();
    assert!(status.starts_with("HTTP/1.1 "), "{status}");
    let code = status[9..12].parse().unwrap();
    let headers = lines
        .map(|l| l.split_once(": ").unwrap())
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
        .collect::<Vec<_>>();
    let length: usize = headers.iter().find(|(n, _)| n == "content-length").unwrap().1.parse().unwrap();
    assert_eq!(length, body.len(), "{response}");
    (code, headers, body)
}

#[test]
fn serve_http_shows_the_connection_and_the_demux_table() {
    ustack::require_tun!();
    let ns = NetNs::new().unwrap();
    let serve = serve_in(&ns, &["serve", "--app", "http", "--tcp", "8080"]);
    let get = |extra: &str| format!("GET / HTTP/1.1\r\nHost: 10.7.0.2:8080\r\n{extra}\r\n").into_bytes();

    let (response, me) = http(&ns, "10.7.0.2:8080", get(""));
    let (code, headers, body) = split_response(&response);
    assert_eq!(code, 200, "{response}");
    assert!(headers.contains(&("connection".into(), "close".into())), "{response}");
    assert!(body.contains(&format!("tcp  10.7.0.2:8080 (ustack)  <->  {me} (you)")), "{body}");
    assert!(body.contains("SYN-RECEIVED") && body.contains("ESTABLISHED"), "{body}");
    assert!(body.contains("Handshake RTT: ") && body.contains(" ms"), "{body}");
    assert!(body.contains("PROTO  LOCAL") && body.contains("LISTEN"), "{body}");
    assert!(body.lines().any(|l| l.contains(&me.to_string()) && l.contains("ESTABLISHED")), "{body}");

    let (response, me) = http(&ns, "10.7.0.2:8080", get("Accept: application/json\r\n"));
    let (code, headers, body) = split_response(&response);
    assert_eq!(code, 200, "{response}");
    assert!(headers.contains(&("content-type".into(), "application/json".into())), "{response}");
    let json = Json::parse(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(json.get("connection").get("remote").str(), me.to_string());
    assert_eq!(json.get("connection").get("local").str(), "10.7.0.2:8080");
    let states: Vec<&str> = json.get("timeline").array().iter().map(|s| s.get("state").str()).collect();
    assert!(states.contains(&"ESTABLISHED"), "{states:?}");
    assert!(json.get("handshake_rtt_ms").num() > 0.0, "{body}");
    let rows = json.get("demux").get("rows").array();
    assert!(
        rows.iter().any(|r| r.get("state").str() == "LISTEN" && r.get("queues").get("backlog").num() == 128.0),
        "{body}"
    );
    assert!(json.get("demux").get("counters").get("admitted").num() >= 2.0, "{body}");

    for (request, status) in [
        (b"garbage\r\n\r\n".to_vec(), 400),
        (b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400), // no Host
        (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 404),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi".to_vec(), 405),
        ([&b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: "[..], &[b'a'; 9000], b"\r\n\r\n"].concat(), 431),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n".to_vec(), 505),
    ] {
        let (response, _) = http(&ns, "10.7.0.2:8080", request.clone());
        let (code, headers, _) = split_response(&response);
        assert_eq!(code, status, "{:?}: {response}", String::from_utf8_lossy(&request[..40.min(request.len())]));
        if code == 405 {
            assert!(headers.contains(&("allow".into(), "GET, HEAD".into())), "{response}");
        }
    }
    let (response, _) = http(&ns, "[fd00:7::2]:8080", b"HEAD / HTTP/1.0\r\n\r\n".to_vec());
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n") && response.ends_with("\r\n\r\n"), "{response}");

    let out = stop(serve);
    assert!(out.stderr.contains("\"GET / HTTP/1.1\" 200"), "{}", out.stderr);
    assert!(out.stderr.contains("\"garbage\" 400"), "{}", out.stderr);
    assert!(!out.stderr.contains("Flags ["), "no packet trace without --trace: {}", out.stderr);
}

#[test]
fn connect_traces_and_records() {
    ustack::require_tun!();
    let ns = NetNs::new().unwrap();
    let dir = scratch("connect");
    let pcap = dir.join("c.pcap");
    let server = kernel_tcp_server(&ns, "0.0.0.0:5004", <[u8]>::to_vec);
    let mut client = ustack_in(&ns, &["connect", "--trace", "--pcap", pcap.to_str().unwrap(), "10.7.0.1:5004"]);
    client.write_stdin(b"traced\n");
    let out = client.finish(DEADLINE);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, "traced\n", "standard output carries only the data");
    server.join().unwrap();
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with("out ") && l.contains(" > 10.7.0.1.5004: Flags [S], seq")),
        "{}",
        out.stderr
    );
    assert!(
        lines.iter().any(|l| l.starts_with("in  ") && l.contains("10.7.0.1.5004 > ") && l.contains("Flags [S.]")),
        "{}",
        out.stderr
    );
    assert!(lines.iter().all(|l| l.starts_with("in  ") || l.starts_with("out ")), "only trace lines: {}", out.stderr);
    let packets = read_pcap(&pcap);
    assert_eq!(packets.len(), lines.len(), "the pcap holds what was traced");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn demo_with_a_pcap_file_that_cannot_be_created_fails_at_once() {
    for sim in [&[][..], &["--sim"]] {
        let out = ustack(&[&["demo", "--pcap", "/nonexistent/dir/d.pcap"], sim].concat());
        assert_eq!(out.code(), Some(1), "{out:?}");
        assert_eq!(out.stderr, "ustack: --pcap /nonexistent/dir/d.pcap: No such file or directory (os error 2)\n");
        assert_eq!(out.stdout, "");
    }
}

#[test]
fn a_pcap_file_that_cannot_be_created_fails_before_the_tun() {
    ustack::require_tun!();
    let ns = NetNs::new().unwrap();
    let out = ustack_in(&ns, &["serve", "--pcap", "/nonexistent/dir/s.pcap"]).finish(READY);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert_eq!(
        out.stderr.lines().last(),
        Some("ustack: --pcap /nonexistent/dir/s.pcap: No such file or directory (os error 2)")
    );
}

// ---- The live view: /ui and /api/* ----

/// `GET path` from a kernel client in `ns` to `to`: status and body.
fn get(ns: &NetNs, to: &'static str, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 10.7.0.2\r\n\r\n").into_bytes();
    let (response, _) = http(ns, to, request);
    let (code, _, body) = split_response(&response);
    (code, body.to_string())
}

/// The listener on `local` in a `/api/listeners` answer.
fn listener<'a>(listeners: &'a Json, local: &str) -> &'a Json {
    listeners
        .get("listeners")
        .array()
        .iter()
        .find(|l| l.get("local").str() == local)
        .unwrap_or_else(|| panic!("no listener {local} in {listeners:?}"))
}

/// Polls `/api/listeners` on the live view's port until `check` holds for it (awaiting
/// what the burst does, not sleeping for it), up to 30 s.
fn await_listeners(ns: &NetNs, what: &str, check: impl Fn(&Json) -> bool) -> Json {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = get(ns, "10.7.0.2:8080", "/api/listeners");
        assert_eq!(code, 200, "{body}");
        let json = Json::parse(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        if check(&json) {
            return json;
        }
        assert!(Instant::now() < deadline, "{what}: not within 30 s: {body}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// `serve --app http` on port 80 with a backlog of 1 and a slow accept(), and the live
/// view on 8080 (no delay there, so it answers while port 80 is backed up).
fn serve_live(ns: &NetNs) -> Proc {
    serve_in(
        ns,
        &["serve", "--app", "http", "--tcp", "80", "--backlog", "1", "--accept-delay", "400", "--ui-port", "8080"],
    )
}

/// `clients` kernel clients at once, each a `GET /` to port 80; joined for their status.
fn burst(ns: &NetNs, clients: usize) -> Vec<JoinHandle<u16>> {
    let barrier = Arc::new(Barrier::new(clients));
    (0..clients)
        .map(|_| {
            let (barrier, ns) = (barrier.clone(), ns.clone());
            thread::spawn(move || {
                let request = b"GET / HTTP/1.1\r\nHost: 10.7.0.2\r\n\r\n".to_vec();
                ns.run(move || {
                    barrier.wait();
                    let mut stream =
                        TcpStream::connect_timeout(&"10.7.0.2:80".parse().unwrap(), Duration::from_secs(30)).unwrap();
                    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    stream.write_all(&request).unwrap();
                    let mut response = String::new();
                    stream.read_to_string(&mut response).unwrap();
                    response[9..12].parse().unwrap()
                })
                .unwrap()
            })
        })
        .collect()
}

/// The JSON behind /ui, read by a kernel client during and after a burst against a
/// backlog of 1: the accept queue's history fills and drains, the demux table names each
/// row's socket and state, the handshakes have their three steps, the counters count.
#[test]
fn serve_live_view_json_endpoints_follow_a_burst() {
    ustack::require_tun!();
    let ns = NetNs::new().unwrap();
    let serve = serve_live(&ns);
    let clients = burst(&ns, 6);
    let accept_now = |j: &Json| listener(j, "[::]:80").get("accept").num();
    let during = await_listeners(&ns, "the accept queue fills", |j| accept_now(j) >= 1.0);
    assert_eq!(listener(&during, "[::]:80").get("accept_limit").num(), 2.0);
    for client in clients {
        assert_eq!(client.join().unwrap(), 200);
    }
    // The sampler has seen the queue fill and drain: a non-zero sample, then zero.
    let after = await_listeners(&ns, "the accept queue drains", |j| {
        let samples = listener(j, "[::]:80").get("samples").array();
        let accept = |s: &Json| s.array()[2].num();
        let peak = samples.iter().position(|s| accept(s) >= 1.0);
        peak.is_some_and(|at| samples[at..].iter().any(|s| accept(s) == 0.0)) && accept_now(j) == 0.0
    });
    let samples = listener(&after, "[::]:80").get("samples").array();
    assert!(samples.len() <= 600, "bounded history");
    let times: Vec<f64> = samples.iter().map(|s| s.array()[0].num()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "samples oldest first: {times:?}");
    assert_eq!(listener(&after, "[::]:8080").get("backlog").num(), 128.0);

    let (code, body) = get(&ns, "10.7.0.2:8080", "/api/demux");
    assert_eq!(code, 200, "{body}");
    let demux = Json::parse(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let rows = demux.get("rows").array();
    let listening: Vec<&str> =
        rows.iter().filter(|r| r.get("state").str() == "LISTEN").map(|r| r.get("local").str()).collect();
    assert_eq!(listening, ["[::]:80", "[::]:8080"], "{body}");
    assert!(rows.iter().all(|r| !r.get("socket").str().is_empty() && !r.get("state").str().is_empty()), "{body}");

    let (code, body) = get(&ns, "10.7.0.2:8080", "/api/handshakes");
    assert_eq!(code, 200, "{body}");
    let handshakes = Json::parse(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let handshakes = handshakes.get("handshakes").array();
    assert!(!handshakes.is_empty() && handshakes.len() <= 8, "{body}");
    for h in handshakes {
        assert_eq!(h.get("opened_by").str(), "peer", "{body}");
        assert_eq!(h.get("local").str(), "10.7.0.2:80", "the live view's own connections are left out: {body}");
        assert!(h.get("remote").str().starts_with("10.7.0.1:"), "{body}");
        let (syn, syn_ack, ack) = (h.get("syn_ms").num(), h.get("syn_ack_ms").num(), h.get("ack_ms").num());
        assert!(syn <= syn_ack && syn_ack <= ack, "{body}");
    }

    let (code, body) = get(&ns, "10.7.0.2:8080", "/api/counters");
    assert_eq!(code, 200, "{body}");
    let counters = Json::parse(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert!(counters.get("admitted").num() >= 6.0, "{body}");
    // Six at once are more than a backlog of 1 takes: beyond the SYN queue, SYN cookies;
    // beyond the accept queue, dropped SYNs and ACKs.
    let turned_away = ["cookies_sent", "overflow_dropped", "ack_dropped"].map(|k| counters.get(k).num());
    assert!(turned_away.iter().sum::<f64>() >= 1.0, "{body}");
    for key in ["cookies_sent", "cookies_accepted", "overflow_reset", "ack_dropped", "tcp_no_socket"] {
        counters.get(key).num();
    }

    let (code, body) = get(&ns, "10.7.0.2:8080", "/api/nothing");
    assert_eq!(code, 404, "{body}");
    let (code, page) = get(&ns, "10.7.0.2:8080", "/ui");
    assert_eq!(code, 200);
    assert!(
        page.starts_with("<!DOCTYPE html>") && page.contains("fetch(") && page.contains("/api/listeners"),
        "{page}"
    );
    // GET / is as it was, on both ports.
    let (code, body) = get(&ns, "10.7.0.2:8080", "/");
    assert_eq!(code, 200);
    assert!(body.contains("Your connection, by its 5-tuple"), "{body}");
    let (code, body) = get(&ns, "10.7.0.2:80", "/api/counters");
    assert_eq!(code, 200, "the app's own port serves the live view too: {body}");
    stop(serve);
}

/// The `points` of each `<polyline ... class="CLASS">` in `html`, in order.
fn polylines<'a>(html: &'a str, class: &str) -> Vec<&'a str> {
    html.split("<polyline ")
        .skip(1)
        .filter_map(|rest| {
            let tag = &rest[..rest.find('>')?];
            tag.contains(&format!("class=\"{class}\"")).then(|| tag.split("points=\"").nth(1)?.split('"').next())?
        })
        .collect()
}

/// The part of the page about listener `local`: its card, up to the next one.
fn listener_card<'a>(dom: &'a str, local: &str) -> &'a str {
    let start = dom.find(&format!("data-local=\"{local}\"")).unwrap_or_else(|| panic!("no card for {local}:\n{dom}"));
    let rest = &dom[start..];
    let end = rest[1..].find("class=\"card listener\"").map_or(rest.len(), |i| i + 1);
    &rest[..end]
}

/// What a person sees on /ui, in headless Chromium run inside the namespace, while a
/// burst of kernel clients backs up a listener with a backlog of 1: the demux table has
/// rows, the listener's queue graph changes and, once the burst has drained, shows that
/// the accept queue filled (peak above zero) and is empty now; the counters and the
/// handshake ladders are there. Screenshots are kept in target/test-artifacts/
/// (live-ui-during.png, live-ui.png) with the last DOM (live-ui.html).
#[test]
fn serve_live_view_in_a_browser_shows_the_backlog_fill_and_drain() {
    ustack::require_tun!();
    let Some(browser) = ustack_testkit::browser::Browser::find() else { return };
    let browser = browser.with_script_time(1500);
    let ns = NetNs::new().unwrap();
    let serve = serve_live(&ns);
    let browser = browser.in_netns(&ns);
    let url = "http://10.7.0.2:8080/ui";
    let clients = burst(&ns, 8);
    await_listeners(&ns, "the accept queue fills", |j| listener(j, "[::]:80").get("accept").num() >= 1.0);
    let first = browser.dump_dom(url).expect("the page during the burst");
    let artifacts = ustack_testkit::browser::artifacts_dir();
    browser.screenshot(url, &artifacts.join("live-ui-during.png"), (1280, 1100)).expect("a screenshot");
    for client in clients {
        assert_eq!(client.join().unwrap(), 200);
    }
    await_listeners(&ns, "the accept queue drains", |j| listener(j, "[::]:80").get("accept").num() == 0.0);
    let second = browser.dump_dom(url).expect("the page after the burst");
    let shot = artifacts.join("live-ui.png");
    browser.screenshot(url, &shot, (1280, 1100)).expect("a screenshot");
    let _ = std::fs::write(artifacts.join("live-ui.html"), &second);
    eprintln!("screenshots: {} (after the burst), live-ui-during.png (during it)", shot.display());

    // The demux table: both listeners, each row with its socket and state.
    let table = &second[second.find("id=\"demux\"").expect("the demux table")..];
    let table = &table[..table.find("</table>").unwrap()];
    assert!(table.matches("<td>LISTEN</td>").count() >= 2, "{table}");
    assert!(table.contains("<td>[::]:80</td>") && table.contains("<td>#"), "{table}");

    // The queue graph of port 80: drawn, changed between the two looks, and telling of a
    // queue that filled and drained.
    let (before, after) = (listener_card(&first, "[::]:80"), listener_card(&second, "[::]:80"));
    let (lines_before, lines_after) = (polylines(before, "accept"), polylines(after, "accept"));
    assert_eq!(lines_after.len(), 1, "{after}");
    assert!(lines_after[0].split(' ').count() >= 4, "a line with points: {after}");
    assert_ne!(lines_before, lines_after, "the graph changes as the burst goes by");
    let peak: u32 = after
        .split("accept queue peak ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no peak in {after}"));
    assert!(peak >= 1, "the accept queue filled: {after}");
    assert!(after.contains("accept queue 0/2"), "and is empty now: {after}");

    // Counters and ladders.
    for counter in ["overflow_dropped", "cookies_sent", "overflow_reset", "admitted"] {
        assert!(second.contains(&format!("data-counter=\"{counter}\"")), "no {counter}:\n{second}");
    }
    let ladders = second.matches("class=\"ladder\"").count();
    assert!((1..=8).contains(&ladders), "{ladders} ladders:\n{second}");
    for label in [">SYN<", ">SYN-ACK<", ">ACK<"] {
        assert!(second.contains(label), "no arrow {label}:\n{second}");
    }
    assert!(second.contains("<p id=\"status\">updated at "), "the page reached serve: {second}");
    stop(serve);
}

/// Just enough JSON to check what `--app http` sends is JSON: a strict parser of RFC 8259
/// values (no dependency for one test).
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn parse(text: &str) -> Result<Json, String> {
        let mut p = JsonParser { s: text.as_bytes(), i: 0 };
        let value = p.value()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(format!("trailing bytes at {}", p.i));
        }
        Ok(value)
    }

    #[track_caller]
    fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(fields) => {
                &fields.iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("no {key} in {self:?}")).1
            }
            _ => panic!("not an object: {self:?}"),
        }
    }

    #[track_caller]
    fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            _ => panic!("not a string: {self:?}"),
        }
    }

    #[track_caller]
    fn num(&self) -> f64 {
        match self {
            Json::Num(n) => *n,
            _ => panic!("not a number: {self:?}"),
        }
    }

    #[track_caller]
    fn array(&self) -> &[Json] {
        match self {
            Json::Arr(items) => items,
            _ => panic!("not an array: {self:?}"),
        }
    }
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(|b| b" \t\r\n".contains(b)) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Result<(), String> {
        self.ws();
        if self.s.get(self.i) == Some(&b) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at {}", b as char, self.i))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        let rest = &self.s[self.i..];
        for (word, value) in [(&b"null"[..], Json::Null), (b"true", Json::Bool(true)), (b"false", Json::Bool(false))] {
            if rest.starts_with(word) {
                self.i += word.len();
                return Ok(value);
            }
        }
        match rest.first() {
            Some(b'"') => self.string().map(Json::Str),
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    items.push(self.value()?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(items));
                        }
                        _ => return Err(format!("bad array at {}", self.i)),
                    }
                }
            }
            Some(b'{') => {
                self.i += 1;
                let mut fields = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(fields));
                }
                loop {
                    self.ws();
                    let key = self.string()?;
                    self.eat(b':')?;
                    fields.push((key, self.value()?));
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(fields));
                        }
                        _ => return Err(format!("bad object at {}", self.i)),
                    }
                }
            }
            Some(b'-' | b'0'..=b'9') => {
                let start = self.i;
                while self.s.get(self.i).is_some_and(|b| b"+-.eE0123456789".contains(b)) {
                    self.i += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.i]).unwrap();
                let leading_zero = text.trim_start_matches('-').starts_with('0')
                    && text.trim_start_matches('-').len() > 1
                    && !text.trim_start_matches('-')[1..].starts_with('.');
                match text.parse::<f64>() {
                    Ok(n) if !leading_zero && !text.ends_with('.') && !text.contains(".e") => Ok(Json::Num(n)),
                    _ => Err(format!("bad number {text:?}")),
                }
            }
            _ => Err(format!("unexpected byte at {}", self.i)),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        if self.s.get(self.i) != Some(&b'"') {
            return Err(format!("expected a string at {}", self.i));
        }
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let b = *self.s.get(self.i).ok_or("unterminated string")?;
            self.i += 1;
            match b {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => {
                    let e = *self.s.get(self.i).ok_or("unterminated escape")?;
                    self.i += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'u' => {
                            let hex = self.s.get(self.i..self.i + 4).ok_or("short \\u")?;
                            let code = u32::from_str_radix(std::str::from_utf8(hex).unwrap(), 16)
                                .map_err(|e| e.to_string())?;
                            self.i += 4;
                            let c = char::from_u32(code).ok_or("surrogate \\u escape")?;
                            out.extend_from_slice(c.to_string().as_bytes());
                        }
                        _ => return Err(format!("bad escape at {}", self.i)),
                    }
                }
                0..0x20 => return Err(format!("control byte in a string at {}", self.i)),
                _ => out.push(b),
            }
        }
    }
}

#[test]
fn the_test_json_parser_is_strict() {
    let v = Json::parse(r#" {"a": [1, -2.5e3, null, true], "b": "x\"\u00e9"} "#).unwrap();
    assert_eq!(v.get("a").array()[1].num(), -2500.0);
    assert_eq!(v.get("b").str(), "x\"é");
    for bad in ["{", "[1,]", "{\"a\" 1}", "01", "\"\n\"", "{} x", "1."] {
        assert!(Json::parse(bad).is_err(), "{bad}");
    }
}

/// SIGTERM closes every connection as a process exit would: a connected kernel client
/// sees the server's FIN (end of stream, not a reset) before serve exits 0.
#[test]
fn serve_closes_connections_with_fin_on_sigterm() {
    ustack::require_tun!();
    let ns = NetNs::new().unwrap();
    let serve = serve_in(&ns, &["serve", "--tcp", "7"]);
    let (connected_tx, connected) = mpsc::channel();
    let client = ns
        .spawn(move || -> io::Result<usize> {
            let mut stream = TcpStream::connect_timeout(&"10.7.0.2:7".parse().unwrap(), READY)?;
            stream.set_read_timeout(Some(READY))?;
            stream.write_all(b"ping")?;
            let mut echo = [0; 4];
            stream.read_exact(&mut echo)?;
            connected_tx.send(()).unwrap();
            // Now wait for serve to go away: a FIN reads as 0, a RST as an error.
            stream.read(&mut [0; 16])
        })
        .unwrap();
    connected.recv_timeout(READY).expect("the client got its echo");
    let out = stop(serve);
    assert_eq!(client.join().unwrap().expect("no reset"), 0, "the client reads end of stream");
    assert!(out.stderr.contains("closing every connection"), "{}", out.stderr);
}

/// The TUN vanishing under a running serve is a clear error and exit 1 — no panic, no
/// spinning loop.
#[test]
fn serve_exits_1_when_its_tun_disappears() {
    ustack::require_tun!();
    let ns = NetNs::new().unwrap();
    let serve = serve_in(&ns, &["serve", "--tcp", "7", "--tun", "ustackgone0"]);
    ns.run(|| -> io::Result<()> {
        let mut netlink = ustack::sys::netlink::Netlink::open()?;
        let link = netlink.link_by_name("ustackgone0")?.expect("serve's TUN exists");
        netlink.delete_link(link.index)
    })
    .unwrap()
    .unwrap();
    let out = serve.finish(READY);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("ustack: ") && last.contains("ustackgone0"), "one clear line: {last}");
}

/// The issue's "done when": with packets lost and damaged both ways, serve still echoes
/// a mebibyte byte-exact to a kernel client.
#[test]
fn serve_echoes_a_mebibyte_byte_exact_through_injected_loss_and_corruption() {
    ustack::require_tun!();
    let ns = NetNs::new().unwrap();
    let serve = serve_in(&ns, &["serve", "--tcp", "7", "--drop-chance", "5", "--corrupt-chance", "1"]);
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let sent = data.clone();
    let echoed = ns
        .run(move || -> io::Result<Vec<u8>> {
            let stream = TcpStream::connect_timeout(&"10.7.0.2:7".parse().unwrap(), Duration::from_secs(10))?;
            stream.set_read_timeout(Some(Duration::from_secs(30)))?;
            let writer = stream.try_clone()?;
            let sender = thread::spawn(move || (&writer).write_all(&sent));
            // Read exactly as much as was sent: the echo is the point, not the close.
            let mut echoed = vec![0; 1 << 20];
            (&stream).read_exact(&mut echoed)?;
            sender.join().unwrap()?;
            Ok(echoed)
        })
        .unwrap()
        .expect("the echo finishes despite the faults");
    assert!(echoed == data, "byte-exact");
    stop(serve);
}
