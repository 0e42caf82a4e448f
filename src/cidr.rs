//! An address with its prefix length, the way `ip addr` shows one: `10.0.0.2/24`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use smoltcp::wire::{IpAddress, IpCidr};

/// An interface address and the length of its network prefix, such as `10.0.0.2/24` or
/// `fd00::2/64`: what [`StackConfig::addrs`](crate::StackConfig::addrs) and
/// [`TunConfig::peer_addrs`](crate::device::TunConfig::peer_addrs) take.
///
/// ```
/// use ustack::Cidr;
///
/// let cidr: Cidr = "10.0.0.2/24".parse()?;
/// assert_eq!(cidr.addr(), std::net::Ipv4Addr::new(10, 0, 0, 2));
/// assert_eq!(cidr.prefix_len(), 24);
/// assert!(cidr.contains("10.0.0.77".parse()?));
/// assert_eq!(cidr.to_string(), "10.0.0.2/24");
/// assert!("10.0.0.2/33".parse::<Cidr>().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix_len: u8,
}

/// Why a string or a prefix length is not a [`Cidr`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrError(String);

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CidrError {}

impl Cidr {
    /// `addr/prefix_len`; an error if the prefix is longer than the address (32 bits for
    /// IPv4, 128 for IPv6).
    pub fn new(addr: impl Into<IpAddr>, prefix_len: u8) -> Result<Cidr, CidrError> {
        let addr = addr.into();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(CidrError(format!("prefix length {prefix_len} is longer than {max} bits")));
        }
        Ok(Cidr { addr, prefix_len })
    }

    /// The address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The length of the network prefix, in bits.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` is in the same network (same family, same first `prefix_len` bits).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix_len)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix_len)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `ADDRESS/PREFIX`, e.g. `10.0.0.2/24` or `fd00::2/64`.
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let (ip, len) = s.split_once('/').ok_or_else(|| CidrError(format!("{s:?}: expected ADDRESS/PREFIX")))?;
        let ip: IpAddr = ip.parse().map_err(|_| CidrError(format!("{s:?}: {ip:?} is not an IP address")))?;
        let len: u8 = len.parse().map_err(|_| CidrError(format!("{s:?}: {len:?} is not a prefix length")))?;
        Cidr::new(ip, len).map_err(|e| CidrError(format!("{s:?}: {e}")))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl From<Ipv4Addr> for Cidr {
    /// A single IPv4 address: `/32`.
    fn from(ip: Ipv4Addr) -> Cidr {
        Cidr { addr: ip.into(), prefix_len: 32 }
    }
}

impl From<Ipv6Addr> for Cidr {
    /// A single IPv6 address: `/128`.
    fn from(ip: Ipv6Addr) -> Cidr {
        Cidr { addr: ip.into(), prefix_len: 128 }
    }
}

impl From<IpAddr> for Cidr {
    /// A single address: `/32` or `/128`.
    fn from(ip: IpAddr) -> Cidr {
        match ip {
            IpAddr::V4(v4) => v4.into(),
            IpAddr::V6(v6) => v6.into(),
        }
    }
}

impl From<Cidr> for IpCidr {
    fn from(cidr: Cidr) -> IpCidr {
        IpCidr::new(IpAddress::from(cidr.addr), cidr.prefix_len)
    }
}

impl From<IpCidr> for Cidr {
    fn from(cidr: IpCidr) -> Cidr {
        Cidr { addr: cidr.address().into(), prefix_len: cidr.prefix_len() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prints_and_contains() {
        let v6: Cidr = "fd00:7::2/64".parse().unwrap();
        assert_eq!(v6.to_string(), "fd00:7::2/64");
        assert!(v6.contains("fd00:7::1".parse().unwrap()));
        assert!(!v6.contains("fd00:8::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("10.9.9.9".parse().unwrap()));
        for bad in ["10.0.0.2", "10.0.0.2/", "10.0.0/24", "fd00::2/129", "10.0.0.2/x"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let smol: IpCidr = v6.into();
        assert_eq!(Cidr::from(smol), v6);
    }
}
