//! A Linux TUN interface as a smoltcp device: IP packets in and out of the kernel.
//!
//! The kernel side of the TUN is an ordinary interface (the "peer"): [`TunDevice::open`]
//! gives it addresses, an MTU and brings it up over rtnetlink, so the kernel routes to the
//! userspace stack through it. Unlike smoltcp's own `TunTapInterface`, this device never
//! panics on I/O errors: a failure stops the device and is reported through
//! [`Link::take_error`].
//!
//! Offloads: unless [`TunConfig::offload`] is off, the TUN is opened with `IFF_VNET_HDR`
//! and `TUNSETOFFLOAD` (checksum, TSO4, TSO6), as virtio and the kernel's own veth do:
//! the kernel then hands over TCP super-segments of up to 64 KiB in one read, and takes
//! super-segments smoltcp builds (its `segmentation-offload`) in one write, cutting them
//! itself; TCP and UDP checksums are left to it. Above the device every frame is still a
//! plain IP packet (see [`vnet`](super::vnet)), just possibly longer than the MTU.

use std::fs::File;
use std::io;
use std::io::Write as _;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::time::Duration;

use log::{debug, warn};
use nix::errno::Errno;
use smoltcp::phy::{self, Checksum, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use tun_tap::{Iface, Mode};

use super::Link;
use super::vnet::{VNET_HDR_LEN, VnetHdr};
use crate::sys::netlink::{MAX_IFNAME_LEN, Netlink};

/// The receive buffer holds any IP packet (65535 bytes), not just one MTU: the MTU can be
/// raised behind our back (`ip link set mtu`), and a short read would truncate packets.
const RX_BUFFER: usize = 65535;

/// With offloads, an IPv6 super-segment's payload alone may be 65535 bytes, after a
/// 40-byte header.
pub(crate) const RX_BUFFER_GSO: usize = 65535 + 40;

/// Reads per [`Device::receive`] call that may be skipped (empty frames) before giving up
/// until the next poll, so a misbehaving fd cannot spin the stack thread.
const MAX_SKIPS: usize = 64;

/// How long [`TunDevice::open`] waits for the kernel to put the peer addresses in service.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// The kernel refuses IPv6 on links with a smaller MTU.
const IPV6_MIN_MTU: usize = 1280;

/// How to open and configure a TUN interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunConfig {
    /// Interface name, at most 15 bytes, e.g. `ustack0`. An existing (persistent) TUN of
    /// that name is attached to; otherwise a new one is created, and it disappears when
    /// the device is dropped. Empty lets the kernel choose (`tun0`, ...).
    pub name: String,
    /// Addresses for the kernel side of the TUN (e.g. `10.7.0.1/24`, `fd00:7::1/64`); the
    /// prefix makes the kernel route that subnet into the TUN. Addresses already present
    /// are fine. Empty leaves the interface's addresses as they are.
    pub peer_addrs: Vec<crate::Cidr>,
    /// If set, the interface MTU to configure; otherwise the current MTU is used.
    pub mtu: Option<usize>,
    /// Whether to ask the kernel for offloads (`IFF_VNET_HDR`; on by default): TCP
    /// super-segments both ways, checksums left to the kernel. When the kernel refuses,
    /// the device says so once and works without, as with this off.
    pub offload: bool,
}

impl Default for TunConfig {
    fn default() -> TunConfig {
        TunConfig { name: String::new(), peer_addrs: Vec::new(), mtu: None, offload: true }
    }
}

/// Packet counters of a [`TunDevice`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunStats {
    /// Packets read from the kernel and handed to the stack.
    pub rx_packets: u64,
    /// Bytes of those packets.
    pub rx_bytes: u64,
    /// Reads that returned no packet worth handing up (zero-length).
    pub rx_dropped: u64,
    /// Packets written to the kernel.
    pub tx_packets: u64,
    /// Bytes of those packets.
    pub tx_bytes: u64,
    /// Packets the kernel refused without the device failing: its queue or memory was
    /// full (`EAGAIN`, `ENOBUFS`), the interface was administratively down (`EIO`), or
    /// the packet was not valid IP (`EINVAL`).
    pub tx_dropped: u64,
    /// Of `rx_packets`, the TCP super-segments (GSO) the kernel handed over whole.
    pub rx_gso_packets: u64,
    /// Of `tx_packets`, the TCP super-segments written for the kernel to cut.
    pub tx_gso_packets: u64,
}

