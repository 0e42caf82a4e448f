//! One line per packet, as `tcpdump -nn` prints it.
//!
//! The oracle is tcpdump 4.99 itself: `tests/packet.rs` compares these lines with its
//! output on the captures in `fixtures/trace/`, where they agree on every packet. Known
//! differences elsewhere, mostly input tcpdump decodes further than a summary should:
//! - application protocols (HTTP, NFS, ... chosen by port) are not decoded: the line
//!   ends at `length N` where tcpdump goes on. DNS over UDP (ports 53 and 5353) is, as
//!   tcpdump prints it without -v (see [`Dns`]), and over TCP (a message per segment,
//!   as tcpdump decodes it); a DNAME record prints its type without its target;
//! - a known TCP option with a wrong length byte: tcpdump reads the kind's usual size,
//!   adds `[len N]` and resumes parsing inside the option; here the length byte is
//!   followed, as a receiving stack does, so the options after it differ. Options with
//!   a special decoder in tcpdump (md5, mptcp, tfo, tcp-ao, exp) print as hex;
//! - IPv6 routing and authentication headers print in short; ICMP router
//!   advertisements, time stamp replies, address mask replies, MLD (but for MLDv2
//!   reports' number of group records) and node information messages print their name
//!   only; ICMP(v6) messages tcpdump follows with a hex dump
//!   (unknown types and codes) have no dump;
//! - a packet whose IP header cannot be decoded prints the decoder's explanation
//!   ("not IP: first nibble 0x0", "IPv4 header length 16 bytes (IHL 4) is below the
//!   minimum 20") where tcpdump prints "unknown ip 0" or "IP bad-hlen 16"; a cut ICMPv6
//!   header prints `[|icmp6]` without the type name; non-IP link payloads print a short
//!   form;
//! - captures cut by a snapshot length: the decoder sees only the captured bytes, so
//!   what tcpdump shows as `[|tcp]` shows as "truncated-ip - N bytes missing!".

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::time::Duration;

use super::dns::{Dns, DnsData, DnsHeader, DnsOverTcp, DnsRecord};
use super::flow::{BoundedMap, DEFAULT_FLOW_CAPACITY, FlowKey};
use super::link::Arp;
use super::summary::{ExtHeader, Icmp, Ip, IpVersion, Net, Summary, Tcp, TcpFlags, TcpOption, Transport, Udp};

/// How the line's timestamp is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TimeFormat {
    /// Time of day in UTC, `HH:MM:SS.uuuuuu` (tcpdump's default, run with `TZ=UTC`).
    #[default]
    TimeOfDay,
    /// Time of day in the local time zone (`TZ`, else `/etc/localtime`, as the C library
    /// finds it): tcpdump's default output on this host.
    LocalTimeOfDay,
    /// Seconds since the first packet this formatter saw, `S.uuuuuu`.
    Relative,
    /// Seconds since the Unix epoch, `S.uuuuuu` (tcpdump `-tt`).
    Epoch,
    /// No timestamp (tcpdump `-t`).
    None,
}

/// Initial sequence numbers per TCP conversation: tcpdump's `tcp_seq_hash`.
#[derive(Debug)]
struct IsnTable {
    map: BoundedMap<FlowKey, Isns>,
    /// The conversation looked up or inserted last, and its numbers: consecutive packets
    /// mostly belong to one conversation, and this spares them hashing the key (SipHash,
    /// kept because a capture is untrusted input). Always equal to its entry in `map`:
    /// only `insert` changes the map, and it evicts older keys, never the one it caches.
    last: Option<(FlowKey, Isns)>,
}

impl IsnTable {
    fn new(capacity: usize) -> Self {
        IsnTable { map: BoundedMap::new(capacity), last: None }
    }

    fn get(&mut self, key: &FlowKey) -> Option<Isns> {
        if let Some((last, isns)) = &self.last
            && last == key
        {
            return Some(*isns);
        }
        let isns = *self.map.get(key)?;
        self.last = Some((*key, isns));
        Some(isns)
    }

    fn insert(&mut self, key: FlowKey, isns: Isns) {
        self.map.insert(key, isns);
        self.last = Some((key, isns));
    }
}

/// tcpdump's `th->seq`/`th->ack`: the canonical first endpoint's initial sequence number
/// and the second's.
#[derive(Clone, Copy, Debug)]
struct Isns {
    seq: u32,
    ack: u32,
}

/// Formats decoded packets as `tcpdump -nn` lines, keeping what tcpdump keeps between
/// packets: each TCP conversation's initial sequence numbers, so that numbers after the
/// handshake are relative exactly as tcpdump prints them (unless [`absolute`]), and the
/// first packet's time for [`TimeFormat::Relative`].
///
/// Memory is bounded: beyond the flow capacity the oldest conversation is forgotten, and
/// its next packet is shown as tcpdump shows a conversation it meets mid-stream.
///
/// [`absolute`]: TcpdumpFormatter::absolute
#[derive(Debug)]
pub struct TcpdumpFormatter {
    absolute: bool,
    time: TimeFormat,
    first: Option<Duration>,
    isns: IsnTable,
    /// Interface names of cooked v2 captures by index, looked up once each (a capture
    /// names few; beyond [`INTERFACE_NAMES`] they are looked up every time).
    interfaces: HashMap<u32, Option<String>>,
    /// The local zone's offset from UTC in the quarter hour last printed, for
    /// [`TimeFormat::LocalTimeOfDay`].
    local_offset: Option<(u64, i64)>,
}

