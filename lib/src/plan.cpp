#include "moe_bench/plan.hpp"

#include <fmt/format.h>

#include <thread>

#include "moe_bench/error.hpp"
#include "moe_bench/presets.hpp"
#include "moe_bench/sysinfo.hpp"

namespace moe_bench {
namespace {

struct Base {
  Shape shape;
  std::vector<int64_t> tokens;
};

// Replaces each base with one copy per value of the axis (when the axis was given).
template <typename T, typename Set>
void expand(std::vector<Base>& bases, const std::vector<T>& values, Set set) {
  if (values.empty()) return;
  std::vector<Base> out;
  for (const Base& b : bases) {
    for (const T& v : values) {
      Base n = b;
      set(n, v);
      out.push_back(n);
    }
  }
  bases = std::move(out);
}

double gib(int64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0); }

}  // namespace

int64_t layer_held_bytes(const Shape& s, Dtype d) {
  // A quantized layer holds its codes a byte a weight and their scales as floats (QuantMatrix):
  // int8 as stored, q4 about twice its stored nibbles and f16 scales.
  return s.weights == WeightFormat::kQ4 ? 2 * layer_weight_bytes(s, d) : layer_weight_bytes(s, d);
}

int64_t case_memory_bytes(const Case& c, int64_t layers) {
  const Shape& s = c.shape;
  const int64_t b = dtype_bytes(c.dtype);
  const int64_t width = std::max(s.d_ff, s.shared_width());
  // x, y, gathered x, expert output, gate and up, logits, plus the oracle's FP64 logits.
  const int64_t work = s.tokens * (4 * s.d_model + 2 * width) * b + s.tokens * s.experts * 24;
  // A quantized case's oracles (its own and the unquantized twin's, which measures what
  // quantizing cost) hold one expert's matrices in f32 at a time (correctness.cpp).
  Shape same = s;
  same.weights = WeightFormat::kSame;
  same.d_ff = width;
  const int64_t oracle =
      s.weights == WeightFormat::kSame ? 0 : expert_weight_bytes(same, Dtype::kF32);
  return layers * layer_held_bytes(s, c.dtype) + oracle + work;
}

std::vector<Case> plan_cases(const Axes& a) {
  const bool shape_axis = !a.experts.empty() || !a.top_k.empty() || !a.d_model.empty() ||
                          !a.d_ff.empty() || !a.tokens.empty();
  std::vector<Base> bases;
  if (!a.presets.empty()) {
    if (!a.workloads.empty()) throw UsageError("--preset and --workload cannot be combined");
    for (const auto& name : a.presets) bases.push_back({find_preset(name).shape, {1, 32}});
  } else if (!a.workloads.empty() || !shape_axis) {
    std::vector<std::string> names = a.workloads;
    if (names.empty()) {
      for (const auto& w : standard_workloads()) names.push_back(w.name);
    }
    for (const auto& name : names) {
      const Workload& w = find_workload(name);
      bases.push_back({w.shape, {w.tokens.begin(), w.tokens.end()}});
    }
  } else {
    bases.push_back({Shape{}, {32}});
  }

  expand(bases, a.experts, [](Base& b, int64_t v) { b.shape.experts = v; });
  expand(bases, a.top_k, [](Base& b, int64_t v) { b.shape.top_k = v; });
  expand(bases, a.d_model, [](Base& b, int64_t v) { b.shape.d_model = v; });
  expand(bases, a.d_ff, [](Base& b, int64_t v) {
    b.shape.d_ff = v;
    if (b.shape.shared_experts > 0) b.shape.d_ff_shared = v;
  });
  if (!a.tokens.empty()) {
    for (Base& b : bases) b.tokens = a.tokens;
  }
  if (a.activation) {
    const Activation act = parse_activation(*a.activation);
    for (Base& b : bases) b.shape.activation = act;
  }
  std::vector<Skew> skews;
  for (const auto& r : a.routing) skews.push_back(parse_skew(r));
  expand(bases, skews, [](Base& b, const Skew& v) { b.shape.skew = v; });
  expand(bases, a.capacity_factor, [](Base& b, double v) { b.shape.capacity_factor = v; });
  std::vector<WeightFormat> formats;
  for (const auto& w : a.weights) formats.push_back(parse_weights(w));
  expand(bases, formats, [](Base& b, WeightFormat v) { b.shape.weights = v; });

  std::vector<Dtype> dtypes;
  for (const auto& d : a.dtypes) dtypes.push_back(parse_dtype(d));
  if (dtypes.empty()) dtypes.push_back(Dtype::kF32);
  std::vector<int> threads = a.threads;
  if (threads.empty())
    threads.push_back(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  for (int t : threads) {
    if (t <= 0 || t > 4096)
      throw UsageError(fmt::format("--threads must be in 1..4096 (got {})", t));
  }

  const int64_t available = memory_available_bytes();
  std::vector<Case> cases;
  for (const Base& b : bases) {
    for (int64_t tokens : b.tokens) {
      for (Dtype dtype : dtypes) {
        for (int t : threads) {
          Case c{b.shape, dtype, t, a.seed};
          c.shape.tokens = tokens;
          if (auto why = invalid_reason(c.shape)) throw UsageError(*why);
          const int64_t need =
              case_memory_bytes(c) + a.extra_weight_copies * layer_weight_bytes(c.shape, dtype);
          // Leave a tenth of the available memory for everything else.
          if (available > 0 && static_cast<double>(need) > 0.9 * static_cast<double>(available)) {
            throw UsageError(fmt::format(
                "{} at {} tokens needs {:.1f} GiB in {} (weights, {} extra cop{} the chosen "
                "implementations keep, {}work space) but only {:.1f} GiB is available; try fewer "
                "experts (--experts){}",
                c.shape.preset.empty() ? "this shape" : "preset " + c.shape.preset, tokens,
                gib(need), to_string(dtype), a.extra_weight_copies,
                a.extra_weight_copies == 1 ? "y" : "ies",
                c.shape.weights == WeightFormat::kSame ? "" : "one expert in f32 for the oracles, ",
                gib(available), dtype == Dtype::kF32 ? " or --dtype bf16" : " or fewer tokens"));
          }
          cases.push_back(c);
        }
      }
    }
  }
  return cases;
}

}  // namespace moe_bench
