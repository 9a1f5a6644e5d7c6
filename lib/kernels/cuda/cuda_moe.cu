// The CUDA MoE engines: `cuda` (routing with one warp per token, a padded expert-contiguous
// permutation, one grouped GEMM launch per projection over every expert with the activation and
// the routing weight fused in the epilogues, an atomic-free combine) and `cublas` (the framework
// way: router GEMM, then per expert gather, cublasGemmEx and a separate activation kernel).
// Tensor cores (WMMA 16x16x16, FP32 accumulation) for bf16 and f16; an FP32 SIMT path for f32.
// The index arithmetic lives in moe_index.hpp, which the CPU tests run as well.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda_engine.hpp"

namespace moe_bench::cuda {
namespace {

void check(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  if (err == cudaErrorMemoryAllocation) {
    throw DeviceError(std::string("CUDA out of memory in ") + what);
  }
  throw DeviceError(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(err));
}

void check_blas(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS) {
    throw DeviceError(std::string("cuBLAS error ") + std::to_string(static_cast<int>(st)) + " in " +
                      what);
  }
}

// A launch that failed to start is reported with the kernel's name.
void check_launch(const char* what) { check(cudaGetLastError(), what); }

double gib(double bytes) { return bytes / double(1 << 30); }

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) { resize(n); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr; }
  ~DeviceBuffer() {
    if (p_ != nullptr) cudaFree(p_);
  }
  void resize(size_t n) {
    if (p_ != nullptr) cudaFree(p_);
    p_ = nullptr;
    n_ = n;
    check(cudaMalloc(&p_, std::max<size_t>(n, 1) * sizeof(T)), "cudaMalloc");
    check(cudaMemset(p_, 0, std::max<size_t>(n, 1) * sizeof(T)), "cudaMemset");
  }
  void upload(const std::vector<T>& host) {
    check(cudaMemcpy(p_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), "upload");
  }
  T* get() const { return p_; }
  size_t size() const { return n_; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

// ---- element types ----------------------------------------------------------------------------

template <typename T>
__host__ __device__ inline T to_elem(float v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(v);
  } else {
    return __float2half_rn(v);
  }
}

__device__ inline float round_elem(float v, int elem) {
  if (elem == 1) return __bfloat162float(__float2bfloat16_rn(v));
  if (elem == 2) return __half2float(__float2half_rn(v));
  return v;
}

template <typename T>
cudaDataType_t blas_type() {
  if constexpr (std::is_same_v<T, float>) {
    return CUDA_R_32F;
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return CUDA_R_16BF;
  } else {
    return CUDA_R_16F;
  }
}

// ---- routing and permutation ------------------------------------------------------------------

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

// ---- grouped GEMM -----------------------------------------------------------------------------

constexpr int kBN = 64;  // output columns per block (gated gate/up: 32 gate + 32 up)
constexpr int kBK = 32;  // reduction per shared-memory stage
constexpr int kThreads = 128;

template <typename T>
struct GroupB {
  const T* b;            ///< [n][k] row-major (k contiguous), one group after another
  int64_t group_stride;  ///< elements between groups' matrices
  int64_t n, k;          ///< padded columns and reduction
};

enum class Epi { kGateUp, kDown };

template <typename T>
struct GemmArgs {
  const T* a;
  int64_t lda;
  const int32_t* gather;  ///< row -> token of A (-1: zero row); null: row r of A is row r
  const int64_t* offsets;
  int experts, groups;
  GroupB<T> routed, shared;
  // gate/up epilogue: H[row, col] = act(gate, up) in T, zero beyond the valid width
  int act;
  bool gated;
  int64_t valid_routed, valid_shared;
  T* h;
  int64_t ldh;
  // down epilogue: O[row, col] = weight[row] * acc (FP32)
  float* o;
  int64_t ldo;
  const float* row_weight;
};

