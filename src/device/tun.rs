//! A Linux TUN interface as a smoltcp device: IP packets in and out of the kernel.
//!
//! The kernel side of the TUN is an ordinary interface (the "peer"): [`TunDevice::open`]
//! gives it addresses, an MTU and brings it up over rtnetlink, so the kernel routes to the
//! userspace stack through it. Unlike smoltcp's own `TunTapInterface`, this device never
//! panics on I/O errors: a failure stops the device and is reported through
//! [`Link::take_error`].

use std::fs::File;
use std::io;
use std::io::Write as _;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::time::Duration;

use log::{debug, warn};
use nix::errno::Errno;
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use tun_tap::{Iface, Mode};

use super::Link;
use crate::sys::netlink::{MAX_IFNAME_LEN, Netlink};

/// The receive buffer holds any IP packet (65535 bytes), not just one MTU: the MTU can be
/// raised behind our back (`ip link set mtu`), and a short read would truncate packets.
const RX_BUFFER: usize = 65535;

/// Reads per [`Device::receive`] call that may be skipped (empty frames) before giving up
/// until the next poll, so a misbehaving fd cannot spin the stack thread.
const MAX_SKIPS: usize = 64;

/// How long [`TunDevice::open`] waits for the kernel to put the peer addresses in service.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// The kernel refuses IPv6 on links with a smaller MTU.
const IPV6_MIN_MTU: usize = 1280;

/// How to open and configure a TUN interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
}

/// A TUN interface (`IFF_TUN | IFF_NO_PI`, non-blocking) as a smoltcp [`Device`] with
/// `Medium::Ip`.
pub struct TunDevice {
    iface: TunFile,
    mtu: usize,
    rx_buf: Vec<u8>,
    state: State,
}

