//! Helpers shared by the CPU benches and the timing examples (included with
//! `#[path]`, so each user compiles only what it calls).
#![allow(dead_code)]

use segvol::backend::cpu::{CpuBackend, CpuTensor};
use segvol::backend::Backend;

/// ViT sizes of the default config.
pub const TOKENS: usize = 2048;
pub const WIDTH: usize = 768;
pub const MLP: usize = 3072;
pub const HEADS: usize = 12;

/// Uniform values in [-scale, scale) from a fixed LCG, so runs are repeatable.
pub fn rnd(cpu: &CpuBackend, shape: &[usize], seed: u64, scale: f32) -> CpuTensor {
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
    cpu.upload(&data, shape).expect("upload")
}

pub fn ones(cpu: &CpuBackend, n: usize) -> CpuTensor {
    cpu.upload(&vec![1.0; n], &[n]).expect("upload")
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