/// A TUN interface (`IFF_TUN | IFF_NO_PI`, non-blocking) as a smoltcp [`Device`] with
/// `Medium::Ip`.
pub struct TunDevice {
    iface: TunFile,
    mtu: usize,
    /// Whether every packet comes and goes behind a `virtio_net_hdr` (`IFF_VNET_HDR`).
    vnet: bool,
    rx_buf: Vec<u8>,
    state: State,
}

/// The part of the device a [`TxToken`] needs, split from the receive buffer so that
/// `receive` can hand out both tokens without copying the received packet.
struct State {
    tx_buf: Vec<u8>,
    /// See [`TunDevice::vnet`]; with it the MTU, to tell a super-segment.
    vnet: bool,
    mtu: usize,
    /// With `vnet`: whether sent packets leave checksums and segmentation to the kernel
    /// (see [`Link::disable_tx_offloads`]).
    tx_offload: bool,
    stats: TunStats,
    /// Set by the first fatal I/O error; the device yields no more tokens.
    failed: bool,
    /// That error, until [`Link::take_error`] takes it.
    error: Option<io::Error>,
    /// Whether the interface being down was logged (once per down period).
    down_reported: bool,
}

impl State {
    fn fail(&mut self, name: &str, op: &str, e: io::Error) {
        warn!("TUN {name}: {op} failed, stopping the device: {e}");
        self.failed = true;
        self.error = Some(io::Error::new(e.kind(), format!("{op} TUN {name}: {e}")));
    }
}

impl TunDevice {
    /// Opens (or creates) the TUN interface, configures its kernel side over rtnetlink
    /// (MTU, peer addresses, up) and reads back the MTU. It acts in the calling thread's
    /// network namespace; use [`NetNs::run`](crate::sys::NetNs::run) to open it elsewhere.
    pub fn open(config: &TunConfig) -> io::Result<TunDevice> {
        let name = config.name.as_str();
        validate_name(name)?;
        let (file, name, vnet) = open_tun(name, config.offload, false)?;
        set_non_blocking(&file, &name)?;
        let mtu =
            configure(&name, config).map_err(|e| io::Error::new(e.kind(), format!("configuring TUN {name}: {e}")))?;
        debug!("TUN {name} open, MTU {mtu}, offloads {vnet}, peer addresses {:?}", config.peer_addrs);
        Ok(TunDevice::with_file(TunFile { file, name }, mtu, vnet))
    }

    /// Opens `queues` queues of one TUN interface (`IFF_MULTI_QUEUE`), each its own fd and
    /// its own device, and configures the kernel side once, as [`TunDevice::open`] does.
    /// The kernel spreads flows over the queues and, for a flow a queue has written, sends
    /// that flow's packets back on the same queue (drivers/net/tun.c: `tun_flow_update`,
    /// `tun_automq_select_queue`): one queue per stack shard. One queue is
    /// [`TunDevice::open`] (a TUN without `IFF_MULTI_QUEUE`, attachable to as before).
    /// Offloads are asked for on every queue alike: the kernel keeps one set per interface.
    pub fn open_queues(config: &TunConfig, queues: usize) -> io::Result<Vec<TunDevice>> {
        if queues <= 1 {
            return Ok(vec![TunDevice::open(config)?]);
        }
        let name = config.name.as_str();
        validate_name(name)?;
        let (first, name, vnet) = open_tun(name, config.offload, true).map_err(|e| {
            // An existing TUN without IFF_MULTI_QUEUE refuses the flag with EINVAL.
            match e.raw_os_error() == Some(libc::EINVAL) {
                true => io::Error::new(
                    e.kind(),
                    format!(
                        "{e}; a persistent TUN needs multi_queue for {queues} queues (ip tuntap add ... multi_queue)"
                    ),
                ),
                false => e,
            }
        })?;
        let mut files = vec![first];
        for _ in 1..queues {
            let (file, _, also_vnet) = open_tun(&name, vnet, true)?;
            if also_vnet != vnet {
                return Err(io::Error::other(format!("TUN {name}: offloads on one queue and not on another")));
            }
            files.push(file);
        }
        for file in &files {
            set_non_blocking(file, &name)?;
        }
        let mtu =
            configure(&name, config).map_err(|e| io::Error::new(e.kind(), format!("configuring TUN {name}: {e}")))?;
        debug!(
            "TUN {name} open with {queues} queues, MTU {mtu}, offloads {vnet}, peer addresses {:?}",
            config.peer_addrs
        );
        Ok(files
            .into_iter()
            .map(|file| TunDevice::with_file(TunFile { file, name: name.clone() }, mtu, vnet))
            .collect())
    }

