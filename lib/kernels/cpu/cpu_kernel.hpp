// The `cpu` kernel: its interface and state (cpu_moe.cpp), the routing and the dispatch of
// rows to experts (cpu_dispatch.cpp), and the experts' stages: gather, gate/up, down with the
// combine (cpu_experts.cpp). Internal to lib/kernels/cpu.
#pragma once

#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <string>
#include <vector>

#include "a8_isa.hpp"
#include "cpu_isa.hpp"
#include "cpu_moe.hpp"
#include "cpu_pack.hpp"
#include "cpu_select.hpp"
#include "moe_bench/aligned.hpp"
#include "moe_bench/dtype.hpp"
#include "moe_bench/roofline.hpp"
#include "moe_bench/routing.hpp"
#include "moe_bench/sysinfo.hpp"

namespace moe_bench::cpu::detail {

using AlignedFloats = Aligned<float>;

inline Act to_act(Activation a) {
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

inline Storage to_storage(Dtype d, WeightFormat w = WeightFormat::kSame) {
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
  /// `a8`: the a8 variant (`cpu_w8a8`): quantized weights times activations quantized to int8
  /// per row, integer dot products (a8_isa.hpp), on the widest instruction set that has them.
  CpuKernel(std::string name, const IsaKernels* forced, bool a8 = false)
      : name_(std::move(name)), forced_(forced), a8_mode_(a8) {}

  KernelInfo info() const override;

  std::optional<std::string> unavailable_reason() const override;

  std::optional<std::string> can_run(const Shape&, Dtype dtype) const override {
    if (forced_ != nullptr && forced_->bf16_only && dtype != Dtype::kBF16)
      return fmt::format("{} runs bf16 only", name_);
    return std::nullopt;
  }

  std::optional<double> in_cache_gflops(int threads) const override {
    if (a8_mode_) return std::nullopt;  // integer arithmetic: the FMA peak is not its ceiling
    std::string why;
    const IsaKernels* isa = forced_ != nullptr ? forced_ : best_isa(Dtype::kF32, 1e9, why);
    if (isa->bf16_only || isa->kpack != 1 || unavailable_reason()) return std::nullopt;
    return cpu::in_cache_gflops(*isa, threads);
  }

  std::string notes() const override {
    if (isa_ == nullptr) return {};
    if (a16()) {
      return fmt::format(
          "{} a16 micro-kernel: {} weights, bf16 activations held as 15-bit integers a group of "
          "32 (exact within 6 binades of the group's largest), vpdpbusd{}",
          a8_->name, storage_ == Storage::kQ4 ? "q4" : "int8",
          why_.empty() ? "" : fmt::format(" ({})", why_));
    }
    if (a8_ != nullptr) {
      return fmt::format("{} a8 micro-kernel: {} weights, activations quantized to int8 per row",
                         a8_->name, storage_ == Storage::kQ4 ? "q4 (w4a8)" : "int8 (w8a8)");
    }
    return fmt::format("{} micro-kernel{}{}", isa_->name,
                       isa_->kpack != 2    ? ""
                       : isa_->kblock == 1 ? " (bf16 pairs, vdpbf16ps)"
                                           : " (bf16 pairs, AMX tiles)",
                       why_.empty() ? "" : fmt::format(" ({})", why_));
  }

  void prepare(const Problem& p, int threads) override;

  void run(int64_t layer) override { run_prefix(layer, problem_->shape.tokens); }

  bool runs_prefix() const override { return true; }

  void run_prefix(int64_t layer, int64_t tokens) override;

  bool splits_routing() const override { return true; }

  bool quantizes_activations() const override { return a8_mode_; }

  /// Whether `cpu` runs its quantized weights on the integer kernels with bf16 activations held as
  /// 15-bit integers (hold_as_int15).
  bool a16() const { return a8_ != nullptr && !a8_mode_; }

  void route(int64_t layer, int64_t tokens, std::span<int32_t> expert,
             std::span<float> weight) override {
    check_rows(tokens, "route");
#pragma omp parallel num_threads(threads_)
    route_rows(layer, tokens, expert.data(), weight.data());
  }

  void run_routed(int64_t layer, const RoutedRows& rows, std::span<float> y) override;

  void hold_experts(std::vector<uint8_t> held) override { hold_next_ = std::move(held); }

  // weights_read(): the router, then each group with rows in the last dispatch. A group's packed
  // weights run from its gate/up offset to the next group's (pack_layer lays them out in order),
  // its scales likewise.
  std::vector<std::span<const char>> weights_read(int64_t layer) const;

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
  void route_rows(int64_t layer, int64_t tokens, int32_t* expert, float* weight);

  // The experts on `n` dispatched rows of x into y (FP32): gather, gate/up, down with the
  // weighted combine. Orphaned worksharing loops: call from every thread of a parallel region
  // after dispatch().
  void experts(int64_t layer, const float* x, int64_t count, float* y, Clock::time_point& mark);

  // The a8 variant's experts (cpu_a8.cpp): the same contract as experts().
  void experts_a8(int64_t layer, const float* x, int64_t count, float* y, Clock::time_point& mark);

  // -8 times the sum over each group of kQ4Rows rows of a k-major block (src[i * R + r], len
  // rows, n of R rows used) into out[group * R + r].
  void group_sums(const float* src, int64_t len, int64_t n, float* out) const;
  void pair_group_sums(const uint32_t* words, int64_t len, int64_t n, float* out) const;
  // The most rows of a block whose q4 group sums are taken: every block where the kernels take
  // q4 pairs, else those of the decode loop.
  int64_t q4_sum_rows() const { return isa_->q4_pairs ? isa_->rows : kQ4DecodeRows; }

  // Block b's group sums from reduction row i0 on (sums of `len`-row blocks), or null where
  // there are none.
  const float* sums_at(const std::vector<float>& sums, int64_t b, int64_t len, int64_t i0) const;

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
                const uint8_t* kept, const uint8_t* shared, bool no_shared = false);

  // The a8 variant's packed layer (a8_isa.hpp has the panels): per group (routed experts, then
  // the shared ones) its gate/up panels from byte `up`, its down panels from `down`, to `end`.
  struct A8Group {
    int64_t width = 0, up = 0, down = 0, end = 0;
  };
  struct A8Layer {
    Aligned<char> data;
    std::vector<A8Group> groups;
  };
  // Rows of activations quantized to int8 (A8Rows): codes `stride` a row (the reduction padded to
  // whole quads), their magnitudes for int8 weights or q4's group sums, a scale a row. Or, `a16`,
  // rows held as 15-bit integers (hold_as_int15): high bytes in codes, low bits in low, a sum and
  // a power of two a group of kQ4Rows (the reduction padded to whole groups).
  struct A8Buffers {
    std::vector<int8_t> codes;
    std::vector<uint8_t> magnitudes;
    std::vector<int32_t> code_sums;  ///< int8 weights stored unsigned: each row's code sum
    std::vector<int32_t> group_sums;
    std::vector<float> scales;
    std::vector<int8_t> low;          ///< a16
    std::vector<float> group_scales;  ///< a16
    int64_t stride = 0, groups = 0;
    bool a16 = false;
    /// How a16 rows are held (A8Kernels::hold_a16, else hold_a16_generic).
    void (*hold)(const float*, int64_t, int8_t*, int8_t*, int32_t*, float*) = hold_a16_generic;
    /// For int8 weights, `i8_unsigned` (A8Kernels::i8_unsigned) keeps code sums instead of
    /// magnitudes.
    void resize(int64_t rows, int64_t len, bool q4, bool i8_unsigned, bool a16);
    // Quantizes v[len] (quantize_activations) into row `row`; a16: rounds it to bf16 and holds
    // it as 15-bit integers.
    void quantize(const float* v, int64_t len, int64_t row);
  };
  void pack_a8_layer(const LayerWeights& w, A8Layer& out) const;

  std::string name_;
  const IsaKernels* forced_;
  bool a8_mode_ = false;
  /// The a8 micro-kernels: of the a8 variant (a8_mode_), or of `cpu` holding bf16 activations as
  /// 15-bit integers for quantized weights (a16(): A8Kernels::down_a16); null otherwise.
  const A8Kernels* a8_ = nullptr;
  std::vector<A8Layer> a8_layers_;
  A8Buffers x8_;  ///< the a8 variant's input rows, a token each
  A8Buffers h8_;  ///< and its hidden rows, a block row each
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

}  // namespace moe_bench::cpu::detail
