#include "moe_bench/routing.hpp"

#include <algorithm>
#include <cmath>

namespace moe_bench {
namespace {

// Index of the largest value among allowed entries; ties go to the lower index.
template <typename T>
int64_t argmax_allowed(const T* v, const uint8_t* allowed, int64_t n) {
  int64_t best = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (allowed[i] && (best < 0 || v[i] > v[best])) best = i;
  }
  return best;
}

template <typename T>
void compute_scores(const RoutingConfig& cfg, const T* logits, int64_t experts, T* score) {
  switch (cfg.scoring) {
    case Scoring::kSoftmax: {
      T m = *std::max_element(logits, logits + experts);
      T sum = 0;
      for (int64_t e = 0; e < experts; ++e) sum += score[e] = std::exp(logits[e] - m);
      for (int64_t e = 0; e < experts; ++e) score[e] /= sum;
      break;
    }
    case Scoring::kSigmoid:
      for (int64_t e = 0; e < experts; ++e) score[e] = T(1) / (T(1) + std::exp(-logits[e]));
      break;
    case Scoring::kSoftmaxTopk:
      std::copy(logits, logits + experts, score);
      break;
  }
}

// Combine weights of the chosen experts from their scores: renormalised, softmaxed over the k
// (GPT-OSS) and scaled as the config says.
template <typename T>
void combine_weights(const RoutingConfig& cfg, const T* score, const int32_t* chosen, int64_t top_k,
                     T* out_weight) {
  if (cfg.scoring == Scoring::kSoftmaxTopk) {
    // The largest chosen logit (not necessarily the first when an implementation's near-tie
    // choice is being weighed) keeps exp() in range.
    T m = score[chosen[0]];
    for (int64_t j = 1; j < top_k; ++j) m = std::max(m, score[chosen[j]]);
    T sum = 0;
    for (int64_t j = 0; j < top_k; ++j) sum += out_weight[j] = std::exp(score[chosen[j]] - m);
    for (int64_t j = 0; j < top_k; ++j) out_weight[j] /= sum;
  } else {
    T sum = 0;
    for (int64_t j = 0; j < top_k; ++j) sum += out_weight[j] = score[chosen[j]];
    if (cfg.renormalize && sum > T(0)) {
      for (int64_t j = 0; j < top_k; ++j) out_weight[j] /= sum;
    }
  }
  if (cfg.scale != 1.0) {
    for (int64_t j = 0; j < top_k; ++j) out_weight[j] *= static_cast<T>(cfg.scale);
  }
}

}  // namespace

template <typename T>
T route_token(const RoutingConfig& cfg, const T* logits, const float* selection_bias,
              int64_t experts, int64_t top_k, int32_t* out_expert, T* out_weight, T* scratch) {
  T* score = scratch;             // what the weights come from
  T* select = scratch + experts;  // what selection ranks
  compute_scores(cfg, logits, experts, score);
  for (int64_t e = 0; e < experts; ++e) {
    select[e] = score[e] + (cfg.selection_bias ? static_cast<T>(selection_bias[e]) : T(0));
  }

  // Allowed experts: all, or those of the best groups under group-limited routing.
  constexpr int64_t kMaxExperts = 4096;
  uint8_t allowed_buf[kMaxExperts];
  std::vector<uint8_t> allowed_heap;
  uint8_t* allowed = allowed_buf;
  if (experts > kMaxExperts) {
    allowed_heap.resize(static_cast<size_t>(experts));
    allowed = allowed_heap.data();
  }
  std::fill(allowed, allowed + experts, uint8_t{1});
  T margin = std::numeric_limits<T>::infinity();
  if (cfg.groups > 0) {
    const int64_t per_group = experts / cfg.groups;
    std::vector<T> group_score(static_cast<size_t>(cfg.groups));
    for (int64_t g = 0; g < cfg.groups; ++g) {
      // A group scores the sum of its top-2 selection scores.
      const T* v = select + g * per_group;
      T first = -std::numeric_limits<T>::infinity(), second = first;
      for (int64_t i = 0; i < per_group; ++i) {
        if (v[i] > first) {
          second = first;
          first = v[i];
        } else if (v[i] > second) {
          second = v[i];
        }
      }
      group_score[g] = per_group >= 2 ? first + second : first;
    }
    std::vector<uint8_t> group_free(static_cast<size_t>(cfg.groups), 1);
    std::fill(allowed, allowed + experts, uint8_t{0});
    T last_group = 0;
    for (int64_t j = 0; j < cfg.topk_groups; ++j) {
      int64_t g = argmax_allowed(group_score.data(), group_free.data(), cfg.groups);
      group_free[g] = 0;
      last_group = group_score[g];
      std::fill(allowed + g * per_group, allowed + (g + 1) * per_group, uint8_t{1});
    }
    int64_t next = argmax_allowed(group_score.data(), group_free.data(), cfg.groups);
    if (next >= 0) margin = last_group - group_score[next];
  }

  T last = 0;
  for (int64_t j = 0; j < top_k; ++j) {
    int64_t e = argmax_allowed(select, allowed, experts);
    out_expert[j] = static_cast<int32_t>(e);
    allowed[e] = 0;
    last = select[e];
  }
  int64_t next = argmax_allowed(select, allowed, experts);
  if (next >= 0) margin = std::min(margin, last - select[next]);

  combine_weights(cfg, score, out_expert, top_k, out_weight);
  return margin;
}

