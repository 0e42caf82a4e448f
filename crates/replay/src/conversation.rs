//! A capture read into what a replay needs: its TCP and UDP conversations, and each of
//! their packets with the side that sent it, in capture order.
//!
//! Flows are numbered as `ustack inspect --flows` numbers them: every IP conversation
//! (ICMP too) in order of first appearance, both directions sharing a number, and a fresh
//! SYN with a new initial sequence number on a closed TCP flow starting a new one. An ICMP
//! destination-unreachable error keeps its own number there, and is attached here to the
//! conversation whose packet it quotes.
//!
//! Everything read is bounded ([`MAX_PACKETS`], [`MAX_BYTES`], [`MAX_FLOWS`]), and whatever
//! cannot be replayed faithfully — a record cut by the snapshot length, an IP fragment, a
//! damaged header — is refused with a [`LoadError`] naming the record, rather than
//! replayed as something else.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use smoltcp::time::Instant as SmolInstant;
use ustack::engine::reassembly::{Offer, Reassembly};
use ustack::observe::{CaptureError, CaptureReader, Side};
use ustack::packet::{FlowKey, Summary, TcpFlags, TcpOption, Transport};

/// Packets of the replayed protocols one capture may hold.
pub const MAX_PACKETS: usize = 200_000;
/// Bytes of IP packets one capture may hold (the 1 MiB fixture needs a little over 1 MiB).
pub const MAX_BYTES: usize = 64 * 1024 * 1024;
/// Conversations one capture may hold (the bound of `inspect`'s flow table).
pub const MAX_FLOWS: usize = ustack::observe::flows::DEFAULT_CAPACITY;

/// Why a capture cannot be replayed. Its `Display` is one line.
#[derive(Debug)]
pub enum LoadError {
    /// The file could not be read as a capture (not one, cut short, corrupt).
    Capture(CaptureError),
    /// It is a capture, but not one that can be replayed, and why.
    Unusable(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Capture(e) => write!(f, "{e}"),
            LoadError::Unusable(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for LoadError {}

impl From<CaptureError> for LoadError {
    fn from(e: CaptureError) -> Self {
        LoadError::Capture(e)
    }
}

/// The transport protocol of a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// One TCP or UDP conversation.
#[derive(Clone, Debug)]
pub struct ReplayedFlow {
    /// Its number, as `ustack inspect --flows` gives it.
    pub id: u64,
    /// TCP or UDP.
    pub proto: Proto,
    /// The side that sent the first SYN (TCP) or the first datagram (UDP).
    pub client: SocketAddr,
    /// The other side.
    pub server: SocketAddr,
    /// Why the conversation cannot be replayed, if it cannot (it began before the
    /// capture did, or runs between two ports of one address).
    pub unreplayable: Option<String>,
}

impl ReplayedFlow {
    /// The address of `side`.
    pub fn addr(&self, side: Side) -> SocketAddr {
        match side {
            Side::Client => self.client,
            Side::Server => self.server,
        }
    }
}

impl fmt::Display for ReplayedFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flow {} ({} {} > {})", self.id, self.proto, self.client, self.server)
    }
}

/// A TCP segment's header fields, and where its payload lies in [`Packet::ip`].
#[derive(Clone, Debug)]
pub struct Segment {
    /// Flags.
    pub flags: TcpFlags,
    /// Sequence number, as captured.
    pub seq: u32,
    /// Acknowledgment number, as captured (meaningful with ACK).
    pub ack: u32,
    /// Window field, unscaled.
    pub window: u16,
    /// Options, in order.
    pub options: Vec<TcpOption>,
    /// The payload's bytes in [`Packet::ip`].
    pub payload: Range<usize>,
}

impl Segment {
    /// Payload bytes.
    pub fn len(&self) -> usize {
        self.payload.len()
    }

    /// Whether the segment carries no payload.
    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }

