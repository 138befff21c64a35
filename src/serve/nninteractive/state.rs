//! One client's nnInteractive session over [`segvol::api::Session`]: the
//! image, the prompts, the mirror of the client's target buffer, and the
//! diff each prediction sends back.
//!
//! Axis order. The client sends `(1, A0, A1, A2)`, C-order (the last axis
//! varies fastest), and speaks of voxels as `(a0, a1, a2)`. A NIfTI volume of
//! dims `(I, J, K)` stored in file order (i fastest) is byte for byte the
//! C-order array `(K, J, I)`, which is what SimpleITK, 3D Slicer's
//! `arrayFromVolume` and napari's ITK-based readers hand the viewers'
//! plugins. So the upload becomes a `CtVolume` of dims `(A2, A1, A0)` without
//! moving a byte, a client voxel `(a0, a1, a2)` is SegVol's voxel
//! `(i, j, k) = (a2, a1, a0)`, and SegVol's label map in file order is the
//! client's mask as is. SegVol's depth axis (the one it shrinks least) is
//! then the client's first axis, the slice axis of those readers.
//!
//! Prompts accumulate as in nnInteractive: clicks add up (positive ones
//! extend, negative ones carve), a box or a text replaces the previous one
//! (SegVol's decoder takes one of each per object), `reset_interactions`
//! starts a new object. Boxes are half-open `[lo, hi)` per axis, clipped to
//! the image; a box one voxel thick on some axis (a 2D box drawn on a
//! slice) reaches SegVol as a 3D box one voxel thick on that axis, since
//! SegVol has no 2D box prompt (it was trained on 3D boxes; a flat one is
//! outside what it saw, so clicks or a 3D box serve it better).

use std::time::Instant;

use segvol::io::{affine, nifti::CtVolume};

use crate::serve::model::Interactive;

use super::nnia::{self, Array, Dtype};

/// A request the client got wrong (HTTP 400) and why, in one line.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRequest(pub String);

impl std::fmt::Display for BadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad<T>(msg: impl Into<String>) -> Result<T, BadRequest> {
    Err(BadRequest(msg.into()))
}

/// One prompt, already in SegVol's voxel frame `(i, j, k)`.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Point { at: [f64; 3], positive: bool },
    Box { corners: [f64; 6] },
    Text(String),
}

/// What a prediction changed: `ran` and, when voxels changed, their bbox
/// (half-open, client axes) with the new mask inside it as an NNIA body.
#[derive(Debug, Default)]
pub struct Reply {
    pub ran: bool,
    /// Milliseconds in the library's re-segmentation (`set_prompts`).
    pub model_ms: f64,
    pub changed: Option<([[usize; 2]; 3], Vec<u8>)>,
}

/// The mirror of the client's target buffer: the mask it holds now.
struct Target {
    shape: [usize; 3],
    mask: Vec<u8>,
}

/// The prompts of the current object, as SegVol takes them.
#[derive(Clone, Debug, Default, PartialEq)]
struct Prompts {
    text: Option<String>,
    corners: Option<[f64; 6]>,
    points: Vec<([f64; 3], bool)>,
}

impl Prompts {
    fn add(&mut self, p: Prompt) {
        match p {
            Prompt::Point { at, positive } => self.points.push((at, positive)),
            Prompt::Box { corners } => self.corners = Some(corners),
            Prompt::Text(t) => self.text = Some(t),
        }
    }
}

/// The protocol's per-session state (the session store's `extra`); the
/// segmentation session itself is the store's [`Interactive`].
pub struct NnState {
    /// The image's spatial shape in client axes `(A0, A1, A2)`.
    shape: Option<[usize; 3]>,
    target: Option<Target>,
    /// The prompts the session's mask was predicted from.
    applied: Prompts,
    /// Those plus the ones added with `run_prediction = false`.
    queued: Prompts,
    /// Last real action (not heartbeats), for `/lease_status`.
    pub last_active: Instant,
}

