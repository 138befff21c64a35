//! CPU backend op benchmarks at SegVol's real sizes (default config).
//!
//! `cargo bench --bench cpu_ops [-- FILTER]`. Throughput is reported as
//! elements per second where the "elements" are floating-point operations
//! (so `Gelem/s` reads as GFLOP/s) for the matrix products and attention,
//! and output elements otherwise. Threads: `SEGVOL_BENCH_THREADS` (default 2).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use segvol::backend::cpu::simd::{self, Isa};
use segvol::backend::cpu::{CpuBackend, CpuTensor};
use segvol::backend::{Activation, AttnOperand, AttnSpec, Backend, Interp};

#[path = "support/mod.rs"]
mod support;
use support::{ones, rnd, vit_attention, HEADS, MLP, TOKENS, WIDTH};

fn backend() -> CpuBackend {
    let threads = std::env::var("SEGVOL_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    CpuBackend::with_threads(threads).expect("thread pool")
}

fn config(c: &mut Criterion) -> criterion::BenchmarkGroup<'_, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group("cpu");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g
}

fn linears(c: &mut Criterion) {
    let cpu = backend();
    let mut g = config(c);
    let x = rnd(&cpu, &[1, TOKENS, WIDTH], 1, 1.0);
    let h = rnd(&cpu, &[1, TOKENS, MLP], 2, 1.0);
    let w_qkv = rnd(&cpu, &[3 * WIDTH, WIDTH], 3, 0.036);
    let w1 = rnd(&cpu, &[MLP, WIDTH], 4, 0.036);
    let b1 = rnd(&cpu, &[MLP], 5, 0.1);
    let w2 = rnd(&cpu, &[WIDTH, MLP], 6, 0.018);
    let b2 = rnd(&cpu, &[WIDTH], 7, 0.1);

    let flops = |m: usize, k: usize, n: usize| Throughput::Elements((2 * m * k * n) as u64);
    g.throughput(flops(TOKENS, WIDTH, 3 * WIDTH));
    g.bench_function("linear_2048x768_to_2304", |bch| {
        bch.iter(|| {
            cpu.linear(&x, &w_qkv, None, Activation::None, None)
                .unwrap()
        })
    });
    g.throughput(flops(TOKENS, WIDTH, MLP));
    g.bench_function("linear_2048x768_to_3072_gelu", |bch| {
        bch.iter(|| {
            cpu.linear(&x, &w1, Some(&b1), Activation::Gelu, None)
                .unwrap()
        })
    });
    g.throughput(flops(TOKENS, MLP, WIDTH));
    g.bench_function("linear_2048x3072_to_768_residual", |bch| {
        bch.iter(|| {
            cpu.linear(&h, &w2, Some(&b2), Activation::None, Some(&x))
                .unwrap()
        })
    });
    g.finish();
}

/// FLOPs of QKᵀ and PV (causal attention does about half, counted in full).
fn attn_flops(s: &AttnSpec) -> Throughput {
    Throughput::Elements((4 * s.batch * s.heads * s.q_len * s.kv_len * s.head_dim) as u64)
}

