//! `ustack run`: unmodified programs (nc, curl, Python, a C program) with their sockets on
//! ustack, each against the kernel in a network namespace the test creates.
//!
//! Needs root, a TUN device, the tools (nc, curl, python3, cc) and libustack_preload.so
//! (`cargo test` at the root builds it, in target/debug/deps where `ustack run` looks too;
//! alone: `cargo test -p ustack-preload -p ustack-cli`). Skips without root/TUN/tools,
//! fails under CI=true.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use ustack::sys::NetNs;
use ustack_testkit::process::Proc;

const BIN: &str = env!("CARGO_BIN_EXE_ustack");
/// How long a program may take to do what a step waits for.
const READY: Duration = Duration::from_secs(15);
/// The scripts the tests run, in crates/preload/tests/.
const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../preload/tests");

/// Whether the tests can run here: root with a TUN, the tools, the library. Skips (saying
/// why) or, under CI=true, fails.
fn can_run(tools: &[&str]) -> bool {
    // Where `ustack run` looks: beside the binary (cargo build) or in deps/ (cargo test).
    let library = Path::new(BIN).with_file_name("libustack_preload.so");
    let tested = Path::new(BIN).with_file_name("deps").join("libustack_preload.so");
    let mut missing: Vec<String> = tools
        .iter()
        .filter(|tool| {
            !Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
        })
        .map(|tool| tool.to_string())
        .collect();
    if !library.is_file() && !tested.is_file() {
        missing.push(format!("{} (cargo build -p ustack-preload)", library.display()));
    }
    let reason = match ustack::device::tun_support() {
        Err(reason) => Some(reason),
        Ok(()) if !missing.is_empty() => Some(format!("missing: {}", missing.join(", "))),
        Ok(()) => None,
    };
    let Some(reason) = reason else { return true };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true but `ustack run` cannot be tested: {reason}");
    }
    eprintln!("skipping: {reason}");
    false
}

/// `program args` in `ns` (setns between fork and exec); `keep` is an fd it inherits as
/// fd 10 (the test's kernel socket).
fn spawn_in(ns: &NetNs, program: &str, args: &[&str], keep: Option<RawFd>) -> Proc {
    let ns_fd = ns.as_fd().as_raw_fd();
    let mut command = Command::new(program);
    command.args(args).env_remove("RUST_LOG");
    // SAFETY: setns and dup2 are plain system calls, safe between fork and exec; the fds
    // stay open in the parent until the child is spawned.
    unsafe {
        command.pre_exec(move || {
            setns(BorrowedFd::borrow_raw(ns_fd), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            if let Some(fd) = keep
                && libc::dup2(fd, 10) < 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Proc::spawn(command)
}

/// `ustack run [run_args] -- program...` in `ns`.
fn run_in(ns: &NetNs, run_args: &[&str], program: &[&str], keep: Option<RawFd>) -> Proc {
    let mut args: Vec<&str> = vec!["run"];
    args.extend(run_args);
    args.push("--");
    args.extend(program);
    spawn_in(ns, BIN, &args, keep)
}

/// A kernel TCP connection to `addr` from inside `ns`, retried while the program's
/// listener is not there yet (the log line said it listens; its SYN may still be lost).
fn kernel_connect(ns: &NetNs, addr: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + READY;
    loop {
        match ns.run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(3))).unwrap() {
            Ok(stream) => {
                stream.set_read_timeout(Some(READY)).unwrap();
                return stream;
            }
            Err(e) if Instant::now() < deadline => {
                eprintln!("connect {addr}: {e}, again");
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("no connection to {addr} within {READY:?}: {e}"),
        }
    }
}

/// A kernel TCP echo server in `ns` on `port` (all addresses), serving one connection.
fn kernel_echo_server(ns: &NetNs, port: u16) -> JoinHandle<Vec<u8>> {
    let listener = ns.run(move || TcpListener::bind(("0.0.0.0", port))).unwrap().unwrap();
    thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(READY)).unwrap();
        let mut got = Vec::new();
        let mut buf = [0; 4096];
        loop {
            match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    conn.write_all(&buf[..n]).unwrap();
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("kernel echo server: {e}"),
            }
        }
        got
    })
}

/// A kernel UDP echo server in `ns` on `port`, answering `count` datagrams.
fn kernel_udp_echo(ns: &NetNs, port: u16, count: usize) -> JoinHandle<()> {
    let socket = ns.run(move || UdpSocket::bind(("0.0.0.0", port))).unwrap().unwrap();
    socket.set_read_timeout(Some(READY)).unwrap();
    thread::spawn(move || {
        let mut buf = [0; 2048];
        for _ in 0..count {
            let (n, from) = socket.recv_from(&mut buf).unwrap();
            socket.send_to(&buf[..n], from).unwrap();
        }
    })
}