/// Interface names a [`TcpdumpFormatter`] remembers.
const INTERFACE_NAMES: usize = 64;

impl Default for TcpdumpFormatter {
    fn default() -> Self {
        Self::new()
    }
}

impl TcpdumpFormatter {
    /// Relative sequence numbers, time of day (UTC), [`DEFAULT_FLOW_CAPACITY`] flows.
    pub fn new() -> Self {
        TcpdumpFormatter {
            absolute: false,
            time: TimeFormat::TimeOfDay,
            first: None,
            isns: IsnTable::new(DEFAULT_FLOW_CAPACITY),
            interfaces: HashMap::new(),
            local_offset: None,
        }
    }

    /// Absolute sequence and acknowledgment numbers, as `tcpdump -S`.
    pub fn absolute(mut self, absolute: bool) -> Self {
        self.absolute = absolute;
        self
    }

    /// The timestamp format.
    pub fn time_format(mut self, time: TimeFormat) -> Self {
        self.time = time;
        self
    }

    /// How many TCP conversations to remember (at least one).
    pub fn flow_capacity(mut self, flows: usize) -> Self {
        self.isns = IsnTable::new(flows);
        self
    }

    /// The line for a packet captured at `ts` (time since the Unix epoch), without a
    /// trailing newline.
    pub fn format(&mut self, ts: Duration, summary: &Summary) -> String {
        let mut line = String::new();
        self.format_into(ts, summary, &mut line);
        line
    }

    /// Appends the line for a packet captured at `ts` to `line`, without a trailing
    /// newline: [`format`](Self::format) without allocating, for one buffer reused for
    /// every packet.
    pub fn format_into(&mut self, ts: Duration, summary: &Summary, line: &mut String) {
        self.timestamp(ts, line);
        self.interface_and_direction(summary, line);
        let isns = if self.absolute { None } else { Some(&mut self.isns) };
        render(line, summary, isns);
    }

    /// Decodes a raw IP packet and formats it.
    pub fn format_packet(&mut self, ts: Duration, packet: &[u8]) -> String {
        self.format(ts, &super::decode(packet))
    }

    /// A cooked v2 capture's interface and direction, as tcpdump 4.99 prints them before
    /// the packet: the name this host gives the interface index (as tcpdump looks it up,
    /// so `?` for an index it does not have), padded to 5, and the direction padded to 3
    /// (`lo    In  IP6 ...`, `eth0  Out IP ...`).
    fn interface_and_direction(&mut self, summary: &Summary, out: &mut String) {
        let Some(link) = &summary.link else { return };
        let Some(index) = link.ifindex.filter(|_| link.linktype == super::linktype::LINUX_SLL2) else {
            return;
        };
        let looked_up;
        let name = match self.interfaces.get(&index) {
            Some(name) => name,
            None => {
                looked_up = crate::sys::interface_name(index);
                if self.interfaces.len() < INTERFACE_NAMES {
                    self.interfaces.insert(index, looked_up.clone());
                }
                &looked_up
            }
        };
        let _ = write!(out, "{:<5} {:<3} ", name.as_deref().unwrap_or("?"), link.direction.unwrap_or("?"));
    }

    /// The local zone's offset at `secs`, looked up again only in another quarter hour
    /// (zones change offset on quarter hours at the finest).
    fn utc_offset(&mut self, secs: u64) -> i64 {
        let quarter = secs / 900;
        if let Some((q, offset)) = self.local_offset
            && q == quarter
        {
            return offset;
        }
        let offset = i64::try_from(secs).ok().and_then(crate::sys::local_utc_offset).unwrap_or(0);
        self.local_offset = Some((quarter, offset));
        offset
    }

    fn timestamp(&mut self, ts: Duration, out: &mut String) {
        let first = *self.first.get_or_insert(ts);
        let (sign, secs, micros) = match self.time {
            TimeFormat::TimeOfDay | TimeFormat::LocalTimeOfDay => {
                let offset = if self.time == TimeFormat::LocalTimeOfDay { self.utc_offset(ts.as_secs()) } else { 0 };
                let secs = ts.as_secs().saturating_add_signed(offset) % 86_400;
                push_padded(out, secs / 3600, 2);
                out.push(':');
                push_padded(out, secs / 60 % 60, 2);
                out.push(':');
                push_padded(out, secs % 60, 2);
                out.push('.');
                push_padded(out, u64::from(ts.subsec_micros()), 6);
                out.push(' ');
                return;
            }
            TimeFormat::Relative => match ts.checked_sub(first) {
                Some(d) => ("", d.as_secs(), d.subsec_micros()),
                None => ("-", (first - ts).as_secs(), (first - ts).subsec_micros()),
            },
            TimeFormat::Epoch => ("", ts.as_secs(), ts.subsec_micros()),
            TimeFormat::None => return,
        };
        out.push_str(sign);
        push_u64(out, secs);
        out.push('.');
        push_padded(out, u64::from(micros), 6);
        out.push(' ');
    }
}

/// Packets and frames print as `tcpdump -nn -S` would print them, without the timestamp
/// (see [`TcpdumpFormatter`] for tcpdump's relative sequence numbers).
impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = String::new();
        render(&mut line, self, None);
        f.write_str(&line)
    }
}

// Numbers and addresses are written with itoa and `push_str` rather than through
// `fmt`: its machinery (`write!`, `pad_integral`, a `String` per address) was most of
// the time `ustack inspect` spent per packet. `write!` remains for the rarer lines.

