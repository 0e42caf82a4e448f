//! A middleware device that loses, damages, duplicates and reorders packets.
//!
//! `FaultInjector<D>` wraps any [`Link`] and is one, like smoltcp's `phy::FaultInjector`,
//! so it nests with the other middleware: `FaultInjector::new(Tracer::new(tun), config)`
//! traces what really crossed the link, `Tracer::new(FaultInjector::new(tun, config)?)`
//! what the stack meant to send and what reached it. Each packet, in each direction the
//! [`FaultConfig`] names, may independently be
//!
//! - **dropped**;
//! - **corrupted**: one byte XORed with a random non-zero value, inside the IP payload
//!   ([`Corruption::Payload`], which the TCP/UDP/ICMP checksums must catch) or anywhere in
//!   the packet ([`Corruption::Anywhere`], which also breaks IP headers);
//! - **duplicated**: delivered twice in a row;
//! - **reordered**: held back and delivered right after the next packet in the same
//!   direction, or after [`FaultConfig::hold`] if no packet follows; at most
//!   [`FaultConfig::max_held`] are held at once.
//!
//! # Held packets and sleeping stack threads
//!
//! The stack thread sleeps in `poll(2)` on [`Link::wait_fd`] until the device has a frame
//! or a timer of its own expires, so a packet the injector keeps back (reordered, or a
//! duplicate waiting to go out) must wake it, or it would sit there until unrelated
//! traffic came by — forever, on a quiet link. So the injector's `wait_fd` is an epoll
//! instance watching two things: the inner device's `wait_fd`, and a timerfd armed
//! whenever the injector holds something — at once if a packet is ready to go, at the
//! earliest release time otherwise. Every [`Device::receive`] and [`Device::transmit`]
//! first sends out what is due, so a thread that polls `wait_fd` and then calls
//! `receive` (which ustack's does every round) never strands a packet; held packets
//! leave at most [`FaultConfig::hold`] (plus timer slack) after they were held.
//!
//! Counters of everything it did are readable at any time, also after the injector
//! moved into a stack's thread, through [`FaultInjector::counters`].
//!
//! The random choices come from a small generator seeded by [`FaultConfig::seed`], so a
//! test can replay the same decisions (the packets themselves still depend on timing), or
//! from the OS; [`FaultInjector::seed`] says which seed was used, for a failing test to
//! print. Nothing here panics; memory is bounded by the held and ready queues' limits.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use smoltcp::phy::{self, Device, DeviceCapabilities};
use smoltcp::time::Instant;

use super::{Link, OwnedRxToken};

/// The most packets [`FaultConfig::max_held`] may ask to hold back per direction.
pub const MAX_HELD_LIMIT: usize = 64;

/// Packets per direction waiting to be delivered (duplicates, released held packets)
/// beyond which no more duplicates are made, so the queue cannot grow without bound.
const READY_LIMIT: usize = 64;

/// Packets taken from the inner device per `receive` call while all of them are dropped
/// or held, before giving up until the next call (the inner `wait_fd` stays readable, so
/// the caller comes back at once).
const MAX_PULL: usize = 64;

/// Held packets due within this much of `now` are released: the timer fires on the OS
/// clock and `now` may have been read a little earlier, so without the slack a timer
/// could fire, find nothing due yet, and wake the caller again and again.
const TIMER_SLACK: smoltcp::time::Duration = smoltcp::time::Duration::from_millis(1);

/// How long to wait before retrying to send queued packets when the inner device had no
/// transmit token.
const RETRY: smoltcp::time::Duration = smoltcp::time::Duration::from_millis(1);

/// What happens to packets in one direction. Each chance is a percentage, 0 to 100
/// (values outside are clamped, NaN counts as 0).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// Chance that a packet is lost.
    pub drop_pct: f64,
    /// Chance that a packet that is not lost has one byte changed (see [`Corruption`]).
    pub corrupt_pct: f64,
    /// Chance that a packet is delivered twice.
    pub duplicate_pct: f64,
    /// Chance that a packet is held back and delivered after the next one.
    pub reorder_pct: f64,
}

impl Faults {
    /// No faults: every packet passes unchanged.
    pub const NONE: Faults = Faults { drop_pct: 0.0, corrupt_pct: 0.0, duplicate_pct: 0.0, reorder_pct: 0.0 };