fn script(name: &str) -> String {
    format!("{SCRIPTS}/scripts/{name}")
}

#[test]
fn nc_listens_under_ustack_and_talks_both_ways_with_a_kernel_client() {
    if !can_run(&["nc"]) {
        return;
    }
    let ns = NetNs::new().unwrap();
    let mut nc = run_in(&ns, &["--trace", "--show-demux"], &["nc", "-l", "7"], None);
    nc.expect_stderr("listener #", READY);
    let mut client = kernel_connect(&ns, "10.7.0.2:7".parse().unwrap());
    client.write_all(b"from the kernel\n").unwrap();
    nc.expect_stdout("from the kernel", READY);
    nc.write_stdin(b"from nc on ustack\n");
    let mut line = [0; 18];
    client.read_exact(&mut line).unwrap();
    assert_eq!(&line, b"from nc on ustack\n");
    client.shutdown(Shutdown::Write).unwrap();
    let done = nc.finish(READY);
    assert!(done.status.success(), "nc: {:?}\n{}", done.status, done.stderr);
    // The handshake, as --trace and the handshake log show it.
    assert!(done.stderr.contains("> 10.7.0.2.7: Flags [S]"), "no SYN traced:\n{}", done.stderr);
    assert!(done.stderr.contains("10.7.0.2.7 > 10.7.0.1."), "no SYN-ACK traced:\n{}", done.stderr);
    assert!(done.stderr.contains("SYN-RECEIVED -> ESTABLISHED"), "no handshake log:\n{}", done.stderr);
    // --show-demux: the table, with nc's listener, on nc's standard error.
    assert!(done.stderr.contains("demux table at"), "no demux table:\n{}", done.stderr);
    assert!(done.stderr.contains("0.0.0.0:7"), "no listener in the demux table:\n{}", done.stderr);
}

