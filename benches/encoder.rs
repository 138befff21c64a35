//! The SegVol ViT image encoder forward on the CPU backend: default config
//! (input 1×1×32×256×256, 2048 tokens, 12 blocks, width 768), synthetic
//! weights (`weights::synth::synth_checkpoint`), encoder only.
//!
//! `cargo bench --bench encoder`. Threads: `SEGVOL_BENCH_THREADS` (default 2).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use segvol::backend::cpu::CpuBackend;
use segvol::backend::Backend;
use segvol::model::image_encoder::ImageEncoder;
use segvol::model::loader::Loader;
use segvol::weights::synth::synth_checkpoint;
use segvol::ModelConfig;

#[path = "support/mod.rs"]
mod support;
use support::smooth_image;

fn encoder(c: &mut Criterion) {
    let threads = std::env::var("SEGVOL_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let cpu = CpuBackend::with_threads(threads).expect("thread pool");
    let cfg = ModelConfig::default();
    let ckpt = synth_checkpoint(&cfg).expect("synthetic checkpoint");
    let enc = ImageEncoder::load(&Loader::new(&cpu, &ckpt), &cfg).expect("encoder weights");

    let [d, h, w] = cfg.spatial_size;
    let image = smooth_image(cfg.spatial_size);
    let image = cpu.upload(&image, &[1, 1, d, h, w]).expect("upload");

    // Matrix products only: per block qkv, out_proj, MLP and attention.
    let (n, cw, mlp) = (cfg.num_tokens(), cfg.hidden_size, cfg.vit_mlp_dim);
    let per_block = 2 * n * cw * (3 * cw + cw + 2 * mlp) + 4 * n * n * cw;
    let flops = cfg.vit_layers * per_block + 2 * n * cw * cfg.patch_volume();

    let mut g = c.benchmark_group("encoder");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(3))
        .measurement_time(Duration::from_secs(30))
        .throughput(Throughput::Elements(flops as u64));
    g.bench_function("vit_forward_default_1x1x32x256x256", |b| {
        b.iter(|| enc.forward(&cpu, &image).expect("forward"))
    });
    g.finish();
}

criterion_group!(benches, encoder);
criterion_main!(benches);
