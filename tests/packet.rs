//! Packet decoding and rendering, against tcpdump itself.
//!
//! The fixtures in `fixtures/trace/` are captures with tcpdump's own rendering of them
//! (`*.tcpdump.txt`, `*.tcpdump-S.txt`, made by `fixtures/trace/make.sh`); the formatter
//! must print the same lines, timestamps included. The rest feeds the decoder broken
//! packets, checks the middleware devices, and, when tcpdump is installed, has tcpdump
//! read what the recorder wrote.

use std::fs::File;
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use pcap_file::pcap::PcapReader;
use smoltcp::phy::{Device, RxToken, TxToken};
use smoltcp::time::Instant;
use ustack::device::{Link, PcapRecorder, Tracer, Wire};
use ustack::packet::{
    ExtHeader, FlowIds, JsonFormatter, Net, TcpFlags, TcpOption, TcpdumpFormatter, TimeFormat, Transport, decode,
    decode_link, linktype, to_json,
};

fn fixture(name: &str) -> PathBuf {
    ustack_testkit::fixture("trace").join(name)
}

/// A pcap file's link type and packets with their timestamps.
fn read_pcap(path: &Path) -> (u32, Vec<(Duration, Vec<u8>)>) {
    let file = BufReader::new(File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
    let mut reader = PcapReader::new(file).expect("a pcap file");
    let linktype = reader.header().datalink.into();
    let mut packets = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let packet = packet.expect("a pcap record");
        packets.push((packet.timestamp, packet.data.into_owned()));
    }
    (linktype, packets)
}

/// Formats a capture as the formatter sees it and compares with tcpdump's lines.
fn compare_with_tcpdump(capture: &str, expected: &str, absolute: bool) {
    let (linktype, packets) = read_pcap(&fixture(capture));
    let expected = std::fs::read_to_string(fixture(expected)).unwrap();
    let expected: Vec<&str> = expected.lines().collect();
    let mut formatter = TcpdumpFormatter::new().absolute(absolute);
    let ours: Vec<String> =
        packets.iter().map(|(ts, frame)| formatter.format(*ts, &decode_link(linktype, frame))).collect();
    let mismatches: Vec<String> = ours
        .iter()
        .zip(&expected)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| format!("packet {}:\n  tcpdump: {b}\n  ustack:  {a}", i + 1))
        .collect();
    assert!(mismatches.is_empty(), "{capture} differs from tcpdump:\n{}", mismatches.join("\n"));
    assert_eq!(ours.len(), expected.len(), "{capture}: packet count");
}

#[test]
fn loopback_ipv4_matches_tcpdump() {
    compare_with_tcpdump("lo4.pcap", "lo4.tcpdump.txt", false);
    compare_with_tcpdump("lo4.pcap", "lo4.tcpdump-S.txt", true);
}

#[test]
fn loopback_ipv6_matches_tcpdump() {
    compare_with_tcpdump("lo6.pcap", "lo6.tcpdump.txt", false);
    compare_with_tcpdump("lo6.pcap", "lo6.tcpdump-S.txt", true);
}

#[test]
fn crafted_packets_match_tcpdump() {
    compare_with_tcpdump("crafted.pcap", "crafted.tcpdump.txt", false);
    compare_with_tcpdump("crafted.pcap", "crafted.tcpdump-S.txt", true);
}

