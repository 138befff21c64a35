//! Geometry of the zoom-in stage (docs/REFERENCE.md §5 D–F): the ROI rule, the
//! sliding-window padding, scan interval and window starts (MONAI 0.9.0's
//! `dense_patch_slices`), and bounding boxes inside windows.

/// Inclusive bounding box `[min_d, min_h, min_w, max_d, max_h, max_w]`.
pub type BoxI = [usize; 6];

/// The box the reference passes for an empty window (`generate_box`).
pub const EMPTY_BOX: [f32; 6] = [-1.0; 6];

/// `logits2roi_coor`: expand the inclusive bbox of the positive voxels so
/// each axis spans at least the window, clamping the max to the size (not
/// size − 1, as the reference does; slicing truncates later). Returns the
/// inclusive (min, max) as the reference returns them.
pub fn roi_from_bbox(bbox: BoxI, dims: [usize; 3], window: [usize; 3]) -> BoxI {
    let mut out = [0usize; 6];
    for a in 0..3 {
        let (mn, mx) = (bbox[a], bbox[a + 3]);
        let crop = mx - mn + 1;
        let pad = window[a].saturating_sub(crop);
        out[a] = mn.saturating_sub(pad / 2);
        out[a + 3] = (mx + pad / 2).min(dims[a]);
    }
    out
}

/// The ROI as half-open ranges in the volume (the slice `[min : max+1]`
/// truncated to the size).
pub fn roi_ranges(roi: BoxI, dims: [usize; 3]) -> ([usize; 3], [usize; 3]) {
    let start = [roi[0], roi[1], roi[2]];
    let end = [0, 1, 2].map(|a| (roi[a + 3] + 1).min(dims[a]));
    (start, end)
}

/// The window layout over an ROI of size `size`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowGrid {
    /// The ROI size before padding.
    pub size: [usize; 3],
    pub window: [usize; 3],
    /// Zero padding before each axis (`half = diff // 2`); the rest goes after.
    pub pad_before: [usize; 3],
    /// `max(size, window)` per axis.
    pub padded: [usize; 3],
    pub interval: [usize; 3],
    /// Per-axis window starts in the padded frame.
    pub starts: [Vec<usize>; 3],
}

impl WindowGrid {
    pub fn new(size: [usize; 3], window: [usize; 3], overlap: f64) -> Self {
        let pad_before = [0, 1, 2].map(|a| window[a].saturating_sub(size[a]) / 2);
        let padded = [0, 1, 2].map(|a| size[a].max(window[a]));
        let interval = [0, 1, 2].map(|a| {
            if window[a] == padded[a] {
                window[a]
            } else {
                ((window[a] as f64 * (1.0 - overlap)) as usize).max(1)
            }
        });
        let starts = [0, 1, 2].map(|a| {
            let (s, w, i) = (padded[a], window[a], interval[a]);
            let num = s.div_ceil(i);
            let n = (0..num).find(|&d| d * i + w >= s).map_or(1, |d| d + 1);
            (0..n).map(|k| (k * i).min(s - w)).collect()
        });
        WindowGrid {
            size,
            window,
            pad_before,
            padded,
            interval,
            starts,
        }
    }

    /// All window starts, D-major (last axis fastest), as MONAI orders them.
    pub fn windows(&self) -> Vec<[usize; 3]> {
        let mut v = Vec::new();
        for &d in &self.starts[0] {
            for &h in &self.starts[1] {
                for &w in &self.starts[2] {
                    v.push([d, h, w]);
                }
            }
        }
        v
    }

    pub fn count(&self) -> usize {
        self.starts.iter().map(|s| s.len()).product()
    }

    /// How many windows cover padded index `i` of axis `a`.
    pub fn coverage(&self, a: usize, i: usize) -> usize {
        self.starts[a]
            .iter()
            .filter(|&&s| s <= i && i < s + self.window[a])
            .count()
    }
}