    /// A device on a TUN opened (and configured) elsewhere, e.g. by `ustack run` for the
    /// program it runs, which inherits the fd: `fd` is the TUN's (IFF_TUN | IFF_NO_PI,
    /// and IFF_VNET_HDR if it was opened with offloads: the device asks the kernel),
    /// `name` its interface name (for messages), `mtu` its MTU. Makes it non-blocking.
    pub fn from_fd(fd: OwnedFd, name: &str, mtu: usize) -> io::Result<TunDevice> {
        let file = File::from(fd);
        set_non_blocking(&file, name)?;
        let vnet = tun_flags(&file).is_ok_and(|flags| flags & IFF_VNET_HDR != 0);
        Ok(TunDevice::with_file(TunFile { file, name: name.to_string() }, mtu, vnet))
    }

    /// Gives up the device for its fd, to hand the TUN to another process (`ustack run`).
    pub fn into_fd(self) -> OwnedFd {
        OwnedFd::from(self.iface.file)
    }

    fn with_file(iface: TunFile, mtu: usize, vnet: bool) -> TunDevice {
        TunDevice {
            iface,
            mtu,
            vnet,
            rx_buf: vec![0; rx_buffer(vnet, mtu)],
            state: State {
                tx_buf: vec![0; mtu],
                vnet,
                mtu,
                tx_offload: vnet,
                stats: TunStats::default(),
                failed: false,
                error: None,
                down_reported: false,
            },
        }
    }

    /// The interface name the kernel gave (equal to the configured one unless that was empty).
    pub fn name(&self) -> &str {
        self.iface.name()
    }

    /// The interface MTU, read back from the kernel when the device was opened.
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// Whether offloads are on: packets carry a `virtio_net_hdr`, TCP super-segments go
    /// both ways and the kernel computes TCP and UDP checksums.
    pub fn offload(&self) -> bool {
        self.vnet
    }

    /// Packet counters.
    pub fn stats(&self) -> TunStats {
        self.state.stats
    }

    /// Reads that yielded nothing to hand up (see [`TunStats::rx_dropped`]).
    pub fn rx_dropped(&self) -> u64 {
        self.state.stats.rx_dropped
    }

    /// Packets the kernel refused (see [`TunStats::tx_dropped`]).
    pub fn tx_dropped(&self) -> u64 {
        self.state.stats.tx_dropped
    }
}

/// A long name would be truncated (the kernel takes 15 bytes and a NUL), and the kernel
/// would then open or create a different interface; refuse instead.
fn validate_name(name: &str) -> io::Result<()> {
    let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("invalid TUN name {name:?}: {why}"));
    if name.len() > MAX_IFNAME_LEN {
        return Err(invalid(&format!("longer than {MAX_IFNAME_LEN} bytes")));
    }
    if name == "." || name == ".." || name.bytes().any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
    {
        return Err(invalid("must not be . or .. or contain '/', ':', NUL or whitespace"));
    }
    Ok(())
}

