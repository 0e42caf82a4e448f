//! Replaying the captures of real Linux peers (`fixtures/kernel/`, made by
//! `tools/capture-fixtures`) against ustack: every fixture in every role it supports,
//! the cases where ustack must differ, and the intended differences from Linux (each
//! asserted, so a new one is noticed). No root needed: the replay runs over the in-memory
//! wire. `ustack replay` as a program is tested with the binary (crates/cli/tests/replay.rs).

use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ustack_replay::{self as replay, App, INTENDED, Options, ReplayOutcome, Role, differences};

use ustack_testkit::fixture;

/// What a case must come to.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// ustack does what the captured host did.
    Match,
    /// A difference whose description contains this.
    Differs(&'static str),
}

/// One replay of one fixture.
struct Case {
    name: &'static str,
    file: &'static str,
    role: Role,
    app: App,
    /// The captured server's settings, where they matter.
    tune: fn(&mut Options),
    expect: Expect,
}

fn plain(_: &mut Options) {}

/// The backlog capture's server: listen(1), accepting only after 2 s, and SYN cookies
/// off (`net.ipv4.tcp_syncookies=0` in its namespace).
fn backlog_server(o: &mut Options) {
    o.backlog = 1;
    o.hold_accept = true;
    o.syn_cookies = false;
}

/// Only conversation 2 of the three.
fn flow_2(o: &mut Options) {
    o.flow = Some(2);
}

/// `--flow 2` names the ICMP error, which belongs to conversation 1.
fn icmp_flow(o: &mut Options) {
    o.flow = Some(2);
}

use App::{Discard, Echo};
use Expect::{Differs, Match};
use Role::{Client, Server};