/// `n` in decimal.
fn push_u64(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// `n` in decimal, zero-padded to at least `width` digits.
fn push_padded(out: &mut String, n: u64, width: usize) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(n);
    for _ in digits.len()..width {
        out.push('0');
    }
    out.push_str(digits);
}

/// A `usize` in decimal (lengths; never wider than 64 bits on any target Rust has).
fn push_usize(out: &mut String, n: usize) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// An address as tcpdump prints it, for `write!`; [`Addr::Text`] stands in for one
/// that is not there.
#[derive(Clone, Copy)]
enum Addr {
    Ip(IpAddr),
    Text(&'static str),
}

impl Default for Addr {
    fn default() -> Self {
        Addr::Text("")
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Addr::Ip(a) => write_addr(f, a),
            Addr::Text(text) => f.write_str(text),
        }
    }
}

fn addr(a: IpAddr) -> Addr {
    Addr::Ip(a)
}

/// Addresses as tcpdump prints them: IPv6 per RFC 5952, except that tcpdump (like
/// inet_ntop) writes the last 32 bits of an IPv4-compatible address (`::a.b.c.d`) dotted.
/// Generic so that a line's `String` gets it without the `fmt` machinery.
fn write_addr(w: &mut impl fmt::Write, a: IpAddr) -> fmt::Result {
    match a {
        IpAddr::V6(v6) => {
            let o = v6.octets();
            if o[..12].iter().all(|&b| b == 0) && (o[12] != 0 || o[13] != 0) {
                w.write_str("::")?;
                write_dotted(w, [o[12], o[13], o[14], o[15]])
            } else {
                write!(w, "{v6}")
            }
        }
        IpAddr::V4(v4) => write_dotted(w, v4.octets()),
    }
}

fn write_dotted(w: &mut impl fmt::Write, octets: [u8; 4]) -> fmt::Result {
    let mut buf = itoa::Buffer::new();
    for (i, b) in octets.into_iter().enumerate() {
        if i > 0 {
            w.write_char('.')?;
        }
        w.write_str(buf.format(b))?;
    }
    Ok(())
}

/// The line without timestamp, appended to `out`; relative TCP numbers when given the
/// table to keep them in.
fn render(out: &mut String, summary: &Summary, isns: Option<&mut IsnTable>) {
    match &summary.net {
        Net::Ip(ip) => match ip.version {
            IpVersion::V4 => ipv4(out, ip, isns),
            IpVersion::V6 => ipv6(out, ip, isns),
        },
        Net::Arp(arp) => arp_line(out, arp),
        Net::Other { ether_type, len } => {
            let _ = write!(out, "ethertype 0x{ether_type:04x}, length {len}");
        }
        Net::None => out.push_str(summary.problems.first().map_or("undecodable", String::as_str)),
    }
}

fn ipv4(out: &mut String, ip: &Ip, isns: Option<&mut IsnTable>) {
    out.push_str("IP ");
    if ip.total_len < ip.header_len {
        let _ = write!(out, "bad-len {}", ip.total_len);
        return;
    }
    if ip.missing > 0 {
        let _ = write!(out, "truncated-ip - {} bytes missing! ", ip.missing);
    }
    let (src, dst) = (addr(ip.src), addr(ip.dst));
    match &ip.transport {
        Transport::Fragment => {
            let _ = write!(out, "{src} > {dst}: ip-proto-{}", ip.protocol);
        }
        // Unreachables and redirects name the quoted destination: without it tcpdump
        // prints nothing of the message.
        Transport::Icmpv4(icmp) if !icmp4_complete(icmp) => {
            let _ = write!(out, "{src} > {dst}:  [|icmp]");
        }
        Transport::Icmpv4(icmp) => {
            let _ = write!(out, "{src} > {dst}: ICMP ");
            icmp4(out, icmp);
        }
        _ => upper(out, ip, true, isns),
    }
}

fn ipv6(out: &mut String, ip: &Ip, isns: Option<&mut IsnTable>) {
    out.push_str("IP6 ");
    if ip.missing > 0 {
        let _ = write!(out, "truncated-ip6 - {} bytes missing!", ip.missing);
    }
    let (src, dst) = (addr(ip.src), addr(ip.dst));
    // tcpdump's TCP and UDP printers write the addresses themselves, with the ports,
    // but only when the transport header follows the IPv6 header directly.
    let direct = ip.ext_headers.is_empty() && matches!(ip.protocol, 6 | 17);
    if !direct {
        let _ = write!(out, "{src} > {dst}: ");
    }
    for ext in &ip.ext_headers {
        match ext {
            ExtHeader::HopByHop => out.push_str("HBH "),
            ExtHeader::DestinationOptions => out.push_str("DSTOPT "),
            ExtHeader::Routing { routing_type, segments_left } => {
                let _ = write!(out, "RT6 (type={routing_type}, segleft={segments_left}) ");
            }
            ExtHeader::Authentication => out.push_str("AH "),
            ExtHeader::Fragment { fragment, len } => {
                let _ = write!(out, "frag ({}|{len})", fragment.offset);
                if fragment.offset != 0 {
                    return; // the rest is data; tcpdump stops here too
                }
                out.push(' ');
            }
        }
    }
    match &ip.transport {
        Transport::Icmpv6(icmp) => icmp6(out, icmp),
        _ => upper(out, ip, direct, isns),
    }
}

