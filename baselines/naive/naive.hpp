#pragma once

#include <memory>

#include "moe_bench/kernel.hpp"

namespace moe_bench::naive {

/// The naive implementation in FP32: the readable definition of the layer.
std::unique_ptr<Kernel> make_kernel();

}  // namespace moe_bench::naive
