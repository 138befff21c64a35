// Fused multi-head attention, flash style: each block owns a tile of queries
// of one (batch, head) and streams over tiles of keys with an online softmax,
// so no q_len × kv_len matrix ever exists. q, k and v are read in place from
// [B, len, ld] tensors at a column offset (the ViT's packed qkv projection);
// the output is [B, q_len, heads·D].
//
// Two kernels:
// * attn_mma_*: bf16 operands on tensor cores (mma.sync m16n8k16, f32
//   accumulation, sm_80+), head dims 32/48/64/96/128, cp.async double
//   buffering of the key/value tiles.
// * attn_generic_*: f32 arithmetic on CUDA cores for f32 tensors (parity
//   mode: no TF32, no reduced precision anywhere) and for bf16 tensors whose
//   head dim or alignment the tensor-core kernel does not take. Any head dim
//   up to 128.
#include "common.cuh"

// ---------------------------------------------------------------------------
// Generic kernel. Block: 4 warps; each warp owns R = 8 query rows (block tile
// of 32 queries); key tiles of 32, one key per lane for the scores.
// Shared memory (floats): q [32][dp], k [32][dp + 4], v [32][dp],
// p [4 warps][8][32], with dp = head dim rounded up to 4 (zero padded), so
// that q and k are read as float4: q rows broadcast, k rows at a stride of
// dp + 4 words, which spreads a quarter-warp's 16-byte reads over all banks.
// ---------------------------------------------------------------------------

#define GEN_WARPS 4
#define GEN_R 8
#define GEN_BQ (GEN_WARPS * GEN_R)
#define GEN_BK 32

