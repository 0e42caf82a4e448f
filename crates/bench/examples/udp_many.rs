//! UDP request/response from many kernel clients at once against one ustack echo socket
//! served by several threads, on a stack of 1 or more shards: whether UDP scales with
//! shards. (`ustack bench`'s UDP scenario has one client, one request at a time, which
//! no number of shards can speed up.) Needs root, like the bench.
//!
//! `cargo run --release -p ustack-bench --example udp_many -- SHARDS [CLIENTS] [SERVERS] [MS] [RUNS]`
//!
//! Prints the round trips per second of all clients together, for each run.

use std::net::UdpSocket as KernelUdp;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ustack_bench::lab;
use ustack_bench::peer::Server;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let number = |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (shards, clients, servers) = (number(1, 1), number(2, 4), number(3, 2));
    let (duration, runs) = (Duration::from_millis(number(4, 1000) as u64), number(5, 3));
    let lab = lab::ustack_lab(None, ustack::StackConfig::default().tcp_buffer, shards, true).expect("making the lab");
    let server = Server::Ustack(&lab.stack);
    let echo = server.udp(7).expect("binding");
    let addr = server.addr(7);
    for _ in 0..runs {
        let stop = AtomicBool::new(false);
        let answered = Arc::new(AtomicU64::new(0));
        let elapsed = std::thread::scope(|scope| {
            for _ in 0..servers {
                scope.spawn(|| {
                    let mut buf = [0u8; 2048];
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok((n, from)) = echo.recv_from(&mut buf) {
                            let _ = echo.send_to(&buf[..n], from);
                        }
                    }
                });
            }
            let start = Instant::now();
            let threads: Vec<_> = (0..clients)
                .map(|_| {
                    lab.ns
                        .spawn({
                            let answered = answered.clone();
                            move || {
                                let client = KernelUdp::bind("0.0.0.0:0").unwrap();
                                client.connect(addr).unwrap();
                                client.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                                let (request, mut answer) = ([0x42u8; 64], [0u8; 2048]);
                                let start = Instant::now();
                                while start.elapsed() < duration {
                                    client.send(&request).unwrap();
                                    if client.recv(&mut answer).is_ok() {
                                        answered.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            }
                        })
                        .expect("a client thread")
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let elapsed = start.elapsed();
            stop.store(true, Ordering::Relaxed);
            elapsed
        });
        let rate = answered.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64();
        let forwarded: u64 = lab.stack.forwarded().iter().map(|(f, _)| f).sum();
        println!(
            "{shards} shard(s), {clients} clients, {servers} server threads: {:.1}k round trips/s (frames forwarded between shards so far: {forwarded})",
            rate / 1e3
        );
    }
}
