//! A middleware device that logs every packet as a tcpdump line.
//!
//! `Tracer<D>` wraps any [`Link`] and is one, like smoltcp's `phy::Tracer`, so it nests
//! with the other middleware: `Tracer::new(PcapRecorder::new(tun, file)?)`. Each packet
//! in and out is logged at info level with target [`TARGET`], one line each:
//!
//! ```text
//! in  12:34:56.789012 IP 10.7.0.1.40000 > 10.7.0.2.7: Flags [S], seq 123, win 64240, ...
//! out 12:34:56.789100 IP 10.7.0.2.7 > 10.7.0.1.40000: Flags [S.], seq 456, ack 124, ...
//! ```
//!
//! `in` is a packet the stack receives, `out` one it sends; the rest is exactly what
//! `tcpdump -nn` would print for it (time of day in UTC, relative sequence numbers).
//! Packets are only decoded while the target is enabled, so a tracer left in place
//! costs one level check per packet when its output is off; a conversation already
//! under way when tracing is switched on shows absolute numbers, as tcpdump does when
//! it starts mid-stream.

use std::cell::RefCell;
use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, SystemTime};

use smoltcp::phy::{self, Device, DeviceCapabilities, PacketMeta};
use smoltcp::time::Instant;

use super::Link;
use crate::packet::{TcpdumpFormatter, decode};

/// The `log` target of trace lines: enable it with `RUST_LOG=ustack::trace=info`.
pub const TARGET: &str = "ustack::trace";

/// The wall clock, as time since the Unix epoch (what tcpdump and pcap files show).
/// smoltcp's `now` is ustack's monotonic clock since the stack started, so it cannot
/// give a time of day.
pub fn wall_clock() -> Duration {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()
}

/// Logs every packet through the wrapped device; see the [module docs](self).
pub struct Tracer<D> {
    inner: D,
    state: RefCell<State>,
}

struct State {
    formatter: TcpdumpFormatter,
    clock: fn() -> Duration,
}

impl State {
    fn log(&mut self, direction: &str, packet: &[u8]) {
        if log::log_enabled!(target: TARGET, log::Level::Info) {
            let line = self.formatter.format((self.clock)(), &decode(packet));
            log::info!(target: TARGET, "{direction} {line}");
        }
    }
}

impl<D> Tracer<D> {
    /// Wraps `inner`, with time of day from the wall clock.
    pub fn new(inner: D) -> Tracer<D> {
        Tracer { inner, state: RefCell::new(State { formatter: TcpdumpFormatter::new(), clock: wall_clock }) }
    }

    /// Uses `formatter` for the lines, e.g. `TcpdumpFormatter::new().absolute(true)` or
    /// `.time_format(TimeFormat::Relative)`.
    pub fn with_formatter(self, formatter: TcpdumpFormatter) -> Self {
        self.state.borrow_mut().formatter = formatter;
        self
    }

    /// Reads timestamps from `clock` (time since the Unix epoch) instead of the wall
    /// clock; tests pass a fixed one.
    pub fn with_clock(self, clock: fn() -> Duration) -> Self {
        self.state.borrow_mut().clock = clock;
        self
    }

    /// The wrapped device. Reading from it directly bypasses the tracer.
    pub fn get_ref(&self) -> &D {
        &self.inner
    }

    /// The wrapped device, mutably. Reading from it directly bypasses the tracer.
    pub fn get_mut(&mut self) -> &mut D {
        &mut self.inner
    }

    /// Unwraps the device.
    pub fn into_inner(self) -> D {
        self.inner
    }
}

impl<D: Device> Device for Tracer<D> {
    type RxToken<'a>
        = RxToken<'a, D::RxToken<'a>>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a, D::TxToken<'a>>
    where
        Self: 'a;

    fn receive(&mut self, now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let state = &self.state;
        let (rx, tx) = self.inner.receive(now)?;
        Some((RxToken { token: rx, state }, TxToken { token: tx, state }))
    }

    fn transmit(&mut self, now: Instant) -> Option<Self::TxToken<'_>> {
        let state = &self.state;
        self.inner.transmit(now).map(|token| TxToken { token, state })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.inner.capabilities()
    }
}

impl<D: Link> Link for Tracer<D> {
    fn disable_tx_offloads(&mut self) {
        self.inner.disable_tx_offloads();
    }

    fn wait_fd(&self) -> BorrowedFd<'_> {
        self.inner.wait_fd()
    }

    fn take_error(&mut self) -> Option<io::Error> {
        self.inner.take_error()
    }

    fn receive_into(&mut self, now: Instant, frame: &mut Vec<u8>) -> bool {
        let received = self.inner.receive_into(now, frame);
        if received {
            self.state.get_mut().log("in ", frame);
        }
        received
    }

    fn transmit_from(&mut self, now: Instant, frame: &[u8]) -> bool {
        self.state.get_mut().log("out", frame);
        self.inner.transmit_from(now, frame)
    }
}

#[doc(hidden)]
pub struct RxToken<'a, T> {
    token: T,
    state: &'a RefCell<State>,
}

impl<T: phy::RxToken> phy::RxToken for RxToken<'_, T> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let state = self.state;
        self.token.consume(|packet| {
            state.borrow_mut().log("in ", packet);
            f(packet)
        })
    }

    fn meta(&self) -> PacketMeta {
        self.token.meta()
    }
}

#[doc(hidden)]
pub struct TxToken<'a, T> {
    token: T,
    state: &'a RefCell<State>,
}

impl<T: phy::TxToken> phy::TxToken for TxToken<'_, T> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let state = self.state;
        self.token.consume(len, |packet| {
            let result = f(packet);
            state.borrow_mut().log("out", packet);
            result
        })
    }

    fn set_meta(&mut self, meta: PacketMeta) {
        self.token.set_meta(meta)
    }
}
