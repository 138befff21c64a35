//! Zoom-out-zoom-in inference (docs/REFERENCE.md §5), with the work the reference
//! repeats done once: the zoom-out image embedding is shared by every
//! category, each zoom-in window's embedding is cached and shared by every
//! category whose ROI places a window at the same spot, and windows go
//! through the encoder in batches.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::is_foreground;
use super::preprocess::Preprocessed;
use super::progress::Progress;
use super::prompt_maps::{AxisView, CubeMap, PointMap};
use super::sampling::{select_points, Rng};
use super::windows::{roi_from_bbox, roi_ranges, BoxI, WindowGrid};
use rayon::prelude::*;

use crate::backend::interp::resize;
use crate::backend::{Backend, Interp};
use crate::error::{Error, Result};
use crate::model::{GeomPrompt, ImageEmbedding, Prompt, SegVol, TextEmbedding};

/// How the zoom-in stage treats the reference's prompt-map padding slip
/// (docs/REFERENCE.md §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadMode {
    /// The prompt map is padded like the window image, so a single padded
    /// window's box lines up with the image.
    Fixed,
    /// As the reference: the prompt map is not padded, so that box is off by
    /// the padding.
    Faithful,
}

#[derive(Clone, Debug)]
pub struct ZoomOptions {
    pub pad_mode: PadMode,
    pub zoom_in: bool,
    /// Sliding-window overlap (0.5 in the reference).
    pub overlap: f64,
    /// Windows per encoder batch.
    pub window_batch: usize,
    /// Seed of the zoom-in point sampling.
    pub seed: u64,
    /// Memory the window-embedding cache may hold.
    pub cache_bytes: usize,
}

impl Default for ZoomOptions {
    fn default() -> Self {
        ZoomOptions {
            pad_mode: PadMode::Fixed,
            zoom_in: true,
            overlap: 0.5,
            window_batch: 2,
            seed: 0,
            cache_bytes: 1 << 30,
        }
    }
}

/// One category to segment, prompts in the zoom-out frame `(d, h, w)`.
#[derive(Clone, Debug, Default)]
pub struct CategoryPrompt {
    pub text: Option<TextEmbedding>,
    pub bbox: Option<[f32; 6]>,
    pub points: Vec<([f32; 3], f32)>,
}

impl CategoryPrompt {
    fn prompt(&self) -> Prompt {
        Prompt {
            geom: GeomPrompt {
                bbox: self.bbox,
                points: self.points.clone(),
            },
            text: self.text.clone(),
        }
    }
}

/// What one window was given.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowRecord {
    /// Start in the padded ROI frame.
    pub start: [usize; 3],
    pub bbox: Option<[f32; 6]>,
    pub points: Vec<([f32; 3], f32)>,
}

/// The result for one category, on the cropped full-resolution frame.
#[derive(Clone, Debug)]
pub struct CategoryResult {
    /// Final logits (zoom-in logits inside the ROI, zoom-out outside).
    pub logits: Vec<f32>,
    /// The ROI as `logits2roi_coor` returns it (inclusive, max clamped to the
    /// size); `None` when zoom-in was off or the zoom-out pass found nothing.
    pub roi: Option<BoxI>,
    pub grid: Option<WindowGrid>,
    pub windows: Vec<WindowRecord>,
}

/// Wall time per stage and work counts.
#[derive(Clone, Debug, Default)]
pub struct Timings {
    pub zoom_out_encode: Duration,
    pub zoom_out_decode: Duration,
    pub zoom_in_encode: Duration,
    pub zoom_in_decode: Duration,
    pub windows_encoded: usize,
    pub windows_reused: usize,
    pub window_decodes: usize,
    /// Zoom-in host work besides the decodes: foreground bbox, ROI, window
    /// grid and per-window prompts, and the ROI's zeroing and averaging.
    pub zoom_in_host: Duration,
}

/// Identifies a window's image content: ROI placement and window start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct WindowKey {
    roi_start: [usize; 3],
    roi_size: [usize; 3],
    start: [usize; 3],
}

