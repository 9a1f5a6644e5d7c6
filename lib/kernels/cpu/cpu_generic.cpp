// Portable micro-kernels: the same algorithm and layouts on portable vectors of 4 floats, 4-row
// blocks. Always built, always available; the reference for the SIMD variants' structure.
#include <cmath>

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

}  // namespace generic

const IsaKernels& generic_kernels() {
  static const IsaKernels kKernels{"generic",        generic::V::kLanes,      generic::kRows,
                                   generic::gate_up, generic::down,           generic::dot_rows,
                                   /*kpack=*/1,      /*bf16_only=*/false,
                                   /*kblock=*/1,     generic::gate_up_panels, generic::down_panels};
  return kKernels;
}

}  // namespace moe_bench::cpu