    /// Loses `drop_pct`% and corrupts `corrupt_pct`% of packets.
    pub fn lossy(drop_pct: f64, corrupt_pct: f64) -> Faults {
        Faults { drop_pct, corrupt_pct, ..Faults::NONE }
    }

    /// Whether any fault can happen.
    pub fn any(&self) -> bool {
        let n = self.normalized();
        n.drop_pct > 0.0 || n.corrupt_pct > 0.0 || n.duplicate_pct > 0.0 || n.reorder_pct > 0.0
    }

    fn normalized(self) -> Faults {
        let pct = |p: f64| if p.is_nan() { 0.0 } else { p.clamp(0.0, 100.0) };
        Faults {
            drop_pct: pct(self.drop_pct),
            corrupt_pct: pct(self.corrupt_pct),
            duplicate_pct: pct(self.duplicate_pct),
            reorder_pct: pct(self.reorder_pct),
        }
    }
}

/// Where a corrupted packet is damaged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Corruption {
    /// A byte of the IP payload (after the IPv4 header with its options, or after the
    /// fixed 40-byte IPv6 header): the transport header or data, which the TCP, UDP and
    /// ICMP checksums cover, so the receiver must discard the packet — a test that data
    /// arrives intact checks that checksums are verified. Packets with no payload, or that
    /// are not IP, are damaged anywhere. (IPv6 extension headers are not covered by any
    /// checksum; ustack sends none.)
    #[default]
    Payload,
    /// Any byte, IP header included: also exercises the receiver's parsing of broken
    /// headers (versions, lengths, addresses). IPv4's header checksum catches damage to
    /// its header, but IPv6 has none, so a damaged IPv6 packet may still be delivered,
    /// e.g. with another hop limit or flow label, or shortened by its payload length.
    Anywhere,
}

/// How a [`FaultInjector`] behaves. The default injects nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultConfig {
    /// Faults for packets arriving from the inner device (received by the stack).
    pub rx: Faults,
    /// Faults for packets the stack sends through the inner device.
    pub tx: Faults,
    /// Which bytes corruption may hit.
    pub corruption: Corruption,
    /// The most packets held back at once per direction (clamped to 1..=[`MAX_HELD_LIMIT`]);
    /// while that many are held, no more are reordered.
    pub max_held: usize,
    /// The longest a held packet waits for a next packet before it is released anyway.
    pub hold: Duration,
    /// The seed of the random choices; `None` takes one from the OS.
    pub seed: Option<u64>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            rx: Faults::NONE,
            tx: Faults::NONE,
            corruption: Corruption::Payload,
            max_held: 4,
            hold: Duration::from_millis(20),
            seed: None,
        }
    }
}

impl FaultConfig {
    /// The same faults in both directions.
    pub fn both(faults: Faults) -> FaultConfig {
        FaultConfig { rx: faults, tx: faults, ..FaultConfig::default() }
    }

    /// Faults for received packets only.
    pub fn rx_only(faults: Faults) -> FaultConfig {
        FaultConfig { rx: faults, ..FaultConfig::default() }
    }

    /// Faults for transmitted packets only.
    pub fn tx_only(faults: Faults) -> FaultConfig {
        FaultConfig { tx: faults, ..FaultConfig::default() }
    }

    /// This configuration with a fixed seed, for reproducible choices.
    pub fn with_seed(self, seed: u64) -> FaultConfig {
        FaultConfig { seed: Some(seed), ..self }
    }

    /// This configuration with corruption hitting `corruption`.
    pub fn with_corruption(self, corruption: Corruption) -> FaultConfig {
        FaultConfig { corruption, ..self }
    }
}

/// What the injector did to the packets of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Packets that entered the injector.
    pub packets: u64,
    /// Packets lost on purpose.
    pub dropped: u64,
    /// Packets with a byte changed.
    pub corrupted: u64,
    /// Packets delivered twice.
    pub duplicated: u64,
    /// Packets held back to be delivered after the next one.
    pub reordered: u64,
    /// Held packets that no next packet released in time, so the timer did.
    pub released_by_timer: u64,
}

/// What the injector did, per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Packets from the inner device to the stack.
    pub rx: DirectionStats,
    /// Packets from the stack to the inner device.
    pub tx: DirectionStats,
}

