// The `cuda_cutlass` engines (bf16): routing and permutation as in `cuda`, then the expert
// projections as two CUTLASS 3.x Hopper grouped GEMMs over every group in one launch each
// (pointer-array, TMA, warp-specialized, cooperative; FP32 accumulation and output): gate and up
// as one GEMM of [W1; W3] per expert, the activation in a small kernel after it, down unweighted,
// and the routing weight in the combine. Nothing comes back to the host between the stages, so
// `cuda_cutlass_graph` captures each layer's forward once as a CUDA graph and replays it.
//
// Compiled for sm_90a only (CMake compiles this file where CUTLASS's headers were found and the
// sm_90a target is on); device.cu refuses other devices before an engine is made.
#include <cutlass/cutlass.h>
#include <cutlass/gemm/device/gemm_universal_adapter.h>
#include <cutlass/version.h>

#include <cute/tensor.hpp>
#include <cutlass/epilogue/collective/collective_builder.hpp>
#include <cutlass/gemm/collective/collective_builder.hpp>
#include <cutlass/gemm/dispatch_policy.hpp>
#include <cutlass/gemm/group_array_problem_shape.hpp>
#include <cutlass/gemm/kernel/gemm_universal.hpp>
#include <cutlass/util/packed_stride.hpp>

#include "engine_base.cuh"

namespace moe_bench::cuda {
namespace {

using Bf16 = __nv_bfloat16;
using ProblemShape = cutlass::gemm::GroupProblemShape<cute::Shape<int, int, int>>;
using GroupShape = ProblemShape::UnderlyingProblemShape;

// One GEMM type serves both projections: A [M, K] row-major bf16 (the gathered rows, or H),
// B [N, K] with K contiguous (a weight matrix as stored), D [M, N] row-major FP32.
// 128x256x64 tiles on clusters of 2 along M, the cooperative schedule: the shape PyTorch's
// torch._grouped_mm picks for large groups on sm_90.
struct GroupedGemm {
  using ElementAB = cutlass::bfloat16_t;
  using ElementD = float;
  using LayoutA = cutlass::layout::RowMajor;
  using LayoutB = cutlass::layout::ColumnMajor;
  using LayoutD = cutlass::layout::RowMajor;
  static constexpr int kAlignAB = 16 / sizeof(ElementAB);
  static constexpr int kAlignD = 16 / sizeof(ElementD);
  using TileShape = cute::Shape<cute::_128, cute::_256, cute::_64>;
  using ClusterShape = cute::Shape<cute::_2, cute::_1, cute::_1>;

  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, ElementD, LayoutD*, kAlignD,
      ElementD, LayoutD*, kAlignD, cutlass::epilogue::PtrArrayTmaWarpSpecializedCooperative,
      cutlass::epilogue::fusion::LinearCombination<ElementD, float>>::CollectiveOp;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, ElementAB, LayoutA*, kAlignAB, ElementAB,
      LayoutB*, kAlignAB, float, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename Epilogue::SharedStorage))>,
      cutlass::gemm::KernelPtrArrayTmaWarpSpecializedCooperative>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<ProblemShape, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
  using StrideA = typename Kernel::InternalStrideA;
  using StrideB = typename Kernel::InternalStrideB;
  using StrideD = typename Kernel::InternalStrideD;
};
using Gemm = GroupedGemm::Gemm;

// One grouped GEMM's per-group arguments, on the device: the problem shapes and pointers a kernel
// writes before each forward (they follow the routing and the layer), the strides set once.
struct GroupArgs {
  DeviceBuffer<GroupShape> shape;
  DeviceBuffer<const GroupedGemm::ElementAB*> a, b;
  DeviceBuffer<float*> d;
  DeviceBuffer<GroupedGemm::StrideA> stride_a;
  DeviceBuffer<GroupedGemm::StrideB> stride_b;
  DeviceBuffer<GroupedGemm::StrideD> stride_d;
  DeviceBuffer<uint8_t> workspace;
  Gemm gemm;
};

// Where one projection's operands are; `shared` holds the fused shared experts' matrix.
struct Operands {
  const Bf16* a;
  int64_t lda;
  const Bf16 *routed, *shared;
  int64_t routed_stride;  ///< elements between experts' matrices
  int n_routed, n_shared, k_routed, k_shared;
  float* d;
  int64_t ldd;
};

struct GroupPointers {
  GroupShape* shape;
  const GroupedGemm::ElementAB** a;
  const GroupedGemm::ElementAB** b;
  float** d;
};

