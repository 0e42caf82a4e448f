//! Loss recovery beside smoltcp: a SACK scoreboard (RFC 6675), time-based loss detection
//! (RACK-TLP, RFC 8985) and a retransmission timer with Linux's 200 ms floor.
//!
//! smoltcp 0.14 recovers slowly: its retransmission timeout is at least 1 s and doubles up
//! to 60 s, it ignores the SACK blocks it receives, fast-retransmits one segment per loss
//! episode, and after a timeout resends everything from SND.UNA. So ustack keeps a copy of
//! every segment smoltcp sends, reads the peer's cumulative ACK and SACK blocks, and
//! resends lost segments itself, as Linux would:
//! - a segment is lost when one sent after it has arrived (SACKed or acknowledged) and a
//!   reordering window (a quarter of the minimum RTT) has passed since (RACK);
//! - with no SACK from the peer, the third duplicate ACK marks the first segment lost;
//! - a tail loss probe resends the last segment after two smoothed RTTs without an ACK
//!   (plus 200 ms when it is alone in flight: the peer may be delaying its ACK), so that
//!   a lost tail is found by SACK instead of by the timeout (TLP);
//! - the retransmission timeout, `SRTT + max(4·RTTVAR, 200 ms)` (Linux's), resends every
//!   segment not SACKed and doubles, up to 120 s.
//!
//! smoltcp still runs its own timers. Its retransmissions of data recorded here are not
//! sent (the transmit path drops them: ustack has resent what was lost already), so what
//! the peer sees is the recovery described above. smoltcp sees every ACK as it comes
//! (through [`super::send_front`], which fixes what its rewinds would otherwise refuse).
//!
//! Memory: one copy of each unacknowledged segment, which smoltcp's send buffer bounds;
//! buffers are reused. A connection that has sent no data holds nothing but a null pointer:
//! the state is allocated with the first segment recorded (most of an idle server's
//! connections never send), and the list of segments gives its room back when it empties.

use std::collections::VecDeque;
use std::sync::Arc;

use smoltcp::time::{Duration, Instant};

use super::egress::{Packet, PacketPool};
use super::rewrite::seq_after;

/// Linux's `TCP_RTO_MIN`, `TCP_RTO_MAX` and `TCP_TIMEOUT_INIT`.
const RTO_MIN: Duration = Duration::from_millis(200);
const RTO_MAX: Duration = Duration::from_secs(120);
const RTO_INITIAL: Duration = Duration::from_secs(1);
/// RFC 8985's WCDelAckT: how long a lone segment's ACK may be delayed.
const DELAYED_ACK_MAX: Duration = Duration::from_millis(200);
/// What Linux adds to a tail loss probe's 2·SRTT when more than one segment is in flight:
/// `TCP_TIMEOUT_MIN`, 2 jiffies (2 ms at HZ=1000). RFC 8985 suggests a 10 ms floor instead;
/// on a link of a millisecond that made every tail loss stall five times as long as Linux's.
const PTO_SLACK: Duration = Duration::from_millis(2);
/// Segments kept per connection at most; past that, recovery is left to smoltcp.
const MAX_SEGMENTS: usize = 4096;

fn seq_at_or_after(a: u32, b: u32) -> bool {
    a == b || seq_after(a, b)
}

/// A segment smoltcp sent that is not yet acknowledged.
#[derive(Debug)]
struct Segment {
    seq: u32,
    end: u32,
    /// The whole packet as it went out (wire numbering), and where its TCP header starts.
    packet: Packet,
    offset: usize,
    /// When it was last sent.
    sent_at: Instant,
    retransmitted: bool,
    sacked: bool,
    /// It carries a FIN.
    fin: bool,
    /// A SACK block covered its data but not its FIN. smoltcp's blocks never cover a FIN
    /// (Linux's do), and smoltcp forgets a FIN that arrives out of order: once the
    /// cumulative ACK reaches the FIN and stops there, the FIN alone goes again at once.
    data_sacked: bool,
}

/// What recovery did, for the logs and counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryCounters {
    /// Segments resent because a later one arrived first (RACK) or on duplicate ACKs.
    pub fast: u64,
    /// Tail loss probes sent.
    pub probes: u64,
    /// Segments resent on a retransmission timeout.
    pub timeout: u64,
    /// smoltcp's own retransmissions not sent.
    pub suppressed: u64,
    /// Payload bytes (FIN counted) of everything resent.
    pub bytes: u64,
}

