//! Congestion control fed by ustack's loss recovery: CUBIC (RFC 9438) and Reno (RFC 5681),
//! with Proportional Rate Reduction (RFC 6937) while a loss is being repaired, as Linux.
//!
//! smoltcp's own controllers cannot be used with ustack's recovery: they react to the
//! duplicate ACKs and timeouts *they* see — smoltcp's 1 s timeout, its fast retransmit —
//! not to the losses recovery finds, and they cut the window far more often and deeper
//! than Linux does. So smoltcp's controller stays off, and this one limits what smoltcp
//! may send the only way smoltcp lets anyone: through the peer's window. Each ACK reaches
//! smoltcp with its window field lowered so that the window's right edge is at most
//! `SND.MAX + (what the congestion window leaves)`; see [`Controller::limit_window`].
//!
//! The window is never lowered below what is already in flight (the right edge is never
//! before SND.MAX), so smoltcp never sees a window shrink (RFC 9293 §3.8.6 discourages
//! it; smoltcp 0.14 copes, sending nothing) and never a zero window (which would start
//! its zero-window probe timer in place of its retransmission timer): with nothing in
//! flight the congestion window itself is the room, at least one segment.
//!
//! What recovery tells it, per ACK: the bytes newly delivered (cumulatively acknowledged
//! or SACKed: RFC 6937's DeliveredData), what is still in the network (the bytes sent and
//! neither acknowledged nor SACKed: recovery resends a lost segment at once, so this is
//! RFC 6675's pipe after the retransmission), and whether a new loss was found (RACK or
//! the third duplicate ACK). Per timer: a retransmission timeout. The states are Linux's:
//! Open; Recovery from a loss until SND.MAX at that time is acknowledged (one reduction per
//! window of data, RFC 5681 §3.2 / RFC 6675's RecoveryPoint); Loss after a timeout, with
//! the window at one segment, growing in slow start, until the same point.
//!
//! Retransmissions are not held back by the window: recovery sends a lost segment as soon
//! as it finds it (they replace what the network dropped), and PRR counts them as sent.
//!
//! Memory: until the first ACK or timeout of data in flight, a connection's window is the
//! initial one and nothing else has happened, so only the algorithm, the MSS and the peer's
//! window scale are kept (16 bytes); the rest is allocated then (most of an idle server's
//! connections never send).

use smoltcp::time::{Duration, Instant};

use super::rewrite::seq_after;

/// RFC 9438's β_cubic (Linux's `beta` 717/1024) and C.
const CUBIC_BETA: f64 = 0.7;
const CUBIC_C: f64 = 0.4;
/// RFC 6928's initial window, Linux's `TCP_INIT_CWND`.
const INITIAL_WINDOW_SEGMENTS: u32 = 10;
/// An MSS to count in until the peer's SYN tells it (RFC 9293's default).
pub(super) const DEFAULT_MSS: u32 = 536;

/// Which algorithm grows and cuts the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// RFC 9438, with its Reno-friendly region and fast convergence (Linux's default).
    Cubic,
    /// RFC 5681's slow start and congestion avoidance, halving on loss.
    Reno,
}

/// Where a connection is in its handling of loss (Linux's `tcp_ca_state`, in part).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No loss being repaired.
    Open,
    /// Repairing a loss found by RACK or duplicate ACKs, until `point` (SND.MAX when it
    /// was found) is acknowledged; the window shrinks towards ssthresh by PRR.
    Recovery { point: u32 },
    /// After a retransmission timeout, until `point` is acknowledged.
    Loss { point: u32 },
}

/// What one ACK told recovery, for [`Controller::on_ack`].
#[derive(Debug, Clone, Copy)]
pub struct AckSample {
    /// The cumulative acknowledgment.
    pub ack: u32,
    /// Bytes newly acknowledged or SACKed.
    pub delivered: u32,
    /// Bytes still in the network after this ACK and what it made recovery resend.
    pub pipe: u32,
    /// Bytes recovery resent because of this ACK.
    pub resent: u32,
    /// Recovery found a loss it had not found before.
    pub loss: bool,
    /// SND.MAX: the end of everything sent.
    pub sent_max: u32,
    /// The smoothed RTT, if measured.
    pub srtt: Option<Duration>,
}

