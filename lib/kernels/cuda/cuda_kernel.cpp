// The CUDA engines as moe-bench implementations. Compiled by the host compiler in every build; the
// engines themselves come from the .cu files here (nvcc) or no_cuda.cpp.
#include "cuda_kernel.hpp"

#include <fmt/format.h>

#include "cuda_engine.hpp"
#include "moe_bench/error.hpp"

namespace moe_bench::cuda {
namespace {

Elem to_elem(Dtype d) {
  switch (d) {
    case Dtype::kF32:
      return Elem::kF32;
    case Dtype::kBF16:
      return Elem::kBF16;
    case Dtype::kF16:
      return Elem::kF16;
  }
  return Elem::kF32;
}

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

int scoring_code(Scoring s) {
  switch (s) {
    case Scoring::kSoftmax:
      return 0;
    case Scoring::kSigmoid:
      return 1;
    case Scoring::kSoftmaxTopk:
      return 2;
  }
  return 0;
}

class CudaKernel final : public Kernel {
 public:
  CudaKernel(std::string name, Algo algo) : name_(std::move(name)), algo_(algo) {}

  KernelInfo info() const override {
    if (algo_ == Algo::kCutlass || algo_ == Algo::kCutlassGraph) {
      return {name_,
              "cuda",
              {Dtype::kBF16},
              std::string("routing and permutation as cuda, then gate/up and down as CUTLASS "
                          "Hopper grouped GEMMs (pointer-array, TMA, warp-specialized), an "
                          "activation kernel between, the routing weight in the combine") +
                  (algo_ == Algo::kCutlassGraph ? "; each layer replayed as a CUDA graph" : ""),
              0};
    }
    return {name_,
            "cuda",
            {Dtype::kF32, Dtype::kBF16, Dtype::kF16},
            algo_ == Algo::kGrouped
                ? "one warp per token routing, padded expert-contiguous permutation, per "
                  "projection one launch over every expert: a row GEMV streaming the weights "
                  "for decode-sized groups, else a grouped GEMM (WMMA tensor cores for "
                  "bf16/f16, FP32 SIMT for f32); SwiGLU and the routing weight fused, "
                  "atomic-free combine"
            : algo_ == Algo::kGroupedGraph
                ? "cuda with each layer's forward captured once as a CUDA graph and replayed"
            : algo_ == Algo::kGroupedGemm
                ? "cuda with the grouped GEMM at every size (WMMA tensor cores for bf16/f16)"
            : algo_ == Algo::kRowGemv
                ? "cuda with the row GEMV at every size (one warp per output unit, FP32 FMA)"
                : "router GEMM, then per expert: gather, cublasGemmEx gate/up, activation "
                  "kernel, cublasGemmEx down; combine (expert sizes read back to the host)",
            0};
  }

  std::optional<std::string> unavailable_reason() const override {
    static const std::string why = cuda::unavailable_reason();
    static const std::string why_cutlass = cuda::cutlass_unavailable_reason();
    const std::string& reason =
        algo_ == Algo::kCutlass || algo_ == Algo::kCutlassGraph ? why_cutlass : why;
    if (reason.empty()) return std::nullopt;
    return reason;
  }

  std::optional<std::string> can_run(const Shape&, Dtype) const override { return std::nullopt; }

  void prepare(const Problem& p, int) override {
    const Shape& s = p.shape;
    LayerSpec spec;
    spec.tokens = s.tokens;
    spec.experts = s.experts;
    spec.top_k = s.top_k;
    spec.d_model = s.d_model;
    spec.d_ff = s.d_ff;
    spec.shared_width = s.shared_width();
    spec.capacity = expert_capacity(s);
    spec.act = to_act(s.activation);
    spec.elem = to_elem(p.dtype);
    spec.routing.scoring = scoring_code(s.routing.scoring);
    spec.routing.renormalize = s.routing.renormalize;
    spec.routing.scale = static_cast<float>(s.routing.scale);
    spec.routing.selection_bias = s.routing.selection_bias;
    spec.routing.groups = static_cast<int>(s.routing.groups);
    spec.routing.topk_groups = static_cast<int>(s.routing.topk_groups);
    std::vector<HostLayer> layers;
    auto ptr = [](const std::vector<float>& v) { return v.empty() ? nullptr : v.data(); };
    for (const LayerWeights& w : p.layers) {
      layers.push_back({w.wg.data(), w.logit_bias.data(), w.selection_bias.data(), ptr(w.w1),
                        ptr(w.w3), ptr(w.w2), ptr(w.ws1), ptr(w.ws3), ptr(w.ws2)});
    }
    engine_.reset();  // the previous case's device memory first
    try {
      engine_ = make_engine(algo_, spec, p.x.data(), layers);
    } catch (const DeviceError& e) {
      throw EnvironmentError(fmt::format("{}: {}", name_, e.what()));
    }
  }