impl Default for NnState {
    fn default() -> Self {
        NnState {
            shape: None,
            target: None,
            applied: Prompts::default(),
            queued: Prompts::default(),
            last_active: Instant::now(),
        }
    }
}

/// The largest target buffer we mirror, in voxels (the CT limit).
const MAX_TARGET_VOXELS: usize = 1 << 31;

impl NnState {
    /// Sets the image from an uploaded `(1, A0, A1, A2)` array; returns the
    /// shape for the client's `original_image_shape`. `spacing` (client axes,
    /// from `image_properties`) only goes into the synthesised header: SegVol
    /// works on voxels.
    pub fn set_image(
        &mut self,
        sess: &mut dyn Interactive,
        img: Array,
        spacing: Option<[f64; 3]>,
    ) -> Result<[usize; 4], BadRequest> {
        let s = &img.shape;
        if s.len() != 4 {
            return bad(format!("expected a 4D image (1, x, y, z), got shape {s:?}"));
        }
        if s[0] != 1 {
            return bad(format!(
                "SegVol takes one channel; the image has {} (shape {s:?})",
                s[0]
            ));
        }
        let shape = [s[1], s[2], s[3]];
        let spacing = spacing.unwrap_or([1.0; 3]);
        let ct = CtVolume::from_array(
            "nninteractive-upload",
            [shape[2], shape[1], shape[0]],
            img.to_f32(),
            affine::from_spacing([spacing[2], spacing[1], spacing[0]]),
        )
        .map_err(|e| BadRequest(e.to_string()))?;
        sess.set_image(ct).map_err(|e| BadRequest(e.to_string()))?;
        self.shape = Some(shape);
        // As in nnInteractive, a new image drops the target buffer; the
        // client sets a new one.
        self.target = None;
        self.applied = Prompts::default();
        self.queued = Prompts::default();
        Ok([1, shape[0], shape[1], shape[2]])
    }

