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
#[cfg(test)]
pub(crate) mod oracle;
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
