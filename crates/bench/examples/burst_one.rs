//! The burst scenario, ustack's side only, burst after burst in one lab as the bench runs
//! them: to see how a burst's time varies and why. `ustack bench` prints medians and
//! ranges; this prints every burst, its drops split by where they happened. Needs root,
//! like the bench.
//!
//! `cargo run --release -p ustack-bench --example burst_one -- RUNS [CLIENTS] [BACKLOG] [SHARDS]`

use ustack_bench::peer::Server;
use ustack_bench::{Sizes, connect, lab, os};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let number = |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let sizes = Sizes::full();
    let (runs, clients, backlog) =
        (number(1, 5), number(2, sizes.burst_clients), number(3, sizes.burst_backlog as usize));
    let shards = number(4, 1);
    let lab = lab::ustack_lab(None, ustack::StackConfig::default().tcp_buffer, shards, true).expect("making the lab");
    let server = Server::Ustack(&lab.stack);
    let tun = || os::tx_dropped(&lab.ns, lab::TUN_NAME).expect("reading the TUN's counters");
    for run in 0..runs {
        let port = 7000 + run as u16;
        let listener = server.listen(port, backlog as u32).expect("listening");
        let (before, tun_before) = (lab.stack.demux_table().counters, tun());
        let burst = connect::burst(&*listener, &lab.ns, server.addr(port), clients, sizes.burst_limit).expect("burst");
        let (after, tun_after) = (lab.stack.demux_table().counters, tun());
        let time = burst.all_accepted.map_or_else(|| "not all".to_string(), |t| format!("{} ms", t.as_millis()));
        println!(
            "burst {run}: {time}, accepted {}; SYNs dropped (accept queue full) {}, handshake ACKs dropped {}, \
             dropped in the TUN's queue {}; SYN cookies sent {}",
            burst.accepted,
            after.overflow_dropped - before.overflow_dropped,
            after.ack_dropped - before.ack_dropped,
            tun_after - tun_before,
            after.cookies_sent - before.cookies_sent,
        );
        if shards > 1 {
            println!("  frames forwarded between shards so far: {:?}", lab.stack.forwarded());
        }
    }
}
