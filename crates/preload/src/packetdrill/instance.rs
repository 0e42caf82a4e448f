//! One packetdrill run's stack: an [`Engine`] on a virtual clock, with no device and no
//! thread of its own. packetdrill's two threads drive it: the main thread injects packets,
//! sniffs the stack's, and lets time pass; the system-call thread makes the calls a script
//! expects to block, which wait here for the main thread to change something.
//!
//! Time moves only when packetdrill says so (`usleep`, or sniffing when nothing is queued:
//! the clock jumps to the engine's next timer), so a script's timings are the engine's
//! own, exact to the microsecond and independent of the machine's load.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use smoltcp::phy::{DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use ustack::engine::{Engine, SockId};
use ustack::errno::Errno;

use super::flags::Flags;

/// What gettimeofday() shows for virtual time zero: a fixed date, so packetdrill's
/// absolute times look like times.
pub const EPOCH_MICROS: i64 = 1_700_000_000_000_000;

/// The most a sniff with nothing queued moves the clock in one go looking for a packet:
/// past that, nothing is coming (packetdrill's own limit is 2 s past the expected time).
const SNIFF_HORIZON: Duration = Duration::from_secs(600);

/// Deadlines a sniff passes at most looking for a packet (an engine that keeps asking to
/// be polled and sends nothing must not hold packetdrill forever).
const MAX_SNIFF_STEPS: usize = 100_000;

/// Polls in a row at one instant before the engine is taken to be stuck.
const POLLS_PER_INSTANT: usize = 1000;

/// How long (real time) the main thread waits for a woken blocked call to look again
/// before it moves time on, so the call sees the state that woke it.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(200);

/// packetdrill's threads share one instance through a raw pointer: it must be Sync.
const _: fn() = || {
    fn shared_between_threads<T: Send + Sync>() {}
    shared_between_threads::<Instance>();
};

pub struct Instance {
    state: Mutex<State>,
    /// Signalled whenever the engine's state or the clock changed.
    changed: Condvar,
    /// Signalled whenever a blocked call has looked at the latest change.
    looked: Condvar,
}

pub struct State {
    pub engine: Engine,
    /// Virtual now.
    pub now: Instant,
    /// When the engine next wants a poll.
    next_poll: Option<Instant>,
    /// Packets the stack sent, with when, for netdev_receive.
    sent: VecDeque<(Instant, Vec<u8>)>,
    /// The socket behind each fd this library handed out.
    fds: std::collections::HashMap<RawFd, SockId>,
    /// Bumped at every change; a blocked call notes the last one it looked at.
    generation: u64,
    /// The generation each blocked call last looked at, by waiter.
    waiters: std::collections::HashMap<u64, u64>,
    next_waiter: u64,
}

impl Instance {
    pub fn new(flags: &Flags) -> Result<Instance, String> {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = Medium::Ip;
        capabilities.max_transmission_unit = flags.mtu;
        let engine = Engine::new(flags.config.clone(), capabilities, Instant::ZERO)?;
        Ok(Instance {
            state: Mutex::new(State {
                engine,
                now: Instant::ZERO,
                next_poll: None,
                sent: VecDeque::new(),
                fds: Default::default(),
                generation: 0,
                waiters: Default::default(),
                next_waiter: 0,
            }),
            changed: Condvar::new(),
            looked: Condvar::new(),
        })
    }

