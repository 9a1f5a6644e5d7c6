#pragma once

#include <cstdint>
#include <vector>

#include "moe_bench/quant.hpp"
#include "moe_bench/shape.hpp"

namespace moe_bench {

/// A layer's expert matrices.
enum class ExpertMatrix { kW1, kW3, kW2 };

/// One layer's weights, row-major: wg[E,d], w1/w3[E,f,d], w2[E,d,f], shared ws1/ws3[fs,d],
/// ws2[d,fs]. GELU experts leave w3/ws3 empty. With quantized weights (Shape::weights) the layer
/// holds the stored format only: q1..qs2 (W1 and W3 as E*f rows of d, W2 as E*d rows of f, the
/// shared ones as fs rows of d and d rows of fs), and the floats of the expert matrices are
/// empty; otherwise the q's are. `regenerated`: the unquantized twin of a quantized problem,
/// which holds neither: its expert matrices are generated again from the seed when read.
/// Read the expert matrices through MatrixRows, which serves all three.
struct LayerWeights {
  std::vector<float> wg;
  std::vector<float> logit_bias;      ///< [E] added to the router logits (routing skew)
  std::vector<float> selection_bias;  ///< [E] bg, added to scores for selection only (or zeros)
  std::vector<float> w1, w3, w2;
  std::vector<float> ws1, ws3, ws2;
  QuantMatrix q1, q3, q2, qs1, qs3, qs2;
  bool regenerated = false;

  /// The floats, or the codes, of one of the matrices: the routed experts' (all of them), or
  /// with `shared` the shared experts'.
  const std::vector<float>& floats(ExpertMatrix m, bool shared) const {
    return m == ExpertMatrix::kW1
               ? (shared ? ws1 : w1)
               : (m == ExpertMatrix::kW3 ? (shared ? ws3 : w3) : (shared ? ws2 : w2));
  }
  const QuantMatrix& codes(ExpertMatrix m, bool shared) const {
    return m == ExpertMatrix::kW1
               ? (shared ? qs1 : q1)
               : (m == ExpertMatrix::kW3 ? (shared ? qs3 : q3) : (shared ? qs2 : q2));
  }
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
/// generated in f32 an expert at a time and quantized (quant.hpp), so the process never holds
/// the layer in f32; inputs and the router are in the dtype.
Problem make_problem(const Shape& shape, Dtype dtype, uint64_t seed, int64_t layers = 1);

/// The unquantized twin of a problem with quantized weights: one layer with the same inputs and
/// router, and the expert weights as generated in f32 before quantization, regenerated when read
/// (LayerWeights::regenerated) rather than held; the oracle on it measures what quantizing cost.
Problem unquantized_twin(const Problem& p);

/// The FP32 rows of one expert's matrix (`expert` -1: the shared experts'), however the layer
/// holds them: its floats; its codes, dequantized when read; or, in the unquantized twin, the
/// generator's values, generated again when read. W3 of a GELU layer is empty().
class MatrixRows {
 public:
  MatrixRows(const Problem& p, int64_t layer, ExpertMatrix m, int64_t expert);
  bool empty() const { return rows_ == 0; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  /// Row r as FP32: a pointer into the layer's floats, or `buf` (cols() floats) filled.
  const float* row(int64_t r, float* buf) const;
  /// Every row (rows() x cols()): the layer's floats, or `buf` resized and filled on all threads.
  const float* all(std::vector<float>& buf) const;

 private:
  void fill(int64_t r0, int64_t n, float* out) const;
  const float* floats_ = nullptr;   // row 0 of this expert's matrix, where the layer holds floats
  const QuantMatrix* q_ = nullptr;  // where it holds codes
  WeightFormat format_ = WeightFormat::kSame;
  int64_t row0_ = 0;  // this expert's first row in q_ or in the generated stream
  int64_t rows_ = 0, cols_ = 0;
  uint64_t seed_ = 0, stream_ = 0;  // the twin's generator
  double stddev_ = 0;
};

/// Per-expert logit bias that makes the share of top-k assignments per expert follow the skew
/// (zipf: proportional to 1/rank^S; hot: expert 0 takes P), fitted on N(0,1) logits like the
/// router's; zeros when uniform. The realised load of a problem is measured, not assumed.
std::vector<float> skew_logit_bias(const Skew& skew, int64_t experts, int64_t top_k);

/// A fingerprint of the inputs and the first layer's weights (sizes and a strided sample of the
/// values, bit for bit): two builds that generate the same problem for a case give the same
/// fingerprint, and a change of the data generator changes it. Cheap at any size.
uint64_t fingerprint(const Problem& p);

/// Fills `out` with elements [first, first + n) of N(0, stddev^2) values from a counter-based
/// generator keyed by (seed, stream); element i depends on (seed, stream, i) only.
void fill_normal(float* out, int64_t n, double stddev, uint64_t seed, uint64_t stream,
                 int64_t first = 0);

}  // namespace moe_bench
