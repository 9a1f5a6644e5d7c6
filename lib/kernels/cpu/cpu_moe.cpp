#include "cpu_moe.hpp"

#include <fmt/format.h>
#include <omp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cpu_isa.hpp"
#include "cpu_pack.hpp"
#include "cpu_select.hpp"
#include "moe_bench/aligned.hpp"
#include "moe_bench/dtype.hpp"
#include "moe_bench/roofline.hpp"
#include "moe_bench/routing.hpp"
#include "moe_bench/sysinfo.hpp"

namespace moe_bench::cpu {
namespace {

using AlignedFloats = Aligned<float>;

Act to_act(Activation a) {
  switch (a) {
    case Activation::kSwiglu:
      return Act::kSwiglu;
    case Activation::kGelu:
      return Act::kGelu;
    case Activation::kSwigluOai:
      return Act::kSwigluOai;
  }
  return Act::kSwiglu;
}

// The largest row block of any instruction set's micro-kernel.
constexpr int64_t kMaxRows = 16;
// Output panels one down-projection item covers at most.
constexpr int64_t kDownPanelsPerItem = 8;
// Rows of the gate/up panel (and of each row block) reduced per pass, for the same reason.
constexpr int64_t kUpChunk = 512;
// Chunks of the reduction start at whole blocks of pair words (IsaKernels::kblock, at most 16).
static_assert(kUpChunk % 32 == 0 && kDownChunk % 32 == 0);
// Gate/up runs a thread takes at once: its share of the runs over this.
constexpr int64_t kUpGrabDiv = 16;

Storage to_storage(Dtype d, WeightFormat w = WeightFormat::kSame) {
  if (w == WeightFormat::kInt8) return Storage::kI8;
  if (w == WeightFormat::kQ4) return Storage::kQ4;
  switch (d) {
    case Dtype::kF32:
      return Storage::kF32;
    case Dtype::kBF16:
      return Storage::kBF16;
    case Dtype::kF16:
      return Storage::kF16;
  }
  return Storage::kF32;
}

class CpuKernel final : public Kernel {
 public:
  CpuKernel(std::string name, const IsaKernels* forced) : name_(std::move(name)), forced_(forced) {}

  KernelInfo info() const override {
    return {name_,
            "cpu",
            forced_ != nullptr && forced_->bf16_only
                ? std::vector<Dtype>{Dtype::kBF16}
                : std::vector<Dtype>{Dtype::kF32, Dtype::kBF16, Dtype::kF16},
            fmt::format("fused routing, counting-sort dispatch, packed weights, {} micro-kernel "
                        "with SwiGLU and weighted combine fused in the epilogues, OpenMP over "
                        "(expert, tile)",
                        forced_ != nullptr ? forced_->name : "best-ISA"),
            1,
            forced_ != nullptr && forced_->bf16_only
                ? std::vector<WeightFormat>{WeightFormat::kSame}
                : std::vector<WeightFormat>{WeightFormat::kSame, WeightFormat::kInt8,
                                            WeightFormat::kQ4}};
  }

  std::optional<std::string> unavailable_reason() const override {
    if (forced_ == &avx512_kernels() && !has_avx512()) return no_isa("AVX-512F");
    if (forced_ == &avx2_kernels() && !has_avx2()) return no_isa("AVX2 with FMA and F16C");
    if (forced_ == &avx512_bf16_kernels() && !has_avx512_bf16())
      return no_isa("AVX512-BF16 (vdpbf16ps)");
    if (forced_ == &amx_kernels() && !has_amx()) return amx_refusal();
    if (forced_ == &amx_kernels() && !has_avx512_bf16())
      return "this CPU has AMX but no AVX512-BF16 for the epilogues";
    if (forced_ == &amx_model_kernels() && !has_avx512())
      return "the AMX model's epilogues need AVX-512F";
    return std::nullopt;
  }

  std::optional<std::string> can_run(const Shape&, Dtype dtype) const override {
    if (forced_ != nullptr && forced_->bf16_only && dtype != Dtype::kBF16)
      return fmt::format("{} runs bf16 only", name_);
    return std::nullopt;
  }

  std::optional<double> in_cache_gflops(int threads) const override {
    std::string why;
    const IsaKernels* isa = forced_ != nullptr ? forced_ : best_isa(Dtype::kF32, 1e9, why);
    if (isa->bf16_only || isa->kpack != 1 || unavailable_reason()) return std::nullopt;
    return cpu::in_cache_gflops(*isa, threads);
  }

