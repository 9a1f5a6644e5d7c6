// AVX512-BF16 micro-kernels for bf16 weights: `vdpbf16ps` multiplies two bf16 pairs per lane and
// adds both products to an FP32 accumulator, so one instruction covers two rows of the reduction
// where the widening path needs two FMAs and a conversion. Same 16 lanes and 14-row blocks as the
// AVX-512 FP32 kernels; compiled with -mavx512f -mavx512bf16, only called when the CPU has both.
//
// Pair layouts (kpack = 2), everything else as in cpu_isa.hpp:
// - activations: 32-bit words xw[p * R + r] hold bf16 values of reduction rows 2p (low half) and
//   2p + 1 (high half) of row r; an odd reduction ends with a zero high half;
// - weight panels: wp[p * 4L + c * 2 + h] is the bf16 weight of reduction row 2p + h, column c
//   (the 2L columns as in the FP32 panel), zero for the padding row of an odd reduction;
// - hidden values are written in the same pair layout for the down projection.
#include <immintrin.h>

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

inline uint16_t bf16_bits_of(float rounded) {
  uint32_t bits = 0;
  __builtin_memcpy(&bits, &rounded, 4);
  return static_cast<uint16_t>(bits >> 16);
}

// Half h of the pair word holding hidden column `col` of row r.
inline uint16_t& hidden_at(float* hw, int64_t col, int r) {
  return reinterpret_cast<uint16_t*>(hw)[((col >> 1) * kRows + r) * 2 + (col & 1)];
}

template <int N>
void gate_up_rows(const float* xw, const void* wp, int64_t d, float* hw, int64_t col0, int64_t f,
                  Act act, const float* acc_in, float* acc_out) {
  constexpr int L = V::kLanes;
  __m512 a0[N], a1[N];
  start_sums<N>(acc_in, a0, a1);
  accumulate_pairs<N>(reinterpret_cast<const uint32_t*>(xw), static_cast<const uint16_t*>(wp),
                      (d + 1) / 2, a0, a1);
  if (acc_out != nullptr) return save_sums<N>(acc_out, a0, a1);
  alignas(64) float tmp[2 * L];
  for (int r = 0; r < N; ++r) {
    const int64_t cols = activate(a0[r], a1[r], act, tmp);
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
               const float* weights, float* y, int64_t ldy, int64_t col0, int64_t ncols) {
  __m512 a0[N], a1[N];
  start_sums<N>(nullptr, a0, a1);
  accumulate_pairs<N>(reinterpret_cast<const uint32_t*>(hw), static_cast<const uint16_t*>(wp),
                      (f + 1) / 2, a0, a1);
  for (int r = 0; r < N; ++r) {
    combine_row(a0[r], a1[r], weights[r], y + static_cast<int64_t>(tokens[r]) * ldy + col0, ncols);
  }
}

template <int N>
void gate_up_dispatch(const float* xw, const void* wp, int64_t d, int64_t n, float* hw,
                      int64_t col0, int64_t f, Act act, const float* acc_in, float* acc_out) {
  if constexpr (N > 0) {
    if (n == N) return gate_up_rows<N>(xw, wp, d, hw, col0, f, act, acc_in, acc_out);
    return gate_up_dispatch<N - 1>(xw, wp, d, n, hw, col0, f, act, acc_in, acc_out);
  }
}

template <int N>
void down_dispatch(const float* hw, const void* wp, int64_t f, int64_t n, const int32_t* tokens,
                   const float* weights, float* y, int64_t ldy, int64_t col0, int64_t ncols) {
  if constexpr (N > 0) {
    if (n == N) return down_rows<N>(hw, wp, f, tokens, weights, y, ldy, col0, ncols);
    return down_dispatch<N - 1>(hw, wp, f, n, tokens, weights, y, ldy, col0, ncols);
  }
}

// The driver only hands these bf16 storage (IsaKernels::storages says so).
void gate_up(const float* xw, const void* wp, int64_t d, int64_t n, float* hw, int64_t col0,
             int64_t f, Act act, const float* acc_in, float* acc_out, Storage, QuantArgs) {
  gate_up_dispatch<kRows>(xw, wp, d, n, hw, col0, f, act, acc_in, acc_out);
}

void down(const float* hw, const void* wp, int64_t f, int64_t n, const int32_t* tokens,
          const float* weights, float* y, int64_t ldy, int64_t col0, int64_t ncols, Storage,
          QuantArgs) {
  down_dispatch<kRows>(hw, wp, f, n, tokens, weights, y, ldy, col0, ncols);
}

}  // namespace avx512_bf16

const IsaKernels& avx512_bf16_kernels() {
  static const IsaKernels kKernels{"avx512-bf16",      avx512_bf16::V::kLanes,
                                   avx512_bf16::kRows, avx512_bf16::gate_up,
                                   avx512_bf16::down,  avx512_bf16::dot_rows,
                                   /*kpack=*/2,        /*bf16_only=*/true};
  return kKernels;
}

}  // namespace moe_bench::cpu
