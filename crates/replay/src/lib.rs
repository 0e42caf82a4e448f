//! Replaying captures of real peers against ustack: the Linux kernel is the oracle.
//!
//! A capture (`fixtures/kernel/*.pcap`, made by `tools/capture-fixtures`) records two
//! Linux hosts talking. A replay puts ustack in one host's place — the server's
//! ([`Role::Server`], running [`App::Echo`] or [`App::Discard`]) or the client's
//! ([`Role::Client`], repeating the captured client's sends and closes) — over the
//! in-memory wire, plays the other host from the capture, and holds ustack to what the
//! captured host did.
//!
//! # How the peer is played
//!
//! The replayer sends the captured peer's packets in capture order (every TCP and UDP
//! conversation of the capture at once, or one with `--flow ID`, numbered as `ustack
//! inspect --flows` numbers them), each rebuilt with new lengths and checksums:
//! - the peer's own sequence numbers stay as captured; its acknowledgment numbers (and
//!   SACK blocks) are moved from the captured host's sequence space onto ustack's, whose
//!   ISN differs. A packet acknowledging something is only sent once ustack has sent
//!   it; while waiting, the replayer acknowledges what ustack did send, so a send
//!   buffer smaller than Linux's cannot stall ustack short of what Linux had in flight.
//! - segments larger than the link MTU (TSO/GSO in the capture) go as pieces of
//!   ustack's MSS, each sent once ustack's receive window has room for it. While it
//!   waits for that room, the replayer acknowledges what ustack sent, as a real peer
//!   would: an echo whose send buffer is full reads no more, so its window would stay
//!   closed.
//! - the replayer behaves as a receiver that reads at once: its cumulative ACK never
//!   goes back, and the window it offers never shrinks (RFC 9293 §3.8.6.2.2); its own
//!   ACKs offer the largest window the captured peer offered. A window the capture
//!   shows closed (the kernel client not reading yet, while Linux's larger buffers held
//!   what ustack's cannot) is kept closed only as far as the capture's ACK reaches.
//! - what ustack does not acknowledge of the replayer's bytes is sent again after
//!   200 ms (Linux's RTO floor) without progress, at most 3 times running.
//! - a SYN-ACK carries only the options ustack's SYN offered, later segments carry
//!   timestamps only if ustack agreed to them, and windows are re-encoded for the
//!   window scaling ustack agreed to.
//! - an ICMP error the capture shows quotes the datagram ustack sent.
//!
//! After each packet a barrier (a ping, then the stack's lock, see the engine) makes
//! sure every direct answer of ustack's stack has arrived before the next step.
//!
//! # What is compared, precisely
//!
//! For every replayed conversation, what the host ustack plays sends:
//! 1. **Control flags**: a SYN or SYN-ACK exactly when the captured host sent one —
//!    never for a SYN the captured host left unanswered before the peer's next packet
//!    (a backlog drop); a RST exactly when it did; a FIN, and at the same point of the
//!    byte stream; an ICMP destination-unreachable of the same type and code.
//! 2. **The acknowledgment relation**: ustack never acknowledges what the peer has not
//!    sent, and by each peer packet it has acknowledged at least what the captured host
//!    had (its SYN, bytes, FIN).
//! 3. **The byte stream each way**: the TCP bytes ustack sends equal the captured
//!    host's at the same offsets, no more and (by the end) no fewer; what ustack's
//!    program reads equals what the peer sent, as far as the captured host acknowledged
//!    it; UDP datagrams equal, in order, both ways.
//!
//! ustack must have done what the captured host did before each peer packet (its
//! SYN-ACK, RST, acknowledgments, datagrams, ICMP errors; a FIN once the bytes before
//! it are out; bytes only as far as the next packet acknowledges them) within
//! [`Options::timeout`] of its last progress; at the end, all of it.
//!
//! Not compared, because they legitimately differ: segment boundaries, timing and
//! retransmissions, ISNs, window sizes, TCP options, pure ACKs, TTL and the like. Those
//! differences are still observed and must be the intended ones ([`differences`]).
//!
//! A replay stops at the first difference and reports it with both sides' packets side
//! by side ([`ReplayOutcome::render`]); when all match, a one-line summary. When the captured
//! server ran an application other than the one ustack runs, the difference comes with
//! a note saying so: that is a difference, never a pass.

pub mod conversation;
pub mod differences;
mod engine;
pub mod packets;
mod programs;
pub mod report;
pub mod script;

use std::fmt;
use std::fs::File;
use std::path::Path;
use std::time::Duration;

pub use conversation::{Conversation, LoadError};
pub use differences::{INTENDED, Intended, Observed};
pub use report::{Difference, ReplayOutcome};

/// Which host of the capture ustack takes the place of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The server: ustack listens and runs [`Options::app`]; the capture's clients are replayed.
    Server,
    /// The client: ustack connects and repeats the captured client; the server is replayed.
    Client,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Server => "server",
            Role::Client => "client",
        })
    }
}

/// The application ustack runs as the server: the test kit's echo and discard, which
/// `ustack serve` runs too.
pub use ustack_testkit::servers::App;

/// How to replay.
#[derive(Clone, Debug)]
pub struct Options {
    /// The host ustack plays.
    pub role: Role,
    /// The server application (with [`Role::Server`]).
    pub app: App,
    /// Only this conversation (its `inspect --flows` number), or all.
    pub flow: Option<u64>,
    /// How long to wait for ustack to make progress towards what the captured host did.
    pub timeout: Duration,
    /// listen() backlog of ustack's servers.
    pub backlog: u32,
    /// ustack's servers accept nothing until the capture shows the captured server's
    /// application acting (its first data or FIN): how a server that accepts late, as
    /// in a backlog overflow, is replayed.
    pub hold_accept: bool,
    /// ustack answers SYNs beyond a full SYN queue with SYN cookies (Linux's default).
    pub syn_cookies: bool,
    /// The wire's MTU.
    pub mtu: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            role: Role::Server,
            app: App::Echo,
            flow: None,
            timeout: Duration::from_secs(2),
            backlog: 128,
            hold_accept: false,
            syn_cookies: true,
            mtu: 1500,
        }
    }
}

/// Why a replay could not run.
#[derive(Debug)]
pub enum ReplayError {
    /// The input: not a capture, a damaged one, or one that cannot be replayed as asked.
    Input(LoadError),
    /// The replay itself failed to start (threads, the stack).
    Failed(String),
}

impl ReplayError {
    fn input(why: impl Into<String>) -> ReplayError {
        ReplayError::Input(LoadError::Unusable(why.into()))
    }
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Input(e) => write!(f, "{e}"),
            ReplayError::Failed(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for ReplayError {}

impl From<LoadError> for ReplayError {
    fn from(e: LoadError) -> Self {
        ReplayError::Input(e)
    }
}

/// Replays a capture that has been read.
pub fn replay(conv: &Conversation, options: &Options) -> Result<ReplayOutcome, ReplayError> {
    let captured = script::Captured::new(conv)?;
    let engine = engine::Engine::new(conv, &captured, options)?;
    Ok(engine.run())
}

/// Reads the capture at `path` and replays it.
pub fn replay_file(path: &Path, options: &Options) -> Result<ReplayOutcome, ReplayError> {
    let file = File::open(path).map_err(|e| ReplayError::Input(LoadError::Capture(e.into())))?;
    let conv = Conversation::read(std::io::BufReader::new(file))?;
    replay(&conv, options)
}