/// The part of the device a [`TxToken`] needs, split from the receive buffer so that
/// `receive` can hand out both tokens without copying the received packet.
struct State {
    tx_buf: Vec<u8>,
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
        let iface = Iface::without_packet_info(name, Mode::Tun).map_err(|e| open_error(name, e))?;
        iface
            .set_non_blocking()
            .map_err(|e| io::Error::new(e.kind(), format!("making TUN {name} non-blocking: {e}")))?;
        let name = iface.name().to_string();
        let mtu =
            configure(&name, config).map_err(|e| io::Error::new(e.kind(), format!("configuring TUN {name}: {e}")))?;
        debug!("TUN {name} open, MTU {mtu}, peer addresses {:?}", config.peer_addrs);
        // SAFETY: into_raw_fd hands over the interface's open fd, owned by nobody else.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(iface.into_raw_fd()) });
        Ok(TunDevice::with_file(TunFile { file, name }, mtu))
    }

    /// Opens `queues` queues of one TUN interface (`IFF_MULTI_QUEUE`), each its own fd and
    /// its own device, and configures the kernel side once, as [`TunDevice::open`] does.
    /// The kernel spreads flows over the queues and, for a flow a queue has written, sends
    /// that flow's packets back on the same queue (drivers/net/tun.c: `tun_flow_update`,
    /// `tun_automq_select_queue`): one queue per stack shard. One queue is
    /// [`TunDevice::open`] (a TUN without `IFF_MULTI_QUEUE`, attachable to as before).
    pub fn open_queues(config: &TunConfig, queues: usize) -> io::Result<Vec<TunDevice>> {
        if queues <= 1 {
            return Ok(vec![TunDevice::open(config)?]);
        }
        let name = config.name.as_str();
        validate_name(name)?;
        let first = open_multi_queue(name).map_err(|e| {
            // An existing TUN without IFF_MULTI_QUEUE refuses the flag with EINVAL.
            let single_queue = e.raw_os_error() == Some(libc::EINVAL);
            let e = open_error(name, e);
            match single_queue {
                true => io::Error::new(
                    e.kind(),
                    format!(
                        "{e}; a persistent TUN needs multi_queue for {queues} queues (ip tuntap add ... multi_queue)"
                    ),
                ),
                false => e,
            }
        })?;
        let name = first.name.clone();
        let mut files = vec![first];
        for _ in 1..queues {
            files.push(open_multi_queue(&name).map_err(|e| open_error(&name, e))?);
        }
        let mtu =
            configure(&name, config).map_err(|e| io::Error::new(e.kind(), format!("configuring TUN {name}: {e}")))?;
        debug!("TUN {name} open with {queues} queues, MTU {mtu}, peer addresses {:?}", config.peer_addrs);
        Ok(files.into_iter().map(|file| TunDevice::with_file(file, mtu)).collect())
    }

    /// A device on a TUN opened (and configured) elsewhere, e.g. by `ustack run` for the
    /// program it runs, which inherits the fd: `fd` is the TUN's (IFF_TUN | IFF_NO_PI),
    /// `name` its interface name (for messages), `mtu` its MTU. Makes it non-blocking.
    pub fn from_fd(fd: OwnedFd, name: &str, mtu: usize) -> io::Result<TunDevice> {
        let mut nonblocking: libc::c_int = 1;
        // SAFETY: FIONBIO reads one c_int from the pointer, which is valid.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONBIO, &mut nonblocking) } == -1 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("making TUN {name} non-blocking: {e}")));
        }
        Ok(TunDevice::with_file(TunFile { file: File::from(fd), name: name.to_string() }, mtu))
    }

    /// Gives up the device for its fd, to hand the TUN to another process (`ustack run`).
    pub fn into_fd(self) -> OwnedFd {
        OwnedFd::from(self.iface.file)
    }

    fn with_file(iface: TunFile, mtu: usize) -> TunDevice {
        TunDevice {
            iface,
            mtu,
            rx_buf: vec![0; RX_BUFFER.max(mtu)],
            state: State {
                tx_buf: vec![0; mtu],
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

/// tun-tap silently truncates long names, and the kernel would then open or create a
/// different interface; refuse instead.
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

/// Opens one queue of the multi-queue TUN `name` (created by the first call), non-blocking.
/// tun-tap cannot ask for `IFF_MULTI_QUEUE`, so this is the TUNSETIFF ioctl itself.
fn open_multi_queue(name: &str) -> io::Result<TunFile> {
    /// `_IOW('T', 202, int)` from linux/if_tun.h.
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    const IFF_TUN: libc::c_short = 0x0001;
    const IFF_NO_PI: libc::c_short = 0x1000;
    const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    let mut req = IfReq { name: [0; libc::IFNAMSIZ], flags: IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE, _pad: [0; 22] };
    // validate_name has bounded it to IFNAMSIZ - 1 bytes, so the name stays NUL-terminated.
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which IfReq lays out (40 bytes).
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req) } == -1 {
        return Err(io::Error::last_os_error());
    }
    let len = req.name.iter().position(|&b| b == 0).unwrap_or(req.name.len());
    Ok(TunFile { file, name: String::from_utf8_lossy(&req.name[..len]).into_owned() })
}

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
        buf.reserve(RX_BUFFER.max(self.mtu));
        for _ in 0..MAX_SKIPS {
            // Straight into the spare capacity: zeroing it first would cost as much as
            // the copy this saves.
            let spare = buf.spare_capacity_mut();
            // SAFETY: read(2) writes at most `spare.len()` bytes to memory `buf` owns,
            // and `set_len` below covers only bytes it wrote.
            let n = unsafe { libc::read(self.iface.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
            match usize::try_from(n) {
                Ok(0) => self.state.stats.rx_dropped += 1,
                Ok(len) => {
                    // SAFETY: see above; read(2) initialized the first `len` bytes.
                    unsafe { buf.set_len(len) };
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
    /// Writes one packet to the TUN. A write error that loses only this packet is
    /// counted; any other stops the device.
    fn send(&mut self, iface: &TunFile, packet: &[u8]) {
        if self.failed {
            return;
        }
        loop {
            match iface.send(packet) {
                Ok(_) => {
                    self.down_reported = false;
                    self.stats.tx_packets += 1;
                    self.stats.tx_bytes += packet.len() as u64;
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

    /// Writes one packet (a TUN write is all or nothing).
    fn send(&self, packet: &[u8]) -> io::Result<usize> {
        (&self.file).write(packet)
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
    let config = TunConfig { name: "ustackprobe0".into(), peer_addrs: Vec::new(), mtu: None };
    ns.run(|| TunDevice::open(&config).map(drop))
        .map_err(|e| format!("cannot enter a network namespace: {e}"))?
        .map_err(|e| format!("cannot open a TUN device in a network namespace: {e}"))
}
