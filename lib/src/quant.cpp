#include "moe_bench/quant.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "moe_bench/dtype.hpp"

namespace moe_bench {

QuantMatrix quant_matrix(WeightFormat f, int64_t rows, int64_t cols) {
  QuantMatrix q;
  q.rows = rows;
  q.cols = cols;
  if (f == WeightFormat::kSame) return q;
  if (f == WeightFormat::kQ4 && cols % kQ4Group != 0) {
    throw std::logic_error("q4: columns not a multiple of the group");
  }
  q.codes.resize(static_cast<size_t>(rows * cols));
  q.scales.resize(static_cast<size_t>(f == WeightFormat::kInt8 ? rows : rows * cols / kQ4Group));
  return q;
}

void quantize_rows(WeightFormat f, float* w, int64_t r0, int64_t n, QuantMatrix& q) {
  const int64_t cols = q.cols;
  if (f == WeightFormat::kInt8) {
#pragma omp parallel for schedule(static) if (n * cols >= (int64_t{1} << 16))
    for (int64_t r = 0; r < n; ++r) {
      float* row = w + r * cols;
      float amax = 0;
      for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(row[c]));
      const float scale = amax > 0 ? amax / 127.0f : 1.0f;
      q.scales[r0 + r] = scale;
      int8_t* codes = q.codes.data() + (r0 + r) * cols;
      for (int64_t c = 0; c < cols; ++c) {
        const auto code =
            static_cast<int8_t>(std::clamp(std::nearbyint(row[c] / scale), -127.0f, 127.0f));
        codes[c] = code;
        row[c] = static_cast<float>(code) * scale;
      }
    }
    return;
  }
  if (f != WeightFormat::kQ4) return;
  // Groups never straddle rows: cols is a multiple of the group (quant_matrix).
  const int64_t groups = n * cols / kQ4Group, g0 = r0 * cols / kQ4Group;
#pragma omp parallel for schedule(static) if (n * cols >= (int64_t{1} << 16))
  for (int64_t g = 0; g < groups; ++g) {
    float* v = w + g * kQ4Group;
    float m = 0;
    for (int64_t i = 0; i < kQ4Group; ++i) {
      if (std::fabs(v[i]) > std::fabs(m)) m = v[i];
    }
    // The extreme value maps to -8, the end of the range with room: [-8, 7] is not symmetric.
    const float scale = round_to(Dtype::kF16, m / -8.0f);
    q.scales[g0 + g] = scale;
    int8_t* codes = q.codes.data() + (g0 + g) * kQ4Group;
    for (int64_t i = 0; i < kQ4Group; ++i) {
      const float code = scale != 0 ? std::clamp(std::nearbyint(v[i] / scale), -8.0f, 7.0f) : 0.0f;
      codes[i] = static_cast<int8_t>(code);
      v[i] = code * scale;
    }
  }
}

QuantMatrix quantize(WeightFormat f, float* w, int64_t rows, int64_t cols) {
  QuantMatrix q = quant_matrix(f, rows, cols);
  quantize_rows(f, w, 0, rows, q);
  return q;
}

void dequantize_rows(WeightFormat f, const QuantMatrix& q, int64_t r0, int64_t n, float* out) {
  const int64_t cols = q.cols;
  for (int64_t r = r0; r < r0 + n; ++r) {
    const int8_t* codes = q.codes.data() + r * cols;
    float* o = out + (r - r0) * cols;
    if (f == WeightFormat::kInt8) {
      const float s = q.scales[r];
      for (int64_t c = 0; c < cols; ++c) o[c] = static_cast<float>(codes[c]) * s;
    } else {
      const float* s = q.scales.data() + r * cols / kQ4Group;
      for (int64_t c = 0; c < cols; ++c) o[c] = static_cast<float>(codes[c]) * s[c / kQ4Group];
    }
  }
}

}  // namespace moe_bench
