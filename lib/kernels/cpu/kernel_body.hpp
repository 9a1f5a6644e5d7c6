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

// Hidden values are stored in the weights' type: a float rounded to bf16 or f16 and back.
template <Storage S>
inline float round_hidden(float x) {
  if constexpr (S == Storage::kF32) {
    return x;
  } else if constexpr (S == Storage::kBF16) {
    uint32_t bits = 0;
    __builtin_memcpy(&bits, &x, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return x;
    bits += 0x7fffu + ((bits >> 16) & 1u);
    bits &= 0xffff0000u;
    __builtin_memcpy(&x, &bits, 4);
    return x;
  } else {
    return static_cast<float>(static_cast<_Float16>(x));
  }
}

// Iterations (rows of a weight panel, 128 B each with AVX-512) between a prefetch and its use:
// 32 measured best of 0, 8 and 32 on workload A at 32 tokens.
constexpr int64_t kPrefetchAhead = 32;

template <typename T>
inline T vsigmoid_times(T g, T scale_in) {
  // g * sigmoid(scale_in * g) = g / (1 + exp(-scale_in * g))
  const T one = V::set1(1.0f);
  return V::div(g, V::add(one, V::exp(V::sub(V::zero(), V::mul(scale_in, g)))));
}

// erf by Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7).
inline typename V::T verf(typename V::T x) {
  using T = typename V::T;
  const T ax = V::abs(x);
  const T t = V::div(V::set1(1.0f), V::fmadd(V::set1(0.3275911f), ax, V::set1(1.0f)));
  T p = V::set1(1.061405429f);
  p = V::fmadd(p, t, V::set1(-1.453152027f));
  p = V::fmadd(p, t, V::set1(1.421413741f));
  p = V::fmadd(p, t, V::set1(-0.284496736f));
  p = V::fmadd(p, t, V::set1(0.254829592f));
  p = V::mul(p, t);
  const T e = V::exp(V::sub(V::zero(), V::mul(ax, ax)));
  const T y = V::sub(V::set1(1.0f), V::mul(p, e));
  return V::copysign_from(y, x);
}

inline typename V::T vgelu(typename V::T g) {
  const auto half = V::set1(0.5f);
  return V::mul(V::mul(half, g),
                V::add(V::set1(1.0f), verf(V::mul(g, V::set1(0.70710678118654752f)))));
}

// The register-blocked core both projections share: for each of `len` reduction rows k, the two
// weight vectors of the panel times src[k * kRows + r] (a k-major block of N rows) accumulate into
// a0[r] and a1[r]. Inlined so that the accumulators stay in registers.
template <int N, Storage S>
__attribute__((always_inline)) inline void accumulate(const float* src, const void* wp,
                                                      int64_t len, typename V::T* a0,
                                                      typename V::T* a1) {
  using T = typename V::T;
  constexpr int L = V::kLanes;
  for (int64_t k = 0; k < len; ++k) {
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
  if (acc_in != nullptr) {
#pragma GCC unroll 16
    for (int r = 0; r < N; ++r) {
      a0[r] = V::load(acc_in + r * 2 * L);
      a1[r] = V::load(acc_in + r * 2 * L + L);
    }
  } else {
#pragma GCC unroll 16
    for (int r = 0; r < N; ++r) a0[r] = a1[r] = V::zero();
  }
  accumulate<N, S>(xp, wp, d, a0, a1);
  if (acc_out != nullptr) {
    for (int r = 0; r < N; ++r) {
      V::store(acc_out + r * 2 * L, a0[r]);
      V::store(acc_out + r * 2 * L + L, a1[r]);
    }
    return;
  }
  alignas(64) float tmp[2 * L];
  for (int r = 0; r < N; ++r) {
    int64_t cols = L;
    if (act == Act::kGelu) {
      V::store(tmp, vgelu(a0[r]));
      V::store(tmp + L, vgelu(a1[r]));
      cols = 2 * L;
    } else if (act == Act::kSwiglu) {
      V::store(tmp, V::mul(vsigmoid_times(a0[r], V::set1(1.0f)), a1[r]));
    } else {
      // GPT-OSS: gate clamped above at 7, up to [-7, 7]; gate * sigmoid(1.702 gate) * (up + 1).
      const T g = V::min(a0[r], V::set1(7.0f));
      const T u = V::max(V::min(a1[r], V::set1(7.0f)), V::set1(-7.0f));
      V::store(tmp, V::mul(vsigmoid_times(g, V::set1(1.702f)), V::add(u, V::set1(1.0f))));
    }
    const int64_t valid = f - col0 < cols ? f - col0 : cols;
    for (int64_t c = 0; c < valid; ++c) hp[(col0 + c) * kRows + r] = round_hidden<S>(tmp[c]);
  }
}

template <int N, Storage S>
void down_rows(const float* hp, const void* wp, int64_t f, const int32_t* tokens,
               const float* weights, float* y, int64_t ldy, int64_t col0, int64_t ncols) {
  using T = typename V::T;
  constexpr int L = V::kLanes;
  T a0[N], a1[N];
#pragma GCC unroll 16
  for (int r = 0; r < N; ++r) a0[r] = a1[r] = V::zero();
  accumulate<N, S>(hp, wp, f, a0, a1);
  for (int r = 0; r < N; ++r) {
    float* yr = y + static_cast<int64_t>(tokens[r]) * ldy + col0;
    const T w = V::set1(weights[r]);
    if (ncols == 2 * L) {
      V::store(yr, V::fmadd(w, a0[r], V::load(yr)));
      V::store(yr + L, V::fmadd(w, a1[r], V::load(yr + L)));
    } else {
      alignas(64) float tmp[2 * L];
      V::store(tmp, V::mul(w, a0[r]));
      V::store(tmp + L, V::mul(w, a1[r]));
      for (int64_t c = 0; c < ncols; ++c) yr[c] += tmp[c];
    }
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

void dot_rows(const float* x, const float* w, int64_t rows, int64_t d, float* out) {
  using T = typename V::T;
  constexpr int L = V::kLanes;
  for (int64_t e = 0; e < rows; ++e) {
    const float* we = w + e * d;
    T a0 = V::zero(), a1 = V::zero(), a2 = V::zero(), a3 = V::zero();
    int64_t i = 0;
    for (; i + 4 * L <= d; i += 4 * L) {
      a0 = V::fmadd(V::load(x + i), V::load(we + i), a0);
      a1 = V::fmadd(V::load(x + i + L), V::load(we + i + L), a1);
      a2 = V::fmadd(V::load(x + i + 2 * L), V::load(we + i + 2 * L), a2);
      a3 = V::fmadd(V::load(x + i + 3 * L), V::load(we + i + 3 * L), a3);
    }
    alignas(64) float tmp[L];
    V::store(tmp, V::add(V::add(a0, a1), V::add(a2, a3)));
    float sum = 0;
    for (int c = 0; c < L; ++c) sum += tmp[c];
    for (; i < d; ++i) sum += x[i] * we[i];
    out[e] = sum;
  }
}
