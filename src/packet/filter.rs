//! Capture filters in tcpdump's language (pcap-filter(7)), over a decoded [`Summary`].
//!
//! The common primitives, with tcpdump's meaning:
//! - `host A`: IPv4 or IPv6 source or destination `A` (an ARP packet's sender or target
//!   address too, as tcpdump's `host` without `ip` matches it);
//! - `net A/LEN`, `net A mask M`, `net A` (IPv4 `A` with fewer than four parts is a
//!   network of that many bytes, `net 10.7` being `net 10.7.0.0/16`);
//! - `port N`: a TCP or UDP source or destination port;
//! - qualifiers before them: a direction `src`, `dst`, `src or dst` (the default) or
//!   `src and dst`, and a protocol (`ip`, `ip6` before `host` and `net`; `tcp`, `udp`
//!   before `port`), as in `tcp dst port 7` or `ip6 src net fd00::/8`;
//! - protocols alone: `ip`, `ip6`, `tcp`, `udp`, `icmp`, `icmp6`, `arp`;
//! - `and`/`&&`, `or`/`||`, `not`/`!` and parentheses. As in tcpdump, `not` binds
//!   tightest and `and` and `or` have equal precedence, grouped left to right:
//!   `a or b and c` is `(a or b) and c`;
//! - a bare address or number after `and`/`or` takes the qualifiers of the primitive
//!   before it: `port 7 or 9` is `port 7 or port 9`.
//!
//! Protocols are found where tcpdump looks for them: the protocol an IPv4 header names,
//! or the IPv6 header's next header (for `tcp`, `udp` and `icmp6` also a fragment
//! header's), never one behind other extension headers or IPv4's authentication header.
//! `port` sees the ports of a TCP or UDP header that follows the IP header directly.
//!
//! ```
//! use ustack::packet::{Filter, decode};
//!
//! let filter = Filter::parse("tcp dst port 7 and not host 10.0.0.9").unwrap();
//! // A SYN from 10.0.0.1:40000 to 10.0.0.2:7.
//! let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
//! ip.extend([0x9c, 0x40, 0, 7, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
//! assert!(filter.matches(&decode(&ip)));
//! assert!(Filter::parse("port 7 and").is_err());
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::summary::{ExtHeader, Ip, IpVersion, Net, Summary, Transport};

/// A parsed filter expression; [`Filter::matches`] applies it to a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    expr: Option<Expr>,
}

/// Why an expression could not be parsed: one line, naming the word at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterError(String);

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FilterError {}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Proto(Proto),
    Host(Qual, IpAddr),
    Net(Qual, IpAddr, u8),
    Port(Qual, u16),
}

/// Protocols, as qualifiers and as primitives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Ip,
    Ip6,
    Tcp,
    Udp,
    Icmp,
    Icmp6,
    Arp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Src,
    Dst,
    SrcOrDst,
    SrcAndDst,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Host,
    Net,
    Port,
}

/// The qualifiers of a primitive: `[proto] [dir] kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Qual {
    proto: Option<Proto>,
    dir: Dir,
    kind: Kind,
}

impl Filter {
    /// Parses an expression; an empty one (or only spaces) matches every packet, as in
    /// tcpdump.
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        let tokens = tokenize(text);
        if tokens.is_empty() {
            return Ok(Filter { expr: None });
        }
        let mut parser = Parser { tokens, at: 0, last: None };
        let expr = parser.expr()?;
        if let Some(token) = parser.peek() {
            return Err(parser.error_at(token));
        }
        Ok(Filter { expr: Some(expr) })
    }

    /// Parses an expression given as words (a command line's arguments), joined by
    /// spaces as tcpdump joins them.
    pub fn parse_words<S: AsRef<str>>(words: &[S]) -> Result<Filter, FilterError> {
        let text: Vec<&str> = words.iter().map(AsRef::as_ref).collect();
        Filter::parse(&text.join(" "))
    }

    /// Whether the packet passes the filter.
    pub fn matches(&self, summary: &Summary) -> bool {
        self.expr.as_ref().is_none_or(|expr| expr.eval(summary).unwrap_or(false))
    }
}