  std::string notes() const override {
    if (isa_ == nullptr) return {};
    return fmt::format("{} micro-kernel{}{}", isa_->name,
                       isa_->kpack != 2    ? ""
                       : isa_->kblock == 1 ? " (bf16 pairs, vdpbf16ps)"
                                           : " (bf16 pairs, AMX tiles)",
                       why_.empty() ? "" : fmt::format(" ({})", why_));
  }

  void prepare(const Problem& p, int threads) override {
    problem_ = &p;
    storage_ = to_storage(p.dtype, p.shape.weights);
    hidden_ = to_storage(p.dtype);
    threads_ = std::max(threads, 1);
    why_.clear();
    const double rows_per_expert =
        static_cast<double>(p.shape.tokens * p.shape.top_k) / static_cast<double>(p.shape.experts);
    isa_ = forced_ != nullptr
               ? forced_
               : best_isa(p.dtype, rows_per_expert, why_, p.shape.weights != WeightFormat::kSame);
    kpack_ = isa_->kpack;
    const Shape& s = p.shape;
    d_pad_ = round_up(s.d_model, kpack_);
    const int64_t L = isa_->lanes, R = isa_->rows;
    gated_ = s.activation != Activation::kGelu;
    hcols_ = gated_ ? L : 2 * L;
    if (!hold_next_.empty() && std::ssize(hold_next_) != s.experts) {
      throw std::logic_error("hold_experts: one mark per expert");
    }
    held_ = hold_next_;
    layers_.resize(p.layers.size());
    for (size_t l = 0; l < p.layers.size(); ++l) pack_layer(p.layers[l], layers_[l]);

    const int64_t T = s.tokens, E = s.experts, k = s.top_k;
    const int64_t groups = E + (s.shared_width() > 0 ? 1 : 0);
    max_width_ = std::max(s.d_ff, s.shared_width());
    const int64_t max_blocks = (T * k + R - 1) / R + E + (T + R - 1) / R + 1;
    logits_.assign(static_cast<size_t>(T * E), 0.0f);
    scratch_.assign(static_cast<size_t>(threads_ * 2 * E), 0.0f);
    routing_.resize(T, k);
    counts_.assign(static_cast<size_t>(E + 1), 0);
    fill_.assign(static_cast<size_t>(E), 0);
    order_.assign(static_cast<size_t>(T * k), 0);
    shared_rows_.assign(static_cast<size_t>(T), 0);
    block_group_.assign(static_cast<size_t>(max_blocks), 0);
    block_rows_.assign(static_cast<size_t>(max_blocks), 0);
    block_tokens_.assign(static_cast<size_t>(max_blocks * R), 0);
    block_weights_.assign(static_cast<size_t>(max_blocks * R), 0.0f);
    group_blocks_.assign(static_cast<size_t>(groups + 1), 0);
    const int64_t max_panels = (max_width_ + hcols_ - 1) / hcols_;
    run_group_.assign(static_cast<size_t>(groups * max_panels), 0);
    run_panel_.assign(run_group_.size(), 0);
    run_panels_.assign(run_group_.size(), 0);
    xp_.resize(max_blocks * R * s.d_model);
    // A group has at most T rows (each token picks an expert once; shared experts take all).
    partial_stride_ = std::max<int64_t>((T + R - 1) / R * R, kMaxPanels * kMaxPanelRows) * 2 * L;
    partial_.resize(threads_ * partial_stride_);
    hp_.resize(max_blocks * R * max_width_);
    // q4 at up to kQ4DecodeRows rows a block: each group's activation sums, taken once per block
    // here instead of once per panel in the micro-kernels (QuantArgs::group_sums).
    const bool q4 = storage_ == Storage::kQ4;
    xsum_.assign(q4 ? static_cast<size_t>(max_blocks * R * (s.d_model / kQ4Rows)) : 0, 0.0f);
    hsum_.assign(q4 ? static_cast<size_t>(max_blocks * R * (max_width_ / kQ4Rows)) : 0, 0.0f);
    y_.assign(static_cast<size_t>(T * s.d_model), 0.0f);
    prefix_ = T;
  }

  void run(int64_t layer) override { run_prefix(layer, problem_->shape.tokens); }

  bool runs_prefix() const override { return true; }