/// What congestion control did, for the logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CongestionCounters {
    /// Loss episodes that cut the window (fast recovery entered).
    pub reductions: u64,
    /// Retransmission timeouts that set the window to one segment.
    pub timeouts: u64,
}

/// One connection's congestion control.
#[derive(Debug, Clone)]
pub struct Controller {
    algorithm: Algorithm,
    /// The sender's maximum segment size, in bytes.
    mss: u32,
    /// Everything else, from the first ACK or timeout with data in flight on; until then
    /// the window is the initial one.
    window: Option<Box<Window>>,
}

/// A controller's state once data has been in flight.
#[derive(Debug, Clone)]
struct Window {
    algorithm: Algorithm,
    /// The sender's maximum segment size, in bytes.
    mss: u32,
    /// The congestion window and slow start threshold, in bytes.
    cwnd: u32,
    ssthresh: u32,
    phase: Phase,
    /// PRR's state (RFC 6937): bytes delivered and sent since recovery began, and the
    /// pipe when it began.
    prr_delivered: u32,
    prr_out: u32,
    recover_fs: u32,
    /// SND.MAX at the last ACK: what smoltcp sent since is new data PRR counts as sent.
    last_sent_max: Option<u32>,
    /// CUBIC's state: W_max and the W_max before it (fast convergence), K, the epoch's
    /// start and its window, and the Reno-friendly estimate W_est; all windows in bytes.
    w_max: f64,
    w_last_max: f64,
    k: f64,
    epoch: Option<Instant>,
    w_est: f64,
    /// The fraction of a byte CUBIC's growth left over, kept for the next ACK.
    frac: f64,
    /// Reno's congestion avoidance: bytes acknowledged towards the next segment of growth.
    acked_bytes: u32,
    /// The right edge smoltcp may send up to (wire numbering), from the last event.
    edge: Option<u32>,
    counters: CongestionCounters,
}

impl Controller {
    /// A connection's controller, before the handshake told the MSS.
    pub fn new(algorithm: Algorithm) -> Controller {
        Controller { algorithm, mss: DEFAULT_MSS, window: None }
    }

    /// The window's state, made now if nothing has happened yet.
    fn window(&mut self) -> &mut Window {
        self.window.get_or_insert_with(|| Box::new(Window::new(self.algorithm, self.mss)))
    }

    /// The handshake told the segment size this side sends (the smaller of the peer's MSS
    /// option and the local one); the initial window is ten of them (RFC 6928).
    pub fn set_mss(&mut self, mss: u32) {
        let mss = mss.max(64);
        if let Some(window) = self.window.as_deref_mut() {
            window.set_mss(mss);
        }
        self.mss = mss;
    }

    /// The congestion window, in bytes.
    pub fn cwnd(&self) -> u32 {
        self.window.as_deref().map_or(INITIAL_WINDOW_SEGMENTS * self.mss, |window| window.cwnd)
    }

    /// The slow start threshold, in bytes (`u32::MAX` until the first loss).
    pub fn ssthresh(&self) -> u32 {
        self.window.as_deref().map_or(u32::MAX, |window| window.ssthresh)
    }

    /// The segment size counted in.
    pub fn mss(&self) -> u32 {
        self.mss
    }

    /// What the controller did so far.
    pub fn counters(&self) -> CongestionCounters {
        self.window.as_deref().map_or_else(CongestionCounters::default, |window| window.counters)
    }

    /// Where the connection is in its handling of loss.
    #[cfg(test)]
    pub fn phase(&self) -> Phase {
        self.window.as_deref().map_or(Phase::Open, |window| window.phase)
    }

    /// An ACK that recovery processed.
    pub fn on_ack(&mut self, now: Instant, s: AckSample) {
        self.window().on_ack(now, s);
    }

