#include "moe_bench/harness.hpp"

#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <thread>

#include "moe_bench/correctness.hpp"
#include "moe_bench/error.hpp"
#include "moe_bench/plan.hpp"
#include "moe_bench/problem.hpp"
#include "moe_bench/sysinfo.hpp"

namespace moe_bench {
namespace {

using Clock = std::chrono::steady_clock;
std::atomic<bool> g_interrupted{false};

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

const Peaks* peaks_for(const Report& report, int threads) {
  for (const Peaks& p : report.peaks) {
    if (p.threads == threads) return &p;
  }
  return nullptr;
}

// read_floor (lib/kernels/cpu/cpu_read.cpp) only reads: its roofline is the read ceiling alone,
// so that a compute-bound case's floor is not reported over a compute ceiling it never used.
Derived derive(const Case& c, const Stats& st, const Load& load, const Peaks* peaks,
               const DevicePeaks* device, bool reads_only = false) {
  Derived d;
  if (st.median_s <= 0) return d;
  const double flops = forward_flops(c.shape);
  const double roofline_flops = reads_only ? 0.0 : flops;
  const double bytes = forward_bytes(c.shape, c.dtype, load.active_experts);
  d.tokens_per_s = static_cast<double>(c.shape.tokens) / st.median_s;
  d.gflops = flops / st.median_s * 1e-9;
  d.gbytes_per_s = bytes / st.median_s * 1e-9;
  std::optional<RooflinePoint> r;
  if (device != nullptr) {
    r = roofline(roofline_flops, bytes, st.median_s, *device, c.dtype);
  } else if (peaks != nullptr) {
    r = roofline(roofline_flops, bytes, st.median_s, *peaks, c.dtype);
  }
  if (r && r->percent > 0) {
    d.roofline_pct = r->percent;
    d.bound = r->compute_bound ? "compute" : "memory";
  }
  return d;
}

// One implementation taking part in a case.
struct Contender {
  Result result;
  std::unique_ptr<Kernel> kernel;
  int64_t next_layer = 0;
  int64_t calls = 0;

