//! Send-buffer autotuning: how much a connection's send() takes grows with what the
//! network takes, as Linux's does (`tcp_sndbuf_expand`), so a bulk sender is not bound by
//! a small default buffer (everything in flight is in the send buffer until acknowledged)
//! while a connection to a slow peer queues no more than a small buffer's worth.
//!
//! As for the receive window ([`super::rcv_window`]), smoltcp cannot resize a buffer: the
//! send buffer is reserved at its largest and send() fills it only up to a clamp. The
//! clamp starts at `StackConfig::tcp_buffer` and grows to twice what the connection may
//! have in flight — its congestion window, or the peer's window if smaller — never
//! shrinking. Without ustack's congestion control (`--congestion none` or smoltcp's own),
//! which knows the congestion window, the peer's window alone sets it: with smoltcp's
//! controllers that may queue more than Linux would, never more than `tcp_send_max`.

use smoltcp::iface::SocketHandle;

use super::{Conn, Engine};

/// One connection's autotuned send buffer.
#[derive(Debug, Clone)]
pub struct SndBuffer {
    /// Bytes of send buffer reserved (smoltcp's capacity).
    capacity: u32,
    /// The most send() fills the buffer to.
    clamp: u32,
}

impl SndBuffer {
    /// A send buffer growing from `initial` bytes into a `capacity`-byte one; None if there
    /// is no room to grow.
    pub fn new(capacity: usize, initial: usize) -> Option<SndBuffer> {
        let capacity = u32::try_from(capacity).ok()?;
        let initial = u32::try_from(initial).ok()?.min(capacity);
        (initial < capacity).then_some(SndBuffer { capacity, clamp: initial })
    }

    /// The clamp once grown for `in_flight_allowed` bytes (the congestion window, or the
    /// peer's window if smaller): twice that, within the reservation.
    pub fn clamp_for(&self, in_flight_allowed: u32) -> u32 {
        self.clamp.max(in_flight_allowed.saturating_mul(2).min(self.capacity))
    }

    /// Grows the clamp for `in_flight_allowed` bytes (see [`SndBuffer::clamp_for`]).
    pub fn grow(&mut self, in_flight_allowed: u32) {
        self.clamp = self.clamp_for(in_flight_allowed);
    }

    /// The most send() fills the buffer to (SO_SNDBUF as it reports, halved).
    pub fn clamp(&self) -> u32 {
        self.clamp
    }
}

/// What `conn` may have in flight now: its congestion window, or the peer's window if
/// smaller; without ustack's congestion control, the peer's window (None until one came).
fn in_flight_allowed(conn: &Conn) -> Option<u32> {
    let peer_window = conn.last_ack_in.map(|(_, window)| u32::from(window) << conn.snd_scale.min(14));
    match &conn.cc {
        Some(cc) => Some(cc.cwnd().min(peer_window.unwrap_or(u32::MAX))),
        None => peer_window,
    }
}

impl Engine {
    /// Bytes send() may queue on connection `handle` now: the room left under its
    /// autotuned clamp, or in its buffer.
    pub(super) fn send_room(&self, handle: SocketHandle) -> usize {
        let tcp = self.tcp(handle);
        let free = tcp.send_capacity() - tcp.send_queue();
        let Some(conn) = self.conns.get(&handle) else { return free };
        let Some(buffer) = &conn.snd_buffer else { return free };
        let clamp = in_flight_allowed(conn).map_or(buffer.clamp(), |allowed| buffer.clamp_for(allowed));
        (clamp as usize).saturating_sub(tcp.send_queue()).min(free)
    }

    /// Keeps connection `handle`'s send buffer grown to what its network now takes.
    pub(super) fn grow_send_buffer(&mut self, handle: SocketHandle) {
        let Some(conn) = self.conns.get_mut(&handle) else { return };
        if let (Some(allowed), Some(buffer)) = (in_flight_allowed(conn), conn.snd_buffer.as_mut()) {
            buffer.grow(allowed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clamp_is_twice_what_may_be_in_flight_within_the_reservation_and_never_shrinks() {
        let mut b = SndBuffer::new(4 << 20, 64 << 10).unwrap();
        assert_eq!(b.clamp(), 64 << 10);
        b.grow(14_600);
        assert_eq!(b.clamp(), 64 << 10, "ten segments in flight: the starting buffer is more than twice that");
        b.grow(100_000);
        assert_eq!(b.clamp(), 200_000);
        b.grow(50_000);
        assert_eq!(b.clamp(), 200_000, "a smaller window after a loss does not shrink it");
        b.grow(10 << 20);
        assert_eq!(b.clamp(), 4 << 20);
        assert!(SndBuffer::new(64 << 10, 64 << 10).is_none(), "no room to grow: not autotuned");
    }
}