#[derive(Debug, Default)]
struct DirectionCounters {
    packets: AtomicU64,
    dropped: AtomicU64,
    corrupted: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    released_by_timer: AtomicU64,
}

impl DirectionCounters {
    fn get(&self) -> DirectionStats {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DirectionStats {
            packets: n(&self.packets),
            dropped: n(&self.dropped),
            corrupted: n(&self.corrupted),
            duplicated: n(&self.duplicated),
            reordered: n(&self.reordered),
            released_by_timer: n(&self.released_by_timer),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A handle on a [`FaultInjector`]'s counters that stays valid after the injector moved
/// into a stack (cloning it shares the counters).
#[derive(Debug, Clone, Default)]
pub struct FaultCounters(Arc<[DirectionCounters; 2]>);

impl FaultCounters {
    /// The counters now.
    pub fn get(&self) -> FaultStats {
        FaultStats { rx: self.0[Dir::Rx as usize].get(), tx: self.0[Dir::Tx as usize].get() }
    }

    fn of(&self, dir: Dir) -> &DirectionCounters {
        &self.0[dir as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Rx = 0,
    Tx = 1,
}

/// SplitMix64: tiny, fast, and good enough to pick packets; any seed (0 too) works.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `pct` percent.
    fn chance(&mut self, pct: f64) -> bool {
        if pct <= 0.0 {
            return false;
        }
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        unit * 100.0 < pct
    }

    /// A number in `0..n` (`n` > 0); the modulo bias is irrelevant here.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn os_seed() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness at all: the clock still varies between runs.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        return t.as_nanos() as u64;
    }
    u64::from_ne_bytes(bytes)
}

/// What to do with one packet.
#[derive(Debug, Clone, Copy, Default)]
struct Plan {
    drop: bool,
    corrupt: bool,
    hold: bool,
    duplicate: bool,
}

/// Packets of one direction the injector keeps.
#[derive(Debug, Default)]
struct Queues {
    /// To be delivered now, in order (duplicates, released held packets).
    ready: VecDeque<Vec<u8>>,
    /// Held back, with the time they are released at the latest.
    held: VecDeque<(Instant, Vec<u8>)>,
}

/// What the timerfd is set to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Armed {
    Off,
    /// Expired already: something is ready.
    Now,
    At(Instant),
}

struct State {
    rx_faults: Faults,
    tx_faults: Faults,
    corruption: Corruption,
    max_held: usize,
    hold: smoltcp::time::Duration,
    rng: Rng,
    queues: [Queues; 2],
    timer: TimerFd,
    armed: Armed,
    counters: FaultCounters,
}

impl State {
    fn faults(&self, dir: Dir) -> Faults {
        match dir {
            Dir::Rx => self.rx_faults,
            Dir::Tx => self.tx_faults,
        }
    }

    fn queues(&mut self, dir: Dir) -> &mut Queues {
        &mut self.queues[dir as usize]
    }

    /// Decides the fate of the next packet in `dir`, and counts it.
    fn plan(&mut self, dir: Dir) -> Plan {
        let faults = self.faults(dir);
        let counters = self.counters.clone();
        let counters = counters.of(dir);
        bump(&counters.packets);
        if self.rng.chance(faults.drop_pct) {
            bump(&counters.dropped);
            return Plan { drop: true, ..Plan::default() };
        }
        let corrupt = self.rng.chance(faults.corrupt_pct);
        let room_to_hold = self.queues[dir as usize].held.len() < self.max_held;
        let hold = self.rng.chance(faults.reorder_pct) && room_to_hold;
        let room_for_copy = self.queues[dir as usize].ready.len() < READY_LIMIT;
        let duplicate = !hold && self.rng.chance(faults.duplicate_pct) && room_for_copy;
        if hold {
            bump(&counters.reordered);
        }
        if duplicate {
            bump(&counters.duplicated);
        }
        Plan { drop: false, corrupt, hold, duplicate }
    }

    /// Changes one byte of `packet` (see [`Corruption`]).
    fn corrupt(&mut self, dir: Dir, packet: &mut [u8]) {
        if packet.is_empty() {
            return;
        }
        let start = match self.corruption {
            Corruption::Payload => payload_offset(packet).filter(|&at| at < packet.len()).unwrap_or(0),
            Corruption::Anywhere => 0,
        };
        let index = start + self.rng.below(packet.len() - start);
        let flip = (self.rng.below(255) + 1) as u8;
        if let Some(byte) = packet.get_mut(index) {
            *byte ^= flip;
            bump(&self.counters.of(dir).corrupted);
        }
    }

    /// Holds `packet` back until the next packet in `dir` or `now + hold`.
    fn hold(&mut self, dir: Dir, packet: Vec<u8>, now: Instant) {
        let until = now + self.hold;
        self.queues(dir).held.push_back((until, packet));
    }

    /// A packet was delivered in `dir`: what was held back goes right after it.
    fn delivered(&mut self, dir: Dir) {
        let queues = self.queues(dir);
        queues.ready.extend(queues.held.drain(..).map(|(_, packet)| packet));
    }

    /// Moves held packets whose time is up to the ready queues.
    fn release_due(&mut self, now: Instant) {
        for dir in [Dir::Rx, Dir::Tx] {
            let counters = self.counters.clone();
            let queues = self.queues(dir);
            while queues.held.front().is_some_and(|&(until, _)| until <= now + TIMER_SLACK) {
                if let Some((_, packet)) = queues.held.pop_front() {
                    queues.ready.push_back(packet);
                    bump(&counters.of(dir).released_by_timer);
                }
            }
        }
    }

    /// Applies the plan for a packet arriving from the inner device.
    fn arrive(&mut self, mut packet: Vec<u8>, now: Instant) {
        let plan = self.plan(Dir::Rx);
        if plan.drop {
            return;
        }
        if plan.corrupt {
            self.corrupt(Dir::Rx, &mut packet);
        }
        if plan.hold {
            self.hold(Dir::Rx, packet, now);
            return;
        }
        let queues = self.queues(Dir::Rx);
        if plan.duplicate {
            queues.ready.push_back(packet.clone());
        }
        queues.ready.push_back(packet);
        self.delivered(Dir::Rx);
    }

    /// Sets the timer so the caller's `poll` wakes when there is something to deliver:
    /// at once if a packet is ready, at the earliest release time if one is held.
    fn rearm(&mut self, now: Instant, retry: bool) {
        let ready = self.queues.iter().any(|q| !q.ready.is_empty());
        let earliest = self.queues.iter().filter_map(|q| q.held.front().map(|&(until, _)| until)).min();
        let want = match (ready, earliest) {
            (true, _) if retry => Armed::At(now + RETRY),
            (true, _) => Armed::Now,
            (false, Some(until)) => Armed::At(until),
            (false, None) => Armed::Off,
        };
        if want == self.armed {
            return;
        }
        let result = match want {
            Armed::Off => self.timer.unset(),
            Armed::Now => self.set_timer(Duration::from_nanos(1)),
            // smoltcp's `Instant - Instant` is the absolute difference: check the order.
            Armed::At(until) if until <= now => self.set_timer(Duration::from_nanos(1)),
            Armed::At(until) => {
                // Round up to whole microseconds: early wake-ups only cost another round.
                let micros = (until - now).total_micros().saturating_add(1);
                self.set_timer(Duration::from_micros(micros))
            }
        };
        // A timerfd with valid arguments does not fail; if it ever did, the next call
        // tries again, and packets are still released by the next packet.
        self.armed = if result.is_ok() { want } else { Armed::Off };
    }

    fn set_timer(&self, after: Duration) -> nix::Result<()> {
        // A zero value would disarm the timer instead of firing it.
        let after = after.max(Duration::from_nanos(1));
        self.timer.set(Expiration::OneShot(TimeSpec::from_duration(after)), TimerSetTimeFlags::empty())
    }
}

/// Where the IP payload starts, if `packet` is IPv4 or IPv6.
fn payload_offset(packet: &[u8]) -> Option<usize> {
    let first = *packet.first()?;
    match first >> 4 {
        4 => Some(usize::from(first & 0x0f) * 4),
        6 => Some(40),
        _ => None,
    }
}

/// Sends the ready transmit queue through `inner` while it has room. Returns whether
/// something had to stay (the inner device had no token).
fn flush<D: Device>(inner: &mut D, queues: &mut Queues, now: Instant) -> bool {
    while !queues.ready.is_empty() {
        let Some(token) = inner.transmit(now) else { return true };
        if let Some(packet) = queues.ready.pop_front() {
            phy::TxToken::consume(token, packet.len(), |buf| buf.copy_from_slice(&packet));
        }
    }
    false
}

/// Loses, damages, duplicates and reorders packets; see the [module docs](self).
pub struct FaultInjector<D> {
    inner: D,
    state: RefCell<State>,
    seed: u64,
    /// Watches the inner device's `wait_fd` and the timer; this is our `wait_fd`.
    epoll: Epoll,
}

impl<D: Link> FaultInjector<D> {
    /// Wraps `inner`. Fails only if the epoll instance or timerfd cannot be created
    /// (out of file descriptors). `inner`'s `wait_fd` must stay the same fd for its
    /// lifetime, as it does for every ustack device.
    pub fn new(mut inner: D, config: FaultConfig) -> io::Result<FaultInjector<D>> {
        // A damaged frame must carry the checksum of the undamaged one.
        if config.tx.corrupt_pct > 0.0 {
            inner.disable_tx_offloads();
        }
        let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC)?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        // Level-triggered: readable for as long as either has something, like the fd itself.
        epoll.add(inner.wait_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 0))?;
        epoll.add(timer.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 1))?;
        let seed = config.seed.unwrap_or_else(os_seed);
        let state = State {
            rx_faults: config.rx.normalized(),
            tx_faults: config.tx.normalized(),
            corruption: config.corruption,
            max_held: config.max_held.clamp(1, MAX_HELD_LIMIT),
            hold: smoltcp::time::Duration::from(config.hold),
            rng: Rng(seed),
            queues: [Queues::default(), Queues::default()],
            timer,
            armed: Armed::Off,
            counters: FaultCounters::default(),
        };
        Ok(FaultInjector { inner, state: RefCell::new(state), seed, epoll })
    }
}

