//! `F.interpolate`'s index and weight rules and a host resize, exactly as
//! ATen computes them on the CPU. One copy serves the CPU backend's resize,
//! the CUDA backend (which computes its taps here and uploads them), and the
//! pipeline's host-side resizes of whole CTs.

use rayon::prelude::*;

use crate::backend::Interp;

/// Source index of output `dst` along one axis for the nearest modes,
/// exactly as ATen computes it on the CPU.
pub fn nearest_index(mode: Interp, dst: usize, input: usize, output: usize) -> usize {
    let scale = input as f32 / output as f32;
    match mode {
        Interp::Nearest => {
            if output == input {
                dst
            } else if output == 2 * input {
                dst >> 1
            } else {
                (((dst as f32) * scale).floor() as usize).min(input - 1)
            }
        }
        Interp::NearestExact => {
            // ATen: floorf((dst_index + 0.5) * scale), the product in double.
            ((((dst as f64 + 0.5) * scale as f64) as f32).floor() as usize).min(input - 1)
        }
        Interp::Trilinear => unreachable!("not a nearest mode"),
    }
}

/// Linear interpolation taps along one axis (align_corners=False):
/// (i0, i1, λ0, λ1), as ATen's `compute_source_index_and_lambda`.
pub fn linear_taps(dst: usize, input: usize, output: usize) -> (usize, usize, f32, f32) {
    if input == output {
        return (dst, dst, 1.0, 0.0);
    }
    let scale = input as f32 / output as f32;
    let real = (scale * (dst as f32 + 0.5) - 0.5).max(0.0);
    let i0 = (real.floor() as usize).min(input - 1);
    let l1 = (real - i0 as f32).clamp(0.0, 1.0);
    let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
    (i0, i1, 1.0 - l1, l1)
}

/// `F.interpolate` of `[planes, D, H, W]` (planes = B·C).
pub fn resize(
    x: &[f32],
    planes: usize,
    inp: [usize; 3],
    out_dims: [usize; 3],
    mode: Interp,
    out: &mut [f32],
) {
    let [id, ih, iw] = inp;
    let [od, oh, ow] = out_dims;
    let plane_out = od * oh * ow;
    match mode {
        Interp::Nearest | Interp::NearestExact => {
            let sd: Vec<usize> = (0..od).map(|i| nearest_index(mode, i, id, od)).collect();
            let sh: Vec<usize> = (0..oh).map(|i| nearest_index(mode, i, ih, oh)).collect();
            let sw: Vec<usize> = (0..ow).map(|i| nearest_index(mode, i, iw, ow)).collect();
            out.par_chunks_mut(ow).enumerate().for_each(|(r, o)| {
                let p = r / (od * oh);
                let z = (r / oh) % od;
                let y = r % oh;
                let src = &x[p * id * ih * iw + (sd[z] * ih + sh[y]) * iw..];
                for (o, &s) in o.iter_mut().zip(&sw) {
                    *o = src[s];
                }
            });
        }
        Interp::Trilinear => {
            let td: Vec<_> = (0..od).map(|i| linear_taps(i, id, od)).collect();
            let th: Vec<_> = (0..oh).map(|i| linear_taps(i, ih, oh)).collect();
            let tw: Vec<_> = (0..ow).map(|i| linear_taps(i, iw, ow)).collect();
            out.par_chunks_mut(ow).enumerate().for_each(|(r, o)| {
                let p = r / (od * oh);
                let (d0, d1, ld0, ld1) = td[(r / oh) % od];
                let (h0, h1, lh0, lh1) = th[r % oh];
                let base = &x[p * id * ih * iw..];
                let row = |d: usize, h: usize| &base[(d * ih + h) * iw..(d * ih + h + 1) * iw];
                let (r00, r01, r10, r11) = (row(d0, h0), row(d0, h1), row(d1, h0), row(d1, h1));
                // Same nesting as ATen's Interpolate<3>: w innermost, d outermost.
                for (o, &(w0, w1, lw0, lw1)) in o.iter_mut().zip(&tw) {
                    let a = (r00[w0] * lw0 + r00[w1] * lw1) * lh0
                        + (r01[w0] * lw0 + r01[w1] * lw1) * lh1;
                    let b = (r10[w0] * lw0 + r10[w1] * lw1) * lh0
                        + (r11[w0] * lw0 + r11[w1] * lw1) * lh1;
                    *o = a * ld0 + b * ld1;
                }
            });
        }
    }
    debug_assert_eq!(out.len(), planes * plane_out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rules() {
        // out == in copies; out == 2·in halves; otherwise floor(dst·s).
        assert_eq!(nearest_index(Interp::Nearest, 5, 10, 10), 5);
        assert_eq!(nearest_index(Interp::Nearest, 7, 10, 20), 3);
        assert_eq!(
            (0..5)
                .map(|i| nearest_index(Interp::Nearest, i, 3, 5))
                .collect::<Vec<_>>(),
            vec![0, 0, 1, 1, 2]
        );
        assert_eq!(
            (0..4)
                .map(|i| nearest_index(Interp::NearestExact, i, 10, 4))
                .collect::<Vec<_>>(),
            vec![1, 3, 6, 8]
        );
        assert_eq!(
            (0..5)
                .map(|i| nearest_index(Interp::NearestExact, i, 3, 5))
                .collect::<Vec<_>>(),
            vec![0, 0, 1, 2, 2]
        );
    }

    #[test]
    fn linear_taps_match_pytorch() {
        // 64 -> 256: src = 0.25·(i+0.5) − 0.5, clamped at 0.
        assert_eq!(linear_taps(0, 64, 256), (0, 1, 1.0, 0.0));
        assert_eq!(linear_taps(2, 64, 256), (0, 1, 0.875, 0.125));
        assert_eq!(linear_taps(255, 64, 256), (63, 63, 0.625, 0.375));
        assert_eq!(linear_taps(7, 32, 32), (7, 7, 1.0, 0.0));
    }
}
