// AVX512-BF16 micro-kernels for bf16 weights, and for q4 weights with bf16 activations:
// `vdpbf16ps` multiplies two bf16 pairs per lane and adds both products to an FP32 accumulator,
// so one instruction covers two rows of the reduction where the widening path needs two FMAs and
// a conversion. Same 16 lanes and 14-row blocks as the AVX-512 FP32 kernels; compiled with
// -mavx512f -mavx512bw -mavx512bf16, only called when the CPU has all three.
//
// Pair layouts (kpack = 2), everything else as in cpu_isa.hpp:
// - activations: 32-bit words xw[p * R + r] hold bf16 values of reduction rows 2p (low half) and
//   2p + 1 (high half) of row r; an odd reduction ends with a zero high half;
// - weight panels: wp[p * 4L + c * 2 + h] is the bf16 weight of reduction row 2p + h, column c
//   (the 2L columns as in the FP32 panel), zero for the padding row of an odd reduction;
// - hidden values are written in the same pair layout for the down projection;
// - q4 panels: units of four rows, widened to bf16 pairs in registers (widen_q4 below).
#include <immintrin.h>

#include <algorithm>

#include "cpu_isa.hpp"

namespace moe_bench::cpu {
namespace avx512_bf16 {

#include "avx512_vec.hpp"

constexpr int kRows = 14;
#include "kernel_math.hpp"

inline __m512bh as_bh(__m512i v) { return reinterpret_cast<__m512bh&>(v); }

// Accumulates `pairs` pairs of reduction rows: the two 64-byte weight vectors of a pair (columns
// [0, L) and [L, 2L), both rows interleaved) times each row's broadcast activation pair.
template <int N>
__attribute__((always_inline)) inline void accumulate_pairs(const uint32_t* src, const uint16_t* wp,
                                                            int64_t pairs, __m512* a0, __m512* a1) {
  constexpr int L = V::kLanes;
  int64_t p = 0;
  if constexpr (N <= 2) {
    // Decode: the two halves of the range as two streams, interleaved pair by pair, each into its
    // own accumulators (as the FP32 kernels do, kernel_body.hpp).
    __m512 c0[N], c1[N];
    for (int r = 0; r < N; ++r) c0[r] = c1[r] = _mm512_setzero_ps();
    const int64_t half = pairs / 2;
    for (int64_t i = 0; i < half; ++i) {
      const int64_t pa = i, pb = half + i;
      __builtin_prefetch(wp + (pa + kPrefetchAhead) * 4 * L);
      __builtin_prefetch(wp + (pa + kPrefetchAhead) * 4 * L + 2 * L);
      __builtin_prefetch(wp + (pb + kPrefetchAhead) * 4 * L);
      __builtin_prefetch(wp + (pb + kPrefetchAhead) * 4 * L + 2 * L);
      const __m512bh w0 = as_bh(_mm512_loadu_si512(wp + pa * 4 * L));
      const __m512bh w1 = as_bh(_mm512_loadu_si512(wp + pa * 4 * L + 2 * L));
      const __m512bh w2 = as_bh(_mm512_loadu_si512(wp + pb * 4 * L));
      const __m512bh w3 = as_bh(_mm512_loadu_si512(wp + pb * 4 * L + 2 * L));
      for (int r = 0; r < N; ++r) {
        const __m512bh ba = as_bh(_mm512_set1_epi32(static_cast<int>(src[pa * kRows + r])));
        const __m512bh bb = as_bh(_mm512_set1_epi32(static_cast<int>(src[pb * kRows + r])));
        a0[r] = _mm512_dpbf16_ps(a0[r], ba, w0);
        a1[r] = _mm512_dpbf16_ps(a1[r], ba, w1);
        c0[r] = _mm512_dpbf16_ps(c0[r], bb, w2);
        c1[r] = _mm512_dpbf16_ps(c1[r], bb, w3);
      }
    }
    for (int r = 0; r < N; ++r) {
      a0[r] = _mm512_add_ps(a0[r], c0[r]);
      a1[r] = _mm512_add_ps(a1[r], c1[r]);
    }
    p = 2 * half;
  }
  for (; p < pairs; ++p) {
    // 128 bytes of weights per pair, as per row of the FP32 panel: the same distance ahead.
    __builtin_prefetch(wp + (p + kPrefetchAhead) * 4 * L);
    __builtin_prefetch(wp + (p + kPrefetchAhead) * 4 * L + 2 * L);
    const __m512bh w0 = as_bh(_mm512_loadu_si512(wp + p * 4 * L));
    const __m512bh w1 = as_bh(_mm512_loadu_si512(wp + p * 4 * L + 2 * L));
    const uint32_t* sp = src + p * kRows;
#pragma GCC unroll 16
    for (int r = 0; r < N; ++r) {
      const __m512bh b = as_bh(_mm512_set1_epi32(static_cast<int>(sp[r])));
      a0[r] = _mm512_dpbf16_ps(a0[r], b, w0);
      a1[r] = _mm512_dpbf16_ps(a1[r], b, w1);
    }
  }
}

// q4 panels in pair form (cpu_pack.cpp, put_block): a 64-byte unit holds reduction rows k0 to
// k0 + 3 of the panel's 2L = 32 columns; 16-bit word 2c + o (c < 16, o < 2) holds in its four
// nibbles rows k0 + o (bits 0-3) and k0 + 2 + o (bits 8-11) of column c and the same rows of
// column c + 16 (bits 4-7 and 12-15), each as u = code + 8 (0..15). A nibble becomes the bf16 of
// 1 + u / 16, exact, by a shift that puts it at bits 3-6 and one vpternlogd that keeps those
// under 0x3f80, so that 32-bit lane c of the four vectors holds a pair of rows of column c:
//   w[0]: rows k0, k0 + 1 of columns [0, 16)      w[1]: the same rows of columns [16, 32)
//   w[2]: rows k0 + 2, k0 + 3 of columns [0, 16)  w[3]: the same rows of columns [16, 32).
// Eight instructions widen 128 weights (no shuffles), where the FP32 kernels take six for 32;
// the products with bf16 activations are exact, and with X the group's sum of activations,
// sum x (u - 8) = 16 (sum x (1 + u / 16) - 1.5 X): the group's scale, times 16, applies once per
// group. (Widening by vpunpck{l,h}bw with the byte 0x3f instead measured the same, side by
// side on an AMD Zen 4; this form leaves the shuffle pipes free.)
struct Q4Widen {
  __m512i bits = _mm512_set1_epi16(0x78);
  __m512i one = _mm512_set1_epi16(0x3f80);
};

__attribute__((always_inline)) inline void widen_q4(const Q4Widen& k, const uint8_t* unit,
                                                    __m512bh w[4]) {
  const __m512i raw = _mm512_loadu_si512(unit);
  // (a & b) | c.
  constexpr int kAndOr = 0xea;
  const auto keep = [&k](__m512i v) {
    return as_bh(_mm512_ternarylogic_epi32(v, k.bits, k.one, kAndOr));
  };
  w[0] = keep(_mm512_slli_epi16(raw, 3));
  w[1] = keep(_mm512_srli_epi16(raw, 1));
  w[2] = keep(_mm512_srli_epi16(raw, 5));
  w[3] = keep(_mm512_srli_epi16(raw, 9));
}

// Bytes ahead of the reads that q4 units are prefetched (as the FP32 kernels' q4 decode loop).
constexpr int64_t kQ4Ahead = 4096;

// Accumulates `groups` groups of kQ4Rows reduction rows of a q4 pair panel for N rows of src
// (pair words, src[p * kRows + r]). `scales`: 2L f16 per group; `minus8x`: -8 X per group and row,
// [g * kRows + r] (QuantArgs::group_sums). vdpbf16ps has a latency of several cycles: the two
// pairs of a unit go to separate chains, and at one row alternating units to two more sets.
// (Reading the two halves of a call's range side by side, as two streams, was no faster at one
// row: AMD Zen 4, workloads A and B.)
template <int N>
__attribute__((always_inline)) inline void accumulate_q4(const uint32_t* src, const uint8_t* wp,
                                                         int64_t groups, const uint16_t* scales,
                                                         const float* minus8x, __m512* a0,
                                                         __m512* a1) {
  constexpr int L = V::kLanes;
  constexpr int kSets = N == 1 ? 4 : 2;
  constexpr int64_t kUnits = kQ4Rows / 4;
  const Q4Widen k;
  const __m512 sixteen = _mm512_set1_ps(16.0f);
  for (int64_t g = 0; g < groups; ++g) {
    __m512 c0[kSets][N], c1[kSets][N];
    for (int j = 0; j < kSets; ++j) {
      for (int r = 0; r < N; ++r) c0[j][r] = c1[j][r] = _mm512_setzero_ps();
    }
    const uint8_t* block = wp + g * kUnits * 64;
    const uint32_t* sg = src + g * (kQ4Rows / 2) * kRows;
#pragma GCC unroll 8
    for (int64_t u = 0; u < kUnits; ++u) {
      _mm_prefetch(reinterpret_cast<const char*>(block + u * 64 + kQ4Ahead), _MM_HINT_T0);
      __m512bh w[4];
      widen_q4(k, block + u * 64, w);
      const uint32_t* sp = sg + 2 * u * kRows;
      const int j = static_cast<int>(u % (kSets / 2)) * 2;
#pragma GCC unroll 16
      for (int r = 0; r < N; ++r) {
        const __m512bh b0 = as_bh(_mm512_set1_epi32(static_cast<int>(sp[r])));
        const __m512bh b1 = as_bh(_mm512_set1_epi32(static_cast<int>(sp[kRows + r])));
        c0[j][r] = _mm512_dpbf16_ps(c0[j][r], b0, w[0]);
        c1[j][r] = _mm512_dpbf16_ps(c1[j][r], b0, w[1]);
        c0[j + 1][r] = _mm512_dpbf16_ps(c0[j + 1][r], b1, w[2]);
        c1[j + 1][r] = _mm512_dpbf16_ps(c1[j + 1][r], b1, w[3]);
      }
    }
    const uint16_t* sc = scales + g * 2 * L;
    const __m512 s0 = _mm512_mul_ps(
        sixteen, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sc))));
    const __m512 s1 = _mm512_mul_ps(
        sixteen, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sc + L))));
    for (int r = 0; r < N; ++r) {
      // -1.5 X = 0.1875 (-8 X).
      const __m512 off = _mm512_set1_ps(0.1875f * minus8x[g * kRows + r]);
      __m512 g0 = off, g1 = off;
      for (int j = 0; j < kSets; ++j) {
        g0 = _mm512_add_ps(g0, c0[j][r]);
        g1 = _mm512_add_ps(g1, c1[j][r]);
      }
      a0[r] = _mm512_fmadd_ps(s0, g0, a0[r]);
      a1[r] = _mm512_fmadd_ps(s1, g1, a1[r]);
    }
  }
}

