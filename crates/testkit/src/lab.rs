//! A lab: a fresh network namespace holding a TUN whose kernel side is the peer, with a
//! ustack stack on the other side. The namespace disappears when the lab (and every
//! thread inside it) is gone; nothing is configured in the host's namespace. Needs root
//! (CAP_SYS_ADMIN and CAP_NET_ADMIN); tests guard with `ustack::require_tun!()`.
//!
//! [`LabNet`] says where things live — the TUN's name, the kernel side's and the stack's
//! addresses, the MTU — and opens the TUN in a namespace; [`Lab`] puts a stack on it. The
//! tests, the bench and `ustack demo` all build their namespaces this way, each with its
//! own [`LabNet`]: the tests' is [`LabNet::dual_stack`] (through [`lab`] and friends), the
//! demo's [`LabNet::ipv4`], the bench's its own addresses in a namespace it prepares.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ustack::Cidr;
use ustack::device::{Link, TunConfig, TunDevice};
use ustack::sys::NetNs;
use ustack::{Stack, StackConfig};

/// The kernel side of the default lab's TUN (IPv4), as the tests write addresses.
pub const KERNEL: &str = "10.7.0.1";
/// The default lab's stack (IPv4).
pub const USTACK: &str = "10.7.0.2";
/// The kernel side of the default lab's TUN (IPv6).
pub const KERNEL6: &str = "fd00:7::1";
/// The default lab's stack (IPv6).
pub const USTACK6: &str = "fd00:7::2";

/// The default lab's TUN, as `ustack serve` names its own.
pub const TUN_NAME: &str = "ustack0";

/// Where a lab's TUN and stack live.
#[derive(Clone, Debug)]
pub struct LabNet {
    /// The TUN's name inside the namespace.
    pub tun: String,
    /// The kernel side's addresses: the namespace's own, routed into the TUN.
    pub kernel: Vec<Cidr>,
    /// The stack's addresses.
    pub stack: Vec<Cidr>,
    /// The TUN's MTU; the kernel's default (1500) if `None`.
    pub mtu: Option<usize>,
    /// Whether the TUN asks for offloads (see [`TunConfig::offload`]).
    pub offload: bool,
}

/// `ip/len`.
pub fn cidr(ip: impl Into<IpAddr>, len: u8) -> Cidr {
    Cidr::new(ip, len).expect("a prefix length that fits the address")
}

impl LabNet {
    /// The README's network, which `ustack serve` uses by default: TUN `ustack0`, the
    /// kernel at [`KERNEL`]/24 and [`KERNEL6`]/64, the stack at [`USTACK`]/24 and
    /// [`USTACK6`]/64.
    pub fn dual_stack() -> LabNet {
        let v4 = |s: &str| s.parse::<Ipv4Addr>().expect("an IPv4 address");
        let v6 = |s: &str| s.parse::<Ipv6Addr>().expect("an IPv6 address");
        LabNet {
            tun: TUN_NAME.into(),
            kernel: vec![cidr(v4(KERNEL), 24), cidr(v6(KERNEL6), 64)],
            stack: vec![cidr(v4(USTACK), 24), cidr(v6(USTACK6), 64)],
            mtu: None,
            offload: true,
        }
    }

    /// TUN `ustack0` with IPv4 only: the kernel at `kernel`/24, the stack at `stack`/24.
    /// Without IPv6 the kernel sends nothing of its own (router solicitations, MLD) into
    /// the TUN, so every packet on it is one the lab's programs sent.
    pub fn ipv4(kernel: Ipv4Addr, stack: Ipv4Addr) -> LabNet {
        LabNet {
            tun: TUN_NAME.into(),
            kernel: vec![cidr(kernel, 24)],
            stack: vec![cidr(stack, 24)],
            mtu: None,
            offload: true,
        }
    }

    /// A new network namespace with this TUN in it, its kernel side configured and up.
    pub fn open(&self) -> io::Result<(NetNs, TunDevice)> {
        let ns = NetNs::new()?;
        let device = self.open_in(&ns)?;
        Ok((ns, device))
    }

