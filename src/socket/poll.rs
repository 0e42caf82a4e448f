//! poll(): wait until any of several sockets is ready.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Errno, Events, Result, Socket};
use crate::stack::{ShardSet, Shared};

/// One socket to watch, like `struct pollfd`.
#[derive(Debug)]
pub struct PollFd<'a> {
    /// The socket.
    pub socket: &'a Socket,
    /// What to wait for ([`Events::ERR`] and [`Events::HUP`] are always reported).
    pub events: Events,
    /// What is ready, filled in by [`poll`].
    pub revents: Events,
}

impl<'a> PollFd<'a> {
    /// Watches `socket` for `events`.
    pub fn new(socket: &'a Socket, events: Events) -> Self {
        PollFd { socket, events, revents: Events::NONE }
    }
}

/// Waits until at least one socket is ready for what it asks, or `timeout` passes
/// (`None`: no limit; zero: just look). Returns how many sockets have non-empty
/// `revents`. All sockets must belong to the same stack (EINVAL otherwise).
pub fn poll(fds: &mut [PollFd<'_>], timeout: Option<Duration>) -> Result<usize> {
    let Some(first) = fds.first() else {
        if let Some(t) = timeout {
            std::thread::sleep(t);
        }
        return Ok(0);
    };
    let shared = first.socket.shared().clone();
    let deadline = timeout.map(|t| Instant::now() + t);
    if let Some(set) = shared.set.get() {
        // A stack of several shards: its sockets are on any of them.
        let in_set = |s: &Arc<Shared>| s.set.get().is_some_and(|other| Arc::ptr_eq(other, set));
        if fds.iter().any(|fd| !in_set(fd.socket.shared())) {
            return Err(Errno::EINVAL);
        }
        return poll_shards(set, fds, deadline);
    }
    if fds.iter().any(|fd| !Arc::ptr_eq(fd.socket.shared(), &shared)) {
        return Err(Errno::EINVAL);
    }
    let mut locked = shared.lock();
    loop {
        let mut ready = 0;
        for fd in fds.iter_mut() {
            let now = locked.engine.readiness(fd.socket.id());
            fd.revents = now.and(fd.events | Events::ERR | Events::HUP);
            if !fd.revents.is_empty() {
                ready += 1;
            }
        }
        if ready > 0 {
            return Ok(ready);
        }
        if locked.down.is_some() {
            return Err(Errno::ENETDOWN);
        }
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left == Some(Duration::ZERO) {
            return Ok(0);
        }
        locked = shared.wait(locked, left).0;
    }
}

/// [`poll`] on the sockets of a stack of several shards: each socket's readiness is read
/// on its own shard (a listener's, on every shard), and the wait is for a round of any.
fn poll_shards(set: &ShardSet, fds: &mut [PollFd<'_>], deadline: Option<Instant>) -> Result<usize> {
    loop {
        let seen = set.generation();
        let mut ready = 0;
        for fd in fds.iter_mut() {
            fd.revents = fd.socket.readiness()?.and(fd.events | Events::ERR | Events::HUP);
            if !fd.revents.is_empty() {
                ready += 1;
            }
        }
        if ready > 0 {
            return Ok(ready);
        }
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left == Some(Duration::ZERO) {
            return Ok(0);
        }
        set.wait(seen, left);
    }
}
