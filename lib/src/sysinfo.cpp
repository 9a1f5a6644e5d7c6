#include "moe_bench/sysinfo.hpp"

#include <cblas.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <sstream>

#ifndef MOE_BENCH_VERSION
#define MOE_BENCH_VERSION "unknown"
#endif
#include "moe_bench/kernel.hpp"
#include "moe_bench_git_commit.h"
#ifndef MOE_BENCH_BUILD_TYPE
#define MOE_BENCH_BUILD_TYPE "unknown"
#endif
#ifndef MOE_BENCH_CXX_FLAGS
#define MOE_BENCH_CXX_FLAGS ""
#endif

namespace moe_bench {
namespace {

constexpr const char* kRequestedVar = "MOE_BENCH_REQUESTED_BLAS_CORE";

std::string cpuinfo_field(const std::string& key) {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) {
      auto colon = line.find(':');
      if (colon != std::string::npos) {
        auto v = line.substr(colon + 1);
        v.erase(0, v.find_first_not_of(" \t"));
        return v;
      }
    }
  }
  return {};
}

int64_t meminfo_kib(const std::string& key) {
  std::ifstream in("/proc/meminfo");
  std::string name;
  int64_t value = 0;
  std::string unit;
  while (in >> name >> value >> unit) {
    if (name == key + ":") return value;
  }
  return 0;
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// OpenBLAS x86-64 core types from weakest to strongest SGEMM kernel.
int core_rank(std::string_view core) {
  static const std::array<std::pair<const char*, int>, 16> kRanks{{
      {"prescott", 0},
      {"core2", 1},
      {"penryn", 1},
      {"dunnington", 1},
      {"nehalem", 2},
      {"atom", 0},
      {"barcelona", 2},
      {"bulldozer", 2},
      {"piledriver", 3},
      {"steamroller", 3},
      {"excavator", 3},
      {"sandybridge", 3},
      {"haswell", 4},
      {"zen", 4},
      {"skylakex", 5},
      {"cooperlake", 6},
  }};
  std::string c = lower(core);
  if (c == "sapphirerapids") return 7;
  for (const auto& [name, rank] : kRanks) {
    if (c == name) return rank;
  }
  return -1;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures kFeatures = [] {
    CpuFeatures f;
    std::istringstream flags(cpuinfo_field("flags"));
    std::string flag;
    while (flags >> flag) f.flags.insert(flag);
    return f;
  }();
  return kFeatures;
}

std::string best_blas_core(const CpuFeatures& f) {
  const bool avx512 = f.has("avx512f") && f.has("avx512bw") && f.has("avx512vl") &&
                      f.has("avx512dq") && f.has("avx512cd");
  // 0.3.21 has no SapphireRapids kernel; Cooperlake is its best (AVX-512 with BF16).
  if (avx512 && f.has("avx512_bf16")) return "Cooperlake";
  if (avx512) return "SkylakeX";
  if (f.has("avx2") && f.has("fma")) return "Haswell";
  return {};
}

bool blas_core_weaker(std::string_view core, std::string_view wanted) {
  return core_rank(core) < core_rank(wanted);
}

std::optional<std::string> blas_core_to_request(const CpuFeatures& f, const char* flag,
                                                const char* user_env,
                                                std::string_view current_core) {
  if (flag != nullptr && std::string_view(flag) != "auto") {
    if (lower(flag) == lower(current_core)) return std::nullopt;
    return std::string(flag);
  }
  if (flag == nullptr && user_env != nullptr) return std::nullopt;
  std::string best = best_blas_core(f);
  if (best.empty() || !blas_core_weaker(current_core, best)) return std::nullopt;
  return best;
}

namespace {
std::string& chosen_by_note() {
  static std::string note;
  return note;
}
}  // namespace

void prepare_process(int argc, char** argv) {
  if (const char* note = std::getenv(kRequestedVar)) {
    // This process is the re-executed one; the marker must not reach child processes.
    chosen_by_note() = note;
    unsetenv(kRequestedVar);
    return;
  }
  // `validate` checks claims against the baseline, so it always wants the best kernel.
  const char* flag = argc > 1 && std::string_view(argv[1]) == "validate" ? "auto" : nullptr;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--blas-core" && i + 1 < argc) flag = argv[i + 1];
    if (arg.starts_with("--blas-core=")) flag = argv[i] + std::string_view("--blas-core=").size();
  }
  auto core = blas_core_to_request(cpu_features(), flag, std::getenv("OPENBLAS_CORETYPE"),
                                   openblas_get_corename());
  std::string why = "OpenBLAS's own detection";
  if (core) {
    const char* user = std::getenv("OPENBLAS_CORETYPE");
    why = flag != nullptr ? std::string("--blas-core ") + flag : "CPU features";
    if (user != nullptr) why += std::string(", over OPENBLAS_CORETYPE=") + user;
    setenv("OPENBLAS_CORETYPE", core->c_str(), 1);
  } else if (flag != nullptr) {
    // Asked for, and already loaded: an inherited OPENBLAS_CORETYPE that happens to name the
    // kernel the flag wants is not the user's choice.
    why = std::string("--blas-core ") + flag + " (already the kernel in use)";
  } else if (std::getenv("OPENBLAS_CORETYPE") != nullptr) {
    why = std::string("the user (OPENBLAS_CORETYPE=") + std::getenv("OPENBLAS_CORETYPE") + ")";
  }
  // Idle worker threads of OpenBLAS (2^28 cycles by default) and libgomp keep spinning after a
  // call and steal the cores from whichever implementation runs next; shorter spins, read when
  // the libraries load, let interleaved implementations start on idle cores. A user's values win.
  setenv("OPENBLAS_THREAD_TIMEOUT", "22", 0);
  setenv("GOMP_SPINCOUNT", "100000", 0);
  setenv(kRequestedVar, why.c_str(), 1);
  execv("/proc/self/exe", argv);
  // exec failed: carry on as loaded; blas_info() reports the kernel in use.
}

