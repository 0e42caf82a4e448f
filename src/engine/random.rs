//! The engine's randomness: one seeded generator for everything the stack draws at random
//! (smoltcp's seed, the ISN and cookie secret, ephemeral ports, hash seeds), so that an
//! engine made with the same seed behaves the same, packet for packet — what `ustack sim`
//! and the deterministic tests rely on. A real stack seeds it from the OS.

/// SplitMix64 (Steele, Lea and Flood): tiny, fast, and good enough to spread a seed over
/// the values it derives. The secret keys it makes are as unpredictable as the seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
}

/// A random number from the OS; from the clock where the OS has no random source at all
/// (never smoltcp's fixed default seed of 0).
// Public only for crates/bench (its raw-smoltcp baseline seeds its interface the same
// way); not part of the library's API.
#[doc(hidden)]
pub fn from_os() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        return nanos.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32);
    }
    u64::from_ne_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_numbers() {
        let (mut a, mut b, mut c) = (Rng::new(7), Rng::new(7), Rng::new(8));
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        assert_eq!(xs, (0..4).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(xs, (0..4).map(|_| c.next_u64()).collect::<Vec<_>>());
    }
}
