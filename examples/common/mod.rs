//! What the examples share: where the stack lives, with `ustack serve`'s flags (`--tun`,
//! `--addr`, `--peer-addr`, `--mtu`, the same defaults), and starting a stack there.

use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::process::ExitCode;

use ustack::device::{TunConfig, TunDevice};
use ustack::{Cidr, Stack, StackConfig};

/// Where the stack lives: a TUN, its kernel side, the stack's own addresses.
#[derive(Debug, Clone, clap::Args)]
pub struct NetArgs {
    /// TUN interface to create (at most 15 bytes).
    #[arg(long, value_name = "NAME", default_value = "ustack0")]
    pub tun: String,

    /// An address of the userspace stack, with its prefix length (repeatable).
    #[arg(long = "addr", value_name = "IP/LEN", default_values = ["10.7.0.2/24", "fd00:7::2/64"], value_parser = parse_cidr)]
    pub addrs: Vec<Cidr>,

    /// An address for the kernel side of the TUN (repeatable); its prefix routes the
    /// subnet into the TUN, so it should contain the --addr addresses.
    #[arg(long = "peer-addr", value_name = "IP/LEN", default_values = ["10.7.0.1/24", "fd00:7::1/64"], value_parser = parse_cidr)]
    pub peer_addrs: Vec<Cidr>,

    /// MTU of the TUN (default: the kernel's, 1500).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1280..))]
    pub mtu: Option<u16>,
}

impl NetArgs {
    /// Creates the TUN, gives its kernel side the --peer-addr addresses, and starts a stack
    /// on it at the --addr addresses.
    pub fn start(&self) -> io::Result<Stack> {
        let tun = TunConfig {
            name: self.tun.clone(),
            peer_addrs: self.peer_addrs.clone(),
            mtu: self.mtu.map(usize::from),
            ..TunConfig::default()
        };
        let device =
            TunDevice::open(&tun).map_err(|e| io::Error::new(e.kind(), format!("opening TUN {}: {e}", self.tun)))?;
        Stack::new(device, StackConfig { addrs: self.addrs.clone(), ..StackConfig::default() })
    }

    /// "10.7.0.2, fd00:7::2": the stack's addresses.
    pub fn stack_ips(&self) -> String {
        self.addrs.iter().map(|c| c.addr().to_string()).collect::<Vec<_>>().join(", ")
    }
}

/// `IP/LEN`, e.g. `10.7.0.2/24` or `fd00:7::2/64`.
fn parse_cidr(s: &str) -> Result<Cidr, String> {
    s.parse().map_err(|e| format!("{s:?} is not IP/LEN, e.g. 10.7.0.2/24 or fd00:7::2/64: {e}"))
}

/// Port `port` on every address of the stack, IPv4 and IPv6 alike (one dual-stack socket,
/// as `ustack serve` binds).
pub fn wildcard(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))
}

/// Logs to standard error: connection events by default, RUST_LOG to choose.
pub fn init_logging() {
    let _ = env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,ustack=info,ustack::trace=off"),
    )
    .try_init();
}

/// The exit status of an example that ended with `result`: failure after one line
/// naming the example (`name`) and the error.
pub fn exit_code(name: &str, result: io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}