template <typename T, int BM, Epi kEpi>
__global__ void __launch_bounds__(kThreads) grouped_gemm(GemmArgs<T> args) {
  constexpr int kLdc = kBN + 4;
  __shared__ __align__(32) float cs[BM * kLdc];
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * BM;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kBN;
  if (row0 >= args.offsets[args.groups]) return;  // the grid covers the most rows possible
  const int g = group_of_row(args.offsets, args.groups, row0);
  const bool is_shared = g >= args.experts;
  const GroupB<T>& gb = is_shared ? args.shared : args.routed;
  if (col0 >= gb.n) return;
  const T* b = gb.b + (is_shared ? 0 : g * gb.group_stride) + col0 * gb.k;
  const int tid = threadIdx.x;

  // Row pointers of this block's A rows (gathered tokens or plain rows).
  auto a_row = [&](int r) -> const T* {
    const int64_t row = row0 + r;
    if (args.gather == nullptr) return args.a + row * args.lda;
    const int32_t token = args.gather[row];
    return token >= 0 ? args.a + static_cast<int64_t>(token) * args.lda : nullptr;
  };

  if constexpr (std::is_same_v<T, float>) {
    // FP32 SIMT: thread = one column, BM/2 rows (two row phases of 64 threads).
    __shared__ float as[BM][kBK + 1];
    __shared__ float bs[kBN][kBK + 1];
    const int c = tid % kBN, phase = tid / kBN;
    float acc[BM / 2];
#pragma unroll
    for (int i = 0; i < BM / 2; ++i) acc[i] = 0.0f;
    for (int64_t k0 = 0; k0 < gb.k; k0 += kBK) {
      for (int v = tid; v < BM * kBK; v += kThreads) {
        const int r = v / kBK, kk = v % kBK;
        const T* src = a_row(r);
        as[r][kk] = src != nullptr ? src[k0 + kk] : 0.0f;
      }
      for (int v = tid; v < kBN * kBK; v += kThreads) {
        const int n = v / kBK, kk = v % kBK;
        bs[n][kk] = b[n * gb.k + k0 + kk];
      }
      __syncthreads();
#pragma unroll 8
      for (int kk = 0; kk < kBK; ++kk) {
        const float bv = bs[c][kk];
#pragma unroll
        for (int i = 0; i < BM / 2; ++i) acc[i] += as[phase + 2 * i][kk] * bv;
      }
      __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < BM / 2; ++i) cs[(phase + 2 * i) * kLdc + c] = acc[i];
  } else {
    // Tensor cores: warps tile BM x 64 as (BM/16) x (4 / (BM/16)), 16x16x16 fragments.
    using namespace nvcuda;
    constexpr int kLds = kBK + 8;  // 16-byte multiple, staggers banks
    constexpr int kWm = BM / 16, kWn = 4 / kWm, kFn = kBN / kWn / 16;
    __shared__ __align__(32) T as[BM * kLds];
    __shared__ __align__(32) T bs[kBN * kLds];
    const int warp = tid / 32, wm = warp / kWn, wn = warp % kWn;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kFn];
#pragma unroll
    for (int f = 0; f < kFn; ++f) wmma::fill_fragment(acc[f], 0.0f);
    constexpr int kVec = 8;  // 16 bytes of 16-bit values
    for (int64_t k0 = 0; k0 < gb.k; k0 += kBK) {
      for (int v = tid; v < BM * kBK / kVec; v += kThreads) {
        const int r = v / (kBK / kVec), c8 = v % (kBK / kVec) * kVec;
        const T* src = a_row(r);
        uint4 val = make_uint4(0, 0, 0, 0);
        if (src != nullptr) val = *reinterpret_cast<const uint4*>(src + k0 + c8);
        *reinterpret_cast<uint4*>(&as[r * kLds + c8]) = val;
      }
      for (int v = tid; v < kBN * kBK / kVec; v += kThreads) {
        const int n = v / (kBK / kVec), c8 = v % (kBK / kVec) * kVec;
        *reinterpret_cast<uint4*>(&bs[n * kLds + c8]) =
            *reinterpret_cast<const uint4*>(b + n * gb.k + k0 + c8);
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kBK; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
        wmma::load_matrix_sync(fa, as + wm * 16 * kLds + kk, kLds);
#pragma unroll
        for (int f = 0; f < kFn; ++f) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
          wmma::load_matrix_sync(fb, bs + (wn * kFn * 16 + f * 16) * kLds + kk, kLds);
          wmma::mma_sync(acc[f], fa, fb, acc[f]);
        }
      }
      __syncthreads();
    }
