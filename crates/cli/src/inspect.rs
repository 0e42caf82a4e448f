//! `ustack inspect FILE`: a capture file made anywhere (tcpdump, Wireshark, ustack's own
//! recorder) as tcpdump lines, JSON lines, a flow table, TCP ladder diagrams or an HTML
//! report.
//!
//! Reading and analysis are library code ([`ustack::observe`], [`ustack::packet`]); this
//! module opens the input, picks the rendering and writes it. Every failure to read the
//! capture is bad input: one line `ustack: inspect FILE: ...` on stderr and exit 2, after
//! whatever was read before it has been printed.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use ustack::observe::ladder::{DEFAULT_HEAD, DEFAULT_TAIL};
use ustack::observe::report::{Mark, ReportBuilder, html};
use ustack::observe::{CaptureReader, FlowTable, draw};
use ustack::packet::{Filter, JsonFormatter, Net, TcpdumpFormatter, TimeFormat};

#[derive(Debug, Args)]
#[command(after_long_help = "\
Reads pcap (either byte order, micro- or nanosecond timestamps) and pcapng (any number of \
interfaces, each with its own link type and timestamp resolution). Link types: raw IP, \
Ethernet, Linux cooked v1 and v2 (tcpdump -i any), BSD loopback. Timestamps print in UTC, \
as `TZ=UTC tcpdump -nn -r FILE` prints them (--local-time: as plain `tcpdump -nn -r FILE` \
does). A cooked v2 packet starts with its interface, named as this host names that \
index (`?` if none), and its direction, as tcpdump 4.99 prints them.

DNS over UDP port 53 (and mDNS, 5353) and TCP port 53 prints as tcpdump prints it without -v: a query's id, \
flags and questions, a response's id, flags, rcode, section counts and answers, the \
message length; a message cut short or malformed ends in `[|domain]` where its decoding \
stopped. MLDv2 reports show their number of group records.

EXPRESSION is tcpdump's filter language, its common part: `ustack inspect FILE 'tcp port 7 \
and host 10.7.0.1'` prints what `TZ=UTC tcpdump -nn -r FILE 'tcp port 7 and host 10.7.0.1'` \
prints. `not` binds tightest; `and` and `or` are equal, left to right, as in tcpdump. A bare \
value repeats the qualifiers before it (`port 7 or 9`). An expression that does not parse is \
one line on stderr and exit 2.

Following a live capture: `tcpdump -U -w - | ustack inspect -` prints each packet as it \
arrives (standard input and a terminal are line-buffered; -l asks for it elsewhere), and \
`-c N` ends it after N packets.

