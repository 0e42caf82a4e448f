//! A socket on a stack of several shards ([`Stack::sharded`](crate::Stack::sharded)).
//!
//! A TCP listener, and a UDP socket once bound, have a copy on every other shard (its
//! mirrors), bound to the same address, and their port is shared: the device steers each
//! flow to the shard its 4-tuple hashes to (`device::steer`). So calls that take what
//! arrived — accept(), a datagram receive — try every shard's copy, and wait for a round
//! of any shard between tries. A UDP socket sends each flow's datagrams from the shard
//! that flow's datagrams arrive at: the kernel then keeps the flow on that shard's queue
//! (it sends a flow's packets back on the queue it was last written on), and nothing has
//! to be forwarded between shards.
//!
//! What stays on shard 0: the socket itself (its options, timeouts and port), ICMP errors
//! (a connected UDP socket's ECONNREFUSED is reported by shard 0's copy only), and IP
//! fragments, which shard 0 reassembles and delivers to its own copy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Direction, Errno, Mirror, Result, Socket, close_all};
use crate::engine::calls::Blocking;
use crate::engine::{Engine, SockId, Type};
use crate::stack::{Locked, ShardSet, Shared};

/// A socket on one shard: this socket, or one of its copies.
pub(super) type OnShard<'a> = (&'a Arc<Shared>, SockId);

impl Socket {
    /// This socket and its copies `mirrors`, shard 0 first.
    pub(super) fn with_mirrors<'a>(&'a self, mirrors: &'a [Mirror]) -> Vec<OnShard<'a>> {
        std::iter::once((&self.shared, self.id)).chain(mirrors.iter().map(|(s, id)| (s, *id))).collect()
    }