// ---- hand-made packets ----

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ipv4(protocol: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut p = vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, protocol, 0, 0, 10, 7, 0, 1, 10, 7, 0, 2];
    p[2..4].copy_from_slice(&total.to_be_bytes());
    let sum = checksum(&p);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn ipv6(next: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    p.extend_from_slice(&[0xfd, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    p.extend_from_slice(&[0xfd, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    p.extend_from_slice(payload);
    p
}

fn tcp(flags: u8, options: &[u8], data: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let offset = ((20 + options.len()) / 4) as u8;
    let mut t = vec![0x9c, 0x40, 0, 7, 0, 0, 0, 123, 0, 0, 0, 0, offset << 4, flags, 0xfa, 0xf0, 0, 0, 0, 0];
    t.extend_from_slice(options);
    t.extend_from_slice(data);
    t
}

/// SYN with mss 1460, sackOK, TS val 1 ecr 0, nop, wscale 7.
const SYN_OPTIONS: [u8; 20] = [2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];

fn syn() -> Vec<u8> {
    ipv4(6, &tcp(TcpFlags::SYN, &SYN_OPTIONS, &[]))
}

fn tcp_of(packet: &[u8]) -> ustack::packet::Tcp {
    match decode(packet).transport() {
        Some(Transport::Tcp(t)) => t.clone(),
        other => panic!("not TCP: {other:?}"),
    }
}

#[test]
fn decodes_a_syn_with_options() {
    let s = decode(&syn());
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    let ip = s.ip().unwrap();
    assert_eq!((ip.src.to_string().as_str(), ip.dst.to_string().as_str(), ip.protocol), ("10.7.0.1", "10.7.0.2", 6));
    let t = tcp_of(&syn());
    assert_eq!((t.sport, t.dport, t.seq, t.window, t.payload_len), (40000, 7, 123, 64240, 0));
    assert_eq!(
        t.options,
        vec![
            TcpOption::Mss(1460),
            TcpOption::SackPermitted,
            TcpOption::Timestamp { val: 1, ecr: 0 },
            TcpOption::Nop,
            TcpOption::WindowScale(7)
        ]
    );
    assert_eq!(
        s.to_string(),
        "IP 10.7.0.1.40000 > 10.7.0.2.7: Flags [S], seq 123, win 64240, \
         options [mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7], length 0"
    );
}

#[test]
fn every_truncation_of_a_syn_is_described() {
    let full = syn();
    for len in 0..full.len() {
        let s = decode(&full[..len]);
        let line = TcpdumpFormatter::new().format(Duration::ZERO, &s);
        assert!(!s.problems.is_empty(), "{len} bytes: no problem noted");
        let first = &s.problems[0];
        match len {
            0 => assert_eq!(first, "empty packet"),
            1..=19 => assert_eq!(first, &format!("truncated IPv4 header ({len} of 20 bytes)")),
            _ => assert_eq!(first, &format!("IPv4 total length 60 but only {len} bytes present")),
        }
        if (20..40).contains(&len) {
            assert!(s.problems[1].starts_with("truncated TCP header"), "{len}: {:?}", s.problems);
            assert!(line.ends_with("[|tcp]"), "{len}: {line}");
        }
        if (40..60).contains(&len) {
            assert!(s.problems.iter().any(|p| p.starts_with("TCP header cut short")), "{len}: {:?}", s.problems);
            assert!(line.contains(&format!("truncated-ip - {} bytes missing!", 60 - len)), "{line}");
        }
        // Every rendering survives every cut.
        let _ = to_json(Duration::ZERO, &s, None);
        let _ = s.to_string();
    }
}

#[test]
fn lying_lengths_are_described() {
    // IPv4 total length beyond the buffer.
    let mut p = syn();
    p[2..4].copy_from_slice(&200u16.to_be_bytes());
    let s = decode(&p);
    assert_eq!(s.problems[0], "IPv4 total length 200 but only 60 bytes present");
    assert_eq!(s.ip().unwrap().missing, 140);

    // IHL below 5.
    let mut p = syn();
    p[0] = 0x44;
    let s = decode(&p);
    assert!(matches!(s.net, Net::None));
    assert_eq!(s.problems, ["IPv4 header length 16 bytes (IHL 4) is below the minimum 20"]);

    // IPv4 total length below the header.
    let mut p = syn();
    p[2..4].copy_from_slice(&12u16.to_be_bytes());
    let s = decode(&p);
    assert_eq!(s.problems[0], "IPv4 total length 12 is shorter than its 20-byte header");
    assert_eq!(s.to_string(), "IP bad-len 12");

    // TCP data offset pointing past the end.
    let mut t = tcp(TcpFlags::SYN, &[], &[]);
    t[12] = 15 << 4;
    let s = decode(&ipv4(6, &t));
    assert!(
        s.problems.contains(&"TCP data offset 60 bytes exceeds the 20-byte segment".to_string()),
        "{:?}",
        s.problems
    );
    assert_eq!(s.to_string(), "IP 10.7.0.1.40000 > 10.7.0.2.7: Flags [S] [bad hdr length 60 - too long, > 20]");

    // TCP data offset below 5.
    let mut t = tcp(TcpFlags::SYN, &[], &[]);
    t[12] = 2 << 4;
    let s = decode(&ipv4(6, &t));
    assert!(s.problems.contains(&"TCP data offset 8 bytes is below the minimum 20".to_string()));

    // UDP length field beyond the datagram.
    let mut u = vec![0x9c, 0x40, 0, 7, 0, 50, 0, 0];
    u.extend_from_slice(b"abc");
    let s = decode(&ipv4(17, &u));
    assert_eq!(s.problems, ["UDP length field 50 exceeds the 11 bytes IP carries"]);
    assert_eq!(s.to_string(), "IP 10.7.0.1.40000 > 10.7.0.2.7: UDP, bad length 42 > 3");
}

#[test]
fn bad_tcp_options_stop_decoding() {
    // Length 0: the receiver cannot find the next option.
    let t = tcp_of(&ipv4(6, &tcp(TcpFlags::SYN, &[2, 0, 0, 0], &[])));
    assert_eq!(t.options, vec![TcpOption::Malformed { kind: 2, len: Some(0) }]);
    // Running past the header.
    let s = decode(&ipv4(6, &tcp(TcpFlags::SYN, &[1, 8, 10, 0], &[])));
    assert_eq!(s.problems, ["TCP option kind 8 length 10 does not fit the 3 bytes left"]);
    assert_eq!(s.to_string(), "IP 10.7.0.1.40000 > 10.7.0.2.7: Flags [S], seq 123, win 64240, options [nop,[bad opt]]");
    // A kind byte with no room for its length.
    let t = tcp_of(&ipv4(6, &tcp(TcpFlags::SYN, &[1, 1, 1, 9], &[])));
    assert_eq!(t.options.last(), Some(&TcpOption::Malformed { kind: 9, len: None }));
    // Unknown kinds, EOL with padding after it, SACK blocks.
    let t = tcp_of(&ipv4(
        6,
        &tcp(TcpFlags::ACK, &[253, 4, 0xde, 0xad, 1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0], &[]),
    ));
    assert_eq!(
        t.options,
        vec![
            TcpOption::Unknown { kind: 253, data: vec![0xde, 0xad] },
            TcpOption::Nop,
            TcpOption::Nop,
            TcpOption::Sack(vec![(1, 2)]),
            TcpOption::Eol
        ]
    );
}

#[test]
fn ipv6_extension_headers() {
    let udp = [0x9c, 0x40, 0, 7, 0, 11, 0, 0, b'a', b'b', b'c'];
    // Hop-by-hop then UDP.
    let mut hbh = vec![17, 0, 1, 4, 0, 0, 0, 0];
    hbh.extend_from_slice(&udp);
    let s = decode(&ipv6(0, &hbh));
    let ip = s.ip().unwrap();
    assert_eq!(ip.ext_headers, vec![ExtHeader::HopByHop]);
    assert_eq!((ip.protocol, ip.payload_len), (17, 11));
    assert_eq!(s.to_string(), "IP6 fd00:7::1 > fd00:7::2: HBH 40000 > 7: UDP, length 3");

    // A first fragment, then a later one.
    let mut frag = vec![17, 0, 0, 1, 0, 0, 0, 5];
    frag.extend_from_slice(&udp);
    let s = decode(&ipv6(44, &frag));
    assert!(matches!(s.transport(), Some(Transport::Udp(_))));
    assert_eq!(s.ip().unwrap().fragment.map(|f| (f.id, f.offset, f.more)), Some((5, 0, true)));
    let s = decode(&ipv6(44, &[17, 0, 0, 8, 0, 0, 0, 5, 1, 2, 3, 4]));
    assert!(matches!(s.transport(), Some(Transport::Fragment)));
    assert_eq!(s.ip().unwrap().protocol, 17);
    assert_eq!(s.to_string(), "IP6 fd00:7::1 > fd00:7::2: frag (8|4)");

    // Hop-by-hop anywhere but first, and a cut extension header.
    let s = decode(&ipv6(60, &[0, 0, 0, 0, 0, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0, 0]));
    assert!(s.problems.iter().any(|p| p.contains("hop-by-hop header not directly after")), "{:?}", s.problems);
    let s = decode(&ipv6(0, &[17, 0, 1]));
    assert!(s.problems.iter().any(|p| p.starts_with("truncated IPv6 extension header")), "{:?}", s.problems);
}

#[test]
fn other_protocols_are_named() {
    let s = decode(&ipv4(47, &[0; 8]));
    assert!(matches!(s.transport(), Some(Transport::Other)));
    assert_eq!(s.to_string(), "IP 10.7.0.1 > 10.7.0.2:  ip-proto-47 8");
    assert!(to_json(Duration::ZERO, &s, None).contains("\"proto\":\"ip-proto-47\""));
    let s = decode(&[0x00, 1, 2, 3]);
    assert_eq!(s.problems, ["not IP: first nibble 0x0"]);
    assert_eq!(s.to_string(), "not IP: first nibble 0x0");
}

#[test]
fn icmp_errors_decode_their_quote() {
    let quoted = ipv4(17, &[0x9c, 0x40, 0, 9, 0, 9, 0, 0, b'q']);
    let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&quoted);
    let s = decode(&ipv4(1, &icmp));
    let Some(Transport::Icmpv4(m)) = s.transport() else { panic!("{s:?}") };
    assert_eq!((m.icmp_type, m.code), (3, 3));
    let inner = m.quoted.as_deref().unwrap();
    assert_eq!(inner.ports(), Some((40000, 9)));
    assert_eq!(s.to_string(), "IP 10.7.0.1 > 10.7.0.2: ICMP 10.7.0.2 udp port 9 unreachable, length 37");

    let echo = decode(&ipv6(58, &[128, 0, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0]));
    assert_eq!(echo.to_string(), "IP6 fd00:7::1 > fd00:7::2: ICMP6, echo request, id 1, seq 2, length 12");
}

#[test]
fn nested_icmp_errors_do_not_recurse() {
    // An unreachable quoting an unreachable quoting ... 2000 deep, as one 64 KB packet.
    let mut packet = ipv4(17, &[0x9c, 0x40, 0, 9, 0, 8, 0, 0]);
    for _ in 0..2000 {
        let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&packet);
        packet = ipv4(1, &icmp);
    }
    let s = decode(&packet);
    let Some(Transport::Icmpv4(outer)) = s.transport() else { panic!() };
    let Some(Transport::Icmpv4(inner)) = outer.quoted.as_deref().and_then(|q| q.transport()) else { panic!() };
    assert!(inner.quoted.is_none(), "one level of quote only");
}

#[test]
fn garbage_never_panics() {
    // A fixed-seed xorshift: reproducible noise, with IP-looking first bytes half the time.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut formatter = TcpdumpFormatter::new().flow_capacity(16);
    let mut json = JsonFormatter::new();
    let linktypes = [linktype::RAW, linktype::ETHERNET, linktype::LINUX_SLL, linktype::LINUX_SLL2, linktype::NULL, 147];
    // Real packets with bytes flipped and cut: past the first checks, into every layer.
    for name in ["lo4.pcap", "lo6.pcap", "crafted.pcap"] {
        let (linktype, packets) = read_pcap(&fixture(name));
        for (_, packet) in &packets {
            for _ in 0..50 {
                let mut p = packet.clone();
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % p.len();
                    p[at] ^= 1 << (next() % 8);
                }
                p.truncate(1 + (next() as usize) % p.len());
                let s = decode_link(linktype, &p);
                let _ = formatter.format(Duration::ZERO, &s);
                let _ = json.format(Duration::ZERO, &s);
            }
        }
    }
    for i in 0..20_000 {
        let len = (next() % 120) as usize;
        let mut p: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if i % 2 == 0 && !p.is_empty() {
            p[0] = if i % 4 == 0 { 0x45 } else { 0x60 };
            if len > 9 && i % 3 == 0 {
                p[9] = [1, 6, 17][i % 3];
            }
        }
        let s = decode(&p);
        let _ = formatter.format(Duration::from_micros(i as u64), &s);
        let _ = json.format(Duration::ZERO, &s);
        let s = decode_link(linktypes[i % linktypes.len()], &p);
        let _ = s.to_string();
    }
}

// ---- link layers ----

#[test]
fn link_layers() {
    let packet = syn();
    let line = "IP 10.7.0.1.40000 > 10.7.0.2.7: Flags [S], seq 123, win 64240, \
                options [mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7], length 0";

    // Ethernet with a VLAN tag.
    let mut eth = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x81, 0x00, 0x00, 42, 0x08, 0x00];
    eth.extend_from_slice(&packet);
    let s = decode_link(linktype::ETHERNET, &eth);
    let link = s.link.as_ref().unwrap();
    assert_eq!((link.vlan_ids.as_slice(), link.header_len, link.protocol), (&[42u16][..], 18, Some(0x0800)));
    assert_eq!(link.src.as_deref(), Some("02:00:00:00:00:01"));
    assert_eq!(s.to_string(), line);

    // Linux cooked v1 and v2.
    let mut sll = vec![0, 4, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00];
    sll.extend_from_slice(&packet);
    let s = decode_link(linktype::LINUX_SLL, &sll);
    assert_eq!(s.link.as_ref().unwrap().direction, Some("Out"));
    assert_eq!(s.to_string(), line);
    let mut sll2 = vec![0x08, 0x00, 0, 0, 0, 0, 0, 3, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
    sll2.extend_from_slice(&packet);
    let s = decode_link(linktype::LINUX_SLL2, &sll2);
    assert_eq!((s.link.as_ref().unwrap().ifindex, s.link.as_ref().unwrap().direction), (Some(3), Some("In")));
    assert_eq!(s.to_string(), line);

    // BSD loopback, both byte orders; raw IP under every number it goes by.
    for header in [[2, 0, 0, 0], [0, 0, 0, 2]] {
        let mut null = header.to_vec();
        null.extend_from_slice(&packet);
        assert_eq!(decode_link(linktype::NULL, &null).to_string(), line);
    }
    for raw in [linktype::RAW, linktype::DLT_RAW_12, linktype::DLT_RAW_14] {
        assert_eq!(decode_link(raw, &packet).to_string(), line);
    }

    // ARP, as tcpdump says it.
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 2, 0x08, 0x06]);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 2, 10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 10, 0, 0, 1]);
    let s = decode_link(linktype::ETHERNET, &arp);
    assert_eq!(s.to_string(), "ARP, Request who-has 10.0.0.1 tell 10.0.0.2, length 28");

    // Unknown link types are described, not dropped.
    let s = decode_link(147, &packet);
    assert_eq!(s.problems, ["link type 147 not supported (60 bytes)"]);
    assert_eq!(s.link.as_ref().unwrap().linktype, 147);
}