/// Every fixture, in the roles it supports (must match) and where ustack must differ.
const CASES: &[Case] = &[
    Case { name: "echo as server", file: "echo.pcap", role: Server, app: Echo, tune: plain, expect: Match },
    Case { name: "echo as client", file: "echo.pcap", role: Client, app: Echo, tune: plain, expect: Match },
    Case {
        name: "echo with discard",
        file: "echo.pcap",
        role: Server,
        app: Discard,
        tune: plain,
        expect: Differs("the captured server had sent 14 bytes by here; ustack's only 0"),
    },
    Case {
        name: "server-close as client",
        file: "server-close.pcap",
        role: Client,
        app: Echo,
        tune: plain,
        expect: Match,
    },
    Case {
        name: "server-close as server",
        file: "server-close.pcap",
        role: Server,
        app: Echo,
        tune: plain,
        expect: Differs("the captured server had sent 54 bytes by here; ustack's only 0"),
    },
    Case { name: "refused as server", file: "refused.pcap", role: Server, app: Echo, tune: plain, expect: Match },
    Case { name: "refused as client", file: "refused.pcap", role: Client, app: Echo, tune: plain, expect: Match },
    Case {
        name: "backlog as server",
        file: "backlog.pcap",
        role: Server,
        app: Echo,
        tune: backlog_server,
        expect: Match,
    },
    Case { name: "backlog as client", file: "backlog.pcap", role: Client, app: Echo, tune: plain, expect: Match },
    Case {
        name: "backlog, a server that accepts at once",
        file: "backlog.pcap",
        role: Server,
        app: Echo,
        tune: plain,
        expect: Differs("ustack answered the client's SYN with SYN-ACK; Linux had not answered it"),
    },
    Case { name: "udp-echo as server", file: "udp-echo.pcap", role: Server, app: Echo, tune: plain, expect: Match },
    Case { name: "udp-echo as client", file: "udp-echo.pcap", role: Client, app: Echo, tune: plain, expect: Match },
    Case {
        name: "udp-echo with discard",
        file: "udp-echo.pcap",
        role: Server,
        app: Discard,
        tune: plain,
        expect: Differs("the captured server had sent 1 datagram by here; ustack's only 0"),
    },
    Case { name: "udp-closed as server", file: "udp-closed.pcap", role: Server, app: Echo, tune: plain, expect: Match },
    Case { name: "udp-closed as client", file: "udp-closed.pcap", role: Client, app: Echo, tune: plain, expect: Match },
    Case {
        name: "udp-closed, its ICMP flow",
        file: "udp-closed.pcap",
        role: Server,
        app: Echo,
        tune: icmp_flow,
        expect: Match,
    },
    Case { name: "several as server", file: "several.pcap", role: Server, app: Echo, tune: plain, expect: Match },
    Case { name: "several as client", file: "several.pcap", role: Client, app: Echo, tune: plain, expect: Match },
    Case { name: "several, flow 2 alone", file: "several.pcap", role: Server, app: Echo, tune: flow_2, expect: Match },
    Case { name: "http as client", file: "http.pcap", role: Client, app: Echo, tune: plain, expect: Match },
    Case {
        name: "http as server",
        file: "http.pcap",
        role: Server,
        app: Echo,
        tune: plain,
        expect: Differs("the server's byte stream differs at byte 1: Linux sent \"HTTP/1.1 200 OK"),
    },
    Case { name: "half-close as server", file: "half-close.pcap", role: Server, app: Echo, tune: plain, expect: Match },
    Case { name: "half-close as client", file: "half-close.pcap", role: Client, app: Echo, tune: plain, expect: Match },
    Case { name: "bulk as server", file: "bulk.pcap", role: Server, app: Discard, tune: plain, expect: Match },
    Case { name: "bulk as client", file: "bulk.pcap", role: Client, app: Echo, tune: plain, expect: Match },
    Case {
        name: "bulk with echo",
        file: "bulk.pcap",
        role: Server,
        app: Echo,
        tune: plain,
        expect: Differs("ustack's server sent more than the captured one: Linux sent 0 bytes in all"),
    },
    // 1 MiB each way at once, in TSO/GSO segments of up to 64 KB, with the kernel client's
    // window closed while it has not read: ustack's buffers are smaller than Linux's, so
    // the replayer must acknowledge and open its window as a real peer would.
    Case { name: "bulk-echo as server", file: "bulk-echo.pcap", role: Server, app: Echo, tune: plain, expect: Match },
    Case { name: "bulk-echo as client", file: "bulk-echo.pcap", role: Client, app: Echo, tune: plain, expect: Match },
    Case {
        name: "bulk-echo with discard",
        file: "bulk-echo.pcap",
        role: Server,
        app: Discard,
        tune: plain,
        expect: Differs("the captured server had sent "),
    },
    Case { name: "ipv6 as server", file: "ipv6.pcap", role: Server, app: Echo, tune: plain, expect: Match },
    Case { name: "ipv6 as client", file: "ipv6.pcap", role: Client, app: Echo, tune: plain, expect: Match },
    // A 3000-byte UDP datagram and its echo, in IP fragments both ways (the pings are not
    // replayed): reassembled from the capture, and from what ustack sends.
    Case { name: "fragments as server", file: "fragments.pcap", role: Server, app: Echo, tune: plain, expect: Match },
    Case { name: "fragments as client", file: "fragments.pcap", role: Client, app: Echo, tune: plain, expect: Match },
];

/// A case's outcome and how long it took.
struct Ran {
    outcome: Result<ReplayOutcome, String>,
    took: Duration,
}

