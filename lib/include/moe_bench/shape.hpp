#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace moe_bench {

enum class Activation { kSwiglu, kGelu, kSwigluOai };
enum class Scoring {
  kSoftmax,      ///< softmax over all experts, select top-k of the probabilities
  kSigmoid,      ///< sigmoid per expert (DeepSeek-V3)
  kSoftmaxTopk,  ///< select top-k of the logits, softmax over the k (GPT-OSS)
};
/// Storage type of weights, activations and outputs; accumulation is always FP32.
enum class Dtype { kF32, kBF16, kF16 };
/// How the expert weights (routed and shared W1, W3, W2) are stored; the router is never
/// quantized. kSame: in the Dtype. kInt8: symmetric int8 per output channel, one f32 scale per
/// row. kQ4: symmetric 4-bit in groups of kQ4Group along the input dimension, one f16 scale per
/// group (the semantics of ggml's Q4_0). Activations stay in the Dtype (weight-only).
enum class WeightFormat { kSame, kInt8, kQ4 };
/// Weights per q4 scale, along a matrix's input dimension.
constexpr int64_t kQ4Group = 32;

/// How expert popularity is skewed: a per-expert logit bias makes the selection follow it.
struct Skew {
  enum class Kind { kUniform, kZipf, kHot };
  Kind kind = Kind::kUniform;
  double param = 0.0;  ///< zipf exponent S, or hot fraction P

  friend bool operator==(const Skew&, const Skew&) = default;
};

struct RoutingConfig {
  Scoring scoring = Scoring::kSoftmax;
  bool renormalize = true;      ///< selected weights rescaled to sum 1
  double scale = 1.0;           ///< routed scaling factor applied after renormalisation
  bool selection_bias = false;  ///< add a bias `bg` to the scores used for selection only
  int64_t groups = 0;           ///< group-limited routing: experts in this many groups (0 = off)
  int64_t topk_groups = 0;      ///< only this many best groups compete

  friend bool operator==(const RoutingConfig&, const RoutingConfig&) = default;
};

/// One MoE layer problem: sizes, routing and activation. Everything an implementation needs to
/// know besides the data itself.
struct Shape {
  std::string preset;  ///< empty for a custom shape
  int64_t experts = 8;
  int64_t top_k = 2;
  int64_t d_model = 1024;
  int64_t d_ff = 4096;
  int64_t tokens = 32;
  int64_t shared_experts = 0;  ///< always-active experts, each of width d_ff_shared
  int64_t d_ff_shared = 0;
  Activation activation = Activation::kSwiglu;
  RoutingConfig routing;
  Skew skew;
  double capacity_factor = 0.0;  ///< 0 = dropless
  WeightFormat weights = WeightFormat::kSame;

  /// Total width of the shared experts, which run as one fused expert.
  int64_t shared_width() const { return shared_experts * d_ff_shared; }
  friend bool operator==(const Shape&, const Shape&) = default;
};

std::string_view to_string(Activation a);
std::string_view to_string(Scoring s);
std::string_view to_string(Dtype d);
std::string_view to_string(WeightFormat w);
std::string to_string(const Skew& s);
/// Short description of the routing, e.g. "softmax,top-k,renorm" or "sigmoid+bias,groups
/// 8->4,x2.5".
std::string routing_label(const RoutingConfig& r);

/// Parse helpers throw UsageError with a message naming the bad value.
Activation parse_activation(std::string_view s);
Dtype parse_dtype(std::string_view s);
WeightFormat parse_weights(std::string_view s);
Skew parse_skew(std::string_view s);

/// Bytes per element of a dtype.
int64_t dtype_bytes(Dtype d);

/// Returns the reason a shape is invalid (zero sizes, k > E, overflow, ...), or nullopt.
std::optional<std::string> invalid_reason(const Shape& s);

/// Per-expert assignment cap for a capacity factor C > 0: ceil(C*T*k/E); -1 when dropless.
int64_t expert_capacity(const Shape& s);

/// FLOPs of one forward as the design counts them: router 2*T*d*E, experts 2*T*k*d*f*m,
/// shared experts 2*T*d*fs*m (m = 3 for SwiGLU, 2 for GELU).
double forward_flops(const Shape& s);
/// Bytes of a rows x cols weight matrix (quantized along cols) as stored: the dtype's bytes per
/// weight, or int8's one byte plus a 4-byte scale per row, or q4's half byte plus a 2-byte scale
/// per kQ4Group weights.
int64_t stored_matrix_bytes(WeightFormat w, Dtype d, int64_t rows, int64_t cols);
/// Bytes of one expert's weights (all its matrices) as stored (the shape's weight format).
int64_t expert_weight_bytes(const Shape& s, Dtype d);
/// Bytes of one layer's weights: router, every expert, shared experts.
int64_t layer_weight_bytes(const Shape& s, Dtype d);
/// Bytes moved by one forward: weights of every expert that got at least one token, router and
/// shared weights (as stored), plus x and y.
double forward_bytes(const Shape& s, Dtype d, int64_t active_experts);

}  // namespace moe_bench
