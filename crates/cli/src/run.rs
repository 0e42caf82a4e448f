//! `ustack run -- PROGRAM [ARGS...]`: an unmodified program on ustack. The TUN is set up
//! here, as `serve` sets it up (root is needed for that alone); the program is started
//! with `libustack_preload.so` in LD_PRELOAD and the TUN's fd inherited, and its sockets
//! are served by a stack inside it (crates/preload, docs/preload.md). Privileges are
//! dropped to the invoking user once the TUN is open.
//!
//! The stack in the program logs to the program's standard error as `serve` logs to its
//! own: handshakes, backlog events, the demux's decisions; `--trace` every packet;
//! `--show-demux` the demux table (there, not on the program's standard output).

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::Args;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, pthread_sigmask};
use nix::unistd::Pid;

use super::args::NetArgs;
use super::{Failure, context, warn_if_initial_netns};

/// The inherited fds go here or above, out of the program's own numbering (its first
/// socket is fd 3, as without ustack).
const HANDED_FD: RawFd = 100;

/// The signals that end a program run in a terminal: passed on to it, so that it decides.
const FORWARDED: [Signal; 4] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT];

#[derive(Debug, Args)]
#[command(after_long_help = "\
Examples (as root, in a namespace of its own):
  ip netns add lab
  ip netns exec lab ustack run --trace -- nc -l 7 &
  ip netns exec lab sh -c 'echo hello | nc -N 10.7.0.2 7'
  ip netns exec lab ustack run -- curl -s http://10.7.0.1:8000/
  ip netns del lab

The library is looked for next to the ustack binary (target/release or target/debug) or
at $USTACK_PRELOAD. Only the first process to open a socket has the stack: children it
forks cannot use its sockets (they fail with EOPNOTSUPP and say so).")]
pub struct RunArgs {
    #[command(flatten)]
    pub net: NetArgs,

    /// Print every packet the program's stack receives and sends, tcpdump style, on the
    /// program's standard error.
    #[arg(long)]
    pub trace: bool,

    /// Record every packet of the program's stack to FILE (pcap, raw IP).
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,

    /// Print the demux table on the program's standard error at start and whenever it changes.
    #[arg(long)]
    pub show_demux: bool,

    /// Run the program as this user (default: the one sudo was run by, else unchanged).
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// The seed of the program's stack (ISNs, ephemeral ports).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// The program and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "PROGRAM")]
    pub program: Vec<OsString>,
}

pub fn run(args: RunArgs) -> ExitCode {
    match start(args) {
        Ok(code) => code,
        Err(failure) => {
            complain!("ustack: {failure}");
            ExitCode::from(1)
        }
    }
}

