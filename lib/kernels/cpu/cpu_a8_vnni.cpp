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
#include <limits>

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

// Rows held as 15-bit integers (a16, A8Rows::low): code = 128 hi + lo, each half its own chain
// of vpdpbusd on the same weights, joined once a group of kQ4Rows rows, then converted with the
// group's power of two. The sums run over two halves of kA8Cols columns each, half 0 in lanes
// 0-7 and half 1 in lanes 8-15 of out[r * 16 + lane] (r < NR): the two projections of a gate/up
// panel, or two down panels (a16_down). kJoined: half 1 lies 32 bytes (int8) or 128 (q4) after
// half 0 in the same lines, one stream; otherwise two.
template <int NR>
inline void a16_join(const __m512i* hi, const __m512i* lo, const A8Rows& x, int r0, int64_t g,
                     __m512 weight_scale, __m512* acc) {
  for (int r = 0; r < NR; ++r) {
    const __m512i sum = _mm512_add_epi32(_mm512_slli_epi32(hi[r], 7), lo[r]);
    const __m512 scale = _mm512_mul_ps(weight_scale, _mm512_set1_ps(x.group_scales[r0 + r][g]));
    acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, acc[r]);
  }
}

inline __m512i halves512(const char* p0, const char* p1) {
  return _mm512_inserti64x4(
      _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p0))),
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p1)), 1);
}

// int8: half j's quad q at cj + q * stride (32 bytes, codes + 128), its kA8Cols f32 scales at sj.
template <int NR, bool kJoined>
void a16_i8(const A8Rows& x, int r0, const char* c0, const char* c1, int64_t stride, int64_t quads,
            const float* s0, const float* s1, float* out) {
  constexpr int64_t kGroupQuads = kQ4Rows / 4;
  __m512 acc[NR];
  for (int r = 0; r < NR; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t g = 0; g * kGroupQuads < quads; ++g) {
    __m512i hi[NR], lo[NR];
    for (int r = 0; r < NR; ++r) {
      hi[r] = _mm512_setzero_si512();
      lo[r] = _mm512_set1_epi32(-128 * x.group_sums[r0 + r][g]);  // the codes' + 128
    }
    const int64_t end = std::min(quads, (g + 1) * kGroupQuads);
    for (int64_t q = g * kGroupQuads; q < end; ++q) {
      _mm_prefetch(c0 + q * stride + kA8Ahead, _MM_HINT_T0);
      if constexpr (!kJoined) _mm_prefetch(c1 + q * stride + kA8Ahead, _MM_HINT_T0);
      const __m512i w =
          kJoined ? load512(c0 + q * stride) : halves512(c0 + q * stride, c1 + q * stride);
      for (int r = 0; r < NR; ++r) {
        hi[r] = _mm512_dpbusd_epi32(hi[r], w, _mm512_set1_epi32(a8_word(x.codes[r0 + r] + 4 * q)));
        lo[r] = _mm512_dpbusd_epi32(lo[r], w, _mm512_set1_epi32(a8_word(x.low[r0 + r] + 4 * q)));
      }
    }
    a16_join<NR>(hi, lo, x, r0, g, _mm512_set1_ps(1.0f), acc);
  }
  const __m512 scale = _mm512_castpd_ps(
      _mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(_mm256_loadu_ps(s0))),
                         _mm256_castps_pd(_mm256_loadu_ps(s1)), 1));
  for (int r = 0; r < NR; ++r) _mm512_storeu_ps(out + r * 16, _mm512_mul_ps(acc[r], scale));
}

// q4: half j's group g at cj + g * stride (four 32-byte vectors of codes + 8, a8_isa.hpp), its
// kA8Cols f16 scales sj bytes further.
template <int NR, bool kJoined>
void a16_q4(const A8Rows& x, int r0, const char* c0, const char* c1, int64_t stride, int64_t s0,
            int64_t s1, int64_t groups, float* out) {
  const __m512i nibble = _mm512_set1_epi8(15);
  __m512 acc[NR];
  for (int r = 0; r < NR; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    const char* b0 = c0 + g * stride;
    const char* b1 = c1 + g * stride;
    if constexpr (kJoined) {
      prefetch_group<2 * (4 * 32 + 2 * kA8Cols)>(b0);
    } else {
      prefetch_group<4 * 32 + 2 * kA8Cols>(b0);
      prefetch_group<4 * 32 + 2 * kA8Cols>(b1);
    }
    __m512i hi[NR], lo[NR];
    for (int r = 0; r < NR; ++r) {
      hi[r] = _mm512_setzero_si512();
      lo[r] = _mm512_set1_epi32(-8 * x.group_sums[r0 + r][g]);  // the codes' + 8
    }
    for (int v = 0; v < 4; ++v) {
      const __m512i raw = halves512(b0 + v * 32, b1 + v * 32);
      const __m512i wl = _mm512_and_si512(raw, nibble);
      const __m512i wh = _mm512_and_si512(_mm512_srli_epi16(raw, 4), nibble);
      for (int r = 0; r < NR; ++r) {
        const int64_t at = g * kQ4Rows + 8 * v;
        const int8_t* xh = x.codes[r0 + r] + at;
        const int8_t* xl = x.low[r0 + r] + at;
        hi[r] = _mm512_dpbusd_epi32(hi[r], wl, _mm512_set1_epi32(a8_word(xh)));
        lo[r] = _mm512_dpbusd_epi32(lo[r], wl, _mm512_set1_epi32(a8_word(xl)));
        hi[r] = _mm512_dpbusd_epi32(hi[r], wh, _mm512_set1_epi32(a8_word(xh + 4)));
        lo[r] = _mm512_dpbusd_epi32(lo[r], wh, _mm512_set1_epi32(a8_word(xl + 4)));
      }
    }
    const __m512 scale = _mm512_cvtph_ps(_mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b0 + s0))),
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(b1 + s1)), 1));
    a16_join<NR>(hi, lo, x, r0, g, scale, acc);
  }
  for (int r = 0; r < NR; ++r) _mm512_storeu_ps(out + r * 16, acc[r]);
}