/// Every case, replayed once (all at the same time) and shared by the tests below.
fn results() -> &'static Vec<Ran> {
    static RESULTS: OnceLock<Vec<Ran>> = OnceLock::new();
    RESULTS.get_or_init(|| {
        std::thread::scope(|scope| {
            let handles: Vec<_> = CASES
                .iter()
                .map(|case| {
                    scope.spawn(move || {
                        let mut options = Options { role: case.role, app: case.app, ..Options::default() };
                        // A match never waits for the timeout; a difference of the
                        // "nothing came" kind waits for it once.
                        options.timeout = match case.expect {
                            Match => Duration::from_secs(5),
                            Differs(_) => Duration::from_millis(700),
                        };
                        (case.tune)(&mut options);
                        let started = Instant::now();
                        let outcome = replay::replay_file(&fixture(&format!("kernel/{}", case.file)), &options)
                            .map_err(|e| e.to_string());
                        Ran { outcome, took: started.elapsed() }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("a replay panicked")).collect()
        })
    })
}

fn check(name: &str) {
    let i = CASES.iter().position(|c| c.name == name).unwrap_or_else(|| panic!("no case {name}"));
    let (case, ran) = (&CASES[i], &results()[i]);
    let outcome = ran.outcome.as_ref().unwrap_or_else(|e| panic!("{name}: replay failed: {e}"));
    let report = outcome.render(case.file);
    match case.expect {
        Match => assert!(outcome.matched(), "{name}: expected a match ({:?})\n{report}", ran.took),
        Differs(what) => {
            let d = outcome.difference.as_ref().unwrap_or_else(|| panic!("{name}: expected a difference\n{report}"));
            assert!(d.what.contains(what), "{name}: expected a difference saying {what:?}\n{report}");
        }
    }
}

macro_rules! cases {
    ($($test:ident: $name:literal;)*) => {
        $(
            #[test]
            fn $test() {
                check($name);
            }
        )*

        /// The tests above name every case.
        #[test]
        fn every_case_has_a_test() {
            let tested: BTreeSet<&str> = [$($name),*].into_iter().collect();
            let cases: BTreeSet<&str> = CASES.iter().map(|c| c.name).collect();
            assert_eq!(tested, cases);
        }
    };
}

cases! {
    echo_as_server: "echo as server";
    echo_as_client: "echo as client";
    echo_with_discard_differs: "echo with discard";
    server_close_as_client: "server-close as client";
    server_close_as_server_differs: "server-close as server";
    refused_as_server: "refused as server";
    refused_as_client: "refused as client";
    backlog_as_server: "backlog as server";
    backlog_as_client: "backlog as client";
    backlog_accepting_at_once_differs: "backlog, a server that accepts at once";
    udp_echo_as_server: "udp-echo as server";
    udp_echo_as_client: "udp-echo as client";
    udp_echo_with_discard_differs: "udp-echo with discard";
    udp_closed_as_server: "udp-closed as server";
    udp_closed_as_client: "udp-closed as client";
    udp_closed_by_its_icmp_flow: "udp-closed, its ICMP flow";
    several_as_server: "several as server";
    several_as_client: "several as client";
    several_one_flow: "several, flow 2 alone";
    http_as_client: "http as client";
    http_as_server_differs: "http as server";
    half_close_as_server: "half-close as server";
    half_close_as_client: "half-close as client";
    bulk_as_server: "bulk as server";
    bulk_as_client: "bulk as client";
    bulk_with_echo_differs: "bulk with echo";
    bulk_echo_as_server: "bulk-echo as server";
    bulk_echo_as_client: "bulk-echo as client";
    bulk_echo_with_discard_differs: "bulk-echo with discard";
    ipv6_as_server: "ipv6 as server";
    ipv6_as_client: "ipv6 as client";
    fragments_as_server: "fragments as server";
    fragments_as_client: "fragments as client";
}

/// Every capture in fixtures/kernel/ is replayed, and matches in at least one role.
#[test]
fn every_fixture_is_replayed() {
    let mut files: Vec<String> = std::fs::read_dir(fixture("kernel"))
        .expect("fixtures/kernel")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".pcap") || n.ends_with(".pcapng"))
        .collect();
    files.sort();
    assert!(files.len() >= 11, "fixtures/kernel/ holds {files:?}");
    for file in files {
        assert!(
            CASES.iter().any(|c| c.file == file && matches!(c.expect, Match)),
            "{file} has no case that replays it to a match: add it to CASES"
        );
    }
}