__device__ void set_group(int g, int experts, const int64_t* offsets, const Operands& o,
                          const GroupPointers& p) {
  const int64_t begin = offsets[g];
  const int m = static_cast<int>(offsets[g + 1] - begin);
  const bool shared = g >= experts;
  p.shape[g] = GroupShape{m, shared ? o.n_shared : o.n_routed, shared ? o.k_shared : o.k_routed};
  p.a[g] = reinterpret_cast<const GroupedGemm::ElementAB*>(o.a + begin * o.lda);
  p.b[g] = reinterpret_cast<const GroupedGemm::ElementAB*>(shared ? o.shared
                                                                  : o.routed + g * o.routed_stride);
  p.d[g] = o.d + begin * o.ldd;
}

// Row r of xe = x[row_token[r]] (16 bytes a thread; d_pad is a multiple of 8), up to the rows
// kept; block 0 also writes both GEMMs' per-group shapes and pointers.
__global__ void gather_and_set_groups(const Bf16* x, const int32_t* row_token,
                                      const int64_t* offsets, int experts, int groups, int64_t rows,
                                      int64_t d_pad, Bf16* xe, Operands up, GroupPointers up_ptrs,
                                      Operands down, GroupPointers down_ptrs) {
  if (blockIdx.x == 0) {
    for (int g = threadIdx.x; g < groups; g += blockDim.x) {
      set_group(g, experts, offsets, up, up_ptrs);
      set_group(g, experts, offsets, down, down_ptrs);
    }
  }
  const int64_t chunks = d_pad / 8;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * chunks) return;
  const int64_t r = i / chunks, c = i % chunks;
  if (r >= offsets[groups]) return;
  const int32_t t = row_token[r];
  uint4 v = make_uint4(0, 0, 0, 0);
  if (t >= 0) v = reinterpret_cast<const uint4*>(x + static_cast<int64_t>(t) * d_pad)[c];
  reinterpret_cast<uint4*>(xe + r * d_pad)[c] = v;
}

// H[r, j] = act(G[r, j], G[r, half + j]) in bf16 for the group's valid width, zero up to ldh;
// `half` is the group's padded width (gate columns first, then up), the shared group's from row
// offsets[experts] on.
__global__ void activation_rows(const float* g, int64_t ldg, const int64_t* offsets, int experts,
                                int groups, int64_t rows, int act, bool gated, int64_t f,
                                int64_t f_pad, int64_t fs, int64_t fs_pad, Bf16* h, int64_t ldh) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * ldh) return;
  const int64_t r = i / ldh, j = i % ldh;
  if (r >= offsets[groups]) return;
  const bool shared = r >= offsets[experts];
  const int64_t valid = shared ? fs : f, half = shared ? fs_pad : f_pad;
  float v = 0.0f;
  if (j < valid) v = activate(act, g[r * ldg + j], gated ? g[r * ldg + half + j] : 0.0f);
  h[r * ldh + j] = to_elem<Bf16>(v);
}

class CutlassEngine final : public EngineBase<Bf16> {
  using Base = EngineBase<Bf16>;

 public:
  CutlassEngine(bool graph, const LayerSpec& s, const float* x,
                const std::vector<HostLayer>& layers)
      : Base(s, x, layers.size(), 1, {"route", "permute", "gate_up", "down_combine"}, graph) {
    gated_ = s.act != Act::kGelu;
    const int64_t d = s.d_model;
    d_pad_ = round_up(d, 8);
    f_pad_ = round_up(s.d_ff, 8);
    fs_pad_ = round_up(s.shared_width, 8);
    const int64_t up_mult = gated_ ? 2 : 1;
    n_up_ = up_mult * f_pad_;
    n_sup_ = up_mult * fs_pad_;
    ldg_ = std::max(n_up_, n_sup_);
    ldh_ = std::max(f_pad_, fs_pad_);
    const double per_layer = 2.0 * static_cast<double>(s.experts * (n_up_ + f_pad_) * d_pad_ +
                                                       (n_sup_ + fs_pad_) * d_pad_) +
                             static_cast<double>(s.experts * d) * 4 * 3;
    const double rows = static_cast<double>(rows_);
    check_fits(per_layer * static_cast<double>(layers.size()) +
               work_bytes(s, rows_, ldg_, d_pad_, 4) +
               rows * static_cast<double>(2 * d_pad_ + 2 * ldh_));
    // A stream of its own in either mode: CUTLASS's launches and the stages share it.
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    upload_x_elem(x, d_pad_);
    xe_.resize(rows_ * d_pad_);
    g_.resize(rows_ * ldg_);
    h_.resize(rows_ * ldh_);
    o_.resize(rows_ * d_pad_);
    for (size_t l = 0; l < layers.size(); ++l) {
      const HostLayer& w = layers[l];
      upload_router(l, w);
      std::vector<Bf16> up, down;
      pack_up(w.w1, gated_ ? w.w3 : nullptr, s.experts, s.d_ff, f_pad_, up);
      pack_down(w.w2, s.experts, s.d_ff, f_pad_, down);
      up_.emplace_back(up.size());
      up_.back().upload(up);
      down_.emplace_back(down.size());
      down_.back().upload(down);
      std::vector<Bf16> sup, sdown;
      if (s.shared_width > 0) {
        pack_up(w.ws1, gated_ ? w.ws3 : nullptr, 1, s.shared_width, fs_pad_, sup);
        pack_down(w.ws2, 1, s.shared_width, fs_pad_, sdown);
      }
      sup_.emplace_back(sup.size());
      if (!sup.empty()) sup_.back().upload(sup);
      sdown_.emplace_back(sdown.size());
      if (!sdown.empty()) sdown_.back().upload(sdown);
    }
    int device = 0;
    check(cudaGetDevice(&device), "cudaGetDevice");
    hw_.device_id = device;
    hw_.sm_count = cutlass::KernelHardwareInfo::query_device_multiprocessor_count(device);
    init_gemm(
        up_args_, d_pad_, d_pad_, ldg_, [&](int g) { return g >= s.experts ? fs_pad_ : f_pad_; },
        /*up=*/true);
    init_gemm(
        down_args_, ldh_, 0, d_pad_, [&](int g) { return g >= s.experts ? fs_pad_ : f_pad_; },
        /*up=*/false);
    // The uploads and memsets ran on the legacy stream, which stream_ does not wait for.
    check(cudaDeviceSynchronize(), "CUTLASS engine set-up");
    capture_layers(layers.size());
  }