// ---- formatter state, time, JSON ----

#[test]
fn relative_sequence_numbers_and_time() {
    let client = ipv4(6, &tcp(TcpFlags::SYN, &[], &[]));
    let mut synack = tcp(TcpFlags::SYN | TcpFlags::ACK, &[], &[]);
    synack[0..4].copy_from_slice(&[0, 7, 0x9c, 0x40]);
    synack[4..8].copy_from_slice(&1000u32.to_be_bytes());
    synack[8..12].copy_from_slice(&124u32.to_be_bytes());
    let mut synack = ipv4(6, &synack);
    synack[12..20].copy_from_slice(&[10, 7, 0, 2, 10, 7, 0, 1]);
    let mut data = tcp(TcpFlags::PSH | TcpFlags::ACK, &[], b"hello");
    data[4..8].copy_from_slice(&124u32.to_be_bytes());
    data[8..12].copy_from_slice(&1001u32.to_be_bytes());
    let data = ipv4(6, &data);

    let mut f = TcpdumpFormatter::new().time_format(TimeFormat::Relative);
    let t0 = Duration::new(1_700_000_000, 5_000);
    assert!(f.format(t0, &decode(&client)).starts_with("0.000000 IP 10.7.0.1.40000 > 10.7.0.2.7: Flags [S], seq 123,"));
    assert!(f.format(t0 + Duration::from_micros(250), &decode(&synack)).contains("seq 1000, ack 124,"));
    let line = f.format(t0 + Duration::from_millis(1500), &decode(&data));
    assert_eq!(line, "1.500000 IP 10.7.0.1.40000 > 10.7.0.2.7: Flags [P.], seq 1:6, ack 1, win 64240, length 5");

    let mut f = TcpdumpFormatter::new().time_format(TimeFormat::TimeOfDay).absolute(true);
    let line = f.format(Duration::new(86_400 * 3 + 3600 * 12 + 60 * 34 + 56, 789_012_345), &decode(&data));
    assert!(
        line.starts_with("12:34:56.789012 IP 10.7.0.1.40000 > 10.7.0.2.7: Flags [P.], seq 124:129, ack 1001,"),
        "{line}"
    );

    // A forgotten conversation is shown as tcpdump shows one met mid-stream.
    let mut f = TcpdumpFormatter::new().time_format(TimeFormat::None).flow_capacity(1);
    f.format(Duration::ZERO, &decode(&synack));
    let mut other = synack.clone();
    other[19] = 9; // another client
    f.format(Duration::ZERO, &decode(&other));
    assert!(f.format(Duration::ZERO, &decode(&data)).contains("seq 124:129, ack 1001"));
}

