// The micro-kernels, written once over a vector type `V` and a row count `kRows`; each
// instruction-set file includes this inside its own namespace after defining both, so every
// instruction set gets its own copies (no shared inline symbols across compile flags).
//
// V provides: T, kLanes, zero(), set1(float), load(const float*), store(float*, T),
// load_bf16(const uint16_t*), load_f16(const uint16_t*) (kLanes 16-bit values widened to FP32),
// fmadd(a, b, c) = a * b + c, add, sub, mul, div, min, max, exp(T), abs(T), copysign_from(T, T).

// A weight vector of kLanes values at element `index` of a panel stored as S.
template <Storage S>
inline typename V::T load_w(const void* base, int64_t index) {
  if constexpr (S == Storage::kF32) {
    return V::load(static_cast<const float*>(base) + index);
  } else if constexpr (S == Storage::kBF16) {
    return V::load_bf16(static_cast<const uint16_t*>(base) + index);
  } else {
    return V::load_f16(static_cast<const uint16_t*>(base) + index);
  }
}

template <Storage S>
inline const void* element(const void* base, int64_t index) {
  return static_cast<const char*>(base) + index * (S == Storage::kF32 ? 4 : 2);
}

#include "kernel_math.hpp"

// The register-blocked core both projections share: for each of `len` reduction rows k, the two
// weight vectors of the panel times src[k * kRows + r] (a k-major block of N rows) accumulate into
// a0[r] and a1[r]. Inlined so that the accumulators stay in registers.
template <int N, Storage S>
__attribute__((always_inline)) inline void accumulate(const float* src, const void* wp, int64_t len,
                                                      typename V::T* a0, typename V::T* a1) {
  using T = typename V::T;
  constexpr int L = V::kLanes;
  int64_t k = 0;
  if constexpr (N <= 2) {
    // Decode: with one or two rows, each accumulator is one chain of FMAs through k, and the FMA
    // latency (4 cycles) rather than memory bounds how fast the weights stream (2L floats per 4
    // cycles per core: 64 bytes with AVX2). A second set of accumulators for odd k halves it.
    T c0[N], c1[N];
    for (int r = 0; r < N; ++r) c0[r] = c1[r] = V::zero();
    for (; k + 1 < len; k += 2) {
      __builtin_prefetch(element<S>(wp, (k + kPrefetchAhead) * 2 * L));
      __builtin_prefetch(element<S>(wp, (k + kPrefetchAhead) * 2 * L + L));
      __builtin_prefetch(element<S>(wp, (k + 1 + kPrefetchAhead) * 2 * L));
      __builtin_prefetch(element<S>(wp, (k + 1 + kPrefetchAhead) * 2 * L + L));
      const T w0 = load_w<S>(wp, k * 2 * L), w1 = load_w<S>(wp, k * 2 * L + L);
      const T w2 = load_w<S>(wp, (k + 1) * 2 * L), w3 = load_w<S>(wp, (k + 1) * 2 * L + L);
      const float* sk = src + k * kRows;
      for (int r = 0; r < N; ++r) {
        const T b = V::set1(sk[r]), b1 = V::set1(sk[kRows + r]);
        a0[r] = V::fmadd(b, w0, a0[r]);
        a1[r] = V::fmadd(b, w1, a1[r]);
        c0[r] = V::fmadd(b1, w2, c0[r]);
        c1[r] = V::fmadd(b1, w3, c1[r]);
      }
    }
    for (int r = 0; r < N; ++r) {
      a0[r] = V::add(a0[r], c0[r]);
      a1[r] = V::add(a1[r], c1[r]);
    }
  }
  for (; k < len; ++k) {
    // Weights stream from memory at decode sizes: ask for them a few iterations ahead.
    __builtin_prefetch(element<S>(wp, (k + kPrefetchAhead) * 2 * L));
    __builtin_prefetch(element<S>(wp, (k + kPrefetchAhead) * 2 * L + L));
    const T w0 = load_w<S>(wp, k * 2 * L);
    const T w1 = load_w<S>(wp, k * 2 * L + L);
    const float* sk = src + k * kRows;
#pragma GCC unroll 16
    for (int r = 0; r < N; ++r) {
      const T b = V::set1(sk[r]);
      a0[r] = V::fmadd(b, w0, a0[r]);
      a1[r] = V::fmadd(b, w1, a1[r]);
    }
  }
}

