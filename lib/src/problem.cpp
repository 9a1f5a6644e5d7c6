#include "moe_bench/problem.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <numbers>
#include <numeric>

#include "moe_bench/dtype.hpp"

namespace moe_bench {
namespace {

uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// ln(u) for u in (0, 1], in FP32 arithmetic only: u = m 2^e with m in [sqrt(1/2), sqrt(2)), and
// ln(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.172, as its series to s^9 (the next term
// is below 2e-9 of the result). No library call, so the generator's loop vectorises, and the same
// operations give the same bits on every machine (this file is compiled without FP contraction).
inline float log_unit(float u) {
  uint32_t bits = std::bit_cast<uint32_t>(u);
  // Scale by 2 when the mantissa is at or above sqrt(2), so that m falls in [sqrt(1/2), sqrt(2)).
  bits += 0x3f800000u - 0x3f3504f3u;
  const int32_t e = static_cast<int32_t>(bits >> 23) - 127;
  const float m = std::bit_cast<float>((bits & 0x007fffffu) + 0x3f3504f3u);
  const float s = (m - 1.0f) / (m + 1.0f);
  const float s2 = s * s;
  const float series =
      1.0f + s2 * (1.0f / 3 + s2 * (1.0f / 5 + s2 * (1.0f / 7 + s2 * (1.0f / 9))));
  return static_cast<float>(e) * std::numbers::ln2_v<float> + 2.0f * s * series;
}

// cos and sin of 2 pi t for t in [0, 1): t = (j + f) / 4 with j the nearest quarter turn and
// |f| <= 1/2, so the angle's remainder is |(pi / 2) f| <= pi / 4, where the Taylor series to the
// 10th power is exact to float; then turned by j quarter turns.
inline void cos_sin_turn(float t, float& c, float& s) {
  const float q = 4.0f * t;
  const int32_t j = static_cast<int32_t>(q + 0.5f);  // q >= 0: truncation rounds
  const float a = (q - static_cast<float>(j)) * std::numbers::pi_v<float> * 0.5f;
  const float a2 = a * a;
  const float sa = a * (1.0f - a2 * (1.0f / 6) *
                                   (1.0f - a2 * (1.0f / 20) *
                                               (1.0f - a2 * (1.0f / 42) * (1.0f - a2 * (1.0f / 72)))));
  const float ca =
      1.0f - a2 * 0.5f *
                 (1.0f - a2 * (1.0f / 12) *
                             (1.0f - a2 * (1.0f / 30) *
                                         (1.0f - a2 * (1.0f / 56) * (1.0f - a2 * (1.0f / 90)))));
  const bool odd = (j & 1) != 0, back = (j & 2) != 0;  // a quarter turn; a half turn
  const float x = odd ? -sa : ca, y = odd ? ca : sa;
  c = back ? -x : x;
  s = back ? -y : y;
}

// Streams that name each tensor, so that adding a layer or a tensor never changes another.
enum Stream : uint64_t { kX = 0, kWg, kW1, kW3, kW2, kWs1, kWs3, kWs2, kSelBias, kStreamsPerLayer };

uint64_t layer_stream(int64_t layer, Stream s) {
  return 1 + static_cast<uint64_t>(layer) * kStreamsPerLayer + s;
}

std::vector<float> normal(int64_t n, double stddev, uint64_t seed, uint64_t stream) {
  std::vector<float> v(static_cast<size_t>(n));
  fill_normal(v.data(), n, stddev, seed, stream);
  return v;
}

// Box-Muller on one 64-bit hash of the pair's counter: its top 24 bits give u1 in (0, 1] (never
// 0, so the logarithm is finite; the largest |value| is 5.77 sigma), its low 24 bits u2 in [0, 1).
// Single precision throughout: the values are stored as FP32.
inline void normal_pair(uint64_t key, int64_t p, float sd, float& a, float& b) {
  const uint64_t h = splitmix64(key + 2 * static_cast<uint64_t>(p));
  const float u1 = static_cast<float>(static_cast<int32_t>(h >> 40) + 1) * 0x1.0p-24f;
  const float u2 = static_cast<float>(static_cast<int32_t>(h & 0xffffffu)) * 0x1.0p-24f;
  const float r = sd * std::sqrt(-2.0f * log_unit(u1));
  float c, s;
  cos_sin_turn(u2, c, s);
  a = r * c;
  b = r * s;
}

}  // namespace

void fill_normal(float* out, int64_t n, double stddev, uint64_t seed, uint64_t stream) {
  const uint64_t key = splitmix64(seed ^ splitmix64(stream * 0x632be59bd9b4e019ULL));
  const float sd = static_cast<float>(stddev);
  const int64_t pairs = n / 2;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < pairs; ++p) normal_pair(key, p, sd, out[2 * p], out[2 * p + 1]);
  if (n % 2 != 0) {
    float unused;
    normal_pair(key, pairs, sd, out[n - 1], unused);
  }
}

