// Portable micro-kernels: the same algorithm and layouts on plain arrays of 8 floats, 4-row
// blocks. Always built, always available; the reference for the SIMD variants' structure.
#include <cmath>

#include "cpu_isa.hpp"

namespace moe_bench::cpu {
namespace generic {

struct V {
  static constexpr int kLanes = 8;
  struct T {
    float v[kLanes];
  };
  template <typename F>
  static T map(T a, T b, F f) {
    T out;
    for (int i = 0; i < kLanes; ++i) out.v[i] = f(a.v[i], b.v[i]);
    return out;
  }
  static T zero() { return set1(0.0f); }
  static T set1(float x) {
    T out;
    for (float& v : out.v) v = x;
    return out;
  }
  static T load(const float* p) {
    T out;
    for (int i = 0; i < kLanes; ++i) out.v[i] = p[i];
    return out;
  }
  static void store(float* p, T v) {
    for (int i = 0; i < kLanes; ++i) p[i] = v.v[i];
  }
  static T load_bf16(const uint16_t* p) {
    T out;
    for (int i = 0; i < kLanes; ++i) {
      const uint32_t bits = static_cast<uint32_t>(p[i]) << 16;
      __builtin_memcpy(&out.v[i], &bits, 4);
    }
    return out;
  }
  static T load_f16(const uint16_t* p) {
    T out;
    for (int i = 0; i < kLanes; ++i) {
      _Float16 h;
      __builtin_memcpy(&h, &p[i], 2);
      out.v[i] = static_cast<float>(h);
    }
    return out;
  }
  static T load_i8(const int8_t* p) {
    T out;
    for (int i = 0; i < kLanes; ++i) out.v[i] = static_cast<float>(p[i]);
    return out;
  }
  static void load_u4(const uint8_t* p, T& lo, T& hi) {
    for (int i = 0; i < kLanes; ++i) {
      lo.v[i] = static_cast<float>(p[i] & 15);
      hi.v[i] = static_cast<float>(p[i] >> 4);
    }
  }
  static T fmadd(T a, T b, T c) {
    T out;
    for (int i = 0; i < kLanes; ++i) out.v[i] = std::fma(a.v[i], b.v[i], c.v[i]);
    return out;
  }
  static T add(T a, T b) {
    return map(a, b, [](float x, float y) { return x + y; });
  }
  static T sub(T a, T b) {
    return map(a, b, [](float x, float y) { return x - y; });
  }
  static T mul(T a, T b) {
    return map(a, b, [](float x, float y) { return x * y; });
  }
  static T div(T a, T b) {
    return map(a, b, [](float x, float y) { return x / y; });
  }
  static T min(T a, T b) {
    return map(a, b, [](float x, float y) { return x < y ? x : y; });
  }
  static T max(T a, T b) {
    return map(a, b, [](float x, float y) { return x > y ? x : y; });
  }
  static T abs(T a) {
    return map(a, a, [](float x, float) { return std::fabs(x); });
  }
  static T copysign_from(T m, T s) {
    return map(m, s, [](float x, float y) { return std::copysign(x, y); });
  }
  static T exp(T a) {
    return map(a, a, [](float x, float) { return std::exp(x); });
  }
};

constexpr int kRows = 4;
#include "kernel_body.hpp"

}  // namespace generic

const IsaKernels& generic_kernels() {
  static const IsaKernels kKernels{"generic",        generic::V::kLanes, generic::kRows,
                                   generic::gate_up, generic::down,      generic::dot_rows};
  return kKernels;
}

}  // namespace moe_bench::cpu