--html OUT.html draws the capture as one self-contained page (docs/seeing-inside.md, \
\"Pictures\"): `ustack inspect --html report.html fixtures/kernel/backlog.pcap`, then open \
report.html in a browser. The filter expression and -c apply to it too.

A record that cannot be decoded (ARP, another protocol, garbage, a frame cut short, an \
unknown link type) still gets its line, saying what it is. A damaged file (cut short, \
wrong magic, a length that cannot be) prints every record before the damage, then one line \
on stderr, and exits 2.")]
pub struct InspectArgs {
    /// The capture file, pcap or pcapng; `-` reads standard input.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Only the packets this tcpdump filter expression matches, as one argument or as
    /// separate words: `'tcp port 7 and host 10.7.0.1'`. Primitives: `host A`,
    /// `net A/LEN`, `net A mask M`, `port N`, each with `src`, `dst`, `src or dst` or
    /// `src and dst` before it; `ip`, `ip6`, `tcp`, `udp`, `icmp`, `icmp6`, `arp`, alone
    /// or before `host`/`net` (ip, ip6) and `port` (tcp, udp); `and`/`&&`, `or`/`||`,
    /// `not`/`!`, parentheses. It applies in every mode, before -c counts.
    #[arg(value_name = "EXPRESSION")]
    pub expression: Vec<String>,

    /// Print the flow table instead of the packets: per conversation, packets and bytes
    /// each way, the TCP handshake, how it ended, and how long it lasted.
    #[arg(long)]
    pub flows: bool,

    /// Draw each TCP connection as a ladder diagram instead of printing the packets, with
    /// the handshake's round-trip times and who closed first.
    #[arg(long)]
    pub handshakes: bool,

    /// Write an HTML report to OUT instead of printing the packets: the flow table, and for
    /// each TCP connection a ladder diagram and a time-sequence graph per direction
    /// (retransmissions, resets, SACK blocks and zero windows marked), for each UDP flow a
    /// timeline. One self-contained file (no network needed to view it); big captures are
    /// drawn in part (a ladder's first and last packets), with a note saying what is left out.
    #[arg(long, value_name = "OUT", conflicts_with_all = ["flows", "handshakes", "json"])]
    pub html: Option<PathBuf>,

    /// One JSON object per record instead of tcpdump lines (keys ts, src, dst, proto,
    /// sport, dport, flags, seq, ack, win, len, flow, problem; null where not applicable).
    #[arg(long, conflicts_with_all = ["flows", "handshakes", "absolute"])]
    pub json: bool,

    /// Absolute TCP sequence and acknowledgment numbers (tcpdump -S), in lines and ladders.
    #[arg(short = 'S', long)]
    pub absolute: bool,

    /// Line-buffered (tcpdump -l): each line or JSON object is written as soon as its
    /// record is read. The default when standard output is a terminal or FILE is `-`
    /// (`tcpdump -U -w - | ustack inspect -`); otherwise output goes out 64 KiB at a time.
    #[arg(short = 'l', long = "line-buffered")]
    pub line_buffered: bool,

    /// Stop after COUNT records (tcpdump -c), in every mode: COUNT lines or JSON objects,
    /// or the flows and ladders of the first COUNT records.
    #[arg(short = 'c', value_name = "COUNT", value_parser = parse_count)]
    pub count: Option<u64>,

    /// Timestamps in the local time zone (TZ, else /etc/localtime), as tcpdump prints
    /// them by default. Without it they are in UTC, so the output is the same on every
    /// host (what `TZ=UTC tcpdump` prints).
    #[arg(long, conflicts_with_all = ["flows", "handshakes", "json"])]
    pub local_time: bool,
}

/// `-c`'s COUNT: a positive number. tcpdump refuses 0 too.
fn parse_count(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) => Err("the count must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a count: {e}")),
    }
}

/// What the records are turned into.
enum Output {
    Lines(TcpdumpFormatter),
    Json(JsonFormatter),
    /// The flow table and ladders, printed at the end.
    Summary(FlowTable),
    /// The HTML report, written at the end.
    Html(ReportBuilder),
}

/// Bytes of lines collected before they are written out.
const PENDING: usize = 64 * 1024;

