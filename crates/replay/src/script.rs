//! What the capture shows each side did, read once before a replay: each side's byte
//! stream, SYN, FIN and RST, its datagrams and ICMP errors; the captured client turned
//! into a script for ustack's client to follow; and whether the captured server behaved
//! like the application ustack runs in its place.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ustack::observe::Side;
use ustack::packet::TcpFlags;

use super::App;
use super::conversation::{Body, Conversation, LoadError, Proto, Segment};

/// One side of one conversation, as the capture shows it.
#[derive(Clone, Debug, Default)]
pub struct Sent {
    /// Its initial sequence number (TCP).
    pub isn: Option<u32>,
    /// Index into [`Conversation::packets`] of its first SYN (or SYN-ACK).
    pub syn: Option<usize>,
    /// Every byte it sent, in order (TCP).
    pub stream: Vec<u8>,
    /// Where in `stream` its FIN came: the stream's length then.
    pub fin: Option<u64>,
    /// Whether it sent a RST.
    pub rst: bool,
    /// Its UDP datagrams' payloads, in order.
    pub datagrams: Vec<Vec<u8>>,
    /// ICMP destination-unreachable errors it sent: (type, code).
    pub unreachables: Vec<(u8, u8)>,
    /// Indexes into [`Conversation::packets`] of its first packet of a kind, to set
    /// ustack's beside: its first RST, first data segment, first datagram.
    pub first: First,
}

/// See [`Sent::first`].
#[derive(Clone, Copy, Debug, Default)]
pub struct First {
    /// Its first RST.
    pub rst: Option<usize>,
    /// Its first TCP segment with data.
    pub data: Option<usize>,
    /// Its first UDP datagram.
    pub datagram: Option<usize>,
    /// Its first ICMP error.
    pub unreachable: Option<usize>,
}

impl Sent {
    /// A sequence number as an offset into `stream` (0 is the first data byte); `None`
    /// before the SYN is known or for numbers before the stream.
    pub fn offset(&self, seq: u32) -> Option<u64> {
        let rel = seq.wrapping_sub(self.isn?.wrapping_add(1));
        // Numbers "behind" the stream (the SYN itself) wrap to huge values.
        (rel < 1 << 31).then_some(u64::from(rel))
    }

    /// How far an acknowledgment number `ack` reaches into this side's sequence space:
    /// 0 acknowledges nothing, 1 the SYN, 1 + n the SYN and n bytes, and one more the FIN.
    pub fn extent_of(&self, ack: u32) -> Option<u64> {
        let rel = ack.wrapping_sub(self.isn?);
        (rel < 1 << 31).then_some(u64::from(rel))
    }
}

/// Both sides of every conversation: `flows[i][side as usize]`.
#[derive(Debug)]
pub struct Captured {
    /// Per conversation, the client's and the server's [`Sent`].
    pub flows: Vec<[Sent; 2]>,
}

impl Captured {
    /// Reads what each side sent. Fails when a side's bytes are not all in the capture
    /// (a gap in its stream), since the byte streams are what replay compares.
    pub fn new(conv: &Conversation) -> Result<Captured, LoadError> {
        let mut flows: Vec<[Sent; 2]> = vec![Default::default(); conv.flows.len()];
        // Data that arrived ahead of a gap, per (flow, side): offset → bytes.
        let mut pending: Vec<[BTreeMap<u64, Vec<u8>>; 2]> = vec![Default::default(); conv.flows.len()];
        for (i, p) in conv.packets.iter().enumerate() {
            let sent = &mut flows[p.flow][p.from as usize];
            match &p.body {
                Body::Tcp(seg) => {
                    if seg.flags.has(TcpFlags::SYN) {
                        sent.isn.get_or_insert(seg.seq);
                        sent.syn.get_or_insert(i);
                    }
                    if seg.flags.has(TcpFlags::RST) {
                        sent.rst = true;
                        sent.first.rst.get_or_insert(i);
                        continue;
                    }
                    let Some(start) = sent.offset(seg.seq.wrapping_add(u32::from(seg.flags.has(TcpFlags::SYN)))) else {
                        continue;
                    };
                    let payload = p.payload();
                    if !payload.is_empty() {
                        sent.first.data.get_or_insert(i);
                        let queue = &mut pending[p.flow][p.from as usize];
                        queue.insert(start, payload.to_vec());
                        drain(sent, queue);
                    }
                    if seg.flags.has(TcpFlags::FIN) && sent.fin.is_none() {
                        sent.fin = Some(start + payload.len() as u64);
                    }
                }
                Body::Udp { .. } => {
                    sent.first.datagram.get_or_insert(i);
                    sent.datagrams.push(p.payload().to_vec());
                }
                Body::Unreachable { icmp_type, code, .. } => {
                    sent.first.unreachable.get_or_insert(i);
                    sent.unreachables.push((*icmp_type, *code));
                }
            }
        }
        for (f, sides) in flows.iter().enumerate() {
            for side in [Side::Client, Side::Server] {
                let have = sides[side as usize].stream.len() as u64;
                let gap = pending[f][side as usize].keys().next().copied();
                let fin_gap = sides[side as usize].fin.filter(|&at| at > have);
                if let Some(at) = gap.or(fin_gap) {
                    return Err(LoadError::Unusable(format!(
                        "{}: the capture misses bytes {}..{at} the {side} sent, so its byte stream is not known",
                        conv.flows[f],
                        have + 1,
                    )));
                }
            }
        }
        Ok(Captured { flows })
    }

