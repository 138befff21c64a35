//! Slice order, spacing checks and the voxel-to-world affine of a DICOM
//! series, in the convention NIfTI converters (dcm2niix) use, so a series
//! read here lands exactly where its converted `.nii.gz` would.
//!
//! DICOM places pixel (column c, row r) of a slice at
//! `IPP + c·Δc·X + r·Δr·Y` in LPS millimetres, with X and Y the two
//! ImageOrientationPatient cosines and (Δr, Δc) the PixelSpacing. The
//! converter's volume differs from that in three ways, all reproduced here:
//! slices are sorted by their position along the normal `X × Y` (ascending);
//! the rows are stored bottom-up (voxel j is DICOM row `rows − 1 − j`), so a
//! usual axial series gets a positive j column; and world coordinates are RAS
//! (x and y negated).

use super::super::affine::Affine;

/// Largest departure of a slice offset from the slice normal, in mm, before
/// the series is called tilted (gantry tilt or a sheared stack): the volume
/// would need resampling, which this reader does not do.
const MAX_SHEAR_MM: f64 = 0.01;
/// Slice gaps may differ from their median by this fraction (plus
/// `GAP_ABS_MM`) before the series is called inconsistent (missing slices).
const GAP_REL: f64 = 0.01;
const GAP_ABS_MM: f64 = 0.01;
/// Two slices closer than this along the normal are at the same position.
const SAME_POSITION_MM: f64 = 1e-3;
/// Tolerance on the orientation cosines (unit length, orthogonality, and
/// agreement between slices).
const COSINE_TOL: f64 = 1e-4;

pub fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

pub fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

/// The row and column direction cosines of ImageOrientationPatient, checked
/// to be unit length and orthogonal.
pub fn orientation(iop: &[f64]) -> Result<([f64; 3], [f64; 3]), String> {
    if iop.len() != 6 || iop.iter().any(|v| !v.is_finite()) {
        return Err(format!(
            "ImageOrientationPatient {iop:?} is not six finite numbers"
        ));
    }
    let x = [iop[0], iop[1], iop[2]];
    let y = [iop[3], iop[4], iop[5]];
    if (norm(x) - 1.0).abs() > COSINE_TOL
        || (norm(y) - 1.0).abs() > COSINE_TOL
        || dot(x, y).abs() > COSINE_TOL
    {
        return Err(format!(
            "ImageOrientationPatient {iop:?} is not two orthogonal unit vectors"
        ));
    }
    Ok((x, y))
}

/// Whether two orientations agree within the tolerance.
pub fn same_orientation(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(p, q)| (p - q).abs() <= COSINE_TOL)
}

/// Sorts slice positions along the normal of orientation `(x, y)` and
/// checks them: no two at one place, all on the normal through the first
/// (no gantry tilt), equal gaps (no missing slice). Returns the order
/// (indices into `ipp`, ascending along the normal) and the step vector
/// between consecutive slices in LPS mm (`None` for a single slice).
/// `name(i)` labels slice i in messages.
pub fn sort_slices(
    ipp: &[[f64; 3]],
    x: [f64; 3],
    y: [f64; 3],
    name: &dyn Fn(usize) -> String,
) -> Result<(Vec<usize>, Option<[f64; 3]>), String> {
    let n = cross(x, y);
    let dist: Vec<f64> = ipp.iter().map(|p| dot(*p, n)).collect();
    let mut order: Vec<usize> = (0..ipp.len()).collect();
    order.sort_by(|&a, &b| dist[a].total_cmp(&dist[b]));
    if ipp.len() < 2 {
        return Ok((order, None));
    }
    for w in order.windows(2) {
        if dist[w[1]] - dist[w[0]] < SAME_POSITION_MM {
            return Err(format!(
                "{} and {} are at the same position {:?} (several acquisitions or echoes in one series?)",
                name(w[0]),
                name(w[1]),
                ipp[w[0]]
            ));
        }
    }
    let first = ipp[order[0]];
    for &s in &order[1..] {
        let d = sub(ipp[s], first);
        let along = dot(d, n);
        let off = norm(sub(d, [along * n[0], along * n[1], along * n[2]]));
        if off > MAX_SHEAR_MM {
            return Err(format!(
                "gantry tilt or sheared slices: {} lies {off:.3} mm off the slice normal through {} (the volume would need resampling)",
                name(s),
                name(order[0])
            ));
        }
    }
    let gaps: Vec<f64> = order.windows(2).map(|w| dist[w[1]] - dist[w[0]]).collect();
    let mut sorted = gaps.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let tol = GAP_REL * median + GAP_ABS_MM;
    if let Some((at, gap)) = gaps
        .iter()
        .enumerate()
        .find(|(_, g)| (**g - median).abs() > tol)
    {
        return Err(format!(
            "inconsistent slice spacing: {:.3} mm between {} and {} where the series' usual gap is {median:.3} mm (missing slices?)",
            gap,
            name(order[at]),
            name(order[at + 1])
        ));
    }
    let last = ipp[*order.last().expect("two or more slices")];
    let steps = (order.len() - 1) as f64;
    let step = sub(last, first).map(|v| v / steps);
    Ok((order, Some(step)))
}

