//! The seed of a test run that injects faults (random loss, damage, floods): taken from
//! `USTACK_SEED` if set (decimal, or hex with `0x`), else drawn afresh, and printed either
//! way, so a failure shows the line that replays it:
//!
//! ```text
//! seed 1234 (USTACK_SEED=1234 to replay)
//! ```
//!
//! A run is replayed exactly where everything random follows from the seed (a simulation
//! on the virtual clock); on real stacks and devices, the seed fixes every random choice
//! (which packets are lost, ISNs, ports) but threads still interleave as they will.
//! Included with `mod seed;`, from one place.

/// This run's seed, printed with how to replay it.
pub fn seed() -> u64 {
    let seed = match std::env::var("USTACK_SEED") {
        Ok(text) => parse(&text).unwrap_or_else(|| panic!("USTACK_SEED={text:?} is not a number")),
        Err(_) => ustack::engine::random::from_os(),
    };
    eprintln!("seed {seed} (USTACK_SEED={seed} to replay)");
    seed
}

/// Another seed for a second source of randomness in the same run (the second of two
/// fault injectors): follows from `seed`, and differs for each `index`.
#[allow(dead_code)] // not every test file has two sources
pub fn derived(seed: u64, index: u64) -> u64 {
    ustack::sim::node_seed(seed, index as usize)
}

fn parse(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}
