//! The replayer: plays the captured peer of every selected conversation against a ustack
//! stack over the in-memory wire, and compares what ustack does with what the captured
//! host did. The rules it follows are stated in the module docs of [`super`].
//!
//! - this file: the walk through the capture, the waits for ustack, the barrier;
//! - [`setup`]: the conversations, ustack's addresses and stack, its programs;
//! - [`expect`]: what ustack must have done by each step, and must not have yet;
//! - [`send`]: the captured peer's packets, rebuilt for ustack;
//! - [`receive`]: what ustack sends, compared as it arrives;
//! - [`observe`]: what differs in what is not compared;
//! - [`lines`]: the compact packet lines of the side-by-side trace.

mod expect;
mod lines;
mod observe;
mod receive;
mod send;
mod setup;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ustack::Cidr;

use ustack::Stack;
use ustack::device::WireEnd;
use ustack::observe::Side;
use ustack::packet::TcpFlags;

use super::conversation::{Body, Conversation, Packet, Proto};
use super::differences::Observed;
use super::packets;
use super::programs::{Gate, Log, Programs, Reads};
use super::report::{Difference, ReplayOutcome, Trace};
use super::script::{self, Captured, Sent};
use super::{Options, Role};

/// The identifier of the replayer's barrier pings.
const PING_ID: u16 = 0x7e91;
/// How long the replay goes on listening after the last step, for packets ustack should
/// not send (a FIN or RST the captured host never sent).
const GRACE: Duration = Duration::from_millis(50);
/// How long the replayer waits for ustack to acknowledge what it sent before it sends
/// that again: Linux's RTO floor.
const RTO: Duration = Duration::from_millis(200);
/// Times the replayer resends the same unacknowledged bytes: enough for a segment lost
/// once or twice; after that ustack's silence is a difference, reported after the timeout.
const RETRANSMISSIONS: u32 = 3;
/// UDP packets of ustack kept per conversation, for ICMP errors to quote.
const KEPT_DATAGRAMS: usize = 64;

/// What the capture shows the captured host had sent in one conversation, so far.
#[derive(Clone, Debug, Default)]
struct Shown {
    syn: bool,
    /// Bytes of its stream.
    data: u64,
    fin: bool,
    rst: bool,
    /// How far into the peer's sequence space it acknowledged (see [`Sent::extent_of`]).
    ack: u64,
    datagrams: usize,
    unreachables: usize,
}

/// Byte ranges received, merged: [start, end) offsets.
#[derive(Debug, Default)]
struct Ranges(BTreeMap<u64, u64>);

impl Ranges {
    fn insert(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        // Merge with every range that touches [start, end).
        let touching: Vec<(u64, u64)> =
            self.0.range(..=end).filter(|&(_, &e)| e >= start).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in touching {
            self.0.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.0.insert(start, end);
    }

    /// The end of the range starting at 0 (bytes received without a gap).
    fn contiguous(&self) -> u64 {
        self.0.get(&0).copied().unwrap_or(0)
    }
}

/// The replay's state of one conversation.
#[derive(Debug, Default)]
struct FlowState {
    // ---- ustack's side ----
    isn: Option<u32>,
    syn: bool,
    mss: Option<u16>,
    wscale: Option<u8>,
    sack: bool,
    /// The last TSval ustack sent, when it sends timestamps.
    tsval: Option<u32>,
    sent: Ranges,
    fin: Option<u64>,
    rst: bool,
    /// How far into the peer's sequence space ustack acknowledged.
    ack: u64,
    /// The right edge of ustack's receive window, as an extent into the peer's space.
    right_edge: Option<u64>,
    datagrams: usize,
    frames: Vec<Vec<u8>>,
    unreachables: usize,
    // ---- the replayer's (the captured peer's) side ----
    /// How far into its own sequence space the replayer has sent.
    peer_extent: u64,
    /// The right edge of the window it offered ustack, as an extent into ustack's space:
    /// it never moves back (RFC 9293 §3.8.6.2.2: a receiver does not shrink its window).
    peer_edge: u64,
    /// The largest window, in bytes, the captured peer offered after its SYN: how much
    /// it showed it can take, which its own ACKs offer (see `synthetic_ack`).
    peer_max_window: u64,
    /// How far into ustack's sequence space it acknowledged.
    acked: u64,
    /// ustack resent data the replayer had acknowledged: it owes a duplicate ACK.
    resent_acked: bool,
    /// Its last retransmission: when, and ustack's acknowledgment (`ack`) then.
    retransmitted: Option<(Instant, u64)>,
    /// Retransmissions since ustack's acknowledgment last moved.
    retransmissions: u32,
    /// Whether ustack's first data segment has been looked at (for observations).
    observed_data: bool,
}

impl FlowState {
    /// Bytes ustack sent without a gap.
    fn data(&self) -> u64 {
        self.sent.contiguous()
    }

