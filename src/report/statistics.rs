//! `--statistics`: per category, the volume and the CT intensities (HU)
//! under its mask.
//!
//! Definitions, so numbers can be reproduced with numpy on the same files
//! (nibabel's `get_fdata()`, i.e. scl_slope / scl_inter applied):
//! - volume (ml) = voxels × |det(affine[:3, :3])| / 1000, the affine's voxel
//!   volume (equal to the product of the spacings for an unsheared grid);
//! - mean and std over the voxels of the category (std is numpy's default,
//!   the population one, `ddof=0`), in f64;
//! - percentiles 5, 25, 50, 75, 95 by numpy's default rule (`method="linear"`:
//!   the value at virtual index `(n − 1)·q/100`, linearly interpolated);
//! - min and max; non-finite intensities (NaN, ±Inf) are left out and counted;
//! - the centroid is the mean voxel index (i, j, k) and its world position.

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::io::affine::{apply, Affine};
use crate::io::nifti::CtVolume;
use crate::pipeline::preprocess::percentile_sorted;

/// The percentiles reported, in percent.
pub const PERCENTILES: [f64; 5] = [5.0, 25.0, 50.0, 75.0, 95.0];

/// Intensities under one category's mask.
#[derive(Clone, Debug, PartialEq)]
pub struct Intensity {
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
    /// One value per entry of [`PERCENTILES`].
    pub percentiles: Vec<f64>,
    /// Voxels of the mask whose intensity is NaN or infinite (left out).
    pub non_finite: usize,
}

/// One category's statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct CategoryStatistics {
    /// Its value in the label map (`c + 1`).
    pub label: u16,
    pub voxels: usize,
    pub volume_ml: f64,
    /// `None` for an empty mask (or one holding only non-finite values).
    pub intensity: Option<Intensity>,
    /// Mean voxel index (i, j, k); `None` for an empty mask.
    pub centroid_ijk: Option<[f64; 3]>,
    /// The centroid in world millimetres, through the affine.
    pub centroid_mm: Option<[f64; 3]>,
}

/// |det| of the affine's 3×3 part in ml (mm³ / 1000).
pub fn voxel_volume_ml(a: &Affine) -> f64 {
    let m = |r: usize, c: usize| a[r][c];
    let det = m(0, 0) * (m(1, 1) * m(2, 2) - m(1, 2) * m(2, 1))
        - m(0, 1) * (m(1, 0) * m(2, 2) - m(1, 2) * m(2, 0))
        + m(0, 2) * (m(1, 0) * m(2, 1) - m(1, 1) * m(2, 0));
    det.abs() / 1000.0
}