#pragma unroll
    for (int f = 0; f < kFn; ++f) {
      wmma::store_matrix_sync(cs + wm * 16 * kLdc + wn * kFn * 16 + f * 16, acc[f], kLdc,
                              wmma::mem_row_major);
    }
  }
  __syncthreads();

  if constexpr (kEpi == Epi::kGateUp) {
    const int64_t valid = is_shared ? args.valid_shared : args.valid_routed;
    if (args.gated) {
      // Columns [0, 32) of the block are gate rows, [32, 64) the up rows of the same units.
      constexpr int kHalf = kBN / 2;
      for (int v = tid; v < BM * kHalf; v += kThreads) {
        const int r = v / kHalf, j = v % kHalf;
        const int64_t col = hidden_column(blockIdx.x, j, true, kBN);
        const float h = activate(args.act, cs[r * kLdc + j], cs[r * kLdc + kHalf + j]);
        args.h[(row0 + r) * args.ldh + col] = to_elem<T>(col < valid ? h : 0.0f);
      }
    } else {
      for (int v = tid; v < BM * kBN; v += kThreads) {
        const int r = v / kBN, j = v % kBN;
        const int64_t col = hidden_column(blockIdx.x, j, false, kBN);
        const float h = activate(args.act, cs[r * kLdc + j], 0.0f);
        args.h[(row0 + r) * args.ldh + col] = to_elem<T>(col < valid ? h : 0.0f);
      }
    }
  } else {
    for (int v = tid; v < BM * kBN; v += kThreads) {
      const int r = v / kBN, j = v % kBN;
      args.o[(row0 + r) * args.ldo + col0 + j] = args.row_weight[row0 + r] * cs[r * kLdc + j];
    }
  }
}

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