impl RecoveryCounters {
    /// Segments resent, whatever found them lost.
    pub fn segments(&self) -> u64 {
        self.fast + self.probes + self.timeout
    }
}

/// One connection's loss recovery: nothing until it records its first segment.
#[derive(Debug, Default)]
pub struct Recovery {
    state: Option<Box<State>>,
}

/// Room for segments that a flight's list keeps once it empties; beyond it, the list
/// gives its memory back (an idle connection does not keep a bulk transfer's).
const IDLE_CAPACITY: usize = 16;

/// What recovery knows of a connection once it has sent data.
#[derive(Debug)]
struct State {
    /// Unacknowledged segments, in sequence order.
    flight: VecDeque<Segment>,
    /// Of `flight`: the sequence space of the segments not SACKed (the congestion
    /// controller's pipe), and how many are SACKed (RACK's DupThresh), kept as segments
    /// come, go and are SACKed, so that an ACK does not count them over the whole flight.
    unsacked: u32,
    sacked_segments: usize,
    /// The cumulative acknowledgment (SND.UNA) and the peer's window field, last seen.
    una: Option<u32>,
    last_window: u16,
    dup_acks: u32,
    /// The peer sent SACK blocks: loss is found by RACK rather than duplicate ACKs.
    peer_sacks: bool,
    /// A segment arrived after one sent later than it, and was not lost: the path
    /// reorders, and RACK waits a reordering window before it calls a segment lost.
    reordering_seen: bool,
    srtt: Option<Duration>,
    rttvar: Duration,
    min_rtt: Option<Duration>,
    /// RACK: the send time and end of the most recently sent segment known delivered, and
    /// the RTT it measured.
    rack: Option<(Instant, u32, Duration)>,
    /// The retransmission timeout's exponent; zero after progress.
    backoff: u32,
    /// When the retransmission timer was last (re)started: at a send into an empty flight,
    /// or at progress of the cumulative ACK.
    rto_from: Option<Instant>,
    /// A tail loss probe was sent since the last progress.
    probed: bool,
    /// The peer acknowledged data of this connection.
    acked_any: bool,
    /// The reordering timer: when RACK next has to look.
    reorder_at: Option<Instant>,
    /// Recording stopped (too many segments): smoltcp recovers on its own until the
    /// flight drains.
    overflowed: bool,
    counters: RecoveryCounters,
}

impl Default for State {
    fn default() -> Self {
        State {
            flight: VecDeque::new(),
            unsacked: 0,
            sacked_segments: 0,
            una: None,
            last_window: 0,
            dup_acks: 0,
            peer_sacks: false,
            reordering_seen: false,
            srtt: None,
            rttvar: Duration::ZERO,
            min_rtt: None,
            rack: None,
            backoff: 0,
            rto_from: None,
            probed: false,
            acked_any: false,
            reorder_at: None,
            overflowed: false,
            counters: RecoveryCounters::default(),
        }
    }
}

/// What the transmit path does with a segment smoltcp sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// Send it.
    Send,
    /// Do not: it repeats data recovery holds, and resends itself when it is lost.
    Suppress,
}

impl Recovery {
    /// smoltcp sent the segment in `packet` (TCP header at `offset`), occupying `seq..end`
    /// (FIN counted; SYNs are not recorded), to a remote address. `sent_max` is the end of
    /// everything sent before it.
    pub fn on_sent(
        &mut self,
        now: Instant,
        packet: &Packet,
        offset: usize,
        (seq, end): (u32, u32),
        sent_max: Option<u32>,
    ) -> Sent {
        if seq == end {
            return Sent::Send;
        }
        let old = sent_max.is_some_and(|max| seq_at_or_after(max, end));
        if old {
            return match self.state.as_deref_mut() {
                Some(state) => state.on_sent_again(seq, end),
                None => Sent::Send,
            };
        }
        self.state.get_or_insert_default().on_sent(now, packet, offset, (seq, end))
    }

    /// A segment from the peer with acknowledgment `ack`, window field `window`, SACK
    /// blocks `sacks`, and no data if `empty`. Marks what it acknowledges, measures the
    /// RTT, and detects losses; returns the segments to resend now, by index for
    /// [`Recovery::resend`].
    pub fn on_ack(
        &mut self,
        now: Instant,
        ack: (u32, u16, bool),
        sacks: &[(u32, u32)],
        pool: &mut PacketPool,
    ) -> Vec<usize> {
        match self.state.as_deref_mut() {
            Some(state) => state.on_ack(now, ack, sacks, pool),
            None => Vec::new(),
        }
    }

