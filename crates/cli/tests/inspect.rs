//! `ustack inspect`, run as a program on the fixtures: tcpdump's own lines for the good
//! captures (in every container they come in), the flow table, the ladders, JSON, and
//! a clean refusal of every broken file in `fixtures/broken/`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_ustack");

use ustack_testkit::fixture;

/// `ustack inspect FILE ARGS...`: options and filter words after the file, as tcpdump
/// takes its expression after its options.
fn inspect(args: &[&str], file: &Path) -> Output {
    Command::new(BIN).arg("inspect").arg(file).args(args).output().expect("run ustack")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("UTF-8 output")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs inspect and insists on exit 0 and a silent stderr.
fn inspect_ok(args: &[&str], name: &str) -> String {
    let out = inspect(args, &fixture(name));
    assert!(out.status.success(), "inspect {args:?} {name}: {:?}\n{}", out.status, stderr(&out));
    assert_eq!(stderr(&out), "", "inspect {args:?} {name}");
    stdout(&out)
}

/// Records in a capture, counted here independently of the reader under test: pcap
/// record headers, or pcapng packet blocks (little-endian, as the pcapng fixtures are).
fn records(name: &str) -> usize {
    let bytes = std::fs::read(fixture(name)).unwrap();
    let big = bytes.starts_with(&[0xa1, 0xb2]);
    let word = |at: usize| {
        let w = bytes[at..at + 4].try_into().unwrap();
        (if big { u32::from_be_bytes(w) } else { u32::from_le_bytes(w) }) as usize
    };
    let mut count = 0;
    if name.ends_with(".pcapng") {
        let mut at = 0;
        while at < bytes.len() {
            if matches!(word(at), 2 | 3 | 6) {
                count += 1;
            }
            at += word(at + 4);
        }
    } else {
        let mut at = 24;
        while at < bytes.len() {
            count += 1;
            at += 16 + word(at + 8);
        }
    }
    count
}

/// Compares line by line, saying which lines differ.
fn assert_same_lines(ours: &str, expected: &str, what: &str) {
    let mismatches: Vec<String> = ours
        .lines()
        .zip(expected.lines())
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| format!("line {}:\n  expected: {b}\n  ustack:   {a}", i + 1))
        .collect();
    assert!(mismatches.is_empty(), "{what}:\n{}", mismatches.join("\n"));
    assert_eq!(ours.lines().count(), expected.lines().count(), "{what}: line count");
}

const GOOD: [&str; 13] = [
    "trace/lo4.pcap",
    "trace/lo6.pcap",
    "trace/crafted.pcap",
    "formats/lo4.pcapng",
    "formats/lo4-be.pcap",
    "formats/lo6-ns.pcap",
    "formats/lo6-ns.pcapng",
    "formats/any-sll.pcap",
    "formats/any-sll2.pcap",
    "formats/bulk.pcap",
    "formats/mixed.pcapng",
    "formats/dns-any.pcap",
    "formats/dns-types.pcap",
];

#[test]
fn one_line_per_record_in_every_good_fixture() {
    for name in GOOD {
        let text = inspect_ok(&[], name);
        assert_eq!(text.lines().count(), records(name), "{name}");
        let json = inspect_ok(&["--json"], name);
        assert_eq!(json.lines().count(), records(name), "{name} --json");
    }
}

#[test]
fn lines_match_tcpdump() {
    for (capture, expected, args) in [
        ("trace/lo4.pcap", "trace/lo4.tcpdump.txt", &[][..]),
        ("trace/lo4.pcap", "trace/lo4.tcpdump-S.txt", &["-S"][..]),
        ("trace/lo6.pcap", "trace/lo6.tcpdump.txt", &[][..]),
        ("trace/lo6.pcap", "trace/lo6.tcpdump-S.txt", &["--absolute"][..]),
        ("trace/crafted.pcap", "trace/crafted.tcpdump.txt", &[][..]),
        ("trace/crafted.pcap", "trace/crafted.tcpdump-S.txt", &["-S"][..]),
        ("formats/any-sll.pcap", "formats/any-sll.tcpdump.txt", &[][..]),
        // Interface and direction first (`lo    In  IP6 ...`): lo is index 1 on every host.
        ("formats/any-sll2.pcap", "formats/any-sll2.tcpdump.txt", &[][..]),
        // DNS: every type and class number tcpdump names (and some it does not), records
        // of types whose data is not shown, mDNS's flag bits.
        ("formats/dns-types.pcap", "formats/dns-types.tcpdump.txt", &[][..]),
        // Cut to 80 bytes a record (tcpdump -s 80): lengths still come from the headers.
        ("formats/bulk.pcap", "formats/bulk.tcpdump.txt", &[][..]),
        // IP fragments: tcpdump 4.99's "ip-proto-17" and "frag (...)" lines.
        ("kernel/fragments.pcap", "kernel/fragments.tcpdump.txt", &[][..]),
    ] {
        let ours = inspect_ok(args, capture);
        let expected = std::fs::read_to_string(fixture(expected)).unwrap();
        assert_same_lines(&ours, &expected, &format!("inspect {args:?} {capture}"));
    }
}