// Rows per pass over a q4 panel: the pass's group sums, its totals and the four widened vectors
// stay in registers.
constexpr int kQ4PassRows = 4;

inline uint16_t bf16_bits_of(float rounded) {
  uint32_t bits = 0;
  __builtin_memcpy(&bits, &rounded, 4);
  return static_cast<uint16_t>(bits >> 16);
}

// Half h of the pair word holding hidden column `col` of row r.
inline uint16_t& hidden_at(float* hw, int64_t col, int r) {
  return reinterpret_cast<uint16_t*>(hw)[((col >> 1) * kRows + r) * 2 + (col & 1)];
}

// The sums of rows [r0, r0 + N) of the pair words at words over a reduction of len rows: bf16
// pair panels (q4 null), or q4 pair panels with their scales and group sums.
template <int N>
inline void accumulate_rows(const float* words, const void* wp, int64_t len, const QuantArgs* q4,
                            int r0, __m512* a0, __m512* a1) {
  const auto* src = reinterpret_cast<const uint32_t*>(words) + r0;
  if (q4 != nullptr) {
    accumulate_q4<N>(src, static_cast<const uint8_t*>(wp), len / kQ4Rows,
                     static_cast<const uint16_t*>(q4->scales), q4->group_sums + r0, a0, a1);
  } else {
    accumulate_pairs<N>(src, static_cast<const uint16_t*>(wp), (len + 1) / 2, a0, a1);
  }
}