    /// What `side` of conversation `flow` sent.
    pub fn sent(&self, flow: usize, side: Side) -> &Sent {
        &self.flows[flow][side as usize]
    }
}

/// Appends the pending segments that now continue the stream (overlaps — retransmitted
/// bytes — are skipped).
fn drain(sent: &mut Sent, queue: &mut BTreeMap<u64, Vec<u8>>) {
    while let Some((&start, _)) = queue.first_key_value() {
        let have = sent.stream.len() as u64;
        if start > have {
            return;
        }
        let bytes = queue.pop_first().map(|(_, b)| b).unwrap_or_default();
        let skip = usize::try_from(have - start).unwrap_or(usize::MAX);
        if skip < bytes.len() {
            sent.stream.extend_from_slice(&bytes[skip..]);
        }
    }
}

/// A step of the captured client, for ustack's client to repeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientStep {
    /// Do it once this much has been received: bytes (TCP) or datagrams (UDP).
    pub after: u64,
    /// ...and, for TCP, once the server's FIN has arrived.
    pub after_eof: bool,
    /// What to do.
    pub action: Action,
}

/// What ustack's client does at a [`ClientStep`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// send() these bytes (TCP) or this datagram (UDP).
    Send(Vec<u8>),
    /// shutdown(SHUT_WR): the FIN.
    ShutdownWrite,
}

/// The captured client of conversation `flow` as a script: each byte range it sent and
/// its FIN, each with what it had received from the server before (by the capture's
/// order), so ustack's client sends the same things at the same points.
pub fn client_script(conv: &Conversation, captured: &Captured, flow: usize) -> Vec<ClientStep> {
    let client = captured.sent(flow, Side::Client);
    let server = captured.sent(flow, Side::Server);
    let mut steps: Vec<ClientStep> = Vec::new();
    let mut received = 0u64; // server bytes (TCP) or datagrams (UDP) seen so far
    let mut eof = false;
    let mut scripted = 0u64; // client bytes scripted so far
    let mut datagrams = 0usize;
    let mut fin_scripted = false;
    let push = |steps: &mut Vec<ClientStep>, after: u64, after_eof: bool, action: Action| {
        // Consecutive sends at the same point are one send.
        if let (Some(last), Action::Send(more)) = (steps.last_mut(), &action)
            && last.after == after
            && last.after_eof == after_eof
            && let Action::Send(bytes) = &mut last.action
            && conv.flows[flow].proto == Proto::Tcp
        {
            bytes.extend_from_slice(more);
            return;
        }
        steps.push(ClientStep { after, after_eof, action });
    };
    for p in conv.packets.iter().filter(|p| p.flow == flow) {
        match (&p.body, p.from) {
            (Body::Tcp(seg), Side::Server) => {
                if let Some(end) = server
                    .offset(seg.seq.wrapping_add(u32::from(seg.flags.has(TcpFlags::SYN))))
                    .map(|start| start + seg.len() as u64)
                {
                    received = received.max(end.min(server.stream.len() as u64));
                }
                eof |= seg.flags.has(TcpFlags::FIN) && server.fin.is_some_and(|at| received >= at);
            }
            (Body::Tcp(seg), Side::Client) => {
                if let Some(start) = data_start(client, seg) {
                    let end = (start + seg.len() as u64).min(client.stream.len() as u64);
                    if end > scripted {
                        let bytes = client.stream[scripted as usize..end as usize].to_vec();
                        push(&mut steps, received, eof, Action::Send(bytes));
                        scripted = end;
                    }
                }
                if seg.flags.has(TcpFlags::FIN) && !fin_scripted {
                    fin_scripted = true;
                    push(&mut steps, received, eof, Action::ShutdownWrite);
                }
            }
            (Body::Udp { .. }, Side::Server) => received += 1,
            (Body::Udp { .. }, Side::Client) => {
                if let Some(d) = client.datagrams.get(datagrams) {
                    push(&mut steps, received, false, Action::Send(d.clone()));
                }
                datagrams += 1;
            }
            (Body::Unreachable { .. }, _) => {}
        }
    }
    steps
}

fn data_start(sent: &super::script::Sent, seg: &Segment) -> Option<u64> {
    sent.offset(seg.seq.wrapping_add(u32::from(seg.flags.has(TcpFlags::SYN))))
}

