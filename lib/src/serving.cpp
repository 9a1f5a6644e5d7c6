#include "moe_bench/serving.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "moe_bench/correctness.hpp"
#include "moe_bench/error.hpp"
#include "moe_bench/stats.hpp"

namespace moe_bench {
namespace {

using Clock = std::chrono::steady_clock;

double parse_number(std::string_view text, std::string_view what) {
  try {
    size_t used = 0;
    const double v = std::stod(std::string(text), &used);
    if (used != text.size()) throw std::invalid_argument("trailing");
    return v;
  } catch (const std::exception&) {
    throw UsageError(fmt::format("{}: '{}' is not a number", what, text));
  }
}

int64_t parse_count(std::string_view text, std::string_view what) {
  const double v = parse_number(text, what);
  if (v != std::floor(v) || v < 1) {
    throw UsageError(fmt::format("{}: '{}' is not a whole number of tokens above 0", what, text));
  }
  return static_cast<int64_t>(v);
}

}  // namespace

ArrivalSpec parse_arrivals(std::string_view spec) {
  ArrivalSpec a;
  if (spec == "poisson") return a;
  if (spec.starts_with("gamma:")) {
    a.kind = ArrivalSpec::Kind::kGamma;
    a.cv = parse_number(spec.substr(6), "--arrivals gamma:CV");
    if (!(a.cv > 0)) throw UsageError("--arrivals gamma:CV needs a CV above 0");
    return a;
  }
  if (spec.starts_with("trace:")) {
    a.kind = ArrivalSpec::Kind::kTrace;
    a.trace_path = std::string(spec.substr(6));
    std::ifstream in(a.trace_path);
    if (!in) throw UsageError(fmt::format("--arrivals: cannot read trace '{}'", a.trace_path));
    std::string line;
    int64_t n = 0;
    double last = 0;
    while (std::getline(in, line)) {
      ++n;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const auto where = [&](const std::string& why) {
        return UsageError(fmt::format("trace {} line {}: {}", a.trace_path, n, why));
      };
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const std::exception&) {
        throw where("not a JSON object");
      }
      if (!j.is_object() || !j.contains("t") || !j["t"].is_number() || !j.contains("tokens") ||
          !j["tokens"].is_number_integer()) {
        throw where("needs {\"t\": seconds, \"tokens\": n}");
      }
      const double t = j["t"].get<double>();
      const int64_t tokens = j["tokens"].get<int64_t>();
      if (!(t >= last)) throw where("times must be 0 or more and not decrease");
      if (tokens < 1) throw where("tokens must be 1 or more");
      a.trace.push_back({t, tokens});
      last = t;
    }
    if (a.trace.empty()) throw UsageError(fmt::format("trace {} has no requests", a.trace_path));
    return a;
  }
  throw UsageError(
      fmt::format("--arrivals '{}' is not poisson, gamma:CV or trace:FILE", std::string(spec)));
}

TokenDist parse_request_tokens(std::string_view spec) {
  TokenDist d;
  if (spec.starts_with("uniform:")) {
    const auto rest = spec.substr(8);
    const auto colon = rest.find(':');
    if (colon == std::string_view::npos) {
      throw UsageError("--request-tokens uniform:A:B needs two bounds");
    }
    d.lo = parse_count(rest.substr(0, colon), "--request-tokens");
    d.hi = parse_count(rest.substr(colon + 1), "--request-tokens");
    if (d.hi < d.lo) throw UsageError("--request-tokens uniform:A:B needs A <= B");
    return d;
  }
  d.lo = d.hi = parse_count(spec, "--request-tokens");
  return d;
}

std::vector<Request> schedule_requests(const ArrivalSpec& arrivals, double rate, double duration_s,
                                       const TokenDist& tokens, uint64_t seed) {
  std::vector<Request> out;
  if (arrivals.kind == ArrivalSpec::Kind::kTrace) {
    for (const auto& e : arrivals.trace) {
      if (e.t_s >= duration_s) break;
      out.push_back({e.t_s, e.tokens});
    }
    return out;
  }
  std::mt19937_64 gen(seed);
  std::uniform_int_distribution<int64_t> size(tokens.lo, tokens.hi);
  // Gamma gaps of shape 1/CV^2 and mean 1/rate have that CV; shape 1 is the exponential.
  const double shape =
      arrivals.kind == ArrivalSpec::Kind::kGamma ? 1.0 / (arrivals.cv * arrivals.cv) : 1.0;
  std::gamma_distribution<double> gap(shape, 1.0 / (rate * shape));
  double t = gap(gen);
  while (t < duration_s) {
    out.push_back({t, size(gen)});
    t += gap(gen);
  }
  return out;
}

