//! Handing smoltcp one socket at a time.
//!
//! smoltcp's `Interface` looks at every socket of the set it is given: for every received
//! packet (`Socket::accepts`, until one matches) and for every egress and timer poll
//! (`dispatch`, `poll_at`). With thousands of connections that made each packet and each
//! round cost O(connections). ustack's demux already knows which socket a packet is for,
//! and ustack knows which sockets were touched or have a timer due, so smoltcp never sees
//! the set of all sockets: the one socket in question is swapped into a set of its own
//! (a few hundred bytes moved), and smoltcp works on that. It stays there until smoltcp
//! needs another one, so a run of packets for one connection — bulk transfer — costs no
//! swapping at all; [`OneSocket::get`] finds a socket wherever it is.
//!
//! A packet for no socket goes to the set with only placeholders in it, where smoltcp
//! answers as it would have: RST for TCP, port unreachable for UDP, echo replies for ping.
//!
//! The set of all sockets is [`Sockets`]: smoltcp's set, grown by an eighth at a time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use std::ptr::NonNull;

use smoltcp::iface::{SocketHandle, SocketSet, SocketStorage};
use smoltcp::socket::{AnySocket, Socket, tcp, udp};
use smoltcp::time::Instant;

use super::HashMap;

/// A socket of the stack's set, with its type (smoltcp's typed accessors panic on a
/// mismatch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Which {
    Tcp(SocketHandle),
    Udp(SocketHandle),
}

impl Which {
    fn handle(self) -> SocketHandle {
        match self {
            Which::Tcp(h) | Which::Udp(h) => h,
        }
    }
}

/// A socket set of one: a TCP and a UDP placeholder, either of which can be swapped for
/// a real socket while smoltcp works on it.
pub struct OneSocket {
    pub set: SocketSet<'static>,
    tcp: SocketHandle,
    udp: SocketHandle,
    /// The socket of the stack's set that is swapped in here now (its place in the stack's
    /// set holds the placeholder).
    current: Option<Which>,
}

/// A TCP socket that stands in for another: closed and unbound, it accepts no packet and
/// sends nothing, and owns no memory.
fn tcp_placeholder() -> tcp::Socket<'static> {
    tcp::Socket::new(tcp::SocketBuffer::new(Vec::new()), tcp::SocketBuffer::new(Vec::new()))
}

/// [`tcp_placeholder`]'s UDP counterpart.
fn udp_placeholder() -> udp::Socket<'static> {
    udp::Socket::new(udp::PacketBuffer::new(Vec::new(), Vec::new()), udp::PacketBuffer::new(Vec::new(), Vec::new()))
}

/// The fewest slots [`Sockets`] adds at a time.
const MIN_GROWTH: usize = 16;

/// The stack's set of every socket, grown by an eighth at a time, in memory of its own.
///
/// smoltcp's set is a `Vec` of slots each as large as a TCP socket (~600 bytes) that it
/// grows by pushing: by doubling, so that at 10,000 connections up to half the slots were
/// empty (~400 bytes per connection: the largest single cost of an idle connection). So
/// the set is lent its slots ([`SlotMap`]) and, when they are all taken, is moved into an
/// eighth more, every socket into the slot of the same handle. Closing a socket frees its
/// slot for the next one, as in smoltcp's own set; the set never shrinks.
///
/// The slots are a memory mapping rather than the heap's: growing by an eighth moves the
/// table some twenty times on the way to 10,000 connections, and each table left behind
/// in the heap stayed resident (the heap keeps what it was given), once earlier large
/// frees had raised glibc's mmap threshold above the table's size — 3.1 KiB of RSS per
/// connection at 10,000 after the bench's other scenarios, 1.6 without them. An unmapped
/// table is given back whatever the heap has seen.
pub struct Sockets {
    /// Borrows `slots`: declared first, so it is dropped first.
    pub set: SocketSet<'static>,
    slots: SlotMap,
    /// Sockets in the set.
    live: usize,
}

impl Sockets {
    pub fn new() -> Sockets {
        Sockets { set: SocketSet::new(Vec::new()), slots: SlotMap::new(0), live: 0 }
    }

    /// Adds `socket` in the first free slot (as smoltcp's set does), growing the set first
    /// if it has none.
    pub fn add<T: AnySocket<'static>>(&mut self, socket: T) -> SocketHandle {
        if self.live == self.slots.len {
            self.grow(self.slots.len + (self.slots.len / 8).max(MIN_GROWTH));
        }
        self.live += 1;
        self.set.add(socket)
    }

    /// Removes socket `handle`, freeing its slot for the next socket.
    pub fn remove(&mut self, handle: SocketHandle) -> Socket<'static> {
        let socket = self.set.remove(handle);
        self.live -= 1;
        socket
    }

    /// Moves every slot into a mapping of `len` slots, each at its own index (a socket's
    /// handle is its slot's index), and lends the set those.
    fn grow(&mut self, len: usize) {
        // The set's borrow of the old slots ends here, before they are moved.
        self.set = SocketSet::new(Vec::new());
        let old = std::mem::replace(&mut self.slots, SlotMap::new(len));
        // SAFETY: the slots do not overlap (two mappings), the new ones are at least as
        // many, and `unmap` lets the old ones go without dropping what was moved out.
        unsafe {
            std::ptr::copy_nonoverlapping(old.base.as_ptr(), self.slots.base.as_ptr(), old.len);
            old.unmap();
        }
        // SAFETY: `self.slots` outlives `self.set` (it is only replaced here, after the set
        // has let go of it, and dropped after it), and nothing else refers to its slots.
        self.set = SocketSet::new(unsafe { self.slots.lend() });
    }
}

