//! `ustack inspect --html` and `ustack sim --html`, looked at in a real browser (headless
//! Chromium, see testkit's `browser`): the page is parsed and laid out as a person would
//! open it, and the assertions read the DOM the browser made of it — how many connection
//! diagrams, what the handshake's arrows say, that the graphs have points, that a reset
//! and a retransmission look like one. A screenshot of each report is kept in
//! `target/test-artifacts/html/` for a person to look at.
//!
//! Without a browser these tests skip, except under `CI=true`, where they fail naming
//! the apt package (`chromium`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ustack_testkit::browser::{Browser, artifacts_dir, file_url};
use ustack_testkit::{fixture, output_within};

const BIN: &str = env!("CARGO_BIN_EXE_ustack");

/// A directory of this test's own for the reports, emptied first.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ustack-html-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// Runs `ustack ARGS` and insists on exit 0.
fn ustack(args: &[&str]) -> String {
    let out = output_within(Command::new(BIN).args(args), Duration::from_secs(120), "ustack");
    assert!(out.status.success(), "ustack {args:?}: {:?}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ustack inspect --html REPORT fixtures/kernel/NAME`.
fn inspect_html(report: &Path, name: &str) {
    let capture = fixture(&format!("kernel/{name}"));
    ustack(&["inspect", "--html", report.to_str().expect("a UTF-8 path"), capture.to_str().expect("a UTF-8 path")]);
}

/// Opens `report` in the browser: its DOM, and a screenshot kept as `<name>.png`.
fn look(browser: &Browser, report: &Path, name: &str) -> String {
    let url = file_url(report);
    let dom = browser.dump_dom(&url).expect("the browser shows the report");
    let shot = artifacts_dir().join("html").join(format!("{name}.png"));
    browser.screenshot(&url, &shot, (1000, 2400)).expect("a screenshot of the report");
    eprintln!("screenshot: {}", shot.display());
    dom
}

/// The pieces of `dom` from each `<tag` whose opening tag contains `marker` to the
/// matching `</tag>` (the report does not nest these elements in themselves).
fn elements<'a>(dom: &'a str, tag: &str, marker: &str) -> Vec<&'a str> {
    let open = format!("<{tag} ");
    let close = format!("</{tag}>");
    let mut found = Vec::new();
    let mut rest = dom;
    while let Some(start) = rest.find(&open) {
        let piece = &rest[start..];
        let Some(end) = piece.find(&close) else { break };
        let opening = &piece[..piece.find('>').unwrap_or(piece.len())];
        if opening.contains(marker) {
            found.push(&piece[..end + close.len()]);
        }
        rest = &piece[open.len()..];
    }
    found
}

/// The value of `attribute` in the element's opening tag.
fn attribute<'a>(element: &'a str, attribute: &str) -> Option<&'a str> {
    let opening = &element[..element.find('>')?];
    let key = format!(" {attribute}=\"");
    let start = opening.find(&key)? + key.len();
    let len = opening[start..].find('"')?;
    Some(&opening[start..start + len])
}

/// The text of the first `<text class="label">` inside `element`.
fn label(element: &str) -> &str {
    let label = &element[element.find("class=\"label\"").expect("a label")..];
    let start = label.find('>').expect("end of the text tag") + 1;
    let len = label[start..].find('<').expect("end of the label");
    &label[start..start + len]
}

fn unescape(text: &str) -> String {
    text.replace("&gt;", ">").replace("&lt;", "<").replace("&amp;", "&")
}

/// How many rows of the report's flow table are TCP (or UDP): the flows `inspect --flows`
/// lists, read from the page itself.
fn table_rows(dom: &str, proto: &str) -> usize {
    elements(dom, "tr", "class=\"flow\"").iter().filter(|row| row.contains(&format!("<td>{proto}</td>"))).count()
}

/// Lines a time-sequence graph drew in `colour` (`#rrggbb`, the report's legend colours).
fn stroked(figure: &str, colour: &str) -> usize {
    figure.to_ascii_lowercase().matches(&format!("stroke=\"{colour}\"")).count()
}

/// The legend's colours: a segment's bar, a retransmitted segment's bar, the ACK line.
const SEGMENT: &str = "#1f4e9c";
const RETRANSMITTED: &str = "#d9480f";
const ACK_LINE: &str = "#2b8a3e";

fn number(element: &str, name: &str) -> usize {
    attribute(element, name).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{name} is not a number"))
}

