#include "python_peer.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "npy.hpp"

extern char** environ;

namespace moe_bench::python {
namespace {

namespace fs = std::filesystem;

// The Hugging Face transformers block that computes a shape: the preset's family, else by routing
// (softmax top-k renormalised: Mixtral's; not renormalised: OLMoE's); empty where none does.
std::string hf_family(const Shape& s) {
  for (const char* family : {"mixtral", "qwen3", "olmoe", "deepseek-v3", "gpt-oss"}) {
    if (s.preset.starts_with(family)) return family;
  }
  if (!s.preset.empty() || s.routing.scoring != Scoring::kSoftmax || s.routing.groups > 0 ||
      s.routing.selection_bias || s.routing.scale != 1.0) {
    return {};
  }
  return s.routing.renormalize ? "mixtral" : "olmoe";
}

std::optional<std::string> hf_supports(const Shape& s) {
  const std::string family = hf_family(s);
  if (family.empty()) {
    return fmt::format("no Hugging Face block computes this routing{}",
                       s.preset.empty() ? "" : " (preset " + s.preset + ")");
  }
  const Activation act = family == "gpt-oss" ? Activation::kSwigluOai : Activation::kSwiglu;
  const std::string block = fmt::format("the {} block of transformers", family);
  if (s.activation != act) return fmt::format("{} has {} experts only", block, to_string(act));
  if (s.capacity_factor > 0) return block + " has no expert capacity";
  if (family == "deepseek-v3") {
    if (s.skew.kind != Skew::Kind::kUniform) {
      return block + " has no logit bias in its router for a routing skew";
    }
    if (s.shared_width() == 0 || s.shared_width() % s.d_ff != 0) {
      return block + " has shared experts a whole multiple of the expert width only";
    }
  } else if (s.shared_width() > 0) {
    return block + " has no shared experts";
  }
  return std::nullopt;
}

std::string default_interpreter() {
  if (const char* env = std::getenv("MOE_BENCH_PYTHON")) return env;
  // The venv scripts/install-peers.sh makes: the peers people run, found without a flag once
  // the script has finished (it writes the marker last).
  if (const char* home = std::getenv("HOME")) {
    const std::string venv = std::string(home) + "/.cache/moe-bench/peers";
    if (access((venv + "/moe-bench-peers.ok").c_str(), R_OK) == 0 &&
        access((venv + "/bin/python").c_str(), X_OK) == 0) {
      return venv + "/bin/python";
    }
  }
  if (access("/usr/bin/python3", X_OK) == 0) return "/usr/bin/python3";
  return "python3";
}

std::string& interpreter_setting() {
  static std::string path = default_interpreter();
  return path;
}

struct Exit {
  int code = -1;
  bool timed_out = false;
  int signal = 0;
};

double& startup_allowance() {
  static double seconds = 120;
  return seconds;
}

// Runs argv with stdout and stderr into `log`, killing it after `timeout_s`. `threads`, when
// positive, caps every BLAS and OpenMP pool of the child at that many threads, as moe-bench's own.
Exit run_process(const std::vector<std::string>& args, const fs::path& log, double timeout_s,
                 int threads = 0) {
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view v(*e);
    if (threads > 0 &&
        (v.starts_with("OMP_NUM_THREADS=") || v.starts_with("OPENBLAS_NUM_THREADS=") ||
         v.starts_with("MKL_NUM_THREADS="))) {
      continue;
    }
    env_strings.emplace_back(v);
  }
  if (threads > 0) {
    for (const char* name : {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"}) {
      env_strings.push_back(fmt::format("{}={}", name, threads));
    }
  }
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid = 0;
  const int err = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  Exit out;
  if (err != 0) return out;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      out.timed_out = true;
      return out;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (WIFEXITED(status)) out.code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) out.signal = WTERMSIG(status);
  return out;
}

// PyTorch reaches a GPU through NVIDIA's driver: without its device nodes (or WSL's /dev/dxg)
// no import of torch can find one, so a GPU peer says so without spending seconds on the import.
bool nvidia_driver_present() {
  for (const char* node : {"/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/dxg"}) {
    std::error_code ec;
    if (fs::exists(node, ec)) return true;
  }
  return false;
}

std::string last_line(const fs::path& log) {
  std::ifstream in(log);
  std::string line, last;
  while (std::getline(in, line)) {
    if (!line.empty()) last = line;
  }
  return last.empty() ? "no output" : last;
}

// A private folder for one case's files, removed on every way out (failure and Ctrl-C included:
// SIGINT only sets a flag in moe-bench, so destructors run). Named by this process's id, so that
// the folders of one process can be told from those of others running at the same time.
class TempDir {
 public:
  TempDir() {
    std::string pattern =
        (fs::temp_directory_path() / fmt::format("moe-bench-peer-{}-XXXXXX", getpid())).string();
    if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("cannot create a temp folder");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

/// What probing an interpreter found: why the peer cannot run at all, or which of its dtypes this
/// version of the package cannot compute in (dtype name -> reason).
struct Probe {
  std::optional<std::string> why;
  std::map<std::string, std::string> unsupported;
};

class PythonPeer final : public Kernel {
 public:
  /// `probe` is Python run with -c: it imports the package and prints a line
  /// "unsupported DTYPE REASON" for each of `dtypes` the installed version cannot compute in.
  using RoundingsFn = int (*)(const Shape&, Dtype);
  using SupportsFn = std::optional<std::string> (*)(const Shape&);
  PythonPeer(std::string name, std::string module, std::string description,
             std::vector<Dtype> dtypes, std::string no_dtype_reason, std::string probe,
             RoundingsFn roundings = nullptr, SupportsFn supports = nullptr,
             std::string package = {}, std::vector<std::string> script_args = {},
             bool on_gpu = false)
      : on_gpu_(on_gpu),
        script_args_(std::move(script_args)),
        roundings_(roundings),
        supports_(supports),
        package_(package.empty() ? module : std::move(package)),
        name_(std::move(name)),
        module_(std::move(module)),
        description_(std::move(description)),
        dtypes_(std::move(dtypes)),
        no_dtype_reason_(std::move(no_dtype_reason)),
        probe_(std::move(probe)) {}

  /// The peer process loads its own copy of the weights.
  KernelInfo info() const override {
    KernelInfo i{name_, "python", dtypes_, description_, 1};
    i.weights = weights_;
    return i;
  }

  /// The weight formats the script takes besides the unquantized one: for each, the probe prints
  /// "unsupported FORMAT REASON" where the installed package lacks what it needs.
  PythonPeer& with_weights(std::vector<WeightFormat> formats) {
    weights_ = std::move(formats);
    return *this;
  }

  std::optional<std::string> unavailable_reason() const override { return probe().why; }

  std::optional<std::string> can_run(const Shape& shape, Dtype dtype) const override {
    if (std::find(dtypes_.begin(), dtypes_.end(), dtype) == dtypes_.end()) return no_dtype_reason_;
    if (supports_ != nullptr) {
      if (auto why = supports_(shape)) return why;
    }
    const Probe& found = probe();
    for (std::string_view key : {to_string(dtype), to_string(shape.weights)}) {
      auto it = found.unsupported.find(std::string(key));
      if (it != found.unsupported.end()) return it->second;
    }
    return std::nullopt;
  }

  bool self_timed() const override { return true; }
  /// A peer on the GPU times its calls with CUDA events: its results are held to the device's
  /// ceilings.
  bool device_timed() const override { return on_gpu_; }
  int extra_roundings(const Shape& s, Dtype d) const override {
    return roundings_ != nullptr ? roundings_(s, d) : 0;
  }

  void prepare(const Problem& p, int threads) override {
    problem_ = &p;
    threads_ = threads;
    dir_ = std::make_unique<TempDir>();
    const Shape& s = p.shape;
    const LayerWeights& w = p.layers[0];
    const fs::path& d = dir_->path();
    const int64_t T = s.tokens, E = s.experts, D = s.d_model, F = s.d_ff, FS = s.shared_width();
    write_npy(d / "x.npy", p.x.data(), {T, D});
    write_npy(d / "wg.npy", w.wg.data(), {E, D});
    write_npy(d / "logit_bias.npy", w.logit_bias.data(), {E});
    write_npy(d / "selection_bias.npy", w.selection_bias.data(), {E});
    if (s.weights == WeightFormat::kSame) {
      write_npy(d / "w1.npy", w.w1.data(), {E, F, D});
      if (!w.w3.empty()) write_npy(d / "w3.npy", w.w3.data(), {E, F, D});
      write_npy(d / "w2.npy", w.w2.data(), {E, D, F});
      if (FS > 0) {
        write_npy(d / "ws1.npy", w.ws1.data(), {FS, D});
        if (!w.ws3.empty()) write_npy(d / "ws3.npy", w.ws3.data(), {FS, D});
        write_npy(d / "ws2.npy", w.ws2.data(), {D, FS});
      }
      return;
    }
    // Quantized: the stored format only, codes [rows, cols] and scales ([rows] for int8, [rows,
    // cols / 32] for q4), the routed experts' with their leading expert dimension (`experts`; 0 for
    // the shared experts, which have none).
    const auto write_quant = [&](const char* name, const QuantMatrix& q, int64_t experts) {
      if (q.empty()) return;
      const int64_t rows = q.rows / std::max<int64_t>(experts, 1);
      std::vector<int64_t> dims{rows, q.cols};
      std::vector<int64_t> scale_dims{rows};
      if (s.weights == WeightFormat::kQ4) scale_dims.push_back(q.cols / kQ4Group);
      if (experts > 0) {
        dims.insert(dims.begin(), experts);
        scale_dims.insert(scale_dims.begin(), experts);
      }
      write_npy(d / fmt::format("{}_codes.npy", name), q.codes.data(), dims);
      write_npy(d / fmt::format("{}_scales.npy", name), q.scales.data(), scale_dims);
    };
    write_quant("w1", w.q1, E);
    write_quant("w3", w.q3, E);
    write_quant("w2", w.q2, E);
    write_quant("ws1", w.qs1, 0);
    write_quant("ws3", w.qs3, 0);
    write_quant("ws2", w.qs2, 0);
  }

  /// One untimed call (a correctness check): one layer, no rotation.
  void run(int64_t) override { run_peer(TimingProtocol{1, 0, 1e9, 0, 0, threads_}, 1); }

  /// Timed runs rotate the case's cold layers, as the harness does.
  std::optional<SelfTimed> run_self_timed(const TimingProtocol& t) override {
    return run_peer(t, problem_->layers.size());
  }

  std::span<const float> output() const override { return y_; }
  std::span<const int32_t> selected_experts() const override { return selected_; }

 private:
  SelfTimed run_peer(const TimingProtocol& t, size_t layers) {
    const Shape& s = problem_->shape;
    const fs::path& d = dir_->path();
    nlohmann::json c{{"experts", s.experts},
                     {"top_k", s.top_k},
                     {"tokens", s.tokens},
                     {"d_model", s.d_model},
                     {"d_ff", s.d_ff},
                     {"shared_width", s.shared_width()},
                     {"activation", to_string(s.activation)},
                     {"dtype", to_string(problem_->dtype)},
                     {"weights", to_string(s.weights)},
                     {"capacity_factor", s.capacity_factor},
                     {"threads", t.threads},
                     {"layers", layers},
                     {"family", hf_family(s)},
                     {"router",
                      {{"scoring", to_string(s.routing.scoring)},
                       {"renormalize", s.routing.renormalize},
                       {"scale", s.routing.scale},
                       {"selection_bias", s.routing.selection_bias},
                       {"groups", s.routing.groups},
                       {"topk_groups", s.routing.topk_groups}}},
                     {"timing",
                      {{"reps", t.reps},
                       {"min_time_s", t.min_time_s},
                       {"max_time_s", t.max_time_s},
                       {"min_sample_s", t.min_sample_s},
                       {"warmup", t.warmup}}}};
    std::ofstream(d / "case.json") << c.dump();
    fs::remove(d / "samples.json");
    const fs::path script = fs::path(scripts_dir()) / (module_ + "_moe.py");
    // Start-up and data loading take seconds; sampling stops at max_time.
    const double timeout = startup_allowance() + 3 * std::min(t.max_time_s, 600.0);
    std::vector<std::string> args{interpreter(), script.string(), d.string()};
    args.insert(args.end(), script_args_.begin(), script_args_.end());
    const Exit e = run_process(args, d / "peer.log", timeout, t.threads);
    if (e.timed_out)
      throw std::runtime_error(fmt::format("{} peer timed out after {:.0f} s", name_, timeout));
    if (e.code != 0) {
      throw std::runtime_error(fmt::format(
          "{} peer exited with {}: {}", name_,
          e.signal ? fmt::format("signal {}", e.signal) : fmt::format("code {}", e.code),
          last_line(d / "peer.log")));
    }
    const int64_t T = s.tokens, D = s.d_model, K = s.top_k;
    NpyArray y = read_npy(d / "y.npy", "<f4");
    NpyArray sel = read_npy(d / "selected.npy", "<i4");
    if (y.shape != std::vector<int64_t>{T, D} || sel.shape != std::vector<int64_t>{T, K}) {
      throw std::runtime_error(
          fmt::format("{} peer returned shapes ({}) and ({}), not ({}, {}) and "
                      "({}, {})",
                      name_, fmt::join(y.shape, ", "), fmt::join(sel.shape, ", "), T, D, T, K));
    }
    y_.resize(static_cast<size_t>(T * D));
    std::memcpy(y_.data(), y.bytes.data(), y.bytes.size());
    selected_.resize(static_cast<size_t>(T * K));
    std::memcpy(selected_.data(), sel.bytes.data(), sel.bytes.size());
    std::ifstream in(d / "samples.json");
    const nlohmann::json r = nlohmann::json::parse(in);
    SelfTimed out;
    out.samples_s = r.at("samples_s").get<std::vector<double>>();
    out.inner_reps = r.at("inner_reps");
    out.setup_s = r.value("setup_s", 0.0);
    if (r.contains("too_slow") && r.at("too_slow").is_string()) out.too_slow = r.at("too_slow");
    std::string notes;
    for (const auto& [k, v] : r.at("versions").items()) {
      notes += fmt::format("{}{} {}", notes.empty() ? "" : ", ", k,
                           v.is_string() ? v.get<std::string>() : v.dump());
    }
    out.notes = notes;
    return out;
  }

  // Probed once per interpreter and package: importing torch takes seconds.
  const Probe& probe() const {
    static std::mutex mutex;
    static std::map<std::string, Probe> cache;
    std::lock_guard lock(mutex);
    const std::string key = interpreter() + "|" + name_;
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
    Probe found;
    if (on_gpu_ && !nvidia_driver_present()) {
      found.why = "no NVIDIA driver on this machine (no /proc/driver/nvidia, /dev/nvidiactl or "
                  "/dev/dxg)";
      return cache[key] = found;
    }
    TempDir dir;
    const fs::path log = dir.path() / "probe.log";
    const Exit e = run_process({interpreter(), "-c", probe_}, log, 120);
    if (e.code != 0) {
      found.why =
          e.code == 127 || (e.code < 0 && !e.timed_out)
              ? fmt::format("no Python interpreter at '{}' (pass --python PATH)", interpreter())
              : fmt::format("{} cannot import {} ({}); {}", interpreter(), package_, last_line(log),
                            install_hint());
    } else {
      std::ifstream in(log);
      std::string line;
      while (std::getline(in, line)) {
        // "unavailable REASON": the package imports, but this machine cannot run the peer.
        if (line.starts_with("unavailable ")) found.why = line.substr(12);
        if (!line.starts_with("unsupported ")) continue;
        const auto space = line.find(' ', 12);
        if (space == std::string::npos) continue;
        found.unsupported[line.substr(12, space - 12)] = line.substr(space + 1);
      }
    }
    return cache[key] = found;
  }

  std::string install_hint() const {
    if (package_ == "numpy" || package_ == "torch") {
      return fmt::format("install python3-{}, run scripts/install-peers.sh or pass --python",
                         package_);
    }
    return "run scripts/install-peers.sh or pass --python";
  }

  bool on_gpu_;
  std::vector<std::string> script_args_;
  RoundingsFn roundings_;
  SupportsFn supports_;
  std::string package_;
  std::string name_, module_, description_;
  std::vector<Dtype> dtypes_;
  std::vector<WeightFormat> weights_{WeightFormat::kSame};
  std::string no_dtype_reason_, probe_;
  const Problem* problem_ = nullptr;
  int threads_ = 1;
  std::unique_ptr<TempDir> dir_;
  std::vector<float> y_;
  std::vector<int32_t> selected_;
};

// What Intel Extension for PyTorch's GatedMLPMOE computes: SwiGLU experts routed by softmax and
// top-k (renormalised or not), without shared experts, capacity or other scorings.
std::optional<std::string> ipex_supports(const Shape& s) {
  const char* missing = s.activation != Activation::kSwiglu      ? "only SwiGLU experts"
                        : s.shared_width() > 0                   ? "no shared experts"
                        : s.capacity_factor > 0                  ? "no expert capacity"
                        : s.routing.scoring != Scoring::kSoftmax ? "only softmax scoring"
                        : s.routing.selection_bias               ? "no selection bias"
                        : s.routing.groups > 0                   ? "no grouped top-k here"
                        : s.routing.scale != 1.0                 ? "no routed scaling factor"
                                                                 : nullptr;
  if (missing == nullptr) return std::nullopt;
  return fmt::format("Intel Extension for PyTorch's GatedMLPMOE has {} (this case needs it)",
                     missing);
}

}  // namespace

void set_interpreter(std::string path) { interpreter_setting() = std::move(path); }
void set_startup_allowance(double seconds) { startup_allowance() = seconds; }
const std::string& interpreter() { return interpreter_setting(); }

std::unique_ptr<Kernel> make_numpy_kernel() {
  return std::make_unique<PythonPeer>(
      "numpy", "numpy",
      "NumPy as users write it: router matmul, softmax, top-k, loop over experts with gather, "
      "SwiGLU, scatter-add (subprocess, .npy exchange)",
      std::vector<Dtype>{Dtype::kF32},
      "the NumPy peer runs f32 only: NumPy has no bfloat16 type, and its float16 matmul has no "
      "BLAS kernel",
      "import numpy");
}

// The Hugging Face block in a 16-bit dtype rounds, beyond the semantics: gate, up and the
// activation before the product (3), the expert output, the routing weight and their product (3),
// each of the k - 1 later index_add_ into the output, and the shared experts' output and its add.
// PyTorch's weight-only kernels take the scales in the activations' dtype: with quantized weights
// each scale is rounded once more.
int hf_block_roundings(const Shape& s, Dtype d) {
  if (d == Dtype::kF32) return 0;
  return 6 + static_cast<int>(s.top_k - 1) + (s.shared_width() > 0 ? 2 : 0) +
         (s.weights != WeightFormat::kSame ? 1 : 0);
}

std::unique_ptr<Kernel> make_torch_kernel() {
  auto peer = std::make_unique<PythonPeer>(
      "torch", "torch",
      "PyTorch as the Hugging Face Mixtral block: router linear, softmax, top-k, loop over "
      "experts with index_select, SwiGLU, index_add_ (inference mode, subprocess; 16-bit "
      "dtypes as users run it: experts, activation and combine in the dtype, router in FP32)",
      std::vector<Dtype>{Dtype::kF32, Dtype::kBF16, Dtype::kF16}, "",
      "import torch\n"
      "for name, t in (('bf16', torch.bfloat16), ('f16', torch.float16)):\n"
      "    try:\n"
      "        a = torch.ones(2, 2, dtype=t)\n"
      "        a @ a\n"
      "    except Exception as e:\n"
      "        print('unsupported', name, 'torch', torch.__version__, 'has no', t,\n"
      "              'matmul on the CPU:', str(e).replace(chr(10), ' '))\n"
      "for name, op in (('int8', '_weight_int8pack_mm'), ('q4', '_weight_int4pack_mm_for_cpu')):\n"
      "    if not hasattr(torch.ops.aten, op):\n"
      "        print('unsupported', name, 'torch', torch.__version__, 'has no CPU weight-only',\n"
      "              'kernel torch.ops.aten.' + op, '(PyTorch 2.8 has: "
      "scripts/install-peers.sh)')\n",
      hf_block_roundings);
  // PyTorch's own CPU weight-only kernels run the quantized formats (torch_moe.py).
  peer->with_weights({WeightFormat::kSame, WeightFormat::kInt8, WeightFormat::kQ4});
  return peer;
}

// Probes torch on the GPU: unavailable without a CUDA device; with `grouped`, each dtype the
// installed torch._grouped_mm refuses on this device is unsupported.
std::string torch_cuda_probe(bool grouped) {
  std::string probe =
      "import torch, sys\n"
      "if not torch.cuda.is_available():\n"
      "    print('unavailable torch', torch.__version__, 'sees no CUDA device'); sys.exit(0)\n";
  if (grouped) {
    probe +=
        "if not hasattr(torch, '_grouped_mm'):\n"
        "    print('unavailable torch', torch.__version__, 'has no torch._grouped_mm'); "
        "sys.exit(0)\n"
        "for name, t in (('f32', torch.float32), ('bf16', torch.bfloat16), "
        "('f16', torch.float16)):\n"
        "    try:\n"
        "        a = torch.ones(32, 16, dtype=t, device='cuda')\n"
        "        b = torch.ones(2, 32, 16, dtype=t, device='cuda').transpose(1, 2)\n"
        "        offs = torch.tensor([16, 32], dtype=torch.int32, device='cuda')\n"
        "        torch._grouped_mm(a, b, offs=offs); torch.cuda.synchronize()\n"
        "    except Exception as e:\n"
        "        print('unsupported', name, 'torch', torch.__version__,\n"
        "              'has no', t, 'torch._grouped_mm on this device:',\n"
        "              str(e).split(chr(10))[0])\n";
  }
  return probe;
}

// torch._grouped_mm reads rows of 16 bytes or a multiple: d_model and d_ff a multiple of 8.
std::optional<std::string> grouped_mm_supports(const Shape& s) {
  if (s.d_model % 8 != 0 || s.d_ff % 8 != 0) {
    return "torch._grouped_mm needs d_model and d_ff in multiples of 8 (16-byte rows)";
  }
  return std::nullopt;
}

std::unique_ptr<Kernel> make_torch_cuda_kernel() {
  return std::make_unique<PythonPeer>(
      "torch_cuda", "torch",
      "PyTorch on the GPU as the Hugging Face Mixtral block: router linear, softmax, top-k, "
      "loop over experts with index_select, SwiGLU, index_add_ (CUDA events; 16-bit dtypes as "
      "users run it, router in FP32; subprocess)",
      std::vector<Dtype>{Dtype::kF32, Dtype::kBF16, Dtype::kF16}, "", torch_cuda_probe(false),
      hf_block_roundings, nullptr, "torch", std::vector<std::string>{"--device", "cuda"}, true);
}

std::unique_ptr<Kernel> make_torch_grouped_mm_kernel() {
  return std::make_unique<PythonPeer>(
      "torch_grouped_mm", "torch",
      "PyTorch on the GPU with torch._grouped_mm: tokens sorted by expert, gate, up and down as "
      "three grouped GEMMs, SwiGLU and index_add_ combine in the dtype (CUDA events; "
      "subprocess)",
      std::vector<Dtype>{Dtype::kF32, Dtype::kBF16, Dtype::kF16}, "", torch_cuda_probe(true),
      hf_block_roundings, grouped_mm_supports, "torch",
      std::vector<std::string>{"--device", "cuda", "--grouped-mm"}, true);
}

std::unique_ptr<Kernel> make_ipex_kernel() {
  return std::make_unique<PythonPeer>(
      "ipex", "ipex",
      "Intel Extension for PyTorch's fused MoE (ipex.llm.modules.GatedMLPMOE, what vLLM's CPU "
      "backend runs): weights prepacked once, routing fused (subprocess)",
      std::vector<Dtype>{Dtype::kF32, Dtype::kBF16},
      "Intel Extension for PyTorch's fused MoE runs f32 and bf16",
      // Finding the package is enough: importing it takes seconds (a broken install then fails
      // its results with the reason).
      "import importlib.util, sys\n"
      "sys.exit(0 if importlib.util.find_spec('intel_extension_for_pytorch') else "
      "'No module named intel_extension_for_pytorch')\n",
      nullptr, ipex_supports, "intel_extension_for_pytorch");
}

std::unique_ptr<Kernel> make_hf_kernel() {
  return std::make_unique<PythonPeer>(
      "hf", "hf",
      "the model family's own Hugging Face transformers block (Mixtral, Qwen3-MoE, OLMoE, "
      "DeepSeek-V3, GPT-OSS) loaded with the case's weights, router in FP32 (subprocess)",
      std::vector<Dtype>{Dtype::kF32, Dtype::kBF16}, "the hf peer runs f32 and bf16",
      "import importlib.util, sys\n"
      "sys.exit(0 if importlib.util.find_spec('transformers') and importlib.util.find_spec('torch')"
      " else 'No module named transformers or torch')\n",
      hf_block_roundings, hf_supports, "transformers");
}

}  // namespace moe_bench::python