uint64_t fingerprint(const Problem& p) {
  uint64_t h = splitmix64(p.seed);
  const auto mix = [&h](uint64_t v) { h = splitmix64(h ^ v); };
  const auto tensor = [&mix](const std::vector<float>& t) {
    const size_t n = t.size();
    mix(n);
    const size_t stride = std::max<size_t>(1, n / 4096);
    for (size_t i = 0; i < n; i += stride) mix(std::bit_cast<uint32_t>(t[i]));
    if (n > 0) mix(std::bit_cast<uint32_t>(t[n - 1]));
  };
  tensor(p.x);
  if (!p.layers.empty()) {
    const LayerWeights& w = p.layers[0];
    for (const auto* t : {&w.wg, &w.logit_bias, &w.selection_bias, &w.w1, &w.w3, &w.w2, &w.ws1,
                          &w.ws3, &w.ws2}) {
      tensor(*t);
    }
  }
  return h;
}

std::vector<float> skew_logit_bias(const Skew& skew, int64_t experts, int64_t top_k) {
  std::vector<float> bias(static_cast<size_t>(experts), 0.0f);
  if (skew.kind == Skew::Kind::kUniform) return bias;
  // Target share of the assignments per expert; no expert can take more than 1/k of them.
  std::vector<double> target(static_cast<size_t>(experts));
  for (int64_t e = 0; e < experts; ++e) {
    target[e] = skew.kind == Skew::Kind::kZipf
                    ? std::pow(static_cast<double>(e + 1), -skew.param)
                    : (e == 0 ? skew.param : (1.0 - skew.param) / static_cast<double>(experts - 1));
  }
  const double total = std::accumulate(target.begin(), target.end(), 0.0);
  for (double& t : target) t /= total;

  // The router's logits are close to N(0,1) per expert (x ~ N(0,1), wg ~ N(0,1/d)). Fit the bias
  // on a fixed sample of such logits so that top-k selection shares match the target, by
  // iterative proportional fitting of log-shares.
  constexpr int64_t kSamples = 2048;
  constexpr int kIterations = 30;
  std::vector<float> z(static_cast<size_t>(kSamples * experts));
  fill_normal(z.data(), kSamples * experts, 1.0, 0x736b6577ULL, 0);
  std::vector<double> b(static_cast<size_t>(experts), 0.0), biased(b.size());
  std::vector<int64_t> order(b.size());
  std::vector<double> share(b.size());
  for (int it = 0; it < kIterations; ++it) {
    std::fill(share.begin(), share.end(), 0.0);
    for (int64_t n = 0; n < kSamples; ++n) {
      for (int64_t e = 0; e < experts; ++e) biased[e] = z[n * experts + e] + b[e];
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + top_k, order.end(),
                        [&](int64_t i, int64_t j) { return biased[i] > biased[j]; });
      for (int64_t j = 0; j < top_k; ++j) share[order[j]] += 1.0;
    }
    for (int64_t e = 0; e < experts; ++e) {
      const double realised = (share[e] + 0.5) / static_cast<double>(kSamples * top_k);
      b[e] = std::clamp(b[e] + 0.7 * std::log(target[e] / realised), -30.0, 30.0);
    }
  }
  const double mean = std::accumulate(b.begin(), b.end(), 0.0) / static_cast<double>(experts);
  for (int64_t e = 0; e < experts; ++e) bias[e] = static_cast<float>(b[e] - mean);
  return bias;
}

