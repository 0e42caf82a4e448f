//! ustack's record of each TCP connection: its 5-tuple, owner, and timeline — every state
//! transition, timed from the connection's first SYN — from which the handshake RTT and
//! who closed first are read.

use smoltcp::socket::tcp::State;
use smoltcp::time::{Duration, Instant};

use super::congestion::Controller;
use super::idle_pages::Traffic;
use super::rcv_window::RcvWindow;
use super::recovery::Recovery;
use super::send_front::SendFront;
use super::snd_buffer::SndBuffer;
use super::{SockId, TcpTuple};
use crate::errno::Errno;

/// Transitions kept per connection; a connection has at most about ten, so this only
/// bounds what a misbehaving peer could make it record.
const TIMELINE_LIMIT: usize = 32;

/// Who a TCP connection belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// In a listener's SYN queue or accept queue.
    Listener(SockId),
    /// An API socket's connection.
    Socket(SockId),
    /// Closed by the API, finishing its FIN exchange or TIME-WAIT in the stack.
    Orphan,
}

impl Owner {
    /// The API socket whose callers may wait on this connection: its own socket, or the
    /// listener whose queue it is in.
    pub fn socket(self) -> Option<SockId> {
        match self {
            Owner::Listener(id) | Owner::Socket(id) => Some(id),
            Owner::Orphan => None,
        }
    }
}

/// Which end did something first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closer {
    /// This stack (ustack).
    Local,
    /// The peer.
    Remote,
    /// Both at once (simultaneous close: FIN-WAIT-1 → CLOSING).
    Both,
}

impl std::fmt::Display for Closer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Closer::Local => "local",
            Closer::Remote => "remote",
            Closer::Both => "both",
        })
    }
}

