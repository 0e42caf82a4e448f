//! Initial sequence numbers (RFC 6528) and SYN cookies (RFC 4987), both from one secret.
//!
//! smoltcp draws ISNs from a small non-cryptographic generator (PCG32); an attacker who
//! sees a few of them can work out the rest. ustack does not use smoltcp's ISN on the
//! wire: each connection's ISN is a keyed hash of its 4-tuple plus a 4 µs clock, as
//! RFC 6528 says, and the stack shifts sequence numbers between smoltcp's space and the
//! wire's ([`super::rewrite`]).

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;

use super::TcpTuple;

/// The MSS values a SYN cookie can carry (2 bits), as Linux's `msstab` does.
pub const COOKIE_MSS: [u16; 4] = [536, 1300, 1440, 1460];

/// How long a SYN cookie stays valid: the minute it was made and the one after.
const COOKIE_MINUTES: u32 = 2;

/// The stack's secret: the two keys of a SipHash-2-4, drawn from the engine's seed (from
/// the OS's random source unless a simulation fixes it). Never leaves the stack.
pub struct Secret {
    keys: (u64, u64),
}

impl Secret {
    /// A secret keyed by `keys`.
    pub fn from_keys(k0: u64, k1: u64) -> Secret {
        Secret { keys: (k0, k1) }
    }

    /// A secret with keys from the OS.
    #[cfg(test)]
    pub fn new() -> Secret {
        Secret::from_keys(crate::engine::random::from_os(), crate::engine::random::from_os())
    }

    fn hash(&self, purpose: u8, tuple: &TcpTuple, extra: u64) -> u64 {
        // std's SipHasher is deprecated only in favour of hashers that cannot be keyed;
        // a keyed PRF is what RFC 6528 asks for.
        #[allow(deprecated)]
        let mut h = std::hash::SipHasher::new_with_keys(self.keys.0, self.keys.1);
        purpose.hash(&mut h);
        hash_addr(&mut h, tuple.local);
        hash_addr(&mut h, tuple.remote);
        extra.hash(&mut h);
        h.finish()
    }

    /// RFC 6528: ISN = M + F(localip, localport, remoteip, remoteport, secretkey), with M
    /// a timer ticking every 4 µs (`micros` since the stack started).
    pub fn isn(&self, tuple: &TcpTuple, micros: u64) -> u32 {
        (self.hash(0, tuple, 0) as u32).wrapping_add((micros / 4) as u32)
    }

    /// The ISN of a SYN-ACK that keeps no state: a MAC of the 4-tuple, the client's ISN
    /// and the current minute in the top 30 bits, and the index of the client's MSS in
    /// [`COOKIE_MSS`] in the low 2 bits. The client's ISN is in the MAC (as in Linux's
    /// `secure_tcp_syn_cookie`) so that only the segment right after the SYN (SEG.SEQ =
    /// ISN + 1) validates it: a later one, its predecessors lost, would otherwise open the
    /// connection with the wrong ISN and its data at the wrong place.
    pub fn cookie(&self, tuple: &TcpTuple, minute: u32, client_isn: u32, mss: u16) -> u32 {
        let index = COOKIE_MSS.iter().rposition(|&m| m <= mss).unwrap_or(0) as u32;
        (self.cookie_mac(tuple, minute, client_isn) & !3) | index
    }

    /// If `cookie` is one this stack made for `tuple` and `client_isn` in the last two
    /// minutes, the MSS it carries.
    pub fn check_cookie(&self, tuple: &TcpTuple, minute: u32, client_isn: u32, cookie: u32) -> Option<u16> {
        (0..COOKIE_MINUTES)
            .filter_map(|age| minute.checked_sub(age))
            .any(|m| self.cookie_mac(tuple, m, client_isn) & !3 == cookie & !3)
            .then(|| COOKIE_MSS[(cookie & 3) as usize])
    }

    fn cookie_mac(&self, tuple: &TcpTuple, minute: u32, client_isn: u32) -> u32 {
        self.hash(1, tuple, u64::from(minute) << 32 | u64::from(client_isn)) as u32
    }
}

fn hash_addr(h: &mut impl Hasher, addr: SocketAddr) {
    addr.ip().hash(h);
    addr.port().hash(h);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(port: u16) -> TcpTuple {
        TcpTuple { local: "10.0.0.2:80".parse().unwrap(), remote: format!("10.0.0.1:{port}").parse().unwrap() }
    }

    #[test]
    fn isns_differ_by_tuple_and_secret_and_advance_with_time() {
        let (a, b) = (Secret::new(), Secret::new());
        assert_ne!(a.isn(&tuple(1000), 0), a.isn(&tuple(1001), 0));
        assert_ne!(a.isn(&tuple(1000), 0), b.isn(&tuple(1000), 0), "another stack, another secret");
        assert_eq!(a.isn(&tuple(1000), 4_000).wrapping_sub(a.isn(&tuple(1000), 0)), 1000);
    }

    #[test]
    fn cookies_check_for_two_minutes_and_carry_the_mss() {
        let s = Secret::new();
        let c = s.cookie(&tuple(1000), 7, 42, 1460);
        assert_eq!(s.check_cookie(&tuple(1000), 7, 42, c), Some(1460));
        assert_eq!(s.check_cookie(&tuple(1000), 8, 42, c), Some(1460));
        assert_eq!(s.check_cookie(&tuple(1000), 9, 42, c), None, "expired");
        assert_eq!(s.check_cookie(&tuple(1001), 7, 42, c), None, "another client");
        assert_eq!(s.check_cookie(&tuple(1000), 7, 43, c), None, "not the segment after the SYN");
        assert_eq!(s.check_cookie(&tuple(1000), 7, 42, c ^ 0x100), None, "forged");
        assert_eq!(s.check_cookie(&tuple(1000), 7, 42, s.cookie(&tuple(1000), 7, 42, 1400)), Some(1300));
        assert_eq!(s.check_cookie(&tuple(1000), 7, 42, s.cookie(&tuple(1000), 7, 42, 100)), Some(536));
    }
}