// Rows [r0, r0 + N) of a row block: bf16 panels (q4 null), or q4 pair panels with their scales
// and group sums (the pointers in *q4 are at the call's first group; the sums' rows from 0).
template <int N>
void gate_up_rows(const float* xw, const void* wp, int64_t d, float* hw, int64_t col0, int64_t f,
                  Act act, const float* acc_in, float* acc_out, const QuantArgs* q4, int r0) {
  constexpr int L = V::kLanes;
  __m512 a0[N], a1[N];
  start_sums<N>(acc_in == nullptr ? nullptr : acc_in + r0 * 2 * L, a0, a1);
  accumulate_rows<N>(xw, wp, d, q4, r0, a0, a1);
  if (acc_out != nullptr) return save_sums<N>(acc_out + r0 * 2 * L, a0, a1);
  alignas(64) float tmp[2 * L];
  for (int i = 0; i < N; ++i) {
    const int r = r0 + i;
    const int64_t cols = activate(a0[i], a1[i], act, tmp);
    const int64_t valid = f - col0 < cols ? f - col0 : cols;
    for (int64_t c = 0; c < valid; ++c) {
      hidden_at(hw, col0 + c, r) = bf16_bits_of(round_hidden<Storage::kBF16>(tmp[c]));
    }
    // The panel that ends an odd width also writes the zero that pads its last pair.
    if (col0 + valid == f && (f & 1) != 0) hidden_at(hw, f, r) = 0;
  }
}

