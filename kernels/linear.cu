// The Linear family's epilogue: the matrix product itself is cuBLAS /
// cuBLASLt (src/backend/cuda/gemm.rs); this kernel finishes what cuBLASLt
// cannot fuse (erf GELU, quick_gelu), the whole epilogue of the plain-cuBLAS
// path, and the patch embedding's bias + position embedding.
#include "common.cuh"

// out[r, c] = act(y[r, c] + bias[c]) + add[(r·cols + c) mod add_period].
// bias and add may be null. out may alias y. This is the epilogue of every
// GEMM that cuBLASLt cannot finish by itself (erf GELU, quick_gelu), of the
// plain-cuBLAS path, and of the patch embedding (add = position embedding,
// period = one item).
template <typename T>
__device__ __forceinline__ void epilogue_impl(const T* y, const T* bias, const T* add, T* out,
                                              long long n, int cols, long long add_period,
                                              int act) {
    GRID_LOOP(i, n) {
        float v = ld(y + i);
        if (bias) v += ld(bias + (int)(i % cols));
        v = apply_act(act, v);
        if (add) v += ld(add + i % add_period);
        st(out + i, v);
    }
}

extern "C" __global__ void epilogue_f32(const float* y, const float* bias, const float* add,
                                        float* out, long long n, int cols, long long add_period,
                                        int act) {
    epilogue_impl(y, bias, add, out, n, cols, add_period, act);
}
extern "C" __global__ void epilogue_bf16(const bf16_t* y, const bf16_t* bias, const bf16_t* add,
                                         bf16_t* out, long long n, int cols, long long add_period,
                                         int act) {
    epilogue_impl(y, bias, add, out, n, cols, add_period, act);
}

// The bf16 epilogue eight elements (16 bytes) at a time, for the shapes of
// every Linear layer of the network: n, cols and add_period multiples of 8,
// 16-byte aligned tensors, n / 8 below 2^31 (the host checks). The scalar
// kernel's two 64-bit remainders per element cost more than the memory
// traffic; here there is one 32-bit remainder per 8 elements.
struct __align__(16) bf16x8_t {
    unsigned w[4];
};

extern "C" __global__ void epilogue_bf16_x8(const bf16x8_t* y, const bf16x8_t* bias,
                                            const bf16x8_t* add, bf16x8_t* out, int n8, int cols8,
                                            int period8, int act) {
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < n8; j += gridDim.x * blockDim.x) {
        const bf16x8_t yv = y[j];
        bf16x8_t bv, av, r;
        if (bias) bv = bias[j % cols8];
        if (add) av = add[j % period8];
#pragma unroll
        for (int e = 0; e < 8; e++) {
            const int sh = (e & 1) * 16;
            float v = bf16_to_f32((bf16_t)(yv.w[e >> 1] >> sh));
            if (bias) v += bf16_to_f32((bf16_t)(bv.w[e >> 1] >> sh));
            v = apply_act(act, v);
            if (add) v += bf16_to_f32((bf16_t)(av.w[e >> 1] >> sh));
            const unsigned h = f32_to_bf16(v);
            r.w[e >> 1] = (e & 1) ? (r.w[e >> 1] | (h << 16)) : h;
        }
        out[j] = r;
    }
}

