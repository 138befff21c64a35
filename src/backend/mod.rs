//! The operations the SegVol network needs, as one trait with a CPU and a CUDA
//! implementation. The model (`crate::model`) is written once against it.
//!
//! Conventions shared by every implementation:
//! * Tensors are dense and row-major (C order); the last axis varies fastest.
//!   Every op's semantics are those of float32 PyTorch; a backend running in a
//!   lower precision (CUDA bf16) accumulates in f32 and keeps reductions
//!   (LayerNorm statistics, softmax) in f32.
//! * "Token-major" activations are `[B, N, C]`: N tokens in D-major raster
//!   order over a (d, h, w) grid, C channels last. Volumes in the PyTorch
//!   layout are `[B, C, D, H, W]`.
//! * Linear weights keep the PyTorch layout `[out, in]`; no op needs a
//!   transposed copy of a checkpoint tensor.
//! * Ops never modify their inputs and return fresh tensors, except the
//!   `*_inplace` ones.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device;
pub mod interp;
pub mod shapes;

use crate::error::Result;
use crate::weights::WeightView;

/// Elementwise activation applied in an op's epilogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    None,
    /// Exact GELU, `0.5·x·(1 + erf(x/√2))` (PyTorch `nn.GELU()`).
    Gelu,
    /// CLIP's `x·σ(1.702·x)`.
    QuickGelu,
    Relu,
}

/// Resize rules of `torch.nn.functional.interpolate` that SegVol uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Interp {
    /// `mode='nearest'` (legacy): `src = min(floor(dst·s), in−1)`, `s = (f32) in/out`.
    Nearest,
    /// `mode='nearest-exact'`: `src = min(floor((dst+0.5)·s), in−1)`, `s = (f32) in/out`.
    NearestExact,
    /// `mode='trilinear', align_corners=False`.
    Trilinear,
}

/// One operand of [`Backend::attention`]: the tensor `[B, len, width]` whose
/// columns `col .. col + heads·head_dim` hold the operand, head-major
/// (head h uses columns `col + h·head_dim ..`). Lets the ViT read q, k and v
/// straight out of its packed qkv projection.
pub struct AttnOperand<'a, T> {
    pub t: &'a T,
    pub col: usize,
}

impl<'a, T> AttnOperand<'a, T> {
    pub fn new(t: &'a T) -> Self {
        AttnOperand { t, col: 0 }
    }
    pub fn at(t: &'a T, col: usize) -> Self {
        AttnOperand { t, col }
    }
}

/// Multi-head scaled dot-product attention:
/// `out[b, i, h·dh + c] = Σ_j softmax_j(scale · q_i·k_j (+ causal mask)) · v[j, c]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnSpec {
    pub batch: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub q_len: usize,
    pub kv_len: usize,
    pub scale: f32,
    /// Query i sees keys j ≤ i only (CLIP).
    pub causal: bool,
}