/// Whether the captured server of each conversation behaved as `app` does; `None` if
/// it did, else a sentence saying where it did not. Shown beside a difference, because
/// then the difference is the application's, not the stack's.
pub fn app_mismatch(conv: &Conversation, captured: &Captured, flows: &[usize], app: App) -> Option<String> {
    let mut first = None;
    let mut others = 0;
    for &f in flows {
        let client = captured.sent(f, Side::Client);
        let server = captured.sent(f, Side::Server);
        let flow = &conv.flows[f];
        let (to_server, to_client): (Vec<u8>, Vec<u8>) = match flow.proto {
            Proto::Tcp => (client.stream.clone(), server.stream.clone()),
            Proto::Udp => (client.datagrams.concat(), server.datagrams.concat()),
        };
        let fits = match app {
            App::Echo => to_client == to_server && (flow.proto == Proto::Tcp || server.datagrams == client.datagrams),
            App::Discard => to_client.is_empty(),
        };
        // A port the captured server refused ran no application at all.
        let refused = !server.unreachables.is_empty() || (flow.proto == Proto::Tcp && server.syn.is_none());
        if fits || refused {
            continue;
        }
        if first.is_some() {
            others += 1;
            continue;
        }
        first = Some(format!(
            "the captured server of flow {} did not behave like {app}: it received {} bytes and sent {} ({})",
            flow.id,
            to_server.len(),
            to_client.len(),
            preview(&to_client, 40),
        ));
    }
    first.map(|why| match others {
        0 => why,
        n => format!("{why}; {n} other flow{} did not either", if n == 1 { "" } else { "s" }),
    })
}

/// Bytes as a short quoted string, non-printing ones escaped: `"GET / HTTP/1.1\r\n"…`.
pub fn preview(bytes: &[u8], max: usize) -> String {
    if bytes.is_empty() {
        return "nothing".to_string();
    }
    let mut s = String::from("\"");
    for &b in bytes.iter().take(max) {
        match b {
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    s.push('"');
    if bytes.len() > max {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(name: &str) -> (Conversation, Captured) {
        let path = ustack_testkit::fixture("kernel").join(name);
        let conv = Conversation::read(std::fs::File::open(path).expect("fixture")).expect("capture");
        let captured = Captured::new(&conv).expect("streams");
        (conv, captured)
    }

    fn send(after: u64, bytes: &[u8]) -> ClientStep {
        ClientStep { after, after_eof: false, action: Action::Send(bytes.to_vec()) }
    }

    #[test]
    fn streams_are_read_whole() {
        let (_, captured) = read("bulk.pcap");
        let client = captured.sent(0, Side::Client);
        assert_eq!(client.stream.len(), 1 << 20);
        assert!(client.stream.iter().enumerate().all(|(i, &b)| b == i as u8), "the pattern fixture-peers.py sends");
        assert_eq!(client.fin, Some(1 << 20));
        assert!(captured.sent(0, Side::Server).stream.is_empty());
    }

    #[test]
    fn the_echo_client_waits_for_each_echo() {
        let (conv, captured) = read("echo.pcap");
        let steps = client_script(&conv, &captured, 0);
        let close = ClientStep { after: 26, after_eof: false, action: Action::ShutdownWrite };
        assert_eq!(steps, vec![send(0, b"hello, kernel\n"), send(14, b"second line\n"), close]);
    }

    #[test]
    fn the_half_closing_client_shuts_down_before_the_reply() {
        let (conv, captured) = read("half-close.pcap");
        let steps = client_script(&conv, &captured, 0);
        assert_eq!(steps.len(), 2, "{steps:?}");
        assert_eq!(steps[1], ClientStep { after: 0, after_eof: false, action: Action::ShutdownWrite });
    }

    #[test]
    fn the_client_of_a_closing_server_closes_after_its_fin() {
        let (conv, captured) = read("server-close.pcap");
        let steps = client_script(&conv, &captured, 0);
        assert_eq!(steps, vec![ClientStep { after: 54, after_eof: true, action: Action::ShutdownWrite }]);
    }

    #[test]
    fn the_application_is_recognized() {
        let (conv, captured) = read("echo.pcap");
        assert_eq!(app_mismatch(&conv, &captured, &[0], App::Echo), None);
        assert!(
            app_mismatch(&conv, &captured, &[0], App::Discard)
                .is_some_and(|w| w.contains("did not behave like discard"))
        );
        let (conv, captured) = read("refused.pcap");
        assert_eq!(app_mismatch(&conv, &captured, &[0], App::Discard), None, "a closed port runs no application");
    }

    #[test]
    fn previews_escape_and_cut() {
        assert_eq!(preview(b"", 8), "nothing");
        assert_eq!(preview(b"GET /\r\n\x00\"", 20), "\"GET /\\r\\n\\x00\\\"\"");
        assert_eq!(preview(b"abcdef", 3), "\"abc\"…");
    }

    #[test]
    fn offsets_and_extents_count_from_the_isn() {
        let sent = Sent { isn: Some(u32::MAX), ..Sent::default() };
        assert_eq!(sent.offset(0), Some(0), "the first byte after a SYN at 2^32-1 wraps to 0");
        assert_eq!(sent.offset(u32::MAX), None, "the SYN itself is before the stream");
        assert_eq!(sent.extent_of(0), Some(1), "acknowledging the SYN");
        assert_eq!(Sent::default().offset(5), None, "no ISN, no offsets");
    }
}
