//! Where a stack may send: its own subnets (the TUN is one link), and the rest of the
//! world only through a gateway ([`super::StackConfig::gateways`]). A destination with no
//! route, or one no packet may be sent to, is refused at the socket call with the errno
//! Linux gives, and never goes out on the TUN.
//!
//! Measured against Linux 6.18 in a namespace holding a TUN at 10.7.0.1/24 and
//! fd00:7::1/64 (what a stack's configuration amounts to), with and without a default
//! route; `tests/api_errno.rs` pins each answer:
//!
//! | destination | TCP connect() | UDP sendto()/connect() |
//! | --- | --- | --- |
//! | outside every subnet, no gateway | ENETUNREACH | ENETUNREACH |
//! | a subnet's broadcast, or 255.255.255.255 with a gateway | ENETUNREACH | EACCES (no SO_BROADCAST) |
//! | 255.255.255.255 without a gateway | ENETUNREACH | ENETUNREACH |
//! | multicast | ENETUNREACH | sent if routed (a gateway), else ENETUNREACH |
//! | 127.0.0.0/8, ::1 | ENETUNREACH | ENETUNREACH |
//!
//! The last row is Linux's answer with its loopback interface down: a stack has no
//! loopback interface (its own addresses are looped back, 127/8 is not); Linux with `lo`
//! up would connect to itself. docs/linux-differences.md says so.

use std::net::{IpAddr, Ipv4Addr};

use super::Type;
use crate::cidr::Cidr;
use crate::errno::Errno;

/// Whether a `ty` socket may send to `dst`, from a stack with `addrs` and `gateways`;
/// `may_broadcast`: the socket has SO_BROADCAST.
pub fn check(addrs: &[Cidr], gateways: &[IpAddr], dst: IpAddr, ty: Type, may_broadcast: bool) -> Result<(), Errno> {
    // The unspecified address is each call's own business (ECONNREFUSED, EINVAL).
    if dst.is_unspecified() || addrs.iter().any(|cidr| cidr.addr() == dst) {
        return Ok(()); // its own address: looped back inside the stack
    }
    if dst.is_loopback() {
        return Err(Errno::ENETUNREACH);
    }
    let on_link = addrs.iter().any(|cidr| cidr.contains(dst));
    let via_gateway = gateways.iter().any(|g| g.is_ipv4() == dst.is_ipv4());
    if !on_link && !via_gateway {
        return Err(Errno::ENETUNREACH);
    }
    let broadcast = match dst {
        IpAddr::V4(v4) => v4 == Ipv4Addr::BROADCAST || addrs.iter().any(|c| subnet_broadcast(c) == Some(v4)),
        IpAddr::V6(_) => false,
    };
    match ty {
        Type::Stream if broadcast || dst.is_multicast() => Err(Errno::ENETUNREACH),
        Type::Dgram if broadcast && !may_broadcast => Err(Errno::EACCES),
        _ => Ok(()),
    }
}

/// The broadcast address of an IPv4 subnet (none for /31 and /32, RFC 3021).
fn subnet_broadcast(cidr: &Cidr) -> Option<Ipv4Addr> {
    let IpAddr::V4(v4) = cidr.addr() else { return None };
    let len = cidr.prefix_len();
    if len >= 31 {
        return None;
    }
    Some(Ipv4Addr::from(u32::from(v4) | (u32::MAX >> len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broadcast_of_a_24_is_its_255_and_a_31_has_none() {
        let cidr = |s: &str| s.parse::<Cidr>().unwrap();
        assert_eq!(subnet_broadcast(&cidr("10.7.0.2/24")), Some(Ipv4Addr::new(10, 7, 0, 255)));
        assert_eq!(subnet_broadcast(&cidr("10.7.0.2/31")), None);
        assert_eq!(subnet_broadcast(&cidr("fd00::1/64")), None);
    }
}