struct CacheEntry<B: Backend> {
    emb: Arc<ImageEmbedding<B>>,
    last_use: u64,
}

/// Window embeddings, least recently used evicted past the budget.
struct EmbeddingCache<B: Backend> {
    map: HashMap<WindowKey, CacheEntry<B>>,
    entry_bytes: usize,
    budget: usize,
    tick: u64,
}

impl<B: Backend> EmbeddingCache<B> {
    fn get(&mut self, k: &WindowKey) -> Option<Arc<ImageEmbedding<B>>> {
        self.tick += 1;
        let t = self.tick;
        self.map.get_mut(k).map(|e| {
            e.last_use = t;
            e.emb.clone()
        })
    }

    fn insert(&mut self, k: WindowKey, emb: Arc<ImageEmbedding<B>>) {
        self.tick += 1;
        while !self.map.is_empty() && (self.map.len() + 1) * self.entry_bytes > self.budget {
            let oldest = *self
                .map
                .iter()
                .min_by_key(|(_, e)| e.last_use)
                .map(|(k, _)| k)
                .expect("non-empty");
            self.map.remove(&oldest);
        }
        self.map.insert(
            k,
            CacheEntry {
                emb,
                last_use: self.tick,
            },
        );
    }
}

/// A preprocessed volume's dims, crop start and crop end.
type VolumeGeometry = ([usize; 3], [usize; 3], [usize; 3]);

/// Runs the pipeline for one preprocessed volume; keeps the window cache
/// between calls so re-prompting the same volume reuses encoder work.
pub struct Segmenter<'m, B: Backend> {
    model: &'m SegVol<B>,
    pub opts: ZoomOptions,
    zoom_out_emb: Option<ImageEmbedding<B>>,
    /// The volume the embeddings belong to: its crop and zoom-out image.
    /// A different volume resets the caches.
    volume: Option<(VolumeGeometry, Vec<f32>)>,
    cache: EmbeddingCache<B>,
    /// Set while `segment` runs, after it bound the volume once: the steps
    /// it calls skip their own (volume-sized) comparison.
    bound: bool,
    pub timings: Timings,
}

impl<'m, B: Backend> Segmenter<'m, B> {
    pub fn new(model: &'m SegVol<B>, opts: ZoomOptions) -> Self {
        let cfg = model.config();
        let entry_bytes = cfg.num_tokens() * cfg.hidden_size * 4;
        Segmenter {
            model,
            cache: EmbeddingCache {
                map: HashMap::new(),
                entry_bytes,
                budget: opts.cache_bytes,
                tick: 0,
            },
            opts,
            zoom_out_emb: None,
            volume: None,
            bound: false,
            timings: Timings::default(),
        }
    }

    /// Forgets the volume (zoom-out embedding and window cache).
    pub fn reset(&mut self) {
        self.zoom_out_emb = None;
        self.volume = None;
        self.cache.map.clear();
    }

    /// Bytes held by the embeddings (zoom-out and cached windows): what
    /// [`Segmenter::reset`] frees. A server sums this over its sessions to
    /// keep them within a memory budget.
    pub fn cached_bytes(&self) -> usize {
        let zoom_out = usize::from(self.zoom_out_emb.is_some());
        // The bound volume's zoom-out image copy goes with the caches.
        let bound = self.volume.as_ref().map_or(0, |(_, z)| z.len() * 4);
        (zoom_out + self.cache.map.len()) * self.cache.entry_bytes + bound
    }

    /// Resets the caches when `pre` is not the volume they were built for
    /// (an 8 MB comparison, against a 2 s encoder pass on the CPU).
    fn bind_volume(&mut self, pre: &Preprocessed) {
        if self.bound {
            return;
        }
        let geom = (pre.dims, pre.crop_start, pre.crop_end);
        // Bitwise (one memcmp): float equality would also be slower.
        fn bits(v: &[f32]) -> &[u8] {
            bytemuck::cast_slice(v)
        }
        let same = self
            .volume
            .as_ref()
            .is_some_and(|(g, z)| *g == geom && bits(z) == bits(&pre.zoom_out));
        if !same {
            self.reset();
            self.volume = Some((geom, pre.zoom_out.clone()));
        }
    }

