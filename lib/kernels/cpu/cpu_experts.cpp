// The `cpu` kernel's expert stages on dispatched rows: the gather into row blocks, gate/up with
// the activation, down with the routing weight and the combine; and q4's group sums.
#include <omp.h>

#include <algorithm>
#include <bit>

#include "cpu_kernel.hpp"

namespace moe_bench::cpu::detail {

// The experts on `n` dispatched rows of x into y (FP32): gather, gate/up, down with the
// weighted combine. Orphaned worksharing loops: call from every thread of a parallel region
// after dispatch().
void CpuKernel::experts(int64_t layer, const float* x, int64_t count, float* y,
                        Clock::time_point& mark) {
  if (a8_ != nullptr) {
    experts_a8(layer, x, count, y, mark);
    return;
  }
  const Problem& p = *problem_;
  const Shape& s = p.shape;
  const PackedLayer& packed = layers_[layer];
  const IsaKernels& isa = *isa_;
  const int64_t T = count, d = s.d_model, R = isa.rows;
  const int64_t L2 = 2 * isa.lanes, down_panels = (d + L2 - 1) / L2;
  // Up to 8 panels per down item (their weight chunks fill half of L2), at least two items per
  // thread for balance.
  const int64_t panels_per_item =
      std::clamp<int64_t>(down_panels / (2 * threads_), 1, kDownPanelsPerItem);
  const int64_t down_items = (down_panels + panels_per_item - 1) / panels_per_item;
  const Act act = to_act(s.activation);
  {
    // Gather each row block of tokens into the k-major layout the micro-kernel streams.
#pragma omp for schedule(static)
    for (int64_t b = 0; b < num_blocks_; ++b) {
      float* xp = xp_.data() + b * R * d;
      const int32_t* tokens = block_tokens_.data() + b * R;
      const int64_t n = block_rows_[b];
      // Row pointers first, then one sequential pass over the k-major destination.
      const float* rows[kMaxRows];
      for (int64_t r = 0; r < n; ++r) rows[r] = x + static_cast<int64_t>(tokens[r]) * d;
      if (kpack_ == 1) {
        for (int64_t i = 0; i < d; ++i) {
          for (int64_t r = 0; r < n; ++r) xp[i * R + r] = rows[r][i];
        }
        if (!xsum_.empty() && n <= q4_sum_rows()) {
          group_sums(xp, d, n, xsum_.data() + b * R * (d / kQ4Rows));
        }
      } else {
        // bf16 pairs: rows 2i and 2i+1 in one word, zero padded. The values are bf16 already,
        // so their upper 16 bits are exact.
        auto* words = reinterpret_cast<uint32_t*>(xp);
        auto top = [](float v) { return std::bit_cast<uint32_t>(v) >> 16; };
        const int64_t pairs = (d + 1) / 2, kblock = isa.kblock;
        // Blocked layouts (AMX): each row's full blocks are runs of kblock words, read and
        // written in order (word by word through pair_word, strided and with divisions, this
        // took 11% of workload B at 1024 tokens).
        // (Whole pairs only: with d odd, the last pair's high half is padding.)
        const int64_t blocked = kblock > 1 ? d / 2 / kblock * kblock : 0;
        for (int64_t b0 = 0; b0 < blocked; b0 += kblock) {
          for (int64_t r = 0; r < n; ++r) {
            uint32_t* out = words + (b0 * R + r * kblock);
            const float* in = rows[r] + 2 * b0;
            for (int64_t j = 0; j < kblock; ++j) out[j] = top(in[2 * j]) | top(in[2 * j + 1]) << 16;
          }
        }
        for (int64_t i = 2 * blocked; i < d; i += 2) {
          for (int64_t r = 0; r < n; ++r) {
            const uint32_t hi = i + 1 < d ? top(rows[r][i + 1]) : 0u;
            words[pair_word(i / 2, r, R, pairs, kblock)] = top(rows[r][i]) | hi << 16;
          }
        }
        if (!xsum_.empty()) pair_group_sums(words, d, n, xsum_.data() + b * R * (d / kQ4Rows));
      }
    }
#pragma omp master
    lap(1, mark);
    // Gate/up with the activation fused: one run is one expert's panel of hidden columns, or
    // adjacent panels of an expert with up to kMaxPanelRows rows, streamed side by side
    // (IsaKernels::gate_up_panels).
    // The reduction over d runs in chunks so that a chunk of the weight panel and the same
    // chunk of every row block stay in L2; raw sums wait in a per-thread buffer between chunks.
    float* partial = partial_.data() + omp_get_thread_num() * partial_stride_;
    // Adjacent runs per grab (1/16 of a thread's share): a thread streams contiguous weights,
    // which the prefetchers follow from one run into the next, and the tail stays balanced.
    // Measured against single panels side by side: 1.02-1.14x at decode sizes in bf16
    // (workloads A and B, uniform and zipf routing), neutral at prefill sizes.
    const int64_t up_grab = std::max<int64_t>(1, num_runs_ / (threads_ * kUpGrabDiv));
    const int64_t panel_bytes = storage_bytes(storage_, d_pad_ * L2);
#pragma omp for schedule(dynamic, up_grab)
    for (int64_t run = 0; run < num_runs_; ++run) {
      const int32_t g = run_group_[run];
      const int64_t panel = run_panel_[run];
      const Group& grp = packed.groups[g];
      const char* wp =
          packed.data.data() + storage_bytes(storage_, grp.up_offset + panel * d_pad_ * L2);
      for (int64_t i0 = 0; i0 < d; i0 += kUpChunk) {
        const int64_t dc = std::min(kUpChunk, d - i0);
        const bool first = i0 == 0, last = i0 + dc == d;
        QuantArgs quant{up_scales(packed, grp, panel, i0, d), hidden_};
        if (run_panels_[run] > 1) {
          const int64_t b = group_blocks_[g];
          quant.group_sums = sums_at(xsum_, b, d, i0);
          const int64_t scale_bytes = panel_scale_bytes(d);
          isa.gate_up_panels(xp_.data() + b * R * d + i0 / kpack_ * R,
                             wp + storage_bytes(storage_, i0 * L2), panel_bytes, run_panels_[run],
                             dc, block_rows_[b], hp_.data() + b * R * max_width_, panel * hcols_,
                             hcols_, grp.width, act, first ? nullptr : partial,
                             last ? nullptr : partial, storage_, quant, scale_bytes);
          continue;
        }
        for (int64_t b = group_blocks_[g]; b < group_blocks_[g + 1]; ++b) {
          float* acc = partial + (b - group_blocks_[g]) * R * L2;
          quant.group_sums = sums_at(xsum_, b, d, i0);
          isa.gate_up(xp_.data() + b * R * d + i0 / kpack_ * R,
                      wp + storage_bytes(storage_, i0 * L2), dc, block_rows_[b],
                      hp_.data() + b * R * max_width_, panel * hcols_, grp.width, act,
                      first ? nullptr : acc, last ? nullptr : acc, storage_, quant);
        }
      }
    }
    // The hidden blocks' group sums, once every panel of gate/up has written them.
    if (!hsum_.empty()) {
#pragma omp for schedule(static)
      for (int64_t b = 0; b < num_blocks_; ++b) {
        if (block_rows_[b] > q4_sum_rows()) continue;
        const int64_t width = packed.groups[block_group_[b]].width;
        float* out = hsum_.data() + b * R * (max_width_ / kQ4Rows);
        const float* hp = hp_.data() + b * R * max_width_;
        if (kpack_ == 1) {
          group_sums(hp, width, block_rows_[b], out);
        } else {
          pair_group_sums(reinterpret_cast<const uint32_t*>(hp), width, block_rows_[b], out);
        }
      }
    }
#pragma omp master
    lap(2, mark);
    // Down projection with the routing weight and the scatter-add fused: one item owns a range
    // of output panels for every token, so no two threads write the same y. Within an item the
    // hidden chunk of a row block is reused across its panels (from L1) while their weight
    // chunks stay in L2; the combine is linear, so each chunk of the reduction over f adds its
    // share to y.
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < down_items; ++item) {
      const int64_t q0 = item * panels_per_item;
      const int64_t q1 = std::min(down_panels, q0 + panels_per_item);
      const int64_t c0 = q0 * L2, c1 = std::min(d, q1 * L2);
      for (int64_t t = 0; t < T; ++t) std::fill(y + t * d + c0, y + t * d + c1, 0.0f);
      for (int64_t g = 0; g < static_cast<int64_t>(packed.groups.size()); ++g) {
        const Group& grp = packed.groups[g];
        for (int64_t j0 = 0; j0 < grp.width; j0 += kDownChunk) {
          const int64_t fc = std::min(kDownChunk, grp.width - j0);
          const int64_t fc_pad = round_up(fc, kpack_);
          for (int64_t b = group_blocks_[g]; b < group_blocks_[g + 1]; ++b) {
            const float* hp = hp_.data() + b * R * max_width_ + j0 / kpack_ * R;
            // The chunk of every panel of this item lies in one contiguous run of memory.
            const char* chunk = packed.data.data() +
                                storage_bytes(storage_, grp.down_offset + j0 * down_panels * L2);
            if (side_by_side(block_rows_[b])) {
              // Up to side_by_side_panels() panels side by side, a memory stream each.
              const int64_t step = side_by_side_panels(block_rows_[b]);
              for (int64_t q = q0; q < q1; q += step) {
                const QuantArgs quant{down_scales(packed, grp, q, j0), hidden_,
                                      sums_at(hsum_, b, max_width_, j0)};
                const int64_t scale_bytes = panel_scale_bytes(grp.width);
                isa.down_panels(hp, chunk + storage_bytes(storage_, q * fc_pad * L2),
                                storage_bytes(storage_, fc_pad * L2),
                                static_cast<int>(std::min(step, q1 - q)), fc, block_rows_[b],
                                block_tokens_.data() + b * R, block_weights_.data() + b * R, y, d,
                                q * L2, d, storage_, quant, scale_bytes);
              }
              continue;
            }
            for (int64_t q = q0; q < q1; ++q) {
              const QuantArgs quant{down_scales(packed, grp, q, j0), hidden_,
                                    sums_at(hsum_, b, max_width_, j0)};
              isa.down(hp, chunk + storage_bytes(storage_, q * fc_pad * L2), fc, block_rows_[b],
                       block_tokens_.data() + b * R, block_weights_.data() + b * R, y, d, q * L2,
                       std::min(L2, d - q * L2), storage_, quant);
            }
          }
        }
      }
    }
#pragma omp master
    lap(3, mark);
  }
}

