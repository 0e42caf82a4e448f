//! Operating-system plumbing: rtnetlink configuration and network namespaces.
//!
//! Everything here talks to the kernel directly (no `ip` subprocesses), so ustack works
//! in minimal containers and reports real errors.

pub mod netlink;
pub mod netns;

pub use netns::NetNs;

/// Skips the current test (returns from it) when [`device::tun_support`](crate::device::tun_support)
/// fails, printing why; under CI (`CI=true`) it panics instead, so CI cannot silently
/// skip the tests that need a TUN.
#[macro_export]
macro_rules! require_tun {
    () => {
        if let ::std::result::Result::Err(reason) = $crate::device::tun_support() {
            if ::std::env::var("CI").as_deref() == ::std::result::Result::Ok("true") {
                ::std::panic!("CI=true but TUN devices are unavailable: {reason}");
            }
            ::std::eprintln!("skipping: {reason}");
            return;
        }
    };
}
