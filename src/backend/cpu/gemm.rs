//! Matrix products on the CPU: `matrixmultiply`'s single-threaded sgemm,
//! split across the rayon pool by rows (or columns, for short-and-wide
//! products). One pool does all the CPU parallelism, so kernels called from
//! inside rayon tasks never oversubscribe the cores.

use super::SendPtr;
use rayon::prelude::*;

/// A strided read-only matrix operand.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    /// Element offset of (0, 0).
    pub offset: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// Row-major `[rows, cols]` with row stride `ld`.
    pub fn rows(data: &'a [f32], offset: usize, ld: usize) -> Self {
        MatRef {
            data,
            offset,
            rs: ld,
            cs: 1,
        }
    }
    /// The transpose of a row-major matrix with row stride `ld`: element
    /// (i, j) is `data[offset + j·ld + i]`.
    pub fn transposed(data: &'a [f32], offset: usize, ld: usize) -> Self {
        MatRef {
            data,
            offset,
            rs: 1,
            cs: ld,
        }
    }
    fn max_index(&self, rows: usize, cols: usize) -> usize {
        if rows == 0 || cols == 0 {
            return self.offset;
        }
        self.offset + (rows - 1) * self.rs + (cols - 1) * self.cs
    }
    fn sub_rows(self, r0: usize) -> Self {
        MatRef {
            offset: self.offset + r0 * self.rs,
            ..self
        }
    }
    fn sub_cols(self, c0: usize) -> Self {
        MatRef {
            offset: self.offset + c0 * self.cs,
            ..self
        }
    }
}

/// `c[m, n] = a[m, k] · b[k, n] + beta · c`, single-threaded. `c` is
/// row-major with row stride `ldc` starting at `c[0]`. With `beta = 0`, C's
/// old contents are never read (NaN or inf there do not propagate).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_serial(
    m: usize,
    k: usize,
    n: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        a.max_index(m, k) < a.data.len().max(1) || k == 0,
        "gemm: A out of bounds"
    );
    assert!(
        b.max_index(k, n) < b.data.len().max(1) || k == 0,
        "gemm: B out of bounds"
    );
    assert!((m - 1) * ldc + n <= c.len(), "gemm: C out of bounds");
    if k == 0 {
        for i in 0..m {
            let row = &mut c[i * ldc..i * ldc + n];
            // beta = 0 means "C is not read" (it may hold anything).
            if beta == 0.0 {
                row.fill(0.0);
            } else {
                row.iter_mut().for_each(|v| *v *= beta);
            }
        }
        return;
    }
    // SAFETY: every index the product touches was bounds-checked above; the
    // operands do not alias `c` (shared borrows vs. a unique borrow).
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.data.as_ptr().add(a.offset),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr().add(b.offset),
            b.rs as isize,
            b.cs as isize,
            beta,
            c.as_mut_ptr(),
            ldc as isize,
            1,
        );
    }
}

/// Work below this many multiply-adds runs on the calling thread.
const PAR_MIN_WORK: usize = 1 << 18;

/// Parallel `c = a·b + beta·c` over the rayon pool (`c` row-major, `ldc` = n
/// stride, contiguous rows).
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    sgemm_fused(m, k, n, a, b, beta, c, ldc, None, None)
}

/// Work on a block of C's rows: called with the block's first row and its
/// rows (`rows·ldc` values, the last block possibly shorter).
pub type RowsFn<'f> = &'f (dyn Fn(usize, &mut [f32]) + Sync);

/// [`sgemm`] with per-block hooks: `pre` runs on each block of C's rows just
/// before the block's product (to initialise C for `beta = 1`), `post` right
/// after it, while the block is still in cache (bias, activation). Every row
/// sees `pre`, product, `post` in that order exactly once.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_fused(
    m: usize,
    k: usize,
    n: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
    pre: Option<RowsFn<'_>>,
    post: Option<RowsFn<'_>>,
) {
    if m == 0 {
        return;
    }
    let c = &mut c[..(m - 1) * ldc + n];
    let work = m.saturating_mul(k).saturating_mul(n);
    let threads = rayon::current_num_threads().max(1);
    let serial = work < PAR_MIN_WORK || threads == 1 || (m < 32 && n < 256);
    if !serial && m >= 64 {
        // Row blocks of 64..512: large enough to amortise B's packing, and
        // several per thread for balance.
        let rows = m.div_ceil(threads * 2).clamp(64, 512).next_multiple_of(8);
        c.par_chunks_mut(rows * ldc)
            .enumerate()
            .for_each(|(i, cc)| {
                let r0 = i * rows;
                let mr = rows.min(m - r0);
                if let Some(f) = pre {
                    f(r0, cc);
                }
                sgemm_serial(mr, k, n, a.sub_rows(r0), b, beta, cc, ldc);
                if let Some(f) = post {
                    f(r0, cc);
                }
            });
        return;
    }
    if let Some(f) = pre {
        f(0, c);
    }
    if serial {
        sgemm_serial(m, k, n, a, b, beta, c, ldc);
    } else {
        // Short and wide (decoder tokens · weights): split the columns.
        let cols = n.div_ceil(threads * 2).max(64).next_multiple_of(16);
        let chunks: Vec<usize> = (0..n).step_by(cols).collect();
        let cptr = SendPtr(c.as_mut_ptr());
        let clen = c.len();
        chunks.into_par_iter().for_each(|c0| {
            let nc = cols.min(n - c0);
            // SAFETY: column ranges are disjoint; each task writes only
            // columns c0..c0+nc of the m rows.
            let cs = unsafe { std::slice::from_raw_parts_mut(cptr.get().add(c0), clen - c0) };
            sgemm_serial(m, k, nc, a, b.sub_cols(c0), beta, cs, ldc);
        });
    }
    if let Some(f) = post {
        f(0, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, k: usize, n: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for p in 0..k {
                    s += a[i * k + p] as f64 * b[p * n + j] as f64;
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    fn rnd(n: usize, seed: u64) -> Vec<f32> {
        crate::test_data::uniform(n, seed, -0.5, 0.5)
    }

    #[test]
    fn parallel_matches_naive_for_awkward_sizes() {
        for &(m, k, n) in &[
            (1, 7, 5),
            (3, 64, 700),
            (130, 33, 77),
            (517, 40, 129),
            (8, 768, 2048),
        ] {
            let a = rnd(m * k, 1);
            let b = rnd(k * n, 2);
            let want = naive(m, k, n, &a, &b);
            let mut c = vec![f32::NAN; m * n];
            sgemm(
                m,
                k,
                n,
                MatRef::rows(&a, 0, k),
                MatRef::rows(&b, 0, n),
                0.0,
                &mut c,
                n,
            );
            for (x, y) in c.iter().zip(&want) {
                assert!((x - y).abs() < 1e-4, "{m}x{k}x{n}: {x} vs {y}");
            }
        }
    }
}
