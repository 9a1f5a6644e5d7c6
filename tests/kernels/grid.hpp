#pragma once

#include <vector>

#include "moe_bench/shape.hpp"

struct NamedShape {
  const char* name;
  moe_bench::Shape shape;
};

/// The consistency grid every implementation is checked on (kernels/consistency_test.cpp).
std::vector<NamedShape> consistency_grid();
