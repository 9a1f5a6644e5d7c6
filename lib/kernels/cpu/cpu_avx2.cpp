// AVX2 + FMA micro-kernels: 8 lanes, 6-row blocks (12 accumulators of 16 registers). Compiled
// with -mavx2 -mfma -mf16c; only called when the CPU has all three.
#include <immintrin.h>

#include <algorithm>

#include "a8_isa.hpp"
#include "cpu_isa.hpp"

namespace moe_bench::cpu {
namespace avx2 {

#include "avx2_vec.hpp"

constexpr int kRows = 6;
#include "kernel_body.hpp"

// The a8 integer loops (a8_body.hpp). vpmaddubsw multiplies unsigned bytes by signed ones and adds
// pairs into int16, vpmaddwd by ones adds those pairs into int32: four products per int32 lane.
// int8 weights: |x| times the weight with x's sign (vpsignb); a pair is at most 2 x 127 x 127,
// below int16's limit. q4: the nibbles (0..15) times x, and 8 x the group's sum of x taken off;
// a group's 16 products per int16 lane are at most 16 x 15 x 127 = 30480, so they add in int16
// before vpmaddwd.
// Bytes ahead of the reads the weights are prefetched (into L1: the stream of one thread).
constexpr int64_t kA8Ahead = 4096;
// Rows a pass over a panel takes: 16 ymm registers hold the sums of two rows of both projections.
constexpr int kA8PassRows = 2;

inline __m256i a8_word(const void* p) {
  int32_t word;
  __builtin_memcpy(&word, p, 4);
  return _mm256_set1_epi32(word);
}

// One stream a panel, read in order. Tried and left out on an AMD Zen 3: int8 as four stretches
// of the panel read side by side (their integer sums add exactly in any order) was faster in L2
// (42 against 33 GB/s at one row) but took 1.15-1.18x the time from memory (workloads A and B at
// one token, side by side); q4 as two spilled its sums (22 against 31 GB/s in L2).
template <int NR, int NP>
void a8_sums_i8(const A8Rows& x, int r0, const char* wp, int64_t quads, float* out) {
  __m256i acc[NR][NP];
  for (int r = 0; r < NR; ++r)
    for (int j = 0; j < NP; ++j) acc[r][j] = _mm256_setzero_si256();
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t q = 0; q < quads; ++q) {
    if (NP == 2 || q % 2 == 0) _mm_prefetch(wp + q * NP * 32 + kA8Ahead, _MM_HINT_T0);
    __m256i w[NP];
    for (int j = 0; j < NP; ++j) {
      w[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + (q * NP + j) * 32));
    }
    for (int r = 0; r < NR; ++r) {
      const __m256i xs = a8_word(x.codes[r0 + r] + 4 * q);
      const __m256i xa = a8_word(x.magnitudes[r0 + r] + 4 * q);
      for (int j = 0; j < NP; ++j) {
        const __m256i pairs = _mm256_maddubs_epi16(xa, _mm256_sign_epi8(w[j], xs));
        acc[r][j] = _mm256_add_epi32(acc[r][j], _mm256_madd_epi16(pairs, ones));
      }
    }
  }
  for (int j = 0; j < NP; ++j) {
    const __m256 scale =
        _mm256_loadu_ps(reinterpret_cast<const float*>(wp + quads * NP * 32 + j * 32));
    for (int r = 0; r < NR; ++r) {
      _mm256_storeu_ps(out + (r * NP + j) * kA8Cols,
                       _mm256_mul_ps(_mm256_cvtepi32_ps(acc[r][j]), scale));
    }
  }
}

template <int NR, int NP>
void a8_sums_q4(const A8Rows& x, int r0, const char* wp, int64_t groups, float* out) {
  __m256 acc[NR][NP];
  for (int r = 0; r < NR; ++r)
    for (int j = 0; j < NP; ++j) acc[r][j] = _mm256_setzero_ps();
  const __m256i ones = _mm256_set1_epi16(1), nibble = _mm256_set1_epi8(15);
  constexpr int64_t kGroupBytes = NP * (4 * 32 + 2 * kA8Cols);
  for (int64_t g = 0; g < groups; ++g) {
    const char* block = wp + g * kGroupBytes;
    __m256i s16[NR][NP];
    for (int r = 0; r < NR; ++r)
      for (int j = 0; j < NP; ++j) s16[r][j] = _mm256_setzero_si256();
    for (int v = 0; v < 4; ++v) {
      __m256i lo_x[NR], hi_x[NR];
      for (int r = 0; r < NR; ++r) {
        const int8_t* xr = x.codes[r0 + r] + g * kQ4Rows + 8 * v;
        lo_x[r] = a8_word(xr);
        hi_x[r] = a8_word(xr + 4);
      }
      for (int j = 0; j < NP; ++j) {
        if (v % 2 == 0) _mm_prefetch(block + j * 128 + v * 32 + kA8Ahead, _MM_HINT_T0);
        const __m256i raw =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + j * 128 + v * 32));
        const __m256i lo = _mm256_and_si256(raw, nibble);
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), nibble);
        for (int r = 0; r < NR; ++r) {
          s16[r][j] =
              _mm256_add_epi16(s16[r][j], _mm256_add_epi16(_mm256_maddubs_epi16(lo, lo_x[r]),
                                                           _mm256_maddubs_epi16(hi, hi_x[r])));
        }
      }
    }
    for (int j = 0; j < NP; ++j) {
      const __m256 scale = _mm256_cvtph_ps(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + NP * 128 + j * 2 * kA8Cols)));
      for (int r = 0; r < NR; ++r) {
        const __m256i sum = _mm256_sub_epi32(_mm256_madd_epi16(s16[r][j], ones),
                                             _mm256_set1_epi32(8 * x.group_sums[r0 + r][g]));
        acc[r][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), scale, acc[r][j]);
      }
    }
  }
  for (int r = 0; r < NR; ++r)
    for (int j = 0; j < NP; ++j) _mm256_storeu_ps(out + (r * NP + j) * kA8Cols, acc[r][j]);
}

#include "a8_body.hpp"

}  // namespace avx2

const A8Kernels& a8_avx2_kernels() {
  static const A8Kernels kKernels{
      "avx2", /*i8_unsigned=*/false, avx2::a8_gate_up, avx2::a8_down, nullptr, nullptr};
  return kKernels;
}

const IsaKernels& avx2_kernels() {
  static const IsaKernels kKernels{"avx2",        avx2::V::kLanes,      avx2::kRows,
                                   avx2::gate_up, avx2::down,           avx2::dot_rows,
                                   /*kpack=*/1,   /*bf16_only=*/false,
                                   /*kblock=*/1,  avx2::gate_up_panels, avx2::down_panels};
  return kKernels;
}

}  // namespace moe_bench::cpu