/// TCP, UDP, cut-short headers and other protocols, IPv4 and IPv6 alike.
fn upper(out: &mut String, ip: &Ip, with_addrs: bool, isns: Option<&mut IsnTable>) {
    let (src, dst) = (addr(ip.src), addr(ip.dst));
    let endpoints = |out: &mut String, sport: u16, dport: u16| {
        if with_addrs {
            let _ = write_addr(out, ip.src);
            out.push('.');
        }
        push_u64(out, u64::from(sport));
        out.push_str(" > ");
        if with_addrs {
            let _ = write_addr(out, ip.dst);
            out.push('.');
        }
        push_u64(out, u64::from(dport));
        out.push_str(": ");
    };
    match &ip.transport {
        Transport::Tcp(tcp) => {
            endpoints(out, tcp.sport, tcp.dport);
            tcp_line(out, ip, tcp, isns);
        }
        Transport::Udp(udp) => {
            endpoints(out, udp.sport, udp.dport);
            udp_line(out, ip, udp);
        }
        Transport::Truncated { ports, .. } => {
            // tcpdump's TCP printer shows the ports when it has them and writes the
            // addresses without a trailing space when it has not; the others leave the
            // IP layer's "src > dst: " in place.
            match (ip.protocol, ports) {
                (6, Some((sport, dport))) => endpoints(out, *sport, *dport),
                (6, None) if with_addrs => {
                    let _ = write!(out, "{src} > {dst}:");
                }
                _ if with_addrs => {
                    let _ = write!(out, "{src} > {dst}: ");
                }
                _ => {}
            }
            let name = match ip.protocol {
                6 => "tcp",
                17 => "udp",
                1 => "icmp",
                58 => "icmp6",
                _ => "ip",
            };
            let _ = write!(out, " [|{name}]");
        }
        _ => {
            if with_addrs {
                let _ = write!(out, "{src} > {dst}: ");
            }
            let _ = write!(out, " ip-proto-{} {}", ip.protocol, ip.payload_len);
        }
    }
}

fn tcp_line(out: &mut String, ip: &Ip, tcp: &Tcp, isns: Option<&mut IsnTable>) {
    let length = ip.payload_len;
    let hlen = tcp.header_len;
    if hlen < 20 {
        let _ = write!(out, " tcp {} [bad hdr length {hlen} - too short, < 20]", length.saturating_sub(hlen));
        return;
    }
    out.push_str("Flags [");
    tcp.flags.push_letters(out);
    out.push(']');

    // tcpdump's relative numbers: the first packet with ACK set in a conversation, or any
    // SYN with ACK, records both initial sequence numbers and is shown absolute; later
    // packets with ACK set are shown relative to them.
    let (mut seq, mut ack) = (tcp.seq, tcp.ack);
    let (mut base_seq, mut base_ack, mut reversed) = (0, 0, false);
    if let Some(isns) = isns
        && tcp.flags.has(TcpFlags::ACK)
    {
        let (key, rev) = FlowKey::new(6, (ip.src, tcp.sport), (ip.dst, tcp.dport));
        reversed = rev;
        let isn = match isns.get(&key) {
            Some(isn) if !tcp.flags.has(TcpFlags::SYN) => {
                if rev {
                    seq = seq.wrapping_sub(isn.ack);
                    ack = ack.wrapping_sub(isn.seq);
                } else {
                    seq = seq.wrapping_sub(isn.seq);
                    ack = ack.wrapping_sub(isn.ack);
                }
                isn
            }
            _ => {
                let isn = if rev {
                    Isns { seq: ack.wrapping_sub(1), ack: seq }
                } else {
                    Isns { seq, ack: ack.wrapping_sub(1) }
                };
                isns.insert(key, isn);
                isn
            }
        };
        (base_seq, base_ack) = (isn.seq, isn.ack);
    }

    if hlen > length {
        let _ = write!(out, " [bad hdr length {hlen} - too long, > {length}]");
        return;
    }
    let payload = u32::try_from(length - hlen).unwrap_or(u32::MAX);
    if payload > 0 || tcp.flags.0 & (TcpFlags::SYN | TcpFlags::FIN | TcpFlags::RST) != 0 {
        out.push_str(", seq ");
        push_u64(out, u64::from(seq));
        if payload > 0 {
            out.push(':');
            push_u64(out, u64::from(seq.wrapping_add(payload)));
        }
    }
    if tcp.flags.has(TcpFlags::ACK) {
        out.push_str(", ack ");
        push_u64(out, u64::from(ack));
    }
    out.push_str(", win ");
    push_u64(out, u64::from(tcp.window));
    if tcp.flags.has(TcpFlags::URG) {
        out.push_str(", urg ");
        push_u64(out, u64::from(tcp.urgent));
    }
    if hlen > 20 {
        out.push_str(", options [");
        // SACK edges are in the peer's sequence space: tcpdump subtracts the ISN of the
        // side that receives this packet.
        let sack_base = if reversed { base_seq } else { base_ack };
        for (i, option) in tcp.options.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            if let TcpOption::Malformed { .. } = option {
                // tcpdump gives up on the rest of the line here, length included.
                out.push_str("[bad opt]");
                if i > 0 {
                    out.push(']');
                }
                return;
            }
            tcp_option(out, option, sack_base);
        }
        if tcp.cut {
            out.push_str(" [|tcp]");
            return;
        }
        out.push(']');
    }
    out.push_str(", length ");
    push_u64(out, u64::from(payload));
    match tcp.dns.as_deref() {
        None => {}
        Some(DnsOverTcp::Message(dns)) => {
            out.push(' ');
            dns_line(out, dns);
        }
        Some(DnsOverTcp::TooShort { len }) => {
            let _ = write!(out, " [DNS over TCP: length {len} < 2] (invalid)");
        }
        Some(DnsOverTcp::PrefixMismatch { prefix, len }) => {
            let _ = write!(out, " [prefix length({prefix}) != length({len})] (invalid)");
        }
    }
}