    /// A retransmission timeout (recovery resent what it holds): the window is one
    /// segment, and ssthresh is cut unless a loss episode had cut it already (Linux's
    /// `tcp_enter_loss`).
    pub fn on_timeout(&mut self, sent_max: u32) {
        self.window().on_timeout(sent_max);
    }

    /// The window field an ACK is to reach smoltcp with: the peer's `window` (a field,
    /// scaled by `peer_scale`, the peer's window scale) for acknowledgment `ack` as smoltcp will see
    /// it, lowered so that the right edge is no further than the congestion window
    /// allows — but never before `sent_max`, so that nothing in flight falls outside it.
    /// `in_flight`: whether recovery holds anything unacknowledged.
    pub fn limit_window(&self, ack: u32, window: u16, peer_scale: u8, sent_max: u32, in_flight: bool) -> u16 {
        let edge = match self.window.as_deref().and_then(|window| window.edge) {
            Some(edge) if in_flight => edge,
            // Nothing in flight: the whole window is room.
            _ => ack.wrapping_add(self.cwnd()),
        };
        let edge = if seq_after(sent_max, edge) { sent_max } else { edge };
        if !seq_after(edge, ack) && edge != ack {
            return window;
        }
        let allowed = u64::from(edge.wrapping_sub(ack));
        let shift = u32::from(peer_scale.min(14));
        // Rounded up: a window rounded down could end before what is in flight.
        let field = allowed.div_ceil(1 << shift).max(1);
        field.min(u64::from(window)) as u16
    }
}

impl Window {
    /// The initial window: nothing has happened yet.
    fn new(algorithm: Algorithm, mss: u32) -> Window {
        Window {
            algorithm,
            mss,
            cwnd: INITIAL_WINDOW_SEGMENTS * mss,
            ssthresh: u32::MAX,
            phase: Phase::Open,
            prr_delivered: 0,
            prr_out: 0,
            recover_fs: 0,
            last_sent_max: None,
            w_max: 0.0,
            w_last_max: 0.0,
            k: 0.0,
            epoch: None,
            w_est: 0.0,
            frac: 0.0,
            acked_bytes: 0,
            edge: None,
            counters: CongestionCounters::default(),
        }
    }

    /// A new MSS (at least 64): an initial window is ten of them again.
    fn set_mss(&mut self, mss: u32) {
        if self.cwnd == INITIAL_WINDOW_SEGMENTS * self.mss {
            self.cwnd = INITIAL_WINDOW_SEGMENTS * mss;
        }
        self.mss = mss;
    }

    fn on_ack(&mut self, now: Instant, s: AckSample) {
        // Whatever smoltcp sent since the last ACK was new data; PRR counts it as sent.
        let new_data = self
            .last_sent_max
            .map_or(0, |before| if seq_after(s.sent_max, before) { s.sent_max.wrapping_sub(before) } else { 0 });
        self.last_sent_max = Some(s.sent_max);
        self.prr_out = self.prr_out.saturating_add(new_data);
        let pipe_before = s.pipe.saturating_add(s.delivered).saturating_sub(s.resent);
        // The end of an episode: everything sent when it began is acknowledged.
        let mut ended = false;
        match self.phase {
            Phase::Recovery { point } | Phase::Loss { point } if !seq_after(point, s.ack) => {
                if matches!(self.phase, Phase::Recovery { .. }) {
                    // As Linux's tcp_end_cwnd_reduction: the window is ssthresh from here.
                    self.cwnd = self.ssthresh.max(self.mss);
                    ended = true;
                }
                self.phase = Phase::Open;
            }
            _ => {}
        }
        if s.loss && self.phase == Phase::Open {
            self.enter_recovery(s.sent_max, pipe_before);
        }
        match self.phase {
            Phase::Recovery { .. } => {
                self.prr_out = self.prr_out.saturating_add(s.resent);
                self.prr(s.delivered, s.pipe);
            }
            Phase::Open | Phase::Loss { .. } => {
                if !ended && self.cwnd_limited(pipe_before) {
                    self.grow(now, s.delivered, s.srtt);
                }
            }
        }
        let room = self.cwnd.saturating_sub(s.pipe);
        self.edge = Some(s.sent_max.wrapping_add(room));
    }