/// Slots for smoltcp's socket set, in an anonymous memory mapping of their own (see
/// [`Sockets`]): the pages become resident as slots are written, and unmapping gives them
/// back.
struct SlotMap {
    base: NonNull<SocketStorage<'static>>,
    len: usize,
}

// SAFETY: the mapping is owned like a `Box<[SocketStorage]>`, which is Send.
unsafe impl Send for SlotMap {}

impl SlotMap {
    /// `len` free slots. Memory running out is the heap's answer too: abort.
    fn new(len: usize) -> SlotMap {
        if len == 0 {
            return SlotMap { base: NonNull::dangling(), len };
        }
        // SAFETY: a fresh private anonymous mapping, checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                Self::bytes(len),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            std::alloc::handle_alloc_error(Self::layout(len));
        }
        let base = NonNull::new(base.cast::<SocketStorage<'static>>()).expect("mmap does not return null on success");
        for i in 0..len {
            // SAFETY: within the mapping, which is page-aligned and so aligned for a slot.
            unsafe { base.add(i).write(SocketStorage::EMPTY) };
        }
        SlotMap { base, len }
    }

    fn layout(len: usize) -> std::alloc::Layout {
        std::alloc::Layout::array::<SocketStorage<'static>>(len).expect("a socket table that fits in memory")
    }

    fn bytes(len: usize) -> usize {
        Self::layout(len).size()
    }

    /// The slots, for a set.
    ///
    /// # Safety
    /// The caller keeps the borrow from outliving `self`, and makes no other reference to
    /// the slots while it lasts.
    unsafe fn lend(&mut self) -> &'static mut [SocketStorage<'static>] {
        // SAFETY: `len` initialized slots at `base` (or none, dangling), per the caller.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr(), self.len) }
    }

    /// Unmaps the slots without dropping them (they were moved elsewhere).
    ///
    /// # Safety
    /// Nothing refers to the slots, and what they hold is owned elsewhere now.
    unsafe fn unmap(self) {
        if self.len > 0 {
            // SAFETY: the mapping made by `new`, per the caller unused.
            unsafe { libc::munmap(self.base.as_ptr().cast(), Self::bytes(self.len)) };
        }
        std::mem::forget(self);
    }
}

impl Drop for SlotMap {
    fn drop(&mut self) {
        // SAFETY: `Sockets` drops its set, the only borrower, first; the slots are
        // initialized, and dropped once each.
        unsafe {
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(self.base.as_ptr(), self.len));
            if self.len > 0 {
                libc::munmap(self.base.as_ptr().cast(), Self::bytes(self.len));
            }
        }
    }
}

impl OneSocket {
    pub fn new() -> OneSocket {
        let mut set = SocketSet::new(Vec::with_capacity(2));
        let tcp = set.add(tcp_placeholder());
        let udp = set.add(udp_placeholder());
        OneSocket { set, tcp, udp, current: None }
    }

    /// Runs `f` on a set holding socket `which` of `sockets` (and a placeholder of the
    /// other type), or only placeholders for None. `which` must be a live socket of its
    /// type in `sockets`.
    pub fn with<R>(
        &mut self,
        sockets: &mut SocketSet<'static>,
        which: Option<Which>,
        f: impl FnOnce(&mut SocketSet<'static>) -> R,
    ) -> R {
        self.hold(sockets, which);
        f(&mut self.set)
    }

    /// Makes `which` the socket swapped in, putting the current one back first.
    pub fn hold(&mut self, sockets: &mut SocketSet<'static>, which: Option<Which>) {
        if self.current != which {
            if let Some(current) = self.current {
                self.swap(sockets, current);
            }
            if let Some(which) = which {
                self.swap(sockets, which);
            }
            self.current = which;
        }
    }

    /// Socket `which` of `sockets` (a `T`), wherever it is now.
    pub fn get<'a, T: AnySocket<'static>>(&'a self, sockets: &'a SocketSet<'static>, which: Which) -> &'a T {
        match self.placeholder_of(which) {
            Some(here) => self.set.get(here),
            None => sockets.get(which.handle()),
        }
    }

    pub fn get_mut<'a, T: AnySocket<'static>>(
        &'a mut self,
        sockets: &'a mut SocketSet<'static>,
        which: Which,
    ) -> &'a mut T {
        match self.placeholder_of(which) {
            Some(here) => self.set.get_mut(here),
            None => sockets.get_mut(which.handle()),
        }
    }

    /// Where in `set` socket `which` is, if it is swapped in.
    fn placeholder_of(&self, which: Which) -> Option<SocketHandle> {
        (self.current == Some(which)).then_some(match which {
            Which::Tcp(_) => self.tcp,
            Which::Udp(_) => self.udp,
        })
    }

    fn swap(&mut self, sockets: &mut SocketSet<'static>, which: Which) {
        match which {
            Which::Tcp(h) => {
                std::mem::swap(sockets.get_mut::<tcp::Socket>(h), self.set.get_mut::<tcp::Socket>(self.tcp))
            }
            Which::Udp(h) => {
                std::mem::swap(sockets.get_mut::<udp::Socket>(h), self.set.get_mut::<udp::Socket>(self.udp))
            }
        }
    }
}

/// When each socket next wants smoltcp's attention (its `poll_at`), soonest first.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Which)>>,
    /// The current deadline of each socket that has one; heap entries that disagree are
    /// stale and skipped.
    due: HashMap<Which, Instant>,
}

