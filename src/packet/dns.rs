//! DNS messages in UDP datagrams (port 53, and mDNS on 5353) → [`Dns`]: what
//! `tcpdump -nn` prints of them without `-v` — the header, the questions of a query, the
//! answers of a response.
//!
//! The records are parsed by the `simple-dns` crate. It parses a message whole, so a
//! message cut short or malformed part-way would yield nothing; tcpdump prints what comes
//! before the damage and then `[|domain]`. To do the same, the message is parsed with the
//! header's counts lowered: the largest number of records that parses is found by a
//! binary search (a prefix that parses stays parseable with fewer records), at most 17
//! parses of a datagram. Sections tcpdump does not show (authority, additional) are not
//! parsed, so damage there does not hide the answers, as it does not in tcpdump.

use std::net::{Ipv4Addr, Ipv6Addr};

use simple_dns::rdata::RData;
use simple_dns::{Name, Packet};

/// The 12-byte DNS header's size.
const HEADER: usize = 12;
/// The smallest encoding of a question (root name, type, class) or a record (root name,
/// type, class, TTL, data length): bounds how many can fit in a datagram.
const MIN_QUESTION: usize = 5;
const MIN_RECORD: usize = 11;

/// A DNS message as tcpdump summarizes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dns {
    /// Bytes of the message (the UDP payload as its header states it).
    pub len: usize,
    /// Multicast DNS (port 5353): the question's unicast-response bit and the records'
    /// cache-flush bit are flags, not part of the class.
    pub mdns: bool,
    /// The header, when the message has its 12 bytes.
    pub header: Option<DnsHeader>,
    /// The questions decoded (all of them for a query; a response's are not shown).
    pub questions: Vec<DnsQuestion>,
    /// The answers decoded (responses only).
    pub answers: Vec<DnsRecord>,
    /// Everything tcpdump would show was decoded; otherwise the line ends in `[|domain]`.
    pub complete: bool,
}

/// The fixed header of a DNS message (RFC 1035 §4.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsHeader {
    /// Identifier.
    pub id: u16,
    /// The second 16-bit word: QR, opcode, AA, TC, RD, RA, Z, AD, CD, rcode.
    pub flags: u16,
    /// Entries in the question, answer, authority and additional sections.
    pub counts: [u16; 4],
}

impl DnsHeader {
    /// A response (QR set).
    pub fn response(&self) -> bool {
        self.flags & 0x8000 != 0
    }
    /// The operation code.
    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xf) as u8
    }
    /// The response code.
    pub fn rcode(&self) -> u8 {
        (self.flags & 0xf) as u8
    }
    /// One flag bit by its mask in [`flags`](Self::flags).
    pub fn has(&self, mask: u16) -> bool {
        self.flags & mask != 0
    }
    /// Authoritative answer.
    pub const AA: u16 = 0x0400;
    /// Truncated.
    pub const TC: u16 = 0x0200;
    /// Recursion desired.
    pub const RD: u16 = 0x0100;
    /// Recursion available.
    pub const RA: u16 = 0x0080;
    /// Checking disabled (RFC 4035).
    pub const CD: u16 = 0x0010;
}

/// A question: the name asked about, as tcpdump prints it (labels escaped, a dot after
/// each), and the type and class asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsQuestion {
    /// The name, `example.com.`.
    pub name: String,
    /// Query type (1 A, 28 AAAA, ...).
    pub qtype: u16,
    /// Query class (1 IN), without mDNS's unicast-response bit.
    pub qclass: u16,
    /// mDNS: the unicast-response bit (tcpdump's `(QU)`, else `(QM)`).
    pub unicast_response: bool,
}

/// A resource record, without its owner name and TTL (tcpdump shows them with `-v`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsRecord {
    /// Record type.
    pub rtype: u16,
    /// Class, without mDNS's cache-flush bit.
    pub class: u16,
    /// mDNS: the cache-flush bit.
    pub cache_flush: bool,
    /// The data, for the types tcpdump prints without `-v`.
    pub data: DnsData,
}

