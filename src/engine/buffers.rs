//! TCP socket buffers in memory ustack maps itself, so that a connection costs the memory
//! it uses, not the buffer sizes it was given.
//!
//! smoltcp takes a socket's buffers whole when the socket is made and cannot grow them,
//! so each connection is given its full receive and send buffers up front: the receive
//! buffer at the most its autotuned window may grow to (6 MiB by default, see
//! [`super::rcv_window`]), the send buffer likewise (4 MiB, [`super::snd_buffer`]). Allocated on the heap, they would
//! cost that much per connection as soon as the heap reuses memory (calloc then clears
//! it, touching every page). Here each connection gets a slot of anonymous memory, mapped
//! `MAP_NORESERVE`: a page becomes resident only when data passes through it, and when
//! the connection is gone its pages go back to the kernel (`MADV_DONTNEED`), so the next
//! connection in the slot starts from untouched, zero pages again. An idle connection
//! costs a few pages, as in Linux, whose socket buffers hold only the data in flight.
//!
//! smoltcp's rings never go back to their start, so data passing through a connection
//! touches every page of its buffers in turn; once a buffer has been idle a while with
//! nothing in it, its pages are given back ([`super::idle_pages`]).
//!
//! A slot holds the send buffer first, then the receive buffer. With the default sizes
//! each buffer's first page lies in a 2 MiB region of its own, so a connection that moves
//! data each way costs two page-table pages (not in VmRSS), where 64 KiB buffers shared
//! one among 16 connections.

use std::ptr::NonNull;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;

use super::HashMap;

/// Slots mapped at once when the pool runs out.
const SLOTS_PER_CHUNK: usize = 16;

/// One of a socket's two buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buffer {
    Receive,
    Send,
}

/// The memory of one socket's two buffers: send, then receive.
#[derive(Debug)]
pub struct Slot(NonNull<u8>);

/// Hands out buffer slots and takes them back; see the [module docs](self).
///
/// A slot's memory is given to smoltcp as `&'static mut [u8]`; it is `'static` only in
/// the sense that it lives as long as the pool. `Engine` declares its `SocketSet` before
/// its pool, so its sockets are dropped before the pool unmaps their memory.
#[derive(Debug)]
pub struct BufferPool {
    /// Bytes of each receive buffer, as configured.
    rx_size: usize,
    /// Bytes of each send buffer, as configured.
    tx_size: usize,
    /// Bytes of the send buffer, rounded up to whole pages: where the receive buffer starts.
    tx_stride: usize,
    /// Bytes of a slot: both buffers, each rounded up to whole pages.
    slot_len: usize,
    chunks: Vec<(NonNull<u8>, usize)>,
    free: Vec<Slot>,
    used: HashMap<SocketHandle, Slot>,
}

// SAFETY: the pool owns its mappings outright; the raw pointers are not shared with
// anything that outlives it or lives on another thread without the pool (the stack's
// mutex guards both the pool and the sockets using its memory).
unsafe impl Send for BufferPool {}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page).ok().filter(|&p| p > 0).unwrap_or(4096)
}

impl BufferPool {
    /// A pool for sockets with `rx_size`-byte receive and `tx_size`-byte send buffers.
    pub fn new(rx_size: usize, tx_size: usize) -> BufferPool {
        let page = page_size();
        let pages = |size: usize| size.max(1).div_ceil(page) * page;
        let tx_stride = pages(tx_size);
        let slot_len = tx_stride + pages(rx_size);
        BufferPool {
            rx_size,
            tx_size,
            tx_stride,
            slot_len,
            chunks: Vec::new(),
            free: Vec::new(),
            used: HashMap::default(),
        }
    }

    /// A new smoltcp TCP socket with full-size buffers in a slot of the pool; see
    /// [`BufferPool::tcp_socket_sized`].
    #[cfg(test)]
    pub fn tcp_socket(&mut self) -> Option<(tcp::Socket<'static>, Slot)> {
        self.tcp_socket_sized(self.rx_size, self.tx_size)
    }

    /// Bytes of receive buffer a slot holds: the most a socket's can be.
    pub fn rx_size(&self) -> usize {
        self.rx_size
    }

    /// Bytes of send buffer a slot holds: the most a socket's can be.
    pub fn tx_size(&self) -> usize {
        self.tx_size
    }