fn start(args: RunArgs) -> Result<ExitCode, Failure> {
    warn_if_initial_netns("run");
    let library = find_library()?;
    let user = target_user(args.user.as_deref())?;
    // Before the TUN exists, so that a bad --pcap path changes nothing. Opened here, as
    // root, and handed over: the program may not be allowed to create it.
    let pcap = match &args.pcap {
        Some(path) => {
            let file = std::fs::File::create(path).map_err(context(format!("--pcap {}", path.display())))?;
            Some(hand_over(OwnedFd::from(file))?)
        }
        None => None,
    };
    let tun = args.net.open_tun()?;
    let (name, mtu) = (tun.name().to_string(), tun.mtu());
    let tun = hand_over(tun.into_fd())?;

    let (program, rest) = args.program.split_first().ok_or_else(|| Failure::new("no program given"))?;
    let mut command = Command::new(program);
    command.args(rest);
    let preload = match std::env::var_os("LD_PRELOAD") {
        Some(old) if !old.is_empty() => {
            let mut both = OsString::from(&library);
            both.push(" ");
            both.push(old);
            both
        }
        _ => library.into_os_string(),
    };
    let addrs: Vec<String> = args.net.addrs.iter().map(|c| c.to_string()).collect();
    let gateways: Vec<String> = args.net.gateways.iter().map(|g| g.to_string()).collect();
    command
        .env("LD_PRELOAD", preload)
        .env("USTACK_TUN_FD", tun.as_raw_fd().to_string())
        .env("USTACK_TUN", &name)
        .env("USTACK_MTU", mtu.to_string())
        .env("USTACK_ADDR", addrs.join(","))
        .env("USTACK_GATEWAY", gateways.join(","))
        .env("USTACK_CONGESTION", args.net.congestion.to_string())
        .env("USTACK_RECOVERY", args.net.recovery.to_string());
    for (set, var) in [(args.trace, "USTACK_TRACE"), (args.show_demux, "USTACK_SHOW_DEMUX")] {
        if set {
            command.env(var, "1");
        } else {
            command.env_remove(var);
        }
    }
    command.env_remove("USTACK_PCAP_FD").env_remove("USTACK_SEED");
    if let Some(pcap) = &pcap {
        command.env("USTACK_PCAP_FD", pcap.as_raw_fd().to_string());
    }
    if let Some(seed) = args.seed {
        command.env("USTACK_SEED", seed.to_string());
    }
    if let Some((uid, gid)) = user {
        // std drops the supplementary groups too (setgroups(0)) when root changes uid.
        command.uid(uid).gid(gid);
    }
    // The forwarded signals are blocked here (and waited for by a thread), unblocked in
    // the program; if ustack dies, the program gets SIGTERM rather than running on alone.
    let mut forwarded = SigSet::empty();
    FORWARDED.iter().for_each(|&s| forwarded.add(s));
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&forwarded), None).map_err(context("blocking signals"))?;
    // SAFETY: sigprocmask and prctl are async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&forwarded), None)?;
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            // As a shell (and env) say it: 127 for a program not found, 126 for one that cannot run.
            complain!("ustack: running {}: {e}", program.to_string_lossy());
            return Ok(ExitCode::from(if e.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 }));
        }
    };
    // The program has its copies; ours would keep the TUN up after it exits.
    drop((tun, pcap));
    let pid = Pid::from_raw(child.id() as i32);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            while let Ok(signal) = forwarded.wait() {
                let _ = kill(pid, signal);
            }
        })
        .map_err(context("starting a thread"))?;
    let status = child.wait().map_err(context("waiting for the program"))?;
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    };
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// Moves `fd` to [`HANDED_FD`] or above, inheritable (not close-on-exec).
fn hand_over(fd: OwnedFd) -> Result<OwnedFd, Failure> {
    // SAFETY: F_DUPFD on an open fd; the new fd is ours.
    let moved = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD, HANDED_FD) };
    if moved < 0 {
        return Err(Failure::new(format!("passing an fd to the program: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: `moved` was just made and is owned here alone.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(moved) })
}

/// libustack_preload.so: $USTACK_PRELOAD, or next to this binary (cargo puts both in
/// target/release or target/debug).
fn find_library() -> Result<PathBuf, Failure> {
    if let Some(path) = std::env::var_os("USTACK_PRELOAD").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return match path.is_file() {
            true => Ok(path),
            false => Err(Failure::new(format!("USTACK_PRELOAD={}: no such file", path.display()))),
        };
    }
    let exe = std::env::current_exe().map_err(context("finding the ustack binary"))?;
    let dir = exe.canonicalize().unwrap_or(exe).parent().map(PathBuf::from).unwrap_or_default();
    let path = dir.join(LIBRARY);
    // `cargo build` puts it beside the binary; `cargo test` builds it in deps/ only. The
    // newer of the two is the one built from the source as it is.
    let newest = [path.clone(), dir.join("deps").join(LIBRARY)]
        .into_iter()
        .filter_map(|p| Some((std::fs::metadata(&p).ok().filter(|m| m.is_file())?.modified().ok()?, p)))
        .max();
    match newest {
        Some((_, found)) => Ok(found),
        None => Err(Failure::new(format!(
            "{} not found: build it (cargo build --release builds both) or set USTACK_PRELOAD",
            path.display()
        ))),
    }
}

const LIBRARY: &str = "libustack_preload.so";

/// Whom the program runs as: --user, else the user sudo was run by (when root), else
/// nobody else (unchanged).
fn target_user(name: Option<&str>) -> Result<Option<(u32, u32)>, Failure> {
    if let Some(name) = name {
        let cname = CString::new(name).map_err(|_| Failure::new(format!("--user {name:?}: not a user name")))?;
        // SAFETY: getpwnam with a NUL-terminated name; the result is read at once.
        let entry = unsafe { libc::getpwnam(cname.as_ptr()) };
        if entry.is_null() {
            return Err(Failure::new(format!("--user {name}: no such user")));
        }
        // SAFETY: a non-null passwd entry.
        let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
        return Ok(Some((uid, gid)));
    }
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return Ok(None);
    }
    let id = |var: &str| std::env::var(var).ok().and_then(|v| v.parse::<u32>().ok());
    match (id("SUDO_UID"), id("SUDO_GID")) {
        (Some(uid), Some(gid)) if uid != 0 => Ok(Some((uid, gid))),
        _ => Ok(None),
    }
}