/// ustack's record of one TCP connection (one smoltcp socket).
#[derive(Debug)]
pub struct Conn {
    pub tuple: TcpTuple,
    pub owner: Owner,
    /// The state when the stack last looked.
    pub state: State,
    /// When the first SYN of this connection was sent or received.
    pub born: Instant,
    /// Every state the connection entered, with when (the first is its initial state).
    pub timeline: Vec<(Instant, State)>,
    /// The handshake round trip: SYN sent → ESTABLISHED for an active open (the peer's
    /// SYN-ACK arrived), SYN-ACK sent → ESTABLISHED for a passive one (its ACK arrived).
    pub handshake_rtt: Option<Duration>,
    /// Which side sent the first FIN.
    pub closed_first: Option<Closer>,
    /// An error the next send/recv reports once (Linux's `sk_err`): ECONNRESET or
    /// ECONNREFUSED after a RST, ETIMEDOUT after a timeout.
    pub pending_error: Option<Errno>,
    /// A RST arrived for this connection.
    pub reset: bool,
    /// Whether ustack still holds a port for it (accepted connections and orphans do).
    pub holds_port: bool,
    /// smoltcp's ISN minus the ISN on the wire (see `stack::rewrite`); set when the
    /// connection's first SYN or SYN-ACK goes out.
    pub shift: Option<u32>,
    /// For a connection made from a SYN cookie: the cookie (our ISN on the wire), until
    /// smoltcp's own SYN-ACK has been suppressed and the shift learnt from it.
    pub cookie: Option<u32>,
    /// Made from a SYN cookie: its SYN came before ustack kept any state, so its timeline
    /// starts at the cookie's ACK and it has no handshake RTT.
    pub via_cookie: bool,
    /// The last segment ustack sent, in the wire's numbering: where its sequence space
    /// ended, what it acknowledged (RCV.NXT as the peer knows it), and its window field.
    /// RFC 5961's checks of incoming RSTs measure against it.
    pub sent: Option<LastSent>,
    /// In-order bytes smoltcp has queued for the application since [`Conn::sent`] went out:
    /// its RCV.NXT is `sent.ack` plus this (until a FIN arrives). smoltcp does not say
    /// where its RCV.NXT is, and which segments it refuses depends on it.
    pub received_since_sent: u32,
    /// The window scale the peer applies to ustack's window fields (ustack's SYN's, if
    /// both SYNs carried one).
    pub rcv_scale: u8,
    /// The window scale ustack applies to the peer's window fields (the peer's SYN's, if
    /// both SYNs carried one).
    pub snd_scale: u8,
    /// The MSS ustack's SYN advertised (0 until it went out): the segment size the peer
    /// sends at most, which a window must reach to be worth offering (see
    /// [`Conn::sws_floor`]).
    pub rcv_mss: u16,
    /// The receive buffer's capacity, in bytes (smoltcp's; an autotuned window offers
    /// less of it).
    pub rcv_buffer: u32,
    /// When the last challenge ACK went out (RFC 5961 §7: at most one a second).
    pub challenged_at: Option<Instant>,
    /// Where ustack's FIN ends in the wire's numbering (its sequence number + 1), once one
    /// went out.
    pub fin_end: Option<u32>,
    /// The acknowledgment number (wire numbering) and window field of the last segment
    /// received with ACK: a duplicate ACK repeats both.
    pub last_ack_in: Option<(u32, u16)>,
    /// The end of the furthest segment ustack has sent (SND.MAX, wire numbering), from its
    /// SYN on: an acknowledgment short of it leaves data or a FIN in flight.
    pub sent_max: Option<u32>,
    /// smoltcp's SND.NXT, followed from what it sends (see [`SendFront`]).
    pub send_front: SendFront,
    /// ustack's loss recovery for what this connection sends.
    pub recovery: Recovery,
    /// The SYN-ACK smoltcp sent for a passive open, as it built it (smoltcp's numbering),
    /// kept while the connection is in SYN-RECEIVED: the answer to a retransmitted SYN,
    /// which smoltcp ignores and Linux answers at once.
    pub syn_ack: Option<Vec<u8>>,
    /// When a retransmitted SYN was last answered with it (at most one every 500 ms,
    /// Linux's `tcp_invalid_ratelimit`).
    pub syn_ack_resent_at: Option<Instant>,
    /// The highest acknowledgment number the peer sent (wire numbering) that acknowledged
    /// something ustack had sent, from segments whose checksum is right: SND.UNA as ustack
    /// knows it, for accepting data whose ACK is older (see `demux::accept_old_ack`).
    pub snd_una: Option<u32>,
    /// The most ustack ever had unacknowledged (SND.MAX − SND.UNA): how far behind SND.UNA
    /// a reordered segment's acknowledgment can genuinely be.
    pub max_flight: u32,
    /// ustack's congestion control for what this connection sends, unless it is off or
    /// smoltcp's (see `StackConfig::congestion`).
    pub cc: Option<Controller>,
    /// When the first retransmission timeout since the last progress fired: Linux's
    /// `retrans_stamp`, from which `tcp_retries2` counts (see [`super::give_up`]).
    pub retrans_stamp: Option<Instant>,
    /// The connection was given up on (no ACK for too long): it closes without a RST.
    pub gave_up: bool,
    /// Its receive window, if autotuned (see [`RcvWindow`]).
    pub rcv_window: Option<RcvWindow>,
    /// Its send buffer, if autotuned (see [`SndBuffer`]).
    pub snd_buffer: Option<SndBuffer>,
    /// The furthest end of the data the peer sent that smoltcp was given (the peer's
    /// numbering): beyond RCV.NXT, smoltcp may hold data out of order.
    pub rcv_high: Option<u32>,
    /// Data smoltcp was given for the application since the receive buffer's pages were
    /// last given back ([`super::idle_pages`]).
    pub received: Traffic,
    /// Data the application queued since the send buffer's pages were last given back.
    pub queued: Traffic,
}

/// See [`Conn::sent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastSent {
    pub seq_end: u32,
    pub ack: u32,
    pub window: u16,
    /// The furthest right edge of the receive window ustack has offered (ACK + scaled
    /// window): smoltcp may have moved it back since (see `demux::ack_smoltcp_refuses`).
    pub edge: u32,
    /// smoltcp's own window field, before autotuning made it smaller on the wire: where
    /// smoltcp's right edge is.
    pub own_window: u16,
}

fn millis(d: Duration) -> f64 {
    d.total_micros() as f64 / 1000.0
}

