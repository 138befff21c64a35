//! `segvol bench`: latency of the encoder, the decoder and the whole
//! zoom-out-zoom-in pipeline on one device, with synthetic weights unless
//! told otherwise.

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use segvol::backend::Backend;
use segvol::error::{Error, Result};
use segvol::io::nifti::read_ct;
use segvol::model::{ClipTokenizer, GeomPrompt, Prompt, SegVol, TextEmbedder};
use segvol::pipeline::preprocess::{preprocess, preprocess_ct, Preprocessed};
use segvol::pipeline::zoom::{CategoryPrompt, Segmenter, ZoomOptions};
use segvol::report::envelope::wrap;
use segvol::weights::synth::synth_checkpoint;
use segvol::ModelConfig;

use super::common::{dispatch, load_model, write_json, BackendTask};
use super::BenchArgs;

pub fn run(args: BenchArgs) -> Result<()> {
    validate(&args)?;
    let engine = args.engine.clone();
    dispatch(&engine, Task { args })
}

struct Task {
    args: BenchArgs,
}

/// Median and 90th percentile of samples in seconds, reported in ms.
fn stats(mut s: Vec<f64>) -> (f64, f64) {
    s.sort_by(f64::total_cmp);
    let q = |p: f64| s[((s.len() - 1) as f64 * p).round() as usize] * 1e3;
    (q(0.5), q(0.9))
}

fn time<B: Backend>(
    be: &B,
    warmup: usize,
    iters: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        f()?;
    }
    be.synchronize()?;
    let mut out = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        f()?;
        be.synchronize()?;
        out.push(t.elapsed().as_secs_f64());
    }
    Ok(out)
}

/// A CT-like phantom (HU): air, a body ellipsoid, an organ and a bone rod.
fn phantom(dims_xyz: [usize; 3]) -> Vec<f32> {
    let [x, y, z] = dims_xyz;
    let mut v = vec![-1000f32; x * y * z];
    for k in 0..z {
        for j in 0..y {
            for i in 0..x {
                let (u, w) = (
                    (i as f32 / x as f32 - 0.5) * 2.0,
                    (j as f32 / y as f32 - 0.5) * 2.0,
                );
                let t = (k as f32 / z as f32 - 0.5) * 2.0;
                let body = u * u / 0.8 + w * w / 0.6 < 1.0;
                let organ =
                    (u - 0.25).powi(2) / 0.08 + (w + 0.1).powi(2) / 0.06 + t * t / 0.5 < 1.0;
                let bone = (u * u + (w - 0.45).powi(2)) < 0.01;
                let hu = if bone {
                    700.0
                } else if organ {
                    60.0
                } else if body {
                    20.0 + 30.0 * ((i * 7 + j * 13 + k * 17) % 11) as f32 / 11.0
                } else {
                    -1000.0
                };
                v[(k * y + j) * x + i] = hu;
            }
        }
    }
    v
}

fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

impl BackendTask for Task {
    type Output = ();