  double sample() {
    calls += result.inner_reps;
    return time_calls(*kernel, result.inner_reps, result.layers, next_layer);
  }
};

// Checks the kernel against the oracle; returns false (result failed) when it does not match.
// Quantized weights: the output against the unquantized layer's oracle (`twin`, null otherwise).
void check_quantization(Contender& c, const Oracle* twin) {
  if (twin == nullptr) return;
  c.result.quantization_error = twin->check(c.kernel->output(), c.kernel->selected_experts());
}

bool prepare_and_check(Contender& c, const Problem& problem, const Oracle& oracle,
                       const Oracle* twin) {
  Result& r = c.result;
  auto start = Clock::now();
  c.kernel->prepare(problem, r.kase.threads);
  r.setup_s = seconds_since(start);
  r.notes = c.kernel->notes();
  c.kernel->run(0);
  r.correctness = oracle.check(*c.kernel);
  check_quantization(c, twin);
  if (r.correctness->pass) return true;
  r.status = Status::kFailed;
  r.reason = fmt::format(
      "output differs from the FP64 oracle (max rel err {:.3g}, tolerance "
      "{:.3g}, {} selection mismatches)",
      r.correctness->max_rel_err, r.correctness->tolerance, r.correctness->selection_mismatches);
  return false;
}

// An implementation in another process: it runs the protocol there, then its last output is
// checked like any other. Its samples are not interleaved with the in-process ones.
void run_elsewhere(Contender& c, const Problem& problem, const Oracle& oracle, const Oracle* twin,
                   const HarnessOptions& o, int threads) {
  Result& r = c.result;
  auto start = Clock::now();
  c.kernel->prepare(problem, threads);
  r.setup_s = seconds_since(start);
  const TimingProtocol protocol{o.reps,         o.min_time_s, o.max_time_s,
                                o.min_sample_s, o.warmup,     threads};
  SelfTimed timed = c.kernel->run_self_timed(protocol).value();
  r.layers = static_cast<int64_t>(problem.layers.size());  // the peer rotates as many copies
  r.inner_reps = timed.inner_reps;
  r.notes = timed.notes;
  r.setup_s += timed.setup_s;
  r.correctness = oracle.check(*c.kernel);
  check_quantization(c, twin);
  if (!r.correctness->pass) {
    r.status = Status::kFailed;
    r.reason = fmt::format(
        "output differs from the FP64 oracle (max rel err {:.3g}, tolerance "
        "{:.3g}, {} selection mismatches)",
        r.correctness->max_rel_err, r.correctness->tolerance, r.correctness->selection_mismatches);
    return;
  }
  if (!timed.too_slow.empty()) {
    // Correct, but too slow for the budget: not a failure of this machine or build.
    r.status = Status::kSkipped;
    r.reason = fmt::format("{} in {} {}", r.impl, to_string(problem.dtype), timed.too_slow);
    return;
  }
  r.samples_s = std::move(timed.samples_s);
}

void calibrate(Contender& c, const HarnessOptions& o) {
  for (int i = 0; i < o.warmup; ++i) c.kernel->run(c.next_layer++ % c.result.layers);
  c.result.inner_reps = inner_reps_for(c.sample(), o.min_sample_s);
}

void finish(Contender& c, const Load& load, const Peaks* peaks, const DevicePeaks* device,
            uint64_t seed) {
  Result& r = c.result;
  if (r.status != Status::kOk) return;
  if (r.samples_s.empty()) {
    r.status = Status::kSkipped;
    r.reason = "interrupted before its first sample";
    return;
  }
  r.stats = summarize(r.samples_s, seed);
  const bool dev = r.device_timed;
  r.derived = derive(r.kase, r.stats, load, dev ? nullptr : peaks, dev ? device : nullptr,
                     r.impl == "read_floor");
  r.stages = c.kernel->stage_seconds();
  for (StageTime& s : r.stages) s.seconds /= static_cast<double>(std::max<int64_t>(c.calls, 1));
}

// `timing` is called once every implementation has its first sample (a SIGINT after it leaves
// each with at least one).
void run_case(const Case& c, const std::vector<std::string>& impls, const HarnessOptions& o,
              Report& report, const std::function<void()>& timing) {
  omp_set_num_threads(c.threads);
  set_blas_threads(c.threads);
  const int64_t layers = layers_for(c, o, impls);
  Problem problem = make_problem(c.shape, c.dtype, c.seed, layers);
  Oracle oracle(problem, 0, o.oracle_flop_budget);
  const Load load = oracle.load();
  std::optional<Problem> twin;
  std::optional<Oracle> twin_oracle;
  if (c.shape.weights != WeightFormat::kSame) {
    twin.emplace(unquantized_twin(problem));
    twin_oracle.emplace(*twin, 0, o.oracle_flop_budget);
  }
  const Oracle* twin_check = twin_oracle ? &*twin_oracle : nullptr;

  std::vector<Contender> contenders;
  for (const std::string& impl : impls) {
    Contender k;
    k.result.kase = c;
    k.result.impl = impl;
    k.result.load = load;
    k.result.layers = layers;
    k.result.round_bytes =
        static_cast<double>(layers) *
        forward_bytes(c.shape, c.dtype, std::max<int64_t>(1, load.active_experts));
    k.kernel = o.make(impl);
    k.result.device_timed = k.kernel->device_timed();
    if (auto why = k.kernel->unavailable_reason()) {
      k.result.reason = *why;
    } else if (auto why_not = k.kernel->refuses(c.shape, c.dtype)) {
      k.result.reason = *why_not;
    } else {
      k.result.blas = blas_info();
      k.result.status = Status::kOk;
      try {
        if (k.kernel->self_timed()) {
          run_elsewhere(k, problem, oracle, twin_check, o, c.threads);
        } else if (prepare_and_check(k, problem, oracle, twin_check)) {
          calibrate(k, o);
        }
      } catch (const EnvironmentError&) {
        throw;  // no device, out of device memory, a failed launch: the run stops (exit 3)
      } catch (const std::exception& e) {
        k.result.status = Status::kFailed;
        k.result.reason = fmt::format("{} threw: {}", impl, e.what());
      }
    }
    contenders.push_back(std::move(k));
  }

  std::vector<Contender*> timed;
  for (auto& k : contenders) {
    if (k.result.status == Status::kOk && !k.kernel->self_timed()) {
      k.kernel->reset_stages();
      k.calls = 0;
      timed.push_back(&k);
    }
  }
  std::mt19937_64 rng(o.seed ^ (static_cast<uint64_t>(report.results.size()) * 0x9e3779b9ULL));
  const auto settle = std::chrono::duration<double>(o.settle_s);
  const Contender* last = nullptr;
  const auto start = Clock::now();
  for (int64_t round = 0; !timed.empty(); ++round) {
    if (!keep_sampling(round, seconds_since(start), o)) break;
    std::shuffle(timed.begin(), timed.end(), rng);
    for (Contender* k : timed) {
      if (interrupt_requested()) break;
      if (k != last && timed.size() > 1) std::this_thread::sleep_for(settle);
      k->result.samples_s.push_back(k->sample());
      last = k;
    }
    if (interrupt_requested()) {
      report.interrupted = true;
      break;
    }
    if (round == 0 && timing) timing();
  }

  const Peaks* peaks = peaks_for(report, c.threads);
  const DevicePeaks* device = report.device_peaks ? &*report.device_peaks : nullptr;
  for (auto& k : contenders) finish(k, load, peaks, device, o.seed);
  for (const auto& k : contenders) report.results.push_back(k.result);
  for (size_t bi = 0; bi < o.baselines.size(); ++bi) {
    const Contender* base = nullptr;
    for (const auto& k : contenders) {
      if (k.result.impl == o.baselines[bi] && k.result.status == Status::kOk) base = &k;
    }
    if (base == nullptr) continue;
    for (const auto& k : contenders) {
      if (k.result.status != Status::kOk || &k == base) continue;
      report.comparisons.push_back({c, k.result.impl, base->result.impl,
                                    speedup(k.result.samples_s, base->result.samples_s, o.seed)});
    }
  }
}

}  // namespace

std::string_view to_string(Status s) {
  switch (s) {
    case Status::kOk:
      return "ok";
    case Status::kFailed:
      return "failed";
    case Status::kSkipped:
      return "skipped";
  }
  return "?";
}

double time_calls(Kernel& kernel, int64_t reps, int64_t layers, int64_t& next_layer) {
  const auto start = Clock::now();
  kernel.take_device_seconds();
  for (int64_t i = 0; i < reps; ++i) kernel.run(next_layer++ % layers);
  const double seconds =
      kernel.device_timed() ? kernel.take_device_seconds() : seconds_since(start);
  return seconds / static_cast<double>(reps);
}

int64_t inner_reps_for(double one_call_s, double min_sample_s) {
  return std::clamp<int64_t>(
      static_cast<int64_t>(std::ceil(min_sample_s / std::max(one_call_s, 1e-9))), 1, 1 << 20);
}

bool keep_sampling(int64_t rounds, double elapsed, const HarnessOptions& o) {
  if (rounds >= o.reps && elapsed >= o.min_time_s) return false;
  return rounds == 0 || elapsed < o.max_time_s;
}

std::string roofline_text(const Derived& d) {
  if (d.roofline_pct <= 0) return "-";
  if (d.over_ceiling()) return "over ceiling";
  return fmt::format("{:.1f}%", d.roofline_pct);
}

std::string_view to_string(CacheMode m) { return m == CacheMode::kCold ? "cold" : "warm"; }

int64_t cold_layers(const Case& c, CacheMode mode, int64_t active_experts, int64_t llc_bytes,
                    int64_t available_bytes, int copies) {
  if (mode == CacheMode::kWarm) return 1;
  const double touched = forward_bytes(c.shape, c.dtype, active_experts);
  // The design asks for twice the last-level cache; four times, because at twice this machine's
  // (AMD, non-inclusive) L3 still served part of the weights from the previous round: decode
  // kernels measured above the streaming bandwidth.
  auto layers = static_cast<int64_t>(std::ceil(4.0 * static_cast<double>(llc_bytes) / touched));
  // At least two: with one layer each call re-reads what the previous call just read, and a
  // non-LRU last-level cache keeps a share of it that depends on where the pages landed (the
  // same build measured in two processes differed by up to 7% on workload B at one token).
  layers = std::clamp<int64_t>(layers, kMinColdLayers, kMaxColdLayers);
  // A layer costs what the problem holds of it (a quantized layer: its codes) and each
  // implementation's copy in the stored format; the oracles' one expert in f32 and the work space
  // are held once (plan.cpp counts the same).
  const int64_t per_layer = std::max<int64_t>(
      layer_held_bytes(c.shape, c.dtype) + copies * layer_weight_bytes(c.shape, c.dtype), 1);
  // Never let the layers take more than half of the available memory.
  const int64_t room = available_bytes / 2 - case_memory_bytes(c, 0);
  const int64_t fit = std::max<int64_t>(1, room / per_layer);
  return std::min(layers, fit);
}

int64_t layers_for(const Case& c, const HarnessOptions& o, const std::vector<std::string>& impls,
                   int processes) {
  // The layer count is chosen before the data exists, from the experts that T*k uniform
  // assignments are expected to touch: E * (1 - (1 - k/E)^T).
  const double experts = static_cast<double>(c.shape.experts);
  const double expected_active =
      experts * (1 - std::pow(1 - static_cast<double>(c.shape.top_k) / experts,
                              static_cast<double>(c.shape.tokens)));
  // Implementations that pack or copy the weights add to what each layer costs, and they are
  // all prepared at once (interleaved): their copies add up. (The largest copy alone was counted
  // before: on an Intel Xeon VM that reports a 480 MiB L3, validate asked for 14 layers of 400 MB
  // a side and was killed for memory.)
  int copies = 0;
  for (const std::string& impl : impls) copies += o.make(impl)->info().weight_copies;
  return cold_layers(c, o.cache, std::max<int64_t>(1, std::llround(expected_active)),
                     last_level_cache_bytes(), memory_available_bytes() / processes, copies);
}

void refresh_derived(Report& report) {
  for (Result& r : report.results) {
    if (r.status == Status::kOk) {
      const bool dev = r.device_timed;
      r.derived = derive(r.kase, r.stats, r.load, dev ? nullptr : peaks_for(report, r.kase.threads),
                         dev && report.device_peaks ? &*report.device_peaks : nullptr,
                         r.impl == "read_floor");
    }
  }
}

void request_interrupt() { g_interrupted.store(true); }
bool interrupt_requested() { return g_interrupted.load(); }

void run_cases(const std::vector<Case>& cases, const std::vector<std::string>& impls,
               const HarnessOptions& options, Report& report, const ProgressFn& progress) {
  if (!options.make) throw std::logic_error("run_cases needs HarnessOptions::make");
  report.cache = options.cache;
  auto last_peaks = Clock::now();
  const auto total = static_cast<int64_t>(cases.size());
  for (int64_t i = 0; i < total; ++i) {
    if (interrupt_requested()) {
      report.interrupted = true;
      break;
    }
    if (progress) progress(i, total, fmt::format("case {} of {}", i + 1, total));
    run_case(cases[i], impls, options, report, [&] {
      if (progress) progress(i, total, fmt::format("case {} of {}: timing", i + 1, total));
    });
    // The shared machine's bandwidth drifts by tens of percent within a minute: the ceilings are
    // measured again after a case once ten seconds have passed, and keep the best, so that they
    // stay ceilings.
    if (seconds_since(last_peaks) >= 10) {
      for (Peaks& p : report.peaks) {
        if (p.threads == cases[i].threads) keep_higher(p, measure_peaks(p.threads));
      }
      last_peaks = Clock::now();
    }
  }
  if (progress) progress(total, total, "done");
}

}  // namespace moe_bench