impl<D> FaultInjector<D> {
    /// The seed of the random choices (the configured one, or the one taken from the OS).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// A handle on the counters, valid after the injector moved into a stack.
    pub fn counters(&self) -> FaultCounters {
        self.state.borrow().counters.clone()
    }

    /// The counters now.
    pub fn stats(&self) -> FaultStats {
        self.state.borrow().counters.get()
    }

    /// The wrapped device. Using it directly bypasses the injector.
    pub fn get_ref(&self) -> &D {
        &self.inner
    }

    /// The wrapped device, mutably. Using it directly bypasses the injector.
    pub fn get_mut(&mut self) -> &mut D {
        &mut self.inner
    }

    /// Unwraps the device; packets the injector still held are lost.
    pub fn into_inner(self) -> D {
        self.inner
    }
}

impl<D: Device> Device for FaultInjector<D> {
    type RxToken<'a>
        = OwnedRxToken
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a, D::TxToken<'a>>
    where
        Self: 'a;

    fn receive(&mut self, now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let state = self.state.get_mut();
        state.release_due(now);
        let stuck = flush(&mut self.inner, state.queues(Dir::Tx), now);
        for _ in 0..MAX_PULL {
            if !state.queues(Dir::Rx).ready.is_empty() {
                break;
            }
            let Some((rx, _)) = self.inner.receive(now) else { break };
            let packet = phy::RxToken::consume(rx, |bytes| bytes.to_vec());
            state.arrive(packet, now);
        }
        let packet = state.queues(Dir::Rx).ready.pop_front();
        state.rearm(now, stuck);
        let packet = packet?;
        // No transmit token means a reply through this pair would be lost, as on a full link.
        let token = self.inner.transmit(now);
        Some((OwnedRxToken(packet), TxToken { token, state: &self.state, now }))
    }

