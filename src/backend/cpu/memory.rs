//! Data movement on the CPU: uploads, box downloads and the batch plumbing
//! ops, all plain copies. Shapes are checked by the caller (`backend::shapes`).

use super::tensor::{self, CpuTensor};
use crate::backend::shapes::numel;
use crate::error::Result;

/// `Backend::upload`.
pub(super) fn upload(data: &[f32], shape: &[usize]) -> Result<CpuTensor> {
    let mut v = tensor::scratch(data.len());
    v.copy_from_slice(data);
    CpuTensor::from_vec(v, shape)
}

/// `Backend::download_box` of a volume with dims `[_, h, w]`
/// (`shapes::download_box`).
pub(super) fn download_box(
    t: &CpuTensor,
    [_, h, w]: [usize; 3],
    start: [usize; 3],
    len: [usize; 3],
) -> Vec<f32> {
    let mut out = Vec::with_capacity(len.iter().product());
    for d in start[0]..start[0] + len[0] {
        for y in start[1]..start[1] + len[1] {
            let row = (d * h + y) * w + start[2];
            out.extend_from_slice(&t.data()[row..row + len[2]]);
        }
    }
    out
}

/// `Backend::repeat_batch` into shape `s` (`shapes::repeat_batch`).
pub(super) fn repeat_batch(s: &[usize], x: &CpuTensor, n: usize) -> Result<CpuTensor> {
    let item = numel(&x.shape()[1..]);
    let mut out = Vec::with_capacity(x.len() * n);
    for it in x.data().chunks(item.max(1)) {
        for _ in 0..n {
            out.extend_from_slice(it);
        }
    }
    CpuTensor::from_vec(out, s)
}

/// `Backend::slice_batch` into shape `s` (`shapes::slice_batch`).
pub(super) fn slice_batch(
    s: &[usize],
    x: &CpuTensor,
    start: usize,
    len: usize,
) -> Result<CpuTensor> {
    let item = numel(&s[1..]);
    let mut v = tensor::scratch(len * item);
    v.copy_from_slice(&x.data()[start * item..(start + len) * item]);
    CpuTensor::from_vec(v, s)
}

/// `Backend::concat_batch` into shape `s` (`shapes::concat_batch`).
pub(super) fn concat_batch(s: &[usize], xs: &[&CpuTensor]) -> Result<CpuTensor> {
    let mut out = Vec::with_capacity(numel(s));
    for x in xs {
        out.extend_from_slice(x.data());
    }
    CpuTensor::from_vec(out, s)
}

/// `Backend::narrow_rows` of a `[b, n, c]` tensor (`shapes::narrow_rows`).
pub(super) fn narrow_rows(
    (b, n, c): (usize, usize, usize),
    x: &CpuTensor,
    start: usize,
    len: usize,
) -> Result<CpuTensor> {
    let mut out = Vec::with_capacity(b * len * c);
    for bi in 0..b {
        out.extend_from_slice(&x.data()[(bi * n + start) * c..(bi * n + start + len) * c]);
    }
    CpuTensor::from_vec(out, &[b, len, c])
}