    /// The client's target buffer: its shape (client axes) and dtype (bool
    /// or an integer type); the mirror starts empty, as the server's does.
    pub fn set_target_buffer(&mut self, shape: &[i64], dtype: &str) -> Result<(), BadRequest> {
        if shape.len() != 3 {
            return bad(format!("target buffer shape must be 3D, got {shape:?}"));
        }
        if shape.iter().any(|&d| d <= 0) {
            return bad(format!(
                "target buffer shape {shape:?}: dimensions must be positive"
            ));
        }
        match Dtype::parse(dtype) {
            Some(Dtype::F16 | Dtype::F32 | Dtype::F64) | None => {
                return bad(format!(
                    "target buffer dtype {dtype:?}: must be bool or an integer type"
                ))
            }
            Some(_) => {}
        }
        let shape = [shape[0] as usize, shape[1] as usize, shape[2] as usize];
        let n = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&n| n <= MAX_TARGET_VOXELS);
        let Some(n) = n else {
            return bad(format!("target buffer shape {shape:?} is too large"));
        };
        if let Some(img) = self.shape {
            if img != shape {
                return bad(format!(
                    "target buffer shape {shape:?} differs from the image's {img:?}"
                ));
            }
        }
        self.target = Some(Target {
            shape,
            mask: vec![0; n],
        });
        Ok(())
    }

    /// Forgets the prompts and clears the mask (the client clears its
    /// buffer itself); the image and its embeddings stay.
    pub fn reset_interactions(&mut self, sess: &mut dyn Interactive) {
        sess.reset();
        self.applied = Prompts::default();
        self.queued = Prompts::default();
        if let Some(t) = &mut self.target {
            t.mask.fill(0);
        }
    }

    /// A click at client voxel `coords`, rounded half to even as
    /// nnInteractive (Python's `round`) does.
    pub fn point(&self, coords: &[f64], positive: bool) -> Result<Prompt, BadRequest> {
        let shape = self.need_image()?;
        if coords.len() != 3 {
            return bad(format!("a point needs 3 coordinates, got {}", coords.len()));
        }
        let mut v = [0f64; 3];
        for a in 0..3 {
            let c = coords[a].round_ties_even();
            if !c.is_finite() || c < 0.0 || c >= shape[a] as f64 {
                return bad(format!(
                    "point {coords:?} lies outside the image of shape {shape:?}"
                ));
            }
            v[a] = c;
        }
        Ok(Prompt::Point {
            at: [v[2], v[1], v[0]],
            positive,
        })
    }

    /// A box `[[lo, hi], ...]` (half-open, client axes), clipped to the
    /// image. Exclusion boxes do not exist in SegVol.
    pub fn bbox(&self, coords: &[Vec<f64>], include: bool) -> Result<Prompt, BadRequest> {
        let shape = self.need_image()?;
        if !include {
            return bad("SegVol has no negative (exclusion) box: use negative points instead");
        }
        if coords.len() != 3 || coords.iter().any(|r| r.len() != 2) {
            return bad("a box is [[x0, x1], [y0, y1], [z0, z1]]");
        }
        let mut lo = [0f64; 3];
        let mut hi = [0f64; 3];
        for a in 0..3 {
            let (l, h) = (
                coords[a][0].round_ties_even(),
                coords[a][1].round_ties_even(),
            );
            if !l.is_finite() || !h.is_finite() || h - l < 1.0 {
                return bad(format!(
                    "box {coords:?} is empty on axis {a} (ranges are half-open [lo, hi))"
                ));
            }
            let (l, h) = (l.max(0.0), h.min(shape[a] as f64));
            if h <= l {
                return bad(format!(
                    "box {coords:?} lies outside the image of shape {shape:?}"
                ));
            }
            lo[a] = l;
            hi[a] = h - 1.0; // inclusive last voxel
        }
        Ok(Prompt::Box {
            corners: [lo[2], lo[1], lo[0], hi[2], hi[1], hi[0]],
        })
    }

    /// SegVol's text prompt (a category name such as `liver`).
    pub fn text(&self, text: &str) -> Result<Prompt, BadRequest> {
        self.need_image()?;
        let t = text.trim();
        if t.is_empty() || t.len() > 200 || t.contains(['\n', '\r']) {
            return bad(
                "text must be one line of 1 to 200 characters (a category name such as liver)",
            );
        }
        Ok(Prompt::Text(t.to_string()))
    }

    fn need_image(&self) -> Result<[usize; 3], BadRequest> {
        self.shape
            .ok_or_else(|| BadRequest("no image: call set_image first".into()))
    }

    /// Adds a prompt; with `run`, predicts (with any queued before it).
    pub fn add(
        &mut self,
        sess: &mut dyn Interactive,
        p: Prompt,
        run: bool,
    ) -> Result<Reply, BadRequest> {
        self.queued.add(p);
        if run {
            self.predict(sess)
        } else {
            Ok(Reply::default())
        }
    }

    /// Predicts from the prompts so far, in one network run however many
    /// were queued; `ran = false` when nothing new was added since the last
    /// prediction. On an error the queued prompts are dropped and the
    /// previous ones (and mask) stay.
    pub fn predict(&mut self, sess: &mut dyn Interactive) -> Result<Reply, BadRequest> {
        if self.queued == self.applied {
            return Ok(Reply::default());
        }
        let shape = self.need_image()?;
        match &self.target {
            None => return bad("no target buffer: call set_target_buffer after set_image"),
            Some(t) if t.shape != shape => {
                return bad(format!(
                    "target buffer shape {:?} differs from the image's {shape:?}",
                    t.shape
                ))
            }
            Some(_) => {}
        }
        let q = &self.queued;
        let t0 = Instant::now();
        let seg = match sess.set_prompts(q.text.as_deref(), q.corners, &q.points) {
            Ok(seg) => seg,
            Err(e) => {
                self.queued = self.applied.clone();
                return bad(e.to_string());
            }
        };
        self.applied = self.queued.clone();
        let target = self.target.as_mut().expect("checked above");
        let model_ms = t0.elapsed().as_secs_f64() * 1e3;
        Ok(Reply {
            ran: true,
            model_ms,
            changed: apply_diff(&mut target.mask, shape, &seg.labels),
        })
    }
}

