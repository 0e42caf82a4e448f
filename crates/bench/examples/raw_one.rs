//! The raw-smoltcp baseline of the bulk scenario, one direction, run again and again: the
//! counterpart of `bulk_one` (ustack's side), so that a profile or the CPU time per byte of
//! ustack can be set beside raw smoltcp's on the same TUN, one process each. Needs root,
//! like the bench.
//!
//! `cargo run --release -p ustack-bench --example raw_one -- MTU recv|send RUNS [MS] [copy]`
//!
//! With `copy`, data goes through an application buffer (the bench's "raw smoltcp + app
//! copy"). Prints each run's rate and the process's CPU time (user + system, every thread:
//! the kernel client's too) per byte moved, as `bulk_one` does.

use std::time::{Duration, Instant};

use ustack_bench::bulk::Direction;
use ustack_bench::{lab, raw};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mtu: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1500);
    let dir = match args.get(2).map(String::as_str) {
        Some("send") => Direction::FromServer,
        _ => Direction::ToServer,
    };
    let runs: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(5);
    let ms: u64 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let copying = args.get(5).map(String::as_str) == Some("copy");
    let (ns, device) = lab::tun(Some(mtu)).expect("making the lab");
    let addr = smoltcp::wire::IpCidr::new(smoltcp::wire::IpAddress::Ipv4(lab::TUN_STACK), 24);
    // The bench's socket buffers (its default `--tcp-buffer`), as `bulk_one` gives ustack.
    let mut engine = raw::RawEngine::new(device, addr, 1 << 20);
    if copying {
        engine = engine.copying();
    }
    for _ in 0..runs {
        let (cpu_before, started) = (cpu_seconds(), Instant::now());
        let gbps = engine.transfer(&ns, 5001, dir, Duration::from_millis(ms)).expect("transfer");
        let (cpu, wall) = (cpu_seconds() - cpu_before, started.elapsed().as_secs_f64());
        // Bytes moved, roughly: the measured rate over the run's wall time.
        let bytes = gbps * 1e9 / 8.0 * wall;
        println!("{gbps:.2} Gbit/s, {:.3} CPU-ns/byte", cpu * 1e9 / bytes);
    }
}

/// User + system CPU time of the whole process, in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: all-zero is a valid rusage, and getrusage writes one.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid rusage to write to.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
