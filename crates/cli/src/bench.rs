//! `ustack bench`: ustack's costs beside the kernel's and raw smoltcp's, measured in the
//! same run, as one table on standard output (progress on standard error). The
//! measuring lives in the `ustack-bench` crate; this is its command line.

use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use ustack_bench::{self as bench, DEFAULT_MTUS, DEFAULT_TCP_BUFFER, Plan, Scenario, Sizes};

use super::{Failure, context};

/// `ustack bench` options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Shorter runs and fewer repeats (1 warm-up + 3): the same table in under a minute.
    #[arg(long, conflicts_with = "smoke")]
    pub quick: bool,

    /// Tiny sizes that run every scenario in seconds, to check the harness works (the test
    /// suite runs it). Its figures mean nothing.
    #[arg(long)]
    pub smoke: bool,

    /// Run only this scenario (repeatable; default: all, in this order).
    #[arg(long = "scenario", value_name = "NAME", value_enum)]
    pub scenarios: Vec<ScenarioArg>,

    /// TUN and veth MTU for the bulk scenario (repeatable; default 1500 and 65000).
    #[arg(long = "mtu", value_name = "N", value_parser = clap::value_parser!(u16).range(576..))]
    pub mtus: Vec<u16>,

    /// Receive and send buffer per TCP socket for ustack and raw smoltcp in the bulk
    /// scenario (default 8 MiB); as `serve --tcp-buffer`.
    #[arg(long = "tcp-buffer", value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024))]
    pub tcp_buffer: Option<u64>,

    /// Stack shards for ustack (as `serve --shards`; default 1, the library's default, so
    /// that tables compare across runs and machines).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub shards: u16,
    /// Run ustack without TUN offloads (as `serve --no-offload`), e.g. to measure what
    /// they bring. Raw smoltcp never uses them.
    #[arg(long)]
    pub no_offload: bool,
}

/// The scenarios, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScenarioArg {
    /// Bulk TCP both ways at each MTU.
    Bulk,
    /// Sequential connect + close: rate and connect() latency.
    Connect,
    /// 1000 clients connecting at once into backlog 128.
    Burst,
    /// UDP request/response.
    Udp,
    /// 1k and 10k open connections: memory and echo latency.
    Scale,
    /// Decoding a 1M-packet capture: ustack inspect, tcpdump, tshark.
    Decode,
    /// 16 MiB echoed through 1% and 5% loss: ustack against the kernel, same injector.
    Loss,
}

impl From<ScenarioArg> for Scenario {
    fn from(arg: ScenarioArg) -> Scenario {
        match arg {
            ScenarioArg::Bulk => Scenario::Bulk,
            ScenarioArg::Connect => Scenario::Connect,
            ScenarioArg::Burst => Scenario::Burst,
            ScenarioArg::Udp => Scenario::Udp,
            ScenarioArg::Scale => Scenario::Scale,
            ScenarioArg::Decode => Scenario::Decode,
            ScenarioArg::Loss => Scenario::Loss,
        }
    }
}

/// Runs the bench. Needs root: without it (or without TUN support) it fails at once with
/// one line and exit 1, like any other runtime failure. A measurement that fails still
/// leaves the table printed, and then exits 1 too.
pub fn run(args: BenchArgs) -> Result<(), Failure> {
    if let Err(reason) = ustack::device::tun_support() {
        return Err(Failure::new(format!(
            "bench needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) to create network namespaces and TUN devices: {reason}"
        )));
    }
    let sizes = if args.smoke {
        Sizes::smoke()
    } else if args.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    let chosen: Vec<Scenario> = args.scenarios.iter().map(|&s| s.into()).collect();
    let scenarios = Scenario::ALL.into_iter().filter(|s| chosen.is_empty() || chosen.contains(s)).collect();
    let mtus = if args.mtus.is_empty() { DEFAULT_MTUS.to_vec() } else { args.mtus.iter().map(|&m| m.into()).collect() };
    let plan = Plan {
        sizes,
        scenarios,
        mtus,
        tcp_buffer: args.tcp_buffer.map_or(DEFAULT_TCP_BUFFER, |b| b as usize),
        ustack_exe: std::env::current_exe().map_err(context("finding the ustack binary"))?,
        shards: usize::from(args.shards),
        offload: !args.no_offload,
    };
    complain!("ustack bench ({}), {}", plan.sizes.name, utc_now());
    let table = bench::run(&plan, &mut |line| complain!("bench: {line}"));
    say!("ustack bench ({}), {}\n", plan.sizes.name, utc_now());
    say!("{}", table.render());
    let targets = bench::targets::render(&table);
    if !targets.is_empty() {
        say!("{targets}");
    }
    match table.failures().len() {
        0 => Ok(()),
        n => Err(Failure::new(format!("{n} measurement(s) failed (see the table)"))),
    }
}

/// The time now, UTC, as `2025-01-31 12:34 UTC` (std has no calendar; this is the
/// civil-from-days algorithm of Howard Hinnant's date library).
fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rest / 3600, rest % 3600 / 60)
}
