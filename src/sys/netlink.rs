//! A minimal synchronous rtnetlink client: just what ustack needs to configure the kernel
//! side of a TUN device (look up a link, set its MTU, bring it up, add addresses), and a
//! veth pair between two namespaces for the benchmarks' kernel baseline.
//!
//! Talking rtnetlink directly, instead of running `ip`, keeps the library free of
//! subprocesses, works in minimal containers, and gives real errors back: every request
//! asks for an ACK, and a `NLMSG_ERROR` reply becomes an [`io::Error`] carrying the errno
//! and the kernel's extended-ACK message when it sends one.
//!
//! A [`Netlink`] socket acts in the network namespace of the thread that opened it.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo as LinkInfoNla, LinkMessage, State,
};
use netlink_packet_route::route::{RouteAttribute, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};
use nix::errno::Errno;

/// Replies to ustack's requests are small (one link message at most); this leaves room
/// for links with many attributes.
const RECV_BUFFER: usize = 64 * 1024;

/// The longest interface name Linux accepts (`IFNAMSIZ` - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// What the kernel reports about one network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Current MTU in bytes.
    pub mtu: u32,
    /// Whether the interface is administratively up (`IFF_UP`).
    pub up: bool,
    /// Length of its transmit queue, in packets (`txqueuelen`).
    pub tx_queue_len: u32,
}

