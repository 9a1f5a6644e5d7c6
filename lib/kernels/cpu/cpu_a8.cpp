// The a8 variant of the `cpu` kernel (`cpu_w8a8`): its packed panels (a8_isa.hpp), the int8
// quantization of activation rows, and its expert stages. Routing and dispatch are cpu's.
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "cpu_kernel.hpp"
#include "moe_bench/dtype.hpp"
#include "moe_bench/quant.hpp"

namespace moe_bench::cpu {

void hold_a16_generic(const float* v, int64_t len, int8_t* hi, int8_t* lo, int32_t* sums,
                      float* scales) {
  static_assert(kInt15Group == kQ4Rows);
  float held[kQ4Rows];
  for (int64_t g = 0; g * kQ4Rows < len; ++g) {
    const int64_t i0 = g * kQ4Rows, n = std::min(kQ4Rows, len - i0);
    for (int64_t i = 0; i < n; ++i) held[i] = round_to(Dtype::kBF16, v[i0 + i]);
    scales[g] = hold_as_int15(held, n, hi + i0, lo + i0, sums[g]);
  }
}

}  // namespace moe_bench::cpu

namespace moe_bench::cpu::detail {

namespace {

// Panel p (columns [p kA8Cols, (p + 1) kA8Cols) of `width`) of `np` projections: rows row0 +
// column of m[j], each `len` codes long, in the layout of a8_isa.hpp, into out; int8 codes as
// code + 128 where `i8_unsigned`.
void pack_a8_panel(const QuantMatrix* const* m, int np, int64_t row0, int64_t width, int64_t len,
                   int64_t p, bool q4, bool i8_unsigned, char* out) {
  const int64_t c0 = p * kA8Cols;
  const auto code = [&](int j, int64_t c, int64_t k) -> int {
    const int64_t col = c0 + c;
    return col < width && k < len ? m[j]->codes[(row0 + col) * len + k] : 0;
  };
  if (!q4) {
    const int64_t quads = (len + 3) / 4;
    auto* o = reinterpret_cast<int8_t*>(out);
    for (int64_t q = 0; q < quads; ++q)
      for (int j = 0; j < np; ++j)
        for (int64_t c = 0; c < kA8Cols; ++c)
          for (int64_t i = 0; i < 4; ++i) {
            const int v = code(j, c, 4 * q + i);
            *o++ = static_cast<int8_t>(i8_unsigned ? static_cast<uint8_t>(v + 128) : v);
          }
    for (int j = 0; j < np; ++j) {
      for (int64_t c = 0; c < kA8Cols; ++c) {
        const float scale = c0 + c < width ? m[j]->scales[row0 + c0 + c] : 0.0f;
        std::memcpy(o, &scale, 4);
        o += 4;
      }
    }
    return;
  }
  auto* o = reinterpret_cast<uint8_t*>(out);
  for (int64_t g = 0; g < len / kQ4Rows; ++g) {
    const int64_t k0 = g * kQ4Rows;
    for (int j = 0; j < np; ++j)
      for (int64_t v = 0; v < 4; ++v)
        for (int64_t c = 0; c < kA8Cols; ++c)
          for (int64_t i = 0; i < 4; ++i) {
            const int lo = code(j, c, k0 + 8 * v + i) + 8, hi = code(j, c, k0 + 8 * v + 4 + i) + 8;
            *o++ = static_cast<uint8_t>(lo | hi << 4);
          }
    for (int j = 0; j < np; ++j) {
      for (int64_t c = 0; c < kA8Cols; ++c) {
        const auto scale = static_cast<_Float16>(
            c0 + c < width ? m[j]->scales[((row0 + c0 + c) * len + k0) / kQ4Rows] : 0.0f);
        std::memcpy(o, &scale, 2);
        o += 2;
      }
    }
  }
}

}  // namespace

void CpuKernel::A8Buffers::resize(int64_t rows, int64_t len, bool q4, bool i8_unsigned,
                                  bool as_a16) {
  a16 = as_a16;
  if (a16) {
    stride = round_up(len, kQ4Rows);
    groups = stride / kQ4Rows;
    codes.assign(static_cast<size_t>(rows * stride), 0);
    low.assign(codes.size(), 0);
    magnitudes.clear();
    code_sums.clear();
    group_sums.assign(static_cast<size_t>(rows * groups), 0);
    group_scales.assign(group_sums.size(), 1.0f);
    scales.assign(static_cast<size_t>(rows), 1.0f);
    return;
  }
  low.clear();
  group_scales.clear();
  stride = round_up(len, 4);
  groups = q4 ? len / kQ4Rows : 0;
  codes.assign(static_cast<size_t>(rows * stride), 0);
  // What the int8 weights' products take: magnitudes (signed weights) or code sums (unsigned).
  magnitudes.assign(q4 || i8_unsigned ? 0 : codes.size(), 0);
  code_sums.assign(!q4 && i8_unsigned ? static_cast<size_t>(rows) : 0, 0);
  group_sums.assign(static_cast<size_t>(rows * groups), 0);
  scales.assign(static_cast<size_t>(rows), 0.0f);
}

void CpuKernel::A8Buffers::quantize(const float* v, int64_t len, int64_t row) {
  if (a16) {
    int8_t* hi = codes.data() + row * stride;
    int8_t* lo = low.data() + row * stride;
    hold(v, len, hi, lo, group_sums.data() + row * groups, group_scales.data() + row * groups);
    std::fill(hi + len, hi + stride, int8_t{0});
    std::fill(lo + len, lo + stride, int8_t{0});
    return;
  }
  int8_t* c = codes.data() + row * stride;
  scales[row] = quantize_activations(v, len, c);
  const int64_t padded = round_up(len, 4);
  std::fill(c + len, c + padded, int8_t{0});
  if (groups == 0) {
    if (!code_sums.empty()) {
      int32_t sum = 0;
      for (int64_t i = 0; i < len; ++i) sum += c[i];
      code_sums[row] = sum;
      return;
    }
    uint8_t* m = magnitudes.data() + row * stride;
    for (int64_t i = 0; i < padded; ++i) m[i] = static_cast<uint8_t>(std::abs(int{c[i]}));
    return;
  }
  int32_t* sums = group_sums.data() + row * groups;
  for (int64_t g = 0; g < len / kQ4Rows; ++g) {
    int32_t sum = 0;
    for (int64_t i = g * kQ4Rows; i < (g + 1) * kQ4Rows; ++i) sum += c[i];
    sums[g] = sum;
  }
}

// The groups as pack_layer orders them (routed experts, then the shared ones fused into one),
// each its gate/up panels then its down panels; experts not held get none.
void CpuKernel::pack_a8_layer(const LayerWeights& w, A8Layer& out) const {
  const Shape& s = problem_->shape;
  const bool q4 = storage_ == Storage::kQ4;
  const int np = gated_ ? 2 : 1;
  const int64_t d = s.d_model, E = s.experts;
  const int64_t groups = E + (s.shared_width() > 0 ? 1 : 0);
  const int64_t out_panels = (d + kA8Cols - 1) / kA8Cols;
  out.groups.assign(static_cast<size_t>(groups), A8Group{});
  int64_t at = 0;
  for (int64_t g = 0; g < groups; ++g) {
    A8Group& grp = out.groups[g];
    grp.width = g < E ? s.d_ff : s.shared_width();
    const bool held = g == E || held_.empty() || held_[g];
    grp.up = at;
    if (held) at += (grp.width + kA8Cols - 1) / kA8Cols * a8_panel_bytes(q4, np, d);
    grp.down = at;
    if (held) at += out_panels * a8_panel_bytes(q4, 1, grp.width);
    grp.end = at;
  }
  out.data.resize(at);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads_)
  for (int64_t g = 0; g < groups; ++g) {
    const A8Group& grp = out.groups[g];
    if (grp.end == grp.up) continue;
    const bool shared = g == E;
    const QuantMatrix* up[2] = {shared ? &w.qs1 : &w.q1, shared ? &w.qs3 : &w.q3};
    const int64_t up_bytes = a8_panel_bytes(q4, np, d);
    for (int64_t p = 0; p * kA8Cols < grp.width; ++p) {
      pack_a8_panel(up, np, shared ? 0 : g * grp.width, grp.width, d, p, q4, a8_->i8_unsigned,
                    out.data.data() + grp.up + p * up_bytes);
    }
    const QuantMatrix* down[1] = {shared ? &w.qs2 : &w.q2};
    const int64_t down_bytes = a8_panel_bytes(q4, 1, grp.width);
    for (int64_t p = 0; p < out_panels; ++p) {
      pack_a8_panel(down, 1, shared ? 0 : g * d, d, grp.width, p, q4, a8_->i8_unsigned,
                    out.data.data() + grp.down + p * down_bytes);
    }
  }
}