BlasInfo blas_info() {
  BlasInfo info;
  info.core = openblas_get_corename();
  info.threads = openblas_get_num_threads();
  info.chosen_by =
      chosen_by_note().empty() ? "OpenBLAS's own detection (not re-executed)" : chosen_by_note();
  std::string best = best_blas_core(cpu_features());
  info.fallback = !best.empty() && blas_core_weaker(info.core, best);
  return info;
}

void set_blas_threads(int threads) { openblas_set_num_threads(threads); }

namespace {

std::string read_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

int64_t parse_cache_size(const std::string& text) {
  if (text.empty()) return 0;
  int64_t v = std::atoll(text.c_str());
  if (text.back() == 'K') v <<= 10;
  if (text.back() == 'M') v <<= 20;
  return v;
}

}  // namespace

int cpu_count() { return static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN)); }

int64_t last_level_cache_bytes() {
  int64_t best = 0;
  for (int i = 0; i < 8; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i);
    best = std::max(best, parse_cache_size(read_line(dir + "/size")));
  }
  return best > 0 ? best : int64_t{32} << 20;
}

int64_t memory_available_bytes() { return meminfo_kib("MemAvailable") * 1024; }

SystemInfo system_info(const DeviceDescription& device) {
  SystemInfo s;
  s.cpu_model = cpuinfo_field("model name");
  for (const char* f : {"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_bf16",
                        "avx512_fp16", "amx_tile", "amx_bf16"}) {
    if (cpu_features().has(f)) s.features.emplace_back(f);
  }
  s.logical_cpus = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  for (int i = 0; i < 8; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i);
    const std::string size = read_line(dir + "/size");
    if (size.empty()) continue;
    const std::string level = read_line(dir + "/level"), type = read_line(dir + "/type");
    const std::string kind = type == "Data" ? "d" : type == "Instruction" ? "i" : "";
    s.caches += (s.caches.empty() ? "" : ", ") + ("L" + level + kind + " " + size);
  }
  s.governor = read_line("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor");
  if (s.governor.empty()) s.governor = "unknown";
  const std::string no_turbo = read_line("/sys/devices/system/cpu/intel_pstate/no_turbo");
  const std::string boost = read_line("/sys/devices/system/cpu/cpufreq/boost");
  s.turbo = !no_turbo.empty() ? (no_turbo == "0" ? "on" : "off")
            : !boost.empty()  ? (boost == "1" ? "on" : "off")
                              : "unknown";
  s.load_average = std::atof(read_line("/proc/loadavg").c_str());
  s.memory_total_bytes = meminfo_kib("MemTotal") * 1024;
  s.memory_available_bytes = memory_available_bytes();
  s.tool_version = MOE_BENCH_VERSION;
  s.git_commit = MOE_BENCH_GIT_COMMIT;
  s.build_type = MOE_BENCH_BUILD_TYPE;
  s.compiler = std::string(
#if defined(__clang__)
                   "clang "
#elif defined(__GNUC__)
                   "gcc "
#endif
                   ) +
               __VERSION__;
  s.cxx_flags = MOE_BENCH_CXX_FLAGS;
  s.blas = blas_info();
  s.cuda = device.summary;
  s.cuda_available = device.available;
  s.cuda_device = device.properties;
  return s;
}

}  // namespace moe_bench