    /// Makes call `f` on the sockets `on` (this socket or its copies, one per shard) in
    /// turn, starting from one that changes with the shards' rounds so that none is left
    /// behind, until one does not say EAGAIN; between rounds of tries, waits for a round
    /// of any shard, as [`Socket::blocking`] waits for one round of its own: at once for a
    /// non-blocking socket (or `dontwait`), up to the socket's timeout for `direction`.
    pub(super) fn on_shards<T>(
        &self,
        set: &ShardSet,
        on: &[OnShard<'_>],
        direction: Direction,
        dontwait: bool,
        mut f: impl FnMut(&Arc<Shared>, &mut Engine, SockId) -> Result<T>,
    ) -> Result<T> {
        let Blocking { nonblocking, read_timeout, write_timeout } = self.call(|l| l.engine.blocking(self.id))?;
        let timeout = match direction {
            Direction::Read => read_timeout,
            Direction::Write => write_timeout,
            Direction::Connect => None,
        };
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let seen = set.generation();
            let start = seen as usize % on.len().max(1);
            for k in 0..on.len() {
                let (shared, id) = on[(start + k) % on.len()];
                if !self.open.load(Ordering::Acquire) {
                    return Err(Errno::EBADF);
                }
                let result = {
                    let mut locked = shared.lock();
                    if locked.down.is_some() {
                        return Err(Errno::ENETDOWN);
                    }
                    let result = f(shared, &mut locked.engine, id);
                    shared.after_call(&mut locked, id);
                    shared.unlock(locked);
                    result
                };
                match result {
                    Err(Errno::EAGAIN) => {}
                    result => return result,
                }
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if nonblocking || dontwait || left == Some(Duration::ZERO) {
                return Err(Errno::EAGAIN);
            }
            set.wait(seen, left);
        }
    }

    /// After a UDP socket's bind() on a stack of several shards: makes its copies on
    /// shards 1 and up, bound to its address, and has the port's datagrams spread over
    /// the shards. Shard 0's engine holds the port, so the copies cannot clash with
    /// another socket. Should a copy fail, the socket stays on shard 0 alone, which
    /// receives all its datagrams, as on a stack of one shard.
    pub(super) fn bind_on_every_shard(&self) -> Result<()> {
        let (Some(set), Some(mirrors)) = (self.shared.set.get(), &self.mirrors) else { return Ok(()) };
        let (ty, local) = self.call(|l| Ok((l.engine.socket_type(self.id)?, l.engine.local_addr(self.id)?)))?;
        if ty != Type::Dgram {
            return Ok(());
        }
        let mut mirrors = mirrors.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = self.make_copies(set, &mut mirrors, local, |_, _| Ok(())) {
            log::warn!(target: "ustack", "UDP {local}: no copy on every shard ({e}); shard 0 receives it all");
            return Ok(());
        }
        set.steering.share_udp_port(local.port());
        Ok(())
    }

    /// Makes this socket's copies on shards 1 and up into `mirrors`: each with its domain,
    /// type and options (`Engine::socket_like`), bound to `local`, then made ready by
    /// `then` (listen, for a listener). Should one fail, those made are closed, and the
    /// error returned.
    pub(super) fn make_copies(
        &self,
        set: &ShardSet,
        mirrors: &mut Vec<Mirror>,
        local: SocketAddr,
        then: impl Fn(&mut Engine, SockId) -> Result<()>,
    ) -> Result<()> {
        for shared in set.shards().skip(1) {
            // Shard 0 before shard k, the one order in which two shards are ever locked.
            let primary = self.shared.lock();
            let mut locked = shared.lock();
            let made = locked.engine.socket_like(&primary.engine, self.id);
            drop(primary);
            let made =
                made.and_then(|id| match locked.engine.bind(id, local).and_then(|()| then(&mut locked.engine, id)) {
                    Ok(()) => Ok(id),
                    Err(e) => {
                        locked.engine.close(id);
                        Err(e)
                    }
                });
            match made {
                Ok(id) => {
                    shared.after_call(&mut locked, id);
                    shared.unlock(locked);
                    mirrors.push((shared, id));
                }
                Err(e) => {
                    drop(locked);
                    close_all(mirrors);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// After a UDP socket's connect(): its copies take the same peer (a datagram from it
    /// may arrive at any shard, and a send goes from the shard its datagrams arrive at).
    pub(super) fn connect_mirrors(&self, peer: SocketAddr) -> Result<()> {
        let Some(mirrors) = self.datagram_mirrors() else { return Ok(()) };
        for (shared, id) in &mirrors {
            call_on(shared, *id, |l| {
                let now = l.now();
                l.engine.connect(now, *id, peer)
            })?;
        }
        Ok(())
    }

    /// Whether this is a UDP socket with copies on other shards, and if so its copies.
    pub(super) fn datagram_mirrors(&self) -> Option<Vec<Mirror>> {
        let mirrors = self.mirror_list();
        if mirrors.is_empty() || self.call(|l| l.engine.socket_type(self.id)).ok()? != Type::Dgram {
            return None;
        }
        Some(mirrors)
    }

    /// The copy (this socket, or one on another shard) a UDP socket sends to `peer` from:
    /// the one on the shard whose queue `peer`'s datagrams to it arrive at.
    pub(super) fn sender_for<'a>(
        &'a self,
        set: &ShardSet,
        on: &[OnShard<'a>],
        peer: SocketAddr,
    ) -> Result<OnShard<'a>> {
        let local = self.call(|l| {
            let local = l.engine.local_addr(self.id)?;
            // Bound to the wildcard: the reply goes to the stack's address of the peer's
            // family, as the kernel's datagrams to it come (the first one, should the stack
            // have several: a wrong guess only costs a forward between shards).
            if !local.ip().is_unspecified() {
                return Ok(local);
            }
            let own = l.engine.config().addrs.iter().map(|c| c.addr()).find(|a| a.is_ipv4() == peer.is_ipv4());
            Ok(own.map_or(local, |ip| SocketAddr::new(ip, local.port())))
        })?;
        let shard = set.steering.udp_owner(local, peer);
        Ok(on.get(shard).copied().unwrap_or(on[0]))
    }
}

/// One call `f` on socket `id` of the shard with `shared` (a copy of a socket), sending
/// what it made ready and waking whom it touched, as [`Socket::call`] does on the socket
/// itself.
pub(super) fn call_on<T>(shared: &Shared, id: SockId, f: impl FnOnce(&mut Locked) -> T) -> T {
    let mut locked = shared.lock();
    let result = f(&mut locked);
    shared.after_call(&mut locked, id);
    shared.unlock(locked);
    result
}