// The experts on `count` dispatched rows of x into y: each token's row quantized once, gate/up
// with the activation in FP32, each hidden row quantized, down with the routing weight and the
// combine. Orphaned worksharing loops, as experts().
void CpuKernel::experts_a8(int64_t layer, const float* x, int64_t count, float* y,
                           Clock::time_point& mark) {
  const Shape& s = problem_->shape;
  const A8Layer& packed = a8_layers_[layer];
  const A8Kernels& a8 = *a8_;
  const int64_t d = s.d_model, R = isa_->rows;
  const bool q4 = storage_ == Storage::kQ4;
  const Act act = to_act(s.activation);
  const int64_t up_bytes = a8_panel_bytes(q4, gated_ ? 2 : 1, d);
  const auto rows_of = [](const A8Buffers& buf, const int32_t* index, int64_t first, int n) {
    A8Rows rows;
    for (int r = 0; r < n; ++r) {
      const int64_t i = index != nullptr ? index[r] : first + r;
      rows.codes[r] = buf.codes.data() + i * buf.stride;
      rows.magnitudes[r] =
          buf.magnitudes.empty() ? nullptr : buf.magnitudes.data() + i * buf.stride;
      rows.code_sum[r] = buf.code_sums.empty() ? 0 : buf.code_sums[i];
      rows.group_sums[r] = buf.group_sums.data() + i * buf.groups;
      rows.scale[r] = buf.scales[i];
      rows.low[r] = buf.a16 ? buf.low.data() + i * buf.stride : nullptr;
      rows.group_scales[r] = buf.a16 ? buf.group_scales.data() + i * buf.groups : nullptr;
    }
    return rows;
  };
#pragma omp for schedule(static)
  for (int64_t t = 0; t < count; ++t) x8_.quantize(x + t * d, d, t);
#pragma omp master
  lap(1, mark);
  const int64_t up_grab = std::max<int64_t>(1, num_runs_ / (threads_ * kUpGrabDiv));
#pragma omp for schedule(dynamic, up_grab)
  for (int64_t run = 0; run < num_runs_; ++run) {
    const int32_t g = run_group_[run];
    const A8Group& grp = packed.groups[g];
    const int64_t panel = run_panel_[run];
    const char* wp = packed.data.data() + grp.up + panel * up_bytes;
    for (int64_t b = group_blocks_[g]; b < group_blocks_[g + 1]; ++b) {
      const A8Rows rows = rows_of(x8_, block_tokens_.data() + b * R, 0, block_rows_[b]);
      a8.gate_up(rows, block_rows_[b], wp, run_panels_[run], d, q4, act,
                 hp_.data() + b * R * max_width_, max_width_, panel * kA8Cols, grp.width);
    }
  }
  // Each hidden row once every panel of gate/up has written it.
#pragma omp for schedule(static)
  for (int64_t b = 0; b < num_blocks_; ++b) {
    const int64_t width = packed.groups[block_group_[b]].width;
    for (int64_t r = 0; r < block_rows_[b]; ++r) {
      h8_.quantize(hp_.data() + (b * R + r) * max_width_, width, b * R + r);
    }
  }
#pragma omp master
  lap(2, mark);
  // Down with the routing weight and the combine: an item owns a range of output panels for
  // every token, as in experts().
  const int64_t out_panels = (d + kA8Cols - 1) / kA8Cols;
  const int64_t per_item =
      std::clamp<int64_t>(out_panels / (2 * threads_), 1, 2 * kDownPanelsPerItem);
  const int64_t items = (out_panels + per_item - 1) / per_item;
#pragma omp for schedule(dynamic, 1)
  for (int64_t item = 0; item < items; ++item) {
    const int64_t q0 = item * per_item, q1 = std::min(out_panels, q0 + per_item);
    const int64_t c0 = q0 * kA8Cols, c1 = std::min(d, q1 * kA8Cols);
    for (int64_t t = 0; t < count; ++t) std::fill(y + t * d + c0, y + t * d + c1, 0.0f);
    for (int64_t g = 0; g < std::ssize(packed.groups); ++g) {
      const A8Group& grp = packed.groups[g];
      const char* wp = packed.data.data() + grp.down + q0 * a8_panel_bytes(q4, 1, grp.width);
      for (int64_t b = group_blocks_[g]; b < group_blocks_[g + 1]; ++b) {
        const A8Rows rows = rows_of(h8_, nullptr, b * R, block_rows_[b]);
        (h8_.a16 ? a8.down_a16 : a8.down)(rows, block_rows_[b], wp, static_cast<int>(q1 - q0),
                                          grp.width, q4, block_tokens_.data() + b * R,
                                          block_weights_.data() + b * R, y, d, c0, d);
      }
    }
  }
#pragma omp master
  lap(3, mark);
}

}  // namespace moe_bench::cpu::detail
