//! The stack thread: the driver that runs an [`Engine`] on a real device and the real
//! clock, for the blocking socket API.
//!
//! The shape is lwIP's: a single owner of protocol state, and callers that wait for it.
//! The engine sits behind one lock. API calls lock it, make their call on the engine
//! (which never blocks), and wait on their socket's condition variable when the call
//! would block; the stack thread signals it after a round that touched that socket (a
//! packet, a timer, a state change), so a thread is woken for its own socket, not for
//! every round. A call that gave the engine something to send (data, a connect, a close,
//! a window opened by a read) polls the engine itself and writes the packets to the
//! device once it has let go of the engine lock, rather than waking the stack thread to
//! do it (see [`device`] for how threads share the device and keep the packets' order);
//! and a blocked UDP receive waits on the device itself and reads it (see [`drive`]), so a
//! request answered by a UDP server costs no hand-off between threads at all. A call wakes
//! the stack thread (an eventfd) only when the engine's next deadline moved earlier than
//! the one the thread sleeps for. The stack thread reads what the device has before it
//! takes the lock and writes what the engine sent after letting go of it, so its device
//! I/O overlaps with API calls instead of taking turns with them. It sleeps on the device
//! and the eventfd (`epoll_wait`, or `poll(2)` on a device [`drive`] cannot watch) until
//! the engine's next deadline: no busy loop, no fixed tick.
//!
//! Async callers (`crate::tokio`) wait the same way without a thread: a call that says
//! EAGAIN leaves its task's waker in a registry beside the wait queues, under the same
//! lock hold as the call (so a round cannot slip in between and be missed), and the
//! rounds that touch the socket wake it, as they signal the socket's wait queue.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::task::Waker;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::device::Link;
use crate::engine::{DemuxEvent, DemuxRow, DemuxTable, Engine, SockId, StackConfig};

mod clock;
mod device;
mod drive;
mod shards;

pub(crate) use clock::Clock;
use device::{SharedDevice, Writer};
pub(crate) use drive::{AFTER_STACK, DriveNext};
pub(crate) use shards::ShardSet;

/// Frames handed to the engine per lock hold, so API calls are never kept waiting long.
const INGRESS_BATCH: usize = 64;

/// Bytes of frames read from the device before the lock is taken, at most: that many
/// frames' reads overlap with API calls (which copy data in and out of socket buffers
/// under the lock) instead of taking turns with them.
const PREREAD_BYTES: usize = 1 << 20;

/// How long the stack thread waits at most, after a round that left a listener's accept
/// queue more than half full, for the application it has woken to accept: see [`run`].
const ACCEPT_TURN: Duration = Duration::from_millis(1);

/// Condition variables that blocked socket calls wait on, a socket's being number
/// `id % WAIT_QUEUES` (hashed wait queues, as the kernel's futexes have): no allocation per
/// socket, and sockets that share one only see a spurious wake-up, which every wait loop
/// already checks for.
const WAIT_QUEUES: usize = 1024;

/// What the lock guards: the engine, and what the driver keeps beside it.
pub(crate) struct Locked {
    pub engine: Engine,
    /// The clock the engine runs on.
    pub clock: Clock,
    /// Why the stack stopped (device failure or shutdown), once it has.
    pub down: Option<String>,
    /// API callers waiting on `Shared::changed`: with none, a round signals nobody.
    waiters: usize,
    /// API callers waiting on each of `Shared::queues`.
    queue_waiters: Vec<u32>,
    /// Sockets whose waiters are to be woken (taken from the engine).
    touched: Vec<SockId>,
    /// When the stack thread means to poll the engine next (None: not before the device
    /// or the API wakes it). An API call that polls the engine wakes the thread only when
    /// the engine's next deadline is earlier than this.
    wake_at: Option<smoltcp::time::Instant>,
    /// The tasks of async calls waiting on each socket (see [`Wakers`]).
    wakers: HashMap<SockId, Wakers>,
    /// The listener whose acceptor the stack thread is giving a turn (see [`run`]): an
    /// API call that leaves its accept queue no longer crowded signals `Shared::caught_up`.
    accept_turn: Option<SockId>,
    /// The socket whose blocked call waits on the device itself, if one does (see [`drive`]).
    driving: Option<SockId>,
    /// The buffer a driving call reads frames into (allocated on the first drive).
    drive_frame: Vec<u8>,
}

