//! The reference's prompt maps (docs/REFERENCE.md §5 A, C, E–F): the user's box as a
//! binary cube and positive points as a binary point map, built in the
//! zoom-out frame and resized to the cropped frame with legacy `nearest`,
//! then read inside each zoom-in window.
//!
//! Neither map is materialised: the cube is separable (one indicator per
//! axis) and each positive point's preimage under `nearest` is a small box.

use crate::backend::interp::nearest_index;
use crate::backend::Interp;

/// Maps window-local indices to ROI indices along one axis:
/// `roi = start + local − shift`, valid when inside `[0, size)`.
#[derive(Clone, Copy, Debug)]
pub struct AxisView {
    pub start: usize,
    pub shift: usize,
    pub size: usize,
    pub len: usize,
}

impl AxisView {
    pub fn to_roi(&self, local: usize) -> Option<usize> {
        (self.start + local)
            .checked_sub(self.shift)
            .filter(|&r| r < self.size)
    }
    /// The local index of ROI index `r`, if the window shows it.
    pub fn to_local(&self, r: usize) -> Option<usize> {
        (r + self.shift)
            .checked_sub(self.start)
            .filter(|&t| t < self.len && r < self.size)
    }
}

/// The user's box, `build_binary_cube` then `nearest` to the cropped frame.
#[derive(Clone, Debug)]
pub struct CubeMap {
    axes: [Vec<bool>; 3],
}

impl CubeMap {
    /// `bbox` in the zoom-out frame (inclusive, already validated to lie in
    /// it); `.int()` truncates the coordinates as the reference does.
    pub fn new(bbox: &[f32; 6], zoom: [usize; 3], cropped: [usize; 3]) -> Self {
        let axes = [0, 1, 2].map(|a| {
            let (lo, hi) = (bbox[a] as i64, bbox[a + 3] as i64);
            (0..cropped[a])
                .map(|j| {
                    let src = nearest_index(Interp::Nearest, j, zoom[a], cropped[a]) as i64;
                    lo <= src && src <= hi
                })
                .collect()
        });
        CubeMap { axes }
    }

    pub fn get(&self, c: [usize; 3]) -> bool {
        (0..3).all(|a| self.axes[a][c[a]])
    }

    /// Inclusive bbox, in window-local coordinates, of the cube inside a
    /// window over the ROI starting at `roi_min` (cropped frame).
    pub fn bbox_in(&self, roi_min: [usize; 3], view: &[AxisView; 3]) -> Option<[f32; 6]> {
        let mut b = [0f32; 6];
        for a in 0..3 {
            let on = |t: usize| {
                view[a]
                    .to_roi(t)
                    .is_some_and(|r| self.axes[a][roi_min[a] + r])
            };
            let first = (0..view[a].len).find(|&t| on(t))?;
            let last = (0..view[a].len).rev().find(|&t| on(t))?;
            b[a] = first as f32;
            b[a + 3] = last as f32;
        }
        Some(b)
    }
}

/// Positive points (`build_binary_points`, label 1 only) after `nearest`
/// to the cropped frame: a union of disjoint boxes, one per distinct point.
#[derive(Clone, Debug)]
pub struct PointMap {
    /// Half-open boxes `(start, end)` in the cropped frame.
    boxes: Vec<([usize; 3], [usize; 3])>,
}

impl PointMap {
    pub fn new(points: &[([f32; 3], f32)], zoom: [usize; 3], cropped: [usize; 3]) -> Self {
        let mut zp: Vec<[usize; 3]> = points
            .iter()
            .filter(|(_, l)| *l == 1.0)
            .map(|(p, _)| p.map(|v| v.max(0.0) as usize))
            .collect();
        zp.sort();
        zp.dedup();
        let boxes = zp
            .into_iter()
            .filter_map(|p| {
                let mut s = [0usize; 3];
                let mut e = [0usize; 3];
                for a in 0..3 {
                    // `nearest` is monotone: the preimage of p[a] is an interval.
                    let hits: Vec<usize> = (0..cropped[a])
                        .filter(|&j| nearest_index(Interp::Nearest, j, zoom[a], cropped[a]) == p[a])
                        .collect();
                    s[a] = *hits.first()?;
                    e[a] = *hits.last()? + 1;
                }
                Some((s, e))
            })
            .collect();
        PointMap { boxes }
    }

