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

use ustack_bench::bulk;
use ustack_bench::lab;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bulk::OneSide { mtu, dir, runs, duration } = bulk::OneSide::from_args(&args);
    let copying = args.get(5).map(String::as_str) == Some("copy");
    // The bench's socket buffers (its default `--tcp-buffer`), as `bulk_one` gives ustack.
    let (ns, mut engine) = lab::raw_lab(Some(mtu), ustack_bench::DEFAULT_TCP_BUFFER).expect("making the lab");
    if copying {
        engine = engine.copying();
    }
    bulk::print_rates_and_cpu(runs, || engine.transfer(&ns, 5001, dir, duration)).expect("transfer");
}