template <int N, Storage S>
void gate_up_rows(const float* xp, const void* wp, int64_t d, float* hp, int64_t col0, int64_t f,
                  Act act, const float* acc_in, float* acc_out) {
  using T = typename V::T;
  constexpr int L = V::kLanes;
  T a0[N], a1[N];
  start_sums<N>(acc_in, a0, a1);
  accumulate<N, S>(xp, wp, d, a0, a1);
  if (acc_out != nullptr) return save_sums<N>(acc_out, a0, a1);
  alignas(64) float tmp[2 * L];
  for (int r = 0; r < N; ++r) {
    const int64_t cols = activate(a0[r], a1[r], act, tmp);
    const int64_t valid = f - col0 < cols ? f - col0 : cols;
    for (int64_t c = 0; c < valid; ++c) hp[(col0 + c) * kRows + r] = round_hidden<S>(tmp[c]);
  }
}

template <int N, Storage S>
void down_rows(const float* hp, const void* wp, int64_t f, const int32_t* tokens,
               const float* weights, float* y, int64_t ldy, int64_t col0, int64_t ncols) {
  typename V::T a0[N], a1[N];
  start_sums<N>(nullptr, a0, a1);
  accumulate<N, S>(hp, wp, f, a0, a1);
  for (int r = 0; r < N; ++r) {
    combine_row(a0[r], a1[r], weights[r], y + static_cast<int64_t>(tokens[r]) * ldy + col0, ncols);
  }
}

template <int N, Storage S>
void gate_up_dispatch(const float* xp, const void* wp, int64_t d, int64_t n, float* hp,
                      int64_t col0, int64_t f, Act act, const float* acc_in, float* acc_out) {
  if constexpr (N > 0) {
    if (n == N) return gate_up_rows<N, S>(xp, wp, d, hp, col0, f, act, acc_in, acc_out);
    return gate_up_dispatch<N - 1, S>(xp, wp, d, n, hp, col0, f, act, acc_in, acc_out);
  }
}

template <int N, Storage S>
void down_dispatch(const float* hp, const void* wp, int64_t f, int64_t n, const int32_t* tokens,
                   const float* weights, float* y, int64_t ldy, int64_t col0, int64_t ncols) {
  if constexpr (N > 0) {
    if (n == N) return down_rows<N, S>(hp, wp, f, tokens, weights, y, ldy, col0, ncols);
    return down_dispatch<N - 1, S>(hp, wp, f, n, tokens, weights, y, ldy, col0, ncols);
  }
}

void gate_up(const float* xp, const void* wp, int64_t d, int64_t n, float* hp, int64_t col0,
             int64_t f, Act act, const float* acc_in, float* acc_out, Storage storage) {
  switch (storage) {
    case Storage::kF32:
      return gate_up_dispatch<kRows, Storage::kF32>(xp, wp, d, n, hp, col0, f, act, acc_in,
                                                    acc_out);
    case Storage::kBF16:
      return gate_up_dispatch<kRows, Storage::kBF16>(xp, wp, d, n, hp, col0, f, act, acc_in,
                                                     acc_out);
    case Storage::kF16:
      return gate_up_dispatch<kRows, Storage::kF16>(xp, wp, d, n, hp, col0, f, act, acc_in,
                                                    acc_out);
  }
}

void down(const float* hp, const void* wp, int64_t f, int64_t n, const int32_t* tokens,
          const float* weights, float* y, int64_t ldy, int64_t col0, int64_t ncols,
          Storage storage) {
  switch (storage) {
    case Storage::kF32:
      return down_dispatch<kRows, Storage::kF32>(hp, wp, f, n, tokens, weights, y, ldy, col0,
                                                 ncols);
    case Storage::kBF16:
      return down_dispatch<kRows, Storage::kBF16>(hp, wp, f, n, tokens, weights, y, ldy, col0,
                                                  ncols);
    case Storage::kF16:
      return down_dispatch<kRows, Storage::kF16>(hp, wp, f, n, tokens, weights, y, ldy, col0,
                                                 ncols);
  }
}