unsigned blocks_for(int64_t n, int threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

// ---- engines ----------------------------------------------------------------------------------

// Events around each stage; elapsed times are collected after the run's last event completed.
class StageClock {
 public:
  explicit StageClock(std::vector<std::string> names) : names_(std::move(names)) {
    events_.resize(names_.size() + 1);
    for (auto& e : events_) check(cudaEventCreate(&e), "cudaEventCreate");
    seconds_.assign(names_.size(), 0.0);
  }
  ~StageClock() {
    for (auto& e : events_) cudaEventDestroy(e);
  }
  void mark(size_t i) { check(cudaEventRecord(events_[i]), "cudaEventRecord"); }
  void finish() {
    check(cudaEventSynchronize(events_.back()), "a MoE forward on the device");
    check(cudaGetLastError(), "a MoE forward on the device");
    for (size_t i = 0; i < names_.size(); ++i) {
      float ms = 0;
      check(cudaEventElapsedTime(&ms, events_[i], events_[i + 1]), "cudaEventElapsedTime");
      seconds_[i] += ms * 1e-3;
      pending_ += ms * 1e-3;
    }
  }
  double take() {
    const double s = pending_;
    pending_ = 0;
    return s;
  }
  std::vector<std::pair<std::string, double>> stages() const {
    std::vector<std::pair<std::string, double>> out;
    for (size_t i = 0; i < names_.size(); ++i) out.emplace_back(names_[i], seconds_[i]);
    return out;
  }
  void reset() { std::fill(seconds_.begin(), seconds_.end(), 0.0); }

 private:
  std::vector<std::string> names_;
  std::vector<cudaEvent_t> events_;
  std::vector<double> seconds_;
  double pending_ = 0;
};

void check_fits(double need_bytes) {
  size_t free = 0, total = 0;
  check(cudaMemGetInfo(&free, &total), "cudaMemGetInfo");
  if (need_bytes > 0.95 * static_cast<double>(free)) {
    char msg[256];
    std::snprintf(msg, sizeof msg,
                  "out of device memory: this case needs %.2f GiB on the device, %.2f GiB of "
                  "%.2f GiB is free",
                  gib(need_bytes), gib(static_cast<double>(free)), gib(static_cast<double>(total)));
    throw DeviceError(msg);
  }
}

// Routing state both engines share.
struct RouteBuffers {
  DeviceBuffer<float> x32, logits, scratch, weight, row_weight;
  DeviceBuffer<int32_t> expert, row_token;
  DeviceBuffer<int64_t> kept, offsets, inv;
};

template <typename T>
class EngineBase : public Engine {
 public:
  EngineBase(const LayerSpec& s, const float* x, size_t layers, int64_t tile,
             std::vector<std::string> stages)
      : s_(s), clock_(std::move(stages)), tile_(tile) {
    const int64_t T_ = s.tokens, E = s.experts, k = s.top_k, d = s.d_model;
    groups_ = static_cast<int>(E + (s.shared_width > 0 ? 1 : 0));
    rows_ = max_rows(T_ * k, static_cast<int>(E), s.shared_width > 0 ? T_ : 0, tile);
    r_.x32.resize(T_ * d);
    r_.x32.upload(std::vector<float>(x, x + T_ * d));
    r_.logits.resize(T_ * E);
    r_.scratch.resize(T_ * (3 * E + 2 * (s.routing.groups + 1)));
    r_.weight.resize(T_ * k);
    r_.expert.resize(T_ * k);
    r_.kept.resize(E);
    r_.offsets.resize(groups_ + 2);
    r_.inv.resize(T_ * k);
    r_.row_token.resize(rows_);
    r_.row_weight.resize(rows_);
    y_dev_.resize(T_ * d);
    wg_.resize(layers);
    bias_.resize(layers);
    sel_.resize(layers);
  }

  const std::vector<float>& output() override {
    y_.resize(y_dev_.size());
    check(cudaMemcpy(y_.data(), y_dev_.get(), y_.size() * sizeof(float), cudaMemcpyDeviceToHost),
          "output download");
    return y_;
  }
  const std::vector<int32_t>& selected() override {
    sel_host_.resize(r_.expert.size());
    check(cudaMemcpy(sel_host_.data(), r_.expert.get(), sel_host_.size() * sizeof(int32_t),
                     cudaMemcpyDeviceToHost),
          "selection download");
    return sel_host_;
  }
  double take_device_seconds() override { return clock_.take(); }
  std::vector<std::pair<std::string, double>> stage_seconds() const override {
    return clock_.stages();
  }
  void reset_stages() override { clock_.reset(); }

 protected:
  void upload_router(size_t l, const HostLayer& w) {
    const int64_t E = s_.experts, d = s_.d_model;
    wg_[l].resize(E * d);
    wg_[l].upload(std::vector<float>(w.wg, w.wg + E * d));
    bias_[l].resize(E);
    bias_[l].upload(std::vector<float>(w.logit_bias, w.logit_bias + E));
    sel_[l].resize(E);
    sel_[l].upload(std::vector<float>(w.selection_bias, w.selection_bias + E));
  }

  void route(int64_t layer, bool precomputed) {
    const int64_t T_ = s_.tokens;
    const int warps_per_block = 4;
    route_kernel<<<blocks_for(T_, warps_per_block), 32 * warps_per_block>>>(
        r_.x32.get(), wg_[layer].get(), bias_[layer].get(), sel_[layer].get(), r_.logits.get(),
        r_.scratch.get(), T_, static_cast<int>(s_.experts), s_.d_model, static_cast<int>(s_.top_k),
        s_.routing, precomputed, r_.expert.get(), r_.weight.get());
    check_launch("route_kernel");
  }

  void permute() {
    permute_kernel<<<1, 256>>>(
        r_.expert.get(), r_.weight.get(), s_.tokens * s_.top_k, static_cast<int>(s_.experts),
        static_cast<int>(s_.top_k), s_.capacity, s_.shared_width > 0 ? s_.tokens : 0, tile_,
        r_.kept.get(), r_.offsets.get(), r_.row_token.get(), r_.row_weight.get(), r_.inv.get());
    check_launch("permute_kernel");
  }

  void combine(const float* o, int64_t ldo, bool weighted_rows) {
    const int64_t n = s_.tokens * s_.d_model;
    combine_kernel<<<blocks_for(n, 256), 256>>>(
        o, ldo, r_.inv.get(), r_.offsets.get(), static_cast<int>(s_.experts), s_.shared_width > 0,
        weighted_rows ? r_.row_weight.get() : nullptr, s_.tokens, static_cast<int>(s_.top_k),
        s_.d_model, static_cast<int>(s_.elem), y_dev_.get());
    check_launch("combine_kernel");
  }

  // The dtype's copy of x, padded with zero columns to `ld`.
  void upload_x_elem(const float* x, int64_t ld) {
    std::vector<T> host(static_cast<size_t>(s_.tokens * ld), to_elem<T>(0.0f));
    for (int64_t t = 0; t < s_.tokens; ++t) {
      for (int64_t i = 0; i < s_.d_model; ++i) host[t * ld + i] = to_elem<T>(x[t * s_.d_model + i]);
    }
    x_elem_.resize(host.size());
    x_elem_.upload(host);
  }

  LayerSpec s_;
  StageClock clock_;
  int64_t tile_;
  int groups_ = 0;
  int64_t rows_ = 0;
  RouteBuffers r_;
  DeviceBuffer<float> y_dev_;
  DeviceBuffer<T> x_elem_;
  std::vector<DeviceBuffer<float>> wg_, bias_, sel_;
  std::vector<float> y_;
  std::vector<int32_t> sel_host_;
};

// Bytes of device memory either engine needs besides the weights (a generous bound).
double work_bytes(const LayerSpec& s, int64_t rows, int64_t width, int64_t d_pad, size_t elem) {
  const double T_ = static_cast<double>(s.tokens), E = static_cast<double>(s.experts);
  return T_ * static_cast<double>(s.d_model) * (8 + elem) + T_ * E * 16 +
         static_cast<double>(rows) *
             (static_cast<double>(width) * (elem + 8) + static_cast<double>(d_pad) * 4 + 16) +
         T_ * static_cast<double>(s.top_k) * 16;
}

template <typename T, int BM>
class GroupedEngine final : public EngineBase<T> {
  using Base = EngineBase<T>;
  using Base::r_;
  using Base::s_;

 public:
  GroupedEngine(const LayerSpec& s, const float* x, const std::vector<HostLayer>& layers)
      : Base(s, x, layers.size(), BM, {"route", "permute", "gate_up", "down_combine"}) {
    gated_ = s.act != Act::kGelu;
    const int64_t d = s.d_model;
    d_pad_ = round_up(d, kBN);
    f_pad_ = round_up(s.d_ff, gated_ ? kBN / 2 : kBN);
    fs_pad_ = round_up(s.shared_width, gated_ ? kBN / 2 : kBN);
    ldh_ = std::max(f_pad_, fs_pad_);
    const double per_layer = static_cast<double>(sizeof(T)) *
                                 (static_cast<double>(s.experts) *
                                      (up_rows(f_pad_) + d_pad_ * 1.0) * std::max(d_pad_, f_pad_) +
                                  (up_rows(fs_pad_) + d_pad_ * 1.0) * std::max(d_pad_, fs_pad_)) +
                             static_cast<double>(s.experts * d) * 4 * 3;
    check_fits(per_layer * static_cast<double>(layers.size()) +
               work_bytes(s, this->rows_, ldh_, d_pad_, sizeof(T)));
    this->upload_x_elem(x, d_pad_);
    h_.resize(this->rows_ * ldh_);
    o_.resize(this->rows_ * d_pad_);
    up_.resize(layers.size());
    down_.resize(layers.size());
    sup_.resize(layers.size());
    sdown_.resize(layers.size());
    for (size_t l = 0; l < layers.size(); ++l) {
      const HostLayer& w = layers[l];
      this->upload_router(l, w);
      std::vector<T> up, down;
      for (int64_t e = 0; e < s.experts; ++e) {
        pack_up(w.w1 + e * s.d_ff * d, gated_ ? w.w3 + e * s.d_ff * d : nullptr, s.d_ff, f_pad_,
                up);
        pack_down(w.w2 + e * d * s.d_ff, s.d_ff, f_pad_, down);
      }
      up_[l].resize(up.size());
      up_[l].upload(up);
      down_[l].resize(down.size());
      down_[l].upload(down);
      if (s.shared_width > 0) {
        std::vector<T> sup, sdown;
        pack_up(w.ws1, gated_ ? w.ws3 : nullptr, s.shared_width, fs_pad_, sup);
        pack_down(w.ws2, s.shared_width, fs_pad_, sdown);
        sup_[l].resize(sup.size());
        sup_[l].upload(sup);
        sdown_[l].resize(sdown.size());
        sdown_[l].upload(sdown);
      }
    }
  }

  void run(int64_t layer) override {
    this->clock_.mark(0);
    this->route(layer, false);
    this->clock_.mark(1);
    this->permute();
    this->clock_.mark(2);
    const unsigned row_tiles = static_cast<unsigned>(this->rows_ / BM);
    GemmArgs<T> a{};
    a.offsets = r_.offsets.get();
    a.experts = static_cast<int>(s_.experts);
    a.groups = this->groups_;
    a.act = static_cast<int>(s_.act);
    a.gated = gated_;
    a.valid_routed = s_.d_ff;
    a.valid_shared = s_.shared_width;
    a.h = h_.get();
    a.ldh = ldh_;
    a.o = o_.get();
    a.ldo = d_pad_;
    a.row_weight = r_.row_weight.get();

    a.a = this->x_elem_.get();
    a.lda = d_pad_;
    a.gather = r_.row_token.get();
    a.routed = {up_[layer].get(), up_rows(f_pad_) * d_pad_, up_rows(f_pad_), d_pad_};
    a.shared = {sup_[layer].get(), 0, up_rows(fs_pad_), d_pad_};
    const int64_t up_cols = std::max(up_rows(f_pad_), up_rows(fs_pad_));
    grouped_gemm<T, BM, Epi::kGateUp>
        <<<dim3(static_cast<unsigned>(up_cols / kBN), row_tiles), kThreads>>>(a);
    check_launch("grouped_gemm (gate/up)");
    this->clock_.mark(3);

    a.a = h_.get();
    a.lda = ldh_;
    a.gather = nullptr;
    a.routed = {down_[layer].get(), d_pad_ * f_pad_, d_pad_, f_pad_};
    a.shared = {sdown_[layer].get(), 0, d_pad_, fs_pad_};
    grouped_gemm<T, BM, Epi::kDown>
        <<<dim3(static_cast<unsigned>(d_pad_ / kBN), row_tiles), kThreads>>>(a);
    check_launch("grouped_gemm (down)");
    this->combine(o_.get(), d_pad_, false);
    this->clock_.mark(4);
    this->clock_.finish();
  }

  std::string notes() const override {
    return std::string("grouped GEMM, ") +
           (std::is_same_v<T, float> ? "FP32 SIMT" : "WMMA tensor cores") + ", " +
           std::to_string(BM) + "x" + std::to_string(kBN) + " tiles";
  }

 private:
  // Rows of a packed gate/up matrix for a padded width: gate and up interleaved per 32 units.
  int64_t up_rows(int64_t width_pad) const { return packed_up_rows(width_pad, gated_); }

  // Gated: blocks of 64 rows, the first 32 W1 rows of 32 hidden units, then their 32 W3 rows;
  // GELU: W1 rows. Each row d_pad long, zero beyond d and beyond the width.
  void pack_up(const float* w1, const float* w3, int64_t width, int64_t width_pad,
               std::vector<T>& out) const {
    const int64_t d = s_.d_model, base = static_cast<int64_t>(out.size());
    out.resize(out.size() + up_rows(width_pad) * d_pad_, to_elem<T>(0.0f));
    for (int64_t r = 0; r < up_rows(width_pad); ++r) {
      bool is_up = false;
      const int64_t unit = packed_up_unit(r, gated_, kBN, &is_up);
      const float* src = is_up ? w3 : w1;
      if (unit >= width) continue;
      for (int64_t i = 0; i < d; ++i) out[base + r * d_pad_ + i] = to_elem<T>(src[unit * d + i]);
    }
  }

  // W2 [d, width] into [d_pad, width_pad], zero padded.
  void pack_down(const float* w2, int64_t width, int64_t width_pad, std::vector<T>& out) const {
    const int64_t d = s_.d_model, base = static_cast<int64_t>(out.size());
    out.resize(out.size() + d_pad_ * width_pad, to_elem<T>(0.0f));
    for (int64_t r = 0; r < d; ++r) {
      for (int64_t j = 0; j < width; ++j)
        out[base + r * width_pad + j] = to_elem<T>(w2[r * width + j]);
    }
  }

  bool gated_ = true;
  int64_t d_pad_ = 0, f_pad_ = 0, fs_pad_ = 0, ldh_ = 0;
  DeviceBuffer<T> h_;
  DeviceBuffer<float> o_;
  std::vector<DeviceBuffer<T>> up_, down_, sup_, sdown_;
};

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

  void run(int64_t layer) override {
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
    this->clock_.finish();
  }

  std::string notes() const override {
    return std::string("cublasGemmEx per expert (") +
           (std::is_same_v<T, float> ? "FP32" : "16-bit inputs, FP32 compute") + ")";
  }

 private:
  struct Weights {
    DeviceBuffer<T> w1, w3, w2, ws1, ws3, ws2;
  };

  DeviceBuffer<T> upload(const float* src, int64_t n) {
    if (src == nullptr || n == 0) return DeviceBuffer<T>();
    std::vector<T> host(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) host[i] = to_elem<T>(src[i]);
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

template <typename T>
std::unique_ptr<Engine> make_typed(Algo algo, const LayerSpec& s, const float* x,
                                   const std::vector<HostLayer>& layers) {
  if (algo == Algo::kCublas) return std::make_unique<CublasEngine<T>>(s, x, layers);
  // Few rows per expert (decode): 16-row tiles waste less of the tensor cores on padding.
  const double rows_per_expert =
      static_cast<double>(s.tokens * s.top_k) / static_cast<double>(s.experts);
  if (rows_per_expert <= 16) return std::make_unique<GroupedEngine<T, 16>>(s, x, layers);
  return std::make_unique<GroupedEngine<T, 64>>(s, x, layers);
}

}  // namespace

std::string unavailable_reason() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) return std::string("no CUDA device (") + cudaGetErrorString(err) + ")";
  if (count == 0) return "no CUDA device (none found)";
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return "no CUDA device (properties)";
  if (prop.major < 8) {
    return std::string("device ") + prop.name + " is sm_" + std::to_string(prop.major) +
           std::to_string(prop.minor) + "; the CUDA kernels need sm_80 or newer";
  }
  return {};
}

