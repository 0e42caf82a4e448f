//! Operating-system plumbing: rtnetlink configuration and network namespaces.
//!
//! Everything here talks to the kernel directly (no `ip` subprocesses), so ustack works
//! in minimal containers and reports real errors.

use std::path::Path;
use std::sync::OnceLock;

pub mod netlink;
pub mod netns;

pub use netns::NetNs;

/// Why this process cannot create TUN devices in a new network namespace, or `Ok`.
///
/// Rather than guessing from the uid, it tries: creates a [`NetNs`] and opens (then closes)
/// a TUN device inside it. The answer is computed once per process.
pub fn tun_support() -> Result<(), String> {
    static SUPPORT: OnceLock<Result<(), String>> = OnceLock::new();
    SUPPORT.get_or_init(probe_tun_support).clone()
}

fn probe_tun_support() -> Result<(), String> {
    use crate::device::{TunConfig, TunDevice};

    if !Path::new("/dev/net/tun").exists() {
        return Err("/dev/net/tun does not exist (load the tun module, or give the container the device)".into());
    }
    let ns = NetNs::new().map_err(|e| e.to_string())?;
    let config = TunConfig { name: "ustackprobe0".into(), peer_addrs: Vec::new(), mtu: None };
    ns.run(|| TunDevice::open(&config).map(drop))
        .map_err(|e| format!("cannot enter a network namespace: {e}"))?
        .map_err(|e| format!("cannot open a TUN device in a network namespace: {e}"))
}

/// Skips the current test (returns from it) when [`sys::tun_support`](crate::sys::tun_support)
/// fails, printing why; under CI (`CI=true`) it panics instead, so CI cannot silently
/// skip the tests that need a TUN.
#[macro_export]
macro_rules! require_tun {
    () => {
        if let ::std::result::Result::Err(reason) = $crate::sys::tun_support() {
            if ::std::env::var("CI").as_deref() == ::std::result::Result::Ok("true") {
                ::std::panic!("CI=true but TUN devices are unavailable: {reason}");
            }
            ::std::eprintln!("skipping: {reason}");
            return;
        }
    };
}