/// A synchronous `NETLINK_ROUTE` socket.
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Netlink> {
        let ctx = |e: io::Error| with_context(e, "opening rtnetlink socket");
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(ctx)?;
        socket.bind_auto().map_err(ctx)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(ctx)?;
        // Best effort: ask the kernel for a human-readable reason with errors, and not to
        // echo our whole request back in them. Old kernels lack these options.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        Ok(Netlink { socket, seq: 0, buf: vec![0; RECV_BUFFER] })
    }

    /// Looks an interface up by name; `Ok(None)` if there is none.
    pub fn link_by_name(&mut self, name: &str) -> io::Result<Option<LinkInfo>> {
        if name.is_empty() || name.len() > MAX_IFNAME_LEN {
            return Ok(None);
        }
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.get_link(msg) {
            Ok(link) => Ok(Some(link)),
            Err(e) if e.errno == Errno::ENODEV as i32 => Ok(None),
            Err(e) => Err(e.into_io(format_args!("looking up interface {name}"))),
        }
    }

    /// Looks an interface up by index.
    pub fn link_by_index(&mut self, index: u32) -> io::Result<LinkInfo> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.get_link(msg).map_err(|e| e.into_io(format_args!("looking up interface #{index}")))
    }

    /// Sets the MTU of interface `index`.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        self.request(RouteNetlinkMessage::SetLink(msg), 0)
            .map(drop)
            .map_err(|e| e.into_io(format_args!("setting MTU {mtu} on interface #{index}")))
    }

    /// Sets the transmit queue length (`txqueuelen`) of interface `index`, in packets.
    pub fn set_tx_queue_len(&mut self, index: u32, len: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::TxQueueLen(len));
        self.request(RouteNetlinkMessage::SetLink(msg), 0)
            .map(drop)
            .map_err(|e| e.into_io(format_args!("setting txqueuelen {len} on interface #{index}")))
    }

    /// Brings interface `index` administratively up.
    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        self.set_admin_state(index, true)
    }

    /// Takes interface `index` administratively down.
    pub fn set_down(&mut self, index: u32) -> io::Result<()> {
        self.set_admin_state(index, false)
    }

    fn set_admin_state(&mut self, index: u32, up: bool) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = if up { LinkFlags::Up } else { LinkFlags::empty() };
        msg.header.change_mask = LinkFlags::Up;
        let state = if up { "up" } else { "down" };
        self.request(RouteNetlinkMessage::SetLink(msg), 0)
            .map(drop)
            .map_err(|e| e.into_io(format_args!("bringing interface #{index} {state}")))
    }

    /// Deletes interface `index` (e.g. a persistent TUN). A TUN still open loses its
    /// interface: its reads and writes then fail with `EBADFD`.
    pub fn delete_link(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(msg), 0)
            .map(drop)
            .map_err(|e| e.into_io(format_args!("deleting interface #{index}")))
    }

    /// Creates a veth pair: interface `name` in this socket's namespace and its peer `peer`
    /// in the namespace `peer_netns` refers to (this one if `None`). Both start down. A
    /// pair joining two namespaces is how two kernel stacks talk over a real link (the
    /// benchmarks' kernel baseline); an address in the same namespace would go over `lo`.
    pub fn add_veth_pair(&mut self, name: &str, peer: &str, peer_netns: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let mut peer_msg = LinkMessage::default();
        peer_msg.attributes.push(LinkAttribute::IfName(peer.to_string()));
        if let Some(fd) = peer_netns {
            peer_msg.attributes.push(LinkAttribute::NetNsFd(fd.as_raw_fd()));
        }
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfoNla::Kind(InfoKind::Veth),
            LinkInfoNla::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map(drop)
            .map_err(|e| e.into_io(format_args!("creating veth pair {name} / {peer}")))
    }

    /// Whether interface `index` is operationally up (`IFLA_OPERSTATE` is `UP`). A veth
    /// set up is only usable once the kernel's link watcher has seen its carrier, which
    /// happens asynchronously (up to a second later); until then it drops what it is given.
    pub fn is_oper_up(&mut self, index: u32) -> io::Result<bool> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        let replies = self
            .request(RouteNetlinkMessage::GetLink(msg), 0)
            .map_err(|e| e.into_io(format_args!("looking up interface #{index}")))?;
        Ok(replies.iter().any(|reply| {
            matches!(reply, RouteNetlinkMessage::NewLink(link)
                if link.attributes.iter().any(|a| matches!(a, LinkAttribute::OperState(State::Up))))
        }))
    }

    /// Adds `addr/prefix_len` to interface `index`. An address that is already there is
    /// not an error, so configuring a persistent interface twice works.
    ///
    /// IPv6 addresses are added with `IFA_F_NODAD`: on a point-to-point TUN whose other
    /// end is our own stack, duplicate address detection can only delay the address
    /// (about a second of "tentative", during which the kernel cannot use it).
    pub fn add_address(&mut self, index: u32, addr: IpAddr, prefix_len: u8) -> io::Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.index = index;
        msg.header.prefix_len = prefix_len;
        match addr {
            IpAddr::V4(_) => {
                msg.header.family = AddressFamily::Inet;
                // As `ip addr add` does: IFA_LOCAL is the interface's own address.
                msg.attributes.push(AddressAttribute::Local(addr));
                msg.attributes.push(AddressAttribute::Address(addr));
            }
            IpAddr::V6(_) => {
                msg.header.family = AddressFamily::Inet6;
                msg.header.flags = AddressHeaderFlags::Nodad;
                msg.attributes.push(AddressAttribute::Address(addr));
                msg.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
        }
        match self.request(RouteNetlinkMessage::NewAddress(msg), NLM_F_CREATE | NLM_F_EXCL) {
            Ok(_) => Ok(()),
            Err(e) if e.errno == Errno::EEXIST as i32 => Ok(()),
            Err(e) => Err(e.into_io(format_args!("adding address {addr}/{prefix_len} to interface #{index}"))),
        }
    }

    /// Whether the kernel currently delivers packets for `addr` locally (`ip route get`
    /// says `local`), i.e. whether an address added with [`Netlink::add_address`] is in
    /// service. IPv6 installs the local route asynchronously (from its address
    /// configuration work queue), some time after the address was added and the link
    /// brought up; until then the kernel drops packets sent to the address.
    pub fn is_local(&mut self, addr: IpAddr) -> io::Result<bool> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        msg.header.destination_prefix_length = if addr.is_ipv4() { 32 } else { 128 };
        msg.attributes.push(RouteAttribute::Destination(addr.into()));
        match self.request(RouteNetlinkMessage::GetRoute(msg), 0) {
            Ok(replies) => Ok(replies.iter().any(
                |reply| matches!(reply, RouteNetlinkMessage::NewRoute(route) if route.header.kind == RouteType::Local),
            )),
            Err(e) if e.errno == Errno::ENETUNREACH as i32 || e.errno == Errno::EHOSTUNREACH as i32 => Ok(false),
            Err(e) => Err(e.into_io(format_args!("looking up the route to {addr}"))),
        }
    }

    fn get_link(&mut self, msg: LinkMessage) -> Result<LinkInfo, NetlinkError> {
        let replies = self.request(RouteNetlinkMessage::GetLink(msg), 0)?;
        replies
            .into_iter()
            .find_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Some(link_info(&link)),
                _ => None,
            })
            .ok_or_else(|| NetlinkError::protocol("no link in the reply to RTM_GETLINK"))
    }

    /// Sends one request with `NLM_F_ACK` and collects the replies up to the ACK.
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0).map_err(NetlinkError::io)?;

        let mut replies = Vec::new();
        // rtnetlink handles a request synchronously inside send(), so the replies are
        // already queued; recv() cannot wait for long. The loop ends at our ACK/NACK.
        loop {
            let mut slice = &mut self.buf[..];
            let len = self.socket.recv(&mut slice, nix::libc::MSG_TRUNC).map_err(NetlinkError::io)?;
            if len > self.buf.len() {
                return Err(NetlinkError::protocol("netlink reply larger than the receive buffer"));
            }
            let mut offset = 0;
            while offset < len {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[offset..len])
                    .map_err(|e| NetlinkError::protocol(&format!("undecodable netlink reply: {e}")))?;
                let msg_len = msg.header.length as usize;
                if msg_len == 0 {
                    break;
                }
                offset += (msg_len + 3) & !3;
                if msg.header.sequence_number != seq {
                    continue; // a stale reply to an earlier request
                }
                match msg.payload {
                    NetlinkPayload::Error(err) => {
                        return match err.code {
                            None => Ok(replies),
                            Some(code) => Err(NetlinkError {
                                errno: code.get().abs(),
                                detail: extack_message(msg.header.flags, &err.header),
                            }),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                    _ => {}
                }
            }
        }
    }
}

