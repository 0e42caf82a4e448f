//! `ustack replay` as a program, on good, broken and unsuitable captures, and its flow
//! numbers against `ustack inspect --flows`. No root needed: the replay runs over the
//! in-memory wire. The replays themselves are tested in the replay crate.

use std::path::Path;
use std::process::{Command, Output};

use ustack_replay::Conversation;

const BIN: &str = env!("CARGO_BIN_EXE_ustack");

use ustack_testkit::fixture;

/// Flows are numbered as `ustack inspect --flows` numbers them.
#[test]
fn flow_numbers_are_inspects() {
    for file in ["kernel/several.pcap", "kernel/udp-closed.pcap", "kernel/backlog.pcap"] {
        let out = Command::new(BIN).args(["inspect", "--flows"]).arg(fixture(file)).output().expect("run ustack");
        let table = String::from_utf8_lossy(&out.stdout);
        let conv = Conversation::read(std::fs::File::open(fixture(file)).expect("open")).expect("read");
        for flow in &conv.flows {
            let row = format!("{}  {}  ", flow.id, flow.proto);
            let line = table
                .lines()
                .find(|l| l.starts_with(&row))
                .unwrap_or_else(|| panic!("{file}: no row {row:?} in\n{table}"));
            assert!(
                line.contains(&flow.client.to_string()) && line.contains(&flow.server.to_string()),
                "{file}: {line}"
            );
        }
    }
}

// ---- the program ----

fn run(args: &[&str]) -> Output {
    Command::new(BIN).arg("replay").args(args).output().expect("run ustack")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn program_prints_one_line_for_a_match() {
    let file = fixture("kernel/echo.pcap");
    let out = run(&["--role", "server", file.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains(": match: ustack played the server (echo) of 1 conversation"), "{text}");
    assert_eq!(stderr(&out), "", "intended differences are not noted");
}

#[test]
fn program_reports_a_difference_and_fails() {
    let file = fixture("kernel/echo.pcap");
    let out = run(&["--app", "discard", "--timeout", "300", file.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("DIFFERENCE: flow 1: the captured server had sent 14 bytes by here"), "{text}");
    assert!(text.contains("| ustack (the replay)"), "{text}");
    assert!(text.contains("did not behave like discard"), "{text}");
}

#[test]
fn program_takes_the_backlog_servers_settings() {
    let file = fixture("kernel/backlog.pcap");
    let path = file.to_str().expect("path");
    let out = run(&["--backlog", "1", "--hold-accept", "--syn-cookies", "off", path]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
}

/// Input that cannot be replayed: one line on stderr, `ustack: replay FILE: why`, exit 2.
fn refused(file: &Path, why: &str) {
    let out = run(&[file.to_str().expect("path")]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{}: {err}", file.display());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with(&format!("ustack: replay {}: ", file.display())), "{err}");
    assert!(err.contains(why), "{}: expected {why:?} in {err}", file.display());
    assert_eq!(stdout(&out), "");
}

#[test]
fn broken_captures_are_refused() {
    for (name, why) in [
        ("empty.pcap", "empty file: not a capture"),
        ("truncated-header.pcap", "file cut short: the pcap file header has 10 of its 24 bytes"),
        ("truncated-record.pcap", "file cut short: record 18"),
        ("wrong-magic.pcap", "not a pcap or pcapng file (it starts with ef be ad de)"),
        ("garbage.pcap", "not a pcap or pcapng file"),
        ("absurd-record.pcap", "claims 4294967280 captured bytes"),
        ("absurd-snaplen.pcap", "snapshot length 4294967295 is absurd"),
        ("bad-block-length.pcapng", "not a multiple of 4"),
        ("huge-block.pcapng", "claims 2147483632 bytes"),
        ("truncated.pcapng", "file cut short: pcapng block 20"),
    ] {
        refused(&fixture(&format!("broken/{name}")), why);
    }
}

#[test]
fn unsuitable_captures_are_refused() {
    refused(&Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"), "not a pcap or pcapng file (it starts with");
    refused(&fixture("kernel/no-such.pcap"), "No such file or directory");
    refused(&fixture("formats/bulk.pcap"), "cut short by the capture's snapshot length; replay needs whole packets");
    refused(&fixture("trace/lo4.pcap"), "a loopback capture); replay needs two hosts");
}

#[test]
fn a_flow_that_is_not_there_is_refused() {
    let file = fixture("kernel/echo.pcap");
    let out = run(&["--flow", "9", file.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no TCP or UDP flow 9 in the capture (its flows: 1)"), "{}", stderr(&out));
}
