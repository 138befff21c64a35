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

/// `upload` of `len` values as `shape`.
pub fn upload(len: usize, shape: &[usize]) -> Result<()> {
    check(numel(shape) == len, || {
        format!("upload of {len} values as {shape:?}")
    })
}

/// `reshape` keeps the element count.
pub fn reshape(from: &[usize], to: &[usize]) -> Result<()> {
    check(numel(from) == numel(to), || {
        format!("cannot reshape {from:?} to {to:?}")
    })
}

/// `repeat_batch`: the output shape (axis 0 times `n`).
pub fn repeat_batch(xs: &[usize], n: usize) -> Result<Vec<usize>> {
    check(!xs.is_empty(), || "repeat_batch of a scalar".into())?;
    let mut s = xs.to_vec();
    s[0] = s[0]
        .checked_mul(n)
        .ok_or_else(|| Error::Shape(format!("repeat_batch of {xs:?} {n} times")))?;
    Ok(s)
}

/// `slice_batch`: the output shape.
pub fn slice_batch(xs: &[usize], start: usize, len: usize) -> Result<Vec<usize>> {
    check(
        !xs.is_empty() && start.checked_add(len).is_some_and(|e| e <= xs[0]),
        || format!("slice {start}+{len} of {xs:?}"),
    )?;
    let mut s = xs.to_vec();
    s[0] = len;
    Ok(s)
}

/// `concat_batch`: the output shape (every input's trailing axes equal).
pub fn concat_batch(shapes: &[&[usize]]) -> Result<Vec<usize>> {
    check(!shapes.is_empty(), || "concat of nothing".into())?;
    check(shapes.iter().all(|x| !x.is_empty()), || {
        "concat of a scalar".into()
    })?;
    let tail = &shapes[0][1..];
    for x in shapes {
        check(&x[1..] == tail, || {
            format!("concat {:?} with {x:?}", shapes[0])
        })?;
    }
    let mut s = vec![shapes.iter().map(|x| x[0]).sum()];
    s.extend_from_slice(tail);
    Ok(s)
}

/// `narrow_rows` of a `[B, N, C]` tensor: (B, N, C).
pub fn narrow_rows(xs: &[usize], start: usize, len: usize) -> Result<(usize, usize, usize)> {
    check(
        xs.len() == 3 && start.checked_add(len).is_some_and(|e| e <= xs[1]),
        || format!("narrow rows {start}+{len} of {xs:?}"),
    )?;
    Ok((xs[0], xs[1], xs[2]))
}

/// `add`: equal shapes.
pub fn add(a: &[usize], b: &[usize]) -> Result<()> {
    check(a == b, || format!("add {a:?} + {b:?}"))
}

/// `add_broadcast`: v's shape, leading 1s aside ([1, N, C] broadcasts like
/// [N, C]), is a suffix of x's.
pub fn add_broadcast(xs: &[usize], vs: &[usize]) -> Result<()> {
    let lead = vs
        .iter()
        .take_while(|&&d| d == 1)
        .count()
        .min(vs.len().saturating_sub(1));
    let vs_trim = &vs[lead..];
    check(xs.len() >= vs_trim.len() && xs.ends_with(vs_trim), || {
        format!("broadcast {vs:?} over {xs:?}")
    })
}

/// `layer_norm` over the last axis: its length C (the affine's length).
pub fn layer_norm(xs: &[usize], w: &[usize], b: &[usize]) -> Result<usize> {
    let c = *xs.last().unwrap_or(&0);
    check(numel(w) == c && numel(b) == c, || {
        format!("layer_norm {xs:?} with affine {w:?}")
    })?;
    Ok(c)
}

/// `layer_norm_item`: the item size (the affine's length).
pub fn layer_norm_item(xs: &[usize], w: &[usize], b: &[usize]) -> Result<usize> {
    check(!xs.is_empty(), || "layer_norm_item of a scalar".into())?;
    let item = numel(&xs[1..]);
    check(numel(w) == item && numel(b) == item, || {
        format!("layer_norm_item {xs:?} with affine {w:?}")
    })?;
    Ok(item)
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
fn attention_operand(
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
fn attention_spec(s: &AttnSpec) -> Result<()> {
    check(!s.causal || s.q_len == s.kv_len, || {
        "causal attention needs q_len == kv_len".into()
    })?;
    check(s.kv_len > 0 || s.q_len == 0, || {
        format!("attention over zero keys: {s:?}")
    })
}

/// `attention`: the row strides of q, k and v (each operand checked, then
/// the spec).
pub fn attention(
    q: (&[usize], usize),
    k: (&[usize], usize),
    v: (&[usize], usize),
    s: &AttnSpec,
) -> Result<[usize; 3]> {
    let ld = [
        attention_operand(q.0, q.1, s.q_len, s, "q")?,
        attention_operand(k.0, k.1, s.kv_len, s, "k")?,
        attention_operand(v.0, v.1, s.kv_len, s, "v")?,
    ];
    attention_spec(s)?;
    Ok(ld)
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

    #[test]
    fn plumbing_and_elementwise_checks() {
        assert!(upload(6, &[2, 3]).is_ok());
        assert_eq!(
            upload(5, &[2, 3]).unwrap_err().to_string(),
            "shape: upload of 5 values as [2, 3]"
        );
        assert!(reshape(&[2, 3], &[6]).is_ok() && reshape(&[2, 3], &[5]).is_err());
        assert_eq!(repeat_batch(&[2, 3], 4).unwrap(), vec![8, 3]);
        assert!(repeat_batch(&[], 2).is_err());
        assert!(repeat_batch(&[usize::MAX, 1], 2).is_err());
        assert_eq!(slice_batch(&[5, 2], 1, 3).unwrap(), vec![3, 2]);
        assert!(slice_batch(&[5, 2], 3, 3).is_err());
        assert!(slice_batch(&[5, 2], usize::MAX, 2).is_err());
        assert_eq!(concat_batch(&[&[1, 2], &[3, 2]]).unwrap(), vec![4, 2]);
        assert!(concat_batch(&[]).is_err());
        assert!(concat_batch(&[&[1, 2], &[]]).is_err());
        assert!(concat_batch(&[&[1, 2], &[1, 3]]).is_err());
        assert_eq!(narrow_rows(&[2, 9, 4], 3, 6).unwrap(), (2, 9, 4));
        assert!(narrow_rows(&[2, 9, 4], 4, 6).is_err());
        assert!(add(&[2, 3], &[2, 3]).is_ok() && add(&[2, 3], &[3, 2]).is_err());
        assert!(add_broadcast(&[2, 5, 3], &[1, 5, 3]).is_ok());
        assert!(add_broadcast(&[2, 5, 3], &[3]).is_ok());
        assert!(add_broadcast(&[2, 5, 3], &[5]).is_err());
        assert_eq!(layer_norm(&[4, 7], &[7], &[7]).unwrap(), 7);
        assert!(layer_norm(&[4, 7], &[6], &[7]).is_err());
        assert_eq!(layer_norm_item(&[2, 3, 4], &[3, 4], &[12]).unwrap(), 12);
        assert!(layer_norm_item(&[], &[1], &[1]).is_err());
    }
}