/// What an async call on a socket waits for: to read (or accept), or to write (or connect).
#[cfg(feature = "tokio")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interest {
    Read,
    Write,
}

/// The tasks waiting on one socket, by direction, so that a stream's read half and write
/// half, in two tasks, each get woken. The engine says which sockets a round touched, not
/// which way, so a touch wakes both; a task woken for nothing tries once and registers
/// again. Each task is held once (`Waker::will_wake`); several tasks may wait on one
/// direction of a shared socket (two `recv_from` on one `&UdpSocket`).
#[derive(Default)]
struct Wakers {
    read: Vec<Waker>,
    write: Vec<Waker>,
}

impl Wakers {
    #[cfg(feature = "tokio")]
    fn of(&mut self, interest: Interest) -> &mut Vec<Waker> {
        match interest {
            Interest::Read => &mut self.read,
            Interest::Write => &mut self.write,
        }
    }

    fn wake(self) {
        self.read.into_iter().chain(self.write).for_each(Waker::wake);
    }
}

impl Locked {
    /// Now, on the engine's clock.
    pub fn now(&self) -> smoltcp::time::Instant {
        self.clock.now()
    }

    /// Has the next round that touches socket `id` wake `waker` (once). Called under the
    /// same lock hold as the call that said EAGAIN, so no touch can come in between.
    #[cfg(feature = "tokio")]
    pub fn register_waker(&mut self, id: SockId, interest: Interest, waker: &Waker) {
        let wakers = self.wakers.entry(id).or_default().of(interest);
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }

    /// Forgets `waker` on socket `id`, before its task calls again: a call that touches
    /// its own socket must not wake its own task (which would call again, and again).
    #[cfg(feature = "tokio")]
    pub fn forget_waker(&mut self, id: SockId, interest: Interest, waker: &Waker) {
        if let Some(wakers) = self.wakers.get_mut(&id) {
            wakers.of(interest).retain(|w| !w.will_wake(waker));
        }
    }

    /// Wakes every waiting task: the stack stops, or every socket closes at once.
    fn wake_all_tasks(&mut self) {
        self.wakers.drain().for_each(|(_, w)| w.wake());
    }
}

/// The part of a stack that sockets hold on to.
pub(crate) struct Shared {
    locked: Mutex<Locked>,
    /// Signalled after every round of the stack thread, and whenever the API changes
    /// something another API caller may wait for: for waits on many sockets at once
    /// (poll()) or on the stack as a whole.
    changed: Condvar,
    /// The sockets' wait queues (see [`WAIT_QUEUES`]).
    queues: Box<[Condvar]>,
    /// Where the stack thread waits while an acceptor catches up (see [`run`]).
    caught_up: Condvar,
    wake: EventFd,
    /// The device, which the stack thread reads and every thread writes.
    device: SharedDevice,
    /// Told of every socket the engine touched (see [`Stack::on_touched`]).
    touch_hook: OnceLock<TouchHook>,
    /// The stack this engine is one shard of, if it has several (see [`shards`]).
    pub(crate) set: OnceLock<Arc<ShardSet>>,
    /// The epoll sets a driving call and the stack thread wait on the device with; None
    /// if the device cannot be waited on that way (then no call drives it).
    watch: Option<drive::Watch>,
    /// Bytes a frame read from the device may take.
    frame_capacity: usize,
}

/// What [`Shared::after_call`] did beside waking waiters.
#[derive(Clone, Copy)]
pub(crate) struct AfterCall {
    /// Packets were queued for the device.
    pub queued: bool,
    /// The engine's poll touched the calling socket: what the call saw (EAGAIN) may be
    /// out of date already, and nobody will wake the caller for it — the looped-back
    /// FIN its own poll delivered, say. A blocking call asks again instead of waiting.
    pub touched: bool,
}

/// What [`Stack::on_touched`] calls.
pub type TouchHook = Box<dyn Fn(SockId) + Send + Sync>;