#[test]
fn every_container_of_a_capture_prints_the_same_lines() {
    for (original, copies) in [
        ("trace/lo4.pcap", &["formats/lo4.pcapng", "formats/lo4-be.pcap"][..]),
        ("trace/lo6.pcap", &["formats/lo6-ns.pcap", "formats/lo6-ns.pcapng"][..]),
    ] {
        for args in [&[][..], &["-S"][..], &["--json"][..], &["--flows"][..], &["--handshakes"][..]] {
            let expected = inspect_ok(args, original);
            for copy in copies {
                assert_same_lines(
                    &inspect_ok(args, copy),
                    &expected,
                    &format!("inspect {args:?} {copy} vs {original}"),
                );
            }
        }
    }
}

#[test]
fn mixed_interfaces_link_types_and_resolutions() {
    let text = inspect_ok(&[], "formats/mixed.pcapng");
    let expected = "\
22:13:20.000000 ARP, Request who-has 10.7.0.2 tell 10.7.0.1, length 28
22:13:20.250000 IP 10.7.0.1.40000 > 10.7.0.2.7: Flags [S], seq 1000, win 64240, length 0
22:13:20.500000 IP 10.7.0.2.7 > 10.7.0.1.40000: Flags [S.], seq 5000, ack 1001, win 64240, length 0
22:13:20.750000 lo    Out IP 10.7.0.1.40000 > 10.7.0.2.7: Flags [.], ack 1, win 64240, length 0
22:13:21.000000 IP 10.7.0.1.40000 > 10.7.0.2.7: Flags [P.], seq 1:6, ack 1, win 64240, length 5
22:13:21.250000 IP 10.7.0.1.40001 > 10.7.0.2.7: UDP, length 3
22:13:21.500000 IP 10.7.0.1 > 10.7.0.2: ICMP echo request, id 77, seq 1, length 12
22:13:21.750000 link type 147 not supported (16 bytes)
22:13:22.000000 ethertype 0x88cc, length 29
22:13:22.250000 truncated Ethernet header (5 of 14 bytes)
";
    assert_same_lines(&text, expected, "mixed.pcapng");
}

