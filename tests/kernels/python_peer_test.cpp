#include "baselines/python/python_peer.hpp"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <tuple>
#include <vector>

#include "moe_bench/correctness.hpp"
#include "moe_bench/dtype.hpp"
#include "moe_bench/grid.hpp"
#include "moe_bench/harness.hpp"
#include "moe_bench/presets.hpp"
#include "moe_bench/problem.hpp"

using namespace moe_bench;
namespace fs = std::filesystem;

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitizedBuild = true;
#else
constexpr bool kSanitizedBuild = false;
#endif

// This process's peer folders (other tests may run peers at the same time).
int peer_folders() {
  const std::string mine = "moe-bench-peer-" + std::to_string(getpid()) + "-";
  int n = 0;
  for (const auto& e : fs::directory_iterator(fs::temp_directory_path())) {
    n += e.path().filename().string().rfind(mine, 0) == 0;
  }
  return n;
}

// A stand-in interpreter: answers the import probe, then does what `body` says.
std::string fake_interpreter(const std::string& name, const std::string& body) {
  const fs::path path = fs::temp_directory_path() / ("moe_bench_fake_" + name + ".sh");
  std::ofstream(path) << "#!/bin/sh\nif [ \"$1\" = \"-c\" ]; then exit 0; fi\n" << body << "\n";
  fs::permissions(path, fs::perms::owner_all);
  return path.string();
}

Result run_peer_case(const std::string& impl, int reps = 3) {
  Case c;
  c.shape.experts = 4;
  c.shape.d_model = 16;
  c.shape.d_ff = 8;
  c.shape.tokens = 3;
  c.threads = 1;
  HarnessOptions o;
  o.reps = reps;
  o.min_time_s = 0;
  o.max_time_s = 0.2;
  o.baselines.clear();
  o.make = [](std::string_view name) {
    return name == "numpy" ? python::make_numpy_kernel() : python::make_torch_kernel();
  };
  Report report;
  run_cases({c}, {impl}, o, report);
  REQUIRE(report.results.size() == 1);
  return report.results[0];
}

}  // namespace

TEST_CASE("the Python peers match the oracle on small shapes") {
  for (auto make :
       {python::make_numpy_kernel, python::make_torch_kernel, python::make_ipex_kernel}) {
    auto kernel = make();
    if (auto why = kernel->unavailable_reason()) {
      WARN("skipped " << kernel->info().name << ": " << *why);
      continue;
    }
    for (Dtype dtype : {Dtype::kF32, Dtype::kBF16, Dtype::kF16}) {
      const auto grid = consistency_grid();
      if (auto why = kernel->can_run(grid[0].shape, dtype)) {
        // Only 16-bit dtypes may be refused, and always with a reason.
        CHECK(dtype != Dtype::kF32);
        CHECK_FALSE(why->empty());
        WARN(kernel->info().name << " skips " << to_string(dtype) << ": " << *why);
        continue;
      }
      int checked = 0;
      for (size_t i = 0; i < grid.size(); ++i) {
        const NamedShape& ns = grid[i];
        if (ns.shape.d_model > 256) continue;  // keep process start-ups and files small
        if (i % (dtype == Dtype::kF32 ? 3 : 6) != 0) continue;  // each run starts a process
        if (kernel->can_run(ns.shape, dtype)) continue;         // options the peer lacks (ipex)
        INFO(kernel->info().name << " on " << ns.name << " in " << to_string(dtype));
        Problem p = make_problem(ns.shape, dtype, 1);
        Oracle oracle(p);
        kernel->prepare(p, 1);
        kernel->run(0);
        Correctness c = oracle.check(kernel->output(), kernel->selected_experts(),
                                     kernel->extra_roundings(ns.shape, dtype));
        CHECK(c.pass);
        CHECK(c.selection_mismatches == 0);
        for (float v : kernel->output()) CHECK(round_to(dtype, v) == v);
        ++checked;
      }
      CHECK(checked >= (dtype == Dtype::kF32 ? 2 : 1));
    }
  }
}

TEST_CASE("the ipex peer refuses the options its fused MoE lacks, with the reason") {
  auto kernel = python::make_ipex_kernel();
  Shape s = consistency_grid()[0].shape;
  s.activation = Activation::kGelu;
  CHECK_THAT(kernel->can_run(s, Dtype::kF32).value_or(""), Catch::Contains("only SwiGLU experts"));
  s = consistency_grid()[0].shape;
  s.capacity_factor = 1.25;
  CHECK_THAT(kernel->can_run(s, Dtype::kF32).value_or(""), Catch::Contains("no expert capacity"));
  s = consistency_grid()[0].shape;
  s.shared_experts = 1;
  s.d_ff_shared = s.d_ff;
  CHECK_THAT(kernel->can_run(s, Dtype::kF32).value_or(""), Catch::Contains("no shared experts"));
  CHECK_THAT(kernel->can_run(consistency_grid()[0].shape, Dtype::kF16).value_or(""),
             Catch::Contains("f32 and bf16"));
}

