//! The voxel → world (scanner mm) transform of a NIfTI-1 header.
//!
//! Precedence as nibabel's `get_best_affine`: the sform when its code is set,
//! else the qform (quaternion + pixdim, with qfac from pixdim[0]), else plain
//! pixdim scaling. For the last case nibabel invents a centred, x-flipped
//! Analyze affine; we follow the NIfTI-1 standard's "method 1" instead
//! (`x = pixdim[1]·i` etc., no offset), since such a file has no real world
//! frame and the standard is what other NIfTI readers implement.

use nifti::NiftiHeader;

pub type Affine = [[f64; 4]; 4];

/// How the affine was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffineSource {
    Sform,
    Qform,
    Pixdim,
}

impl AffineSource {
    pub fn name(self) -> &'static str {
        match self {
            AffineSource::Sform => "sform",
            AffineSource::Qform => "qform",
            AffineSource::Pixdim => "pixdim",
        }
    }
}

/// Codes beyond the defined ones (1..=5) are treated as "unknown", as
/// nibabel's header check resets them to 0.
fn code_is_set(code: i16) -> bool {
    (1..=5).contains(&code)
}

/// The affine of a grid with only voxel sizes (mm along i, j, k) and no
/// orientation or origin: NIfTI-1's "method 1", as for a header without
/// sform or qform.
pub fn from_spacing(spacing: [f64; 3]) -> Affine {
    [
        [spacing[0], 0.0, 0.0, 0.0],
        [0.0, spacing[1], 0.0, 0.0],
        [0.0, 0.0, spacing[2], 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
}

/// The best affine of `h`, or a message saying which field is unusable.
pub fn best_affine(h: &NiftiHeader) -> Result<(Affine, AffineSource), String> {
    let (aff, src) = if code_is_set(h.sform_code) {
        (sform_affine(h), AffineSource::Sform)
    } else if code_is_set(h.qform_code) {
        (qform_affine(h)?, AffineSource::Qform)
    } else {
        (pixdim_affine(h)?, AffineSource::Pixdim)
    };
    if aff.iter().flatten().any(|v| !v.is_finite()) {
        return Err(format!(
            "the {} voxel-to-world affine has non-finite entries",
            src.name()
        ));
    }
    Ok((aff, src))
}

fn sform_affine(h: &NiftiHeader) -> Affine {
    let row = |r: [f32; 4]| r.map(f64::from);
    [
        row(h.srow_x),
        row(h.srow_y),
        row(h.srow_z),
        [0.0, 0.0, 0.0, 1.0],
    ]
}

/// Voxel sizes as nibabel's header check leaves them: negative → absolute,
/// zero → 1.
fn voxel_sizes(h: &NiftiHeader) -> Result<[f64; 3], String> {
    let mut out = [0.0; 3];
    for (k, o) in out.iter_mut().enumerate() {
        let v = f64::from(h.pixdim[k + 1]);
        if !v.is_finite() {
            return Err(format!("pixdim[{}] is {v}", k + 1));
        }
        *o = if v == 0.0 { 1.0 } else { v.abs() };
    }
    Ok(out)
}

fn qform_affine(h: &NiftiHeader) -> Result<Affine, String> {
    let (b, c, d) = (
        f64::from(h.quatern_b),
        f64::from(h.quatern_c),
        f64::from(h.quatern_d),
    );
    let w2 = 1.0 - (b * b + c * c + d * d);
    // nibabel tolerates rounding (|b,c,d| a hair over 1) up to 3 float32 eps.
    if w2.is_nan() || w2 < -3.0 * f64::from(f32::EPSILON) {
        return Err(format!(
            "qform quaternion (b, c, d) = ({b}, {c}, {d}) has norm above 1"
        ));
    }
    let a = w2.max(0.0).sqrt();
    let r = quat_to_rotation(a, b, c, d);
    let mut vox = voxel_sizes(h)?;
    // qfac: -1 flips the k axis; any other pixdim[0] counts as 1.
    if h.pixdim[0] == -1.0 {
        vox[2] = -vox[2];
    }
    let t = [h.quatern_x, h.quatern_y, h.quatern_z].map(f64::from);
    let mut aff = [[0.0; 4]; 4];
    for i in 0..3 {
        for j in 0..3 {
            aff[i][j] = r[i][j] * vox[j];
        }
        aff[i][3] = t[i];
    }
    aff[3][3] = 1.0;
    Ok(aff)
}

/// Rotation of the unit quaternion (a, b, c, d), in the normalising form
/// nibabel's `quat2mat` uses so the rounding matches.
fn quat_to_rotation(w: f64, x: f64, y: f64, z: f64) -> [[f64; 3]; 3] {
    let nq = w * w + x * x + y * y + z * z;
    if nq < f64::EPSILON {
        return [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    }
    let s = 2.0 / nq;
    let (xs, ys, zs) = (x * s, y * s, z * s);
    let (wx, wy, wz) = (w * xs, w * ys, w * zs);
    let (xx, xy, xz) = (x * xs, x * ys, x * zs);
    let (yy, yz, zz) = (y * ys, y * zs, z * zs);
    [
        [1.0 - (yy + zz), xy - wz, xz + wy],
        [xy + wz, 1.0 - (xx + zz), yz - wx],
        [xz - wy, yz + wx, 1.0 - (xx + yy)],
    ]
}

fn pixdim_affine(h: &NiftiHeader) -> Result<Affine, String> {
    let v = voxel_sizes(h)?;
    Ok([
        [v[0], 0.0, 0.0, 0.0],
        [0.0, v[1], 0.0, 0.0],
        [0.0, 0.0, v[2], 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ])
}

/// Applies the affine to a voxel coordinate.
pub fn apply(aff: &Affine, p: [f64; 3]) -> [f64; 3] {
    let mut out = [0.0; 3];
    for (i, o) in out.iter_mut().enumerate() {
        *o = aff[i][0] * p[0] + aff[i][1] * p[1] + aff[i][2] * p[2] + aff[i][3];
    }
    out
}

/// Solves `aff · v = p` for the voxel `v`; `None` when the 3×3 part is
/// singular (relative to its scale) or the result is not finite.
pub fn invert_apply(aff: &Affine, p: [f64; 3]) -> Option<[f64; 3]> {
    let m = [
        [aff[0][0], aff[0][1], aff[0][2]],
        [aff[1][0], aff[1][1], aff[1][2]],
        [aff[2][0], aff[2][1], aff[2][2]],
    ];
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    let scale = m.iter().flatten().fold(0.0f64, |acc, v| acc.max(v.abs()));
    if !det.is_finite() || scale == 0.0 || det.abs() <= 1e-12 * scale * scale * scale {
        return None;
    }
    let r = [p[0] - aff[0][3], p[1] - aff[1][3], p[2] - aff[2][3]];
    // Cramer's rule: column j replaced by r.
    let det_with = |j: usize| {
        let mut mm = m;
        for i in 0..3 {
            mm[i][j] = r[i];
        }
        mm[0][0] * (mm[1][1] * mm[2][2] - mm[1][2] * mm[2][1])
            - mm[0][1] * (mm[1][0] * mm[2][2] - mm[1][2] * mm[2][0])
            + mm[0][2] * (mm[1][0] * mm[2][1] - mm[1][1] * mm[2][0])
    };
    let v = [det_with(0) / det, det_with(1) / det, det_with(2) / det];
    v.iter().all(|x| x.is_finite()).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> NiftiHeader {
        NiftiHeader {
            pixdim: [1.0, 0.8, 0.9, 3.0, 1.0, 1.0, 1.0, 1.0],
            sform_code: 0,
            qform_code: 0,
            ..NiftiHeader::default()
        }
    }

    #[test]
    fn precedence_sform_qform_pixdim() {
        let mut h = header();
        assert_eq!(best_affine(&h).unwrap().1, AffineSource::Pixdim);
        assert_eq!(best_affine(&h).unwrap().0[2][2], 3.0);
        h.qform_code = 1;
        assert_eq!(best_affine(&h).unwrap().1, AffineSource::Qform);
        h.sform_code = 2;
        h.srow_x = [2.0, 0.0, 0.0, -5.0];
        let (a, s) = best_affine(&h).unwrap();
        assert_eq!(s, AffineSource::Sform);
        assert_eq!(a[0], [2.0, 0.0, 0.0, -5.0]);
    }

    #[test]
    fn qform_rotation_and_qfac() {
        // 90° about z: (a, b, c, d) = (cos 45°, 0, 0, sin 45°).
        let mut h = header();
        h.qform_code = 1;
        h.quatern_d = std::f32::consts::FRAC_1_SQRT_2;
        h.quatern_x = 10.0;
        h.pixdim[0] = -1.0;
        let (a, _) = best_affine(&h).unwrap();
        let p = apply(&a, [1.0, 0.0, 1.0]);
        assert!((p[0] - 10.0).abs() < 1e-6, "{p:?}");
        assert!((p[1] - 0.8).abs() < 1e-6, "{p:?}");
        assert!((p[2] + 3.0).abs() < 1e-6, "{p:?}");
        let back = invert_apply(&a, p).unwrap();
        assert!(
            (back[0] - 1.0).abs() < 1e-9 && back[1].abs() < 1e-9 && (back[2] - 1.0).abs() < 1e-9
        );
    }

    #[test]
    fn bad_quaternion_and_singular_affine() {
        let mut h = header();
        h.qform_code = 1;
        h.quatern_b = 1.0;
        h.quatern_c = 1.0;
        assert!(best_affine(&h).unwrap_err().contains("quaternion"));
        let zero = [[0.0; 4]; 4];
        assert!(invert_apply(&zero, [1.0, 2.0, 3.0]).is_none());
    }
}