    fn window_shape(&self) -> [usize; 3] {
        self.model.config().spatial_size
    }

    /// The zoom-out image embedding of `pre`, computed on first use.
    pub fn zoom_out_embedding(&mut self, pre: &Preprocessed) -> Result<&ImageEmbedding<B>> {
        self.bind_volume(pre);
        if self.zoom_out_emb.is_none() {
            let t = Instant::now();
            let emb = self.model.embed_image_host(&pre.zoom_out, 1)?;
            self.model.backend().synchronize()?;
            self.timings.zoom_out_encode += t.elapsed();
            self.zoom_out_emb = Some(emb);
        }
        Ok(self.zoom_out_emb.as_ref().expect("set above"))
    }

    /// Zoom-out logits of each category, `nearest`-resized to the cropped
    /// frame (docs/REFERENCE.md §5 B–C).
    pub fn zoom_out_logits(
        &mut self,
        pre: &Preprocessed,
        cats: &[CategoryPrompt],
    ) -> Result<Vec<Vec<f32>>> {
        self.zoom_out_embedding(pre)?;
        let t = Instant::now();
        let model = self.model;
        let be = model.backend();
        let emb = self.zoom_out_emb.as_ref().expect("computed above");
        let prompts: Vec<Prompt> = cats.iter().map(CategoryPrompt::prompt).collect();
        let lowres = model.decode_lowres(emb, 0, &prompts)?;
        let mut out = Vec::with_capacity(cats.len());
        for k in 0..cats.len() {
            let one = be.slice_batch(&lowres, k, 1)?;
            // The network's own trilinear upsample, then the pipeline's
            // legacy-nearest resize to the cropped frame.
            let spatial = model.config().spatial_size;
            let up = be.resize(&one, spatial, Interp::Trilinear)?;
            // The nearest resize is index selection only, so any backend's
            // values come through unchanged wherever it runs. A cropped
            // frame no larger than the network's input is selected on the
            // device (less to download); a larger one on the host, straight
            // into the result (no device-sized copy, no second host copy).
            let cd = pre.cropped_dims();
            let cropped = if cd.iter().product::<usize>() <= spatial.iter().product() {
                be.download(&be.resize(&up, cd, Interp::Nearest)?)?
            } else {
                let full = be.download(&up)?;
                let mut cropped = vec![0f32; cd.iter().product()];
                resize(&full, 1, spatial, cd, Interp::Nearest, &mut cropped);
                cropped
            };
            out.push(cropped);
        }
        self.timings.zoom_out_decode += t.elapsed();
        Ok(out)
    }

