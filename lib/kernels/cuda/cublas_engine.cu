// The `cublas` baseline, the framework way: router GEMM, expert sizes read back to the host,
// then per expert a gather, cublasGemmEx for gate and up, an activation kernel and cublasGemmEx
// for down; the shared combine.
#include "engine_base.cuh"

namespace moe_bench::cuda {
namespace {

// The cuBLAS baseline's activation: H = act(gate, up) in the dtype.
template <typename T>
__global__ void activation_kernel(const float* gate, const float* up, int64_t n, int act, T* h) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) h[i] = to_elem<T>(activate(act, gate[i], up != nullptr ? up[i] : 0.0f));
}

// The cuBLAS baseline's gather: row r of xe = x[row_token[r]].
template <typename T>
__global__ void gather_kernel(const T* x, const int32_t* row_token, int64_t rows, int64_t d,
                              T* xe) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * d) return;
  const int32_t t = row_token[i / d];
  xe[i] = t >= 0 ? x[static_cast<int64_t>(t) * d + i % d] : to_elem<T>(0.0f);
}

template <typename T>
class CublasEngine final : public EngineBase<T> {
  using Base = EngineBase<T>;
  using Base::r_;
  using Base::s_;

 public:
  CublasEngine(const LayerSpec& s, const float* x, const std::vector<HostLayer>& layers)
      : Base(s, x, layers.size(), 1, {"route", "dispatch", "experts", "combine"}) {
    check_blas(cublasCreate(&handle_), "cublasCreate");
    gated_ = s.act != Act::kGelu;
    const int64_t d = s.d_model, width = std::max(s.d_ff, s.shared_width);
    const double per_layer = static_cast<double>(sizeof(T)) * static_cast<double>(d) *
                                 (static_cast<double>(s.experts * s.d_ff) * 3 +
                                  static_cast<double>(s.shared_width) * 3) +
                             static_cast<double>(s.experts * d) * 4 * 3;
    check_fits(per_layer * static_cast<double>(layers.size()) +
               work_bytes(s, this->rows_, width * 3, d, sizeof(T)));
    this->upload_x_elem(x, d);
    xe_.resize(this->rows_ * d);
    gate_.resize(this->rows_ * width);
    up_.resize(this->rows_ * width);
    h_.resize(this->rows_ * width);
    o_.resize(this->rows_ * d);
    host_offsets_.resize(this->groups_ + 1);
    for (size_t l = 0; l < layers.size(); ++l) {
      const HostLayer& w = layers[l];
      this->upload_router(l, w);
      const int64_t ne = s.experts * s.d_ff * d, ns = s.shared_width * d;
      w_.push_back({upload(w.w1, ne), gated_ ? upload(w.w3, ne) : DeviceBuffer<T>(),
                    upload(w.w2, ne), upload(w.ws1, ns),
                    gated_ ? upload(w.ws3, ns) : DeviceBuffer<T>(), upload(w.ws2, ns)});
    }
  }
  ~CublasEngine() override { cublasDestroy(handle_); }

  std::string notes() const override {
    return std::string("cublasGemmEx per expert (") +
           (std::is_same_v<T, float> ? "FP32" : "16-bit inputs, FP32 compute") + ")";
  }