  std::string notes() const override {
    return std::string("CUTLASS ") + std::to_string(CUTLASS_MAJOR) + "." +
           std::to_string(CUTLASS_MINOR) +
           " Hopper grouped GEMM (pointer-array, TMA, warp-specialized cooperative, 128x256x64 "
           "tiles, clusters 2x1), activation kernel after gate/up" +
           (graph_ ? ", each layer replayed as a CUDA graph" : ", no CUDA graph");
  }

 private:
  void enqueue(int64_t layer, bool marks) override {
    const int E = static_cast<int>(s_.experts);
    if (marks) clock_.mark(0, stream_);
    route(layer, false);
    if (marks) clock_.mark(1, stream_);
    permute();
    if (marks) clock_.mark(2, stream_);
    const bool shared = s_.shared_width > 0;
    const Operands up{xe_.get(),
                      d_pad_,
                      up_[layer].get(),
                      shared ? sup_[layer].get() : nullptr,
                      n_up_ * d_pad_,
                      static_cast<int>(n_up_),
                      static_cast<int>(n_sup_),
                      static_cast<int>(d_pad_),
                      static_cast<int>(d_pad_),
                      g_.get(),
                      ldg_};
    const Operands down{h_.get(),
                        ldh_,
                        down_[layer].get(),
                        shared ? sdown_[layer].get() : nullptr,
                        d_pad_ * f_pad_,
                        static_cast<int>(d_pad_),
                        static_cast<int>(d_pad_),
                        static_cast<int>(f_pad_),
                        static_cast<int>(fs_pad_),
                        o_.get(),
                        d_pad_};
    gather_and_set_groups<<<std::max(1u, blocks_for(rows_ * (d_pad_ / 8), 256)), 256, 0, stream_>>>(
        x_elem_.get(), r_.row_token.get(), r_.offsets.get(), E, groups_, rows_, d_pad_, xe_.get(),
        up, pointers(up_args_), down, pointers(down_args_));
    check_launch("gather_and_set_groups");
    run_gemm(up_args_, "CUTLASS grouped GEMM (gate/up)");
    activation_rows<<<blocks_for(rows_ * ldh_, 256), 256, 0, stream_>>>(
        g_.get(), ldg_, r_.offsets.get(), E, groups_, rows_, static_cast<int>(s_.act), gated_,
        s_.d_ff, f_pad_, s_.shared_width, fs_pad_, h_.get(), ldh_);
    check_launch("activation_rows");
    if (marks) clock_.mark(3, stream_);
    run_gemm(down_args_, "CUTLASS grouped GEMM (down)");
    combine(o_.get(), d_pad_, true);
    if (marks) clock_.mark(4, stream_);
  }

  static GroupPointers pointers(GroupArgs& a) {
    return {a.shape.get(), a.a.get(), a.b.get(), a.d.get()};
  }

