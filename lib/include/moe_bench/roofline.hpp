#pragma once

#include <string>

namespace moe_bench {

/// This machine's measured ceilings for a thread count.
struct Peaks {
  int threads = 0;
  double fp32_gflops = 0;        ///< FMA throughput with the widest vectors the CPU has
  double read_gbytes_per_s = 0;  ///< streaming reads from a buffer well beyond the caches
  std::string fma_isa;           ///< "avx512", "avx2" or "generic"
};

/// Runs the two microbenchmarks (about a quarter of a second together).
Peaks measure_peaks(int threads);

/// Where a result stands against the roofline.
struct RooflinePoint {
  double bound_s = 0;  ///< max(flops / peak, bytes / bandwidth)
  double percent = 0;  ///< bound_s / measured time * 100
  bool compute_bound = false;
};
RooflinePoint roofline(double flops, double bytes, double seconds, const Peaks& peaks);

}  // namespace moe_bench