/// The operations of the network. Implementations: [`cpu::CpuBackend`]
/// (float32 reference) and [`cuda::CudaBackend`].
pub trait Backend: Send + Sync + Sized + 'static {
    type Tensor: Send + Sync;

    /// Human-readable device and precision, e.g. "cpu (2 threads, f32)".
    fn name(&self) -> String;

    // ---- data movement ---------------------------------------------------

    fn upload(&self, data: &[f32], shape: &[usize]) -> Result<Self::Tensor>;
    fn download(&self, t: &Self::Tensor) -> Result<Vec<f32>>;
    /// The box `start .. start + len` of the last three axes of a tensor
    /// `[.., D, H, W]` holding one item, as f32 in C order: the pipeline
    /// fetches only the part of a window's logits that it keeps.
    fn download_box(
        &self,
        t: &Self::Tensor,
        start: [usize; 3],
        len: [usize; 3],
    ) -> Result<Vec<f32>>;
    fn shape<'a>(&self, t: &'a Self::Tensor) -> &'a [usize];
    /// A checkpoint tensor, in the backend's storage and precision. The CPU
    /// backend borrows float32 data straight from the memory map.
    fn weight(&self, w: &WeightView<'_>) -> Result<Self::Tensor>;
    /// Same elements, new shape (element count must match).
    fn reshape(&self, t: Self::Tensor, shape: &[usize]) -> Result<Self::Tensor>;
    /// Waits for queued work (a no-op on the CPU).
    fn synchronize(&self) -> Result<()>;
    /// Most device memory held at once by this process's tensors since the
    /// last [`Backend::reset_memory_peak`], in bytes; `None` where the
    /// backend has no separate device memory (the CPU: see the process RSS).
    fn memory_peak(&self) -> Option<usize> {
        None
    }
    /// Starts a new [`Backend::memory_peak`] measurement from what is held now.
    fn reset_memory_peak(&self) {}

    // ---- batch plumbing (first axis) ---------------------------------------

    /// `[1, ...]` repeated to `[n, ...]`; in general each item repeated n
    /// times in place (`repeat_interleave` on axis 0).
    fn repeat_batch(&self, x: &Self::Tensor, n: usize) -> Result<Self::Tensor>;
    /// Items `start .. start+len` of axis 0.
    fn slice_batch(&self, x: &Self::Tensor, start: usize, len: usize) -> Result<Self::Tensor>;
    /// Concatenation along axis 0; all trailing shapes equal.
    fn concat_batch(&self, xs: &[&Self::Tensor]) -> Result<Self::Tensor>;
    /// Rows `start .. start+len` of axis 1 of a `[B, N, C]` tensor.
    fn narrow_rows(&self, x: &Self::Tensor, start: usize, len: usize) -> Result<Self::Tensor>;

    // ---- dense math ------------------------------------------------------

    /// `act(x · wᵀ + b) (+ residual)` over the last axis: x `[.., K]`,
    /// w `[N, K]`, b `[N]`, residual and result `[.., N]`.
    fn linear(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: Option<&Self::Tensor>,
        act: Activation,
        residual: Option<&Self::Tensor>,
    ) -> Result<Self::Tensor>;

    /// Batched `x · wᵀ` with a weight per batch item: x `[B, M, K]`,
    /// w `[B, N, K]`, result `[B, M, N]`.
    fn bmm_nt(&self, x: &Self::Tensor, w: &Self::Tensor) -> Result<Self::Tensor>;

    /// `a + b`, same shapes.
    fn add(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    /// `x + v` with v broadcast over the leading axes (v's shape is a suffix
    /// of x's shape).
    fn add_broadcast(&self, x: &Self::Tensor, v: &Self::Tensor) -> Result<Self::Tensor>;

    /// LayerNorm over the last axis with affine `w`, `b` of that length.
    fn layer_norm(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: &Self::Tensor,
        eps: f32,
    ) -> Result<Self::Tensor>;

    /// LayerNorm of each batch item over all its elements at once (one mean
    /// and variance per item), then a per-element affine (`w`, `b` shaped
    /// like one item) and `act`. SegVol's decoder normalises its
    /// (192, 16, 32, 32) feature this way.
    fn layer_norm_item(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: &Self::Tensor,
        eps: f32,
        act: Activation,
    ) -> Result<Self::Tensor>;

    /// Multi-head attention; result `[B, q_len, heads·head_dim]`.
    fn attention(
        &self,
        q: AttnOperand<'_, Self::Tensor>,
        k: AttnOperand<'_, Self::Tensor>,
        v: AttnOperand<'_, Self::Tensor>,
        spec: &AttnSpec,
    ) -> Result<Self::Tensor>;

    // ---- volume ops --------------------------------------------------------

    /// MONAI's "perceptron" patch embedding plus position embedding:
    /// image `[B, 1, D, H, W]` cut into `patch` blocks, each flattened in C
    /// order `(pd, ph, pw)`, times `w [C, pd·ph·pw]ᵀ`, plus `b [C]`, plus
    /// `pos [N, C]` (or `[1, N, C]`). Result `[B, N, C]`, tokens D-major.
    fn patch_embed(
        &self,
        image: &Self::Tensor,
        w: &Self::Tensor,
        b: &Self::Tensor,
        pos: &Self::Tensor,
        patch: [usize; 3],
    ) -> Result<Self::Tensor>;

    /// ConvTranspose3d with kernel 2, stride 2, on channels-last data:
    /// x `[B, d·h·w, Cin]` over `grid = [d, h, w]`, w in PyTorch's layout
    /// `[Cin, Cout, 2, 2, 2]`, b `[Cout]`, then `act`. Result
    /// `[B, 8·d·h·w, Cout]` over the grid `[2d, 2h, 2w]`, channels last.
    fn conv_transpose_k2s2(
        &self,
        x: &Self::Tensor,
        grid: [usize; 3],
        w: &Self::Tensor,
        b: &Self::Tensor,
        act: Activation,
    ) -> Result<Self::Tensor>;

    /// `F.interpolate` of x `[B, C, D, H, W]` to `[B, C, out...]`.
    fn resize(&self, x: &Self::Tensor, out: [usize; 3], mode: Interp) -> Result<Self::Tensor>;
}

/// Exact GELU in f32 as PyTorch computes it.
#[inline]
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + libm_erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// CLIP's quick_gelu.
#[inline]
pub fn quick_gelu(x: f32) -> f32 {
    x / (1.0 + (-1.702 * x).exp())
}

#[inline]
pub fn apply_act(act: Activation, x: f32) -> f32 {
    match act {
        Activation::None => x,
        Activation::Gelu => gelu_erf(x),
        Activation::QuickGelu => quick_gelu(x),
        Activation::Relu => x.max(0.0),
    }
}

/// erf in f32, computed in f64 for a correctly rounded-enough result: the
/// fixtures' tolerance is far above the difference.
#[inline]
fn libm_erf(x: f32) -> f32 {
    erf_f64(x as f64) as f32
}

/// W. J. Cody's rational approximations (as in most libms), |error| < 1e-15.
/// The coefficients are Cody's, digit for digit.
#[allow(clippy::excessive_precision)]
pub fn erf_f64(x: f64) -> f64 {
    let ax = x.abs();
    if ax < 0.5 {
        const P: [f64; 5] = [
            3.209377589138469472562e03,
            3.774852376853020208137e02,
            1.138641541510501556495e02,
            3.161123743870565596947e00,
            1.857777061846031526730e-1,
        ];
        const Q: [f64; 4] = [
            2.844236833439170622273e03,
            1.282616526077372275645e03,
            2.440246379344441733056e02,
            2.360129095234412093499e01,
        ];
        let z = x * x;
        let num = (((P[4] * z + P[3]) * z + P[2]) * z + P[1]) * z + P[0];
        let den = (((z + Q[3]) * z + Q[2]) * z + Q[1]) * z + Q[0];
        x * num / den
    } else {
        let r = erfc_pos(ax);
        if x > 0.0 {
            1.0 - r
        } else {
            r - 1.0
        }
    }
}

#[allow(clippy::excessive_precision)]
fn erfc_pos(x: f64) -> f64 {
    if x > 27.0 {
        return 0.0;
    }
    let (num, den) = if x < 4.0 {
        const P: [f64; 9] = [
            1.23033935479799725272e03,
            2.05107837782607146532e03,
            1.71204761263407058314e03,
            8.81952221241769090411e02,
            2.98635138197400131132e02,
            6.61191906371416294775e01,
            8.88314979438837594118e00,
            5.64188496988670089180e-1,
            2.15311535474403846343e-8,
        ];
        const Q: [f64; 8] = [
            1.23033935480374942043e03,
            3.43936767414372163696e03,
            4.36261909014324715820e03,
            3.29079923573345962678e03,
            1.62138957456669018874e03,
            5.37181101862009857509e02,
            1.17693950891312499305e02,
            1.57449261107098347253e01,
        ];
        let mut n = P[8];
        for i in (0..8).rev() {
            n = n * x + P[i];
        }
        let mut d = 1.0;
        for i in (0..8).rev() {
            d = d * x + Q[i];
        }
        (n, d)
    } else {
        const P: [f64; 6] = [
            -6.58749161529837803157e-04,
            -1.60837851487422766278e-02,
            -1.25781726111229246204e-01,
            -3.60344899949804439429e-01,
            -3.05326634961232344035e-01,
            -1.63153871373020978498e-02,
        ];
        const Q: [f64; 5] = [
            2.33520497626869185443e-03,
            6.05183413124413191178e-02,
            5.27905102951428412248e-01,
            1.87295284992346725209e00,
            2.56852019228982242072e00,
        ];
        let z = 1.0 / (x * x);
        let mut n = P[5];
        for i in (0..5).rev() {
            n = n * z + P[i];
        }
        let mut d = 1.0;
        for i in (0..5).rev() {
            d = d * z + Q[i];
        }
        let r = z * n / d;
        ((std::f64::consts::FRAC_2_SQRT_PI / 2.0 + r) / x, 1.0)
    };
    (-x * x).exp() * num / den
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        let cases = [
            (0.0, 0.0),
            (0.1, 0.1124629160182849),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (2.0, 0.9953222650189527),
            (-1.5, -0.9661051464753108),
            (3.5, 0.9999992569016276),
            (5.0, 0.9999999999984626),
        ];
        for (x, want) in cases {
            let got = erf_f64(x);
            assert!((got - want).abs() < 1e-13, "erf({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn activations() {
        assert!((gelu_erf(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu_erf(-2.0) - (-0.045_500_26)).abs() < 1e-6);
        assert!((quick_gelu(1.0) - 0.845_795_4).abs() < 1e-6);
        assert_eq!(apply_act(Activation::Relu, -3.0), 0.0);
    }
}
