#pragma once

#include <cstdint>
#include <vector>

#include "moe_bench/quant.hpp"
#include "moe_bench/shape.hpp"

namespace moe_bench {

/// One layer's weights, row-major: wg[E,d], w1/w3[E,f,d], w2[E,d,f], shared ws1/ws3[fs,d],
/// ws2[d,fs]. GELU experts leave w3/ws3 empty. With quantized weights (Shape::weights) the
/// floats of the expert matrices are the dequantized values and q1..qs2 hold the stored format
/// (W1 and W3 as E*f rows of d, W2 as E*d rows of f, the shared ones as fs rows of d and d rows of
/// fs); otherwise those are empty.
struct LayerWeights {
  std::vector<float> wg;
  std::vector<float> logit_bias;      ///< [E] added to the router logits (routing skew)
  std::vector<float> selection_bias;  ///< [E] bg, added to scores for selection only (or zeros)
  std::vector<float> w1, w3, w2;
  std::vector<float> ws1, ws3, ws2;
  QuantMatrix q1, q3, q2, qs1, qs3, qs2;
};

/// The data of one case: activations and `layers` independent sets of weights, all generated
/// from the seed (x ~ N(0,1), weights ~ N(0, 1/fan_in)), so anyone can regenerate them.
struct Problem {
  Shape shape;
  Dtype dtype = Dtype::kF32;
  uint64_t seed = 0;
  std::vector<float> x;  ///< [T,d]
  std::vector<LayerWeights> layers;
};

/// Generates a problem deterministically from (shape, seed); the result does not depend on the
/// number of threads used. Of `layers` weight sets the first is generated and the others are
/// copies of it in memory of their own (for cold-cache rotation). Quantized weights are
/// generated in f32 and quantized (quant.hpp); inputs and the router are in the dtype.
Problem make_problem(const Shape& shape, Dtype dtype, uint64_t seed, int64_t layers = 1);

/// The unquantized twin of a problem with quantized weights: one layer with the same inputs and
/// router, and the expert weights as generated in f32 before quantization; the oracle on it
/// measures what quantizing cost.
Problem unquantized_twin(const Problem& p);

/// Per-expert logit bias that makes the share of top-k assignments per expert follow the skew
/// (zipf: proportional to 1/rank^S; hot: expert 0 takes P), fitted on N(0,1) logits like the
/// router's; zeros when uniform. The realised load of a problem is measured, not assumed.
std::vector<float> skew_logit_bias(const Skew& skew, int64_t experts, int64_t top_k);

/// A fingerprint of the inputs and the first layer's weights (sizes and a strided sample of the
/// values, bit for bit): two builds that generate the same problem for a case give the same
/// fingerprint, and a change of the data generator changes it. Cheap at any size.
uint64_t fingerprint(const Problem& p);

/// Fills `out` with N(0, stddev^2) values from a counter-based generator keyed by (seed, stream);
/// element i depends on (seed, stream, i) only.
void fill_normal(float* out, int64_t n, double stddev, uint64_t seed, uint64_t stream);

}  // namespace moe_bench