#[test]
fn json_lines_share_flow_ids_across_directions() {
    let mut a = tcp(TcpFlags::SYN, &[], &[]);
    a[0..4].copy_from_slice(&[0x9c, 0x40, 0, 7]);
    let mut b = tcp(TcpFlags::SYN | TcpFlags::ACK, &[], b"xy");
    b[0..4].copy_from_slice(&[0, 7, 0x9c, 0x40]);
    let mut b = ipv4(6, &b);
    b[12..20].copy_from_slice(&[10, 7, 0, 2, 10, 7, 0, 1]);
    let udp = ipv4(17, &[0x9c, 0x41, 0, 7, 0, 11, 0, 0, b'a', b'b', b'c']);

    let mut json = JsonFormatter::new();
    let ts = Duration::new(1_700_000_000, 123_456_000);
    assert_eq!(
        json.format(ts, &decode(&ipv4(6, &a))),
        r#"{"ts":1700000000.123456,"src":"10.7.0.1","dst":"10.7.0.2","proto":"tcp","sport":40000,"dport":7,"flags":"S","seq":123,"ack":null,"win":64240,"len":0,"flow":1,"problem":null}"#
    );
    assert_eq!(
        json.format(ts, &decode(&b)),
        r#"{"ts":1700000000.123456,"src":"10.7.0.2","dst":"10.7.0.1","proto":"tcp","sport":7,"dport":40000,"flags":"S.","seq":123,"ack":0,"win":64240,"len":2,"flow":1,"problem":null}"#
    );
    assert_eq!(
        json.format(ts, &decode(&udp)),
        r#"{"ts":1700000000.123456,"src":"10.7.0.1","dst":"10.7.0.2","proto":"udp","sport":40001,"dport":7,"flags":null,"seq":null,"ack":null,"win":null,"len":3,"flow":2,"problem":null}"#
    );
    assert_eq!(
        json.format(ts, &decode(b"\x00\"")),
        r#"{"ts":1700000000.123456,"src":null,"dst":null,"proto":null,"sport":null,"dport":null,"flags":null,"seq":null,"ack":null,"win":null,"len":null,"flow":null,"problem":"not IP: first nibble 0x0"}"#
    );

    let mut ids = FlowIds::with_capacity(2);
    assert_eq!(ids.of(&decode(&udp)), Some(1));
    assert_eq!(ids.of(&decode(&b)), Some(2));
    assert_eq!(ids.of(&decode(&ipv4(6, &a))), Some(2));
    assert_eq!(ids.of(&decode(&ipv4(47, &[]))), Some(3));
    assert_eq!(ids.len(), 2);
    assert_eq!(ids.of(&decode(&udp)), Some(4), "forgotten, so new");
}

