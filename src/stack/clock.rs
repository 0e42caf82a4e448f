//! A monotonic clock for smoltcp (its own `Instant::now()` reads the wall clock, which jumps).

/// Microseconds since the stack started, from `std::time::Instant` (CLOCK_MONOTONIC).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: std::time::Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock { start: std::time::Instant::now() }
    }

    /// Now, as smoltcp counts time.
    pub fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(self.start.elapsed().as_micros() as i64)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