fn intensity(mut v: Vec<f32>, non_finite: usize) -> Option<Intensity> {
    if v.is_empty() {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = v
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / n;
    v.sort_unstable_by(f32::total_cmp);
    Some(Intensity {
        mean,
        std: var.sqrt(),
        min: f64::from(v[0]),
        max: f64::from(v[v.len() - 1]),
        percentiles: PERCENTILES
            .iter()
            .map(|&q| percentile_sorted(&v, q))
            .collect(),
        non_finite,
    })
}

/// Statistics of categories `0..k` of `labels` (file order, `c + 1` for
/// category `c`) over `ct`'s intensities.
pub fn category_statistics(
    labels: &[u16],
    k: usize,
    ct: &CtVolume,
) -> Result<Vec<CategoryStatistics>> {
    if ct.data.len() != labels.len() {
        return Err(Error::Invalid(format!(
            "statistics: the label map has {} voxels but the CT's intensities {} \
             (they must be kept in memory for --statistics)",
            labels.len(),
            ct.data.len()
        )));
    }
    let [di, dj, _] = ct.dims;
    let mut values: Vec<Vec<f32>> = vec![Vec::new(); k];
    let mut non_finite = vec![0usize; k];
    let mut counts = vec![0usize; k];
    let mut sums = vec![[0f64; 3]; k];
    for (idx, (&l, &hu)) in labels.iter().zip(&ct.data).enumerate() {
        let c = l as usize;
        if c == 0 || c > k {
            continue;
        }
        let c = c - 1;
        counts[c] += 1;
        let (i, j, kk) = (idx % di, (idx / di) % dj, idx / (di * dj));
        for (s, x) in sums[c].iter_mut().zip([i, j, kk]) {
            *s += x as f64;
        }
        if hu.is_finite() {
            values[c].push(hu);
        } else {
            non_finite[c] += 1;
        }
    }
    let voxel_ml = voxel_volume_ml(&ct.affine());
    Ok(values
        .into_iter()
        .enumerate()
        .map(|(c, v)| {
            let n = counts[c];
            let centroid = (n > 0).then(|| sums[c].map(|s| s / n as f64));
            CategoryStatistics {
                label: c as u16 + 1,
                voxels: n,
                volume_ml: n as f64 * voxel_ml,
                intensity: intensity(v, non_finite[c]),
                centroid_ijk: centroid,
                centroid_mm: centroid.map(|p| apply(&ct.affine(), p)),
            }
        })
        .collect())
}

impl CategoryStatistics {
    /// `{"voxels", "volume_ml", "hu": {"mean", "std", "min", "max", "p5", ...,
    /// "non_finite"} | null, "centroid_ijk", "centroid_mm"}`.
    pub fn to_json(&self) -> Value {
        let hu = self.intensity.as_ref().map(|s| {
            let mut o = json!({"mean": s.mean, "std": s.std, "min": s.min, "max": s.max});
            for (q, v) in PERCENTILES.iter().zip(&s.percentiles) {
                o[format!("p{q}")] = json!(v);
            }
            o["non_finite"] = json!(s.non_finite);
            o
        });
        json!({
            "voxels": self.voxels,
            "volume_ml": self.volume_ml,
            "hu": hu,
            "centroid_ijk": self.centroid_ijk,
            "centroid_mm": self.centroid_mm,
        })
    }
}

/// How the numbers are defined, for the JSON summary.
pub fn definitions() -> Value {
    json!({
        "volume_ml": "voxels x |det(affine[:3,:3])| / 1000",
        "hu": "intensities after scl_slope/scl_inter, non-finite values left out",
        "std": "population standard deviation (numpy default, ddof=0)",
        "percentiles": "numpy.percentile default, method='linear'",
        "centroid_ijk": "mean voxel index (i, j, k)",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::affine::from_spacing;

    #[test]
    fn small_volume_by_hand() {
        // 2×2×2 voxels of 2×1×0.5 mm = 1 mm³.
        let data = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, f32::NAN, 100.0];
        let ct = CtVolume::from_array("t", [2, 2, 2], data, from_spacing([2.0, 1.0, 0.5])).unwrap();
        let labels = vec![1, 1, 0, 1, 2, 0, 1, 0];
        let s = category_statistics(&labels, 3, &ct).unwrap();
        assert_eq!(s[0].voxels, 4);
        assert!((s[0].volume_ml - 0.004).abs() < 1e-15);
        let h = s[0].intensity.as_ref().unwrap();
        // Finite values 1, 2, 4: mean 7/3, population std.
        assert!((h.mean - 7.0 / 3.0).abs() < 1e-12);
        let var = ((1.0f64 - 7.0 / 3.0).powi(2)
            + (2.0f64 - 7.0 / 3.0).powi(2)
            + (4.0f64 - 7.0 / 3.0).powi(2))
            / 3.0;
        assert!((h.std - var.sqrt()).abs() < 1e-12);
        assert_eq!((h.min, h.max, h.non_finite), (1.0, 4.0, 1));
        // numpy.percentile([1, 2, 4], [5, 25, 50, 75, 95]).
        let want = [1.1, 1.5, 2.0, 3.0, 3.8];
        for (g, w) in h.percentiles.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{g} vs {w}");
        }
        // Voxels 0, 1, 3, 6 → (i, j, k) (0,0,0) (1,0,0) (1,1,0) (0,1,1).
        assert_eq!(s[0].centroid_ijk, Some([0.5, 0.5, 0.25]));
        assert_eq!(s[0].centroid_mm, Some([1.0, 0.5, 0.125]));
        assert_eq!(s[1].voxels, 1);
        assert_eq!(s[1].intensity.as_ref().unwrap().std, 0.0);
        assert_eq!(s[2].voxels, 0);
        assert!(s[2].intensity.is_none() && s[2].centroid_ijk.is_none());
        assert!(s[2].to_json()["hu"].is_null());
        assert_eq!(s[0].to_json()["hu"]["p50"], 2.0);
    }

    #[test]
    fn volume_uses_the_affine_determinant() {
        let mut a = from_spacing([1.0, 2.0, 3.0]);
        a[0][1] = 0.5; // shear: the determinant is unchanged
        assert!((voxel_volume_ml(&a) - 0.006).abs() < 1e-15);
        a[0][0] = -1.0; // a flip does not make volumes negative
        assert!((voxel_volume_ml(&a) - 0.006).abs() < 1e-15);
    }

    #[test]
    fn intensities_must_be_in_memory() {
        let mut ct =
            CtVolume::from_array("t", [2, 1, 1], vec![0.0, 1.0], from_spacing([1.0; 3])).unwrap();
        ct.data.clear();
        let e = category_statistics(&[1, 0], 1, &ct).unwrap_err();
        assert!(e.to_string().contains("--statistics"), "{e}");
    }
}
