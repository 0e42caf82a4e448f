//! The stack inside the program: configured from the environment `ustack run` sets, started
//! on the first socket() that asks for it, once per process.
//!
//! - `USTACK_TUN_FD`: the TUN `ustack run` opened and configured (inherited; required);
//!   `USTACK_TUN`: its name, `USTACK_MTU`: its MTU.
//! - `USTACK_ADDR`: the stack's addresses, `IP/LEN` separated by commas.
//! - `USTACK_TRACE=1`: every packet on standard error; `USTACK_PCAP_FD`: a file (opened by
//!   `ustack run`) to record them in; `USTACK_SHOW_DEMUX=1`: the demux table on standard
//!   error whenever it changes; `USTACK_SEED`: the stack's random seed.
//! - `RUST_LOG`, as for `ustack serve`.
//!
//! The logs go to the program's standard error: it is the only stream the program shares
//! with whoever runs it, and keeping the program's standard output its own keeps
//! `ustack run -- curl ... > page.html` meaning what it says.

use std::fs::File;
use std::io::Write as _;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::OnceLock;
use std::time::Duration;

use ustack::device::{Link, PcapRecorder, Tracer, TunDevice, trace};
use ustack::packet::TcpdumpFormatter;
use ustack::{Stack, StackConfig};

/// The logs `ustack serve` shows: handshakes, backlog events, the demux's decisions on new
/// connections; `USTACK_TRACE` adds every packet. RUST_LOG replaces it.
const DEFAULT_LOG: &str = "warn,ustack=info,ustack::trace=off";

/// How long the program's exit waits for its connections' FINs to be acknowledged (as
/// the kernel would go on sending them after the process is gone).
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// The process's stack, or why there is none (said once, on the first socket call).
static STACK: OnceLock<Result<Stack, String>> = OnceLock::new();

/// The stack, started on first use.
pub fn stack() -> Result<&'static Stack, &'static str> {
    let mut first = false;
    let stack = STACK.get_or_init(|| {
        first = true;
        // The library's threads (the stack's, the watcher, --show-demux) take no signals:
        // they are the program's, for its own threads (a program that blocks SIGINT and
        // reads it with sigwait must not have it delivered to a thread it does not know).
        without_signals(start)
    });
    if first && let Ok(stack) = stack {
        without_signals(|| {
            crate::table::after_start(stack);
            if env("USTACK_SHOW_DEMUX").is_some() {
                crate::demux::watch(stack);
            }
        });
        // SAFETY: registering a plain extern "C" function.
        unsafe { libc::atexit(at_exit) };
    }
    stack.as_ref().map_err(|why| why.as_str())
}

/// The stack if it was started (for the exit handler).
fn started() -> Option<&'static Stack> {
    STACK.get().and_then(|s| s.as_ref().ok())
}

/// Runs `f` with every signal blocked in the calling thread (so threads it starts inherit
/// that mask), then restores the thread's mask.
fn without_signals<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: sigset_t values filled by sigfillset/pthread_sigmask before use.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let result = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        result
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn start() -> Result<Stack, String> {
    let result = open();
    if let Err(why) = &result {
        let _ = writeln!(std::io::stderr(), "ustack: {why}");
    }
    result
}