template <int N>
void down_rows(const float* hw, const void* wp, int64_t f, const int32_t* tokens,
               const float* weights, float* y, int64_t ldy, int64_t col0, int64_t ncols,
               const QuantArgs* q4, int r0) {
  __m512 a0[N], a1[N];
  start_sums<N>(nullptr, a0, a1);
  accumulate_rows<N>(hw, wp, f, q4, r0, a0, a1);
  for (int i = 0; i < N; ++i) {
    const int r = r0 + i;
    combine_row(a0[i], a1[i], weights[r], y + static_cast<int64_t>(tokens[r]) * ldy + col0, ncols);
  }
}

template <int N>
void gate_up_dispatch(const float* xw, const void* wp, int64_t d, int64_t n, float* hw,
                      int64_t col0, int64_t f, Act act, const float* acc_in, float* acc_out,
                      const QuantArgs* q4, int r0) {
  if constexpr (N > 0) {
    if (n == N) return gate_up_rows<N>(xw, wp, d, hw, col0, f, act, acc_in, acc_out, q4, r0);
    return gate_up_dispatch<N - 1>(xw, wp, d, n, hw, col0, f, act, acc_in, acc_out, q4, r0);
  }
}

template <int N>
void down_dispatch(const float* hw, const void* wp, int64_t f, int64_t n, const int32_t* tokens,
                   const float* weights, float* y, int64_t ldy, int64_t col0, int64_t ncols,
                   const QuantArgs* q4, int r0) {
  if constexpr (N > 0) {
    if (n == N) return down_rows<N>(hw, wp, f, tokens, weights, y, ldy, col0, ncols, q4, r0);
    return down_dispatch<N - 1>(hw, wp, f, n, tokens, weights, y, ldy, col0, ncols, q4, r0);
  }
}

// The driver hands these bf16 storage, or q4 in pair form with bf16 activations
// (IsaKernels::q4_pairs); q4 takes a block's rows kQ4PassRows at a time.
void gate_up(const float* xw, const void* wp, int64_t d, int64_t n, float* hw, int64_t col0,
             int64_t f, Act act, const float* acc_in, float* acc_out, Storage storage,
             QuantArgs quant) {
  if (storage != Storage::kQ4) {
    return gate_up_dispatch<kRows>(xw, wp, d, n, hw, col0, f, act, acc_in, acc_out, nullptr, 0);
  }
  for (int r0 = 0; r0 < n; r0 += kQ4PassRows) {
    gate_up_dispatch<kQ4PassRows>(xw, wp, d, std::min<int64_t>(kQ4PassRows, n - r0), hw, col0, f,
                                  act, acc_in, acc_out, &quant, r0);
  }
}

void down(const float* hw, const void* wp, int64_t f, int64_t n, const int32_t* tokens,
          const float* weights, float* y, int64_t ldy, int64_t col0, int64_t ncols, Storage storage,
          QuantArgs quant) {
  if (storage != Storage::kQ4) {
    return down_dispatch<kRows>(hw, wp, f, n, tokens, weights, y, ldy, col0, ncols, nullptr, 0);
  }
  for (int r0 = 0; r0 < n; r0 += kQ4PassRows) {
    down_dispatch<kQ4PassRows>(hw, wp, f, std::min<int64_t>(kQ4PassRows, n - r0), tokens, weights,
                               y, ldy, col0, ncols, &quant, r0);
  }
}

}  // namespace avx512_bf16

const IsaKernels& avx512_bf16_kernels() {
  static const IsaKernels kKernels{"avx512-bf16",
                                   avx512_bf16::V::kLanes,
                                   avx512_bf16::kRows,
                                   avx512_bf16::gate_up,
                                   avx512_bf16::down,
                                   avx512_bf16::dot_rows,
                                   /*kpack=*/2,
                                   /*bf16_only=*/true,
                                   /*kblock=*/1,
                                   /*gate_up_panels=*/nullptr,
                                   /*down_panels=*/nullptr,
                                   /*q4_pairs=*/true};
  return kKernels;
}

}  // namespace moe_bench::cpu