    /// A loss episode begins: ssthresh is cut (β = 0.7 for CUBIC, ½ for Reno) and PRR
    /// brings the window down to it as ACKs come.
    fn enter_recovery(&mut self, sent_max: u32, pipe: u32) {
        self.ssthresh = self.reduced();
        self.phase = Phase::Recovery { point: sent_max };
        self.prr_delivered = 0;
        self.prr_out = 0;
        self.recover_fs = pipe.max(1);
        self.counters.reductions += 1;
    }

    /// The slow start threshold after a loss, noting CUBIC's W_max.
    fn reduced(&mut self) -> u32 {
        let floor = 2 * self.mss;
        match self.algorithm {
            Algorithm::Reno => (self.cwnd / 2).max(floor),
            Algorithm::Cubic => {
                let cwnd = f64::from(self.cwnd);
                // Fast convergence (RFC 9438 §4.7): a window that stopped short of the
                // last W_max gives way to newer flows.
                self.w_max = if cwnd < self.w_last_max { cwnd * (1.0 + CUBIC_BETA) / 2.0 } else { cwnd };
                self.w_last_max = cwnd;
                self.epoch = None;
                ((cwnd * CUBIC_BETA) as u32).max(floor)
            }
        }
    }

    /// RFC 6937 with the slow-start reduction bound (PRR-SSRB): the window follows the
    /// pipe plus what may be sent on this ACK.
    fn prr(&mut self, delivered: u32, pipe: u32) {
        self.prr_delivered = self.prr_delivered.saturating_add(delivered);
        let sndcnt = if pipe > self.ssthresh {
            let due = (u64::from(self.prr_delivered) * u64::from(self.ssthresh)).div_ceil(u64::from(self.recover_fs));
            (due as i64 - i64::from(self.prr_out)).max(0) as u32
        } else {
            let limit = (self.prr_delivered.saturating_sub(self.prr_out)).max(delivered) + self.mss;
            (self.ssthresh - pipe).min(limit)
        };
        self.cwnd = pipe.saturating_add(sndcnt).max(self.mss);
    }

    /// Whether the window limited what was sent: only then may it grow (RFC 7661's
    /// concern; Linux's `tcp_is_cwnd_limited`: in slow start, within half of it).
    fn cwnd_limited(&self, pipe_before: u32) -> bool {
        if self.cwnd < self.ssthresh {
            pipe_before.saturating_mul(2) >= self.cwnd
        } else {
            pipe_before.saturating_add(self.mss) >= self.cwnd
        }
    }

    /// Slow start, then congestion avoidance, for `delivered` bytes.
    fn grow(&mut self, now: Instant, mut delivered: u32, srtt: Option<Duration>) {
        if delivered == 0 {
            return;
        }
        if self.cwnd < self.ssthresh {
            let room = self.ssthresh - self.cwnd;
            let step = delivered.min(room);
            self.cwnd += step;
            delivered -= step;
            if delivered == 0 {
                return;
            }
        }
        match self.algorithm {
            Algorithm::Reno => {
                self.acked_bytes = self.acked_bytes.saturating_add(delivered);
                while self.acked_bytes >= self.cwnd {
                    self.acked_bytes -= self.cwnd;
                    self.cwnd += self.mss;
                }
            }
            Algorithm::Cubic => self.cubic(now, delivered, srtt.unwrap_or(Duration::from_millis(100))),
        }
    }