    /// Sequence space the segment takes: payload, plus one for SYN and one for FIN.
    pub fn seq_len(&self) -> u32 {
        let mut n = self.payload.len() as u32;
        if self.flags.has(TcpFlags::SYN) {
            n = n.wrapping_add(1);
        }
        if self.flags.has(TcpFlags::FIN) {
            n = n.wrapping_add(1);
        }
        n
    }

    /// The window scale shift the segment's options announce (SYN segments).
    pub fn window_scale(&self) -> Option<u8> {
        self.options.iter().find_map(|o| match o {
            TcpOption::WindowScale(s) => Some(*s),
            _ => None,
        })
    }

    /// The MSS the segment's options announce (SYN segments).
    pub fn mss(&self) -> Option<u16> {
        self.options.iter().find_map(|o| match o {
            TcpOption::Mss(m) => Some(*m),
            _ => None,
        })
    }

    /// Whether the options hold `SACK permitted`.
    pub fn sack_permitted(&self) -> bool {
        self.options.iter().any(|o| matches!(o, TcpOption::SackPermitted))
    }

    /// The timestamps option, if present.
    pub fn timestamp(&self) -> Option<(u32, u32)> {
        self.options.iter().find_map(|o| match o {
            TcpOption::Timestamp { val, ecr } => Some((*val, *ecr)),
            _ => None,
        })
    }
}

/// What a packet carries, for replay.
#[derive(Clone, Debug)]
pub enum Body {
    /// A TCP segment.
    Tcp(Segment),
    /// A UDP datagram; its payload's bytes in [`Packet::ip`].
    Udp {
        /// The payload's bytes in [`Packet::ip`].
        payload: Range<usize>,
    },
    /// An ICMP or ICMPv6 destination-unreachable error about a packet of this flow.
    Unreachable {
        /// ICMP type (3 for ICMP, 1 for ICMPv6).
        icmp_type: u8,
        /// Code (3 port unreachable, ICMPv6 4).
        code: u8,
        /// The quoted packet's bytes in [`Packet::ip`].
        quote: Range<usize>,
    },
}

/// One packet of a replayed conversation.
#[derive(Clone, Debug)]
pub struct Packet {
    /// Its record number in the file, from 1.
    pub record: u64,
    /// Capture time since the Unix epoch.
    pub ts: Duration,
    /// Its conversation: an index into [`Conversation::flows`].
    pub flow: usize,
    /// Who sent it.
    pub from: Side,
    /// The IP packet (without link-layer header), exactly as long as its header says.
    pub ip: Vec<u8>,
    /// TTL or hop limit.
    pub hop_limit: u8,
    /// IPv4 "don't fragment" (false for IPv6).
    pub dont_fragment: bool,
    /// IPv6 flow label (0 for IPv4).
    pub flow_label: u32,
    /// What it carries.
    pub body: Body,
}

impl Packet {
    /// The TCP segment, if it is one.
    pub fn segment(&self) -> Option<&Segment> {
        match &self.body {
            Body::Tcp(s) => Some(s),
            _ => None,
        }
    }

    /// The TCP or UDP payload (empty for ICMP).
    pub fn payload(&self) -> &[u8] {
        let range = match &self.body {
            Body::Tcp(s) => s.payload.clone(),
            Body::Udp { payload } => payload.clone(),
            Body::Unreachable { .. } => 0..0,
        };
        self.ip.get(range).unwrap_or(&[])
    }
}

/// A capture's replayable conversations.
#[derive(Debug, Default)]
pub struct Conversation {
    /// TCP and UDP conversations, in flow-number order.
    pub flows: Vec<ReplayedFlow>,
    /// Their packets, in capture order.
    pub packets: Vec<Packet>,
    /// ReplayedFlow numbers of ICMP errors attached to a conversation: (ICMP flow id, index into
    /// `flows`), so `--flow` can point from one to the other.
    pub icmp_flows: Vec<(u64, usize)>,
    /// Records not replayed, counted by what they were ("ARP", "ICMP echo", ...).
    pub skipped: Vec<(String, u64)>,
    /// Records read.
    pub records: u64,
}