fn tokenize(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let single = match c {
            '(' | ')' => Some(c.to_string()),
            '!' => Some("!".to_string()),
            '&' | '|' if chars.peek() == Some(&c) => {
                chars.next();
                Some(format!("{c}{c}"))
            }
            _ => None,
        };
        if single.is_some() || c.is_whitespace() {
            if !word.is_empty() {
                tokens.push(std::mem::take(&mut word));
            }
            tokens.extend(single);
        } else {
            word.push(c);
        }
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    tokens
}

struct Parser {
    tokens: Vec<String>,
    at: usize,
    /// The qualifiers of the last primitive, for a bare value after `and`/`or`.
    last: Option<Qual>,
}

impl Parser {
    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.at).map(String::as_str)
    }

    fn peek_at(&self, ahead: usize) -> Option<&str> {
        self.tokens.get(self.at + ahead).map(String::as_str)
    }

    fn next(&mut self) -> Option<String> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn error_at(&self, token: &str) -> FilterError {
        FilterError(format!("syntax error near '{token}'"))
    }

    fn error_here(&self) -> FilterError {
        match self.peek() {
            Some(token) => self.error_at(token),
            None => FilterError("syntax error: the expression ends too soon".into()),
        }
    }

    /// `unary ((and|or) unary)*`, left to right.
    fn expr(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.unary()?;
        loop {
            let and = match self.peek() {
                Some("and" | "&&") => true,
                Some("or" | "||") => false,
                _ => return Ok(left),
            };
            self.next();
            let right = Box::new(self.unary()?);
            left = if and { Expr::And(Box::new(left), right) } else { Expr::Or(Box::new(left), right) };
        }
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        match self.peek() {
            Some("not" | "!") => {
                self.next();
                Ok(Expr::Not(Box::new(self.unary()?)))
            }
            Some("(") => {
                self.next();
                let inner = self.expr()?;
                if self.peek() != Some(")") {
                    return Err(self.error_here());
                }
                self.next();
                Ok(inner)
            }
            Some(_) => self.primitive(),
            None => Err(self.error_here()),
        }
    }

    /// `[proto] [dir] [kind] value`, a protocol alone, or a bare value.
    fn primitive(&mut self) -> Result<Expr, FilterError> {
        let proto = self.peek().and_then(proto);
        if proto.is_some() {
            self.next();
        }
        let words = (self.peek(), self.peek_at(1), self.peek_at(2));
        let (dir, used) = match words {
            (Some(first @ ("src" | "dst")), Some(joint @ ("or" | "and")), Some(second @ ("src" | "dst")))
                if first != second =>
            {
                (Some(if joint == "or" { Dir::SrcOrDst } else { Dir::SrcAndDst }), 3)
            }
            (Some("src"), ..) => (Some(Dir::Src), 1),
            (Some("dst"), ..) => (Some(Dir::Dst), 1),
            _ => (None, 0),
        };
        self.at += used;
        let kind = match self.peek() {
            Some("host") => Some(Kind::Host),
            Some("net") => Some(Kind::Net),
            Some("port") => Some(Kind::Port),
            _ => None,
        };
        if kind.is_some() {
            self.next();
        }
        let qual = match (proto, dir, kind) {
            (Some(proto), None, None) => return Ok(Expr::Proto(proto)),
            (None, None, None) => match self.last {
                // A bare value continues the last primitive: `port 7 or 9`.
                Some(last) => last,
                None => return Err(self.error_here()),
            },
            (proto, dir, kind) => Qual { proto, dir: dir.unwrap_or(Dir::SrcOrDst), kind: kind.unwrap_or(Kind::Host) },
        };
        let fits = match (qual.kind, qual.proto) {
            (_, None) => true,
            (Kind::Host | Kind::Net, Some(p)) => matches!(p, Proto::Ip | Proto::Ip6),
            (Kind::Port, Some(p)) => matches!(p, Proto::Tcp | Proto::Udp),
        };
        let Some(value) = self.next() else { return Err(self.error_here()) };
        if !fits || is_keyword(&value) {
            return Err(self.error_at(&value));
        }
        self.last = Some(qual);
        let bad = |what: &str| FilterError(format!("'{value}' is not {what}"));
        let expr = match qual.kind {
            Kind::Host => Expr::Host(qual, value.parse().map_err(|_| bad("an IPv4 or IPv6 address"))?),
            Kind::Port => Expr::Port(qual, value.parse().map_err(|_| bad("a port number"))?),
            Kind::Net => {
                let (addr, len) = if self.peek() == Some("mask") {
                    self.next();
                    let mask = self.next().ok_or_else(|| self.error_here())?;
                    let addr: Ipv4Addr = value.parse().map_err(|_| bad("an IPv4 address"))?;
                    let mask: Ipv4Addr = mask.parse().map_err(|_| FilterError(format!("'{mask}' is not a mask")))?;
                    let bits = u32::from(mask);
                    if bits.leading_ones() + bits.trailing_zeros() != 32 {
                        return Err(FilterError(format!("'{mask}' is not a contiguous mask")));
                    }
                    (IpAddr::V4(addr), bits.leading_ones() as u8)
                } else {
                    network(&value).ok_or_else(|| bad("a network (A/LEN)"))?
                };
                if mask(addr, len) != addr {
                    return Err(FilterError(format!("non-network bits set in '{value}'")));
                }
                Expr::Net(qual, addr, len)
            }
        };
        Ok(expr)
    }
}

