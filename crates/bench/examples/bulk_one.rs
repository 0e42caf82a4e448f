//! One direction of the bulk scenario, ustack's side only, run again and again: something
//! to put under `perf record` / `perf stat`, which `ustack bench` (every baseline in one
//! process) is not. Needs root, like the bench.
//!
//! `cargo run --release -p ustack-bench --example bulk_one -- MTU recv|send RUNS [MS] [BUFFER]`
//!
//! Prints each run's rate and the process's CPU time (user + system, every thread: the
//! kernel client's too) per byte moved, which load on a shared machine moves less.

use ustack_bench::bulk;
use ustack_bench::lab;
use ustack_bench::peer::Server;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bulk::OneSide { mtu, dir, runs, duration, buffer } = bulk::OneSide::from_args(&args);
    let lab = lab::ustack_lab(Some(mtu), buffer, 1, true).expect("making the lab");
    let server = Server::Ustack(&lab.stack);
    let listener = server.listen(5001, 4096).expect("listening");
    bulk::print_rates_and_cpu(runs, || bulk::transfer(&*listener, &lab.ns, server.addr(5001), dir, duration))
        .expect("transfer");
}
