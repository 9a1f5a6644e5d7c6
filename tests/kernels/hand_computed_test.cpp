#include <catch2/catch.hpp>
#include <cmath>

#include "apps/moe-bench/registry.hpp"
#include "moe_bench/correctness.hpp"
#include "moe_bench/kernel.hpp"
#include "moe_bench/problem.hpp"

using namespace moe_bench;

namespace {

// T=2, E=4, k=2, d=2, f=2. Token 0 = [1,0] scores experts 0 and 1; token 1 = [0,1] scores 2 and 3.
// Every expert is W1 = I, W3 = c_e I, W2 = I, so expert e maps x to silu(x) * c_e * x.
Problem tiny_problem(bool renormalize) {
  Problem p;
  Shape& s = p.shape;
  s.experts = 4;
  s.top_k = 2;
  s.d_model = 2;
  s.d_ff = 2;
  s.tokens = 2;
  s.routing.renormalize = renormalize;
  p.x = {1, 0, 0, 1};
  LayerWeights w;
  w.wg = {2, 0, 1, 0, 0, 2, 0, 1};
  w.logit_bias.assign(4, 0.0f);
  w.selection_bias.assign(4, 0.0f);
  for (int e = 0; e < 4; ++e) {
    const float c = static_cast<float>(e + 1);
    w.w1.insert(w.w1.end(), {1, 0, 0, 1});
    w.w3.insert(w.w3.end(), {c, 0, 0, c});
    w.w2.insert(w.w2.end(), {1, 0, 0, 1});
  }
  p.layers.push_back(w);
  return p;
}

}  // namespace

TEST_CASE("every implementation reproduces a tiny layer computed by hand") {
  const bool renormalize = GENERATE(true, false);
  Problem p = tiny_problem(renormalize);
  const double e = std::exp(1.0);
  const double silu1 = 1.0 / (1.0 + std::exp(-1.0));
  // Softmax of logits [2,1,0,0]; the pair (2,1) renormalised is e/(e+1) and 1/(e+1).
  const double denom = renormalize ? e * e + e : e * e + e + 2.0;
  const double w_first = e * e / denom, w_second = e / denom;
  const double y0 = silu1 * (w_first * 1 + w_second * 2);  // experts 0 and 1 (c = 1, 2)
  const double y1 = silu1 * (w_first * 3 + w_second * 4);  // experts 2 and 3 (c = 3, 4)

  Oracle oracle(p);
  const auto& r = oracle.routing();
  CHECK(r.expert == std::vector<int32_t>{0, 1, 2, 3});
  CHECK(r.weight[0] == Approx(w_first).epsilon(1e-12));
  CHECK(r.weight[1] == Approx(w_second).epsilon(1e-12));

  for (const auto& entry : registry()) {
    auto kernel = entry.make();
    // (Quantized weights only, cpu_w8a8: quant_test.cpp checks its layer written out.)
    if (kernel->unavailable_reason() || kernel->refuses(p.shape, Dtype::kF32)) continue;
#if defined(__SANITIZE_ADDRESS__)
    // PyTorch peers take seconds to start and run the same Python in every build: the Release
    // suite checks them; the sanitized one keeps NumPy for the C++ side of the peers.
    if (kernel->self_timed() && std::string_view(entry.name) != "numpy") continue;
#endif
    INFO("implementation " << entry.name << ", renormalize " << renormalize);
    kernel->prepare(p, 1);
    kernel->run(0);
    auto y = kernel->output();
    REQUIRE(y.size() == 4);
    CHECK(y[0] == Approx(y0).epsilon(1e-6));
    CHECK(y[1] == Approx(0.0).margin(1e-7));
    CHECK(y[2] == Approx(0.0).margin(1e-7));
    CHECK(y[3] == Approx(y1).epsilon(1e-6));
    CHECK(oracle.check(y, kernel->selected_experts()).pass);
  }
}