impl Conn {
    pub fn new(tuple: TcpTuple, owner: Owner, state: State, now: Instant) -> Conn {
        Conn {
            tuple,
            owner,
            state,
            born: now,
            timeline: vec![(now, state)],
            handshake_rtt: None,
            closed_first: None,
            pending_error: None,
            reset: false,
            holds_port: false,
            shift: None,
            cookie: None,
            via_cookie: false,
            sent: None,
            received_since_sent: 0,
            rcv_scale: 0,
            snd_scale: 0,
            rcv_mss: 0,
            rcv_buffer: 0,
            challenged_at: None,
            fin_end: None,
            last_ack_in: None,
            sent_max: None,
            send_front: SendFront::default(),
            recovery: Recovery::default(),
            syn_ack: None,
            syn_ack_resent_at: None,
            snd_una: None,
            max_flight: 0,
            cc: None,
            retrans_stamp: None,
            gave_up: false,
            rcv_window: None,
            snd_buffer: None,
            rcv_high: None,
            received: Traffic::default(),
            queued: Traffic::default(),
        }
    }

    /// smoltcp's RCV.NXT as ustack reckons it (the peer's numbering, before a FIN): what
    /// ustack last acknowledged plus what smoltcp queued since. None before ustack sent
    /// an ACK.
    pub fn rcv_nxt(&self) -> Option<u32> {
        self.sent.map(|sent| sent.ack.wrapping_add(self.received_since_sent))
    }

    /// The most the receive window may offer: an autotuned window's clamp, or the whole
    /// buffer (Linux's `tcp_full_space`).
    pub fn rcv_full(&self) -> u32 {
        self.rcv_window.as_ref().map_or(self.rcv_buffer, |tuning| tuning.clamp())
    }

    /// The smallest window worth offering: a segment's worth, or half the buffer if that is
    /// less (RFC 1122 §4.2.3.3's receiver-side silly window avoidance, as Linux's
    /// `__tcp_select_window`). A smaller one leaves the window's edge where it was.
    pub fn sws_floor(&self) -> u32 {
        u32::from(self.rcv_mss).min(self.rcv_full() / 2)
    }

    /// Records that smoltcp's socket is now in `state`. Returns whether it changed.
    ///
    /// smoltcp may move through several states on one segment (an ACK carrying data and
    /// a FIN takes SYN-RECEIVED to CLOSE-WAIT); the handshake's ESTABLISHED is recorded
    /// in between, since the connection did pass through it.
    pub fn advance(&mut self, state: State, now: Instant) -> bool {
        if state == self.state {
            return false;
        }
        let handshaking = matches!(self.state, State::SynSent | State::SynReceived);
        let past_handshake = !matches!(state, State::Closed | State::Listen | State::SynSent | State::SynReceived);
        if handshaking && past_handshake && state != State::Established {
            self.enter(State::Established, now);
        }
        self.enter(state, now);
        true
    }

    fn enter(&mut self, state: State, now: Instant) {
        let from = self.state;
        self.state = state;
        if from == State::SynReceived {
            self.syn_ack = None;
        }
        if self.timeline.len() < TIMELINE_LIMIT {
            self.timeline.push((now, state));
        }
        let since_syn = millis(now - self.born);
        log::info!(target: "ustack::handshake", "{} {from} -> {state} +{since_syn:.3}ms", self.tuple);
        match (from, state) {
            (State::SynReceived, State::Established) if self.via_cookie => {
                log::info!(target: "ustack::handshake", "{} handshake complete through a SYN cookie (no RTT: no state was kept for the SYN)", self.tuple);
            }
            (State::SynSent | State::SynReceived, State::Established) => {
                let started = self.timeline.iter().rev().find(|(_, s)| *s == from).map_or(self.born, |(t, _)| *t);
                let rtt = now - started;
                self.handshake_rtt = Some(rtt);
                log::info!(target: "ustack::handshake", "{} handshake complete, RTT {:.3}ms", self.tuple, millis(rtt));
            }
            (State::Established, State::FinWait1) => self.closed_first = self.closed_first.or(Some(Closer::Local)),
            (State::Established, State::CloseWait) => self.closed_first = self.closed_first.or(Some(Closer::Remote)),
            (State::FinWait1, State::Closing) => self.closed_first = Some(Closer::Both),
            _ => {}
        }
        if state == State::Closed {
            self.pending_error = self.pending_error.or(match from {
                State::SynSent if self.reset => Some(Errno::ECONNREFUSED),
                State::SynSent => Some(Errno::ETIMEDOUT),
                _ if self.reset => Some(Errno::ECONNRESET),
                _ => None,
            });
            let how = self.how_it_closed();
            log::info!(target: "ustack::handshake", "{} closed: {how}, after {since_syn:.3}ms", self.tuple);
        }
    }

