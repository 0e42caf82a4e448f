//! `ustack replay FILE`: one side of each conversation in a capture of real peers, played
//! against ustack over the in-memory wire, with ustack in the other side's place; ustack
//! is held to what the captured host did.
//!
//! The replay is library code (the `ustack-replay` crate); this module reads the arguments and
//! prints the outcome. Exit codes: 0 ustack did what the captured host did (one line on
//! stdout); 1 a difference (the report on stdout) or a replay that could not start; 2
//! input that is not a replayable capture (one line `ustack: replay FILE: ...` on stderr).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use ustack_replay::{self as replay, App, Options, ReplayError, Role};

use super::args::Switch;

#[derive(Debug, Args)]
#[command(after_long_help = "\
Compared: control flags (SYN-ACK, FIN, RST, ICMP unreachable), the acknowledgment relation, \
and the byte stream each way. Not compared: segment boundaries, timing, ISNs, window sizes, \
options, TTL; their differences from Linux must be the intended ones listed in \
crates/replay/src/differences.rs, and other ones are printed as notes on stderr.

fixtures/kernel/ holds captures of Linux peers (tools/capture-fixtures makes them); \
fixtures/README.md says which role and options replay each.")]
pub struct ReplayArgs {
    /// The capture: pcap or pcapng, any link type `ustack inspect` reads.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The host ustack takes the place of.
    #[arg(long, value_enum, default_value_t = RoleArg::Server)]
    pub role: RoleArg,

    /// The application ustack runs as the server.
    #[arg(long, value_enum, default_value_t = AppArg::Echo)]
    pub app: AppArg,

    /// Replay only this conversation (numbered as `ustack inspect --flows` numbers them).
    #[arg(long, value_name = "ID")]
    pub flow: Option<u64>,

    /// How long to wait for ustack to make progress towards what the captured host did, in
    /// milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub timeout: u64,

    /// listen() backlog of ustack's server (set it to the captured server's).
    #[arg(long, value_name = "N", default_value_t = 128)]
    pub backlog: u32,

    /// The server accepts nothing until the capture shows the captured server's
    /// application acting (a server that accepted late, as in a backlog overflow).
    #[arg(long)]
    pub hold_accept: bool,

    /// SYN cookies for SYNs beyond a full SYN queue (on, as Linux by default, or off, as
    /// with net.ipv4.tcp_syncookies=0).
    #[arg(long, value_enum, value_name = "on|off", default_value_t = Switch::On)]
    pub syn_cookies: Switch,
}

/// `--role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// ustack listens and runs --app; the captured clients are replayed.
    Server,
    /// ustack connects and repeats the captured client; the captured server is replayed.
    Client,
}

/// `--app`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AppArg {
    /// Everything back (RFC 862).
    Echo,
    /// Read and drop (RFC 863).
    Discard,
}

/// Runs `replay`; see the module docs for the exit codes.
pub fn run(args: ReplayArgs) -> ExitCode {
    let name = args.file.display().to_string();
    let options = Options {
        role: match args.role {
            RoleArg::Server => Role::Server,
            RoleArg::Client => Role::Client,
        },
        app: match args.app {
            AppArg::Echo => App::Echo,
            AppArg::Discard => App::Discard,
        },
        flow: args.flow,
        timeout: Duration::from_millis(args.timeout),
        backlog: args.backlog,
        hold_accept: args.hold_accept,
        syn_cookies: args.syn_cookies == Switch::On,
        ..Options::default()
    };
    let outcome = match replay::replay_file(&args.file, &options) {
        Ok(outcome) => outcome,
        Err(ReplayError::Input(e)) => {
            complain!("ustack: replay {name}: {e}");
            return ExitCode::from(2);
        }
        Err(ReplayError::Failed(e)) => {
            complain!("ustack: replay {name}: {e}");
            return ExitCode::from(1);
        }
    };
    {
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), "{}", outcome.render(&name));
    }
    let (_, unlisted) = replay::differences::classify(&outcome.observed);
    for o in unlisted {
        complain!("ustack: replay {name}: note: not compared, and not an intended difference: {o}");
    }
    if outcome.matched() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