/// Inclusive bbox of the set voxels of a `[d, h, w]` mask, as `generate_box`
/// returns it (f32, `[-1]*6` when empty).
pub fn mask_bbox(mask: impl Fn(usize, usize, usize) -> bool, dims: [usize; 3]) -> [f32; 6] {
    let mut mn = [usize::MAX; 3];
    let mut mx = [0usize; 3];
    for d in 0..dims[0] {
        for h in 0..dims[1] {
            for w in 0..dims[2] {
                if mask(d, h, w) {
                    mn = [mn[0].min(d), mn[1].min(h), mn[2].min(w)];
                    mx = [mx[0].max(d), mx[1].max(h), mx[2].max(w)];
                }
            }
        }
    }
    if mn[0] == usize::MAX {
        return EMPTY_BOX;
    }
    [mn[0], mn[1], mn[2], mx[0], mx[1], mx[2]].map(|v| v as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example_eight_windows() {
        let g = WindowGrid::new([80, 250, 260], [32, 256, 256], 0.5);
        assert_eq!(g.starts[0], vec![0, 16, 32, 48]);
        assert_eq!(g.starts[1], vec![0]);
        assert_eq!(g.starts[2], vec![0, 4]);
        assert_eq!(g.count(), 8);
        assert_eq!(g.pad_before, [0, 3, 0]);
        assert_eq!(g.interval, [16, 256, 128]);
    }

    #[test]
    fn lung1_twelve_windows() {
        // fixtures pipeline_realct/lung1_*: ROI 48x381x512.
        let g = WindowGrid::new([48, 381, 512], [32, 256, 256], 0.5);
        assert_eq!(g.windows().len(), 12);
        assert_eq!(g.starts, [vec![0, 16], vec![0, 125], vec![0, 128, 256]]);
        assert_eq!(g.interval, [16, 128, 128]);
    }

    #[test]
    fn small_roi_one_padded_window() {
        // fixtures pipeline_realct/ct_sm_box_text: ROI 30x96x121.
        let g = WindowGrid::new([30, 96, 121], [32, 256, 256], 0.5);
        assert_eq!(g.windows(), vec![[0, 0, 0]]);
        assert_eq!(g.pad_before, [1, 80, 67]);
        assert_eq!(g.interval, [32, 256, 256]);
    }

    #[test]
    fn roi_rule_matches_reference() {
        // ct_sm: all of 30x96x121 positive -> [0,0,0,30,96,121].
        assert_eq!(
            roi_from_bbox([0, 0, 0, 29, 95, 120], [30, 96, 121], [32, 256, 256]),
            [0, 0, 0, 30, 96, 121]
        );
        // Small blob in the middle: expanded by floor(pad/2) each side.
        assert_eq!(
            roi_from_bbox([40, 100, 100, 44, 110, 109], [80, 400, 400], [32, 256, 256]),
            [27, 0, 0, 57, 232, 232]
        );
        assert_eq!(
            roi_ranges([0, 0, 0, 30, 96, 121], [30, 96, 121]),
            ([0, 0, 0], [30, 96, 121])
        );
    }

    #[test]
    fn coverage_counts_overlaps() {
        let g = WindowGrid::new([48, 381, 512], [32, 256, 256], 0.5);
        assert_eq!(g.coverage(0, 0), 1);
        assert_eq!(g.coverage(0, 20), 2);
        assert_eq!(g.coverage(2, 200), 2);
        assert_eq!(g.coverage(2, 300), 2);
        assert_eq!(g.coverage(2, 500), 1);
    }

    #[test]
    fn bbox_of_mask() {
        let b = mask_bbox(|d, h, w| d == 1 && (2..4).contains(&h) && w == 0, [3, 5, 2]);
        assert_eq!(b, [1.0, 2.0, 0.0, 1.0, 3.0, 0.0]);
        assert_eq!(mask_bbox(|_, _, _| false, [2, 2, 2]), EMPTY_BOX);
    }
}
