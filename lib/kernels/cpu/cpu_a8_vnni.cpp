// The a8 micro-kernels on AVX-512 VNNI (a8_isa.hpp has the layouts, a8_body.hpp the panel loop
// and the epilogues, which run on the AVX2 vector type here). vpdpbusd multiplies unsigned bytes
// by signed ones and adds each lane's four products into its int32: one instruction where AVX2
// takes three, on 64-byte vectors. Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni
// -mavx2 -mfma -mf16c; only called when the CPU has them (has_avx512_vnni()).
// - int8: the weights are packed unsigned (code + 128, A8Kernels::i8_unsigned) and the codes of
//   x are the signed operand, so a lane holds sum (w + 128) x and 128 x the row's code sum comes
//   off. A lane's sum stays far inside int32: 255 x 127 x 4 per quad, 66 000 rows of reduction.
// - q4: the nibbles (code + 8, 0..15) are the unsigned operand; 8 x the group's code sum comes
//   off, as on AVX2.
// A 64-byte vector holds one quad of both projections of a gate/up panel (one broadcast of x
// serves it), or two quads of one projection (x's two words, a half each, and the halves added
// at the end).
#include <immintrin.h>

#include <algorithm>

#include "a8_isa.hpp"
#include "cpu_isa.hpp"

namespace moe_bench::cpu {
namespace avx512_vnni {

#include "avx2_vec.hpp"
#include "kernel_math.hpp"

// Bytes ahead of the reads the weights are prefetched (into L1: the stream of one thread), as
// on AVX2.
constexpr int64_t kA8Ahead = 4096;
// Rows a pass over a panel takes: blocks of up to four rows (A at 16 tokens puts about four on an
// expert) read each panel once.
constexpr int kA8PassRows = 4;

inline int32_t a8_word(const void* p) {
  int32_t word;
  __builtin_memcpy(&word, p, 4);
  return word;
}

// x's word at p in the low eight lanes, at q in the high eight.
inline __m512i a8_words(const void* p, const void* q) {
  return _mm512_inserti64x4(_mm512_set1_epi32(a8_word(p)), _mm256_set1_epi32(a8_word(q)), 1);
}

// Each cache line a q4 group of `bytes` starts in, kA8Ahead bytes ahead of it.
template <int64_t bytes>
inline void prefetch_group(const char* block) {
  for (int64_t line = 0; line < bytes; line += 64)
    _mm_prefetch(block + line + kA8Ahead, _MM_HINT_T0);
}

inline __m512i load512(const char* p) {
  return _mm512_loadu_si512(reinterpret_cast<const void*>(p));
}

template <int NR, int NP>
void a8_sums_i8(const A8Rows& x, int r0, const char* wp, int64_t quads, float* out) {
  __m512i acc[NR];
  for (int r = 0; r < NR; ++r) acc[r] = _mm512_setzero_si512();
  if constexpr (NP == 2) {
    // [quad q: W1's 32 bytes, W3's 32 bytes]: one vector a quad.
    for (int64_t q = 0; q < quads; ++q) {
      _mm_prefetch(wp + q * 64 + kA8Ahead, _MM_HINT_T0);
      const __m512i w = load512(wp + q * 64);
      for (int r = 0; r < NR; ++r) {
        acc[r] =
            _mm512_dpbusd_epi32(acc[r], w, _mm512_set1_epi32(a8_word(x.codes[r0 + r] + 4 * q)));
      }
    }
    const __m512 scale = _mm512_loadu_ps(reinterpret_cast<const float*>(wp + quads * 64));
    for (int r = 0; r < NR; ++r) {
      const __m512i sum = _mm512_sub_epi32(acc[r], _mm512_set1_epi32(128 * x.code_sum[r0 + r]));
      // Lanes 0-7: W1's columns, 8-15: W3's, as out's rows (r, 0) and (r, 1) lie.
      _mm512_storeu_ps(out + r * 2 * kA8Cols, _mm512_mul_ps(_mm512_cvtepi32_ps(sum), scale));
    }
  } else {
    static_assert(NP == 1);
    int64_t q = 0;
    for (; q + 2 <= quads; q += 2) {
      _mm_prefetch(wp + q * 32 + kA8Ahead, _MM_HINT_T0);
      const __m512i w = load512(wp + q * 32);
      for (int r = 0; r < NR; ++r) {
        const int8_t* xr = x.codes[r0 + r] + 4 * q;
        acc[r] = _mm512_dpbusd_epi32(acc[r], w, a8_words(xr, xr + 4));
      }
    }
    __m256i tail = _mm256_setzero_si256();
    const __m256 scale = _mm256_loadu_ps(reinterpret_cast<const float*>(wp + quads * 32));
    for (int r = 0; r < NR; ++r) {
      if (q < quads) {
        tail =
            _mm256_dpbusd_epi32(_mm256_setzero_si256(),
                                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + q * 32)),
                                _mm256_set1_epi32(a8_word(x.codes[r0 + r] + 4 * q)));
      }
      const __m256i halves =
          _mm256_add_epi32(_mm512_castsi512_si256(acc[r]), _mm512_extracti64x4_epi64(acc[r], 1));
      const __m256i sum = _mm256_sub_epi32(_mm256_add_epi32(halves, tail),
                                           _mm256_set1_epi32(128 * x.code_sum[r0 + r]));
      _mm256_storeu_ps(out + r * kA8Cols, _mm256_mul_ps(_mm256_cvtepi32_ps(sum), scale));
    }
  }
}

