#include "moe_bench/grid.hpp"

namespace moe_bench {
Shape make_shape(int64_t experts, int64_t top_k, int64_t d_model, int64_t d_ff, int64_t tokens) {
  Shape s;
  s.experts = experts;
  s.top_k = top_k;
  s.d_model = d_model;
  s.d_ff = d_ff;
  s.tokens = tokens;
  return s;
}

namespace {
constexpr auto make = make_shape;
}  // namespace

std::vector<NamedShape> consistency_grid() {
  std::vector<NamedShape> grid;
  grid.push_back({"one token", make(8, 2, 64, 96, 1)});
  grid.push_back({"sizes not multiples of 8 or 16", make(5, 2, 37, 23, 13)});
  grid.push_back({"k equals E", make(4, 4, 24, 40, 9)});
  grid.push_back({"odd reductions longer than one cache chunk", make(4, 2, 1101, 601, 14)});
  grid.push_back({"experts that receive no token", make(32, 2, 32, 48, 3)});
  Shape hot = make(4, 1, 32, 48, 17);
  hot.skew = {Skew::Kind::kHot, 0.9999};
  grid.push_back({"every token to one expert", hot});
  Shape zipf = make(16, 4, 48, 64, 40);
  zipf.skew = {Skew::Kind::kZipf, 1.2};
  grid.push_back({"zipf skew", zipf});
  Shape capacity = make(8, 2, 32, 40, 64);
  capacity.skew = {Skew::Kind::kZipf, 1.5};
  capacity.capacity_factor = 1.0;
  grid.push_back({"capacity dropping", capacity});
  Shape gelu = make(8, 1, 40, 72, 20);
  gelu.activation = Activation::kGelu;
  gelu.routing.renormalize = false;
  grid.push_back({"gelu top-1 without renormalisation", gelu});
  Shape oai = make(8, 4, 48, 48, 12);
  oai.activation = Activation::kSwigluOai;
  oai.routing.scoring = Scoring::kSoftmaxTopk;
  grid.push_back({"gpt-oss routing and clamped swiglu", oai});
  Shape ds = make(32, 4, 40, 24, 10);
  ds.routing = {Scoring::kSigmoid, true, 2.5, true, 8, 4};
  ds.shared_experts = 1;
  ds.d_ff_shared = 24;
  grid.push_back({"deepseek-v3 style sigmoid, groups, bias, shared expert", ds});
  Shape shared = make(16, 6, 32, 20, 7);
  shared.routing.renormalize = false;
  shared.shared_experts = 2;
  shared.d_ff_shared = 20;
  grid.push_back({"two shared experts", shared});
  return grid;
}

}  // namespace moe_bench
