#include "ep.hpp"

#include <fmt/format.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <numeric>
#include <random>
#include <thread>

#include "ep_layer.hpp"
#include "moe_bench/aligned.hpp"
#include "moe_bench/correctness.hpp"
#include "moe_bench/dtype.hpp"
#include "moe_bench/error.hpp"
#include "moe_bench/kernel.hpp"
#include "moe_bench/placement.hpp"
#include "moe_bench/problem.hpp"
#include "moe_bench/reference.hpp"
#include "moe_bench/roofline.hpp"
#include "moe_bench/routing.hpp"
#include "moe_bench/stats.hpp"
#include "moe_bench/sysinfo.hpp"

namespace moe_bench::ep {
namespace {

using namespace detail;

// Whether every rank shares this node's memory (MPI's shared-memory windows then reach them all).
bool one_node() {
  MPI_Comm node = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node),
            "MPI_Comm_split_type");
  int here = 0, all = 0;
  MPI_Comm_size(node, &here);
  MPI_Comm_size(MPI_COMM_WORLD, &all);
  MPI_Comm_free(&node);
  return here == all;
}

// The per-stage maxima over ranks of one step.
std::array<double, kStages> max_over_ranks(const std::array<double, kStages>& mine) {
  std::array<double, kStages> out{};
  check_mpi(MPI_Allreduce(mine.data(), out.data(), kStages, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD),
            "MPI_Allreduce (stage times)");
  return out;
}

// Rank 0 decides, every rank follows (sampling stops together).
bool agree(bool rank0_says) {
  int v = rank0_says ? 1 : 0;
  check_mpi(MPI_Bcast(&v, 1, MPI_INT, 0, MPI_COMM_WORLD), "MPI_Bcast");
  return v != 0;
}

// One way to run the layer within a launch: a placement and an exchange, with its own kernel
// (holding the experts the placement gives this rank), buffers and samples. The variants of a
// case are measured in turn, round after round, so that they share the machine's drift.
struct Variant {
  Placement place;
  bool window = false;
  std::unique_ptr<Kernel> kernel;
  std::unique_ptr<EpLayer> layer;
  int64_t inner = 1;
  std::vector<std::array<double, kStages>> samples;
  std::vector<double> alone_dispatch, alone_combine;
  std::array<double, 3> most{};  ///< bytes sent, the most any rank: dispatch, combine, both
  std::vector<float> y_all;      ///< rank 0: the checked step's outputs, every rank's tokens
  std::vector<int32_t> sel_all;
  std::vector<int64_t> rows_per_rank, experts_per_rank;
};

std::string variant_label(const std::string& impl, const Variant& v) {
  return fmt::format("{} ({}{}, {})", impl, v.place.policy,
                     v.place.replicas > 0 ? fmt::format(" +{}", v.place.replicas) : std::string(),
                     v.window ? "window" : "alltoallv");
}

// Warm-up, then the checked step on layer 0: outputs, selections and loads gathered on rank 0.
void checked_step(Variant& v, int r, int N, int64_t T, int64_t d, int64_t k,
                  const HarnessOptions& h) {
  std::array<double, kStages> t{};
  for (int i = 0; i < std::max(h.warmup, 1); ++i) v.layer->step(0, t);
  v.layer->step(0, t);
  v.y_all.assign(r == 0 ? static_cast<size_t>(N * T * d) : 0, 0.0f);
  v.sel_all.assign(r == 0 ? static_cast<size_t>(N * T * k) : 0, 0);
  check_mpi(MPI_Gather(v.layer->output().data(), static_cast<int>(T * d), MPI_FLOAT, v.y_all.data(),
                       static_cast<int>(T * d), MPI_FLOAT, 0, MPI_COMM_WORLD),
            "MPI_Gather (outputs)");
  check_mpi(MPI_Gather(v.layer->selected().data(), static_cast<int>(T * k), MPI_INT32_T,
                       v.sel_all.data(), static_cast<int>(T * k), MPI_INT32_T, 0, MPI_COMM_WORLD),
            "MPI_Gather (selections)");
  v.rows_per_rank.assign(static_cast<size_t>(N), 0);
  v.experts_per_rank.assign(static_cast<size_t>(N), 0);
  const int64_t rows = v.layer->rows_computed(), experts = v.layer->experts_computed();
  check_mpi(
      MPI_Gather(&rows, 1, MPI_INT64_T, v.rows_per_rank.data(), 1, MPI_INT64_T, 0, MPI_COMM_WORLD),
      "MPI_Gather (rows)");
  check_mpi(MPI_Gather(&experts, 1, MPI_INT64_T, v.experts_per_rank.data(), 1, MPI_INT64_T, 0,
                       MPI_COMM_WORLD),
            "MPI_Gather (experts)");
  v.inner = inner_reps_for(max_over_ranks(t)[kTotal], h.min_sample_s);
}

