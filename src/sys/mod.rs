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

/// The name this host gives the interface with index `index` in the current network
/// namespace (`if_indextoname(3)`), as tcpdump looks up a cooked v2 capture's interface.
pub fn interface_name(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` holds IF_NAMESIZE bytes, what if_indextoname writes at most (name and
    // NUL); on success the result points into `buf`, NUL-terminated.
    let named = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if named.is_null() {
        return None;
    }
    // SAFETY: if_indextoname succeeded, so `buf` holds a NUL-terminated string.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// The local time zone's offset from UTC, in seconds, at `secs` since the Unix epoch, as
/// the C library's `localtime_r(3)` finds it (from `TZ`, else `/etc/localtime`): what
/// tcpdump prints its timestamps in. `None` if the C library cannot say.
pub fn local_utc_offset(secs: i64) -> Option<i64> {
    // time_t is 32 bits on some targets.
    #[allow(clippy::useless_conversion)]
    let t: libc::time_t = secs.try_into().ok()?;
    // SAFETY: a zeroed `tm` (integers and a null zone pointer) is a valid value to be
    // overwritten; localtime_r writes only into `tm` (reading TZ the first time, as glibc
    // and musl do), returning null on failure.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return None;
        }
        Some(tm.tm_gmtoff)
    }
}
