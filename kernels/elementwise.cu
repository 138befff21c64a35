// Conversions and additions: out = a + b, out = x + v (v broadcast over the
// leading axes), and the dtype casts of uploads and checkpoint tensors. The
// GEMM epilogue lives with the Linear family (linear.cu).
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void add_impl(const T* a, const T* b, T* out, long long n) {
    GRID_LOOP(i, n) st(out + i, ld(a + i) + ld(b + i));
}

// out = x + v[i mod period]: v broadcast over the leading axes.
template <typename T>
__device__ __forceinline__ void add_broadcast_impl(const T* x, const T* v, T* out, long long n,
                                                   long long period) {
    GRID_LOOP(i, n) st(out + i, ld(x + i) + ld(v + i % period));
}

extern "C" __global__ void add_f32(const float* a, const float* b, float* out, long long n) {
    add_impl(a, b, out, n);
}
extern "C" __global__ void add_bf16(const bf16_t* a, const bf16_t* b, bf16_t* out, long long n) {
    add_impl(a, b, out, n);
}
extern "C" __global__ void add_broadcast_f32(const float* x, const float* v, float* out,
                                             long long n, long long period) {
    add_broadcast_impl(x, v, out, n, period);
}
extern "C" __global__ void add_broadcast_bf16(const bf16_t* x, const bf16_t* v, bf16_t* out,
                                              long long n, long long period) {
    add_broadcast_impl(x, v, out, n, period);
}
// Conversions for uploads and checkpoint tensors (f32/f16/bf16 sources).
extern "C" __global__ void cast_f32_bf16(const float* x, bf16_t* out, long long n) {
    GRID_LOOP(i, n) out[i] = f32_to_bf16(x[i]);
}
extern "C" __global__ void cast_bf16_f32(const bf16_t* x, float* out, long long n) {
    GRID_LOOP(i, n) out[i] = bf16_to_f32(x[i]);
}
extern "C" __global__ void cast_f16_f32(const f16_t* x, float* out, long long n) {
    GRID_LOOP(i, n) out[i] = f16_to_f32(x[i]);
}
extern "C" __global__ void cast_f16_bf16(const f16_t* x, bf16_t* out, long long n) {
    GRID_LOOP(i, n) out[i] = f32_to_bf16(f16_to_f32(x[i]));
}
