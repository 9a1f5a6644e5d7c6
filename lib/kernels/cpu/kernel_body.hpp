// The micro-kernels, written once over a vector type `V` and a row count `kRows`; each
// instruction-set file includes this inside its own namespace after defining both, so every
// instruction set gets its own copies (no shared inline symbols across compile flags).
//
// V provides: T, kLanes, zero(), set1(float), load(const float*), store(float*, T),
// load_bf16(const uint16_t*), load_f16(const uint16_t*) (kLanes 16-bit values widened to FP32),
// load_i8(const int8_t*) (kLanes signed bytes as FP32), load_u4(const uint8_t*, T& lo, T& hi)
// (kLanes bytes: their low nibbles and their high nibbles, 0..15, as FP32),
// fmadd(a, b, c) = a * b + c, add, sub, mul, div, min, max, exp(T), abs(T), copysign_from(T, T).

// A weight vector of kLanes values at element `index` of a panel stored as S (not kQ4).
template <Storage S>
inline typename V::T load_w(const void* base, int64_t index) {
  if constexpr (S == Storage::kF32) {
    return V::load(static_cast<const float*>(base) + index);
  } else if constexpr (S == Storage::kBF16) {
    return V::load_bf16(static_cast<const uint16_t*>(base) + index);
  } else if constexpr (S == Storage::kI8) {
    return V::load_i8(static_cast<const int8_t*>(base) + index);
  } else {
    return V::load_f16(static_cast<const uint16_t*>(base) + index);
  }
}

// The address of element `index` of a panel stored as S (q4: two elements a byte).
template <Storage S>
inline const void* element(const void* base, int64_t index) {
  constexpr int64_t kBytesPerTwo = storage_bytes(S, 2);
  return static_cast<const char*>(base) + index * kBytesPerTwo / 2;
}

#include "kernel_math.hpp"

// Bytes of one reduction row of a panel (2L weights) stored as S.
template <Storage S>
constexpr int64_t row_bytes() {
  return storage_bytes(S, 2 * V::kLanes);
}

// Panel rows between a prefetch and its use: the same distance in bytes as f32 panels for the
// quantized ones (an int8 row is a quarter as long, a q4 row an eighth).
template <Storage S>
constexpr int64_t prefetch_rows() {
  return S == Storage::kI8   ? 4 * kPrefetchAhead
         : S == Storage::kQ4 ? 8 * kPrefetchAhead
                             : kPrefetchAhead;
}

// The two weight vectors (columns [0, L) and [L, 2L)) of reduction row k of a panel. q4 rows
// come out as codes + 8 (0..15); the caller applies the group's scale.
template <Storage S>
__attribute__((always_inline)) inline void load_row(const void* wp, int64_t k, typename V::T& w0,
                                                    typename V::T& w1) {
  constexpr int L = V::kLanes;
  if constexpr (S == Storage::kQ4) {
    V::load_u4(static_cast<const uint8_t*>(wp) + k * L, w0, w1);
  } else {
    w0 = load_w<S>(wp, k * 2 * L);
    w1 = load_w<S>(wp, k * 2 * L + L);
  }
}

template <Storage S>
__attribute__((always_inline)) inline void prefetch_row(const void* wp, int64_t k) {
  constexpr int L = V::kLanes;
  const int64_t ahead = k + prefetch_rows<S>();
  __builtin_prefetch(element<S>(wp, ahead * 2 * L));
  // A row of 2L elements of 2 or 4 bytes can span two 64-byte lines (128 bytes in f32 with 16
  // lanes): both halves. A row of int8 or q4 (at most 32 bytes) lies in one.
  if constexpr (S != Storage::kQ4 && S != Storage::kI8) {
    __builtin_prefetch(element<S>(wp, ahead * 2 * L + L));
  }
}

// Panel rows that share one 64-byte line (at least 1).
template <Storage S>
constexpr int64_t rows_per_line() {
  return row_bytes<S>() >= 64 ? 1 : 64 / row_bytes<S>();
}