template <typename T, int DPL>
__device__ __forceinline__ void attn_generic_impl(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ out,
    int q_len, int kv_len, int heads, int dh, int ldq, int ldk, int ldv, int qcol, int kcol,
    int vcol, float scale, int causal) {
    extern __shared__ __align__(16) float gsm[];
    const int dp = (dh + 3) & ~3;
    const int dk = dp + 4;
    float* qs = gsm;                        // [BQ][dp]
    float* ks = qs + GEN_BQ * dp;           // [BK][dk]
    float* vs = ks + GEN_BK * dk;           // [BK][dp]
    float* ps = vs + GEN_BK * dp;           // [WARPS][R][BK]

    const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * GEN_BQ;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const T* qg = q + (long long)b * q_len * ldq + qcol + h * dh;
    const T* kg = k + (long long)b * kv_len * ldk + kcol + h * dh;
    const T* vg = v + (long long)b * kv_len * ldv + vcol + h * dh;

    for (int e = tid; e < GEN_BQ * dp; e += blockDim.x) {
        const int r = e / dp, d = e - r * dp;
        qs[e] = (q0 + r < q_len && d < dh) ? ld(qg + (long long)(q0 + r) * ldq + d) : 0.0f;
    }

    float m[GEN_R], l[GEN_R], acc[GEN_R][DPL];
#pragma unroll
    for (int r = 0; r < GEN_R; r++) {
        m[r] = NEG_INF;
        l[r] = 0.0f;
#pragma unroll
        for (int i = 0; i < DPL; i++) acc[r][i] = 0.0f;
    }

    const int kv_end = causal ? min(kv_len, q0 + GEN_BQ) : kv_len;
    const float* qw = qs + warp * GEN_R * dp;
    float* pw = ps + warp * GEN_R * GEN_BK;

    for (int j0 = 0; j0 < kv_end; j0 += GEN_BK) {
        __syncthreads();  // the previous tile is consumed (and q is stored)
        for (int e = tid; e < GEN_BK * dp; e += blockDim.x) {
            const int r = e / dp, d = e - r * dp;
            const bool ok = j0 + r < kv_len && d < dh;
            ks[r * dk + d] = ok ? ld(kg + (long long)(j0 + r) * ldk + d) : 0.0f;
            vs[r * dp + d] = ok ? ld(vg + (long long)(j0 + r) * ldv + d) : 0.0f;
        }
        __syncthreads();

        // Scores of this lane's key against the warp's rows.
        float s[GEN_R];
#pragma unroll
        for (int r = 0; r < GEN_R; r++) s[r] = 0.0f;
        const float* kr = ks + lane * dk;
        for (int d = 0; d < dp; d += 4) {
            const float4 kv4 = *reinterpret_cast<const float4*>(kr + d);
#pragma unroll
            for (int r = 0; r < GEN_R; r++) {
                const float4 q4 = *reinterpret_cast<const float4*>(qw + r * dp + d);
                s[r] += q4.x * kv4.x + q4.y * kv4.y + q4.z * kv4.z + q4.w * kv4.w;
            }
        }

        const int key = j0 + lane;
#pragma unroll
        for (int r = 0; r < GEN_R; r++) {
            const int qi = q0 + warp * GEN_R + r;
            const bool ok = key < kv_len && (!causal || key <= qi);
            const float sv = ok ? s[r] * scale : NEG_INF;
            const float m_new = fmaxf(m[r], warp_max(sv));
            // A row that has seen no visible key yet keeps m = -inf; subtract
            // 0 then so that exp gives 0 rather than NaN.
            const float base = m_new == NEG_INF ? 0.0f : m_new;
            const float p = expf(sv - base);
            const float corr = m[r] == NEG_INF ? 0.0f : expf(m[r] - base);
            l[r] = l[r] * corr + warp_sum(p);
            m[r] = m_new;
#pragma unroll
            for (int i = 0; i < DPL; i++) acc[r][i] *= corr;
            pw[r * GEN_BK + lane] = p;
        }
        __syncwarp();

        // acc[r][d] += Σ_j p[r][j] · v[j][d], lane owning d = lane + 32·i.
        for (int j = 0; j < GEN_BK; j += 4) {
            float vv[4][DPL];
#pragma unroll
            for (int jj = 0; jj < 4; jj++)
#pragma unroll
                for (int i = 0; i < DPL; i++) {
                    const int d = lane + 32 * i;
                    vv[jj][i] = d < dp ? vs[(j + jj) * dp + d] : 0.0f;
                }
#pragma unroll
            for (int r = 0; r < GEN_R; r++) {
                const float4 p4 = *reinterpret_cast<const float4*>(pw + r * GEN_BK + j);
#pragma unroll
                for (int i = 0; i < DPL; i++)
                    acc[r][i] += p4.x * vv[0][i] + p4.y * vv[1][i] + p4.z * vv[2][i] +
                                 p4.w * vv[3][i];
            }
        }
        __syncwarp();
    }

    const int width = heads * dh;
#pragma unroll
    for (int r = 0; r < GEN_R; r++) {
        const int qi = q0 + warp * GEN_R + r;
        if (qi >= q_len) continue;
        const float inv = 1.0f / l[r];
        T* orow = out + ((long long)b * q_len + qi) * width + h * dh;
#pragma unroll
        for (int i = 0; i < DPL; i++) {
            const int d = lane + 32 * i;
            if (d < dh) st(orow + d, acc[r][i] * inv);
        }
    }
}

#define ATTN_GENERIC(T, NAME, DPL)                                                             \
    extern "C" __global__ void __launch_bounds__(GEN_WARPS * 32) attn_generic_##NAME##_##DPL(  \
        const T* q, const T* k, const T* v, T* out, int q_len, int kv_len, int heads, int dh,  \
        int ldq, int ldk, int ldv, int qcol, int kcol, int vcol, float scale, int causal) {    \
        attn_generic_impl<T, DPL>(q, k, v, out, q_len, kv_len, heads, dh, ldq, ldk, ldv, qcol, \
                                  kcol, vcol, scale, causal);                                  \
    }