/// tcpdump's option names (print-tcp.c `tcp_option_values`).
fn option_name(kind: u8) -> Option<&'static str> {
    Some(match kind {
        0 => "eol",
        1 => "nop",
        2 => "mss",
        3 => "wscale",
        4 => "sackOK",
        5 => "sack",
        6 => "echo",
        7 => "echoreply",
        8 => "TS",
        11 => "cc",
        12 => "ccnew",
        13 => "ccecho",
        19 => "md5",
        20 => "scps",
        28 => "uto",
        29 => "tcp-ao",
        30 => "mptcp",
        34 => "tfo",
        254 => "exp",
        _ => return None,
    })
}

fn tcp_option(out: &mut String, option: &TcpOption, sack_base: u32) {
    match option {
        TcpOption::Eol => out.push_str("eol"),
        TcpOption::Nop => out.push_str("nop"),
        TcpOption::Mss(mss) => {
            out.push_str("mss ");
            push_u64(out, u64::from(*mss));
        }
        TcpOption::WindowScale(shift) => {
            out.push_str("wscale ");
            push_u64(out, u64::from(*shift));
        }
        TcpOption::SackPermitted => out.push_str("sackOK"),
        TcpOption::Sack(blocks) => {
            out.push_str("sack ");
            push_usize(out, blocks.len());
            out.push(' ');
            for (left, right) in blocks {
                out.push('{');
                push_u64(out, u64::from(left.wrapping_sub(sack_base)));
                out.push(':');
                push_u64(out, u64::from(right.wrapping_sub(sack_base)));
                out.push('}');
            }
        }
        TcpOption::Timestamp { val, ecr } => {
            out.push_str("TS val ");
            push_u64(out, u64::from(*val));
            out.push_str(" ecr ");
            push_u64(out, u64::from(*ecr));
        }
        TcpOption::Unknown { kind, data } => unknown_option(out, *kind, data),
        TcpOption::Malformed { .. } => out.push_str("[bad opt]"),
    }
}

/// Kinds not decoded into a [`TcpOption`] variant: tcpdump's value printing where it is
/// simple, hex otherwise, and `[len N]` where the length is not the expected one.
fn unknown_option(out: &mut String, kind: u8, data: &[u8]) {
    match option_name(kind) {
        Some(name) => out.push_str(name),
        None => {
            let _ = write!(out, "unknown-{kind}");
        }
    }
    let len = data.len() + 2;
    let be32 = |d: &[u8]| u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    // The data bytes tcpdump expects for the kind, and how it prints them.
    let expected = match kind {
        2 | 28 | 20 => 2,
        3 => 1,
        4 => 0,
        6 | 7 | 11..=13 => 4,
        8 => 8,
        5 => {
            let _ = write!(out, " invalid sack"); // a multiple of 8 decodes as TcpOption::Sack
            return;
        }
        _ => {
            if !data.is_empty() {
                out.push_str(" 0x");
                for b in data {
                    let _ = write!(out, "{b:02x}");
                }
            }
            return;
        }
    };
    if data.len() >= expected {
        let _ = match kind {
            2 => write!(out, " {}", u16::from_be_bytes([data[0], data[1]])),
            3 => write!(out, " {}", data[0]),
            8 => write!(out, " val {} ecr {}", be32(data), be32(&data[4..])),
            20 => write!(out, " cap {:02x} id {}", data[0], data[1]),
            28 => {
                let v = u16::from_be_bytes([data[0], data[1]]);
                let secs = if v & 1 != 0 { u32::from(v >> 1) * 60 } else { u32::from(v >> 1) };
                write!(out, " 0x{v:x} {secs}")
            }
            6 | 7 | 11..=13 => write!(out, " {}", be32(data)),
            _ => Ok(()),
        };
    }
    if len != expected + 2 {
        let _ = write!(out, "[len {len}]");
    }
}

fn udp_line(out: &mut String, ip: &Ip, udp: &Udp) {
    let ulen = usize::from(udp.length);
    if ulen < 8 {
        let _ = write!(out, "truncated-udplength {ulen}");
        return;
    }
    let stated = ip.payload_len.saturating_sub(8);
    // A first fragment's UDP length is the whole datagram's: tcpdump prints it as it is.
    if ip.fragment.is_some() {
        out.push_str("UDP, length ");
        push_usize(out, ulen - 8);
        return;
    }
    if ulen - 8 > stated {
        let _ = write!(out, "UDP, bad length {} > {stated}", ulen - 8);
        return;
    }
    match &udp.dns {
        Some(dns) => dns_line(out, dns),
        None => {
            out.push_str("UDP, length ");
            push_usize(out, udp.payload_len);
        }
    }
}

