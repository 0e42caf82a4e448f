//! The networks the bench measures on, each in network namespaces of its own that vanish
//! with it: a TUN whose kernel side is the client (for ustack and for raw smoltcp; a lab
//! of the test kit's, in a client namespace prepared here), and a veth pair between two
//! namespaces (for the kernel ↔ kernel baseline).

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use ustack::Cidr;
use ustack::StackConfig;
use ustack::device::TunDevice;
use ustack::sys::NetNs;
use ustack::sys::netlink::Netlink;
use ustack_testkit::lab::{Lab, LabNet};

use super::os;
use super::raw::RawEngine;

/// The kernel side of the TUN: where kernel clients connect from.
pub const TUN_KERNEL: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// ustack's (or raw smoltcp's) address on the TUN.
pub const TUN_STACK: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// The client end of the veth pair.
pub const VETH_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
/// The server end of the veth pair.
pub const VETH_SERVER: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);

const PREFIX: u8 = 24;
pub const TUN_NAME: &str = "bench0";
const VETH_CLIENT_NAME: &str = "benchc";
const VETH_SERVER_NAME: &str = "benchs";

/// The ephemeral ports a client namespace uses: wider than Linux's default 32768–60999,
/// so a second of sequential connects at the kernel's rate (tens of thousands, each
/// leaving a TIME-WAIT behind) does not run out of ports to one server port.
const CLIENT_PORTS: (u16, u16) = (10_000, 65_000);

/// How long a fresh veth may take to become usable.
const LINK_READY: Duration = Duration::from_secs(5);

fn cidr(ip: Ipv4Addr) -> Cidr {
    Cidr::new(ip, PREFIX).expect("a prefix no longer than 32 bits")
}

/// A new namespace for kernel clients, with a wide ephemeral port range.
fn client_namespace() -> io::Result<NetNs> {
    let ns = NetNs::new()?;
    os::set_port_range(&ns, CLIENT_PORTS.0, CLIENT_PORTS.1)?;
    Ok(ns)
}

/// The TUN of the ustack and raw-smoltcp runs: its kernel side at [`TUN_KERNEL`], the
/// stack at [`TUN_STACK`], with `mtu`, with offloads if `offload`.
fn tun_net(mtu: Option<usize>, offload: bool) -> LabNet {
    LabNet { tun: TUN_NAME.into(), kernel: vec![cidr(TUN_KERNEL)], stack: vec![cidr(TUN_STACK)], mtu, offload }
}

/// A TUN in a new client namespace: its kernel side at [`TUN_KERNEL`] with `mtu`.
/// Returns the namespace (kernel clients run in it) and the device.
pub fn tun(mtu: Option<usize>) -> io::Result<(NetNs, TunDevice)> {
    let ns = client_namespace()?;
    let device = tun_net(mtu, false).open_in(&ns)?;
    Ok((ns, device))
}

/// Raw smoltcp ([`RawEngine`]) at [`TUN_STACK`] on a TUN of `mtu`, with `tcp_buffer`-byte
/// socket buffers. Returns the namespace kernel clients run in, and the engine.
pub fn raw_lab(mtu: Option<usize>, tcp_buffer: usize) -> io::Result<(NetNs, RawEngine)> {
    let (ns, device) = tun(mtu)?;
    let addr = smoltcp::wire::IpCidr::new(smoltcp::wire::IpAddress::Ipv4(TUN_STACK), PREFIX);
    Ok((ns, RawEngine::new(device, addr, tcp_buffer)))
}

/// ustack on a TUN of `mtu` (the kernel's default if `None`), with `tcp_buffer`-byte
/// socket buffers and TUN offloads if `offload`: the stack at [`TUN_STACK`], kernel
/// clients in the lab's namespace. With `shards` above 1, the stack has that many shards
/// on a multi-queue TUN.
pub fn ustack_lab(mtu: Option<usize>, tcp_buffer: usize, shards: usize, offload: bool) -> io::Result<Lab> {
    let config = StackConfig { tcp_buffer, ..StackConfig::default() };
    if shards <= 1 {
        return Lab::start_in(client_namespace()?, &tun_net(mtu, offload), config, |tun| tun);
    }
    let ns = client_namespace()?;
    let net = tun_net(mtu, offload);
    let queues = net.open_queues_in(&ns, shards)?;
    let stack = ustack::Stack::sharded(queues, net.stack_config(config))?;
    Ok(Lab { stack, ns })
}

/// Two kernel stacks joined by a veth pair: clients in `client` at [`VETH_CLIENT`],
/// servers in `server` at [`VETH_SERVER`].
pub struct VethLab {
    pub client: NetNs,
    pub server: NetNs,
}

impl VethLab {
    /// A veth pair of `mtu` (the kernel's default 1500 if `None`), up and usable.
    pub fn new(mtu: Option<usize>) -> io::Result<VethLab> {
        let client = client_namespace()?;
        let server = NetNs::new()?;
        let mtu = mtu.map(|m| u32::try_from(m).unwrap_or(u32::MAX));
        client.run(|| -> io::Result<()> {
            let mut netlink = Netlink::open()?;
            netlink.add_veth_pair(VETH_CLIENT_NAME, VETH_SERVER_NAME, Some(server.as_fd()))?;
            configure(&mut netlink, VETH_CLIENT_NAME, VETH_CLIENT, mtu)
        })??;
        server.run(|| configure(&mut Netlink::open()?, VETH_SERVER_NAME, VETH_SERVER, mtu))??;
        client.run(|| wait_oper_up(VETH_CLIENT_NAME))??;
        server.run(|| wait_oper_up(VETH_SERVER_NAME))??;
        Ok(VethLab { client, server })
    }
}

fn configure(netlink: &mut Netlink, name: &str, ip: Ipv4Addr, mtu: Option<u32>) -> io::Result<()> {
    let link = netlink
        .link_by_name(name)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("veth {name} missing after creation")))?;
    if let Some(mtu) = mtu {
        netlink.set_mtu(link.index, mtu)?;
    }
    netlink.add_address(link.index, IpAddr::V4(ip), PREFIX)?;
    netlink.set_up(link.index)
}

/// Waits (bounded) until the link is operationally up: before that the kernel drops what
/// is sent on it, and a lost SYN costs a second.
fn wait_oper_up(name: &str) -> io::Result<()> {
    let mut netlink = Netlink::open()?;
    let link = netlink
        .link_by_name(name)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("veth {name} vanished")))?;
    let deadline = Instant::now() + LINK_READY;
    while !netlink.is_oper_up(link.index)? {
        if Instant::now() > deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("veth {name} not up after {LINK_READY:?}")));
        }
        // The link watcher runs from a work queue; nothing to wait on short of a netlink
        // subscription, and this takes milliseconds.
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}
