// Helpers every micro-kernel body shares, written over a vector type `V` (see kernel_body.hpp):
// rounding of hidden values, the vectorised activations and the router's dot products. Included
// inside an instruction set's namespace, once per translation unit.

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

// The activated hidden values of one row, from the raw gate (g) and up (u) sums, into tmp (2L
// floats); returns how many columns tmp holds (L when gated, 2L for GELU, which has no up).
inline int64_t activate(typename V::T g, typename V::T u, Act act, float* tmp) {
  using T = typename V::T;
  constexpr int L = V::kLanes;
  if (act == Act::kGelu) {
    V::store(tmp, vgelu(g));
    V::store(tmp + L, vgelu(u));
    return 2 * L;
  }
  if (act == Act::kSwiglu) {
    V::store(tmp, V::mul(vsigmoid_times(g, V::set1(1.0f)), u));
  } else {
    // GPT-OSS: gate clamped above at 7, up to [-7, 7]; gate * sigmoid(1.702 gate) * (up + 1).
    const T gc = V::min(g, V::set1(7.0f));
    const T uc = V::max(V::min(u, V::set1(7.0f)), V::set1(-7.0f));
    V::store(tmp, V::mul(vsigmoid_times(gc, V::set1(1.702f)), V::add(uc, V::set1(1.0f))));
  }
  return L;
}

// The raw sums of N rows of a block: started from a chunk's partial buffer (N x 2L, or zero when
// acc_in is null) and saved to it for the next chunk. Inlined so the sums stay in registers.
template <int N>
__attribute__((always_inline)) inline void start_sums(const float* acc_in, typename V::T* a0,
                                                      typename V::T* a1) {
  constexpr int L = V::kLanes;
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
}

template <int N>
__attribute__((always_inline)) inline void save_sums(float* acc_out, const typename V::T* a0,
                                                     const typename V::T* a1) {
  constexpr int L = V::kLanes;
  for (int r = 0; r < N; ++r) {
    V::store(acc_out + r * 2 * L, a0[r]);
    V::store(acc_out + r * 2 * L + L, a1[r]);
  }
}

// yr[c] += weight * (a0 | a1)[c] for the ncols (at most 2L) output columns of one row.
inline void combine_row(typename V::T a0, typename V::T a1, float weight, float* yr,
                        int64_t ncols) {
  constexpr int L = V::kLanes;
  const auto w = V::set1(weight);
  if (ncols == 2 * L) {
    V::store(yr, V::fmadd(w, a0, V::load(yr)));
    V::store(yr + L, V::fmadd(w, a1, V::load(yr + L)));
  } else {
    alignas(64) float tmp[2 * L];
    V::store(tmp, V::mul(w, a0));
    V::store(tmp + L, V::mul(w, a1));
    for (int64_t c = 0; c < ncols; ++c) yr[c] += tmp[c];
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
