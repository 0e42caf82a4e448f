//! The `ustack` command: serve, connect, demo, inspect, replay and bench on the userspace
//! stack. One module per subcommand, above the library (it uses the socket API, the stack,
//! devices and `sys`, and the `ustack-bench`, `ustack-replay` and `ustack-testkit` crates;
//! nothing below imports from here). This file parses the command line and hands over.
//!
//! Exit codes: 0 success, 1 a runtime failure (one line `ustack: ...` on stderr), 2 bad
//! usage or bad input (clap's one-line error).

use std::fmt;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

// Macros first: child modules see them by textual scope.

/// `println!` that never panics: when standard output is gone (`ustack demo | head`),
/// the rest of the output is dropped instead.
macro_rules! say {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = writeln!(::std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that never panics (standard error may be closed too).
macro_rules! complain {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = writeln!(::std::io::stderr(), $($arg)*);
    }};
}

mod app;
mod args;
mod bench;
mod connect;
mod demo;
mod http;
mod inspect;
mod live;
mod replay;
mod run;
mod serve;
mod sim;

/// ustack: a userspace TCP/UDP stack with the Berkeley socket API, on a Linux TUN device.
#[derive(Debug, Parser)]
#[command(
    name = "ustack",
    version,
    about = "A userspace TCP/UDP stack (smoltcp) with the Berkeley socket API, on a Linux TUN device",
    long_about = "A userspace TCP/UDP stack (smoltcp) with the Berkeley socket API, on a Linux TUN device.\n\n\
        The kernel side of the TUN is an ordinary interface, so kernel programs (nc, curl, \
        ping) talk to ustack through it. Start with `ustack demo`: it needs no setup.",
    after_help = "Logging: RUST_LOG overrides the defaults, e.g. RUST_LOG=ustack::demux=trace.\n\
        Exit codes: 0 success, 1 runtime failure, 2 bad usage."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve echo, discard or HTTP on TCP and UDP ports of the userspace stack, over a TUN.
    ///
    /// Creates the TUN (or attaches to it), gives its kernel side --peer-addr, runs the
    /// stack at --addr, and serves until SIGINT or SIGTERM. SIGUSR1 prints the demux
    /// table. Needs root (CAP_NET_ADMIN); run it in a network namespace of its own.
    Serve(serve::ServeArgs),
    /// Connect to HOST:PORT from the userspace stack: standard input out, replies to standard output.
    ///
    /// Like netcat, on ustack: creates its own TUN (default ustack0) and runs the stack
    /// there. Needs root (CAP_NET_ADMIN); run it in a network namespace of its own.
    Connect(connect::ConnectArgs),
    /// A narrated tour of TCP and UDP through ustack's socket API (no setup needed).
    ///
    /// Shows a TCP handshake, an echo, a UDP exchange, a refused connection and a close,
    /// explaining each step, with the socket states and the demux's decisions along the
    /// way. As root the Linux kernel is the client, over a TUN in a namespace of the demo's
    /// own; otherwise (or with --sim) a second ustack stack, the two in the simulator on a
    /// virtual clock, which prints the same bytes on every run.
    Demo(demo::DemoArgs),
    /// Read a capture file (pcap or pcapng, from tcpdump, Wireshark or ustack) as tcpdump
    /// lines, JSON, a flow table or TCP ladder diagrams, filtered by a tcpdump expression.
    ///
    /// Needs no privileges and touches no network. A capture that cannot be read (cut
    /// short, not a capture, a length that cannot be) gives one line on stderr and exit 2,
    /// after every record before the damage.
    Inspect(inspect::InspectArgs),
    /// Replay a capture of real peers against ustack: ustack takes one host's place, the
    /// other is played from the capture, and ustack is held to what the captured host did.
    ///
    /// Compares control flags, acknowledgments and the byte streams, prints the first
    /// difference with both sides' packets side by side (exit 1), or a one-line match
    /// (exit 0). A file that is not a replayable capture: one line on stderr, exit 2.
    Replay(replay::ReplayArgs),
    /// Measure ustack beside the kernel and raw smoltcp: bulk TCP, connection setup, a
    /// connect burst, UDP, thousands of connections, capture decoding; one table.
    ///
    /// Makes its own network namespaces (they vanish with it). Needs root. BENCHMARKS.md
    /// describes the method; --quick takes under a minute.
    Bench(bench::BenchArgs),
    /// Watch TCP without root: a client stack and an echo server stack in one process, over
    /// a simulated link that loses and damages packets, on a virtual clock.
    ///
    /// Prints the packets (--trace), each connection's handshake and close, and a summary;
    /// the same --seed prints the same bytes on any machine. Virtual time runs as fast as
    /// the CPU allows. Exit 1 if the echo did not come back intact.
    Sim(sim::SimArgs),
    /// Run a program with its TCP and UDP sockets on ustack: `ustack run -- nc -l 7`.
    ///
    /// Sets up the TUN as `serve` does, then runs PROGRAM with libustack_preload.so
    /// preloaded: its AF_INET/AF_INET6 sockets are served by a ustack stack inside it, whose
    /// handshakes, backlog and demux decisions are logged on the program's standard error.
    /// As root under sudo, PROGRAM runs as the invoking user (or --user). Exits with
    /// PROGRAM's exit status (128+N if killed by signal N).
    Run(run::RunArgs),
}