fn open_error(name: &str, e: io::Error) -> io::Error {
    let hint = match Errno::from_raw(e.raw_os_error().unwrap_or(0)) {
        Errno::EPERM | Errno::EACCES => " (are you root? does /dev/net/tun exist?)",
        Errno::ENOENT | Errno::ENODEV | Errno::ENXIO => " (/dev/net/tun missing: is the tun module loaded?)",
        Errno::EBUSY => " (another process has this TUN open)",
        Errno::EINVAL => " (is the name taken by a non-TUN interface, or by a TUN with other flags?)",
        _ => "",
    };
    io::Error::new(e.kind(), format!("opening TUN {name}: {e}{hint}"))
}

/// The receive buffer a device needs (see [`RX_BUFFER`]).
fn rx_buffer(vnet: bool, mtu: usize) -> usize {
    if vnet { RX_BUFFER_GSO.max(mtu) } else { RX_BUFFER.max(mtu) }
}

/// TUNSETIFF's flags, as `ifreq` holds them.
const IFF_TUN: libc::c_short = libc::IFF_TUN as libc::c_short;
const IFF_NO_PI: libc::c_short = libc::IFF_NO_PI as libc::c_short;
const IFF_VNET_HDR: libc::c_short = libc::IFF_VNET_HDR as libc::c_short;
const IFF_MULTI_QUEUE: libc::c_short = libc::IFF_MULTI_QUEUE as libc::c_short;

/// An `ifreq` naming `name` (validate_name keeps it short enough for a terminating NUL),
/// with `flags`.
fn ifreq(name: &str, flags: libc::c_short) -> libc::ifreq {
    // SAFETY: all-zero is a valid ifreq.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = flags;
    req
}

/// Opens /dev/net/tun as the TUN `name` (IFF_TUN | IFF_NO_PI, and IFF_MULTI_QUEUE if
/// `multi_queue`), with offloads if `offload` and the kernel has them; returns the fd, the
/// interface's name and whether offloads are on. A kernel that refuses IFF_VNET_HDR
/// (EINVAL) or the offloads gets the plain TUN, and a warning; any other failure to open
/// is the caller's error. The plain single-queue TUN is tun-tap's; the flags it cannot
/// ask for (IFF_VNET_HDR, IFF_MULTI_QUEUE) are this module's own TUNSETIFF.
fn open_tun(name: &str, offload: bool, multi_queue: bool) -> io::Result<(File, String, bool)> {
    let queue_flag = if multi_queue { IFF_MULTI_QUEUE } else { 0 };
    let mut no_offloads = None;
    if offload {
        let result = match attach(name, IFF_TUN | IFF_NO_PI | IFF_VNET_HDR | queue_flag) {
            Ok((file, name)) => enable_offloads(&file).map(|()| (file, name)),
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => Err(e),
            Err(e) => return Err(e),
        };
        match result {
            Ok((file, name)) => return Ok((file, name, true)),
            Err(e) => no_offloads = Some(e),
        }
    }
    let (file, name) = if multi_queue {
        attach(name, IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE)?
    } else {
        let iface = Iface::without_packet_info(name, Mode::Tun).map_err(|e| open_error(name, e))?;
        let name = iface.name().to_string();
        // SAFETY: into_raw_fd hands over the interface's open fd, owned by nobody else.
        (File::from(unsafe { OwnedFd::from_raw_fd(iface.into_raw_fd()) }), name)
    };
    // Said only once the plain TUN opened: when it cannot either (a persistent TUN made
    // without multi_queue, asked for several queues), the offloads were not what failed.
    if let Some(e) = no_offloads {
        warn!("TUN {name}: no offloads ({e}); moving one MTU-sized packet per read and write");
    }
    Ok((file, name, false))
}

/// TUNSETIFF with `flags` on a fresh /dev/net/tun fd.
fn attach(name: &str, flags: libc::c_short) -> io::Result<(File, String)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|e| open_error(name, e))?;
    let mut req = ifreq(name, flags);
    // SAFETY: TUNSETIFF reads and writes one ifreq, which `req` is.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) } == -1 {
        return Err(open_error(name, io::Error::last_os_error()));
    }
    let len = req.ifr_name.iter().position(|&c| c == 0).unwrap_or(req.ifr_name.len());
    let actual =
        String::from_utf8_lossy(&req.ifr_name[..len].iter().map(|&c| c as u8).collect::<Vec<_>>()).into_owned();
    Ok((file, actual))
}