    /// How far into its sequence space ustack has sent (SYN, bytes, FIN).
    fn extent(&self) -> u64 {
        if !self.syn {
            return 0;
        }
        let data = self.data();
        1 + data + u64::from(self.fin.is_some_and(|at| data >= at))
    }
}

/// Counts for the summary line.
#[derive(Debug, Default)]
struct Counts {
    sent: u64,
    received: u64,
    synthetic_acks: u64,
    pieces: u64,
    retransmitted: u64,
}

/// A run of one replay.
pub(crate) struct Engine<'a> {
    conv: &'a Conversation,
    captured: &'a Captured,
    opts: &'a Options,
    selected: Vec<usize>,
    is_selected: Vec<bool>,
    /// The selected conversations by protocol, ustack's end and the peer's end.
    by_tuple: HashMap<(Proto, SocketAddr, SocketAddr), usize>,
    local: Side,
    /// The wire's MTU.
    mtu: usize,
    wire: WireEnd,
    stack: Option<Stack>,
    programs: Option<Programs>,
    gate: Arc<Gate>,
    log: Arc<Log>,
    /// What ustack's programs read.
    reads: Arc<Reads>,
    flows: Vec<FlowState>,
    shown: Vec<Shown>,
    trace: Trace,
    failure: Option<Difference>,
    /// The capture record the replay has reached.
    record: Option<u64>,
    ping_seq: u16,
    pong: Option<u16>,
    counts: Counts,
    observed: Vec<Observed>,
    started: Vec<bool>,
    /// Conversations whose captured host did more since ustack last caught up with it:
    /// the only ones a wait has to look at (so a step costs no more with more flows).
    dirty: BTreeSet<usize>,
    /// Conversations where ustack sent a SYN or RST the capture had not shown yet: the
    /// only ones the check for being ahead of the capture looks at.
    suspect: BTreeSet<usize>,
    released: bool,
    deadline: Instant,
    /// ustack's fragments of a datagram larger than the wire's MTU, until it is whole.
    fragments: ustack::engine::reassembly::Reassembly,
}

type ClientStep<T> = Result<T, Difference>;

impl<'a> Engine<'a> {
    /// Runs the replay to its end or its first difference.
    pub(crate) fn run(mut self) -> ReplayOutcome {
        let result = self.walk();
        let difference = result.err().or(self.failure.take());
        if let Some(programs) = self.programs.take() {
            programs.finish();
        }
        drop(self.stack.take());
        let hint = match (&difference, self.opts.role) {
            (Some(_), Role::Server) => script::app_mismatch(self.conv, self.captured, &self.selected, self.opts.app),
            _ => None,
        };
        let mut trace = String::new();
        if difference.is_some() {
            self.trace.render(&mut trace);
        }
        self.observed.sort();
        self.observed.dedup();
        ReplayOutcome {
            summary: self.summary(),
            difference,
            hint,
            trace,
            observed: self.observed,
            program_log: self.log.lines(),
        }
    }

    fn peer(&self) -> Side {
        self.local.other()
    }

