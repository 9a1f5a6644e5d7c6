#include "moe_bench/shape.hpp"

#include <fmt/format.h>

#include <charconv>
#include <cmath>

#include "moe_bench/error.hpp"

namespace moe_bench {

std::string_view to_string(Activation a) {
  switch (a) {
    case Activation::kSwiglu:
      return "swiglu";
    case Activation::kGelu:
      return "gelu";
    case Activation::kSwigluOai:
      return "swiglu_oai";
  }
  return "?";
}

std::string_view to_string(Scoring s) {
  switch (s) {
    case Scoring::kSoftmax:
      return "softmax";
    case Scoring::kSigmoid:
      return "sigmoid";
    case Scoring::kSoftmaxTopk:
      return "topk_softmax";
  }
  return "?";
}

std::string_view to_string(Dtype d) {
  switch (d) {
    case Dtype::kF32:
      return "f32";
    case Dtype::kBF16:
      return "bf16";
    case Dtype::kF16:
      return "f16";
  }
  return "?";
}

std::string_view to_string(WeightFormat w) {
  switch (w) {
    case WeightFormat::kSame:
      return "same";
    case WeightFormat::kInt8:
      return "int8";
    case WeightFormat::kQ4:
      return "q4";
  }
  return "?";
}

std::string to_string(const Skew& s) {
  switch (s.kind) {
    case Skew::Kind::kUniform:
      return "uniform";
    case Skew::Kind::kZipf:
      return fmt::format("zipf:{:g}", s.param);
    case Skew::Kind::kHot:
      return fmt::format("hot:{:g}", s.param);
  }
  return "?";
}

std::string routing_label(const RoutingConfig& r) {
  std::string out{to_string(r.scoring)};
  if (r.selection_bias) out += "+bias";
  if (r.groups > 0) out += fmt::format(",groups {}->{}", r.groups, r.topk_groups);
  if (r.scoring != Scoring::kSoftmaxTopk) out += r.renormalize ? ",renorm" : ",no-renorm";
  if (r.scale != 1.0) out += fmt::format(",x{:g}", r.scale);
  return out;
}

Activation parse_activation(std::string_view s) {
  if (s == "swiglu") return Activation::kSwiglu;
  if (s == "gelu") return Activation::kGelu;
  if (s == "swiglu_oai") return Activation::kSwigluOai;
  throw UsageError(fmt::format("unknown activation '{}' (known: swiglu, gelu, swiglu_oai)", s));
}

Dtype parse_dtype(std::string_view s) {
  if (s == "f32") return Dtype::kF32;
  if (s == "bf16") return Dtype::kBF16;
  if (s == "f16") return Dtype::kF16;
  throw UsageError(fmt::format("unknown dtype '{}' (known: f32, bf16, f16)", s));
}

WeightFormat parse_weights(std::string_view s) {
  if (s == "same") return WeightFormat::kSame;
  if (s == "int8") return WeightFormat::kInt8;
  if (s == "q4") return WeightFormat::kQ4;
  throw UsageError(fmt::format("unknown weight format '{}' (known: same, int8, q4)", s));
}

namespace {
double parse_number(std::string_view text, std::string_view what) {
  double v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || ptr != text.data() + text.size() || !std::isfinite(v)) {
    throw UsageError(fmt::format("bad number '{}' in routing skew '{}'", text, what));
  }
  return v;
}
}  // namespace

Skew parse_skew(std::string_view s) {
  if (s == "uniform") return {};
  auto colon = s.find(':');
  std::string_view kind = s.substr(0, colon);
  if (colon == std::string_view::npos || (kind != "zipf" && kind != "hot")) {
    throw UsageError(fmt::format("unknown routing skew '{}' (known: uniform, zipf:S, hot:P)", s));
  }
  double v = parse_number(s.substr(colon + 1), s);
  if (kind == "zipf") {
    if (v <= 0 || v > 10)
      throw UsageError(fmt::format("zipf exponent in '{}' must be in (0, 10]", s));
    return {Skew::Kind::kZipf, v};
  }
  if (v <= 0 || v >= 1) throw UsageError(fmt::format("hot fraction in '{}' must be in (0, 1)", s));
  return {Skew::Kind::kHot, v};
}

int64_t dtype_bytes(Dtype d) { return d == Dtype::kF32 ? 4 : 2; }

namespace {
// Largest size of any one dimension; beyond this a "size" is a typo, not a model.
constexpr int64_t kMaxDim = int64_t{1} << 24;

bool mul_overflows(int64_t a, int64_t b, int64_t& out) {
  return __builtin_mul_overflow(a, b, &out);
}
}  // namespace