#[test]
fn curl_under_ustack_fetches_a_page_from_a_kernel_http_server() {
    if !can_run(&["curl", "python3"]) {
        return;
    }
    let ns = NetNs::new().unwrap();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("run-curl-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("page.txt"), "a page served by the kernel\n").unwrap();
    let dir_arg = dir.to_string_lossy().into_owned();
    let server =
        spawn_in(&ns, "python3", &["-m", "http.server", "8000", "--bind", "0.0.0.0", "--directory", &dir_arg], None);
    // Ready once it answers on loopback.
    drop(kernel_connect(&ns, "127.0.0.1:8000".parse().unwrap()));
    let pcap = dir.join("curl.pcap");
    let pcap_arg = pcap.to_string_lossy().into_owned();
    let curl =
        run_in(&ns, &["--pcap", &pcap_arg], &["curl", "-s", "--max-time", "10", "http://10.7.0.1:8000/page.txt"], None)
            .finish(READY);
    drop(server);
    // --pcap: the program's packets, as `ustack inspect` reads them back.
    let inspected = Command::new(BIN).args(["inspect", &pcap_arg]).output().unwrap();
    let inspected = String::from_utf8_lossy(&inspected.stdout);
    assert!(inspected.contains("10.7.0.2") && inspected.contains("> 10.7.0.1.8000: Flags [S]"), "{inspected}");
    fs::remove_dir_all(&dir).unwrap();
    assert!(curl.status.success(), "curl: {:?}\nstderr:\n{}", curl.status, curl.stderr);
    assert_eq!(curl.stdout, "a page served by the kernel\n");
    assert!(curl.stderr.contains("SYN-SENT -> ESTABLISHED"), "no handshake log:\n{}", curl.stderr);
}

#[test]
fn a_python_server_under_ustack_echoes_to_a_kernel_client() {
    if !can_run(&["python3"]) {
        return;
    }
    let ns = NetNs::new().unwrap();
    let server = run_in(&ns, &[], &["python3", &script("echo_server.py")], None);
    server.expect_stdout("listening", READY);
    // IPv4 to a dual-stack socket, as most clients come.
    let mut client = kernel_connect(&ns, "10.7.0.2:7".parse().unwrap());
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let writer = {
        let mut client = client.try_clone().unwrap();
        let data = data.clone();
        thread::spawn(move || {
            client.write_all(&data).unwrap();
            client.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut back = Vec::new();
    client.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    assert!(back == data, "echo differs: {} bytes back of {}", back.len(), data.len());
    let done = server.finish(READY);
    assert!(done.status.success(), "server: {:?}\n{}", done.status, done.stderr);
    assert!(done.stdout.contains("echoed 100000 bytes to ::ffff:10.7.0.1"), "{}", done.stdout);
}

#[test]
fn a_python_client_under_ustack_talks_tcp_and_udp_to_kernel_servers() {
    if !can_run(&["python3"]) {
        return;
    }
    let ns = NetNs::new().unwrap();
    let tcp = kernel_echo_server(&ns, 5000);
    let udp = kernel_udp_echo(&ns, 5001, 1);
    let done = run_in(&ns, &[], &["python3", &script("client.py"), "10.7.0.1", "5000", "5001"], None).finish(READY);
    assert!(done.status.success(), "client: {:?}\n{}\n{}", done.status, done.stdout, done.stderr);
    assert!(done.stdout.contains("tcp reply: hello over tcp"), "{}", done.stdout);
    assert!(done.stdout.contains("udp reply: hello over udp from 10.7.0.1"), "{}", done.stdout);
    assert_eq!(tcp.join().unwrap(), b"hello over tcp");
    udp.join().unwrap();
}

/// An event loop (`mode`: epoll, poll, select) over a pipe, a kernel UDP socket on
/// 127.0.0.1 and ustack's TCP listener and connection, all in one set.
fn mixed_event_loop(mode: &str) {
    if !can_run(&["python3"]) {
        return;
    }
    let ns = NetNs::new().unwrap();
    let udp = ns.run(|| UdpSocket::bind("127.0.0.1:0")).unwrap().unwrap();
    let udp_addr = udp.local_addr().unwrap();
    let program = run_in(&ns, &[], &["python3", &script("mixed.py"), mode, "10"], Some(udp.as_raw_fd()));
    drop(udp);
    program.expect_stdout("listening", READY);
    program.expect_stdout("pipe: pipe-data", READY);
    // The kernel fd: a datagram from the kernel, echoed.
    let echoed = ns
        .run(move || {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(READY)).unwrap();
            s.send_to(b"udp-data", udp_addr).unwrap();
            let mut buf = [0; 100];
            let n = s.recv(&mut buf).unwrap();
            buf[..n].to_vec()
        })
        .unwrap();
    assert_eq!(echoed, b"udp-data");
    // The ustack fds: a connection accepted, data echoed, the close seen.
    let mut client = kernel_connect(&ns, "10.7.0.2:7".parse().unwrap());
    client.write_all(b"tcp-data").unwrap();
    let mut back = [0; 8];
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"tcp-data");
    client.shutdown(Shutdown::Write).unwrap();
    let done = program.finish(READY);
    assert!(done.status.success(), "{mode}: {:?}\n{}\n{}", done.status, done.stdout, done.stderr);
    for line in ["udp: udp-data", "accepted", "tcp: tcp-data", "tcp closed", "done"] {
        assert!(done.stdout.contains(line), "{mode}: no {line:?} in\n{}", done.stdout);
    }
}

#[test]
fn epoll_waits_on_kernel_fds_and_ustack_sockets_in_one_set() {
    mixed_event_loop("epoll");
}

#[test]
fn edge_triggered_epoll_gets_an_edge_for_each_arrival_on_ustack_sockets() {
    mixed_event_loop("epollet");
}

#[test]
fn poll_waits_on_kernel_fds_and_ustack_sockets_in_one_set() {
    mixed_event_loop("poll");
}

#[test]
fn select_waits_on_kernel_fds_and_ustack_sockets_in_one_set() {
    mixed_event_loop("select");
}

#[test]
fn a_thread_blocked_in_recv_is_woken_by_what_another_thread_sent_on_the_same_socket() {
    if !can_run(&["python3"]) {
        return;
    }
    let ns = NetNs::new().unwrap();
    let server = kernel_echo_server(&ns, 5002);
    let done = run_in(&ns, &[], &["python3", &script("threads.py"), "10.7.0.1", "5002"], None).finish(READY);
    assert!(done.status.success(), "{:?}\n{}\n{}", done.status, done.stdout, done.stderr);
    assert!(done.stdout.contains("reader got: ping from the other thread"), "{}", done.stdout);
    assert_eq!(server.join().unwrap(), b"ping from the other thread");
}

#[test]
fn the_programs_exit_status_is_ustack_runs() {
    if !can_run(&["sh"]) {
        return;
    }
    let ns = NetNs::new().unwrap();
    let exited = run_in(&ns, &[], &["sh", "-c", "exit 7"], None).finish(READY);
    assert_eq!(exited.status.code(), Some(7), "{}", exited.stderr);
    let killed = run_in(&ns, &[], &["sh", "-c", "kill -TERM $$"], None).finish(READY);
    assert_eq!(killed.status.code(), Some(128 + libc::SIGTERM), "{}", killed.stderr);
    let missing = run_in(&ns, &[], &["/nonexistent/program"], None).finish(READY);
    assert_eq!(missing.status.code(), Some(127), "{}", missing.stderr);
    assert!(missing.stderr.contains("ustack: running /nonexistent/program: No such file"), "{}", missing.stderr);
}

/// Builds crates/preload/tests/c/calls.c with `cc` (once per test binary).
fn calls_program() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("ustack-calls-{}", std::process::id()));
            let source = format!("{SCRIPTS}/c/calls.c");
            let built = Command::new("cc").args(["-Wall", "-O1", "-o"]).arg(&out).arg(&source).output().unwrap();
            assert!(built.status.success(), "cc {source}:\n{}", String::from_utf8_lossy(&built.stderr));
            out
        })
        .clone()
}

