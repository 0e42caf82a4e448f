//! `ustack sim`: a client stack and an echo server stack in one process, over a simulated
//! link on a virtual clock (see `ustack::sim`). Needs no privileges and no network; the
//! same seed prints the same bytes.

use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use ustack::device::PcapWriter;
use ustack::engine::ConnectionInfo;
use ustack::observe::report::{ReportBuilder, html};
use ustack::packet::{TcpdumpFormatter, TimeFormat, decode, json_quote};
use ustack::sim::echo::{self, EchoConfig, EchoReport};
use ustack::sim::{Fate, LinkConfig, since_epoch};
use ustack::{Congestion, LossRecovery};

use super::{Failure, context};

#[derive(Debug, Args)]
pub struct SimArgs {
    /// The seed of every random choice (ISNs, ports, the link's losses); the same seed
    /// gives the same output. Without it, one is drawn and printed.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,

    /// Bytes sent by the clients in all, and echoed back.
    #[arg(long, value_name = "N", default_value_t = 65536)]
    bytes: usize,

    /// Connections opened at once (the bytes are shared among them).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    clients: u32,

    /// The echo server's listen() backlog.
    #[arg(long, value_name = "N", default_value_t = 128, value_parser = clap::value_parser!(u32).range(0..=i64::from(ustack::engine::SOMAXCONN)))]
    backlog: u32,

    /// The least time between two accept() calls of the server, so the backlog fills.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    accept_delay: u64,

    /// Lose PCT percent of the packets on the link, each way.
    #[arg(long, value_name = "PCT", default_value_t = 0.0, value_parser = super::args::parse_percent)]
    drop_chance: f64,

    /// Damage one byte of PCT percent of the packets on the link (the checksum catches it).
    #[arg(long, value_name = "PCT", default_value_t = 0.0, value_parser = super::args::parse_percent)]
    corrupt_chance: f64,

    /// One-way delay of the link, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1)]
    delay: u64,

    /// Print every packet that crossed the link, one `tcpdump -nn` line each, with the
    /// virtual time in seconds, who sent it and what the link did to it.
    #[arg(long)]
    trace: bool,

    /// Record every packet sent onto the link to FILE (pcap, raw IP; times are virtual,
    /// from the Unix epoch).
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,

    /// Write an HTML report of what crossed the link to FILE, as `inspect --html` draws a
    /// capture: ladders and time-sequence graphs, with the packets the link lost drawn as
    /// arrows that stop halfway (✕) and the retransmissions that recovered them marked.
    /// Times are virtual.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,

    /// Print one JSON object at the end instead of the text report.
    #[arg(long)]
    json: bool,

    /// Stop after this many seconds of virtual time, finished or not.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    time_limit: u64,

    /// TCP congestion control of both stacks: cubic (the default, as Linux's), reno or none;
    /// smoltcp-cubic and smoltcp-reno are smoltcp's own, blind to ustack's recovery.
    #[arg(long, value_name = "NAME", default_value_t = Congestion::Cubic)]
    congestion: Congestion,

    /// Who resends lost segments: ustack (SACK, RACK-TLP, a 200 ms RTO floor, as Linux) or
    /// smoltcp (its own recovery alone, for comparison).
    #[arg(long, value_name = "WHO", default_value_t = LossRecovery::Ustack)]
    recovery: LossRecovery,

    /// Send buffer and receive window a TCP connection starts with (they grow up to 4 and
    /// 6 MiB as the network and the application keep up), in bytes, on both stacks.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024, value_parser = clap::value_parser!(u64).range(1024..=1 << 30))]
    tcp_buffer: u64,
}

/// Runs the simulation and prints its report; exit 1 if the echo did not come back intact.
pub fn run(args: SimArgs) -> Result<(), Failure> {
    let seed = args.seed.unwrap_or_else(ustack::engine::random::from_os);
    let config = EchoConfig {
        seed,
        bytes: args.bytes,
        clients: args.clients as usize,
        backlog: args.backlog,
        accept_delay: Duration::from_millis(args.accept_delay),
        link: LinkConfig {
            drop_chance: args.drop_chance / 100.0,
            corrupt_chance: args.corrupt_chance / 100.0,
            delay: Duration::from_millis(args.delay),
        },
        time_limit: Duration::from_secs(args.time_limit),
        congestion: args.congestion,
        loss_recovery: args.recovery,
        tcp_buffer: args.tcp_buffer as usize,
        ..EchoConfig::default()
    };
    let mut pcap = match &args.pcap {
        Some(path) => {
            let file = std::fs::File::create(path).map_err(context(format!("--pcap {}", path.display())))?;
            Some(PcapWriter::new(BufWriter::new(file)).map_err(context(format!("--pcap {}", path.display())))?)
        }
        None => None,
    };
    let mut out = std::io::stdout().lock();
    let text = !args.json;
    if text {
        let _ = writeln!(
            out,
            "ustack sim: seed {seed}; {} bytes echoed over {} connection(s); link: {}% lost, {}% damaged, {} ms each way",
            args.bytes, args.clients, args.drop_chance, args.corrupt_chance, args.delay
        );
    }
    let mut report = args.html.as_ref().map(|_| ReportBuilder::new());
    let mut formatter = TcpdumpFormatter::new().time_format(TimeFormat::Epoch);
    let mut pcap_error = None;
    let mut line = String::new();
    let echoed = echo::run(&config, |crossing, sim| {
        if let Some(writer) = &mut pcap
            && pcap_error.is_none()
            && let Err(e) = writer.write(since_epoch(crossing.at), &crossing.packet)
        {
            pcap_error = Some(e);
        }
        if let Some(builder) = &mut report {
            builder.observe(since_epoch(crossing.at), &decode(&crossing.packet), crossing.fate.mark());
        }
        if args.trace && text {
            line.clear();
            formatter.format_into(since_epoch(crossing.at), &decode(&crossing.packet), &mut line);
            let fate = match crossing.fate {
                Fate::Delivered => "",
                Fate::Dropped => "  [lost]",
                Fate::Corrupted => "  [damaged]",
                Fate::NoRoute => "  [no route]",
            };
            let _ = writeln!(out, "{:<6} {line}{fate}", sim.nodes[crossing.from].name);
        }
    })
    .map_err(Failure::new)?;
    if let Some(e) = pcap_error {
        return Err(Failure::new(format!("--pcap: {e}")));
    }
    if let (Some(builder), Some(path)) = (report, &args.html) {
        let title = format!(
            "ustack sim, seed {seed}: {} bytes over {} connection(s), {}% lost, {}% damaged, {} ms each way",
            args.bytes, args.clients, args.drop_chance, args.corrupt_chance, args.delay
        );
        let report = builder.finish();
        std::fs::write(path, html::page(&report, &title)).map_err(context(format!("--html {}", path.display())))?;
        if text {
            let _ = writeln!(out, "{}: {}", path.display(), report.drawn());
        }
    }
    let rendered = if text { text_report(&echoed) } else { json_report(&echoed) };
    let _ = out.write_all(rendered.as_bytes());
    let _ = out.flush();
    if echoed.intact { Ok(()) } else { Err(Failure::new("the echo did not come back intact")) }
}