TEST_CASE("the hf peer runs the blocks transformers has and says why not for the others") {
  auto kernel = python::make_hf_kernel();
  CHECK_FALSE(kernel->can_run(find_preset("mixtral-8x7b").shape, Dtype::kF32).has_value());
  CHECK_FALSE(kernel->can_run(find_preset("gpt-oss-20b").shape, Dtype::kBF16).has_value());
  CHECK_FALSE(kernel->can_run(find_preset("deepseek-v3").shape, Dtype::kF32).has_value());
  CHECK_THAT(kernel->can_run(find_preset("switch-base-8").shape, Dtype::kF32).value_or(""),
             Catch::Contains("no Hugging Face block computes this routing"));
  Shape skewed = find_preset("deepseek-v3").shape;
  skewed.skew = parse_skew("zipf:1.2");
  CHECK_THAT(kernel->can_run(skewed, Dtype::kF32).value_or(""),
             Catch::Contains("has no logit bias in its router"));
  Shape gelu = consistency_grid()[0].shape;
  gelu.activation = Activation::kGelu;
  CHECK_THAT(kernel->can_run(gelu, Dtype::kF32).value_or(""),
             Catch::Contains("the mixtral block of transformers has swiglu experts only"));
}

TEST_CASE("the torch peer in 16-bit is allowed its extra roundings, and none in f32") {
  auto kernel = python::make_torch_kernel();
  Shape s = consistency_grid()[0].shape;
  s.top_k = 2;
  CHECK(kernel->extra_roundings(s, Dtype::kF32) == 0);
  CHECK(kernel->extra_roundings(s, Dtype::kBF16) == 7);
  s.top_k = 8;
  CHECK(kernel->extra_roundings(s, Dtype::kBF16) == 13);
  CHECK(python::make_numpy_kernel()->extra_roundings(s, Dtype::kF32) == 0);
}

TEST_CASE("the torch peer runs int8 and q4 weights through PyTorch's weight-only kernels") {
  auto kernel = python::make_torch_kernel();
  if (auto why = kernel->unavailable_reason()) {
    WARN("skipped: " << *why);
    return;
  }
  Shape shared = make_shape(8, 2, 96, 64, 17);
  shared.shared_experts = 2;
  shared.d_ff_shared = 32;
  Shape gelu = make_shape(4, 1, 64, 160, 4);
  gelu.activation = Activation::kGelu;
  // Routed and shared experts, SwiGLU and GELU, each format in f32 and bf16 once.
  const std::vector<std::tuple<WeightFormat, Dtype, Shape>> cases{
      {WeightFormat::kInt8, Dtype::kF32, make_shape(4, 2, 64, 96, 5)},
      {WeightFormat::kInt8, Dtype::kBF16, shared},
      {WeightFormat::kQ4, Dtype::kF32, gelu},
      {WeightFormat::kQ4, Dtype::kBF16, shared}};
  for (auto [format, dtype, shape] : cases) {
    shape.weights = format;
    INFO(to_string(format) << " in " << to_string(dtype));
    if (auto why = kernel->refuses(shape, dtype)) {
      // An older PyTorch (Debian's 1.13) lacks the kernels: refused, naming the one missing.
      CHECK_THAT(*why, Catch::Contains("has no CPU weight-only kernel"));
      WARN("torch skips " << to_string(format) << ": " << *why);
      continue;
    }
    const Problem p = make_problem(shape, dtype, 3);
    kernel->prepare(p, 1);
    kernel->run(0);
    const Correctness c = Oracle(p).check(kernel->output(), kernel->selected_experts(),
                                          kernel->extra_roundings(shape, dtype));
    CHECK(c.pass);
    CHECK(c.selection_mismatches == 0);
  }
  // In 16-bit the scales are rounded to the dtype: one rounding more than unquantized.
  Shape s = make_shape(8, 2, 64, 32, 1);
  const int unquantized = kernel->extra_roundings(s, Dtype::kBF16);
  s.weights = WeightFormat::kQ4;
  CHECK(kernel->extra_roundings(s, Dtype::kBF16) == unquantized + 1);
  CHECK(kernel->extra_roundings(s, Dtype::kF32) == 0);
}