// Decode's prefetch distance in rows: as far ahead as prefetch_rows() for f32 and 16-bit panels;
// int8 and q4 rows take longer to convert than to arrive, so their prefetches go further: 8 KiB
// and 4 KiB of a panel ahead. Measured on an AMD Zen 3 at workloads A and B, one token, each
// against the kernel before this loop: int8 0.82-0.84x the time at 8 KiB and 0.87-0.88x at 4;
// q4 0.82-0.84x at 4 KiB and 0.90-0.94x at 8 (2 KiB, as before, was slower than either).
template <Storage S>
constexpr int64_t decode_ahead_rows() {
  return S == Storage::kI8   ? 8192 / row_bytes<S>()
         : S == Storage::kQ4 ? 4096 / row_bytes<S>()
                             : prefetch_rows<S>();
}

// The prefetch for the rows_per_line<S>() rows that start at row k (a line-aligned step),
// decode_ahead_rows<S>() rows ahead. Rows shorter than a line get one prefetch per line, where
// prefetch_row() asks once per row (four times a line for int8 rows with AVX2, eight for q4).
// Rows of a line or more are asked for as prefetch_row() asks: f32 rows of one line (AVX2) twice,
// and with a single request decode at workload A, one token, took 1.04-1.07x the time on an AMD
// Zen 3 (side by side, three runs; why is not understood).
template <Storage S>
__attribute__((always_inline)) inline void prefetch_step(const void* wp, int64_t k) {
  if constexpr (rows_per_line<S>() == 1) {
    static_assert(decode_ahead_rows<S>() == prefetch_rows<S>(), "one distance for whole lines");
    prefetch_row<S>(wp, k);
  } else {
    __builtin_prefetch(element<S>(wp, (k + decode_ahead_rows<S>()) * 2 * V::kLanes));
  }
}

// Decode (up to kDecodeRows rows): each accumulator is one chain of FMAs through k, and with one
// or two rows the FMA latency (4 cycles) rather than memory bounds how fast the weights stream
// (2L floats per 4 cycles per core: 64 bytes with AVX2). There the range is split into two parts
// read interleaved a line at a time, each into its own accumulators. (Four parts at one row,
// measured side by side on an AMD Zen 3: 1.07-1.10x the time in bf16.) q4 takes the group's scale
// out of the sum: with codes u (code + 8) and the group's sum of activations X, sum(x * (u - 8) *
// s) = s * (sum(x * u) - 8 X), so a row costs two FMAs instead of four. The caller takes the sums X
// once per row block (QuantArgs::group_sums), not once per panel: within the kernel they took a
// fifth of the time of q4 at one row in cache (AMD Zen 3).
template <int N, Storage S>
__attribute__((always_inline)) inline void accumulate_decode(const float* src, const void* wp,
                                                             int64_t len, QuantArgs q,
                                                             typename V::T* a0, typename V::T* a1) {
  using T = typename V::T;
  constexpr int L = V::kLanes;
  constexpr bool kQ4 = S == Storage::kQ4;
  // Two streams at one or two rows; at three or four the rows' own chains are enough.
  constexpr int kStreams = N <= 2 ? 2 : 1;
  constexpr int64_t U = rows_per_line<S>();
  // At one row, the rows of a line alternate between two sets of accumulators, which doubles the
  // chains again without another stream from memory.
  constexpr int kSets = N == 1 && U >= 2 ? 2 : 1;
  constexpr int kChains = kStreams * kSets;
  T c0[kChains][N], c1[kChains][N];
  auto clear = [&] __attribute__((always_inline)) {
    for (int j = 0; j < kChains; ++j) {
      for (int r = 0; r < N; ++r) c0[j][r] = c1[j][r] = V::zero();
    }
  };
  // q4: the group's sum of activations of each row, times -8 (QuantArgs::group_sums).
  float minus8x[N] = {};
  // Row k into chain j.
  auto row = [&](int j, int64_t k) __attribute__((always_inline)) {
    T w0, w1;
    load_row<S>(wp, k, w0, w1);
    const float* sk = src + k * kRows;
    for (int r = 0; r < N; ++r) {
      const T b = V::set1(sk[r]);
      c0[j][r] = V::fmadd(b, w0, c0[j][r]);
      c1[j][r] = V::fmadd(b, w1, c1[j][r]);
    }
  };
  // Into a0/a1: the streams' sums, for q4 scaled as above.
  auto fold = [&](int64_t g0) __attribute__((always_inline)) {
    T s0 = V::set1(1.0f), s1 = s0;
    if constexpr (kQ4) {
      const uint16_t* sc = static_cast<const uint16_t*>(q.scales) + g0 / kQ4Rows * 2 * L;
      s0 = V::load_f16(sc);
      s1 = V::load_f16(sc + L);
    }
    for (int r = 0; r < N; ++r) {
      if constexpr (kQ4) {
        T g0s = V::set1(minus8x[r]), g1s = g0s;
        for (int j = 0; j < kChains; ++j) {
          g0s = V::add(g0s, c0[j][r]);
          g1s = V::add(g1s, c1[j][r]);
        }
        a0[r] = V::fmadd(s0, g0s, a0[r]);
        a1[r] = V::fmadd(s1, g1s, a1[r]);
      } else {
        for (int j = 0; j < kChains; ++j) {
          a0[r] = V::add(a0[r], c0[j][r]);
          a1[r] = V::add(a1[r], c1[j][r]);
        }
      }
    }
  };
  const int64_t group = kQ4 ? kQ4Rows : len;
  for (int64_t g0 = 0; g0 < len; g0 += group) {
    const int64_t g1 = g0 + group < len ? g0 + group : len;
    clear();
    if constexpr (kQ4) {
      for (int r = 0; r < N; ++r) minus8x[r] = q.group_sums[g0 / kQ4Rows * kRows + r];
    }
    const int64_t part = (g1 - g0) / (kStreams * U) * U;
    // The head of every stream but the first, which the previous rows' prefetches do not reach
    // (the first continues where the previous call's stream ended).
    if (!kQ4 && part > decode_ahead_rows<S>()) {
      for (int j = 1; j < kStreams; ++j) {
        const auto* head = static_cast<const char*>(element<S>(wp, (g0 + j * part) * 2 * L));
        for (int64_t b = 0; b < decode_ahead_rows<S>() * row_bytes<S>(); b += 64) {
          __builtin_prefetch(head + b);
        }
      }
    }
    for (int64_t i = 0; i < part; i += U) {
#pragma GCC unroll 4
      for (int j = 0; j < kStreams; ++j) {
        const int64_t k0 = g0 + j * part + i;
        prefetch_step<S>(wp, k0);
#pragma GCC unroll 16
        for (int64_t u = 0; u < U; ++u) row(j * kSets + static_cast<int>(u % kSets), k0 + u);
      }
    }
    for (int64_t k = g0 + kStreams * part; k < g1; ++k) {
      prefetch_row<S>(wp, k);
      row(0, k);
    }
    fold(g0);
  }
}

