// The `cuda` engine: routing, permutation, the grouped GEMM for gate/up (activation fused) and
// for down (routing weight fused), then the combine.
#include "engine_base.cuh"
#include "grouped_gemm.cuh"
#include "row_gemv.cuh"

namespace moe_bench::cuda {
namespace {

template <typename T, int BM>
class GroupedEngine final : public EngineBase<T> {
  using Base = EngineBase<T>;
  using Base::r_;
  using Base::s_;

 public:
  GroupedEngine(const LayerSpec& s, const float* x, const std::vector<HostLayer>& layers, bool gemv,
                bool graph)
      : Base(s, x, layers.size(), BM, {"route", "permute", "gate_up", "down_combine"}, graph),
        gemv_(gemv) {
    static_assert(BM == kGemvRows || BM == 64);
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
      pack_up(w.w1, gated_ ? w.w3 : nullptr, s.experts, s.d_ff, f_pad_, up);
      pack_down(w.w2, s.experts, s.d_ff, f_pad_, down);
      up_[l].resize(up.size());
      up_[l].upload(up);
      down_[l].resize(down.size());
      down_[l].upload(down);
      if (s.shared_width > 0) {
        std::vector<T> sup, sdown;
        pack_up(w.ws1, gated_ ? w.ws3 : nullptr, 1, s.shared_width, fs_pad_, sup);
        pack_down(w.ws2, 1, s.shared_width, fs_pad_, sdown);
        sup_[l].resize(sup.size());
        sup_[l].upload(sup);
        sdown_[l].resize(sdown.size());
        sdown_[l].upload(sdown);
      }
    }
    this->capture_layers(layers.size());
  }

  std::string notes() const override {
    std::string out;
    if (gemv_) {
      out = "row GEMV (one warp per output unit and 16-row tile, 16-byte weight loads, FP32)";
    } else {
      out = std::string("grouped GEMM, ") +
            (std::is_same_v<T, float> ? "FP32 SIMT" : "WMMA tensor cores") + ", " +
            std::to_string(BM) + "x" + std::to_string(kBN) + " tiles";
    }
    return out + (this->graph_ ? ", each layer replayed as a CUDA graph" : "");
  }

 private:
  void enqueue(int64_t layer, bool marks) override {
    cudaStream_t st = this->stream_;
    if (marks) this->clock_.mark(0, st);
    this->route(layer, false);
    if (marks) this->clock_.mark(1, st);
    this->permute();
    if (marks) this->clock_.mark(2, st);
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
    a.row_token = r_.row_token.get();

    a.a = this->x_elem_.get();
    a.lda = d_pad_;
    a.gather = r_.row_token.get();
    a.routed = {up_[layer].get(), up_rows(f_pad_) * d_pad_, up_rows(f_pad_), d_pad_};
    a.shared = {sup_[layer].get(), 0, up_rows(fs_pad_), d_pad_};
    const int64_t up_cols = std::max(up_rows(f_pad_), up_rows(fs_pad_));
    if (gemv_) {
      const int64_t units = std::max(f_pad_, fs_pad_);
      row_gemv<T, Epi::kGateUp>
          <<<dim3(static_cast<unsigned>((units + kGemvWarps - 1) / kGemvWarps), row_tiles),
             kGemvWarps * 32, 0, st>>>(a, a.row_token);
      check_launch("row_gemv (gate/up)");
    } else {
      grouped_gemm<T, BM, Epi::kGateUp>
          <<<dim3(static_cast<unsigned>(up_cols / kBN), row_tiles), kThreads, 0, st>>>(a);
      check_launch("grouped_gemm (gate/up)");
    }
    if (marks) this->clock_.mark(3, st);

    a.a = h_.get();
    a.lda = ldh_;
    a.gather = nullptr;
    a.routed = {down_[layer].get(), d_pad_ * f_pad_, d_pad_, f_pad_};
    a.shared = {sdown_[layer].get(), 0, d_pad_, fs_pad_};
    if (gemv_) {
      row_gemv<T, Epi::kDown>
          <<<dim3(static_cast<unsigned>((d_pad_ + kGemvWarps - 1) / kGemvWarps), row_tiles),
             kGemvWarps * 32, 0, st>>>(a, a.row_token);
      check_launch("row_gemv (down)");
    } else {
      grouped_gemm<T, BM, Epi::kDown>
          <<<dim3(static_cast<unsigned>(d_pad_ / kBN), row_tiles), kThreads, 0, st>>>(a);
      check_launch("grouped_gemm (down)");
    }
    this->combine(o_.get(), d_pad_, false);
    if (marks) this->clock_.mark(4, st);
  }

  // Rows of a packed gate/up matrix for a padded width: gate and up interleaved per 32 units.
  int64_t up_rows(int64_t width_pad) const { return packed_up_rows(width_pad, gated_); }

  void pack_up(const float* w1, const float* w3, int64_t experts, int64_t width, int64_t width_pad,
               std::vector<T>& out) const {
    pack_up_weights(
        w1, w3, experts, width, width_pad, s_.d_model, d_pad_, gated_, kBN,
        [](float v) { return to_elem<T>(v); }, out);
  }

  void pack_down(const float* w2, int64_t experts, int64_t width, int64_t width_pad,
                 std::vector<T>& out) const {
    pack_down_weights(
        w2, experts, width, width_pad, s_.d_model, d_pad_, [](float v) { return to_elem<T>(v); },
        out);
  }

  bool gemv_ = false;
  bool gated_ = true;
  int64_t d_pad_ = 0, f_pad_ = 0, fs_pad_ = 0, ldh_ = 0;
  DeviceBuffer<T> h_;
  DeviceBuffer<float> o_;
  std::vector<DeviceBuffer<T>> up_, down_, sup_, sdown_;
};
// Few rows per expert (decode): the row GEMV streams the weights (`cuda` up to
// kGemvRowsPerExpert rows per expert on average); otherwise 16-row tensor-core tiles waste less
// on padding up to 16 rows per expert, and 64-row tiles beyond. Measured on an H200 (bf16,
// workload A, docs/gpu.md): at 0.25 rows per expert the GEMV took 108 us against 330 us for the
// tiles, at 8 rows 384 us against 355 us; the crossing between was not measured.
constexpr double kGemvRowsPerExpert = 2;

template <typename T>
std::unique_ptr<Engine> make_tiled(Algo algo, const LayerSpec& s, const float* x,
                                   const std::vector<HostLayer>& layers) {
  const double rows_per_expert =
      static_cast<double>(s.tokens * s.top_k) / static_cast<double>(s.experts);
  const bool auto_math = algo == Algo::kGrouped || algo == Algo::kGroupedGraph;
  const bool graph = algo == Algo::kGroupedGraph;
  const bool gemv = algo == Algo::kRowGemv || (auto_math && rows_per_expert <= kGemvRowsPerExpert);
  if (gemv || rows_per_expert <= 16) {
    return std::make_unique<GroupedEngine<T, 16>>(s, x, layers, gemv, graph);
  }
  return std::make_unique<GroupedEngine<T, 64>>(s, x, layers, false, graph);
}

}  // namespace

std::unique_ptr<Engine> make_grouped_engine(Algo algo, const LayerSpec& s, const float* x,
                                            const std::vector<HostLayer>& layers) {
  switch (s.elem) {
    case Elem::kF32:
      return make_tiled<float>(algo, s, x, layers);
    case Elem::kBF16:
      return make_tiled<__nv_bfloat16>(algo, s, x, layers);
    case Elem::kF16:
      return make_tiled<__half>(algo, s, x, layers);
  }
  return nullptr;
}

}  // namespace moe_bench::cuda