// The exchanges alone on the variant's counts: the MPI all-to-all rate on this machine, after
// warm-up iterations as osu_alltoallv skips them. The same statistic as the step's exchanges:
// each exchange's maximum over ranks, medians summed.
void measure_alone(Variant& v) {
  for (int i = 0; i < 20; ++i) v.layer->alltoall_alone();
  for (int i = 0; i < 50; ++i) {
    MPI_Barrier(MPI_COMM_WORLD);
    const std::array<double, 2> mine = v.layer->alltoall_alone();
    std::array<double, 2> slowest{};
    check_mpi(MPI_Allreduce(mine.data(), slowest.data(), 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD),
              "MPI_Allreduce (bandwidth)");
    v.alone_dispatch.push_back(slowest[0]);
    v.alone_combine.push_back(slowest[1]);
  }
  const std::array<double, 2> b = v.layer->bytes_sent();
  const std::array<double, 3> sent{b[0], b[1], b[0] + b[1]};
  check_mpi(MPI_Allreduce(sent.data(), v.most.data(), 3, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD),
            "MPI_Allreduce (bytes)");
}

// Rank 0: the variant's result from its samples and the figures every variant shares.
Result variant_result(const Variant& v, const Result& shared, const Case& c, const EpOptions& ep,
                      int64_t T, const Oracle& oracle, const Problem& p) {
  const int N = v.place.ranks;
  Result res = shared;
  res.correctness = oracle.check(v.y_all, v.sel_all, v.kernel->extra_roundings(p.shape, p.dtype),
                                 v.kernel->quantizes_activations());
  res.load = oracle.load();
  if (!res.correctness->pass) {
    res.status = Status::kFailed;
    res.reason = fmt::format(
        "the output gathered from {} ranks differs from the FP64 oracle (max rel err {:.3g}, "
        "tolerance {:.3g}, {} selection mismatches)",
        N, res.correctness->max_rel_err, res.correctness->tolerance,
        res.correctness->selection_mismatches);
  }
  for (const auto& sm : v.samples) res.samples_s.push_back(sm[kTotal]);
  res.inner_reps = v.inner;
  if (res.status == Status::kOk && res.samples_s.empty()) {
    res.status = Status::kSkipped;
    res.reason = "interrupted before its first sample";
  }
  if (!res.samples_s.empty()) res.stats = summarize(res.samples_s, c.seed);
  EpInfo e;
  e.ranks = N;
  e.placement = v.place.policy;
  e.replicas = v.place.replicas;
  e.tokens_per_rank = T;
  e.exchange = v.window ? "window" : "alltoallv";
  auto stage = [&](Stage st) {
    std::vector<double> x;
    for (const auto& sm : v.samples) x.push_back(sm[st]);
    return median(x);
  };
  e.route_s = stage(kRoute);
  e.dispatch_s = stage(kDispatch);
  e.compute_s = stage(kCompute);
  e.combine_s = stage(kCombine);
  e.dispatch_exchange_s = stage(kExchangeDispatch);
  e.combine_exchange_s = stage(kExchangeCombine);
  e.threads_per_rank = c.threads;
  e.bytes_sent_per_rank = v.most[2];
  e.dispatch_bytes_per_rank = v.most[0];
  e.combine_bytes_per_rank = v.most[1];
  const double alone_s = median(v.alone_dispatch) + median(v.alone_combine);
  e.alltoall_gbytes_per_s = alone_s > 0 ? v.most[2] / alone_s * 1e-9 : 0;
  // With nothing sent to another rank (one rank) there is no exchange to rate.
  const double exchanges = e.dispatch_exchange_s + e.combine_exchange_s;
  e.exchange_pct_of_alltoall = exchanges > 0 && v.most[2] > 0 ? 100.0 * alone_s / exchanges : 0;
  e.rows_per_rank = v.rows_per_rank;
  e.experts_per_rank = v.experts_per_rank;
  std::vector<double> rows_d(v.rows_per_rank.begin(), v.rows_per_rank.end());
  e.load_max_over_mean = max_over_mean(rows_d);
  if (const EpCalibration* cal = calibration_for(ep, c)) {
    e.model_predicted_s = predict_step_s(*cal, e, cpu_count());
  }
  res.notes = fmt::format(
      "expert-parallel over {} MPI ranks of {} threads, {} placement{}, exchanges through {}; "
      "each rank holds the weights of the experts placed on it (rank 0 also the whole layer, "
      "for the oracle)",
      N, c.threads, v.place.policy,
      v.place.replicas > 0 ? fmt::format(" with {} replicas", v.place.replicas) : std::string(),
      v.window ? "shared-memory windows" : "MPI_Alltoallv");
  res.stages = {{"route", e.route_s},
                {"dispatch", e.dispatch_s},
                {"compute", e.compute_s},
                {"combine", e.combine_s}};
  res.ep = std::move(e);
  return res;
}