// The register-blocked core both projections share: for each of `len` reduction rows k, the two
// weight vectors of the panel times src[k * kRows + r] (a k-major block of N rows) accumulate into
// a0[r] and a1[r]. Inlined so that the accumulators stay in registers. q4 panels take their
// group scales from `scales` (QuantArgs) and are dequantized in registers, w = (u - 8) * s as
// fmadd(u, s, -8 s), exact in FP32; `len` is then a whole number of groups.
template <int N, Storage S>
__attribute__((always_inline)) inline void accumulate(const float* src, const void* wp, int64_t len,
                                                      QuantArgs q, typename V::T* a0,
                                                      typename V::T* a1) {
  using T = typename V::T;
  constexpr int L = V::kLanes;
  constexpr bool kQ4 = S == Storage::kQ4;
  if constexpr (N <= (kQ4 ? kQ4DecodeRows : kDecodeRows)) {
    return accumulate_decode<N, S>(src, wp, len, q, a0, a1);
  } else {
    // Scales: q4 per group of kQ4Rows; otherwise none (one group over the whole reduction).
    const int64_t group = kQ4 ? kQ4Rows : len;
    for (int64_t g0 = 0; g0 < len; g0 += group) {
      const int64_t g1 = g0 + group < len ? g0 + group : len;
      T s0 = V::zero(), s1 = V::zero(), m0 = V::zero(), m1 = V::zero();
      if constexpr (kQ4) {
        const uint16_t* sc = static_cast<const uint16_t*>(q.scales) + g0 / kQ4Rows * 2 * L;
        s0 = V::load_f16(sc);
        s1 = V::load_f16(sc + L);
        m0 = V::mul(s0, V::set1(-8.0f));
        m1 = V::mul(s1, V::set1(-8.0f));
      }
      for (int64_t k = g0; k < g1; ++k) {
        // Weights stream from memory at decode sizes: ask for them a few iterations ahead.
        prefetch_row<S>(wp, k);
        T w0, w1;
        load_row<S>(wp, k, w0, w1);
        if constexpr (kQ4) {
          w0 = V::fmadd(w0, s0, m0);
          w1 = V::fmadd(w1, s1, m1);
        }
        const float* sk = src + k * kRows;
#pragma GCC unroll 16
        for (int r = 0; r < N; ++r) {
          const T b = V::set1(sk[r]);
          a0[r] = V::fmadd(b, w0, a0[r]);
          a1[r] = V::fmadd(b, w1, a1[r]);
        }
      }
    }
  }
}

