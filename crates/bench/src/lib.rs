//! `ustack bench`: what ustack costs, measured side by side with the kernel and with raw
//! smoltcp in the same run, so every figure has its baselines next to it.
//!
//! Everything happens in network namespaces made here (anonymous: they vanish with the
//! process). ustack runs in this process on a TUN whose kernel side is the client; the
//! kernel baseline is two namespaces joined by a veth pair; the raw-smoltcp baseline is
//! smoltcp's own interface and poll loop on the same kind of TUN ([`raw`]). Clients are
//! always kernel sockets (std::net) on threads inside the client namespace. Each figure is
//! the median of repeats after warm-ups; BENCHMARKS.md describes the method.
//!
//! The scenarios ([`Scenario`]): bulk TCP both ways at two MTUs ([`bulk`]), sequential
//! connection setup and a burst of connects into a small backlog ([`connect`]), UDP
//! request/response ([`udp`]), thousands of open connections ([`scale`]), and decoding a
//! large capture ([`decode`]).

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub mod bulk;
pub mod connect;
pub mod decode;
pub mod lab;
pub mod loss;
pub mod os;
pub mod peer;
pub mod raw;
pub mod scale;
pub mod stats;
pub mod table;
pub mod targets;
pub mod udp;

use bulk::Direction;
use lab::{VethLab, ustack_lab};
use peer::Server;
use scale::Scale;
use stats::Figure;
pub use table::{Cell, Row, Table, Unit};

use ustack::StackConfig;

/// What can be measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Bulk TCP both ways at each MTU: ustack, the kernel over veth, raw smoltcp (in place,
    /// and copying through an application buffer).
    Bulk,
    /// Sequential connect + close: rate and connect() latency.
    Connect,
    /// Many clients connecting at once to a listener with a small backlog.
    Burst,
    /// UDP request/response round trips.
    Udp,
    /// Thousands of established connections: memory each, and echo latency meanwhile.
    Scale,
    /// Decoding a large capture: `ustack inspect` against tcpdump and tshark.
    Decode,
    /// An echo through random loss: ustack against two kernel stacks joined by a relay,
    /// both through ustack's fault injector ([`loss`]).
    Loss,
}

impl Scenario {
    /// Every scenario, in the order they run.
    pub const ALL: [Scenario; 7] = [
        Scenario::Bulk,
        Scenario::Connect,
        Scenario::Burst,
        Scenario::Udp,
        Scenario::Scale,
        Scenario::Decode,
        Scenario::Loss,
    ];
}

/// How long and how often each scenario measures.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// The name of this set of sizes, for the report ("full", "quick", "smoke").
    pub name: &'static str,
    /// Runs whose results are thrown away before the measured ones.
    pub warmups: usize,
    /// Measured runs; each figure is their median.
    pub repeats: usize,
    /// How long each bulk transfer sends.
    pub bulk_time: Duration,
    /// How long each run of sequential connects lasts, and the most connections it opens:
    /// fewer than the ~27,500 ephemeral ports of one parity that Linux's connect() looks
    /// through first (`__inet_hash_connect`). Beyond them, each connect() of the kernel
    /// client first scans that whole half, every port taken: the kernel's own rate fell
    /// from 72k/s to 27.7k/s in runs allowed 50,000.
    pub connect_time: Duration,
    pub connect_max: usize,
    /// Clients in the burst, the listener's backlog, how long to wait for them all, and
    /// how many bursts (no warm-up: the first burst is the one that matters most).
    pub burst_clients: usize,
    pub burst_backlog: u32,
    pub burst_limit: Duration,
    pub burst_repeats: usize,
    /// How long each run of UDP round trips lasts, and the most round trips it makes.
    pub udp_time: Duration,
    pub udp_max: usize,
    /// Connection counts for the scale scenario (each measured once), and echoes per count.
    pub scale: Vec<usize>,
    pub scale_pings: usize,
    /// Packets in the capture to decode, and runs of each decoder (after one warm-up of
    /// `ustack inspect`, which also brings the file into the page cache).
    pub decode_packets: usize,
    pub decode_repeats: usize,
    /// Bytes echoed through loss (each way), the loss rates (percent, each way), and runs
    /// of each (after no warm-up: each run sets up its own namespaces).
    pub loss_bytes: usize,
    pub loss_rates: Vec<f64>,
    pub loss_repeats: usize,
}

impl Sizes {
    /// The full run: a few minutes.
    pub fn full() -> Sizes {
        Sizes {
            name: "full",
            warmups: 1,
            repeats: 5,
            bulk_time: Duration::from_secs(1),
            connect_time: Duration::from_secs(1),
            connect_max: 20_000,
            burst_clients: 1000,
            burst_backlog: 128,
            burst_limit: Duration::from_secs(10),
            burst_repeats: 3,
            udp_time: Duration::from_secs(1),
            udp_max: 1_000_000,
            scale: vec![1000, 10_000],
            scale_pings: 2000,
            decode_packets: 1_000_000,
            decode_repeats: 3,
            loss_bytes: 16 << 20,
            loss_rates: vec![1.0, 5.0],
            loss_repeats: 5,
        }
    }