    /// The handshake's RTT, as a first sample before any data was acknowledged (Linux
    /// measures the SYN-ACK's too). Until a segment is recorded there is nothing to seed
    /// and nothing reads the RTT: call it after each [`Recovery::on_sent`].
    pub fn seed_rtt(&mut self, rtt: Duration) {
        if let Some(state) = self.state.as_deref_mut()
            && state.srtt.is_none()
        {
            state.sample_rtt(rtt);
        }
    }

    /// When recovery next has something to do, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        self.state.as_deref().and_then(State::deadline)
    }

    /// The timers due at `now`: the indices of the segments to resend.
    pub fn on_timer(&mut self, now: Instant) -> Vec<usize> {
        match self.state.as_deref_mut() {
            Some(state) => state.on_timer(now),
            None => Vec::new(),
        }
    }

    /// The packet of segment `i` (an index [`Recovery::on_ack`] or [`Recovery::on_timer`]
    /// gave), its acknowledgment number and window brought up to date with `ack` and
    /// `window` (the last ones ustack sent), ready to go out again.
    pub fn resend(&mut self, i: usize, ack: u32, window: u16) -> &Packet {
        self.state.as_deref_mut().expect("only recorded segments have indices").resend(i, ack, window)
    }

    /// Lets go of every segment held (the connection is gone), keeping the counters.
    pub fn release(&mut self) {
        if let Some(state) = self.state.as_deref_mut() {
            *state = State { counters: state.counters, ..State::default() };
        }
    }

    /// Segments held.
    pub fn in_flight(&self) -> usize {
        self.state.as_deref().map_or(0, |state| state.flight.len())
    }

    /// Bytes sent and neither acknowledged nor SACKed: what is in the network, for
    /// congestion control (lost segments are resent at once, so this is RFC 6675's pipe).
    pub fn unsacked_bytes(&self) -> u32 {
        self.state.as_deref().map_or(0, State::unsacked_bytes)
    }

    /// The smoothed RTT, once measured.
    pub fn srtt(&self) -> Option<Duration> {
        self.state.as_deref().and_then(|state| state.srtt)
    }

    /// How many times the retransmission timeout has doubled since the last progress.
    pub fn backoff(&self) -> u32 {
        self.state.as_deref().map_or(0, |state| state.backoff)
    }

    /// What recovery did so far.
    pub fn counters(&self) -> RecoveryCounters {
        self.state.as_deref().map_or_else(RecoveryCounters::default, |state| state.counters)
    }
}

impl State {
    /// smoltcp sent `seq..end` again (it lies before SND.MAX).
    fn on_sent_again(&mut self, seq: u32, end: u32) -> Sent {
        if !self.overflowed && self.covers(seq, end) {
            self.counters.suppressed += 1;
            return Sent::Suppress;
        }
        Sent::Send
    }

    /// smoltcp sent new data, `seq..end`.
    fn on_sent(&mut self, now: Instant, packet: &Packet, offset: usize, (seq, end): (u32, u32)) -> Sent {
        if self.flight.len() >= MAX_SEGMENTS {
            self.overflowed = true;
        }
        if self.overflowed {
            return Sent::Send;
        }
        if self.flight.is_empty() {
            self.rto_from = Some(now);
        }
        // SND.UNA before any ACK: the first byte recorded.
        self.una.get_or_insert(seq);
        self.unsacked = self.unsacked.wrapping_add(end.wrapping_sub(seq));
        self.flight.push_back(Segment {
            seq,
            end,
            packet: Arc::clone(packet),
            offset,
            sent_at: now,
            retransmitted: false,
            sacked: false,
            fin: super::rewrite::flags(packet, offset) & super::rewrite::FIN != 0,
            data_sacked: false,
        });
        self.probed = false;
        Sent::Send
    }

    /// Whether every byte of `seq..end` lies in a recorded segment.
    fn covers(&self, seq: u32, end: u32) -> bool {
        let mut at = seq;
        for s in &self.flight {
            if seq_after(s.seq, at) {
                return false;
            }
            if seq_after(s.end, at) {
                at = s.end;
            }
            if seq_at_or_after(at, end) {
                return true;
            }
        }
        false
    }

