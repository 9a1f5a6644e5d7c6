#pragma once

#include <algorithm>
#include <string>

#include "moe_bench/dtype.hpp"

namespace moe_bench {

/// This machine's measured ceilings for a thread count.
struct Peaks {
  int threads = 0;
  double fp32_gflops = 0;  ///< FMA throughput with the widest vectors the CPU has
  /// Streaming reads from a buffer well beyond the caches: the faster of eight interleaved
  /// streams and the kernels' pattern (one stream per thread, software prefetch ahead).
  double read_gbytes_per_s = 0;
  std::string fma_isa;  ///< "avx512", "avx2" or "generic"
  /// BF16 dot-product throughput (vdpbf16ps, two products and two adds per lane) where the CPU
  /// has AVX512-BF16; 0 where bf16 math runs at the FP32 rate.
  double bf16_gflops = 0;
  /// AMX-BF16 tile throughput (TDPBF16PS) where the CPU has AMX and Linux grants the tile
  /// state; 0 elsewhere.
  double amx_gflops = 0;
  /// The compute ceiling for a dtype: for bf16 the fastest of the units that can multiply it
  /// (FP32 FMAs on widened values, vdpbf16ps, AMX tiles), since a kernel may use any of them
  /// (on Intel Xeons vdpbf16ps runs at half the FMA rate, so `cpu` widens); else FP32 FMA.
  double compute_gflops(Dtype dtype) const {
    if (dtype != Dtype::kBF16) return fp32_gflops;
    return std::max({fp32_gflops, bf16_gflops, amx_gflops});
  }
};

/// ", N GFLOP/s BF16 dot product (avx512-bf16)" where measured, else empty: for context lines.
std::string bf16_peak(const Peaks& peaks);

/// Peaks are ceilings: of two measurements (before and after a run) each figure keeps the higher,
/// so a neighbour busy at one of them cannot make results look better than the machine allows.
void keep_higher(Peaks& peaks, const Peaks& again);

/// Runs the microbenchmarks (about a quarter of a second together).
Peaks measure_peaks(int threads);

/// The read ceiling's ways of streaming a thread's bytes (the ceiling is the fastest).
enum class ReadPattern {
  kInterleaved,  ///< eight interleaved sequential streams
  kPrefetched,   ///< one stream with software prefetch ahead, as the cpu kernels stream panels
  kPrefetchedStreams,  ///< four such streams side by side, as cpu reads panels at one row
};
const char* to_string(ReadPattern pattern);

/// Reads every 4-byte word of [p, p + bytes) with the pattern, on the widest vectors this CPU
/// has under the ISA cap (the read ceiling's own loops), and returns their sum as floats so that
/// no read can be left out; a tail of bytes % 4 is not read. For a floor of what a kernel's
/// bytes cost (the read_floor implementation).
float read_bytes(const char* p, int64_t bytes, ReadPattern pattern);

/// The vdpbf16ps FLOP rate over the FP32 FMA rate on one core, measured once per process (about
/// 20 ms); 0 without AVX512-BF16. About 2 on AMD Zen 4/5, about 0.5 on Intel Xeons.
double dpbf16_over_fma_rate();

/// Where a result stands against the roofline.
struct RooflinePoint {
  double bound_s = 0;  ///< max(flops / peak, bytes / bandwidth)
  double percent = 0;  ///< bound_s / measured time * 100
  bool compute_bound = false;
};
/// Against the compute ceiling of `dtype` (Peaks::compute_gflops).
RooflinePoint roofline(double flops, double bytes, double seconds, const Peaks& peaks, Dtype dtype);

/// A device's ceilings, measured on it in the same run (CUDA implementations are held to these).
struct DevicePeaks {
  std::string device;
  double copy_gbytes_per_s = 0;  ///< device-to-device copy, read + write bytes per second
  double bf16_tflops = 0;        ///< cuBLAS BF16 GEMM, 8192^3, FP32 accumulation
};

/// Against a device: bandwidth from the copy, compute from the BF16 GEMM for 16-bit dtypes; f32
/// results have no measured compute ceiling and are held to the bandwidth alone.
RooflinePoint roofline(double flops, double bytes, double seconds, const DevicePeaks& peaks,
                       Dtype dtype);

}  // namespace moe_bench