/// Writes the new mask (label 1) into `mask`; returns the bbox of the
/// voxels that changed and the new mask inside it, packed.
fn apply_diff(
    mask: &mut [u8],
    shape: [usize; 3],
    labels: &[u16],
) -> Option<([[usize; 2]; 3], Vec<u8>)> {
    let (n1, n2) = (shape[1], shape[2]);
    let mut lo = shape;
    let mut hi = [0usize; 3];
    for (idx, (m, &l)) in mask.iter_mut().zip(labels).enumerate() {
        let v = (l == 1) as u8;
        if *m != v {
            *m = v;
            let p = [idx / (n1 * n2), idx / n2 % n1, idx % n2];
            for a in 0..3 {
                lo[a] = lo[a].min(p[a]);
                hi[a] = hi[a].max(p[a] + 1);
            }
        }
    }
    if hi[0] == 0 {
        return None;
    }
    let sub = [hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]];
    let mut data = Vec::with_capacity(sub.iter().product());
    for a0 in lo[0]..hi[0] {
        for a1 in lo[1]..hi[1] {
            let row = (a0 * n1 + a1) * n2;
            data.extend_from_slice(&mask[row + lo[2]..row + hi[2]]);
        }
    }
    let body = nnia::pack(Dtype::U8, &sub, &data);
    Some(([[lo[0], hi[0]], [lo[1], hi[1]], [lo[2], hi[2]]], body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `(1, 20, 32, 24)` float32 upload with a bright block in air.
    fn image() -> Array {
        let shape = [20usize, 32, 24];
        let mut v = Vec::new();
        for a0 in 0..shape[0] {
            for a1 in 0..shape[1] {
                for a2 in 0..shape[2] {
                    let inside =
                        (4..16).contains(&a0) && (6..26).contains(&a1) && (5..20).contains(&a2);
                    let x: f32 = if inside {
                        40.0 + ((a0 * 7 + a1 * 3 + a2) % 50) as f32
                    } else {
                        -1000.0
                    };
                    v.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
        Array {
            dtype: Dtype::F32,
            shape: vec![1, shape[0], shape[1], shape[2]],
            data: v,
        }
    }

    type Sess = segvol::api::Session<segvol::backend::cpu::CpuBackend>;

    fn session() -> (NnState, Sess) {
        let engine = std::sync::Arc::new(segvol::api::Engine::synthetic_tiny().unwrap());
        let mut sess = segvol::api::Session::new(engine);
        let mut s = NnState::default();
        assert_eq!(
            s.set_image(&mut sess, image(), None).unwrap(),
            [1, 20, 32, 24]
        );
        s.set_target_buffer(&[20, 32, 24], "uint8").unwrap();
        (s, sess)
    }

    fn mask_of(sess: &Sess) -> Vec<u8> {
        sess.mask()
            .unwrap()
            .labels
            .iter()
            .map(|&l| (l == 1) as u8)
            .collect()
    }

    /// Applies a reply to a client-side buffer as `_apply_prediction_response` does.
    fn apply(buf: &mut [u8], shape: [usize; 3], r: &Reply) {
        let Some((bb, body)) = &r.changed else { return };
        let d = nnia::unpack(body, 1 << 30).unwrap();
        let sub = [
            bb[0][1] - bb[0][0],
            bb[1][1] - bb[1][0],
            bb[2][1] - bb[2][0],
        ];
        assert_eq!(d.shape, sub.to_vec());
        let mut it = d.data.iter();
        for a0 in bb[0][0]..bb[0][1] {
            for a1 in bb[1][0]..bb[1][1] {
                for a2 in bb[2][0]..bb[2][1] {
                    buf[(a0 * shape[1] + a1) * shape[2] + a2] = *it.next().unwrap();
                }
            }
        }
    }

    #[test]
    fn diffs_keep_the_client_buffer_equal_to_the_mask() {
        let (mut s, mut sess) = session();
        let shape = [20, 32, 24];
        let mut buf = vec![0u8; 20 * 32 * 24];
        let p = s.point(&[10.0, 15.2, 12.0], true).unwrap();
        assert_eq!(
            p,
            Prompt::Point {
                at: [12.0, 15.0, 10.0],
                positive: true
            }
        );
        let r = s.add(&mut sess, p, true).unwrap();
        assert!(r.ran);
        apply(&mut buf, shape, &r);
        assert_eq!(buf, mask_of(&sess));
        let p = s.point(&[5.0, 8.0, 6.0], false).unwrap();
        let r = s.add(&mut sess, p, true).unwrap();
        apply(&mut buf, shape, &r);
        let thin = s
            .bbox(&[vec![10.0, 11.0], vec![6.0, 26.0], vec![5.0, 20.0]], true)
            .unwrap();
        assert_eq!(
            thin,
            Prompt::Box {
                corners: [5.0, 6.0, 10.0, 19.0, 25.0, 10.0]
            }
        );
        let r = s.add(&mut sess, thin, true).unwrap();
        assert!(r.ran);
        apply(&mut buf, shape, &r);
        assert_eq!(buf, mask_of(&sess));
        s.reset_interactions(&mut sess);
        assert!(s.target.as_ref().unwrap().mask.iter().all(|&v| v == 0));
        assert!(
            !s.predict(&mut sess).unwrap().ran,
            "nothing queued after a reset"
        );
    }

    #[test]
    fn queued_prompts_predict_like_direct_ones() {
        let (mut a, mut sa) = session();
        let (mut b, mut sb) = session();
        let p1 = a.point(&[10.0, 15.0, 12.0], true).unwrap();
        let p2 = a.point(&[8.0, 20.0, 9.0], true).unwrap();
        assert!(!a.add(&mut sa, p1.clone(), false).unwrap().ran);
        assert!(!a.add(&mut sa, p2.clone(), false).unwrap().ran);
        assert!(a.predict(&mut sa).unwrap().ran);
        assert!(!a.predict(&mut sa).unwrap().ran, "nothing new");
        b.add(&mut sb, p1, true).unwrap();
        b.add(&mut sb, p2, true).unwrap();
        assert_eq!(mask_of(&sa), mask_of(&sb));
    }

    #[test]
    fn bad_requests_are_named() {
        let (mut s, mut sess) = session();
        assert!(s
            .point(&[20.0, 0.0, 0.0], true)
            .unwrap_err()
            .0
            .contains("outside"));
        assert!(s.point(&[1.0, 2.0], true).is_err());
        assert!(s
            .bbox(&[vec![3.0, 3.0], vec![0.0, 5.0], vec![0.0, 5.0]], true)
            .unwrap_err()
            .0
            .contains("empty"));
        assert!(s
            .bbox(&[vec![1.0, 3.0], vec![0.0, 5.0], vec![0.0, 5.0]], false)
            .unwrap_err()
            .0
            .contains("negative"));
        assert!(s.set_target_buffer(&[20, 32], "uint8").is_err());
        assert!(s.set_target_buffer(&[20, 32, 24], "float32").is_err());
        assert!(s
            .set_target_buffer(&[20, 32, 25], "uint8")
            .unwrap_err()
            .0
            .contains("differs"));
        let mut img = image();
        img.shape = vec![2, 10, 32, 24];
        assert!(s
            .set_image(&mut sess, img, None)
            .unwrap_err()
            .0
            .contains("one channel"));
        let mut fresh = NnState::default();
        assert!(fresh
            .point(&[0.0, 0.0, 0.0], true)
            .unwrap_err()
            .0
            .contains("set_image"));
        fresh.set_image(&mut sess, image(), None).unwrap();
        let p = fresh.point(&[10.0, 15.0, 12.0], true).unwrap();
        assert!(fresh
            .add(&mut sess, p, true)
            .unwrap_err()
            .0
            .contains("set_target_buffer"));
    }
}