void run_case(const Session& s, const Case& c, int64_t case_index, const std::string& impl,
              const HarnessOptions& h, const EpOptions& ep, Report& report) {
  const int N = s.size(), r = s.rank();
  const int64_t T = c.shape.tokens;
  Case global = c;
  global.shape.tokens = T * N;
  Result shared;
  shared.impl = impl;
  shared.kase = global;
  shared.kase.threads = c.threads * N;  // held to the peaks of every rank's threads together
  shared.status = Status::kOk;
  auto probe = h.make(impl);
  if (!probe->splits_routing()) {
    throw UsageError(fmt::format(
        "{} cannot run expert-parallel: it does not split routing from its experts (cpu does)",
        impl));
  }
  if (auto why = probe->refuses(global.shape, global.dtype)) {
    shared.status = Status::kSkipped;
    shared.reason = *why;
    if (r == 0) report.results.push_back(shared);
    return;
  }
  const int64_t layers = layers_for(global, h, {impl}, N);
  // Every rank generates the layer from the same seed and keeps its own T tokens (rows r*T..)
  // at the front of x; rank 0 keeps all of them for the oracle and the single-process run.
  Problem p = make_problem(global.shape, global.dtype, global.seed, layers);
  const int64_t d = global.shape.d_model, k = global.shape.top_k;
  std::vector<float> all_x;
  if (r == 0) all_x = p.x;
  std::copy(p.x.begin() + r * T * d, p.x.begin() + (r + 1) * T * d, p.x.begin());
  std::fill(p.x.begin() + T * d, p.x.end(), 0.0f);

  const double setup0 = now();
  // The calibration batch: this batch's routing by layer 0, before capacity (the layer's own
  // routing, from the reference: a kernel is prepared only once its placement is known).
  const int64_t E = global.shape.experts;
  std::vector<int64_t> load(static_cast<size_t>(E), 0), all_load(load.size());
  {
    std::vector<double> logits(static_cast<size_t>(E)), wt(static_cast<size_t>(k)),
        scratch(static_cast<size_t>(2 * E));
    std::vector<int32_t> ex(static_cast<size_t>(k));
    for (int64_t t = 0; t < T; ++t) {
      reference::router_logits(p, p.layers[0], t, logits.data());
      route_token(global.shape.routing, logits.data(), p.layers[0].selection_bias.data(), E, k,
                  ex.data(), wt.data(), scratch.data());
      for (int32_t e : ex) ++load[static_cast<size_t>(e)];
    }
  }
  check_mpi(MPI_Allreduce(load.data(), all_load.data(), static_cast<int>(load.size()), MPI_INT64_T,
                          MPI_SUM, MPI_COMM_WORLD),
            "MPI_Allreduce (load)");
  // Each variant's kernel keeps only the weights of the experts its placement gives this rank.
  std::vector<std::unique_ptr<Variant>> variants;
  // Variants of one placement get kernels of their own all the same: alternating variants then
  // never find each other's weights in cache.
  for (const std::string& policy : ep.placements) {
    const int replicas = ep.replicas >= 0 ? ep.replicas : (policy == "load-aware" ? N : 0);
    const Placement place = place_experts(policy, E, N, all_load, replicas);
    std::vector<uint8_t> held(static_cast<size_t>(E), 0);
    for (size_t e = 0; e < held.size(); ++e) {
      const auto& owners = place.owners[e];
      held[e] = std::find(owners.begin(), owners.end(), r) != owners.end();
    }
    for (const std::string& exchange : ep.exchanges) {
      auto v = std::make_unique<Variant>();
      v->place = place;
      v->window = exchange == "window";
      v->kernel = h.make(impl);
      v->kernel->hold_experts(held);
      v->kernel->prepare(p, c.threads);
      variants.push_back(std::move(v));
    }
  }
  // Rank 0 keeps the whole layer as generated (the oracle and the one-process run need it); the
  // others let it go.
  if (r != 0) {
    for (LayerWeights& w : p.layers) {
      for (auto* v : {&w.w1, &w.w3, &w.w2, &w.ws1, &w.ws3, &w.ws2}) std::vector<float>().swap(*v);
    }
  }
  for (auto& v : variants)
    v->layer = std::make_unique<EpLayer>(s, *v->kernel, p, T, v->place, v->window);
  // Test-only: a rank that fails in the middle of a run (its exchange windows open), or dies
  // without a word (tests/cli/ep_test.cpp).
  if (const char* fail = std::getenv("MOE_BENCH_TEST_FAIL_RANK");
      fail != nullptr && std::atoi(fail) == r) {
    throw std::runtime_error("failure injected for a test (MOE_BENCH_TEST_FAIL_RANK)");
  }
  if (const char* die = std::getenv("MOE_BENCH_TEST_KILL_RANK");
      die != nullptr && std::atoi(die) == r) {
    std::raise(SIGKILL);
  }
  shared.setup_s = now() - setup0;
  shared.layers = layers;
  for (auto& v : variants) checked_step(*v, r, N, T, d, k, h);

  // Sampling: rounds of every variant once, in an order shuffled alike on every rank (the same
  // seed: the case's index, which every rank knows; only rank 0 holds results); steps separated
  // by a barrier, each step's time the slowest rank's.
  std::vector<size_t> order(variants.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::mt19937_64 rng(h.seed ^ (static_cast<uint64_t>(case_index + 1) * 0x9e3779b9ULL));
  std::vector<int64_t> next(variants.size(), 0);
  int64_t rounds = 0;
  const double begin = now();
  while (agree(r == 0 && !interrupt_requested() && keep_sampling(rounds, now() - begin, h))) {
    std::shuffle(order.begin(), order.end(), rng);
    for (size_t i : order) {
      Variant& v = *variants[i];
      MPI_Barrier(MPI_COMM_WORLD);
      std::array<double, kStages> sum{}, t{};
      for (int64_t rep = 0; rep < v.inner; ++rep) {
        v.layer->step(next[i]++ % layers, t);
        const auto m = max_over_ranks(t);
        for (int j = 0; j < kStages; ++j) sum[j] += m[j] / static_cast<double>(v.inner);
      }
      v.samples.push_back(sum);
    }
    ++rounds;
  }
  if (r == 0 && interrupt_requested()) report.interrupted = true;
  for (auto& v : variants) measure_alone(*v);

  // Rank 0 alone: the oracle, and the same implementation in one process on all N x T tokens
  // with every rank's threads; the others wait without spinning.
  if (r == 0) {
    p.x = all_x;
    Oracle oracle(p);
    Kernel& single = *variants.front()->kernel;
    const int total_threads = std::min<int>(c.threads * N, std::max(1, cpu_count()));
    std::vector<Result> results;
    for (const auto& v : variants) {
      results.push_back(variant_result(*v, shared, c, ep, T, oracle, p));
    }
    single.hold_experts({});
    single.prepare(p, total_threads);
    int64_t layer_next = 0;
    for (int i = 0; i < std::max(h.warmup, 1); ++i) time_calls(single, 1, layers, layer_next);
    const int64_t reps = inner_reps_for(time_calls(single, 1, layers, layer_next), h.min_sample_s);
    std::vector<double> one;
    const double b = now();
    while (keep_sampling(static_cast<int64_t>(one.size()), now() - b, h)) {
      one.push_back(time_calls(single, reps, layers, layer_next));
    }
    for (Result& res : results) res.ep->single_process_s = median(one);
    // Several variants: each against the first, measured in the same rounds.
    const Result& first = results.front();
    for (size_t i = 1; i < results.size(); ++i) {
      if (results[i].status != Status::kOk || first.status != Status::kOk) continue;
      report.comparisons.push_back({global, variant_label(impl, *variants[i]),
                                    variant_label(impl, *variants.front()),
                                    speedup(results[i].samples_s, first.samples_s, global.seed)});
    }
    for (Result& res : results) report.results.push_back(std::move(res));
  }
  quiet_barrier();
}

}  // namespace