template <int NR, int NP>
void a8_sums_q4(const A8Rows& x, int r0, const char* wp, int64_t groups, float* out) {
  constexpr int64_t kGroupBytes = NP * (4 * 32 + 2 * kA8Cols);
  const __m512i nibble = _mm512_set1_epi8(15);
  const auto lo_of = [nibble](__m512i raw) { return _mm512_and_si512(raw, nibble); };
  const auto hi_of = [nibble](__m512i raw) {
    return _mm512_and_si512(_mm512_srli_epi16(raw, 4), nibble);
  };
  if constexpr (NP == 2) {
    // Vector v of W1 and of W3 side by side (a half each) takes one broadcast of x's word.
    __m512 acc[NR];
    for (int r = 0; r < NR; ++r) acc[r] = _mm512_setzero_ps();
    for (int64_t g = 0; g < groups; ++g) {
      const char* block = wp + g * kGroupBytes;
      prefetch_group<kGroupBytes>(block);
      __m512i s32[NR];
      for (int r = 0; r < NR; ++r) s32[r] = _mm512_setzero_si512();
      for (int v = 0; v < 4; ++v) {
        const __m512i raw = _mm512_inserti64x4(
            _mm512_castsi256_si512(
                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + v * 32))),
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 128 + v * 32)), 1);
        const __m512i lo = lo_of(raw), hi = hi_of(raw);
        for (int r = 0; r < NR; ++r) {
          const int8_t* xr = x.codes[r0 + r] + g * kQ4Rows + 8 * v;
          s32[r] = _mm512_dpbusd_epi32(s32[r], lo, _mm512_set1_epi32(a8_word(xr)));
          s32[r] = _mm512_dpbusd_epi32(s32[r], hi, _mm512_set1_epi32(a8_word(xr + 4)));
        }
      }
      const __m512 scale =
          _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 2 * 128)));
      for (int r = 0; r < NR; ++r) {
        const __m512i sum =
            _mm512_sub_epi32(s32[r], _mm512_set1_epi32(8 * x.group_sums[r0 + r][g]));
        acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, acc[r]);
      }
    }
    for (int r = 0; r < NR; ++r) _mm512_storeu_ps(out + r * 2 * kA8Cols, acc[r]);
  } else {
    static_assert(NP == 1);
    // Vectors 2u and 2u + 1 in one: x's words of each, a half each; the halves are added per
    // group, before its scale.
    __m256 acc[NR];
    for (int r = 0; r < NR; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t g = 0; g < groups; ++g) {
      const char* block = wp + g * kGroupBytes;
      prefetch_group<kGroupBytes>(block);
      __m512i s32[NR];
      for (int r = 0; r < NR; ++r) s32[r] = _mm512_setzero_si512();
      for (int u = 0; u < 2; ++u) {
        const __m512i raw = load512(block + u * 64);
        const __m512i lo = lo_of(raw), hi = hi_of(raw);
        for (int r = 0; r < NR; ++r) {
          const int8_t* xr = x.codes[r0 + r] + g * kQ4Rows + 16 * u;
          s32[r] = _mm512_dpbusd_epi32(s32[r], lo, a8_words(xr, xr + 8));
          s32[r] = _mm512_dpbusd_epi32(s32[r], hi, a8_words(xr + 4, xr + 12));
        }
      }
      const __m256 scale =
          _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 128)));
      for (int r = 0; r < NR; ++r) {
        const __m256i halves =
            _mm256_add_epi32(_mm512_castsi512_si256(s32[r]), _mm512_extracti64x4_epi64(s32[r], 1));
        const __m256i sum =
            _mm256_sub_epi32(halves, _mm256_set1_epi32(8 * x.group_sums[r0 + r][g]));
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), scale, acc[r]);
      }
    }
    for (int r = 0; r < NR; ++r) _mm256_storeu_ps(out + r * kA8Cols, acc[r]);
  }
}

#include "a8_body.hpp"

}  // namespace avx512_vnni

const A8Kernels& a8_vnni_kernels() {
  static const A8Kernels kKernels{"avx512_vnni", /*i8_unsigned=*/true, avx512_vnni::a8_gate_up,
                                  avx512_vnni::a8_down};
  return kKernels;
}

}  // namespace moe_bench::cpu
