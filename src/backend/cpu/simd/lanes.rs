//! The lane abstraction the elementwise kernels are written against: one
//! scalar "pack" and the AVX2 (8 lanes) and AVX-512 (16 lanes) packs.

/// A pack of f32 lanes. Methods are `unsafe` because the vector
/// implementations need their CPU feature; they are `inline(always)` so
/// that they compile inside the caller's `#[target_feature]` function.
pub trait Lanes: Copy {
    const N: usize;
    unsafe fn splat(x: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    unsafe fn add(self, o: Self) -> Self;
    unsafe fn sub(self, o: Self) -> Self;
    unsafe fn mul(self, o: Self) -> Self;
    unsafe fn div(self, o: Self) -> Self;
    /// `self·b + c`, fused where the ISA has FMA.
    unsafe fn mul_add(self, b: Self, c: Self) -> Self;
    /// Lane-wise max/min; a NaN in `self` propagates.
    unsafe fn max(self, o: Self) -> Self;
    unsafe fn min(self, o: Self) -> Self;
    unsafe fn abs(self) -> Self;
    /// Round to the nearest integer (ties to even).
    unsafe fn round(self) -> Self;
    /// `self·2^n` for integral `n` in [-126, 128]. With n = 128 the
    /// result is +inf on the scalar and AVX2 paths (`2^n` is built in the
    /// exponent bits) and the correctly rounded product on AVX-512
    /// (`vscalefps`), which overflows only when the product does.
    unsafe fn mul_pow2(self, n: Self) -> Self;
    /// `if self >= 0 { a } else { b }` lane-wise (NaN takes `b`).
    unsafe fn select_nonneg(self, a: Self, b: Self) -> Self;
    unsafe fn hsum(self) -> f32;
    unsafe fn hmax(self) -> f32;
}

impl Lanes for f32 {
    const N: usize = 1;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        x
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        *p
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        *p = self
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        self + o
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        self - o
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        self * o
    }
    #[inline(always)]
    unsafe fn div(self, o: Self) -> Self {
        self / o
    }
    // No FMA on the baseline target: `f32::mul_add` would call libm.
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        self * b + c
    }
    #[inline(always)]
    unsafe fn max(self, o: Self) -> Self {
        if self.is_nan() || self > o {
            self
        } else {
            o
        }
    }
    #[inline(always)]
    unsafe fn min(self, o: Self) -> Self {
        if self.is_nan() || self < o {
            self
        } else {
            o
        }
    }
    #[inline(always)]
    unsafe fn abs(self) -> Self {
        self.abs()
    }
    #[inline(always)]
    unsafe fn round(self) -> Self {
        // The 1.5·2^23 trick rounds to nearest-even for |x| < 2^22.
        (self + 12_582_912.0) - 12_582_912.0
    }
    #[inline(always)]
    unsafe fn mul_pow2(self, n: Self) -> Self {
        self * f32::from_bits(((n as i32 + 127) << 23) as u32)
    }
    #[inline(always)]
    unsafe fn select_nonneg(self, a: Self, b: Self) -> Self {
        if self >= 0.0 {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    unsafe fn hsum(self) -> f32 {
        self
    }
    #[inline(always)]
    unsafe fn hmax(self) -> f32 {
        self
    }
}

#[cfg(target_arch = "x86_64")]
pub use avx2::F32x8;
#[cfg(segvol_avx512)]
pub use avx512::F32x16;

// Compiled only where build.rs found Rust 1.89+ (stable AVX-512).
#[cfg(segvol_avx512)]
#[allow(clippy::incompatible_msrv)]
mod avx512 {
    use super::Lanes;
    use std::arch::x86_64::*;

    #[derive(Clone, Copy)]
    pub struct F32x16(pub __m512);

    impl Lanes for F32x16 {
        const N: usize = 16;
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            F32x16(_mm512_set1_ps(x))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            F32x16(_mm512_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm512_storeu_ps(p, self.0)
        }
        #[inline(always)]
        unsafe fn add(self, o: Self) -> Self {
            F32x16(_mm512_add_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn sub(self, o: Self) -> Self {
            F32x16(_mm512_sub_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn mul(self, o: Self) -> Self {
            F32x16(_mm512_mul_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn div(self, o: Self) -> Self {
            F32x16(_mm512_div_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn mul_add(self, b: Self, c: Self) -> Self {
            F32x16(_mm512_fmadd_ps(self.0, b.0, c.0))
        }
        // vmaxps/vminps return the second operand when either is NaN.
        #[inline(always)]
        unsafe fn max(self, o: Self) -> Self {
            F32x16(_mm512_max_ps(o.0, self.0))
        }
        #[inline(always)]
        unsafe fn min(self, o: Self) -> Self {
            F32x16(_mm512_min_ps(o.0, self.0))
        }
        #[inline(always)]
        unsafe fn abs(self) -> Self {
            F32x16(_mm512_abs_ps(self.0))
        }
        #[inline(always)]
        unsafe fn round(self) -> Self {
            F32x16(_mm512_roundscale_ps::<
                { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
            >(self.0))
        }
        #[inline(always)]
        unsafe fn mul_pow2(self, n: Self) -> Self {
            F32x16(_mm512_scalef_ps(self.0, n.0))
        }
        #[inline(always)]
        unsafe fn select_nonneg(self, a: Self, b: Self) -> Self {
            let m = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(self.0, _mm512_setzero_ps());
            F32x16(_mm512_mask_blend_ps(m, b.0, a.0))
        }
        #[inline(always)]
        unsafe fn hsum(self) -> f32 {
            _mm512_reduce_add_ps(self.0)
        }
        #[inline(always)]
        unsafe fn hmax(self) -> f32 {
            _mm512_reduce_max_ps(self.0)
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Lanes;
    use std::arch::x86_64::*;

    #[derive(Clone, Copy)]
    pub struct F32x8(__m256);

    impl Lanes for F32x8 {
        const N: usize = 8;
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            F32x8(_mm256_set1_ps(x))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            F32x8(_mm256_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm256_storeu_ps(p, self.0)
        }
        #[inline(always)]
        unsafe fn add(self, o: Self) -> Self {
            F32x8(_mm256_add_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn sub(self, o: Self) -> Self {
            F32x8(_mm256_sub_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn mul(self, o: Self) -> Self {
            F32x8(_mm256_mul_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn div(self, o: Self) -> Self {
            F32x8(_mm256_div_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn mul_add(self, b: Self, c: Self) -> Self {
            F32x8(_mm256_fmadd_ps(self.0, b.0, c.0))
        }
        // maxps/minps return the second operand when either is NaN.
        #[inline(always)]
        unsafe fn max(self, o: Self) -> Self {
            F32x8(_mm256_max_ps(o.0, self.0))
        }
        #[inline(always)]
        unsafe fn min(self, o: Self) -> Self {
            F32x8(_mm256_min_ps(o.0, self.0))
        }
        #[inline(always)]
        unsafe fn abs(self) -> Self {
            F32x8(_mm256_andnot_ps(_mm256_set1_ps(-0.0), self.0))
        }
        #[inline(always)]
        unsafe fn round(self) -> Self {
            F32x8(_mm256_round_ps::<
                { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
            >(self.0))
        }
        #[inline(always)]
        unsafe fn mul_pow2(self, n: Self) -> Self {
            let i = _mm256_add_epi32(_mm256_cvtps_epi32(n.0), _mm256_set1_epi32(127));
            let p = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(i));
            F32x8(_mm256_mul_ps(self.0, p))
        }
        #[inline(always)]
        unsafe fn select_nonneg(self, a: Self, b: Self) -> Self {
            let m = _mm256_cmp_ps::<_CMP_GE_OQ>(self.0, _mm256_setzero_ps());
            F32x8(_mm256_blendv_ps(b.0, a.0, m))
        }
        #[inline(always)]
        unsafe fn hsum(self) -> f32 {
            let s = _mm_add_ps(
                _mm256_castps256_ps128(self.0),
                _mm256_extractf128_ps::<1>(self.0),
            );
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
        #[inline(always)]
        unsafe fn hmax(self) -> f32 {
            let s = _mm_max_ps(
                _mm256_castps256_ps128(self.0),
                _mm256_extractf128_ps::<1>(self.0),
            );
            let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_max_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
    }
}
