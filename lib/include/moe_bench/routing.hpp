#pragma once

#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "moe_bench/shape.hpp"

namespace moe_bench {

/// Routing decisions for T tokens: the k experts of each token in rank order, their combine
/// weights, and whether capacity kept each assignment.
template <typename W>
struct BasicRouting {
  int64_t tokens = 0;
  int64_t top_k = 0;
  std::vector<int32_t> expert;  ///< [T*k]
  std::vector<W> weight;        ///< [T*k]
  std::vector<uint8_t> kept;    ///< [T*k], 1 unless dropped by capacity
  int64_t dropped = 0;

  void resize(int64_t t, int64_t k) {
    tokens = t;
    top_k = k;
    expert.assign(t * k, 0);
    weight.assign(t * k, W(0));
    kept.assign(t * k, 1);
    dropped = 0;
  }
};
using Routing = BasicRouting<float>;

/// Routes one token. `logits` are the router logits with the logit bias already added;
/// `selection_bias` is bg (ignored unless the config asks for it). Writes k expert indices in
/// rank order and their weights; returns the selection margin: how far the k-th selection score
/// is above the best one not selected (+inf when k = E), used by the near-tie rule.
/// `scratch` must hold 2*E values.
template <typename T>
T route_token(const RoutingConfig& cfg, const T* logits, const float* selection_bias,
              int64_t experts, int64_t top_k, int32_t* out_expert, T* out_weight, T* scratch);

/// Weights for a given choice of k experts (the same rules as route_token); used when a near tie
/// lets an implementation pick differently. `scratch` must hold E values.
template <typename T>
void route_token_with(const RoutingConfig& cfg, const T* logits, int64_t experts, int64_t top_k,
                      const int32_t* chosen, T* out_weight, T* scratch);

/// Router probabilities used by the auxiliary loss: softmax of the logits (normalised sigmoid
/// scores for sigmoid routing). Writes E values.
template <typename T>
void router_probabilities(const RoutingConfig& cfg, const T* logits, int64_t experts, T* out);

/// Drops assignments beyond each expert's capacity, in token order then rank order; sets `kept`
/// and `dropped`. Keeps every assignment when the shape is dropless. `used_before`: assignments to
/// each expert that tokens before these already claimed (expert parallelism: the lower ranks'
/// tokens), empty for none.
template <typename W>
void apply_capacity(const Shape& shape, BasicRouting<W>& routing,
                    std::span<const int64_t> used_before = {});

/// Realised expert load of a routing.
struct Load {
  std::vector<int64_t> tokens_per_expert;  ///< kept assignments per expert
  double imbalance = 0;                    ///< max / mean of tokens_per_expert
  int64_t dropped = 0;
  double aux_loss = 0;  ///< Switch auxiliary loss E * sum_e f_e * P_e
  int64_t active_experts = 0;
};

}  // namespace moe_bench
