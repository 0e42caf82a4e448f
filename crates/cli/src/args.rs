//! Arguments shared by the subcommands: where a stack lives on a TUN (`serve`, `connect`)
//! and how its packets are watched (`--trace`, `--pcap`: `serve`, `connect`, `demo`) —
//! their parsers, checks across flags, and starting the stack they describe.
//!
//! Parsers return `Err(String)`, which clap turns into a one-line usage error (exit 2).

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use ustack::Cidr;
use ustack::device::{FaultConfig, FaultInjector, Faults, Link, PcapRecorder, Tracer, TunConfig, TunDevice, trace};
use ustack::packet::TcpdumpFormatter;
use ustack::sys::netlink::MAX_IFNAME_LEN;
use ustack::{Congestion, LossRecovery, Stack, StackConfig};

use super::{Failure, context};

/// The smallest MTU the kernel allows IPv6 on.
const IPV6_MIN_MTU: usize = 1280;

/// Where the stack lives: the TUN, its kernel side, and the stack's own addresses.
#[derive(Debug, Clone, Args)]
pub struct NetArgs {
    /// TUN interface to create (or attach to, if it exists persistently); at most 15 bytes.
    /// Two ustack processes in one network namespace need different names.
    #[arg(long, value_name = "NAME", default_value = "ustack0", value_parser = parse_tun_name)]
    pub tun: String,

    /// An address of the userspace stack, with its prefix length (repeatable).
    #[arg(long = "addr", value_name = "IP/LEN", default_values = ["10.7.0.2/24", "fd00:7::2/64"], value_parser = parse_cidr)]
    pub addrs: Vec<Cidr>,

    /// An address for the kernel side of the TUN (repeatable). Its prefix makes the kernel
    /// route that subnet into the TUN, so it should contain the --addr addresses.
    #[arg(long = "peer-addr", value_name = "IP/LEN", default_values = ["10.7.0.1/24", "fd00:7::1/64"], value_parser = parse_cidr)]
    pub peer_addrs: Vec<Cidr>,

    /// MTU of the TUN, in bytes (default: the kernel's, 1500). IPv6 needs at least 1280.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(68..))]
    pub mtu: Option<u16>,

    /// Open the TUN without offloads: one MTU-sized packet per read and write, checksums
    /// computed by ustack (by default the kernel hands over and takes TCP super-segments
    /// of up to 64 KiB, and computes checksums; without kernel support ustack says so
    /// and does without).
    #[arg(long)]
    pub no_offload: bool,

    /// TCP congestion control: cubic (the default, as Linux's), reno or none; smoltcp-cubic and
    /// smoltcp-reno are smoltcp's own controllers, blind to ustack's loss recovery (for comparison).
    #[arg(long, value_name = "NAME", default_value_t = Congestion::Cubic)]
    pub congestion: Congestion,

    /// Who resends lost TCP segments: ustack (SACK, RACK-TLP, a 200 ms RTO floor, as
    /// Linux) or smoltcp (its own recovery alone, for comparison).
    #[arg(long, value_name = "WHO", default_value_t = LossRecovery::Ustack)]
    pub recovery: LossRecovery,

    /// A default gateway (one per IP version; repeatable): the stack sends what is not
    /// for its own subnets through it, usually the kernel side (--peer-addr), which routes
    /// it on if forwarding is enabled. Without one, such destinations are ENETUNREACH.
    #[arg(long = "gateway", value_name = "IP")]
    pub gateways: Vec<std::net::IpAddr>,
}

impl NetArgs {
    /// Checks across flags that clap cannot express; the message becomes a usage error.
    pub fn validate(&self) -> Result<(), String> {
        let all = || self.addrs.iter().chain(&self.peer_addrs);
        let v6 = all().find(|c| c.addr().is_ipv6());
        if let (Some(mtu), Some(v6)) = (self.mtu, v6)
            && usize::from(mtu) < IPV6_MIN_MTU
        {
            return Err(format!(
                "--mtu {mtu} is too small for IPv6 address {v6} (IPv6 needs at least {IPV6_MIN_MTU}); \
                 raise the MTU or give only IPv4 addresses"
            ));
        }
        for (i, gateway) in self.gateways.iter().enumerate() {
            if self.gateways[..i].iter().any(|g| g.is_ipv4() == gateway.is_ipv4()) {
                return Err(format!("--gateway {gateway}: one gateway per IP version"));
            }
            let on_link = self.addrs.iter().any(|c| c.contains(*gateway));
            if !on_link {
                return Err(format!("--gateway {gateway} is in no --addr subnet: the stack could not reach it"));
            }
        }
        for addr in &self.addrs {
            if self.peer_addrs.iter().any(|peer| peer.addr() == addr.addr()) {
                return Err(format!(
                    "{} is given both as --addr and --peer-addr: the stack and the kernel need different addresses",
                    addr.addr()
                ));
            }
        }
        Ok(())
    }