/// Record data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsData {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An IPv6 address.
    Aaaa(Ipv6Addr),
    /// A domain name (CNAME, NS, PTR, DNAME), as tcpdump prints it.
    Name(String),
    /// A mail exchanger and its preference.
    Mx {
        /// Preference.
        preference: u16,
        /// The exchanger's name.
        exchange: String,
    },
    /// Character strings, escaped as tcpdump prints them.
    Txt(Vec<String>),
    /// A service location.
    Srv {
        /// Target host name.
        target: String,
        /// Port.
        port: u16,
        /// Priority (lower first).
        priority: u16,
        /// Weight among equal priorities.
        weight: u16,
    },
    /// A type whose data tcpdump does not print without `-v`.
    Other,
}

/// Whether a UDP datagram between these ports is DNS as tcpdump decides it: port 53
/// (DNS), or 5353 (mDNS) on either side.
pub(crate) fn dns_port(sport: u16, dport: u16) -> Option<bool> {
    if sport == 53 || dport == 53 {
        Some(false)
    } else if sport == 5353 || dport == 5353 {
        Some(true)
    } else {
        None
    }
}

/// Decodes a DNS message from the bytes present (`bytes`, at most `len` of them). Never
/// panics, whatever the bytes.
pub(crate) fn decode_dns(bytes: &[u8], len: usize, mdns: bool) -> Dns {
    let bytes = &bytes[..bytes.len().min(len)];
    let mut dns = Dns { len, mdns, header: None, questions: Vec::new(), answers: Vec::new(), complete: false };
    let Some(fixed) = bytes.get(..HEADER) else {
        return dns;
    };
    let word = |at: usize| u16::from_be_bytes([fixed[at], fixed[at + 1]]);
    let header = DnsHeader { id: word(0), flags: word(2), counts: [word(4), word(6), word(8), word(10)] };
    dns.header = Some(header);
    let [qd, an, _, _] = header.counts;
    let room = bytes.len() - HEADER;
    if header.response() {
        // tcpdump skips the questions (without looking into their names) and shows the
        // answers; the questions must parse for the answers to be found.
        let fits = usize::from(an).min(room / MIN_RECORD);
        let answers = |p: &Packet<'_>| p.answers.iter().map(record).collect();
        if let Some((k, answers)) = largest_parse(bytes, fits, |k| [qd, k, 0, 0], answers) {
            dns.answers = answers;
            dns.complete = k == usize::from(an);
        }
    } else {
        let fits = usize::from(qd).min(room / MIN_QUESTION);
        let questions = |p: &Packet<'_>| {
            p.questions
                .iter()
                .map(|q| DnsQuestion {
                    name: name_text(&q.qname),
                    qtype: q.qtype.into(),
                    qclass: q.qclass.into(),
                    unicast_response: q.unicast_response,
                })
                .collect()
        };
        if let Some((k, questions)) = largest_parse(bytes, fits, |k| [k, 0, 0, 0], questions) {
            dns.questions = questions;
            dns.complete = k == usize::from(qd);
        }
    }
    dns
}

