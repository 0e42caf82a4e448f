//! An in-memory point-to-point link joining two stacks in one process.
//!
//! Each direction is a bounded frame queue plus an eventfd that tells the receiving
//! stack thread a frame is waiting. Like a real link's transmit queue, a full queue
//! drops the frame (counted); TCP recovers, and no memory grows without bound.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nix::sys::eventfd::{EfdFlags, EventFd};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use super::{Link, OwnedRxToken};

/// Frames one direction of the wire holds before it drops.
pub const DEFAULT_QUEUE_FRAMES: usize = 4096;

struct Direction {
    frames: Mutex<VecDeque<Vec<u8>>>,
    ready: EventFd,
    limit: usize,
    dropped: AtomicU64,
}

impl Direction {
    fn new(limit: usize) -> io::Result<Arc<Direction>> {
        let ready = EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;
        Ok(Arc::new(Direction { frames: Mutex::new(VecDeque::new()), ready, limit, dropped: AtomicU64::new(0) }))
    }

    fn push(&self, frame: Vec<u8>) {
        let mut frames = self.frames.lock().unwrap();
        if frames.len() >= self.limit {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        frames.push_back(frame);
        drop(frames);
        // A full eventfd counter (2^64-2 wakes unread) cannot happen in practice; ignore it.
        let _ = self.ready.write(1);
    }

    fn pop(&self) -> Option<Vec<u8>> {
        if let Some(frame) = self.frames.lock().unwrap().pop_front() {
            return Some(frame);
        }
        // Clear the wake-up first, then look again: a frame pushed in between re-arms it.
        let _ = self.ready.read();
        self.frames.lock().unwrap().pop_front()
    }
}

/// A point-to-point link: [`Wire::pair`] gives its two ends.
pub struct Wire;

impl Wire {
    /// Two joined ends with the given MTU (the largest IP packet either side sends).
    pub fn pair(mtu: usize) -> io::Result<(WireEnd, WireEnd)> {
        Self::pair_with_queue(mtu, DEFAULT_QUEUE_FRAMES)
    }

    /// As [`Wire::pair`], with `queue_frames` frames of buffering in each direction.
    pub fn pair_with_queue(mtu: usize, queue_frames: usize) -> io::Result<(WireEnd, WireEnd)> {
        let a_to_b = Direction::new(queue_frames)?;
        let b_to_a = Direction::new(queue_frames)?;
        let a = WireEnd { rx: b_to_a.clone(), tx: a_to_b.clone(), mtu };
        let b = WireEnd { rx: a_to_b, tx: b_to_a, mtu };
        Ok((a, b))
    }
}

/// One end of a [`Wire`].
pub struct WireEnd {
    rx: Arc<Direction>,
    tx: Arc<Direction>,
    mtu: usize,
}

impl WireEnd {
    /// Frames this end sent that the other end's full queue dropped.
    pub fn dropped(&self) -> u64 {
        self.tx.dropped.load(Ordering::Relaxed)
    }

    /// Sends a raw frame as if from the stack on this end (for tests that inject packets).
    pub fn send_raw(&self, frame: &[u8]) {
        self.tx.push(frame.to_vec());
    }

    /// Takes the next frame that arrived at this end, if any (for tests that read packets).
    pub fn recv_raw(&self) -> Option<Vec<u8>> {
        self.rx.pop()
    }
}

impl Device for WireEnd {
    type RxToken<'a> = OwnedRxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(OwnedRxToken, TxToken<'_>)> {
        let frame = self.rx.pop()?;
        Some((OwnedRxToken(frame), TxToken(&self.tx)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        Some(TxToken(&self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

impl Link for WireEnd {
    fn wait_fd(&self) -> BorrowedFd<'_> {
        self.rx.ready.as_fd()
    }

    fn receive_into(&mut self, _now: Instant, frame: &mut Vec<u8>) -> bool {
        match self.rx.pop() {
            Some(received) => {
                *frame = received;
                true
            }
            None => false,
        }
    }
}

#[doc(hidden)]
pub struct TxToken<'a>(&'a Direction);

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let result = f(&mut frame);
        self.0.push(frame);
        result
    }
}
