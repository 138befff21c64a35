//! The reference preprocessing (docs/REFERENCE.md §4): foreground intensity clip,
//! min-max to [0, 1], the (i,j,k) → (D,H,W) axis swap, foreground crop, and
//! the `nearest-exact` zoom-out resize.
//!
//! The axis swap costs nothing: a NIfTI array in file order (i fastest) is
//! already the C-order (k, j, i) = (D, H, W) array.

use rayon::prelude::*;

use crate::backend::interp::resize;
use crate::backend::Interp;
use crate::error::{Error, Result};
use crate::io::nifti::CtVolume;

/// Intensity statistics of the foreground normalisation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IntensityStats {
    /// Mean of all voxels; the foreground is the voxels strictly above it.
    pub threshold: f64,
    pub n_foreground: usize,
    /// numpy `percentile(fg, 0.05)` and `percentile(fg, 99.95)`, linear rule.
    pub lo: f64,
    pub hi: f64,
}

/// A CT volume after preprocessing, with what is needed to map results back.
#[derive(Clone, Debug)]
pub struct Preprocessed {
    /// (D, H, W) of the input volume (= (k, j, i) of the file).
    pub dims: [usize; 3],
    pub stats: IntensityStats,
    /// Foreground crop in (D, H, W), end exclusive.
    pub crop_start: [usize; 3],
    pub crop_end: [usize; 3],
    /// The cropped full-resolution image, values in [0, 1].
    pub image: Vec<f32>,
    /// The zoom-out image: `image` resized to the network input with
    /// `nearest-exact`.
    pub zoom_out: Vec<f32>,
    pub zoom_out_dims: [usize; 3],
}

impl Preprocessed {
    pub fn cropped_dims(&self) -> [usize; 3] {
        [0, 1, 2].map(|a| self.crop_end[a] - self.crop_start[a])
    }
}

/// numpy's `_compute_virtual_index` (alpha = beta = 1) for `n` values:
/// (floor index, fraction), in f64 as numpy computes it.
fn virtual_index(n: usize, q_percent: f64) -> (usize, f64) {
    let q = q_percent / 100.0;
    // numpy's linear method: alpha = beta = 1, kept in numpy's form so the
    // f64 rounding is numpy's.
    const ALPHA: f64 = 1.0;
    const BETA: f64 = 1.0;
    let vi = (n as f64) * q + (ALPHA + q * (1.0 - ALPHA - BETA)) - 1.0;
    let prev = vi.floor();
    ((prev.max(0.0) as usize).min(n - 1), vi - prev)
}

/// numpy's `_lerp`: the neighbour difference in the data's f32, the rest
/// in f64; from the upper neighbour when t ≥ 0.5.
fn lerp(a: f32, b: f32, t: f64) -> f64 {
    let diff = (b - a) as f64;
    if t >= 0.5 {
        b as f64 - diff * (1.0 - t)
    } else {
        a as f64 + diff * t
    }
}

/// numpy's default (`linear`) percentile of sorted data.
pub fn percentile_sorted(sorted: &[f32], q_percent: f64) -> f64 {
    let n = sorted.len();
    let (i0, t) = virtual_index(n, q_percent);
    lerp(sorted[i0], sorted[(i0 + 1).min(n - 1)], t)
}

/// The k-th smallest value (0-based) of `v`, reordering `v`.
fn select_nth(v: &mut [f32], k: usize) -> f32 {
    let (_, x, _) = v.select_nth_unstable_by(k, |a, b| a.total_cmp(b));
    *x
}

