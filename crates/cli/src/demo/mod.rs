//! `ustack demo`: a narrated tour of TCP and UDP through ustack's socket API, for someone
//! learning how sockets work. It needs no setup and never touches the host's network.
//!
//! The server is always ustack, at 10.7.0.2. Who plays the client at 10.7.0.1 is the
//! demo's mode:
//!
//! - [`kernel`]: the Linux kernel, over a TUN inside a network namespace made for the demo,
//!   when the process may create one (root). ustack runs on its stack thread, driven
//!   through the blocking socket API; times are real.
//! - [`simulated`]: otherwise, or with `--sim`, a second ustack stack. The two are engines
//!   in a [`ustack::sim::Simulation`], driven by non-blocking calls on a virtual clock,
//!   so the output is the same on every run for one seed.
//!
//! The [`tour`] is written once, with its narration, against the seam both modes implement.

use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::thread;
use std::time::{Duration, Instant};

use clap::Args;
use ustack::Errno;

use super::Failure;
use super::args::TapArgs;

mod kernel;
mod simulated;
mod tour;

/// Every blocking call of the tour gives up after this long.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The whole tour gives up after this long (it normally takes well under a second).
const WATCHDOG: Duration = Duration::from_secs(25);

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 7, 0, 2);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 7, 0, 1);
const ECHO_PORT: u16 = 7;
const CLOSED_PORT: u16 = 9;
/// Width the explanations are wrapped to.
const WIDTH: usize = 88;

/// The tour's five steps, for the line that ends it.
const SUMMARY: &str = "handshake, echo, UDP, ECONNREFUSED and close";

/// How to read a tcpdump line's flags, for the modes' explanations of --trace.
const FLAGS: &str = "Flags [S] is a SYN, [S.] a SYN-ACK, [.] an ACK, [P.] data, [F.] a FIN, [R] a reset";

#[derive(Debug, Args)]
#[command(after_long_help = "\
Takes well under a second and exits 0.

As root, a real Linux kernel is the client: it talks to ustack over a TUN device inside a
network namespace that the demo creates and that vanishes with it (the host's network is
not touched). The lines marked `·` are ustack's own logs (RUST_LOG changes what is shown).
--trace shows every packet of the server stack (ustack at 10.7.0.2) inline, as tcpdump -nn
prints them with times since the first packet, each arriving one followed by ustack's demux
decision for it; --pcap FILE records the same packets for tcpdump -nn -r FILE or Wireshark.

Otherwise, or with --sim, a second ustack stack is the client, and the two run in ustack's
simulator (as in `ustack sim`): one process, a simulated link with 1 ms each way, a virtual
clock that jumps from event to event. Every random choice (ISNs, ports, losses) comes from
--seed, 1 unless given, so a run prints the same bytes every time. The lines marked `·`
are read from the two stacks: each connection's state changes, and where the demux sent
the arriving packets that open, refuse or carry something other than a connection's
segments. --trace adds every packet that crosses the link, with its virtual time and the
stack that sent it, and every demux decision; --pcap FILE records the link's packets, with
virtual times from the Unix epoch.

--drop-chance and --corrupt-chance lose and damage packets: under the server stack over a
TUN, on the simulated link otherwise.")]
pub struct DemoArgs {
    #[command(flatten)]
    pub taps: TapArgs,

    /// Run the client and server stacks in the simulator even when a TUN is available.
    #[arg(long, alias = "wire")]
    pub sim: bool,
}

/// The demo's logs go to stdout, inline with the narration, as `· target: message`;
/// packet trace lines (--trace, over a TUN) as `· in  0.000123 IP ...`, their direction
/// first. In the simulator the narration reads the engines itself, so their own logs are
/// off unless RUST_LOG asks for them.
fn init_logging(over_tun: bool, trace: bool) {
    let default = match (over_tun, trace) {
        // Every packet, and after each arriving one the demux's decision for it.
        (true, true) => "warn,ustack::handshake=info,ustack::backlog=info,ustack::demux=trace,ustack::trace=info",
        (true, false) => "warn,ustack::handshake=info,ustack::backlog=info,ustack::demux=info",
        (false, _) => "warn",
    };
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default));
    if over_tun && trace {
        // As in serve and connect: --trace shows the packets whatever RUST_LOG says.
        builder.filter_module(ustack::device::trace::TARGET, log::LevelFilter::Info);
    }
    builder
        .target(env_logger::Target::Stdout)
        .format(|buf, record| {
            if record.target() == ustack::device::trace::TARGET {
                return writeln!(buf, "           · {}", record.args());
            }
            let target = record.target().strip_prefix("ustack::").unwrap_or(record.target());
            writeln!(buf, "           · {target}: {}", record.args())
        })
        .init();
}