/// A running stack: an engine, its device, and the thread that drives them.
///
/// Dropping it stops the thread; sockets still open then fail with ENETDOWN. Sockets are
/// made on a stack ([`crate::Socket::new`], [`crate::TcpListener::bind`], ...).
///
/// ```no_run
/// use ustack::device::{TunConfig, TunDevice};
/// use ustack::{Stack, StackConfig};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // As root (or on a TUN made for this user): the kernel gets 10.7.0.1 on the TUN's side,
/// // and routes 10.7.0.0/24 into it; the stack answers at 10.7.0.2.
/// let tun = TunDevice::open(&TunConfig { name: "ustack0".into(), peer_addrs: vec!["10.7.0.1/24".parse()?], ..TunConfig::default() })?;
/// let stack = Stack::new(tun, StackConfig { addrs: vec!["10.7.0.2/24".parse()?], ..Default::default() })?;
/// assert_eq!(stack.addrs()[0].to_string(), "10.7.0.2/24");
/// # Ok(())
/// # }
/// ```
pub struct Stack {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// Shards 1 and up of a stack of several ([`Stack::sharded`]), each a stack of one;
    /// this one is shard 0.
    siblings: Vec<Stack>,
}

impl Stack {
    /// Starts a stack on `device` with `config`.
    pub fn new<D: Link + 'static>(device: D, config: StackConfig) -> io::Result<Stack> {
        let clock = Clock::new();
        let engine = Engine::new(config, device.capabilities(), clock.now())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let wake = EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;
        let locked = Locked {
            engine,
            clock,
            down: None,
            waiters: 0,
            queue_waiters: vec![0; WAIT_QUEUES],
            touched: Vec::new(),
            wake_at: None,
            wakers: HashMap::new(),
            accept_turn: None,
            driving: None,
            drive_frame: Vec::new(),
        };
        let preread = preread_buffers(device.capabilities().max_transmission_unit);
        let mtu = device.capabilities().max_transmission_unit;
        let watch = match drive::Watch::new(device.wait_fd(), wake.as_fd()) {
            Ok(watch) => Some(watch),
            Err(e) => {
                log::debug!(target: "ustack", "calls do not drive this device ({e}); the stack thread alone reads it");
                None
            }
        };
        let shared = Arc::new(Shared {
            locked: Mutex::new(locked),
            changed: Condvar::new(),
            queues: (0..WAIT_QUEUES).map(|_| Condvar::new()).collect(),
            caught_up: Condvar::new(),
            wake,
            device: SharedDevice::new(device, clock),
            touch_hook: OnceLock::new(),
            set: OnceLock::new(),
            watch,
            frame_capacity: mtu.max(crate::device::tun::RX_BUFFER_GSO),
        });
        let thread_shared = shared.clone();
        let thread =
            std::thread::Builder::new().name("ustack".into()).spawn(move || run(&thread_shared, mtu, preread))?;
        Ok(Stack { shared, thread: Some(thread), siblings: Vec::new() })
    }

    /// The state the socket API works on.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Calls `hook` with the id ([`Socket::id`](crate::Socket::id)) of every socket that a
    /// packet, a timer or a call may have made ready or unready, as the waiters of that
    /// socket are woken — for a layer that mirrors readiness elsewhere (the LD_PRELOAD
    /// library makes a kernel fd readable and writable as the socket is). It runs with the
    /// stack locked: it must not call into the stack, only note the id and return. One
    /// hook per stack; a second call is refused (false). On a stack of several shards it
    /// sees shard 0's sockets only (ids are per shard; `ustack run` uses one shard).
    pub fn on_touched(&self, hook: TouchHook) -> bool {
        self.shared.touch_hook.set(hook).is_ok()
    }

    /// Waits until the stack thread has finished the round it is in (if any): whatever it
    /// was doing with the packets it had read is done. A barrier for tools that drive the
    /// device from outside (the replay).
    // Public only for crates/replay; not part of the library's API.
    #[doc(hidden)]
    pub fn barrier(&self) {
        self.each_shard().for_each(|shard| drop(shard.lock()));
    }

    /// The socket whose blocked receive waits on the device itself now, if one does (see
    /// [`drive`]): for tests that need a call to be in that wait before they go on.
    // Public only for the tests; not part of the library's API.
    #[doc(hidden)]
    pub fn driving(&self) -> Option<SockId> {
        self.shared.lock().driving
    }

    /// The stack's addresses.
    pub fn addrs(&self) -> Vec<crate::Cidr> {
        self.shared.lock().engine.config().addrs.clone()
    }

    /// A snapshot of the demux table: listeners with their queues, connections with their
    /// states, bound UDP sockets, and the demux's counters.
    pub fn demux_table(&self) -> DemuxTable {
        let mut table = self.shared.lock().engine.demux_table();
        table.shards = self.shards();
        for (shard, shared) in self.each_shard().enumerate().skip(1) {
            let more = shared.lock().engine.demux_table();
            table.counters.add(&more.counters);
            table.rows.extend(more.rows.into_iter().map(|row| DemuxRow { shard, ..row }));
        }
        if !self.siblings.is_empty() {
            // Each shard's rows come sorted; the table's order is by kind, then port.
            let kind = |row: &DemuxRow| match (row.proto, row.queues.is_some()) {
                ("tcp", true) => 0,
                ("tcp", false) => 1,
                _ => 2,
            };
            table.rows.sort_by_key(|row| (kind(row), row.local.port(), row.local, row.remote, row.shard));
        }
        table
    }

    /// IP reassembly: what became of the fragments that arrived, and the bytes and
    /// datagrams held now (see [`crate::engine::reassembly`]).
    pub fn reassembly(&self) -> (crate::engine::reassembly::ReassemblyCounters, usize, usize) {
        self.shared.lock().engine.reassembly()
    }

    /// The demux's most recent decisions (up to [`crate::engine::demux::HISTORY`]), oldest first.
    pub fn demux_events(&self) -> Vec<DemuxEvent> {
        let mut events: Vec<DemuxEvent> = self
            .each_shard()
            .flat_map(|shard| shard.lock().engine.demux_events().copied().collect::<Vec<_>>())
            .collect();
        if !self.siblings.is_empty() {
            events.sort_by_key(|e| e.at_ms);
        }
        events
    }

    /// The handshake and close of every connection the stack holds and of the most recent
    /// ones that are gone, ordered by when they started (see [`Engine::connections`]).
    pub fn connections(&self) -> Vec<crate::engine::ConnectionInfo> {
        let mut all: Vec<_> = self.each_shard().flat_map(|shard| shard.lock().engine.connections()).collect();
        if !self.siblings.is_empty() {
            all.sort_by(|a, b| a.started_ms.total_cmp(&b.started_ms));
        }
        all
    }

    /// A number that changes whenever the demux table does; pass it to
    /// [`Stack::wait_for_change`].
    pub fn generation(&self) -> u64 {
        self.each_shard().map(|shard| shard.lock().engine.generation()).sum()
    }

    /// Waits until the demux table differs from generation `seen`, or `timeout` passes.
    /// Returns the generation now.
    pub fn wait_for_change(&self, seen: u64, timeout: Duration) -> u64 {
        if let Some(set) = self.shared.set.get() {
            return set.wait_for_change(self, seen, timeout);
        }
        let deadline = std::time::Instant::now() + timeout;
        let mut locked = self.shared.lock();
        while locked.engine.generation() == seen && locked.down.is_none() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            locked = self.shared.wait(locked, Some(left)).0;
        }
        locked.engine.generation()
    }

    /// Closes every socket as a process's exit closes its descriptors — listeners reset
    /// the connections in their queues, connections send FIN (RST if unread data is left)
    /// — and waits up to `timeout` until every FIN is acknowledged: the peers then have all
    /// the data. Sockets still held by the application fail with EBADF from then on.
    /// Returns how many connections' FINs were still unacknowledged. (What comes after —
    /// the peer's own FIN, TIME-WAIT — the stack carries on with while it runs; a
    /// process's exit does not wait for it on Linux either.)
    pub fn shutdown(&self, timeout: Duration) -> usize {
        let deadline = std::time::Instant::now() + timeout;
        // Every shard's sockets close at once; then each shard's FINs are waited for.
        for sibling in &self.siblings {
            let mut locked = sibling.shared.lock();
            locked.engine.close_all();
            locked.wake_all_tasks();
            sibling.shared.wake();
            sibling.shared.notify_everyone();
        }
        let mut open = 0;
        for sibling in &self.siblings {
            open += sibling.shutdown(deadline.saturating_duration_since(std::time::Instant::now()));
        }
        let timeout = deadline.saturating_duration_since(std::time::Instant::now());
        open + self.shutdown_shard(timeout)
    }

    /// [`Stack::shutdown`] of this shard alone.
    fn shutdown_shard(&self, timeout: Duration) -> usize {
        let deadline = std::time::Instant::now() + timeout;
        let mut locked = self.shared.lock();
        locked.engine.close_all();
        locked.wake_all_tasks();
        self.shared.wake();
        self.shared.notify_everyone();
        loop {
            let open = locked.engine.unacknowledged_fins();
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if open == 0 || left.is_zero() || locked.down.is_some() {
                log::info!(target: "ustack", "shutdown: {open} FIN(s) not acknowledged");
                return open;
            }
            locked = self.shared.wait(locked, Some(left)).0;
        }
    }

    /// Why the stack stopped, if it has (e.g. the device failed).
    pub fn error(&self) -> Option<String> {
        self.each_shard().find_map(|shard| shard.lock().down.clone())
    }

    /// The shared state of every shard, shard 0 first.
    fn each_shard(&self) -> impl Iterator<Item = &Arc<Shared>> {
        std::iter::once(&self.shared).chain(self.siblings.iter().map(|s| &s.shared))
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        {
            let mut locked = self.shared.lock();
            locked.down.get_or_insert_with(|| "stack stopped".into());
            locked.wake_all_tasks();
        }
        self.shared.wake();
        self.shared.notify_everyone();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Shared {
    /// Locks the engine. A panic elsewhere while holding the lock is a bug; the state is
    /// still the best there is, so carry on rather than poison every later call.
    pub fn lock(&self) -> MutexGuard<'_, Locked> {
        self.locked.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Tells the stack thread there is work (data to send, a connection to open or close).
    pub fn wake(&self) {
        let _ = self.wake.write(1);
    }

    /// After an API call on socket `caller`: if the call gave the engine something to
    /// send, polls it and queues the packets for the device (for [`Shared::unlock`] to
    /// write); wakes the stack thread if the engine's next deadline moved earlier, and the
    /// callers waiting on the sockets the call touched.
    pub fn after_call(&self, locked: &mut Locked, caller: SockId) -> AfterCall {
        let mut queued = false;
        if locked.engine.wants_poll() && locked.down.is_none() {
            queued = self.poll_engine(locked);
        }
        let touched = self.notify_touched(locked, Some(caller));
        if locked.accept_turn.is_some_and(|id| !locked.engine.still_crowded(id)) {
            locked.accept_turn = None;
            self.caught_up.notify_one();
        }
        AfterCall { queued, touched }
    }

    /// Polls the engine from an API call and queues what it sent for the device; wakes the
    /// stack thread if the engine's next deadline moved earlier. Returns whether packets
    /// were queued.
    fn poll_engine(&self, locked: &mut Locked) -> bool {
        let now = locked.clock.now();
        let next = locked.engine.poll(now);
        let queued = !locked.engine.outbox().is_empty();
        self.device.push(locked.engine.outbox());
        // Due now (more to do: looped-back packets, a full outbox), or before the
        // stack thread means to look.
        if next.is_some_and(|at| at <= now || locked.wake_at.is_none_or(|planned| at < planned)) {
            locked.wake_at = next;
            self.wake();
        }
        queued
    }

    /// Whether a blocked call on socket `id` may wait on the device itself now (see
    /// [`drive`]): nobody else does, and the device and stack allow it.
    pub fn may_drive(&self, locked: &Locked, id: SockId) -> bool {
        // A stack of several shards steers frames between them; only its threads read.
        self.watch.is_some() && locked.driving.is_none() && self.set.get().is_none() && locked.engine.is_open(id)
    }

    /// Waits, as socket `id`'s blocked call, on the device until it has frames, something
    /// touches the socket, or `timeout`; then reads and hands to the engine what the device
    /// has, as a round of the stack thread would (see [`drive`]). Call only when
    /// [`Shared::may_drive`]. Returns the guard, and what the caller does if it has to wait
    /// ([`DriveNext`]): drive again, unless the stack thread held frames that had to go
    /// first (then after its round), or the frames read touched other sockets and not the
    /// caller's — a thread waiting on a quiet socket does not become the reader of
    /// everybody else's traffic; the stack thread is.
    pub fn drive<'a>(
        &'a self,
        mut locked: MutexGuard<'a, Locked>,
        id: SockId,
        timeout: Option<Duration>,
    ) -> (MutexGuard<'a, Locked>, DriveNext) {
        let Some(watch) = &self.watch else { return (locked, DriveNext::Wait) };
        locked.driving = Some(id);
        drop(locked);
        // Woken or not, the device is read afterwards: a frame whose (exclusive) wake-up
        // this wait took as it ended must not wait for the next one.
        watch.caller_wait(timeout);
        let mut locked = self.lock();
        locked.driving = None;
        if locked.down.is_some() {
            return (locked, DriveNext::Again);
        }
        let now = locked.clock.now();
        let mut frame = std::mem::take(&mut locked.drive_frame);
        if frame.capacity() == 0 {
            frame.reserve_exact(self.frame_capacity);
        }
        let mut frames = 0;
        let mut held = false;
        while frames < INGRESS_BATCH {
            match self.device.receive_unless_held(now, &mut frame) {
                Some(true) => {
                    locked.engine.ingress(now, &mut frame);
                    frames += 1;
                }
                Some(false) => break,
                None => {
                    held = true;
                    break;
                }
            }
        }
        locked.drive_frame = frame;
        let mut next = if held { DriveNext::AfterStack } else { DriveNext::Again };
        if frames > 0 {
            self.poll_engine(&mut locked);
            // Frames that touched no socket (the kernel's IPv6 chatter, a ping) do not count.
            let locked = &mut *locked;
            locked.engine.take_touched(&mut locked.touched);
            if !(locked.touched.iter().all(|&other| other == id) || locked.touched.contains(&id)) {
                next = DriveNext::Wait;
            }
            self.notify_touched(locked, None);
        }
        // More frames than a batch, or a device error: the stack thread carries on.
        if frames == INGRESS_BATCH || self.device.failed() {
            self.wake();
        }
        if self.device.has_queued() {
            // What the frames made (acknowledgements, replies) goes out now; the lock
            // was let go meanwhile, so the call is asked again before waiting.
            self.unlock(locked);
            locked = self.lock();
        }
        (locked, next)
    }

    /// Lets go of the engine lock and writes what API calls queued (unless another thread
    /// is at the device and will). The end of every API call that may have sent.
    pub fn unlock(&self, locked: MutexGuard<'_, Locked>) {
        drop(locked);
        let flushed = self.device.flush(Writer::Api);
        if flushed.left || flushed.failed {
            self.wake();
        }
    }

    /// Waits until something may have changed for socket `id` (or until `timeout`).
    /// Returns the guard and whether the wait timed out.
    pub fn wait_socket<'a>(
        &self,
        mut locked: MutexGuard<'a, Locked>,
        id: SockId,
        timeout: Option<Duration>,
    ) -> (MutexGuard<'a, Locked>, bool) {
        let queue = wait_queue(id);
        locked.queue_waiters[queue] += 1;
        let (mut locked, timed_out) = wait_on(&self.queues[queue], locked, timeout);
        locked.queue_waiters[queue] -= 1;
        (locked, timed_out)
    }

    /// Wakes every waiting caller (the stack stops, or every socket closes at once).
    fn notify_everyone(&self) {
        if let Some(set) = self.set.get() {
            set.touched();
        }
        if let Some(watch) = &self.watch {
            watch.wake_caller();
        }
        self.changed.notify_all();
        for queue in self.queues.iter() {
            queue.notify_all();
        }
    }

    /// Wakes the callers and tasks waiting on the sockets the engine touched. A wait queue
    /// is signalled only when somebody waits on it, and once per call; a task is woken
    /// once, and registers again if it still has to wait.
    /// Returns whether socket `caller` was among them.
    fn notify_touched(&self, locked: &mut Locked, caller: Option<SockId>) -> bool {
        let mut touched = std::mem::take(&mut locked.touched);
        locked.engine.take_touched(&mut touched);
        if touched.is_empty() {
            locked.touched = touched;
            return false;
        }
        let caller_touched = caller.is_some_and(|id| touched.contains(&id));
        if let (Some(driving), Some(watch)) = (locked.driving, &self.watch)
            && touched.contains(&driving)
        {
            watch.wake_caller();
        }
        if !locked.wakers.is_empty() {
            for id in &touched {
                if let Some(wakers) = locked.wakers.remove(id) {
                    wakers.wake();
                }
            }
        }
        if let Some(hook) = self.touch_hook.get() {
            touched.iter().for_each(|&id| hook(id));
        }
        if let Some(set) = self.set.get() {
            set.touched();
        }
        for id in touched.iter_mut() {
            *id = wait_queue(*id) as SockId;
        }
        touched.sort_unstable();
        touched.dedup();
        for &queue in &touched {
            if locked.queue_waiters[queue as usize] > 0 {
                self.queues[queue as usize].notify_all();
            }
        }
        touched.clear();
        locked.touched = touched;
        if locked.waiters > 0 {
            self.changed.notify_all();
        }
        caller_touched
    }

    /// Waits for the stack thread's next round, or until `timeout`. Returns the guard and
    /// whether the wait timed out.
    pub fn wait<'a>(
        &self,
        mut locked: MutexGuard<'a, Locked>,
        timeout: Option<Duration>,
    ) -> (MutexGuard<'a, Locked>, bool) {
        locked.waiters += 1;
        let (mut locked, timed_out) = wait_on(&self.changed, locked, timeout);
        locked.waiters -= 1;
        (locked, timed_out)
    }
}