  void run(int64_t layer) override {
    try {
      engine_->run(layer);
    } catch (const DeviceError& e) {
      throw EnvironmentError(fmt::format("{}: {}", name_, e.what()));
    }
  }

  std::span<const float> output() const override { return engine_->output(); }
  std::span<const int32_t> selected_experts() const override { return engine_->selected(); }
  std::vector<StageTime> stage_seconds() const override {
    std::vector<StageTime> out;
    if (engine_ == nullptr) return out;
    for (const auto& [name, s] : engine_->stage_seconds()) out.push_back({name, s});
    return out;
  }
  void reset_stages() override {
    if (engine_ != nullptr) engine_->reset_stages();
  }
  bool device_timed() const override { return true; }
  std::optional<DeviceDescription> device() const override {
    DeviceDescription out{device_summary(), !unavailable_reason(), std::nullopt};
    if (out.available) {
      const DeviceInfo d = device_info();
      out.properties = SystemInfo::CudaDevice{
          d.name,           d.sms,          d.cc_major, d.cc_minor, d.sm_clock_mhz, d.mem_clock_mhz,
          d.bus_width_bits, d.memory_bytes, d.driver,   d.runtime};
    }
    return out;
  }
  std::optional<moe_bench::DevicePeaks> measure_device_peaks() const override {
    if (unavailable_reason()) return std::nullopt;
    const cuda::DevicePeaks p = cuda::measure_device_peaks();
    return moe_bench::DevicePeaks{device_info().name, p.copy_gbytes_per_s, p.bf16_tflops};
  }
  double take_device_seconds() override { return engine_->take_device_seconds(); }
  std::string notes() const override {
    if (engine_ == nullptr) return {};
    const DeviceInfo d = device_info();
    return fmt::format("{} on {} (sm_{}{}, {} SMs)", engine_->notes(), d.name, d.cc_major,
                       d.cc_minor, d.sms);
  }

 private:
  std::string name_;
  Algo algo_;
  std::unique_ptr<Engine> engine_;
};

}  // namespace

std::unique_ptr<Kernel> make_cuda_kernel() {
  return std::make_unique<CudaKernel>("cuda", Algo::kGrouped);
}
std::unique_ptr<Kernel> make_cuda_graph_kernel() {
  return std::make_unique<CudaKernel>("cuda_graph", Algo::kGroupedGraph);
}
std::unique_ptr<Kernel> make_cuda_gemm_kernel() {
  return std::make_unique<CudaKernel>("cuda_gemm", Algo::kGroupedGemm);
}
std::unique_ptr<Kernel> make_cuda_gemv_kernel() {
  return std::make_unique<CudaKernel>("cuda_gemv", Algo::kRowGemv);
}
std::unique_ptr<Kernel> make_cublas_kernel() {
  return std::make_unique<CudaKernel>("cublas", Algo::kCublas);
}
std::unique_ptr<Kernel> make_cuda_cutlass_kernel() {
  return std::make_unique<CudaKernel>("cuda_cutlass", Algo::kCutlass);
}
std::unique_ptr<Kernel> make_cuda_cutlass_graph_kernel() {
  return std::make_unique<CudaKernel>("cuda_cutlass_graph", Algo::kCutlassGraph);
}

}  // namespace moe_bench::cuda