impl Conversation {
    /// Reads a capture (pcap or pcapng, any link type `ustack inspect` reads).
    pub fn read<R: Read>(source: R) -> Result<Conversation, LoadError> {
        let mut reader = CaptureReader::new(source)?;
        let mut builder = Builder::default();
        // IP fragments are put back together as ustack's own stack does, and the datagram
        // replayed whole (the record of its last fragment gives its place and time).
        let mut fragments = Reassembly::default();
        while let Some(record) = reader.next_record()? {
            builder.records += 1;
            let summary = record.decode();
            let link_len = summary.link.as_ref().map_or(0, |l| l.header_len);
            let cut = usize::try_from(record.orig_len).unwrap_or(usize::MAX) > record.data.len();
            let ip_bytes = record.data.get(link_len..).unwrap_or(&[]);
            if !cut && summary.ip().is_some_and(|ip| ip.fragment.is_some()) {
                let at = SmolInstant::from_micros(i64::try_from(record.ts.as_micros()).unwrap_or(i64::MAX));
                match fragments.offer(at, ip_bytes) {
                    Offer::Whole(datagram) => {
                        let whole = ustack::packet::decode(&datagram);
                        builder.add(builder.records, record.ts, &whole, &datagram, false)?;
                    }
                    Offer::Held { .. } => builder.skip("IP fragment (replayed as its whole datagram)"),
                    Offer::NotFragment => builder.add(builder.records, record.ts, &summary, ip_bytes, cut)?,
                }
                continue;
            }
            builder.add(builder.records, record.ts, &summary, ip_bytes, cut)?;
        }
        builder.finish()
    }

    /// The conversation numbered `id` (as `inspect --flows` numbers it), as an index into
    /// `flows`; an ICMP error's number gives the conversation it is about.
    pub fn flow_index(&self, id: u64) -> Option<usize> {
        self.flows
            .iter()
            .position(|f| f.id == id)
            .or_else(|| self.icmp_flows.iter().find(|(i, _)| *i == id).map(|(_, f)| *f))
    }
}

/// The numbering state of one flow, as `inspect`'s flow table keeps it.
struct Numbered {
    id: u64,
    /// Index into the conversation's flows, for TCP and UDP.
    flow: Option<usize>,
    /// FIN or RST seen: a new SYN with another ISN starts a new flow.
    closed: bool,
    client_isn: Option<u32>,
}

#[derive(Default)]
struct Builder {
    conv: Conversation,
    numbers: HashMap<FlowKey, Numbered>,
    next_id: u64,
    bytes: usize,
    records: u64,
    skipped: HashMap<String, u64>,
}

fn unusable(record: u64, what: impl fmt::Display) -> LoadError {
    LoadError::Unusable(format!("record {record}: {what}"))
}

impl Builder {
    fn skip(&mut self, what: &str) {
        *self.skipped.entry(what.to_string()).or_default() += 1;
    }

    /// The flow number of a packet with `key`, as `inspect`'s flow table assigns it.
    fn number(&mut self, key: FlowKey, syn_only: Option<u32>) -> Result<&mut Numbered, LoadError> {
        let reused = match (self.numbers.get(&key), syn_only) {
            (Some(n), Some(isn)) => n.closed && n.client_isn != Some(isn),
            _ => false,
        };
        if reused || !self.numbers.contains_key(&key) {
            if self.next_id as usize >= MAX_FLOWS {
                return Err(LoadError::Unusable(format!("more than {MAX_FLOWS} conversations: too many to replay")));
            }
            self.next_id += 1;
            self.numbers.insert(key, Numbered { id: self.next_id, flow: None, closed: false, client_isn: None });
        }
        Ok(self.numbers.get_mut(&key).expect("inserted above"))
    }

