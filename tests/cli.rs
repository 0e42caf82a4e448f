//! The `ustack` binary: help, usage errors, the demo, and (where TUN devices are
//! available) `serve` and `connect` against the kernel, each inside a network namespace
//! the test creates — nothing is configured in the host's namespace.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ustack::sys::NetNs;

const BIN: &str = env!("CARGO_BIN_EXE_ustack");
/// The longest any child process may run.
const DEADLINE: Duration = Duration::from_secs(30);
/// How long a test waits for `serve` to come up, or for a kernel socket call.
const READY: Duration = Duration::from_secs(10);

/// A child process whose output is collected as it comes (so it never blocks on a full
/// pipe), killed if the test ends early.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

/// What a finished process left.
#[derive(Debug)]
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

fn drain(mut from: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

impl Proc {
    fn spawn(mut command: Command) -> Proc {
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawning ustack");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().map(drain);
        let stderr = child.stderr.take().map(drain);
        Proc { child, stdin, stdout, stderr }
    }

    /// Closes standard input (EOF for the child).
    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    fn write_stdin(&mut self, data: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(data).unwrap();
        stdin.flush().unwrap();
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Waits for the child to exit, up to `timeout` (then kills it and fails).
    fn finish(mut self, timeout: Duration) -> Finished {
        self.close_stdin();
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let stderr = self.stderr.take().unwrap().join().unwrap();
                panic!("ustack still running after {timeout:?}; stderr:\n{stderr}");
            }
            thread::sleep(Duration::from_millis(10));
        };
        let stdout = self.stdout.take().unwrap().join().unwrap();
        let stderr = self.stderr.take().unwrap().join().unwrap();
        Finished { status, stdout, stderr }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

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
    for flag in ["--tun", "--addr", "--peer-addr", "--tcp", "--udp", "--app", "--backlog", "--mtu", "--tcp-buffer"] {
        assert!(out.stdout.contains(flag), "serve --help lacks {flag}");
    }
    let out = ustack(&["connect", "--help"]);
    for flag in ["--tun", "--addr", "--peer-addr", "--udp", "--timeout", "--wait", "HOST:PORT"] {
        assert!(out.stdout.contains(flag), "connect --help lacks {flag}");
    }
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
        (&["serve", "--app", "bogus"], "possible values: echo, discard"),
        (&["connect"], "<HOST:PORT>"),
        (&["connect", "--wait", "5", "10.7.0.1:7"], "--udp"),
        (&["demo", "--bogus"], "--bogus"),
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

fn assert_tour(out: &Finished) {
    assert_eq!(out.code(), Some(0), "demo failed: {out:?}");
    let text = out.stdout.to_lowercase();
    for topic in ["handshake", "echo", "udp", "econnrefused", "close", "recv() = 0", "time-wait", "established"] {
        assert!(text.contains(topic), "the demo does not mention {topic}:\n{}", out.stdout);
    }
    // The logs of the handshake appear inline.
    assert!(out.stdout.contains("· handshake:"), "{}", out.stdout);
    assert!(out.stdout.contains("SYN-RECEIVED -> ESTABLISHED"), "{}", out.stdout);
}

#[test]
fn demo_tours_handshake_echo_udp_refusal_and_close() {
    let started = Instant::now();
    let out = ustack(&["demo"]);
    assert!(started.elapsed() < DEADLINE);
    assert_tour(&out);
    if ustack::sys::tun_support().is_ok() {
        assert!(out.stdout.contains("Mode: the Linux kernel and ustack, over a TUN device"), "{}", out.stdout);
        // The kernel's RST, seen by ustack's connect().
        assert!(out.stdout.contains("ustack connects to port 9 of the kernel"), "{}", out.stdout);
    } else {
        assert!(out.stdout.contains("Mode: two ustack stacks"), "{}", out.stdout);
    }
}

#[test]
fn demo_over_the_wire_says_why() {
    let out = ustack(&["demo", "--wire", "--trace"]);
    assert_tour(&out);
    assert!(out.stdout.contains("Mode: two ustack stacks, joined by an in-memory wire"), "{}", out.stdout);
    assert!(out.stdout.contains("Why: --wire was given"), "{}", out.stdout);
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

    serve.signal(Signal::SIGUSR1);
    serve.signal(Signal::SIGTERM);
    let out = serve.finish(READY);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(
        out.stderr.contains(
            "serving echo on tcp 7, 9, udp 7 at 10.7.0.2, fd00:7::2 (TUN ustack0, kernel side 10.7.0.1, fd00:7::1)"
        ),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("SIGTERM: shutting down"), "{}", out.stderr);
    assert!(!out.stderr.contains("warning: running in the host's network namespace"), "{}", out.stderr);
}

#[test]
fn serve_discard_reads_and_closes() {
    ustack::require_tun!();
    let ns = NetNs::new().unwrap();
    let mut serve = ustack_in(&ns, &["serve", "--app", "discard", "--tcp", "9", "--tun", "ustackd0"]);
    let stream = connect_when_ready(&ns, &mut serve, "10.7.0.2:9".parse().unwrap());
    assert_eq!(tcp_echo(stream, b"into the void\n"), b"");
    serve.signal(Signal::SIGINT);
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
