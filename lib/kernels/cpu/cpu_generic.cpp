// Portable micro-kernels: the same algorithm and layouts on portable vectors of 4 floats, 4-row
// blocks. Always built, always available; the reference for the SIMD variants' structure.
#include <algorithm>
#include <cmath>

#include "a8_isa.hpp"
#include "cpu_isa.hpp"

namespace moe_bench::cpu {
namespace generic {

// GCC's portable vectors of four floats, one SSE register (or the target's own): a plain struct
// of floats went through memory at every call boundary, and with eight lanes the accumulators
// of 4 rows spilled; prefill ran at a quarter of this speed, decode of bf16 weights at half.
struct V {
  static constexpr int kLanes = 4;
  typedef float T __attribute__((vector_size(4 * kLanes)));
  typedef int32_t I __attribute__((vector_size(4 * kLanes)));
  typedef uint16_t H __attribute__((vector_size(4 * kLanes)));
  typedef uint16_t H4 __attribute__((vector_size(2 * kLanes)));
  typedef uint8_t B16 __attribute__((vector_size(4 * kLanes)));
  typedef uint8_t B8 __attribute__((vector_size(2 * kLanes)));
  // Four bytes, each in the top byte of a 32-bit lane with zeros below: two interleaves with
  // zeros (SSE2's unpacks), where an element loop or one byte shuffle went through memory.
  static I bytes_on_top(const void* p) {
    uint32_t word;
    __builtin_memcpy(&word, p, 4);
    const uint64_t wide = word;
    B8 raw;
    __builtin_memcpy(&raw, &wide, 8);
    const B16 b =
        __builtin_shufflevector(B8{}, raw, 0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
    H4 low;
    __builtin_memcpy(&low, &b, 8);
    const H h = __builtin_shufflevector(H4{}, low, 0, 4, 1, 5, 2, 6, 3, 7);
    I out;
    __builtin_memcpy(&out, &h, sizeof(out));
    return out;
  }
  static T zero() { return T{}; }
  static T set1(float x) { return T{} + x; }
  static T load(const float* p) {
    T out;
    __builtin_memcpy(&out, p, sizeof(out));
    return out;
  }
  static void store(float* p, T v) { __builtin_memcpy(p, &v, sizeof(v)); }
  // A bf16 value is the upper 16 bits of its float: one interleave with zeros.
  static T load_bf16(const uint16_t* p) {
    H4 raw;
    __builtin_memcpy(&raw, p, 2 * kLanes);
    const H wide = __builtin_shufflevector(H4{}, raw, 0, 4, 1, 5, 2, 6, 3, 7);
    T out;
    __builtin_memcpy(&out, &wide, sizeof(out));
    return out;
  }
  static T load_f16(const uint16_t* p) {
    T out;
    for (int i = 0; i < kLanes; ++i) {
      _Float16 h;
      __builtin_memcpy(&h, &p[i], 2);
      out[i] = static_cast<float>(h);
    }
    return out;
  }
  static T load_i8(const int8_t* p) { return __builtin_convertvector(bytes_on_top(p) >> 24, T); }
  static void load_u4(const uint8_t* p, T& lo, T& hi) {
    const I v = bytes_on_top(p);
    lo = __builtin_convertvector((v >> 24) & 15, T);
    hi = __builtin_convertvector((v >> 28) & 15, T);
  }
  // A multiply and an add, each rounded: the x86-64 baseline has no FMA instruction, and
  // std::fma there is a libm call per element (correctly rounded in software), which kept the
  // loops scalar and made decode read its weights at a tenth of the rate of a plain read.
  static T fmadd(T a, T b, T c) { return a * b + c; }
  static T add(T a, T b) { return a + b; }
  static T sub(T a, T b) { return a - b; }
  static T mul(T a, T b) { return a * b; }
  static T div(T a, T b) { return a / b; }
  static T min(T a, T b) { return a < b ? a : b; }
  static T max(T a, T b) { return a > b ? a : b; }
  static T abs(T a) { return a < 0 ? -a : a; }
  static T copysign_from(T m, T s) {
    T out;
    for (int i = 0; i < kLanes; ++i) out[i] = std::copysign(m[i], s[i]);
    return out;
  }
  static T exp(T a) {
    T out;
    for (int i = 0; i < kLanes; ++i) out[i] = std::exp(a[i]);
    return out;
  }
};

constexpr int kRows = 4;
#include "kernel_body.hpp"

// The a8 integer loops (a8_body.hpp), element by element: the same sums as AVX2's, exact in
// int32, then scaled in FP32.
template <int NR, int NP>
void a8_sums_i8(const A8Rows& x, int r0, const char* wp, int64_t quads, float* out) {
  int32_t acc[NR][NP][kA8Cols] = {};
  const auto* w = reinterpret_cast<const int8_t*>(wp);
  for (int64_t q = 0; q < quads; ++q) {
    for (int j = 0; j < NP; ++j) {
      const int8_t* wq = w + (q * NP + j) * 32;
      for (int r = 0; r < NR; ++r) {
        const int8_t* xr = x.codes[r0 + r] + 4 * q;
        for (int c = 0; c < kA8Cols; ++c) {
          int32_t sum = 0;
          for (int i = 0; i < 4; ++i) sum += int32_t{wq[4 * c + i]} * int32_t{xr[i]};
          acc[r][j][c] += sum;
        }
      }
    }
  }
  float scales[NP * kA8Cols];
  __builtin_memcpy(scales, wp + quads * NP * 32, sizeof(scales));
  for (int r = 0; r < NR; ++r) {
    for (int j = 0; j < NP; ++j) {
      for (int c = 0; c < kA8Cols; ++c) {
        out[(r * NP + j) * kA8Cols + c] =
            static_cast<float>(acc[r][j][c]) * scales[j * kA8Cols + c];
      }
    }
  }
}

template <int NR, int NP>
void a8_sums_q4(const A8Rows& x, int r0, const char* wp, int64_t groups, float* out) {
  float acc[NR][NP][kA8Cols] = {};
  const auto* w = reinterpret_cast<const uint8_t*>(wp);
  constexpr int64_t kGroupBytes = NP * (4 * 32 + 2 * kA8Cols);
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* block = w + g * kGroupBytes;
    for (int j = 0; j < NP; ++j) {
      const uint8_t* codes = block + j * 128;
      _Float16 scales[kA8Cols];
      __builtin_memcpy(scales, block + NP * 128 + j * 2 * kA8Cols, sizeof(scales));
      for (int r = 0; r < NR; ++r) {
        const int8_t* xr = x.codes[r0 + r] + g * kQ4Rows;
        const int32_t offset = 8 * x.group_sums[r0 + r][g];
        for (int c = 0; c < kA8Cols; ++c) {
          int32_t sum = 0;
          for (int v = 0; v < 4; ++v) {
            for (int i = 0; i < 4; ++i) {
              const uint8_t byte = codes[v * 32 + 4 * c + i];
              sum +=
                  (byte & 15) * int32_t{xr[8 * v + i]} + (byte >> 4) * int32_t{xr[8 * v + 4 + i]};
            }
          }
          acc[r][j][c] = std::fma(static_cast<float>(sum - offset), static_cast<float>(scales[c]),
                                  acc[r][j][c]);
        }
      }
    }
  }
  for (int r = 0; r < NR; ++r) {
    for (int j = 0; j < NP; ++j) {
      for (int c = 0; c < kA8Cols; ++c) out[(r * NP + j) * kA8Cols + c] = acc[r][j][c];
    }
  }
}

// Rows a pass over a panel takes, as on AVX2.
constexpr int kA8PassRows = 2;
#include "a8_body.hpp"

}  // namespace generic

const A8Kernels& a8_generic_kernels() {
  static const A8Kernels kKernels{
      "generic", /*i8_unsigned=*/false, generic::a8_gate_up, generic::a8_down, nullptr, nullptr};
  return kKernels;
}

const IsaKernels& generic_kernels() {
  static const IsaKernels kKernels{"generic",        generic::V::kLanes,      generic::kRows,
                                   generic::gate_up, generic::down,           generic::dot_rows,
                                   /*kpack=*/1,      /*bf16_only=*/false,
                                   /*kblock=*/1,     generic::gate_up_panels, generic::down_panels};
  return kKernels;
}

}  // namespace moe_bench::cpu
