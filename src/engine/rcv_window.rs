//! Receive-window autotuning: a connection's window starts small and grows to what its
//! application reads, as Linux's does (`tcp_rcv_space_adjust`), so a bulk transfer is not
//! bound by a small default buffer and a connection whose application reads slowly never
//! lets its peer park more than a small window's worth of data.
//!
//! smoltcp cannot resize a socket's buffer and offers all of it as its window. So each
//! connection's receive buffer is reserved at its largest (address space: pages become
//! resident only where data passes, see [`super::buffers`]), and ustack offers less of it:
//! - ustack's egress takes [`RcvWindow::hidden`] bytes off every window field it sends, so
//!   the window on the wire is `clamp − unread` ([`RcvWindow::wire_window`]);
//! - smoltcp, which believes it offered the whole buffer, sends no window update when the
//!   application reads, so ustack sends its own ([`wants_update`], Linux's rule
//!   in `tcp_cleanup_rbuf`);
//! - once per round trip, if the application read more than in any round trip before, the
//!   clamp becomes twice that ([`RcvWindow::on_read`]);
//! - the demux drops data beyond the edge offered (smoltcp would take anything up to its
//!   own, larger, edge), so no data lands where the pages may be given back
//!   ([`super::idle_pages`]).
//!
//! Peers that do not scale windows see at most 64 KiB, as without autotuning: the clamp is
//! not applied to them.

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};

use super::Engine;
use super::conn::LastSent;
use super::rewrite::seq_after;

/// The shortest period over which reads are measured: below a millisecond, how much an
/// application read says more about the scheduler than about the application.
const MIN_PERIOD: Duration = Duration::from_millis(1);

/// The period when no round-trip time is known (a connection made from a SYN cookie that
/// has sent nothing). Erring long only makes the first growth larger.
const UNKNOWN_RTT_PERIOD: Duration = Duration::from_millis(100);

/// One connection's autotuned receive window.
#[derive(Debug, Clone)]
pub struct RcvWindow {
    /// Bytes of receive buffer reserved (smoltcp's capacity).
    capacity: u32,
    /// The most the window may offer: `clamp − unread`.
    clamp: u32,
    /// The most the application read in one measuring period so far (Linux's
    /// `rcvq_space.space`).
    space: u32,
    /// Bytes read since `since`.
    copied: u32,
    since: Instant,
}

impl RcvWindow {
    /// A window growing from `initial` bytes into a `capacity`-byte buffer; None if there is
    /// no room to grow.
    pub fn new(capacity: usize, initial: usize, now: Instant) -> Option<RcvWindow> {
        let capacity = u32::try_from(capacity).ok()?;
        let initial = u32::try_from(initial).ok()?.min(capacity);
        (initial < capacity).then_some(RcvWindow {
            capacity,
            clamp: initial,
            space: initial / 2,
            copied: 0,
            since: now,
        })
    }

    /// The most the window may offer now (the receive buffer as SO_RCVBUF reports it).
    pub fn clamp(&self) -> u32 {
        self.clamp
    }

    /// Bytes of the buffer the peer is not offered.
    pub fn hidden(&self) -> u32 {
        self.capacity - self.clamp
    }

    /// The window to offer with `unread` bytes waiting for the application.
    pub fn wire_window(&self, unread: usize) -> u32 {
        self.clamp.saturating_sub(u32::try_from(unread).unwrap_or(u32::MAX))
    }

    /// Counts `n` bytes the application read at `now`; once a period of at least `rtt`
    /// has passed, grows the clamp to twice what was read in it if that is more than any
    /// period before (the clamp never shrinks). Returns whether it grew.
    pub fn on_read(&mut self, n: usize, now: Instant, rtt: Option<Duration>) -> bool {
        self.copied = self.copied.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        let period = rtt.map_or(UNKNOWN_RTT_PERIOD, |rtt| rtt.max(MIN_PERIOD));
        if now < self.since + period {
            return false;
        }
        let copied = std::mem::take(&mut self.copied);
        self.since = now;
        if copied <= self.space {
            return false;
        }
        self.space = copied;
        let grown = copied.saturating_mul(2).min(self.capacity);
        let grew = grown > self.clamp;
        self.clamp = self.clamp.max(grown);
        grew
    }
}