/// Whitespace-insensitive: the table's columns are as wide as their widest cell.
fn squeeze(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn flow_table_of_a_known_capture() {
    let text = inspect_ok(&["--flows"], "trace/lo4.pcap");
    let rows: Vec<String> = text.lines().map(squeeze).collect();
    assert_eq!(rows[0], "# proto client server pkts → bytes → pkts ← bytes ← handshake end duration", "{text}");
    // Handshake, "hello" echoed, FIN from the client first: 6 packets and 5 bytes each
    // way but one (the server's last ACK is the client's).
    assert!(
        rows[1]
            .starts_with("1 tcp 127.0.0.1:40000 127.0.0.1:7 6 5 5 5 complete FIN both ways, client first 150.601 ms"),
        "{text}"
    );
    assert!(rows[2].starts_with("2 tcp 127.0.0.1:40002 127.0.0.1:9 1 0 1 0 SYN only RST by server"), "{text}");
    assert!(rows[3].starts_with("3 udp 127.0.0.1:40001 127.0.0.1:7 1 3 0 0 - -"), "{text}");
    assert!(rows[6].starts_with("6 icmp 127.0.0.1 127.0.0.1 1 56 1 56 - -"), "{text}");
    assert!(rows[7].starts_with("→ client to server"), "{text}");
    // Columns line up: each header starts where its cells do.
    let lines: Vec<&str> = text.lines().collect();
    let column = |line: &str, word: &str| line[..line.find(word).unwrap()].chars().count();
    assert_eq!(column(lines[0], "handshake"), column(lines[1], "complete"));
    assert_eq!(column(lines[0], "handshake"), column(lines[2], "SYN only"));

    let mixed = inspect_ok(&["--flows"], "formats/mixed.pcapng");
    assert!(mixed.contains("4 records not IP"), "{mixed}");
}

/// IP fragments (fixtures/kernel/fragments.pcap: a 3000-byte UDP datagram echoed, pings
/// of 3000 bytes over IPv4 and IPv6, all in three fragments a packet): each fragment
/// counts in its datagram's flow, not one of port 0, and none is reported as damaged.
#[test]
fn fragments_count_in_their_datagrams_flow() {
    let text = inspect_ok(&["--flows"], "kernel/fragments.pcap");
    let rows: Vec<String> = text.lines().map(squeeze).collect();
    assert!(rows[1].starts_with("1 udp 10.9.0.1:46271 10.9.0.2:7 3 3000 3 3000"), "{text}");
    assert!(rows[2].starts_with("2 icmp 10.9.0.1 10.9.0.2 3 3000 3 3000"), "{text}");
    assert!(rows[3].starts_with("3 icmpv6 fd00:9::1 fd00:9::2 3 3000 3 3000"), "{text}");
    assert!(rows[4].starts_with("→ client to server"), "{text}");

    let json = inspect_ok(&["--json"], "kernel/fragments.pcap");
    let lines: Vec<&str> = json.lines().collect();
    assert_eq!(lines.len(), 18);
    for (i, line) in lines.iter().enumerate() {
        let flow = 1 + i / 6;
        assert!(line.contains(&format!("\"flow\":{flow},")), "record {}: {line}", i + 1);
        assert!(line.ends_with("\"problem\":null}"), "record {}: {line}", i + 1);
    }
    assert!(lines[0].contains("\"sport\":46271") && lines[1].contains("\"sport\":null"), "{json}");
}

#[test]
fn ladder_of_a_handshake() {
    let text = inspect_ok(&["--handshakes"], "trace/lo4.pcap");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "connection 1: client 127.0.0.1:40000 → server 127.0.0.1:7, 11 packets");
    assert!(lines[1].contains("ms since SYN  client") && lines[1].ends_with("server"), "{text}");
    assert!(lines[2].contains("127.0.0.1:40000") && lines[2].ends_with("127.0.0.1:7"), "{text}");
    let syn = lines[3];
    assert!(
        syn.trim_start().starts_with("0.000  |─") && syn.contains(" [S] seq 0 len 0 ") && syn.ends_with("─>|"),
        "{text}"
    );
    let syn_ack = lines[4];
    assert!(syn_ack.contains("0.012  |<─") && syn_ack.contains(" [S.] seq 0 ack 1 len 0 "), "{text}");
    let ack = lines[5];
    assert!(ack.contains("0.025  |─") && ack.contains(" [.] seq 1 ack 1 len 0 ") && ack.ends_with(">|"), "{text}");
    assert!(lines[6].contains("[P.] seq 1 ack 1 len 5"), "{text}");
    assert!(text.contains("SYN → SYN-ACK  0.012 ms  client side"), "{text}");
    assert!(text.contains("SYN-ACK → ACK  0.013 ms  server side"), "{text}");
    assert!(text.contains("closed first by the client: FIN at 100.423 ms; the server's FIN at 150.588 ms"), "{text}");
    // The refused connection.
    assert!(text.contains("connection 2: client 127.0.0.1:40002 → server 127.0.0.1:9, 2 packets"), "{text}");
    assert!(text.contains("SYN answered by RST after 0.022 ms: connection refused"), "{text}");
    // In each ladder, the bars line up across every arrow.
    for ladder in text.split("\n\n") {
        let widths: Vec<usize> = ladder.lines().filter(|l| l.ends_with('|')).map(|l| l.chars().count()).collect();
        assert!(widths.len() >= 2 && widths.windows(2).all(|w| w[0] == w[1]), "{ladder}");
    }

    let absolute = inspect_ok(&["--handshakes", "-S"], "trace/lo4.pcap");
    assert!(absolute.contains("[S.] seq 1578548979 ack 4287929704 len 0"), "{absolute}");
}

#[test]
fn ladder_of_a_bulk_transfer_stays_short() {
    let text = inspect_ok(&["--handshakes"], "formats/bulk.pcap");
    let total = records("formats/bulk.pcap");
    assert!(total > 40, "bulk.pcap has {total} packets");
    let heading = format!("connection 1: client 127.0.0.1:40010 → server 127.0.0.1:5001, {total} packets\n");
    assert!(text.starts_with(&heading), "{text}");
    // 20 first, 10 last, and one line for those between.
    assert_eq!(text.lines().filter(|l| l.ends_with('|')).count(), 31, "{text}");
    assert!(text.contains(&format!("… {} packets …", total - 30)), "{text}");
    // The server acknowledges 2 MiB and the client's FIN (which may ride on the last data).
    assert!(text.contains("[F.] seq 1 ack 2097154 len 0"), "{text}");
    assert!(text.contains("closed first by the client"), "{text}");
}

