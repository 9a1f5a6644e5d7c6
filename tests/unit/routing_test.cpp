#include "moe_bench/routing.hpp"

#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

using namespace moe_bench;

namespace {

struct Routed {
  std::vector<int32_t> expert;
  std::vector<double> weight;
  double margin;
};

Routed route(const RoutingConfig& cfg, std::vector<double> logits, int64_t k,
             std::vector<float> bias = {}) {
  const auto e = static_cast<int64_t>(logits.size());
  if (bias.empty()) bias.assign(static_cast<size_t>(e), 0.0f);
  Routed r{std::vector<int32_t>(k), std::vector<double>(k), 0};
  std::vector<double> scratch(2 * e);
  r.margin = route_token(cfg, logits.data(), bias.data(), e, k, r.expert.data(), r.weight.data(),
                         scratch.data());
  return r;
}

}  // namespace

TEST_CASE("top-k ties go to the lower expert index") {
  RoutingConfig cfg;
  auto r = route(cfg, {0.5, 1.0, 1.0, 1.0, 0.2}, 2);
  CHECK(r.expert == std::vector<int32_t>{1, 2});
  CHECK(r.margin == 0.0);
  CHECK(r.weight[0] == Approx(0.5));
}

TEST_CASE("renormalisation rescales the selected softmax scores to sum 1") {
  RoutingConfig cfg;
  std::vector<double> logits{std::log(4.0), std::log(3.0), std::log(2.0), std::log(1.0)};
  auto on = route(cfg, logits, 2);
  CHECK(on.expert == std::vector<int32_t>{0, 1});
  CHECK(on.weight[0] == Approx(4.0 / 7.0));
  CHECK(on.weight[1] == Approx(3.0 / 7.0));
  cfg.renormalize = false;
  auto off = route(cfg, logits, 2);
  CHECK(off.weight[0] == Approx(0.4));
  CHECK(off.weight[1] == Approx(0.3));
  // The selection margin: third score 0.2 against the second 0.3.
  CHECK(off.margin == Approx(0.1));
}

TEST_CASE("the routed scaling factor multiplies the renormalised weights") {
  RoutingConfig cfg;
  cfg.scale = 2.5;
  auto r = route(cfg, {std::log(3.0), std::log(1.0), -50}, 2);
  CHECK(r.weight[0] == Approx(2.5 * 0.75));
  CHECK(r.weight[1] == Approx(2.5 * 0.25));
}

TEST_CASE("sigmoid routing selects on biased scores but weighs with unbiased ones") {
  RoutingConfig cfg{Scoring::kSigmoid, true, 1.0, true, 0, 0};
  // Unbiased, expert 0 wins; the selection bias makes experts 1 and 2 win.
  auto r = route(cfg, {2.0, 0.0, -1.0}, 2, {0.0f, 0.5f, 0.9f});
  CHECK(r.expert == std::vector<int32_t>{2, 1});
  const double s1 = 1 / (1 + std::exp(0.0)), s2 = 1 / (1 + std::exp(1.0));
  CHECK(r.weight[0] == Approx(s2 / (s1 + s2)));
  CHECK(r.weight[1] == Approx(s1 / (s1 + s2)));
}

TEST_CASE("group-limited routing only picks experts of the best groups") {
  // 4 groups of 2; a group scores the sum of its top-2 selection scores (score + bias).
  RoutingConfig cfg{Scoring::kSigmoid, false, 1.0, true, 4, 2};
  std::vector<float> bias{0.1f, 0.2f, 0.9f, 0.2f, 0.8f, 0.8f, 0.1f, 0.1f};
  std::vector<double> logits(8, -100.0);  // unbiased scores ~0: selection is the bias alone
  logits[0] = 100.0;  // score 1 + bias 0.1 = 1.1: group 0 scores 1.3, beats group 1 (1.1)
  auto r = route(cfg, logits, 3, bias);
  // Groups 2 (1.6) and 0 (1.3) compete; expert 2 (0.9, group 1) is excluded.
  CHECK(r.expert == std::vector<int32_t>{0, 4, 5});
}

TEST_CASE("gpt-oss routing takes the top-k logits and softmaxes over them") {
  RoutingConfig cfg{Scoring::kSoftmaxTopk, true, 1.0, false, 0, 0};
  auto r = route(cfg, {1.0, 3.0, 2.0, -4.0}, 2);
  CHECK(r.expert == std::vector<int32_t>{1, 2});
  CHECK(r.weight[0] == Approx(std::exp(1.0) / (std::exp(1.0) + 1.0)));
  CHECK(r.margin == Approx(1.0));
}

TEST_CASE("capacity drops assignments beyond ceil(C*T*k/E) in token order") {
  Shape s;
  s.experts = 4;
  s.top_k = 1;
  s.tokens = 6;
  s.capacity_factor = 1.0;  // cap = ceil(6/4) = 2
  REQUIRE(expert_capacity(s) == 2);
  BasicRouting<float> r;
  r.resize(6, 1);
  r.expert = {0, 0, 1, 0, 0, 2};
  apply_capacity(s, r);
  CHECK(r.kept == std::vector<uint8_t>{1, 1, 1, 0, 0, 1});
  CHECK(r.dropped == 2);
  s.capacity_factor = 0;
  apply_capacity(s, r);
  CHECK(r.dropped == 0);
  CHECK(expert_capacity(s) == -1);
}