namespace {

char g_ended_line[256];
size_t g_ended_length = 0;

// Async-signal-safe: one write of the line made at start-up, then exit.
void on_ended_by_mpirun(int) {
  const ssize_t written = write(STDERR_FILENO, g_ended_line, g_ended_length);
  (void)written;
  std::_Exit(static_cast<int>(ExitCode::kEnvironment));
}

}  // namespace

std::vector<std::string> resolve_exchanges(const std::vector<std::string>& asked) {
  const bool shared = one_node();
  std::vector<std::string> out;
  for (const std::string& a : asked) {
    if (a != "auto" && a != "window" && a != "alltoallv") {
      throw UsageError(
          fmt::format("unknown --ep-exchange '{}' (known: auto, window, alltoallv)", a));
    }
    if (a == "window" && !shared) {
      throw EnvironmentError(
          "--ep-exchange window needs every rank on one node (shared memory), and these ranks "
          "span several: use --ep-exchange alltoallv or auto");
    }
    const std::string use = a == "auto" ? (shared ? "window" : "alltoallv") : a;
    if (std::find(out.begin(), out.end(), use) == out.end()) out.push_back(use);
  }
  return out;
}

void quiet_barrier() {
  MPI_Request req;
  check_mpi(MPI_Ibarrier(MPI_COMM_WORLD, &req), "MPI_Ibarrier");
  int done = 0;
  while (true) {
    check_mpi(MPI_Test(&req, &done, MPI_STATUS_IGNORE), "MPI_Test");
    if (done) return;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

Session::Session() {
  int provided = 0;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  // Errors come back as codes (check_mpi) instead of aborting inside MPI without a word.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  // When a rank ends (an error it reported through abort(), or killed or crashed without a word)
  // mpirun ends the others with SIGTERM; under `mpirun -q` a rank that died silently would leave
  // nothing on the screen but an exit status.
  const std::string line = fmt::format(
      "moe-bench: error: rank {} of {}: stopped by mpirun after another rank ended (a rank "
      "killed or crashed says nothing itself; mpirun without -q names it)\n",
      rank_, size_);
  const size_t n = std::min(line.size(), sizeof(g_ended_line) - 1);
  std::memcpy(g_ended_line, line.data(), n);
  g_ended_length = n;
  std::signal(SIGTERM, on_ended_by_mpirun);
}

Session::~Session() { MPI_Finalize(); }

void Session::abort(const std::string& message, int code) const {
  fmt::print(stderr, "moe-bench: error: rank {} of {}: {}\n", rank_, size_, message);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

std::string unavailable_reason() { return {}; }

int default_threads(int ranks) { return std::max(1, cpu_count() / std::max(1, ranks)); }

void run_cases(const Session& session, const std::vector<Case>& cases, const std::string& impl,
               const HarnessOptions& options, const EpOptions& ep, Report& report,
               const ProgressFn& progress) {
  report.cache = options.cache;
  const auto total = static_cast<int64_t>(cases.size());
  for (int64_t i = 0; i < total; ++i) {
    if (session.rank() == 0 && progress) {
      progress(i, total, fmt::format("case {} of {}: expert-parallel", i + 1, total));
    }
    run_case(session, cases[static_cast<size_t>(i)], i, impl, options, ep, report);
    if (report.interrupted) break;
  }
  if (session.rank() == 0 && progress) progress(total, total, "done");
}

}  // namespace moe_bench::ep