DeviceInfo device_info() {
  DeviceInfo info;
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return info;
  info.name = prop.name;
  info.sms = prop.multiProcessorCount;
  info.cc_major = prop.major;
  info.cc_minor = prop.minor;
  int clock = 0;
  cudaDeviceGetAttribute(&clock, cudaDevAttrClockRate, 0);
  info.sm_clock_mhz = clock / 1000;
  cudaDeviceGetAttribute(&clock, cudaDevAttrMemoryClockRate, 0);
  info.mem_clock_mhz = clock / 1000;
  cudaDeviceGetAttribute(&info.bus_width_bits, cudaDevAttrGlobalMemoryBusWidth, 0);
  info.memory_bytes = static_cast<int64_t>(prop.totalGlobalMem);
  size_t free = 0, total = 0;
  if (cudaMemGetInfo(&free, &total) == cudaSuccess) info.free_bytes = static_cast<int64_t>(free);
  cudaDriverGetVersion(&info.driver);
  cudaRuntimeGetVersion(&info.runtime);
  return info;
}

std::unique_ptr<Engine> make_engine(Algo algo, const LayerSpec& spec, const float* x,
                                    const std::vector<HostLayer>& layers) {
  const std::string why = unavailable_reason();
  if (!why.empty()) throw DeviceError(why);
  switch (spec.elem) {
    case Elem::kF32:
      return make_typed<float>(algo, spec, x, layers);
    case Elem::kBF16:
      return make_typed<__nv_bfloat16>(algo, spec, x, layers);
    case Elem::kF16:
      return make_typed<__half>(algo, spec, x, layers);
  }
  return nullptr;
}