// A GELU gate/up panel (one projection) takes the two-half kernels with itself as both halves,
// at twice the instructions: only the gated layers are tuned. Lanes 0-7 of each row.
template <int NR>
void a16_first_half(const float* both, float* out) {
  for (int r = 0; r < NR; ++r)
    for (int c = 0; c < kA8Cols; ++c) out[r * kA8Cols + c] = both[r * 16 + c];
}

// Rows [r, r + NR) of h on down panels p0 and p1 (adjacent, or p0 twice), reducing over f.
template <int NR>
void a16_down_pass(const A8Rows& h, int r, const char* p0, const char* p1, int64_t f, bool q4,
                   float* out) {
  float* o = out + r * 16;
  if (q4) {
    constexpr int64_t kGroupBytes = 4 * 32 + 2 * kA8Cols;
    a16_q4<NR, false>(h, r, p0, p1, kGroupBytes, 128, 128, f / kQ4Rows, o);
  } else {
    const int64_t quads = (f + 3) / 4;
    a16_i8<NR, false>(h, r, p0, p1, 32, quads, reinterpret_cast<const float*>(p0 + quads * 32),
                      reinterpret_cast<const float*>(p1 + quads * 32), o);
  }
}

void a16_down(const A8Rows& h, int n, const char* wp, int panels, int64_t f, bool q4,
              const int32_t* tokens, const float* weights, float* y, int64_t ldy, int64_t col0,
              int64_t cols_end) {
  const int64_t panel_bytes = a8_panel_bytes(q4, 1, f);
  alignas(64) float out[kA8MaxRows * 2 * kA8Cols];
  // Panel i beside panel i + half: two streams, each over adjacent panels, so that each reads on
  // (and prefetches) into its next panel. Two adjacent panels as the halves, each pair's
  // streams starting anew, read at 0.55-0.6x the rate from memory.
  const int half = (panels + 1) / 2;
  for (int i = 0; i < half; ++i) {
    const int64_t c0 = col0 + i * kA8Cols;
    if (c0 >= cols_end) break;
    const bool pair = i + half < panels;
    const char* p0 = wp + i * panel_bytes;
    const char* p1 = pair ? p0 + half * panel_bytes : p0;  // odd: the last read as both halves
    for_each_pass<kA8PassRows>(n,
                               [&]<int NR>(int r) { a16_down_pass<NR>(h, r, p0, p1, f, q4, out); });
    const int64_t c1 = col0 + (i + half) * kA8Cols;
    const int64_t n0 = std::min<int64_t>(kA8Cols, cols_end - c0);
    const int64_t n1 = pair ? std::clamp<int64_t>(cols_end - c1, 0, kA8Cols) : 0;
    for (int k = 0; k < n; ++k) {
      const float w = weights[k];
      float* yr = y + tokens[k] * ldy;
      for (int64_t c = 0; c < n0; ++c) yr[c0 + c] += w * out[k * 16 + c];
      for (int64_t c = 0; c < n1; ++c) yr[c1 + c] += w * out[k * 16 + kA8Cols + c];
    }
  }
}

