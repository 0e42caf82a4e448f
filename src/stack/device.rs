//! The device, shared by the stack thread and the API threads.
//!
//! Any thread whose engine call made packets writes them itself (issue 14: a UDP echo
//! used to cost two thread hand-offs, the second one only to write the reply). So the
//! device is behind a lock of its own, beside the engine's, and packets go out through a
//! queue of outboxes:
//!
//! - Under the engine lock, a thread moves the engine's outbox to the back of the queue
//!   ([`SharedDevice::push`]): the queue's order is the order in which the engine made
//!   the packets, whichever thread made them.
//! - Once it has let go of the engine lock, it tries the device lock
//!   ([`SharedDevice::flush`]). If it gets it, it writes the queue out, its own packets
//!   and anybody else's, in order. If another thread holds the device (writing, or the
//!   stack thread reading), it does not wait: that thread looks at the queue again after
//!   letting go of the device, and writes what came in meanwhile (flat combining). So an
//!   API call never waits for a write it did not need, and every packet is written by
//!   somebody soon after it was made.
//!
//! The device itself is one [`Link`] object behind the lock, as before: a middleware
//! (tracer, pcap recorder, fault injector) sees every packet, both ways, one at a time
//! and in order, and a device that writes a header of its own per packet (a vnet header
//! with offload metadata) still does so in its `transmit_from`.
//!
//! Lock order: engine, then device, then queue. A thread holding the device never takes
//! the engine lock.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use std::sync::{Mutex, MutexGuard, TryLockError};

use smoltcp::time::Instant;

use super::Clock;
use crate::device::Link;
use crate::engine::Outbox;

/// A device as the stack uses it, without smoltcp's token types, so it can sit behind a
/// `dyn` in the state that sockets share.
pub(crate) trait Port: Send {
    fn receive_into(&mut self, now: Instant, frame: &mut Vec<u8>) -> bool;
    fn transmit_from(&mut self, now: Instant, frame: &[u8]) -> bool;
    fn take_error(&mut self) -> Option<io::Error>;
}

impl<D: Link> Port for D {
    fn receive_into(&mut self, now: Instant, frame: &mut Vec<u8>) -> bool {
        Link::receive_into(self, now, frame)
    }

    fn transmit_from(&mut self, now: Instant, frame: &[u8]) -> bool {
        Link::transmit_from(self, now, frame)
    }

    fn take_error(&mut self) -> Option<io::Error> {
        Link::take_error(self)
    }
}

/// What is left of a device once the stack stopped.
struct Closed;

impl Port for Closed {
    fn receive_into(&mut self, _: Instant, _: &mut Vec<u8>) -> bool {
        false
    }

    fn transmit_from(&mut self, _: Instant, _: &[u8]) -> bool {
        false
    }

    fn take_error(&mut self) -> Option<io::Error> {
        None
    }
}

/// Outboxes waiting in the queue beyond which a thread that finds the device busy waits
/// for it instead of leaving its packets to the holder: the queue's memory stays bounded
/// (each outbox holds at most about 1 MiB) however fast API threads make packets.
const QUEUE_LIMIT: usize = 8;

/// Emptied outboxes kept for reuse, with their packet buffers.
const SPARES: usize = 4;

/// Who is writing, which bounds how much of other threads' work it takes on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writer {
    /// The stack thread: writes what is queued, up to a round's worth, then goes on with
    /// its round (reading comes next) and comes back without sleeping.
    Stack,
    /// An API call: writes its own packets and what came in meanwhile, up to a bound, so
    /// a call is not turned into the writer of a bulk transfer made by other threads.
    Api,
}

impl Writer {
    fn budget(self) -> usize {
        match self {
            Writer::Stack => 16,
            Writer::Api => 2,
        }
    }
}

/// What [`SharedDevice::flush`] left behind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use]
pub(crate) struct Flushed {
    /// Packets are still queued and nobody is writing them: the stack thread has to
    /// (an API caller wakes it; the stack thread goes round again without sleeping).
    pub left: bool,
    /// The device reported an error: the stack thread has to see it (an API caller
    /// wakes it).
    pub failed: bool,
}

struct Queue {
    pending: VecDeque<Outbox>,
    spare: Vec<Outbox>,
}

/// The device behind its lock, and the queue of packets waiting for it.
pub(crate) struct SharedDevice {
    port: Mutex<Box<dyn Port>>,
    queue: Mutex<Queue>,
    /// `queue.pending.len()`, readable without the queue's lock: a thread letting go of
    /// the device checks it to know whether it must look again.
    queued: AtomicUsize,
    /// The device's first error, kept for the stack thread (which stops the stack).
    error: Mutex<Option<io::Error>>,
    failed: AtomicBool,
    /// The stack thread holds frames it read (before taking the engine lock) and has not
    /// yet handed to the engine: a caller driving the device reads nothing meanwhile, so
    /// the engine sees frames in the device's order (see [`super::drive`]). Set under the
    /// device lock, cleared under the engine lock.
    held: AtomicBool,
    clock: Clock,
    wait_fd: RawFd,
}

