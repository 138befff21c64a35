// Patch embedding, gather half: im2col of the image into one row of
// pd·ph·pw voxels per token, C order (pd, ph, pw), tokens D-major. The GEMM
// (cuBLAS) and the bias + position-embedding epilogue follow on the host side.
#include "common.cuh"

// image [B, 1, D, H, W] -> cols [B·N, pd·ph·pw]; one thread per output
// element, so writes are coalesced and each run of pw voxels is a
// contiguous read.
template <typename T>
__device__ __forceinline__ void im2col_impl(const T* __restrict__ img, T* __restrict__ cols,
                                            int batch, int d, int h, int w, int pd, int ph,
                                            int pw) {
    const int gh = h / ph, gw = w / pw;
    const int gd = d / pd;
    const long long n_tok = (long long)gd * gh * gw;
    const int p = pd * ph * pw;
    const long long total = (long long)batch * n_tok * p;
    GRID_LOOP(e, total) {
        const long long row = e / p;
        const int k = (int)(e - row * p);
        const int bi = (int)(row / n_tok);
        const long long t = row - (long long)bi * n_tok;
        const int ga = (int)(t / ((long long)gh * gw));
        const int gb = (int)((t / gw) % gh);
        const int gc = (int)(t % gw);
        const int i = k / (ph * pw);
        const int j = (k / pw) % ph;
        const int l = k % pw;
        const long long src =
            (long long)bi * d * h * w + ((long long)(ga * pd + i) * h + gb * ph + j) * w + gc * pw + l;
        cols[e] = img[src];
    }
}

extern "C" __global__ void im2col_f32(const float* img, float* cols, int batch, int d, int h,
                                      int w, int pd, int ph, int pw) {
    im2col_impl(img, cols, batch, d, h, w, pd, ph, pw);
}
extern "C" __global__ void im2col_bf16(const bf16_t* img, bf16_t* cols, int batch, int d, int h,
                                       int w, int pd, int ph, int pw) {
    im2col_impl(img, cols, batch, d, h, w, pd, ph, pw);
}