/// print-domain.c's `ns_print` without -v: a query's id, flags and questions; a
/// response's id, flags, rcode, section counts and answers; then the message length.
fn dns_line(out: &mut String, dns: &Dns) {
    let Some(h) = dns.header else {
        let _ = write!(out, "domain [length {} < 12] (invalid)", dns.len);
        return;
    };
    const OPS: [&str; 16] = [
        "",
        " inv_q",
        " stat",
        " op3",
        " notify",
        " update",
        " op6",
        " op7",
        " op8",
        " updateA",
        " updateD",
        " updateDA",
        " updateM",
        " updateMA",
        " zoneInit",
        " zoneRef",
    ];
    let [qd, an, ns, ar] = h.counts;
    push_u64(out, u64::from(h.id));
    out.push_str(OPS[usize::from(h.opcode())]);
    if h.response() {
        out.push_str(dns_rcode(h.rcode()));
        if h.has(DnsHeader::AA) {
            out.push('*');
        }
        if !h.has(DnsHeader::RA) {
            out.push('-');
        }
        if h.has(DnsHeader::TC) {
            out.push('|');
        }
        if qd != 1 {
            let _ = write!(out, " [{qd}q]");
        }
        let _ = write!(out, " {an}/{ns}/{ar}");
        for (i, record) in dns.answers.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            dns_record(out, record, dns.mdns);
        }
    } else {
        if h.has(DnsHeader::RD) {
            out.push('+');
        }
        if h.has(DnsHeader::CD) {
            out.push('%');
        }
        // tcpdump notes bits a query should not have: AA, TC, RA, Z, AD, rcode.
        if h.flags & 0x6cf != 0 {
            let _ = write!(out, " [b2&3=0x{:x}]", h.flags);
        }
        if h.opcode() == 1 {
            // An inverse query carries answers, not questions.
            if qd != 0 {
                let _ = write!(out, " [{qd}q]");
            }
            if an != 1 {
                let _ = write!(out, " [{an}a]");
            }
        } else {
            if qd != 1 {
                let _ = write!(out, " [{qd}q]");
            }
            if an != 0 {
                let _ = write!(out, " [{an}a]");
            }
        }
        if ns != 0 {
            let _ = write!(out, " [{ns}n]");
        }
        if ar != 0 {
            let _ = write!(out, " [{ar}au]");
        }
        for question in &dns.questions {
            out.push(' ');
            out.push_str(&dns_type(question.qtype));
            if question.qclass != 1 {
                out.push(' ');
                out.push_str(&dns_class(question.qclass));
            }
            if dns.mdns {
                out.push_str(if question.unicast_response { " (QU)" } else { " (QM)" });
            }
            out.push_str("? ");
            out.push_str(&question.name);
        }
    }
    if !dns.complete {
        out.push_str(" [|domain]");
        return;
    }
    let _ = write!(out, " ({})", dns.len);
}

fn dns_record(out: &mut String, record: &DnsRecord, mdns: bool) {
    if record.class != 1 && record.rtype != 41 {
        out.push(' ');
        out.push_str(&dns_class(record.class));
    }
    if mdns && record.cache_flush {
        out.push_str(" (Cache flush)");
    }
    out.push(' ');
    out.push_str(&dns_type(record.rtype));
    let _ = match &record.data {
        DnsData::A(a) => write!(out, " {a}"),
        DnsData::Aaaa(a) => {
            out.push(' ');
            write_addr(out, IpAddr::V6(*a))
        }
        DnsData::Name(name) => write!(out, " {name}"),
        DnsData::Mx { preference, exchange } => write!(out, " {exchange} {preference}"),
        DnsData::Txt(strings) => {
            for text in strings {
                let _ = write!(out, " \"{text}\"");
            }
            Ok(())
        }
        DnsData::Srv { target, port, priority, weight } => write!(out, " {target}:{port} {priority} {weight}"),
        DnsData::Other => Ok(()),
    };
}

/// tcpdump's rcode names (print-domain.c `ns_rcode`).
fn dns_rcode(rcode: u8) -> &'static str {
    const NAMES: [&str; 16] = [
        "",
        " FormErr",
        " ServFail",
        " NXDomain",
        " NotImp",
        " Refused",
        " YXDomain",
        " YXRRSet",
        " NXRRSet",
        " NotAuth",
        " NotZone",
        " Resp11",
        " Resp12",
        " Resp13",
        " Resp14",
        " NoChange",
    ];
    NAMES[usize::from(rcode & 0xf)]
}

/// tcpdump's class names (`ns_class2str`).
fn dns_class(class: u16) -> String {
    match class {
        1 => "IN".into(),
        3 => "CHAOS".into(),
        4 => "HS".into(),
        255 => "ANY".into(),
        other => format!("(Class {other})"),
    }
}

/// tcpdump's type names (`ns_type2str`).
fn dns_type(rtype: u16) -> String {
    let name = match rtype {
        1 => "A",
        2 => "NS",
        3 => "MD",
        4 => "MF",
        5 => "CNAME",
        6 => "SOA",
        7 => "MB",
        8 => "MG",
        9 => "MR",
        10 => "NULL",
        11 => "WKS",
        12 => "PTR",
        13 => "HINFO",
        14 => "MINFO",
        15 => "MX",
        16 => "TXT",
        17 => "RP",
        18 => "AFSDB",
        19 => "X25",
        20 => "ISDN",
        21 => "RT",
        22 => "NSAP",
        23 => "NSAP_PTR",
        24 => "SIG",
        25 => "KEY",
        26 => "PX",
        27 => "GPOS",
        28 => "AAAA",
        29 => "LOC",
        30 => "NXT",
        31 => "EID",
        32 => "NIMLOC",
        33 => "SRV",
        34 => "ATMA",
        35 => "NAPTR",
        36 => "KX",
        37 => "CERT",
        38 => "A6",
        39 => "DNAME",
        40 => "SINK",
        41 => "OPT",
        42 => "APL",
        43 => "DS",
        44 => "SSHFP",
        45 => "IPSECKEY",
        46 => "RRSIG",
        47 => "NSEC",
        48 => "DNSKEY",
        99 => "SPF",
        100 => "UINFO",
        101 => "UID",
        102 => "GID",
        103 => "UNSPEC",
        104 => "UNSPECA",
        249 => "TKEY",
        250 => "TSIG",
        251 => "IXFR",
        252 => "AXFR",
        253 => "MAILB",
        254 => "MAILA",
        255 => "ANY",
        256 => "URI",
        other => return format!("Type{other}"),
    };
    name.into()
}

