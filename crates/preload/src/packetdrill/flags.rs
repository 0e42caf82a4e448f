//! packetdrill's `--so_flags` string, as this library reads it: `key=value` words,
//! separated by spaces or commas.
//!
//! - `addr=IP/LEN`: an address of the stack (repeat for more; the first replaces the
//!   default 10.0.0.1/24). It must be packetdrill's `--local_ip`, and `--remote_ip` must
//!   lie in one of its prefixes (the engine has no gateway).
//! - `seed=N`: the engine's random seed (ISNs, ports); 1 unless told, so runs repeat.
//! - `mtu=N`: the largest IP packet the stack sends (1500).
//! - `syncookies=0|1`: answer SYNs that find the SYN queue full with cookies (1, Linux's
//!   default) or drop them.
//! - `abort_on_overflow=0|1`: Linux's `tcp_abort_on_overflow`.

use std::net::IpAddr;

use smoltcp::wire::IpCidr;
use ustack::StackConfig;

/// The stack's address unless `addr=` says otherwise.
pub const DEFAULT_ADDR: &str = "10.0.0.1/24";

/// What the flags ask for.
#[derive(Debug, Clone)]
pub struct Flags {
    pub config: StackConfig,
    pub mtu: usize,
}

/// Reads the flags; an unknown key or a bad value is an error naming it.
pub fn parse(flags: &str) -> Result<Flags, String> {
    let mut config = StackConfig { seed: Some(1), ..StackConfig::default() };
    let mut addrs = Vec::new();
    let mut mtu = 1500;
    for word in flags.split([' ', ',', '\t']).filter(|w| !w.is_empty()) {
        let (key, value) = word.split_once('=').ok_or_else(|| format!("so_flags: `{word}` is not key=value"))?;
        let bad = || format!("so_flags: bad value for {key}: `{value}`");
        match key {
            "addr" => addrs.push(cidr(value).ok_or_else(bad)?),
            "seed" => config.seed = Some(value.parse().map_err(|_| bad())?),
            "mtu" => mtu = value.parse().ok().filter(|m| (576..=65535).contains(m)).ok_or_else(bad)?,
            "syncookies" => config.syn_cookies = switch(value).ok_or_else(bad)?,
            "abort_on_overflow" => config.reset_on_overflow = switch(value).ok_or_else(bad)?,
            _ => return Err(format!("so_flags: unknown key `{key}` (addr, seed, mtu, syncookies, abort_on_overflow)")),
        }
    }
    if addrs.is_empty() {
        addrs.push(cidr(DEFAULT_ADDR).ok_or("default address")?);
    }
    config.addrs = addrs.into_iter().map(ustack::Cidr::from).collect();
    Ok(Flags { config, mtu })
}

fn switch(value: &str) -> Option<bool> {
    match value {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

fn cidr(text: &str) -> Option<IpCidr> {
    let (ip, len) = text.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    if len > if ip.is_ipv4() { 32 } else { 128 } {
        return None;
    }
    Some(IpCidr::new(ip.into(), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_one_address_and_a_fixed_seed() {
        let flags = parse("").unwrap();
        assert_eq!(flags.config.addrs, vec![ustack::Cidr::from(cidr("10.0.0.1/24").unwrap())]);
        assert_eq!(flags.config.seed, Some(1));
        assert_eq!(flags.mtu, 1500);
    }

    #[test]
    fn every_key_is_read() {
        let flags =
            parse("addr=10.1.0.1/16, addr=fd00::1/64 seed=7 mtu=1280 syncookies=0 abort_on_overflow=1").unwrap();
        assert_eq!(flags.config.addrs.len(), 2);
        assert_eq!(flags.config.seed, Some(7));
        assert_eq!(flags.mtu, 1280);
        assert!(!flags.config.syn_cookies);
        assert!(flags.config.reset_on_overflow);
    }

    #[test]
    fn bad_flags_are_named() {
        assert!(parse("colour=blue").unwrap_err().contains("colour"));
        assert!(parse("addr=10.0.0.1").unwrap_err().contains("addr"));
        assert!(parse("addr=10.0.0.1/33").unwrap_err().contains("addr"));
        assert!(parse("mtu=12").unwrap_err().contains("mtu"));
        assert!(parse("seed").unwrap_err().contains("key=value"));
    }
}