    /// `--quick`: the same scenarios, shorter and fewer repeats; under a minute.
    pub fn quick() -> Sizes {
        Sizes {
            name: "quick",
            warmups: 1,
            repeats: 3,
            bulk_time: Duration::from_millis(250),
            connect_time: Duration::from_millis(300),
            connect_max: 20_000,
            burst_clients: 1000,
            burst_backlog: 128,
            burst_limit: Duration::from_secs(10),
            burst_repeats: 1,
            udp_time: Duration::from_millis(300),
            udp_max: 1_000_000,
            scale: vec![1000, 10_000],
            scale_pings: 500,
            decode_packets: 100_000,
            decode_repeats: 1,
            loss_bytes: 4 << 20,
            loss_rates: vec![1.0, 5.0],
            loss_repeats: 3,
        }
    }

    /// `--smoke`: tiny sizes that run every scenario in seconds, so the test suite can
    /// check the harness works. Its figures mean nothing.
    pub fn smoke() -> Sizes {
        Sizes {
            name: "smoke",
            warmups: 1,
            repeats: 1,
            bulk_time: Duration::from_millis(30),
            connect_time: Duration::from_millis(100),
            connect_max: 10,
            burst_clients: 40,
            burst_backlog: 128,
            burst_limit: Duration::from_secs(5),
            burst_repeats: 1,
            udp_time: Duration::from_secs(1),
            udp_max: 100,
            scale: vec![10, 20],
            scale_pings: 20,
            decode_packets: 1000,
            decode_repeats: 1,
            loss_bytes: 64 << 10,
            loss_rates: vec![5.0],
            loss_repeats: 1,
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub sizes: Sizes,
    /// The scenarios to run, in [`Scenario::ALL`] order.
    pub scenarios: Vec<Scenario>,
    /// TUN and veth MTUs for the bulk scenario.
    pub mtus: Vec<usize>,
    /// Bytes of receive and of send buffer per TCP socket, for ustack and raw smoltcp in
    /// the bulk scenario. The other scenarios use ustack's defaults, as `serve` does.
    pub tcp_buffer: usize,
    /// The ustack binary, for `ustack inspect` in the decode scenario.
    pub ustack_exe: PathBuf,
    /// Shards of the ustack stacks measured ([`ustack::Stack::sharded`]); 1 as `ustack
    /// run` and the library's `Stack::new`, so that figures stay comparable across runs.
    pub shards: usize,
    /// Whether ustack's TUN asks for offloads (`--no-offload` turns them off, to compare).
    pub offload: bool,
}

/// The MTUs the bulk scenario uses unless told otherwise: Ethernet's, and nearly the
/// largest a TUN takes (where per-packet costs matter least).
pub const DEFAULT_MTUS: [usize; 2] = [1500, 65000];

/// The socket buffers of the bulk scenario unless told otherwise: large enough that the
/// window does not hold the sender back, so that the rates say what each stack costs. At
/// 1 MiB a kernel sender into ustack or raw smoltcp was held back by the window nearly all
/// its time, at 8 MiB a few per cent (BENCHMARKS.md §32; the bench prints the share).
pub const DEFAULT_TCP_BUFFER: usize = 8 << 20;

/// The listen backlog for the scenarios that are not about the backlog: the largest, so
/// that nothing is dropped.
const BIG_BACKLOG: u32 = ustack::engine::SOMAXCONN;

/// Where the bench tells what it is doing, one line at a time.
pub type Progress<'a> = &'a mut dyn FnMut(&str);

/// Runs the plan and gives the table. A measurement that fails is a failed cell, not an
/// error: the rest still runs.
pub fn run(plan: &Plan, progress: Progress<'_>) -> Table {
    let mut table = Table::default();
    table.notes.push(format!("Machine: {}.", os::machine()));
    if plan.shards > 1 {
        table.notes.push(format!("ustack runs {} shards (a TUN queue and a thread each).", plan.shards));
    }
    let s = &plan.sizes;
    table.notes.push(format!(
        "Sizes \"{}\": each figure is the median of {} runs after {} warm-up run(s) unless said otherwise; \
         ±N% is half the range of the runs, relative to the median; a spread over ±50% is shown as the range (min–max) instead.",
        s.name, s.repeats, s.warmups
    ));
    // The scale scenario's kernel baseline holds both ends of every connection as file
    // descriptors in this process.
    let biggest = s.scale.iter().copied().max().unwrap_or(0);
    let open_files = os::raise_open_files((2 * biggest + FD_HEADROOM) as u64);
    for scenario in &plan.scenarios {
        let rows = match scenario {
            Scenario::Bulk => bulk_rows(plan, progress, &mut table.notes),
            Scenario::Connect => connect_rows(plan, progress),
            Scenario::Burst => burst_rows(plan, progress, &mut table.notes),
            Scenario::Udp => udp_rows(plan, progress, &mut table.notes),
            Scenario::Scale => scale_rows(plan, progress, &mut table.notes, &open_files),
            Scenario::Decode => decode_rows(plan, progress, &mut table.notes),
            Scenario::Loss => loss_rows(plan, progress, &mut table.notes),
        };
        table.rows.extend(rows);
    }
    table
}

/// File descriptors a scale run needs besides its connections' sockets.
const FD_HEADROOM: usize = 256;

/// A measurement that was made, failed, or was not attempted because it cannot be made here.
enum Outcome<T> {
    Done(T),
    Skipped(String),
    Failed(io::Error),
}

impl<T> From<io::Result<T>> for Outcome<T> {
    fn from(result: io::Result<T>) -> Self {
        result.map_or_else(Outcome::Failed, Outcome::Done)
    }
}

fn failed(e: &io::Error) -> Cell {
    Cell::Failed(e.to_string())
}

/// Runs `measure` `warmups` times, discarding the results, then `repeats` times; the
/// median of each of its `N` figures. The first error fails all `N`.
fn repeat<const N: usize>(
    warmups: usize,
    repeats: usize,
    mut measure: impl FnMut() -> io::Result<[f64; N]>,
) -> [Cell; N] {
    let mut samples: [Vec<f64>; N] = std::array::from_fn(|_| Vec::with_capacity(repeats));
    for i in 0..warmups + repeats {
        match measure() {
            Ok(values) if i >= warmups => {
                for (sample, value) in samples.iter_mut().zip(values) {
                    sample.push(value);
                }
            }
            Ok(_) => {}
            Err(e) => return std::array::from_fn(|_| failed(&e)),
        }
    }
    samples.map(|values| match Figure::of(&values) {
        Some(figure) => Cell::Measured(figure),
        None => Cell::Failed(NOT_FINITE.into()),
    })
}

/// Why [`repeat`] fails a figure none of whose runs measured a number.
const NOT_FINITE: &str = "no finite value measured";

/// `N` cells from a setup that may fail: the setup's error in every cell if it does.
fn or_failed<const N: usize>(result: io::Result<[Cell; N]>) -> [Cell; N] {
    result.unwrap_or_else(|e| std::array::from_fn(|_| failed(&e)))
}

/// [`or_failed`] for a setup measuring `M` figures in each of `N` runs.
fn or_failed_each<const N: usize, const M: usize>(result: io::Result<[[Cell; M]; N]>) -> [[Cell; M]; N] {
    result.unwrap_or_else(|e| std::array::from_fn(|_| std::array::from_fn(|_| failed(&e))))
}

fn row(scenario: &str, metric: &str, unit: Unit, ustack: Cell, baselines: Vec<(&str, Cell)>) -> Row {
    Row {
        scenario: scenario.to_string(),
        metric: metric.to_string(),
        unit,
        ustack,
        baselines: baselines.into_iter().map(|(name, cell)| (name.to_string(), cell)).collect(),
    }
}

/// The kernel baseline's name in the table.
const KERNEL: &str = "kernel ↔ kernel, veth";

/// Raw smoltcp moving data in place, in the table.
const RAW: &str = "raw smoltcp, same TUN";

/// Raw smoltcp with the copy a socket API makes, in the table.
const RAW_COPYING: &str = "raw smoltcp + app copy";

fn bulk_rows(plan: &Plan, progress: Progress<'_>, notes: &mut Vec<String>) -> Vec<Row> {
    const PORT: u16 = 5001;
    let s = &plan.sizes;
    let dirs = [Direction::ToServer, Direction::FromServer];
    let mut rows = Vec::new();
    for &mtu in &plan.mtus {
        progress(&format!("bulk TCP, MTU {mtu}: ustack"));
        let ustack = or_failed_each((|| {
            let lab = ustack_lab(Some(mtu), plan.tcp_buffer, plan.shards, plan.offload)?;
            let server = Server::Ustack(&lab.stack);
            let listener = server.listen(PORT, BIG_BACKLOG)?;
            Ok(dirs.map(|dir| {
                repeat(s.warmups, s.repeats, || {
                    bulk::transfer(&*listener, &lab.ns, server.addr(PORT), dir, s.bulk_time).map(bulk_figures)
                })
            }))
        })());
        progress(&format!("bulk TCP, MTU {mtu}: kernel over veth"));
        let kernel = or_failed_each((|| {
            let lab = VethLab::new(Some(mtu))?;
            let server = Server::Kernel(&lab.server);
            let listener = server.listen(PORT, BIG_BACKLOG)?;
            Ok(dirs.map(|dir| {
                repeat(s.warmups, s.repeats, || {
                    bulk::transfer(&*listener, &lab.client, server.addr(PORT), dir, s.bulk_time).map(bulk_figures)
                })
            }))
        })());
        let raw_runs = |copying: bool| {
            or_failed_each((|| {
                let (ns, mut engine) = lab::raw_lab(Some(mtu), plan.tcp_buffer)?;
                if copying {
                    engine = engine.copying();
                }
                Ok(dirs.map(|dir| {
                    repeat(s.warmups, s.repeats, || engine.transfer(&ns, PORT, dir, s.bulk_time).map(bulk_figures))
                }))
            })())
        };
        progress(&format!("bulk TCP, MTU {mtu}: raw smoltcp"));
        let raw = raw_runs(false);
        progress(&format!("bulk TCP, MTU {mtu}: raw smoltcp, copying"));
        let raw_copying = raw_runs(true);
        for (i, dir) in dirs.into_iter().enumerate() {
            let scenario = match dir {
                Direction::ToServer => format!("Bulk TCP kernel → ustack (ustack receives), MTU {mtu}"),
                Direction::FromServer => format!("Bulk TCP ustack → kernel (ustack sends), MTU {mtu}"),
            };
            // Figure `f` of this direction's runs, as a row.
            let figure_row = |metric: &str, unit: Unit, f: usize| {
                let cell =
                    |cells: &[[Cell; 2]; 2]| if f == 1 { window_cell(&cells[i][f]) } else { cells[i][f].clone() };
                let baselines = vec![(KERNEL, cell(&kernel)), (RAW, cell(&raw)), (RAW_COPYING, cell(&raw_copying))];
                row(&scenario, metric, unit, cell(&ustack), baselines)
            };
            rows.push(figure_row("Gbit/s", Unit::Gbps, 0));
            // Only a kernel sender says what held it back.
            if dir == Direction::ToServer {
                rows.push(figure_row("sender held back by the receive window", Unit::Percent, 1));
            }
        }
    }
    notes.push(format!(
        "Bulk TCP: one connection, {:?} of sending per run, measured by the receiver from its first read to end of \
         stream. ustack and raw smoltcp use {} socket buffers each way{}; the kernel its defaults (autotuning). The \
         kernel client connects in every case; \"ustack sends\" means the ustack side writes. Raw smoltcp reads \
         and writes its socket buffer in place; \"+ app copy\" copies through a {} application buffer, as read() \
         and write() on any socket (ustack's or the kernel's) do. Every kernel socket sends with CUBIC (Linux's \
         default and ustack's, set with TCP_CONGESTION; this machine's default is {}). \"Sender held back by the \
         receive window\": the kernel sender's tcpi_rwnd_limited over its tcpi_busy_time; near 100%, the rate is \
         the receiver's window over the time it takes to turn it round, not what either stack could do with more \
         window (the kernel's receiver grows its window as the application keeps up; raw smoltcp's stays at its \
         buffer).",
        s.bulk_time,
        table::format_value(plan.tcp_buffer as f64, Unit::Bytes),
        ustack_buffers_note(plan.tcp_buffer),
        table::format_value(bulk::CHUNK as f64, Unit::Bytes),
        os::default_congestion()
    ));
    rows
}

/// How ustack's bulk buffers of `tcp_buffer` bytes behave: fixed, as raw smoltcp's, when
/// they are at least the most its autotuning grows to (BENCHMARKS.md §35); otherwise they
/// only start there.
fn ustack_buffers_note(tcp_buffer: usize) -> String {
    let defaults = StackConfig::default();
    if tcp_buffer >= defaults.tcp_receive_max.max(defaults.tcp_send_max) {
        ", fixed (ustack autotunes from a smaller start only, BENCHMARKS.md §35)".into()
    } else {
        format!(
            ", fixed for raw smoltcp; ustack's start there and autotune up to {} to receive and {} to send \
             (BENCHMARKS.md §35)",
            table::format_value(defaults.tcp_receive_max as f64, Unit::Bytes),
            table::format_value(defaults.tcp_send_max as f64, Unit::Bytes)
        )
    }
}

/// A bulk transfer's figures for [`repeat`]: Gbit/s, and the percentage of its busy time a
/// kernel sender spent held back by the receive window (not a number where it did not
/// send, or its kernel does not say).
fn bulk_figures(measured: bulk::Measured) -> [f64; 2] {
    [measured.gbps, measured.window_limited.map_or(f64::NAN, |share| share * 100.0)]
}

/// A share cell of [`bulk_figures`], its missing value said as such rather than as a
/// failure (a missing rate stays a failure).
fn window_cell(cell: &Cell) -> Cell {
    match cell {
        Cell::Failed(why) if why == NOT_FINITE => Cell::Skipped("the kernel measured no busy time".into()),
        other => other.clone(),
    }
}

fn connect_rows(plan: &Plan, progress: Progress<'_>) -> Vec<Row> {
    const PORT: u16 = 6001;
    let s = &plan.sizes;
    // Each run gets namespaces of its own: a run leaves up to `connect_max` of the
    // client's connections in TIME-WAIT, which would take ports from the next.
    let measure = |run: &mut dyn FnMut() -> io::Result<connect::Rate>| {
        repeat(s.warmups, s.repeats, || {
            let r = run()?;
            Ok([r.per_sec, r.p50_us, r.p99_us])
        })
    };
    let listen_and_measure = |server: Server<'_>, client_ns: &ustack::sys::NetNs| {
        let listener = server.listen(PORT, BIG_BACKLOG)?;
        connect::rate(&*listener, client_ns, server.addr(PORT), s.connect_time, s.connect_max)
    };
    progress("connect + close: ustack");
    let ustack = measure(&mut || {
        let lab = ustack_lab(None, StackConfig::default().tcp_buffer, plan.shards, plan.offload)?;
        listen_and_measure(Server::Ustack(&lab.stack), &lab.ns)
    });
    progress("connect + close: kernel over veth");
    let kernel = measure(&mut || {
        let lab = VethLab::new(None)?;
        listen_and_measure(Server::Kernel(&lab.server), &lab.client)
    });
    progress("connect + close: raw smoltcp");
    let raw = measure(&mut || {
        let (ns, mut engine) = lab::raw_lab(None, StackConfig::default().tcp_buffer)?;
        engine.connects(&ns, PORT, s.connect_time, s.connect_max)
    });
    let scenario = "Sequential connect + close, kernel client → listener";
    let [u_rate, u_p50, u_p99] = ustack;
    let [k_rate, k_p50, k_p99] = kernel;
    let [r_rate, r_p50, r_p99] = raw;
    vec![
        row(scenario, "connections/s", Unit::PerSec, u_rate, vec![(KERNEL, k_rate), (RAW, r_rate)]),
        row(scenario, "connect() p50, µs", Unit::Micros, u_p50, vec![(KERNEL, k_p50), (RAW, r_p50)]),
        row(scenario, "connect() p99, µs", Unit::Micros, u_p99, vec![(KERNEL, k_p99), (RAW, r_p99)]),
    ]
}

fn burst_rows(plan: &Plan, progress: Progress<'_>, notes: &mut Vec<String>) -> Vec<Row> {
    let s = &plan.sizes;
    let (clients, backlog) = (s.burst_clients, s.burst_backlog);
    // Counts that did not move are medians of identical values; the time is only known
    // for bursts in which every client got in.
    let cells = |runs: &[(connect::Burst, u64)]| -> [Cell; 5] {
        let median = |f: &dyn Fn(&(connect::Burst, u64)) -> f64| {
            Figure::of(&runs.iter().map(f).collect::<Vec<_>>())
                .map_or_else(|| Cell::Failed("no run".into()), Cell::Measured)
        };
        let times: Vec<f64> = runs.iter().filter_map(|(b, _)| b.all_accepted.map(|t| t.as_secs_f64() * 1e3)).collect();
        let time = if times.len() == runs.len() {
            Figure::of(&times).map_or_else(|| Cell::Failed("no run".into()), Cell::Measured)
        } else {
            Cell::Text(format!("not all within {} s", s.burst_limit.as_secs()))
        };
        [
            median(&|(b, _)| b.accepted as f64),
            median(&|(b, _)| b.connected as f64),
            median(&|(b, _)| b.reset as f64),
            median(&|(_, d)| *d as f64),
            time,
        ]
    };
    progress(&format!("burst of {clients} connects into backlog {backlog}: ustack"));
    let mut ustack_cookies = 0;
    let ustack = or_failed((|| {
        let lab = ustack_lab(None, StackConfig::default().tcp_buffer, plan.shards, plan.offload)?;
        let server = Server::Ustack(&lab.stack);
        // (SYNs and handshake ACKs dropped, SYN cookies sent) so far: at the listener, and
        // before it, by the kernel's side of the TUN when its queue was full.
        let counters = || -> io::Result<(u64, u64)> {
            let c = lab.stack.demux_table().counters;
            let tun = os::tx_dropped(&lab.ns, lab::TUN_NAME)?;
            Ok((c.overflow_dropped + c.ack_dropped + tun, c.cookies_sent))
        };
        let mut runs = Vec::new();
        for i in 0..s.warmups + s.burst_repeats {
            let port = 7000 + i as u16;
            let listener = server.listen(port, backlog)?;
            let (drops, sent) = counters()?;
            let burst = connect::burst(&*listener, &lab.ns, server.addr(port), clients, s.burst_limit)?;
            let (drops_after, sent_after) = counters()?;
            if i >= s.warmups {
                runs.push((burst, drops_after - drops));
                ustack_cookies += sent_after - sent;
            }
        }
        Ok(cells(&runs))
    })());
    progress(&format!("burst of {clients} connects into backlog {backlog}: kernel over veth"));
    let mut cookies = 0;
    let kernel = or_failed((|| {
        let lab = VethLab::new(None)?;
        let server = Server::Kernel(&lab.server);
        let counter = |name| os::tcp_ext_counter(&lab.server, name);
        let mut runs = Vec::new();
        // The warm-up burst also resolves the veth's neighbour entry: a first burst meets
        // none, and ARP's queue for an unresolved neighbour (101 packets) drops the rest
        // of its SYNs (2 of 4 first bursts took 1.45 s, the others 9 ms; BENCHMARKS.md §36).
        for i in 0..s.warmups + s.burst_repeats {
            let port = 7000 + i as u16;
            let listener = server.listen(port, backlog)?;
            let (drops, sent) = (counter("ListenDrops")?, counter("SyncookiesSent")?);
            let burst = connect::burst(&*listener, &lab.client, server.addr(port), clients, s.burst_limit)?;
            if i >= s.warmups {
                runs.push((burst, counter("ListenDrops")? - drops));
                cookies += counter("SyncookiesSent")? - sent;
            }
        }
        Ok(cells(&runs))
    })());
    notes.push(format!(
        "Burst: {clients} non-blocking connect()s issued at once from one thread, each client sending a one-byte \
         request once connected, the server accepting as fast as it can and keeping every connection; the clients start once the \
         acceptor runs, and each burst once the last one's connections have closed; a dropped SYN \
         is retransmitted by the client after 1 s, 3 s, 7 s, a request whose connection the server did not keep \
         after its RTO. \
         \"Dropped\" counts SYNs and handshake-completing ACKs dropped at the listener (ustack's demux counters; the \
         kernel's TcpExt ListenDrops), and for ustack the packets its TUN's queue dropped before the stack read them. Both answer SYNs beyond a full SYN queue with SYN cookies (Linux's default \
         tcp_syncookies=1; ustack's StackConfig::syn_cookies) rather than dropping them: over {} burst(s) ustack \
         sent {ustack_cookies}, the kernel {cookies}.",
        s.burst_repeats
    ));
    let scenario = format!("Burst: {clients} clients connect at once, backlog {backlog}");
    let [u_in, u_conn, u_rst, u_drop, u_time] = ustack;
    let [k_in, k_conn, k_rst, k_drop, k_time] = kernel;
    vec![
        row(&scenario, &format!("accepted (of {clients})"), Unit::Count, u_in, vec![(KERNEL, k_in)]),
        row(&scenario, "connect() succeeded, client's view", Unit::Count, u_conn, vec![(KERNEL, k_conn)]),
        row(&scenario, "clients that saw a RST", Unit::Count, u_rst, vec![(KERNEL, k_rst)]),
        row(&scenario, "SYNs + handshake ACKs dropped", Unit::Count, u_drop, vec![(KERNEL, k_drop)]),
        row(&scenario, "time until all accepted, ms", Unit::Millis, u_time, vec![(KERNEL, k_time)]),
    ]
}

fn udp_rows(plan: &Plan, progress: Progress<'_>, notes: &mut Vec<String>) -> Vec<Row> {
    const PORT: u16 = 7;
    let s = &plan.sizes;
    let mut lost = 0;
    let mut measure = |server: Server<'_>, client_ns: &ustack::sys::NetNs| -> io::Result<[Cell; 3]> {
        let socket = server.udp(PORT)?;
        Ok(repeat(s.warmups, s.repeats, || {
            let r = udp::round_trips(&*socket, client_ns, server.addr(PORT), s.udp_time, s.udp_max)?;
            lost += r.lost;
            Ok([r.per_sec, r.p50_us, r.p99_us])
        }))
    };
    progress("UDP request/response: ustack");
    let ustack =
        or_failed(ustack_lab(None, StackConfig::default().tcp_buffer, plan.shards, plan.offload).and_then(|lab| {
            let cells = measure(Server::Ustack(&lab.stack), &lab.ns);
            drop(lab);
            cells
        }));
    progress("UDP request/response: kernel over veth");
    let kernel = or_failed(VethLab::new(None).and_then(|lab| measure(Server::Kernel(&lab.server), &lab.client)));
    notes.push(format!(
        "UDP: one {}-byte request at a time, the server echoing it; a request unanswered within 1 s counts as lost \
         ({lost} lost in all runs).",
        udp::PAYLOAD
    ));
    let scenario = format!("UDP request/response, {} B, kernel client → echo server", udp::PAYLOAD);
    let [u_rate, u_p50, u_p99] = ustack;
    let [k_rate, k_p50, k_p99] = kernel;
    vec![
        row(&scenario, "round trips/s", Unit::PerSec, u_rate, vec![(KERNEL, k_rate)]),
        row(&scenario, "RTT p50, µs", Unit::Micros, u_p50, vec![(KERNEL, k_p50)]),
        row(&scenario, "RTT p99, µs", Unit::Micros, u_p99, vec![(KERNEL, k_p99)]),
    ]
}