    /// A new smoltcp TCP socket with a `rx`-byte receive and a `tx`-byte send buffer (at
    /// most [`BufferPool::rx_size`] and [`BufferPool::tx_size`]: SO_RCVBUF and SO_SNDBUF)
    /// in a slot of the pool, and the slot; None if no memory could be mapped. The slot
    /// goes back with [`BufferPool::register`] once the socket is in a socket set, or with
    /// [`BufferPool::give_back`] if it never is.
    pub fn tcp_socket_sized(&mut self, rx: usize, tx: usize) -> Option<(tcp::Socket<'static>, Slot)> {
        let (rx, tx) = (rx.min(self.rx_size), tx.min(self.tx_size));
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.grow()?;
                self.free.pop()?
            }
        };
        let base = slot.0.as_ptr();
        // SAFETY: the slot spans `slot_len` bytes of a live mapping, and nothing else
        // refers to it until it is released, which only happens after the socket made
        // here is dropped (`give_back` takes the socket; `release` requires it). The
        // mapping outlives the socket: see the type's docs.
        let (rx, tx) = unsafe {
            (std::slice::from_raw_parts_mut(base.add(self.tx_stride), rx), std::slice::from_raw_parts_mut(base, tx))
        };
        Some((tcp::Socket::new(tcp::SocketBuffer::new(rx), tcp::SocketBuffer::new(tx)), slot))
    }

    /// Notes that socket `handle` uses `slot`, to be released when it is removed.
    pub fn register(&mut self, handle: SocketHandle, slot: Slot) {
        self.used.insert(handle, slot);
    }

    /// Takes back the slot of a socket that never made it into a socket set.
    pub fn give_back(&mut self, socket: tcp::Socket<'static>, slot: Slot) {
        drop(socket);
        // SAFETY: the only socket using the slot was just dropped.
        unsafe { self.release(slot) }
    }

    /// Takes back the slot of socket `handle`, if it has one. The socket must have been
    /// removed from its set and dropped.
    ///
    /// # Safety
    /// No socket may still use the slot.
    pub unsafe fn release_for(&mut self, handle: SocketHandle) {
        if let Some(slot) = self.used.remove(&handle) {
            // SAFETY: passed on to the caller.
            unsafe { self.release(slot) }
        }
    }

    /// Where `slot`'s `buffer` lies, in whole pages.
    fn region(&self, slot: &Slot, buffer: Buffer) -> (*mut u8, usize) {
        match buffer {
            // SAFETY: `tx_stride` is within the slot, whose mapping is live.
            Buffer::Receive => (unsafe { slot.0.as_ptr().add(self.tx_stride) }, self.slot_len - self.tx_stride),
            Buffer::Send => (slot.0.as_ptr(), self.tx_stride),
        }
    }

    /// Gives back the pages of socket `handle`'s `buffer`: it reads as zeros after.
    ///
    /// # Safety
    /// The buffer must hold no data smoltcp will read: for the receive buffer, nothing
    /// queued for the application and nothing received out of order; for the send buffer,
    /// nothing unsent or unacknowledged.
    pub unsafe fn trim(&mut self, handle: SocketHandle, buffer: Buffer) {
        if let Some(slot) = self.used.get(&handle) {
            let (at, len) = self.region(slot, buffer);
            // SAFETY: the region lies within the slot's mapping; the caller vouches that
            // nothing in it is still to be read. Should this fail, the pages stay.
            unsafe { libc::madvise(at.cast(), len, libc::MADV_DONTNEED) };
        }
    }

    /// Resident pages of socket `handle`'s `buffer`.
    #[cfg(test)]
    pub fn resident_pages(&self, handle: SocketHandle, buffer: Buffer) -> usize {
        let (at, len) = self.region(&self.used[&handle], buffer);
        tests::resident(at, len)
    }

    /// Slots in use.
    #[cfg(test)]
    pub fn in_use(&self) -> usize {
        self.used.len()
    }

    /// Address space mapped for buffers, in bytes (resident only where touched).
    #[cfg(test)]
    pub fn mapped(&self) -> usize {
        self.chunks.iter().map(|&(_, len)| len).sum()
    }

    /// # Safety
    /// No socket may still use the slot.
    unsafe fn release(&mut self, slot: Slot) {
        // SAFETY: the slot lies in one of our mappings. Should this fail, the pages keep
        // old data, which is harmless: smoltcp never reads a buffer beyond what it wrote.
        unsafe { libc::madvise(slot.0.as_ptr().cast(), self.slot_len, libc::MADV_DONTNEED) };
        self.free.push(slot);
    }

    fn grow(&mut self) -> Option<()> {
        let len = SLOTS_PER_CHUNK.checked_mul(self.slot_len)?;
        // SAFETY: a fresh anonymous private mapping, owned by the pool from here on.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            log::warn!(target: "ustack", "no memory for socket buffers: {}", std::io::Error::last_os_error());
            return None;
        }
        let base = NonNull::new(base.cast::<u8>())?;
        self.chunks.push((base, len));
        // SAFETY: each offset stays within the mapping just made.
        self.free.extend((0..SLOTS_PER_CHUNK).rev().map(|i| Slot(unsafe { base.add(i * self.slot_len) })));
        Some(())
    }
}