/// Waits on `condvar` with the lock, for at most `timeout`. Returns the guard and whether
/// the wait timed out. (A poisoned lock is taken anyway, as in [`Shared::lock`].)
fn wait_on<'a>(
    condvar: &Condvar,
    locked: MutexGuard<'a, Locked>,
    timeout: Option<Duration>,
) -> (MutexGuard<'a, Locked>, bool) {
    match timeout {
        None => (condvar.wait(locked).unwrap_or_else(|p| p.into_inner()), false),
        Some(t) => {
            let (locked, result) = condvar.wait_timeout(locked, t).unwrap_or_else(|p| p.into_inner());
            (locked, result.timed_out())
        }
    }
}

/// The wait queue of socket `id`.
fn wait_queue(id: SockId) -> usize {
    (id % WAIT_QUEUES as SockId) as usize
}

/// The buffers the stack thread reads frames into before it takes the lock: enough for
/// [`PREREAD_BYTES`] of MTU-sized frames (`run` stops at that many bytes when frames are
/// the TUN's super-segments). Allocated by [`Stack::new`] at their full size (any IP
/// packet: a device may read up to 64 KiB, a TUN with offloads 40 bytes more), so that this
/// fixed memory of the stack is there when it starts, not counted against its first
/// connections, and no read has to grow a buffer.
fn preread_buffers(mtu: usize) -> Vec<Vec<u8>> {
    let count = (PREREAD_BYTES / mtu.max(1)).clamp(1, INGRESS_BATCH);
    (0..count).map(|_| Vec::with_capacity(mtu.max(crate::device::tun::RX_BUFFER_GSO))).collect()
}

