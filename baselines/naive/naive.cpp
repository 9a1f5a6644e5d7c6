#include "naive.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "moe_bench/reference.hpp"

namespace moe_bench::naive {

using reference::route_all;
using reference::token_output;

namespace {

// Naive FP32 timing stops being useful (and blocks a run for minutes) beyond this much work.
constexpr double kMaxTimedGflop = 0.25;

class NaiveKernel final : public Kernel {
 public:
  KernelInfo info() const override {
    return {"naive",
            "cpu",
            {Dtype::kF32, Dtype::kBF16, Dtype::kF16},
            "plain loops, one token at a time (the readable definition; FP64 twin is the oracle; "
            "quantized weights dequantized a row at a time as read)",
            0,
            {WeightFormat::kSame, WeightFormat::kInt8, WeightFormat::kQ4}};
  }

  std::optional<std::string> can_run(const Shape& s, Dtype) const override {
    double gflop = forward_flops(s) * 1e-9;
    if (gflop > kMaxTimedGflop) {
      return fmt::format(
          "{:.2f} GFLOP per call is beyond the naive time budget ({} GFLOP); the "
          "FP64 oracle still checks every result",
          gflop, kMaxTimedGflop);
    }
    return std::nullopt;
  }

  void prepare(const Problem& p, int) override {
    problem_ = &p;
    const Shape& s = p.shape;
    y_.assign(static_cast<size_t>(s.tokens * s.d_model), 0.0f);
    scratch_.assign(static_cast<size_t>(s.d_model + std::max(s.d_ff, s.shared_width())), 0.0f);
  }

  void run(int64_t layer) override {
    const Problem& p = *problem_;
    const Shape& s = p.shape;
    routing_ = route_all<float>(p, layer);
    for (int64_t t = 0; t < s.tokens; ++t) {
      const int64_t o = t * s.top_k;
      token_output(p, layer, t, routing_.expert.data() + o, routing_.weight.data() + o,
                   routing_.kept.data() + o, y_.data() + t * s.d_model, scratch_.data());
    }
  }

  std::span<const float> output() const override { return y_; }
  std::span<const int32_t> selected_experts() const override { return routing_.expert; }

 private:
  const Problem* problem_ = nullptr;
  Routing routing_;
  std::vector<float> y_;
  std::vector<float> scratch_;
};

}  // namespace

std::unique_ptr<Kernel> make_kernel() { return std::make_unique<NaiveKernel>(); }

}  // namespace moe_bench::naive
