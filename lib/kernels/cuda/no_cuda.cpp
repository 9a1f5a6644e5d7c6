// Built where nvcc was not found: the CUDA implementations exist and say why they cannot run.
#include "cuda_engine.hpp"

namespace moe_bench::cuda {

std::string unavailable_reason() {
  return "built without CUDA (no nvcc found at configure time, or MOE_BENCH_CUDA=OFF)";
}
std::string cutlass_unavailable_reason() { return unavailable_reason(); }
DeviceInfo device_info() { return {}; }
std::string device_summary() { return unavailable_reason(); }
std::unique_ptr<Engine> make_engine(Algo, const LayerSpec&, const float*,
                                    const std::vector<HostLayer>&) {
  throw DeviceError(unavailable_reason());
}
DevicePeaks measure_device_peaks() { return {}; }

}  // namespace moe_bench::cuda