impl Engine {
    /// After the application read `n` bytes from connection `handle`: measures the read
    /// for growth (an autotuned window), and sends a window update if the window the peer
    /// knows is worth one — for every connection: smoltcp's own rule (an update once its
    /// window doubled) would offer silly windows, which its segments no longer carry (see
    /// [`avoid_silly_window`]), and may then send none when one is due.
    pub(super) fn after_read(&mut self, handle: SocketHandle, n: usize) {
        let now = self.now;
        let socket = self.tcp(handle);
        let (unread, capacity) = (socket.recv_queue(), socket.recv_capacity());
        let open = matches!(socket.state(), tcp::State::Established | tcp::State::FinWait1 | tcp::State::FinWait2);
        let Some(conn) = self.conns.get_mut(&handle) else { return };
        let rtt = conn.handshake_rtt.or_else(|| conn.recovery.srtt());
        let (Some(sent), Some(rcv_nxt)) = (conn.sent, conn.rcv_nxt()) else { return };
        let window_now = match (conn.rcv_window.as_mut(), conn.rcv_scale > 0) {
            (Some(tuning), true) => {
                if tuning.on_read(n, now, rtt) {
                    log::debug!(target: "ustack::window", "{}: receive window grows to {} bytes", conn.tuple, tuning.clamp());
                }
                tuning.wire_window(unread)
            }
            _ => u32::try_from(capacity.saturating_sub(unread)).unwrap_or(u32::MAX),
        };
        // As the window field will say it, in whole units of the scale.
        let window_now = window_now >> conn.rcv_scale << conn.rcv_scale;
        let remaining = if seq_after(sent.edge, rcv_nxt) { sent.edge.wrapping_sub(rcv_nxt) } else { 0 };
        if !open || !wants_update(conn.rcv_full(), conn.sws_floor(), remaining, window_now) {
            return;
        }
        // smoltcp's own window field, as it would send it: the transmit path clamps it like
        // any of smoltcp's, and records what went out. Built in smoltcp's numbering.
        let own = u16::try_from(capacity.saturating_sub(unread) >> conn.rcv_scale).unwrap_or(u16::MAX);
        let update = LastSent {
            seq_end: sent.seq_end.wrapping_add(conn.shift.unwrap_or(0)),
            ack: rcv_nxt,
            window: own,
            edge: sent.edge,
            own_window: own,
        };
        let packet = super::cookie::ack(&conn.tuple, &update);
        self.transmit_own(&packet);
    }
}

/// The window field to send in place of smoltcp's `field` (scaled by `scale`) for a
/// connection hiding `hidden` bytes: smaller by the hidden bytes (rounded up to a unit),
/// but not moving the right edge back from `edge_room` bytes past the ACK (RFC 9293
/// §3.8.6.2.2), and never more than smoltcp's own. An edge that is not on a unit may
/// move back by less than a unit, as smoltcp's own does: rounding it up instead would
/// let it creep past the clamp by up to a unit with every ACK while the application
/// does not read (the demux takes data up to the furthest edge offered).
pub fn clamp_field(field: u16, scale: u8, hidden: u32, edge_room: u32) -> u16 {
    let unit = 1u32 << scale.min(14);
    let hidden_units = hidden.div_ceil(unit);
    let keep_edge = edge_room / unit;
    let clamped = u32::from(field).saturating_sub(hidden_units).max(keep_edge);
    u16::try_from(clamped.min(u32::from(field))).unwrap_or(field)
}