fn proto(word: &str) -> Option<Proto> {
    Some(match word {
        "ip" => Proto::Ip,
        "ip6" => Proto::Ip6,
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        "icmp" => Proto::Icmp,
        "icmp6" => Proto::Icmp6,
        "arp" => Proto::Arp,
        _ => return None,
    })
}

fn is_keyword(word: &str) -> bool {
    proto(word).is_some()
        || matches!(
            word,
            "and" | "or" | "not" | "&&" | "||" | "!" | "(" | ")" | "src" | "dst" | "host" | "net" | "port" | "mask"
        )
}

/// `A/LEN`, or an IPv4 network of as many bytes as `A` has parts (`10.7` is `10.7.0.0/16`).
fn network(text: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = match text.split_once('/') {
        Some((addr, len)) => (addr, Some(len.parse::<u8>().ok()?)),
        None => (text, None),
    };
    if addr.contains(':') {
        let addr: Ipv6Addr = addr.parse().ok()?;
        let len = len.unwrap_or(128);
        return (len <= 128).then_some((IpAddr::V6(addr), len));
    }
    let parts: Vec<u8> = addr.split('.').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut octets = [0; 4];
    octets[..parts.len()].copy_from_slice(&parts);
    let len = len.unwrap_or(8 * parts.len() as u8);
    (len <= 32).then_some((IpAddr::V4(Ipv4Addr::from(octets)), len))
}

/// `addr` with all but its first `len` bits cleared.
fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & u32::MAX.checked_shl(32 - len as u32).unwrap_or(0))),
        IpAddr::V6(a) => {
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & u128::MAX.checked_shl(128 - len as u32).unwrap_or(0)))
        }
    }
}

impl Dir {
    fn test(self, src: bool, dst: bool) -> bool {
        match self {
            Dir::Src => src,
            Dir::Dst => dst,
            Dir::SrcOrDst => src || dst,
            Dir::SrcAndDst => src && dst,
        }
    }
}

/// A primitive needed bytes the packet does not have: tcpdump's filter program stops
/// there and rejects the packet, whatever the rest of the expression (`not` included).
struct Missing;