    /// The set voxels a window shows, in window-local coordinates and C order.
    pub fn positives_in(&self, roi_min: [usize; 3], view: &[AxisView; 3]) -> Vec<[usize; 3]> {
        let mut out = Vec::new();
        for (s, e) in &self.boxes {
            let ranges: Vec<Vec<usize>> = (0..3)
                .map(|a| {
                    (s[a]..e[a])
                        .filter_map(|c| c.checked_sub(roi_min[a]).and_then(|r| view[a].to_local(r)))
                        .collect()
                })
                .collect();
            for &d in &ranges[0] {
                for &h in &ranges[1] {
                    for &w in &ranges[2] {
                        out.push([d, h, w]);
                    }
                }
            }
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cube_matches_materialised_resize() {
        let zoom = [8, 16, 16];
        let cropped = [5, 37, 20];
        let b = [1.0, 3.0, 0.0, 4.0, 9.0, 15.0];
        let cube = CubeMap::new(&b, zoom, cropped);
        for d in 0..cropped[0] {
            for h in 0..cropped[1] {
                for w in 0..cropped[2] {
                    let src = [
                        nearest_index(Interp::Nearest, d, zoom[0], cropped[0]),
                        nearest_index(Interp::Nearest, h, zoom[1], cropped[1]),
                        nearest_index(Interp::Nearest, w, zoom[2], cropped[2]),
                    ];
                    let want =
                        (0..3).all(|a| b[a] as usize <= src[a] && src[a] <= b[a + 3] as usize);
                    assert_eq!(cube.get([d, h, w]), want);
                }
            }
        }
    }

    #[test]
    fn faithful_and_fixed_views_differ_by_the_pad() {
        // ct_sm case: ROI 30x96x121 in a 32x256x256 window padded by (1, 80, 67).
        let zoom = [32, 256, 256];
        let cropped = [30, 96, 121];
        let cube = CubeMap::new(&[0.0, 67.0, 87.0, 31.0, 231.0, 223.0], zoom, cropped);
        let size = cropped;
        let win = [32, 256, 256];
        let pad = [1, 80, 67];
        let faithful = [0, 1, 2].map(|a| AxisView {
            start: 0,
            shift: 0,
            size: size[a],
            len: win[a],
        });
        let fixed = [0, 1, 2].map(|a| AxisView {
            start: 0,
            shift: pad[a],
            size: size[a],
            len: win[a],
        });
        // The reference's single-window box (fixtures pipeline_realct/ct_sm_box_text).
        assert_eq!(
            cube.bbox_in([0; 3], &faithful),
            Some([0.0, 26.0, 42.0, 29.0, 86.0, 105.0])
        );
        assert_eq!(
            cube.bbox_in([0; 3], &fixed),
            Some([1.0, 106.0, 109.0, 30.0, 166.0, 172.0])
        );
    }

    #[test]
    fn point_preimages() {
        let pm = PointMap::new(
            &[([2.0, 5.0, 7.0], 1.0), ([1.0, 1.0, 1.0], 0.0)],
            [4, 8, 8],
            [8, 8, 16],
        );
        let view = [0, 1, 2].map(|a| AxisView {
            start: 0,
            shift: 0,
            size: [8, 8, 16][a],
            len: 32,
        });
        let pos = pm.positives_in([0; 3], &view);
        // D 4 -> 8 doubles (dst >> 1), W 8 -> 16 doubles, H identity.
        assert_eq!(pos, vec![[4, 5, 14], [4, 5, 15], [5, 5, 14], [5, 5, 15]]);
    }
}
