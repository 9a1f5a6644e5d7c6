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

/// The instruction-set classes the tool dispatches on, weakest first. Each includes the ones
/// before it: avx2 is AVX2 with FMA and F16C; avx512 is AVX-512 F/BW/VL/DQ/CD; avx512_bf16 adds
/// vdpbf16ps; amx adds AMX-BF16 tiles.
enum class Isa { kGeneric, kAvx2, kAvx512, kAvx512Bf16, kAmx };
std::string_view to_string(Isa isa);
/// The class a name (as --max-isa takes it) names, or nullopt.
std::optional<Isa> parse_isa(std::string_view name);
/// "generic, avx2, avx512, avx512_bf16, amx": for messages.
std::string isa_names();
/// The strongest class these features are in.
Isa isa_of(const CpuFeatures& f);
/// The features with everything above `cap` removed (an ISA cap, as oneDNN's
/// ONEDNN_MAX_CPU_ISA): what a CPU of that class would report.
CpuFeatures capped(const CpuFeatures& f, Isa cap);

/// The features of this CPU as it reports them, whatever the cap.
const CpuFeatures& host_cpu_features();
/// The features everything dispatches on: this CPU's, under the ISA cap in force.
const CpuFeatures& cpu_features();
/// The cap in force (--max-isa, or MOE_BENCH_MAX_ISA), or nullopt.
std::optional<Isa> max_isa();
/// Sets or lifts the cap (start-up, and tests that run a check under every cap). Not
/// thread-safe: call it while no kernel runs.
void set_max_isa(std::optional<Isa> cap);
/// The classes this CPU supports, weakest first (the caps under which it can run).
std::vector<Isa> supported_isas();
/// "" without a cap; else "capped at avx2 (--max-isa; this CPU: avx512_bf16)".
std::string isa_cap_note();
/// Why this process cannot use AMX tiles, or empty where it can: the CPU (under the cap) must
/// have amx_tile and amx_bf16, and Linux must grant the tile state (XTILEDATA is off until a
/// process asks for it, arch_prctl ARCH_REQ_XCOMP_PERM; asked once).
std::string amx_refusal();

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

/// False in the ranks other than 0 of an mpirun launch (Open MPI's or PMI's rank variable): every
/// rank meets the same bad input, and rank 0 alone says so.
bool speaks_for_the_launch();

/// The OpenBLAS core type matching a cap ("Haswell" for avx2), empty for no cap.
std::string blas_core_for_cap(Isa cap);

/// First thing in main. `--max-isa NAME` (looked up in argv; it beats MOE_BENCH_MAX_ISA) sets the
/// cap and exports it as MOE_BENCH_MAX_ISA so child processes (peers, workers, ranks) run under
/// it too; under a cap the libraries the peers and blas use are capped to match, unless the user
/// set their variables (OPENBLAS_CORETYPE, MKL_ENABLE_INSTRUCTIONS, ATEN_CPU_CAPABILITY; not
/// oneDNN's, which PyTorch cannot run under a cap). An unknown name is one line on stderr and
/// exit 2. OpenBLAS and libgomp
/// read their settings when they are loaded, before main, so the process re-executes itself once
/// with them set: OPENBLAS_CORETYPE when a better kernel is wanted (see blas_core_to_request;
/// `--blas-core VALUE` is looked up in argv), and short idle spins for both thread pools
/// (OPENBLAS_THREAD_TIMEOUT, GOMP_SPINCOUNT) unless the user set them. Returns only in the
/// re-executed process (or when exec failed).
void prepare_process(int argc, char** argv);

/// The OpenBLAS kernel and threads in use now.
BlasInfo blas_info();

/// Sets the number of OpenBLAS threads.
void set_blas_threads(int threads);

/// Logical CPUs online.
int cpu_count();

/// Bytes of the last-level cache (from sysfs; 32 MiB when unreadable).
int64_t last_level_cache_bytes();
/// The largest cache of a SystemInfo::caches text ("L1d 48K, L2 1024K, L3 32768K": 32 MiB); 0
/// when it names none. For reports read on another machine than the one that ran them.
int64_t largest_cache_bytes(std::string_view caches);

/// Machine facts every report carries.
struct SystemInfo {
  std::string cpu_model;
  std::vector<std::string> features;  ///< the SIMD features that matter to the kernels
  int logical_cpus = 0;
  std::string caches;       ///< e.g. "L1d 48K, L2 1024K, L3 32768K"
  std::string governor;     ///< cpufreq scaling governor, or "unknown"
  std::string turbo;        ///< "on", "off" or "unknown"
  double load_average = 0;  ///< 1-minute load average when the run started
  std::string isa_cap;      ///< isa_cap_note(): empty without a cap
  /// The share of CPU time the hypervisor took (steal, from /proc/stat) over the run so far,
  /// or -1 where /proc/stat is unreadable.
  double steal_share = -1;
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

/// Counters of /proc/stat's first line: total and steal jiffies (steal -1 where unreadable).
struct CpuTimes {
  int64_t total = 0, steal = -1;
};
CpuTimes cpu_times();
/// The steal share between two readings, or -1 where either is unreadable or no time passed.
double steal_share(const CpuTimes& before, const CpuTimes& after);
/// The reading at process start (taken on first use of the tool's machine facts).
const CpuTimes& start_cpu_times();

/// At the end of a run: the OpenBLAS kernel and threads in use and the steal share since start.
void finish_system_info(SystemInfo& s);

/// Bytes of memory available for a new allocation (MemAvailable), 0 when unknown.
int64_t memory_available_bytes();

}  // namespace moe_bench