// N rows, `P` panels side by side (IsaKernels::gate_up_panels and down_panels), for every storage
// but q4: panel p's weights start at wp + p * panel_bytes, and the sums of row r go to
// a0[p * N + r] and a1[p * N + r]. Each panel is a memory stream of its own, read a line of each
// in turn. A core keeps more lines in flight over several streams than over one: on an AMD Zen 3
// one thread read f32 panels at 1.5x the rate with four panels side by side than with one split
// in two (a standalone loop over 64 MB), and two threads at 1.2x. One chain of FMAs per panel,
// row and column half: 2 P N accumulators (at most 12 of AVX2's 16 registers). int8 panels ask
// for no lines ahead: their 8 KiB a panel (decode_ahead_rows), four panels at once, is the whole
// L1 of an AMD Zen 3, and without them the hardware's prefetch of the four streams did better,
// side by side at one token on that CPU, workloads A and B, 1 and 2 threads: 0.94-0.95x the time,
// and the reverse comparison 1.06-1.12x (one case inconclusive); at 16 tokens unchanged.
template <int N, int P, Storage S>
__attribute__((always_inline)) inline void accumulate_panels(const float* src, const char* wp,
                                                             int64_t panel_bytes, int64_t len,
                                                             typename V::T* a0, typename V::T* a1) {
  using T = typename V::T;
  constexpr int64_t U = rows_per_line<S>();
  // Reduction row k of panel p into the chains c0/c1.
  auto row = [&](int p, int64_t k, T* c0, T* c1) __attribute__((always_inline)) {
    T w0, w1;
    load_row<S>(wp + p * panel_bytes, k, w0, w1);
#pragma GCC unroll 4
    for (int r = 0; r < N; ++r) {
      const T b = V::set1(src[k * kRows + r]);
      c0[p * N + r] = V::fmadd(b, w0, c0[p * N + r]);
      c1[p * N + r] = V::fmadd(b, w1, c1[p * N + r]);
    }
  };
  // Lines [k, k + U) of every panel.
  auto lines = [&](int64_t k, T * c0, T * c1) __attribute__((always_inline)) {
#pragma GCC unroll 16
    for (int64_t u = 0; u < U; ++u) {
#pragma GCC unroll 4
      for (int p = 0; p < P; ++p) {
        if constexpr (S != Storage::kI8) {
          if (u == 0) prefetch_step<S>(wp + p * panel_bytes, k);
        }
        row(p, k + u, c0, c1);
      }
    }
  };
  static_assert(S != Storage::kQ4, "q4 keeps its decode loop (gate_up_panels)");
  const int64_t whole = len / U * U;
  for (int64_t k = 0; k < whole; k += U) lines(k, a0, a1);
  for (int64_t k = whole; k < len; ++k) {
    for (int p = 0; p < P; ++p) row(p, k, a0, a1);
  }
}

// int8: the raw sums of a whole reduction times the columns' scales (a column is an output
// channel, so its scale factors out of the dot product).
template <int N, Storage S>
__attribute__((always_inline)) inline void apply_channel_scales(const void* scales,
                                                                typename V::T* a0,
                                                                typename V::T* a1) {
  if constexpr (S == Storage::kI8) {
    const auto* sc = static_cast<const float*>(scales);
    const typename V::T s0 = V::load(sc), s1 = V::load(sc + V::kLanes);
    for (int r = 0; r < N; ++r) {
      a0[r] = V::mul(a0[r], s0);
      a1[r] = V::mul(a1[r], s1);
    }
  }
}

