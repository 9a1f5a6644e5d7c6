// Routing and permutation arithmetic of the CUDA implementations, written once as
// __host__ __device__ functions: the kernels in cuda_moe.cu run them on the device, and
// tests/unit/cuda_index_test.cpp runs the very same code on the CPU against the reference
// semantics (routing.cpp, apply_capacity). Plain C++17, no CUDA headers: g++ compiles it too.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define MOE_HD __host__ __device__
#else
#define MOE_HD
#endif

namespace moe_bench::cuda {

/// Routing options as the device sees them (moe_bench::RoutingConfig without std types).
struct DevRouting {
  int scoring = 0;  ///< 0 softmax, 1 sigmoid, 2 softmax over the chosen k logits (GPT-OSS)
  bool renormalize = true;
  float scale = 1.0f;
  bool selection_bias = false;
  int groups = 0;
  int topk_groups = 0;
};

/// Per-token scratch route_one needs: 2E floats, E flags, and the groups' scores and flags.
struct RouteScratch {
  float* score;            ///< E
  float* select;           ///< E
  unsigned char* allowed;  ///< E
  float* group_score;      ///< groups
  unsigned char* group_free;
};

MOE_HD inline int64_t round_up(int64_t n, int64_t tile) { return (n + tile - 1) / tile * tile; }

// Index of the largest allowed value; ties go to the lower index; -1 when none is allowed.
MOE_HD inline int argmax_allowed(const float* v, const unsigned char* allowed, int n) {
  int best = -1;
  for (int i = 0; i < n; ++i) {
    if (allowed[i] && (best < 0 || v[i] > v[best])) best = i;
  }
  return best;
}

/// One token's routing from its router logits (bias already added), exactly the semantics of
/// moe_bench::route_token in FP32: scores, selection scores (+ bias), group-limited candidates,
/// top-k with ties to the lower index, then combine weights (renormalised or softmaxed over the
/// chosen k, then scaled).
MOE_HD inline void route_one(const DevRouting& r, const float* logits, const float* selection_bias,
                             int experts, int top_k, int32_t* out_expert, float* out_weight,
                             const RouteScratch& s) {
  if (r.scoring == 0) {
    float m = logits[0];
    for (int e = 1; e < experts; ++e) m = logits[e] > m ? logits[e] : m;
    float sum = 0;
    for (int e = 0; e < experts; ++e) sum += s.score[e] = expf(logits[e] - m);
    for (int e = 0; e < experts; ++e) s.score[e] /= sum;
  } else if (r.scoring == 1) {
    for (int e = 0; e < experts; ++e) s.score[e] = 1.0f / (1.0f + expf(-logits[e]));
  } else {
    for (int e = 0; e < experts; ++e) s.score[e] = logits[e];
  }
  for (int e = 0; e < experts; ++e) {
    s.select[e] = s.score[e] + (r.selection_bias ? selection_bias[e] : 0.0f);
    s.allowed[e] = 1;
  }
  if (r.groups > 0) {
    const int per = experts / r.groups;
    for (int g = 0; g < r.groups; ++g) {
      const float* v = s.select + g * per;
      float first = -INFINITY, second = -INFINITY;
      for (int i = 0; i < per; ++i) {
        if (v[i] > first) {
          second = first;
          first = v[i];
        } else if (v[i] > second) {
          second = v[i];
        }
      }
      s.group_score[g] = per >= 2 ? first + second : first;
      s.group_free[g] = 1;
    }
    for (int e = 0; e < experts; ++e) s.allowed[e] = 0;
    for (int j = 0; j < r.topk_groups; ++j) {
      const int g = argmax_allowed(s.group_score, s.group_free, r.groups);
      s.group_free[g] = 0;
      for (int e = g * per; e < (g + 1) * per; ++e) s.allowed[e] = 1;
    }
  }
  for (int j = 0; j < top_k; ++j) {
    const int e = argmax_allowed(s.select, s.allowed, experts);
    out_expert[j] = e;
    s.allowed[e] = 0;
  }
  float sum = 0;
  if (r.scoring == 2) {
    float m = s.score[out_expert[0]];
    for (int j = 1; j < top_k; ++j) m = s.score[out_expert[j]] > m ? s.score[out_expert[j]] : m;
    for (int j = 0; j < top_k; ++j) sum += out_weight[j] = expf(s.score[out_expert[j]] - m);
    for (int j = 0; j < top_k; ++j) out_weight[j] /= sum;
  } else {
    for (int j = 0; j < top_k; ++j) sum += out_weight[j] = s.score[out_expert[j]];
    if (r.renormalize && sum > 0.0f) {
      for (int j = 0; j < top_k; ++j) out_weight[j] /= sum;
    }
  }
  if (r.scale != 1.0f) {
    for (int j = 0; j < top_k; ++j) out_weight[j] *= r.scale;
  }
}

// The permutation puts the kept assignments of each expert in contiguous rows, in the order of
// the flat assignment index i = token * k + j (the order capacity drops in), each expert's block
// padded to a multiple of the GEMM row tile; shared experts form one more group holding every
// token. `offsets[g]` is the first row of group g, `offsets[groups]` the total.

/// Rows group g keeps: its assignments, at most `capacity` (negative: no limit).
MOE_HD inline int64_t kept_rows(const int32_t* expert, int64_t assignments, int g,
                                int64_t capacity) {
  int64_t n = 0;
  for (int64_t i = 0; i < assignments; ++i) n += expert[i] == g ? 1 : 0;
  return capacity >= 0 && n > capacity ? capacity : n;
}

/// offsets[0..experts] from the kept rows per expert, then the shared group (shared_rows rows, 0
/// for none) at offsets[experts..experts + 1]. Returns the number of groups.
MOE_HD inline int scan_offsets(const int64_t* kept, int experts, int64_t shared_rows, int64_t tile,
                               int64_t* offsets) {
  offsets[0] = 0;
  for (int g = 0; g < experts; ++g) offsets[g + 1] = offsets[g] + round_up(kept[g], tile);
  if (shared_rows <= 0) return experts;
  offsets[experts + 1] = offsets[experts] + round_up(shared_rows, tile);
  return experts + 1;
}

/// Places group g's rows: row_token (token, or -1 for padding), row_weight (routing weight, 0 for
/// padding) and, for each of its assignments, inv[i] (its row, or -1 when capacity dropped it).
MOE_HD inline void place_group(int g, const int32_t* expert, const float* weight,
                               int64_t assignments, int top_k, int64_t capacity,
                               const int64_t* offsets, int32_t* row_token, float* row_weight,
                               int64_t* inv) {
  int64_t rank = 0;
  for (int64_t i = 0; i < assignments; ++i) {
    if (expert[i] != g) continue;
    if (capacity < 0 || rank < capacity) {
      const int64_t row = offsets[g] + rank;
      row_token[row] = static_cast<int32_t>(i / top_k);
      row_weight[row] = weight[i];
      inv[i] = row;
    } else {
      inv[i] = -1;
    }
    ++rank;
  }
  const int64_t kept = capacity >= 0 && rank > capacity ? capacity : rank;
  for (int64_t row = offsets[g] + kept; row < offsets[g + 1]; ++row) {
    row_token[row] = -1;
    row_weight[row] = 0.0f;
  }
}

/// The shared group: every token once, weight 1, in token order.
MOE_HD inline void place_shared(int64_t tokens, const int64_t* offsets, int experts,
                                int32_t* row_token, float* row_weight) {
  for (int64_t row = offsets[experts]; row < offsets[experts + 1]; ++row) {
    const int64_t t = row - offsets[experts];
    row_token[row] = t < tokens ? static_cast<int32_t>(t) : -1;
    row_weight[row] = t < tokens ? 1.0f : 0.0f;
  }
}

/// Most rows the permutation can need: every assignment kept, every group padded by a tile.
MOE_HD inline int64_t max_rows(int64_t assignments, int experts, int64_t shared_rows,
                               int64_t tile) {
  int64_t rows = round_up(assignments, tile) + static_cast<int64_t>(experts) * tile;
  if (shared_rows > 0) rows += round_up(shared_rows, tile);
  return rows;
}

/// The group a row belongs to (offsets[g] <= row < offsets[g + 1]), or `groups` past the end.
MOE_HD inline int group_of_row(const int64_t* offsets, int groups, int64_t row) {
  if (row >= offsets[groups]) return groups;
  int lo = 0, hi = groups - 1;  // the last g with offsets[g] <= row
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (offsets[mid] <= row) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

// The grouped GEMM's packed layouts. Gate/up: one matrix of rows [n][k] per expert; gated, in
// blocks of `block_cols` rows (the GEMM's column tile), the first half the W1 rows of block_cols/2
// hidden units and the second half the W3 rows of the same units, so that one output tile holds
// the gate and the up value of each of its units; ungated (GELU), plain W1 rows.

/// Rows of a packed gate/up matrix for a hidden width padded to `width_pad`.
MOE_HD inline int64_t packed_up_rows(int64_t width_pad, bool gated) {
  return gated ? 2 * width_pad : width_pad;
}

/// Which weight row packed row r holds: its hidden unit (may lie beyond the true width, then the
/// row is zero) and whether it is a W3 (up) row.
MOE_HD inline int64_t packed_up_unit(int64_t r, bool gated, int64_t block_cols, bool* is_up) {
  if (!gated) {
    *is_up = false;
    return r;
  }
  const int64_t block = r / block_cols, j = r % block_cols, half = block_cols / 2;
  *is_up = j >= half;
  return block * half + j % half;
}

/// The hidden column the epilogue of column tile `tile_x` writes for its column j (gated: j below
/// half the tile, pairing tile columns j and j + half; GELU: every column).
MOE_HD inline int64_t hidden_column(int64_t tile_x, int64_t j, bool gated, int64_t block_cols) {
  return gated ? tile_x * (block_cols / 2) + j : tile_x * block_cols + j;
}

/// The expert activation on the raw gate and up sums (act: 0 SwiGLU, 1 GELU with erf, 2 GPT-OSS's
/// clamped SwiGLU); `u` is unused for GELU.
MOE_HD inline float activate(int act, float g, float u) {
  if (act == 0) return g / (1.0f + expf(-g)) * u;
  if (act == 1) return 0.5f * g * (1.0f + erff(g * 0.70710678118654752f));
  const float gc = fminf(g, 7.0f);
  const float uc = fmaxf(fminf(u, 7.0f), -7.0f);
  return gc / (1.0f + expf(-1.702f * gc)) * (uc + 1.0f);
}

/// Output element (t, c) of the combine, before rounding to the dtype: the token's kept rows of O
/// in rank order (times their routing weight when O's rows are unweighted, row_weight non-null),
/// plus its row of the shared group. A fixed order per element: no atomics, the same bits on
/// every run.
MOE_HD inline float combine_element(const float* o, int64_t ldo, const int64_t* inv,
                                    const int64_t* offsets, int experts, bool shared,
                                    const float* row_weight, int top_k, int64_t t, int64_t c) {
  float acc = 0;
  for (int j = 0; j < top_k; ++j) {
    const int64_t row = inv[t * top_k + j];
    if (row >= 0) acc += o[row * ldo + c] * (row_weight != nullptr ? row_weight[row] : 1.0f);
  }
  if (shared) acc += o[(offsets[experts] + t) * ldo + c];
  return acc;
}

}  // namespace moe_bench::cuda