    /// The whole pipeline for several categories of one volume. `progress`
    /// is told each stage and each decoded zoom-in window as it happens.
    pub fn segment(
        &mut self,
        pre: &Preprocessed,
        cats: &[CategoryPrompt],
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Vec<CategoryResult>> {
        for (i, c) in cats.iter().enumerate() {
            if c.text.is_none() && c.bbox.is_none() && c.points.is_empty() {
                return Err(Error::prompt(
                    format!("category {}", i + 1),
                    "has no text, box or point",
                ));
            }
        }
        self.bind_volume(pre);
        self.bound = true;
        let out = self.segment_bound(pre, cats, progress);
        self.bound = false;
        out
    }

    fn segment_bound(
        &mut self,
        pre: &Preprocessed,
        cats: &[CategoryPrompt],
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Vec<CategoryResult>> {
        report(
            progress,
            Progress::ZoomOut {
                categories: cats.len(),
            },
        );
        let global = self.zoom_out_logits(pre, cats)?;
        let mut results = Vec::with_capacity(cats.len());
        for (ci, (cat, logits)) in cats.iter().zip(global).enumerate() {
            let res = if self.opts.zoom_in {
                self.zoom_in_reporting(pre, cat, (ci, cats.len()), logits, progress)?
            } else {
                CategoryResult {
                    logits,
                    roi: None,
                    grid: None,
                    windows: vec![],
                }
            };
            results.push(res);
        }
        Ok(results)
    }

    /// Steps D-G for one category: ROI, sliding windows, paste-back.
    pub fn zoom_in(
        &mut self,
        pre: &Preprocessed,
        cat: &CategoryPrompt,
        cat_index: usize,
        logits: Vec<f32>,
    ) -> Result<CategoryResult> {
        self.zoom_in_reporting(pre, cat, (cat_index, 1), logits, &mut |_| {})
    }

    /// [`Segmenter::zoom_in`] for category `of.0` of `of.1`, telling
    /// `progress` the window count and each decoded window.
    fn zoom_in_reporting(
        &mut self,
        pre: &Preprocessed,
        cat: &CategoryPrompt,
        of: (usize, usize),
        mut logits: Vec<f32>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<CategoryResult> {
        let (cat_index, categories) = of;
        self.bind_volume(pre);
        let t_host = Instant::now();
        let dims = pre.cropped_dims();
        let win = self.window_shape();
        let Some(bbox) = positive_bbox(&logits, dims) else {
            // "Fail to detect foreground": the zoom-out result is final.
            report(
                progress,
                Progress::ZoomIn {
                    category: cat_index,
                    categories,
                    windows: 0,
                },
            );
            return Ok(CategoryResult {
                logits,
                roi: None,
                grid: None,
                windows: vec![],
            });
        };
        let roi = roi_from_bbox(bbox, dims, win);
        let (rs, re) = roi_ranges(roi, dims);
        let size = [0, 1, 2].map(|a| re[a] - rs[a]);
        let grid = WindowGrid::new(size, win, self.opts.overlap);
        let at = RoiLayout {
            dims,
            rs,
            size,
            windows: grid.windows(),
            grid,
        };
        report(
            progress,
            Progress::ZoomIn {
                category: cat_index,
                categories,
                windows: at.windows.len(),
            },
        );
        // The prompts read the zoom-out foreground from `logits`, which
        // stay unchanged until every window's prompts are built.
        let records = self.window_records(pre, cat, cat_index, &logits, &at);
        // Windows are summed into the ROI of `logits` itself: the padding is
        // dropped anyway, so no padded-ROI-sized buffer is needed (the sums
        // and their order are those of a separate buffer).
        at.for_roi_rows(&mut logits, |_, _, row| row.fill(0.0));
        let mut host = t_host.elapsed();
        self.decode_windows(pre, cat, &at, &records, &mut logits, &mut |done| {
            report(
                progress,
                Progress::Window {
                    category: cat_index,
                    done,
                    windows: records.len(),
                },
            )
        })?;
        let t_avg = Instant::now();
        average_by_coverage(&mut logits, &at);
        host += t_avg.elapsed();
        self.timings.zoom_in_host += host;
        Ok(CategoryResult {
            logits,
            roi: Some(roi),
            grid: Some(at.grid),
            windows: records,
        })
    }

    /// Step E: each window's prompts. Independent per window (each has its
    /// own seeded generator), so they are built in parallel; the order of
    /// the result is the windows' order.
    fn window_records(
        &self,
        pre: &Preprocessed,
        cat: &CategoryPrompt,
        cat_index: usize,
        logits: &[f32],
        at: &RoiLayout,
    ) -> Vec<WindowRecord> {
        let (dims, rs, size, grid) = (at.dims, at.rs, at.size, &at.grid);
        let win = grid.window;
        let single = at.windows.len() == 1;
        let zoom = pre.zoom_out_dims;
        let cube = cat.bbox.as_ref().map(|b| CubeMap::new(b, zoom, dims));
        // Box and points together: the reference refuses this in zoom-in;
        // here the box rule wins and the points served the zoom-out pass.
        let point_map = (cube.is_none() && !cat.points.is_empty())
            .then(|| PointMap::new(&cat.points, zoom, dims));
        let map_shift = match self.opts.pad_mode {
            PadMode::Fixed => grid.pad_before,
            PadMode::Faithful => [0; 3],
        };
        let seed = self.opts.seed;
        at.windows
            .par_iter()
            .enumerate()
            .map(|(wi, &start)| {
                let map_view = [0, 1, 2].map(|a| AxisView {
                    start: start[a],
                    shift: map_shift[a],
                    size: size[a],
                    len: win[a],
                });
                let img_view = [0, 1, 2].map(|a| AxisView {
                    start: start[a],
                    shift: grid.pad_before[a],
                    size: size[a],
                    len: win[a],
                });
                let preds_box = || window_foreground_bbox(logits, dims, rs, &img_view);
                if let Some(cube) = &cube {
                    let b = if single {
                        cube.bbox_in(rs, &map_view)
                            .unwrap_or(super::windows::EMPTY_BOX)
                    } else {
                        preds_box()
                    };
                    WindowRecord {
                        start,
                        bbox: Some(b),
                        points: vec![],
                    }
                } else if let Some(pm) = &point_map {
                    let pos = pm.positives_in(rs, &map_view);
                    let mut rng = Rng::derive(seed, &[cat_index as u64, wi as u64]);
                    let pts = select_points(&mut rng, &pos, &[], 4, 0);
                    WindowRecord {
                        start,
                        bbox: Some(preds_box()),
                        points: pts,
                    }
                } else {
                    WindowRecord {
                        start,
                        bbox: None,
                        points: vec![],
                    }
                }
            })
            .collect()
    }

    /// Step F: encodes (or reuses) the window embeddings in batches,
    /// decodes each window with its prompts, and adds the part of its
    /// logits inside the ROI to `logits`.
    fn decode_windows(
        &mut self,
        pre: &Preprocessed,
        cat: &CategoryPrompt,
        at: &RoiLayout,
        records: &[WindowRecord],
        logits: &mut [f32],
        decoded: &mut dyn FnMut(usize),
    ) -> Result<()> {
        let (dims, rs, size, grid) = (at.dims, at.rs, at.size, &at.grid);
        let (pb, win) = (grid.pad_before, grid.window);
        let plane = dims[1] * dims[2];
        // A window axis range [s, s + len) in the padded frame → the part
        // inside the ROI: (first window index, first ROI index, count).
        let clip = |a: usize, s: usize| -> Option<(usize, usize, usize)> {
            let lo = s.max(pb[a]);
            let hi = (s + win[a]).min(pb[a] + size[a]);
            (lo < hi).then(|| (lo - s, lo - pb[a], hi - lo))
        };
        let batch = self.opts.window_batch.max(1);
        for chunk in (0..at.windows.len()).collect::<Vec<_>>().chunks(batch) {
            let starts = chunk.iter().map(|&i| at.windows[i]).collect();
            let embs = self.window_embeddings(pre, rs, size, grid, starts)?;
            let t = Instant::now();
            for (&wi, emb) in chunk.iter().zip(embs) {
                let rec = &records[wi];
                let p = Prompt {
                    geom: GeomPrompt {
                        bbox: rec.bbox,
                        points: rec.points.clone(),
                    },
                    text: cat.text.clone(),
                };
                let out = self.model.decode(&emb, 0, std::slice::from_ref(&p))?;
                let s = rec.start;
                if let (Some((d0, rd, nd)), Some((h0, rh, nh)), Some((w0, rw, nw))) =
                    (clip(0, s[0]), clip(1, s[1]), clip(2, s[2]))
                {
                    // Only the part inside the ROI leaves the device.
                    let part =
                        self.model
                            .backend()
                            .download_box(&out, [d0, h0, w0], [nd, nh, nw])?;
                    logits
                        .par_chunks_mut(plane)
                        .skip(rs[0] + rd)
                        .take(nd)
                        .enumerate()
                        .for_each(|(d, slab)| {
                            for h in 0..nh {
                                let dst = (rs[1] + rh + h) * dims[2] + rs[2] + rw;
                                let src = (d * nh + h) * nw;
                                for (o, v) in
                                    slab[dst..dst + nw].iter_mut().zip(&part[src..src + nw])
                                {
                                    *o += v;
                                }
                            }
                        });
                }
                self.timings.window_decodes += 1;
                decoded(wi + 1);
            }
            self.timings.zoom_in_decode += t.elapsed();
        }
        Ok(())
    }

    /// Embeddings of the given windows, from the cache or the encoder.
    fn window_embeddings(
        &mut self,
        pre: &Preprocessed,
        rs: [usize; 3],
        size: [usize; 3],
        grid: &WindowGrid,
        starts: Vec<[usize; 3]>,
    ) -> Result<Vec<Arc<ImageEmbedding<B>>>> {
        let keys: Vec<WindowKey> = starts
            .iter()
            .map(|&start| WindowKey {
                roi_start: rs,
                roi_size: size,
                start,
            })
            .collect();
        let mut got: Vec<Option<Arc<ImageEmbedding<B>>>> =
            keys.iter().map(|k| self.cache.get(k)).collect();
        let missing: Vec<usize> = (0..keys.len()).filter(|&i| got[i].is_none()).collect();
        self.timings.windows_reused += keys.len() - missing.len();
        if !missing.is_empty() {
            let t = Instant::now();
            let win = self.window_shape();
            let n: usize = win.iter().product();
            let mut host = vec![0f32; missing.len() * n];
            host.par_chunks_mut(n)
                .zip(&missing)
                .for_each(|(out, &i)| extract_window(pre, rs, size, grid, starts[i], out));
            let emb = self.model.embed_image_host(&host, missing.len())?;
            let be = self.model.backend();
            for (j, &i) in missing.iter().enumerate() {
                let one = be.slice_batch(&emb.tokens, j, 1)?;
                let e = Arc::new(ImageEmbedding { tokens: one });
                self.cache.insert(keys[i], e.clone());
                got[i] = Some(e);
            }
            be.synchronize()?;
            self.timings.zoom_in_encode += t.elapsed();
            self.timings.windows_encoded += missing.len();
        }
        Ok(got.into_iter().map(|e| e.expect("filled above")).collect())
    }
}

/// Tells the caller, and `tracing` subscribers, one pipeline step: stages at
/// debug level, single windows at trace level.
fn report(progress: &mut dyn FnMut(Progress), p: Progress) {
    match p {
        Progress::Window { .. } => tracing::trace!(target: "segvol::pipeline", "{p}"),
        _ => tracing::debug!(target: "segvol::pipeline", "{p}"),
    }
    progress(p);
}

/// Where one category's zoom-in works: the cropped frame's dims, the ROI
/// (start `rs`, `size`) inside it, and the window grid over the ROI.
struct RoiLayout {
    dims: [usize; 3],
    rs: [usize; 3],
    size: [usize; 3],
    grid: WindowGrid,
    windows: Vec<[usize; 3]>,
}

impl RoiLayout {
    /// Calls `f(d, h, row)` for every ROI row of a cropped-frame volume
    /// (`d`, `h` relative to the ROI; `row` its `size[2]` voxels), planes
    /// in parallel.
    fn for_roi_rows(&self, v: &mut [f32], f: impl Fn(usize, usize, &mut [f32]) + Sync + Send) {
        let (dims, rs, size) = (self.dims, self.rs, self.size);
        v.par_chunks_mut(dims[1] * dims[2])
            .skip(rs[0])
            .take(size[0])
            .enumerate()
            .for_each(|(d, slab)| {
                for h in 0..size[1] {
                    let dst = (rs[1] + h) * dims[2] + rs[2];
                    f(d, h, &mut slab[dst..dst + size[2]]);
                }
            });
    }
}

/// Step G: constant blending, each ROI voxel divided by the number of
/// windows that cover it (the per-axis coverages multiply).
fn average_by_coverage(logits: &mut [f32], at: &RoiLayout) {
    let (grid, pb) = (&at.grid, at.grid.pad_before);
    let cov = [0, 1, 2].map(|a| {
        (0..grid.padded[a])
            .map(|i| grid.coverage(a, i) as f32)
            .collect::<Vec<_>>()
    });
    at.for_roi_rows(logits, |d, h, row| {
        let dh = cov[0][d + pb[0]] * cov[1][h + pb[1]];
        for (w, v) in row.iter_mut().enumerate() {
            *v /= dh * cov[2][w + pb[2]];
        }
    });
}

/// `generate_box` of the zoom-out foreground as one window shows it: the
/// inclusive bbox, in window coordinates, of the foreground voxels of the
/// cropped-frame `logits` (dims `dims`, ROI starting at `rs`) that the
/// window's `view` maps into the ROI; window voxels outside the ROI (the
/// padding) are background. Each axis's visible window range is contiguous,
/// so this scans ROI rows as slices.
fn window_foreground_bbox(
    logits: &[f32],
    dims: [usize; 3],
    rs: [usize; 3],
    view: &[AxisView; 3],
) -> [f32; 6] {
    // Window-local range [lo, hi) whose voxels lie inside the ROI.
    let visible = |v: &AxisView| {
        let lo = v.shift.saturating_sub(v.start).min(v.len);
        let hi = (v.shift + v.size).saturating_sub(v.start).min(v.len);
        (lo, hi.max(lo))
    };
    let [(d_lo, d_hi), (h_lo, h_hi), (w_lo, w_hi)] = [0, 1, 2].map(|a| visible(&view[a]));
    let roi = |a: usize, local: usize| view[a].start + local - view[a].shift;
    type Bounds = ([usize; 3], [usize; 3]);
    let empty: Bounds = ([usize::MAX; 3], [0; 3]);
    let merge = |a: Bounds, b: Bounds| -> Bounds {
        (
            [0, 1, 2].map(|i| a.0[i].min(b.0[i])),
            [0, 1, 2].map(|i| a.1[i].max(b.1[i])),
        )
    };
    // Planes in parallel (a whole cropped CT can be 10^7 voxels).
    let (mn, mx) = (d_lo..d_hi)
        .into_par_iter()
        .map(|d| {
            let mut b = empty;
            for h in h_lo..h_hi {
                let base = ((rs[0] + roi(0, d)) * dims[1] + rs[1] + roi(1, h)) * dims[2] + rs[2];
                let row = &logits[base + roi(2, w_lo)..base + roi(2, w_lo) + (w_hi - w_lo)];
                let Some(first) = row.iter().position(|&v| is_foreground(v)) else {
                    continue;
                };
                let last = row
                    .iter()
                    .rposition(|&v| is_foreground(v))
                    .expect("one exists");
                b = merge(b, ([d, h, w_lo + first], [d, h, w_lo + last]));
            }
            b
        })
        .reduce(|| empty, merge);
    if mn[0] == usize::MAX {
        return super::windows::EMPTY_BOX;
    }
    [mn[0], mn[1], mn[2], mx[0], mx[1], mx[2]].map(|v| v as f32)
}

/// Inclusive bbox of the foreground voxels of (D, H, W) logits.
pub fn positive_bbox(logits: &[f32], dims: [usize; 3]) -> Option<BoxI> {
    // The whole frame seen through an identity view.
    let all = [0, 1, 2].map(|a| AxisView {
        start: 0,
        shift: 0,
        size: dims[a],
        len: dims[a],
    });
    let b = window_foreground_bbox(logits, dims, [0; 3], &all);
    (b[0] >= 0.0).then(|| b.map(|v| v as usize))
}

/// The padded window image at `start`: ROI voxels of the cropped image,
/// zeros in the padding.
pub fn extract_window(
    pre: &Preprocessed,
    rs: [usize; 3],
    size: [usize; 3],
    grid: &WindowGrid,
    start: [usize; 3],
    out: &mut [f32],
) {
    let dims = pre.cropped_dims();
    let win = grid.window;
    let view = [0, 1, 2].map(|a| AxisView {
        start: start[a],
        shift: grid.pad_before[a],
        size: size[a],
        len: win[a],
    });
    out.fill(0.0);
    for d in 0..win[0] {
        let Some(rd) = view[0].to_roi(d) else {
            continue;
        };
        for h in 0..win[1] {
            let Some(rh) = view[1].to_roi(h) else {
                continue;
            };
            let src_row = ((rs[0] + rd) * dims[1] + rs[1] + rh) * dims[2] + rs[2];
            let dst_row = (d * win[1] + h) * win[2];
            for w in 0..win[2] {
                if let Some(rw) = view[2].to_roi(w) {
                    out[dst_row + w] = pre.image[src_row + rw];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::cpu::CpuBackend;
    use crate::config::ModelConfig;
    use crate::pipeline::preprocess::preprocess;
    use crate::pipeline::windows::mask_bbox;
    use crate::weights::synth::synth_checkpoint;

    fn phantom(seed: usize) -> Vec<f32> {
        (0..24 * 40 * 40)
            .map(|i| {
                let (z, y, x) = (i / 1600, (i / 40) % 40, i % 40);
                let inside = (5..35).contains(&y) && (4..36).contains(&x) && (2..22).contains(&z);
                if inside {
                    40.0 + ((i * 7 + seed) % 13) as f32
                } else {
                    -1000.0
                }
            })
            .collect()
    }

    #[test]
    fn a_new_volume_resets_the_caches() {
        let cfg = ModelConfig::tiny();
        let m = SegVol::load(
            CpuBackend::new(),
            Arc::new(synth_checkpoint(&cfg).unwrap()),
            cfg.clone(),
        )
        .unwrap();
        let cat = CategoryPrompt {
            bbox: Some([2.0, 10.0, 10.0, 12.0, 50.0, 50.0]),
            ..Default::default()
        };
        let (a, b) = (phantom(0), phantom(5));
        let pa = preprocess(&a, [24, 40, 40], cfg.spatial_size).unwrap();
        let pb = preprocess(&b, [24, 40, 40], cfg.spatial_size).unwrap();
        let mut seg = Segmenter::new(&m, ZoomOptions::default());
        let ra = seg
            .segment(&pa, std::slice::from_ref(&cat), &mut |_| {})
            .unwrap();
        let rb = seg
            .segment(&pb, std::slice::from_ref(&cat), &mut |_| {})
            .unwrap();
        let fresh = Segmenter::new(&m, ZoomOptions::default())
            .segment(&pb, std::slice::from_ref(&cat), &mut |_| {})
            .unwrap();
        assert_eq!(
            rb[0].logits, fresh[0].logits,
            "the second volume must not reuse the first one's embeddings"
        );
        assert_ne!(ra[0].logits, rb[0].logits);
        // The same volume again: everything from the caches.
        let before = seg.timings.windows_encoded;
        let again = seg
            .segment(&pb, std::slice::from_ref(&cat), &mut |_| {})
            .unwrap();
        assert_eq!(again[0].logits, rb[0].logits);
        assert_eq!(seg.timings.windows_encoded, before);
    }

    /// The row-scan bbox equals the voxel-by-voxel definition (every window
    /// voxel mapped through the view, padding counted as background) for
    /// windows that start before, inside and past the ROI.
    #[test]
    fn window_bbox_matches_the_voxelwise_definition() {
        let dims = [9, 11, 13];
        // About one voxel in 16 foreground.
        let logits: Vec<f32> = crate::test_data::uniform(dims.iter().product(), 7, -15.0, 1.0);
        let rs = [1, 2, 3];
        let size = [6, 7, 8];
        for (start, shift, len) in [(0, 2, 5), (3, 2, 5), (6, 0, 4), (0, 0, 9), (9, 1, 4)] {
            let view = [0, 1, 2].map(|a| AxisView {
                start: start + a,
                shift,
                size: size[a],
                len: len + a,
            });
            let win = [0, 1, 2].map(|a| view[a].len);
            let want = mask_bbox(
                |d, h, w| match (view[0].to_roi(d), view[1].to_roi(h), view[2].to_roi(w)) {
                    (Some(d), Some(h), Some(w)) => is_foreground(
                        logits[((rs[0] + d) * dims[1] + rs[1] + h) * dims[2] + rs[2] + w],
                    ),
                    _ => false,
                },
                win,
            );
            assert_eq!(
                window_foreground_bbox(&logits, dims, rs, &view),
                want,
                "start {start}, shift {shift}, len {len}"
            );
        }
    }
}
