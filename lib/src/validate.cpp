#include "moe_bench/validate.hpp"

#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <future>
#include <random>

#include "moe_bench/correctness.hpp"
#include "moe_bench/error.hpp"
#include "moe_bench/grid.hpp"
#include "moe_bench/kernel.hpp"
#include "moe_bench/plan.hpp"
#include "moe_bench/presets.hpp"
#include "moe_bench/problem.hpp"
#include "moe_bench/report.hpp"
#include "moe_bench/roofline.hpp"
#include "moe_bench/serving.hpp"
#include "moe_bench/sysinfo.hpp"

namespace moe_bench {
namespace {

// Each claim with the broadest class of machines it holds on (validate.hpp, README.md).
const std::array<Claim, 23> kClaims{{
    {"cpu is faster than blas on workload A at 1 token", "A", 1, "uniform", "cpu", "blas", true,
     "f32", MachineClass::kAvx2, ""},
    {"cpu is faster than blas on workload A at 32 tokens", "A", 32, "uniform", "cpu", "blas", true,
     "f32", MachineClass::kAvx2, ""},
    {"cpu is faster than blas on workload A at 512 tokens", "A", 512, "uniform", "cpu", "blas",
     false, "f32", MachineClass::kAvx2, ""},
    {"cpu is faster than blas on workload B at 16 tokens", "B", 16, "uniform", "cpu", "blas", true,
     "f32", MachineClass::kAvx2, ""},
    {"cpu is faster than blas on workload B at 1024 tokens", "B", 1024, "uniform", "cpu", "blas",
     false, "f32", MachineClass::kAvx2, ""},
    {"cpu is faster than blas on workload A at 1 token with zipf:1.2 routing", "A", 1, "zipf:1.2",
     "cpu", "blas", false, "f32", MachineClass::kAvx2, ""},
    {"cpu is faster than blas on workload A at 32 tokens with zipf:1.2 routing", "A", 32,
     "zipf:1.2", "cpu", "blas", false, "f32", MachineClass::kAvx2, ""},
    // Under --max-isa avx2 on a Zen 5 once too noisy to confirm (1.34x [0.84, 1.87]); confirmed
    // on an AMD EPYC Zen 3, AVX2 only (docs/claims.md).
    {"cpu is faster than blas on workload A at 512 tokens with zipf:1.2 routing", "A", 512,
     "zipf:1.2", "cpu", "blas", false, "f32", MachineClass::kAvx2, ""},
    {"cpu is faster than blas on workload B at 16 tokens with zipf:1.2 routing", "B", 16,
     "zipf:1.2", "cpu", "blas", false, "f32", MachineClass::kAvx2, ""},
    {"cpu is faster than blas on workload B at 1024 tokens with zipf:1.2 routing", "B", 1024,
     "zipf:1.2", "cpu", "blas", false, "f32", MachineClass::kAvx2, ""},
    {"cpu is faster than numpy on workload A at 32 tokens", "A", 32, "uniform", "cpu", "numpy",
     false, "f32", MachineClass::kAvx2, ""},
    {"cpu is faster than torch on workload A at 32 tokens", "A", 32, "uniform", "cpu", "torch",
     false, "f32", MachineClass::kAvx2, ""},
    {"cpu in bf16 is faster than cpu in f32 on workload A at 1 token", "A", 1, "uniform", "cpu",
     "cpu", true, "bf16", MachineClass::kAvx2, "f32"},
    // Decode reads the stored bytes: int8 a quarter of f32's, q4 about an eighth
    // (docs/quantization.md).
    {"cpu with int8 weights is faster than cpu with bf16 weights in bf16 on workload A at 1 token",
     "A", 1, "uniform", "cpu", "cpu", true, "bf16", MachineClass::kAvx2, "", "int8", "same"},
    // q4 is stated for AVX-512 only: on an AMD EPYC Zen 1 (AVX2 on 128-bit units) unpacking the
    // nibbles costs more than the bytes it saves, 0.83x [0.82, 0.85] (docs/claims.md).
    {"cpu with q4 weights is faster than cpu with bf16 weights in bf16 on workload A at 1 token",
     "A", 1, "uniform", "cpu", "cpu", false, "bf16", MachineClass::kAvx512, "", "q4", "same"},
    // int8 activations (docs/quantization.md). Where the CPU has VNNI, `cpu` holds bf16
    // activations as 15-bit integers for the same vpdpbusd, two a product where cpu_w8a8 takes
    // one: at one token both read at the memory's rate (on an AMD Zen 4, 1.05x and 1.10x), at 16
    // tokens (four rows an expert) the halved work shows (1.25x, 1.21x). Without VNNI `cpu`
    // widens each code to FP32: q4 1.73x on an AMD Zen 3 (AVX2) and 1.77x on an Intel Xeon
    // before `cpu` held integers; int8 gains only with VNNI, which every AVX512-BF16 CPU has
    // (on the Zen 3 it was 0.97x).
    {"cpu_w8a8 with q4 weights is faster than cpu with q4 weights in bf16 on workload A at 16 "
     "tokens",
     "A", 16, "uniform", "cpu_w8a8", "cpu", false, "bf16", MachineClass::kAvx2, "", "q4", "q4"},
    {"cpu_w8a8 with int8 weights is faster than cpu with int8 weights in bf16 on workload A at 16 "
     "tokens",
     "A", 16, "uniform", "cpu_w8a8", "cpu", false, "bf16", MachineClass::kAvx512Bf16, "", "int8",
     "int8"},
    // Measured on an AMD Zen 5 (vdpbf16ps), an Intel Xeon with AMX, and the same Xeon capped at
    // avx512_bf16 (oneDNN capped with it), the class of a Cooper Lake (docs/claims.md).
    {"cpu is faster than torch in bf16 on workload A at 512 tokens", "A", 512, "uniform", "cpu",
     "torch", false, "bf16", MachineClass::kAvx512Bf16, ""},
    {"cpu is faster than torch in bf16 on workload B at 1024 tokens", "B", 1024, "uniform", "cpu",
     "torch", false, "bf16", MachineClass::kAvx512Bf16, ""},
    // AMX tiles: cpu takes them for compute-bound bf16 cases (an Intel Xeon, docs/claims.md).
    {"cpu in bf16 is faster than cpu in f32 on workload A at 512 tokens", "A", 512, "uniform",
     "cpu", "cpu", false, "bf16", MachineClass::kAmx, "f32"},
    {"cpu is faster than ipex in bf16 on workload B at 1024 tokens", "B", 1024, "uniform", "cpu",
     "ipex", false, "bf16", MachineClass::kAmx, ""},
    {"cuda is faster than cublas in bf16 on workload A at 1 token", "A", 1, "uniform", "cuda",
     "cublas", true, "bf16", MachineClass::kNvidiaHopper, ""},
    {"cuda is faster than torch_grouped_mm in bf16 on workload A at 32 tokens", "A", 32, "uniform",
     "cuda", "torch_grouped_mm", false, "bf16", MachineClass::kNvidiaHopper, ""},
}};

// The consistency grid of the tests, each shape also under other routings and with capacity on
// and off.
std::vector<std::pair<std::string, Shape>> correctness_grid(ValidateLevel level) {
  const std::vector<std::string> skews =
      level == ValidateLevel::kQuick ? std::vector<std::string>{"uniform", "hot:0.6"}
                                     : std::vector<std::string>{"uniform", "zipf:1.2", "hot:0.6"};
  std::vector<std::pair<std::string, Shape>> out;
  for (const NamedShape& base : consistency_grid()) {
    out.push_back({base.name, base.shape});
    for (const auto& skew : skews) {
      for (double capacity : {0.0, 1.0}) {
        Shape s = base.shape;
        s.skew = parse_skew(skew);
        s.capacity_factor = capacity;
        if (s == base.shape) continue;
        out.push_back({fmt::format("{}, {}{}", base.name, skew,
                                   capacity > 0 ? fmt::format(", C={:g}", capacity) : ""),
                       s});
      }
    }
  }
  return out;
}

void check_correctness(const Registry& registry, ValidateLevel level, Report& report,
                       const std::function<void(const CheckLine&)>& emit) {
  const auto grid = correctness_grid(level);
  for (const auto& entry : registry) {
    auto kernel = entry.make();
    const KernelInfo info = kernel->info();
    CheckLine line{"correctness", fmt::format("{} on {} grid cases", info.name, grid.size()),
                   Status::kSkipped, ""};
    // A peer starts a process per case: it gets the base grid's small shapes, and --quick leaves
    // it to the default run. Said before asking whether it can run here, which imports its
    // framework (about 3 s for each PyTorch peer).
    const bool peer = kernel->self_timed();
    if (peer && level == ValidateLevel::kQuick) {
      line.detail = "a separate process per case; checked by validate without --quick";
      emit(line);
      report.checks.push_back(line);
      continue;
    }
    if (auto why = kernel->unavailable_reason()) {
      line.detail = *why;
      emit(line);
      report.checks.push_back(line);
      continue;
    }
    // A peer's process starts in seconds (PyTorch 2.x with IPEX: about five): the first small
    // uniform shape it can run, in each of its dtypes (the test suite checks the peers wider).
    std::vector<std::pair<std::string, Shape>> cases;
    // An implementation of quantized weights only (cpu_w8a8) takes the grid in each format it
    // runs, where the shape allows the format (q4: widths that are multiples of its groups).
    std::vector<std::pair<std::string, Shape>> own_grid;
    const bool takes_same = std::ranges::count(info.weights, WeightFormat::kSame) > 0;
    for (const auto& [name, shape] : grid) {
      for (WeightFormat f : takes_same ? std::vector{WeightFormat::kSame} : info.weights) {
        Shape q = shape;
        q.weights = f;
        if (invalid_reason(q)) continue;
        own_grid.push_back(
            {f == WeightFormat::kSame ? name : fmt::format("{}, {}", name, to_string(f)), q});
      }
    }
    for (const auto& entry_case : own_grid) {
      const Shape& shape = entry_case.second;
      const bool small = shape.skew.kind == Skew::Kind::kUniform && shape.d_model <= 256 &&
                         !kernel->refuses(shape, info.dtypes.front());
      if (!peer || (small && cases.empty())) cases.push_back(entry_case);
    }
    line.name = fmt::format("{} on {} grid cases{}", info.name, cases.size(),
                            takes_same ? "" : " with quantized weights");
    int64_t passed = 0, skipped = 0;
    std::string first_failure;
    double worst = 0;
    for (Dtype dtype : info.dtypes) {
      for (const auto& [name, shape] : cases) {
        if (kernel->refuses(shape, dtype)) {
          ++skipped;
          continue;
        }
        Problem p = make_problem(shape, dtype, 11);
        Oracle oracle(p);
        Correctness c;
        try {
          kernel->prepare(p, 2);
          kernel->run(0);
          c = oracle.check(kernel->output(), kernel->selected_experts(), 0,
                           kernel->quantizes_activations());
        } catch (const EnvironmentError&) {
          throw;
        } catch (const std::exception& e) {
          // A peer that crashes fails its line; the other checks go on.
          if (first_failure.empty()) {
            first_failure = fmt::format("{} {}: threw: {}", name, to_string(dtype), e.what());
          }
          continue;
        }
        worst = std::max(worst, c.max_rel_err / c.tolerance);
        if (c.pass) {
          ++passed;
        } else if (first_failure.empty()) {
          first_failure = fmt::format("{} {}: max rel err {:.3g}, {} selection mismatches", name,
                                      to_string(dtype), c.max_rel_err, c.selection_mismatches);
        }
      }
    }
    const int64_t total = static_cast<int64_t>(cases.size() * info.dtypes.size());
    line.status =
        first_failure.empty() ? (passed > 0 ? Status::kOk : Status::kSkipped) : Status::kFailed;
    line.detail =
        first_failure.empty()
            ? fmt::format("{}/{} passed, {} skipped; worst error {:.2g} of the tolerance", passed,
                          total, skipped, worst)
            : fmt::format("{}/{} passed; first failure: {}", passed, total, first_failure);
    emit(line);
    report.checks.push_back(line);
  }
}

// The layer as each model family's own Hugging Face block computes it, on a small version of the
// family's preset, against the FP64 oracle: the semantics check (needs the `hf` peer).
CheckLine semantics_line(const Registry& registry, const char* name) {
  CheckLine line{"semantics",
                 fmt::format("the oracle agrees with transformers' block for {}", name),
                 Status::kSkipped, ""};
  auto hf = registry.make("hf");
  Shape s = find_preset(name).shape;
  s.d_model = 128;
  s.d_ff = 64;
  s.tokens = 8;
  if (auto why = hf->unavailable_reason()) {
    line.detail = *why;
  } else if (auto why_not = hf->refuses(s, Dtype::kF32)) {
    line.detail = *why_not;
  } else {
    try {
      Problem p = make_problem(s, Dtype::kF32, 17);
      Oracle oracle(p);
      hf->prepare(p, 1);
      hf->run(0);
      const Correctness c = oracle.check(hf->output(), hf->selected_experts());
      line.status = c.pass ? Status::kOk : Status::kFailed;
      line.detail =
          fmt::format("E{} k{} d128 f64 T=8 in f32: max rel err {:.2g}, {} selection mismatches",
                      s.experts, s.top_k, c.max_rel_err, c.selection_mismatches);
    } catch (const std::exception& e) {
      line.status = Status::kFailed;
      line.detail = e.what();
    }
  }
  return line;
}

// Each check is a Python process that spends seconds of one core importing transformers and
// torch (about 7 s each on the 2-core Zen 3 VM), for a layer that takes milliseconds: they run at
// once, each its own peer, and their lines come out in order.
void check_semantics(const Registry& registry, Report& report,
                     const std::function<void(const CheckLine&)>& emit) {
  std::vector<std::future<CheckLine>> lines;
  for (const char* name :
       {"mixtral-8x7b", "qwen3-30b-a3b", "olmoe-1b-7b", "deepseek-v3", "gpt-oss-20b"}) {
    lines.push_back(std::async(std::launch::async,
                               [&registry, name] { return semantics_line(registry, name); }));
  }
  for (auto& f : lines) {
    const CheckLine line = f.get();
    emit(line);
    report.checks.push_back(line);
  }
}

std::vector<Case> timing_cases(ValidateLevel level) {
  Axes axes;
  // The cpu kernels keep a packed copy; the peers load their own (they run the uniform cases).
  axes.extra_weight_copies = 1;
  axes.threads = {static_cast<int>(std::max(1, cpu_count()))};
  if (level == ValidateLevel::kQuick) {
    axes.workloads = {"A"};
    axes.tokens = {1, 32};
    std::vector<Case> cases = plan_cases(axes);
    axes.workloads = {"B"};
    axes.tokens = {16};
    for (const Case& c : plan_cases(axes)) cases.push_back(c);
    return cases;
  }
  axes.routing = {"uniform", "zipf:1.2"};
  std::vector<Case> cases = plan_cases(axes);
  // The prefill sizes in bf16, for the claims against the PyTorch peer in bf16.
  for (const auto& [workload, tokens] : {std::pair<const char*, int64_t>{"A", 512}, {"B", 1024}}) {
    Axes b = axes;
    b.routing = {"uniform"};
    b.workloads = {workload};
    b.tokens = {tokens};
    b.dtypes = {"bf16"};
    for (const Case& c : plan_cases(b)) cases.push_back(c);
  }
  if (level == ValidateLevel::kFull) {
    for (const Preset& p : presets()) {
      Axes preset_axes;
      preset_axes.threads = axes.threads;
      preset_axes.extra_weight_copies = axes.extra_weight_copies;
      preset_axes.presets = {p.name};
      preset_axes.tokens = {1, 32};
      try {
        for (const Case& c : plan_cases(preset_axes)) cases.push_back(c);
      } catch (const std::exception&) {
        // Presets that do not fit this machine's memory are reported by the caller.
      }
    }
  }
  return cases;
}

// The case a claim is about.
Case claim_case(const Claim& claim) {
  Case kase;
  kase.shape = find_workload(claim.workload).shape;
  kase.shape.tokens = claim.tokens;
  kase.shape.skew = parse_skew(claim.routing);
  kase.shape.weights = parse_weights(claim.weights);
  kase.dtype = parse_dtype(claim.dtype);
  return kase;
}

const Comparison* find_comparison(const Report& report, const Claim& claim) {
  const Workload& w = find_workload(claim.workload);
  for (const Comparison& c : report.comparisons) {
    const Shape& s = c.kase.shape;
    if (c.a == claim.a && c.b == claim.b && s.preset.empty() && s.experts == w.shape.experts &&
        s.top_k == w.shape.top_k && s.d_model == w.shape.d_model && s.d_ff == w.shape.d_ff &&
        s.tokens == claim.tokens && to_string(s.skew) == claim.routing &&
        to_string(c.kase.dtype) == claim.dtype) {
      return &c;
    }
  }
  return nullptr;
}

const Comparison* find_comparison(const Report& report, const Case& kase, const std::string& a,
                                  const std::string& b) {
  for (const Comparison& c : report.comparisons) {
    if (c.a == a && c.b == b && c.kase.shape == kase.shape && c.kase.dtype == kase.dtype) return &c;
  }
  return nullptr;
}

// The case validate times read_floor in: workload A at one token, f32 (matched as a claim's
// case is, by its whole shape).
bool is_decode_floor_case(const Case& c) {
  Shape a = find_workload("A").shape;
  a.tokens = 1;
  return c.dtype == Dtype::kF32 && c.shape == a;
}

const Result* find_result(const Report& report, const Case& kase, const std::string& impl) {
  for (const Result& r : report.results) {
    if (r.impl == impl && r.kase.shape == kase.shape && r.kase.dtype == kase.dtype) return &r;
  }
  return nullptr;
}

// The serving check: cpu and blas serve the same Poisson arrivals of 1-token requests at the
// same rates (fractions of what cpu's back-to-back full batches allow; serving_ladder); cpu must
// meet the P99 bound at a higher rate than blas. blas is served at every rate and its highest
// within the bound found; cpu then only at the rates above that, from the lowest, until one meets
// it: the same verdict as serving cpu at every rate, in a third of the time (cpu met the bound at
// all seven rates, and served every one of them, 21 s of validate's budget).
void check_serving(const Registry& registry, Report& report,
                   const std::function<void(const CheckLine&)>& emit) {
  constexpr double kSlo = 0.02, kDuration = 1.5;
  CheckLine line{"serving",
                 "cpu sustains a higher rate than blas within a 20 ms P99 (E8 k2 d512 f1024, f32, "
                 "1-token requests, Poisson)",
                 Status::kFailed, ""};
  Case c;
  c.shape = make_shape(8, 2, 512, 1024, 16);
  c.threads = std::max(1, cpu_count());
  const ArrivalSpec poisson = parse_arrivals("poisson");
  const TokenDist one = parse_request_tokens("1");
  const BatcherOptions batcher{16, 0.001, 0};
  const auto finish = [&](Status status, std::string detail) {
    line.status = status;
    line.detail = std::move(detail);
    emit(line);
    report.checks.push_back(line);
  };
  std::unique_ptr<LayerServer> servers[2];
  const char* names[2] = {"cpu", "blas"};
  double cap = 0;
  for (int i = 0; i < 2; ++i) {
    auto kernel = registry.make(names[i]);
    if (auto why = kernel->unavailable_reason()) {
      return finish(Status::kSkipped, fmt::format("{} cannot run here: {}", names[i], *why));
    }
    servers[i] = std::make_unique<LayerServer>(std::move(kernel), c, 2, poisson, one, batcher,
                                               kDuration, kSlo);
    // cpu's capacity as soon as it is prepared: timed after blas's preparation it came out at
    // 3670 requests/s where it is 9600-11500 (AMD Zen 4), and the rates with it.
    if (i == 0) cap = servers[0]->capacity_rps();
  }
  // Serves one implementation at one rate: whether it met the bound, or nullopt after a failure
  // (the check is then failed with the reason).
  const auto meets = [&](int i, double rate) -> std::optional<bool> {
    Result r = servers[i]->serve(rate);
    if (r.status == Status::kFailed) {
      finish(Status::kFailed, fmt::format("{} at {:.0f} requests/s: {}", names[i], rate, r.reason));
      return std::nullopt;
    }
    return r.serving && r.serving->meets_slo;
  };
  const ServingLadder ladder = serving_ladder(cap, meets);
  if (ladder.failed) return;
  if (ladder.cpu_rate > 0) {
    return finish(
        Status::kOk,
        fmt::format("cpu within it at {:.0f} requests/s; blas's highest: {:.0f} "
                    "(rates from {:.0f} to {:.0f})",
                    ladder.cpu_rate, ladder.blas_best, ladder.rates.front(), ladder.rates.back()));
  }
  finish(Status::kFailed, fmt::format("cpu within it at no rate above blas's highest, {:.0f} "
                                      "requests/s (rates from {:.0f} to {:.0f})",
                                      ladder.blas_best, ladder.rates.front(), ladder.rates.back()));
}

}  // namespace

ServingLadder serving_ladder(double cap,
                             const std::function<std::optional<bool>(int, double)>& meets) {
  ServingLadder out;
  for (double f : {0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.9}) out.rates.push_back(cap * f);
  const auto serve = [&](int impl, double rate) {
    const std::optional<bool> met = meets(impl, rate);
    out.failed |= !met.has_value();
    return met.value_or(false);
  };
  for (double rate : out.rates) {
    if (serve(1, rate)) out.blas_best = std::max(out.blas_best, rate);
    if (out.failed) return out;
  }
  // A capacity measured in a busy moment (2986 requests/s once, on an AMD Zen 4 where it is
  // 9600-11500) leaves blas within the bound at every rate and no rate above it for cpu.
  for (double f : {1.2, 1.6, 2.2, 3.0, 4.0}) {
    if (out.blas_best < out.rates.back()) break;
    out.rates.push_back(cap * f);
    if (serve(1, out.rates.back())) out.blas_best = out.rates.back();
    if (out.failed) return out;
  }
  for (double rate : out.rates) {
    if (rate <= out.blas_best) continue;
    const bool met = serve(0, rate);
    if (out.failed) return out;
    if (met) {
      out.cpu_rate = rate;
      return out;
    }
  }
  return out;
}

namespace {

// A claim between two cases (two dtypes, or two weight formats), timed as the harness times
// implementations side by side: each side on its own cold layers, checked against the oracle first,
// then a sample of each per round in a shuffled order, so that a drift of the machine between two
// cases (memory bandwidth on a shared host moves by half within minutes) cannot decide it. The
// speed-up, or nullopt with the line's status (skipped: cannot run here; failed) and detail set.
std::optional<Speedup> across_cases(const Registry& registry, const Claim& claim,
                                    const HarnessOptions& h, int threads, CheckLine& line) {
  struct Side {
    std::string impl;
    Case kase;
    std::unique_ptr<Kernel> kernel;
    Problem problem;
    int64_t layers = 1, next = 0, inner = 1;
    std::vector<double> samples;
  };
  Case a = claim_case(claim);
  a.threads = threads;
  Case b = a;
  if (!claim.b_dtype.empty()) b.dtype = parse_dtype(claim.b_dtype);
  b.shape.weights = parse_weights(claim.b_weights);
  // Each side rotates through enough layers of its own to be cold (the side of fewer bytes, q4
  // against bf16, through more); each holds its own problem, so the memory is shared by two.
  // (Both sides at the larger count packed ten bf16 layers where three keep them cold: the q4
  // claim took 17 s of validate on an AMD Zen 4.)
  std::vector<Side> sides(2);
  sides[0].impl = claim.a;
  sides[0].kase = a;
  sides[1].impl = claim.b;
  sides[1].kase = b;
  omp_set_num_threads(threads);
  for (Side& side : sides) {
    side.kernel = registry.make(side.impl);
    if (auto reason = side.kernel->unavailable_reason()) {
      line.status = Status::kSkipped;
      line.detail = fmt::format("{} cannot run here: {}", side.impl, *reason);
      return std::nullopt;
    }
    if (auto reason = side.kernel->refuses(side.kase.shape, side.kase.dtype)) {
      line.status = Status::kSkipped;
      line.detail = fmt::format("{} cannot run {}: {}", side.impl, case_label(side.kase), *reason);
      return std::nullopt;
    }
    side.layers = layers_for(side.kase, h, {claim.a, claim.b}, 2);
    side.problem = make_problem(side.kase.shape, side.kase.dtype, side.kase.seed, side.layers);
    side.kernel->prepare(side.problem, threads);
    side.kernel->run(0);
    const Correctness c = Oracle(side.problem).check(*side.kernel);
    if (!c.pass) {
      line.status = Status::kFailed;
      line.detail = fmt::format("{} on {} differs from the FP64 oracle (max rel err {:.3g})",
                                side.impl, case_label(side.kase), c.max_rel_err);
      return std::nullopt;
    }
    for (int i = 0; i < h.warmup; ++i) side.kernel->run(side.next++ % side.layers);
    side.inner =
        inner_reps_for(time_calls(*side.kernel, 1, side.layers, side.next), h.min_sample_s);
  }
  // More rounds than a quick case takes: a claim decided on the 16 rounds of --quick's 0.2 s
  // failed once in CI at 1.75x [0.52, 1.94], three samples of one side caught by a neighbour.
  // At one token a round costs milliseconds, so a second of rounds is cheap.
  HarnessOptions rounds = h;
  rounds.reps = std::max(h.reps, 60);
  rounds.min_time_s = std::max(h.min_time_s, 1.0);
  std::mt19937_64 rng(h.seed);
  std::vector<Side*> order{&sides[0], &sides[1]};
  const auto start = std::chrono::steady_clock::now();
  for (int64_t round = 0;; ++round) {
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!keep_sampling(round, elapsed, rounds) || interrupt_requested()) break;
    std::shuffle(order.begin(), order.end(), rng);
    for (Side* side : order) {
      side->samples.push_back(time_calls(*side->kernel, side->inner, side->layers, side->next));
    }
  }
  if (sides[0].samples.empty()) {
    line.status = Status::kFailed;
    line.detail = "interrupted before its first sample";
    return std::nullopt;
  }
  return speedup(sides[0].samples, sides[1].samples, h.seed);
}

// Our own kernels (cpu and cuda and their variants) are held to the ceilings: one faster than
// its ceiling even at the slow end of its median's interval means the ceiling is wrong, and with
// it every roofline figure of the run. (A peer above a ceiling is only warned about: its data may
// come from a cache the protocol cannot see.)
std::optional<std::string> above_ceiling(const Result& r) {
  if (!r.impl.starts_with("cpu") && !r.impl.starts_with("cuda")) return std::nullopt;
  const double bound_s = r.derived.roofline_pct / 100.0 * r.stats.median_s;
  if (r.stats.median_ci_s[1] <= 0 || bound_s <= r.stats.median_ci_s[1]) return std::nullopt;
  return fmt::format(
      "faster than its {} ceiling allows ({:.0f}% of it, and above it across the whole "
      "interval): the measured ceiling is wrong, and with it this run's roofline figures",
      r.derived.bound, bound_s / r.stats.median_ci_s[1] * 100);
}

// The FP32 FMA peak of each thread count must be at least the rate of cpu's own micro-kernel on
// operands in L1, on the same ISA (within 10% for noise): a peak loop that spills, or one on a
// narrower ISA than the kernels, measures low and puts every result over its ceiling.
void check_ceilings(const Registry& registry, Report& report,
                    const std::function<void(const CheckLine&)>& emit) {
  constexpr double kSlack = 0.9;
  auto cpu = registry.make("cpu");
  for (const Peaks& p : report.peaks) {
    CheckLine line{"ceiling",
                   fmt::format("the FP32 FMA peak ({}, {} threads) is at least cpu's micro-kernel "
                               "in L1",
                               p.fma_isa, p.threads),
                   Status::kSkipped, ""};
    const std::optional<double> kernel = cpu->in_cache_gflops(p.threads);
    if (!kernel) {
      line.detail = "cpu has no FP32 micro-kernel to measure here";
    } else {
      line.status = p.fp32_gflops >= kSlack * *kernel ? Status::kOk : Status::kFailed;
      line.detail = fmt::format("peak {:.1f} GFLOP/s, micro-kernel {:.1f} GFLOP/s ({:.0f}%){}",
                                p.fp32_gflops, *kernel, *kernel / p.fp32_gflops * 100,
                                line.status == Status::kOk
                                    ? ""
                                    : ": the peak loop measures low (spills, or a narrower ISA); "
                                      "every compute roofline figure of this run is wrong");
    }
    emit(line);
    report.checks.push_back(line);
  }
}

}  // namespace

