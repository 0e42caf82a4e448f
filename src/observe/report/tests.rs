//! The report's model and page, checked without a browser: on the repository's kernel
//! captures, and on hand-made segments for what those captures lack (loss, SACK, zero
//! windows, window scaling, connections too long to draw whole).

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::observe::CaptureReader;
use crate::observe::flows::Side;
use crate::packet::{TcpFlags, decode};

/// The report model of `fixtures/kernel/<name>`.
fn fixture_report(name: &str) -> Report {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/kernel").join(name);
    let file = std::fs::File::open(&path).expect("open the fixture");
    let mut reader = CaptureReader::new(file).expect("a capture");
    let mut builder = ReportBuilder::new();
    while let Some(record) = reader.next_record().expect("a record") {
        builder.observe(record.ts, &record.decode(), Mark::Seen);
    }
    builder.finish()
}

fn labels(rows: &[LadderRow]) -> Vec<String> {
    rows.iter().map(LadderRow::label).collect()
}

#[test]
fn backlog_capture_draws_each_connection_with_its_handshake() {
    let report = fixture_report("backlog.pcap");
    // Four echo connections (the last two waited for the backlog: their SYNs were resent).
    assert_eq!(report.connections.len(), 4);
    assert_eq!(report.table.flows().len(), 4);
    for c in &report.connections {
        // The handshake's three arrows, after any resent SYNs.
        let first: Vec<LadderRow> = c.head.iter().filter(|r| r.kind == RowKind::Normal).take(3).cloned().collect();
        assert_eq!(
            labels(&first),
            ["[S] seq 0 len 0", "[S.] seq 0 ack 1 len 0", "[.] seq 1 ack 1 len 0"][..],
            "connection {}",
            c.number
        );
        assert!(c.handshake_rtt.0.is_some() && c.handshake_rtt.1.is_some());
        assert_eq!(c.elided, 0);
        // The client's 9 bytes and its SYN and FIN, acknowledged by the server.
        let to_server = &c.graphs[Side::Client as usize];
        assert_eq!(to_server.segments.iter().filter(|s| s.end - s.start == 9).count(), 1);
        assert_eq!(to_server.acks.last().map(|a| a.1), Some(11));
    }
    // Connections 3 and 4 sent their SYN three times: the second and third are retransmissions.
    for c in &report.connections[2..] {
        let syns: Vec<RowKind> = c.head.iter().filter(|r| r.flags == "S").map(|r| r.kind).collect();
        assert_eq!(
            syns,
            [RowKind::Normal, RowKind::Retransmission, RowKind::Retransmission],
            "connection {}",
            c.number
        );
        assert_eq!(c.graphs[Side::Client as usize].retransmissions(), 2);
    }
    assert_eq!(report.connections[0].graphs[Side::Client as usize].retransmissions(), 0);
}

#[test]
fn refused_connection_ends_in_a_reset_row() {
    let report = fixture_report("refused.pcap");
    let c = &report.connections[0];
    let kinds: Vec<(String, RowKind)> = c.head.iter().map(|r| (r.flags.clone(), r.kind)).collect();
    assert_eq!(kinds, [("S".to_string(), RowKind::Normal), ("R.".to_string(), RowKind::Reset)]);
    // The RST acknowledges nothing the graph should show as the server's progress.
    assert!(c.graphs[Side::Server as usize].is_empty());
}

#[test]
fn udp_flows_get_a_timeline() {
    let report = fixture_report("udp-echo.pcap");
    assert!(report.connections.is_empty());
    let u = &report.udp[0];
    assert!(u.datagrams.iter().any(|d| d.from == Side::Client) && u.datagrams.iter().any(|d| d.from == Side::Server));
    let page = html::page(&report, "udp-echo.pcap");
    assert_eq!(page.matches("<g class=\"datagram").count(), u.datagrams.len());
}

// Hand-made segments, client 10.0.0.1:40000 → server 10.0.0.2:80.

struct Seg {
    from: Side,
    flags: u8,
    seq: u32,
    ack: u32,
    window: u16,
    data: usize,
    wscale: Option<u8>,
    sacks: Vec<(u32, u32)>,
}

fn seg(from: Side, flags: u8, seq: u32, ack: u32, data: usize) -> Seg {
    Seg { from, flags, seq, ack, window: 1000, data, wscale: None, sacks: Vec::new() }
}

fn bytes(s: &Seg) -> Vec<u8> {
    let mut options = Vec::new();
    if let Some(shift) = s.wscale {
        options.extend([1, 3, 3, shift]);
    }
    if !s.sacks.is_empty() {
        options.extend([1, 1, 5, 2 + 8 * s.sacks.len() as u8]);
        for (l, r) in &s.sacks {
            options.extend(l.to_be_bytes());
            options.extend(r.to_be_bytes());
        }
    }
    let header = 20 + options.len();
    let total = 20 + header + s.data;
    let (src, dst, sport, dport) = match s.from {
        Side::Client => ([10, 0, 0, 1], [10, 0, 0, 2], 40000u16, 80u16),
        Side::Server => ([10, 0, 0, 2], [10, 0, 0, 1], 80, 40000),
    };
    let mut p = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, 6, 0, 0];
    p.extend(src);
    p.extend(dst);
    p.extend(sport.to_be_bytes());
    p.extend(dport.to_be_bytes());
    p.extend(s.seq.to_be_bytes());
    p.extend(s.ack.to_be_bytes());
    p.extend([((header / 4) as u8) << 4, s.flags]);
    p.extend(s.window.to_be_bytes());
    p.extend([0, 0, 0, 0]);
    p.extend(options);
    p.extend(vec![b'x'; s.data]);
    p
}

