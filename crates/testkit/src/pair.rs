//! Two ustack stacks joined by the in-memory wire: 10.0.0.1 ("a") and 10.0.0.2 ("b"),
//! with fd00::1 and fd00::2 for IPv6 — or one of them alone, with the other end of its
//! wire left to the test.

use std::str::FromStr;

use ustack::Cidr;
use ustack::device::{Wire, WireEnd};
use ustack::{Stack, StackConfig};

use crate::init_test_logging;

/// Stack "a" and stack "b", each at one end of the wire.
pub struct Pair {
    pub a: Stack,
    pub b: Stack,
}

/// Stack "a" (IPv4).
pub const A: &str = "10.0.0.1";
/// Stack "b" (IPv4).
pub const B: &str = "10.0.0.2";
/// Stack "a" (IPv6).
pub const A6: &str = "fd00::1";
/// Stack "b" (IPv6).
pub const B6: &str = "fd00::2";

/// A stack's configuration with the addresses `v4`/24 and `v6`/64.
pub fn config(v4: &str, v6: &str) -> StackConfig {
    StackConfig {
        addrs: vec![Cidr::from_str(&format!("{v4}/24")).unwrap(), Cidr::from_str(&format!("{v6}/64")).unwrap()],
        ..StackConfig::default()
    }
}

/// Stacks "a" and "b" with the default configuration.
pub fn pair() -> Pair {
    pair_with(config(A, A6), config(B, B6))
}

/// Stacks "a" and "b" configured as given.
pub fn pair_with(a: StackConfig, b: StackConfig) -> Pair {
    init_test_logging();
    let (end_a, end_b) = Wire::pair(1500).unwrap();
    Pair { a: Stack::new(end_a, a).unwrap(), b: Stack::new(end_b, b).unwrap() }
}

/// One stack with raw access to the other end of its wire, where no stack runs: frames
/// sent there are never answered unless the test answers them itself.
pub struct Lone {
    pub stack: Stack,
    pub wire: WireEnd,
}

/// Stack "a" (10.0.0.1, fd00::1) alone: nobody answers at 10.0.0.2.
pub fn lone_a() -> Lone {
    init_test_logging();
    let (end_a, end_b) = Wire::pair(1500).unwrap();
    Lone { stack: Stack::new(end_a, config(A, A6)).unwrap(), wire: end_b }
}

/// Stack "b" (10.0.0.2, fd00::2) alone; the test plays "a" through `wire`.
pub fn lone_b() -> Lone {
    init_test_logging();
    let (end_a, end_b) = Wire::pair(1500).unwrap();
    Lone { stack: Stack::new(end_b, config(B, B6)).unwrap(), wire: end_a }
}