    fn sent_local(&self, f: usize) -> &'a Sent {
        let captured: &'a Captured = self.captured;
        captured.sent(f, self.local)
    }

    fn sent_peer(&self, f: usize) -> &'a Sent {
        let captured: &'a Captured = self.captured;
        captured.sent(f, self.peer())
    }

    fn differ(&self, flow: usize, what: impl Into<String>) -> Difference {
        Difference { flow: Some(self.conv.flows[flow].id), record: self.record, what: what.into() }
    }

    fn who(&self) -> &'static str {
        match self.local {
            Side::Server => "server",
            Side::Client => "client",
        }
    }

    fn walk(&mut self) -> ClientStep<()> {
        let conv: &'a Conversation = self.conv;
        let order: Vec<usize> = (0..conv.packets.len()).filter(|&i| self.is_selected[conv.packets[i].flow]).collect();
        for (k, &i) in order.iter().enumerate() {
            let p = &conv.packets[i];
            if p.from == self.local {
                self.trace.captured(self.describe_captured(p));
                self.show(i)?;
                continue;
            }
            self.record = Some(p.record);
            self.settle(false)?;
            self.trace.step();
            self.trace.captured(self.describe_captured(p));
            self.send_peer(i)?;
            self.barrier(p.flow)?;
            let next = order[k + 1..].iter().copied().find(|&j| conv.packets[j].from != self.local);
            self.check_ahead(Some(i), next)?;
        }
        self.record = None;
        self.settle(true)?;
        if let Some(&f) = self.selected.first() {
            self.barrier(f)?;
        }
        let until = Instant::now() + GRACE;
        while Instant::now() < until {
            self.pump_wait(until.saturating_duration_since(Instant::now()))?;
        }
        // ustack's FINs are checked as they arrive (receive.rs); its SYNs and RSTs here.
        self.check_ahead(None, None)?;
        self.check_reads()
    }

    /// Takes in a captured packet of the host ustack plays: what ustack should have done.
    fn show(&mut self, i: usize) -> ClientStep<()> {
        let conv: &'a Conversation = self.conv;
        let p = &conv.packets[i];
        let f = p.flow;
        let (local, peer) = (self.sent_local(f), self.sent_peer(f));
        apply(&mut self.shown[f], p, local, peer);
        self.dirty.insert(f);
        if self.opts.role == Role::Client && !self.started[f] {
            self.started[f] = true;
            self.gate.start(f);
        }
        // With hold_accept, the servers accept at the latest moment the capture allows:
        // just before the captured server's application first acts (data or FIN). The
        // replay goes on once they have taken every connection waiting, as the captured
        // server's application must have by then.
        let acts = match &p.body {
            Body::Tcp(seg) => !seg.is_empty() || seg.flags.has(TcpFlags::FIN),
            _ => false,
        };
        if !self.released && acts && self.opts.role == Role::Server {
            self.released = true;
            self.gate.open_accept();
            let until = Instant::now() + self.opts.timeout;
            while Instant::now() < until && !self.programs.as_ref().is_none_or(Programs::accept_queues_empty) {
                self.pump_wait(Duration::from_millis(5))?;
            }
        }
        Ok(())
    }

    /// Waits until ustack has sent `need` of its sequence space (see [`Sent::extent_of`]);
    /// meanwhile acknowledges what it did send, so a send buffer smaller than Linux's
    /// does not stop it short of what the captured peer acknowledged.
    fn wait_for_extent(&mut self, f: usize, need: u64) -> ClientStep<()> {
        let mut last_progress = Instant::now();
        let mut last = self.progress_mark();
        loop {
            self.pump()?;
            let fs = &self.flows[f];
            if fs.extent() >= need {
                return Ok(());
            }
            self.ack_what_arrived(f);
            self.resend_when_due(f, last_progress);
            let mark = self.progress_mark();
            if mark != last {
                last = mark;
                last_progress = Instant::now();
            }
            if last_progress.elapsed() >= self.opts.timeout || Instant::now() >= self.deadline {
                let local = self.sent_local(f);
                let what = if need == 1 || (need > 1 && !self.flows[f].syn) {
                    let s = if self.local == Side::Server { "SYN-ACK" } else { "SYN" };
                    format!(
                        "the captured {}'s peer acknowledges its {s} next; ustack's {} sent none",
                        self.who(),
                        self.who()
                    )
                } else if local.fin.is_some_and(|at| need == at + 2) && self.flows[f].data() >= local.fin.unwrap_or(0) {
                    format!("the captured {} closed (FIN) here; ustack's did not", self.who())
                } else {
                    self.data_missing(f, (need - 1).min(local.stream.len() as u64))
                };
                return Err(self.differ(f, format!("{what} (waited {})", secs(self.opts.timeout))));
            }
            self.pump_wait(Duration::from_millis(20))?;
        }
    }

    /// Waits until ustack's receive window reaches `end` (an extent into the peer's space);
    /// meanwhile acknowledges what ustack sent, as a real peer would. An application that
    /// both reads and writes (an echo) only reads on, and so opens its window, once its
    /// writes are acknowledged: waiting for the capture's own ACK, which may name less
    /// than ustack sent or come only after this segment, deadlocks the two.
    fn wait_for_window(&mut self, f: usize, end: u64) -> ClientStep<()> {
        let mut last_progress = Instant::now();
        let mut last = self.progress_mark();
        loop {
            self.pump()?;
            if self.flows[f].right_edge.is_some_and(|edge| edge >= end) {
                return Ok(());
            }
            self.ack_what_arrived(f);
            self.resend_when_due(f, last_progress);
            let mark = self.progress_mark();
            if mark != last {
                last = mark;
                last_progress = Instant::now();
            }
            if last_progress.elapsed() >= self.opts.timeout || Instant::now() >= self.deadline {
                let edge = self.flows[f].right_edge.unwrap_or(0);
                return Err(self.differ(
                    f,
                    format!(
                        "ustack's receive window stayed closed: it takes bytes up to {}, the peer's next segment ends at {} (waited {})",
                        edge.saturating_sub(1),
                        end.saturating_sub(1),
                        secs(self.opts.timeout)
                    ),
                ));
            }
            self.pump_wait(Duration::from_millis(20))?;
        }
    }

    /// The replayer's own ACK of every byte ustack sent without a gap, when it has not
    /// acknowledged them all yet (and has acknowledged ustack's SYN: the handshake is the
    /// capture's). Bytes only, not a FIN: acknowledging that is the capture's to do.
    ///
    /// Data it had acknowledged already, resent by ustack, gets a duplicate ACK at once, as
    /// Linux answers a retransmission of what it has (`tcp_data_queue`): after a timeout
    /// ustack's smoltcp resends from SND.UNA and takes the peer's later ACKs only as far as
    /// it has resent (`engine::send_front`), so a peer that stayed silent left it waiting
    /// for an ACK that never came (the bulk echo's replay, now and then, for 5 s).
    fn ack_what_arrived(&mut self, f: usize) {
        let fs = &mut self.flows[f];
        let data_extent = if fs.syn { 1 + fs.data() } else { 0 };
        let resent_acked = std::mem::take(&mut fs.resent_acked);
        let (acked, extent) = (fs.acked, data_extent.max(fs.acked));
        if acked >= 1 && (data_extent > acked || resent_acked) {
            self.synthetic_ack(f, extent);
        }
    }

    /// A barrier: everything ustack's stack answers directly to the packets sent so far
    /// is in hand afterwards. The stack answers a ping while taking frames in and sends
    /// TCP's answers (SYN-ACK, ACK) at the end of that round, so after the echo reply
    /// the replayer takes the stack's lock once: the round is then over, its packets sent.
    fn barrier(&mut self, f: usize) -> ClientStep<()> {
        let flow = &self.conv.flows[f];
        let (from, to) = (flow.addr(self.peer()).ip(), flow.addr(self.local).ip());
        self.ping_seq = self.ping_seq.wrapping_add(1);
        let seq = self.ping_seq;
        if let Some(frame) = packets::ping(from, to, PING_ID, seq) {
            self.wire.send_raw(&frame);
        }
        let since = Instant::now();
        while self.pong != Some(seq) {
            if since.elapsed() >= self.opts.timeout {
                return Err(self.differ(f, "ustack stopped answering: no reply to the replayer's ping (a barrier)"));
            }
            self.pump_wait(Duration::from_millis(20))?;
        }
        if let Some(stack) = &self.stack {
            stack.barrier();
        }
        self.pump()
    }

    fn summary(&self) -> String {
        let role = match self.opts.role {
            Role::Server => format!("the server ({})", self.opts.app),
            Role::Client => "the client".to_string(),
        };
        let tcp = self.selected.iter().filter(|&&f| self.conv.flows[f].proto == Proto::Tcp).count();
        let udp = self.selected.len() - tcp;
        let mut kinds = Vec::new();
        if tcp > 0 {
            kinds.push(format!("{tcp} TCP"));
        }
        if udp > 0 {
            kinds.push(format!("{udp} UDP"));
        }
        let (mut to_server, mut to_client) = (0u64, 0u64);
        for &f in &self.selected {
            let c = self.captured.sent(f, Side::Client);
            let s = self.captured.sent(f, Side::Server);
            to_server += c.stream.len() as u64 + c.datagrams.iter().map(|d| d.len() as u64).sum::<u64>();
            to_client += s.stream.len() as u64 + s.datagrams.iter().map(|d| d.len() as u64).sum::<u64>();
        }
        let mut s = format!(
            "ustack played {role} of {} conversation{} ({}): {} bytes to the server, {} to the client; {} packets sent to ustack, {} from it",
            self.selected.len(),
            if self.selected.len() == 1 { "" } else { "s" },
            kinds.join(", "),
            to_server,
            to_client,
            self.counts.sent,
            self.counts.received,
        );
        if self.counts.pieces > 0 {
            let _ = write!(s, " ({} of them pieces of larger captured segments)", self.counts.pieces);
        }
        if self.counts.retransmitted > 0 {
            let _ = write!(s, ", {} resent", self.counts.retransmitted);
        }
        if self.counts.synthetic_acks > 0 {
            let _ = write!(s, ", {} extra ACKs", self.counts.synthetic_acks);
        }
        s
    }
}

