//! Whole-block timing of the CPU backend: one SegVol ViT block (2048 tokens,
//! width 768, 12 heads, MLP 3072) composed through the `Backend` trait, with
//! a per-op breakdown. Reports the minimum and median wall time over the
//! repetitions, and the CPU time all threads of the process spent per block
//! divided by the thread count: on a machine shared with other jobs the
//! latter is the better estimate of the unloaded wall time (Linux only).
//!
//! `cargo run --release --example cpu_block_timing -- [reps] [threads]`

use std::time::Instant;

use segvol::backend::cpu::CpuBackend;
use segvol::backend::{Activation, AttnOperand, Backend};

#[path = "../benches/support/mod.rs"]
mod support;
use support::{cpu_ns, ones, rnd, vit_attention, MLP, TOKENS, WIDTH};

const STEPS: [&str; 7] = [
    "layer_norm 1",
    "qkv linear",
    "attention",
    "out_proj+residual",
    "layer_norm 2",
    "fc1+gelu",
    "fc2+residual",
];

fn main() -> segvol::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let reps: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let threads: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
    let cpu = CpuBackend::with_threads(threads)?;

    let ln1 = (ones(&cpu, WIDTH), rnd(&cpu, &[WIDTH], 31, 0.1));
    let w_qkv = rnd(&cpu, &[3 * WIDTH, WIDTH], 32, 0.036);
    let proj = (
        rnd(&cpu, &[WIDTH, WIDTH], 33, 0.036),
        rnd(&cpu, &[WIDTH], 34, 0.1),
    );
    let ln2 = (ones(&cpu, WIDTH), rnd(&cpu, &[WIDTH], 35, 0.1));
    let fc1 = (
        rnd(&cpu, &[MLP, WIDTH], 36, 0.036),
        rnd(&cpu, &[MLP], 37, 0.1),
    );
    let fc2 = (
        rnd(&cpu, &[WIDTH, MLP], 38, 0.018),
        rnd(&cpu, &[WIDTH], 39, 0.1),
    );
    let spec = vit_attention();
    let x0 = rnd(&cpu, &[1, TOKENS, WIDTH], 30, 1.0);

    let mut step_times = vec![Vec::new(); STEPS.len()];
    let mut step_cpu = vec![Vec::new(); STEPS.len()];
    let mut totals = Vec::new();
    let mut cpu_per_thread = Vec::new();
    for _ in 0..reps {
        let mut t = [0f64; 7];
        let mut tc = [0f64; 7];
        let start = Instant::now();
        let c0 = cpu_ns();
        let mut lap = (Instant::now(), c0);
        let mut mark = |i: usize, t: &mut [f64; 7]| {
            let c = cpu_ns();
            t[i] = lap.0.elapsed().as_secs_f64();
            tc[i] = (c - lap.1) as f64 * 1e-9 / threads as f64;
            lap = (Instant::now(), c);
        };
        let h = cpu.layer_norm(&x0, &ln1.0, &ln1.1, 1e-5)?;
        mark(0, &mut t);
        let qkv = cpu.linear(&h, &w_qkv, None, Activation::None, None)?;
        mark(1, &mut t);
        let a = cpu.attention(
            AttnOperand::at(&qkv, 0),
            AttnOperand::at(&qkv, WIDTH),
            AttnOperand::at(&qkv, 2 * WIDTH),
            &spec,
        )?;
        mark(2, &mut t);
        let x = cpu.linear(&a, &proj.0, Some(&proj.1), Activation::None, Some(&x0))?;
        mark(3, &mut t);
        let h = cpu.layer_norm(&x, &ln2.0, &ln2.1, 1e-5)?;
        mark(4, &mut t);
        let m = cpu.linear(&h, &fc1.0, Some(&fc1.1), Activation::Gelu, None)?;
        mark(5, &mut t);
        let y = cpu.linear(&m, &fc2.0, Some(&fc2.1), Activation::None, Some(&x))?;
        mark(6, &mut t);
        std::hint::black_box(y);
        totals.push(start.elapsed().as_secs_f64());
        cpu_per_thread.push((cpu_ns() - c0) as f64 * 1e-9 / threads as f64);
        for i in 0..STEPS.len() {
            step_times[i].push(t[i]);
            step_cpu[i].push(tc[i]);
        }
    }

    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() / 2])
    };
    println!("{} ({} reps)", cpu.name(), reps);
    println!("  wall: min / median; cpu/threads: min / median (ms)");
    for i in 0..STEPS.len() {
        let (min, med) = stats(&mut step_times[i]);
        let (cmin, cmed) = stats(&mut step_cpu[i]);
        println!(
            "  {:<18} {:8.2} {:8.2}   {:8.2} {:8.2}",
            STEPS[i],
            min * 1e3,
            med * 1e3,
            cmin * 1e3,
            cmed * 1e3
        );
    }
    let (min, med) = stats(&mut totals);
    let (cmin, cmed) = stats(&mut cpu_per_thread);
    println!(
        "  {:<18} {:8.2} {:8.2}   {:8.2} {:8.2}",
        "block",
        min * 1e3,
        med * 1e3,
        cmin * 1e3,
        cmed * 1e3
    );
    Ok(())
}