    fn add(&mut self, record: u64, ts: Duration, summary: &Summary, bytes: &[u8], cut: bool) -> Result<(), LoadError> {
        let Some(ip) = summary.ip() else {
            self.skip(match &summary.net {
                ustack::packet::Net::Arp(_) => "ARP",
                _ => "not IP",
            });
            return Ok(());
        };
        let Some((key, _)) = FlowKey::of(summary) else {
            self.skip("not IP");
            return Ok(());
        };
        let replayed = matches!(ip.transport, Transport::Tcp(_) | Transport::Udp(_));
        let unreachable = match &ip.transport {
            Transport::Icmpv4(i) if i.icmp_type == 3 => Some(i),
            Transport::Icmpv6(i) if i.icmp_type == 1 => Some(i),
            _ => None,
        };
        let syn_only = match &ip.transport {
            Transport::Tcp(t) if t.flags.has(TcpFlags::SYN) && !t.flags.has(TcpFlags::ACK) => Some(t.seq),
            _ => None,
        };
        let number = self.number(key, syn_only)?;
        let number_id = number.id;
        if !replayed && unreachable.is_none() {
            let what = match &ip.transport {
                Transport::Icmpv4(i) | Transport::Icmpv6(i) if i.echo.is_some() => "ICMP echo",
                Transport::Icmpv4(_) | Transport::Icmpv6(_) => "other ICMP",
                Transport::Fragment => "IP fragment",
                _ => "other protocol",
            };
            self.skip(what);
            return Ok(());
        }
        // From here on the packet is replayed: it must be whole and make sense.
        if cut {
            return Err(unusable(
                record,
                "cut short by the capture's snapshot length; replay needs whole packets (capture without -s)",
            ));
        }
        if let Some(problem) = summary.problems.first() {
            return Err(unusable(record, problem));
        }
        if ip.fragment.is_some() {
            return Err(unusable(record, "an IP fragment; replay does not reassemble fragments"));
        }
        let Some(ip_bytes) = bytes.get(..ip.total_len) else {
            return Err(unusable(record, format!("has {} of its {} IP bytes", bytes.len(), ip.total_len)));
        };
        if self.conv.packets.len() >= MAX_PACKETS || self.bytes + ip_bytes.len() > MAX_BYTES {
            return Err(LoadError::Unusable(format!(
                "more than {MAX_PACKETS} packets or {} MiB of them: too large to replay",
                MAX_BYTES >> 20
            )));
        }
        let (dont_fragment, flow_label) = header_bits(ip_bytes);
        let payload_start = ip.total_len.saturating_sub(ip.payload_len);

        let (flow, from, body) = match &ip.transport {
            Transport::Tcp(t) => {
                let start = payload_start + t.header_len;
                let body = Body::Tcp(Segment {
                    flags: t.flags,
                    seq: t.seq,
                    ack: t.ack,
                    window: t.window,
                    options: t.options.clone(),
                    payload: start.min(ip.total_len)..ip.total_len,
                });
                let (flow, from) =
                    self.flow_of(number_id, key, Proto::Tcp, (ip.src, t.sport), (ip.dst, t.dport), syn_only);
                let number = self.numbers.get_mut(&key).expect("numbered above");
                if t.flags.has(TcpFlags::FIN) || t.flags.has(TcpFlags::RST) {
                    number.closed = true;
                }
                if let Some(isn) = syn_only {
                    number.client_isn.get_or_insert(isn);
                }
                (flow, from, body)
            }
            Transport::Udp(u) => {
                let start = payload_start + 8;
                let body = Body::Udp { payload: start.min(ip.total_len)..(start + u.payload_len).min(ip.total_len) };
                let (flow, from) = self.flow_of(number_id, key, Proto::Udp, (ip.src, u.sport), (ip.dst, u.dport), None);
                (flow, from, body)
            }
            _ => {
                let icmp = unreachable.expect("checked above");
                let Some(quoted) = icmp.quoted.as_deref() else {
                    self.skip("ICMP error without a quote");
                    return Ok(());
                };
                let about = FlowKey::of(quoted).and_then(|(k, _)| self.numbers.get(&k)).and_then(|n| n.flow);
                let Some(flow) = about else {
                    self.skip("ICMP error about no replayed conversation");
                    return Ok(());
                };
                if !self.conv.icmp_flows.iter().any(|(id, _)| *id == number_id) {
                    self.conv.icmp_flows.push((number_id, flow));
                }
                // The error answers the quoted packet's sender: it comes from the other side.
                let quoted_src = quoted.ip().map(|q| q.src);
                let client_sent = quoted_src == Some(self.conv.flows[flow].client.ip());
                let from = if client_sent { Side::Server } else { Side::Client };
                let quote_start = payload_start + 8;
                let body = Body::Unreachable {
                    icmp_type: icmp.icmp_type,
                    code: icmp.code,
                    quote: quote_start.min(ip.total_len)..ip.total_len,
                };
                (flow, from, body)
            }
        };
        self.bytes += ip_bytes.len();
        self.conv.packets.push(Packet {
            record,
            ts,
            flow,
            from,
            ip: ip_bytes.to_vec(),
            hop_limit: ip.hop_limit,
            dont_fragment,
            flow_label,
            body,
        });
        Ok(())
    }