impl Drop for BufferPool {
    fn drop(&mut self) {
        for &(base, len) in &self.chunks {
            // SAFETY: our own mapping; no socket uses it any more (see the type's docs).
            unsafe { libc::munmap(base.as_ptr().cast(), len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::iface::SocketSet;

    #[test]
    fn slots_are_reused_and_come_back_zeroed() {
        let mut pool = BufferPool::new(10_000, 10_000);
        let mut sockets = SocketSet::new(Vec::new());
        let (socket, slot) = pool.tcp_socket().unwrap();
        assert_eq!((socket.recv_capacity(), socket.send_capacity()), (10_000, 10_000));
        let first = slot.0;
        // SAFETY (test): write through the slot as smoltcp would, then release it.
        unsafe { first.as_ptr().write_bytes(0xab, pool.slot_len) };
        let handle = sockets.add(socket);
        pool.register(handle, slot);
        assert_eq!(pool.in_use(), 1);
        sockets.remove(handle);
        unsafe { pool.release_for(handle) };
        assert_eq!(pool.in_use(), 0);
        let (socket, slot) = pool.tcp_socket().unwrap();
        assert_eq!(slot.0, first, "the last slot released is the next one handed out");
        let bytes = unsafe { std::slice::from_raw_parts(first.as_ptr(), pool.slot_len) };
        assert!(bytes.iter().all(|&b| b == 0), "released pages come back as zero pages");
        pool.give_back(socket, slot);
        assert_eq!(pool.mapped(), SLOTS_PER_CHUNK * pool.slot_len);
    }

    #[test]
    fn a_pool_grows_by_chunks() {
        let mut pool = BufferPool::new(4096, 4096);
        let made: Vec<_> = (0..SLOTS_PER_CHUNK + 1).map(|_| pool.tcp_socket().unwrap()).collect();
        assert_eq!(pool.chunks.len(), 2);
        for (socket, slot) in made {
            pool.give_back(socket, slot);
        }
        assert_eq!(pool.free.len(), 2 * SLOTS_PER_CHUNK);
    }

    /// Pages of `len` bytes at `at` that are resident.
    pub(super) fn resident(at: *mut u8, len: usize) -> usize {
        let page = page_size();
        let mut vec = vec![0u8; len.div_ceil(page)];
        // SAFETY (test): `at` is page-aligned and within a live mapping of `len` bytes.
        assert_eq!(unsafe { libc::mincore(at.cast(), len, vec.as_mut_ptr()) }, 0);
        vec.iter().filter(|&&b| b & 1 != 0).count()
    }

    #[test]
    fn trimming_gives_back_the_receive_pages_and_leaves_the_send_buffer_alone() {
        let mut pool = BufferPool::new(1024 * 1024, 64 * 1024);
        let mut sockets = SocketSet::new(Vec::new());
        let (socket, slot) = pool.tcp_socket().unwrap();
        assert_eq!((socket.recv_capacity(), socket.send_capacity()), (1024 * 1024, 64 * 1024));
        let base = slot.0.as_ptr();
        let handle = sockets.add(socket);
        pool.register(handle, slot);
        // SAFETY (test): the slot is ours; write both buffers through, as data would.
        unsafe { base.write_bytes(0xcd, pool.slot_len) };
        let (tx_pages, rx_len) = (pool.tx_stride / page_size(), pool.slot_len - pool.tx_stride);
        assert_eq!(resident(base, pool.slot_len), tx_pages + rx_len / page_size());
        unsafe { pool.trim(handle, Buffer::Receive) };
        assert_eq!(resident(base, pool.slot_len), tx_pages, "only the send buffer's pages stay");
        let rx = unsafe { std::slice::from_raw_parts(base.add(pool.tx_stride), rx_len) };
        assert!(rx.iter().all(|&b| b == 0));
        let tx = unsafe { std::slice::from_raw_parts(base, pool.tx_stride) };
        assert!(tx.iter().all(|&b| b == 0xcd));
        sockets.remove(handle);
        unsafe { pool.release_for(handle) };
    }
}