    /// The state, or EIO if a panic inside left it poisoned (its tables may not agree).
    pub fn lock(&self) -> Result<MutexGuard<'_, State>, Errno> {
        self.state.lock().map_err(|_| Errno::EIO)
    }

    /// Marks a change: blocked calls look again.
    pub fn changed(&self, state: &mut State) {
        state.generation += 1;
        self.changed.notify_all();
    }

    /// Runs `call` until it stops saying EAGAIN or `blocks` (asked each time) says not to
    /// wait, waiting for a change in between; then polls the engine so that what the call
    /// made ready goes out. `call` is also given the state to check a deadline.
    pub fn call<T>(
        &self,
        mut blocks: impl FnMut(&mut State) -> bool,
        mut call: impl FnMut(&mut State) -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        let mut state = self.lock()?;
        let mut waiter = None;
        let result = loop {
            match call(&mut state) {
                Err(Errno::EAGAIN) if blocks(&mut state) => {
                    // What the call queued so far (a connect()'s SYN, part of a write)
                    // goes out now, since the answer to it is what is awaited.
                    if state.engine.wants_poll() {
                        state.pump();
                        self.changed(&mut state);
                    }
                    let id = *waiter.get_or_insert_with(|| {
                        state.next_waiter += 1;
                        state.next_waiter
                    });
                    let seen = state.generation;
                    state.waiters.insert(id, seen);
                    self.looked.notify_all();
                    state = self.changed.wait_while(state, |s| s.generation == seen).map_err(|_| Errno::EIO)?;
                }
                other => break other,
            }
        };
        if let Some(id) = waiter {
            state.waiters.remove(&id);
            self.looked.notify_all();
        }
        if result.is_ok() || state.engine.wants_poll() {
            state.pump();
            self.changed(&mut state);
        }
        result
    }

    /// Waits (a little, in real time) until every blocked call has looked at the latest
    /// change, so that moving the clock on does not overtake a call that could complete.
    fn settle<'a>(&self, state: MutexGuard<'a, State>) -> Result<MutexGuard<'a, State>, Errno> {
        let (state, _) = self
            .looked
            .wait_timeout_while(state, SETTLE, |s| s.waiters.values().any(|&seen| seen < s.generation))
            .map_err(|_| Errno::EIO)?;
        Ok(state)
    }

    /// A packet from packetdrill's side of the wire.
    pub fn inject(&self, packet: &[u8]) -> Result<(), Errno> {
        let mut state = self.lock()?;
        let mut frame = packet.to_vec();
        let now = state.now;
        state.engine.ingress(now, &mut frame);
        state.pump();
        self.changed(&mut state);
        Ok(())
    }

    /// The next packet the stack sent and when, moving the clock to the engine's next
    /// timer while nothing is queued; None if nothing will ever come.
    pub fn sniff(&self) -> Result<Option<(Instant, Vec<u8>)>, Errno> {
        let mut state = self.settle(self.lock()?)?;
        let horizon = state.now + SNIFF_HORIZON.into();
        for _ in 0..MAX_SNIFF_STEPS {
            if !state.sent.is_empty() {
                break;
            }
            match state.next_poll {
                Some(at) if at <= horizon => {
                    state.advance(at);
                    self.changed(&mut state);
                    state = self.settle(state)?;
                }
                _ => break,
            }
        }
        Ok(state.sent.pop_front())
    }

    /// Lets `micros` of virtual time pass.
    pub fn sleep(&self, micros: u64) -> Result<(), Errno> {
        let mut state = self.settle(self.lock()?)?;
        let to = state.now + smoltcp::time::Duration::from_micros(micros);
        state.advance(to);
        self.changed(&mut state);
        Ok(())
    }

    /// Virtual now, in microseconds since [`EPOCH_MICROS`]'s epoch. Each reading moves
    /// the clock on by a microsecond: packetdrill spins on gettimeofday() for the last
    /// 20 µs before an event, which would never end on a clock that stands still.
    pub fn time_of_day(&self) -> Result<i64, Errno> {
        let mut state = self.lock()?;
        let to = state.now + smoltcp::time::Duration::from_micros(1);
        state.advance(to);
        self.changed(&mut state);
        Ok(EPOCH_MICROS + state.now.total_micros())
    }
}

impl State {
    /// Polls the engine at `now` until it has nothing more to do at once, queueing what
    /// it sent.
    fn pump(&mut self) {
        for _ in 0..POLLS_PER_INSTANT {
            let next = self.engine.poll(self.now);
            let now = self.now;
            let outbox = self.engine.outbox();
            self.sent.extend(outbox.packets().map(|p| (now, p.to_vec())));
            outbox.clear();
            self.next_poll = next;
            if next != Some(self.now) {
                return;
            }
        }
        // Still busy: the next sniff or sleep polls again.
        self.next_poll = Some(self.now);
    }

    /// Moves the clock to `to`, polling the engine at each of its deadlines on the way.
    fn advance(&mut self, to: Instant) {
        let mut rounds = 0;
        while let Some(at) = self.next_poll.filter(|&at| at <= to) {
            self.now = self.now.max(at);
            self.pump();
            rounds += 1;
            if rounds >= POLLS_PER_INSTANT && self.next_poll == Some(self.now) {
                break;
            }
        }
        self.now = self.now.max(to);
    }

    /// The socket behind `fd`.
    pub fn socket(&self, fd: RawFd) -> Result<SockId, Errno> {
        self.fds.get(&fd).copied().ok_or(Errno::EBADF)
    }

    /// Gives socket `id` an fd: a real one (an eventfd), so that its number collides with
    /// no file of the process and packetdrill's own close() of it at the end succeeds.
    pub fn add_fd(&mut self, id: SockId) -> Result<RawFd, Errno> {
        // SAFETY: eventfd takes no pointers.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            self.engine.close(id);
            return Err(Errno::EMFILE);
        }
        self.fds.insert(fd, id);
        Ok(fd)
    }

    /// Closes `fd` and its socket.
    pub fn close_fd(&mut self, fd: RawFd) -> Result<(), Errno> {
        let id = self.fds.remove(&fd).ok_or(Errno::EBADF)?;
        self.engine.close(id);
        // SAFETY: the fd is ours (made in add_fd) and no longer in the table.
        unsafe { libc::close(fd) };
        Ok(())
    }

    /// Closes every fd still open (the instance is being freed).
    fn close_all(&mut self) {
        for fd in self.fds.keys().copied().collect::<Vec<_>>() {
            let _ = self.close_fd(fd);
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Ok(state) = self.state.get_mut() {
            state.close_all();
        }
    }
}
