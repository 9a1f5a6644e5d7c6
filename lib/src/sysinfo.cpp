#include "moe_bench/sysinfo.hpp"

#include <cblas.h>
#include <fmt/format.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
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

// AVX-512 F, BW, VL, DQ and CD: what OpenBLAS's SkylakeX kernels and the avx512 class need.
bool has_avx512_core(const CpuFeatures& f) {
  return f.has("avx512f") && f.has("avx512bw") && f.has("avx512vl") && f.has("avx512dq") &&
         f.has("avx512cd");
}

}  // namespace

const CpuFeatures& host_cpu_features() {
  static const CpuFeatures kFeatures = [] {
    CpuFeatures f;
    std::istringstream flags(cpuinfo_field("flags"));
    std::string flag;
    while (flags >> flag) f.flags.insert(flag);
    return f;
  }();
  return kFeatures;
}

std::string_view to_string(Isa isa) {
  switch (isa) {
    case Isa::kGeneric:
      return "generic";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx512Bf16:
      return "avx512_bf16";
    case Isa::kAmx:
      return "amx";
  }
  return "?";
}

namespace {
constexpr std::array kAllIsas{Isa::kGeneric, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16, Isa::kAmx};
}  // namespace

std::optional<Isa> parse_isa(std::string_view name) {
  const std::string n = lower(name);
  for (Isa isa : kAllIsas) {
    if (n == to_string(isa)) return isa;
  }
  return std::nullopt;
}

std::string isa_names() {
  std::string out;
  for (Isa isa : kAllIsas) out += (out.empty() ? "" : ", ") + std::string(to_string(isa));
  return out;
}

Isa isa_of(const CpuFeatures& f) {
  if (!(f.has("avx2") && f.has("fma") && f.has("f16c"))) return Isa::kGeneric;
  if (!has_avx512_core(f)) return Isa::kAvx2;
  if (!f.has("avx512_bf16")) return Isa::kAvx512;
  if (!(f.has("amx_tile") && f.has("amx_bf16"))) return Isa::kAvx512Bf16;
  return Isa::kAmx;
}

CpuFeatures capped(const CpuFeatures& f, Isa cap) {
  // The vector extensions of each class that a CPU of a lower class lacks. AVX-VNNI and the
  // other VEX extensions of recent cores (Alder Lake, Zen 5) are above avx2: an AVX2 class CPU
  // (Haswell, Zen 3) has none of them.
  auto above = [cap](const std::string& flag) {
    auto starts = [&flag](std::string_view p) { return flag.rfind(p, 0) == 0; };
    if (starts("amx")) return cap < Isa::kAmx;
    if (flag == "avx512_bf16" || flag == "avx512_fp16") return cap < Isa::kAvx512Bf16;
    if (starts("avx512") || starts("avx_") || starts("avx10")) return cap < Isa::kAvx512;
    if (flag == "avx" || flag == "avx2" || flag == "fma" || flag == "f16c") {
      return cap < Isa::kAvx2;
    }
    return false;
  };
  CpuFeatures out;
  for (const std::string& flag : f.flags) {
    if (!above(flag)) out.flags.insert(flag);
  }
  return out;
}

namespace {

struct IsaState {
  std::optional<Isa> cap;
  CpuFeatures features;
};

IsaState& isa_state() {
  static IsaState state = [] {
    IsaState s;
    const char* env = std::getenv("MOE_BENCH_MAX_ISA");
    // prepare_process refuses an unknown name before anything reads the features.
    if (env != nullptr && *env != '\0') s.cap = parse_isa(env);
    s.features = s.cap ? capped(host_cpu_features(), *s.cap) : host_cpu_features();
    return s;
  }();
  return state;
}

}  // namespace

const CpuFeatures& cpu_features() { return isa_state().features; }

std::optional<Isa> max_isa() { return isa_state().cap; }

void set_max_isa(std::optional<Isa> cap) {
  IsaState& s = isa_state();
  s.cap = cap;
  s.features = cap ? capped(host_cpu_features(), *cap) : host_cpu_features();
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  const Isa host = isa_of(host_cpu_features());
  for (Isa isa : kAllIsas) {
    if (isa <= host) out.push_back(isa);
  }
  return out;
}

