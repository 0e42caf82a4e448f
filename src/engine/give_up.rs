//! When a connection whose data goes unacknowledged is given up: Linux's `tcp_retries2`.
//!
//! Linux does not count retransmissions but time: `retransmits_timed_out` (net/ipv4/
//! tcp_timer.c) gives up once the time since the first retransmission (`retrans_stamp`)
//! reaches what `tcp_retries2` timeouts would take doubling from `TCP_RTO_MIN` (200 ms)
//! up to `TCP_RTO_MAX` (120 s) — `tcp_model_timeout`. With the default of 15 that is
//! 0.2 s · (2¹⁰ − 1) + 6 · 120 s = 924.6 s. The check runs when the retransmission timer
//! fires, before it resends. The connection then closes with ETIMEDOUT (`tcp_write_err`)
//! and without a RST (`tcp_done` sends none).

use std::time::Duration;

use smoltcp::time::Instant;

use super::conn::Conn;

/// Linux's default `tcp_retries2`.
pub const RETRIES2: u32 = 15;

/// `TCP_RTO_MIN` and `TCP_RTO_MAX`.
const RTO_MIN: Duration = Duration::from_millis(200);
const RTO_MAX: Duration = Duration::from_secs(120);

/// What `tcp_retries2` retransmissions come to: 924.6 s for 15.
pub const RETRIES2_TIMEOUT: Duration = model_timeout(RETRIES2, RTO_MIN);

/// Linux's `tcp_model_timeout`: the time `boundary` timeouts take, doubling from `base`
/// until `RTO_MAX`, then `RTO_MAX` each.
const fn model_timeout(boundary: u32, base: Duration) -> Duration {
    // ilog2(RTO_MAX / base): the timeouts that still double.
    let linear = (RTO_MAX.as_millis() / base.as_millis()).ilog2();
    let base_ms = base.as_millis() as u64;
    let ms = if boundary <= linear {
        ((2u64 << boundary) - 1) * base_ms
    } else {
        ((2u64 << linear) - 1) * base_ms + (boundary - linear) as u64 * RTO_MAX.as_millis() as u64
    };
    Duration::from_millis(ms)
}

/// A retransmission timeout fired for `conn` at `now` (`first`: the first since the
/// cumulative ACK last moved). Whether the connection is to be given up now.
pub fn retries_exhausted(conn: &mut Conn, now: Instant, first: bool) -> bool {
    if first || conn.retrans_stamp.is_none() {
        conn.retrans_stamp = Some(now);
        return false;
    }
    let since = conn.retrans_stamp.map_or(smoltcp::time::Duration::ZERO, |at| now - at);
    since >= smoltcp::time::Duration::from(RETRIES2_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifteen_retries_come_to_linuxs_924_6_seconds() {
        assert_eq!(RETRIES2_TIMEOUT, Duration::from_millis(924_600));
        // tcp_syn_retries = 6 from a 1 s initial timeout: connect() gives up after 127 s.
        assert_eq!(model_timeout(6, Duration::from_secs(1)), Duration::from_secs(127));
        assert_eq!(model_timeout(3, RTO_MIN), Duration::from_millis(3000));
    }
}