std::span<const Claim> readme_claims() { return kClaims; }

std::string_view to_string(MachineClass m) {
  switch (m) {
    case MachineClass::kAvx2:
      return "x86-64 CPUs with AVX2 and FMA";
    case MachineClass::kAvx512:
      return "CPUs with AVX-512";
    case MachineClass::kAvx512Bf16:
      return "CPUs with AVX512-BF16";
    case MachineClass::kAmx:
      return "CPUs with AMX-BF16";
    case MachineClass::kNvidiaHopper:
      return "NVIDIA Hopper GPUs (sm_90)";
  }
  return "?";
}

std::optional<std::string> outside_class(MachineClass m, const CpuFeatures& cpu) {
  return outside_class(m, cpu, std::nullopt);
}

std::optional<std::string> outside_class(MachineClass m, const CpuFeatures& cpu,
                                         const std::optional<SystemInfo::CudaDevice>& gpu) {
  if (m == MachineClass::kNvidiaHopper) {
    if (!gpu) return "no CUDA device here";
    if (gpu->cc_major != 9) {
      return fmt::format("this GPU ({}) is sm_{}{}, not Hopper", gpu->name, gpu->cc_major,
                         gpu->cc_minor);
    }
    return std::nullopt;
  }
  // A cap (--max-isa) hides features: the reason says so, since the CPU itself has them.
  auto lacks = [capped = max_isa().has_value()](std::string_view what) {
    return capped ? fmt::format("no {} under the ISA cap", what)
                  : fmt::format("this CPU has no {}", what);
  };
  if (m == MachineClass::kAvx2) {
    if (cpu.has("avx2") && cpu.has("fma")) return std::nullopt;
    return lacks("AVX2 with FMA");
  }
  if (!cpu.has("avx512f")) return lacks("AVX-512");
  if (m == MachineClass::kAvx512Bf16 && !cpu.has("avx512_bf16")) return lacks("AVX512-BF16");
  if (m == MachineClass::kAmx && !(cpu.has("amx_tile") && cpu.has("amx_bf16"))) {
    return lacks("AMX-BF16");
  }
  return std::nullopt;
}