#[test]
fn backlog_report_shows_each_connection_with_its_handshake_and_graphs() {
    let Some(browser) = Browser::find() else { return };
    let dir = scratch("backlog");
    let report = dir.join("report.html");
    inspect_html(&report, "backlog.pcap");
    let dom = look(&browser, &report, "backlog");

    let connections = elements(&dom, "section", "class=\"connection\"");
    // backlog.pcap holds four echo connections, the last two admitted after the backlog drained.
    assert_eq!(connections.len(), 4, "connection diagrams");
    assert_eq!(connections.len(), table_rows(&dom, "tcp"), "one diagram per TCP flow of the table");
    let flows: Vec<String> =
        connections.iter().map(|c| unescape(attribute(c, "data-flow").expect("data-flow"))).collect();
    assert_eq!(flows[0], "10.9.0.1:54404 > 10.9.0.2:7");

    for (section, flow) in connections.iter().zip(&flows) {
        let ladder = elements(section, "figure", "class=\"ladder\"");
        assert_eq!(ladder.len(), 1, "{flow}: one ladder");
        let arrows = elements(ladder[0], "g", "class=\"segment");
        // The handshake: after the client's SYN (and any resends of it), SYN-ACK and ACK.
        let handshake: Vec<(&str, &str)> = arrows
            .iter()
            .filter(|a| !attribute(a, "class").unwrap_or("").contains("retransmission"))
            .take(3)
            .map(|a| (attribute(a, "data-flags").expect("data-flags"), label(a)))
            .collect();
        assert_eq!(
            handshake,
            [("S", "[S] seq 0 len 0"), ("S.", "[S.] seq 0 ack 1 len 0"), (".", "[.] seq 1 ack 1 len 0")],
            "{flow}: the handshake's arrows"
        );
        // Echo: 9 bytes each way, FIN both ways.
        assert!(arrows.iter().any(|a| label(a) == "[P.] seq 1 ack 1 len 9"), "{flow}: the client's data");
        assert!(arrows.iter().any(|a| attribute(a, "data-flags") == Some("F.")), "{flow}: a FIN");
        assert!(section.contains("class=\"rtt syn\""), "{flow}: the handshake RTT is drawn");

        let graphs = elements(section, "figure", "class=\"time-sequence\"");
        let senders: Vec<&str> = graphs.iter().filter_map(|g| attribute(g, "data-sender")).collect();
        assert_eq!(senders, ["client", "server"], "{flow}: a time-sequence graph per direction");
        for graph in &graphs {
            assert!(graph.contains("<svg"), "{flow}: the graph is drawn");
            let (segments, resent) = (number(graph, "data-segments"), number(graph, "data-retransmissions"));
            // Each side sent its SYN (perhaps again), its 9 bytes and its FIN: a bar each.
            assert!(segments >= 3, "{flow}: {segments} segments");
            assert_eq!(stroked(graph, SEGMENT), segments - resent, "{flow}: a bar per segment");
            assert_eq!(stroked(graph, RETRANSMITTED), resent, "{flow}: a bar per retransmission");
            assert_eq!(stroked(graph, ACK_LINE), 1, "{flow}: the ACK line");
        }
    }
    // The third and fourth connections waited: their resent SYNs are drawn as retransmissions.
    for section in &connections[2..] {
        let resent = elements(section, "g", "retransmission");
        assert_eq!(resent.len(), 2, "resent SYNs");
        assert!(resent.iter().all(|a| attribute(a, "data-flags") == Some("S") && label(a).ends_with("retransmission")));
    }
}

#[test]
fn refused_connection_is_drawn_ending_in_a_reset() {
    let Some(browser) = Browser::find() else { return };
    let dir = scratch("refused");
    let report = dir.join("report.html");
    inspect_html(&report, "refused.pcap");
    let dom = look(&browser, &report, "refused");
    let connections = elements(&dom, "section", "class=\"connection\"");
    assert_eq!(connections.len(), 1);
    let arrows = elements(connections[0], "g", "class=\"segment");
    let drawn: Vec<(&str, &str)> = arrows
        .iter()
        .map(|a| (attribute(a, "class").expect("class"), attribute(a, "data-flags").expect("flags")))
        .collect();
    assert_eq!(drawn, [("segment from-client", "S"), ("segment from-server reset", "R.")]);
    assert!(label(arrows[1]).ends_with("reset"));
}

#[test]
fn every_kernel_fixture_has_a_diagram_per_flow() {
    let Some(browser) = Browser::find() else { return };
    let dir = scratch("all");
    let mut names: Vec<String> = std::fs::read_dir(fixture("kernel"))
        .expect("fixtures/kernel")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".pcap"))
        .collect();
    names.sort();
    assert!(names.len() >= 10, "fixtures found: {names:?}");
    for name in &names {
        let stem = name.trim_end_matches(".pcap");
        let report = dir.join(format!("{stem}.html"));
        inspect_html(&report, name);
        let dom = look(&browser, &report, &format!("kernel-{stem}"));
        let tcp = elements(&dom, "section", "class=\"connection\"").len();
        let udp = elements(&dom, "section", "class=\"udp-flow\"").len();
        assert_eq!((tcp, udp), (table_rows(&dom, "tcp"), table_rows(&dom, "udp")), "{name}: a diagram per flow");
        assert!(tcp + udp > 0, "{name}: something is drawn");
        for timeline in elements(&dom, "figure", "class=\"timeline\"") {
            assert!(timeline.contains("class=\"datagram"), "{name}: datagrams on the timeline");
        }
    }
}