/// A difference says where, and comes with the captured server's application when that
/// is what differs (a scenario ustack cannot play as asked is never a pass).
#[test]
fn a_difference_is_explained() {
    let i = CASES.iter().position(|c| c.name == "http as server").expect("case");
    let outcome = results()[i].outcome.as_ref().expect("replayed");
    let d = outcome.difference.as_ref().expect("a difference");
    assert_eq!(d.flow, Some(1));
    assert!(d.record.is_some(), "{d}");
    let hint = outcome.hint.as_deref().expect("a note about the application");
    assert!(hint.contains("did not behave like echo"), "{hint}");
    let report = outcome.render("http.pcap");
    assert!(report.contains("Linux (the capture)") && report.contains("ustack (the replay)"), "{report}");
    assert!(report.contains("S>C [P.] seq 1:62 ack 62 len 61"), "ustack's echo in the right column:\n{report}");
}

/// The bulk echo with one byte of the captured server's echo changed (well past the
/// point where the replayer's window and ACKs part from the capture's): ustack's echo
/// sends the byte the client sent, and the replay says so, at that byte. Adapting to
/// ustack's window must not hide a real difference in the stream.
#[test]
fn a_changed_byte_in_the_bulk_echo_is_reported() {
    let file = std::fs::File::open(fixture("kernel/bulk-echo.pcap")).expect("bulk-echo.pcap");
    let mut conv = replay::Conversation::read(std::io::BufReader::new(file)).expect("a capture");
    // The server's segments, in order: change one byte of the one holding byte 700000.
    let isn = conv
        .packets
        .iter()
        .filter(|p| p.from == ustack::observe::Side::Server)
        .find_map(|p| p.segment().filter(|s| s.flags.has(ustack::packet::TcpFlags::SYN)).map(|s| s.seq))
        .expect("the server's SYN-ACK");
    const AT: u32 = 700_000;
    let packet = conv
        .packets
        .iter_mut()
        .filter(|p| p.from == ustack::observe::Side::Server)
        .find(|p| {
            p.segment().is_some_and(|s| {
                let start = s.seq.wrapping_sub(isn.wrapping_add(1));
                start <= AT && AT < start + s.len() as u32
            })
        })
        .expect("a segment holding the byte");
    let seg = packet.segment().expect("a segment").clone();
    let k = seg.payload.start + (AT - seg.seq.wrapping_sub(isn.wrapping_add(1))) as usize;
    let original = packet.ip[k];
    packet.ip[k] = !original;
    let options = Options { role: Server, app: Echo, timeout: Duration::from_secs(5), ..Options::default() };
    let outcome = replay::replay(&conv, &options).expect("replayed");
    let d = outcome.difference.as_ref().unwrap_or_else(|| panic!("no difference:\n{}", outcome.render("bulk-echo")));
    let at = format!("differs at byte {}", AT + 1);
    assert!(d.what.contains(&at) && d.what.contains("server's byte stream"), "{d}");
}

/// Intended differences: every one listed in src/differences.rs is seen in some
/// replay, and every difference seen (in what is not compared) is listed. A new
/// difference, or one that went away, fails here until the list says so.
#[test]
fn intended_differences_are_exactly_the_listed_ones() {
    let mut seen = BTreeSet::new();
    for (case, ran) in CASES.iter().zip(results()) {
        let Ok(outcome) = &ran.outcome else { continue };
        if !matches!(case.expect, Match) {
            continue;
        }
        let (_, unlisted) = differences::classify(&outcome.observed);
        assert!(unlisted.is_empty(), "{}: differences not in INTENDED:\n{unlisted:#?}", case.name);
        seen.extend(outcome.observed.iter().cloned());
    }
    for intended in INTENDED {
        assert!(
            seen.iter().any(|o| intended.matches(o)),
            "INTENDED lists {intended:?}, but no replay shows it any more: remove it"
        );
    }
}

/// The whole matrix, with the 1 MiB transfer, stays quick (the cases run in parallel).
#[test]
fn replays_are_quick() {
    for (case, ran) in CASES.iter().zip(results()) {
        let limit = match case.expect {
            Match => Duration::from_secs(20),
            Differs(_) => Duration::from_secs(10),
        };
        assert!(ran.took < limit, "{} took {:?}", case.name, ran.took);
    }
}