    /// Stack addresses no kernel-side prefix covers: the kernel will not route to them.
    pub fn unrouted(&self) -> Vec<Cidr> {
        self.addrs.iter().filter(|a| !self.peer_addrs.iter().any(|p| p.contains(a.addr()))).copied().collect()
    }

    /// Creates the TUN, configures its kernel side, and starts a stack on it with `config`
    /// (whose addresses are replaced by --addr), tapped as `taps` says. Returns the stack
    /// and the TUN's MTU.
    pub fn open_stack(&self, config: StackConfig, taps: &TapArgs) -> Result<(Stack, usize), Failure> {
        self.open_sharded_stack(config, taps, 1)
    }

    /// [`NetArgs::open_stack`] with `shards` shards: a multi-queue TUN with a queue and a
    /// stack thread per shard ([`Stack::sharded`]). More than one takes no --pcap or
    /// faults (the caller's [`TapArgs::single_shard_only`] says so); --trace traces each
    /// shard's queue.
    pub fn open_sharded_stack(
        &self,
        config: StackConfig,
        taps: &TapArgs,
        shards: usize,
    ) -> Result<(Stack, usize), Failure> {
        let config = StackConfig {
            addrs: self.addrs.clone(),
            gateways: self.gateways.clone(),
            congestion: self.congestion,
            loss_recovery: self.recovery,
            ..config
        };
        if shards > 1 {
            let queues = TunDevice::open_queues(&self.tun_config(), shards).map_err(Failure::new)?;
            let mtu = queues[0].mtu();
            let devices = queues.into_iter().map(|q| Tracer::new(q).with_formatter(TcpdumpFormatter::new())).collect();
            let stack = Stack::sharded(devices, config).map_err(context("starting the stack"))?;
            return Ok((stack, mtu));
        }
        // Before the TUN exists, so that a bad --pcap path changes nothing.
        let mut pcap = taps.open_pcap()?;
        let device = self.open_tun()?;
        let mtu = device.mtu();
        let stack = start_tapped(device, taps.faults(), &mut pcap, TcpdumpFormatter::new(), config)?;
        Ok((stack, mtu))
    }

    /// Creates (or attaches to) the TUN and configures its kernel side: the device alone,
    /// for a stack started elsewhere (`ustack run` hands it to the program it runs).
    pub fn open_tun(&self) -> Result<TunDevice, Failure> {
        for cidr in self.unrouted() {
            log::warn!(
                target: "ustack",
                "stack address {cidr} is in no --peer-addr subnet: the kernel will not route to it"
            );
        }
        TunDevice::open(&self.tun_config()).map_err(Failure::new)
    }

    fn tun_config(&self) -> TunConfig {
        TunConfig {
            name: self.tun.clone(),
            peer_addrs: self.peer_addrs.clone(),
            mtu: self.mtu.map(usize::from),
            offload: !self.no_offload,
        }
    }

    /// "10.7.0.2, fd00:7::2": the stack's addresses without prefixes.
    pub fn stack_ips(&self) -> String {
        join_ips(&self.addrs)
    }

    /// "10.7.0.1, fd00:7::1": the kernel side's addresses without prefixes.
    pub fn peer_ips(&self) -> String {
        join_ips(&self.peer_addrs)
    }
}

/// Watching a stack's packets: `--trace` and `--pcap`.
#[derive(Debug, Clone, Default, Args)]
pub struct TapArgs {
    /// Print every packet the stack receives (`in`) and sends (`out`), one `tcpdump -nn`
    /// line each, among the logs (log target ustack::trace). The demo in the simulator:
    /// every packet on its link, with the stack that sent it.
    #[arg(long)]
    pub trace: bool,

    /// Record every packet the stack receives and sends to FILE, a pcap file (LINKTYPE_RAW,
    /// raw IP) that `tcpdump -nn -r FILE` and Wireshark read, also while ustack runs. The
    /// demo in the simulator: every packet on its link, at virtual times.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,

