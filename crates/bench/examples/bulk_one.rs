//! One direction of the bulk scenario, ustack's side only, run again and again: something
//! to put under `perf record` / `perf stat`, which `ustack bench` (every baseline in one
//! process) is not. Needs root, like the bench.
//!
//! `cargo run --release -p ustack-bench --example bulk_one -- MTU recv|send RUNS [MS]`
//!
//! Prints each run's rate and the process's CPU time (user + system, every thread: the
//! kernel client's too) per byte moved, which load on a shared machine moves less.

use std::time::{Duration, Instant};

use ustack_bench::bulk::{self, Direction};
use ustack_bench::lab;
use ustack_bench::peer::Server;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mtu: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1500);
    let dir = match args.get(2).map(String::as_str) {
        Some("send") => Direction::FromServer,
        _ => Direction::ToServer,
    };
    let runs: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(5);
    let ms: u64 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let lab = lab::ustack_lab(Some(mtu), 1 << 20, 1, true).expect("making the lab");
    let server = Server::Ustack(&lab.stack);
    let listener = server.listen(5001, 4096).expect("listening");
    for _ in 0..runs {
        let (cpu_before, started) = (cpu_seconds(), Instant::now());
        let gbps =
            bulk::transfer(&*listener, &lab.ns, server.addr(5001), dir, Duration::from_millis(ms)).expect("transfer");
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
