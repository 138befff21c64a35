// ConvTranspose3d, kernel 2, stride 2, channels last: after the GEMM
// tmp[B·S, Cout·8] = x[B·S, Cin] · w[Cin, Cout·8] (w in PyTorch's
// [Cin, Cout, 2, 2, 2] layout, so column co·8 + kk), this kernel scatters
// each input voxel's 8·Cout values to its 2×2×2 output voxels, adding the
// bias and applying the activation.
#include "common.cuh"

// One block per input voxel. The row goes through shared memory so that both
// the read of tmp and the writes of the 8 output rows are coalesced; the
// row is stored with stride 9 per channel so that reading one kk for
// consecutive channels hits distinct banks.
template <typename T>
__device__ __forceinline__ void convt_scatter_impl(const T* __restrict__ tmp,
                                                   const T* __restrict__ bias,
                                                   T* __restrict__ out, int gd, int gh, int gw,
                                                   int cout, int act) {
    extern __shared__ float row_s[];
    const long long s = (long long)gd * gh * gw;
    const long long r = blockIdx.x;  // b·S + voxel
    const int bi = (int)(r / s);
    const long long v = r - (long long)bi * s;
    const int z = (int)(v / ((long long)gh * gw));
    const int y = (int)((v / gw) % gh);
    const int x = (int)(v % gw);
    const int n8 = cout * 8;
    const T* src = tmp + r * n8;
    for (int e = threadIdx.x; e < n8; e += blockDim.x) row_s[(e >> 3) * 9 + (e & 7)] = ld(src + e);
    __syncthreads();
    const int oh = 2 * gh, ow = 2 * gw;
    for (int e = threadIdx.x; e < n8; e += blockDim.x) {
        const int kk = e / cout;
        const int co = e - kk * cout;
        const int kd = kk >> 2, kh = (kk >> 1) & 1, kw = kk & 1;
        const long long opos = ((long long)(2 * z + kd) * oh + 2 * y + kh) * ow + 2 * x + kw;
        const float val = row_s[co * 9 + kk] + ld(bias + co);
        st(out + ((long long)bi * 8 * s + opos) * cout + co, apply_act(act, val));
    }
}

extern "C" __global__ void __launch_bounds__(256)
    convt_scatter_f32(const float* tmp, const float* bias, float* out, int gd, int gh, int gw,
                      int cout, int act) {
    convt_scatter_impl(tmp, bias, out, gd, gh, gw, cout, act);
}
extern "C" __global__ void __launch_bounds__(256)
    convt_scatter_bf16(const bf16_t* tmp, const bf16_t* bias, bf16_t* out, int gd, int gh,
                       int gw, int cout, int act) {
    convt_scatter_impl(tmp, bias, out, gd, gh, gw, cout, act);
}