    /// Lose PCT percent of the packets, each way (fault injection, to watch TCP recover);
    /// in the demo's simulator, on its link.
    #[arg(long, value_name = "PCT", default_value_t = 0.0, value_parser = parse_percent)]
    pub drop_chance: f64,

    /// Change one byte of PCT percent of the packets, each way; the checksum catches it, so
    /// the packet is lost to the receiver (fault injection); in the demo's simulator, on
    /// its link.
    #[arg(long, value_name = "PCT", default_value_t = 0.0, value_parser = parse_percent)]
    pub corrupt_chance: f64,

    /// The seed of the fault injector's random choices, to replay a run's losses; without
    /// it one is drawn, and printed when faults are injected. In the demo's simulator, the
    /// seed of the whole run (ISNs, ports, losses): 1 unless given.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
}

pub fn parse_percent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("expected a percentage from 0 to 100, not {s}")),
    }
}

/// On or off: `--syn-cookies` (serve, replay).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

/// Where --pcap records go: the file, buffered (the recorder flushes after every record).
pub type PcapFile = BufWriter<File>;

impl TapArgs {
    /// What asks for a stack of one shard: a --pcap file records one ordered stream, and
    /// fault injection with a --seed replays one sequence of losses.
    pub fn single_shard_only(&self) -> Option<&'static str> {
        if self.pcap.is_some() {
            Some("--pcap")
        } else if self.faults().is_some() {
            Some("fault injection")
        } else {
            None
        }
    }

    /// The fault injector to put under the stack, if --drop-chance or --corrupt-chance asked
    /// for one.
    pub fn faults(&self) -> Option<FaultConfig> {
        if self.drop_chance == 0.0 && self.corrupt_chance == 0.0 {
            return None;
        }
        let both_ways = Faults { drop_pct: self.drop_chance, corrupt_pct: self.corrupt_chance, ..Faults::NONE };
        Some(FaultConfig { rx: both_ways, tx: both_ways, seed: self.seed, ..FaultConfig::default() })
    }

    /// Creates (or truncates) the --pcap file, if one was given.
    pub fn open_pcap(&self) -> Result<Option<PcapFile>, Failure> {
        let Some(path) = &self.pcap else { return Ok(None) };
        let file = File::create(path).map_err(context(format!("--pcap {}", path.display())))?;
        Ok(Some(BufWriter::new(file)))
    }
}

/// Starts a stack on `device`, tapped: the device is always wrapped in a [`Tracer`], and
/// in a [`PcapRecorder`] too when `pcap` holds a file (which is taken).
///
/// Why this shape: the stack is generic over its device, so each combination of
/// middleware is its own type. The tracer decodes nothing while its log target is off
/// (one level check per packet), so it can stay in place and `--trace` (or RUST_LOG) only
/// switches its log target on; that leaves one choice, recorder or not, made here once
/// for every subcommand, instead of four device types spread through them.
pub fn start_tapped<D: Link + 'static>(
    device: D,
    faults: Option<FaultConfig>,
    pcap: &mut Option<PcapFile>,
    formatter: TcpdumpFormatter,
    config: StackConfig,
) -> Result<Stack, Failure> {
    // The injector sits nearest the device, so the trace and the pcap show what the stack
    // itself sent and received; without faults asked for, there is none at all.
    match faults {
        Some(faults) => {
            let device = FaultInjector::new(device, faults).map_err(context("setting up fault injection"))?;
            // The seed goes to stderr with the logs: enough to run the same losses again.
            complain!("ustack: injecting faults with --seed {}", device.seed());
            start_recorded(device, pcap, formatter, config)
        }
        None => start_recorded(device, pcap, formatter, config),
    }
}

fn start_recorded<D: Link + 'static>(
    device: D,
    pcap: &mut Option<PcapFile>,
    formatter: TcpdumpFormatter,
    config: StackConfig,
) -> Result<Stack, Failure> {
    let started = match pcap.take() {
        Some(file) => {
            let recorder = PcapRecorder::new(device, file).map_err(context("writing the --pcap file"))?;
            Stack::new(Tracer::new(recorder).with_formatter(formatter), config)
        }
        None => Stack::new(Tracer::new(device).with_formatter(formatter), config),
    };
    started.map_err(context("starting the stack"))
}

