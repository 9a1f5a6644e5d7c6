#pragma once

#include <algorithm>
#include <cmath>

#include "moe_bench/shape.hpp"

namespace moe_bench {

/// The expert activation applied to one (gate, up) pair; GELU ignores `up`.
template <typename T>
inline T activate(Activation a, T gate, T up) {
  switch (a) {
    case Activation::kSwiglu:
      return gate / (T(1) + std::exp(-gate)) * up;
    case Activation::kGelu:
      return T(0.5) * gate * (T(1) + std::erf(gate / std::sqrt(T(2))));
    case Activation::kSwigluOai: {
      // GPT-OSS: gate clamped above at 7, up clamped to [-7, 7].
      gate = std::min(gate, T(7));
      up = std::clamp(up, T(-7), T(7));
      return gate / (T(1) + std::exp(T(-1.702) * gate)) * (up + T(1));
    }
  }
  return T(0);
}

}  // namespace moe_bench