fn timeline(info: &ConnectionInfo) -> String {
    let states: Vec<String> = info.timeline.iter().map(|(ms, state)| format!("{state} +{ms:.3}ms")).collect();
    let mut line = format!("  {} at {:.3}ms: {}", info.tuple, info.started_ms, states.join(", "));
    if let Some(rtt) = info.handshake_rtt_ms {
        let _ = write!(line, "; handshake RTT {rtt:.3}ms");
    }
    if let Some(side) = info.closed_first {
        let _ = write!(line, "; {side} closed first");
    }
    line
}

fn text_report(r: &EchoReport) -> String {
    let mut s = String::new();
    for (side, conns) in [("client", &r.client_connections), ("server", &r.server_connections)] {
        let _ = writeln!(s, "{side} connections:");
        for info in conns.iter() {
            let _ = writeln!(s, "{}", timeline(info));
        }
    }
    let l = &r.link;
    let _ = writeln!(
        s,
        "summary: {} bytes sent, {} echoed, {}; {:.6} s of virtual time; {} packets on the link, {} lost, {} damaged, {} TCP retransmissions",
        r.bytes_sent,
        r.bytes_echoed,
        if r.intact { "intact" } else { "NOT intact" },
        r.virtual_time.as_secs_f64(),
        l.sent,
        l.dropped,
        l.corrupted,
        l.retransmissions
    );
    let (c, v) = (&r.client_demux, &r.server_demux);
    let _ = writeln!(
        s,
        "server demux: {} SYNs admitted, {} dropped on overflow, {} SYN cookies, {} handshake ACKs dropped; client: {} to no socket",
        v.admitted, v.overflow_dropped, v.cookies_sent, v.ack_dropped, c.tcp_no_socket
    );
    for e in &r.failures {
        let _ = writeln!(s, "a connection failed: {e}");
    }
    s
}

fn json_connections(conns: &[ConnectionInfo]) -> String {
    let items: Vec<String> = conns
        .iter()
        .map(|c| {
            let states: Vec<String> =
                c.timeline.iter().map(|(ms, st)| format!("{{\"state\": {}, \"ms\": {ms:.3}}}", json_quote(st))).collect();
            format!(
                "{{\"local\": {}, \"remote\": {}, \"started_ms\": {:.3}, \"timeline\": [{}], \"handshake_rtt_ms\": {}, \"closed_first\": {}}}",
                json_quote(&c.tuple.local.to_string()),
                json_quote(&c.tuple.remote.to_string()),
                c.started_ms,
                states.join(", "),
                c.handshake_rtt_ms.map_or("null".into(), |v| format!("{v:.3}")),
                c.closed_first.map_or("null".into(), |s| json_quote(&s.to_string())),
            )
        })
        .collect();
    format!("[{}]", items.join(", "))
}

fn json_report(r: &EchoReport) -> String {
    let failures: Vec<String> = r.failures.iter().map(|e| json_quote(e.name())).collect();
    format!(
        "{{\"seed\": {}, \"bytes_sent\": {}, \"bytes_echoed\": {}, \"virtual_seconds\": {:.6}, \"packets\": {}, \
         \"lost\": {}, \"damaged\": {}, \"retransmissions\": {}, \"failures\": [{}], \
         \"connections\": {{\"client\": {}, \"server\": {}}}, \"intact\": {}}}\n",
        r.seed,
        r.bytes_sent,
        r.bytes_echoed,
        r.virtual_time.as_secs_f64(),
        r.link.sent,
        r.link.dropped,
        r.link.corrupted,
        r.link.retransmissions,
        failures.join(", "),
        json_connections(&r.client_connections),
        json_connections(&r.server_connections),
        r.intact
    )
}
