//! Peak memory and time of one SegVol ViT encoder forward on the CPU backend
//! (default config, input 1×1×32×256×256, synthetic weights).
//!
//! The synthetic weights live in process memory (a real checkpoint would be
//! memory-mapped and paged in the same way), so they count towards the
//! resident set: the program prints the weight bytes, the resident set before
//! the forward, and the peak during it. The peak is reset just before the
//! forward (`/proc/self/clear_refs`, Linux), so construction of the weights
//! does not count. With `full`, the whole SegVol checkpoint is synthesised
//! (as `synth_checkpoint` does) instead of the encoder's tensors only.
//!
//! It also prints the CPU time all threads spent in the second forward divided
//! by the thread count: on a machine shared with other jobs, the estimate of
//! the unloaded wall time.
//!
//! `cargo run --release --example encoder_rss -- [threads] [full]`

use std::time::Instant;

use segvol::backend::cpu::CpuBackend;
use segvol::backend::Backend;
use segvol::model::image_encoder::ImageEncoder;
use segvol::model::loader::Loader;
use segvol::weights::expected::expected_tensors;
use segvol::weights::synth::{synth_checkpoint, synth_tensor};
use segvol::weights::Checkpoint;
use segvol::ModelConfig;

#[path = "../benches/support/mod.rs"]
mod support;
use support::cpu_ns;

/// A `VmXXX:` line of /proc/self/status, in MiB.
fn status_mib(key: &str) -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() -> segvol::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2);
    let full = args.iter().any(|a| a == "full");
    let cpu = CpuBackend::with_threads(threads)?;
    let cfg = ModelConfig::default();

    let ckpt = if full {
        synth_checkpoint(&cfg)?
    } else {
        let tensors = expected_tensors(&cfg)
            .into_iter()
            .filter(|e| e.name.starts_with("image_encoder."))
            .map(|e| {
                let v = synth_tensor(&e.name, &e.shape);
                (e.name, e.shape, v)
            })
            .collect();
        Checkpoint::from_f32_tensors(tensors)?
    };
    let weight_bytes: usize = ckpt
        .names()
        .filter_map(|n| ckpt.get(n))
        .map(|v| v.bytes().len())
        .sum();
    let enc = ImageEncoder::load(&Loader::new(&cpu, &ckpt), &cfg)?;
    let [d, h, w] = cfg.spatial_size;
    let image: Vec<f32> = (0..d * h * w).map(|i| ((i % 251) as f32) / 250.0).collect();
    let image = cpu.upload(&image, &[1, 1, d, h, w])?;

    let before = status_mib("VmRSS:").unwrap_or(f64::NAN);
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let t = Instant::now();
    let out = enc.forward(&cpu, &image)?;
    let first = t.elapsed().as_secs_f64();
    let peak = status_mib("VmHWM:").unwrap_or(f64::NAN);
    let shape = cpu.shape(&out).to_vec();
    drop(out);
    let (t, c0) = (Instant::now(), cpu_ns());
    let out = enc.forward(&cpu, &image)?;
    let second = t.elapsed().as_secs_f64();
    let cpu_per_thread = (cpu_ns() - c0) as f64 * 1e-9 / threads as f64;
    drop(out);

    println!(
        "{} checkpoint: {}",
        if full { "full SegVol" } else { "encoder-only" },
        cpu.name()
    );
    println!(
        "  weights in memory      {:8.1} MiB",
        weight_bytes as f64 / (1 << 20) as f64
    );
    println!("  VmRSS before forward   {before:8.1} MiB");
    println!(
        "  VmHWM during forward   {peak:8.1} MiB{}",
        if reset {
            ""
        } else {
            " (peak reset refused: includes weight construction)"
        }
    );
    println!("  output {shape:?}; forward 1: {first:.3} s, forward 2: {second:.3} s");
    println!("  forward 2 CPU time per thread: {cpu_per_thread:.3} s");
    Ok(())
}
