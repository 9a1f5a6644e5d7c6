#include "moe_bench/side_by_side.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <omp.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <thread>

#include "moe_bench/correctness.hpp"
#include "moe_bench/error.hpp"
#include "moe_bench/problem.hpp"
#include "moe_bench/report.hpp"
#include "moe_bench/stats.hpp"
#include "moe_bench/sysinfo.hpp"

namespace moe_bench {
namespace {

using Clock = std::chrono::steady_clock;

std::string one_line(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}

std::string_view trimmed(const char* line) {
  std::string_view s(line);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) {
    s.remove_suffix(1);
  }
  return s;
}

// Runs this thread on `cpu` alone, or on every CPU of `all` when cpu < 0.
void run_on(int cpu, const cpu_set_t& all) {
  cpu_set_t set = all;
  if (cpu >= 0) {
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
  }
  sched_setaffinity(0, sizeof set, &set);
}

// One implementation held ready in a worker.
struct Held {
  std::string impl;
  std::unique_ptr<Kernel> kernel;
  bool ok = false;
  int64_t inner_reps = 1;
  int64_t next_layer = 0;
};

double sample_once(Held& h, int64_t layers, double slowdown) {
  const double per_call = time_calls(*h.kernel, h.inner_reps, layers, h.next_layer);
  if (slowdown > 0) {
    const double seconds = per_call * static_cast<double>(h.inner_reps);
    const auto until = Clock::now() + std::chrono::duration<double>(seconds * slowdown);
    while (Clock::now() < until) {
    }
  }
  return per_call * (1 + slowdown);
}

// Prepares, checks and calibrates one implementation; writes its `impl ...` line.
void hold(Held& h, const Case& c, const Problem& problem, const Oracle& oracle, int64_t layers,
          const HarnessOptions& o, std::FILE* out) {
  if (auto why = h.kernel->unavailable_reason()) {
    fmt::print(out, "impl {} skipped {}\n", h.impl, one_line(*why));
    return;
  }
  if (auto why = h.kernel->refuses(c.shape, c.dtype)) {
    fmt::print(out, "impl {} skipped {}\n", h.impl, one_line(*why));
    return;
  }
  if (h.kernel->self_timed()) {
    fmt::print(out, "impl {} skipped runs in a process of its own, not sampled side by side\n",
               h.impl);
    return;
  }
  try {
    h.kernel->prepare(problem, c.threads);
    h.kernel->run(0);
    const Correctness k = oracle.check(*h.kernel);
    if (!k.pass) {
      fmt::print(out, "impl {} failed output differs from the FP64 oracle (max rel err {:.3g})\n",
                 h.impl, k.max_rel_err);
      return;
    }
    for (int i = 0; i < o.warmup; ++i) h.kernel->run(h.next_layer++ % layers);
    h.inner_reps = inner_reps_for(sample_once(h, layers, 0), o.min_sample_s);
    h.ok = true;
    fmt::print(out, "impl {} ok {} {:.17g} {:.17g}\n", h.impl, h.inner_reps, k.max_rel_err,
               k.tolerance);
  } catch (const std::exception& e) {
    fmt::print(out, "impl {} failed {} threw: {}\n", h.impl, h.impl, one_line(e.what()));
  }
}

// A worker process and the pipes to it.
class WorkerProcess {
 public:
  WorkerProcess(const std::string& binary, const std::vector<std::string>& args, std::string role)
      : role_(std::move(role)), binary_(binary) {
    // A worker that dies must be an error message here, not a SIGPIPE that kills this process.
    std::signal(SIGPIPE, SIG_IGN);
    int to_child[2], from_child[2];
    if (pipe(to_child) != 0 || pipe(from_child) != 0) {
      throw EnvironmentError(fmt::format("cannot start {}: no pipe", role_));
    }
    std::vector<std::string> argv_s{binary};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = fork();
    if (pid_ < 0) throw EnvironmentError(fmt::format("cannot start {}: fork failed", role_));
    if (pid_ == 0) {
      dup2(to_child[0], STDIN_FILENO);
      dup2(from_child[1], STDOUT_FILENO);
      for (int fd : {to_child[0], to_child[1], from_child[0], from_child[1]}) close(fd);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(to_child[0]);
    close(from_child[1]);
    fcntl(to_child[1], F_SETFD, FD_CLOEXEC);
    fcntl(from_child[0], F_SETFD, FD_CLOEXEC);
    to_ = fdopen(to_child[1], "w");
    from_ = fdopen(from_child[0], "r");
  }
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;
  ~WorkerProcess() {
    if (to_ != nullptr) {
      std::fputs("quit\n", to_);
      std::fclose(to_);
    }
    if (from_ != nullptr) std::fclose(from_);
    int status = 0;
    waitpid(pid_, &status, 0);
  }

  void send(const std::string& line) {
    if (std::fputs((line + "\n").c_str(), to_) < 0 || std::fflush(to_) != 0) {
      throw EnvironmentError(fmt::format("{} ({}) stopped taking commands", role_, binary_));
    }
  }
  std::string receive() {
    char buf[4096];
    if (std::fgets(buf, sizeof buf, from_) == nullptr) {
      throw EnvironmentError(fmt::format("{} ({}) exited before answering", role_, binary_));
    }
    std::string line(trimmed(buf));
    if (line.starts_with("error ")) {
      throw EnvironmentError(fmt::format("{} ({}): {}", role_, binary_, line.substr(6)));
    }
    return line;
  }
  const std::string& role() const { return role_; }
  const std::string& binary() const { return binary_; }

 private:
  std::string role_, binary_;
  pid_t pid_ = -1;
  std::FILE* to_ = nullptr;
  std::FILE* from_ = nullptr;
};

void expect_hello(WorkerProcess& w, size_t cases) {
  std::string hello;
  try {
    hello = w.receive();
  } catch (const EnvironmentError&) {
    hello = "nothing";
  }
  int protocol = 0;
  size_t planned = 0;
  if (std::sscanf(hello.c_str(), "moe-bench-worker %d %zu", &protocol, &planned) != 2 ||
      protocol < kOldestWorkerProtocol || protocol > kWorkerProtocol) {
    throw EnvironmentError(fmt::format(
        "{} ({}) does not speak worker protocol {} to {} (it answered '{}'): build the reference "
        "from a commit that has `moe-bench worker`",
        w.role(), w.binary(), kOldestWorkerProtocol, kWorkerProtocol, hello));
  }
  if (planned != cases) {
    throw EnvironmentError(fmt::format("{} planned {} cases for these flags, this build {}",
                                       w.role(), planned, cases));
  }
}

// One worker's answer to `case I`: a result per implementation, and the fingerprint of the
// problem it generated (empty from a protocol 3 worker).
struct Prepared {
  std::vector<Result> results;
  std::string inputs;
};

Prepared read_case(WorkerProcess& w, const Case& c, const std::string& label) {
  Prepared prepared;
  std::vector<Result>& results = prepared.results;
  for (;;) {
    const std::string line = w.receive();
    if (line.starts_with("inputs ")) {
      prepared.inputs = line.substr(7);
      continue;
    }
    if (line.starts_with("ready ")) {
      int64_t layers = 1;
      char rest[1024] = {};
      std::sscanf(line.c_str(), "ready %ld %1023[^\n]", &layers, rest);
      if (label != rest) {
        throw EnvironmentError(
            fmt::format("{} prepared '{}' where this build prepared '{}'", w.role(), rest, label));
      }
      for (Result& r : results) r.layers = layers;
      return prepared;
    }
    char name[128] = {}, status[16] = {};
    int used = 0;
    if (std::sscanf(line.c_str(), "impl %127s %15s %n", name, status, &used) < 2) {
      throw EnvironmentError(fmt::format("{} answered '{}'", w.role(), line));
    }
    Result r;
    r.kase = c;
    r.impl = name;
    const std::string detail = line.substr(static_cast<size_t>(used));
    if (std::string_view(status) == "ok") {
      Correctness k;
      k.pass = true;
      std::sscanf(detail.c_str(), "%ld %lg %lg", &r.inner_reps, &k.max_rel_err, &k.tolerance);
      r.correctness = k;
      r.status = Status::kOk;
    } else {
      r.status = std::string_view(status) == "failed" ? Status::kFailed : Status::kSkipped;
      r.reason = detail;
    }
    results.push_back(std::move(r));
  }
}

}  // namespace

int serve_worker(const std::vector<Case>& cases, const std::vector<std::string>& impls,
                 const HarnessOptions& o, const InjectedSlowdown& slowdown, std::FILE* in,
                 std::FILE* out) {
  fmt::print(out, "moe-bench-worker {} {}\n", kWorkerProtocol, cases.size());
  std::fflush(out);
  cpu_set_t all_cpus;
  sched_getaffinity(0, sizeof all_cpus, &all_cpus);
  std::optional<Problem> problem;
  std::vector<Held> held;
  int64_t layers = 1;
  char line[1024];
  while (std::fgets(line, sizeof line, in) != nullptr) {
    const std::string_view cmd = trimmed(line);
    if (cmd == "quit") break;
    try {
      if (cmd.starts_with("case ")) {
        char* end = nullptr;
        const size_t i = std::strtoull(cmd.data() + 5, &end, 10);
        if (i >= cases.size()) throw UsageError(fmt::format("no case {}", i));
        const int64_t asked = std::strtoll(end, &end, 10);
        const int pin = static_cast<int>(std::strtol(end, nullptr, 10));
        const Case& c = cases[i];
        held.clear();
        problem.reset();
        // Data and the oracle on every core (set-up is not timed), then the case's threads.
        run_on(-1, all_cpus);
        omp_set_num_threads(cpu_count());
        layers = asked > 0 ? asked : layers_for(c, o, impls);
        problem.emplace(make_problem(c.shape, c.dtype, c.seed, layers));
        fmt::print(out, "inputs {:016x}\n", fingerprint(*problem));
        const Oracle oracle(*problem, 0, o.oracle_flop_budget);
        omp_set_num_threads(c.threads);
        set_blas_threads(c.threads);
        run_on(c.threads == 1 ? pin : -1, all_cpus);
        for (const std::string& impl : impls) {
          Held h;
          h.impl = impl;
          h.kernel = o.make(impl);
          hold(h, c, *problem, oracle, layers, o, out);
          held.push_back(std::move(h));
        }
        fmt::print(out, "ready {} {}\n", layers, case_label(c));
      } else if (cmd.starts_with("sample ")) {
        const std::string_view name = cmd.substr(7);
        auto it = std::find_if(held.begin(), held.end(),
                               [&](const Held& h) { return h.ok && h.impl == name; });
        if (it == held.end()) throw UsageError(fmt::format("'{}' is not ready", name));
        const double slow = slowdown.impl == name ? slowdown.fraction : 0.0;
        fmt::print(out, "{:.17g}\n", sample_once(*it, layers, slow));
      } else {
        throw UsageError(fmt::format("unknown command '{}'", cmd));
      }
    } catch (const std::exception& e) {
      fmt::print(out, "error {}\n", one_line(e.what()));
      std::fflush(out);
      return static_cast<int>(ExitCode::kUsage);
    }
    std::fflush(out);
  }
  return 0;
}

std::pair<Report, Report> run_side_by_side(const std::vector<Case>& cases, const HarnessOptions& o,
                                           const SideBySideOptions& sbs,
                                           const ProgressFn& progress) {
  std::vector<std::string> args{"worker"};
  args.insert(args.end(), sbs.worker_args.begin(), sbs.worker_args.end());
  std::vector<std::string> new_args = args;
  if (sbs.slowdown.fraction > 0) {
    new_args.insert(new_args.end(), {"--inject-slowdown", fmt::format("{}:{}", sbs.slowdown.impl,
                                                                      sbs.slowdown.fraction)});
  }
  WorkerProcess old_w(sbs.old_binary, args, "the old build");
  WorkerProcess new_w(sbs.new_binary, new_args, "the new build");
  expect_hello(old_w, cases.size());
  expect_hello(new_w, cases.size());

  const int pin = std::max(0, sched_getcpu());
  Report old_run, new_run;
  old_run.cache = new_run.cache = o.cache;
  std::vector<size_t> order = sbs.only;
  if (order.empty()) {
    order.resize(cases.size());
    std::iota(order.begin(), order.end(), size_t{0});
  }
  const auto total = static_cast<int64_t>(order.size());
  for (int64_t k = 0; k < total; ++k) {
    if (interrupt_requested()) {
      old_run.interrupted = new_run.interrupted = true;
      break;
    }
    const size_t i = order[static_cast<size_t>(k)];
    if (i >= cases.size()) throw UsageError(fmt::format("no case {}", i));
    const Case& c = cases[i];
    const std::string label = case_label(c);
    if (progress) progress(k, total, fmt::format("case {} of {}", k + 1, total));
    // Both prepare at once (setup is not timed), rotating the layers this build's policy gives
    // the pair of them; then they take turns.
    const int64_t layers = layers_for(c, o, sbs.impls, 2);
    // One-thread cases run both builds on the same core, the one this process started on.
    old_w.send(fmt::format("case {} {} {}", i, layers, pin));
    new_w.send(fmt::format("case {} {} {}", i, layers, pin));
    Prepared old_case = read_case(old_w, c, label);
    Prepared new_case = read_case(new_w, c, label);
    // Times of different work are not a comparison: a change of the data generator changes the
    // routing, and with it each expert's rows.
    if (!old_case.inputs.empty() && !new_case.inputs.empty() &&
        old_case.inputs != new_case.inputs) {
      throw EnvironmentError(fmt::format(
          "the old and the new build generated different inputs for {} (fingerprints {} and {}): "
          "their times would compare different work; compare against a build with the same data "
          "generator",
          label, old_case.inputs, new_case.inputs));
    }
    std::vector<Result>& old_results = old_case.results;
    std::vector<Result>& new_results = new_case.results;

    struct Turn {
      WorkerProcess* worker;
      Result* result;
    };
    std::vector<Turn> turns;
    for (Result& r : old_results) {
      if (r.status == Status::kOk) turns.push_back({&old_w, &r});
    }
    for (Result& r : new_results) {
      if (r.status == Status::kOk) turns.push_back({&new_w, &r});
    }
    std::mt19937_64 rng(o.seed ^ (static_cast<uint64_t>(i + 1) * 0x9e3779b9ULL));
    const auto settle = std::chrono::duration<double>(o.settle_s);
    const Result* last = nullptr;
    const auto start = Clock::now();
    for (int64_t round = 0; !turns.empty(); ++round) {
      if (!keep_sampling(round, std::chrono::duration<double>(Clock::now() - start).count(), o)) {
        break;
      }
      std::shuffle(turns.begin(), turns.end(), rng);
      for (Turn& t : turns) {
        if (interrupt_requested()) break;
        if (t.result != last) std::this_thread::sleep_for(settle);
        t.worker->send("sample " + t.result->impl);
        t.result->samples_s.push_back(std::strtod(t.worker->receive().c_str(), nullptr));
        last = t.result;
      }
      if (interrupt_requested()) {
        old_run.interrupted = new_run.interrupted = true;
        break;
      }
      if (round == 0 && progress) {
        progress(k, total, fmt::format("case {} of {}: timing", k + 1, total));
      }
    }
    for (auto* results : {&old_results, &new_results}) {
      for (Result& r : *results) {
        if (r.status == Status::kOk && r.samples_s.empty()) {
          r.status = Status::kSkipped;
          r.reason = "interrupted before its first sample";
        }
        if (r.status == Status::kOk) r.stats = summarize(r.samples_s, o.seed);
      }
    }
    old_run.results.insert(old_run.results.end(), old_results.begin(), old_results.end());
    new_run.results.insert(new_run.results.end(), new_results.begin(), new_results.end());
  }
  if (progress) progress(total, total, "done");
  return {std::move(old_run), std::move(new_run)};
}

}  // namespace moe_bench
