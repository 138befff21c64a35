//! Block-size sweep of the CPU attention paths (the fused AVX-512 kernel
//! where available, and the sgemm-based one) at the ViT's size (12 heads × 64,
//! 2048 tokens, q/k/v read from a packed qkv tensor). Prints, per tiling, the
//! minimum wall time and the minimum CPU time per thread (the better figure
//! on a machine shared with other jobs; Linux only).
//!
//! `cargo run --release --example cpu_attention_tiling -- [reps] [threads]`

use std::time::Instant;

use segvol::backend::cpu::attention::{attention_tiled, Operand, Tiling};
use segvol::backend::AttnSpec;

#[path = "../benches/support/mod.rs"]
mod support;
use support::cpu_ns;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let reps: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let threads: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    let (n, w) = (2048usize, 768usize);
    let mut seed = 7u64;
    let qkv: Vec<f32> = (0..n * 3 * w)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    let spec = AttnSpec {
        batch: 1,
        heads: 12,
        head_dim: 64,
        q_len: n,
        kv_len: n,
        scale: 0.125,
        causal: false,
    };
    let op = |col| Operand {
        data: &qkv,
        ld: 3 * w,
        col,
    };
    let flop = 4.0 * (n * n * w) as f64;
    let mut out = vec![0f32; n * w];
    let mut measure = |name: String, f: &mut (dyn FnMut(&mut [f32]) + Send)| {
        let (mut best, mut best_cpu) = (f64::MAX, f64::MAX);
        for _ in 0..reps {
            let (t, c) = (Instant::now(), cpu_ns());
            pool.install(|| f(&mut out));
            best = best.min(t.elapsed().as_secs_f64());
            best_cpu = best_cpu.min((cpu_ns() - c) as f64 * 1e-9 / threads as f64);
        }
        println!(
            "{name:<34} wall {:7.2} ms  cpu/threads {:7.2} ms  ({:.0} GFLOP/s by cpu time)",
            best * 1e3,
            best_cpu * 1e3,
            flop / best_cpu * 1e-9
        );
    };
    #[cfg(segvol_avx512)]
    if segvol::backend::cpu::attention_avx512::supported() {
        use segvol::backend::cpu::attention_avx512::{attention, FusedTiling};
        for panels in [4, 8, 16, 32] {
            for k_block in [32, 48, 64, 128] {
                let tiling = FusedTiling { panels, k_block };
                measure(
                    format!("fused panels {panels} k_block {k_block}"),
                    &mut |o| attention(op(0), op(w), op(2 * w), &spec, tiling, o),
                );
            }
        }
    }
    for q_block in [128, 256] {
        for k_block in [256, 512] {
            let tiling = Tiling { q_block, k_block };
            measure(
                format!("sgemm q_block {q_block} k_block {k_block}"),
                &mut |o| attention_tiled(op(0), op(w), op(2 * w), &spec, tiling, o),
            );
        }
    }
}
