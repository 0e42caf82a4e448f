//! Ladder diagrams: a TCP connection drawn as the packets between a client column and a
//! server column, one arrow per packet, then the handshake's round-trip times and who
//! closed first.
//!
//! ```text
//!   ms since SYN  client                                          server
//!                 127.0.0.1:40000                            127.0.0.1:7
//!          0.000  |─────────────── [S] seq 0 len 0 ─────────────────>|
//!          0.012  |<──────────── [S.] seq 0 ack 1 len 0 ──────────────|
//!          0.025  |────────────── [.] seq 1 ack 1 len 0 ─────────────>|
//! ```
//!
//! A [`Ladder`] keeps only the first and last packets of a connection (the handshake and
//! the close are what a ladder is for), so a 1 MiB transfer still draws in a screenful
//! and memory stays bounded whatever the capture.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::Duration;

use crate::packet::TcpFlags;

use super::flows::{Flow, Side, TcpConnection};

/// Packets a ladder shows from the start of a connection, by default.
pub const DEFAULT_HEAD: usize = 20;
/// Packets a ladder shows from the end of a connection, by default.
pub const DEFAULT_TAIL: usize = 10;

/// The narrowest arrow, in characters between the two columns.
const MIN_WIDTH: usize = 44;

/// One packet of a connection, numbers as on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LadderStep {
    /// Capture time.
    pub at: Duration,
    /// The sender.
    pub from: Side,
    /// TCP flags.
    pub flags: TcpFlags,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number, when the ACK flag is set.
    pub ack: Option<u32>,
    /// Payload bytes.
    pub len: usize,
}

/// The packets of one connection: the first `head`, the last `tail`, and how many
/// were in between.
#[derive(Clone, Debug)]
pub struct Ladder {
    head: Vec<LadderStep>,
    tail: VecDeque<LadderStep>,
    head_len: usize,
    tail_len: usize,
    total: u64,
}

impl Ladder {
    /// An empty ladder keeping the first `head` and the last `tail` packets.
    pub fn new(head: usize, tail: usize) -> Self {
        Ladder { head: Vec::new(), tail: VecDeque::new(), head_len: head, tail_len: tail, total: 0 }
    }

    /// Adds the connection's next packet.
    pub fn push(&mut self, step: LadderStep) {
        self.total += 1;
        if self.head.len() < self.head_len {
            self.head.push(step);
        } else if self.tail_len > 0 {
            if self.tail.len() == self.tail_len {
                self.tail.pop_front();
            }
            self.tail.push_back(step);
        }
    }

    /// The first packets.
    pub fn head(&self) -> &[LadderStep] {
        &self.head
    }

    /// The last packets (after the head).
    pub fn tail(&self) -> impl Iterator<Item = &LadderStep> {
        self.tail.iter()
    }

    /// Packets of the connection.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Packets between the head and the tail, not kept.
    pub fn elided(&self) -> u64 {
        self.total - self.head.len() as u64 - self.tail.len() as u64
    }
}

/// Milliseconds from `origin` to `at`, signed, as `12.345`.
fn ms(at: Duration, origin: Duration) -> String {
    match at.checked_sub(origin) {
        Some(d) => format!("{:.3}", d.as_secs_f64() * 1000.0),
        None => format!("-{:.3}", (origin - at).as_secs_f64() * 1000.0),
    }
}

/// A step's label: `[S.] seq 0 ack 1 len 0`, numbers relative to each side's base
/// unless `absolute`.
fn label(step: &LadderStep, tcp: &TcpConnection, absolute: bool) -> String {
    let rel = |n: u32, side: Side| if absolute { n } else { n.wrapping_sub(tcp.base(side).unwrap_or(0)) };
    let mut s = format!("[{}] seq {}", step.flags, rel(step.seq, step.from));
    if let Some(ack) = step.ack {
        let _ = write!(s, " ack {}", rel(ack, step.from.other()));
    }
    let _ = write!(s, " len {}", step.len);
    s
}