fn link_info(link: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: link.header.index,
        name: String::new(),
        mtu: 0,
        up: link.header.flags.contains(LinkFlags::Up),
        tx_queue_len: 0,
    };
    for attr in &link.attributes {
        match attr {
            LinkAttribute::IfName(name) => info.name = name.clone(),
            LinkAttribute::Mtu(mtu) => info.mtu = *mtu,
            LinkAttribute::TxQueueLen(len) => info.tx_queue_len = *len,
            _ => {}
        }
    }
    info
}

/// The `NLMSGERR_ATTR_MSG` string of an extended ACK, if the kernel sent one.
/// `payload` is what follows the error code: the echoed request (only its header if
/// `NLM_F_CAPPED`) and then, with `NLM_F_ACK_TLVS`, attributes.
fn extack_message(flags: u16, payload: &[u8]) -> Option<String> {
    const NLMSGERR_ATTR_MSG: u16 = 1;
    const NLMSG_HDRLEN: usize = 16;
    if flags & NLM_F_ACK_TLVS == 0 || payload.len() < NLMSG_HDRLEN {
        return None;
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        u32::from_ne_bytes(payload[..4].try_into().ok()?) as usize
    };
    let mut tlvs = payload.get((echoed + 3) & !3..)?;
    while tlvs.len() >= 4 {
        let len = u16::from_ne_bytes([tlvs[0], tlvs[1]]) as usize;
        let kind = u16::from_ne_bytes([tlvs[2], tlvs[3]]) & 0x3fff;
        if len < 4 || len > tlvs.len() {
            break;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &tlvs[4..len];
            let text = text.split(|&b| b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned()).filter(|s| !s.is_empty());
        }
        tlvs = tlvs.get((len + 3) & !3..).unwrap_or_default();
    }
    None
}

/// A failed request, before context is added: the errno (to let callers accept e.g.
/// `EEXIST`) and the kernel's explanation, if any.
struct NetlinkError {
    errno: i32,
    detail: Option<String>,
}

impl NetlinkError {
    fn io(e: io::Error) -> NetlinkError {
        NetlinkError { errno: e.raw_os_error().unwrap_or(0), detail: Some(e.to_string()) }
    }

    fn protocol(what: &str) -> NetlinkError {
        NetlinkError { errno: 0, detail: Some(what.to_string()) }
    }

    fn into_io(self, what: std::fmt::Arguments<'_>) -> io::Error {
        if self.errno == 0 {
            return io::Error::new(
                io::ErrorKind::InvalidData,
                format!("netlink: {what}: {}", self.detail.unwrap_or_default()),
            );
        }
        let os = io::Error::from_raw_os_error(self.errno);
        let message = match self.detail {
            Some(detail) if detail != os.to_string() => format!("netlink: {what}: {os} ({detail})"),
            _ => format!("netlink: {what}: {os}"),
        };
        io::Error::new(os.kind(), message)
    }
}

fn with_context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("netlink: {what}: {e}"))
}
