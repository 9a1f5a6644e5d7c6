// The state and the stages both engines share: routing buffers, x in the dtype, the router
// weights per layer, the combine and the host copies of the output.
#pragma once

#include "route_permute.cuh"

// Included only by the engine translation units (*.cu here); internal linkage in each.
namespace moe_bench::cuda {
namespace {

// Routing state both engines share.
struct RouteBuffers {
  DeviceBuffer<float> x32, logits, scratch, weight, row_weight;
  DeviceBuffer<int32_t> expert, row_token;
  DeviceBuffer<int64_t> kept, offsets, inv;
};

template <typename T>
class EngineBase : public Engine {
 public:
  // `graph`: run() replays each layer's forward captured once (capture_layers) as a CUDA graph,
  // timed as one stage, "layer"; else the stages are timed as named.
  EngineBase(const LayerSpec& s, const float* x, size_t layers, int64_t tile,
             std::vector<std::string> stages, bool graph = false)
      : s_(s),
        clock_(graph ? std::vector<std::string>{"layer"} : std::move(stages)),
        tile_(tile),
        graph_(graph) {
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

  ~EngineBase() override {
    for (cudaGraphExec_t g : graphs_) {
      if (g != nullptr) cudaGraphExecDestroy(g);
    }
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  // One forward: the graph of the layer replayed, or the stages enqueued with their events.
  void run(int64_t layer) override {
    if (graph_) {
      clock_.mark(0, stream_);
      check(cudaGraphLaunch(graphs_[layer], stream_), "cudaGraphLaunch");
      clock_.mark(1, stream_);
    } else {
      enqueue(layer, true);
    }
    clock_.finish();
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
  /// One forward's launches on stream_ without a host synchronisation (so that it can be
  /// captured); `marks`: record the stage events (clock_.mark(i, stream_)), never in a capture.
  virtual void enqueue(int64_t layer, bool marks) = 0;

  /// For a graph engine, at the end of its constructor: a stream of its own, then each layer's
  /// forward captured once. The set-up's uploads and memsets ran on the legacy stream, which a
  /// non-blocking stream does not wait for: the device is synchronised first.
  void capture_layers(size_t layers) {
    if (!graph_) return;
    if (stream_ == nullptr) {
      check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    }
    check(cudaDeviceSynchronize(), "engine set-up");
    graphs_.assign(layers, nullptr);
    for (size_t l = 0; l < layers; ++l) {
      cudaGraph_t graph = nullptr;
      check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "graph capture");
      enqueue(static_cast<int64_t>(l), false);
      check(cudaStreamEndCapture(stream_, &graph), "graph capture");
      const cudaError_t err = cudaGraphInstantiate(&graphs_[l], graph, 0);
      cudaGraphDestroy(graph);
      check(err, "cudaGraphInstantiate");
    }
  }

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
    route_kernel<<<blocks_for(T_, warps_per_block), 32 * warps_per_block, 0, stream_>>>(
        r_.x32.get(), wg_[layer].get(), bias_[layer].get(), sel_[layer].get(), r_.logits.get(),
        r_.scratch.get(), T_, static_cast<int>(s_.experts), s_.d_model, static_cast<int>(s_.top_k),
        s_.routing, precomputed, r_.expert.get(), r_.weight.get());
    check_launch("route_kernel");
  }

  void permute() {
    permute_kernel<<<1, 256, 0, stream_>>>(
        r_.expert.get(), r_.weight.get(), s_.tokens * s_.top_k, static_cast<int>(s_.experts),
        static_cast<int>(s_.top_k), s_.capacity, s_.shared_width > 0 ? s_.tokens : 0, tile_,
        r_.kept.get(), r_.offsets.get(), r_.row_token.get(), r_.row_weight.get(), r_.inv.get());
    check_launch("permute_kernel");
  }

  void combine(const float* o, int64_t ldo, bool weighted_rows) {
    const int64_t n = s_.tokens * s_.d_model;
    combine_kernel<<<blocks_for(n, 256), 256, 0, stream_>>>(
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
  cudaStream_t stream_ = nullptr;  ///< where the stages run (null: the legacy default stream)
  int64_t tile_;
  bool graph_ = false;
  std::vector<cudaGraphExec_t> graphs_;
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

}  // namespace

/// The engines, made for the layer's element type (grouped_engine.cu, cublas_engine.cu,
/// cutlass_engine.cu; `graph`: each layer captured once as a CUDA graph and replayed).
std::unique_ptr<Engine> make_grouped_engine(Algo algo, const LayerSpec& s, const float* x,
                                            const std::vector<HostLayer>& layers);
std::unique_ptr<Engine> make_cublas_engine(const LayerSpec& s, const float* x,
                                           const std::vector<HostLayer>& layers);
std::unique_ptr<Engine> make_cutlass_engine(bool graph, const LayerSpec& s, const float* x,
                                            const std::vector<HostLayer>& layers);

}  // namespace moe_bench::cuda
