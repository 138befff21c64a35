// LayerNorms. Statistics are always f32 or wider, whatever the storage type;
// the variance is the two-pass (centred) one, as in PyTorch.
#include "common.cuh"

// One warp per row, the row held in registers (NPL values per lane, so rows
// up to 32·NPL long): one read of x, one write of out.
template <typename T, int NPL>
__device__ __forceinline__ void ln_rows_warp_impl(const T* __restrict__ x, const T* __restrict__ w,
                                                  const T* __restrict__ b, T* __restrict__ out,
                                                  int rows, int c, float eps) {
    const int row = (int)((blockIdx.x * (unsigned)blockDim.x + threadIdx.x) >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const T* xr = x + (long long)row * c;
    T* orow = out + (long long)row * c;
    float v[NPL];
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < NPL; i++) {
        const int j = lane + 32 * i;
        v[i] = j < c ? ld(xr + j) : 0.0f;
        s += v[i];
    }
    const float mean = warp_sum(s) / (float)c;
    float q = 0.0f;
#pragma unroll
    for (int i = 0; i < NPL; i++) {
        const int j = lane + 32 * i;
        const float d = j < c ? v[i] - mean : 0.0f;
        q += d * d;
    }
    const float var = warp_sum(q) / (float)c;
    // 1/sqrt rather than rsqrtf: both IEEE-rounded, so f32 parity holds.
    const float rstd = 1.0f / sqrtf(var + eps);
#pragma unroll
    for (int i = 0; i < NPL; i++) {
        const int j = lane + 32 * i;
        if (j < c) st(orow + j, (v[i] - mean) * rstd * ld(w + j) + ld(b + j));
    }
}

// One block per row for rows too long for registers: three passes over x.
template <typename T>
__device__ __forceinline__ void ln_rows_block_impl(const T* __restrict__ x, const T* __restrict__ w,
                                                   const T* __restrict__ b, T* __restrict__ out,
                                                   int c, float eps) {
    __shared__ float scratch[32];
    const T* xr = x + (long long)blockIdx.x * c;
    T* orow = out + (long long)blockIdx.x * c;
    float s = 0.0f;
    for (int j = threadIdx.x; j < c; j += blockDim.x) s += ld(xr + j);
    const float mean = block_sum_f(s, scratch) / (float)c;
    float q = 0.0f;
    for (int j = threadIdx.x; j < c; j += blockDim.x) {
        const float d = ld(xr + j) - mean;
        q += d * d;
    }
    const float var = block_sum_f(q, scratch) / (float)c;
    const float rstd = 1.0f / sqrtf(var + eps);
    for (int j = threadIdx.x; j < c; j += blockDim.x)
        st(orow + j, (ld(xr + j) - mean) * rstd * ld(w + j) + ld(b + j));
}

#define LN_WARP(T, NAME, NPL)                                                                  \
    extern "C" __global__ void __launch_bounds__(256)                                         \
        ln_rows_##NAME##_##NPL(const T* x, const T* w, const T* b, T* out, int rows, int c,   \
                               float eps) {                                                   \
        ln_rows_warp_impl<T, NPL>(x, w, b, out, rows, c, eps);                                \
    }
LN_WARP(float, f32, 4)
LN_WARP(float, f32, 8)
LN_WARP(float, f32, 16)
LN_WARP(float, f32, 32)
LN_WARP(bf16_t, bf16, 4)
LN_WARP(bf16_t, bf16, 8)
LN_WARP(bf16_t, bf16, 16)
LN_WARP(bf16_t, bf16, 32)

extern "C" __global__ void __launch_bounds__(256)
    ln_rows_block_f32(const float* x, const float* w, const float* b, float* out, int c,
                      float eps) {
    ln_rows_block_impl(x, w, b, out, c, eps);
}
extern "C" __global__ void __launch_bounds__(256)
    ln_rows_block_bf16(const bf16_t* x, const bf16_t* w, const bf16_t* b, bf16_t* out, int c,
                       float eps) {
    ln_rows_block_impl(x, w, b, out, c, eps);
}

