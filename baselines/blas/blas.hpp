#pragma once

#include <memory>

#include "moe_bench/kernel.hpp"

namespace moe_bench::blas {

/// The per-expert OpenBLAS implementation: what frameworks do on a CPU.
std::unique_ptr<Kernel> make_kernel();

}  // namespace moe_bench::blas