ServingInfo serve_requests(const std::vector<Request>& requests, const BatcherOptions& batcher,
                           double slo_s, const std::function<void(int64_t)>& run_batch,
                           uint64_t seed, std::vector<double>* batch_seconds) {
  const size_t n = requests.size();
  const double duration = n == 0 ? 0 : requests.back().arrival_s;
  const double drain =
      batcher.drain_limit_s > 0 ? batcher.drain_limit_s : std::max(1.0, 2.0 * duration);
  std::vector<double> latency(n, 0.0), queue(n, 0.0);
  std::vector<int64_t> batch_tokens;
  double compute_total = 0, sleep_total = 0, last_end = 0;
  size_t served = 0, arrived = 0;
  // Start a millisecond ahead, so the first arrival is not already late.
  const auto start = Clock::now() + std::chrono::milliseconds(1);
  std::this_thread::sleep_until(start);
  auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };
  auto sleep_to = [&](double t) {
    const double before = elapsed();
    if (t > before) {
      std::this_thread::sleep_until(
          start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(t)));
    }
    sleep_total += elapsed() - before;
  };
  while (served < n) {
    const double now = elapsed();
    if (now > duration + drain) break;
    while (arrived < n && requests[arrived].arrival_s <= now) ++arrived;
    if (served == arrived) {  // nothing waiting: sleep until the next arrival
      sleep_to(requests[arrived].arrival_s);
      continue;
    }
    // The batch: waiting requests in arrival order while they fit.
    int64_t tokens = 0;
    size_t end = served;
    while (end < arrived && tokens + requests[end].tokens <= batcher.max_batch_tokens) {
      tokens += requests[end].tokens;
      ++end;
    }
    const bool full = end < arrived || tokens == batcher.max_batch_tokens ||
                      (end < n && tokens + requests[end].tokens > batcher.max_batch_tokens);
    const double deadline = requests[served].arrival_s + batcher.max_wait_s;
    if (!full && arrived < n && now < deadline) {
      sleep_to(std::min(requests[arrived].arrival_s, deadline));
      continue;
    }
    const double begin = elapsed();
    run_batch(tokens);
    const double done = elapsed();
    compute_total += done - begin;
    if (batch_seconds != nullptr) batch_seconds->push_back(done - begin);
    batch_tokens.push_back(tokens);
    for (size_t i = served; i < end; ++i) {
      latency[i] = done - requests[i].arrival_s;
      queue[i] = begin - requests[i].arrival_s;
    }
    served = end;
    last_end = done;
  }
  const double wall = elapsed();

  ServingInfo s;
  s.requests = static_cast<int64_t>(n);
  s.unserved = static_cast<int64_t>(n - served);
  s.slo_s = slo_s;
  latency.resize(served);
  queue.resize(served);
  if (served > 0) {
    const double window = last_end - requests.front().arrival_s;
    s.achieved_rps = window > 0 ? static_cast<double>(served) / window : 0;
    int64_t tokens = 0;
    for (size_t i = 0; i < served; ++i) tokens += requests[i].tokens;
    s.tokens_per_s = window > 0 ? static_cast<double>(tokens) / window : 0;
    s.p50_s = quantile(latency, 0.50);
    s.p90_s = quantile(latency, 0.90);
    s.p95_s = quantile(latency, 0.95);
    s.p99_s = quantile(latency, 0.99);
    s.max_s = *std::max_element(latency.begin(), latency.end());
    s.queue_p50_s = quantile(queue, 0.50);
    s.queue_p99_s = quantile(queue, 0.99);
    // Bootstrap percentile interval of the P99 (seeded, 1000 resamples).
    std::mt19937_64 gen(seed);
    std::uniform_int_distribution<size_t> pick(0, served - 1);
    std::vector<double> p99s, resample(served);
    for (int b = 0; b < 1000; ++b) {
      for (auto& x : resample) x = latency[pick(gen)];
      p99s.push_back(quantile(resample, 0.99));
    }
    s.p99_ci_s = {quantile(p99s, 0.025), quantile(p99s, 0.975)};
  }
  s.batches = static_cast<int64_t>(batch_tokens.size());
  if (!batch_tokens.empty()) {
    double sum = 0;
    for (int64_t b : batch_tokens) sum += static_cast<double>(b);
    s.batch_tokens_mean = sum / static_cast<double>(batch_tokens.size());
    s.batch_tokens_max = *std::max_element(batch_tokens.begin(), batch_tokens.end());
    s.compute_mean_s = compute_total / static_cast<double>(batch_tokens.size());
  }
  s.duration_s = duration;
  s.meets_slo = served == n && n > 0 && s.p99_s <= slo_s;
  // What the batcher itself took: the wall time neither computing nor sleeping.
  s.batcher_overhead_pct =
      wall > 0 ? 100.0 * std::max(0.0, wall - compute_total - sleep_total) / wall : 0;
  return s;
}