fn scale_rows(plan: &Plan, progress: Progress<'_>, notes: &mut Vec<String>, open_files: &io::Result<u64>) -> Vec<Row> {
    const PORT: u16 = 8000;
    let s = &plan.sizes;
    let mut rows = Vec::new();
    let mut p50s = Vec::new();
    for &n in &s.scale {
        // Kernel sockets are file descriptors of this process: ustack's run holds the n
        // clients, the kernel baseline both ends. A limit this process cannot raise (no
        // CAP_SYS_RESOURCE) makes a count infeasible here, which is not a failure of it.
        let room = |fds: usize| -> Option<String> {
            match open_files {
                Ok(limit) if *limit >= fds as u64 => None,
                Ok(limit) => {
                    Some(format!("needs {fds} open files, the limit is {limit} (raising it needs CAP_SYS_RESOURCE)"))
                }
                Err(e) => Some(format!("raising the open-files limit: {e}")),
            }
        };
        let run =
            |server: Server<'_>, client_ns: &ustack::sys::NetNs, memory: &scale::Memory| -> io::Result<scale::Scale> {
                let listener = server.listen(PORT, BIG_BACKLOG)?;
                let deadline = Instant::now() + scale::limit_for(n);
                scale::scale(&*listener, client_ns, server.addr(PORT), n, s.scale_pings, memory, deadline)
            };
        progress(&format!("{n} connections: ustack"));
        let ustack = match room(n + FD_HEADROOM) {
            Some(why) => Outcome::Skipped(why),
            None => Outcome::from(
                ustack_lab(None, StackConfig::default().tcp_buffer, plan.shards, plan.offload).and_then(|lab| {
                    let memory = scale::Memory { read: os::rss_bytes, endpoints: 1 };
                    run(Server::Ustack(&lab.stack), &lab.ns, &memory)
                }),
            ),
        };
        progress(&format!("{n} connections: kernel over veth"));
        let kernel = match room(2 * n + FD_HEADROOM) {
            Some(why) => Outcome::Skipped(why),
            None => Outcome::from(VethLab::new(None).and_then(|lab| {
                let memory = scale::Memory { read: os::slab_bytes, endpoints: 2 };
                run(Server::Kernel(&lab.server), &lab.client, &memory)
            })),
        };
        let cell = |r: &Outcome<scale::Scale>, f: fn(&scale::Scale) -> f64| match r {
            Outcome::Done(m) => Cell::once(f(m)),
            Outcome::Skipped(why) => Cell::Skipped(why.clone()),
            Outcome::Failed(e) => failed(e),
        };
        let p50 = |r: &Outcome<scale::Scale>| match r {
            Outcome::Done(m) => format!("{:.0} µs", m.echo_p50_us),
            _ => "—".into(),
        };
        p50s.push(format!("{n}: ustack {}, kernel {}", p50(&ustack), p50(&kernel)));

        let scenario = format!("{n} established connections, kernel clients → listener");
        rows.push(row(
            &scenario,
            "RSS growth per connection",
            Unit::Bytes,
            cell(&ustack, |m| m.memory_per_endpoint),
            vec![("kernel slab per endpoint, veth", cell(&kernel, |m| m.memory_per_endpoint))],
        ));
        let heap = match &ustack {
            Outcome::Done(Scale { heap_per_connection: Some(heap), .. }) => Cell::once(*heap),
            Outcome::Done(_) => Cell::Skipped("no mallinfo2 here".into()),
            other => cell(other, |m| m.memory_per_endpoint),
        };
        rows.push(row(
            &scenario,
            "heap allocated per connection",
            Unit::Bytes,
            heap,
            vec![("kernel slab per endpoint, veth", cell(&kernel, |m| m.memory_per_endpoint))],
        ));
        rows.push(row(
            &scenario,
            "echo RTT p99 meanwhile, µs",
            Unit::Micros,
            cell(&ustack, |m| m.echo_p99_us),
            vec![(KERNEL, cell(&kernel, |m| m.echo_p99_us))],
        ));
    }
    notes.push(format!(
        "Scale: each count measured once. ustack's memory is this process's RSS growth (VmRSS) per connection, with \
         its default socket buffers: {} each way to start, autotuned up to {} to receive and {} to send, and \
         reserved at that size. Those come from ustack's buffer pool (anonymous memory mapped \
         MAP_NORESERVE, given back with MADV_DONTNEED when a connection ends), so a buffer page is resident only once \
         data has passed through it: an idle connection holds address space for its buffers, not memory. smoltcp's \
         sockets are slots of a table mapped on its own (in the RSS, not the heap). The heap it allocated per \
         connection (glibc's mallinfo2) is ustack's connection record and tables. The kernel clients' sockets are \
         kernel memory and not in \
         the RSS. The kernel's is the growth of the machine-wide slab \
         (/proc/meminfo) per connection endpoint, so anything else running moves it. Echo: {} pings of 64 bytes, one \
         at a time, going round 16 of the connections while the rest stay idle; p50s: {}.",
        table::format_value(StackConfig::default().tcp_buffer as f64, Unit::Bytes),
        table::format_value(StackConfig::default().tcp_receive_max as f64, Unit::Bytes),
        table::format_value(StackConfig::default().tcp_send_max as f64, Unit::Bytes),
        s.scale_pings,
        p50s.join("; ")
    ));
    rows
}