/// An arrow `width` characters long with `label` in its middle.
fn arrow(label: &str, width: usize, from: Side) -> String {
    let text = format!(" {label} ");
    let dashes = width.saturating_sub(text.chars().count() + 1);
    let (left, right) = (dashes / 2, dashes - dashes / 2);
    let (l, r) = ("─".repeat(left), "─".repeat(right));
    match from {
        Side::Client => format!("{l}{text}{r}>"),
        Side::Server => format!("<{l}{text}{r}"),
    }
}

/// Draws a TCP flow as a ladder, followed by its handshake round-trip times and who
/// closed first. `number` names the connection in the heading. Relative sequence
/// numbers (each side's counted from its ISN) unless `absolute`. Empty for flows that
/// are not TCP or were recorded without a ladder.
pub fn draw(flow: &Flow, number: usize, absolute: bool) -> String {
    let Some(tcp) = &flow.tcp else { return String::new() };
    let Some(ladder) = &tcp.ladder else { return String::new() };
    let client = flow.endpoint(Side::Client);
    let server = flow.endpoint(Side::Server);
    let (origin, since) = match tcp.syn {
        Some(syn) => (syn, "ms since SYN"),
        None => (flow.first, "ms since first"),
    };

    let steps: Vec<&LadderStep> = ladder.head().iter().chain(ladder.tail()).collect();
    let labels: Vec<String> = steps.iter().map(|s| label(s, tcp, absolute)).collect();
    let widest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let width = MIN_WIDTH.max(widest + 8).max(client.chars().count() + server.chars().count() + 4);
    let times: Vec<String> = steps.iter().map(|s| ms(s.at, origin)).collect();
    let time_width = times.iter().map(String::len).max().unwrap_or(0).max(since.len());

    let mut out = String::new();
    let packets = ladder.total();
    let _ = writeln!(
        out,
        "connection {number}: client {client} → server {server}, {packets} packet{}",
        if packets == 1 { "" } else { "s" }
    );
    // Column heads: the client's over the left bar, the server's ending at the right one.
    let _ = writeln!(out, "{since:>time_width$}  {:<w$}{:>6}", "client", "server", w = width + 2 - 6);
    let _ = writeln!(out, "{:time_width$}  {client:<w$}{server}", "", w = width + 2 - server.chars().count());
    for (i, (step, label)) in steps.iter().zip(&labels).enumerate() {
        if i == ladder.head().len() && ladder.elided() > 0 {
            let gap = format!("… {} packets …", ladder.elided());
            let _ = writeln!(out, "{:time_width$}  |{gap:^width$}|", "");
        }
        let _ = writeln!(out, "{:>time_width$}  |{}|", times[i], arrow(label, width, step.from));
    }
    summary(&mut out, flow, tcp, origin);
    out
}

