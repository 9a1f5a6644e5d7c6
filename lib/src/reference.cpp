// The MoE layer's definition, in any accumulation type: FP64 is the oracle every result is
// checked against (correctness.cpp), FP32 the naive implementation (baselines/naive).
#include "moe_bench/reference.hpp"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "moe_bench/activation.hpp"
#include "moe_bench/dtype.hpp"

namespace moe_bench::reference {
namespace {

// y += weight * W2 act(W1 x, W3 x) for one expert of width f; w3 is null for GELU. The hidden
// activations are stored in `hidden` (the dtype), except in the FP64 oracle.
template <typename Acc>
void expert_ffn(const float* w1, const float* w3, const float* w2, int64_t d, int64_t f,
                Activation act, Dtype hidden, const Acc* x, Acc weight, Acc* h, Acc* y) {
  for (int64_t r = 0; r < f; ++r) {
    Acc g = 0, u = 0;
    for (int64_t i = 0; i < d; ++i) g += static_cast<Acc>(w1[r * d + i]) * x[i];
    if (w3 != nullptr) {
      for (int64_t i = 0; i < d; ++i) u += static_cast<Acc>(w3[r * d + i]) * x[i];
    }
    h[r] = activate(act, g, u);
    if constexpr (std::is_same_v<Acc, float>) h[r] = round_to(hidden, h[r]);
  }
  for (int64_t c = 0; c < d; ++c) {
    Acc acc = 0;
    for (int64_t r = 0; r < f; ++r) acc += static_cast<Acc>(w2[c * f + r]) * h[r];
    y[c] += weight * acc;
  }
}

}  // namespace

template <typename Acc>
void router_logits(const Problem& p, const LayerWeights& w, int64_t t, Acc* logits) {
  const Shape& s = p.shape;
  const float* x = p.x.data() + t * s.d_model;
  for (int64_t e = 0; e < s.experts; ++e) {
    Acc acc = 0;
    for (int64_t i = 0; i < s.d_model; ++i) {
      acc += static_cast<Acc>(w.wg[e * s.d_model + i]) * static_cast<Acc>(x[i]);
    }
    logits[e] = acc + static_cast<Acc>(w.logit_bias[e]);
  }
}

template <typename Acc>
void token_output(const Problem& p, const LayerWeights& w, int64_t t, const int32_t* experts,
                  const Acc* weights, const uint8_t* kept, Acc* y, Acc* scratch) {
  const Shape& s = p.shape;
  const int64_t d = s.d_model, f = s.d_ff;
  const bool gated = s.activation != Activation::kGelu;
  Acc* x = scratch;
  Acc* h = scratch + d;
  for (int64_t i = 0; i < d; ++i) x[i] = static_cast<Acc>(p.x[t * d + i]);
  std::fill(y, y + d, Acc(0));
  for (int64_t j = 0; j < s.top_k; ++j) {
    if (!kept[j]) continue;
    const int64_t e = experts[j];
    expert_ffn(w.w1.data() + e * f * d, gated ? w.w3.data() + e * f * d : nullptr,
               w.w2.data() + e * d * f, d, f, s.activation, p.dtype, x, weights[j], h, y);
  }
  if (s.shared_width() > 0) {
    expert_ffn(w.ws1.data(), gated ? w.ws3.data() : nullptr, w.ws2.data(), d, s.shared_width(),
               s.activation, p.dtype, x, Acc(1), h, y);
  }
  if constexpr (std::is_same_v<Acc, float>) round_all(p.dtype, y, d);
}

template <typename Acc>
BasicRouting<Acc> route_all(const Problem& p, int64_t layer, Acc* margins, Acc* logits_out) {
  const Shape& s = p.shape;
  const LayerWeights& w = p.layers[layer];
  BasicRouting<Acc> r;
  r.resize(s.tokens, s.top_k);
  std::vector<Acc> own_logits(logits_out ? 0 : static_cast<size_t>(s.experts));
  std::vector<Acc> scratch(static_cast<size_t>(2 * s.experts));
  for (int64_t t = 0; t < s.tokens; ++t) {
    Acc* logits = logits_out ? logits_out + t * s.experts : own_logits.data();
    router_logits(p, w, t, logits);
    Acc m =
        route_token(s.routing, logits, w.selection_bias.data(), s.experts, s.top_k,
                    r.expert.data() + t * s.top_k, r.weight.data() + t * s.top_k, scratch.data());
    if (margins != nullptr) margins[t] = m;
  }
  apply_capacity(s, r);
  return r;
}

template void router_logits<float>(const Problem&, const LayerWeights&, int64_t, float*);
template void router_logits<double>(const Problem&, const LayerWeights&, int64_t, double*);
template void token_output<float>(const Problem&, const LayerWeights&, int64_t, const int32_t*,
                                  const float*, const uint8_t*, float*, float*);
template void token_output<double>(const Problem&, const LayerWeights&, int64_t, const int32_t*,
                                   const double*, const uint8_t*, double*, double*);
template BasicRouting<float> route_all<float>(const Problem&, int64_t, float*, float*);
template BasicRouting<double> route_all<double>(const Problem&, int64_t, double*, double*);

}  // namespace moe_bench::reference