fn decode_rows(plan: &Plan, progress: Progress<'_>, notes: &mut Vec<String>) -> Vec<Row> {
    let s = &plan.sizes;
    let n = s.decode_packets;
    progress(&format!("decode: writing a capture of {n} packets"));
    let capture = match decode::write_capture(n) {
        Ok(capture) => capture,
        Err(e) => {
            let cell = failed(&io::Error::new(e.kind(), format!("writing the capture: {e}")));
            return vec![row(
                &format!("Decode a capture of {n} TCP packets"),
                "packets/s",
                Unit::PerSec,
                cell.clone(),
                vec![("tcpdump -nn -r", cell.clone()), ("tshark -r", cell)],
            )];
        }
    };
    let mut per_cpu_second = Vec::new();
    let mut time = |decoder: &decode::Decoder, warmups: usize| -> Cell {
        progress(&format!("decode: {}", decoder.name()));
        let mut missing = false;
        let [cell, cpu] = repeat(warmups, s.decode_repeats, || match decode::time(decoder, capture.path()) {
            Ok(t) => Ok([n as f64 / t.wall.as_secs_f64(), n as f64 / t.cpu.as_secs_f64().max(1e-6)]),
            Err(decode::NotTimed::Missing) => {
                missing = true;
                Err(io::Error::new(io::ErrorKind::NotFound, "not installed"))
            }
            Err(decode::NotTimed::Failed(e)) => Err(e),
        });
        if let Cell::Measured(f) = cpu {
            per_cpu_second.push(format!("{} {}", decoder.name(), table::format_value(f.median, Unit::PerSec)));
        }
        if missing { Cell::Skipped("not installed".into()) } else { cell }
    };
    let ustack = time(&decode::Decoder::Ustack(plan.ustack_exe.clone()), 1);
    let tcpdump = time(&decode::Decoder::Tcpdump, 0);
    let tshark = time(&decode::Decoder::Tshark, 0);
    notes.push(format!(
        "Decode: a pcap (LINKTYPE_RAW) of {n} IPv4 TCP packets ({:.0} MB) in HTTP-like conversations of about 1000 \
         packets, written by the bench to the temporary directory and removed afterwards; each program's output goes \
         to /dev/null, and the time (wall clock) includes starting it. Medians of {} run(s); `ustack inspect` ran \
         once before, which also put the file in the page cache. Per second of CPU time (user + system), which other \
         load affects less: {}.",
        capture.size_bytes() as f64 / 1e6,
        s.decode_repeats,
        if per_cpu_second.is_empty() { "none measured".into() } else { per_cpu_second.join(", ") }
    ));
    vec![row(
        &format!("Decode a capture of {n} TCP packets"),
        "packets/s",
        Unit::PerSec,
        ustack,
        vec![("tcpdump -nn -r", tcpdump), ("tshark -r", tshark)],
    )]
}