template <int NR, int NP>
void a8_sums_i8(const A8Rows& x, int r0, const char* wp, int64_t quads, float* out) {
  if (x.low[r0] != nullptr) {
    if constexpr (NP == 2) {
      const auto* scales = reinterpret_cast<const float*>(wp + quads * 64);
      a16_i8<NR, true>(x, r0, wp, wp + 32, 64, quads, scales, scales + kA8Cols, out);
    } else {
      alignas(64) float both[NR * 16];
      const auto* scales = reinterpret_cast<const float*>(wp + quads * 32);
      a16_i8<NR, false>(x, r0, wp, wp, 32, quads, scales, scales, both);
      a16_first_half<NR>(both, out);
    }
    return;
  }
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
  if (x.low[r0] != nullptr) {
    if constexpr (NP == 2) {
      // W1's codes, W3's codes, W1's scales, W3's scales.
      a16_q4<NR, true>(x, r0, wp, wp + 128, kGroupBytes, 256, 144, groups, out);
    } else {
      alignas(64) float both[NR * 16];
      a16_q4<NR, false>(x, r0, wp, wp, kGroupBytes, 128, 128, groups, both);
      a16_first_half<NR>(both, out);
    }
    return;
  }
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

// hold_a16 on AVX-512: each whole group in two vectors, with the bits of hold_a16_generic (its
// rounding to bf16, power of two, rounding and split); a group with a value that is not finite,
// or whose largest magnitude is below 2^-100, and a last partial group go to it.
void hold_a16(const float* v, int64_t len, int8_t* hi, int8_t* lo, int32_t* sums, float* scales) {
  const int64_t whole = len / kQ4Rows;
  const __m512i half_ulp = _mm512_set1_epi32(0x7fff);
  const __m512i one = _mm512_set1_epi32(1);
  const __m512i top = _mm512_set1_epi32(static_cast<int32_t>(0xffff0000u));
  const __m512 magic = _mm512_set1_ps(1.5f * 8388608.0f);
  const __m512 lowest = _mm512_set1_ps(-16384.0f), highest = _mm512_set1_ps(16383.0f);
  const auto to_bf16 = [&](__m512 x) {
    const __m512i b = _mm512_castps_si512(x);
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(b, 16), one);
    return _mm512_castsi512_ps(
        _mm512_and_si512(_mm512_add_epi32(_mm512_add_epi32(b, half_ulp), odd), top));
  };
  for (int64_t g = 0; g < whole; ++g) {
    const float* p = v + g * kQ4Rows;
    const __m512 v0 = _mm512_loadu_ps(p), v1 = _mm512_loadu_ps(p + 16);
    const __mmask16 nan =
        _mm512_cmp_ps_mask(v0, v0, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(v1, v1, _CMP_UNORD_Q);
    const __m512 x0 = to_bf16(v0), x1 = to_bf16(v1);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(x0), _mm512_abs_ps(x1)));
    if (nan != 0 || !(amax >= 0x1p-100f && amax <= std::numeric_limits<float>::max())) {
      hold_a16_generic(p, kQ4Rows, hi + g * kQ4Rows, lo + g * kQ4Rows, sums + g, scales + g);
      continue;
    }
    uint32_t bits = 0;
    __builtin_memcpy(&bits, &amax, 4);
    const int e = static_cast<int>((bits >> 23) & 0xff) - 126;  // frexp's: amax = f 2^e
    const int up = 14 - e;
    const __m512 step = _mm512_castsi512_ps(_mm512_set1_epi32((up + 127) << 23));
    const auto codes = [&](__m512 x) {
      const __m512 r = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(x, step), magic), magic);
      return _mm512_cvttps_epi32(_mm512_min_ps(_mm512_max_ps(r, lowest), highest));
    };
    const __m512i c0 = codes(x0), c1 = codes(x1);
    const __m512i low7 = _mm512_set1_epi32(127);
    int8_t* h = hi + g * kQ4Rows;
    int8_t* l = lo + g * kQ4Rows;
    _mm_storeu_si128(reinterpret_cast<__m128i*>(h), _mm512_cvtepi32_epi8(_mm512_srai_epi32(c0, 7)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(h + 16),
                     _mm512_cvtepi32_epi8(_mm512_srai_epi32(c1, 7)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(l),
                     _mm512_cvtepi32_epi8(_mm512_and_si512(c0, low7)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(l + 16),
                     _mm512_cvtepi32_epi8(_mm512_and_si512(c1, low7)));
    sums[g] = _mm512_reduce_add_epi32(_mm512_add_epi32(c0, c1));
    const uint32_t scale_bits = static_cast<uint32_t>(127 - up) << 23;
    __builtin_memcpy(&scales[g], &scale_bits, 4);
  }
  if (whole * kQ4Rows < len) {
    const int64_t at = whole * kQ4Rows;
    hold_a16_generic(v + at, len - at, hi + at, lo + at, sums + whole, scales + whole);
  }
}

#include "a8_body.hpp"

}  // namespace avx512_vnni

const A8Kernels& a8_vnni_kernels() {
  static const A8Kernels kKernels{"avx512_vnni",           /*i8_unsigned=*/true,
                                  avx512_vnni::a8_gate_up, avx512_vnni::a8_down,
                                  avx512_vnni::a16_down,   avx512_vnni::hold_a16};
  return kKernels;
}

}  // namespace moe_bench::cpu
