//! Minimum wall and CPU time (per thread) of single CPU-backend ops, for
//! A/B comparisons on a machine shared with other jobs (Linux only for the
//! CPU time). Ops: the decoder's two transposed convolutions, its full-item
//! LayerNorm + GELU, and the trilinear upsampling to the network input.
//!
//! `cargo run --release --example cpu_op_timing -- [reps] [threads]`

use std::time::Instant;

use segvol::backend::cpu::{CpuBackend, CpuTensor};
use segvol::backend::{Activation, Backend, Interp};

#[path = "../benches/support/mod.rs"]
mod support;
use support::{cpu_ns, rnd};

fn main() -> segvol::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let reps: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let threads: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
    let cpu = CpuBackend::with_threads(threads)?;
    let time = |name: &str, f: &dyn Fn() -> CpuTensor| {
        let (mut wall, mut per_thread) = (f64::MAX, f64::MAX);
        for _ in 0..reps {
            let (t, c) = (Instant::now(), cpu_ns());
            std::hint::black_box(f());
            wall = wall.min(t.elapsed().as_secs_f64());
            per_thread = per_thread.min((cpu_ns() - c) as f64 * 1e-9 / threads as f64);
        }
        println!(
            "{name:<40} wall {:8.2} ms   cpu/threads {:8.2} ms",
            wall * 1e3,
            per_thread * 1e3
        );
    };
    println!("{} ({reps} reps, minimum)", cpu.name());
    for (grid, cin, cout, act) in [
        ([8, 16, 16], 768, 192, Activation::None),
        ([16, 32, 32], 192, 96, Activation::Gelu),
    ] {
        let vox: usize = grid.iter().product();
        let x = rnd(&cpu, &[1, vox, cin], 26, 1.0);
        let w = rnd(&cpu, &[cin, cout, 2, 2, 2], 27, 0.05);
        let b = rnd(&cpu, &[cout], 28, 0.1);
        time(
            &format!("conv_transpose_k2s2 {vox} vox {cin}->{cout}"),
            &|| cpu.conv_transpose_k2s2(&x, grid, &w, &b, act).unwrap(),
        );
    }
    let item = [1, 192, 16, 32, 32];
    let x = rnd(&cpu, &item, 23, 2.0);
    let w = rnd(&cpu, &item[1..], 24, 1.0);
    let b = rnd(&cpu, &item[1..], 25, 0.1);
    time("layer_norm_item+gelu 192x16x32x32", &|| {
        cpu.layer_norm_item(&x, &w, &b, 1e-5, Activation::Gelu)
            .unwrap()
    });
    let low = rnd(&cpu, &[1, 1, 32, 64, 64], 29, 1.0);
    time("resize trilinear 32x64x64 -> 32x256x256", &|| {
        cpu.resize(&low, [32, 256, 256], Interp::Trilinear).unwrap()
    });
    Ok(())
}