#[test]
fn json_lines() {
    let text = inspect_ok(&["--json"], "trace/lo4.pcap");
    let keys = ["ts", "src", "dst", "proto", "sport", "dport", "flags", "seq", "ack", "win", "len", "flow", "problem"];
    for line in text.lines() {
        assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
        let mut at = 0;
        for key in keys {
            let found = line[at..].find(&format!("\"{key}\":")).unwrap_or_else(|| panic!("no {key} in {line}"));
            at += found;
        }
    }
    let syn = text.lines().next().unwrap();
    assert_eq!(
        syn,
        "{\"ts\":1795344496.850097,\"src\":\"127.0.0.1\",\"dst\":\"127.0.0.1\",\"proto\":\"tcp\",\"sport\":40000,\
         \"dport\":7,\"flags\":\"S\",\"seq\":4287929703,\"ack\":null,\"win\":65495,\"len\":0,\"flow\":1,\"problem\":null}"
    );
    let mixed = inspect_ok(&["--json"], "formats/mixed.pcapng");
    let lines: Vec<&str> = mixed.lines().collect();
    assert!(lines[0].contains("\"proto\":\"arp\"") && lines[0].contains("\"sport\":null"), "{}", lines[0]);
    assert!(lines[7].contains("\"proto\":\"unknown\"") && lines[7].contains("\"src\":null"), "{}", lines[7]);
    assert!(lines[7].contains("\"problem\":\"link type 147 not supported (16 bytes)\""), "{}", lines[7]);
}

#[test]
fn standard_input() {
    let mut child = Command::new(BIN)
        .args(["inspect", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let bytes = std::fs::read(fixture("trace/lo4.pcap")).unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_same_lines(&stdout(&out), &inspect_ok(&[], "trace/lo4.pcap"), "stdin");
}

/// Limits the child's address space, so that an allocation of the size a lying length
/// claims (4 GiB) would fail and abort it rather than succeed.
fn with_memory_limit(command: &mut Command, bytes: u64) -> &mut Command {
    use std::os::unix::process::CommandExt;
    let limit = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
    // SAFETY: setrlimit is async-signal-safe, and the closure touches nothing else.
    unsafe {
        command.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_AS, &limit) == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
        })
    }
}

#[test]
fn broken_files_are_refused_cleanly() {
    let lo4: Vec<String> =
        std::fs::read_to_string(fixture("trace/lo4.tcpdump.txt")).unwrap().lines().map(String::from).collect();
    // (file, records printed before the damage, what the error says)
    let cases: [(&str, usize, &str); 10] = [
        ("empty.pcap", 0, "empty file"),
        ("truncated-header.pcap", 0, "file cut short: the pcap file header has 10 of its 24 bytes"),
        ("truncated-record.pcap", 17, "file cut short: record 18 (at byte 1437) has 88 of its 98 captured bytes"),
        ("wrong-magic.pcap", 0, "not a pcap or pcapng file (it starts with ef be ad de)"),
        ("garbage.pcap", 0, "not a pcap or pcapng file"),
        ("absurd-record.pcap", 1, "record 2 (at byte 114) claims 4294967280 captured bytes"),
        ("absurd-snaplen.pcap", 0, "snapshot length 4294967295 is absurd"),
        ("bad-block-length.pcapng", 2, "has length 102, not a multiple of 4"),
        ("huge-block.pcapng", 2, "claims 2147483632 bytes"),
        (
            "truncated.pcapng",
            17,
            "file cut short: pcapng block 20 (enhanced packet, at byte 1848) has 20 of its 132 bytes",
        ),
    ];
    for (name, printed, message) in cases {
        let path = fixture("broken").join(name);
        for args in [&[][..], &["--json"][..], &["--flows"][..], &["--handshakes"][..]] {
            // A damaged file must not make inspect hang: it is given up on after 30 s.
            let mut command = Command::new(BIN);
            with_memory_limit(command.arg("inspect").args(args).arg(&path), 512 << 20);
            let out = ustack_testkit::output_within(&mut command, Duration::from_secs(30), "ustack inspect");
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{name} {args:?}: {err}");
            assert!(!err.contains("panicked"), "{name}: {err}");
            assert_eq!(err.lines().count(), 1, "{name}: one line: {err}");
            let prefix = format!("ustack: inspect {}: ", path.display());
            assert!(err.starts_with(&prefix) && err.contains(message), "{name}: {err}");
            if args.is_empty() {
                let text = stdout(&out);
                let lines: Vec<&str> = text.lines().collect();
                assert_eq!(lines, lo4[..printed].iter().map(String::as_str).collect::<Vec<_>>(), "{name}");
            }
        }
    }
}

