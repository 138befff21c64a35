//! Helpers shared by the benches (CPU and GPU) and the probes in `tools/`
//! (included with `#[path]`, so each user compiles only what it calls).
#![allow(dead_code)]

use segvol::backend::{AttnSpec, Backend};

/// ViT sizes of the default config.
pub const TOKENS: usize = 2048;
pub const WIDTH: usize = 768;
pub const MLP: usize = 3072;
pub const HEADS: usize = 12;

/// The ViT's self-attention: batch 1, all tokens, 12 heads of 64.
pub fn vit_attention() -> AttnSpec {
    AttnSpec {
        batch: 1,
        heads: HEADS,
        head_dim: WIDTH / HEADS,
        q_len: TOKENS,
        kv_len: TOKENS,
        scale: 0.125,
        causal: false,
    }
}

/// A smooth synthetic CT of `d·h·w` values in [0, 1] (the network's input).
pub fn smooth_image([d, h, w]: [usize; 3]) -> Vec<f32> {
    (0..d * h * w)
        .map(|i| {
            let (z, y, x) = (i / (h * w), (i / w) % h, i % w);
            0.5 + 0.5 * ((z as f32 * 0.3).sin() * (y as f32 * 0.05).cos() * (x as f32 * 0.07).sin())
        })
        .collect()
}

/// Uniform values in [-scale, scale) from a fixed LCG, so runs are repeatable
/// (and never zeros, which can run faster than real data on a GPU).
pub fn rnd<B: Backend>(be: &B, shape: &[usize], seed: u64, scale: f32) -> B::Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let data: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * scale
        })
        .collect();
    be.upload(&data, shape).expect("upload")
}

pub fn ones<B: Backend>(be: &B, n: usize) -> B::Tensor {
    be.upload(&vec![1.0; n], &[n]).expect("upload")
}

/// Nanoseconds all threads of this process have run on a CPU
/// (`/proc/self/task/*/schedstat`); 0 where that is unavailable. A better
/// guide than wall time on a shared machine.
pub fn cpu_ns() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.filter_map(|e| {
        let s = std::fs::read_to_string(e.ok()?.path().join("schedstat")).ok()?;
        s.split_whitespace().next()?.parse::<u64>().ok()
    })
    .sum()
}