void run_validate(const Registry& registry, ValidateLevel level, Report& report,
                  const std::function<void(const CheckLine&)>& on_check,
                  const ProgressFn& progress) {
  auto emit = [&](const CheckLine& line) {
    if (on_check) on_check(line);
  };
  check_correctness(registry, level, report, emit);
  if (level != ValidateLevel::kQuick) check_semantics(registry, report, emit);
  if (level != ValidateLevel::kQuick) check_serving(registry, report, emit);

  HarnessOptions h;
  h.make = [&registry](std::string_view name) { return registry.make(name); };
  if (level == ValidateLevel::kQuick) {
    h.reps = 10;
    h.min_time_s = 0.2;
    h.max_time_s = 5;
  } else {
    // A case samples for at most 14 s: workload B at 1024 tokens (blas 0.8 s a call, cpu 0.5)
    // then takes 10-11 rounds instead of 20, and the 5 minutes hold on 2 cores (at 20 s, an AMD
    // Zen 4 took 343 s, three such cases 20 s each); the intervals widen with fewer samples and
    // say so.
    h.max_time_s = 14;
  }
  const std::vector<Case> cases = timing_cases(level);
  const DeviceDescription device = registry.device();
  const std::optional<SystemInfo::CudaDevice> gpu =
      device.available ? device.properties : std::nullopt;
  if (level == ValidateLevel::kFull) {
    for (const Preset& p : presets()) {
      bool present = false;
      for (const Case& c : cases) present |= c.shape.preset == p.name;
      if (!present) {
        CheckLine line{"timing", "preset " + p.name, Status::kSkipped,
                       "does not fit this machine's memory in f32"};
        emit(line);
        report.checks.push_back(line);
      }
    }
  }
  // The Python peers a claim names take part, where they can run, in the cases of their claims,
  // and only for the claims stated for this machine's class: a claim skipped here needs no
  // peer's samples (on an AVX2 CPU, Debian's PyTorch 1.13 took 21 and 79 s a call in bf16 at
  // the prefill sizes of the AVX512-BF16 claims, only to be skipped as too slow).
  const auto applies = [&gpu](const Claim& claim) {
    return !outside_class(claim.machines, cpu_features(), gpu);
  };
  const std::vector<std::string> impls = registry.default_names();
  std::vector<std::string> peers;
  if (level != ValidateLevel::kQuick) {
    for (const Claim& claim : kClaims) {
      if (!applies(claim)) continue;
      for (const std::string& impl : {claim.a, claim.b}) {
        if (registry.make(impl)->self_timed() &&
            std::find(peers.begin(), peers.end(), impl) == peers.end() &&
            !registry.make(impl)->unavailable_reason()) {
          peers.push_back(impl);
        }
      }
    }
  }
  // Each case with the peers its claims name (a peer takes seconds to start and samples on its
  // own, so the others are left to `run`).
  std::vector<Case> planned;
  std::vector<std::vector<std::string>> planned_impls;
  for (const Case& c : cases) {
    // A claim stated for this machine whose comparison is timed in case c.
    const auto about = [&](const Claim& claim) {
      if (!applies(claim)) return false;
      const Case kase = claim_case(claim);
      return kase.shape == c.shape && kase.dtype == c.dtype;
    };
    // The bf16 prefill cases are there for the bf16 claims over the peers: timed only where one
    // of those is stated for this machine (on an AVX2 CPU they took 45 s of validate's 5 minutes
    // and checked no claim).
    const bool needed =
        c.dtype == Dtype::kF32 || std::any_of(kClaims.begin(), kClaims.end(), [&](const Claim& cl) {
          return !cl.across_cases() && about(cl);
        });
    if (!needed) continue;
    std::vector<std::string> with = impls;
    for (const std::string& peer : peers) {
      for (const Claim& claim : kClaims) {
        if ((claim.a == peer || claim.b == peer) && about(claim)) {
          with.push_back(peer);
          break;
        }
      }
    }
    // Decode against its own floor: at workload A at one token, cpu's bytes read and nothing
    // else, timed beside it (docs/measurement.md). The share of that rate cpu reaches is
    // reported on cpu's line, however the machine's bandwidth moves during the run.
    if (is_decode_floor_case(c) && !registry.make("read_floor")->unavailable_reason()) {
      with.push_back("read_floor");
      if (std::find(h.baselines.begin(), h.baselines.end(), "read_floor") == h.baselines.end()) {
        h.baselines.push_back("read_floor");
      }
    }
    planned.push_back(c);
    planned_impls.push_back(with);
  }
  // The cases of the GPU claims, where this machine has the GPU they are stated for, with the
  // implementations they name (a claim's second implementation is the comparison's baseline).
  for (const Claim& claim : kClaims) {
    if (claim.machines != MachineClass::kNvidiaHopper) continue;
    if (level == ValidateLevel::kQuick && !claim.quick) continue;
    if (outside_class(claim.machines, cpu_features(), gpu)) continue;
    Axes axes;
    axes.workloads = {claim.workload};
    axes.tokens = {claim.tokens};
    axes.routing = {claim.routing};
    axes.dtypes = {claim.dtype};
    axes.threads = {static_cast<int>(std::max(1, cpu_count()))};
    const Case c = plan_cases(axes).at(0);
    auto at = std::find_if(planned.begin(), planned.end(),
                           [&](const Case& p) { return p.shape == c.shape && p.dtype == c.dtype; });
    if (at == planned.end()) {
      planned.push_back(c);
      planned_impls.emplace_back();
      at = planned.end() - 1;
    }
    auto& with = planned_impls[static_cast<size_t>(at - planned.begin())];
    for (const std::string& impl : {claim.a, claim.b}) {
      if (std::find(with.begin(), with.end(), impl) == with.end() &&
          !registry.make(impl)->unavailable_reason()) {
        with.push_back(impl);
      }
    }
    if (std::find(h.baselines.begin(), h.baselines.end(), claim.b) == h.baselines.end()) {
      h.baselines.push_back(claim.b);
    }
  }
  const auto n = static_cast<int64_t>(planned.size());
  for (int64_t i = 0; i < n; ++i) {
    // One case a call: its progress is told as case i of all of them.
    const ProgressFn one = [&, i](int64_t, int64_t, const std::string& what) {
      if (!progress) return;
      if (what == "done") {
        if (i + 1 == n) progress(n, n, "done");
        return;
      }
      progress(
          i, n,
          fmt::format("case {} of {}{}", i + 1, n, what.ends_with(": timing") ? ": timing" : ""));
    };
    run_cases({planned[i]}, planned_impls[i], h, report, one);
    // Peaks are ceilings, measured again after every case (the last one too) and the higher
    // kept: the memory bandwidth of a shared host drifts by a third from minute to minute, so the
    // ceiling is the best the machine gave during the run, and a result over it means the
    // ceiling loop is wrong, not that the neighbours were quiet. Every figure below uses them.
    for (Peaks& p : report.peaks) keep_higher(p, measure_peaks(p.threads));
    if (report.interrupted) break;
  }
  refresh_derived(report);
  check_ceilings(registry, report, emit);
  for (const Result& r : report.results) {
    CheckLine line{"timing", fmt::format("{} on {}", r.impl, case_label(r.kase)), r.status,
                   r.reason};
    if (r.status == Status::kOk) {
      line.detail =
          fmt::format("median {:.4g} ms [{:.4g}, {:.4g}], roofline {}, CV {:.1f}%",
                      r.stats.median_s * 1e3, r.stats.median_ci_s[0] * 1e3,
                      r.stats.median_ci_s[1] * 1e3, roofline_text(r.derived), r.stats.cv * 100);
      if (const Comparison* floor = find_comparison(report, r.kase, r.impl, "read_floor")) {
        line.detail += fmt::format(
            "; {:.0f}% [{:.0f}, {:.0f}] of the rate of read_floor (its bytes "
            "read alone, side by side)",
            floor->speedup.ratio * 100, floor->speedup.ci[0] * 100, floor->speedup.ci[1] * 100);
      }
      if (auto why = above_ceiling(r)) {
        line.status = Status::kFailed;
        line.detail += "; " + *why;
      }
    }
    emit(line);
    report.checks.push_back(line);
  }

  for (const Claim& claim : kClaims) {
    if (level == ValidateLevel::kQuick && !claim.quick) continue;
    CheckLine line{"claim", claim.text, Status::kFailed, ""};
    if (auto outside = outside_class(claim.machines, cpu_features(), gpu)) {
      line.status = Status::kSkipped;
      line.detail = fmt::format("stated for {}; {}", to_string(claim.machines), *outside);
    } else if (claim.across_cases()) {
      if (auto sp = across_cases(registry, claim, h, std::max(1, cpu_count()), line)) {
        line.status = sp->faster_with_confidence ? Status::kOk : Status::kFailed;
        line.detail =
            fmt::format("{:.2f}x [{:.2f}, {:.2f}], side by side{}", sp->ratio, sp->ci[0], sp->ci[1],
                        sp->faster_with_confidence ? "" : ": interval not above 1");
      }
    } else if (const Comparison* c = find_comparison(report, claim)) {
      line.status = c->speedup.faster_with_confidence ? Status::kOk : Status::kFailed;
      line.detail = fmt::format("{:.2f}x [{:.2f}, {:.2f}]{}", c->speedup.ratio, c->speedup.ci[0],
                                c->speedup.ci[1],
                                c->speedup.faster_with_confidence ? "" : ": interval not above 1");
    } else {
      // No comparison: say why (an implementation that cannot run here is a skip, not a failure).
      const Case kase = claim_case(claim);
      line.detail = "not measured";
      for (const std::string& impl : {claim.a, claim.b}) {
        if (auto why = registry.make(impl)->unavailable_reason()) {
          line.status = Status::kSkipped;
          line.detail = fmt::format("{} cannot run here: {}", impl, *why);
          break;
        }
        const Result* r = find_result(report, kase, impl);
        if (r != nullptr && r->status == Status::kSkipped) {
          line.status = Status::kSkipped;
          line.detail = fmt::format("{} cannot run here: {}", impl, r->reason);
        } else if (r != nullptr && r->status == Status::kFailed) {
          line.detail = fmt::format("{} failed: {}", impl, r->reason);
        }
      }
    }
    emit(line);
    report.checks.push_back(line);
  }
}

}  // namespace moe_bench