  void run_prefix(int64_t layer, int64_t tokens) override {
    check_rows(tokens, "run_prefix");
    if (!held_.empty()) {
      throw std::logic_error("run: this kernel holds only some experts' weights (run_routed)");
    }
    const Problem& p = *problem_;
    const int64_t T = tokens;
    prefix_ = tokens;
    auto mark = Clock::now();
#pragma omp parallel num_threads(threads_)
    {
      route_rows(layer, T, routing_.expert.data(), routing_.weight.data());
#pragma omp single
      {
        lap(0, mark);
        if (T == p.shape.tokens) apply_capacity(p.shape, routing_);
        dispatch(layers_[layer], T, routing_.expert.data(), routing_.weight.data(),
                 routing_.kept.data(), nullptr);
      }
      experts(layer, p.x.data(), T, y_.data(), mark);
    }
    round_all(p.dtype, y_.data(), T * p.shape.d_model);  // outputs in the dtype
  }

  bool splits_routing() const override { return true; }

  void route(int64_t layer, int64_t tokens, std::span<int32_t> expert,
             std::span<float> weight) override {
    check_rows(tokens, "route");
#pragma omp parallel num_threads(threads_)
    route_rows(layer, tokens, expert.data(), weight.data());
  }

  void run_routed(int64_t layer, const RoutedRows& rows, std::span<float> y) override {
    check_rows(rows.rows, "run_routed");
    if (rows.top_k != problem_->shape.top_k) {
      throw std::logic_error("run_routed: rows carry a different number of slots than top_k");
    }
    if (!held_.empty()) {
      for (int64_t i = 0; i < rows.rows * rows.top_k; ++i) {
        const int32_t e = rows.expert[static_cast<size_t>(i)];
        if (rows.kept[static_cast<size_t>(i)] && !held_[static_cast<size_t>(e)]) {
          throw std::logic_error(
              fmt::format("run_routed: a row for expert {}, whose weights are not held here", e));
        }
      }
    }
    static const uint8_t kNone = 0;
    auto mark = Clock::now();
#pragma omp parallel num_threads(threads_)
    {
#pragma omp single
      dispatch(layers_[layer], rows.rows, rows.expert.data(), rows.weight.data(), rows.kept.data(),
               rows.shared.empty() ? &kNone : rows.shared.data(), rows.shared.empty());
      experts(layer, rows.x.data(), rows.rows, y.data(), mark);
    }
  }

  void hold_experts(std::vector<uint8_t> held) override { hold_next_ = std::move(held); }

  // weights_read(): the router, then each group with rows in the last dispatch. A group's packed
  // weights run from its gate/up offset to the next group's (pack_layer lays them out in order),
  // its scales likewise.
  std::vector<std::span<const char>> weights_read(int64_t layer) const {
    if (problem_ == nullptr || layer < 0 || layer >= std::ssize(layers_)) {
      throw std::logic_error("weights_read: no such prepared layer");
    }
    const std::vector<float>& wg = problem_->layers[layer].wg;
    std::vector<std::span<const char>> out{
        {reinterpret_cast<const char*>(wg.data()), wg.size() * sizeof(float)}};
    const PackedLayer& packed = layers_[layer];
    const int64_t groups = std::ssize(packed.groups);
    auto data_at = [&](int64_t g) {
      return g < groups ? storage_bytes(storage_, packed.groups[g].up_offset) : packed.data.size();
    };
    auto scales_at = [&](int64_t g) {
      return g < groups ? packed.groups[g].up_scales : packed.scales.size();
    };
    for (int64_t g = 0; g < groups; ++g) {
      if (group_blocks_[g + 1] == group_blocks_[g]) continue;
      out.push_back(
          {packed.data.data() + data_at(g), static_cast<size_t>(data_at(g + 1) - data_at(g))});
      if (scales_at(g + 1) > scales_at(g)) {
        out.push_back({packed.scales.data() + scales_at(g),
                       static_cast<size_t>(scales_at(g + 1) - scales_at(g))});
      }
    }
    return out;
  }

  std::span<const float> output() const override {
    return std::span(y_).first(static_cast<size_t>(prefix_ * problem_->shape.d_model));
  }
  std::span<const int32_t> selected_experts() const override {
    return std::span(routing_.expert).first(static_cast<size_t>(prefix_ * problem_->shape.top_k));
  }
  std::vector<StageTime> stage_seconds() const override {
    return {{"route", stage_[0]},
            {"dispatch", stage_[1]},
            {"gate_up", stage_[2]},
            {"down_combine", stage_[3]}};
  }
  void reset_stages() override { stage_.fill(0.0); }

 private:
  using Clock = std::chrono::steady_clock;

