// Host-side packing of the grouped engine's weights, written once in plain C++17 (no CUDA
// headers): grouped_engine.cu packs with it, tests/unit/cuda_index_test.cpp checks the layout on
// the CPU. The packing of a large preset (gigabytes per layer, per implementation, per case) runs
// on every host core: on one thread it took minutes before the first launch.
#pragma once

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

#include "moe_index.hpp"

namespace moe_bench::cuda {

/// fn(i) for every i in [0, n), in contiguous blocks on the host's cores. fn must not throw.
template <typename Fn>
void host_parallel_for(int64_t n, const Fn& fn) {
  const int64_t workers = std::clamp<int64_t>(
      static_cast<int64_t>(std::thread::hardware_concurrency()), 1, std::max<int64_t>(n / 64, 1));
  if (workers == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::vector<std::thread> pool;
  for (int64_t w = 0; w < workers; ++w) {
    pool.emplace_back([w, workers, n, &fn] {
      for (int64_t i = n * w / workers; i < n * (w + 1) / workers; ++i) fn(i);
    });
  }
  for (auto& t : pool) t.join();
}

/// The gate/up weights of `experts` FFNs of `width` hidden units each (W1 and W3 [width, d] per
/// expert, one expert after another) as the grouped engine reads them: per expert
/// packed_up_rows(width_pad) rows of d_pad elements; gated, blocks of `block_cols` rows, the
/// first half W1 rows of block_cols / 2 hidden units, then their W3 rows; GELU, W1 rows. Zero
/// beyond d and beyond the width. `convert` turns a float into the storage type T.
template <typename T, typename Convert>
void pack_up_weights(const float* w1, const float* w3, int64_t experts, int64_t width,
                     int64_t width_pad, int64_t d, int64_t d_pad, bool gated, int64_t block_cols,
                     const Convert& convert, std::vector<T>& out) {
  const int64_t rows = packed_up_rows(width_pad, gated);
  out.assign(static_cast<size_t>(experts * rows * d_pad), convert(0.0f));
  host_parallel_for(experts * rows, [&](int64_t er) {
    const int64_t e = er / rows, r = er % rows;
    bool is_up = false;
    const int64_t unit = packed_up_unit(r, gated, block_cols, &is_up);
    if (unit >= width) return;
    const float* src = (is_up ? w3 : w1) + (e * width + unit) * d;
    T* dst = out.data() + er * d_pad;
    for (int64_t i = 0; i < d; ++i) dst[i] = convert(src[i]);
  });
}

/// The down weights of `experts` FFNs (W2 [d, width] each) as [d_pad, width_pad] each, zero
/// padded.
template <typename T, typename Convert>
void pack_down_weights(const float* w2, int64_t experts, int64_t width, int64_t width_pad,
                       int64_t d, int64_t d_pad, const Convert& convert, std::vector<T>& out) {
  out.assign(static_cast<size_t>(experts * d_pad * width_pad), convert(0.0f));
  host_parallel_for(experts * d, [&](int64_t er) {
    const int64_t e = er / d, r = er % d;
    const float* src = w2 + (e * d + r) * width;
    T* dst = out.data() + (e * d_pad + r) * width_pad;
    for (int64_t j = 0; j < width; ++j) dst[j] = convert(src[j]);
  });
}

}  // namespace moe_bench::cuda