pub fn run(args: DemoArgs) -> Result<(), Failure> {
    start_watchdog();
    let started = Instant::now();
    // First, so that a bad --pcap path fails before anything is printed or set up.
    let pcap = args.taps.open_pcap()?;
    let lab = if args.sim { Err("--sim was given".to_string()) } else { kernel::Lab::open() };
    init_logging(lab.is_ok(), args.taps.trace);
    say!("ustack demo: TCP and UDP through a userspace stack, step by step.");
    say!();
    match lab {
        Ok(lab) => {
            let world = kernel::World::start(lab, &args.taps, pcap)?;
            world.introduce(&args.taps);
            tour::run(&world)?;
            say!();
            say!("Done in {}: {SUMMARY}.", ms(started.elapsed()));
            if let Some(path) = &args.taps.pcap {
                say!("The server stack's packets are in {0}: tcpdump -nn -r {0}", path.display());
            }
        }
        Err(why) => {
            let world = simulated::World::new(&args.taps, pcap)?;
            world.introduce(&why, &args.taps);
            tour::run(&world)?;
            let took = world.finish()?;
            say!();
            say!("Done in {} of virtual time: {SUMMARY}.", seconds(took));
            if let Some(path) = &args.taps.pcap {
                say!("The packets that crossed the simulated link are in {0}: tcpdump -nn -r {0}", path.display());
            }
        }
    }
    // The binary that is running, so the commands work straight after `cargo run`.
    let me = std::env::current_exe().map_or_else(|_| "ustack".into(), |p| p.display().to_string());
    say!("Try it with your own tools (as root; the namespace keeps it off your real network):");
    say!("  ip netns add ustack && ip netns exec ustack {me} serve --tcp 7 --udp 7 &");
    say!(
        "  ip netns exec ustack python3 -c 'import socket; s = socket.create_connection((\"10.7.0.2\", 7)); s.sendall(b\"hello\"); print(s.recv(99))'"
    );
    say!("  kill %1; ip netns del ustack");
    Ok(())
}

/// Ends the process if the tour is stuck: every wait has a timeout, this is the backstop.
fn start_watchdog() {
    let _ = thread::Builder::new().name("watchdog".into()).spawn(|| {
        thread::sleep(WATCHDOG);
        complain!("ustack: demo: still running after {} s, giving up", WATCHDOG.as_secs());
        std::process::exit(1);
    });
}

/// The errno name and text of a failed call: `ECONNREFUSED (Connection refused)`.
fn errno_text(e: &io::Error) -> String {
    Errno::from_io(e).map_or_else(|| e.to_string(), |errno| errno.to_string())
}

/// `.map_err(step("recv"))`: a failed call of the tour.
fn step<E: Into<io::Error>>(call: &'static str) -> impl FnOnce(E) -> Failure {
    move |e| Failure::new(format!("demo: {call}() failed: {}", errno_text(&e.into())))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Seconds to the microsecond, as the simulator's packet times are printed: `10.003000 s`.
fn seconds(d: Duration) -> String {
    format!("{}.{:06} s", d.as_secs(), d.subsec_micros())
}

/// Bytes as a quoted string, with escapes: `"hello, ustack!\n"`.
fn quote(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

fn heading(n: u32, title: &str) {
    say!();
    say!("{n}. {title}");
}

fn show(who: &str, what: impl std::fmt::Display) {
    say!("   {who:>6}: {what}");
}

/// Prints `text` as an indented paragraph wrapped to [`WIDTH`].
fn explain(text: &str) {
    let indent = "   ";
    let mut line = String::from(indent);
    for word in text.split_whitespace() {
        if line.len() > indent.len() && line.chars().count() + 1 + word.chars().count() > WIDTH {
            say!("{line}");
            line = String::from(indent);
        }
        if line.len() > indent.len() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if line.len() > indent.len() {
        say!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_times() {
        assert_eq!(quote(b"hi\n"), "\"hi\\n\"");
        assert_eq!(seconds(Duration::from_micros(10_003_000)), "10.003000 s");
        assert_eq!(ms(Duration::from_micros(2_000)), "2.00 ms");
    }
}