 private:
  // Never captured: the expert sizes come back to the host in the middle.
  void enqueue(int64_t layer, bool) override {
    const int64_t T_ = s_.tokens, E = s_.experts, d = s_.d_model;
    this->clock_.mark(0);
    const float one = 1.0f, zero = 0.0f;
    // logits^T [E, T] (column-major) = wg [E, d] x^T: the router as one FP32 GEMM.
    check_blas(cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(E),
                            static_cast<int>(T_), static_cast<int>(d), &one, this->wg_[layer].get(),
                            CUDA_R_32F, static_cast<int>(d), r_.x32.get(), CUDA_R_32F,
                            static_cast<int>(d), &zero, r_.logits.get(), CUDA_R_32F,
                            static_cast<int>(E), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
               "router GEMM");
    this->route(layer, true);
    this->clock_.mark(1);
    this->permute();
    // The framework way: the expert sizes come back to the host to size each GEMM.
    check(cudaMemcpy(host_offsets_.data(), r_.offsets.get(), host_offsets_.size() * sizeof(int64_t),
                     cudaMemcpyDeviceToHost),
          "expert sizes download");
    const int64_t rows = host_offsets_[this->groups_];
    gather_kernel<T><<<blocks_for(rows * d, 256), 256>>>(this->x_elem_.get(), r_.row_token.get(),
                                                         rows, d, xe_.get());
    check_launch("gather_kernel");
    this->clock_.mark(2);
    const Weights& w = w_[layer];
    for (int g = 0; g < this->groups_; ++g) {
      const int64_t begin = host_offsets_[g], n = host_offsets_[g + 1] - begin;
      if (n == 0) continue;
      const bool shared = g >= E;
      const int64_t f = shared ? s_.shared_width : s_.d_ff;
      const T* w1 = shared ? w.ws1.get() : w.w1.get() + g * f * d;
      const T* w3 = gated_ ? (shared ? w.ws3.get() : w.w3.get() + g * f * d) : nullptr;
      const T* w2 = shared ? w.ws2.get() : w.w2.get() + g * d * f;
      expert(xe_.get() + begin * d, n, f, w1, w3, w2, o_.get() + begin * d);
    }
    this->clock_.mark(3);
    this->combine(o_.get(), d, true);
    this->clock_.mark(4);
  }

  struct Weights {
    DeviceBuffer<T> w1, w3, w2, ws1, ws3, ws2;
  };

  DeviceBuffer<T> upload(const float* src, int64_t n) {
    if (src == nullptr || n == 0) return DeviceBuffer<T>();
    std::vector<T> host(static_cast<size_t>(n));
    constexpr int64_t kBlock = int64_t{1} << 16;
    host_parallel_for((n + kBlock - 1) / kBlock, [&](int64_t b) {
      for (int64_t i = b * kBlock; i < std::min(n, (b + 1) * kBlock); ++i) {
        host[i] = to_elem<T>(src[i]);
      }
    });
    DeviceBuffer<T> buf(host.size());
    buf.upload(host);
    return buf;
  }

  // C[n, m] (row-major) = A[n, k] B[m, k]^T with A, B in the dtype and C in FP32.
  void gemm(const T* a, const T* b, int64_t n, int64_t m, int64_t k, float* c) {
    const float one = 1.0f, zero = 0.0f;
    check_blas(
        cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(m), static_cast<int>(n),
                     static_cast<int>(k), &one, b, blas_type<T>(), static_cast<int>(k), a,
                     blas_type<T>(), static_cast<int>(k), &zero, c, CUDA_R_32F, static_cast<int>(m),
                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        "expert GEMM");
  }

  void expert(const T* xe, int64_t n, int64_t f, const T* w1, const T* w3, const T* w2, float* o) {
    gemm(xe, w1, n, f, s_.d_model, gate_.get());
    if (w3 != nullptr) gemm(xe, w3, n, f, s_.d_model, up_.get());
    activation_kernel<T>
        <<<blocks_for(n * f, 256), 256>>>(gate_.get(), w3 != nullptr ? up_.get() : nullptr, n * f,
                                          static_cast<int>(s_.act), h_.get());
    check_launch("activation_kernel");
    gemm(h_.get(), w2, n, s_.d_model, f, o);
  }

  cublasHandle_t handle_ = nullptr;
  bool gated_ = true;
  DeviceBuffer<T> xe_, h_;
  DeviceBuffer<float> gate_, up_, o_;
  std::vector<Weights> w_;
  std::vector<int64_t> host_offsets_;
};
}  // namespace

std::unique_ptr<Engine> make_cublas_engine(const LayerSpec& s, const float* x,
                                           const std::vector<HostLayer>& layers) {
  switch (s.elem) {
    case Elem::kF32:
      return std::make_unique<CublasEngine<float>>(s, x, layers);
    case Elem::kBF16:
      return std::make_unique<CublasEngine<__nv_bfloat16>>(s, x, layers);
    case Elem::kF16:
      return std::make_unique<CublasEngine<__half>>(s, x, layers);
  }
  return nullptr;
}

}  // namespace moe_bench::cuda