/// Parses `bytes` with the header's counts replaced by `counts(k)`, for the largest `k`
/// up to `most` that parses; `None` when not even `k = 0` does.
fn largest_parse<T>(
    bytes: &[u8],
    most: usize,
    counts: impl Fn(u16) -> [u16; 4],
    convert: impl Fn(&Packet<'_>) -> T,
) -> Option<(usize, T)> {
    let mut copy = bytes.to_vec();
    let mut attempt = |k: usize| -> Option<T> {
        let k = u16::try_from(k).ok()?;
        for (i, count) in counts(k).into_iter().enumerate() {
            copy[4 + 2 * i..6 + 2 * i].copy_from_slice(&count.to_be_bytes());
        }
        Packet::parse(&copy).ok().map(|p| convert(&p))
    };
    if let Some(all) = attempt(most) {
        return Some((most, all));
    }
    let mut best = (0, attempt(0)?);
    // Invariant: `best.0` parses, `high` does not.
    let mut high = most;
    while high - best.0 > 1 {
        let mid = best.0 + (high - best.0) / 2;
        match attempt(mid) {
            Some(packet) => best = (mid, packet),
            None => high = mid,
        }
    }
    Some(best)
}

fn record(rr: &simple_dns::ResourceRecord<'_>) -> DnsRecord {
    let data = match &rr.rdata {
        RData::A(a) => DnsData::A(Ipv4Addr::from(a.address)),
        RData::AAAA(a) => DnsData::Aaaa(Ipv6Addr::from(a.address)),
        RData::CNAME(n) => DnsData::Name(name_text(&n.0)),
        RData::NS(n) => DnsData::Name(name_text(&n.0)),
        RData::PTR(n) => DnsData::Name(name_text(&n.0)),
        RData::MX(mx) => DnsData::Mx { preference: mx.preference, exchange: name_text(&mx.exchange) },
        RData::TXT(txt) => DnsData::Txt(
            txt.iter_raw()
                .map(|(key, value)| {
                    // iter_raw splits each string at its first '='; put it back together.
                    let mut raw = key.to_vec();
                    if let Some(value) = value {
                        raw.push(b'=');
                        raw.extend_from_slice(value);
                    }
                    escape(&raw)
                })
                .collect(),
        ),
        RData::SRV(srv) => {
            DnsData::Srv { target: name_text(&srv.target), port: srv.port, priority: srv.priority, weight: srv.weight }
        }
        _ => DnsData::Other,
    };
    // The crate takes the cache-flush bit out of the class.
    DnsRecord { rtype: rr.rdata.type_code().into(), class: rr.class.into(), cache_flush: rr.cache_flush, data }
}

/// A name as tcpdump's fqdn_print writes it: each label escaped, a dot after each; the
/// root is `.`.
fn name_text(name: &Name<'_>) -> String {
    let mut out = String::new();
    for label in name.as_bytes() {
        out.push_str(&escape(label));
        out.push('.');
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// Bytes as tcpdump's nd_printn writes them: non-ASCII as `M-` and the low seven bits,
/// control characters as `^` and the character 0x40 above.
fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        let mut c = b;
        if !c.is_ascii() {
            out.push_str("M-");
            c &= 0x7f;
        }
        if !(0x20..0x7f).contains(&c) {
            out.push('^');
            c ^= 0x40;
        }
        out.push(char::from(c));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    /// A response as dns.py's 4662: a CNAME through a pointer, then an A record.
    const CNAME_RESPONSE: &[u8] = b"\x12\x36\x81\x80\x00\x01\x00\x02\x00\x00\x00\x00\
        \x03www\x07example\x03com\x00\x00\x01\x00\x01\
        \xc0\x0c\x00\x05\x00\x01\x00\x00\x01\x2c\x00\x02\xc0\x10\
        \xc0\x10\x00\x01\x00\x01\x00\x00\x01\x2c\x00\x04\x0a\x07\x00\x09";

    #[test]
    fn a_response_and_every_cut_of_it() {
        let dns = decode_dns(CNAME_RESPONSE, CNAME_RESPONSE.len(), false);
        assert!(dns.complete);
        assert_eq!(dns.answers[0].data, DnsData::Name("example.com.".into()));
        assert_eq!(dns.answers[1].data, DnsData::A(Ipv4Addr::new(10, 7, 0, 9)));
        // Cut anywhere in the second record: the first is still shown, the line marked.
        for end in 12..CNAME_RESPONSE.len() {
            let cut = decode_dns(&CNAME_RESPONSE[..end], CNAME_RESPONSE.len(), false);
            assert!(!cut.complete, "cut at {end}");
            assert!(cut.answers.len() <= 1, "cut at {end}");
            assert_eq!(cut.answers.len() == 1, end >= 47, "cut at {end}");
        }
    }

    proptest! {
        /// Whatever the bytes, decoding returns (no panic, no endless pointer chase), and
        /// shows no more records than the bytes can hold.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), mdns: bool) {
            let dns = decode_dns(&bytes, bytes.len(), mdns);
            prop_assert!(dns.answers.len() * MIN_RECORD <= bytes.len());
            prop_assert!(dns.questions.len() * MIN_QUESTION <= bytes.len());
        }

        /// A real message with bytes overwritten: names with wild pointers and lengths.
        #[test]
        fn damaged_messages_never_panic(edits in proptest::collection::vec((12..CNAME_RESPONSE.len(), any::<u8>()), 1..6)) {
            let mut bytes = CNAME_RESPONSE.to_vec();
            for (at, value) in edits {
                bytes[at] = value;
            }
            let dns = decode_dns(&bytes, bytes.len(), false);
            prop_assert!(dns.answers.len() <= 2);
        }
    }

    #[test]
    fn escapes_as_tcpdump() {
        assert_eq!(escape(b"v=ok\x01"), "v=ok^A");
        assert_eq!(escape(b"a\xc0b\x7f"), "aM-@b^?");
    }
}