std::string isa_cap_note() {
  const auto cap = max_isa();
  if (!cap) return {};
  const Isa host = isa_of(host_cpu_features());
  return fmt::format("capped at {} (--max-isa or MOE_BENCH_MAX_ISA; this CPU: {}{})",
                     to_string(*cap), to_string(host),
                     *cap >= host ? ", so the cap changes nothing" : "");
}

std::string amx_refusal() {
  if (!cpu_features().has("amx_tile") || !cpu_features().has("amx_bf16")) {
    return max_isa() && host_cpu_features().has("amx_bf16")
               ? "AMX is above the cap (" + isa_cap_note() + ")"
               : std::string("this CPU has no AMX (amx_tile and amx_bf16)");
  }
  static const std::string kDenied = [] {
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) {
      return fmt::format("Linux refused the AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM: {})",
                         std::strerror(errno));
    }
    return std::string();
  }();
  return kDenied;
}

std::string blas_core_for_cap(Isa cap) {
  switch (cap) {
    case Isa::kGeneric:
      return "Prescott";  // SSE2/SSE3 kernels: what every x86-64 CPU runs
    case Isa::kAvx2:
      return "Haswell";
    case Isa::kAvx512:
      return "SkylakeX";
    case Isa::kAvx512Bf16:
    case Isa::kAmx:
      return "Cooperlake";
  }
  return {};
}

std::string best_blas_core(const CpuFeatures& f) {
  const bool avx512 = has_avx512_core(f);
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

bool speaks_for_the_launch() {
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMI_RANK"}) {
    const char* rank = std::getenv(name);
    if (rank != nullptr && std::string_view(rank) != "0") return false;
  }
  return true;
}

namespace {

// The value of `--name VALUE` or `--name=VALUE` in argv (the last one), or null.
const char* find_flag(int argc, char** argv, std::string_view name) {
  const char* value = nullptr;
  const std::string eq = std::string(name) + "=";
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == name && i + 1 < argc) value = argv[i + 1];
    if (arg.starts_with(eq)) value = argv[i] + eq.size();
  }
  return value;
}

[[noreturn]] void refuse(const std::string& message) {
  if (speaks_for_the_launch()) fmt::print(stderr, "moe-bench: error: {}\n", message);
  std::exit(2);
}

// The cap from --max-isa or MOE_BENCH_MAX_ISA (the flag wins), exported for child processes.
std::optional<Isa> take_isa_cap(int argc, char** argv) {
  const char* flag = find_flag(argc, argv, "--max-isa");
  const char* env = std::getenv("MOE_BENCH_MAX_ISA");
  const char* value = flag != nullptr ? flag : (env != nullptr && *env != '\0' ? env : nullptr);
  if (value == nullptr) return std::nullopt;
  const auto cap = parse_isa(value);
  if (!cap) {
    refuse(fmt::format("{} '{}' is not one of {}",
                       flag != nullptr ? "--max-isa" : "MOE_BENCH_MAX_ISA", value, isa_names()));
  }
  setenv("MOE_BENCH_MAX_ISA", std::string(to_string(*cap)).c_str(), 1);
  return cap;
}

// Under a cap below this CPU's class, the libraries of the peers are capped to match where they
// take a cap without breaking (a user's own setting wins): MKL's kernels and ATen's vectorised
// kernels, and oneDNN only from AMX down to AVX512-BF16 (ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16:
// torch 2.8 then runs bf16 at 177 ms where it took 65 with AMX, workload A at 512 tokens on an
// Intel Xeon). Below that oneDNN is not capped: PyTorch picks its oneDNN bf16 path from the CPU's
// own flags, and oneDNN capped below them then fails to create the primitive (torch 1.13 under
// ONEDNN_MAX_CPU_ISA=AVX2 on an AVX-512 CPU: "could not create a primitive descriptor
// iterator"), so the torch peer's bf16 path under those caps is still the CPU's own. IPEX's own
// MoE kernels take no cap and keep using AMX (docs/checks.md).
void cap_peer_libraries(Isa cap) {
  if (cap >= isa_of(host_cpu_features())) return;
  if (cap == Isa::kAvx512Bf16) setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16", 0);
  if (cap <= Isa::kAvx512) {
    setenv("MKL_ENABLE_INSTRUCTIONS",
           cap == Isa::kGeneric ? "SSE4_2"
           : cap == Isa::kAvx2  ? "AVX2"
                                : "AVX512",
           0);
  }
  if (cap <= Isa::kAvx2)
    setenv("ATEN_CPU_CAPABILITY", cap == Isa::kGeneric ? "default" : "avx2", 0);
}

}  // namespace