/// Sets the 10-byte header ustack parses and asks for checksum and TCP offloads. UDP
/// segmentation (TUN_F_USO4/6) is not asked for: smoltcp builds no UDP super-datagrams,
/// and the kernel would hand over ones the device would have to cut.
fn enable_offloads(file: &File) -> io::Result<()> {
    let size = VNET_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one c_int from the pointer, which is valid.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &size) } == -1 {
        return Err(io::Error::other(format!("TUNSETVNETHDRSZ: {}", io::Error::last_os_error())));
    }
    let offloads = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
    // SAFETY: TUNSETOFFLOAD takes its argument by value.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETOFFLOAD, offloads as libc::c_ulong) } == -1 {
        return Err(io::Error::other(format!("TUNSETOFFLOAD: {}", io::Error::last_os_error())));
    }
    Ok(())
}

/// The TUN's flags (TUNGETIFF).
fn tun_flags(file: &File) -> io::Result<libc::c_short> {
    let mut req = ifreq("", 0);
    // SAFETY: TUNGETIFF writes one ifreq, which `req` is.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNGETIFF, &mut req) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: TUNGETIFF filled in the flags member.
    Ok(unsafe { req.ifr_ifru.ifru_flags })
}

fn set_non_blocking(file: &File, name: &str) -> io::Result<()> {
    let mut nonblocking: libc::c_int = 1;
    // SAFETY: FIONBIO reads one c_int from the pointer, which is valid.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::FIONBIO, &mut nonblocking) } == -1 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("making TUN {name} non-blocking: {e}")));
    }
    Ok(())
}

/// The TUN's transmit queue, in packets: what the kernel may hold for the stack between
/// two reads. A TUN gets 500; a burst of a thousand connects puts a SYN, an ACK and a
/// request per client into it faster than one stack thread takes them out, and at 500
/// the kernel dropped hundreds of them (the clients retry after a second). At 1000 (what
/// the kernel gives Ethernet devices) it still dropped up to a few hundred whenever the
/// stack thread was off the CPU for a moment: the kernel answers a SYN inside the
/// client's connect(), ustack only when its thread runs, so the queue has to hold the
/// whole burst, three packets a client (BENCHMARKS.md §26). The queue is only filled
/// while the stack cannot keep up. Raised, never lowered.
const TX_QUEUE_LEN: u32 = 4096;

/// Configures the kernel side and returns the resulting MTU.
fn configure(name: &str, config: &TunConfig) -> io::Result<usize> {
    let mut netlink = Netlink::open()?;
    let link = netlink.link_by_name(name)?.ok_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, format!("interface {name} vanished right after opening it"))
    })?;
    // Each step changes only what differs, so a user may run ustack on a persistent TUN
    // that root made and configured for them once: then nothing here needs privileges.
    if let Some(mtu) = config.mtu {
        let mtu = u32::try_from(mtu)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("MTU {mtu} too large")))?;
        if mtu != link.mtu {
            netlink.set_mtu(link.index, mtu).map_err(needs_root)?;
        }
    }
    if link.tx_queue_len < TX_QUEUE_LEN
        && let Err(e) = netlink.set_tx_queue_len(link.index, TX_QUEUE_LEN)
    {
        // Only a burst's worth of packets is at stake: carry on with the shorter queue.
        debug!("TUN {name}: keeping txqueuelen {}: {e}", link.tx_queue_len);
    }
    for cidr in &config.peer_addrs {
        let addr = cidr.addr();
        if netlink.is_local(addr)? {
            continue;
        }
        netlink.add_address(link.index, addr, cidr.prefix_len()).map_err(needs_root).map_err(|e| {
            // The kernel disables IPv6 on small-MTU links and then just says EINVAL.
            let mtu = config.mtu.unwrap_or(link.mtu as usize);
            if addr.is_ipv6() && mtu < IPV6_MIN_MTU {
                io::Error::new(e.kind(), format!("{e} (IPv6 needs an MTU of at least {IPV6_MIN_MTU}, not {mtu})"))
            } else {
                e
            }
        })?;
    }
    if !link.up {
        netlink.set_up(link.index).map_err(needs_root)?;
    }
    wait_until_local(&mut netlink, &config.peer_addrs)?;
    let mtu = netlink.link_by_index(link.index)?.mtu as usize;
    if mtu == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "kernel reported MTU 0"));
    }
    Ok(mtu)
}