/// The handshake's round-trip times and how the connection ended, in words.
fn summary(out: &mut String, flow: &Flow, tcp: &TcpConnection, origin: Duration) {
    let span = |from: Duration, to: Duration| super::flows::duration(to.saturating_sub(from));
    match (tcp.last_syn, tcp.syn_ack, tcp.ack) {
        (Some(syn), Some(syn_ack), ack) => {
            let retried = if tcp.syns > 1 { format!(", from the last of {} SYNs", tcp.syns) } else { String::new() };
            let _ = writeln!(out, "  handshake round trips, as seen where the capture was made:");
            let _ = writeln!(
                out,
                "    SYN → SYN-ACK  {}  client side: the capture point to the server and back \
                 (the whole RTT if captured at the client{retried})",
                span(syn, syn_ack)
            );
            match ack {
                Some(ack) => {
                    let _ = writeln!(
                        out,
                        "    SYN-ACK → ACK  {}  server side: the capture point to the client and back \
                         (the whole RTT if captured at the server)",
                        span(syn_ack, ack)
                    );
                }
                None => {
                    let _ = writeln!(out, "    SYN-ACK → ACK  not captured: no ACK of the SYN-ACK");
                }
            }
        }
        (Some(syn), None, _) => match tcp.rst {
            Some((Side::Server, at)) => {
                let _ = writeln!(out, "  handshake: SYN answered by RST after {}: connection refused", span(syn, at));
            }
            _ => {
                let _ = writeln!(
                    out,
                    "  handshake: SYN unanswered ({} SYN{} sent)",
                    tcp.syns,
                    if tcp.syns == 1 { "" } else { "s" }
                );
            }
        },
        (None, _, _) => {
            let _ = writeln!(out, "  handshake not captured: the capture began mid-connection");
        }
    }
    let at = |t: Duration| format!("{} ms", ms(t, origin));
    match tcp.closed_first() {
        Some((side, t, true)) => {
            let _ = writeln!(out, "  reset by the {side} at {}", at(t));
        }
        Some((side, t, false)) => {
            let other = side.other();
            let other_fin = if other == Side::Client { tcp.client_fin } else { tcp.server_fin };
            let mut line = format!("  closed first by the {side}: FIN at {}", at(t));
            match other_fin {
                Some(o) => {
                    let _ = write!(line, "; the {other}'s FIN at {}", at(o));
                }
                None => {
                    let _ = write!(line, "; the {other} had sent no FIN when the capture ended");
                }
            }
            if let Some((by, r)) = tcp.rst {
                let _ = write!(line, "; then RST by the {by} at {}", at(r));
            }
            let _ = writeln!(out, "{line}");
        }
        None => {
            let _ = writeln!(
                out,
                "  still open when the capture ended ({} after its first packet)",
                super::flows::duration(flow.duration())
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::flows::FlowTable;
    use crate::packet::decode;

    fn step(n: u32) -> LadderStep {
        LadderStep {
            at: Duration::from_millis(n.into()),
            from: Side::Client,
            flags: TcpFlags(TcpFlags::ACK),
            seq: n,
            ack: Some(1),
            len: 0,
        }
    }

    #[test]
    fn keeps_head_and_tail() {
        let mut l = Ladder::new(3, 2);
        for n in 0..10 {
            l.push(step(n));
        }
        assert_eq!(l.head().iter().map(|s| s.seq).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(l.tail().map(|s| s.seq).collect::<Vec<_>>(), [8, 9]);
        assert_eq!((l.total(), l.elided()), (10, 5));
        let mut short = Ladder::new(3, 2);
        short.push(step(0));
        assert_eq!(short.elided(), 0);
    }

    fn tcp_packet(src: u16, dst: u16, seq: u32, ack: u32, flags: u8, data: usize) -> Vec<u8> {
        let total = 40 + data;
        let (sa, da) = if src == 7 { ([10, 0, 0, 2], [10, 0, 0, 1]) } else { ([10, 0, 0, 1], [10, 0, 0, 2]) };
        let mut p = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, 6, 0, 0];
        p.extend(sa);
        p.extend(da);
        p.extend(src.to_be_bytes());
        p.extend(dst.to_be_bytes());
        p.extend(seq.to_be_bytes());
        p.extend(ack.to_be_bytes());
        p.extend([5 << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
        p.extend(vec![b'x'; data]);
        p
    }

    const SYN: u8 = TcpFlags::SYN;
    const ACK: u8 = TcpFlags::ACK;
    const FIN: u8 = TcpFlags::FIN;
    const RST: u8 = TcpFlags::RST;

    fn drawn(packets: &[(u64, Vec<u8>)], absolute: bool) -> String {
        let mut t = FlowTable::new().with_ladders(DEFAULT_HEAD, DEFAULT_TAIL);
        for (us, p) in packets {
            t.observe(Duration::from_micros(*us), &decode(p));
        }
        draw(&t.flows()[0], 1, absolute)
    }

    #[test]
    fn handshake_and_close() {
        let text = drawn(
            &[
                (0, tcp_packet(40000, 7, 1000, 0, SYN, 0)),
                (120, tcp_packet(7, 40000, 5000, 1001, SYN | ACK, 0)),
                (250, tcp_packet(40000, 7, 1001, 5001, ACK, 0)),
                (1000, tcp_packet(40000, 7, 1001, 5001, ACK | 8, 5)),
                (2000, tcp_packet(40000, 7, 1006, 5001, FIN | ACK, 0)),
                (3000, tcp_packet(7, 40000, 5001, 1007, FIN | ACK, 0)),
                (3100, tcp_packet(40000, 7, 1007, 5002, ACK, 0)),
            ],
            false,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "connection 1: client 10.0.0.1:40000 → server 10.0.0.2:7, 7 packets");
        assert!(lines[1].trim_start().starts_with("ms since SYN  client"), "{text}");
        assert!(lines[1].ends_with("server"), "{text}");
        assert!(lines[2].ends_with("10.0.0.2:7"), "{text}");
        assert!(
            lines[3].contains("0.000  |") && lines[3].contains(" [S] seq 0 len 0 ") && lines[3].ends_with(">|"),
            "{text}"
        );
        assert!(lines[4].contains("0.120  |<") && lines[4].contains(" [S.] seq 0 ack 1 len 0 "), "{text}");
        assert!(lines[5].contains("[.] seq 1 ack 1 len 0") && lines[5].ends_with("─>|"), "{text}");
        assert!(lines[6].contains("[P.] seq 1 ack 1 len 5"), "{text}");
        // Every bar lines up.
        let bars: Vec<usize> = lines[3..10].iter().map(|l| l.chars().count()).collect();
        assert!(bars.windows(2).all(|w| w[0] == w[1]), "{text}");
        assert!(text.contains("SYN → SYN-ACK  0.120 ms  client side"), "{text}");
        assert!(text.contains("SYN-ACK → ACK  0.130 ms  server side"), "{text}");
        assert!(text.contains("closed first by the client: FIN at 2.000 ms; the server's FIN at 3.000 ms"), "{text}");
    }

    #[test]
    fn absolute_numbers() {
        let text = drawn(
            &[(0, tcp_packet(40000, 7, 1000, 0, SYN, 0)), (5, tcp_packet(7, 40000, 5000, 1001, SYN | ACK, 0))],
            true,
        );
        assert!(text.contains("[S.] seq 5000 ack 1001 len 0"), "{text}");
        assert!(text.contains("SYN-ACK → ACK  not captured"), "{text}");
        assert!(text.contains("still open when the capture ended"), "{text}");
    }

    #[test]
    fn refused() {
        let text = drawn(
            &[(0, tcp_packet(40000, 7, 1000, 0, SYN, 0)), (22, tcp_packet(7, 40000, 0, 1001, RST | ACK, 0))],
            false,
        );
        assert!(text.contains("SYN answered by RST after 0.022 ms: connection refused"), "{text}");
        assert!(text.contains("reset by the server at 0.022 ms"), "{text}");
    }

    #[test]
    fn a_long_connection_is_elided_in_the_middle() {
        let mut packets = vec![
            (0, tcp_packet(40000, 7, 0, 0, SYN, 0)),
            (1, tcp_packet(7, 40000, 0, 1, SYN | ACK, 0)),
            (2, tcp_packet(40000, 7, 1, 1, ACK, 0)),
        ];
        let mut seq = 1u32;
        for i in 0..1000u64 {
            packets.push((10 + i, tcp_packet(40000, 7, seq, 1, ACK, 1000)));
            seq += 1000;
        }
        let text = drawn(&packets, false);
        assert_eq!(text.lines().filter(|l| l.contains('|')).count(), DEFAULT_HEAD + DEFAULT_TAIL + 1, "{text}");
        assert!(text.contains("… 973 packets …"), "{text}");
        assert!(text.contains(&format!("seq {} ack 1 len 1000", seq - 1000)), "{text}");
    }

    #[test]
    fn mid_stream() {
        let text = drawn(&[(0, tcp_packet(40000, 7, 777, 999, ACK, 3))], false);
        assert!(text.contains("ms since first"), "{text}");
        assert!(text.contains("[.] seq 1 ack 1 len 3"), "{text}");
        assert!(text.contains("handshake not captured"), "{text}");
    }
}