ATTN_GENERIC(float, f32, 1)
ATTN_GENERIC(float, f32, 2)
ATTN_GENERIC(float, f32, 3)
ATTN_GENERIC(float, f32, 4)
ATTN_GENERIC(bf16_t, bf16, 1)
ATTN_GENERIC(bf16_t, bf16, 2)
ATTN_GENERIC(bf16_t, bf16, 3)
ATTN_GENERIC(bf16_t, bf16, 4)

// ---------------------------------------------------------------------------
// Tensor-core kernel (bf16). NW warps, 16 query rows each (BQ = 16·NW);
// key tiles of BK = 64. Per warp and key tile:
//   S (16×64) = Q (16×D) · Kᵀ   — D/16 × 8 mma, K fragments by ldmatrix
//   online softmax on S in registers (a row lives in a quad of lanes)
//   O (16×D) += P · V           — P re-used from S's accumulator registers
//                                 as A fragments; V fragments by ldmatrix.trans
// Shared memory (bf16): q [BQ][D+8], k and v [2 stages][BK][D+8]; the +8
// elements (16 bytes) per row make every ldmatrix phase conflict-free.
// Requires ld and column offsets that are multiples of 8 elements (16-byte
// cp.async); the host falls back to the generic kernel otherwise.
// ---------------------------------------------------------------------------

#define MMA_BK 64

__device__ __forceinline__ unsigned smem_addr(const void* p) {
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800

__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
    // src-size 0 zero-fills the 16 bytes: rows past the end read nothing.
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)),
                 "l"(src), "r"(valid ? 16 : 0)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(unsigned* r, const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p))
                 : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned* r, const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p))
                 : "memory");
}

