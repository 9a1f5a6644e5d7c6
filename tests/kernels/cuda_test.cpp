// The CUDA implementations on a device: every consistency case in every dtype against the oracle
// (also covered by consistency_test.cpp), and bit-for-bit equal outputs when a case runs again.
// Without a usable device each test says why and checks nothing else.
#include <catch2/catch.hpp>
#include <cstring>

#include "lib/kernels/cuda/cuda_kernel.hpp"
#include "moe_bench/correctness.hpp"
#include "moe_bench/grid.hpp"
#include "moe_bench/problem.hpp"

using namespace moe_bench;

TEST_CASE("CUDA implementations match the oracle and repeat bit for bit") {
  for (auto make :
       {cuda::make_cuda_kernel, cuda::make_cuda_graph_kernel, cuda::make_cuda_gemm_kernel,
        cuda::make_cuda_gemv_kernel, cuda::make_cublas_kernel, cuda::make_cuda_cutlass_kernel,
        cuda::make_cuda_cutlass_graph_kernel}) {
    auto kernel = make();
    if (auto why = kernel->unavailable_reason()) {
      WARN("skipped " << kernel->info().name << ": " << *why);
      continue;
    }
    for (Dtype dtype : kernel->info().dtypes) {
      for (const NamedShape& ns : consistency_grid()) {
        INFO(kernel->info().name << " on " << ns.name << " in " << to_string(dtype));
        Problem p = make_problem(ns.shape, dtype, 3, 2);
        Oracle oracle(p);
        kernel->prepare(p, 1);
        kernel->run(0);
        const std::vector<float> first(kernel->output().begin(), kernel->output().end());
        Correctness c = oracle.check(kernel->output(), kernel->selected_experts());
        CHECK(c.pass);
        CHECK(c.selection_mismatches == 0);
        // Another layer in between, then the first again: the same bits.
        kernel->run(1);
        kernel->run(0);
        const auto again = kernel->output();
        REQUIRE(again.size() == first.size());
        CHECK(std::memcmp(again.data(), first.data(), first.size() * sizeof(float)) == 0);
        CHECK(kernel->take_device_seconds() > 0);
      }
    }
  }
}

TEST_CASE("the CUTLASS engines run bf16 only and say why they cannot run here") {
  const auto cuda_why = cuda::make_cuda_kernel()->unavailable_reason();
  for (auto make : {cuda::make_cuda_cutlass_kernel, cuda::make_cuda_cutlass_graph_kernel}) {
    auto kernel = make();
    INFO(kernel->info().name);
    CHECK(kernel->info().dtypes == std::vector<Dtype>{Dtype::kBF16});
    const auto why = kernel->unavailable_reason();
    // Without a usable device the CUTLASS engines give the same reason as cuda; with one, a
    // reason of their own (not built with CUTLASS, or a device that is not sm_90) or none.
    if (cuda_why) {
      REQUIRE(why.has_value());
      CHECK(*why == *cuda_why);
    } else if (why) {
      CHECK((why->find("CUTLASS") != std::string::npos || why->find("sm_90") != std::string::npos));
    }
  }
}
