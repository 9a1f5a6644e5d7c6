#pragma once

#include <string>
#include <vector>

#include "moe_bench/shape.hpp"

namespace moe_bench {

struct NamedShape {
  std::string name;
  Shape shape;
};

/// A custom shape (softmax top-k, renormalised, SwiGLU, uniform, dropless).
Shape make_shape(int64_t experts, int64_t top_k, int64_t d_model, int64_t d_ff, int64_t tokens);

/// The consistency grid: small shapes that reach every edge of the semantics (one token, sizes
/// that are not multiples of the SIMD width, k = E, idle experts, one hot expert, skew, capacity
/// dropping, every activation and router variant, shared experts, reductions longer than the
/// kernels' cache chunks). The tests and `validate` check every implementation on it.
std::vector<NamedShape> consistency_grid();

}  // namespace moe_bench