void prepare_process(int argc, char** argv) {
  const std::optional<Isa> cap = take_isa_cap(argc, argv);
  set_max_isa(cap);
  if (const char* note = std::getenv(kRequestedVar)) {
    // This process is the re-executed one; the marker must not reach child processes.
    chosen_by_note() = note;
    unsetenv(kRequestedVar);
    return;
  }
  // `validate` checks claims against the baseline, so it always wants the best kernel.
  const char* flag = argc > 1 && std::string_view(argv[1]) == "validate" ? "auto" : nullptr;
  if (const char* given = find_flag(argc, argv, "--blas-core")) flag = given;
  const char* user = std::getenv("OPENBLAS_CORETYPE");
  const std::string current = openblas_get_corename();
  std::optional<std::string> core;
  std::string why = "OpenBLAS's own detection";
  const bool auto_flag = flag == nullptr || std::string_view(flag) == "auto";
  if (cap && auto_flag && (flag != nullptr || user == nullptr)) {
    // Under a cap, the kernel of the capped class, stronger or weaker than OpenBLAS's choice.
    std::string wanted = best_blas_core(cpu_features());
    if (wanted.empty()) wanted = blas_core_for_cap(Isa::kGeneric);
    if (lower(wanted) != lower(current)) core = wanted;
    why = fmt::format("--max-isa {}", to_string(*cap));
    if (core && user != nullptr) why += std::string(", over OPENBLAS_CORETYPE=") + user;
  } else {
    core = blas_core_to_request(cpu_features(), flag, user, current);
    if (core) {
      why = flag != nullptr ? std::string("--blas-core ") + flag : "CPU features";
      if (user != nullptr) why += std::string(", over OPENBLAS_CORETYPE=") + user;
    } else if (flag != nullptr) {
      // Asked for, and already loaded: an inherited OPENBLAS_CORETYPE that happens to name the
      // kernel the flag wants is not the user's choice.
      why = std::string("--blas-core ") + flag + " (already the kernel in use)";
    } else if (user != nullptr) {
      why = std::string("the user (OPENBLAS_CORETYPE=") + user + ")";
    }
  }
  if (core) setenv("OPENBLAS_CORETYPE", core->c_str(), 1);
  if (cap) cap_peer_libraries(*cap);
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

int64_t largest_cache_bytes(std::string_view caches) {
  int64_t best = 0;
  size_t at = 0;
  while ((at = caches.find(' ', at)) != std::string_view::npos) {
    ++at;
    const size_t end = std::min(caches.find(',', at), caches.size());
    best = std::max(best, parse_cache_size(std::string(caches.substr(at, end - at))));
  }
  return best;
}

int64_t last_level_cache_bytes() {
  int64_t best = 0;
  for (int i = 0; i < 8; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i);
    best = std::max(best, parse_cache_size(read_line(dir + "/size")));
  }
  return best > 0 ? best : int64_t{32} << 20;
}

int64_t memory_available_bytes() { return meminfo_kib("MemAvailable") * 1024; }

CpuTimes cpu_times() {
  // "cpu  user nice system idle iowait irq softirq steal guest guest_nice" (guest time is
  // counted in user already).
  std::ifstream in("/proc/stat");
  std::string name;
  CpuTimes t;
  if (!(in >> name) || name != "cpu") return t;
  int64_t v[8] = {};
  for (int64_t& x : v) {
    if (!(in >> x)) return t;
  }
  for (int64_t x : v) t.total += x;
  t.steal = v[7];
  return t;
}

double steal_share(const CpuTimes& before, const CpuTimes& after) {
  if (before.steal < 0 || after.steal < 0 || after.total <= before.total) return -1;
  return static_cast<double>(after.steal - before.steal) /
         static_cast<double>(after.total - before.total);
}

const CpuTimes& start_cpu_times() {
  static const CpuTimes kStart = cpu_times();
  return kStart;
}

void finish_system_info(SystemInfo& s) {
  s.blas = blas_info();
  s.steal_share = steal_share(start_cpu_times(), cpu_times());
}

SystemInfo system_info(const DeviceDescription& device) {
  start_cpu_times();
  SystemInfo s;
  s.isa_cap = isa_cap_note();
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
