// The MoE layer's definition, in any accumulation type: FP64 is the oracle every result is
// checked against (correctness.cpp), FP32 the naive implementation (baselines/naive).
#include "moe_bench/reference.hpp"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "moe_bench/activation.hpp"
#include "moe_bench/dtype.hpp"
#include "moe_bench/quant.hpp"

namespace moe_bench::reference {
namespace {

// One row of an expert's hidden layer: act(W1[r] x, W3[r] x), rounded to `hidden` (the dtype)
// except in the FP64 oracle; w3r is null for GELU.
template <typename Acc>
Acc hidden_at(const float* w1r, const float* w3r, int64_t d, Activation act, Dtype hidden,
              const Acc* x) {
  Acc g = 0, u = 0;
  for (int64_t i = 0; i < d; ++i) g += static_cast<Acc>(w1r[i]) * x[i];
  if (w3r != nullptr) {
    for (int64_t i = 0; i < d; ++i) u += static_cast<Acc>(w3r[i]) * x[i];
  }
  Acc h = activate(act, g, u);
  if constexpr (std::is_same_v<Acc, float>) h = round_to(hidden, h);
  return h;
}

// One output column of an expert before its routing weight: W2[c] h.
template <typename Acc>
Acc output_at(const float* w2r, int64_t f, const Acc* h) {
  Acc acc = 0;
  for (int64_t r = 0; r < f; ++r) acc += static_cast<Acc>(w2r[r]) * h[r];
  return acc;
}

// y += weight * W2 act(W1 x, W3 x) for one expert (`expert` -1: the shared ones), a row at a
// time: quantized rows are dequantized as they are read, into `rows` (3 x max(d, width)).
template <typename Acc>
void expert_ffn(const Problem& p, int64_t layer, int64_t expert, const Acc* x, Acc weight, Acc* h,
                Acc* y, float* rows) {
  const Shape& s = p.shape;
  const MatrixRows w1(p, layer, ExpertMatrix::kW1, expert);
  const MatrixRows w3(p, layer, ExpertMatrix::kW3, expert);
  const MatrixRows w2(p, layer, ExpertMatrix::kW2, expert);
  const int64_t d = s.d_model, f = w1.rows(), span = std::max(d, f);
  for (int64_t r = 0; r < f; ++r) {
    const float* w3r = w3.empty() ? nullptr : w3.row(r, rows + span);
    h[r] = hidden_at(w1.row(r, rows), w3r, d, s.activation, p.dtype, x);
  }
  for (int64_t c = 0; c < d; ++c) y[c] += weight * output_at(w2.row(c, rows + 2 * span), f, h);
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
void token_output(const Problem& p, int64_t layer, int64_t t, const int32_t* experts,
                  const Acc* weights, const uint8_t* kept, Acc* y, Acc* scratch) {
  const Shape& s = p.shape;
  const int64_t d = s.d_model;
  thread_local std::vector<float> rows;
  rows.resize(static_cast<size_t>(3 * std::max({d, s.d_ff, s.shared_width()})));
  Acc* x = scratch;
  Acc* h = scratch + d;
  for (int64_t i = 0; i < d; ++i) x[i] = static_cast<Acc>(p.x[t * d + i]);
  std::fill(y, y + d, Acc(0));
  for (int64_t j = 0; j < s.top_k; ++j) {
    if (kept[j]) expert_ffn(p, layer, experts[j], x, weights[j], h, y, rows.data());
  }
  if (s.shared_width() > 0) expert_ffn(p, layer, -1, x, Acc(1), h, y, rows.data());
  if constexpr (std::is_same_v<Acc, float>) round_all(p.dtype, y, d);
}

void expert_output(const float* w1, const float* w3, const float* w2, int64_t d, int64_t f,
                   Activation act, const double* x, double* h, double* out, bool parallel,
                   bool quantize_hidden) {
#pragma omp parallel if (parallel)
  {
#pragma omp for schedule(static)
    for (int64_t r = 0; r < f; ++r) {
      h[r] = hidden_at(w1 + r * d, w3 != nullptr ? w3 + r * d : nullptr, d, act, Dtype::kF32, x);
    }
    if (quantize_hidden) {
#pragma omp single
      {
        std::vector<int8_t> codes(static_cast<size_t>(f));
        const double scale = quantize_activations(h, f, codes.data());
        for (int64_t r = 0; r < f; ++r) h[r] = codes[r] * scale;
      }
    }
#pragma omp for schedule(static)
    for (int64_t c = 0; c < d; ++c) out[c] = output_at(w2 + c * f, f, h);
  }
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
template void token_output<float>(const Problem&, int64_t, int64_t, const int32_t*, const float*,
                                  const uint8_t*, float*, float*);
template void token_output<double>(const Problem&, int64_t, int64_t, const int32_t*, const double*,
                                   const uint8_t*, double*, double*);
template BasicRouting<float> route_all<float>(const Problem&, int64_t, float*, float*);
template BasicRouting<double> route_all<double>(const Problem&, int64_t, double*, double*);

}  // namespace moe_bench::reference
