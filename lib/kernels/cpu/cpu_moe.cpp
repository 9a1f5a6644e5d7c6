#include "cpu_moe.hpp"

#include <memory>
#include <stdexcept>

#include "cpu_kernel.hpp"

namespace moe_bench::cpu {

namespace detail {

KernelInfo CpuKernel::info() const {
  if (a8_mode_) {
    return {name_,
            "cpu",
            {Dtype::kF32, Dtype::kBF16, Dtype::kF16},
            "cpu's routing and dispatch; each token's input and each expert's hidden row "
            "quantized to int8 per row (w8a8 with int8 weights, w4a8 with q4), integer dot "
            "products (AVX2 vpmaddubsw, or a portable twin), scales and SwiGLU in FP32",
            1,
            {WeightFormat::kInt8, WeightFormat::kQ4}};
  }
  return {
      name_,
      "cpu",
      forced_ != nullptr && forced_->bf16_only
          ? std::vector<Dtype>{Dtype::kBF16}
          : std::vector<Dtype>{Dtype::kF32, Dtype::kBF16, Dtype::kF16},
      fmt::format("fused routing, counting-sort dispatch, packed weights, {} micro-kernel "
                  "with SwiGLU and weighted combine fused in the epilogues, OpenMP over "
                  "(expert, tile)",
                  forced_ != nullptr ? forced_->name : "best-ISA"),
      1,
      forced_ == nullptr || !forced_->bf16_only
          ? std::vector<WeightFormat>{WeightFormat::kSame, WeightFormat::kInt8, WeightFormat::kQ4}
      : forced_->q4_pairs ? std::vector<WeightFormat>{WeightFormat::kSame, WeightFormat::kQ4}
                          : std::vector<WeightFormat>{WeightFormat::kSame}};
}

std::optional<std::string> CpuKernel::unavailable_reason() const {
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

void CpuKernel::prepare(const Problem& p, int threads) {
  problem_ = &p;
  storage_ = to_storage(p.dtype, p.shape.weights);
  hidden_ = to_storage(p.dtype);
  threads_ = std::max(threads, 1);
  why_.clear();
  const double rows_per_expert =
      static_cast<double>(p.shape.tokens * p.shape.top_k) / static_cast<double>(p.shape.experts);
  const bool quantized = storage_ == Storage::kI8 || storage_ == Storage::kQ4;
  if (a8_mode_ && !quantized) {
    throw std::logic_error(fmt::format("{} takes quantized weights only", name_));
  }
  // `cpu` on quantized weights with bf16 activations, where the CPU has VNNI: the a8 kernels on
  // the activations held as 15-bit integers (a16()), exact for bf16 values within 6 binades of
  // their group's largest.
  const bool a16 =
      !a8_mode_ && forced_ == nullptr && quantized && p.dtype == Dtype::kBF16 && has_avx512_vnni();
  const bool a8 = a8_mode_ || a16;
  // The integer micro-kernels, and the FP32 ones of the same instruction set for the router.
  a8_ = !a8                 ? nullptr
        : has_avx512_vnni() ? &a8_vnni_kernels()
        : has_avx2()        ? &a8_avx2_kernels()
                            : &a8_generic_kernels();
  if (a16) {
    why_ = fmt::format("{:.3g} rows per expert; {} weights on vpdpbusd", rows_per_expert,
                       storage_ == Storage::kQ4 ? "q4" : "int8");
  }
  isa_ = a8                   ? (has_avx2() ? &avx2_kernels() : &generic_kernels())
         : forced_ != nullptr ? forced_
                              : best_isa(p.dtype, rows_per_expert, why_, p.shape.weights);
  kpack_ = isa_->kpack;
  const Shape& s = p.shape;
  d_pad_ = round_up(s.d_model, kpack_);
  const int64_t L = isa_->lanes, R = isa_->rows;
  gated_ = s.activation != Activation::kGelu;
  hcols_ = a8 ? kA8Cols : gated_ ? L : 2 * L;
  if (!hold_next_.empty() && std::ssize(hold_next_) != s.experts) {
    throw std::logic_error("hold_experts: one mark per expert");
  }
  held_ = hold_next_;
  layers_.resize(p.layers.size());
  a8_layers_.resize(a8 ? p.layers.size() : 0);
  for (size_t l = 0; l < p.layers.size(); ++l) {
    if (a8) {
      pack_a8_layer(p.layers[l], a8_layers_[l]);
      // dispatch() takes the groups' widths from the FP32 layout's groups, which hold no weights.
      layers_[l] = PackedLayer{};
      for (const A8Group& g : a8_layers_[l].groups) layers_[l].groups.push_back({g.width});
    } else {
      pack_layer(p.layers[l], layers_[l]);
    }
  }

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
  xp_.resize(a8 ? 0 : max_blocks * R * s.d_model);
  // A group has at most T rows (each token picks an expert once; shared experts take all).
  partial_stride_ = std::max<int64_t>((T + R - 1) / R * R, kMaxPanels * kMaxPanelRows) * 2 * L;
  partial_.resize(a8 ? 0 : threads_ * partial_stride_);
  hp_.resize(max_blocks * R * max_width_);
  // q4 at up to q4_sum_rows() rows a block: each group's activation sums, taken once per block
  // here instead of once per panel in the micro-kernels (QuantArgs::group_sums).
  const bool q4 = storage_ == Storage::kQ4 && !a8;
  xsum_.assign(q4 ? static_cast<size_t>(max_blocks * R * (s.d_model / kQ4Rows)) : 0, 0.0f);
  hsum_.assign(q4 ? static_cast<size_t>(max_blocks * R * (max_width_ / kQ4Rows)) : 0, 0.0f);
  if (a8) {
    x8_.resize(T, s.d_model, storage_ == Storage::kQ4, a8_->i8_unsigned, a16);
    h8_.resize(max_blocks * R, max_width_, storage_ == Storage::kQ4, a8_->i8_unsigned, a16);
    x8_.hold = h8_.hold = a8_->hold_a16 != nullptr ? a8_->hold_a16 : hold_a16_generic;
  }
  y_.assign(static_cast<size_t>(T * s.d_model), 0.0f);
  prefix_ = T;
}

void CpuKernel::run_prefix(int64_t layer, int64_t tokens) {
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

void CpuKernel::run_routed(int64_t layer, const RoutedRows& rows, std::span<float> y) {
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

// weights_read(): the router, then each group with rows in the last dispatch. A group's packed
// weights run from its gate/up offset to the next group's (pack_layer lays them out in order),
// its scales likewise.
std::vector<std::span<const char>> CpuKernel::weights_read(int64_t layer) const {
  if (problem_ == nullptr || layer < 0 || layer >= std::ssize(layers_)) {
    throw std::logic_error("weights_read: no such prepared layer");
  }
  const std::vector<float>& wg = problem_->layers[layer].wg;
  std::vector<std::span<const char>> out{
      {reinterpret_cast<const char*>(wg.data()), wg.size() * sizeof(float)}};
  if (a8_ != nullptr) {
    const A8Layer& a8 = a8_layers_[layer];
    for (size_t g = 0; g < a8.groups.size(); ++g) {
      if (group_blocks_[g + 1] == group_blocks_[g]) continue;
      out.push_back({a8.data.data() + a8.groups[g].up,
                     static_cast<size_t>(a8.groups[g].end - a8.groups[g].up)});
    }
    return out;
  }
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

}  // namespace detail

using detail::CpuKernel;

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
std::unique_ptr<Kernel> make_a8_kernel() {
  return std::make_unique<CpuKernel>("cpu_w8a8", nullptr, true);
}
std::unique_ptr<Kernel> make_generic_kernel() {
  return std::make_unique<CpuKernel>("cpu_generic", &generic_kernels());
}

}  // namespace moe_bench::cpu