    /// RFC 9438 §4.2–4.4: congestion avoidance for `delivered` bytes.
    fn cubic(&mut self, now: Instant, delivered: u32, rtt: Duration) {
        let mss = f64::from(self.mss);
        let cwnd = f64::from(self.cwnd);
        let epoch = *self.epoch.get_or_insert_with(|| {
            // A new epoch (§4.2): K is how long the window takes back to W_max.
            if cwnd < self.w_max {
                self.k = ((self.w_max - cwnd) / mss / CUBIC_C).cbrt();
            } else {
                self.k = 0.0;
                self.w_max = cwnd;
            }
            self.w_est = cwnd;
            self.acked_bytes = 0;
            now
        });
        let t = (now - epoch).total_micros() as f64 / 1e6;
        let w_cubic = |t: f64| CUBIC_C * (t - self.k).powi(3) * mss + self.w_max;
        // The Reno-friendly estimate (§4.3): α = 3(1 − β)/(1 + β) until W_max, then 1.
        let alpha = if self.w_est < self.w_max { 3.0 * (1.0 - CUBIC_BETA) / (1.0 + CUBIC_BETA) } else { 1.0 };
        self.w_est += alpha * mss * f64::from(delivered) / cwnd;
        let next = if w_cubic(t) < self.w_est {
            self.w_est
        } else {
            let target = w_cubic(t + rtt.total_micros() as f64 / 1e6).clamp(cwnd, 1.5 * cwnd);
            cwnd + (target - cwnd) * f64::from(delivered) / cwnd
        };
        // Whole bytes; the fraction an ACK adds is kept for the next.
        let grown = (next - cwnd).max(0.0) + self.frac;
        self.frac = grown.fract();
        self.cwnd = self.cwnd.saturating_add(grown as u32).min(u32::MAX / 2);
    }

    fn on_timeout(&mut self, sent_max: u32) {
        if self.phase == Phase::Open {
            self.ssthresh = self.reduced();
        } else if self.algorithm == Algorithm::Cubic {
            self.epoch = None;
        }
        self.cwnd = self.mss;
        self.acked_bytes = 0;
        self.phase = Phase::Loss { point: sent_max };
        self.counters.timeouts += 1;
        self.last_sent_max = Some(sent_max);
        self.edge = Some(sent_max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u32 = 1000;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms as i64)
    }

    fn cc(algorithm: Algorithm) -> Controller {
        let mut cc = Controller::new(algorithm);
        cc.set_mss(MSS);
        cc
    }

    fn ack(ack: u32, delivered: u32, pipe: u32, sent_max: u32, loss: bool) -> AckSample {
        AckSample { ack, delivered, pipe, resent: 0, loss, sent_max, srtt: Some(Duration::from_millis(10)) }
    }

    #[test]
    fn slow_start_grows_the_window_by_what_is_delivered() {
        let mut cc = cc(Algorithm::Cubic);
        assert_eq!(cc.cwnd(), 10 * MSS);
        // Ten segments in flight, all acknowledged: twenty may go.
        cc.on_ack(at(10), ack(10 * MSS, 10 * MSS, 0, 10 * MSS, false));
        assert_eq!(cc.cwnd(), 20 * MSS);
    }

    #[test]
    fn a_window_the_sender_did_not_fill_does_not_grow() {
        let mut cc = cc(Algorithm::Cubic);
        cc.on_ack(at(10), ack(MSS, MSS, 0, MSS, false));
        assert_eq!(cc.cwnd(), 10 * MSS);
    }

    #[test]
    fn a_loss_cuts_cubic_to_seven_tenths_and_reno_to_half() {
        for (algorithm, expected) in [(Algorithm::Cubic, 14 * MSS), (Algorithm::Reno, 10 * MSS)] {
            let mut cc = cc(algorithm);
            cc.on_ack(at(10), ack(10 * MSS, 10 * MSS, 0, 10 * MSS, false));
            assert_eq!(cc.cwnd(), 20 * MSS);
            cc.on_ack(at(20), ack(10 * MSS, MSS, 19 * MSS, 30 * MSS, true));
            assert_eq!(cc.ssthresh(), expected, "{algorithm:?}");
            assert_eq!(cc.phase(), Phase::Recovery { point: 30 * MSS });
            // Recovery ends when everything sent before the loss is acknowledged.
            cc.on_ack(at(30), ack(30 * MSS, 19 * MSS, 0, 30 * MSS, false));
            assert_eq!(cc.phase(), Phase::Open);
            assert_eq!(cc.cwnd(), expected, "{algorithm:?}");
        }
    }

