// Routing with one warp per token, the padded expert-contiguous permutation and the
// atomic-free combine, shared by both engines. The index arithmetic is in moe_index.hpp.
#pragma once

#include "cuda_support.cuh"

// Included only by the engine translation units (*.cu here); internal linkage in each.
namespace moe_bench::cuda {
namespace {

// One warp per token: lanes split the router dot products over d (FP32), lane 0 then ranks the
// experts with route_one. With `precomputed`, logits already hold x wg^T (the cuBLAS baseline).
__global__ void route_kernel(const float* x, const float* wg, const float* logit_bias,
                             const float* selection_bias, float* logits, float* scratch,
                             int64_t tokens, int experts, int64_t d, int top_k, DevRouting routing,
                             bool precomputed, int32_t* out_expert, float* out_weight) {
  const int64_t t = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (t >= tokens) return;
  float* l = logits + t * experts;
  if (!precomputed) {
    const float* xt = x + t * d;
    for (int e = 0; e < experts; ++e) {
      const float* we = wg + e * d;
      float sum = 0;
      for (int64_t i = lane; i < d; i += 32) sum += xt[i] * we[i];
      for (int off = 16; off > 0; off /= 2) sum += __shfl_down_sync(0xffffffffu, sum, off);
      if (lane == 0) l[e] = sum;
    }
  }
  if (lane != 0) return;
  for (int e = 0; e < experts; ++e) l[e] += logit_bias[e];
  const int64_t per = 3 * experts + 2 * (routing.groups + 1);
  float* s = scratch + t * per;
  RouteScratch rs{s, s + experts, reinterpret_cast<unsigned char*>(s + 2 * experts),
                  s + 3 * experts,
                  reinterpret_cast<unsigned char*>(s + 3 * experts + routing.groups + 1)};
  route_one(routing, l, selection_bias, experts, top_k, out_expert + t * top_k,
            out_weight + t * top_k, rs);
}

// One block: kept rows per expert, the padded offsets, then every group's rows in parallel.
__global__ void permute_kernel(const int32_t* expert, const float* weight, int64_t assignments,
                               int experts, int top_k, int64_t capacity, int64_t shared_rows,
                               int64_t tile, int64_t* kept, int64_t* offsets, int32_t* row_token,
                               float* row_weight, int64_t* inv) {
  for (int g = threadIdx.x; g < experts; g += blockDim.x) {
    kept[g] = kept_rows(expert, assignments, g, capacity);
  }
  __syncthreads();
  if (threadIdx.x == 0) scan_offsets(kept, experts, shared_rows, tile, offsets);
  __syncthreads();
  for (int g = threadIdx.x; g < experts; g += blockDim.x) {
    place_group(g, expert, weight, assignments, top_k, capacity, offsets, row_token, row_weight,
                inv);
  }
  if (shared_rows > 0 && threadIdx.x == blockDim.x - 1) {
    place_shared(shared_rows, offsets, experts, row_token, row_weight);
  }
}

// y[t, c] = sum over the token's kept assignments, in rank order, of O[row, c] (times the row's
// weight when O is unweighted), plus the shared group's row; rounded to the dtype. Each output
// element is summed by one thread in a fixed order: bit-for-bit the same on every run.
__global__ void combine_kernel(const float* o, int64_t ldo, const int64_t* inv,
                               const int64_t* offsets, int experts, bool shared,
                               const float* row_weight, int64_t tokens, int top_k, int64_t d,
                               int elem, float* y) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= tokens * d) return;
  y[idx] = round_elem(
      combine_element(o, ldo, inv, offsets, experts, shared, row_weight, top_k, idx / d, idx % d),
      elem);
}

}  // namespace
}  // namespace moe_bench::cuda