    fn transmit(&mut self, now: Instant) -> Option<Self::TxToken<'_>> {
        let state = self.state.get_mut();
        state.release_due(now);
        let stuck = flush(&mut self.inner, state.queues(Dir::Tx), now);
        state.rearm(now, stuck);
        if stuck {
            // Queued packets go first; smoltcp keeps this one until there is room.
            return None;
        }
        let token = self.inner.transmit(now)?;
        Some(TxToken { token: Some(token), state: &self.state, now })
    }

    /// The inner device's, but a device that vouches for received checksums (a TUN with
    /// offloads) cannot vouch for frames damaged after it: with corruption on the way in,
    /// smoltcp verifies them again.
    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = self.inner.capabilities();
        if self.state.borrow().rx_faults.corrupt_pct > 0.0 {
            for checksum in [&mut caps.checksum.tcp, &mut caps.checksum.udp] {
                *checksum = if checksum.tx() { phy::Checksum::Both } else { phy::Checksum::Rx };
            }
        }
        caps
    }
}

impl<D: Link> Link for FaultInjector<D> {
    fn disable_tx_offloads(&mut self) {
        self.inner.disable_tx_offloads();
    }

    /// Readable when the inner device is, or when a packet the injector kept is due.
    fn wait_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }

    fn take_error(&mut self) -> Option<io::Error> {
        self.inner.take_error()
    }
}

