//! Shape checks shared by every backend, so each op refuses the same inputs
//! with the same message whatever device runs it. Each returns the sizes the
//! op needs.

use super::{Activation, AttnSpec};
use crate::error::{Error, Result};

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

pub fn check(cond: bool, msg: impl FnOnce() -> String) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(Error::Shape(msg()))
    }
}

/// `linear`: (m, k, n, output shape).
pub fn linear(
    xs: &[usize],
    ws: &[usize],
    bias: Option<&[usize]>,
    act: Activation,
    residual: Option<&[usize]>,
) -> Result<(usize, usize, usize, Vec<usize>)> {
    check(
        ws.len() == 2 && !xs.is_empty() && xs[xs.len() - 1] == ws[1],
        || format!("linear {xs:?} · {ws:?}ᵀ"),
    )?;
    let (n, k) = (ws[0], ws[1]);
    let m = numel(&xs[..xs.len() - 1]);
    let mut shape = xs.to_vec();
    *shape.last_mut().expect("non-empty") = n;
    if let Some(b) = bias {
        check(numel(b) == n, || {
            format!("linear bias {b:?} for {n} outputs")
        })?;
    }
    if let Some(r) = residual {
        check(r == shape.as_slice(), || {
            format!("linear residual {r:?} for {shape:?}")
        })?;
        check(act == Activation::None, || {
            "linear: residual with an activation".into()
        })?;
    }
    Ok((m, k, n, shape))
}

/// `download_box`: the volume dims `[D, H, W]` (the leading axes must hold
/// one item) after checking that the box lies inside them.
pub fn download_box(xs: &[usize], start: [usize; 3], len: [usize; 3]) -> Result<[usize; 3]> {
    let ok = xs.len() >= 3
        && numel(&xs[..xs.len() - 3]) == 1
        && (0..3).all(|a| {
            start[a]
                .checked_add(len[a])
                .is_some_and(|e| e <= xs[xs.len() - 3 + a])
        });
    check(ok, || {
        format!("download of the box {start:?}+{len:?} of {xs:?}")
    })?;
    Ok([xs[xs.len() - 3], xs[xs.len() - 2], xs[xs.len() - 1]])
}

/// `bmm_nt`: (batch, m, k, n).
pub fn bmm_nt(xs: &[usize], ws: &[usize]) -> Result<(usize, usize, usize, usize)> {
    check(
        xs.len() == 3 && ws.len() == 3 && xs[0] == ws[0] && xs[2] == ws[2],
        || format!("bmm {xs:?} · {ws:?}ᵀ"),
    )?;
    Ok((xs[0], xs[1], xs[2], ws[1]))
}

/// One `attention` operand `[B, len, width ≥ col + heads·head_dim]`: its row
/// stride.
pub fn attention_operand(
    sh: &[usize],
    col: usize,
    len: usize,
    s: &AttnSpec,
    what: &str,
) -> Result<usize> {
    let width = s.heads * s.head_dim;
    check(
        sh.len() == 3 && sh[0] == s.batch && sh[1] == len && col + width <= sh[2],
        || format!("attention {what} {sh:?} (col {col}) for {s:?}"),
    )?;
    Ok(sh[2])
}

/// The spec itself.
pub fn attention_spec(s: &AttnSpec) -> Result<()> {
    check(!s.causal || s.q_len == s.kv_len, || {
        "causal attention needs q_len == kv_len".into()
    })?;
    check(s.kv_len > 0 || s.q_len == 0, || {
        format!("attention over zero keys: {s:?}")
    })
}

/// `patch_embed`: (batch, image dims, tokens, channels).
pub fn patch_embed(
    image: &[usize],
    w: &[usize],
    b_len: usize,
    pos_len: usize,
    patch: [usize; 3],
) -> Result<(usize, [usize; 3], usize, usize)> {
    check(image.len() == 5 && image[1] == 1, || {
        format!("patch_embed image {image:?}, expected [B, 1, D, H, W]")
    })?;
    let dims = [image[2], image[3], image[4]];
    check(
        (0..3).all(|a| patch[a] > 0 && dims[a] % patch[a] == 0),
        || format!("image {dims:?} not divisible by patch {patch:?}"),
    )?;
    let n: usize = (0..3).map(|a| dims[a] / patch[a]).product();
    check(w == [b_len, numel(&patch)], || {
        format!("patch weight {w:?}")
    })?;
    check(pos_len == n * b_len, || {
        format!("position embedding of {pos_len} values for {n} tokens")
    })?;
    Ok((image[0], dims, n, b_len))
}

/// `conv_transpose_k2s2`: (batch, voxels, cin, cout).
pub fn conv_transpose(
    xs: &[usize],
    grid: [usize; 3],
    ws: &[usize],
    b_len: usize,
) -> Result<(usize, usize, usize, usize)> {
    check(xs.len() == 3 && xs[1] == numel(&grid), || {
        format!("conv_transpose input {xs:?} over grid {grid:?}")
    })?;
    check(
        ws.len() == 5 && ws[0] == xs[2] && ws[2..] == [2, 2, 2] && b_len == ws[1],
        || format!("conv_transpose weight {ws:?}"),
    )?;
    Ok((xs[0], xs[1], xs[2], ws[1]))
}

/// `resize`: (planes, input dims).
pub fn resize(xs: &[usize], out: [usize; 3]) -> Result<(usize, [usize; 3])> {
    check(
        xs.len() == 5 && xs[2..].iter().all(|&d| d > 0) && out.iter().all(|&d| d > 0),
        || format!("resize {xs:?} to {out:?}"),
    )?;
    Ok((xs[0] * xs[1], [xs[2], xs[3], xs[4]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_op() {
        assert!(linear(&[2, 3], &[4, 5], None, Activation::None, None)
            .unwrap_err()
            .to_string()
            .contains("linear"));
        assert!(
            linear(&[2, 3], &[4, 3], None, Activation::Gelu, Some(&[2, 4]))
                .unwrap_err()
                .to_string()
                .contains("residual")
        );
        assert_eq!(
            linear(&[2, 7, 3], &[4, 3], Some(&[4]), Activation::None, None).unwrap(),
            (14, 3, 4, vec![2, 7, 4])
        );
        assert!(patch_embed(
            &[1, 1, 16, 64, 60],
            &[768, 1024],
            768,
            64 * 768,
            [4, 16, 16]
        )
        .is_err());
        assert!(conv_transpose(&[1, 8, 4], [2, 2, 2], &[4, 3, 2, 2, 1], 3).is_err());
        assert!(resize(&[1, 1, 0, 4, 4], [2, 2, 2]).is_err());
    }
}