impl SharedDevice {
    pub fn new<D: Link + 'static>(device: D, clock: Clock) -> SharedDevice {
        let wait_fd = std::os::fd::AsRawFd::as_raw_fd(&device.wait_fd());
        SharedDevice {
            port: Mutex::new(Box::new(device)),
            queue: Mutex::new(Queue { pending: VecDeque::new(), spare: Vec::new() }),
            queued: AtomicUsize::new(0),
            error: Mutex::new(None),
            failed: AtomicBool::new(false),
            held: AtomicBool::new(false),
            clock,
            wait_fd,
        }
    }

    /// The fd the stack thread sleeps on ([`Link::wait_fd`], the same fd for the device's
    /// life, which is the stack's).
    pub fn wait_fd(&self) -> RawFd {
        self.wait_fd
    }

    /// Moves the packets in `outbox` to the back of the queue (an empty outbox takes its
    /// place). Called under the engine lock, so the queue keeps the engine's order.
    pub fn push(&self, outbox: &mut Outbox) {
        if outbox.is_empty() {
            return;
        }
        let mut queue = lock(&self.queue);
        let empty = queue.spare.pop().unwrap_or_default();
        queue.pending.push_back(std::mem::replace(outbox, empty));
        self.queued.store(queue.pending.len(), Ordering::Relaxed);
    }

    /// Whether packets are queued.
    pub fn has_queued(&self) -> bool {
        self.queued.load(Ordering::Relaxed) > 0
    }

    /// Writes what is queued, unless another thread holds the device (and will write it);
    /// see the [module docs](self). Called without the engine lock.
    pub fn flush(&self, writer: Writer) -> Flushed {
        // Pairs with the fence in `release`: either this thread sees the device free, or
        // the holder sees what this thread queued.
        fence(Ordering::SeqCst);
        if !self.has_queued() {
            return self.status(false);
        }
        let port = match self.port.try_lock() {
            Ok(port) => port,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) if self.queued.load(Ordering::Relaxed) > QUEUE_LIMIT => lock(&self.port),
            Err(TryLockError::WouldBlock) => return self.status(false),
        };
        self.release(port, writer.budget())
    }

    /// Reads a frame, then writes what was queued meanwhile before letting go of the
    /// device. For the stack thread, outside the engine lock; a frame read is held (see
    /// [`SharedDevice::release_held`]).
    pub fn receive_into(&self, now: Instant, frame: &mut Vec<u8>) -> (bool, Flushed) {
        let mut port = lock(&self.port);
        let received = port.receive_into(now, frame);
        if received {
            self.held.store(true, Ordering::Relaxed);
        }
        (received, self.release(port, Writer::Stack.budget()))
    }

    /// The frames [`SharedDevice::receive_into`] read are with the engine now. For the
    /// stack thread, under the engine lock.
    pub fn release_held(&self) {
        self.held.store(false, Ordering::Relaxed);
    }

    /// Reads a frame for a caller driving the device, under the engine lock: `None` while
    /// the stack thread holds frames read earlier (they go to the engine first), else
    /// whether a frame came. Waits for the device if another thread is at it (writing, or
    /// the stack thread reading): neither takes the engine lock while holding the device.
    pub fn receive_unless_held(&self, now: Instant, frame: &mut Vec<u8>) -> Option<bool> {
        let mut port = lock(&self.port);
        if self.held.load(Ordering::Relaxed) {
            return None;
        }
        let received = port.receive_into(now, frame);
        self.keep_error(&mut **port);
        Some(received)
    }

    /// Whether the device reported an error the stack thread has not seen yet.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Reads a frame if the device is free at once, without writing anything. For the
    /// stack thread under the engine lock: it flushes after letting go of that.
    pub fn try_receive_into(&self, now: Instant, frame: &mut Vec<u8>) -> bool {
        let mut port = match self.port.try_lock() {
            Ok(port) => port,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
        };
        let received = port.receive_into(now, frame);
        self.keep_error(&mut **port);
        received
    }

    /// Closes the device (drops it: a TUN's interface goes away), for the stack thread as
    /// it ends. Later writes go nowhere.
    pub fn close(&self) {
        *lock(&self.port) = Box::new(Closed);
        lock(&self.queue).pending.clear();
        self.queued.store(0, Ordering::Relaxed);
    }

    /// The device's error, once (for the stack thread).
    pub fn take_error(&self) -> Option<io::Error> {
        if !self.failed.swap(false, Ordering::Relaxed) {
            return None;
        }
        lock(&self.error).take()
    }

    /// Writes up to `budget` outboxes from the queue, lets go of the device, and takes it
    /// again if something was queued meanwhile by a thread that found it busy.
    fn release<'a>(&'a self, mut port: MutexGuard<'a, Box<dyn Port>>, mut budget: usize) -> Flushed {
        loop {
            while budget > 0 {
                let Some(mut outbox) = self.pop() else { break };
                let now = self.clock.now();
                for packet in outbox.packets() {
                    port.transmit_from(now, packet);
                }
                outbox.clear();
                self.recycle(outbox);
                budget -= 1;
            }
            self.keep_error(&mut **port);
            drop(port);
            fence(Ordering::SeqCst);
            if !self.has_queued() {
                return self.status(false);
            }
            if budget == 0 {
                return self.status(true);
            }
            port = match self.port.try_lock() {
                Ok(port) => port,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                // Its holder looks at the queue after letting go.
                Err(TryLockError::WouldBlock) => return self.status(false),
            };
        }
    }

    fn status(&self, left: bool) -> Flushed {
        Flushed { left, failed: self.failed.load(Ordering::Relaxed) }
    }

    fn pop(&self) -> Option<Outbox> {
        let mut queue = lock(&self.queue);
        let outbox = queue.pending.pop_front();
        self.queued.store(queue.pending.len(), Ordering::Relaxed);
        outbox
    }

    fn recycle(&self, outbox: Outbox) {
        let mut queue = lock(&self.queue);
        if queue.spare.len() < SPARES {
            queue.spare.push(outbox);
        }
    }

    fn keep_error(&self, port: &mut dyn Port) {
        if let Some(e) = port.take_error() {
            lock(&self.error).get_or_insert(e);
            self.failed.store(true, Ordering::Relaxed);
        }
    }
}

/// Takes a lock; a panic elsewhere while holding it leaves state that is still the best
/// there is (as [`super::Shared::lock`]).
fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
