#include <fmt/format.h>

#include <algorithm>
#include <array>

#include "../../baselines/blas/blas.hpp"
#include "../../baselines/naive/naive.hpp"
#include "../../baselines/python/python_peer.hpp"
#include "../kernels/cpu/cpu_moe.hpp"
#include "../kernels/cuda/cuda_kernel.hpp"
#include "moe_bench/error.hpp"
#include "moe_bench/kernel.hpp"

namespace moe_bench {
namespace {

// The one list of implementations: a new implementation is a new file plus one line here.
constexpr std::array kRegistry{
    RegistryEntry{"naive", naive::make_kernel},
    RegistryEntry{"blas", blas::make_kernel},
    RegistryEntry{"cpu", cpu::make_kernel},
    RegistryEntry{"numpy", python::make_numpy_kernel, false},
    RegistryEntry{"torch", python::make_torch_kernel, false},
    RegistryEntry{"cpu_avx512", cpu::make_avx512_kernel, false},
    RegistryEntry{"cpu_avx512_bf16", cpu::make_avx512_bf16_kernel, false},
    RegistryEntry{"cpu_avx2", cpu::make_avx2_kernel, false},
    RegistryEntry{"cpu_generic", cpu::make_generic_kernel, false},
    RegistryEntry{"cuda", cuda::make_cuda_kernel, false},
    RegistryEntry{"cublas", cuda::make_cublas_kernel, false},
};

}  // namespace

std::span<const RegistryEntry> registry() { return kRegistry; }

std::vector<std::string> kernel_names() {
  std::vector<std::string> names;
  for (const auto& e : kRegistry) names.emplace_back(e.name);
  return names;
}

std::vector<std::string> default_kernel_names() {
  std::vector<std::string> names;
  for (const auto& e : kRegistry) {
    if (e.runs_by_default) names.emplace_back(e.name);
  }
  return names;
}

int extra_weight_copies(const std::vector<std::string>& impls) {
  int copies = 0;
  for (const auto& name : impls) copies = std::max(copies, make_kernel(name)->info().weight_copies);
  return copies;
}

std::unique_ptr<Kernel> make_kernel(std::string_view name) {
  for (const auto& e : kRegistry) {
    if (name == e.name) return e.make();
  }
  throw UsageError(fmt::format("unknown implementation '{}' (known: {})", name,
                               fmt::join(kernel_names(), ", ")));
}

}  // namespace moe_bench
