#pragma once

#include <cstdint>
#include <cstring>

#include "moe_bench/shape.hpp"

namespace moe_bench {

/// bfloat16 bits of a float, rounded to nearest even (NaN kept quiet).
inline uint16_t to_bf16_bits(float x) {
  uint32_t bits = 0;
  std::memcpy(&bits, &x, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

inline float from_bf16_bits(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float x = 0;
  std::memcpy(&x, &bits, 4);
  return x;
}

/// IEEE binary16 bits of a float, rounded to nearest even (the compiler's _Float16 conversion).
inline uint16_t to_f16_bits(float x) {
  const _Float16 h = static_cast<_Float16>(x);
  uint16_t bits = 0;
  std::memcpy(&bits, &h, 2);
  return bits;
}

inline float from_f16_bits(uint16_t b) {
  _Float16 h;
  std::memcpy(&h, &b, 2);
  return static_cast<float>(h);
}

/// `x` rounded to the dtype and back to float (identity for f32).
inline float round_to(Dtype d, float x) {
  switch (d) {
    case Dtype::kF32:
      return x;
    case Dtype::kBF16:
      return from_bf16_bits(to_bf16_bits(x));
    case Dtype::kF16:
      return from_f16_bits(to_f16_bits(x));
  }
  return x;
}

/// Rounds n floats in place.
inline void round_all(Dtype d, float* x, int64_t n) {
  if (d == Dtype::kF32) return;
  for (int64_t i = 0; i < n; ++i) x[i] = round_to(d, x[i]);
}

}  // namespace moe_bench