/// Transmits one packet through the inner device, faults applied.
#[doc(hidden)]
pub struct TxToken<'a, T> {
    /// None: the inner device had no room, and the packet is lost.
    token: Option<T>,
    state: &'a RefCell<State>,
    now: Instant,
}

impl<T: phy::TxToken> phy::TxToken for TxToken<'_, T> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let state = self.state;
        // No room in the inner device (a reply paired with a received packet): lost.
        let Some(token) = self.token else { return f(&mut vec![0; len]) };
        let plan = state.borrow_mut().plan(Dir::Tx);
        if plan.drop {
            // The packet is built and forgotten; the inner token goes unused.
            return f(&mut vec![0; len]);
        }
        if plan.hold {
            let mut packet = vec![0; len];
            let result = f(&mut packet);
            let mut state = state.borrow_mut();
            if plan.corrupt {
                state.corrupt(Dir::Tx, &mut packet);
            }
            state.hold(Dir::Tx, packet, self.now);
            state.rearm(self.now, false);
            return result;
        }
        let result = token.consume(len, |buf| {
            let result = f(buf);
            let mut state = state.borrow_mut();
            if plan.corrupt {
                state.corrupt(Dir::Tx, buf);
            }
            if plan.duplicate {
                state.queues(Dir::Tx).ready.push_back(buf.to_vec());
            }
            result
        });
        let mut state = state.borrow_mut();
        state.delivered(Dir::Tx);
        state.rearm(self.now, false);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Wire;

    fn now(ms: i64) -> Instant {
        Instant::from_millis(ms)
    }

    fn send(end: &mut impl Device, byte: u8, at: Instant) {
        if let Some(token) = end.transmit(at) {
            phy::TxToken::consume(token, 20, |buf| buf.fill(byte));
        }
    }

    fn recv(end: &mut impl Device, at: Instant) -> Option<u8> {
        let (rx, _) = end.receive(at)?;
        phy::RxToken::consume(rx, |buf| buf.first().copied())
    }

    /// Whether `fd` becomes readable within `ms` milliseconds.
    fn readable(fd: BorrowedFd<'_>, ms: u16) -> bool {
        let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)).unwrap_or(0) == 1
    }

    #[test]
    fn without_faults_packets_pass_unchanged_and_in_order() {
        let (a, mut b) = Wire::pair(1500).unwrap();
        let mut a = FaultInjector::new(a, FaultConfig::default()).unwrap();
        for i in 0..10 {
            send(&mut a, i, now(0));
        }
        assert!((0..10).all(|i| recv(&mut b, now(0)) == Some(i)));
        assert_eq!(a.stats().tx.packets, 10);
    }

    #[test]
    fn everything_dropped_at_100_percent() {
        let (a, mut b) = Wire::pair(1500).unwrap();
        let mut a = FaultInjector::new(a, FaultConfig::both(Faults::lossy(100.0, 0.0))).unwrap();
        send(&mut a, 1, now(0));
        assert_eq!(recv(&mut b, now(0)), None);
        assert_eq!(a.stats().tx.dropped, 1);
    }

    #[test]
    fn a_reordered_packet_comes_after_the_next_one() {
        let (mut a, b) = Wire::pair(1500).unwrap();
        let config = FaultConfig::rx_only(Faults { reorder_pct: 100.0, ..Faults::NONE }).with_seed(1);
        let mut b = FaultInjector::new(b, FaultConfig { max_held: 1, ..config }).unwrap();
        send(&mut a, 1, now(0));
        send(&mut a, 2, now(0));
        assert_eq!(recv(&mut b, now(0)), Some(2));
        assert_eq!(recv(&mut b, now(0)), Some(1));
        assert_eq!(b.stats().rx.reordered, 1);
    }

    #[test]
    fn a_held_packet_wakes_the_poller_and_leaves_after_the_hold() {
        let (a, mut b) = Wire::pair(1500).unwrap();
        let config = FaultConfig {
            hold: Duration::from_millis(30),
            ..FaultConfig::tx_only(Faults { reorder_pct: 100.0, ..Faults::NONE })
        };
        let mut a = FaultInjector::new(a, config).unwrap();
        let start = std::time::Instant::now();
        send(&mut a, 7, now(0));
        assert!(!readable(a.wait_fd(), 0), "nothing is due yet");
        assert!(readable(a.wait_fd(), 1000), "the timer wakes the poller");
        assert!(start.elapsed() >= Duration::from_millis(29));
        assert_eq!(recv(&mut b, now(0)), None, "still held until the injector is called");
        assert_eq!(recv(&mut a, now(30)), None, "a call after the hold sends it out");
        assert_eq!(recv(&mut b, now(30)), Some(7));
        assert!(!readable(a.wait_fd(), 0), "nothing left: the timer is off");
        assert_eq!(a.stats().tx.released_by_timer, 1);
    }

    #[test]
    fn duplicates_arrive_twice() {
        let (a, mut b) = Wire::pair(1500).unwrap();
        let mut a =
            FaultInjector::new(a, FaultConfig::tx_only(Faults { duplicate_pct: 100.0, ..Faults::NONE })).unwrap();
        send(&mut a, 5, now(0));
        assert!(readable(a.wait_fd(), 100), "the copy is due at once");
        assert_eq!(recv(&mut a, now(0)), None);
        assert_eq!(recv(&mut b, now(0)), Some(5));
        assert_eq!(recv(&mut b, now(0)), Some(5));
        assert_eq!(recv(&mut b, now(0)), None);
    }

    #[test]
    fn payload_corruption_spares_the_ip_header() {
        let (a, mut b) = Wire::pair(1500).unwrap();
        let mut a = FaultInjector::new(a, FaultConfig::tx_only(Faults::lossy(0.0, 100.0)).with_seed(9)).unwrap();
        let mut packet = [0u8; 60];
        packet[0] = 0x45;
        for _ in 0..50 {
            if let Some(token) = a.transmit(now(0)) {
                phy::TxToken::consume(token, packet.len(), |buf| buf.copy_from_slice(&packet));
            }
            let (rx, _) = b.receive(now(0)).unwrap();
            let got = phy::RxToken::consume(rx, |buf| buf.to_vec());
            assert_eq!(got[..20], packet[..20]);
            assert_eq!(got.iter().zip(&packet).filter(|(x, y)| x != y).count(), 1);
        }
        assert_eq!(a.stats().tx.corrupted, 50);
    }

    #[test]
    fn the_same_seed_makes_the_same_choices() {
        let run = |seed| {
            let (a, mut b) = Wire::pair(1500).unwrap();
            let mut a = FaultInjector::new(a, FaultConfig::tx_only(Faults::lossy(50.0, 0.0)).with_seed(seed)).unwrap();
            (0..64).for_each(|i| send(&mut a, i, now(0)));
            std::iter::from_fn(|| recv(&mut b, now(0))).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn held_packets_are_bounded() {
        let (mut a, b) = Wire::pair(1500).unwrap();
        let config = FaultConfig { max_held: 3, ..FaultConfig::rx_only(Faults { reorder_pct: 100.0, ..Faults::NONE }) };
        let mut b = FaultInjector::new(b, config).unwrap();
        (0..5).for_each(|i| send(&mut a, i, now(0)));
        // 0, 1, 2 are held; 3 passes (no room) and releases them after it.
        let got: Vec<_> = std::iter::from_fn(|| recv(&mut b, now(0))).collect();
        assert_eq!(got, [3, 0, 1, 2]);
        assert_eq!(recv(&mut b, now(100)), Some(4), "the last one leaves on the timer");
    }
}
