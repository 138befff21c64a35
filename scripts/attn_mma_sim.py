# Lane-level simulation of attn_mma_impl (kernels/attention.cu): checks the
# ldmatrix/mma index math, masking, online softmax and pack order against a
# float64 reference. PTX semantics modelled from the ISA's fragment tables.
import numpy as np, sys
rng = np.random.default_rng(int(sys.argv[1]) if len(sys.argv) > 1 else 0)

def bf16(x):
    x = np.asarray(x, np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    u = (u + 0x7fff + ((u >> 16) & 1)) & 0xffff0000
    return u.astype(np.uint32).view(np.float32)

def ldmatrix_x4(smem, addr_of_lane, trans):
    # smem: 2-D array [rows][cols] of values; addr_of_lane(l) -> (row, col) start of the 8-element row
    regs = np.zeros((32, 4, 2), np.float32)
    rows = [[None]*8 for _ in range(4)]
    for l in range(32):
        r, c = addr_of_lane(l)
        rows[l // 8][l % 8] = smem[r, c:c+8]
    for i in range(4):
        m = np.stack(rows[i])  # 8x8 as stored
        for T in range(32):
            g, t = T // 4, T % 4
            if not trans:
                regs[T, i] = m[g, 2*t:2*t+2]
            else:
                regs[T, i] = [m[2*t, g], m[2*t+1, g]]
    return regs  # [lane][reg][lo,hi]

def mma(c, a, b0, b1):
    # c [32][4], a [32][4][2], b0,b1 [32][2]
    A = np.zeros((16, 16)); B = np.zeros((16, 8))
    for T in range(32):
        g, t = T // 4, T % 4
        A[g, 2*t:2*t+2] = a[T, 0]; A[g+8, 2*t:2*t+2] = a[T, 1]
        A[g, 2*t+8:2*t+10] = a[T, 2]; A[g+8, 2*t+8:2*t+10] = a[T, 3]
        B[2*t:2*t+2, g] = b0[T]; B[2*t+8:2*t+10, g] = b1[T]
    C = (A.astype(np.float64) @ B.astype(np.float64))
    out = c.copy()
    for T in range(32):
        g, t = T // 4, T % 4
        out[T, 0:2] += C[g, 2*t:2*t+2]; out[T, 2:4] += C[g+8, 2*t:2*t+2]
    return out.astype(np.float32)

def kernel(q, k, v, q_len, kv_len, heads, D, NW, ldq, ldk, ldv, qc, kc, vc, scale, causal, B):
    BQ, BK, LDS = 16*NW, 64, D+8
    out = np.full((B, q_len, heads*D), np.nan, np.float32)
    lanes = np.arange(32)
    for b in range(B):
        for h in range(heads):
            for bx in range((q_len + BQ - 1)//BQ):
                q0 = bx*BQ
                def tile(src, ld, col, row0, rows, valid):
                    t = np.zeros((rows, LDS), np.float32); t[:, D:] = np.nan  # padding never read
                    for r in range(rows):
                        if row0 + r < valid:
                            base = (b*valid + row0 + r)*ld + col + h*D
                            t[r, :D] = src[base:base+D]
                    return t
                kv_end = min(kv_len, q0+BQ) if causal else kv_len
                tiles = (kv_end + BK - 1)//BK
                qs = tile(q, ldq, qc, q0, BQ, q_len)
                for warp in range(NW):
                    qf = [ldmatrix_x4(qs, lambda l, kk=kk: (warp*16 + (l & 15), kk*16 + (l >> 4)*8), False) for kk in range(D//16)]
                    o = np.zeros((D//8, 32, 4), np.float32)
                    mrow = np.full((2, 32), -np.inf, np.float32); lrow = np.zeros((2, 32), np.float32)
                    qrow = q0 + warp*16 + (lanes >> 2)
                    for t in range(tiles):
                        kt = tile(k, ldk, kc, t*BK, BK, kv_len); vt = tile(v, ldv, vc, t*BK, BK, kv_len)
                        s = np.zeros((BK//8, 32, 4), np.float32)
                        for kk in range(D//16):
                            for nb in range(0, BK//8, 2):
                                bf = ldmatrix_x4(kt, lambda l: (nb*8 + (l & 7) + ((l >> 4) << 3), kk*16 + ((l >> 3) & 1)*8), False)
                                s[nb] = mma(s[nb], qf[kk], bf[:, 0], bf[:, 1])
                                s[nb+1] = mma(s[nb+1], qf[kk], bf[:, 2], bf[:, 3])
                        # Masking only where a tile needs it; raw scores, the
                        # log2-domain scale folded into the exponent's FFMA.
                        sl2 = np.float32(scale*np.log2(np.e))
                        if causal or (t + 1)*BK > kv_len:
                            key0 = t*BK + 2*(lanes & 3)
                            for nb in range(BK//8):
                                for e in range(4):
                                    key = key0 + nb*8 + (e & 1); qi = qrow + (e >> 1)*8
                                    ok = (key < kv_len) & ((not causal) | (key <= qi))
                                    s[nb][:, e] = np.where(ok, s[nb][:, e], -np.inf)
                        for hr in range(2):
                            mx = np.max(np.maximum(s[:, :, 2*hr], s[:, :, 2*hr+1]), axis=0)
                            mx = np.maximum(mx, mx[lanes ^ 1]); mx = np.maximum(mx, mx[lanes ^ 2])
                            m_new = np.maximum(mrow[hr], mx)
                            with np.errstate(invalid='ignore'):
                                base = np.where(m_new == -np.inf, 0, m_new*sl2).astype(np.float32)
                                corr = np.where(mrow[hr] == -np.inf, 0, np.exp2(mrow[hr]*sl2 - base))
                            s[:, :, 2*hr] = np.exp2(s[:, :, 2*hr]*sl2 - base); s[:, :, 2*hr+1] = np.exp2(s[:, :, 2*hr+1]*sl2 - base)
                            sm = np.sum(s[:, :, 2*hr] + s[:, :, 2*hr+1], axis=0)
                            lrow[hr] = lrow[hr]*corr + sm; mrow[hr] = m_new
                            o[:, :, 2*hr] *= corr; o[:, :, 2*hr+1] *= corr
                        for kk in range(BK//16):
                            pa = np.zeros((32, 4, 2), np.float32)
                            pa[:, 0] = bf16(s[2*kk][:, 0:2]); pa[:, 1] = bf16(s[2*kk][:, 2:4])
                            pa[:, 2] = bf16(s[2*kk+1][:, 0:2]); pa[:, 3] = bf16(s[2*kk+1][:, 2:4])
                            for nb in range(0, D//8, 2):
                                bf = ldmatrix_x4(vt, lambda l: (kk*16 + (l & 7) + ((l >> 3) & 1)*8, nb*8 + (l >> 4)*8), True)
                                o[nb] = mma(o[nb], pa, bf[:, 0], bf[:, 1])
                                o[nb+1] = mma(o[nb+1], pa, bf[:, 2], bf[:, 3])
                    for hr in range(2):
                        l = lrow[hr]; l = l + l[lanes ^ 1]; l = l + l[lanes ^ 2]
                        row = qrow + hr*8
                        for T in range(32):
                            if row[T] < q_len:
                                for i in range(D//8):
                                    d = h*D + i*8 + 2*(T & 3)
                                    out[b, row[T], d:d+2] = bf16(o[i][T, 2*hr:2*hr+2] / l[T])
    return out

def reference(q, k, v, q_len, kv_len, heads, D, ldq, ldk, ldv, qc, kc, vc, scale, causal, B):
    out = np.zeros((B, q_len, heads*D))
    for b in range(B):
        for h in range(heads):
            Q = np.array([q[(b*q_len+i)*ldq+qc+h*D:(b*q_len+i)*ldq+qc+h*D+D] for i in range(q_len)], np.float64)
            K = np.array([k[(b*kv_len+j)*ldk+kc+h*D:(b*kv_len+j)*ldk+kc+h*D+D] for j in range(kv_len)], np.float64)
            V = np.array([v[(b*kv_len+j)*ldv+vc+h*D:(b*kv_len+j)*ldv+vc+h*D+D] for j in range(kv_len)], np.float64)
            S = Q @ K.T * scale
            if causal: S = np.where(np.arange(kv_len)[None, :] <= np.arange(q_len)[:, None], S, -np.inf)
            P = np.exp(S - S.max(1, keepdims=True)); P /= P.sum(1, keepdims=True)
            out[b, :, h*D:h*D+D] = P @ V
    return out

cases = [  # (B, heads, D, NW, q_len, kv_len, causal, packed)
    (1, 2, 48, 1, 8, 130, False, False),
    (2, 1, 64, 4, 70, 70, True, True),
    (1, 1, 96, 4, 33, 9, False, False),
    (1, 2, 32, 1, 5, 64, False, False),
]
for (B, heads, D, NW, ql, kl, causal, packed) in cases:
    w = heads*D
    if packed:
        ld = 3*w
        t = bf16(rng.uniform(-2, 2, B*ql*ld)); q = k = v = t; cols = (0, w, 2*w); lds = (ld, ld, ld)
    else:
        q = bf16(rng.uniform(-2, 2, B*ql*w)); k = bf16(rng.uniform(-2, 2, B*kl*w)); v = bf16(rng.uniform(-2, 2, B*kl*w))
        cols = (0, 0, 0); lds = (w, w, w)
    sc = 1/np.sqrt(D)
    got = kernel(q, k, v, ql, kl, heads, D, NW, *lds, *cols, sc, causal, B)
    want = reference(q, k, v, ql, kl, heads, D, *lds, *cols, sc, causal, B)
    assert np.all(np.isfinite(got)), "unwritten output"
    rel = np.linalg.norm(got - want)/np.linalg.norm(want)
    print(f"B={B} h={heads} D={D} NW={NW} q={ql} kv={kl} causal={causal}: rel L2 {rel:.2e}")
    assert rel < 1e-2
print("ok")