  void check_rows(int64_t rows, const char* what) const {
    if (problem_ == nullptr || rows < 0 || rows > problem_->shape.tokens) {
      throw std::logic_error(fmt::format("{}: {} rows, prepared for {}", what, rows,
                                         problem_ ? problem_->shape.tokens : 0));
    }
  }

  // Router logits, scores and top-k for the first `tokens` rows of x, one token per iteration
  // (an orphaned worksharing loop: call it from every thread of a parallel region).
  void route_rows(int64_t layer, int64_t tokens, int32_t* expert, float* weight) {
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

  // The experts on `n` dispatched rows of x into y (FP32): gather, gate/up, down with the
  // weighted combine. Orphaned worksharing loops: call from every thread of a parallel region
  // after dispatch().
  void experts(int64_t layer, const float* x, int64_t count, float* y, Clock::time_point& mark) {
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
          if (!xsum_.empty() && n <= kQ4DecodeRows) {
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
              for (int64_t j = 0; j < kblock; ++j)
                out[j] = top(in[2 * j]) | top(in[2 * j + 1]) << 16;
            }
          }
          for (int64_t i = 2 * blocked; i < d; i += 2) {
            for (int64_t r = 0; r < n; ++r) {
              const uint32_t hi = i + 1 < d ? top(rows[r][i + 1]) : 0u;
              words[pair_word(i / 2, r, R, pairs, kblock)] = top(rows[r][i]) | hi << 16;
            }
          }
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
          if (block_rows_[b] > kQ4DecodeRows) continue;
          const int64_t width = packed.groups[block_group_[b]].width;
          group_sums(hp_.data() + b * R * max_width_, width, block_rows_[b],
                     hsum_.data() + b * R * (max_width_ / kQ4Rows));
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
  void group_sums(const float* src, int64_t len, int64_t n, float* out) const {
    const int64_t R = isa_->rows;
    for (int64_t g = 0; g < len / kQ4Rows; ++g) {
      for (int64_t r = 0; r < n; ++r) {
        float sum = 0;
        for (int64_t i = g * kQ4Rows; i < (g + 1) * kQ4Rows; ++i) sum += src[i * R + r];
        out[g * R + r] = -8.0f * sum;
      }
    }
  }

  // Block b's group sums from reduction row i0 on (sums of `len`-row blocks), or null where
  // there are none.
  const float* sums_at(const std::vector<float>& sums, int64_t b, int64_t len, int64_t i0) const {
    if (sums.empty() || block_rows_[b] > kQ4DecodeRows) return nullptr;
    const int64_t R = isa_->rows;
    return sums.data() + b * R * (len / kQ4Rows) + i0 / kQ4Rows * R;
  }

  void lap(int stage, Clock::time_point& mark) {
    const auto now = Clock::now();
    stage_[stage] += std::chrono::duration<double>(now - mark).count();
    mark = now;
  }

  // The scales of gate/up panel `panel` of a group from reduction row i0 on, and of down panel
  // q from row j0 on (cpu_pack.hpp has their layout); null for unquantized weights.
  const void* up_scales(const PackedLayer& packed, const Group& g, int64_t panel, int64_t i0,
                        int64_t d) const {
    return scales_at(packed, g.up_scales + panel * panel_scale_bytes(d), i0);
  }
  // Whether a block of `rows` rows streams its panels side by side (IsaKernels::gate_up_panels):
  // at up to kMaxPanelRows rows, where the instruction set has the kernels, except q4. q4 is
  // bound by its instructions rather than by memory, and side by side with one chain a panel it
  // took 1.10-1.15x the time of its decode loop (AMD Zen 3, workloads A and B at one token).
  bool side_by_side(int64_t rows) const {
    return rows <= std::min<int64_t>(kMaxPanelRows, isa_->rows) &&
           isa_->gate_up_panels != nullptr && storage_ != Storage::kQ4;
  }

  // Bytes from one panel's scales to the next's, for a reduction of `len` rows (up_scales and
  // down_scales step by this per panel).
  int64_t panel_scale_bytes(int64_t len) const {
    const int64_t L2 = 2 * isa_->lanes;
    if (storage_ == Storage::kI8) return L2 * 4;
    return storage_ == Storage::kQ4 ? len / kQ4Rows * L2 * 2 : 0;
  }
  const void* down_scales(const PackedLayer& packed, const Group& g, int64_t q, int64_t j0) const {
    return scales_at(packed, g.down_scales + q * panel_scale_bytes(g.width), j0);
  }
  // The scales of the panel whose scales start at byte `panel_at`, from reduction row k0 on (q4:
  // the group of k0; int8 has one set a panel); null for unquantized weights.
  const void* scales_at(const PackedLayer& packed, int64_t panel_at, int64_t k0) const {
    if (storage_ != Storage::kI8 && storage_ != Storage::kQ4) return nullptr;
    const int64_t group_at = storage_ == Storage::kQ4 ? k0 / kQ4Rows * 2 * isa_->lanes * 2 : 0;
    return packed.scales.data() + panel_at + group_at;
  }

  // Packs one layer in this kernel's layout (cpu_pack.cpp).
  void pack_layer(const LayerWeights& w, PackedLayer& out) const {
    const PackSpec spec{isa_->lanes, kpack_, d_pad_, hcols_, gated_, storage_, threads_};
    cpu::pack_layer(spec, problem_->shape, w, held_, out);
  }

  // Counting sort of the kept assignments of `rows` rows by expert, row blocks and gate/up runs.
  // `shared`: which rows the shared experts take (null: every row); `no_shared`: none.
  void dispatch(const PackedLayer& packed, int64_t rows, const int32_t* expert, const float* weight,
                const uint8_t* kept, const uint8_t* shared, bool no_shared = false) {
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

  std::string name_;
  const IsaKernels* forced_;
  const IsaKernels* isa_ = nullptr;
  std::string why_;                 ///< why `cpu` chose isa_ (empty when forced or obvious)
  std::vector<uint8_t> held_;       ///< [E] the experts whose weights are packed (empty: all)
  std::vector<uint8_t> hold_next_;  ///< what the next prepare packs (hold_experts)
  const Problem* problem_ = nullptr;
  int threads_ = 1;
  bool gated_ = true;
  Storage storage_ = Storage::kF32;  ///< of the packed weights
  Storage hidden_ = Storage::kF32;   ///< of hidden values: the activation dtype
  int64_t kpack_ = 1;                ///< reduction rows per micro-kernel step (IsaKernels::kpack)
  int64_t d_pad_ = 0;                ///< d rounded up to kpack_: rows of a gate/up panel
  int64_t hcols_ = 0, max_width_ = 0;
  std::vector<PackedLayer> layers_;
  std::vector<float> logits_, scratch_;
  Routing routing_;
  std::vector<int64_t> counts_, fill_, order_, group_blocks_;
  std::vector<int32_t> block_group_, block_rows_, block_tokens_;
  std::vector<int32_t> run_group_;    ///< [run] its group (expert)
  std::vector<int32_t> run_panel_;    ///< [run] its first panel
  std::vector<int32_t> run_panels_;   ///< [run] its adjacent panels
  std::vector<int32_t> shared_rows_;  ///< the rows the shared experts take, in order
  std::vector<float> block_weights_;
  int64_t num_blocks_ = 0, num_runs_ = 0;
  AlignedFloats xp_, hp_, partial_;
  std::vector<float> xsum_, hsum_;  ///< q4 group sums of xp_ and hp_ (group_sums())
  int64_t partial_stride_ = 0;
  std::vector<float> y_;
  int64_t prefix_ = 0;  ///< tokens of the last run
  std::array<double, 4> stage_{};
};

}  // namespace

std::unique_ptr<Kernel> make_kernel() { return std::make_unique<CpuKernel>("cpu", nullptr); }
std::vector<std::span<const char>> weights_read(const Kernel& cpu, int64_t layer) {
  const auto* k = dynamic_cast<const CpuKernel*>(&cpu);
  if (k == nullptr) throw std::logic_error("weights_read: not a cpu kernel");
  return k->weights_read(layer);
}
std::unique_ptr<Kernel> make_avx512_kernel() {
  return std::make_unique<CpuKernel>("cpu_avx512", &avx512_kernels());
}
std::unique_ptr<Kernel> make_avx512_bf16_kernel() {
  return std::make_unique<CpuKernel>("cpu_avx512_bf16", &avx512_bf16_kernels());
}
std::unique_ptr<Kernel> make_amx_kernel() {
  return std::make_unique<CpuKernel>("cpu_amx", &amx_kernels());
}
std::unique_ptr<Kernel> make_amx_model_kernel() {
  return std::make_unique<CpuKernel>("cpu_amx_model", &amx_model_kernels());
}
std::unique_ptr<Kernel> make_avx2_kernel() {
  return std::make_unique<CpuKernel>("cpu_avx2", &avx2_kernels());
}
std::unique_ptr<Kernel> make_generic_kernel() {
  return std::make_unique<CpuKernel>("cpu_generic", &generic_kernels());
}

}  // namespace moe_bench::cpu
