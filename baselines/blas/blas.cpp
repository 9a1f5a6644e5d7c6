#include "blas.hpp"

#include <cblas.h>
#include <dlfcn.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <vector>

#include "moe_bench/activation.hpp"
#include "moe_bench/dtype.hpp"
#include "moe_bench/quant.hpp"
#include "moe_bench/routing.hpp"
#include "moe_bench/sysinfo.hpp"

namespace moe_bench::blas {
namespace {

// C[m,n] = A[m,k] * B[n,k]^T, row-major: the layout of x @ W^T with W stored [out, in].
void gemm_nt(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(k), 1.0f, a, static_cast<blasint>(k), b,
              static_cast<blasint>(k), 0.0f, c, static_cast<blasint>(n));
}

class BlasKernel final : public Kernel {
 public:
  KernelInfo info() const override {
    return {"blas",
            "cpu",
            {Dtype::kF32, Dtype::kBF16, Dtype::kF16},
            "router sgemm, then per expert: gather tokens, three OpenBLAS sgemm, scatter-add "
            "(16-bit dtypes run as FP32 sgemm on the converted values, as a framework without "
            "16-bit GEMM does; quantized weights: each touched expert dequantized to FP32, then "
            "sgemm, as a framework without quantized kernels does)",
            0,
            {WeightFormat::kSame, WeightFormat::kInt8, WeightFormat::kQ4}};
  }

  std::optional<std::string> can_run(const Shape&, Dtype) const override { return std::nullopt; }

  std::string notes() const override {
    if (problem_ == nullptr || problem_->dtype == Dtype::kF32) return {};
    // Debian's OpenBLAS 0.3.21 is built without BUILD_BFLOAT16: its cblas.h declares sbgemm but
    // the library does not export it. Say which path ran.
    return dlsym(RTLD_DEFAULT, "cblas_sbgemm") != nullptr
               ? "16-bit as FP32 sgemm on converted values (this OpenBLAS exports cblas_sbgemm; "
                 "the baseline does not use it)"
               : "16-bit as FP32 sgemm on converted values (this OpenBLAS build has no "
                 "cblas_sbgemm)";
  }

  void prepare(const Problem& p, int threads) override {
    problem_ = &p;
    threads_ = threads;
    const Shape& s = p.shape;
    const int64_t width = std::max(s.d_ff, s.shared_width());
    logits_.resize(static_cast<size_t>(s.tokens * s.experts));
    scratch_.resize(static_cast<size_t>(2 * s.experts));
    routing_.resize(s.tokens, s.top_k);
    count_.resize(static_cast<size_t>(s.experts + 1));
    next_.resize(static_cast<size_t>(s.experts));
    order_.resize(static_cast<size_t>(s.tokens * s.top_k));
    xe_.resize(static_cast<size_t>(s.tokens * s.d_model));
    gate_.resize(static_cast<size_t>(s.tokens * width));
    up_.resize(gate_.size());
    ye_.resize(static_cast<size_t>(s.tokens * s.d_model));
    y_.resize(static_cast<size_t>(s.tokens * s.d_model));
    if (s.weights != WeightFormat::kSame) {
      // One FFN's matrices dequantized at a time (the widest: shared or routed).
      for (auto* v : {&deq1_, &deq3_, &deq2_}) v->resize(static_cast<size_t>(width * s.d_model));
    }
    prefix_ = s.tokens;
  }

  std::vector<StageTime> stage_seconds() const override {
    return {{"route", stage_[0]},
            {"dispatch", stage_[1]},
            {"experts", stage_[2]},
            {"combine", stage_[3]}};
  }
  void reset_stages() override { stage_.fill(0.0); }

  void run(int64_t layer) override { run_prefix(layer, problem_->shape.tokens); }

  bool runs_prefix() const override { return true; }

