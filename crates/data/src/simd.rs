//! AVX2 building blocks shared by the colour and resampling kernels: channel
//! (de)interleaving of 8 RGB pixels, packing and PIL's integer luma (callers
//! check for AVX2 at run time), and `with_avx2` for plain loops.

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::*;

/// Whether the AVX2 code runs: the CPU has AVX2 and `CLIP_DATA_SCALAR` is not set.
/// The scalar code is what other CPUs run; scripts/test.sh runs the data tests
/// both ways.
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx2() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx2")
            && std::env::var_os("CLIP_DATA_SCALAR").is_none()
    })
}

/// Runs `f` compiled with AVX2 enabled when `avx2()` allows (the compiler then
/// uses single instructions for `floor`, conversions and vector loops). Results
/// are the same: no fused multiply-add is enabled.
#[inline(always)]
pub(crate) fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        fn run<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if avx2() {
            // SAFETY: the CPU supports AVX2 (checked by `avx2`).
            return unsafe { run(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Shuffle masks: entry `i` picks byte `m[i]` (-1: zero).
    #[inline(always)]
    fn mask(m: [i8; 16]) -> __m128i {
        // SAFETY: `m` is 16 bytes; SSE2 is part of x86_64.
        unsafe { _mm_loadu_si128(m.as_ptr() as *const __m128i) }
    }

    /// 24 bytes of RGB to 8 x i32 per channel.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn deinterleave(p: &[u8; 24]) -> [__m256i; 3] {
        // SAFETY: bytes 0..16 and 8..24 are inside `p`.
        let (a, b) = unsafe {
            (
                _mm_loadu_si128(p.as_ptr() as *const __m128i),
                _mm_loadu_si128(p.as_ptr().add(8) as *const __m128i),
            )
        };
        let z = -1;
        let pick = |ma: [i8; 16], mb: [i8; 16]| {
            _mm256_cvtepu8_epi32(_mm_or_si128(
                _mm_shuffle_epi8(a, mask(ma)),
                _mm_shuffle_epi8(b, mask(mb)),
            ))
        };
        [
            pick(
                [0, 3, 6, 9, 12, 15, z, z, z, z, z, z, z, z, z, z],
                [z, z, z, z, z, z, 10, 13, z, z, z, z, z, z, z, z],
            ),
            pick(
                [1, 4, 7, 10, 13, z, z, z, z, z, z, z, z, z, z, z],
                [z, z, z, z, z, 8, 11, 14, z, z, z, z, z, z, z, z],
            ),
            pick(
                [2, 5, 8, 11, 14, z, z, z, z, z, z, z, z, z, z, z],
                [z, z, z, z, z, 9, 12, 15, z, z, z, z, z, z, z, z],
            ),
        ]
    }

    /// 8 x i32 per channel (each in 0..=255) back to 24 bytes of RGB.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn interleave([r, g, b]: [__m256i; 3]) -> [u8; 24] {
        let bytes = |v: __m256i| {
            let w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
            _mm_packus_epi16(w, w)
        };
        let rg = _mm_unpacklo_epi64(bytes(r), bytes(g)); // r0..r7 g0..g7
        let bb = bytes(b); // b0..b7
        let z = -1;
        let first = _mm_or_si128(
            _mm_shuffle_epi8(
                rg,
                mask([0, 8, z, 1, 9, z, 2, 10, z, 3, 11, z, 4, 12, z, 5]),
            ),
            _mm_shuffle_epi8(bb, mask([z, z, 0, z, z, 1, z, z, 2, z, z, 3, z, z, 4, z])),
        );
        let second = _mm_or_si128(
            _mm_shuffle_epi8(
                rg,
                mask([13, z, 6, 14, z, 7, 15, z, z, z, z, z, z, z, z, z]),
            ),
            _mm_shuffle_epi8(bb, mask([z, 5, z, z, 6, z, z, 7, z, z, z, z, z, z, z, z])),
        );
        let mut out = [0u8; 24];
        // SAFETY: `out` holds 16 + 8 bytes.
        unsafe {
            _mm_storeu_si128(out.as_mut_ptr() as *mut __m128i, first);
            _mm_storel_epi64(out.as_mut_ptr().add(16) as *mut __m128i, second);
        }
        out
    }

    /// PIL's `L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16`.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn luma([r, g, b]: [__m256i; 3]) -> __m256i {
        let m = |v, k| _mm256_mullo_epi32(v, _mm256_set1_epi32(k));
        let sum = _mm256_add_epi32(_mm256_add_epi32(m(r, 19595), m(g, 38470)), m(b, 7471));
        _mm256_srli_epi32::<16>(_mm256_add_epi32(sum, _mm256_set1_epi32(0x8000)))
    }

    /// 8 x i32 to 8 bytes, saturating to 0..=255.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn pack8(v: __m256i) -> [u8; 8] {
        let w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        (_mm_cvtsi128_si64(_mm_packus_epi16(w, w)) as u64).to_le_bytes()
    }
}
