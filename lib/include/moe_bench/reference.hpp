#pragma once

#include <cstdint>

#include "moe_bench/problem.hpp"
#include "moe_bench/routing.hpp"

/// The layer's definition, token by token, accumulated in Acc (float or double).
namespace moe_bench::reference {

/// Router logits of token t with the logit bias added, accumulated in Acc. Writes E values.
template <typename Acc>
void router_logits(const Problem& p, const LayerWeights& w, int64_t t, Acc* logits);

/// Output of token t with the weights of `layer`: the weighted sum of its kept experts' outputs
/// plus the shared experts, accumulated in Acc, a weight row at a time (MatrixRows: quantized
/// rows dequantized as they are read). `experts`, `weights` and `kept` hold the token's k
/// entries. `scratch` must hold d + max(f, fs) values.
template <typename Acc>
void token_output(const Problem& p, int64_t layer, int64_t t, const int32_t* experts,
                  const Acc* weights, const uint8_t* kept, Acc* y, Acc* scratch);

/// One expert's output for one token in FP64, before its routing weight: out[c] = (W2 act(W1 x,
/// W3 x))[c] over matrices held whole in FP32 (MatrixRows::all; w3 null for GELU), into `h` (f
/// values) and `out` (d). The same arithmetic as token_output<double>; `parallel`: over rows and
/// columns on all threads, which does not change a bit of it.
/// `quantize_hidden`: h is quantized to int8 by quantize_activations<double> before the down
/// projection, as the a8 implementations quantize it.
void expert_output(const float* w1, const float* w3, const float* w2, int64_t d, int64_t f,
                   Activation act, const double* x, double* h, double* out, bool parallel,
                   bool quantize_hidden = false);

/// Routes every token of the problem with weights of `layer` (logits, top-k, weights, capacity).
/// Writes the selection margins [T] and the logits [T,E] where those pointers are not null.
template <typename Acc>
BasicRouting<Acc> route_all(const Problem& p, int64_t layer, Acc* margins = nullptr,
                            Acc* logits = nullptr);

}  // namespace moe_bench::reference