    #[test]
    fn prr_sends_in_proportion_while_the_pipe_is_above_ssthresh() {
        let mut cc = cc(Algorithm::Reno);
        cc.on_ack(at(10), ack(10 * MSS, 10 * MSS, 0, 10 * MSS, false));
        // 20 in flight, one lost: ssthresh 10, and about one segment goes for two delivered.
        cc.on_ack(at(20), ack(10 * MSS, MSS, 19 * MSS, 30 * MSS, true));
        let mut sent_max = 30 * MSS;
        let mut pipe = 19 * MSS;
        let mut sent = 0;
        for i in 0..10 {
            pipe -= MSS;
            cc.on_ack(at(21 + i), ack(10 * MSS, MSS, pipe, sent_max, false));
            let room = cc.cwnd().saturating_sub(pipe);
            sent_max += room;
            pipe += room;
            sent += room;
        }
        // Eleven delivered in all: about half of that went out again.
        assert!((5 * MSS..=6 * MSS).contains(&sent), "{sent}");
    }

    #[test]
    fn a_timeout_leaves_one_segment_and_slow_start_up_to_ssthresh() {
        let mut cc = cc(Algorithm::Cubic);
        cc.on_ack(at(10), ack(10 * MSS, 10 * MSS, 0, 10 * MSS, false));
        cc.on_timeout(30 * MSS);
        assert_eq!(cc.cwnd(), MSS);
        assert_eq!(cc.ssthresh(), 14 * MSS);
        assert_eq!(cc.phase(), Phase::Loss { point: 30 * MSS });
        cc.on_ack(at(300), ack(11 * MSS, MSS, 19 * MSS, 30 * MSS, false));
        assert_eq!(cc.cwnd(), 2 * MSS);
    }

    #[test]
    fn cubic_grows_back_towards_w_max_and_beyond() {
        let mut cc = cc(Algorithm::Cubic);
        cc.on_ack(at(0), ack(10 * MSS, 10 * MSS, 0, 10 * MSS, false));
        cc.on_ack(at(1), ack(30 * MSS, 20 * MSS, 0, 30 * MSS, false));
        assert_eq!(cc.cwnd(), 40 * MSS);
        cc.on_ack(at(2), ack(30 * MSS, MSS, 39 * MSS, 70 * MSS, true));
        cc.on_ack(at(3), ack(70 * MSS, 39 * MSS, 0, 70 * MSS, false));
        assert_eq!(cc.cwnd(), 28 * MSS);
        // Window-limited ACKs, one window per 10 ms, for 10 s: the window passes W_max.
        let mut seq = 70 * MSS;
        let mut now = 3;
        let mut last = cc.cwnd();
        while now < 10_000 {
            now += 10;
            let w = cc.cwnd();
            seq += w;
            cc.on_ack(at(now), ack(seq, w, 0, seq, false));
            assert!(cc.cwnd() >= last, "the window only grows without loss");
            last = cc.cwnd();
        }
        assert!(cc.cwnd() > 40 * MSS, "{}", cc.cwnd());
    }

    #[test]
    fn the_window_field_stops_at_the_congestion_window_but_never_before_snd_max() {
        let mut cc = cc(Algorithm::Cubic);
        cc.on_ack(at(10), ack(10 * MSS, 10 * MSS, 5 * MSS, 15 * MSS, false));
        // cwnd 20, pipe 5: the edge is SND.MAX + 15 segments, 20 segments past the ACK.
        let field = cc.limit_window(10 * MSS, 1000, 7, 15 * MSS, true);
        assert_eq!(field, (20 * MSS).div_ceil(128) as u16);
        // A peer's smaller window stays.
        assert_eq!(cc.limit_window(10 * MSS, 3, 7, 15 * MSS, true), 3);
        // After a timeout: no room, but what is in flight stays inside the window.
        cc.on_timeout(15 * MSS);
        let field = cc.limit_window(10 * MSS, 1000, 7, 15 * MSS, true);
        assert!(u32::from(field) << 7 >= 5 * MSS);
        assert!(u32::from(field - 1) << 7 < 5 * MSS);
    }
}