// Hidden values in the storage type, or for quantized weights in the activation dtype.
template <Storage S>
inline float store_hidden(float x, Storage hidden) {
  if constexpr (S == Storage::kI8 || S == Storage::kQ4) {
    if (hidden == Storage::kBF16) return round_hidden<Storage::kBF16>(x);
    if (hidden == Storage::kF16) return round_hidden<Storage::kF16>(x);
    return x;
  } else {
    return round_hidden<S>(x);
  }
}

// The gate/up epilogue of one panel's N rows (whole sums in a0/a1): int8 scales, the activation,
// and the hidden columns [col0, col0 + L or 2L) clipped to f, rounded as stored.
template <int N, Storage S>
__attribute__((always_inline)) inline void write_hidden(typename V::T* a0, typename V::T* a1,
                                                        const void* scales, Storage hidden, Act act,
                                                        float* hp, int64_t col0, int64_t f) {
  constexpr int L = V::kLanes;
  apply_channel_scales<N, S>(scales, a0, a1);
  alignas(64) float tmp[2 * L];
  for (int r = 0; r < N; ++r) {
    const int64_t cols = activate(a0[r], a1[r], act, tmp);
    const int64_t valid = f - col0 < cols ? f - col0 : cols;
    for (int64_t c = 0; c < valid; ++c) {
      hp[(col0 + c) * kRows + r] = store_hidden<S>(tmp[c], hidden);
    }
  }
}

// The down epilogue of one panel's N rows: int8 scales, then y[token_r, col0 + c] += weight_r *
// sum for the ncols columns.
template <int N, Storage S>
__attribute__((always_inline)) inline void combine_rows(typename V::T* a0, typename V::T* a1,
                                                        const void* scales, const int32_t* tokens,
                                                        const float* weights, float* y, int64_t ldy,
                                                        int64_t col0, int64_t ncols) {
  apply_channel_scales<N, S>(scales, a0, a1);
  for (int r = 0; r < N; ++r) {
    combine_row(a0[r], a1[r], weights[r], y + static_cast<int64_t>(tokens[r]) * ldy + col0, ncols);
  }
}

template <int N, Storage S>
void gate_up_rows(const float* xp, const void* wp, int64_t d, float* hp, int64_t col0, int64_t f,
                  Act act, const float* acc_in, float* acc_out, QuantArgs q) {
  typename V::T a0[N], a1[N];
  start_sums<N>(acc_in, a0, a1);
  accumulate<N, S>(xp, wp, d, q, a0, a1);
  if (acc_out != nullptr) return save_sums<N>(acc_out, a0, a1);
  write_hidden<N, S>(a0, a1, q.scales, q.hidden, act, hp, col0, f);
}

template <int N, Storage S>
void down_rows(const float* hp, const void* wp, int64_t f, const int32_t* tokens,
               const float* weights, float* y, int64_t ldy, int64_t col0, int64_t ncols,
               QuantArgs q) {
  typename V::T a0[N], a1[N];
  start_sums<N>(nullptr, a0, a1);
  accumulate<N, S>(hp, wp, f, q, a0, a1);
  combine_rows<N, S>(a0, a1, q.scales, tokens, weights, y, ldy, col0, ncols);
}

template <int N, int P, Storage S>
void gate_up_panels_of(const float* xp, const char* wp, int64_t panel_bytes, int64_t d, float* hp,
                       int64_t col0, int64_t hcols, int64_t f, Act act, const float* acc_in,
                       float* acc_out, QuantArgs q, int64_t scale_bytes) {
  using T = typename V::T;
  constexpr int L = V::kLanes;
  T a0[P * N], a1[P * N];
  for (int p = 0; p < P; ++p) {
    start_sums<N>(acc_in ? acc_in + p * N * 2 * L : nullptr, a0 + p * N, a1 + p * N);
  }
  accumulate_panels<N, P, S>(xp, wp, panel_bytes, d, a0, a1);
  if (acc_out != nullptr) {
    for (int p = 0; p < P; ++p) save_sums<N>(acc_out + p * N * 2 * L, a0 + p * N, a1 + p * N);
    return;
  }
  for (int p = 0; p < P; ++p) {
    write_hidden<N, S>(a0 + p * N, a1 + p * N, static_cast<const char*>(q.scales) + p * scale_bytes,
                       q.hidden, act, hp, col0 + p * hcols, f);
  }
}

