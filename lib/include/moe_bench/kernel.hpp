#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "moe_bench/problem.hpp"
#include "moe_bench/result.hpp"
#include "moe_bench/shape.hpp"

namespace moe_bench {

/// What an implementation is.
struct KernelInfo {
  std::string name;     ///< what --impl takes, e.g. "blas"
  std::string backend;  ///< "cpu", "cuda", "python"
  std::vector<Dtype> dtypes;
  std::string description;  ///< one line: the algorithm, not a claim
  int weight_copies = 0;    ///< extra copies of the weights it keeps (packing, another process)
  /// The weight formats it runs (Shape::weights); the unquantized one unless it says more.
  std::vector<WeightFormat> weights = {WeightFormat::kSame};
};

/// A device as reports describe it (the report's context.cuda).
struct DeviceDescription {
  std::string summary;  ///< name and versions, or why there is none
  bool available = false;
  std::optional<SystemInfo::CudaDevice> properties;
};

/// Rows routed to this process's experts from elsewhere (expert parallelism): `rows` activation
/// rows x[rows, d] (values representable in the dtype), each with `top_k` slots of an expert and
/// its combine weight, `kept` 0 for a slot that names no expert here (another process's, or one
/// dropped by capacity); `shared` marks the rows whose shared experts this call adds (the rows of
/// the process's own tokens), empty for none.
struct RoutedRows {
  std::span<const float> x;
  int64_t rows = 0;
  int64_t top_k = 0;
  std::span<const int32_t> expert;
  std::span<const float> weight;
  std::span<const uint8_t> kept;
  std::span<const uint8_t> shared;
};

/// The measurement protocol, for implementations that time themselves in another process.
struct TimingProtocol {
  int reps = 20;
  double min_time_s = 0.5, max_time_s = 30, min_sample_s = 0.005;
  int warmup = 1;
  int threads = 1;
};

/// What a self-timed implementation measured.
struct SelfTimed {
  std::vector<double> samples_s;
  int64_t inner_reps = 1;
  std::string notes;   ///< versions of the peer and the BLAS it used
  double setup_s = 0;  ///< the peer's own set-up in its process (weight prepacking)
  /// Non-empty when the peer was too slow for the case's time budget and took no samples: why,
  /// with its measured time per call. Its output is still checked; the result is then skipped.
  std::string too_slow;
};

/// One MoE forward implementation. The harness asks before running (`unavailable_reason`,
/// `can_run`), then calls `prepare` once per case (timed as setup) and `run` repeatedly.
class Kernel {
 public:
  virtual ~Kernel() = default;

  virtual KernelInfo info() const = 0;
  /// Returns why this implementation cannot run on this machine at all (no device, missing
  /// package), or nullopt when it can.
  virtual std::optional<std::string> unavailable_reason() const { return std::nullopt; }
  /// Returns why this implementation cannot run this case, or nullopt when it can.
  virtual std::optional<std::string> can_run(const Shape& shape, Dtype dtype) const = 0;
  /// Why this implementation cannot run this case: a weight format it does not take, or
  /// can_run's reason; nullopt when it can. What every caller asks.
  std::optional<std::string> refuses(const Shape& shape, Dtype dtype) const;
  /// Packs or uploads the weights of every layer and sizes all workspaces. The problem outlives
  /// the kernel's use of it.
  virtual void prepare(const Problem& problem, int threads) = 0;
  /// What `prepare` chose for this case (a micro-kernel variant), for the report; may be empty.
  virtual std::string notes() const { return {}; }
  /// One layer forward on the problem's activations with weights of `layer`.
  virtual void run(int64_t layer) = 0;
  /// Output y[T,d] of the last run.
  virtual std::span<const float> output() const = 0;
  /// The k experts each token selected in the last run, in rank order, before capacity [T*k].
  virtual std::span<const int32_t> selected_experts() const = 0;
  /// Cumulative seconds per stage since the last reset, for implementations that time their
  /// stages; empty otherwise.
  virtual std::vector<StageTime> stage_seconds() const { return {}; }
  virtual void reset_stages() {}
  /// Roundings to the dtype per output element beyond the semantics' (hidden values and outputs
  /// rounded once, FP32 accumulation), where an implementation runs the layer the way its users
  /// write it (a peer in bf16 combining in bf16): its tolerance widens by that many unit
  /// roundoffs. 0 for implementations that follow the semantics.
  virtual int extra_roundings(const Shape&, Dtype) const { return 0; }
  /// Implementations that quantize their activations to int8 per row (each token's input row and
  /// each expert's hidden row, by quantize_activations: the a8 variants) are checked against the
  /// oracle with the same quantization (Oracle::check's `a8`).
  virtual bool quantizes_activations() const { return false; }
  /// Implementations that run in another process (the Python peers) warm up, calibrate and
  /// sample there by the same protocol, leaving output() and selected_experts() of their last
  /// call; `prepare` comes first. Throws with the reason when the process fails. The others
  /// return nullopt and are timed by the harness, interleaved.
  virtual std::optional<SelfTimed> run_self_timed(const TimingProtocol&) { return std::nullopt; }
  virtual bool self_timed() const { return false; }
  /// Implementations on a device time each run with device events: samples are the device time
  /// of the runs (take_device_seconds: the sum since the last take), not the host's clock.
  virtual bool device_timed() const { return false; }
  virtual double take_device_seconds() { return 0; }
  /// Implementations on a device describe it for the report's context (nullopt on the CPU).
  virtual std::optional<DeviceDescription> device() const { return std::nullopt; }
  /// The FP32 FLOP rate of this implementation's own inner kernel on operands in L1, on
  /// `threads` threads, where it has one: the measured FMA peak must not be below it (validate's
  /// ceiling check, under every ISA cap). nullopt for implementations without such a kernel.
  virtual std::optional<double> in_cache_gflops(int) const { return std::nullopt; }
  /// The ceilings of the device this implementation runs on, measured now (nullopt on the CPU).
  virtual std::optional<DevicePeaks> measure_device_peaks() const { return std::nullopt; }