#[test]
fn missing_file_and_directory_are_bad_input() {
    let out = inspect(&[], Path::new("/nonexistent/capture.pcap"));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out), "ustack: inspect /nonexistent/capture.pcap: No such file or directory (os error 2)\n");
    let out = inspect(&[], &fixture("broken"));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("Is a directory"), "{}", stderr(&out));
    // Usage errors are clap's, also exit 2.
    let out = inspect(&["--json", "--flows"], &fixture("trace/lo4.pcap"));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
}

/// A raw-IP pcap of `n` small TCP segments, for output larger than a pipe holds.
fn many_packets(n: u32) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("inspect-many-{}.pcap", std::process::id()));
    let mut file = Vec::new();
    for word in [0xA1B2_C3D4u32, 0x0004_0002, 0, 0, 65535, 101] {
        file.extend(word.to_le_bytes());
    }
    for i in 0..n {
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        ip.extend([0x9c, 0x40, 0, 7]);
        ip.extend(i.to_be_bytes());
        ip.extend(0u32.to_be_bytes());
        ip.extend([0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
        for word in [i, 0, 40, 40] {
            file.extend(word.to_le_bytes());
        }
        file.extend(ip);
    }
    std::fs::write(&path, file).unwrap();
    path
}

#[test]
fn a_closed_standard_output_ends_quietly() {
    let path = many_packets(20_000);
    let mut child =
        Command::new(BIN).arg("inspect").arg(&path).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.contains("IP 10.0.0.1.40000 > 10.0.0.2.7: Flags [.]"), "{first}");
    // The reader is dropped: like `| head -1`.
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "{:?}: {}", out.status, stderr(&out));
    assert_eq!(stderr(&out), "");
}

/// The pcap file header and records of `trace/lo4.pcap`, as a capture writing into a pipe
/// (`tcpdump -U -w -`) sends them: header first, then one record at a time.
fn lo4_pieces() -> (Vec<u8>, Vec<Vec<u8>>) {
    let bytes = std::fs::read(fixture("trace/lo4.pcap")).unwrap();
    let mut records = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        records.push(bytes[at..at + 16 + len].to_vec());
        at += 16 + len;
    }
    (bytes[..24].to_vec(), records)
}

/// Feeds `input` one record at a time and insists on each record's line coming back
/// before the next record is written. Each read is bounded, so a line held back in a
/// buffer fails the test instead of hanging it.
fn streams_line_by_line(child: &mut std::process::Child, mut input: impl Write) {
    let (header, records) = lo4_pieces();
    let expected = std::fs::read_to_string(fixture("trace/lo4.tcpdump.txt")).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    input.write_all(&header).unwrap();
    input.flush().unwrap();
    for (i, (record, want)) in records.iter().zip(expected.lines()).enumerate() {
        input.write_all(record).unwrap();
        input.flush().unwrap();
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => assert_eq!(line, want, "record {}", i + 1),
            Err(e) => {
                let _ = child.kill();
                panic!("record {}: no line within 10 s of writing it ({e})", i + 1);
            }
        }
    }
    drop(input);
    let status = child.wait().unwrap();
    reader.join().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(rx.try_recv().is_err(), "a line after the last record");
}