template <int N, int P, Storage S>
void down_panels_of(const float* hp, const char* wp, int64_t panel_bytes, int64_t f,
                    const int32_t* tokens, const float* weights, float* y, int64_t ldy,
                    int64_t col0, int64_t cols_end, QuantArgs q, int64_t scale_bytes) {
  using T = typename V::T;
  constexpr int L = V::kLanes;
  T a0[P * N], a1[P * N];
  for (int i = 0; i < P * N; ++i) a0[i] = a1[i] = V::zero();
  accumulate_panels<N, P, S>(hp, wp, panel_bytes, f, a0, a1);
  for (int p = 0; p < P; ++p) {
    const int64_t col = col0 + p * 2 * L;
    combine_rows<N, S>(a0 + p * N, a1 + p * N, static_cast<const char*>(q.scales) + p * scale_bytes,
                       tokens, weights, y, ldy, col,
                       cols_end - col < 2 * L ? cols_end - col : 2 * L);
  }
}

template <int N, Storage S>
void gate_up_dispatch(const float* xp, const void* wp, int64_t d, int64_t n, float* hp,
                      int64_t col0, int64_t f, Act act, const float* acc_in, float* acc_out,
                      QuantArgs q) {
  if constexpr (N > 0) {
    if (n == N) return gate_up_rows<N, S>(xp, wp, d, hp, col0, f, act, acc_in, acc_out, q);
    return gate_up_dispatch<N - 1, S>(xp, wp, d, n, hp, col0, f, act, acc_in, acc_out, q);
  }
}

template <int N, Storage S>
void down_dispatch(const float* hp, const void* wp, int64_t f, int64_t n, const int32_t* tokens,
                   const float* weights, float* y, int64_t ldy, int64_t col0, int64_t ncols,
                   QuantArgs q) {
  if constexpr (N > 0) {
    if (n == N) return down_rows<N, S>(hp, wp, f, tokens, weights, y, ldy, col0, ncols, q);
    return down_dispatch<N - 1, S>(hp, wp, f, n, tokens, weights, y, ldy, col0, ncols, q);
  }
}

void gate_up(const float* xp, const void* wp, int64_t d, int64_t n, float* hp, int64_t col0,
             int64_t f, Act act, const float* acc_in, float* acc_out, Storage storage,
             QuantArgs q) {
  switch (storage) {
#define MOE_BENCH_GATE_UP(S) \
  case S:                    \
    return gate_up_dispatch<kRows, S>(xp, wp, d, n, hp, col0, f, act, acc_in, acc_out, q);
    MOE_BENCH_GATE_UP(Storage::kF32)
    MOE_BENCH_GATE_UP(Storage::kBF16)
    MOE_BENCH_GATE_UP(Storage::kF16)
    MOE_BENCH_GATE_UP(Storage::kI8)
    MOE_BENCH_GATE_UP(Storage::kQ4)
#undef MOE_BENCH_GATE_UP
  }
}

void down(const float* hp, const void* wp, int64_t f, int64_t n, const int32_t* tokens,
          const float* weights, float* y, int64_t ldy, int64_t col0, int64_t ncols, Storage storage,
          QuantArgs q) {
  switch (storage) {
#define MOE_BENCH_DOWN(S) \
  case S:                 \
    return down_dispatch<kRows, S>(hp, wp, f, n, tokens, weights, y, ldy, col0, ncols, q);
    MOE_BENCH_DOWN(Storage::kF32)
    MOE_BENCH_DOWN(Storage::kBF16)
    MOE_BENCH_DOWN(Storage::kF16)
    MOE_BENCH_DOWN(Storage::kI8)
    MOE_BENCH_DOWN(Storage::kQ4)
#undef MOE_BENCH_DOWN
  }
}

