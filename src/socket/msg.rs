//! send/recv with flags, and sendmsg/recvmsg with scatter/gather buffers.

use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::ops::{BitOr, BitOrAssign};

use super::{Direction, Errno, Result, Socket, Type};
use crate::engine::calls::Received;

/// The flags of send/recv/sendto/recvfrom/sendmsg/recvmsg, with Linux's values (so a C
/// caller's `int flags` converts with [`MsgFlags::from_bits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MsgFlags(i32);

impl MsgFlags {
    /// No flags.
    pub const NONE: MsgFlags = MsgFlags(0);
    /// MSG_PEEK (recv): return the data but leave it queued for the next recv.
    pub const PEEK: MsgFlags = MsgFlags(libc::MSG_PEEK);
    /// MSG_TRUNC. To recv on UDP: return the datagram's real length even if it was cut to
    /// fit; on TCP: discard the data instead of copying it. From recv_msg: the datagram
    /// was cut to fit.
    pub const TRUNC: MsgFlags = MsgFlags(libc::MSG_TRUNC);
    /// MSG_DONTWAIT: this call does not block, as if the socket were non-blocking.
    pub const DONTWAIT: MsgFlags = MsgFlags(libc::MSG_DONTWAIT);
    /// MSG_WAITALL (TCP recv): wait until the whole buffer is filled, unless the stream
    /// ends, an error comes or a timeout runs out first (then what arrived is returned).
    pub const WAITALL: MsgFlags = MsgFlags(libc::MSG_WAITALL);
    /// MSG_NOSIGNAL (send): no SIGPIPE on a broken connection. ustack never raises
    /// signals, so this changes nothing: send() says EPIPE either way.
    pub const NOSIGNAL: MsgFlags = MsgFlags(libc::MSG_NOSIGNAL);

    const KNOWN: i32 = libc::MSG_PEEK | libc::MSG_TRUNC | libc::MSG_DONTWAIT | libc::MSG_WAITALL | libc::MSG_NOSIGNAL;

    /// Linux's bits.
    pub fn bits(self) -> i32 {
        self.0
    }

