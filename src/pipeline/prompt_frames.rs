//! User prompts to the zoom-out frame. Users click in the CT they see: voxel
//! indices `(i, j, k)` of the NIfTI file, or world millimetres through its
//! affine. The reference only takes prompts already in the network's
//! `(d, h, w)` zoom-out frame; `Frame::Zoom` accepts that too.
//!
//! A point at cropped-frame index `o` maps to the zoom-out index
//! `clamp(floor((o + 0.5)·out/in), 0, out − 1)`, the zoom-out voxel whose
//! centre is nearest (docs/REFERENCE.md §7). A box maps to the zoom-out voxels whose
//! `nearest-exact` source lies inside it, so a box drawn tight around an
//! organ contains the reference demo's box from the resized label (and
//! equals it when the organ touches its bbox faces at sampled voxels).

use std::str::FromStr;

use crate::backend::interp::nearest_index;
use crate::backend::Interp;
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// File voxel indices `(i, j, k)`.
    Voxel,
    /// World coordinates in mm (the NIfTI affine's output space).
    World,
    /// The network's zoom-out frame `(d, h, w)`, as the reference takes them.
    Zoom,
}

impl FromStr for Frame {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "voxel" => Ok(Frame::Voxel),
            "world" => Ok(Frame::World),
            "zoom" => Ok(Frame::Zoom),
            other => Err(Error::Invalid(format!(
                "unknown frame {other:?}: expected voxel, world or zoom"
            ))),
        }
    }
}

/// A box prompt as typed: two opposite corners.
#[derive(Clone, Debug, PartialEq)]
pub struct UserBox {
    /// `(i0, j0, k0, i1, j1, k1)`, in any corner order.
    pub corners: [f64; 6],
    /// The box as typed, for messages.
    pub text: String,
}

/// A point prompt as typed, label 1 (positive, the default) or 0 (negative).
#[derive(Clone, Debug, PartialEq)]
pub struct UserPoint {
    /// `(i, j, k)` in the request's frame.
    pub at: [f64; 3],
    /// 1 (positive) or 0 (negative).
    pub label: f32,
    /// The point as typed, for messages.
    pub text: String,
}

impl UserBox {
    /// A box from two opposite corners `(i0, j0, k0, i1, j1, k1)` in the
    /// request's frame (voxel indices unless the request says otherwise).
    /// Coordinates are checked against the volume when the request is mapped.
    pub fn new(corners: [f64; 6]) -> Self {
        let c = corners;
        UserBox {
            corners,
            text: format!("{},{},{},{},{},{}", c[0], c[1], c[2], c[3], c[4], c[5]),
        }
    }
}

impl UserPoint {
    /// A click at `at` (the request's frame), positive (object) or negative
    /// (background).
    pub fn new(at: [f64; 3], positive: bool) -> Self {
        let label = if positive { 1.0 } else { 0.0 };
        UserPoint {
            at,
            label,
            text: format!("{},{},{},{label}", at[0], at[1], at[2]),
        }
    }
}

/// Everything needed to map a user coordinate into the zoom-out frame.
pub struct FrameMap<'a> {
    /// Volume dims in (D, H, W) = (k, j, i).
    pub dims: [usize; 3],
    pub crop_start: [usize; 3],
    pub crop_end: [usize; 3],
    pub zoom: [usize; 3],
    /// World mm → fractional voxel `(i, j, k)`; needed for `Frame::World`.
    pub world_to_voxel: Option<&'a dyn Fn([f64; 3]) -> Result<[f64; 3]>>,
}