// -8 times the sum over each group of kQ4Rows rows of a k-major block (src[i * R + r], len
// rows, n of R rows used) into out[group * R + r].
void CpuKernel::group_sums(const float* src, int64_t len, int64_t n, float* out) const {
  const int64_t R = isa_->rows;
  for (int64_t g = 0; g < len / kQ4Rows; ++g) {
    for (int64_t r = 0; r < n; ++r) {
      float sum = 0;
      for (int64_t i = g * kQ4Rows; i < (g + 1) * kQ4Rows; ++i) sum += src[i * R + r];
      out[g * R + r] = -8.0f * sum;
    }
  }
}

// The same of a block of bf16 pair words (kblock 1): word p * R + r holds rows 2p and 2p + 1.
void CpuKernel::pair_group_sums(const uint32_t* words, int64_t len, int64_t n, float* out) const {
  const int64_t R = isa_->rows;
  for (int64_t g = 0; g < len / kQ4Rows; ++g) {
    for (int64_t r = 0; r < n; ++r) {
      float sum = 0;
      for (int64_t p = g * kQ4Rows / 2; p < (g + 1) * kQ4Rows / 2; ++p) {
        const uint32_t w = words[p * R + r];
        sum += std::bit_cast<float>(w << 16) + std::bit_cast<float>(w & 0xffff0000u);
      }
      out[g * R + r] = -8.0f * sum;
    }
  }
}

// Block b's group sums from reduction row i0 on (sums of `len`-row blocks), or null where
// there are none.
const float* CpuKernel::sums_at(const std::vector<float>& sums, int64_t b, int64_t len,
                                int64_t i0) const {
  if (sums.empty() || block_rows_[b] > q4_sum_rows()) return nullptr;
  const int64_t R = isa_->rows;
  return sums.data() + b * R * (len / kQ4Rows) + i0 / kQ4Rows * R;
}

}  // namespace moe_bench::cpu::detail