fn attention(c: &mut Criterion) {
    let cpu = backend();
    let mut g = config(c);

    // ViT self-attention, q/k/v read from the packed qkv projection.
    let qkv = rnd(&cpu, &[1, TOKENS, 3 * WIDTH], 11, 1.0);
    let vit = AttnSpec {
        batch: 1,
        heads: HEADS,
        head_dim: 64,
        q_len: TOKENS,
        kv_len: TOKENS,
        scale: 0.125,
        causal: false,
    };
    g.throughput(attn_flops(&vit));
    g.bench_function("attention_vit_12x64_2048", |bch| {
        bch.iter(|| {
            cpu.attention(
                AttnOperand::at(&qkv, 0),
                AttnOperand::at(&qkv, WIDTH),
                AttnOperand::at(&qkv, 2 * WIDTH),
                &vit,
            )
            .unwrap()
        })
    });

    // CLIP text encoder: 77 tokens, 8 heads × 64, causal.
    let (ct, cw) = (77, 512);
    let cq = rnd(&cpu, &[1, ct, cw], 12, 1.0);
    let ck = rnd(&cpu, &[1, ct, cw], 13, 1.0);
    let cv = rnd(&cpu, &[1, ct, cw], 14, 1.0);
    let clip = AttnSpec {
        batch: 1,
        heads: 8,
        head_dim: 64,
        q_len: ct,
        kv_len: ct,
        scale: 0.125,
        causal: true,
    };
    g.throughput(attn_flops(&clip));
    g.bench_function("attention_clip_causal_8x64_77", |bch| {
        bch.iter(|| {
            cpu.attention(
                AttnOperand::new(&cq),
                AttnOperand::new(&ck),
                AttnOperand::new(&cv),
                &clip,
            )
            .unwrap()
        })
    });

    // Mask decoder cross attention (downsampled width 384 = 8 heads × 48):
    // a handful of prompt tokens against the 2048 image tokens, and back.
    let (few, dw) = (8, 384);
    let small = rnd(&cpu, &[1, few, dw], 15, 1.0);
    let big_k = rnd(&cpu, &[1, TOKENS, dw], 16, 1.0);
    let big_v = rnd(&cpu, &[1, TOKENS, dw], 17, 1.0);
    let scale = 1.0 / 48f32.sqrt();
    for (name, q_len, kv_len) in [
        ("attention_cross_8x48_q8_kv2048", few, TOKENS),
        ("attention_cross_8x48_q2048_kv8", TOKENS, few),
    ] {
        let spec = AttnSpec {
            batch: 1,
            heads: 8,
            head_dim: 48,
            q_len,
            kv_len,
            scale,
            causal: false,
        };
        let (q, k, v) = if q_len == few {
            (&small, &big_k, &big_v)
        } else {
            (&big_k, &small, &small)
        };
        g.throughput(attn_flops(&spec));
        g.bench_function(name, |bch| {
            bch.iter(|| {
                cpu.attention(
                    AttnOperand::new(q),
                    AttnOperand::new(k),
                    AttnOperand::new(v),
                    &spec,
                )
                .unwrap()
            })
        });
    }
    g.finish();
}

fn norms_and_volumes(c: &mut Criterion) {
    let cpu = backend();
    let mut g = config(c);

    let x = rnd(&cpu, &[1, TOKENS, WIDTH], 21, 2.0);
    let (w, b) = (ones(&cpu, WIDTH), rnd(&cpu, &[WIDTH], 22, 0.1));
    g.throughput(Throughput::Elements((TOKENS * WIDTH) as u64));
    g.bench_function("layer_norm_2048x768", |bch| {
        bch.iter(|| cpu.layer_norm(&x, &w, &b, 1e-5).unwrap())
    });

    let item = [1, 192, 16, 32, 32];
    let n: usize = item.iter().product();
    let xi = rnd(&cpu, &item, 23, 2.0);
    let wi = rnd(&cpu, &item[1..], 24, 1.0);
    let bi = rnd(&cpu, &item[1..], 25, 0.1);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("layer_norm_item_gelu_192x16x32x32", |bch| {
        bch.iter(|| {
            cpu.layer_norm_item(&xi, &wi, &bi, 1e-5, Activation::Gelu)
                .unwrap()
        })
    });

    for (grid, cin, cout) in [([8, 16, 16], 768, 192), ([16, 32, 32], 192, 96)] {
        let vox: usize = grid.iter().product();
        let xc = rnd(&cpu, &[1, vox, cin], 26, 1.0);
        let wc = rnd(&cpu, &[cin, cout, 2, 2, 2], 27, 0.05);
        let bc = rnd(&cpu, &[cout], 28, 0.1);
        g.throughput(Throughput::Elements((2 * vox * cin * cout * 8) as u64));
        g.bench_with_input(
            BenchmarkId::new("conv_transpose_k2s2", format!("{vox}vox_{cin}to{cout}")),
            &(),
            |bch, _| {
                bch.iter(|| {
                    cpu.conv_transpose_k2s2(&xc, grid, &wc, &bc, Activation::Gelu)
                        .unwrap()
                })
            },
        );
    }

    let low = rnd(&cpu, &[1, 1, 32, 64, 64], 29, 1.0);
    g.throughput(Throughput::Elements((32 * 256 * 256) as u64));
    g.bench_function("resize_trilinear_32x64x64_to_32x256x256", |bch| {
        bch.iter(|| cpu.resize(&low, [32, 256, 256], Interp::Trilinear).unwrap())
    });
    g.finish();
}

/// One ViT block's weights at the real sizes.
struct Block {
    ln1: (CpuTensor, CpuTensor),
    qkv: CpuTensor,
    proj: (CpuTensor, CpuTensor),
    ln2: (CpuTensor, CpuTensor),
    fc1: (CpuTensor, CpuTensor),
    fc2: (CpuTensor, CpuTensor),
}