  // Allocates one GEMM's per-group arrays and sets its strides: A rows `lda` apart, B's rows K
  // long (K: d_pad for gate/up, the group's padded width for down), D rows `ldd` apart.
  template <typename WidthOf>
  void init_gemm(GroupArgs& a, int64_t lda, int64_t k_up, int64_t ldd, WidthOf width, bool up) {
    const auto n = static_cast<size_t>(groups_);
    a.shape.resize(n);
    a.a.resize(n);
    a.b.resize(n);
    a.d.resize(n);
    std::vector<GroupedGemm::StrideA> sa(n);
    std::vector<GroupedGemm::StrideB> sb(n);
    std::vector<GroupedGemm::StrideD> sd(n);
    for (int g = 0; g < groups_; ++g) {
      const int k = static_cast<int>(up ? k_up : width(g));
      const int n_cols = static_cast<int>(up ? (gated_ ? 2 : 1) * width(g) : d_pad_);
      sa[g] = cutlass::make_cute_packed_stride(GroupedGemm::StrideA{},
                                               cute::make_shape(1, static_cast<int>(lda), 1));
      sb[g] =
          cutlass::make_cute_packed_stride(GroupedGemm::StrideB{}, cute::make_shape(n_cols, k, 1));
      sd[g] = cutlass::make_cute_packed_stride(GroupedGemm::StrideD{},
                                               cute::make_shape(1, static_cast<int>(ldd), 1));
    }
    a.stride_a.resize(n);
    a.stride_a.upload(sa);
    a.stride_b.resize(n);
    a.stride_b.upload(sb);
    a.stride_d.resize(n);
    a.stride_d.upload(sd);
    typename Gemm::Arguments args{
        cutlass::gemm::GemmUniversalMode::kGrouped,
        {groups_, a.shape.get(), nullptr},
        {a.a.get(), a.stride_a.get(), a.b.get(), a.stride_b.get()},
        {{}, const_cast<const float**>(a.d.get()), a.stride_d.get(), a.d.get(), a.stride_d.get()},
        hw_};
    args.epilogue.thread.alpha = 1.0f;
    args.epilogue.thread.beta = 0.0f;
    args.epilogue.thread.dAlpha = {cute::_0{}, cute::_0{}, 0};
    args.epilogue.thread.dBeta = {cute::_0{}, cute::_0{}, 0};
    a.workspace.resize(Gemm::get_workspace_size(args));
    cutlass_check(a.gemm.can_implement(args), "CUTLASS grouped GEMM can_implement");
    cutlass_check(a.gemm.initialize(args, a.workspace.get(), stream_),
                  "CUTLASS grouped GEMM initialize");
  }

  void run_gemm(GroupArgs& a, const char* what) {
    cutlass_check(a.gemm.run(stream_), what);
    check_launch(what);
  }

  static void cutlass_check(cutlass::Status st, const char* what) {
    if (st != cutlass::Status::kSuccess) {
      throw DeviceError(std::string(what) + ": " + cutlassGetStatusString(st));
    }
  }

  // Per expert, gated: W1's rows (zero padded to width_pad rows, each d_pad long), then W3's
  // (the grouped engine's interleaving with one block of 2 width_pad rows); GELU: W1's rows.
  void pack_up(const float* w1, const float* w3, int64_t experts, int64_t width, int64_t width_pad,
               std::vector<Bf16>& out) const {
    pack_up_weights(
        w1, w3, experts, width, width_pad, s_.d_model, d_pad_, gated_, 2 * width_pad,
        [](float v) { return to_elem<Bf16>(v); }, out);
  }

  // W2 [d, width] into [d_pad, width_pad] per expert, zero padded.
  void pack_down(const float* w2, int64_t experts, int64_t width, int64_t width_pad,
                 std::vector<Bf16>& out) const {
    pack_down_weights(
        w2, experts, width, width_pad, s_.d_model, d_pad_, [](float v) { return to_elem<Bf16>(v); },
        out);
  }

  bool gated_ = true;
  int64_t d_pad_ = 0, f_pad_ = 0, fs_pad_ = 0, n_up_ = 0, n_sup_ = 0, ldg_ = 0, ldh_ = 0;
  cutlass::KernelHardwareInfo hw_;
  DeviceBuffer<Bf16> xe_, h_;
  DeviceBuffer<float> g_, o_;
  std::vector<DeviceBuffer<Bf16>> up_, down_, sup_, sdown_;
  GroupArgs up_args_, down_args_;
};

}  // namespace

std::unique_ptr<Engine> make_cutlass_engine(bool graph, const LayerSpec& s, const float* x,
                                            const std::vector<HostLayer>& layers) {
  if (s.elem != Elem::kBF16) {
    throw DeviceError("cuda_cutlass runs bf16 only (its one CUTLASS instantiation)");
  }
  return std::make_unique<CutlassEngine>(graph, s, x, layers);
}

}  // namespace moe_bench::cuda