fn open() -> Result<Stack, String> {
    let fd: i32 = env("USTACK_TUN_FD")
        .ok_or("USTACK_TUN_FD is not set: run the program with `ustack run -- PROGRAM`; its AF_INET/AF_INET6 sockets fail with EAFNOSUPPORT")?
        .parse()
        .map_err(|_| "USTACK_TUN_FD is not a file descriptor number")?;
    // SAFETY: F_GETFD only looks at the fd.
    if unsafe { crate::real::fcntl(fd, libc::F_GETFD, 0) } == -1 {
        return Err(format!(
            "USTACK_TUN_FD={fd} is not open in this process: a process that has the stack started it \
             (only the first process of `ustack run` to open a socket has one); sockets fail with EAFNOSUPPORT"
        ));
    }
    // Programs this one starts must not get the TUN: two stacks on one TUN would each
    // take the other's packets.
    // SAFETY: F_SETFD on an fd we checked is open.
    unsafe { crate::real::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC as usize) };
    let name = env("USTACK_TUN").unwrap_or_else(|| "ustack0".into());
    claim(&name)?;
    // SAFETY: the fd was handed to this process for the stack alone.
    let tun = unsafe { OwnedFd::from_raw_fd(fd) };
    let mtu = env("USTACK_MTU").and_then(|m| m.parse().ok()).unwrap_or(1500);
    let device = TunDevice::from_fd(tun, &name, mtu).map_err(|e| e.to_string())?;

    let mut config = StackConfig::default();
    if let Some(addrs) = env("USTACK_ADDR") {
        config.addrs = addrs.split(',').map(parse_cidr).collect::<Result<_, _>>()?;
    }
    if let Some(gateways) = env("USTACK_GATEWAY").filter(|g| !g.is_empty()) {
        config.gateways = gateways
            .split(',')
            .map(|g| g.trim().parse().map_err(|_| format!("USTACK_GATEWAY: {g:?} is not an IP address")))
            .collect::<Result<_, _>>()?;
    }
    if let Some(congestion) = env("USTACK_CONGESTION") {
        config.congestion = congestion.parse().map_err(|e| format!("USTACK_CONGESTION: {e}"))?;
    }
    if let Some(recovery) = env("USTACK_RECOVERY") {
        config.loss_recovery = recovery.parse().map_err(|e| format!("USTACK_RECOVERY: {e}"))?;
    }
    if let Some(seed) = env("USTACK_SEED") {
        config.seed = Some(seed.parse().map_err(|_| format!("USTACK_SEED={seed} is not a number"))?);
    }
    init_logging(env("USTACK_TRACE").is_some());
    let stack = match env("USTACK_PCAP_FD").and_then(|fd| fd.parse::<i32>().ok()) {
        Some(pcap) => {
            // SAFETY: the fd was opened by `ustack run` for this recording alone.
            let file = unsafe { File::from_raw_fd(pcap) };
            // SAFETY: F_SETFD on the fd just taken.
            unsafe { crate::real::fcntl(pcap, libc::F_SETFD, libc::FD_CLOEXEC as usize) };
            let recorder = PcapRecorder::new(device, std::io::BufWriter::new(file))
                .map_err(|e| format!("writing the pcap file: {e}"))?;
            start_on(recorder, config)?
        }
        None => start_on(device, config)?,
    };
    Ok(stack)
}

fn start_on<D: Link + 'static>(device: D, config: StackConfig) -> Result<Stack, String> {
    Stack::new(Tracer::new(device).with_formatter(TcpdumpFormatter::new()), config)
        .map_err(|e| format!("starting the stack: {e}"))
}

/// Makes sure no other process runs a stack on TUN `name`: two processes started by one
/// `ustack run` (`sh -c 'a & b'`) both inherit the TUN, and two stacks on it would each
/// take the other's packets. The claim is an abstract AF_UNIX address (per network
/// namespace, gone with the process), held for the process's life.
fn claim(name: &str) -> Result<(), String> {
    // SAFETY: socket has no pointer arguments.
    let fd = unsafe { crate::real::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("claiming TUN {name}: {}", std::io::Error::last_os_error()));
    }
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let tag = format!("ustack-preload/{name}");
    // sun_path[0] stays 0: the abstract namespace.
    for (to, from) in addr.sun_path[1..].iter_mut().zip(tag.bytes()) {
        *to = from as libc::c_char;
    }
    let len = (size_of::<libc::sa_family_t>() + 1 + tag.len()) as libc::socklen_t;
    // SAFETY: a sockaddr_un of `len` bytes.
    if unsafe { libc::bind(fd, (&addr as *const libc::sockaddr_un).cast(), len) } < 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: closing the fd just made.
        unsafe { crate::real::close(fd) };
        if e.raw_os_error() == Some(libc::EADDRINUSE) {
            return Err(format!(
                "another process already runs the stack on TUN {name} (one started by the same \
                 `ustack run`): only the first process to open a socket has it; sockets fail with EAFNOSUPPORT"
            ));
        }
        return Err(format!("claiming TUN {name}: {e}"));
    }
    // Kept open (and so bound) until the process exits.
    Ok(())
}

/// `IP/LEN`, as `ustack run` wrote it.
fn parse_cidr(s: &str) -> Result<ustack::Cidr, String> {
    s.trim().parse().map_err(|e| format!("USTACK_ADDR: {s:?} is not IP/LEN: {e}"))
}

/// Logs as `ustack serve` writes them: trace lines bare, others `[time LEVEL target] ...`.
fn init_logging(trace: bool) {
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(DEFAULT_LOG));
    if trace {
        builder.filter_module(trace::TARGET, log::LevelFilter::Info);
    }
    builder.format(|buf, record| {
        if record.target() == trace::TARGET {
            return writeln!(buf, "{}", record.args());
        }
        writeln!(buf, "[{} {:<5} {}] {}", buf.timestamp_micros(), record.level(), record.target(), record.args())
    });
    // A program that set up a logger of its own (a Rust program) keeps it.
    let _ = builder.try_init();
}

/// At the program's exit: every socket closes as the kernel closes a dying process's, and
/// the FINs get a moment to be acknowledged (the kernel would keep sending them; this
/// process's stack is about to go).
extern "C" fn at_exit() {
    if crate::table::forked() {
        return;
    }
    if let Some(stack) = started() {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stack.shutdown(EXIT_GRACE)));
    }
}
