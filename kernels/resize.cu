// F.interpolate on [planes, D, H, W]. The per-axis source indices and
// weights are computed on the host by the same functions the CPU backend
// uses (src/backend/interp.rs), so ATen's index and lambda rules live in
// one place; these kernels only gather.
#include "common.cuh"

// a·la + b·lb with each operation rounded on its own.
__device__ __forceinline__ float lerp_rn(float a, float b, float la, float lb) {
    return __fadd_rn(__fmul_rn(a, la), __fmul_rn(b, lb));
}

// Trilinear, align_corners=False. idx holds (i0, i1) pairs and lam (λ0, λ1)
// pairs for the od, then oh, then ow output positions. The arithmetic nests
// as ATen's Interpolate<3> does: w innermost, d outermost.
template <typename T>
__device__ __forceinline__ void trilinear_impl(const T* __restrict__ x, T* __restrict__ out,
                                               long long planes, int id, int ih, int iw, int od,
                                               int oh, int ow, const int* __restrict__ idx,
                                               const float* __restrict__ lam) {
    const long long total = planes * od * oh * ow;
    const long long in_plane = (long long)id * ih * iw;
    GRID_LOOP(e, total) {
        const int xo = (int)(e % ow);
        const long long r = e / ow;
        const int yo = (int)(r % oh);
        const long long r2 = r / oh;
        const int zo = (int)(r2 % od);
        const long long p = r2 / od;
        const int d0 = idx[2 * zo], d1 = idx[2 * zo + 1];
        const float ld0 = lam[2 * zo], ld1 = lam[2 * zo + 1];
        const int hb = od + yo;
        const int h0 = idx[2 * hb], h1 = idx[2 * hb + 1];
        const float lh0 = lam[2 * hb], lh1 = lam[2 * hb + 1];
        const int wb = od + oh + xo;
        const int w0 = idx[2 * wb], w1 = idx[2 * wb + 1];
        const float lw0 = lam[2 * wb], lw1 = lam[2 * wb + 1];
        const T* base = x + p * in_plane;
        const T* r00 = base + ((long long)d0 * ih + h0) * iw;
        const T* r01 = base + ((long long)d0 * ih + h1) * iw;
        const T* r10 = base + ((long long)d1 * ih + h0) * iw;
        const T* r11 = base + ((long long)d1 * ih + h1) * iw;
        // Separately rounded products and sums (no FMA contraction), so f32
        // results equal the CPU reference's bit for bit.
        const float a = lerp_rn(lerp_rn(ld(r00 + w0), ld(r00 + w1), lw0, lw1),
                                lerp_rn(ld(r01 + w0), ld(r01 + w1), lw0, lw1), lh0, lh1);
        const float b = lerp_rn(lerp_rn(ld(r10 + w0), ld(r10 + w1), lw0, lw1),
                                lerp_rn(ld(r11 + w0), ld(r11 + w1), lw0, lw1), lh0, lh1);
        st(out + e, lerp_rn(a, b, ld0, ld1));
    }
}

// Nearest and nearest-exact: idx holds the source index of each od, oh, ow
// output position.
template <typename T>
__device__ __forceinline__ void nearest_impl(const T* __restrict__ x, T* __restrict__ out,
                                             long long planes, int id, int ih, int iw, int od,
                                             int oh, int ow, const int* __restrict__ idx) {
    const long long total = planes * od * oh * ow;
    const long long in_plane = (long long)id * ih * iw;
    GRID_LOOP(e, total) {
        const int xo = (int)(e % ow);
        const long long r = e / ow;
        const int yo = (int)(r % oh);
        const long long r2 = r / oh;
        const int zo = (int)(r2 % od);
        const long long p = r2 / od;
        const long long src =
            p * in_plane + ((long long)idx[zo] * ih + idx[od + yo]) * iw + idx[od + oh + xo];
        out[e] = x[src];
    }
}

extern "C" __global__ void resize_trilinear_f32(const float* x, float* out, long long planes,
                                                int id, int ih, int iw, int od, int oh, int ow,
                                                const int* idx, const float* lam) {
    trilinear_impl(x, out, planes, id, ih, iw, od, oh, ow, idx, lam);
}
extern "C" __global__ void resize_trilinear_bf16(const bf16_t* x, bf16_t* out, long long planes,
                                                 int id, int ih, int iw, int od, int oh, int ow,
                                                 const int* idx, const float* lam) {
    trilinear_impl(x, out, planes, id, ih, iw, od, oh, ow, idx, lam);
}
extern "C" __global__ void resize_nearest_f32(const float* x, float* out, long long planes,
                                              int id, int ih, int iw, int od, int oh, int ow,
                                              const int* idx) {
    nearest_impl(x, out, planes, id, ih, iw, od, oh, ow, idx);
}
extern "C" __global__ void resize_nearest_bf16(const bf16_t* x, bf16_t* out, long long planes,
                                               int id, int ih, int iw, int od, int oh, int ow,
                                               const int* idx) {
    nearest_impl(x, out, planes, id, ih, iw, od, oh, ow, idx);
}