    fn on_ack(
        &mut self,
        now: Instant,
        (ack, window, empty): (u32, u16, bool),
        sacks: &[(u32, u32)],
        pool: &mut PacketPool,
    ) -> Vec<usize> {
        let mut delivered: Option<(Instant, u32, bool)> = None;
        let rack_before = self.rack;
        let mut reordered = false;
        let mut note = |s: &Segment| {
            if !s.retransmitted
                && rack_before.is_some_and(|(at, end, _)| s.sent_at < at || (s.sent_at == at && seq_after(end, s.end)))
            {
                reordered = true;
            }
            if delivered.is_none_or(|(at, end, _)| s.sent_at > at || (s.sent_at == at && seq_after(s.end, end))) {
                delivered = Some((s.sent_at, s.end, s.retransmitted));
            }
        };
        // The cumulative ACK.
        let advanced = self.una.is_none_or(|una| seq_after(ack, una));
        let mut fin_forgotten = false;
        while let Some(front) = self.flight.front_mut() {
            if !seq_at_or_after(ack, front.end) {
                // Acknowledged in part: only the rest goes out again, as Linux trims it
                // (`tcp_trim_head`).
                if seq_after(ack, front.seq) {
                    let k = ack.wrapping_sub(front.seq) as usize;
                    let payload =
                        front.packet.len() - front.offset - usize::from(front.packet[front.offset + 12] >> 4) * 4;
                    if k <= payload {
                        super::rewrite::trim_front(Arc::make_mut(&mut front.packet), front.offset, k);
                        front.seq = ack;
                        if !front.sacked {
                            self.unsacked = self.unsacked.wrapping_sub(k as u32);
                        }
                    }
                    fin_forgotten = front.fin && front.data_sacked && front.end.wrapping_sub(ack) == 1;
                }
                break;
            }
            if front.sacked {
                self.sacked_segments -= 1;
            } else {
                self.unsacked = self.unsacked.wrapping_sub(front.end.wrapping_sub(front.seq));
                note(front);
            }
            if let Some(s) = self.flight.pop_front() {
                pool.give(s.packet);
            }
        }
        if self.flight.is_empty() && self.flight.capacity() > IDLE_CAPACITY {
            self.flight = VecDeque::new();
        }
        // SACK blocks (below the cumulative ACK they are D-SACKs, which say nothing new).
        for &(left, right) in sacks {
            if !seq_after(right, ack) {
                continue;
            }
            self.peer_sacks = true;
            for s in self.flight.iter_mut() {
                if s.sacked || !seq_at_or_after(s.seq, left) {
                    continue;
                }
                if seq_at_or_after(right, s.end) {
                    s.sacked = true;
                    self.unsacked = self.unsacked.wrapping_sub(s.end.wrapping_sub(s.seq));
                    self.sacked_segments += 1;
                    note(s);
                } else if s.fin && !s.data_sacked && s.end.wrapping_sub(s.seq) > 1 && right == s.end.wrapping_sub(1) {
                    // Delivered, as far as RACK is concerned: the holes sent before it
                    // are found; the FIN is not taken as received (see `data_sacked`).
                    s.data_sacked = true;
                    note(s);
                }
            }
        }
        self.reordering_seen |= reordered;
        let duplicate = !advanced && empty && window == self.last_window && !self.flight.is_empty();
        if advanced {
            self.acked_any = true;
            self.una = Some(ack);
            self.dup_acks = 0;
            self.backoff = 0;
            self.probed = false;
            self.rto_from = (!self.flight.is_empty()).then_some(now);
            if self.flight.is_empty() {
                self.overflowed = false;
            }
        } else if duplicate {
            self.dup_acks += 1;
        }
        self.last_window = window;
        if let Some((sent_at, end, retransmitted)) = delivered {
            let rtt = now - sent_at;
            // Karn: a retransmitted segment's ACK may answer either copy. RACK still takes
            // it if it cannot be the original's (RFC 8985 §6.2 step 2).
            let trustworthy = !retransmitted || self.min_rtt.is_some_and(|min| rtt >= min);
            if !retransmitted {
                self.sample_rtt(rtt);
            }
            if trustworthy && self.rack.is_none_or(|(at, e, _)| sent_at > at || (sent_at == at && seq_after(end, e))) {
                self.rack = Some((sent_at, end, rtt));
            }
        }
        let mut lost = self.detect_losses(now);
        // Without SACK, RFC 5681's third duplicate ACK.
        if !self.peer_sacks
            && duplicate
            && self.dup_acks == 3
            && !lost.contains(&0)
            && self.flight.front().is_some_and(|first| !first.sacked)
        {
            lost.push(0);
        }
        if fin_forgotten {
            self.flight[0].data_sacked = false;
            lost.push(0);
        }
        lost.sort_unstable();
        lost.dedup();
        for &i in &lost {
            self.flight[i].retransmitted = true;
            self.flight[i].sent_at = now;
        }
        self.counters.fast += lost.len() as u64;
        lost
    }

