//! One try of a call for an async caller: the engine's non-blocking call, once, and on
//! EAGAIN the task's waker left for the stack thread instead of a wait (see
//! [`crate::stack`]). What `crate::tokio` builds its futures on.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use super::{Errno, Result, Socket};
use crate::engine::{Engine, SockId};
use crate::stack::{Interest, Locked, Shared};

impl Socket {
    /// Makes call `f` on the engine once. If it says EAGAIN, the task of `cx` is woken by
    /// the next round that touches this socket, and this returns Pending; the waker is
    /// left under the same lock hold as the call, so a round that comes in between cannot
    /// be missed. ENETDOWN instead of Pending once the stack has stopped.
    pub(crate) fn poll_call<T>(
        &self,
        cx: &mut Context<'_>,
        interest: Interest,
        f: impl FnOnce(&mut Locked) -> Result<T>,
    ) -> Poll<Result<T>> {
        self.poll_call_on(&self.shared, self.id, cx, interest, f)
    }

    /// [`Socket::poll_call`] on socket `id` of the shard with `shared`: this socket, or
    /// a copy of this listener on another shard.
    fn poll_call_on<T>(
        &self,
        shared: &Shared,
        id: SockId,
        cx: &mut Context<'_>,
        interest: Interest,
        f: impl FnOnce(&mut Locked) -> Result<T>,
    ) -> Poll<Result<T>> {
        if !self.open.load(Ordering::Acquire) {
            return Poll::Ready(Err(Errno::EBADF));
        }
        let mut locked = shared.lock();
        if !locked.engine.is_open(id) {
            return Poll::Ready(Err(Errno::EBADF));
        }
        // Left from an earlier Pending and not yet woken (tokio's select! polls every
        // branch when one is ready): dropped first, so that what this call touches on its
        // own socket does not wake its own task.
        locked.forget_waker(id, interest, cx.waker());
        let result = f(&mut locked);
        let after = shared.after_call(&mut locked, id);
        let poll = match result {
            Err(Errno::EAGAIN) if locked.down.is_some() => Poll::Ready(Err(Errno::ENETDOWN)),
            Err(Errno::EAGAIN) if after.touched => {
                // The call's own poll changed the socket after the call looked: no round
                // will wake the task for that, so it is polled again at once.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Err(Errno::EAGAIN) => {
                locked.register_waker(id, interest, cx.waker());
                Poll::Pending
            }
            result => Poll::Ready(result),
        };
        shared.unlock(locked);
        poll
    }

    /// accept() once: the next established connection, or Pending (woken when the
    /// listener's accept queue may have one). A connection is taken off the queue only in
    /// the call that returns it.
    ///
    /// A listener of a stack of several shards tries each shard's queue, and is woken
    /// by whichever shard's round touches its copy there.
    pub(crate) fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<Result<(Socket, SocketAddr)>> {
        let listeners = std::iter::once((self.shared.clone(), self.id)).chain(self.mirrors());
        for (shared, id) in listeners {
            match self.poll_call_on(&shared, id, cx, Interest::Read, |l| l.engine.accept(id)) {
                Poll::Ready(Ok((conn, peer))) => return Poll::Ready(Ok((Socket::on(shared, conn), peer))),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }

    /// A datagram receive once (`f`, on each copy of the socket: a bound UDP socket of a
    /// stack of several shards has one on every shard), or Pending, woken by whichever
    /// shard's round touches its copy there.
    pub(crate) fn poll_recv_any<T>(
        &self,
        cx: &mut Context<'_>,
        mut f: impl FnMut(&mut Engine, SockId) -> Result<T>,
    ) -> Poll<Result<T>> {
        let copies = std::iter::once((self.shared.clone(), self.id)).chain(self.mirrors());
        for (shared, id) in copies {
            match self.poll_call_on(&shared, id, cx, Interest::Read, |l| f(&mut l.engine, id)) {
                Poll::Pending => {}
                ready => return ready,
            }
        }
        Poll::Pending
    }

    /// A datagram send once (`f`), to `peer` (the connected peer if None), from the copy
    /// of the socket on the shard where `peer`'s datagrams arrive; or Pending.
    pub(crate) fn poll_send_from_owner(
        &self,
        cx: &mut Context<'_>,
        peer: Option<SocketAddr>,
        f: impl FnOnce(&mut Engine, SockId) -> Result<usize>,
    ) -> Poll<Result<usize>> {
        let mirrors = self.mirrors();
        let Some(set) = self.shared.set.get().filter(|_| !mirrors.is_empty()) else {
            return self.poll_call(cx, Interest::Write, |l| f(&mut l.engine, self.id));
        };
        let peer = match peer.map_or_else(|| self.call(|l| l.engine.peer_addr(self.id)), Ok) {
            Ok(peer) => peer,
            Err(_) => return Poll::Ready(Err(Errno::EDESTADDRREQ)),
        };
        let copies = self.with_mirrors(&mirrors);
        match self.sender_for(set, &copies, peer) {
            Ok((shared, id)) => self.poll_call_on(shared, id, cx, Interest::Write, |l| f(&mut l.engine, id)),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    /// Starts a TCP connect (or fixes a UDP socket's peer) without waiting: EINPROGRESS
    /// while a handshake is under way, to be followed by [`Socket::poll_connected`].
    pub(crate) fn start_connect(&self, addr: SocketAddr) -> Result<()> {
        self.call(|l| {
            let now = l.now();
            l.engine.connect(now, self.id, addr)
        })?;
        self.connect_mirrors(addr)
    }

    /// How the connect() under way ended, or Pending while the handshake goes on. The
    /// engine gives up on its own after the stack's connect timeout (ETIMEDOUT).
    pub(crate) fn poll_connected(&self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.poll_call(cx, Interest::Write, |l| match l.engine.connect_outcome(self.id) {
            Err(Errno::EINPROGRESS) => Err(Errno::EAGAIN),
            outcome => outcome,
        })
    }

    /// Ready once the socket is ready for `interest` (or has an error, or is hung up), as
    /// poll() would report it; Pending until then.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>, interest: Interest) -> Poll<Result<()>> {
        use super::Events;
        let wanted = match interest {
            Interest::Read => Events::IN,
            Interest::Write => Events::OUT,
        } | Events::ERR
            | Events::HUP;
        // Ready if the socket is, on any shard it has a copy on.
        let copies = std::iter::once((self.shared.clone(), self.id)).chain(self.mirrors());
        for (shared, id) in copies {
            let ready = self.poll_call_on(&shared, id, cx, interest, |l| {
                if l.engine.readiness(id).intersects(wanted) { Ok(()) } else { Err(Errno::EAGAIN) }
            });
            if ready.is_ready() {
                return ready;
            }
        }
        Poll::Pending
    }

    /// One call without waiting, EAGAIN included: for `try_read` and friends.
    pub(crate) fn try_call<T>(&self, f: impl FnOnce(&mut Locked) -> Result<T>) -> Result<T> {
        self.call(f)
    }
}