// ---- middleware devices ----

const T0: Duration = Duration::new(1_700_000_000, 250_000_000);

fn fixed_clock() -> Duration {
    T0
}

/// Sends `packet` out through `dev` (as the stack would).
fn send<D: Device>(dev: &mut D, packet: &[u8]) {
    let token = dev.transmit(Instant::ZERO).expect("a transmit token");
    token.consume(packet.len(), |buf| buf.copy_from_slice(packet));
}

/// Receives one packet through `dev` (as the stack would).
fn receive<D: Device>(dev: &mut D) -> Vec<u8> {
    let (rx, _tx) = dev.receive(Instant::ZERO).expect("a packet waiting");
    rx.consume(|buf| buf.to_vec())
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ustack-packet-{}-{name}", std::process::id()))
}

#[test]
fn pcap_recorder_records_both_directions() {
    let (a, b) = Wire::pair(1500).unwrap();
    let path = temp_path("recorder.pcap");
    let file = File::create(&path).unwrap();
    let mut recorder = PcapRecorder::new(a, file).unwrap().with_clock(fixed_clock);

    let out = syn();
    let incoming = ipv6(58, &[128, 0, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0]);
    send(&mut recorder, &out);
    assert_eq!(b.recv_raw().as_deref(), Some(&out[..]), "the packet still goes out");
    b.send_raw(&incoming);
    assert_eq!(receive(&mut recorder), incoming, "and still comes in");
    assert!(recorder.take_error().is_none());

    // Flushed per packet: the file is complete while the recorder is alive.
    let (linktype, packets) = read_pcap(&path);
    assert_eq!(linktype, linktype::RAW);
    assert_eq!(packets, vec![(T0, out.clone()), (T0, incoming.clone())]);

    match Command::new("tcpdump").args(["-nn", "-r"]).arg(&path).env("TZ", "UTC").output() {
        Ok(output) => {
            assert!(output.status.success(), "tcpdump -r failed: {}", String::from_utf8_lossy(&output.stderr));
            let text = String::from_utf8_lossy(&output.stdout);
            let mut ours = TcpdumpFormatter::new();
            let expected: Vec<String> = packets.iter().map(|(ts, p)| ours.format_packet(*ts, p)).collect();
            assert_eq!(text.lines().collect::<Vec<_>>(), expected);
        }
        Err(e) => eprintln!("note: tcpdump not runnable ({e}); skipped reading the recording with tcpdump"),
    }
    drop(recorder);
    let _ = std::fs::remove_file(&path);
}

