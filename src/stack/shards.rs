//! A stack of several shards: one engine, one driver thread and one TUN queue each
//! (issue 14), built from stacks of one. Shard 0 is the [`Stack`] the user holds; the
//! others are its siblings.
//!
//! Who does what:
//! - The device ([`Steered`]) hands each shard the frames of the flows it owns
//!   ([`Steering::owner`]), forwarding the others, so each engine sees only its own flows.
//! - Sockets are made on shard 0, which therefore holds every port the user binds and
//!   every connection the user opens: one port allocator, as in one stack.
//! - A TCP listener listens on every shard (the socket layer makes a copy of it on each
//!   other shard when it listens, like SO_REUSEPORT) and its port becomes shared: new
//!   connections to it spread over the shards by flow hash, and accept() takes from any
//!   shard's queue. An accepted connection lives on its shard, driven by its thread.
//! - A bound UDP socket likewise has a copy on every shard: datagrams spread by flow hash,
//!   a receive takes from any shard, a send goes from the flow's shard (`socket/shards.rs`).
//! - This set tells waiters when any shard did something ([`ShardSet::touched`]), for
//!   calls that wait on several shards at once (accept on a listener, the demux table).

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use super::{Shared, Stack};
use crate::device::{Link, Steered, Steering};
use crate::engine::StackConfig;

/// What the shards of one stack share.
pub(crate) struct ShardSet {
    /// Every shard's state, shard 0 first (weak: the [`Stack`] owns them).
    shards: Vec<Weak<Shared>>,
    /// Who owns which flow.
    pub steering: Arc<Steering>,
    /// Counts rounds of any shard that touched a socket.
    generation: AtomicU64,
    /// Callers waiting in [`ShardSet::wait`].
    waiters: AtomicUsize,
    /// Callers in accept() on a listener of every shard.
    accepting: AtomicUsize,
    lock: Mutex<()>,
    changed: Condvar,
}

impl ShardSet {
    /// Every shard still running, shard 0 first.
    pub fn shards(&self) -> impl Iterator<Item = Arc<Shared>> + '_ {
        self.shards.iter().filter_map(Weak::upgrade)
    }

    /// A number that changes whenever a shard's round touched a socket.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// A shard touched sockets: wakes the callers waiting on the set.
    pub fn touched(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        // With the increment before the check, and the waiter's check of the generation
        // after it counts itself (under the lock), no wake-up is missed.
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.changed.notify_all();
        }
    }

    /// Whether an acceptor is in accept() on a listener of every shard now, taking
    /// connections or waiting in [`ShardSet::wait`] for one.
    pub fn has_acceptor(&self) -> bool {
        self.accepting.load(Ordering::SeqCst) > 0
    }

    /// Counts an acceptor in accept() until the guard drops (see [`ShardSet::has_acceptor`]).
    pub fn accepting(&self) -> impl Drop + '_ {
        struct Accepting<'a>(&'a AtomicUsize);
        impl Drop for Accepting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.accepting.fetch_add(1, Ordering::SeqCst);
        Accepting(&self.accepting)
    }

    /// Waits until the generation differs from `seen` or `timeout` passes.
    pub fn wait(&self, seen: u64, timeout: Option<Duration>) {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        let mut guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.waiters.fetch_add(1, Ordering::SeqCst);
        while self.generation() == seen {
            match deadline {
                None => guard = self.changed.wait(guard).unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    guard = self.changed.wait_timeout(guard, left).unwrap_or_else(|p| p.into_inner()).0;
                }
            }
        }
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// [`Stack::wait_for_change`] over every shard.
    pub fn wait_for_change(&self, stack: &Stack, seen: u64, timeout: Duration) -> u64 {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let generation = self.generation();
            let now = stack.generation();
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if now != seen || left.is_zero() || stack.error().is_some() {
                return now;
            }
            self.wait(generation, Some(left));
        }
    }
}

impl Stack {
    /// Starts a stack of `devices.len()` shards: one engine and one thread per device
    /// (each a queue of one multi-queue TUN: [`TunDevice::open_queues`]), all with
    /// `config`. One device is [`Stack::new`]. Sockets work on it as on a stack of one;
    /// listeners listen on every shard (see the [module docs](self)).
    ///
    /// [`TunDevice::open_queues`]: crate::device::TunDevice::open_queues
    pub fn sharded<D: Link + 'static>(devices: Vec<D>, config: StackConfig) -> io::Result<Stack> {
        if devices.len() <= 1 {
            let device = devices
                .into_iter()
                .next()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a stack needs a device"))?;
            return Stack::new(device, config);
        }
        let steering = Steering::new(devices.len())?;
        let mut stacks = Vec::with_capacity(devices.len());
        for (shard, device) in devices.into_iter().enumerate() {
            stacks.push(Stack::new(Steered::new(device, shard, steering.clone())?, config.clone())?);
        }
        let set = Arc::new(ShardSet {
            shards: stacks.iter().map(|s| Arc::downgrade(&s.shared)).collect(),
            steering,
            generation: AtomicU64::new(0),
            waiters: AtomicUsize::new(0),
            accepting: AtomicUsize::new(0),
            lock: Mutex::new(()),
            changed: Condvar::new(),
        });
        for stack in &stacks {
            let _ = stack.shared.set.set(set.clone());
        }
        let mut first = stacks.remove(0);
        first.siblings = stacks;
        Ok(first)
    }

    /// How many shards the stack has (1 unless made by [`Stack::sharded`]).
    pub fn shards(&self) -> usize {
        1 + self.siblings.len()
    }

    /// For each shard: how many frames other shards' queues received for it and forwarded
    /// to it, and how many of those were dropped because it was behind (empty for a stack
    /// of one shard).
    pub fn forwarded(&self) -> Vec<(u64, u64)> {
        self.shared.set.get().map(|set| set.steering.forwarded()).unwrap_or_default()
    }
}