DevicePeaks measure_device_peaks() {
  DevicePeaks p;
  if (!unavailable_reason().empty()) return p;
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  auto best_of = [&](int reps, auto&& body) {
    float best = 1e30f;
    for (int i = 0; i < reps; ++i) {
      check(cudaEventRecord(start), "cudaEventRecord");
      body();
      check(cudaEventRecord(stop), "cudaEventRecord");
      check(cudaEventSynchronize(stop), "peak measurement");
      float ms = 0;
      check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
      best = std::min(best, ms);
    }
    return best * 1e-3;
  };
  {
    const size_t bytes = size_t{1} << 30;
    DeviceBuffer<char> a(bytes), b(bytes);
    const double s = best_of(5, [&] {
      check(cudaMemcpy(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice), "copy peak");
    });
    p.copy_gbytes_per_s = 2.0 * static_cast<double>(bytes) / s * 1e-9;
  }
  {
    constexpr int n = 8192;
    DeviceBuffer<__nv_bfloat16> a(size_t{n} * n), b(size_t{n} * n);
    DeviceBuffer<float> c(size_t{n} * n);
    cublasHandle_t h = nullptr;
    check_blas(cublasCreate(&h), "cublasCreate");
    const float one = 1.0f, zero = 0.0f;
    const double s = best_of(5, [&] {
      check_blas(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &one, a.get(), CUDA_R_16BF, n,
                              b.get(), CUDA_R_16BF, n, &zero, c.get(), CUDA_R_32F, n,
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 "BF16 GEMM peak");
    });
    cublasDestroy(h);
    p.bf16_tflops = 2.0 * n * static_cast<double>(n) * n / s * 1e-12;
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return p;
}

}  // namespace moe_bench::cuda