// The (rows, panels) pairs the side-by-side kernels are built for: four or two panels at one row,
// two at two or three rows. Runs of other lengths are taken in those steps, and a last single
// panel by the one-panel kernels (fewer instantiations: each costs compile time on every build).
template <typename Run>
void by_rows_and_panels(int64_t n, int panels, Storage storage, Run run) {
  auto with = [&]<int N, int P>() {
    switch (storage) {
      case Storage::kF32:
        return run.template operator()<N, P, Storage::kF32>();
      case Storage::kBF16:
        return run.template operator()<N, P, Storage::kBF16>();
      case Storage::kF16:
        return run.template operator()<N, P, Storage::kF16>();
      case Storage::kI8:
        return run.template operator()<N, P, Storage::kI8>();
      case Storage::kQ4:  // the callers take q4 one panel at a time
        return;
    }
  };
  if (n == 1)
    return panels == 4 ? with.template operator()<1, 4>() : with.template operator()<1, 2>();
  return n == 2 ? with.template operator()<2, 2>() : with.template operator()<3, 2>();
}

// How many of `left` panels the next step takes: 4 or 2 side by side, or 1 (q4 always: it is bound
// by its conversions, not by its streams, and side by side it took 1.10-1.15x the time of its
// decode loop on an AMD Zen 3).
inline int panels_step(int left, int64_t n, Storage storage) {
  if (storage == Storage::kQ4) return 1;
  return n == 1 && left >= 4 ? 4 : left >= 2 ? 2 : 1;
}

// Walks `panels` panels in the steps of panels_step(): for each, step(p, take, w, qp) with the
// step's first panel p, its panel count, its weights and its QuantArgs (scales moved to panel p).
template <typename Step>
void panel_steps(int panels, int64_t n, Storage storage, const void* wp, int64_t panel_bytes,
                 QuantArgs q, int64_t scale_bytes, Step step) {
  for (int p = 0; p < panels;) {
    const int take = panels_step(panels - p, n, storage);
    QuantArgs qp = q;
    if (q.scales != nullptr) qp.scales = static_cast<const char*>(q.scales) + p * scale_bytes;
    step(p, take, static_cast<const char*>(wp) + p * panel_bytes, qp);
    p += take;
  }
}

void gate_up_panels(const float* xp, const void* wp, int64_t panel_bytes, int panels, int64_t d,
                    int64_t n, float* hp, int64_t col0, int64_t hcols, int64_t f, Act act,
                    const float* acc_in, float* acc_out, Storage storage, QuantArgs q,
                    int64_t scale_bytes) {
  constexpr int L = V::kLanes;
  panel_steps(panels, n, storage, wp, panel_bytes, q, scale_bytes,
              [&](int p, int take, const char* w, QuantArgs qp) {
                const float* in = acc_in ? acc_in + p * n * 2 * L : nullptr;
                float* out = acc_out ? acc_out + p * n * 2 * L : nullptr;
                const int64_t col = col0 + p * hcols;
                if (take == 1) return gate_up(xp, w, d, n, hp, col, f, act, in, out, storage, qp);
                by_rows_and_panels(n, take, storage, [&]<int N, int P, Storage S>() {
                  gate_up_panels_of<N, P, S>(xp, w, panel_bytes, d, hp, col, hcols, f, act, in, out,
                                             qp, scale_bytes);
                });
              });
}

void down_panels(const float* hp, const void* wp, int64_t panel_bytes, int panels, int64_t f,
                 int64_t n, const int32_t* tokens, const float* weights, float* y, int64_t ldy,
                 int64_t col0, int64_t cols_end, Storage storage, QuantArgs q,
                 int64_t scale_bytes) {
  constexpr int L = V::kLanes;
  panel_steps(panels, n, storage, wp, panel_bytes, q, scale_bytes,
              [&](int p, int take, const char* w, QuantArgs qp) {
                const int64_t col = col0 + p * 2 * L;
                if (take == 1) {
                  return down(hp, w, f, n, tokens, weights, y, ldy, col,
                              cols_end - col < 2 * L ? cols_end - col : 2 * L, storage, qp);
                }
                by_rows_and_panels(n, take, storage, [&]<int N, int P, Storage S>() {
                  down_panels_of<N, P, S>(hp, w, panel_bytes, f, tokens, weights, y, ldy, col,
                                          cols_end, qp, scale_bytes);
                });
              });
}