// c (16×8, f32) += a (16×16, bf16, row-major) · b (16×8, bf16, column-major)
__device__ __forceinline__ void mma_bf16(float* c, const unsigned* a, unsigned b0, unsigned b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 2^x by the special-function unit alone (flush-to-zero: exp2f adds a
// denormal-range fix-up around the same instruction). Probabilities below
// 2^-126 are zero either way once rounded to bf16 for P·V.
__device__ __forceinline__ float ex2_ftz(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// Two f32 to a bf16 pair, lo in the low half (the lower column index).
__device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// rows × D tile of bf16 from global (row stride ld) into shared (row stride
// D + 8), 16 bytes per cp.async; rows at or past `valid_rows` become zeros.
template <int D, int ROWS, int THREADS>
__device__ __forceinline__ void load_tile(bf16_t* dst, const bf16_t* src, int ld, int row0,
                                          int valid_rows) {
    constexpr int CPR = D / 8;  // 16-byte chunks per row
    constexpr int LDS = D + 8;
    for (int c = threadIdx.x; c < ROWS * CPR; c += THREADS) {
        const int r = c / CPR, cc = c - r * CPR;
        const bool ok = row0 + r < valid_rows;
        const bf16_t* g = ok ? src + (long long)(row0 + r) * ld + cc * 8 : src;
        cp_async16(dst + r * LDS + cc * 8, g, ok);
    }
}

template <int D, int NW>
__device__ __forceinline__ void attn_mma_impl(const bf16_t* __restrict__ q,
                                              const bf16_t* __restrict__ k,
                                              const bf16_t* __restrict__ v,
                                              bf16_t* __restrict__ out, int q_len, int kv_len,
                                              int heads, int ldq, int ldk, int ldv, int qcol,
                                              int kcol, int vcol, float scale_log2, int causal) {
    constexpr int BQ = 16 * NW, BK = MMA_BK, LDS = D + 8, THREADS = 32 * NW;
    constexpr int DK = D / 16;  // k-steps of S = Q·Kᵀ
    constexpr int DN = D / 8;   // n-blocks of O
    constexpr int SN = BK / 8;  // n-blocks of S
    extern __shared__ __align__(16) unsigned char msm[];
    bf16_t* qs = reinterpret_cast<bf16_t*>(msm);
    bf16_t* ks = qs + BQ * LDS;
    bf16_t* vs = ks + 2 * BK * LDS;

    const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * BQ;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const bf16_t* qg = q + (long long)b * q_len * ldq + qcol + h * D;
    const bf16_t* kg = k + (long long)b * kv_len * ldk + kcol + h * D;
    const bf16_t* vg = v + (long long)b * kv_len * ldv + vcol + h * D;

    const int kv_end = causal ? min(kv_len, q0 + BQ) : kv_len;
    const int tiles = (kv_end + BK - 1) / BK;

    load_tile<D, BQ, THREADS>(qs, qg, ldq, q0, q_len);
    load_tile<D, BK, THREADS>(ks, kg, ldk, 0, kv_len);
    load_tile<D, BK, THREADS>(vs, vg, ldv, 0, kv_len);
    cp_async_commit();

    unsigned qf[DK][4];
    float o[DN][4];
#pragma unroll
    for (int i = 0; i < DN; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    // Rows g and g + 8 of the warp's 16 (g = lane / 4): running max and the
    // lane's share of the running sum (summed over the quad at the end).
    float mrow[2] = {NEG_INF, NEG_INF};
    float lrow[2] = {0.0f, 0.0f};
    const int qrow = q0 + warp * 16 + (lane >> 2);

    for (int t = 0; t < tiles; t++) {
        if (t + 1 < tiles) {
            const int stage = (t + 1) & 1;
            load_tile<D, BK, THREADS>(ks + stage * BK * LDS, kg, ldk, (t + 1) * BK, kv_len);
            load_tile<D, BK, THREADS>(vs + stage * BK * LDS, vg, ldv, (t + 1) * BK, kv_len);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();

        if (t == 0) {
#pragma unroll
            for (int kk = 0; kk < DK; kk++)
                ldmatrix_x4(qf[kk], qs + (warp * 16 + (lane & 15)) * LDS + kk * 16 + (lane >> 4) * 8);
        }
        const bf16_t* kt = ks + (t & 1) * BK * LDS;
        const bf16_t* vt = vs + (t & 1) * BK * LDS;

        float s[SN][4];
#pragma unroll
        for (int i = 0; i < SN; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < DK; kk++) {
#pragma unroll
            for (int nb = 0; nb < SN; nb += 2) {
                unsigned bf[4];
                ldmatrix_x4(bf, kt + (nb * 8 + (lane & 7) + ((lane >> 4) << 3)) * LDS + kk * 16 +
                                    ((lane >> 3) & 1) * 8);
                mma_bf16(s[nb], qf[kk], bf[0], bf[1]);
                mma_bf16(s[nb + 1], qf[kk], bf[2], bf[3]);
            }
        }

        // Mask keys past kv_len (and, causal, keys after the query). Only
        // the last tile and causal tiles need it: the ViT's 2048 keys fill
        // every tile, and the compares and selects cost as much as the
        // exponentials.
        if (causal || (t + 1) * BK > kv_len) {
            const int key0 = t * BK + 2 * (lane & 3);
#pragma unroll
            for (int nb = 0; nb < SN; nb++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int key = key0 + nb * 8 + (e & 1);
                    const int qi = qrow + (e >> 1) * 8;
                    const bool ok = key < kv_len && (!causal || key <= qi);
                    s[nb][e] = ok ? s[nb][e] : NEG_INF;
                }
        }

        // Online softmax on the raw scores: the row max is taken before
        // scaling (the host guarantees scale > 0) and the log2-domain scale
        // rides in one FFMA per element, p = 2^(s·scale − m·scale).
#pragma unroll
        for (int hr = 0; hr < 2; hr++) {
            float mx = NEG_INF;
#pragma unroll
            for (int nb = 0; nb < SN; nb++) mx = fmaxf(mx, fmaxf(s[nb][2 * hr], s[nb][2 * hr + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float m_new = fmaxf(mrow[hr], mx);
            const float base = m_new == NEG_INF ? 0.0f : m_new * scale_log2;
            const float corr =
                mrow[hr] == NEG_INF ? 0.0f : ex2_ftz(fmaf(mrow[hr], scale_log2, -base));
            float sum = 0.0f;
#pragma unroll
            for (int nb = 0; nb < SN; nb++) {
                s[nb][2 * hr] = ex2_ftz(fmaf(s[nb][2 * hr], scale_log2, -base));
                s[nb][2 * hr + 1] = ex2_ftz(fmaf(s[nb][2 * hr + 1], scale_log2, -base));
                sum += s[nb][2 * hr] + s[nb][2 * hr + 1];
            }
            lrow[hr] = lrow[hr] * corr + sum;
            mrow[hr] = m_new;
#pragma unroll
            for (int i = 0; i < DN; i++) {
                o[i][2 * hr] *= corr;
                o[i][2 * hr + 1] *= corr;
            }
        }

#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++) {
            unsigned pa[4];
            pa[0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
            pa[1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
            pa[2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            pa[3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int nb = 0; nb < DN; nb += 2) {
                unsigned bf[4];
                ldmatrix_x4_trans(bf, vt + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LDS +
                                          nb * 8 + (lane >> 4) * 8);
                mma_bf16(o[nb], pa, bf[0], bf[1]);
                mma_bf16(o[nb + 1], pa, bf[2], bf[3]);
            }
        }
        __syncthreads();  // this stage is overwritten by the next iteration's loads
    }

    const int width = heads * D;
#pragma unroll
    for (int hr = 0; hr < 2; hr++) {
        float l = lrow[hr];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        const float inv = 1.0f / l;
        const int row = qrow + hr * 8;
        if (row < q_len) {
            bf16_t* orow = out + ((long long)b * q_len + row) * width + h * D + 2 * (lane & 3);
#pragma unroll
            for (int i = 0; i < DN; i++)
                *reinterpret_cast<unsigned*>(orow + i * 8) =
                    pack_bf16(o[i][2 * hr] * inv, o[i][2 * hr + 1] * inv);
        }
    }
}

// Blocks per multiprocessor the register allocation must allow: 4 for head
// dims up to 64 (128 registers, no spills; left to itself ptxas picked 128
// registers with a spill), 1 (no cap) for the wider heads.
#define ATTN_MIN_BLOCKS(D) ((D) <= 64 ? 4 : 1)

#define ATTN_MMA(D, NW)                                                                        \
    extern "C" __global__ void __launch_bounds__(32 * NW, ATTN_MIN_BLOCKS(D)) attn_mma_##D##_##NW( \
        const bf16_t* q, const bf16_t* k, const bf16_t* v, bf16_t* out, int q_len, int kv_len, \
        int heads, int ldq, int ldk, int ldv, int qcol, int kcol, int vcol, float scale_log2,  \
        int causal) {                                                                          \
        attn_mma_impl<D, NW>(q, k, v, out, q_len, kv_len, heads, ldq, ldk, ldv, qcol, kcol,    \
                             vcol, scale_log2, causal);                                        \
    }

#else  // below sm_80: the host never launches these (it checks the device).

#define ATTN_MMA(D, NW)                                                                        \
    extern "C" __global__ void attn_mma_##D##_##NW(                                            \
        const bf16_t* q, const bf16_t* k, const bf16_t* v, bf16_t* out, int q_len, int kv_len, \
        int heads, int ldq, int ldk, int ldv, int qcol, int kcol, int vcol, float scale_log2,  \
        int causal) {                                                                          \
        __trap();                                                                              \
    }

#endif

ATTN_MMA(32, 1)
ATTN_MMA(32, 4)
ATTN_MMA(48, 1)
ATTN_MMA(48, 4)
ATTN_MMA(64, 1)
ATTN_MMA(64, 4)
ATTN_MMA(96, 1)
ATTN_MMA(96, 4)
ATTN_MMA(128, 1)
ATTN_MMA(128, 4)