#[test]
fn bulk_transfer_report_stays_small() {
    let Some(browser) = Browser::find() else { return };
    let dir = scratch("bulk");
    let report = dir.join("report.html");
    inspect_html(&report, "bulk.pcap");
    // A megabyte of capture, a page of a few hundred kilobytes at most.
    let size = std::fs::metadata(&report).expect("the report").len();
    assert!(size < 1_000_000, "report of bulk.pcap is {size} bytes");
    let dom = look(&browser, &report, "bulk");
    let graph = elements(&dom, "figure", "data-sender=\"client\"");
    assert_eq!(graph.len(), 1);
    // 1 MiB in segments of up to 64 KiB (the capture was made on a TUN with offloads).
    let segments = number(graph[0], "data-segments");
    assert!(segments >= 16, "{segments} segments");
    assert_eq!(stroked(graph[0], SEGMENT), segments, "a bar per segment");
}

#[test]
fn lossy_simulation_shows_lost_packets_and_their_retransmissions() {
    let Some(browser) = Browser::find() else { return };
    let dir = scratch("sim");
    let report = dir.join("sim.html");
    // Seed 7 at 10% loss, without congestion control (whose window changes what is sent
    // when), loses a client's data segment, recovered by retransmission.
    let out = ustack(&[
        "sim",
        "--congestion",
        "none",
        "--seed",
        "7",
        "--bytes",
        "20000",
        "--drop-chance",
        "10",
        "--html",
        report.to_str().expect("UTF-8"),
    ]);
    let lost: usize = out
        .lines()
        .find(|line| line.starts_with("summary:"))
        .and_then(|summary| summary.split(" lost,").next())
        .and_then(|before| before.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the summary says how many packets were lost:\n{out}"));
    assert!(lost >= 1, "the run lost a packet:\n{out}");
    assert!(out.contains("sim.html: 1 TCP connection and 0 UDP flows drawn"), "{out}");
    let dom = look(&browser, &report, "sim-lossy");
    let connections = elements(&dom, "section", "class=\"connection\"");
    assert_eq!(connections.len(), 1);
    let crossed = elements(connections[0], "g", " lost");
    assert_eq!(crossed.len(), lost, "each lost packet's arrow stops halfway");
    let resent = elements(connections[0], "g", "retransmission");
    for arrow in &crossed {
        assert!(arrow.contains("✕"), "the lost arrow is crossed out");
        let seq = attribute(arrow, "data-seq").expect("data-seq");
        if attribute(arrow, "data-len") != Some("0") {
            assert!(
                resent.iter().any(|a| attribute(a, "data-seq") == Some(seq)),
                "the lost segment (seq {seq}) is sent again, marked as a retransmission"
            );
        }
    }
    let graph = elements(connections[0], "figure", "data-sender=\"client\"");
    let resent = number(graph[0], "data-retransmissions");
    assert!(resent > 0);
    assert_eq!(stroked(graph[0], RETRANSMITTED), resent, "retransmissions drawn in their colour");
}

#[test]
fn html_report_that_cannot_be_written_is_one_line_and_exit_2() {
    let out = output_within(
        Command::new(BIN).args(["inspect", "--html", "/nonexistent/dir/report.html"]).arg(fixture("kernel/echo.pcap")),
        Duration::from_secs(60),
        "ustack inspect",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("ustack: inspect --html /nonexistent/dir/report.html: "), "{stderr}");
}

#[test]
fn html_report_draws_what_the_filter_lets_through() {
    let dir = scratch("filter");
    let report = dir.join("report.html");
    let capture = fixture("kernel/backlog.pcap");
    let out = ustack(&[
        "inspect",
        "--html",
        report.to_str().expect("a UTF-8 path"),
        capture.to_str().expect("a UTF-8 path"),
        "tcp port 54408",
    ]);
    assert!(out.ends_with("report.html: 1 TCP connection and 0 UDP flows drawn, of 1 flow\n"), "{out}");
    let page = std::fs::read_to_string(&report).expect("the report");
    let connections = elements(&page, "section", "class=\"connection\"");
    assert_eq!(connections.len(), 1);
    assert_eq!(attribute(connections[0], "data-flow"), Some("10.9.0.1:54408 &gt; 10.9.0.2:7"));
}
