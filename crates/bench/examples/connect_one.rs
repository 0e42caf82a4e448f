//! The sequential-connect scenario, ustack's side only, run again and again: something to
//! put under `perf record` / `perf stat`, which `ustack bench` (every baseline in one
//! process) is not. Needs root, like the bench.
//!
//! `cargo run --release -p ustack-bench --example connect_one -- RUNS [MS]`
//!
//! Prints each run's rate, connect() p50, and the process's CPU time (user + system, every
//! thread: the kernel client's too) per connection. Run it under `taskset -c 0` to see
//! ustack's own cost without this VM's cross-CPU wake-ups (BENCHMARKS.md §28).

use std::time::Duration;

use ustack_bench::peer::Server;
use ustack_bench::{Sizes, connect, lab, os};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let number = |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (runs, duration) = (number(1, 5), Duration::from_millis(number(2, 1000)));
    // As the bench runs it: a lab of its own for every run, and no more connections than
    // the kernel client has ports for (see `Sizes::connect_max`).
    let max = Sizes::full().connect_max;
    for _ in 0..runs {
        let lab = lab::ustack_lab(None, ustack::StackConfig::default().tcp_buffer, 1, true).expect("making the lab");
        let server = Server::Ustack(&lab.stack);
        let listener = server.listen(6001, 4096).expect("listening");
        let cpu = os::cpu_time(libc::RUSAGE_SELF);
        let rate = connect::rate(&*listener, &lab.ns, server.addr(6001), duration, max).expect("connects");
        let per_conn = (os::cpu_time(libc::RUSAGE_SELF) - cpu).as_secs_f64() * 1e6 / rate.connections as f64;
        println!("{:.1}k/s, p50 {:.1} µs, {per_conn:.1} CPU-µs/connection", rate.per_sec / 1e3, rate.p50_us);
    }
}