    fn sample_rtt(&mut self, rtt: Duration) {
        self.min_rtt = Some(self.min_rtt.map_or(rtt, |min| min.min(rtt)));
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let delta = if srtt > rtt { srtt - rtt } else { rtt - srtt };
                self.rttvar = (self.rttvar * 3 + delta) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }

    /// RACK (RFC 8985 §6.2): the indices of segments sent before the most recent delivered
    /// one whose reordering window has passed; sets the reordering timer for the others.
    fn detect_losses(&mut self, now: Instant) -> Vec<usize> {
        self.reorder_at = None;
        let Some((rack_at, rack_end, rack_rtt)) = self.rack else { return Vec::new() };
        let srtt = self.srtt.unwrap_or(rack_rtt);
        // RFC 8985 §6.2 step 4, as Linux's `tcp_rack_reo_wnd`: with no reordering seen,
        // DupThresh (3) segments SACKed above a hole make it lost at once.
        let reo_wnd = if !self.reordering_seen && self.sacked_segments >= 3 {
            Duration::ZERO
        } else {
            (self.min_rtt.unwrap_or(rack_rtt) / 4).min(srtt)
        };
        let mut lost = Vec::new();
        for (i, s) in self.flight.iter().enumerate() {
            let sent_before = s.sent_at < rack_at || (s.sent_at == rack_at && seq_after(rack_end, s.end));
            if s.sacked || !sent_before {
                continue;
            }
            let due = s.sent_at + rack_rtt + reo_wnd;
            if due <= now {
                lost.push(i);
            } else {
                self.reorder_at = Some(self.reorder_at.map_or(due, |at: Instant| at.min(due)));
            }
        }
        lost
    }

    /// The retransmission timeout now: `SRTT + max(4·RTTVAR, 200 ms)`, backed off.
    fn rto(&self) -> Duration {
        let base = match self.srtt {
            Some(srtt) => srtt + (self.rttvar * 4).max(RTO_MIN),
            None => RTO_INITIAL,
        };
        let factor = 1u32 << self.backoff.min(16);
        (base * factor).min(RTO_MAX)
    }

    /// The tail loss probe's timeout (RFC 8985 §7.2, as Linux's `tcp_schedule_loss_probe`).
    fn pto(&self) -> Option<Duration> {
        let srtt = self.srtt?;
        let slack = if self.flight.len() == 1 { DELAYED_ACK_MAX } else { PTO_SLACK };
        Some(srtt * 2 + slack)
    }

    fn deadline(&self) -> Option<Instant> {
        if self.flight.is_empty() || self.overflowed {
            return None;
        }
        let from = self.rto_from?;
        let rto = from + self.rto();
        let probe = self.pto().filter(|_| !self.probed && self.backoff == 0).map(|pto| from + pto);
        [Some(rto), probe, self.reorder_at].into_iter().flatten().min()
    }

