#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace moe_bench {

/// CPU instruction-set features, as /proc/cpuinfo names them ("avx512f", "amx_bf16", ...).
struct CpuFeatures {
  std::set<std::string> flags;
  bool has(std::string_view f) const { return flags.contains(std::string(f)); }
};

/// Reads the features of this CPU.
const CpuFeatures& cpu_features();

/// Which OpenBLAS kernel is in use and who chose it.
struct BlasInfo {
  std::string core;       ///< openblas_get_corename()
  int threads = 0;        ///< openblas_get_num_threads()
  std::string chosen_by;  ///< "CPU features", "the user (OPENBLAS_CORETYPE=...)", ...
  bool fallback = false;  ///< the kernel is slower than what this CPU supports
};

/// The fastest OpenBLAS 0.3.21 core type these features support ("Cooperlake", "SkylakeX",
/// "Haswell"), or empty when none beats OpenBLAS's own detection.
std::string best_blas_core(const CpuFeatures& f);

/// Whether a core name is weaker than `wanted` (both OpenBLAS core names, case-insensitive).
bool blas_core_weaker(std::string_view core, std::string_view wanted);

/// The core type to request by re-executing, or nullopt. `flag` is the value of --blas-core
/// ("auto" or a core name; null when not given), which beats a user's OPENBLAS_CORETYPE;
/// without it a user's OPENBLAS_CORETYPE is respected. "auto" asks only when OpenBLAS's choice is
/// weaker than what the CPU supports.
std::optional<std::string> blas_core_to_request(const CpuFeatures& f, const char* flag,
                                                const char* user_env,
                                                std::string_view current_core);

/// First thing in main. OpenBLAS and libgomp read their settings when they are loaded, before
/// main, so the process re-executes itself once with them set: OPENBLAS_CORETYPE when a better
/// kernel is wanted (see blas_core_to_request; `--blas-core VALUE` is looked up in argv), and
/// short idle spins for both thread pools (OPENBLAS_THREAD_TIMEOUT, GOMP_SPINCOUNT) unless the
/// user set them. Returns only in the re-executed process (or when exec failed).
void prepare_process(int argc, char** argv);

/// The OpenBLAS kernel and threads in use now.
BlasInfo blas_info();

/// Sets the number of OpenBLAS threads.
void set_blas_threads(int threads);

/// Logical CPUs online.
int cpu_count();

/// Bytes of the last-level cache (from sysfs; 32 MiB when unreadable).
int64_t last_level_cache_bytes();

/// Machine facts every report carries.
struct SystemInfo {
  std::string cpu_model;
  std::vector<std::string> features;  ///< the SIMD features that matter to the kernels
  int logical_cpus = 0;
  std::string caches;       ///< e.g. "L1d 48K, L2 1024K, L3 32768K"
  std::string governor;     ///< cpufreq scaling governor, or "unknown"
  std::string turbo;        ///< "on", "off" or "unknown"
  double load_average = 0;  ///< 1-minute load average when the run started
  int64_t memory_total_bytes = 0;
  int64_t memory_available_bytes = 0;
  std::string tool_version, git_commit, build_type, compiler, cxx_flags;
  BlasInfo blas;
  std::string cuda;  ///< CUDA device summary, or why there is none
  bool cuda_available = false;
  /// The CUDA device (device 0) where one is usable.
  struct CudaDevice {
    std::string name;
    int sms = 0, cc_major = 0, cc_minor = 0;
    int sm_clock_mhz = 0, mem_clock_mhz = 0, bus_width_bits = 0;
    int64_t memory_bytes = 0;
    int driver = 0, runtime = 0;  ///< versions as CUDA encodes them (e.g. 13000)
  };
  std::optional<CudaDevice> cuda_device;
};

struct DeviceDescription;
/// The machine's facts, with the device the registry's device implementations describe.
SystemInfo system_info(const DeviceDescription& device);

/// Bytes of memory available for a new allocation (MemAvailable), 0 when unknown.
int64_t memory_available_bytes();

}  // namespace moe_bench
