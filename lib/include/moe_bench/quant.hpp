#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "moe_bench/shape.hpp"

namespace moe_bench {

/// A rows x cols weight matrix, row-major, quantized along its columns (the input dimension).
/// The codes are the quantized integers, not offset: int8 in [-127, 127], q4 in [-8, 7]. The
/// dequantized weight is code x scale; q4's scales are f16 values (held as floats) and int8's
/// f32, so code x scale is exact in f32 for q4 and one rounding for int8.
struct QuantMatrix {
  int64_t rows = 0, cols = 0;
  std::vector<int8_t> codes;  ///< [rows * cols]
  std::vector<float> scales;  ///< int8: [rows]; q4: [rows * cols / kQ4Group]

  bool empty() const { return codes.empty(); }
  /// The scale of element (r, c).
  float scale(WeightFormat f, int64_t r, int64_t c) const {
    return f == WeightFormat::kInt8 ? scales[r] : scales[(r * cols + c) / kQ4Group];
  }
};

/// Quantizes w[rows, cols] in the format (int8 per row: scale = max|w| / 127, code =
/// round(w / scale); q4 per group: scale = f16(m / -8) where m is the group's value of largest
/// magnitude, code = clamp(round(w / scale), -8, 7)) and replaces w with the dequantized values,
/// so that everything computed from w afterwards sees exactly what the stored format holds.
QuantMatrix quantize(WeightFormat f, float* w, int64_t rows, int64_t cols);

/// A rows x cols matrix in the format with room for its codes and scales, for quantize_rows.
QuantMatrix quant_matrix(WeightFormat f, int64_t rows, int64_t cols);

/// Quantizes w[n, q.cols] (as quantize() does) into rows [r0, r0 + n) of q: a matrix quantized a
/// block of rows at a time equals the matrix quantized whole.
void quantize_rows(WeightFormat f, float* w, int64_t r0, int64_t n, QuantMatrix& q);

/// Writes the dequantized rows [r0, r0 + n) of q into out[n, cols].
void dequantize_rows(WeightFormat f, const QuantMatrix& q, int64_t r0, int64_t n, float* out);

/// Dynamic int8 quantization of one row of activations, as the a8 implementations (`cpu_w8a8`)
/// quantize each token's input row and each hidden row: scale = max|v| / 127 (1 for a row of
/// zeros), code = clamp(round(v / scale), -127, 127), round to nearest even; returns the scale.
/// The value a code stands for is code x scale. The kernels call it in float and the oracle in
/// float on the same inputs (the same codes) and in double on its hidden values.
/// (Rounding adds and takes off 1.5 x 2^(mantissa bits): exactly std::nearbyint's result in the
/// default rounding mode for |v / scale| <= 127, without a libm call per element where the
/// baseline x86-64 build has no SSE4.1 rounding instruction; the loop vectorizes.)
template <typename T>
T quantize_activations(const T* v, int64_t n, int8_t* codes) {
  T amax = 0;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(v[i]));
  const T scale = amax > 0 ? amax / T(127) : T(1);
  const T magic = T(1.5) * T(int64_t{1} << (std::numeric_limits<T>::digits - 1));
  for (int64_t i = 0; i < n; ++i) {
    const T rounded = (v[i] / scale + magic) - magic;
    codes[i] = static_cast<int8_t>(std::clamp(rounded, T(-127), T(127)));
  }
  return scale;
}

}  // namespace moe_bench