    fn on_timer(&mut self, now: Instant) -> Vec<usize> {
        let Some(from) = self.rto_from else { return Vec::new() };
        if self.overflowed {
            return Vec::new();
        }
        if from + self.rto() <= now {
            // RTO: everything not SACKed is lost, and the first segment whatever SACK said
            // of it: the cumulative ACK stops there, so the peer does not have it (it may
            // have dropped data it had SACKed: RFC 2018 lets it renege).
            if let Some(first) = self.flight.front_mut()
                && first.sacked
            {
                first.sacked = false;
                self.unsacked = self.unsacked.wrapping_add(first.end.wrapping_sub(first.seq));
                self.sacked_segments -= 1;
            }
            let lost: Vec<usize> = (0..self.flight.len()).filter(|&i| !self.flight[i].sacked).collect();
            for &i in &lost {
                self.flight[i].retransmitted = true;
                self.flight[i].sent_at = now;
            }
            self.counters.timeout += lost.len() as u64;
            self.backoff += 1;
            self.rto_from = Some(now);
            self.reorder_at = None;
            return lost;
        }
        if self.reorder_at.is_some_and(|at| at <= now) {
            let lost = self.detect_losses(now);
            for &i in &lost {
                self.flight[i].retransmitted = true;
                self.flight[i].sent_at = now;
            }
            self.counters.fast += lost.len() as u64;
            if !lost.is_empty() {
                return lost;
            }
        }
        if !self.probed
            && self.backoff == 0
            && self.pto().is_some_and(|pto| from + pto <= now)
            && let Some(i) = (0..self.flight.len()).rev().find(|&i| !self.flight[i].sacked)
        {
            // The probe: the last segment not SACKed, so its SACK tells what is missing —
            // or the first, while nothing was acknowledged: a peer that answered with a
            // SYN cookie only takes the segment right after the SYN as the handshake's end.
            let i = if self.acked_any { i } else { 0 };
            self.probed = true;
            self.flight[i].retransmitted = true;
            self.flight[i].sent_at = now;
            self.counters.probes += 1;
            return vec![i];
        }
        Vec::new()
    }

    fn resend(&mut self, i: usize, ack: u32, window: u16) -> &Packet {
        let s = &mut self.flight[i];
        self.counters.bytes += u64::from(s.end.wrapping_sub(s.seq));
        let packet = Arc::make_mut(&mut s.packet);
        super::rewrite::set_ack(packet, s.offset, ack);
        super::rewrite::set_window(packet, s.offset, window);
        &s.packet
    }

    fn unsacked_bytes(&self) -> u32 {
        debug_assert_eq!(
            self.unsacked,
            self.flight.iter().filter(|s| !s.sacked).map(|s| s.end.wrapping_sub(s.seq)).sum::<u32>()
        );
        debug_assert_eq!(self.sacked_segments, self.flight.iter().filter(|s| s.sacked).count());
        self.unsacked
    }
}

/// The SACK blocks of the TCP header `tcp` (at most four).
pub fn sack_blocks(tcp: &[u8]) -> ([(u32, u32); 4], usize) {
    let mut blocks = [(0, 0); 4];
    let mut n = 0;
    if let Some(edges) = super::rewrite::sack_option(tcp) {
        let read = |i: usize| u32::from_be_bytes([tcp[i], tcp[i + 1], tcp[i + 2], tcp[i + 3]]);
        let end = edges.end;
        for (block, left) in blocks.iter_mut().zip(edges.step_by(8).filter(|&e| e + 8 <= end)) {
            *block = (read(left), read(left + 4));
            n += 1;
        }
    }
    (blocks, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segment as recovery sees one: a bare TCP header (at offset 0) and `len` bytes.
    fn segment(len: usize) -> Packet {
        let mut packet = vec![0; 20 + len];
        packet[12] = 5 << 4;
        Arc::new(packet)
    }

    #[test]
    fn nothing_is_held_before_data_and_an_emptied_flight_gives_its_room_back() {
        let now = Instant::from_millis(0);
        let mut recovery = Recovery::default();
        // Pure ACKs are not recorded: a connection that only receives holds nothing.
        recovery.on_sent(now, &segment(0), 0, (1000, 1000), Some(1000));
        recovery.seed_rtt(Duration::from_millis(5));
        assert!(recovery.state.is_none());
        assert_eq!((recovery.in_flight(), recovery.srtt(), recovery.deadline()), (0, None, None));

        // A bulk transfer's flight, then everything acknowledged.
        let mut seq = 1000u32;
        for _ in 0..100 {
            recovery.on_sent(now, &segment(100), 0, (seq, seq + 100), Some(seq));
            seq += 100;
        }
        recovery.seed_rtt(Duration::from_millis(5));
        assert_eq!(recovery.in_flight(), 100);
        assert_eq!(recovery.srtt(), Some(Duration::from_millis(5)), "the handshake's RTT seeds the state");
        let mut pool = PacketPool::default();
        let lost = recovery.on_ack(Instant::from_millis(10), (seq, 1000, true), &[], &mut pool);
        assert!(lost.is_empty());
        assert_eq!(recovery.in_flight(), 0);
        let state = recovery.state.as_deref().unwrap();
        assert!(state.flight.capacity() <= IDLE_CAPACITY, "{} segments' room kept", state.flight.capacity());
    }
}