#[test]
fn standard_input_streams_a_line_per_record_as_it_arrives() {
    let mut child = Command::new(BIN)
        .args(["inspect", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let input = child.stdin.take().unwrap();
    streams_line_by_line(&mut child, input);
}

/// A named pipe given by name is not `-`: `-l` asks for a line per record.
#[test]
fn dash_l_streams_from_a_named_pipe() {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("inspect-fifo-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    let mut child = Command::new(BIN)
        .args(["inspect", "-l"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Opening for writing waits for the reader, which ustack is.
    let input = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    streams_line_by_line(&mut child, input);
}

/// tcpdump 4.99's lines for `tcpdump -nn -r FILE ARGS` in UTC, or `None` (saying why)
/// where tcpdump is not installed; under `CI=true` a missing tcpdump fails instead
/// (`.ci/run` installs it).
fn tcpdump(file: &Path, args: &[&str]) -> Option<String> {
    let program = tcpdump_program()?;
    let out = Command::new(program).env("TZ", "UTC").args(["-nn", "-r"]).arg(file).args(args).output().unwrap();
    assert!(out.status.success(), "tcpdump -nn -r {} {args:?}: {}", file.display(), stderr(&out));
    Some(stdout(&out))
}

/// Where tcpdump is, or `None` (saying why) where it is not installed; under `CI=true`
/// a missing tcpdump fails instead.
fn tcpdump_program() -> Option<PathBuf> {
    let dirs = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .collect::<Vec<_>>();
    let Some(program) = dirs.iter().map(|dir| dir.join("tcpdump")).find(|p| p.is_file()) else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true but tcpdump is not installed (Debian: tcpdump)");
        }
        eprintln!("skipping the comparison with a live tcpdump: tcpdump is not installed (Debian: tcpdump)");
        return None;
    };
    Some(program)
}

#[test]
fn dash_c_stops_after_count_records_in_every_mode() {
    let lo4 = std::fs::read_to_string(fixture("trace/lo4.tcpdump.txt")).unwrap();
    let first: String = lo4.lines().take(5).map(|line| format!("{line}\n")).collect();
    assert_eq!(inspect_ok(&["-c", "5"], "trace/lo4.pcap"), first);
    assert_eq!(inspect_ok(&["-c", "1000"], "trace/lo4.pcap"), lo4);
    let json = inspect_ok(&["--json"], "trace/lo4.pcap");
    let first: String = json.lines().take(5).map(|line| format!("{line}\n")).collect();
    assert_eq!(inspect_ok(&["--json", "-c", "5"], "trace/lo4.pcap"), first);
    // The handshake alone: three packets, a connection still open.
    let flows = inspect_ok(&["--flows", "-c", "3"], "trace/lo4.pcap");
    assert!(flows.lines().nth(1).is_some_and(|l| l.contains("complete") && l.contains("open")), "{flows}");
    let ladder = inspect_ok(&["--handshakes", "-c", "3"], "trace/lo4.pcap");
    assert_eq!(ladder.matches("[S").count(), 2, "{ladder}");
    assert!(!ladder.contains("[F"), "{ladder}");
    // A count that ends before damaged bytes never reaches them.
    let out = inspect(&["-c", "17"], &fixture("broken/truncated-record.pcap"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 17);
    for n in ["1", "7", "12"] {
        for name in ["trace/lo4.pcap", "trace/lo6.pcap", "kernel/several.pcap"] {
            if let Some(expected) = tcpdump(&fixture(name), &["-c", n]) {
                assert_same_lines(&inspect_ok(&["-c", n], name), &expected, &format!("-c {n} {name}"));
            }
        }
    }
}

#[test]
fn dash_c_zero_is_a_usage_error() {
    for count in ["0", "x", "-1"] {
        let out = inspect(&["-c", count], &fixture("trace/lo4.pcap"));
        assert_eq!(out.status.code(), Some(2), "-c {count}");
        assert_eq!(stderr(&out).lines().count(), 1, "-c {count}: {}", stderr(&out));
        assert_eq!(stdout(&out), "");
    }
}

/// Filters compared with tcpdump's on every fixture below.
const FILTERS: [&str; 35] = [
    "tcp",
    "udp",
    "icmp",
    "icmp6",
    "ip",
    "ip6",
    "not tcp",
    "! ip",
    "port 7",
    "tcp port 7",
    "udp port 7",
    "dst port 7",
    "src port 7",
    "port 7 or 9",
    "tcp src port 7 or dst port 9",
    "host 10.7.0.1",
    "src host 10.7.0.2",
    "dst host fd00:7::1",
    "host ::1",
    "host 10.9.0.1 and port 7",
    "net 10.7.0.0/16",
    "net 10.9",
    "src net 10.9.0.2/32",
    "net 10.0.0.0 mask 255.0.0.0",
    "net fd00::/16",
    "dst net 127.0.0.0/8",
    "ip6 net fd00:9::/32",
    "tcp port 7 and host 10.7.0.1",
    "(udp or icmp) and not host 10.7.0.9",
    "tcp or udp and port 7",
    "src or dst port 7",
    "src and dst host 127.0.0.1",
    "not (port 7 or port 9) && ip",
    "icmp || udp dst port 5",
    "ip host 10.7.0.2 and not icmp",
];

/// The fixtures whose unfiltered lines are tcpdump's (http.pcap is not: tcpdump adds
/// the HTTP request line).
fn tcpdump_fixtures() -> Vec<String> {
    let mut names = Vec::new();
    for dir in ["kernel", "trace"] {
        for entry in std::fs::read_dir(fixture(dir)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".pcap") && name != "http.pcap" {
                names.push(format!("{dir}/{name}"));
            }
        }
    }
    names.extend(["formats/lo4.pcapng", "formats/lo6-ns.pcapng", "formats/any-sll.pcap"].map(String::from));
    names.sort();
    names
}

#[test]
fn filters_match_tcpdump() {
    if tcpdump(&fixture("trace/lo4.pcap"), &[]).is_none() {
        return;
    }
    let mut matched = 0;
    for name in tcpdump_fixtures() {
        for filter in FILTERS {
            let expected = tcpdump(&fixture(&name), &[filter]).unwrap();
            matched += expected.lines().count();
            assert_same_lines(&inspect_ok(&[filter], &name), &expected, &format!("inspect {name} '{filter}'"));
            // The same expression as separate words, as a shell passes it unquoted.
            let words: Vec<&str> = filter.split(' ').collect();
            assert_same_lines(&inspect_ok(&words, &name), &expected, &format!("inspect {name} {filter}"));
        }
    }
    assert!(matched > 1000, "the filters chose {matched} lines in all: too few to say much");
    // -c counts what the filter lets through, as tcpdump's does.
    for name in ["trace/crafted.pcap", "kernel/several.pcap"] {
        for filter in ["tcp", "udp or icmp6", "port 7 and not src host 10.9.0.2"] {
            let expected = tcpdump(&fixture(name), &["-c", "4", filter]).unwrap();
            let ours = inspect_ok(&["-c", "4", filter], name);
            assert_same_lines(&ours, &expected, &format!("inspect -c 4 {name} '{filter}'"));
        }
    }
}

/// Without tcpdump: the filter narrows every mode, and comes before -c.
#[test]
fn a_filter_applies_in_every_mode_before_the_count() {
    let lo4 = std::fs::read_to_string(fixture("trace/lo4.tcpdump.txt")).unwrap();
    let udp: String = lo4.lines().filter(|l| l.contains(": UDP,")).map(|l| format!("{l}\n")).collect();
    assert!(!udp.is_empty());
    assert_eq!(inspect_ok(&["udp"], "trace/lo4.pcap"), udp);
    assert_eq!(inspect_ok(&["-c", "1", "udp"], "trace/lo4.pcap"), udp.lines().next().unwrap().to_string() + "\n");
    let json = inspect_ok(&["--json", "udp"], "trace/lo4.pcap");
    assert_eq!(json.lines().count(), udp.lines().count());
    assert!(json.lines().all(|l| l.contains("\"proto\":\"udp\"")), "{json}");
    assert_eq!(inspect_ok(&["--flows", "icmp"], "trace/lo4.pcap").lines().filter(|l| l.contains("tcp")).count(), 0);
    assert_eq!(inspect_ok(&["--handshakes", "udp"], "trace/lo4.pcap"), "no TCP connections\n");
    assert_eq!(inspect_ok(&["--flows", "port 12345"], "trace/lo4.pcap"), "no IP flows\n");
    // Options may follow the expression, as tcpdump's may.
    assert_eq!(inspect_ok(&["udp", "-c", "1"], "trace/lo4.pcap"), udp.lines().next().unwrap().to_string() + "\n");
}

#[test]
fn a_bad_filter_is_one_line_and_exit_2() {
    for filter in
        [&["port 7 and"][..], &["tcp", "port"][..], &["(", "udp"][..], &["frobnicate"][..], &["host", "10.7"][..]]
    {
        for mode in [&[][..], &["--json"][..], &["--flows"][..]] {
            let out = Command::new(BIN)
                .arg("inspect")
                .args(mode)
                .arg(fixture("trace/lo4.pcap"))
                .args(filter)
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(2), "{filter:?}");
            let err = stderr(&out);
            assert!(err.starts_with("ustack: inspect: filter expression: "), "{filter:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{filter:?}: {err}");
            assert_eq!(stdout(&out), "", "{filter:?}");
        }
    }
}

/// tcpdump's lines for dns-any.pcap.
fn dns_expected() -> String {
    std::fs::read_to_string(fixture("formats/dns-any.tcpdump.txt")).unwrap()
}

/// A line without the interface column of a cooked v2 capture (after the timestamp, 5
/// characters and a space).
fn without_interface(line: &str) -> String {
    format!("{}{}", &line[..16], &line[22..])
}

/// DNS queries and answers (A, AAAA, CNAME, PTR, MX, TXT, SRV, NXDomain, ServFail,
/// truncated, cut short, checking disabled, EDNS, the CHAOS class, two questions, not DNS
/// at all, mDNS queries and an announcement), MLDv2 reports and the direction of each packet, as
/// tcpdump prints them. The capture's interface index 2 was dns0 where it was recorded;
/// tcpdump (and ustack) name it as the reading host does, so here the interface column
/// is left out, and compared too in a namespace where index 2 is dns0.
#[test]
fn dns_mldv2_and_directions_match_tcpdump() {
    let expected = dns_expected();
    let ours = inspect_ok(&[], "formats/dns-any.pcap");
    let strip = |text: &str| text.lines().map(without_interface).map(|l| l + "\n").collect::<String>();
    assert_same_lines(&strip(&ours), &strip(&expected), "dns-any.pcap, interface column left out");
    for wanted in [
        "Out IP 10.7.0.1.53000 > 10.7.0.2.53: 4660+ A? example.com. (29)",
        "In  IP 10.7.0.2.53 > 10.7.0.1.53000: 4660* 1/0/0 A 10.7.0.9 (45)",
        "4662 2/0/0 CNAME example.com., A 10.7.0.9 (63)",
        "4665 1/0/0 TXT \"hello world\" \"v=ok^A\" (59)",
        "4666 NXDomain* 0/0/0 (36)",
        "4668 2/0/0 A 10.7.0.9 [|domain]",
        // The record's owner name is a pointer to itself: tcpdump skips it unread.
        "4669 1/0/0 A 10.7.0.9 (45)",
        "0 A (QM)? printer.local. (31)",
        "0 A (QU)? printer.local. (31)",
        "0*- [0q] 1/0/0 (Cache flush) A 10.7.0.1 (39)",
        "4671 1/0/0 SRV web.example.com.:8080 0 5 (75)",
        "4672+% [1au] A? example.com. (40)",
        "4673*- 1/0/0 CHAOS TXT \"ustack\" (49)",
        "4674+ [2q] A? example.com. AAAA? example.com. (46)",
        "M   IP6 :: > ff02::16: HBH ICMP6, multicast listener report v2, 2 group record(s), length 48",
    ] {
        assert!(ours.contains(wanted), "{wanted:?} not in\n{ours}");
    }

    let ns = match ustack::sys::NetNs::new() {
        Ok(ns) => ns,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipping the interface names: {e}");
            return;
        }
        Err(e) => panic!("CI=true but no network namespace: {e}"),
    };
    let named = ns
        .run(|| {
            // The peer is made first: give both their indexes.
            let made = Command::new("ip")
                .args(["link", "add", "dns1", "index", "3", "type", "veth", "peer", "name", "dns0", "index", "2"])
                .status()
                .expect("run ip");
            assert!(made.success(), "ip link add: {made:?}");
            let out = inspect(&[], &fixture("formats/dns-any.pcap"));
            assert!(out.status.success(), "{}", stderr(&out));
            stdout(&out)
        })
        .unwrap();
    assert_same_lines(&named, &expected, "dns-any.pcap read where index 2 is dns0");
}

/// --local-time prints what plain tcpdump prints in the zone TZ names; POSIX zone
/// strings need no time zone database.
#[test]
fn local_time_is_tcpdumps_default() {
    let utc = inspect_ok(&[], "trace/lo4.pcap");
    for (tz, offset_secs) in [("XST-5:30", 5 * 3600 + 1800), ("EST5EDT,M3.2.0,M11.1.0", -5 * 3600), ("UTC0", 0)] {
        let out = Command::new(BIN)
            .env("TZ", tz)
            .args(["inspect", "--local-time"])
            .arg(fixture("trace/lo4.pcap"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let ours = stdout(&out);
        // lo4.pcap was made on 22 November, after daylight saving time ended (EST, UTC-5): shift
        // each UTC line's time of day.
        let shifted: String = utc
            .lines()
            .map(|line| {
                let secs = |at: std::ops::Range<usize>| line[at].parse::<i64>().unwrap();
                let day = secs(0..2) * 3600 + secs(3..5) * 60 + secs(6..8);
                let local = (day + offset_secs).rem_euclid(86_400);
                format!("{:02}:{:02}:{:02}{}\n", local / 3600, local / 60 % 60, local % 60, &line[8..])
            })
            .collect();
        assert_same_lines(&ours, &shifted, &format!("TZ={tz} inspect --local-time"));
        let Some(program) = tcpdump_program() else { continue };
        let out =
            Command::new(program).env("TZ", tz).args(["-nn", "-r"]).arg(fixture("trace/lo4.pcap")).output().unwrap();
        assert_same_lines(&ours, &stdout(&out), &format!("TZ={tz} tcpdump -nn"));
    }
    // Without it, the same on every host: UTC whatever TZ says.
    let out = Command::new(BIN).env("TZ", "XST-5:30").arg("inspect").arg(fixture("trace/lo4.pcap")).output().unwrap();
    assert_same_lines(&stdout(&out), &utc, "TZ=XST-5:30 inspect");
}