template <typename T>
void route_token_with(const RoutingConfig& cfg, const T* logits, int64_t experts, int64_t top_k,
                      const int32_t* chosen, T* out_weight, T* scratch) {
  compute_scores(cfg, logits, experts, scratch);
  combine_weights(cfg, scratch, chosen, top_k, out_weight);
}

template <typename T>
void router_probabilities(const RoutingConfig& cfg, const T* logits, int64_t experts, T* out) {
  if (cfg.scoring == Scoring::kSigmoid) {
    T sum = 0;
    for (int64_t e = 0; e < experts; ++e) sum += out[e] = T(1) / (T(1) + std::exp(-logits[e]));
    for (int64_t e = 0; e < experts; ++e) out[e] /= sum;
    return;
  }
  T m = *std::max_element(logits, logits + experts);
  T sum = 0;
  for (int64_t e = 0; e < experts; ++e) sum += out[e] = std::exp(logits[e] - m);
  for (int64_t e = 0; e < experts; ++e) out[e] /= sum;
}

template <typename W>
void apply_capacity(const Shape& shape, BasicRouting<W>& r, std::span<const int64_t> used_before) {
  std::fill(r.kept.begin(), r.kept.end(), uint8_t{1});
  r.dropped = 0;
  const int64_t cap = expert_capacity(shape);
  if (cap < 0) return;
  std::vector<int64_t> used(static_cast<size_t>(shape.experts), 0);
  std::copy(used_before.begin(), used_before.end(), used.begin());
  for (int64_t i = 0; i < r.tokens * r.top_k; ++i) {
    int32_t e = r.expert[i];
    if (used[e] < cap) {
      ++used[e];
    } else {
      r.kept[i] = 0;
      ++r.dropped;
    }
  }
}

template float route_token<float>(const RoutingConfig&, const float*, const float*, int64_t,
                                  int64_t, int32_t*, float*, float*);
template double route_token<double>(const RoutingConfig&, const double*, const float*, int64_t,
                                    int64_t, int32_t*, double*, double*);
template void route_token_with<float>(const RoutingConfig&, const float*, int64_t, int64_t,
                                      const int32_t*, float*, float*);
template void route_token_with<double>(const RoutingConfig&, const double*, int64_t, int64_t,
                                       const int32_t*, double*, double*);
template void router_probabilities<float>(const RoutingConfig&, const float*, int64_t, float*);
template void router_probabilities<double>(const RoutingConfig&, const double*, int64_t, double*);
template void apply_capacity<float>(const Shape&, BasicRouting<float>&, std::span<const int64_t>);
template void apply_capacity<double>(const Shape&, BasicRouting<double>&, std::span<const int64_t>);

}  // namespace moe_bench
