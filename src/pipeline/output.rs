//! Results back in the CT's own geometry (docs/REFERENCE.md §4, writing back): the
//! cropped-frame logits are pasted into the full volume, zero outside the
//! foreground crop. A NIfTI array in file order is the C-order (D, H, W)
//! array, so the reference's inverse axis swap is the identity here.

use rayon::prelude::*;

use super::is_foreground;
use crate::error::{Error, Result};

/// Where the cropped frame sits in the volume, (D, H, W), end exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub dims: [usize; 3],
    pub crop_start: [usize; 3],
    pub crop_end: [usize; 3],
}

impl Placement {
    fn cropped(&self) -> [usize; 3] {
        [0, 1, 2].map(|a| self.crop_end[a] - self.crop_start[a])
    }

    /// Calls `f(full_index_of_row_start, cropped_row_start, row_len)` for
    /// each cropped row, in parallel over the output rows.
    fn for_rows<T: Send>(&self, out: &mut [T], f: impl Fn(&mut [T], usize) + Sync) {
        let [_, h, w] = self.dims;
        let c = self.cropped();
        out.par_chunks_mut(w).enumerate().for_each(|(row, dst)| {
            let (z, y) = (row / h, row % h);
            if z < self.crop_start[0]
                || z >= self.crop_end[0]
                || y < self.crop_start[1]
                || y >= self.crop_end[1]
            {
                return;
            }
            let src = ((z - self.crop_start[0]) * c[1] + (y - self.crop_start[1])) * c[2];
            f(&mut dst[self.crop_start[2]..self.crop_end[2]], src);
        });
    }
}

fn check_lengths(p: &Placement, logits: &[&[f32]]) -> Result<()> {
    let n: usize = p.cropped().iter().product();
    if let Some(l) = logits.iter().find(|l| l.len() != n) {
        return Err(Error::shape(format!(
            "logits of {} voxels for a {:?} crop",
            l.len(),
            p.cropped()
        )));
    }
    Ok(())
}

/// The label map of K categories: 0 for background, k+1 where category k
/// is foreground, the higher logit winning overlaps.
pub fn label_map(p: &Placement, logits: &[&[f32]]) -> Result<Vec<u16>> {
    check_lengths(p, logits)?;
    let mut out = vec![0u16; p.dims.iter().product()];
    p.for_rows(&mut out, |dst, src| {
        for (i, o) in dst.iter_mut().enumerate() {
            let mut best: Option<(usize, f32)> = None;
            for (k, l) in logits.iter().enumerate() {
                let v = l[src + i];
                if is_foreground(v) && best.is_none_or(|(_, b)| v > b) {
                    best = Some((k, v));
                }
            }
            *o = best.map_or(0, |(k, _)| k as u16 + 1);
        }
    });
    Ok(out)
}

/// `sigmoid(logits)` of one category over the full volume (0 outside the crop).
pub fn probability_map(p: &Placement, logits: &[f32]) -> Result<Vec<f32>> {
    check_lengths(p, &[logits])?;
    let mut out = vec![0f32; p.dims.iter().product()];
    p.for_rows(&mut out, |dst, src| {
        for (o, &v) in dst.iter_mut().zip(&logits[src..]) {
            *o = 1.0 / (1.0 + (-v).exp());
        }
    });
    Ok(out)
}

/// Voxels of each label 1..=k in a label map.
pub fn label_counts(labels: &[u16], k: usize) -> Vec<usize> {
    let mut c = vec![0usize; k + 1];
    for &l in labels {
        if (l as usize) <= k {
            c[l as usize] += 1;
        }
    }
    c[1..].to_vec()
}

/// Dice between a prediction and a ground-truth mask: the strict
/// `2·TP / (|P| + |G|)` and the demos' `2·TP / (|P| + |G| + 1)`.
pub fn dice(pred: impl Iterator<Item = bool>, truth: impl Iterator<Item = bool>) -> (f64, f64) {
    let (mut tp, mut np, mut ng) = (0usize, 0usize, 0usize);
    for (p, t) in pred.zip(truth) {
        tp += usize::from(p && t);
        np += usize::from(p);
        ng += usize::from(t);
    }
    let strict = if np + ng == 0 {
        1.0
    } else {
        2.0 * tp as f64 / (np + ng) as f64
    };
    (strict, 2.0 * tp as f64 / (np + ng + 1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paste_and_overlaps() {
        let p = Placement {
            dims: [2, 3, 4],
            crop_start: [1, 1, 1],
            crop_end: [2, 3, 3],
        };
        // Cropped frame 1x2x2.
        let a = [1.0f32, -1.0, 2.0, 0.5];
        let b = [0.5f32, 3.0, -2.0, 0.7];
        let lm = label_map(&p, &[&a, &b]).unwrap();
        let at = |d: usize, h: usize, w: usize| lm[(d * 3 + h) * 4 + w];
        assert_eq!(
            (at(1, 1, 1), at(1, 1, 2), at(1, 2, 1), at(1, 2, 2)),
            (1, 2, 1, 2)
        );
        assert_eq!(lm.iter().filter(|&&v| v != 0).count(), 4);
        assert_eq!(label_counts(&lm, 2), vec![2, 2]);
        let pm = probability_map(&p, &a).unwrap();
        assert!((pm[(3 + 1) * 4 + 1] - 0.731_058_6).abs() < 1e-6); // (1, 1, 1)
        assert_eq!(pm[0], 0.0);
        assert!(label_map(&p, &[&a[..3]]).is_err());
    }

    #[test]
    fn dice_variants() {
        let p = [true, true, false, false];
        let t = [true, false, true, false];
        let (s, plus1) = dice(p.iter().copied(), t.iter().copied());
        assert_eq!(s, 0.5);
        assert_eq!(plus1, 2.0 / 5.0);
    }
}