/// A runtime failure: printed as one line `ustack: <message>`, exit code 1.
#[derive(Debug)]
pub struct Failure(String);

impl Failure {
    pub fn new(message: impl fmt::Display) -> Failure {
        Failure(message.to_string())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `.map_err(context("bind 10.7.0.2:7"))`: a failure saying what was being done.
pub fn context<E: fmt::Display>(what: impl fmt::Display) -> impl FnOnce(E) -> Failure {
    move |e| Failure(format!("{what}: {e}"))
}

/// Runs the command line and gives the process's exit code.
fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let validated = match &cli.command {
        Command::Serve(args) => args.validate(),
        Command::Connect(args) => args.validate(),
        Command::Run(args) => args.net.validate(),
        Command::Demo(_) | Command::Inspect(_) | Command::Bench(_) | Command::Replay(_) | Command::Sim(_) => Ok(()),
    };
    if let Err(message) = validated {
        return usage_error(Cli::command().error(clap::error::ErrorKind::ArgumentConflict, message));
    }
    let result = match cli.command {
        // Its failures are bad input (exit 2), not runtime failures.
        Command::Inspect(args) => return inspect::run(args),
        // Its own exit codes: 1 for a difference, 2 for input that cannot be replayed.
        Command::Replay(args) => return replay::run(args),
        // The program's exit status is its own.
        Command::Run(args) => {
            args::init_logging("warn", false);
            return run::run(args);
        }
        Command::Serve(args) => {
            args::init_logging(serve::DEFAULT_LOG, args.taps.trace);
            serve::run(args)
        }
        Command::Connect(args) => {
            // stdout carries the data; stay quiet on stderr unless something goes wrong.
            args::init_logging("warn", args.taps.trace);
            connect::run(args)
        }
        // It sets up its logging itself, once it knows where it runs.
        Command::Demo(args) => demo::run(args),
        Command::Bench(args) => {
            args::init_logging("warn", false);
            bench::run(args)
        }
        Command::Sim(args) => {
            args::init_logging("warn", false);
            sim::run(args)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            complain!("ustack: {failure}");
            ExitCode::from(1)
        }
    }
}

/// Prints a clap error and gives its exit code: help and version go to stdout with 0;
/// a real error prints as one line — its first paragraph (the `error:` line and any
/// indented details or tips) joined, without the usage block — and gives 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::from(2);
        }
        _ => {}
    }
    let text = e.render().to_string();
    let first = text.split("\n\n").next().unwrap_or(&text);
    complain!("{}", first.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" "));
    ExitCode::from(2)
}

/// Whether this process is in the host's network namespace (the one of PID 1). `None`
/// when that cannot be told (PID 1's namespace is unreadable without privileges).
pub fn in_initial_netns() -> Option<bool> {
    let own = std::fs::read_link("/proc/self/ns/net").ok()?;
    let init = std::fs::read_link("/proc/1/ns/net").ok()?;
    Some(own == init)
}

/// Warns on stderr when a command about to configure a TUN runs in the host's namespace.
pub fn warn_if_initial_netns(command: &str) {
    if in_initial_netns() == Some(true) {
        complain!(
            "ustack: warning: running in the host's network namespace: the TUN and its addresses \
             are added to your real network. Prefer a namespace of its own, e.g.\n  \
             sudo ip netns add ustack && sudo ip netns exec ustack ustack {command} ...\n  \
             (remove it afterwards with: sudo ip netns del ustack)"
        );
    }
}