impl Expr {
    /// Left to right, each `and`/`or` skipping its right side when the left decides, as
    /// the filter program tcpdump compiles does.
    fn eval(&self, s: &Summary) -> Result<bool, Missing> {
        let ip = match &s.net {
            Net::Ip(ip) => Some(ip),
            _ => None,
        };
        match self {
            Expr::And(a, b) => Ok(a.eval(s)? && b.eval(s)?),
            Expr::Or(a, b) => Ok(a.eval(s)? || b.eval(s)?),
            Expr::Not(a) => Ok(!a.eval(s)?),
            Expr::Proto(p) => Ok(match (p, &s.net) {
                (Proto::Arp, Net::Arp(_)) => true,
                (_, Net::Ip(ip)) => match p {
                    Proto::Ip => ip.version == IpVersion::V4,
                    Proto::Ip6 => ip.version == IpVersion::V6,
                    Proto::Tcp => carries(ip, 6, true),
                    Proto::Udp => carries(ip, 17, true),
                    Proto::Icmp => ip.version == IpVersion::V4 && carries(ip, 1, true),
                    Proto::Icmp6 => ip.version == IpVersion::V6 && carries(ip, 58, true),
                    Proto::Arp => false,
                },
                _ => false,
            }),
            Expr::Host(q, addr) => {
                Ok(addresses(s, q.proto).is_some_and(|(src, dst)| q.dir.test(src == *addr, dst == *addr)))
            }
            Expr::Net(q, addr, len) => Ok(addresses(s, q.proto)
                .is_some_and(|(src, dst)| q.dir.test(in_net(src, *addr, *len), in_net(dst, *addr, *len)))),
            Expr::Port(q, port) => match ip.map(|ip| ports(ip, q.proto)) {
                Some(Ports::Present(sport, dport)) => Ok(q.dir.test(sport == *port, dport == *port)),
                Some(Ports::Missing) => Err(Missing),
                Some(Ports::NotThere) | None => Ok(false),
            },
        }
    }
}

fn in_net(addr: IpAddr, net: IpAddr, len: u8) -> bool {
    addr.is_ipv4() == net.is_ipv4() && mask(addr, len) == net
}

/// Source and destination addresses for `host` and `net`: IP's, or (without `ip`/`ip6`)
/// ARP's sender and target.
fn addresses(s: &Summary, proto: Option<Proto>) -> Option<(IpAddr, IpAddr)> {
    match &s.net {
        Net::Ip(ip) => match proto {
            Some(Proto::Ip) if ip.version != IpVersion::V4 => None,
            Some(Proto::Ip6) if ip.version != IpVersion::V6 => None,
            _ => Some((ip.src, ip.dst)),
        },
        Net::Arp(arp) if proto.is_none() => Some((IpAddr::V4(arp.sender_ip?), IpAddr::V4(arp.target_ip?))),
        _ => None,
    }
}

/// Whether the IP header names `protocol` as what it carries, where tcpdump looks for
/// it: IPv4's protocol field, IPv6's next header (or, with `past_fragment`, the next
/// header of a fragment header right after the fixed header). An upper layer behind an
/// IPv4 authentication header or other IPv6 extension headers is not seen, as tcpdump
/// does not see it.
fn carries(ip: &Ip, protocol: u8, past_fragment: bool) -> bool {
    let seen = match ip.ext_headers.as_slice() {
        [] => true,
        [ExtHeader::Fragment { .. }] => past_fragment && ip.version == IpVersion::V6,
        _ => false,
    };
    seen && ip.protocol == protocol
}

/// TCP or UDP ports (`proto` narrowing to one), also from a header cut short after them.
/// As in tcpdump, only where the IP header names TCP or UDP itself.
fn ports(ip: &Ip, proto: Option<Proto>) -> Ports {
    let wanted = match proto {
        Some(Proto::Tcp) => carries(ip, 6, false),
        Some(Proto::Udp) => carries(ip, 17, false),
        _ => carries(ip, 6, false) || carries(ip, 17, false),
    };
    if !wanted {
        return Ports::NotThere;
    }
    match &ip.transport {
        Transport::Tcp(tcp) => Ports::Present(tcp.sport, tcp.dport),
        Transport::Udp(udp) => Ports::Present(udp.sport, udp.dport),
        Transport::Truncated { ports: Some((sport, dport)), .. } => Ports::Present(*sport, *dport),
        Transport::Truncated { ports: None, .. } => Ports::Missing,
        _ => Ports::NotThere,
    }
}

enum Ports {
    Present(u16, u16),
    /// TCP or UDP whose header was cut short before its ports.
    Missing,
    /// Not TCP or UDP where tcpdump looks, or a fragment after the first.
    NotThere,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::decode;

    fn ipv4(src: [u8; 4], dst: [u8; 4], protocol: u8, upper: &[u8]) -> Vec<u8> {
        let len = (20 + upper.len()) as u16;
        let mut ip = vec![0x45, 0, (len >> 8) as u8, len as u8, 0, 0, 0x40, 0, 64, protocol, 0, 0];
        ip.extend(src);
        ip.extend(dst);
        ip.extend(upper);
        ip
    }

    fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Summary {
        let mut seg = Vec::new();
        seg.extend(sport.to_be_bytes());
        seg.extend(dport.to_be_bytes());
        seg.extend([0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        decode(&ipv4(src, dst, 6, &seg))
    }

    fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Summary {
        let mut dgram = Vec::new();
        dgram.extend(sport.to_be_bytes());
        dgram.extend(dport.to_be_bytes());
        dgram.extend([0, 8, 0, 0]);
        decode(&ipv4(src, dst, 17, &dgram))
    }

    fn icmp() -> Summary {
        decode(&ipv4([10, 0, 0, 1], [10, 0, 0, 2], 1, &[8, 0, 0xf7, 0xfe, 0, 1, 0, 0]))
    }

    fn tcp6(sport: u16, dport: u16) -> Summary {
        let mut p = vec![0x60, 0, 0, 0, 0, 20, 6, 64];
        p.extend("fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend("fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        p.extend(sport.to_be_bytes());
        p.extend(dport.to_be_bytes());
        p.extend([0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        decode(&p)
    }

    fn yes(expr: &str, s: &Summary) -> bool {
        Filter::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}")).matches(s)
    }

    const A: [u8; 4] = [10, 7, 0, 1];
    const B: [u8; 4] = [10, 7, 0, 2];
    const C: [u8; 4] = [192, 168, 1, 9];

    #[test]
    fn protocols() {
        let (t, u, i, t6) = (tcp(A, 40000, B, 7), udp(A, 5353, B, 53), icmp(), tcp6(1, 7));
        assert!(yes("tcp", &t) && !yes("tcp", &u) && yes("udp", &u) && yes("icmp", &i) && !yes("icmp", &t));
        assert!(yes("ip", &t) && !yes("ip6", &t) && yes("ip6", &t6) && !yes("ip", &t6) && yes("tcp", &t6));
        assert!(!yes("icmp6", &i) && !yes("arp", &t));
        assert!(yes("", &t) && yes("  ", &i), "empty matches all");
    }

    #[test]
    fn hosts_nets_and_directions() {
        let t = tcp(A, 40000, B, 7);
        assert!(yes("host 10.7.0.1", &t) && yes("host 10.7.0.2", &t) && !yes("host 10.7.0.3", &t));
        assert!(yes("src host 10.7.0.1", &t) && !yes("dst host 10.7.0.1", &t) && yes("dst 10.7.0.2", &t));
        assert!(yes("src 10.7.0.1", &t) && yes("ip host 10.7.0.1", &t) && !yes("ip6 host 10.7.0.1", &t));
        assert!(yes("net 10.7.0.0/16", &t) && yes("net 10.7", &t) && yes("net 10/8", &t) && !yes("net 10.8", &t));
        assert!(yes("net 10.7.0.0 mask 255.255.0.0", &t) && !yes("net 192.168.0.0/16", &t));
        assert!(yes("src net 10.7.0.0/24 and dst net 10.7.0.2/32", &t));
        assert!(yes("src and dst net 10.7/16", &t) && !yes("src and dst net 10.7/16", &tcp(A, 1, C, 2)));
        assert!(yes("src or dst host 192.168.1.9", &tcp(A, 1, C, 2)));
        let t6 = tcp6(1, 7);
        assert!(yes("host fd00::1", &t6) && yes("ip6 net fd00::/8", &t6) && !yes("net 10/8", &t6));
        assert!(!yes("host 10.7.0.1", &t6) && !yes("host fd00::1", &t));
    }

    #[test]
    fn ports() {
        let (t, u) = (tcp(A, 40000, B, 7), udp(A, 5353, B, 53));
        assert!(yes("port 7", &t) && yes("port 40000", &t) && !yes("port 8", &t) && yes("port 53", &u));
        assert!(yes("dst port 7", &t) && !yes("src port 7", &t) && yes("tcp port 7", &t) && !yes("udp port 7", &t));
        assert!(yes("udp dst port 53", &u) && !yes("tcp port 53", &u) && !yes("port 7", &icmp()));
        assert!(yes("tcp port 7", &tcp6(1, 7)));
    }

    #[test]
    fn operators_and_precedence() {
        let t = tcp(A, 40000, B, 7);
        assert!(yes("tcp port 7 and host 10.7.0.1", &t) && yes("tcp && port 7", &t));
        assert!(!yes("not tcp", &t) && yes("!udp", &t) && yes("not not tcp", &t) && yes("! ( udp or icmp )", &t));
        assert!(yes("udp or port 7", &t) && yes("udp || tcp", &t));
        // Equal precedence, left to right: (tcp or udp) and port 8 is false.
        assert!(!yes("tcp or udp and port 8", &t));
        assert!(yes("tcp or (udp and port 8)", &t));
        assert!(yes("(tcp)and(port 7)", &t), "parentheses need no spaces");
        // A bare value takes the last primitive's qualifiers.
        assert!(yes("port 9 or 7", &t) && !yes("src port 9 or 7", &t) && yes("host 1.2.3.4 or 10.7.0.2", &t));
    }

    #[test]
    fn protocols_behind_extension_headers_are_not_seen() {
        // IPv6 hop-by-hop options (8 bytes), then UDP 40000 > 7.
        let udp6 = |next: u8, ext: &[u8]| {
            let mut p = vec![0x60, 0, 0, 0, 0, (ext.len() + 8) as u8, next, 64];
            p.extend("fd00::1".parse::<Ipv6Addr>().unwrap().octets());
            p.extend("fd00::2".parse::<Ipv6Addr>().unwrap().octets());
            p.extend(ext);
            p.extend([0x9c, 0x40, 0, 7, 0, 8, 0, 0]);
            decode(&p)
        };
        let hbh = udp6(0, &[17, 0, 1, 4, 0, 0, 0, 0]);
        assert!(!yes("udp", &hbh) && !yes("port 7", &hbh) && yes("ip6", &hbh) && yes("host fd00::2", &hbh));
        // A first fragment: `udp` looks past the fragment header, `port` does not.
        let frag = udp6(44, &[17, 0, 0, 1, 0, 0, 0, 9]);
        assert!(yes("udp", &frag) && !yes("port 7", &frag));
        assert!(yes("udp port 7", &udp6(17, &[])));
    }

    #[test]
    fn ports_cut_off_reject_the_packet_whatever_the_expression() {
        // TCP with only 2 header bytes: tcpdump's `port` reads past the end and rejects.
        let cut = decode(&ipv4(A, B, 6, &[0x9c, 0x40]));
        assert!(yes("tcp", &cut) && yes("not udp", &cut));
        assert!(!yes("port 7", &cut) && !yes("not port 7", &cut) && !yes("not (port 7 or port 9)", &cut));
        // Unless the left side of `and`/`or` decides first.
        assert!(yes("tcp or port 7", &cut) && !yes("udp and port 7", &cut) && !yes("udp or port 7", &cut));
    }

    #[test]
    fn words_join_as_one_expression() {
        let t = tcp(A, 40000, B, 7);
        assert!(Filter::parse_words(&["tcp", "port", "7", "and", "host", "10.7.0.1"]).unwrap().matches(&t));
        assert!(Filter::parse_words(&["tcp port 7", "and", "not", "udp"]).unwrap().matches(&t));
    }

    #[test]
    fn syntax_errors_name_the_word() {
        for (expr, message) in [
            ("port 7 and", "syntax error: the expression ends too soon"),
            ("port", "syntax error: the expression ends too soon"),
            ("tcp port 7 )", "syntax error near ')'"),
            ("( tcp", "syntax error: the expression ends too soon"),
            ("frobnicate", "syntax error near 'frobnicate'"),
            ("port seven", "'seven' is not a port number"),
            ("port 70000", "'70000' is not a port number"),
            ("host 10.7.0", "'10.7.0' is not an IPv4 or IPv6 address"),
            ("net 10.7.0.1/16", "non-network bits set in '10.7.0.1/16'"),
            ("net 10.0.0.0 mask 255.0.255.0", "'255.0.255.0' is not a contiguous mask"),
            ("udp host 10.7.0.1", "syntax error near '10.7.0.1'"),
            ("host and", "syntax error near 'and'"),
            ("tcp tcp", "syntax error near 'tcp'"),
            ("7", "syntax error near '7'"),
        ] {
            assert_eq!(Filter::parse(expr).unwrap_err().to_string(), message, "{expr}");
        }
    }
}