/// The stack thread: read frames, hand them to the engine, poll it, write what it sent,
/// sleep until the device, the API or the engine's next deadline wakes it.
fn run(shared: &Shared, mtu: usize, mut preread: Vec<Vec<u8>>) {
    // As big as the preread buffers it trades places with (see `preread_buffers`).
    let mut frame = Vec::with_capacity(mtu.max(crate::device::tun::RX_BUFFER_GSO));
    let device = &shared.device;
    let clock = shared.lock().clock;
    loop {
        let crowded;
        let mut prereads = 0;
        let mut preread_bytes = 0;
        let mut emptied = false;
        let read_at = clock.now();
        // Counted in bytes too: with the TUN's offloads a frame can be a 64 KiB
        // super-segment whatever the MTU, and 64 of them read ahead (4 MiB) left the first
        // out of the CPU's cache by the time smoltcp copied it (MTU 1500: 27–30 Gbit/s
        // against 31–33 with the bound; BENCHMARKS.md §33).
        while prereads < preread.len() && preread_bytes < PREREAD_BYTES {
            // What the read's flush left, the flush after the round writes.
            let (received, _) = device.receive_into(read_at, &mut preread[prereads]);
            if !received {
                emptied = true;
                break;
            }
            preread_bytes += preread[prereads].len();
            prereads += 1;
        }
        let delay = {
            let mut guard = shared.lock();
            let locked = &mut *guard;
            if locked.down.is_some() {
                break;
            }
            let now = clock.now();
            let mut frames = 0;
            let mut prereads = preread[..prereads].iter_mut();
            while frames < INGRESS_BATCH {
                if let Some(buffer) = prereads.next() {
                    std::mem::swap(&mut frame, buffer);
                } else if emptied || !device.try_receive_into(now, &mut frame) {
                    // The device said it had nothing left a moment ago (frames that came
                    // since wake the sleep below), or it is busy.
                    break;
                }
                frames += 1;
                locked.engine.ingress(now, &mut frame);
            }
            device.release_held();
            // A full batch: more may be waiting, go round again at once.
            let more = frames == INGRESS_BATCH;
            let next = locked.engine.poll(now);
            device.push(locked.engine.outbox());
            if let Some(err) = device.take_error() {
                log::error!(target: "ustack", "device failed: {err}");
                locked.down = Some(format!("device failed: {err}"));
            }
            shared.notify_touched(locked, None);
            // A listener's accept queue is filling and its acceptor, blocked in accept(),
            // has just been woken: it is behind, not busy elsewhere. On a stack of several
            // shards, an acceptor in accept() at all: it may be taking another shard's
            // connections while this shard's queue fills (BENCHMARKS.md §39).
            let acceptor_waits =
                |id| locked.queue_waiters[wait_queue(id)] > 0 || shared.set.get().is_some_and(|set| set.has_acceptor());
            crowded = locked.engine.take_crowded().filter(|&id| acceptor_waits(id));
            let delay = if more || next.is_some_and(|at| at <= now) {
                Some(Duration::ZERO)
            } else {
                next.map(|at| Duration::from(at - now))
            };
            locked.wake_at = if delay == Some(Duration::ZERO) { Some(now) } else { next };
            delay
        };
        // Packets left queued (more than a round's worth), or an error the round has to
        // see: go round again instead of sleeping.
        let flushed = device.flush(Writer::Stack);
        if let Some(listener) = crowded {
            give_acceptor_a_turn(shared, listener);
        }
        if delay != Some(Duration::ZERO) && !flushed.left && !flushed.failed {
            sleep(shared, delay);
        }
    }
    shared.lock().wake_all_tasks();
    shared.notify_everyone();
    // Packets queued by the last calls go nowhere now; the device closes with the stack
    // (a TUN's interface vanishes), not with the last socket.
    device.close();
}

