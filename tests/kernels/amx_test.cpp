// The AMX path on any CPU: its kernels over the software model of the tiles must match the FP64
// oracle on the whole consistency grid in bf16 (layout, tiling, padding and epilogues). The real
// instructions run only where the CPU has AMX (then `cpu_amx` is checked by consistency_test.cpp
// like every registered implementation).
#include <catch2/catch.hpp>

#include "lib/kernels/cpu/cpu_moe.hpp"
#include "moe_bench/correctness.hpp"
#include "moe_bench/grid.hpp"
#include "moe_bench/problem.hpp"
#include "moe_bench/shape.hpp"

using namespace moe_bench;

TEST_CASE("the AMX kernels over the tile model match the oracle on the consistency grid") {
  auto kernel = cpu::make_amx_model_kernel();
  if (auto why = kernel->unavailable_reason()) {
    WARN("skipped: " << *why);
    return;
  }
  CHECK(kernel->can_run(make_shape(4, 2, 16, 8, 2), Dtype::kF32).has_value());  // bf16 only
  for (uint64_t seed : {1u, 7u}) {
    for (const NamedShape& ns : consistency_grid()) {
      INFO(ns.name << " | seed " << seed);
      Problem p = make_problem(ns.shape, Dtype::kBF16, seed);
      Oracle oracle(p);
      for (int threads : {1, 2}) {
        kernel->prepare(p, threads);
        kernel->run(0);
        const Correctness c = oracle.check(kernel->output(), kernel->selected_experts());
        CHECK(c.pass);
        CHECK(c.selection_mismatches == 0);
      }
    }
  }
  // Blocks of every row count 1..16 and reductions that end mid-step (d and f not multiples of
  // 32, odd ones included) in one shape each.
  for (int64_t tokens : {1, 5, 16, 17, 40}) {
    for (auto [d, f] : {std::pair<int64_t, int64_t>{33, 17}, {64, 96}, {100, 31}}) {
      INFO("T=" << tokens << " d=" << d << " f=" << f);
      Problem p = make_problem(make_shape(6, 2, d, f, tokens), Dtype::kBF16, 3);
      Oracle oracle(p);
      kernel->prepare(p, 2);
      kernel->run(0);
      CHECK(oracle.check(kernel->output(), kernel->selected_experts()).pass);
    }
  }
}