// ---- LayerNorm over a whole item (SegVol's decoder: 3,145,728 values) ----
// Three launches, no atomics (deterministic):
//   1. ln_item_sum:   partial sums, one per block, per item          -> part1[item][G]
//   2. ln_item_sqdev: each block reduces part1 to the mean, then the
//                     partial sums of (x − mean)²                    -> part2[item][G]
//   3. ln_item_apply: each block reduces both to mean and rstd, then
//                     writes (x − mean)·rstd·w + b through the activation.
// Partials are doubles and the cross-block reductions run in double, so the
// statistics are as good as the CPU reference's f64 ones.
// Grid: (G, items); blockDim 256.

__device__ __forceinline__ double reduce_partials(const double* part, int g, double* scratch) {
    double s = 0.0;
    for (int i = threadIdx.x; i < g; i += blockDim.x) s += part[i];
    return block_sum_d(s, scratch);
}

template <typename T>
__device__ __forceinline__ void ln_item_sum_impl(const T* __restrict__ x, long long item_n,
                                                 double* __restrict__ part1) {
    __shared__ double scratch[32];
    const T* xi = x + (long long)blockIdx.y * item_n;
    float s = 0.0f;
    for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < item_n;
         j += (long long)gridDim.x * blockDim.x)
        s += ld(xi + j);
    const double tot = block_sum_d((double)s, scratch);
    if (threadIdx.x == 0) part1[(long long)blockIdx.y * gridDim.x + blockIdx.x] = tot;
}

template <typename T>
__device__ __forceinline__ void ln_item_sqdev_impl(const T* __restrict__ x, long long item_n,
                                                   const double* __restrict__ part1,
                                                   double* __restrict__ part2) {
    __shared__ double scratch[32];
    const int g = gridDim.x;
    const T* xi = x + (long long)blockIdx.y * item_n;
    const float mean =
        (float)(reduce_partials(part1 + (long long)blockIdx.y * g, g, scratch) / (double)item_n);
    float q = 0.0f;
    for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < item_n;
         j += (long long)gridDim.x * blockDim.x) {
        const float d = ld(xi + j) - mean;
        q += d * d;
    }
    const double tot = block_sum_d((double)q, scratch);
    if (threadIdx.x == 0) part2[(long long)blockIdx.y * g + blockIdx.x] = tot;
}

template <typename T>
__device__ __forceinline__ void ln_item_apply_impl(const T* __restrict__ x, const T* __restrict__ w,
                                                   const T* __restrict__ b, T* __restrict__ out,
                                                   long long item_n, const double* __restrict__ part1,
                                                   const double* __restrict__ part2, float eps,
                                                   int act) {
    __shared__ double scratch[32];
    const int g = gridDim.x;
    const double n = (double)item_n;
    const double mean_d = reduce_partials(part1 + (long long)blockIdx.y * g, g, scratch) / n;
    const double var = reduce_partials(part2 + (long long)blockIdx.y * g, g, scratch) / n;
    const float mean = (float)mean_d;
    const float rstd = (float)(1.0 / sqrt(var + (double)eps));
    const T* xi = x + (long long)blockIdx.y * item_n;
    T* oi = out + (long long)blockIdx.y * item_n;
    for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < item_n;
         j += (long long)gridDim.x * blockDim.x)
        st(oi + j, apply_act(act, (ld(xi + j) - mean) * rstd * ld(w + j) + ld(b + j)));
}

#define LN_ITEM(T, NAME)                                                                       \
    extern "C" __global__ void __launch_bounds__(256)                                         \
        ln_item_sum_##NAME(const T* x, long long item_n, double* part1) {                     \
        ln_item_sum_impl(x, item_n, part1);                                                   \
    }                                                                                         \
    extern "C" __global__ void __launch_bounds__(256) ln_item_sqdev_##NAME(                   \
        const T* x, long long item_n, const double* part1, double* part2) {                   \
        ln_item_sqdev_impl(x, item_n, part1, part2);                                          \
    }                                                                                         \
    extern "C" __global__ void __launch_bounds__(256)                                         \
        ln_item_apply_##NAME(const T* x, const T* w, const T* b, T* out, long long item_n,    \
                             const double* part1, const double* part2, float eps, int act) {  \
        ln_item_apply_impl(x, w, b, out, item_n, part1, part2, eps, act);                     \
    }
LN_ITEM(float, f32)
LN_ITEM(bf16_t, bf16)
