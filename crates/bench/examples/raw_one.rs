//! The raw-smoltcp baseline of the bulk scenario, one direction, run again and again: the
//! counterpart of `bulk_one` (ustack's side), so that a profile or the CPU time per byte of
//! ustack can be set beside raw smoltcp's on the same TUN, one process each. Needs root,
//! like the bench.
//!
//! `cargo run --release -p ustack-bench --example raw_one -- MTU recv|send RUNS [MS] [BUFFER] [copy]`
//!
//! BUFFER: the socket buffers each way, in bytes (the bench's default unless given, as for
//! `bulk_one`). With `copy`, data goes through an application buffer (the bench's "raw
//! smoltcp + app copy"). Prints each run's rate and the process's CPU time (user + system,
//! every thread: the kernel client's too) per byte moved, as `bulk_one` does.

use ustack_bench::bulk;
use ustack_bench::lab;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bulk::OneSide { mtu, dir, runs, duration, buffer } = bulk::OneSide::from_args(&args);
    let copying = args.last().map(String::as_str) == Some("copy");
    let (ns, mut engine) = lab::raw_lab(Some(mtu), buffer).expect("making the lab");
    if copying {
        engine = engine.copying();
    }
    bulk::print_rates_and_cpu(runs, || engine.transfer(&ns, 5001, dir, duration)).expect("transfer");
}