/// Takes a captured packet of the host ustack plays into what it had shown.
fn apply(shown: &mut Shown, p: &Packet, local: &Sent, peer: &Sent) {
    match &p.body {
        Body::Tcp(seg) => {
            let syn = seg.flags.has(TcpFlags::SYN);
            shown.syn |= syn;
            shown.rst |= seg.flags.has(TcpFlags::RST);
            if let Some(start) = local.offset(seg.seq.wrapping_add(u32::from(syn))) {
                shown.data = shown.data.max((start + seg.len() as u64).min(local.stream.len() as u64));
            }
            shown.fin |= seg.flags.has(TcpFlags::FIN);
            if seg.flags.has(TcpFlags::ACK)
                && let Some(ext) = peer.extent_of(seg.ack)
            {
                shown.ack = shown.ack.max(ext);
            }
        }
        Body::Udp { .. } => shown.datagrams += 1,
        Body::Unreachable { .. } => shown.unreachables += 1,
    }
}

/// "the SYN", "the SYN and 14 bytes", "the SYN, 26 bytes and the FIN".
fn extent_words(ext: u64, sent: &Sent) -> String {
    match ext {
        0 => "nothing".to_string(),
        1 => "the SYN".to_string(),
        n => {
            let data = n - 1;
            match sent.fin {
                Some(at) if data > at => format!("the SYN, {at} bytes and the FIN"),
                _ => format!("the SYN and {data} bytes"),
            }
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// ustack's address with a prefix that puts every peer of its family on the link.
fn cidr(addr: IpAddr, peers: &[IpAddr]) -> Cidr {
    let (bits, cap) = if addr.is_ipv4() { (32u8, 24u8) } else { (128u8, 64u8) };
    let common = |a: IpAddr, b: IpAddr| -> u8 {
        match (a, b) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) ^ u32::from(b)).leading_zeros() as u8,
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a) ^ u128::from(b)).leading_zeros() as u8,
            _ => bits,
        }
    };
    let prefix =
        peers.iter().filter(|p| p.is_ipv4() == addr.is_ipv4()).map(|&p| common(addr, p)).min().unwrap_or(cap).min(cap);
    Cidr::new(addr, prefix).expect("a prefix no longer than the address")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_count_from_zero() {
        let mut r = Ranges::default();
        r.insert(10, 20);
        assert_eq!(r.contiguous(), 0, "a gap before 10");
        r.insert(0, 5);
        assert_eq!(r.contiguous(), 5);
        r.insert(5, 10);
        assert_eq!(r.contiguous(), 20, "the gap filled joins all three");
        r.insert(15, 30);
        r.insert(3, 4);
        assert_eq!(r.contiguous(), 30, "overlaps and retransmissions change nothing else");
        assert_eq!(r.0.len(), 1);
        r.insert(40, 40);
        assert_eq!(r.0.len(), 1, "empty ranges are not kept");
    }

    #[test]
    fn ustack_gets_a_prefix_that_reaches_its_peers() {
        let ip = |s: &str| -> IpAddr { s.parse().expect("address") };
        assert_eq!(cidr(ip("10.9.0.2"), &[ip("10.9.0.1")]).prefix_len(), 24, "at most /24");
        assert_eq!(cidr(ip("10.9.0.2"), &[ip("10.9.0.1"), ip("10.200.0.1")]).prefix_len(), 8);
        assert_eq!(cidr(ip("192.168.1.5"), &[ip("93.184.216.34")]).prefix_len(), 0, "any peer at all");
        assert_eq!(cidr(ip("fd00:9::2"), &[ip("fd00:9::1"), ip("10.9.0.1")]).prefix_len(), 64);
    }

    #[test]
    fn extents_read_as_words() {
        let sent = Sent { fin: Some(26), ..Sent::default() };
        assert_eq!(extent_words(0, &sent), "nothing");
        assert_eq!(extent_words(1, &sent), "the SYN");
        assert_eq!(extent_words(15, &sent), "the SYN and 14 bytes");
        assert_eq!(extent_words(28, &sent), "the SYN, 26 bytes and the FIN");
    }
}
