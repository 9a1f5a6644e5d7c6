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

/// Rows of a group of activations held as integers (hold_as_int15).
constexpr int64_t kInt15Group = 32;

/// How `cpu` holds bf16 activations for its integer dot products on quantized weights (VNNI
/// CPUs): each group of kInt15Group values v[i0, i1) becomes integers c = round(v / 2^s), ties to
/// even, with one power of two 2^s a group chosen from the group's largest magnitude m
/// (2^(e-1) <= m < 2^e, s = e - 14), so |c| <= 16384 and c = 128 hi + lo with hi in
/// [-128, 127] and lo in [0, 127], two signed bytes. A bf16 value has 8 significant bits, so
/// every value of a group within 6 binades of its largest (m / 64 and up) is held exactly; a
/// smaller one is rounded by at most 2^(s-1) <= m / 2^14, 64 times below half a unit in the last
/// place of m in bf16. Writes hi, lo (n values each), returns 2^s (1 for a group of zeros) and
/// the sum of the c in `sum`. v must be finite.
inline float hold_as_int15(const float* v, int64_t n, int8_t* hi, int8_t* lo, int32_t& sum) {
  float amax = 0;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(v[i]));
  sum = 0;
  if (!(amax > 0)) {
    for (int64_t i = 0; i < n; ++i) hi[i] = lo[i] = 0;
    return 1.0f;
  }
  int e = 0;
  std::frexp(amax, &e);  // amax = f 2^e, f in [0.5, 1)
  // v / 2^s as v * 2^(14 - e): exact where 2^(14 - e) is a normal float, else in two steps.
  const int up = 14 - e;
  const float step = up <= 127 ? std::ldexp(1.0f, up) : std::ldexp(1.0f, 127);
  const float rest = up <= 127 ? 1.0f : std::ldexp(1.0f, up - 127);
  const float magic = 1.5f * static_cast<float>(int64_t{1} << 23);
  for (int64_t i = 0; i < n; ++i) {
    const float rounded = ((v[i] * step) * rest + magic) - magic;
    const auto c = static_cast<int32_t>(std::clamp(rounded, -16384.0f, 16383.0f));
    hi[i] = static_cast<int8_t>(c >> 7);
    lo[i] = static_cast<int8_t>(c & 127);
    sum += c;
  }
  return std::ldexp(1.0f, -up);
}

}  // namespace moe_bench
