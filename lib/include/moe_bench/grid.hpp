#pragma once

#include <string>
#include <vector>

#include "moe_bench/shape.hpp"

namespace moe_bench {

struct NamedShape {
  std::string name;
  Shape shape;
};

/// The consistency grid: small shapes that reach every edge of the semantics (one token, sizes
/// that are not multiples of the SIMD width, k = E, idle experts, one hot expert, skew, capacity
/// dropping, every activation and router variant, shared experts, reductions longer than the
/// kernels' cache chunks). The tests and `validate` check every implementation on it.
std::vector<NamedShape> consistency_grid();

}  // namespace moe_bench