    /// The conversation of a TCP or UDP packet (made on its first packet), and the side
    /// that sent it.
    fn flow_of(
        &mut self,
        id: u64,
        key: FlowKey,
        proto: Proto,
        src: (IpAddr, u16),
        dst: (IpAddr, u16),
        syn_only: Option<u32>,
    ) -> (usize, Side) {
        let src = SocketAddr::from(src);
        let dst = SocketAddr::from(dst);
        let number = self.numbers.get_mut(&key).expect("numbered before");
        let index = match number.flow {
            Some(i) => i,
            None => {
                let unreplayable = if src.ip() == dst.ip() {
                    Some(format!(
                        "it runs between two ports of {} (a loopback capture); replay needs two hosts",
                        src.ip()
                    ))
                } else if proto == Proto::Tcp && syn_only.is_none() {
                    Some("the capture begins after its handshake; replay needs the SYN".to_string())
                } else {
                    None
                };
                self.conv.flows.push(ReplayedFlow { id, proto, client: src, server: dst, unreplayable });
                let i = self.conv.flows.len() - 1;
                number.flow = Some(i);
                i
            }
        };
        let flow = &self.conv.flows[index];
        let from = if src == flow.client && dst == flow.server { Side::Client } else { Side::Server };
        (index, from)
    }

    fn finish(mut self) -> Result<Conversation, LoadError> {
        let mut skipped: Vec<(String, u64)> = self.skipped.into_iter().collect();
        skipped.sort();
        self.conv.skipped = skipped;
        self.conv.records = self.records;
        if self.conv.flows.is_empty() {
            let what = if self.records == 0 {
                "the capture holds no packets".to_string()
            } else {
                let kinds: Vec<String> = self.conv.skipped.iter().map(|(k, n)| format!("{n} {k}")).collect();
                format!("no TCP or UDP conversation to replay ({} records: {})", self.records, kinds.join(", "))
            };
            return Err(LoadError::Unusable(what));
        }
        Ok(self.conv)
    }
}

/// IPv4 "don't fragment" and the IPv6 flow label, read from the header bytes.
fn header_bits(ip: &[u8]) -> (bool, u32) {
    match ip.first().map(|b| b >> 4) {
        Some(4) if ip.len() >= 8 => (ip[6] & 0x40 != 0, 0),
        Some(6) if ip.len() >= 4 => (false, u32::from_be_bytes([0, ip[1] & 0x0f, ip[2], ip[3]])),
        _ => (false, 0),
    }
}
