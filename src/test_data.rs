//! Repeatable pseudo-random test data for the unit tests (one generator for
//! all of them): a 64-bit LCG whose top 24 bits give uniform floats.

/// `n` values uniform in `[lo, hi)`, the same for the same seed.
pub fn uniform(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}
