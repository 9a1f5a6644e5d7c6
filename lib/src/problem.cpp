#include "moe_bench/problem.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <numbers>
#include <numeric>
#include <stdexcept>

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
  const float series = 1.0f + s2 * (1.0f / 3 + s2 * (1.0f / 5 + s2 * (1.0f / 7 + s2 * (1.0f / 9))));
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
  const float sa =
      a * (1.0f -
           a2 * (1.0f / 6) *
               (1.0f - a2 * (1.0f / 20) * (1.0f - a2 * (1.0f / 42) * (1.0f - a2 * (1.0f / 72)))));
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

void fill_normal(float* out, int64_t n, double stddev, uint64_t seed, uint64_t stream,
                 int64_t first) {
  const uint64_t key = splitmix64(seed ^ splitmix64(stream * 0x632be59bd9b4e019ULL));
  const float sd = static_cast<float>(stddev);
  // Element i is half i % 2 of pair i / 2: an odd first element is the second half of its pair.
  int64_t lead = 0;
  if (n > 0 && first % 2 != 0) {
    float unused;
    normal_pair(key, first / 2, sd, unused, out[0]);
    lead = 1;
  }
  const int64_t p0 = (first + lead) / 2, pairs = (n - lead) / 2;
  float* o = out + lead;
#pragma omp parallel for schedule(static) if (pairs >= 4096)
  for (int64_t p = 0; p < pairs; ++p) normal_pair(key, p0 + p, sd, o[2 * p], o[2 * p + 1]);
  if ((n - lead) % 2 != 0) {
    float unused;
    normal_pair(key, p0 + pairs, sd, out[n - 1], unused);
  }
}