std::optional<std::string> invalid_reason(const Shape& s) {
  struct Named {
    const char* name;
    int64_t value;
  };
  for (Named n : {Named{"experts", s.experts}, Named{"top-k", s.top_k}, Named{"d-model", s.d_model},
                  Named{"d-ff", s.d_ff}, Named{"tokens", s.tokens}}) {
    if (n.value <= 0) return fmt::format("--{} must be positive (got {})", n.name, n.value);
    if (n.value > kMaxDim)
      return fmt::format("--{} {} is absurdly large (limit {})", n.name, n.value, kMaxDim);
  }
  if (s.top_k > s.experts) {
    return fmt::format("--top-k {} exceeds --experts {}", s.top_k, s.experts);
  }
  if (s.shared_experts < 0 || s.d_ff_shared < 0 || (s.shared_experts > 0 && s.d_ff_shared <= 0)) {
    return fmt::format("shared experts need a positive count and width (got {} x {})",
                       s.shared_experts, s.d_ff_shared);
  }
  if (!(s.capacity_factor >= 0) || s.capacity_factor > 1e6) {
    return fmt::format("--capacity-factor must be >= 0 (got {:g})", s.capacity_factor);
  }
  const auto& r = s.routing;
  if (r.groups < 0 || r.topk_groups < 0 ||
      (r.groups > 0 &&
       (s.experts % r.groups != 0 || r.topk_groups > r.groups || r.topk_groups <= 0))) {
    return fmt::format(
        "group-limited routing needs experts divisible by groups and 0 < top groups "
        "<= groups (got {} experts, {} groups, {} top groups)",
        s.experts, r.groups, r.topk_groups);
  }
  if (r.groups > 0 && s.top_k > r.topk_groups * (s.experts / r.groups)) {
    return fmt::format("--top-k {} exceeds the {} experts in the {} selected groups", s.top_k,
                       r.topk_groups * (s.experts / r.groups), r.topk_groups);
  }
  if (s.weights == WeightFormat::kQ4) {
    // Groups of 32 along every input dimension: d_model (W1, W3) and the expert widths (W2).
    for (Named n : {Named{"d-model", s.d_model}, Named{"d-ff", s.d_ff},
                    Named{"d-ff-shared", s.shared_experts > 0 ? s.d_ff_shared : 0}}) {
      if (n.value % kQ4Group != 0) {
        return fmt::format(
            "--weights q4 needs --{} a multiple of {} (got {}): q4 scales groups "
            "of {} weights along each input dimension",
            n.name, kQ4Group, n.value, kQ4Group);
      }
    }
  }
  if (s.skew.kind == Skew::Kind::kHot && s.experts < 2) {
    return "routing skew hot:P needs at least 2 experts";
  }
  // Every tensor's element count must fit in int64 with room for byte counts.
  int64_t t = 0;
  int64_t ffn = std::max(s.d_ff, s.shared_width());
  if (mul_overflows(s.experts, s.d_ff, t) || mul_overflows(t, s.d_model, t) ||
      mul_overflows(t, 3 * 8, t) || mul_overflows(s.tokens, s.d_model, t) ||
      mul_overflows(t, s.top_k * 8, t) || mul_overflows(s.tokens * s.top_k, ffn * 8, t)) {
    return fmt::format(
        "sizes overflow: {} experts x {} x {} with {} tokens is not a layer that "
        "fits any machine",
        s.experts, s.d_model, s.d_ff, s.tokens);
  }
  return std::nullopt;
}

int64_t expert_capacity(const Shape& s) {
  if (s.capacity_factor <= 0) return -1;
  double cap = std::ceil(s.capacity_factor * static_cast<double>(s.tokens * s.top_k) /
                         static_cast<double>(s.experts));
  return static_cast<int64_t>(cap);
}

namespace {
int64_t matrices(Activation a) { return a == Activation::kGelu ? 2 : 3; }
}  // namespace

double forward_flops(const Shape& s) {
  double t = static_cast<double>(s.tokens), d = static_cast<double>(s.d_model);
  double m = static_cast<double>(matrices(s.activation));
  double router = 2.0 * t * d * static_cast<double>(s.experts);
  double experts = 2.0 * t * static_cast<double>(s.top_k) * d * static_cast<double>(s.d_ff) * m;
  double shared = 2.0 * t * d * static_cast<double>(s.shared_width()) * m;
  return router + experts + shared;
}

int64_t stored_matrix_bytes(WeightFormat w, Dtype d, int64_t rows, int64_t cols) {
  switch (w) {
    case WeightFormat::kSame:
      return rows * cols * dtype_bytes(d);
    case WeightFormat::kInt8:
      return rows * cols + rows * 4;
    case WeightFormat::kQ4:
      return rows * cols / 2 + rows * (cols / kQ4Group) * 2;
  }
  return 0;
}

int64_t expert_weight_bytes(const Shape& s, Dtype d) {
  // W1 and W3: d_ff rows of d_model inputs; W2: d_model rows of d_ff inputs.
  return (matrices(s.activation) - 1) * stored_matrix_bytes(s.weights, d, s.d_ff, s.d_model) +
         stored_matrix_bytes(s.weights, d, s.d_model, s.d_ff);
}

namespace {
int64_t shared_weight_bytes(const Shape& s, Dtype d) {
  if (s.shared_width() == 0) return 0;
  // Fused into one FFN of width fs; q4 groups run along d_ff_shared, a divisor of fs.
  const int64_t fs = s.shared_width();
  return (matrices(s.activation) - 1) * stored_matrix_bytes(s.weights, d, fs, s.d_model) +
         stored_matrix_bytes(s.weights, d, s.d_model, fs);
}
}  // namespace

int64_t layer_weight_bytes(const Shape& s, Dtype d) {
  int64_t router = s.experts * s.d_model * dtype_bytes(d);
  return router + s.experts * expert_weight_bytes(s, d) + shared_weight_bytes(s, d);
}

double forward_bytes(const Shape& s, Dtype d, int64_t active_experts) {
  double b = static_cast<double>(dtype_bytes(d));
  double router = static_cast<double>(s.experts * s.d_model) * b;
  double shared = static_cast<double>(shared_weight_bytes(s, d));
  double experts =
      static_cast<double>(active_experts) * static_cast<double>(expert_weight_bytes(s, d));
  double io = 2.0 * static_cast<double>(s.tokens * s.d_model) * b;
  return router + shared + experts + io;
}

}  // namespace moe_bench