fn build(segs: &[(Seg, Mark)]) -> Report {
    let mut builder = ReportBuilder::new();
    for (i, (s, mark)) in segs.iter().enumerate() {
        builder.observe(Duration::from_millis(i as u64), &decode(&bytes(s)), *mark);
    }
    builder.finish()
}

const SYN: u8 = TcpFlags::SYN;
const ACK: u8 = TcpFlags::ACK;
const C: Side = Side::Client;
const S: Side = Side::Server;

/// A handshake with window scaling both ways (shift 2): client ISN 1000, server ISN 5000.
fn handshake() -> Vec<(Seg, Mark)> {
    vec![
        (Seg { wscale: Some(2), ..seg(C, SYN, 1000, 0, 0) }, Mark::Seen),
        (Seg { wscale: Some(2), ..seg(S, SYN | ACK, 5000, 1001, 0) }, Mark::Seen),
        (seg(C, ACK, 1001, 5001, 0), Mark::Seen),
    ]
}

#[test]
fn a_lost_segment_its_sack_and_its_retransmission_are_drawn() {
    let mut segs = handshake();
    segs.push((seg(C, ACK, 1001, 5001, 100), Mark::Seen));
    segs.push((seg(C, ACK, 1101, 5001, 100), Mark::Lost));
    segs.push((seg(C, ACK, 1201, 5001, 100), Mark::Seen));
    // The server acknowledges the first 100 bytes and SACKs the third hundred.
    segs.push((Seg { sacks: vec![(1201, 1301)], ..seg(S, ACK, 5001, 1101, 0) }, Mark::Seen));
    segs.push((seg(C, ACK, 1101, 5001, 100), Mark::Seen));
    segs.push((Seg { window: 0, ..seg(S, ACK, 5001, 1301, 0) }, Mark::Seen));
    let report = build(&segs);
    let c = &report.connections[0];
    let rows: Vec<(Mark, RowKind)> = c.head.iter().map(|r| (r.mark, r.kind)).collect();
    assert_eq!(rows[4], (Mark::Lost, RowKind::Normal));
    assert_eq!(rows[7], (Mark::Seen, RowKind::Retransmission));
    let g = &c.graphs[Side::Client as usize];
    let data: Vec<(i64, i64, bool, Mark)> =
        g.segments.iter().map(|s| (s.start, s.end, s.retransmission, s.mark)).collect();
    assert_eq!(
        data,
        [
            (0, 1, false, Mark::Seen),
            (1, 101, false, Mark::Seen),
            (101, 201, false, Mark::Lost),
            (201, 301, false, Mark::Seen),
            (101, 201, true, Mark::Seen),
        ]
    );
    assert_eq!(g.sacks.iter().map(|s| (s.1, s.2)).collect::<Vec<_>>(), [(201, 301)]);
    // Windows are scaled once both SYNs agreed (1000 << 2), never on the SYN itself.
    assert_eq!(g.window.first().map(|w| w.1), Some(1 + 1000));
    assert_eq!(g.window.get(1).map(|w| w.1), Some(101 + 4000));
    assert_eq!(g.zero_windows.iter().map(|z| z.1).collect::<Vec<_>>(), [301]);

    let page = html::page(&report, "loss");
    assert_eq!(page.matches("class=\"segment from-client lost\"").count(), 1);
    assert_eq!(page.matches("class=\"segment from-client retransmission\"").count(), 1);
    assert!(page.contains("data-retransmissions=\"1\""));
    assert!(page.contains("data-zero-windows=\"1\""));
}

#[test]
fn a_long_connection_is_drawn_in_part_and_says_so() {
    let mut segs = handshake();
    let n = 200;
    for i in 0..n {
        segs.push((seg(C, ACK, 1001 + 10 * i, 5001, 10), Mark::Seen));
    }
    let report = build(&segs);
    let c = &report.connections[0];
    assert_eq!((c.head.len(), c.tail.len()), (LADDER_HEAD, LADDER_TAIL));
    assert_eq!(c.elided, u64::from(n) + 3 - (LADDER_HEAD + LADDER_TAIL) as u64);
    assert_eq!(c.tail.last().map(|r| r.seq), Some(1 + 10 * (n - 1)));
    // The graph has every segment: the SYN and the 200 of data.
    assert_eq!(c.graphs[Side::Client as usize].segments.len(), n as usize + 1);
    let page = html::page(&report, "long");
    assert_eq!(page.matches("<g class=\"segment").count(), LADDER_HEAD + LADDER_TAIL);
    assert!(page.contains(&format!("… {} more packets not drawn …", c.elided)));
}

#[test]
fn the_page_is_self_contained_and_escapes_what_it_quotes() {
    let packets: Vec<_> = handshake().iter().map(|(s, _)| decode(&bytes(s))).collect();
    let page = html_report(
        packets.iter().enumerate().map(|(i, p)| (Duration::from_millis(i as u64), p, Mark::Seen)),
        "<script>alert(1)</script>",
    );
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!page.contains("<script"), "the page needs no script");
    // Nothing is fetched: no external stylesheet, script, image or font.
    for needle in ["<link", "src=\"http", "url(", "@import"] {
        assert!(!page.contains(needle), "the page refers to something outside it: {needle}");
    }
    assert_eq!(page.matches("<section class=\"connection\"").count(), 1);
    assert!(page.contains("data-flow=\"10.0.0.1:40000 &gt; 10.0.0.2:80\""));
}
