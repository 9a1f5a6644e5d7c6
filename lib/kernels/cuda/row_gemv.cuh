// The decode path of the grouped engine: with few rows per expert the layer is a stream of the
// active experts' weights, and a tensor-core tile of 16 rows computes mostly padding while one
// block per 64 columns leaves most of the device idle (the down projection of mixtral-8x7b at one
// token gave 32 blocks to 132 SMs). Here one warp owns one output unit (a gate/up pair of packed
// rows, or one down row) of one 16-row tile: its lanes stream the weight row in 16-byte loads,
// each valid row of the tile is dotted against it in FP32, a warp reduction in a fixed order
// finishes the sums (bit-for-bit repeatable), and the grouped GEMM's epilogues follow.
#pragma once

#include <type_traits>

#include "grouped_gemm.cuh"

// Included only by the engine translation units (*.cu here); internal linkage in each.
namespace moe_bench::cuda {
namespace {

constexpr int kGemvRows = 16;  // the row tile: the decode engine's BM
constexpr int kGemvWarps = 8;  // warps (output units) per block

template <typename T>
constexpr int kVecElems = 16 / static_cast<int>(sizeof(T));

// 16 bytes at p (16-byte aligned) as FP32 values; `stream`: read once (weights), evict first.
template <typename T, bool stream = false>
__device__ inline void load16(const T* p, float* out) {
  const uint4 raw =
      stream ? __ldcs(reinterpret_cast<const uint4*>(p)) : __ldg(reinterpret_cast<const uint4*>(p));
  const unsigned words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if constexpr (std::is_same_v<T, float>) {
      out[i] = __uint_as_float(words[i]);
    } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      __nv_bfloat162 h;
      memcpy(&h, &words[i], 4);
      const float2 f = __bfloat1622float2(h);
      out[2 * i] = f.x;
      out[2 * i + 1] = f.y;
    } else {
      __half2 h;
      memcpy(&h, &words[i], 4);
      const float2 f = __half22float2(h);
      out[2 * i] = f.x;
      out[2 * i + 1] = f.y;
    }
  }
}

__device__ inline float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Grid: x covers the output units in blocks of kGemvWarps, y the 16-row tiles of the permuted
// rows (tiles past the last group return at once). `row_token` marks padding rows (-1).
template <typename T, Epi kEpi>
__global__ void __launch_bounds__(kGemvWarps * 32)
    row_gemv(GemmArgs<T> args, const int32_t* row_token) {
  constexpr int V = kVecElems<T>;
  constexpr bool kPairable = kEpi == Epi::kGateUp;
  const int lane = threadIdx.x % 32;
  const int64_t unit = static_cast<int64_t>(blockIdx.x) * kGemvWarps + threadIdx.x / 32;
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kGemvRows;
  if (row0 >= args.offsets[args.groups]) return;
  const int g = group_of_row(args.offsets, args.groups, row0);
  const bool is_shared = g >= args.experts;
  const GroupB<T>& gb = is_shared ? args.shared : args.routed;
  const bool pair = kPairable && args.gated;
  if (unit >= (pair ? gb.n / 2 : gb.n)) return;
  const T* base = gb.b + (is_shared ? 0 : g * gb.group_stride);
  // Gated packing: blocks of kBN rows, the first half gate rows of kBN/2 units, then their up rows.
  const T* b0 =
      pair ? base + ((unit / (kBN / 2)) * kBN + unit % (kBN / 2)) * gb.k : base + unit * gb.k;
  const T* b1 = pair ? b0 + (kBN / 2) * gb.k : nullptr;

  const T* a[kGemvRows];
#pragma unroll
  for (int r = 0; r < kGemvRows; ++r) {
    const int64_t row = row0 + r;
    const int32_t token = row_token[row];
    if (token < 0) {
      a[r] = nullptr;
    } else {
      a[r] = args.a + (args.gather != nullptr ? static_cast<int64_t>(token) : row) * args.lda;
    }
  }
  float acc0[kGemvRows], acc1[kGemvRows];
#pragma unroll
  for (int r = 0; r < kGemvRows; ++r) acc0[r] = acc1[r] = 0.0f;

  // The weights of the next step are loaded before this step's arithmetic: two loads per row
  // in flight per lane.
  float w0[V], w1[V];
  int64_t k = static_cast<int64_t>(lane) * V;
  if (k < gb.k) {
    load16<T, true>(b0 + k, w0);
    if (pair) load16<T, true>(b1 + k, w1);
  }
  for (; k < gb.k; k += 32 * V) {
    float n0[V], n1[V];
    const bool more = k + 32 * V < gb.k;
    if (more) {
      load16<T, true>(b0 + k + 32 * V, n0);
      if (pair) load16<T, true>(b1 + k + 32 * V, n1);
    }
#pragma unroll
    for (int r = 0; r < kGemvRows; ++r) {
      if (a[r] == nullptr) continue;
      float av[V];
      load16(a[r] + k, av);
#pragma unroll
      for (int i = 0; i < V; ++i) {
        acc0[r] = fmaf(av[i], w0[i], acc0[r]);
        if (pair) acc1[r] = fmaf(av[i], w1[i], acc1[r]);
      }
    }
    if (more) {
#pragma unroll
      for (int i = 0; i < V; ++i) {
        w0[i] = n0[i];
        w1[i] = n1[i];
      }
    }
  }

#pragma unroll
  for (int r = 0; r < kGemvRows; ++r) {
    // Every lane holds the same pointers: the shuffles below run with the whole warp.
    const bool valid_row = a[r] != nullptr;
    const float s0 = valid_row ? warp_sum(acc0[r]) : 0.0f;
    const float s1 = valid_row && pair ? warp_sum(acc1[r]) : 0.0f;
    if (lane != r) continue;
    const int64_t row = row0 + r;
    if constexpr (kEpi == Epi::kGateUp) {
      const int64_t valid = is_shared ? args.valid_shared : args.valid_routed;
      const float h = valid_row && unit < valid ? activate(args.act, s0, s1) : 0.0f;
      args.h[row * args.ldh + unit] = to_elem<T>(h);
    } else {
      args.o[row * args.ldo + unit] = valid_row ? args.row_weight[row] * s0 : 0.0f;
    }
  }
}

}  // namespace
}  // namespace moe_bench::cuda
