// Shared helpers for every kernel file. The kernels compile under nvcc and
// under NVRTC with no include path, so nothing here includes a header: bf16
// is handled as raw 16-bit words (exact round-to-nearest-even, as PyTorch and
// the `half` crate do), and Ampere-only instructions are inline PTX.
// build.rs splices this file into each kernel source for NVRTC.
#pragma once

typedef unsigned short bf16_t;
typedef unsigned short f16_t;

// -inf without <math.h> (NVRTC has no INFINITY).
#define NEG_INF __int_as_float(0xff800000)

// Activation codes; must match `Activation` in src/backend/cuda/kernels.rs.
#define ACT_NONE 0
#define ACT_GELU 1
#define ACT_QUICK_GELU 2
#define ACT_RELU 3

__device__ __forceinline__ float bf16_to_f32(bf16_t h) {
    return __uint_as_float(((unsigned int)h) << 16);
}

__device__ __forceinline__ bf16_t f32_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        // Keep NaN a NaN (the rounding below could carry it into infinity).
        return (bf16_t)((u >> 16) | 0x40u);
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_t)(u >> 16);
}

__device__ __forceinline__ float f16_to_f32(f16_t h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// Storage-type overloads: every kernel computes in f32 and converts at the
// load and the store, so one template serves f32 and bf16 tensors.
__device__ __forceinline__ float ld(const float* p) { return *p; }
__device__ __forceinline__ float ld(const bf16_t* p) { return bf16_to_f32(*p); }
__device__ __forceinline__ void st(float* p, float v) { *p = v; }
__device__ __forceinline__ void st(bf16_t* p, float v) { *p = f32_to_bf16(v); }

__device__ __forceinline__ float gelu_erf(float x) {
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752440f));
}

__device__ __forceinline__ float quick_gelu(float x) {
    return x / (1.0f + expf(-1.702f * x));
}

__device__ __forceinline__ float apply_act(int act, float x) {
    switch (act) {
    case ACT_GELU:
        return gelu_erf(x);
    case ACT_QUICK_GELU:
        return quick_gelu(x);
    case ACT_RELU:
        return fmaxf(x, 0.0f);
    default:
        return x;
    }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every
// thread gets the result. `scratch` holds 32 values; the block must not be
// using it concurrently.
__device__ __forceinline__ double block_sum_d(double v, double* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int warps = blockDim.x >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0;
    return warp_sum_d(v);
}

__device__ __forceinline__ float block_sum_f(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

// Grid-stride loop over [0, n) with 64-bit indices (volumes can exceed 2^31
// elements across channels).
#define GRID_LOOP(i, n)                                                                \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n);      \
         i += (long long)gridDim.x * blockDim.x)