/// Says how to do without privileges when the kernel refuses a change for want of them.
fn needs_root(e: io::Error) -> io::Error {
    if e.kind() != io::ErrorKind::PermissionDenied {
        return e;
    }
    io::Error::new(
        e.kind(),
        format!(
            "{e} (as root, create the TUN once for this user and configure it, e.g. `ip tuntap add dev NAME mode tun \
             user USER; ip addr add 10.7.0.1/24 dev NAME; ip link set NAME up`; then ustack needs no privileges)"
        ),
    )
}

/// Waits (bounded) until the kernel accepts packets for every peer address. IPv6 puts an
/// address in service asynchronously after it is added and the link is up; returning
/// earlier would let the first packets from the stack (a SYN, a datagram) be dropped.
fn wait_until_local(netlink: &mut Netlink, addrs: &[crate::Cidr]) -> io::Result<()> {
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    let mut pause = Duration::from_micros(500);
    for cidr in addrs {
        let addr = cidr.addr();
        while !netlink.is_local(addr)? {
            if std::time::Instant::now() >= deadline {
                warn!("kernel address {addr} not in service after {READY_TIMEOUT:?}; continuing anyway");
                return Ok(());
            }
            // Nothing to wait on short of subscribing to route notifications; the wait is
            // normally well under a millisecond.
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
    Ok(())
}

impl Device for TunDevice {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let mut buf = std::mem::take(&mut self.rx_buf);
        let received = self.read_packet(&mut buf);
        self.rx_buf = buf;
        received?;
        let rx = RxToken { packet: &self.rx_buf };
        let tx = TxToken { iface: &self.iface, state: &mut self.state };
        Some((rx, tx))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<TxToken<'_>> {
        if self.state.failed {
            return None;
        }
        Some(TxToken { iface: &self.iface, state: &mut self.state })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        if self.state.tx_offload {
            // Sent checksums are the kernel's job. A received TCP packet's is the device's
            // (`VnetHdr::complete_rx`: computed for one the kernel left partial, verified
            // for one nobody had checked), so smoltcp does not sum a 64 KiB super-segment
            // a second time; UDP's are still verified by smoltcp. With a middleware that
            // damages frames (offloads off) smoltcp verifies everything again.
            caps.checksum.tcp = Checksum::None;
            caps.checksum.udp = Checksum::Rx;
            // IPv4 only: smoltcp 0.14 drops an IPv6 packet longer than the MTU even when
            // it asked for segmentation offload (`dispatch_ip`'s IPv6 arm has no
            // `segmentation_offload_size` check), so IPv6 super-segments go one way only.
            caps.segmentation.tcpv4 = std::num::NonZeroUsize::new(usize::from(u16::MAX));
        }
        caps
    }
}

impl Link for TunDevice {
    fn wait_fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }

    fn take_error(&mut self) -> Option<io::Error> {
        self.state.error.take()
    }

    fn disable_tx_offloads(&mut self) {
        self.state.tx_offload = false;
    }

    fn receive_into(&mut self, _now: Instant, frame: &mut Vec<u8>) -> bool {
        self.read_packet(frame).is_some()
    }

    fn transmit_from(&mut self, _now: Instant, frame: &[u8]) -> bool {
        self.state.send(&self.iface, frame);
        !self.state.failed
    }
}