/// What calls.c prints when run in `ns` (on ustack when `ustack`), against kernel echo
/// servers at `peer` and a kernel client that connects to `listen_ip`.
fn calls_output(ns: &NetNs, ustack: bool, peer: &str, listen_ip: &str) -> String {
    let program = calls_program();
    let program = program.to_str().unwrap();
    let tcp = kernel_echo_server(ns, 5100);
    // "datagram", "one", "wake" (from a signal handler), "two", "three".
    let udp = kernel_udp_echo(ns, 5101, 5);
    let args = [program, peer, "5100", "5101", "7100"];
    let calls = if ustack { run_in(ns, &[], &args, None) } else { spawn_in(ns, program, &args[1..], None) };
    // The line alone: "accept(not listening)" comes before it.
    calls.expect_stdout("\nlistening\n", READY);
    let mut client = kernel_connect(ns, format!("{listen_ip}:7100").parse().unwrap());
    client.write_all(b"hello").unwrap();
    let mut echo = [0; 5];
    if let Err(e) = client.read_exact(&mut echo) {
        let stderr = calls.stderr().text();
        let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
        panic!(
            "no echo from calls on {}: {e}; it printed:\n{}\nstderr (end):\n{}",
            if ustack { "ustack" } else { "the kernel" },
            calls.stdout().text(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    assert_eq!(&echo, b"hello");
    calls.expect_stdout("close now", READY);
    drop(client);
    let done = calls.finish(READY);
    assert!(
        done.status.success(),
        "calls ({}): {:?}\n{}\n{}",
        if ustack { "ustack" } else { "kernel" },
        done.status,
        done.stdout,
        done.stderr
    );
    let who = if ustack { "ustack" } else { "kernel" };
    tcp.join()
        .unwrap_or_else(|_| panic!("the kernel TCP echo server failed; calls on {who} printed:\n{}", done.stdout));
    udp.join()
        .unwrap_or_else(|_| panic!("the kernel UDP echo server failed; calls on {who} printed:\n{}", done.stdout));
    done.stdout
}

#[test]
fn a_c_program_sees_the_same_results_and_errnos_on_ustack_as_on_the_kernel() {
    if !can_run(&["cc"]) {
        return;
    }
    // The kernel run: the peer's address on the namespace's loopback.
    let kernel_ns = NetNs::new().unwrap();
    kernel_ns
        .run(|| -> io::Result<()> {
            let mut netlink = ustack::sys::netlink::Netlink::open()?;
            let lo = netlink.link_by_name("lo")?.expect("lo");
            netlink.add_address(lo.index, "10.7.0.1".parse().unwrap(), 32)
        })
        .unwrap()
        .unwrap();
    let kernel = calls_output(&kernel_ns, false, "10.7.0.1", "10.7.0.1");
    let ustack_ns = NetNs::new().unwrap();
    let on_ustack = calls_output(&ustack_ns, true, "10.7.0.1", "10.7.0.2");
    if kernel != on_ustack {
        let diff: Vec<String> = kernel
            .lines()
            .zip(on_ustack.lines())
            .filter(|(k, u)| k != u)
            .map(|(k, u)| format!("kernel: {k}\nustack: {u}"))
            .collect();
        panic!("the outputs differ:\n{}\n\nkernel:\n{kernel}\nustack:\n{on_ustack}", diff.join("\n"));
    }
    assert!(kernel.contains("== end"), "{kernel}");
    let _ = fs::remove_file(calls_program());
}

#[test]
fn a_forked_child_and_an_execd_program_cannot_use_the_parents_stack_and_say_so() {
    if !can_run(&["python3"]) {
        return;
    }
    let ns = NetNs::new().unwrap();
    let server = kernel_echo_server(&ns, 5003);
    let done = run_in(&ns, &[], &["python3", &script("fork.py"), "10.7.0.1", "5003"], None).finish(READY);
    assert!(done.status.success(), "{:?}\n{}\n{}", done.status, done.stdout, done.stderr);
    for line in [
        // EOPNOTSUPP, which Python names by its other name (the same number on Linux).
        "child send: ENOTSUP",
        "child socket: ENOTSUP",
        "exec'd program exit: 1",
        "exec'd program said: ustack: USTACK_TUN_FD=",
        "parent got: parent still works",
    ] {
        assert!(done.stdout.contains(line), "no {line:?} in\n{}", done.stdout);
    }
    // The child's calls are refused loudly, each with a line on stderr.
    assert!(done.stderr.contains("send() on fd"), "{}", done.stderr);
    assert!(done.stderr.contains("a fork of"), "{}", done.stderr);
    assert_eq!(server.join().unwrap(), b"parent still works");
}

#[test]
fn two_programs_of_one_run_cannot_both_run_a_stack_on_its_tun() {
    if !can_run(&["python3", "sh"]) {
        return;
    }
    let ns = NetNs::new().unwrap();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("run-two-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let flag = dir.join("made");
    // The shell opens no socket: both children inherit the TUN. The second opens its
    // socket once the first has (the flag file), and is refused, saying why.
    let open = format!(
        "import socket, time; socket.socket(); print('made', flush=True); open('{}', 'w').close(); time.sleep(3)",
        flag.display()
    );
    let second = "import socket; socket.socket()";
    let shell = format!(
        "python3 -c \"{open}\" & until [ -e {} ]; do sleep 0.05; done; python3 -c \"{second}\"; kill $!",
        flag.display()
    );
    let done = run_in(&ns, &[], &["sh", "-c", &shell], None).finish(READY);
    fs::remove_dir_all(&dir).unwrap();
    assert!(done.stdout.contains("made"), "{}\n{}", done.stdout, done.stderr);
    assert!(done.stderr.contains("another process already runs the stack on TUN ustack0"), "{}", done.stderr);
}

#[test]
fn the_program_runs_as_the_sudo_user_or_user_once_the_tun_is_open() {
    if !can_run(&["nc", "env", "id"]) {
        return;
    }
    let ns = NetNs::new().unwrap();
    let server = kernel_echo_server(&ns, 5004);
    // As sudo would have set it: the program is the invoking user, and its socket (on the
    // TUN ustack run opened as root) still works.
    let script = "id -u; id -G; echo hi from nobody | nc -N 10.7.0.1 5004";
    let done = spawn_in(&ns, "env", &["SUDO_UID=65534", "SUDO_GID=65534", BIN, "run", "--", "sh", "-c", script], None)
        .finish(READY);
    assert!(done.status.success(), "{:?}\n{}\n{}", done.status, done.stdout, done.stderr);
    assert_eq!(done.stdout, "65534\n65534\nhi from nobody\n", "{}", done.stderr);
    assert_eq!(server.join().unwrap(), b"hi from nobody\n");
    let named = run_in(&ns, &["--user", "nobody"], &["id", "-u"], None).finish(READY);
    assert_eq!(named.stdout, "65534\n", "{}", named.stderr);
    let unknown = run_in(&ns, &["--user", "no-such-user-here"], &["true"], None).finish(READY);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(unknown.stderr.contains("--user no-such-user-here: no such user"), "{}", unknown.stderr);
}

#[test]
fn loopback_stays_the_kernels_as_a_linux_process_sees_it() {
    if !can_run(&["python3"]) {
        return;
    }
    let ns = NetNs::new().unwrap();
    // A server bound to 127.0.0.1 and a client connecting to it, in one program under
    // ustack run: both sockets are handed to the kernel, with the options already set.
    let program = "import socket
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(('127.0.0.1', 0))
l.listen(1)
c = socket.create_connection(l.getsockname())
a, _ = l.accept()
c.sendall(b'over loopback')
print(a.recv(99).decode(), l.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR))";
    let done = run_in(&ns, &[], &["python3", "-c", program], None).finish(READY);
    assert!(done.status.success(), "{:?}\n{}\n{}", done.status, done.stdout, done.stderr);
    assert_eq!(done.stdout, "over loopback 1\n", "{}", done.stderr);
}
