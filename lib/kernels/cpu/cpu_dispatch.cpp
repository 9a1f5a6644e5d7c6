// The `cpu` kernel's first stages: routing each row, and the counting-sort dispatch of rows
// to experts in row blocks and gate/up runs.
#include <omp.h>

#include <algorithm>
#include <bit>

#include "cpu_kernel.hpp"

namespace moe_bench::cpu::detail {

// Router logits, scores and top-k for the first `tokens` rows of x, one token per iteration
// (an orphaned worksharing loop: call it from every thread of a parallel region).
void CpuKernel::route_rows(int64_t layer, int64_t tokens, int32_t* expert, float* weight) {
  const Problem& p = *problem_;
  const Shape& s = p.shape;
  const LayerWeights& w = p.layers[layer];
  const int64_t E = s.experts, k = s.top_k, d = s.d_model;
  float* scratch = scratch_.data() + omp_get_thread_num() * 2 * E;
#pragma omp for schedule(static)
  for (int64_t t = 0; t < tokens; ++t) {
    float* l = logits_.data() + t * E;
    isa_->dot_rows(p.x.data() + t * d, w.wg.data(), E, d, l);
    for (int64_t e = 0; e < E; ++e) l[e] += w.logit_bias[e];
    route_token(s.routing, l, w.selection_bias.data(), E, k, expert + t * k, weight + t * k,
                scratch);
  }
}

// Counting sort of the kept assignments of `rows` rows by expert, row blocks and gate/up runs.
// `shared`: which rows the shared experts take (null: every row); `no_shared`: none.
void CpuKernel::dispatch(const PackedLayer& packed, int64_t rows, const int32_t* expert,
                         const float* weight, const uint8_t* kept, const uint8_t* shared,
                         bool no_shared) {
  const Shape& s = problem_->shape;
  const int64_t T = rows, E = s.experts, k = s.top_k, R = isa_->rows;
  std::fill(counts_.begin(), counts_.end(), 0);
  for (int64_t i = 0; i < T * k; ++i) {
    if (kept[i]) ++counts_[expert[i] + 1];
  }
  for (int64_t e = 0; e < E; ++e) counts_[e + 1] += counts_[e];
  std::copy(counts_.begin(), counts_.end() - 1, fill_.begin());
  for (int64_t i = 0; i < T * k; ++i) {
    if (kept[i]) order_[fill_[expert[i]]++] = i;
  }
  int64_t shared_n = 0;
  if (!no_shared) {
    for (int64_t t = 0; t < T; ++t) {
      if (shared == nullptr || shared[t]) shared_rows_[shared_n++] = static_cast<int32_t>(t);
    }
  }
  num_blocks_ = 0;
  num_runs_ = 0;
  const auto groups = static_cast<int64_t>(packed.groups.size());
  for (int64_t g = 0; g < groups; ++g) {
    group_blocks_[g] = num_blocks_;
    const bool is_shared = g == E;
    const int64_t n = is_shared ? shared_n : counts_[g + 1] - counts_[g];
    for (int64_t start = 0; start < n; start += R) {
      const int64_t b = num_blocks_++;
      block_group_[b] = static_cast<int32_t>(g);
      block_rows_[b] = static_cast<int32_t>(std::min(R, n - start));
      for (int64_t r = 0; r < block_rows_[b]; ++r) {
        const int64_t a = is_shared ? -1 : order_[counts_[g] + start + r];
        block_tokens_[b * R + r] =
            is_shared ? shared_rows_[start + r] : static_cast<int32_t>(a / k);
        block_weights_[b * R + r] = is_shared ? 1.0f : weight[a];
      }
    }
    if (n == 0) continue;
    const int64_t panels = (packed.groups[g].width + hcols_ - 1) / hcols_;
    // Few rows: runs of panels side by side (side_by_side_panels()); otherwise a panel a run.
    const int64_t per_run = side_by_side(n) ? side_by_side_panels(n) : 1;
    for (int64_t pnl = 0; pnl < panels; pnl += per_run) {
      run_group_[num_runs_] = static_cast<int32_t>(g);
      run_panel_[num_runs_] = static_cast<int32_t>(pnl);
      run_panels_[num_runs_++] = static_cast<int32_t>(std::min(per_run, panels - pnl));
    }
  }
  group_blocks_[groups] = num_blocks_;
}

}  // namespace moe_bench::cpu::detail