/// Logging on standard error, for `serve` and `connect`: RUST_LOG if set, else `default`;
/// `--trace` turns the packet trace (target [`trace::TARGET`]) on at info either way.
///
/// Trace lines are printed bare — `in  12:34:56.789012 IP ...`, as tcpdump prints them,
/// with their own time of day — so they can be read, grepped and compared with
/// `tcpdump -nn -r` output; every other line as `[time LEVEL target] message`.
pub fn init_logging(default: &str, trace: bool) {
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default));
    if trace {
        // Added after the RUST_LOG or default directives: it replaces any for the target.
        builder.filter_module(trace::TARGET, log::LevelFilter::Info);
    }
    builder
        .format(|buf, record| {
            if record.target() == trace::TARGET {
                return writeln!(buf, "{}", record.args());
            }
            writeln!(buf, "[{} {:<5} {}] {}", buf.timestamp_micros(), record.level(), record.target(), record.args())
        })
        .init();
}

fn join_ips(cidrs: &[Cidr]) -> String {
    cidrs.iter().map(|c| c.addr().to_string()).collect::<Vec<_>>().join(", ")
}

/// `IP/LEN`, e.g. `10.7.0.2/24` or `fd00:7::2/64`: a unicast address and a prefix length
/// of 1..=32 (IPv4) or 1..=128 (IPv6).
pub fn parse_cidr(s: &str) -> Result<Cidr, String> {
    let (ip, len) = s.split_once('/').ok_or("expected IP/LEN, e.g. 10.7.0.2/24 or fd00:7::2/64")?;
    let ip: IpAddr = ip.parse().map_err(|_| format!("{ip:?} is not an IPv4 or IPv6 address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| (1..=max).contains(l))
        .ok_or_else(|| format!("prefix length {len:?} is not a number from 1 to {max}"))?;
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if ip.is_unspecified() || ip.is_multicast() || broadcast {
        return Err(format!("{ip} is not a unicast address"));
    }
    Cidr::new(ip, len).map_err(|e| e.to_string())
}

/// A TUN name the kernel accepts as given (tun-tap would silently truncate a long one).
pub fn parse_tun_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > MAX_IFNAME_LEN {
        return Err(format!("interface names have 1 to {MAX_IFNAME_LEN} bytes"));
    }
    if s == "." || s == ".." || s.bytes().any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace()) {
        return Err("interface names cannot be . or .. or contain '/', ':' or whitespace".into());
    }
    Ok(s.to_string())
}

/// `IP:PORT` with a literal address (ustack resolves no names): `10.7.0.1:7`, `[fd00:7::1]:7`.
pub fn parse_target(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s.parse().map_err(|_| {
        "expected IP:PORT with a literal address, e.g. 10.7.0.1:7 or [fd00:7::1]:7 (ustack has no DNS)".to_string()
    })?;
    if addr.port() == 0 {
        return Err("port 0 cannot be connected to".into());
    }
    if addr.ip().is_unspecified() || addr.ip().is_multicast() {
        return Err(format!("{} is not a unicast address", addr.ip()));
    }
    Ok(addr)
}

/// Seconds, possibly fractional (`2`, `0.5`), more than zero and at most a day.
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err("the timeout must be more than 0 and at most 86400 seconds".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        assert_eq!(parse_cidr("10.7.0.2/24").unwrap().to_string(), "10.7.0.2/24");
        assert_eq!(parse_cidr("fd00:7::2/64").unwrap().to_string(), "fd00:7::2/64");
        for bad in [
            "nonsense",
            "10.7.0.2",
            "10.7.0.2/33",
            "10.7.0.2/0",
            "fd00::1/129",
            "10.7.0/24",
            "0.0.0.0/8",
            "224.0.0.1/4",
            "10.7.0.2/x",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tun_names_and_targets() {
        assert!(parse_tun_name("ustack0").is_ok());
        assert!(parse_tun_name("a-name-longer-than-15").is_err());
        assert!(parse_tun_name("a/b").is_err());
        assert!(parse_tun_name("").is_err());
        assert_eq!(parse_target("[fd00:7::1]:7").unwrap().port(), 7);
        assert!(parse_target("10.7.0.1:0").is_err());
        assert!(parse_target("example.com:80").is_err());
        assert!(parse_secs("0").is_err());
        assert!(parse_secs("nan").is_err());
        assert_eq!(parse_secs("0.5").unwrap(), Duration::from_millis(500));
    }
}