LayerServer::LayerServer(std::unique_ptr<Kernel> kernel, const Case& c, int64_t layers,
                         const ArrivalSpec& arrivals, const TokenDist& sizes,
                         const BatcherOptions& batcher, double duration_s, double slo_s)
    : c_(c),
      arrivals_(arrivals),
      sizes_(sizes),
      batcher_(batcher),
      duration_s_(duration_s),
      slo_s_(slo_s),
      kernel_(std::move(kernel)),
      layers_(layers) {
  problem_ = make_problem(c.shape, c.dtype, c.seed, layers);
  kernel_->prepare(problem_, c.threads);
  for (int i = 0; i < 2; ++i) kernel_->run_prefix(0, c.shape.tokens);  // warm-up
}

double LayerServer::capacity_rps() {
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 5; ++i) kernel_->run_prefix(i % layers_, c_.shape.tokens);
  const double per_batch =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / 5;
  return static_cast<double>(c_.shape.tokens) / sizes_.mean() / std::max(per_batch, 1e-9);
}

Result LayerServer::serve(double rate) {
  Result r;
  r.kase = c_;
  r.impl = kernel_->info().name;
  r.layers = layers_;
  const auto requests = schedule_requests(arrivals_, rate, duration_s_, sizes_, c_.seed);
  if (requests.empty()) {
    r.status = Status::kSkipped;
    r.reason = fmt::format("no request arrives within {} s at {} per second", duration_s_, rate);
    return r;
  }
  // The first batch runs layer 0 and is kept for the oracle, checked after the run so the
  // check takes no time from serving; later batches rotate the cold layers.
  int64_t next = 0, first_tokens = 0;
  std::vector<float> first_y;
  std::vector<int32_t> first_sel;
  std::vector<double> batch_s;
  ServingInfo info = serve_requests(
      requests, batcher_, slo_s_,
      [&](int64_t tokens) {
        kernel_->run_prefix(next++ % layers_, tokens);
        if (first_tokens == 0) {
          first_tokens = tokens;
          first_y.assign(kernel_->output().begin(), kernel_->output().end());
          first_sel.assign(kernel_->selected_experts().begin(), kernel_->selected_experts().end());
        }
      },
      c_.seed, &batch_s);
  info.rate_rps = arrivals_.kind == ArrivalSpec::Kind::kTrace
                      ? static_cast<double>(requests.size()) / std::max(info.duration_s, 1e-9)
                      : rate;
  r.status = Status::kOk;
  if (first_tokens > 0) check_first(first_tokens, first_y, first_sel, r);
  if (r.correctness && !r.correctness->pass) {
    r.status = Status::kFailed;
    r.reason = fmt::format(
        "the first batch ({} tokens) differs from the FP64 oracle (max rel "
        "err {:.3g}, tolerance {:.3g})",
        first_tokens, r.correctness->max_rel_err, r.correctness->tolerance);
  }
  r.samples_s = batch_s;
  if (!batch_s.empty()) r.stats = summarize(batch_s, c_.seed);
  r.serving = info;
  return r;
}

// The oracle of a batch of `tokens` tokens: the same layer generated for that many tokens (the
// generator makes token t's row from (seed, t) alone, so it is this problem's first rows). With
// quantized weights the batch is also measured against the unquantized layer, as `run` does.
void LayerServer::check_first(int64_t tokens, const std::vector<float>& y,
                              const std::vector<int32_t>& selected, Result& r) {
  Shape s = c_.shape;
  s.tokens = tokens;
  const Problem small = make_problem(s, c_.dtype, c_.seed, 1);
  if (!std::equal(small.x.begin(), small.x.end(), problem_.x.begin())) {
    throw std::logic_error("a smaller problem does not start with the same tokens");
  }
  r.correctness = Oracle(small).check(y, selected, kernel_->extra_roundings(s, c_.dtype),
                                      kernel_->quantizes_activations());
  if (s.weights != WeightFormat::kSame) {
    const Problem twin = unquantized_twin(small);
    r.quantization_error = Oracle(twin).check(y, selected);
  }
}

}  // namespace moe_bench