impl Timers {
    /// Sets (or with None, clears) `which`'s deadline.
    pub fn set(&mut self, which: Which, at: Option<Instant>) {
        match at {
            None => {
                self.due.remove(&which);
            }
            Some(at) => {
                if self.due.insert(which, at) != Some(at) {
                    self.heap.push(Reverse((at, which)));
                }
            }
        }
        // Deadlines that move on every packet leave stale entries behind; rebuild now and
        // then so the heap stays proportional to the sockets.
        if self.heap.len() > 4 * self.due.len() + 1024 {
            self.heap = self.due.iter().map(|(&w, &at)| Reverse((at, w))).collect();
        }
    }

    /// Takes the sockets whose deadline has come into `out`.
    pub fn take_due(&mut self, now: Instant, out: &mut Vec<Which>) {
        while let Some(&Reverse((at, which))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            if self.due.get(&which) == Some(&at) {
                self.due.remove(&which);
                out.push(which);
            }
        }
    }

    /// The soonest deadline, if any (possibly a stale one: waking early is harmless).
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Forgets a socket that is gone.
    pub fn forget(&mut self, which: Which) {
        self.due.remove(&which);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_current_deadlines_come_due() {
        let mut sockets = SocketSet::new(Vec::new());
        let a = Which::Tcp(
            sockets.add(tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 64]), tcp::SocketBuffer::new(vec![0; 64]))),
        );
        let mut timers = Timers::default();
        timers.set(a, Some(Instant::from_millis(10)));
        timers.set(a, Some(Instant::from_millis(30)));
        let mut due = Vec::new();
        timers.take_due(Instant::from_millis(20), &mut due);
        assert!(due.is_empty(), "the 10 ms deadline was replaced");
        assert_eq!(timers.next(), Some(Instant::from_millis(30)));
        timers.take_due(Instant::from_millis(30), &mut due);
        assert_eq!(due, [a]);
        timers.set(a, Some(Instant::from_millis(40)));
        timers.forget(a);
        due.clear();
        timers.take_due(Instant::from_millis(50), &mut due);
        assert!(due.is_empty(), "a forgotten socket never comes due");
    }

    #[test]
    fn growing_the_set_keeps_every_socket_at_its_handle() {
        let mut sockets = Sockets::new();
        let tcp_on = |port: u16| {
            let mut socket = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 64]), tcp::SocketBuffer::new(vec![0; 64]));
            socket.listen(port).unwrap();
            socket
        };
        let udp_on = |port: u16| {
            let mut socket = udp_placeholder();
            socket.bind(port).unwrap();
            socket
        };
        let mut held = Vec::new();
        for port in 1..=200u16 {
            let handle = if port % 3 == 0 {
                Which::Udp(sockets.add(udp_on(port)))
            } else {
                Which::Tcp(sockets.add(tcp_on(port)))
            };
            held.push((handle, port));
        }
        // Free slots here and there, some refilled: the set's slots are not all in use
        // when it next grows.
        for i in (0..held.len()).rev().filter(|i| i % 7 == 0) {
            let (which, _) = held.remove(i);
            sockets.remove(which.handle());
        }
        for port in 1001..=1010u16 {
            held.push((Which::Tcp(sockets.add(tcp_on(port))), port));
        }
        // Enough to grow it several times (by an eighth each).
        for port in 2001..=2400u16 {
            held.push((Which::Tcp(sockets.add(tcp_on(port))), port));
        }
        let slots = sockets.slots.len;
        assert!(slots >= held.len() && slots <= held.len() + held.len() / 8 + MIN_GROWTH, "{slots} slots");
        assert_eq!(sockets.set.iter().count(), held.len());
        for (which, port) in held {
            match which {
                Which::Tcp(h) => assert_eq!(sockets.set.get::<tcp::Socket>(h).listen_endpoint().port, port),
                Which::Udp(h) => assert_eq!(sockets.set.get::<udp::Socket>(h).endpoint().port, port),
            }
        }
    }
}