  void run_prefix(int64_t layer, int64_t tokens) override {
    set_blas_threads(threads_);
    auto mark = Clock::now();
    const Problem& p = *problem_;
    const Shape& s = p.shape;
    const LayerWeights& w = p.layers[layer];
    const int64_t T = tokens, E = s.experts, k = s.top_k, d = s.d_model, f = s.d_ff;
    prefix_ = tokens;

    gemm_nt(T, E, d, p.x.data(), w.wg.data(), logits_.data());
    for (int64_t t = 0; t < T; ++t) {
      float* l = logits_.data() + t * E;
      for (int64_t e = 0; e < E; ++e) l[e] += w.logit_bias[e];
      route_token(s.routing, l, w.selection_bias.data(), E, k, routing_.expert.data() + t * k,
                  routing_.weight.data() + t * k, scratch_.data());
    }
    if (T == s.tokens) apply_capacity(s, routing_);
    lap(0, mark);

    // Group kept assignments by expert (counting sort, token order kept within an expert).
    std::fill(count_.begin(), count_.end(), 0);
    for (int64_t i = 0; i < T * k; ++i) {
      if (routing_.kept[i]) ++count_[routing_.expert[i] + 1];
    }
    for (int64_t e = 0; e < E; ++e) count_[e + 1] += count_[e];
    std::copy(count_.begin(), count_.end() - 1, next_.begin());
    for (int64_t i = 0; i < T * k; ++i) {
      if (routing_.kept[i]) order_[next_[routing_.expert[i]]++] = i;
    }

    lap(1, mark);

    std::fill(y_.begin(), y_.begin() + T * d, 0.0f);
    const bool gated = s.activation != Activation::kGelu;
    for (int64_t e = 0; e < E; ++e) {
      const int64_t begin = count_[e], n = count_[e + 1] - begin;
      if (n == 0) continue;
      for (int64_t r = 0; r < n; ++r) {
        const int64_t t = order_[begin + r] / k;
        std::copy_n(p.x.data() + t * d, d, xe_.data() + r * d);
      }
      lap(1, mark);
      expert(n, f, xe_.data(), matrix(w.w1, w.q1, e * f, f, d, deq1_),
             gated ? matrix(w.w3, w.q3, e * f, f, d, deq3_) : nullptr,
             matrix(w.w2, w.q2, e * d, d, f, deq2_));
      lap(2, mark);
      for (int64_t r = 0; r < n; ++r) {
        const int64_t i = order_[begin + r];
        const float weight = routing_.weight[i];
        float* yt = y_.data() + (i / k) * d;
        const float* src = ye_.data() + r * d;
        for (int64_t c = 0; c < d; ++c) yt[c] += weight * src[c];
      }
      lap(3, mark);
    }
    if (s.shared_width() > 0) {
      const int64_t fs = s.shared_width();
      expert(T, fs, p.x.data(), matrix(w.ws1, w.qs1, 0, fs, d, deq1_),
             gated ? matrix(w.ws3, w.qs3, 0, fs, d, deq3_) : nullptr,
             matrix(w.ws2, w.qs2, 0, d, fs, deq2_));
      lap(2, mark);
      for (int64_t i = 0; i < T * d; ++i) y_[i] += ye_[i];
      lap(3, mark);
    }
    round_all(p.dtype, y_.data(), T * d);
  }

  std::span<const float> output() const override {
    return std::span(y_).first(static_cast<size_t>(prefix_ * problem_->shape.d_model));
  }
  std::span<const int32_t> selected_experts() const override {
    return std::span(routing_.expert).first(static_cast<size_t>(prefix_ * problem_->shape.top_k));
  }

 private:
  // Rows [r0, r0 + n) of one of the layer's matrices (`cols` wide) as FP32: its floats where the
  // weights are not quantized; else dequantized from `q` into `scratch` on every thread, as a
  // framework without quantized kernels does before each GEMM.
  const float* matrix(const std::vector<float>& floats, const QuantMatrix& q, int64_t r0, int64_t n,
                      int64_t cols, std::vector<float>& scratch) const {
    const WeightFormat f = problem_->shape.weights;
    if (f == WeightFormat::kSame) return floats.data() + r0 * cols;
#pragma omp parallel for schedule(static) num_threads(threads_)
    for (int64_t r = r0; r < r0 + n; ++r)
      dequantize_rows(f, q, r, 1, scratch.data() + (r - r0) * cols);
    return scratch.data();
  }

  // ye_[n,d] = W2 act(W1 x, W3 x) for n rows of x; w3 is null for GELU.
  void expert(int64_t n, int64_t f, const float* x, const float* w1, const float* w3,
              const float* w2) {
    const Shape& s = problem_->shape;
    const int64_t d = s.d_model;
    gemm_nt(n, f, d, x, w1, gate_.data());
    if (w3 != nullptr) gemm_nt(n, f, d, x, w3, up_.data());
    for (int64_t i = 0; i < n * f; ++i) {
      gate_[i] = activate(s.activation, gate_[i], w3 != nullptr ? up_[i] : 0.0f);
    }
    round_all(problem_->dtype, gate_.data(), n * f);  // hidden activations in the dtype
    gemm_nt(n, d, f, gate_.data(), w2, ye_.data());
  }

  using Clock = std::chrono::steady_clock;

  // Adds the time since `mark` to a stage and moves the mark.
  void lap(int stage, Clock::time_point& mark) {
    const auto now = Clock::now();
    stage_[stage] += std::chrono::duration<double>(now - mark).count();
    mark = now;
  }

  const Problem* problem_ = nullptr;
  int threads_ = 1;
  int64_t prefix_ = 0;  ///< tokens of the last run
  std::array<double, 4> stage_{};
  std::vector<float> logits_, scratch_;
  Routing routing_;
  std::vector<int64_t> count_, next_, order_;
  std::vector<float> xe_, gate_, up_, ye_, y_;
  std::vector<float> deq1_, deq3_, deq2_;  ///< one FFN's dequantized matrices
};

}  // namespace

std::unique_ptr<Kernel> make_kernel() { return std::make_unique<BlasKernel>(); }

}  // namespace moe_bench::blas