/// Foreground statistics of a volume (any order).
pub fn intensity_stats(data: &[f32]) -> Result<IntensityStats> {
    if data.is_empty() {
        return Err(Error::Invalid("the volume has no voxels".into()));
    }
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(Error::Invalid(format!(
            "the volume holds a non-finite value ({}) at flat index {i}",
            data[i]
        )));
    }
    // numpy averages the float32 array; f64 here is exact to far below the
    // gap between integer HU values, which is all the threshold decides.
    let threshold = data
        .par_chunks(1 << 16)
        .map(|c| c.iter().map(|&v| v as f64).sum::<f64>())
        .sum::<f64>()
        / data.len() as f64;
    let mut fg: Vec<f32> = data
        .par_iter()
        .copied()
        .filter(|&v| v as f64 > threshold)
        .collect();
    let n = fg.len();
    if n == 0 {
        return Err(Error::Invalid(
            "the volume has no foreground: every voxel has the same value".into(),
        ));
    }
    // Two order statistics each for lo and hi; no full sort needed.
    let mut pct = |q: f64| -> f64 {
        let (i0, t) = virtual_index(n, q);
        let a = select_nth(&mut fg, i0);
        // After the selection everything past i0 is ≥ a: the next order
        // statistic is the smallest of the rest.
        let b = if i0 + 1 < n {
            select_nth(&mut fg[i0 + 1..], 0)
        } else {
            a
        };
        lerp(a, b, t)
    };
    let lo = pct(0.05);
    let hi = pct(99.95);
    Ok(IntensityStats {
        threshold,
        n_foreground: n,
        lo,
        hi,
    })
}

/// Tight bounding box (end exclusive) of voxels `> lo` in a (D, H, W)
/// volume, as MONAI's `CropForeground` finds it after min-max (value > 0).
pub fn foreground_box(data: &[f32], dims: [usize; 3], lo: f64) -> Option<([usize; 3], [usize; 3])> {
    let [d, h, w] = dims;
    let per_slice: Vec<Option<([usize; 2], [usize; 2])>> = (0..d)
        .into_par_iter()
        .map(|z| {
            let mut lo_hw = [usize::MAX; 2];
            let mut hi_hw = [0usize; 2];
            let mut any = false;
            for y in 0..h {
                let row = &data[(z * h + y) * w..(z * h + y + 1) * w];
                let first = row.iter().position(|&v| v as f64 > lo);
                if let Some(x0) = first {
                    let x1 = row.iter().rposition(|&v| v as f64 > lo).unwrap_or(x0);
                    any = true;
                    lo_hw = [lo_hw[0].min(y), lo_hw[1].min(x0)];
                    hi_hw = [hi_hw[0].max(y), hi_hw[1].max(x1)];
                }
            }
            any.then_some((lo_hw, hi_hw))
        })
        .collect();
    let mut start = [usize::MAX; 3];
    let mut end = [0usize; 3];
    for (z, s) in per_slice.iter().enumerate() {
        if let Some((a, b)) = s {
            start = [start[0].min(z), start[1].min(a[0]), start[2].min(a[1])];
            end = [
                end[0].max(z + 1),
                end[1].max(b[0] + 1),
                end[2].max(b[1] + 1),
            ];
        }
    }
    (start[0] != usize::MAX).then_some((start, end))
}

/// [`preprocess`] on a CT read from a NIfTI file: refuses NaN/Inf voxels
/// and names the file in any error ("no foreground" means little in a batch
/// log otherwise).
pub fn preprocess_ct(ct: &CtVolume, spatial_size: [usize; 3]) -> Result<Preprocessed> {
    if ct.non_finite > 0 {
        return Err(Error::nifti(
            &ct.path,
            format!("{} voxels are NaN or infinite", ct.non_finite),
        ));
    }
    let dims = [ct.dims[2], ct.dims[1], ct.dims[0]];
    let pre = preprocess(&ct.data, dims, spatial_size)
        .map_err(|e| Error::nifti(&ct.path, e.to_string()))?;
    tracing::debug!(
        target: "segvol::pipeline",
        "{}: foreground crop {:?} of (d, h, w) {dims:?}",
        ct.path.display(),
        pre.cropped_dims()
    );
    Ok(pre)
}

