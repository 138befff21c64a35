//! The CUDA backend at the default config's sizes: attention, the ViT's
//! linear layers, one ViT block and the whole encoder forward, in bf16 and
//! f32. Without a CUDA device it prints why and measures nothing.
//!
//! `cargo bench --bench cuda_ops [-- FILTER]`. Throughput in criterion's
//! `Gelem/s` is GFLOP/s (the matrix-product operations of each case).
//!
//! Each sample queues `iters` calls on the stream and synchronises once, so
//! the figure is the device time per call with launch overhead overlapped,
//! as it is inside the network (which never synchronises between ops).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use segvol::backend::cuda::{cuda_unavailable_reason, CudaBackend, CudaTensor, Precision};
use segvol::backend::{Activation, AttnOperand, Backend};
use segvol::model::SegVol;
use segvol::weights::synth::synth_checkpoint;
use segvol::ModelConfig;

#[path = "support/mod.rs"]
mod support;
use support::{rnd, smooth_image, vit_attention, MLP, TOKENS, WIDTH};

/// Times `f` as `iters` queued calls and one synchronisation.
fn queued(
    g: &mut BenchmarkGroup<'_, WallTime>,
    be: &CudaBackend,
    name: &str,
    flops: f64,
    mut f: impl FnMut() -> segvol::Result<CudaTensor>,
) {
    g.throughput(Throughput::Elements(flops as u64));
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            be.synchronize().expect("sync");
            let t = Instant::now();
            for _ in 0..iters {
                std::hint::black_box(f().expect("op"));
            }
            be.synchronize().expect("sync");
            t.elapsed()
        })
    });
}

fn ops(c: &mut Criterion, p: Precision) {
    let be = CudaBackend::new(0, p).expect("a CUDA device is present, so the backend must start");
    eprintln!("cuda_ops: {}", be.name());
    let tag = p.to_string();
    let mut g = c.benchmark_group(format!("cuda_{tag}"));
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    let x = rnd(&be, &[1, TOKENS, WIDTH], 1, 1.0);
    let w_qkv = rnd(&be, &[3 * WIDTH, WIDTH], 2, 0.03);
    let w_fc1 = rnd(&be, &[MLP, WIDTH], 3, 0.03);
    let b_fc1 = rnd(&be, &[MLP], 4, 0.1);
    let w_fc2 = rnd(&be, &[WIDTH, MLP], 5, 0.02);
    let b_fc2 = rnd(&be, &[WIDTH], 6, 0.1);
    let h = rnd(&be, &[1, TOKENS, MLP], 7, 1.0);

    let (n, c_, m) = (TOKENS as f64, WIDTH as f64, MLP as f64);
    queued(
        &mut g,
        &be,
        "linear_qkv_2048x768x2304",
        2.0 * n * c_ * 3.0 * c_,
        || be.linear(&x, &w_qkv, None, Activation::None, None),
    );
    queued(
        &mut g,
        &be,
        "linear_fc1_gelu_2048x768x3072",
        2.0 * n * c_ * m,
        || be.linear(&x, &w_fc1, Some(&b_fc1), Activation::Gelu, None),
    );
    queued(
        &mut g,
        &be,
        "linear_fc2_residual_2048x3072x768",
        2.0 * n * c_ * m,
        || be.linear(&h, &w_fc2, Some(&b_fc2), Activation::None, Some(&x)),
    );

    // The ViT's attention, reading q, k, v out of the packed projection.
    let qkv = rnd(&be, &[1, TOKENS, 3 * WIDTH], 8, 1.0);
    let spec = vit_attention();
    queued(
        &mut g,
        &be,
        "attention_vit_12x64_2048",
        4.0 * n * n * c_,
        || {
            be.attention(
                AttnOperand::at(&qkv, 0),
                AttnOperand::at(&qkv, WIDTH),
                AttnOperand::at(&qkv, 2 * WIDTH),
                &spec,
            )
        },
    );
    g.finish();

    // The whole encoder forward on a smooth synthetic image.
    let cfg = ModelConfig::default();
    let model = SegVol::load(
        be,
        Arc::new(synth_checkpoint(&cfg).expect("synth")),
        cfg.clone(),
    )
    .expect("model");
    let be = model.backend();
    let [d, hh, w] = cfg.spatial_size;
    let image = smooth_image(cfg.spatial_size);
    let image = be.upload(&image, &[1, 1, d, hh, w]).expect("upload");
    let per_block = 2.0 * n * c_ * (4.0 * c_ + 2.0 * m) + 4.0 * n * n * c_;
    let flops = cfg.vit_layers as f64 * per_block + 2.0 * n * c_ * cfg.patch_volume() as f64;
    let mut g = c.benchmark_group(format!("cuda_{tag}"));
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    queued(&mut g, be, "encoder_forward_1x1x32x256x256", flops, || {
        model.embed_image(&image).map(|e| e.tokens)
    });
    g.finish();
}

fn cuda(c: &mut Criterion) {
    if let Some(why) = cuda_unavailable_reason() {
        eprintln!("SKIP: no CUDA device ({why}); cuda_ops measured nothing");
        return;
    }
    ops(c, Precision::Bf16);
    ops(c, Precision::F32);
}

criterion_group!(benches, cuda);
criterion_main!(benches);