impl Block {
    fn new(cpu: &CpuBackend) -> Self {
        Block {
            ln1: (ones(cpu, WIDTH), rnd(cpu, &[WIDTH], 31, 0.1)),
            qkv: rnd(cpu, &[3 * WIDTH, WIDTH], 32, 0.036),
            proj: (
                rnd(cpu, &[WIDTH, WIDTH], 33, 0.036),
                rnd(cpu, &[WIDTH], 34, 0.1),
            ),
            ln2: (ones(cpu, WIDTH), rnd(cpu, &[WIDTH], 35, 0.1)),
            fc1: (
                rnd(cpu, &[MLP, WIDTH], 36, 0.036),
                rnd(cpu, &[MLP], 37, 0.1),
            ),
            fc2: (
                rnd(cpu, &[WIDTH, MLP], 38, 0.018),
                rnd(cpu, &[WIDTH], 39, 0.1),
            ),
        }
    }

    /// MONAI TransformerBlock: x + attn(LN1 x), then + mlp(LN2 x).
    fn forward(&self, cpu: &CpuBackend, x: &CpuTensor) -> CpuTensor {
        let spec = vit_attention();
        let h = cpu.layer_norm(x, &self.ln1.0, &self.ln1.1, 1e-5).unwrap();
        let qkv = cpu
            .linear(&h, &self.qkv, None, Activation::None, None)
            .unwrap();
        let a = cpu
            .attention(
                AttnOperand::at(&qkv, 0),
                AttnOperand::at(&qkv, WIDTH),
                AttnOperand::at(&qkv, 2 * WIDTH),
                &spec,
            )
            .unwrap();
        let x = cpu
            .linear(
                &a,
                &self.proj.0,
                Some(&self.proj.1),
                Activation::None,
                Some(x),
            )
            .unwrap();
        let h = cpu.layer_norm(&x, &self.ln2.0, &self.ln2.1, 1e-5).unwrap();
        let m = cpu
            .linear(&h, &self.fc1.0, Some(&self.fc1.1), Activation::Gelu, None)
            .unwrap();
        cpu.linear(
            &m,
            &self.fc2.0,
            Some(&self.fc2.1),
            Activation::None,
            Some(&x),
        )
        .unwrap()
    }
}

fn vit_block(c: &mut Criterion) {
    let cpu = backend();
    let mut g = config(c);
    let block = Block::new(&cpu);
    let x = rnd(&cpu, &[1, TOKENS, WIDTH], 30, 1.0);
    // qkv 7.2 + out_proj 2.4 + MLP 19.3 + attention 12.9 GFLOP.
    let flops = 2 * TOKENS * WIDTH * (3 * WIDTH + WIDTH + 2 * MLP) + 4 * TOKENS * TOKENS * WIDTH;
    g.throughput(Throughput::Elements(flops as u64));
    g.bench_function("vit_block_2048x768", |bch| {
        bch.iter(|| block.forward(&cpu, &x))
    });
    g.finish();
}

/// The vectorised elementwise kernels against their scalar instances, one
/// thread: GELU over one ViT MLP activation (2048×3072, copied in first) and
/// the softmax exponentials of one attention task's score block.
fn elementwise(c: &mut Criterion) {
    let cpu = backend();
    let mut g = config(c);
    let n = TOKENS * MLP;
    let x = rnd(&cpu, &[n], 41, 4.0);
    let x = x.data();
    let mut buf = x.to_vec();
    for isa in Isa::available() {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("gelu_2048x3072_{isa:?}"), |bch| {
            bch.iter(|| {
                buf.copy_from_slice(x);
                simd::gelu_inplace_on(isa, &mut buf)
            })
        });
        // One attention task's 256×512 score block, in cache, as the
        // attention kernel sees it (rewritten in place each time).
        let mut sbuf = x[..256 * 512].to_vec();
        g.throughput(Throughput::Elements(sbuf.len() as u64));
        g.bench_function(format!("softmax_exp_256x512_{isa:?}"), |bch| {
            bch.iter(|| {
                let mut tot = 0f32;
                for row in sbuf.chunks_mut(512) {
                    let m = simd::max_scaled_on(isa, row, 0.125);
                    tot += simd::exp_scaled_sum_on(isa, row, 0.125, m);
                }
                tot
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    linears,
    attention,
    norms_and_volumes,
    vit_block,
    elementwise
);
criterion_main!(benches);