    /// This TUN, created in `ns` (a namespace the caller made, and perhaps configured
    /// further), its kernel side configured and up.
    pub fn open_in(&self, ns: &NetNs) -> io::Result<TunDevice> {
        let config =
            TunConfig { name: self.tun.clone(), peer_addrs: self.kernel.clone(), mtu: self.mtu, offload: self.offload };
        ns.run(|| TunDevice::open(&config))
            .and_then(|opened| opened)
            .map_err(|e| io::Error::new(e.kind(), format!("opening the TUN {} inside the namespace: {e}", self.tun)))
    }

    /// This TUN with `queues` queues (`IFF_MULTI_QUEUE`, one per stack shard), created
    /// in `ns`, its kernel side configured and up.
    pub fn open_queues_in(&self, ns: &NetNs, queues: usize) -> io::Result<Vec<TunDevice>> {
        let config =
            TunConfig { name: self.tun.clone(), peer_addrs: self.kernel.clone(), mtu: self.mtu, offload: self.offload };
        ns.run(|| TunDevice::open_queues(&config, queues))
            .and_then(|opened| opened)
            .map_err(|e| io::Error::new(e.kind(), format!("opening the TUN {} inside the namespace: {e}", self.tun)))
    }

    /// `config` with this lab's stack addresses.
    pub fn stack_config(&self, config: StackConfig) -> StackConfig {
        StackConfig { addrs: self.stack.clone(), ..config }
    }
}

/// A stack on a TUN inside a namespace of its own.
///
/// The stack is dropped first, then the namespace.
pub struct Lab {
    /// The stack, at the lab's stack addresses.
    pub stack: Stack,
    /// The namespace: kernel programs run in it ([`NetNs::run`], [`NetNs::spawn`]).
    pub ns: NetNs,
}

impl Lab {
    /// A new namespace with `net`'s TUN, and a stack on it configured by `config` (whose
    /// addresses are replaced by `net`'s).
    pub fn start(net: &LabNet, config: StackConfig) -> io::Result<Lab> {
        Lab::start_in(NetNs::new()?, net, config, |tun| tun)
    }

    /// As [`Lab::start`], in `ns` (a namespace the caller prepared), with the stack on
    /// `wrap(tun)`: middleware (a fault injector, a tracer) between the stack and the TUN.
    pub fn start_in<D: Link + 'static>(
        ns: NetNs,
        net: &LabNet,
        config: StackConfig,
        wrap: impl FnOnce(TunDevice) -> D,
    ) -> io::Result<Lab> {
        let device = net.open_in(&ns)?;
        let stack = Stack::new(wrap(device), net.stack_config(config))
            .map_err(|e| io::Error::new(e.kind(), format!("starting the stack: {e}")))?;
        Ok(Lab { stack, ns })
    }
}

/// The tests' lab ([`LabNet::dual_stack`]) with a default stack of `shards` shards
/// ([`Stack::sharded`] on a multi-queue TUN); panics if it cannot be made.
pub fn lab_sharded(shards: usize) -> Lab {
    crate::init_test_logging();
    let ns = NetNs::new().expect("creating a network namespace");
    let net = LabNet::dual_stack();
    let queues = net.open_queues_in(&ns, shards).expect("opening the TUN's queues");
    let stack = Stack::sharded(queues, net.stack_config(StackConfig::default())).expect("starting the stack");
    Lab { stack, ns }
}

/// The tests' lab ([`LabNet::dual_stack`]) with a default stack; panics if it cannot be
/// made (guard the test with `ustack::require_tun!()`).
pub fn lab() -> Lab {
    lab_with(StackConfig::default())
}

/// The tests' lab with a stack configured by `config` (its addresses are the lab's).
pub fn lab_with(config: StackConfig) -> Lab {
    lab_with_device(config, |tun| tun)
}

/// The tests' lab whose stack runs on `wrap(tun)`: middleware (a fault injector, a
/// tracer) between the stack and the TUN.
pub fn lab_with_device<D: Link + 'static>(config: StackConfig, wrap: impl FnOnce(TunDevice) -> D) -> Lab {
    crate::init_test_logging();
    let ns = NetNs::new().expect("creating a network namespace");
    Lab::start_in(ns, &LabNet::dual_stack(), config, wrap).expect("starting the lab")
}
