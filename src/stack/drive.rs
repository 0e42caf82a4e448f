//! A blocked datagram receive that reads the device itself (issue 14: UDP round trips).
//!
//! A request to a UDP server cost two thread wake-ups before the application saw it: the
//! device woke the stack thread, which read the datagram and woke the application
//! blocked in `recv_from`. The kernel wakes the blocked task once, from its softirq. So a
//! blocking receive on a datagram socket that has nothing to return, when no other call
//! is doing so, waits on the device itself ("drives" it) instead of on its socket's
//! condition variable: when a frame arrives it takes the engine lock, reads what the
//! device has and hands it to the engine, as a round of the stack thread would, and then
//! asks its socket again. Frames for other sockets are delivered and their waiters woken
//! the same way the stack thread does it; timers stay the stack thread's. A caller whose
//! reads brought other sockets' frames and none of its own goes back to waiting on its condition
//! variable until its own socket is woken: a thread blocked on a quiet socket does not
//! become the reader of everybody else's traffic (the stack thread reads outside the
//! lock, which overlaps with API calls; a driving caller reads under it).
//!
//! Who is woken for a frame: the driving caller and the stack thread both wait on the
//! device in epoll sets of their own, registered with `EPOLLEXCLUSIVE`, the caller's first.
//! The kernel then wakes only the first of them that is waiting, in that order: the
//! caller if it waits, otherwise the stack thread — no hand-off between the two, and no
//! frame that nobody is woken for. (A device whose wait fd cannot be registered that way,
//! an epoll fd itself, is never driven: the stack thread alone waits on it, with poll.)
//!
//! Order of frames: the stack thread reads frames before it takes the engine lock. A
//! driving caller (which reads under the lock) reads nothing while the stack thread holds
//! frames it has read and not yet handed to the engine (see
//! [`SharedDevice::receive_unless_held`](super::device::SharedDevice::receive_unless_held)),
//! so the engine sees the frames in the device's order, whoever read them. It waits for the
//! stack thread's round instead (at most [`AFTER_STACK`]) and then drives again.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use nix::poll::PollTimeout;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};

/// What a caller that drove the device does next if it still has to wait (see
/// [`Shared::drive`](super::Shared::drive)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DriveNext {
    /// Drive again.
    Again,
    /// The stack thread held frames it had read, which go to the engine first: wait on the
    /// socket for at most [`AFTER_STACK`] — the stack thread needs the engine lock for
    /// them — then drive again. (Waiting until the socket was touched instead left a
    /// receive whose socket stayed quiet off the device for the rest of the call.)
    AfterStack,
    /// The frames touched other sockets and not the caller's: wait on the socket until it
    /// is touched, and let the stack thread read everybody else's traffic.
    Wait,
}

/// How long a driving caller that met the stack thread's held frames waits before it
/// drives again: the stack thread hands them to the engine as soon as it gets the lock,
/// in microseconds; a frame for the caller's own socket ends the wait at once.
pub(crate) const AFTER_STACK: Duration = Duration::from_millis(1);

/// Event data of the device in an epoll set.
const DEVICE: u64 = 0;
/// Event data of the eventfd in an epoll set.
const WAKE: u64 = 1;

/// The two epoll sets waiting on the device, and the driving caller's wake-up.
pub(crate) struct Watch {
    /// The driving caller's: the device (exclusive, registered first) and `wake`.
    caller: Epoll,
    /// Written when something the driving caller waits for happened elsewhere: its socket
    /// was touched by another thread, or the stack stops.
    wake: EventFd,
    /// The stack thread's: the device (exclusive, registered second) and its eventfd.
    stack: Epoll,
}

/// What a wait on the device ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Woken {
    /// The device may have frames.
    pub device: bool,
    /// The eventfd was written (and has been read).
    pub wake: bool,
}

impl Watch {
    /// Epoll sets on `device` (the device's wait fd) for a caller and for the stack thread,
    /// the latter also on `stack_wake`. An error if the device cannot be waited on with
    /// `EPOLLEXCLUSIVE`: the stack then does without.
    pub fn new(device: BorrowedFd<'_>, stack_wake: BorrowedFd<'_>) -> io::Result<Watch> {
        let exclusive = EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE;
        let wake = EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;
        // The caller's set is registered on the device first: the kernel offers an
        // exclusive wake-up to the device's waiters in the order they registered.
        let caller = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        caller.add(device, EpollEvent::new(exclusive, DEVICE))?;
        caller.add(wake.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, WAKE))?;
        let stack = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        stack.add(device, EpollEvent::new(exclusive, DEVICE))?;
        stack.add(stack_wake, EpollEvent::new(EpollFlags::EPOLLIN, WAKE))?;
        Ok(Watch { caller, wake, stack })
    }

    /// Wakes the driving caller, if any (a spurious wake-up costs it one look).
    pub fn wake_caller(&self) {
        let _ = self.wake.write(1);
    }

    /// The driving caller's wait: until the device may have frames, [`Watch::wake_caller`],
    /// or `timeout`.
    pub fn caller_wait(&self, timeout: Option<Duration>) -> Woken {
        let woken = wait(&self.caller, timeout);
        if woken.wake {
            let _ = self.wake.read();
        }
        woken
    }

    /// The stack thread's wait: until the device may have frames, its eventfd is written,
    /// or `timeout`. The caller reads the eventfd if `wake`.
    pub fn stack_wait(&self, timeout: Option<Duration>) -> Woken {
        wait(&self.stack, timeout)
    }
}

/// `timeout` in whole milliseconds for poll or epoll, rounded up (waking a little early
/// would only mean another short wait); none: wait for ever.
pub(crate) fn poll_timeout(timeout: Option<Duration>) -> PollTimeout {
    match timeout {
        Some(d) => PollTimeout::try_from(d.as_millis().saturating_add(1).min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX),
        None => PollTimeout::NONE,
    }
}

fn wait(epoll: &Epoll, timeout: Option<Duration>) -> Woken {
    let timeout = poll_timeout(timeout);
    let mut events = [EpollEvent::empty(); 2];
    // EINTR and the like: nothing happened, the caller looks and waits again.
    let n = epoll.wait(&mut events, timeout).unwrap_or(0);
    let mut woken = Woken { device: false, wake: false };
    for event in &events[..n] {
        match event.data() {
            DEVICE => woken.device = true,
            _ => woken.wake = true,
        }
    }
    woken
}