/// Waits (up to [`ACCEPT_TURN`]) until the application has taken `listener`'s accept queue
/// down to a quarter of its backlog, before reading more from the device.
///
/// A burst of SYNs can complete handshakes faster than a woken acceptor gets a CPU: the
/// stack thread, the clients and the acceptor compete for few cores, and a thread that
/// was just woken may wait milliseconds to run while the stack thread keeps taking SYNs
/// in. Once the queue is full the next SYNs are dropped (as Linux drops them) and their
/// clients retry a second later. Waiting here frees the stack thread's CPU for the acceptor;
/// the frames meanwhile wait in the device's queue, which is what it is for. Bounded, and
/// only when an acceptor was blocked in accept() at the end of the round — an application
/// busy elsewhere is not waited for.
fn give_acceptor_a_turn(shared: &Shared, listener: SockId) {
    let deadline = std::time::Instant::now() + ACCEPT_TURN;
    let mut locked = shared.lock();
    while locked.down.is_none() && locked.engine.still_crowded(listener) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        locked.accept_turn = Some(listener);
        locked = wait_on(&shared.caught_up, locked, Some(left)).0;
    }
    locked.accept_turn = None;
}

/// Sleeps until the device is readable, the API wakes us, or `delay` passes.
fn sleep(shared: &Shared, delay: Option<Duration>) {
    if let Some(watch) = &shared.watch {
        if watch.stack_wait(delay).wake {
            let _ = shared.wake.read();
        }
        return;
    }
    let timeout = drive::poll_timeout(delay);
    // SAFETY: the device's fd stays open while the stack thread runs (it is closed by
    // `SharedDevice::close`, after the thread's last sleep).
    let device = unsafe { BorrowedFd::borrow_raw(shared.device.wait_fd()) };
    let mut fds = [PollFd::new(device, PollFlags::POLLIN), PollFd::new(shared.wake.as_fd(), PollFlags::POLLIN)];
    // EINTR and the like just mean another round.
    let _ = nix::poll::poll(&mut fds, timeout);
    if fds[1].revents().is_some_and(|r| r.contains(PollFlags::POLLIN)) {
        let _ = shared.wake.read();
    }
}

#[cfg(test)]
mod tests;