/// The RAS affine of the volume the reader builds: voxel (i, j, k) is
/// column i, row `rows − 1 − j` of the k-th sorted slice. `first` is the
/// ImagePositionPatient of that slice, `spacing` the PixelSpacing
/// (between rows, between columns), `step` the LPS vector between slices.
pub fn ras_affine(
    first: [f64; 3],
    x: [f64; 3],
    y: [f64; 3],
    spacing: [f64; 2],
    rows: usize,
    step: [f64; 3],
) -> Affine {
    let (dr, dc) = (spacing[0], spacing[1]);
    let flip = (rows as f64 - 1.0) * dr;
    let origin = [0, 1, 2].map(|a| first[a] + flip * y[a]);
    // LPS → RAS negates the first two world axes.
    let sign = [-1.0, -1.0, 1.0];
    let mut m = [[0.0; 4]; 4];
    for a in 0..3 {
        m[a] = [
            sign[a] * dc * x[a],
            -sign[a] * dr * y[a],
            sign[a] * step[a],
            sign[a] * origin[a],
        ];
    }
    m[3] = [0.0, 0.0, 0.0, 1.0];
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(i: usize) -> String {
        format!("slice {i}")
    }

    #[test]
    fn axial_series_gets_the_converters_affine() {
        // A head-first axial stack stored top slice first: the sort puts the
        // lowest z first, and the flipped rows give +y.
        let ipp: Vec<[f64; 3]> = (0..4)
            .map(|s| [-250.0, -437.5, -766.5 - 2.0 * s as f64])
            .collect();
        let (x, y) = orientation(&[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]).unwrap();
        let (order, step) = sort_slices(&ipp, x, y, &names).unwrap();
        assert_eq!(order, vec![3, 2, 1, 0]);
        let step = step.unwrap();
        assert_eq!(step, [0.0, 0.0, 2.0]);
        let m = ras_affine(ipp[order[0]], x, y, [0.5, 0.75], 512, step);
        assert_eq!(m[0], [-0.75, 0.0, 0.0, 250.0]);
        assert_eq!(m[1], [0.0, 0.5, 0.0, 437.5 - 511.0 * 0.5]);
        assert_eq!(m[2], [0.0, 0.0, 2.0, -772.5]);
    }

    #[test]
    fn missing_slice_tilt_and_duplicates_are_refused() {
        let (x, y) = orientation(&[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]).unwrap();
        let gap = vec![[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 3.0]];
        let e = sort_slices(&gap, x, y, &names).unwrap_err();
        assert!(e.contains("inconsistent slice spacing"), "{e}");
        let tilt = vec![[0.0, 0.0, 0.0], [0.0, 0.3, 1.0], [0.0, 0.6, 2.0]];
        let e = sort_slices(&tilt, x, y, &names).unwrap_err();
        assert!(e.contains("gantry tilt"), "{e}");
        let dup = vec![[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]];
        let e = sort_slices(&dup, x, y, &names).unwrap_err();
        assert!(e.contains("same position"), "{e}");
        assert!(orientation(&[1.0, 0.0, 0.0, 1.0, 0.0, 0.0]).is_err());
    }
}