    fn run<B: Backend>(self, backend: B) -> Result<()> {
        let a = self.args;
        let device = backend.name();
        tracing::info!("bench: device {device}");
        let t0 = Instant::now();
        let (model, mut texts, weights_desc) = match &a.engine.weights {
            Some(w) => {
                let l = load_model(backend, w)?;
                (l.model, l.texts, w.display().to_string())
            }
            None => {
                let cfg = ModelConfig::named(&a.config)?;
                let ck = synth_checkpoint(&cfg)?;
                (
                    SegVol::load(backend, Arc::new(ck), cfg)?,
                    TextEmbedder::new(ClipTokenizer::builtin()?),
                    format!("synthetic {} (synth v2)", a.config),
                )
            }
        };
        let load_s = t0.elapsed().as_secs_f64();
        let be = model.backend();
        // Device memory after the load: the weights (and nothing else yet).
        let weights_mem = be.memory_peak();
        let cfg = model.config().clone();
        let [d, h, w] = cfg.spatial_size;

        // Volume: the given CT or the phantom.
        let (pre, volume_desc): (Preprocessed, String) = match &a.ct {
            Some(p) => {
                let ct = read_ct(p)?;
                (
                    preprocess_ct(&ct, cfg.spatial_size)?,
                    p.display().to_string(),
                )
            }
            None => {
                let dims = [a.phantom[0], a.phantom[1], a.phantom[2]];
                let v = phantom(dims);
                (
                    preprocess(&v, [dims[2], dims[1], dims[0]], cfg.spatial_size)?,
                    format!("phantom {}x{}x{}", dims[0], dims[1], dims[2]),
                )
            }
        };
        tracing::info!(
            "bench: weights {weights_desc}; volume {volume_desc}, cropped {:?}",
            pre.cropped_dims()
        );

        let (warm, iters) = (a.warmup, a.iters.max(1));
        let mut rows: Vec<(String, f64, f64, String)> = Vec::new();

        // Encoder, batch 1 (and the batch used for zoom-in windows).
        let image = be.upload(&pre.zoom_out, &[1, 1, d, h, w])?;
        let enc = stats(time(be, warm, iters, || {
            model.embed_image(&image).map(|_| ())
        })?);
        let flops = 2.0
            * (cfg.num_tokens() as f64)
            * (cfg.hidden_size as f64)
            * (12.0 * cfg.hidden_size as f64 + 2.0 * cfg.num_tokens() as f64)
            * cfg.vit_layers as f64;
        rows.push((
            "encoder forward (batch 1)".into(),
            enc.0,
            enc.1,
            format!("{:.1} TFLOP/s", flops / enc.0 * 1e3 / 1e12),
        ));
        let wb = a.engine.window_batch.max(1);
        if wb > 1 {
            let batch: Vec<f32> = (0..wb).flat_map(|_| pre.zoom_out.iter().copied()).collect();
            let bimg = be.upload(&batch, &[wb, 1, d, h, w])?;
            let e = stats(time(be, warm.min(1), iters, || {
                model.embed_image(&bimg).map(|_| ())
            })?);
            rows.push((
                format!("encoder forward (batch {wb})"),
                e.0,
                e.1,
                format!("{:.1} ms per window", e.0 / wb as f64),
            ));
        }

        // Text (CLIP) once per name, then the decoder alone.
        let t = Instant::now();
        let text = texts.embed(&model, &a.text)?;
        let clip_ms = t.elapsed().as_secs_f64() * 1e3;
        rows.push((
            "text embedding (CLIP, first)".into(),
            clip_ms,
            clip_ms,
            a.text.clone(),
        ));
        let emb = model.embed_image(&image)?;
        let bbox = [
            d as f32 * 0.25,
            h as f32 * 0.3,
            w as f32 * 0.3,
            d as f32 * 0.75,
            h as f32 * 0.7,
            w as f32 * 0.7,
        ]
        .map(f32::floor);
        let prompt = Prompt {
            geom: GeomPrompt {
                bbox: Some(bbox),
                points: vec![],
            },
            text: Some(text.clone()),
        };
        let dec = stats(time(be, warm, iters, || {
            model
                .decode(&emb, 0, std::slice::from_ref(&prompt))
                .map(|_| ())
        })?);
        rows.push((
            "decoder + upsample (box+text)".into(),
            dec.0,
            dec.1,
            String::new(),
        ));

        // Whole pipeline, cold (fresh segmenter: zoom-out + windows encoded).
        let cat = CategoryPrompt {
            text: Some(text),
            bbox: Some(bbox),
            points: vec![],
        };
        let opts = ZoomOptions {
            window_batch: wb,
            ..ZoomOptions::default()
        };
        let mut windows = 0;
        let pipe = stats(time(be, warm.min(1), iters, || {
            let mut seg = Segmenter::new(&model, opts.clone());
            let r = seg.segment(&pre, std::slice::from_ref(&cat), &mut |_| {})?;
            windows = r[0].windows.len();
            Ok(())
        })?);
        rows.push((
            "zoom-out-zoom-in, 1 prompt, cold".into(),
            pipe.0,
            pipe.1,
            format!("{windows} windows; {:.1} volumes/min", 60e3 / pipe.0),
        ));

        // Re-prompt with the volume resident: embeddings cached.
        let mut seg = Segmenter::new(&model, opts);
        seg.segment(&pre, std::slice::from_ref(&cat), &mut |_| {})?;
        seg.timings = Default::default();
        let re = stats(time(be, 0, iters, || {
            seg.segment(&pre, std::slice::from_ref(&cat), &mut |_| {})
                .map(|_| ())
        })?);
        // Where a re-prompt's time goes (means over the iterations): the
        // zoom-out decode (decoder, upsample, download, resize to the
        // cropped frame), the window decodes with their paste-back, and the
        // zoom-in host work (prompts per window, zeroing and averaging).
        let per = |d: std::time::Duration| d.as_secs_f64() * 1e3 / iters as f64;
        rows.push((
            "re-prompt, volume resident".into(),
            re.0,
            re.1,
            format!(
                "embeddings cached; zoom-out {:.2} ms, zoom-in decode {:.2} ms, host {:.2} ms",
                per(seg.timings.zoom_out_decode),
                per(seg.timings.zoom_in_decode),
                per(seg.timings.zoom_in_host)
            ),
        ));

        println!("\nsegvol bench  {device}");
        println!(
            "weights {weights_desc}; volume {volume_desc}; {iters} iterations after {warm} warm-up"
        );
        println!("{:36} {:>10} {:>10}  note", "stage", "median ms", "p90 ms");
        for (name, med, p90, note) in &rows {
            println!("{name:36} {med:>10.2} {p90:>10.2}  {note}");
        }
        let rss = peak_rss_mb();
        let mb = |v: Option<usize>| v.map(|b| b as f64 / (1u64 << 20) as f64);
        let (dev_peak, dev_weights) = (mb(be.memory_peak()), mb(weights_mem));
        println!(
            "model load {:.2} s; peak RSS {} MB{}",
            load_s,
            rss.map_or("?".into(), |v| format!("{v:.0}")),
            match (dev_peak, dev_weights) {
                (Some(p), Some(w)) =>
                    format!("; peak device memory {p:.0} MiB (weights {w:.0} MiB)"),
                _ => String::new(),
            }
        );
        if let Some(jp) = &a.json {
            let r: Vec<_> = rows.iter().map(|(n, m, p, note)| json!({"stage": n, "median_ms": m, "p90_ms": p, "note": note})).collect();
            write_json(
                jp,
                &wrap(
                    "bench",
                    &device,
                    json!({"weights": weights_desc, "volume": volume_desc, "iters": iters, "warmup": warm, "rows": r, "model_load_s": load_s, "peak_rss_mb": rss, "peak_device_mib": dev_peak, "device_weights_mib": dev_weights}),
                ),
            )?;
        }
        Ok(())
    }
}

/// Checks the arguments that clap cannot.
pub fn validate(a: &BenchArgs) -> Result<()> {
    if a.phantom.len() != 3 || a.phantom.contains(&0) {
        return Err(Error::Invalid("--phantom takes X,Y,Z, all positive".into()));
    }
    Ok(())
}