/// Runs `inspect`; the exit code is 0, or 2 for a capture that cannot be read.
pub fn run(args: InspectArgs) -> ExitCode {
    let name = args.file.display().to_string();
    let filter = match Filter::parse_words(&args.expression) {
        Ok(filter) => filter,
        Err(e) => {
            complain!("ustack: inspect: filter expression: {e}");
            return ExitCode::from(2);
        }
    };
    let from_stdin = args.file.as_os_str() == "-";
    // A reader watching a live capture or a terminal wants each line as it comes; one
    // reading a file into a file or pipe wants throughput.
    let line_buffered = args.line_buffered || from_stdin || io::stdout().is_terminal();
    let source: Box<dyn Read> = if from_stdin {
        Box::new(io::stdin().lock())
    } else {
        match File::open(&args.file) {
            Ok(file) => Box::new(file),
            Err(e) => return bad_input(&name, e),
        }
    };
    let mut reader = match CaptureReader::new(source) {
        Ok(reader) => reader,
        Err(e) => return bad_input(&name, e),
    };

    let mut output = if args.html.is_some() {
        Output::Html(ReportBuilder::new())
    } else if args.flows || args.handshakes {
        let table = FlowTable::new();
        Output::Summary(if args.handshakes { table.with_ladders(DEFAULT_HEAD, DEFAULT_TAIL) } else { table })
    } else if args.json {
        Output::Json(JsonFormatter::new())
    } else {
        let time = if args.local_time { TimeFormat::LocalTimeOfDay } else { TimeFormat::TimeOfDay };
        Output::Lines(TcpdumpFormatter::new().absolute(args.absolute).time_format(time))
    };

    // Lines collect in `pending`, written out a large piece at a time (or each line, when
    // line-buffered): one buffer for every line, no allocation and no `fmt` per packet.
    // Stdout's own line buffering passes pieces ending in a newline straight to write(2).
    let mut out = io::stdout().lock();
    let mut pending = String::with_capacity(PENDING + 4096);
    let mut left = args.count;
    let failure = loop {
        if left == Some(0) {
            break None;
        }
        let record = match reader.next_record() {
            Ok(Some(record)) => record,
            Ok(None) => break None,
            Err(e) => break Some(e),
        };
        let summary = record.decode();
        if !filter.matches(&summary) {
            continue;
        }
        if let Some(n) = &mut left {
            *n -= 1;
        }
        match &mut output {
            Output::Lines(formatter) => formatter.format_into(record.ts, &summary, &mut pending),
            Output::Json(formatter) => {
                let json = formatter.format(record.ts, &summary);
                // The packet module leaves `proto` null for what it could not decode at
                // all; say so in the field a script filters on.
                if summary.net == Net::None {
                    pending.push_str(&json.replacen("\"proto\":null", "\"proto\":\"unknown\"", 1));
                } else {
                    pending.push_str(&json);
                }
            }
            Output::Summary(table) => {
                table.observe(record.ts, &summary);
                continue;
            }
            Output::Html(builder) => {
                builder.observe(record.ts, &summary, Mark::Seen);
                continue;
            }
        }
        pending.push('\n');
        if line_buffered || pending.len() >= PENDING {
            if out.write_all(pending.as_bytes()).is_err() {
                // Standard output is gone (`| head`): nothing more is wanted.
                return ExitCode::SUCCESS;
            }
            pending.clear();
        }
    };

    // Everything read goes out before the complaint about what could not be.
    let _ = out.write_all(pending.as_bytes());
    if let Output::Summary(table) = &output {
        let mut buffered = BufWriter::new(&mut out);
        let _ = write_summary(&mut buffered, table, &args);
        let _ = buffered.flush();
    }
    let _ = out.flush();
    drop(out);
    if let (Output::Html(builder), Some(path)) = (output, &args.html) {
        // What could be read is drawn, even when the capture was damaged after it.
        let title = args.file.file_name().map_or(name.clone(), |n| n.to_string_lossy().into_owned());
        let report = builder.finish();
        if let Err(e) = std::fs::write(path, html::page(&report, &title)) {
            complain!("ustack: inspect --html {}: {e}", path.display());
            return ExitCode::from(2);
        }
        println!("{}: {}", path.display(), report.drawn());
    }
    match failure {
        None => ExitCode::SUCCESS,
        Some(e) => bad_input(&name, e),
    }
}

fn write_summary(out: &mut impl Write, table: &FlowTable, args: &InspectArgs) -> io::Result<()> {
    if args.flows {
        if table.flows().is_empty() {
            writeln!(out, "no IP flows")?;
        } else {
            write!(out, "{}", table.render())?;
        }
    }
    if args.handshakes {
        let mut drawn = 0;
        for (i, flow) in table.flows().iter().enumerate().filter(|(_, f)| f.tcp.is_some()) {
            if drawn > 0 || args.flows {
                writeln!(out)?;
            }
            // Numbered as in the flow table, so `--flows --handshakes` agree.
            write!(out, "{}", draw(flow, i + 1, args.absolute))?;
            drawn += 1;
        }
        if drawn == 0 {
            writeln!(out, "no TCP connections")?;
        }
    }
    Ok(())
}

/// The one-line complaint about the input, and exit code 2.
fn bad_input(name: &str, e: impl std::fmt::Display) -> ExitCode {
    complain!("ustack: inspect {name}: {e}");
    ExitCode::from(2)
}