impl FrameMap<'_> {
    /// A user coordinate → fractional (d, h, w) of the full volume.
    fn to_dhw(&self, p: [f64; 3], frame: Frame, what: &str) -> Result<[f64; 3]> {
        let ijk = match frame {
            Frame::Voxel => p,
            Frame::World => {
                let f = self
                    .world_to_voxel
                    .ok_or_else(|| Error::prompt(what, "world coordinates need the CT's affine"))?;
                f(p).map_err(|e| Error::prompt(what, e.to_string()))?
            }
            Frame::Zoom => unreachable!("zoom-frame prompts are not mapped"),
        };
        Ok([ijk[2], ijk[1], ijk[0]])
    }

    /// Cropped-frame index → zoom-out index along axis `a`.
    fn to_zoom(&self, a: usize, o: usize) -> usize {
        let inp = self.crop_end[a] - self.crop_start[a];
        let out = self.zoom[a];
        (((o as f64 + 0.5) * out as f64 / inp as f64).floor() as usize).min(out - 1)
    }

    fn in_volume(&self, dhw: [f64; 3], what: &str) -> Result<[usize; 3]> {
        let mut v = [0usize; 3];
        for a in 0..3 {
            let r = dhw[a].round();
            if r < 0.0 || r >= self.dims[a] as f64 {
                let ijk_dims = [self.dims[2], self.dims[1], self.dims[0]];
                return Err(Error::prompt(
                    what,
                    format!("lies outside the volume (voxel dims i,j,k = {ijk_dims:?})"),
                ));
            }
            v[a] = r as usize;
        }
        Ok(v)
    }

    /// A point → zoom-out `(d, h, w)`.
    pub fn point(&self, p: &UserPoint, frame: Frame) -> Result<([f32; 3], f32)> {
        let what = format!("--point {}", p.text);
        // Parsed prompts are finite already; built ones are checked here
        // (a NaN would pass the range tests below).
        if p.at.iter().any(|v| !v.is_finite()) {
            return Err(Error::prompt(&what, "coordinates must be finite"));
        }
        if p.label != 0.0 && p.label != 1.0 {
            return Err(Error::prompt(
                &what,
                format!("label {} is not 1 (positive) or 0 (negative)", p.label),
            ));
        }
        if frame == Frame::Zoom {
            for a in 0..3 {
                if p.at[a] < 0.0 || p.at[a] >= self.zoom[a] as f64 || p.at[a].fract() != 0.0 {
                    return Err(Error::prompt(
                        &what,
                        format!(
                            "zoom-frame points are integer (d,h,w) inside {:?}",
                            self.zoom
                        ),
                    ));
                }
            }
            return Ok((p.at.map(|v| v as f32), p.label));
        }
        let v = self.in_volume(self.to_dhw(p.at, frame, &what)?, &what)?;
        let mut z = [0f32; 3];
        for a in 0..3 {
            if v[a] < self.crop_start[a] || v[a] >= self.crop_end[a] {
                return Err(Error::prompt(&what, "lies outside the foreground crop (air around the body): nothing to segment there"));
            }
            z[a] = self.to_zoom(a, v[a] - self.crop_start[a]) as f32;
        }
        Ok((z, p.label))
    }

    /// A box → zoom-out `[d0, h0, w0, d1, h1, w1]` (inclusive), clipped to
    /// the foreground crop.
    pub fn bbox(&self, b: &UserBox, frame: Frame) -> Result<[f32; 6]> {
        let what = format!("--box {}", b.text);
        let c = b.corners;
        if c.iter().any(|v| !v.is_finite()) {
            return Err(Error::prompt(&what, "coordinates must be finite"));
        }
        if frame == Frame::Zoom {
            for a in 0..3 {
                let (lo, hi) = (c[a], c[a + 3]);
                if lo < 0.0
                    || hi >= self.zoom[a] as f64
                    || lo > hi
                    || lo.fract() != 0.0
                    || hi.fract() != 0.0
                {
                    return Err(Error::prompt(&what, format!("zoom-frame boxes are integer d0,h0,w0,d1,h1,w1 with min <= max inside {:?}", self.zoom)));
                }
            }
            return Ok(c.map(|v| v as f32));
        }
        // All 8 corners, so an oblique world box maps to its voxel bbox.
        let mut lo = [f64::INFINITY; 3];
        let mut hi = [f64::NEG_INFINITY; 3];
        for m in 0..8 {
            let p = [0, 1, 2].map(|a| if m >> a & 1 == 0 { c[a] } else { c[a + 3] });
            let dhw = self.to_dhw(p, frame, &what)?;
            for a in 0..3 {
                lo[a] = lo[a].min(dhw[a]);
                hi[a] = hi[a].max(dhw[a]);
            }
        }
        let lo_v = self.in_volume(lo, &what)?;
        let hi_v = self.in_volume(hi, &what)?;
        let mut out = [0f32; 6];
        for a in 0..3 {
            let s = lo_v[a].max(self.crop_start[a]);
            let e = hi_v[a].min(self.crop_end[a] - 1);
            if s > e {
                return Err(Error::prompt(&what, "does not overlap the foreground crop (air around the body): nothing to segment there"));
            }
            let (s, e) = (s - self.crop_start[a], e - self.crop_start[a]);
            let (inp, n) = (self.crop_end[a] - self.crop_start[a], self.zoom[a]);
            let src = |r: usize| nearest_index(Interp::NearestExact, r, inp, n);
            let first = (0..n).find(|&r| src(r) >= s);
            let last = (0..n).rev().find(|&r| src(r) <= e);
            let (z0, z1) = match (first, last) {
                (Some(f), Some(l)) if f <= l => (f, l),
                // Thinner than the sampling step: the voxel nearest its middle.
                _ => {
                    let mid = self.to_zoom(a, (s + e) / 2);
                    (mid, mid)
                }
            };
            out[a] = z0 as f32;
            out[a + 3] = z1 as f32;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fm() -> FrameMap<'static> {
        FrameMap {
            dims: [30, 101, 122],
            crop_start: [0, 0, 0],
            crop_end: [30, 96, 121],
            zoom: [32, 256, 256],
            world_to_voxel: None,
        }
    }

    #[test]
    fn frame_names() {
        assert_eq!("world".parse::<Frame>().unwrap(), Frame::World);
        assert!("pixels"
            .parse::<Frame>()
            .unwrap_err()
            .to_string()
            .contains("unknown frame"));
    }

    #[test]
    fn voxel_point_maps_through_the_axis_swap_and_crop() {
        let m = fm();
        // (i, j, k) = (60, 48, 15) -> (d, h, w) = (15, 48, 60) -> zoom.
        let (z, l) = m
            .point(&UserPoint::new([60.0, 48.0, 15.0], true), Frame::Voxel)
            .unwrap();
        assert_eq!(l, 1.0);
        assert_eq!(
            z,
            [
                ((15.5f64 * 32.0 / 30.0).floor()) as f32,
                ((48.5f64 * 256.0 / 96.0).floor()) as f32,
                ((60.5f64 * 256.0 / 121.0).floor()) as f32
            ]
        );
        assert!(m
            .point(&UserPoint::new([121.0, 0.0, 0.0], true), Frame::Voxel)
            .unwrap_err()
            .to_string()
            .contains("foreground crop"));
        assert!(m
            .point(&UserPoint::new([500.0, 0.0, 0.0], true), Frame::Voxel)
            .unwrap_err()
            .to_string()
            .contains("outside the volume"));
    }

    #[test]
    fn boxes_are_clipped_and_ordered() {
        let m = fm();
        let b = m.bbox(
            &UserBox::new([130.0, 100.0, 29.0, 0.0, 0.0, 0.0]),
            Frame::Voxel,
        );
        // i = 130 is outside the volume (122 wide).
        assert!(b.is_err());
        let b = m
            .bbox(
                &UserBox::new([121.0, 100.0, 29.0, 0.0, 0.0, 0.0]),
                Frame::Voxel,
            )
            .unwrap();
        assert_eq!(b, [0.0, 0.0, 0.0, 31.0, 255.0, 255.0]);
        assert!(m
            .bbox(
                &UserBox::new([0.0, 0.0, 0.0, 31.0, 255.0, 256.0]),
                Frame::Zoom
            )
            .is_err());
        assert!(m
            .bbox(&UserBox::new([5.0, 0.0, 0.0, 4.0, 10.0, 10.0]), Frame::Zoom)
            .is_err());
        assert_eq!(
            m.bbox(
                &UserBox::new([0.0, 67.0, 87.0, 31.0, 231.0, 223.0]),
                Frame::Zoom
            )
            .unwrap(),
            [0.0, 67.0, 87.0, 31.0, 231.0, 223.0]
        );
        // A one-voxel box in a downsampled axis still maps to one voxel.
        let big = FrameMap {
            dims: [300, 512, 512],
            crop_start: [0, 0, 0],
            crop_end: [300, 512, 512],
            zoom: [32, 256, 256],
            world_to_voxel: None,
        };
        let b = big
            .bbox(&UserBox::new([5.0, 5.0, 7.0, 5.0, 5.0, 7.0]), Frame::Voxel)
            .unwrap();
        assert_eq!((b[0], b[3]), (0.0, 0.0));
    }
}