TEST_CASE("NumPy refuses 16-bit dtypes with the reason") {
  auto kernel = python::make_numpy_kernel();
  const Shape s = consistency_grid()[0].shape;
  CHECK_FALSE(kernel->can_run(s, Dtype::kF32).has_value());
  const auto why = kernel->can_run(s, Dtype::kBF16);
  REQUIRE(why.has_value());
  CHECK_THAT(*why, Catch::Contains("no bfloat16"));
}

TEST_CASE("a peer too slow for the case's budget is skipped with its time per call, once checked") {
  if (access("/usr/bin/python3", X_OK) != 0 ||
      std::system("/usr/bin/python3 -c 'import numpy' 2>/dev/null") != 0) {
    WARN("skipped: /usr/bin/python3 with numpy is not installed");
    return;
  }
  const int folders_before = peer_folders();
  python::set_interpreter("/usr/bin/python3");
  // A million samples of even a microsecond each exceed the 0.2 s budget: skipped, not failed,
  // and the output of its calls was still checked against the oracle.
  Result slow = run_peer_case("numpy", 1'000'000);
  CHECK(slow.status == Status::kSkipped);
  CHECK_THAT(slow.reason, Catch::Contains("numpy in f32 takes") &&
                              Catch::Contains("s per call on this CPU; 1000000 samples exceed "
                                              "the 0.2 s budget"));
  REQUIRE(slow.correctness.has_value());
  CHECK(slow.correctness->pass);
  CHECK(slow.samples_s.empty());
  // Too slow and wrong: a failure, as any wrong output is.
  python::set_interpreter(fake_interpreter(
      "slow_and_wrong",
      "exec /usr/bin/python3 -c \"import numpy as np, json, sys, os; d = sys.argv[1]; "
      "c = json.load(open(os.path.join(d, 'case.json'))); "
      "np.save(os.path.join(d, 'y.npy'), np.full((c['tokens'], c['d_model']), 7, np.float32)); "
      "np.save(os.path.join(d, 'selected.npy'), np.zeros((c['tokens'], c['top_k']), np.int32)); "
      "json.dump({'samples_s': [], 'inner_reps': 0, 'versions': {}, 'too_slow': 'takes 9 s'}, "
      "open(os.path.join(d, 'samples.json'), 'w'))\" \"$2\""));
  Result wrong = run_peer_case("numpy");
  CHECK(wrong.status == Status::kFailed);
  CHECK_THAT(wrong.reason, Catch::Contains("differs from the FP64 oracle"));
  python::set_interpreter("/usr/bin/python3");
  CHECK(peer_folders() == folders_before);
}

TEST_CASE("a peer that crashes, hangs or returns a wrong shape gives a clear failed result",
          "[serial]") {
  const int folders_before = peer_folders();
  python::set_startup_allowance(1.0);

  python::set_interpreter(
      fake_interpreter("crash", "echo 'Segmentation fault in fake peer' >&2\nexit 3"));
  Result crash = run_peer_case("numpy");
  CHECK(crash.status == Status::kFailed);
  CHECK_THAT(crash.reason, Catch::Contains("exited with code 3") &&
                               Catch::Contains("Segmentation fault in fake peer"));

  python::set_interpreter(fake_interpreter("hang", "sleep 30"));
  Result hang = run_peer_case("torch");
  CHECK(hang.status == Status::kFailed);
  CHECK_THAT(hang.reason, Catch::Contains("timed out"));

  if (access("/usr/bin/python3", X_OK) == 0 &&
      std::system("/usr/bin/python3 -c 'import numpy' 2>/dev/null") == 0) {
    python::set_interpreter(fake_interpreter(
        "wrong_shape",
        "exec /usr/bin/python3 -c \"import numpy as np, json, sys, os; d = sys.argv[1]; "
        "np.save(os.path.join(d, 'y.npy'), np.zeros((1, 1), np.float32)); "
        "np.save(os.path.join(d, 'selected.npy'), np.zeros((1, 1), np.int32)); "
        "json.dump({'samples_s': [1e-3], 'inner_reps': 1, 'versions': {}}, "
        "open(os.path.join(d, 'samples.json'), 'w'))\" \"$2\""));
    Result wrong = run_peer_case("numpy");
    CHECK(wrong.status == Status::kFailed);
    CHECK_THAT(wrong.reason, Catch::Contains("returned shapes (1, 1)"));
  }

  python::set_interpreter("/usr/bin/python3");
  python::set_startup_allowance(120);
  // Every peer folder was removed, on failure too.
  CHECK(peer_folders() == folders_before);
}
