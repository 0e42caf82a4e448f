//! A lab: a fresh network namespace holding a TUN whose kernel side is 10.7.0.1 and
//! fd00:7::1, with a ustack stack on the other side at 10.7.0.2 and fd00:7::2. The
//! namespace disappears when the lab (and every thread inside it) is gone.

use std::str::FromStr;

use smoltcp::wire::IpCidr;
use ustack::device::{Link, TunConfig, TunDevice};
use ustack::sys::NetNs;
use ustack::{Stack, StackConfig};

pub const KERNEL: &str = "10.7.0.1";
pub const USTACK: &str = "10.7.0.2";
pub const KERNEL6: &str = "fd00:7::1";
pub const USTACK6: &str = "fd00:7::2";

pub struct Lab {
    pub stack: Stack,
    pub ns: NetNs,
}

pub fn lab() -> Lab {
    lab_with(StackConfig::default())
}

pub fn lab_with(config: StackConfig) -> Lab {
    lab_with_device(config, |tun| tun)
}

/// A lab whose stack runs on `wrap(tun)`: middleware (a fault injector, a tracer) between
/// the stack and the TUN.
pub fn lab_with_device<D: Link + 'static>(config: StackConfig, wrap: impl FnOnce(TunDevice) -> D) -> Lab {
    crate::init_test_logging();
    let cidr = |s: &str| IpCidr::from_str(s).unwrap();
    let ns = NetNs::new().expect("creating a network namespace");
    let tun = TunConfig {
        name: "ustack0".into(),
        peer_addrs: vec![cidr(&format!("{KERNEL}/24")), cidr(&format!("{KERNEL6}/64"))],
        mtu: None,
    };
    let device = ns.run(|| TunDevice::open(&tun)).unwrap().expect("opening the TUN inside the namespace");
    let config = StackConfig { addrs: vec![cidr(&format!("{USTACK}/24")), cidr(&format!("{USTACK6}/64"))], ..config };
    let stack = Stack::new(wrap(device), config).expect("starting the stack");
    Lab { stack, ns }
}