impl TunDevice {
    /// Reads the next packet into `buf` (its length becomes the packet's), skipping
    /// empty reads; None if none is waiting or the device failed.
    fn read_packet(&mut self, buf: &mut Vec<u8>) -> Option<()> {
        if self.state.failed {
            return None;
        }
        buf.clear();
        // Exact: `reserve` may double the capacity, and a stack's 64 preread buffers of
        // 64 KiB grew to 128 KiB each on their first read with offloads (RX_BUFFER_GSO is
        // a little over 64 KiB): 4 MiB more, for nothing.
        buf.reserve_exact(rx_buffer(self.vnet, self.mtu));
        let mut hdr = [0u8; VNET_HDR_LEN];
        for _ in 0..MAX_SKIPS {
            // Straight into the spare capacity: zeroing it first would cost as much as
            // the copy this saves. The vnet header, if any, goes to `hdr` in the same read.
            let spare = buf.spare_capacity_mut();
            let iov = [
                libc::iovec { iov_base: hdr.as_mut_ptr().cast(), iov_len: hdr.len() },
                libc::iovec { iov_base: spare.as_mut_ptr().cast(), iov_len: spare.len() },
            ];
            let iov = if self.vnet { &iov[..] } else { &iov[1..] };
            // SAFETY: readv(2) writes at most each iovec's length to memory `hdr` and
            // `buf` own, and `set_len` below covers only bytes it wrote.
            let n = unsafe { libc::readv(self.iface.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int) };
            let n = match usize::try_from(n) {
                Ok(n) if self.vnet => n.checked_sub(VNET_HDR_LEN).ok_or(n),
                Ok(n) => Ok(n),
                Err(_) => Err(usize::MAX),
            };
            match n {
                Ok(0) | Err(0..VNET_HDR_LEN) => self.state.stats.rx_dropped += 1,
                Ok(len) => {
                    // SAFETY: see above; readv(2) initialized the first `len` bytes.
                    unsafe { buf.set_len(len) };
                    if self.vnet && !self.complete_rx(&hdr, buf) {
                        continue;
                    }
                    self.state.stats.rx_packets += 1;
                    self.state.stats.rx_bytes += len as u64;
                    return Some(());
                }
                Err(_) => {
                    let e = io::Error::last_os_error();
                    match e.kind() {
                        io::ErrorKind::WouldBlock => return None,
                        io::ErrorKind::Interrupted => {}
                        _ => {
                            self.state.fail(self.iface.name(), "reading from", e);
                            return None;
                        }
                    }
                }
            }
        }
        None
    }

    /// Makes a packet read behind `hdr` an ordinary one (see [`VnetHdr::complete_rx`]);
    /// false, with the packet counted as dropped, if the header is unusable.
    fn complete_rx(&mut self, hdr: &[u8; VNET_HDR_LEN], packet: &mut [u8]) -> bool {
        let result = VnetHdr::parse(hdr).and_then(|hdr| hdr.complete_rx(packet).map(|()| hdr));
        match result {
            Ok(hdr) => {
                self.state.stats.rx_gso_packets += u64::from(hdr.is_gso());
                true
            }
            Err(e) => {
                self.state.stats.rx_dropped += 1;
                debug!("TUN {}: dropped a {}-byte packet: {e}", self.iface.name(), packet.len());
                false
            }
        }
    }
}

impl AsFd for TunDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the fd belongs to `self.iface`, which outlives the returned borrow.
        unsafe { BorrowedFd::borrow_raw(self.iface.as_raw_fd()) }
    }
}

impl std::fmt::Debug for TunDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunDevice")
            .field("name", &self.name())
            .field("mtu", &self.mtu)
            .field("stats", &self.state.stats)
            .field("failed", &self.state.failed)
            .finish()
    }
}

/// A packet read from the TUN, borrowed from the device's receive buffer.
#[doc(hidden)]
pub struct RxToken<'a> {
    packet: &'a [u8],
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.packet)
    }
}

/// Writes one packet to the TUN, built in the device's transmit buffer.
#[doc(hidden)]
pub struct TxToken<'a> {
    iface: &'a TunFile,
    state: &'a mut State,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let state = self.state;
        let mut buf = std::mem::take(&mut state.tx_buf);
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let result = f(&mut buf[..len]);
        state.send(self.iface, &buf[..len]);
        state.tx_buf = buf;
        result
    }
}