/// The quoted packet's destination, protocol and destination port.
fn quoted(icmp: &Icmp) -> (Addr, u8, Option<u16>, Addr) {
    let unknown = || (Addr::Text("?"), 0, None, Addr::Text("?"));
    let Some(q) = icmp.quoted.as_deref() else {
        return unknown();
    };
    let Some(ip) = q.ip() else {
        return unknown();
    };
    (addr(ip.dst), ip.protocol, q.ports().map(|p| p.1), addr(ip.src))
}

/// Whether an ICMP message has what tcpdump's line for it needs: unreachables and
/// redirects name the quoted destination, port unreachables its port.
fn icmp4_complete(icmp: &Icmp) -> bool {
    let quote = icmp.quoted.as_deref();
    match icmp.icmp_type {
        3 if icmp.code == 3 => {
            quote.and_then(Summary::ports).is_some()
                || quote.and_then(Summary::ip).is_some_and(|ip| !matches!(ip.protocol, 6 | 17))
        }
        3 | 5 => quote.and_then(Summary::ip).is_some(),
        _ => true,
    }
}

/// print-icmp.c, without -v.
fn icmp4(out: &mut String, icmp: &Icmp) {
    let (t, code) = (icmp.icmp_type, icmp.code);
    let (qdst, qproto, qport, _) = quoted(icmp);
    let id = u16::from_be_bytes([icmp.rest[0], icmp.rest[1]]);
    let seq = u16::from_be_bytes([icmp.rest[2], icmp.rest[3]]);
    let gateway = icmp.target.map(addr).unwrap_or_default();
    let _ = match t {
        0 => write!(out, "echo reply, id {id}, seq {seq}"),
        8 => write!(out, "echo request, id {id}, seq {seq}"),
        3 => match code {
            0 => write!(out, "net {qdst} unreachable"),
            1 => write!(out, "host {qdst} unreachable"),
            2 => write!(out, "{qdst} protocol {qproto} unreachable"),
            3 => match (qproto, qport) {
                (6, Some(port)) => write!(out, "{qdst} tcp port {port} unreachable"),
                (17, Some(port)) => write!(out, "{qdst} udp port {port} unreachable"),
                (p, port) => write!(out, "{qdst} protocol {p} port {} unreachable", port.unwrap_or(0)),
            },
            4 => match icmp.mtu {
                Some(mtu) if mtu != 0 => write!(out, "{qdst} unreachable - need to frag (mtu {mtu})"),
                _ => write!(out, "{qdst} unreachable - need to frag"),
            },
            5 => write!(out, "{qdst} unreachable - source route failed"),
            6 => write!(out, "net {qdst} unreachable - unknown"),
            7 => write!(out, "host {qdst} unreachable - unknown"),
            8 => write!(out, "{qdst} unreachable - source host isolated"),
            9 => write!(out, "net {qdst} unreachable - admin prohibited"),
            10 => write!(out, "host {qdst} unreachable - admin prohibited"),
            11 => write!(out, "net {qdst} unreachable - tos prohibited"),
            12 => write!(out, "host {qdst} unreachable - tos prohibited"),
            13 => write!(out, "host {qdst} unreachable - admin prohibited filter"),
            14 => write!(out, "host {qdst} unreachable - host precedence violation"),
            15 => write!(out, "host {qdst} unreachable - precedence cutoff"),
            _ => write!(out, "{qdst} unreachable - #{code}"),
        },
        4 => write!(out, "source quench"),
        5 => match code {
            0 => write!(out, "redirect {qdst} to net {gateway}"),
            1 => write!(out, "redirect {qdst} to host {gateway}"),
            2 => write!(out, "redirect-tos {qdst} to net {gateway}"),
            3 => write!(out, "redirect-tos {qdst} to host {gateway}"),
            _ => write!(out, "redirect-#{code} {qdst} to {gateway}"),
        },
        9 => write!(out, "router advertisement"),
        10 => write!(out, "router solicitation"),
        11 => match code {
            0 => write!(out, "time exceeded in-transit"),
            1 => write!(out, "ip reassembly time exceeded"),
            _ => write!(out, "time exceeded-#{code}"),
        },
        12 => match code {
            0 => write!(out, "parameter problem - octet {}", icmp.rest[0]),
            _ => write!(out, "parameter problem - code {code}"),
        },
        13 => write!(out, "time stamp query id {id} seq {seq}"),
        14 => write!(out, "time stamp reply id {id} seq {seq}"),
        15 => write!(out, "information request"),
        16 => write!(out, "information reply"),
        17 => write!(out, "address mask request"),
        18 => write!(out, "address mask reply"),
        _ => write!(out, "type-#{t}"),
    };
    let _ = write!(out, ", length {}", icmp.len);
}