Problem make_problem(const Shape& s, Dtype dtype, uint64_t seed, int64_t layers) {
  Problem p;
  p.shape = s;
  p.dtype = dtype;
  p.seed = seed;
  p.x = normal(s.tokens * s.d_model, 1.0, seed, kX);
  const double in_d = 1.0 / std::sqrt(static_cast<double>(s.d_model));
  const double in_f = 1.0 / std::sqrt(static_cast<double>(s.d_ff));
  const bool gated = s.activation != Activation::kGelu;
  const int64_t fs = s.shared_width();
  const std::vector<float> skew_bias = skew_logit_bias(s.skew, s.experts, s.top_k);
  // Layer 0 comes from the generator; the others are copies of it, each its own allocation:
  // rotating through them defeats the caches as well as distinct values would, and a machine with
  // a large cache (many layers) does not spend its run in the generator.
  p.layers.resize(static_cast<size_t>(std::max<int64_t>(layers, 1)));
  LayerWeights& w = p.layers[0];
  const int64_t l = 0;
  w.wg = normal(s.experts * s.d_model, in_d, seed, layer_stream(l, kWg));
  w.logit_bias = skew_bias;
  w.selection_bias = s.routing.selection_bias
                         ? normal(s.experts, 0.05, seed, layer_stream(l, kSelBias))
                         : std::vector<float>(static_cast<size_t>(s.experts), 0.0f);
  w.w1 = normal(s.experts * s.d_ff * s.d_model, in_d, seed, layer_stream(l, kW1));
  if (gated) w.w3 = normal(s.experts * s.d_ff * s.d_model, in_d, seed, layer_stream(l, kW3));
  w.w2 = normal(s.experts * s.d_model * s.d_ff, in_f, seed, layer_stream(l, kW2));
  if (fs > 0) {
    // Each shared expert has fan-in d_ff_shared in its down projection.
    const double in_fs = 1.0 / std::sqrt(static_cast<double>(s.d_ff_shared));
    w.ws1 = normal(fs * s.d_model, in_d, seed, layer_stream(l, kWs1));
    if (gated) w.ws3 = normal(fs * s.d_model, in_d, seed, layer_stream(l, kWs3));
    w.ws2 = normal(s.d_model * fs, in_fs, seed, layer_stream(l, kWs2));
  }
  // Inputs and weights live in the dtype: stored as the floats the dtype can represent, so every
  // implementation and the oracle start from exactly the same values.
  // Quantized expert weights hold their dequantized values instead.
  const bool quantized = s.weights != WeightFormat::kSame;
  if (dtype != Dtype::kF32) {
    round_all(dtype, p.x.data(), static_cast<int64_t>(p.x.size()));
    for (auto* v : {&w.wg, &w.w1, &w.w3, &w.w2, &w.ws1, &w.ws3, &w.ws2}) {
      if (quantized && v != &w.wg) continue;
      round_all(dtype, v->data(), static_cast<int64_t>(v->size()));
    }
  }
  if (quantized) {
    const int64_t E = s.experts, d = s.d_model, f = s.d_ff;
    w.q1 = quantize(s.weights, w.w1.data(), E * f, d);
    if (gated) w.q3 = quantize(s.weights, w.w3.data(), E * f, d);
    w.q2 = quantize(s.weights, w.w2.data(), E * d, f);
    if (fs > 0) {
      w.qs1 = quantize(s.weights, w.ws1.data(), fs, d);
      if (gated) w.qs3 = quantize(s.weights, w.ws3.data(), fs, d);
      w.qs2 = quantize(s.weights, w.ws2.data(), d, fs);
    }
  }
  for (size_t i = 1; i < p.layers.size(); ++i) p.layers[i] = p.layers[0];
  return p;
}

Problem unquantized_twin(const Problem& p) {
  Shape same = p.shape;
  same.weights = WeightFormat::kSame;
  Problem twin = make_problem(same, Dtype::kF32, p.seed, 1);
  twin.dtype = p.dtype;
  twin.x = p.x;
  twin.layers[0].wg = p.layers[0].wg;
  return twin;
}

}  // namespace moe_bench