/// The loss scenario's kernel baseline in the table.
const KERNEL_RELAY: &str = "kernel ↔ kernel, relay through the same injector";

fn loss_rows(plan: &Plan, progress: Progress<'_>, notes: &mut Vec<String>) -> Vec<Row> {
    let s = &plan.sizes;
    let mut rows = Vec::new();
    for &rate in &s.loss_rates {
        // The same seeds for both, run by run: the same choices of the injector.
        let measure = |run: fn(f64, usize, u64) -> io::Result<loss::LossRun>| {
            let mut seed = 0;
            repeat(0, s.loss_repeats, || {
                seed += 1;
                let r = run(rate, s.loss_bytes, seed)?;
                let secs = r.elapsed.as_secs_f64();
                let gbps = s.loss_bytes as f64 * 8.0 / secs / 1e9;
                Ok([secs * 1000.0, gbps, r.longest_stall.as_secs_f64() * 1000.0, r.resent_bytes as f64])
            })
        };
        progress(&format!("echo through {rate}% loss: ustack"));
        let [u_time, u_rate, u_stall, u_resent] = measure(loss::ustack);
        progress(&format!("echo through {rate}% loss: kernel, relayed"));
        let [k_time, k_rate, k_stall, k_resent] = measure(loss::kernel);
        let scenario =
            format!("TCP echo of {}, {rate}% loss each way", table::format_value(s.loss_bytes as f64, Unit::Bytes));
        rows.extend([
            row(&scenario, "time, ms", Unit::Millis, u_time, vec![(KERNEL_RELAY, k_time)]),
            row(&scenario, "goodput each way", Unit::Gbps, u_rate, vec![(KERNEL_RELAY, k_rate)]),
            row(&scenario, "longest stall, ms", Unit::Millis, u_stall, vec![(KERNEL_RELAY, k_stall)]),
            row(&scenario, "bytes resent", Unit::Bytes, u_resent, vec![(KERNEL_RELAY, k_resent)]),
        ]);
    }
    notes.push(
        "Loss: a kernel client echoes the bytes through the server, from connect to the echo's end of stream; \
         ustack's fault injector loses packets each way, under ustack's stack or (kernel baseline) in a relay \
         between two kernel stacks' TUNs. Both run with the same injector seeds, and with CUBIC on every socket \
         (ustack's default; the kernel's set with TCP_CONGESTION, whatever the machine's default). Bytes resent: the kernel's tcpi_bytes_retrans, ustack's own count."
            .to_string(),
    );
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bulk_note_says_ustack_s_buffers_are_fixed_only_at_or_above_its_autotuning_maxima() {
        assert!(ustack_buffers_note(DEFAULT_TCP_BUFFER).starts_with(", fixed ("));
        let small = ustack_buffers_note(64 << 10);
        assert!(small.contains("autotune up to 6.00 MiB to receive and 4.00 MiB to send"), "{small}");
    }
}