/// tcpdump's ICMPv6 type names (print-icmp6.c `icmp6_type_values`).
fn icmp6_name(t: u8) -> Option<&'static str> {
    Some(match t {
        1 => "destination unreachable",
        2 => "packet too big",
        3 => "time exceeded in-transit",
        4 => "parameter problem",
        128 => "echo request",
        129 => "echo reply",
        130 => "multicast listener query",
        131 => "multicast listener report",
        132 => "multicast listener done",
        133 => "router solicitation",
        134 => "router advertisement",
        135 => "neighbor solicitation",
        136 => "neighbor advertisement",
        137 => "redirect",
        138 => "router renumbering",
        139 => "who-are-you request",
        140 => "who-are-you reply",
        141 => "inverse neighbor solicitation",
        142 => "inverse neighbor advertisement",
        143 => "multicast listener report v2",
        _ => return None,
    })
}

/// print-icmp6.c, without -v.
fn icmp6(out: &mut String, icmp: &Icmp) {
    let (t, code) = (icmp.icmp_type, icmp.code);
    match icmp6_name(t) {
        Some(name) => {
            let _ = write!(out, "ICMP6, {name}");
        }
        None => {
            let _ = write!(out, "ICMP6, unknown icmp6 type ({t})");
        }
    }
    let (qdst, qproto, qport, qsrc) = quoted(icmp);
    let word = u32::from_be_bytes(icmp.rest);
    // Unreachables name the quoted destination (and port): without them tcpdump stops.
    let has_quote = icmp.quoted.as_deref().and_then(Summary::ip).is_some();
    if t == 1 && (!has_quote || (code == 4 && !matches!((qproto, qport), (6 | 17, Some(_))))) {
        let name = match code {
            0 => ", unreachable route",
            1 => ",  unreachable prohibited",
            2 => ", beyond scope",
            3 => ", unreachable address",
            4 => ", unreachable port",
            _ => "",
        };
        let _ = write!(out, "{name} [|icmp6]");
        return;
    }
    let _ = match t {
        1 => {
            let _ = match code {
                0 => write!(out, ", unreachable route {qdst}"),
                // sic: tcpdump's name for this code starts with a space
                1 => write!(out, ",  unreachable prohibited {qdst}"),
                2 => write!(out, ", beyond scope {qdst}, source address {qsrc}"),
                3 => write!(out, ", unreachable address {qdst}"),
                4 => match (qproto, qport) {
                    (6, Some(port)) => write!(out, ", unreachable port, {qdst} tcp port {port}"),
                    (17, Some(port)) => write!(out, ", unreachable port, {qdst} udp port {port}"),
                    (p, port) => {
                        write!(out, ", unreachable port, {qdst} protocol {p} port {} unreachable", port.unwrap_or(0))
                    }
                },
                _ => write!(out, ", unknown unreach code ({code})"),
            };
            Ok(())
        }
        2 => write!(out, ", mtu {}", icmp.mtu.unwrap_or(word)),
        3 => match code {
            0 => write!(out, " for {qdst}"),
            1 => write!(out, " (reassembly)"),
            _ => write!(out, ", unknown code ({code})"),
        },
        4 => match code {
            0 => write!(out, ", erroneous - octet {word}"),
            1 => write!(out, ", next header - octet {word}"),
            2 => write!(out, ", option - octet {word}"),
            3 => write!(out, ", incomplete header chain - octet {word}"),
            _ => write!(out, ", code-#{code}"),
        },
        128 | 129 => {
            let echo = icmp.echo.unwrap_or(super::summary::Echo { id: 0, seq: 0 });
            write!(out, ", id {}, seq {}", echo.id, echo.seq)
        }
        135 => write!(out, ", who has {}", icmp.target.map(addr).unwrap_or_default()),
        136 => write!(out, ", tgt is {}", icmp.target.map(addr).unwrap_or_default()),
        137 => write!(
            out,
            ", {} to {}",
            icmp.destination.map(addr).unwrap_or_default(),
            icmp.target.map(addr).unwrap_or_default()
        ),
        143 => match icmp.group_records {
            Some(n) => write!(out, ", {n} group record(s)"),
            None => Ok(()),
        },
        _ => Ok(()),
    };
    let _ = write!(out, ", length {}", icmp.len);
}

/// print-arp.c for IPv4 over Ethernet, without -v.
fn arp_line(out: &mut String, arp: &Arp) {
    let hw = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":");
    let ip = |a: Option<std::net::Ipv4Addr>| a.map_or("?".to_string(), |a| a.to_string());
    out.push_str("ARP, ");
    let _ = match arp.operation {
        1 => {
            let _ = write!(out, "Request who-has {}", ip(arp.target_ip));
            if arp.target_hw.iter().any(|&b| b != 0) {
                let _ = write!(out, " ({})", hw(&arp.target_hw));
            }
            write!(out, " tell {}", ip(arp.sender_ip))
        }
        2 => write!(out, "Reply {} is-at {}", ip(arp.sender_ip), hw(&arp.sender_hw)),
        3 => write!(out, "Reverse Request who-is {} tell {}", hw(&arp.target_hw), hw(&arp.sender_hw)),
        4 => write!(out, "Reverse Reply {} at {}", hw(&arp.target_hw), ip(arp.target_ip)),
        op => write!(out, "unknown opcode {op}"),
    };
    let _ = write!(out, ", length {}", arp.len);
}