/// The window field to send in place of `field` (scaled by `scale`) so that no silly
/// window is offered (RFC 1122 §4.2.3.3; Linux's `__tcp_select_window`): a window below
/// `floor` bytes (a segment's worth, or half the buffer) is not offered, and the edge stays
/// where it was, `edge_room` bytes past the ACK, to the unit below (as [`clamp_field`]).
/// Once the edge is reached the window is zero, until the application has read enough.
pub fn avoid_silly_window(field: u16, scale: u8, floor: u32, edge_room: u32) -> u16 {
    let unit_shift = u32::from(scale.min(14));
    if (u32::from(field) << unit_shift) >= floor {
        return field;
    }
    field.min(u16::try_from(edge_room >> unit_shift).unwrap_or(u16::MAX))
}

/// Whether, after a read, a window update is worth sending at once (Linux's
/// `tcp_cleanup_rbuf`): what is left of the window the peer knows (`remaining`, from
/// RCV.NXT to the edge offered) is at most half of `full` (the most the window may offer),
/// and the window now (`now`) is worth offering (at least `floor`, see
/// [`avoid_silly_window`]) and at least twice what is left. Otherwise the next segment
/// carries it.
pub fn wants_update(full: u32, floor: u32, remaining: u32, now: u32) -> bool {
    remaining.saturating_mul(2) <= full && now > 0 && now >= floor && now >= remaining.saturating_mul(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;

    fn at_ms(ms: i64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn the_window_offered_is_the_clamp_less_what_is_unread() {
        let w = RcvWindow::new(4096 * KIB, 64 * KIB, at_ms(0)).unwrap();
        assert_eq!(w.wire_window(0), 64 * 1024);
        assert_eq!(w.wire_window(60 * KIB), 4 * 1024);
        assert_eq!(w.wire_window(100 * KIB), 0);
        assert_eq!(w.hidden(), (4096 - 64) * 1024);
        assert!(RcvWindow::new(64 * KIB, 64 * KIB, at_ms(0)).is_none(), "no room to grow: no autotuning");
    }

    #[test]
    fn an_application_that_keeps_up_doubles_the_window_each_round_trip_up_to_the_buffer() {
        let rtt = Some(Duration::from_millis(10));
        let mut w = RcvWindow::new(1024 * KIB, 64 * KIB, at_ms(0)).unwrap();
        let mut clamps = Vec::new();
        // Each round trip the peer sends a whole window and the application reads it all.
        for round in 1..=6 {
            let window = w.clamp() as usize;
            w.on_read(window, at_ms(round * 10), rtt);
            clamps.push(w.clamp() / 1024);
        }
        assert_eq!(clamps, [128, 256, 512, 1024, 1024, 1024]);
    }

    #[test]
    fn reads_within_one_round_trip_are_counted_together() {
        let rtt = Some(Duration::from_millis(10));
        let mut w = RcvWindow::new(1024 * KIB, 64 * KIB, at_ms(0)).unwrap();
        assert!(!w.on_read(40 * KIB, at_ms(3), rtt));
        assert!(!w.on_read(40 * KIB, at_ms(6), rtt));
        assert!(w.on_read(40 * KIB, at_ms(10), rtt), "120 KiB in one round trip");
        assert_eq!(w.clamp(), 240 * 1024);
    }

    #[test]
    fn an_application_reading_no_more_than_before_does_not_grow_the_window() {
        let rtt = Some(Duration::from_millis(10));
        let mut w = RcvWindow::new(1024 * KIB, 64 * KIB, at_ms(0)).unwrap();
        // A slow reader: 20 KiB a round trip, well under the window.
        for round in 1..=50 {
            w.on_read(20 * KIB, at_ms(round * 10), rtt);
        }
        assert_eq!(w.clamp(), 64 * 1024);
        // Once it read 40 KiB in a period, growing to 80 KiB would not raise the clamp.
        w.on_read(40 * KIB, at_ms(600), rtt);
        assert_eq!(w.clamp(), 80 * 1024);
        w.on_read(40 * KIB, at_ms(700), rtt);
        assert_eq!(w.clamp(), 80 * 1024, "the same amount again: no growth");
    }

    #[test]
    fn a_short_round_trip_is_measured_over_a_millisecond_and_an_unknown_one_over_100_ms() {
        let mut w = RcvWindow::new(8192 * KIB, 64 * KIB, at_ms(0)).unwrap();
        assert!(!w.on_read(64 * KIB, Instant::from_micros(500), Some(Duration::from_micros(40))));
        assert!(w.on_read(64 * KIB, at_ms(1), Some(Duration::from_micros(40))));
        assert_eq!(w.clamp(), 256 * 1024);
        let mut w = RcvWindow::new(8192 * KIB, 64 * KIB, at_ms(0)).unwrap();
        assert!(!w.on_read(64 * KIB, at_ms(99), None));
        assert!(w.on_read(0, at_ms(100), None));
    }

    #[test]
    fn an_update_goes_out_when_the_window_left_is_small_and_the_window_now_twice_it_and_worth_it() {
        const FULL: u32 = 64 * 1024;
        const FLOOR: u32 = 1460;
        // 10 KiB left of what was offered, nothing unread: 64 KiB now.
        assert!(wants_update(FULL, FLOOR, 10 * 1024, 64 * 1024));
        // 40 KiB left: more than half the window.
        assert!(!wants_update(FULL, FLOOR, 40 * 1024, 64 * 1024));
        // 10 KiB left, 50 KiB still unread: 14 KiB now, less than twice what is left.
        assert!(!wants_update(FULL, FLOOR, 10 * 1024, 14 * 1024));
        // Zero left and zero now: nothing to tell.
        assert!(!wants_update(FULL, FLOOR, 0, 0));
        // The window shut, and a read freed 100 bytes: a silly window, not worth telling.
        assert!(!wants_update(FULL, FLOOR, 0, 100));
        assert!(wants_update(FULL, FLOOR, 0, 1460), "a segment's worth is");
    }

    #[test]
    fn a_window_below_a_segment_is_not_offered_and_the_edge_stays() {
        // Scale 7 (128-byte units), a floor of 1460 bytes.
        assert_eq!(avoid_silly_window(12, 7, 1460, 0), 12, "1536 bytes: worth offering");
        assert_eq!(avoid_silly_window(11, 7, 1460, 0), 0, "1408 bytes: not, and the edge was reached");
        assert_eq!(avoid_silly_window(11, 7, 1460, 640), 5, "the edge offered before stays");
        assert_eq!(avoid_silly_window(3, 7, 1460, 640), 3, "never more than smoltcp's own");
        // Unscaled: a 100-byte window is shut.
        assert_eq!(avoid_silly_window(100, 0, 1460, 0), 0);
        // A small buffer: half of it is worth offering.
        assert_eq!(avoid_silly_window(512, 0, 512, 0), 512);
        // No floor known (no SYN seen): anything goes.
        assert_eq!(avoid_silly_window(1, 7, 0, 0), 1);
    }

    #[test]
    fn the_field_hides_bytes_rounded_up_and_never_moves_the_edge_back() {
        // Scale 7 (128-byte units): smoltcp offers 4 MiB, 4 MiB − 64 KiB hidden.
        let field = (4096 * 1024 / 128) as u16;
        assert_eq!(clamp_field(field, 7, (4096 - 64) * 1024, 0), 512);
        assert_eq!(clamp_field(field, 7, (4096 - 64) * 1024 + 1, 0), 511, "a partial unit hides a whole one");
        // An edge offered earlier 100 KiB past the ACK stays, to the unit below.
        assert_eq!(clamp_field(field, 7, (4096 - 64) * 1024, 100 * 1024), 800);
        assert_eq!(clamp_field(field, 7, (4096 - 64) * 1024, 100 * 1024 + 127), 800);
        // Never beyond smoltcp's own window.
        assert_eq!(clamp_field(10, 7, 0, 100 * 1024), 10);
        assert_eq!(clamp_field(field, 0, 0, 0), field);
    }
}
