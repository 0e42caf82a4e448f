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
//!
//! What tcpdump does not read, the crate is not made to parse either: before parsing, the
//! fields it would refuse or misread are found (names are skipped, not followed, as
//! tcpdump skips them) and noted, and neutral values written over them in a copy —
//! question types and classes it does not know, answers' classes, the data of record
//! types no line shows, and answers' owner names, which a line never shows. The noted
//! values are what the line prints.

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
    /// A domain name (CNAME, NS, PTR), as tcpdump prints it. (DNAME's, which tcpdump
    /// prints too, is not decoded: simple-dns does not know the type.)
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

/// What a TCP segment to or from port 53 carries, as tcpdump reads it: one DNS message
/// after its 2-byte length prefix (RFC 1035 §4.2.2), when the prefix matches the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsOverTcp {
    /// One whole message.
    Message(Dns),
    /// Fewer than the prefix's 2 bytes.
    TooShort {
        /// Payload bytes.
        len: usize,
    },
    /// The prefix does not state the length of the rest of the segment (a message split
    /// across segments, or several in one): tcpdump does not decode it.
    PrefixMismatch {
        /// The length the prefix states.
        prefix: u16,
        /// The bytes after the prefix.
        len: usize,
    },
}

/// A TCP segment's payload (`bytes` present, `len` stated) to or from port 53.
pub(crate) fn decode_dns_over_tcp(bytes: &[u8], len: usize) -> DnsOverTcp {
    if len < 2 {
        return DnsOverTcp::TooShort { len };
    }
    let Some(prefix) = bytes.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
        // Cut by the capture before the prefix: nothing to read, say so as for a short one.
        return DnsOverTcp::TooShort { len: bytes.len() };
    };
    if usize::from(prefix) != len - 2 {
        return DnsOverTcp::PrefixMismatch { prefix, len: len - 2 };
    }
    DnsOverTcp::Message(decode_dns(&bytes[2..], len - 2, false))
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
    // The crate refuses question types and classes it does not know (tcpdump prints
    // `Type65534?`, `(Class 5)`): they are read here and replaced by A and IN in the copy
    // it parses, as are the answers' classes.
    let mut copy = bytes.to_vec();
    let fields = neutralize_types_and_classes(&mut copy, qd, if header.response() { an } else { 0 });
    if header.response() {
        // tcpdump skips the questions (without looking into their names) and shows the
        // answers; the questions must parse for the answers to be found.
        let fits = usize::from(an).min(room / MIN_RECORD);
        let answers = |p: &Packet<'_>| {
            p.answers
                .iter()
                .zip(&fields.answers)
                .map(|(rr, &(rtype, raw))| record(rr, rtype, split_class(raw, mdns)))
                .collect()
        };
        if let Some((k, answers)) = largest_parse(&copy, fits, |k| [qd, k, 0, 0], answers) {
            dns.answers = answers;
            dns.complete = k == usize::from(an);
        }
    } else {
        let fits = usize::from(qd).min(room / MIN_QUESTION);
        let questions = |p: &Packet<'_>| {
            p.questions
                .iter()
                .zip(&fields.questions)
                .map(|(q, &(qtype, raw))| {
                    let (qclass, unicast_response) = split_class(raw, mdns);
                    DnsQuestion { name: name_text(&q.qname), qtype, qclass, unicast_response }
                })
                .collect()
        };
        if let Some((k, questions)) = largest_parse(&copy, fits, |k| [k, 0, 0, 0], questions) {
            dns.questions = questions;
            dns.complete = k == usize::from(qd);
        }
    }
    dns
}

/// The types and classes of the questions, and the classes of the answers, as they are
/// in the message, for as many as could be found.
struct RawFields {
    questions: Vec<(u16, u16)>,
    /// Type and class of each answer.
    answers: Vec<(u16, u16)>,
}

/// Record types whose data a line shows (see [`DnsData`]); the crate is not asked to
/// parse the others' data, which tcpdump does not read either without -v.
const SHOWN_TYPES: [u16; 8] = [1, 2, 5, 12, 15, 16, 28, 33];

/// A private-use type (RFC 6895): the crate keeps its data as opaque bytes.
const OPAQUE_TYPE: u16 = 0xff00;

/// Finds the first `questions` questions and `answers` records of `message` (stopping
/// where a name or a record runs out of bytes), notes their types and classes, and
/// writes A and IN over them; an answer's type, when its data is not shown, becomes one
/// whose data the crate does not parse.
fn neutralize_types_and_classes(message: &mut [u8], questions: u16, answers: u16) -> RawFields {
    let mut fields = RawFields { questions: Vec::new(), answers: Vec::new() };
    let mut at = HEADER;
    let word = |m: &[u8], at: usize| Some(u16::from_be_bytes([*m.get(at)?, *m.get(at + 1)?]));
    for _ in 0..questions {
        let Some(end) = skip_name(message, at) else { return fields };
        let (Some(qtype), Some(qclass)) = (word(message, end), word(message, end + 2)) else { return fields };
        fields.questions.push((qtype, qclass));
        message[end..end + 4].copy_from_slice(&[0, 1, 0, 1]);
        at = end + 4;
    }
    for _ in 0..answers {
        let Some((end, pointer)) = name_end(message, at) else { return fields };
        // tcpdump skips a record's owner name unread; the crate follows its pointer, and
        // would refuse the record for a bad one (a loop, say). The name is not shown:
        // point it at the first question's, which must parse for any answer to.
        if pointer && questions > 0 {
            message[end - 2..end].copy_from_slice(&[0xc0, HEADER as u8]);
        }
        let (Some(rtype), Some(class), Some(rdlength)) =
            (word(message, end), word(message, end + 2), word(message, end + 8))
        else {
            return fields;
        };
        fields.answers.push((rtype, class));
        if !SHOWN_TYPES.contains(&rtype) {
            message[end..end + 2].copy_from_slice(&OPAQUE_TYPE.to_be_bytes());
        }
        message[end + 2..end + 4].copy_from_slice(&[0, 1]);
        at = end + 10 + usize::from(rdlength);
    }
    fields
}

/// Where the name at `at` ends: after its root label or its compression pointer. Only
/// the name's own bytes are walked (pointers are not followed), as tcpdump skips names.
fn skip_name(message: &[u8], at: usize) -> Option<usize> {
    name_end(message, at).map(|(end, _)| end)
}

/// [`skip_name`], and whether the name ends in a compression pointer.
fn name_end(message: &[u8], mut at: usize) -> Option<(usize, bool)> {
    loop {
        let len = *message.get(at)?;
        match len {
            0 => return Some((at + 1, false)),
            0xc0..=0xff => return (at + 2 <= message.len()).then_some((at + 2, true)),
            1..=63 => at += 1 + usize::from(len),
            _ => return None, // extended label types: the crate refuses them too
        }
    }
}

/// A class field as mDNS means it (the top bit a flag: unicast response in a question,
/// cache flush in a record) or as DNS does (all 16 bits the class).
fn split_class(raw: u16, mdns: bool) -> (u16, bool) {
    if mdns { (raw & 0x7fff, raw & 0x8000 != 0) } else { (raw, false) }
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

fn record(rr: &simple_dns::ResourceRecord<'_>, rtype: u16, (class, cache_flush): (u16, bool)) -> DnsRecord {
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
    DnsRecord { rtype, class, cache_flush, data }
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