uint64_t fingerprint(const Problem& p) {
  uint64_t h = splitmix64(p.seed);
  const auto mix = [&h](uint64_t v) { h = splitmix64(h ^ v); };
  // n values, a strided sample of them bit for bit.
  const auto sample = [&mix](size_t n, const auto& value) {
    mix(n);
    const size_t stride = std::max<size_t>(1, n / 4096);
    for (size_t i = 0; i < n; i += stride) mix(std::bit_cast<uint32_t>(value(i)));
    if (n > 0) mix(std::bit_cast<uint32_t>(value(n - 1)));
  };
  const auto tensor = [&sample](const std::vector<float>& t) {
    sample(t.size(), [&t](size_t i) { return t[i]; });
  };
  tensor(p.x);
  if (!p.layers.empty()) {
    const LayerWeights& w = p.layers[0];
    for (const auto* t : {&w.wg, &w.logit_bias, &w.selection_bias}) tensor(*t);
    // A quantized matrix as its dequantized values (code x scale, as dequantize_rows gives them):
    // int8 hashes as when the layer held those floats (before 2026-12-07). q4 does not: those
    // floats kept the sign of a weight that rounded to code 0 (-0.0), which a code does not hold,
    // so `compare --against` a build before that refuses q4 cases as different inputs.
    const WeightFormat f = p.shape.weights;
    for (bool shared : {false, true}) {
      for (ExpertMatrix m : {ExpertMatrix::kW1, ExpertMatrix::kW3, ExpertMatrix::kW2}) {
        const QuantMatrix& q = w.codes(m, shared);
        if (q.empty()) {
          tensor(w.floats(m, shared));
          continue;
        }
        sample(q.codes.size(), [&q, f](size_t i) {
          const auto r = static_cast<int64_t>(i) / q.cols, c = static_cast<int64_t>(i) % q.cols;
          return static_cast<float>(q.codes[i]) * q.scale(f, r, c);
        });
      }
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

namespace {

// How the generator makes one of a layer's expert matrices: `count` blocks (one an expert; one
// for the shared experts) of rows x cols values of N(0, stddev^2) from one stream.
struct MatrixPlan {
  int64_t count = 0, rows = 0, cols = 0;
  double stddev = 0;
  Stream stream = kW1;
};

MatrixPlan plan_of(const Shape& s, ExpertMatrix m, bool shared) {
  const int64_t width = shared ? s.shared_width() : s.d_ff;
  if (width == 0 || (m == ExpertMatrix::kW3 && s.activation == Activation::kGelu)) return {};
  const int64_t count = shared ? 1 : s.experts;
  if (m != ExpertMatrix::kW2) {
    return {count, width, s.d_model, 1.0 / std::sqrt(static_cast<double>(s.d_model)),
            shared ? (m == ExpertMatrix::kW1 ? kWs1 : kWs3) : (m == ExpertMatrix::kW1 ? kW1 : kW3)};
  }
  // Each shared expert has fan-in d_ff_shared in its down projection.
  const int64_t fan_in = shared ? s.d_ff_shared : s.d_ff;
  return {count, s.d_model, width, 1.0 / std::sqrt(static_cast<double>(fan_in)),
          shared ? kWs2 : kW2};
}

// The floats (the weights in the dtype) or, for quantized weights, the codes of one matrix of
// layer 0. Quantized matrices are generated a block (an expert) at a time, so that the layer is
// never held in f32.
void generate(const Shape& s, Dtype dtype, uint64_t seed, ExpertMatrix m, bool shared,
              std::vector<float>& floats, QuantMatrix& q) {
  const MatrixPlan plan = plan_of(s, m, shared);
  if (plan.count == 0) return;
  const uint64_t stream = layer_stream(0, plan.stream);
  const int64_t block = plan.rows * plan.cols;
  if (s.weights == WeightFormat::kSame) {
    floats = normal(plan.count * block, plan.stddev, seed, stream);
    // Weights live in the dtype: stored as the floats the dtype can represent, so every
    // implementation and the oracle start from exactly the same values.
    round_all(dtype, floats.data(), static_cast<int64_t>(floats.size()));
    return;
  }
  // Quantized from the f32 values as generated, whatever the dtype.
  q = quant_matrix(s.weights, plan.count * plan.rows, plan.cols);
  std::vector<float> buf(static_cast<size_t>(block));
  for (int64_t e = 0; e < plan.count; ++e) {
    fill_normal(buf.data(), block, plan.stddev, seed, stream, e * block);
    quantize_rows(s.weights, buf.data(), e * plan.rows, plan.rows, q);
  }
}

}  // namespace

Problem make_problem(const Shape& s, Dtype dtype, uint64_t seed, int64_t layers) {
  Problem p;
  p.shape = s;
  p.dtype = dtype;
  p.seed = seed;
  p.x = normal(s.tokens * s.d_model, 1.0, seed, kX);
  round_all(dtype, p.x.data(), static_cast<int64_t>(p.x.size()));
  const double in_d = 1.0 / std::sqrt(static_cast<double>(s.d_model));
  // Layer 0 comes from the generator; the others are copies of it, each its own allocation:
  // rotating through them defeats the caches as well as distinct values would, and a machine with
  // a large cache (many layers) does not spend its run in the generator.
  p.layers.resize(static_cast<size_t>(std::max<int64_t>(layers, 1)));
  LayerWeights& w = p.layers[0];
  const int64_t l = 0;
  w.wg = normal(s.experts * s.d_model, in_d, seed, layer_stream(l, kWg));
  round_all(dtype, w.wg.data(), static_cast<int64_t>(w.wg.size()));
  w.logit_bias = skew_logit_bias(s.skew, s.experts, s.top_k);
  w.selection_bias = s.routing.selection_bias
                         ? normal(s.experts, 0.05, seed, layer_stream(l, kSelBias))
                         : std::vector<float>(static_cast<size_t>(s.experts), 0.0f);
  generate(s, dtype, seed, ExpertMatrix::kW1, false, w.w1, w.q1);
  generate(s, dtype, seed, ExpertMatrix::kW3, false, w.w3, w.q3);
  generate(s, dtype, seed, ExpertMatrix::kW2, false, w.w2, w.q2);
  generate(s, dtype, seed, ExpertMatrix::kW1, true, w.ws1, w.qs1);
  generate(s, dtype, seed, ExpertMatrix::kW3, true, w.ws3, w.qs3);
  generate(s, dtype, seed, ExpertMatrix::kW2, true, w.ws2, w.qs2);
  for (size_t i = 1; i < p.layers.size(); ++i) p.layers[i] = p.layers[0];
  return p;
}

Problem unquantized_twin(const Problem& p) {
  Problem twin;
  twin.shape = p.shape;
  twin.shape.weights = WeightFormat::kSame;
  twin.dtype = p.dtype;
  twin.seed = p.seed;
  twin.x = p.x;
  twin.layers.resize(1);
  const LayerWeights& src = p.layers[0];
  LayerWeights& w = twin.layers[0];
  w.wg = src.wg;
  w.logit_bias = src.logit_bias;
  w.selection_bias = src.selection_bias;
  w.regenerated = true;
  return twin;
}

MatrixRows::MatrixRows(const Problem& p, int64_t layer, ExpertMatrix m, int64_t expert) {
  const Shape& s = p.shape;
  const bool shared = expert < 0;
  const MatrixPlan plan = plan_of(s, m, shared);
  if (plan.count == 0) return;
  rows_ = plan.rows;
  cols_ = plan.cols;
  row0_ = shared ? 0 : expert * rows_;
  const LayerWeights& w = p.layers[static_cast<size_t>(layer)];
  const std::vector<float>& floats = w.floats(m, shared);
  const QuantMatrix& q = w.codes(m, shared);
  if (!floats.empty()) {
    floats_ = floats.data() + row0_ * cols_;
  } else if (!q.empty()) {
    q_ = &q;
    format_ = s.weights;
  } else if (w.regenerated) {
    seed_ = p.seed;
    stream_ = layer_stream(0, plan.stream);
    stddev_ = plan.stddev;
  } else {
    throw std::logic_error("the layer holds no values of this expert matrix");
  }
}

void MatrixRows::fill(int64_t r0, int64_t n, float* out) const {
  if (q_ != nullptr) {
#pragma omp parallel for schedule(static) if (n * cols_ >= (int64_t{1} << 16))
    for (int64_t r = 0; r < n; ++r)
      dequantize_rows(format_, *q_, row0_ + r0 + r, 1, out + r * cols_);
  } else {
    fill_normal(out, n * cols_, stddev_, seed_, stream_, (row0_ + r0) * cols_);
  }
}

const float* MatrixRows::row(int64_t r, float* buf) const {
  if (floats_ != nullptr) return floats_ + r * cols_;
  fill(r, 1, buf);
  return buf;
}

const float* MatrixRows::all(std::vector<float>& buf) const {
  if (floats_ != nullptr) return floats_;
  buf.resize(static_cast<size_t>(rows_ * cols_));
  fill(0, rows_, buf.data());
  return buf.data();
}

}  // namespace moe_bench