/// Accepts `room` bytes, then fails every write.
struct FailingWriter {
    room: usize,
}

impl Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.room == 0 {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
        }
        let n = buf.len().min(self.room);
        self.room -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn pcap_recorder_write_errors_become_link_errors() {
    let (a, b) = Wire::pair(1500).unwrap();
    let mut recorder = PcapRecorder::new(a, FailingWriter { room: 24 }).unwrap();
    send(&mut recorder, &syn());
    send(&mut recorder, &syn());
    assert_eq!(b.recv_raw().as_deref(), Some(&syn()[..]), "traffic goes on");
    assert_eq!(b.recv_raw().as_deref(), Some(&syn()[..]));
    let error = recorder.take_error().expect("the write error");
    assert_eq!(error.kind(), io::ErrorKind::StorageFull);
    assert!(recorder.take_error().is_none(), "reported once");

    let header_fails = PcapRecorder::new(Wire::pair(1500).unwrap().0, FailingWriter { room: 0 });
    assert!(header_fails.is_err());
}

/// Captures `ustack::trace` log lines.
struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.target() == ustack::device::trace::TARGET
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            self.0.lock().unwrap().push(format!("{} {}", record.level(), record.args()));
        }
    }

    fn flush(&self) {}
}

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

#[test]
fn tracer_logs_tcpdump_lines_and_nests() {
    log::set_logger(&CAPTURE).unwrap();
    log::set_max_level(log::LevelFilter::Info);

    let (a, b) = Wire::pair(1500).unwrap();
    let recorder = PcapRecorder::new(a, Vec::new()).unwrap().with_clock(fixed_clock);
    let mut tracer = Tracer::new(recorder).with_clock(fixed_clock);
    send(&mut tracer, &syn());
    b.send_raw(&ipv4(17, &[0, 7, 0x9c, 0x40, 0, 11, 0, 0, b'a', b'b', b'c']));
    receive(&mut tracer);
    assert!(tracer.take_error().is_none());
    let _ = tracer.wait_fd();

    assert_eq!(
        *CAPTURE.0.lock().unwrap(),
        [
            "INFO out 22:13:20.250000 IP 10.7.0.1.40000 > 10.7.0.2.7: Flags [S], seq 123, win 64240, \
             options [mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7], length 0",
            "INFO in  22:13:20.250000 IP 10.7.0.1.7 > 10.7.0.2.40000: UDP, length 3",
        ]
    );
    let (_, recording) = tracer.into_inner().into_parts();
    assert_eq!(recording.len(), 24 + 16 + 60 + 16 + 31, "the recorder under the tracer saw both");
}