/// Runs the whole preprocessing on a (D, H, W) volume (a NIfTI array in
/// file order) for a network input of `spatial_size`.
pub fn preprocess(
    data: &[f32],
    dims: [usize; 3],
    spatial_size: [usize; 3],
) -> Result<Preprocessed> {
    if dims.iter().product::<usize>() != data.len() || dims.contains(&0) {
        return Err(Error::shape(format!(
            "volume dims {dims:?} do not match {} voxels",
            data.len()
        )));
    }
    let stats = intensity_stats(data)?;
    let (lo, hi) = (stats.lo, stats.hi);
    let (crop_start, crop_end) = foreground_box(data, dims, lo).ok_or_else(|| {
        Error::Invalid(
            "the volume has no voxel above the lower intensity bound: nothing to segment".into(),
        )
    })?;
    // Clip, z-score and min-max reduce to (clip(v, lo, hi) − lo)/(hi − lo);
    // the z-score cancels (docs/REFERENCE.md §4 step 4).
    let range = (hi - lo).max(1e-8);
    let cd = [0, 1, 2].map(|a| crop_end[a] - crop_start[a]);
    let [_, h, w] = dims;
    let mut image = vec![0f32; cd.iter().product()];
    image
        .par_chunks_mut(cd[2])
        .enumerate()
        .for_each(|(r, row)| {
            let z = crop_start[0] + r / cd[1];
            let y = crop_start[1] + r % cd[1];
            let src = &data[(z * h + y) * w + crop_start[2]..][..cd[2]];
            for (o, &v) in row.iter_mut().zip(src) {
                *o = (((v as f64).clamp(lo, hi) - lo) / range) as f32;
            }
        });
    let mut zoom_out = vec![0f32; spatial_size.iter().product()];
    resize(
        &image,
        1,
        cd,
        spatial_size,
        Interp::NearestExact,
        &mut zoom_out,
    );
    Ok(Preprocessed {
        dims,
        stats,
        crop_start,
        crop_end,
        image,
        zoom_out,
        zoom_out_dims: spatial_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_matches_numpy() {
        // numpy.percentile([1, 2, 3, 4, 10], q) for q in (0.05, 50, 99.95, 25).
        let s = [1.0f32, 2.0, 3.0, 4.0, 10.0];
        assert!((percentile_sorted(&s, 0.05) - 1.002).abs() < 1e-12);
        assert_eq!(percentile_sorted(&s, 50.0), 3.0);
        assert!((percentile_sorted(&s, 99.95) - 9.988).abs() < 1e-12);
        assert_eq!(percentile_sorted(&s, 25.0), 2.0);
    }

    #[test]
    fn stats_use_order_statistics_like_a_sort() {
        let data: Vec<f32> = (0..10_000)
            .map(|i| ((i * 7919) % 10_007) as f32 - 3000.0)
            .collect();
        let st = intensity_stats(&data).unwrap();
        let mean = data.iter().map(|&v| v as f64).sum::<f64>() / data.len() as f64;
        let mut fg: Vec<f32> = data.iter().copied().filter(|&v| v as f64 > mean).collect();
        fg.sort_by(|a, b| a.total_cmp(b));
        assert_eq!(st.n_foreground, fg.len());
        assert_eq!(st.lo, percentile_sorted(&fg, 0.05));
        assert_eq!(st.hi, percentile_sorted(&fg, 99.95));
    }

    #[test]
    fn constant_and_nan_volumes_are_refused() {
        assert!(intensity_stats(&[5.0; 64])
            .unwrap_err()
            .to_string()
            .contains("no foreground"));
        let mut v = vec![1.0f32; 64];
        v[3] = f32::NAN;
        assert!(intensity_stats(&v)
            .unwrap_err()
            .to_string()
            .contains("non-finite"));
    }

    #[test]
    fn crop_is_tight_and_end_exclusive() {
        let dims = [4, 5, 6];
        let mut v = vec![-1000f32; 120];
        v[(5 + 2) * 6 + 3] = 100.0; // (d, h, w) = (1, 2, 3)
        v[(2 * 5 + 3) * 6 + 1] = 50.0;
        assert_eq!(foreground_box(&v, dims, 0.0), Some(([1, 2, 1], [3, 4, 4])));
        assert_eq!(foreground_box(&v, dims, 1000.0), None);
    }
}
