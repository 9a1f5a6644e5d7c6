// The seam between the CUDA translation units (nvcc, C++17) and the rest of moe-bench (C++20):
// plain structs and one abstract engine. cuda_kernel.cpp wraps an engine as a moe_bench::Kernel;
// the .cu files implement it; no_cuda.cpp answers where nvcc was not found.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "moe_index.hpp"

namespace moe_bench::cuda {

/// A CUDA failure the user can act on (no device, out of memory, a failed launch): exit 3.
class DeviceError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// kGrouped picks its math per case (the row GEMV for decode-sized groups, else the grouped GEMM);
/// kGroupedGemm and kRowGemv force one (variants `cuda_gemm`, `cuda_gemv`); kGroupedGraph is
/// kGrouped with each layer replayed as a CUDA graph (`cuda_graph`); kCutlass runs the
/// expert projections as CUTLASS Hopper grouped GEMMs (`cuda_cutlass`), kCutlassGraph the same
/// with each layer replayed as a CUDA graph (`cuda_cutlass_graph`).
enum class Algo {
  kGrouped,
  kGroupedGraph,
  kGroupedGemm,
  kRowGemv,
  kCublas,
  kCutlass,
  kCutlassGraph
};
enum class Elem { kF32 = 0, kBF16 = 1, kF16 = 2 };
enum class Act { kSwiglu = 0, kGelu = 1, kSwigluOai = 2 };

struct LayerSpec {
  int64_t tokens = 0, experts = 0, top_k = 0, d_model = 0, d_ff = 0;
  int64_t shared_width = 0;  ///< all shared experts fused (0: none)
  int64_t capacity = -1;     ///< rows an expert keeps at most (-1: dropless)
  Act act = Act::kSwiglu;
  Elem elem = Elem::kF32;
  DevRouting routing;
};

/// One layer's weights on the host, in FP32 (values representable in the dtype), row-major as
/// moe_bench::LayerWeights: wg [E,d], w1/w3 [E,f,d], w2 [E,d,f], ws1/ws3 [fs,d], ws2 [d,fs];
/// w3 and ws3 are null for GELU, the shared ones null without shared experts.
struct HostLayer {
  const float *wg, *logit_bias, *selection_bias, *w1, *w3, *w2, *ws1, *ws3, *ws2;
};

/// Device and versions, for reports.
struct DeviceInfo {
  std::string name;
  int sms = 0, cc_major = 0, cc_minor = 0;
  int sm_clock_mhz = 0, mem_clock_mhz = 0, bus_width_bits = 0;
  int64_t memory_bytes = 0, free_bytes = 0;
  int driver = 0, runtime = 0;
};

/// Why no engine can run here (not compiled with CUDA, no device), or empty.
std::string unavailable_reason();
/// Why the CUTLASS engines cannot run here (not compiled: no headers or no sm_90a target; the
/// device is not sm_90), or empty.
std::string cutlass_unavailable_reason();
DeviceInfo device_info();
/// One line for reports: device, compute capability, SMs, memory and versions, or why none.
std::string device_summary();

class Engine {
 public:
  virtual ~Engine() = default;
  /// One forward of `layer` on the device; returns after the device finished.
  virtual void run(int64_t layer) = 0;
  /// Output [T,d] (rounded to the dtype) and selected experts [T,k] of the last run, on the host.
  virtual const std::vector<float>& output() = 0;
  virtual const std::vector<int32_t>& selected() = 0;
  /// Device seconds of the runs since the last take (CUDA events around each run), and per stage.
  virtual double take_device_seconds() = 0;
  virtual std::vector<std::pair<std::string, double>> stage_seconds() const = 0;
  virtual void reset_stages() = 0;
  /// What the engine chose (tile sizes, math path).
  virtual std::string notes() const = 0;
};

/// Uploads x and every layer, after checking they fit the device's free memory; throws
/// DeviceError with the sizes when they do not.
std::unique_ptr<Engine> make_engine(Algo algo, const LayerSpec& spec, const float* x,
                                    const std::vector<HostLayer>& layers);

/// The device ceilings the CUDA results are held to, measured on the device in this run.
struct DevicePeaks {
  double copy_gbytes_per_s = 0;  ///< device-to-device cudaMemcpy: (read + write) bytes / s
  double bf16_tflops = 0;        ///< cublasGemmEx BF16 -> FP32 accumulate, 8192^3
};
DevicePeaks measure_device_peaks();

}  // namespace moe_bench::cuda