impl State {
    /// Writes one packet to the TUN, behind the vnet header it needs if offloads are on
    /// (with its checksum field as [`VnetHdr::plan_tx`] says). A write error that loses
    /// only this packet is counted; any other stops the device.
    fn send(&mut self, iface: &TunFile, packet: &[u8]) {
        if self.failed {
            return;
        }
        let (hdr, field) = match (self.vnet, self.tx_offload) {
            (false, _) => (None, None),
            (true, false) => (Some(VnetHdr::default()), None),
            (true, true) => {
                let (hdr, field) = VnetHdr::plan_tx(packet, self.mtu);
                (Some(hdr), field)
            }
        };
        let hdr = hdr.map(VnetHdr::to_bytes);
        loop {
            match iface.send(hdr.as_ref().map(|h| &h[..]), packet, field) {
                Ok(_) => {
                    self.down_reported = false;
                    self.stats.tx_packets += 1;
                    self.stats.tx_bytes += packet.len() as u64;
                    self.stats.tx_gso_packets += u64::from(hdr.is_some_and(|h| h[1] != 0));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(Errno::EIO as i32) => {
                    // The interface is administratively down; like a NIC without link,
                    // drop until someone brings it up again.
                    self.stats.tx_dropped += 1;
                    if !self.down_reported {
                        self.down_reported = true;
                        warn!("TUN {} is down: dropping packets until it is up again", iface.name());
                    }
                }
                Err(e) if is_transient_tx_error(&e) => {
                    self.stats.tx_dropped += 1;
                    debug!("TUN {}: dropped a {}-byte packet: {e}", iface.name(), packet.len());
                }
                Err(e) => self.fail(iface.name(), "writing to", e),
            }
            return;
        }
    }
}

/// The open TUN: its fd and its interface name.
struct TunFile {
    file: File,
    name: String,
}

impl TunFile {
    fn name(&self) -> &str {
        &self.name
    }

    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }

    /// Writes one packet, behind `hdr` if given, with the two bytes at `field.0` replaced
    /// by `field.1` (a TUN write is all or nothing).
    fn send(&self, hdr: Option<&[u8]>, packet: &[u8], field: Option<(usize, [u8; 2])>) -> io::Result<usize> {
        match (hdr, field) {
            (None, _) => (&self.file).write(packet),
            (Some(hdr), None) => (&self.file).write_vectored(&[io::IoSlice::new(hdr), io::IoSlice::new(packet)]),
            (Some(hdr), Some((at, value))) => (&self.file).write_vectored(&[
                io::IoSlice::new(hdr),
                io::IoSlice::new(&packet[..at]),
                io::IoSlice::new(&value),
                io::IoSlice::new(&packet[at + 2..]),
            ]),
        }
    }
}

/// Write errors that lose one packet but leave the device usable.
fn is_transient_tx_error(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
        || matches!(Errno::from_raw(e.raw_os_error().unwrap_or(0)), Errno::ENOBUFS | Errno::ENOMEM | Errno::EINVAL)
}

/// Why this process cannot create TUN devices in a new network namespace, or `Ok`.
///
/// Rather than guessing from the uid, it tries: creates a [`NetNs`](crate::sys::NetNs) and opens (then closes)
/// a TUN device inside it. The answer is computed once per process.
pub fn tun_support() -> Result<(), String> {
    static SUPPORT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    SUPPORT.get_or_init(probe_tun_support).clone()
}

fn probe_tun_support() -> Result<(), String> {
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Err("/dev/net/tun does not exist (load the tun module, or give the container the device)".into());
    }
    let ns = crate::sys::NetNs::new().map_err(|e| e.to_string())?;
    let config = TunConfig { name: "ustackprobe0".into(), offload: false, ..TunConfig::default() };
    ns.run(|| TunDevice::open(&config).map(drop))
        .map_err(|e| format!("cannot enter a network namespace: {e}"))?
        .map_err(|e| format!("cannot open a TUN device in a network namespace: {e}"))
}