    /// The flags of Linux's `bits`; None if a bit is one ustack does not know (the socket
    /// calls would say EOPNOTSUPP for it).
    pub fn from_bits(bits: i32) -> Option<MsgFlags> {
        (bits & !Self::KNOWN == 0).then_some(MsgFlags(bits))
    }

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: MsgFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no flag is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitOr for MsgFlags {
    type Output = MsgFlags;
    fn bitor(self, rhs: MsgFlags) -> MsgFlags {
        MsgFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for MsgFlags {
    fn bitor_assign(&mut self, rhs: MsgFlags) {
        self.0 |= rhs.0;
    }
}

/// EOPNOTSUPP for flags ustack does not know (made with bits outside [`MsgFlags::KNOWN`]).
fn check(flags: MsgFlags) -> Result<()> {
    if flags.0 & !MsgFlags::KNOWN != 0 { Err(Errno::EOPNOTSUPP) } else { Ok(()) }
}

impl Socket {
    /// send() with flags: [`MsgFlags::DONTWAIT`] and [`MsgFlags::NOSIGNAL`] mean something
    /// here; recv's flags are ignored, as Linux ignores them. See [`Socket::send`].
    pub fn send_flags(&self, buf: &[u8], flags: MsgFlags) -> Result<usize> {
        check(flags)?;
        let dontwait = flags.contains(MsgFlags::DONTWAIT);
        if let Some(mirrors) = self.datagram_mirrors() {
            let peer = self.call(|l| l.engine.peer_addr(self.id)).map_err(|_| Errno::EDESTADDRREQ)?;
            return self.send_from_owner(&mirrors, peer, dontwait, |engine, id| engine.send(id, buf, false));
        }
        let mut sent = 0;
        let result = self.blocking_unless(dontwait, Direction::Write, None, |l| {
            let n = l.engine.send(self.id, &buf[sent..], sent > 0)?;
            sent += n;
            if sent < buf.len() && l.engine.socket_type(self.id) == Ok(Type::Stream) {
                return Err(Errno::EAGAIN);
            }
            Ok(sent)
        });
        match result {
            Err(_) if sent > 0 => Ok(sent),
            result => result,
        }
    }

    /// sendto() with flags (see [`Socket::send_flags`] and [`Socket::send_to`]).
    pub fn send_to_flags(&self, buf: &[u8], addr: SocketAddr, flags: MsgFlags) -> Result<usize> {
        check(flags)?;
        if self.call(|l| l.engine.socket_type(self.id))? == Type::Stream {
            return self.send_flags(buf, flags);
        }
        let dontwait = flags.contains(MsgFlags::DONTWAIT);
        // A datagram socket: its copies, if any, are a bound UDP socket's.
        let mirrors = self.mirror_list();
        if !mirrors.is_empty() {
            return self.send_from_owner(&mirrors, addr, dontwait, |engine, id| engine.send_to(id, buf, addr));
        }
        self.blocking_unless(dontwait, Direction::Write, None, |l| l.engine.send_to(self.id, buf, addr))
    }

    /// A UDP socket with copies on other shards sends to `peer` from the shard where
    /// `peer`'s datagrams arrive (see `socket/shards.rs`), waiting as a send waits.
    fn send_from_owner(
        &self,
        mirrors: &[super::Mirror],
        peer: SocketAddr,
        dontwait: bool,
        mut send: impl FnMut(&mut crate::engine::Engine, crate::engine::SockId) -> Result<usize>,
    ) -> Result<usize> {
        let set = self.shared.set.get().ok_or(Errno::EINVAL)?;
        let everywhere = self.with_mirrors(mirrors);
        let owner = [self.sender_for(set, &everywhere, peer)?];
        self.on_shards(set, &owner, Direction::Write, dontwait, |_, engine, id| send(engine, id))
    }

    /// sendmsg(): the buffers `bufs` sent as one (one datagram for UDP), to `addr` if given
    /// (sendto) or the connected peer.
    pub fn send_msg(&self, bufs: &[IoSlice<'_>], addr: Option<SocketAddr>, flags: MsgFlags) -> Result<usize> {
        let data: Vec<u8> = match bufs {
            [one] => return self.send_msg_one(one, addr, flags),
            _ => bufs.iter().flat_map(|b| b.iter().copied()).collect(),
        };
        self.send_msg_one(&data, addr, flags)
    }

    fn send_msg_one(&self, data: &[u8], addr: Option<SocketAddr>, flags: MsgFlags) -> Result<usize> {
        match addr {
            Some(addr) => self.send_to_flags(data, addr, flags),
            None => self.send_flags(data, flags),
        }
    }

    /// recv() with flags: [`MsgFlags::PEEK`], [`MsgFlags::DONTWAIT`],
    /// [`MsgFlags::WAITALL`] and [`MsgFlags::TRUNC`] as in Linux (see each). See
    /// [`Socket::recv`].
    pub fn recv_flags(&self, buf: &mut [u8], flags: MsgFlags) -> Result<usize> {
        self.recv_from_flags(buf, flags).map(|(n, _)| n)
    }

    /// recvfrom() with flags (see [`Socket::recv_flags`] and [`Socket::recv_from`]).
    pub fn recv_from_flags(&self, buf: &mut [u8], flags: MsgFlags) -> Result<(usize, SocketAddr)> {
        let (received, stream) = self.receive(buf, flags)?;
        let len = if flags.contains(MsgFlags::TRUNC) && !stream { received.full_len } else { received.len };
        Ok((len, received.from))
    }

    /// recvmsg(): received data scattered over `bufs` in order, the sender (UDP; None for
    /// TCP, as Linux fills in no address there), and the flags out: [`MsgFlags::TRUNC`]
    /// if the datagram did not fit. With [`MsgFlags::TRUNC`] in `flags`, a datagram's
    /// length is its real length, as Linux returns.
    pub fn recv_msg(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        flags: MsgFlags,
    ) -> Result<(usize, Option<SocketAddr>, MsgFlags)> {
        let (received, stream) = match bufs {
            // One buffer (read_vectored's usual call): straight into it, as recv() does.
            [one] => self.receive(one, flags)?,
            _ => {
                let total = bufs.iter().map(|b| b.len()).sum();
                let mut data = vec![0; total];
                let (received, stream) = self.receive(&mut data, flags)?;
                let mut rest = &data[..received.len];
                for buf in bufs.iter_mut() {
                    let n = buf.len().min(rest.len());
                    buf[..n].copy_from_slice(&rest[..n]);
                    rest = &rest[n..];
                }
                (received, stream)
            }
        };
        if stream {
            return Ok((received.len, None, MsgFlags::NONE));
        }
        let truncated = received.full_len > received.len;
        let out = if truncated { MsgFlags::TRUNC } else { MsgFlags::NONE };
        let len = if flags.contains(MsgFlags::TRUNC) { received.full_len } else { received.len };
        Ok((len, Some(received.from), out))
    }

    /// One receive with `flags`, and whether the socket is a stream (TCP).
    fn receive(&self, buf: &mut [u8], flags: MsgFlags) -> Result<(Received, bool)> {
        check(flags)?;
        let stream = self.call(|l| l.engine.socket_type(self.id))? == Type::Stream;
        let dontwait = flags.contains(MsgFlags::DONTWAIT);
        let peek = flags.contains(MsgFlags::PEEK);
        // MSG_TRUNC on TCP: the data is read and discarded, not copied to the caller.
        let mut discard;
        let buf = if stream && flags.contains(MsgFlags::TRUNC) && !peek {
            discard = vec![0; buf.len()];
            &mut discard[..]
        } else {
            buf
        };
        // Not a stream: the copies, if any, are a bound UDP socket's.
        let mirrors = if stream { Vec::new() } else { self.mirror_list() };
        if let (false, Some(set)) = (mirrors.is_empty(), self.shared.set.get()) {
            // One datagram, from whichever shard has one.
            let everywhere = self.with_mirrors(&mirrors);
            return self
                .on_shards(set, &everywhere, Direction::Read, dontwait, |_, engine, id| engine.recv_msg(id, buf, peek))
                .map(|received| (received, false));
        }
        // MSG_WAITALL: only TCP, and (as Linux) not with MSG_PEEK, which this leaves to
        // return what is there.
        let wait_all = stream && flags.contains(MsgFlags::WAITALL) && !peek && !buf.is_empty();
        let mut got = 0;
        let mut last = None;
        let result = self.blocking_unless(dontwait, Direction::Read, None, |l| {
            let received = l.engine.recv_msg(self.id, &mut buf[got..], peek)?;
            got += received.len;
            last = Some(received);
            if wait_all && received.len > 0 && got < buf.len() {
                return Err(Errno::EAGAIN);
            }
            Ok(Received { len: got, ..received })
        });
        match (result, last) {
            // What MSG_WAITALL had before the error, the end of the timeout or the DONTWAIT.
            (Err(_), Some(last)) if got > 0 => Ok((Received { len: got, ..last }, stream)),
            (result, _) => result.map(|r| (r, stream)),
        }
    }
}