  /// Serving runs batches of any size up to the prepared problem's: implementations that can
  /// run the layer on the first `tokens` tokens of the prepared problem (output() and
  /// selected_experts() then hold that many tokens) say so. Capacity is not applied: a batch of
  /// another size would have another capacity.
  virtual bool runs_prefix() const { return false; }
  virtual void run_prefix(int64_t layer, int64_t tokens);

  /// Expert parallelism splits the layer: routing where the tokens live, the experts where their
  /// weights live. Implementations that can run the two apart say so and implement both; `prepare`
  /// comes first, with a problem of at least as many tokens as either call passes.
  virtual bool splits_routing() const { return false; }
  /// Routes the first `tokens` rows of the problem's x with `layer`'s router exactly as `run`
  /// does: k experts per token in rank order and their weights, before capacity.
  virtual void route(int64_t layer, int64_t tokens, std::span<int32_t> expert,
                     std::span<float> weight);
  /// The experts' part of `run` on rows routed here: y[rows, d] = the sum over kept slots of
  /// weight x FFN_expert(x), plus the shared experts on the rows marked `shared`, in FP32 and
  /// not rounded to the dtype (the partial sums of several processes are added first). For the
  /// problem's own x, all slots and every row shared, it equals `run` before rounding, bit for
  /// bit.
  virtual void run_routed(int64_t layer, const RoutedRows& rows, std::span<float> y);
  /// The experts whose weights the next `prepare` keeps: [E] marks (shared experts are always
  /// kept), or empty for all. An expert-parallel rank holds only what its placement gives it;
  /// prepared so, run_routed refuses rows for another expert and `run` refuses to run.
  virtual void hold_experts(std::vector<uint8_t> held);
};

using KernelFactory = std::unique_ptr<Kernel> (*)();

struct RegistryEntry {
  const char* name;
  KernelFactory make;
  bool runs_by_default = true;  ///< part of a run without --impl (variants are asked for by name)
};

/// A list of implementations, in the order reports show them. The core holds none: the one list
/// lives above the implementations (apps/moe-bench/registry.cpp) and is handed to the core.
class Registry {
 public:
  explicit Registry(std::vector<RegistryEntry> entries) : entries_(std::move(entries)) {}

  auto begin() const { return entries_.begin(); }
  auto end() const { return entries_.end(); }
  /// Creates an implementation by name; throws UsageError naming the known ones otherwise.
  std::unique_ptr<Kernel> make(std::string_view name) const;
  std::vector<std::string> names() const;
  /// Names of the implementations a run without --impl uses.
  std::vector<std::string> default_names() const;
  /// The most extra weight copies any of these implementations keeps (for memory checks).
  int extra_weight_copies(const std::vector<std::string>& impls) const;
  /// The device the device implementations run on, for the report's context (the first one that
  /// describes a device; "no device implementation" when none does).
  DeviceDescription device() const;
  /// The device's ceilings when any of `impls` runs on a usable device (measured now, about a
  /// second), else nullopt.
  std::optional<DevicePeaks> device_peaks_for(const std::vector<std::string>& impls) const;

 private:
  std::vector<RegistryEntry> entries_;
};

}  // namespace moe_bench