    /// How a closed connection ended, for the log.
    fn how_it_closed(&self) -> String {
        match (self.reset, self.closed_first) {
            (true, _) => "reset".to_string(),
            (false, Some(side)) => format!("{side} closed first"),
            (false, None) if self.gave_up => "given up, nothing acknowledged".to_string(),
            // smoltcp's abort: close() with unread data, SO_LINGER 0.
            (false, None) if self.timeline.iter().any(|(_, s)| *s == State::Established) => {
                "aborted by this side (RST sent)".to_string()
            }
            (false, None) => "never established".to_string(),
        }
    }

    /// The timeline as (milliseconds since the first SYN, RFC 9293 state name).
    pub fn timeline_ms(&self) -> Vec<(f64, String)> {
        self.timeline.iter().map(|(t, s)| (millis(*t - self.born), s.to_string())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(state: State) -> Conn {
        let tuple = TcpTuple { local: "10.0.0.2:7".parse().unwrap(), remote: "10.0.0.1:40000".parse().unwrap() };
        Conn::new(tuple, Owner::Orphan, state, Instant::from_millis(0))
    }

    #[test]
    fn passive_open_records_rtt_and_who_closed_first() {
        let mut c = conn(State::Listen);
        c.advance(State::SynReceived, Instant::from_millis(1));
        c.advance(State::Established, Instant::from_millis(4));
        assert_eq!(c.handshake_rtt, Some(Duration::from_millis(3)));
        c.advance(State::CloseWait, Instant::from_millis(10));
        assert_eq!(c.closed_first, Some(Closer::Remote));
        let states: Vec<_> = c.timeline_ms().into_iter().map(|(_, s)| s).collect();
        assert_eq!(states, ["LISTEN", "SYN-RECEIVED", "ESTABLISHED", "CLOSE-WAIT"]);
    }

    #[test]
    fn an_established_connection_closed_without_fin_or_reset_received_was_aborted() {
        let mut c = conn(State::Listen);
        c.advance(State::SynReceived, Instant::from_millis(1));
        c.advance(State::Established, Instant::from_millis(2));
        c.advance(State::Closed, Instant::from_millis(3));
        assert_eq!(c.how_it_closed(), "aborted by this side (RST sent)");
        let mut never = conn(State::SynSent);
        never.advance(State::Closed, Instant::from_millis(3));
        assert_eq!(never.how_it_closed(), "never established");
    }

    #[test]
    fn a_jump_past_established_still_records_it() {
        let mut c = conn(State::SynReceived);
        c.advance(State::CloseWait, Instant::from_millis(2));
        let states: Vec<_> = c.timeline_ms().into_iter().map(|(_, s)| s).collect();
        assert_eq!(states, ["SYN-RECEIVED", "ESTABLISHED", "CLOSE-WAIT"]);
        assert_eq!(c.closed_first, Some(Closer::Remote));
    }

    #[test]
    fn refused_and_timed_out_connects_leave_the_right_error() {
        let mut refused = conn(State::SynSent);
        refused.reset = true;
        refused.advance(State::Closed, Instant::from_millis(1));
        assert_eq!(refused.pending_error, Some(Errno::ECONNREFUSED));
        let mut silent = conn(State::SynSent);
        silent.advance(State::Closed, Instant::from_millis(1));
        assert_eq!(silent.pending_error, Some(Errno::ETIMEDOUT));
    }
}
