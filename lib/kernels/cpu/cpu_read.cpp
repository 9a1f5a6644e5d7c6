// read_floor: the time a forward of `cpu` would take if reading its weights were all it did. It
// prepares `cpu`, runs it once to learn which experts the case's tokens reach, and then each run
// reads those bytes of the layer (weights_read: the router, the touched experts' packed weights
// and scales) with the read ceiling's loops, split evenly over the same threads. Timed beside
// `cpu` in one run, `cpu`'s speed-up over it is the share of the achievable read rate that `cpu`
// reaches on its own bytes, with an interval, whatever the machine's bandwidth does meanwhile.
// Its output is `cpu`'s, computed once at set-up: it is checked like any result, but says
// nothing of its own about the layer.
#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <vector>

#include "cpu_moe.hpp"
#include "moe_bench/roofline.hpp"

namespace moe_bench::cpu {
namespace {

// A cache line: each thread's share starts on one.
constexpr int64_t kLine = 64;

class ReadFloorKernel final : public Kernel {
 public:
  KernelInfo info() const override {
    KernelInfo i = cpu_->info();
    i.name = "read_floor";
    i.description =
        "a bound, not an MoE layer: reads the bytes cpu's forward reads of its weights (router, "
        "the touched experts' packed weights and scales) with the read ceiling's loops, and "
        "nothing else; its output is cpu's, computed at set-up";
    return i;
  }
  std::optional<std::string> unavailable_reason() const override {
    return cpu_->unavailable_reason();
  }
  std::optional<std::string> can_run(const Shape& shape, Dtype dtype) const override {
    return cpu_->can_run(shape, dtype);
  }

  void prepare(const Problem& p, int threads) override {
    threads_ = std::max(threads, 1);
    const Shape& s = p.shape;
    const int64_t T = s.tokens, k = s.top_k;
    // Only the experts the case's tokens reach are packed, since only their bytes are read: the
    // router alone finds them (a cpu that holds no expert packs nothing). On a machine with a
    // 260 MiB L3, packing every expert of ten 400 MB layers took 7 s of each decode case. With
    // a capacity factor, run() decides the drops, so every expert is packed and run as before.
    std::vector<uint8_t> touched;
    std::vector<int32_t> expert(static_cast<size_t>(T * k));
    std::vector<float> weight(expert.size());
    if (s.capacity_factor <= 0) {
      cpu_->hold_experts(std::vector<uint8_t>(static_cast<size_t>(s.experts), 0));
      cpu_->prepare(p, threads_);
      cpu_->route(0, T, expert, weight);
      touched.assign(static_cast<size_t>(s.experts), 0);
      for (const int32_t e : expert) touched[static_cast<size_t>(e)] = 1;
    }
    cpu_->hold_experts(touched);
    cpu_->prepare(p, threads_);
    if (touched.empty()) {
      cpu_->run(0);
      const auto y = cpu_->output();
      const auto selected = cpu_->selected_experts();
      y_.assign(y.begin(), y.end());
      selected_.assign(selected.begin(), selected.end());
    } else {
      // Every assignment and every row (for shared experts) kept: the layer's output, which
      // run() rounds to the dtype as this does.
      const std::vector<uint8_t> all(expert.size(), 1), every_row(static_cast<size_t>(T), 1);
      y_.assign(static_cast<size_t>(T * s.d_model), 0.0f);
      cpu_->run_routed(0, RoutedRows{p.x, T, k, expert, weight, all, every_row}, y_);
      for (float& v : y_) v = round_to(p.dtype, v);
      selected_ = std::move(expert);
    }
    // Every layer is a copy of the first (make_problem), so the same experts are touched in each.
    shares_.assign(p.layers.size(), {});
    bytes_ = 0;
    for (size_t l = 0; l < p.layers.size(); ++l) {
      const auto spans = weights_read(*cpu_, static_cast<int64_t>(l));
      int64_t total = 0;
      for (const auto& span : spans) total += static_cast<int64_t>(span.size());
      if (l == 0) bytes_ = total;
      shares_[l] = split(spans, total);
    }
    // The fastest of the ceiling's patterns on these bytes: a round reads every layer once
    // (cold, as the run will), the patterns take turns for kRounds rounds each, and each keeps
    // its median round (one round alone was at the mercy of the VM's noise).
    constexpr int kRounds = 3;
    const std::array<ReadPattern, 3> patterns{ReadPattern::kInterleaved, ReadPattern::kPrefetched,
                                              ReadPattern::kPrefetchedStreams};
    std::array<std::vector<double>, 3> rounds;
    for (int round = 0; round < kRounds; ++round) {
      for (size_t i = 0; i < patterns.size(); ++i) {
        pattern_ = patterns[i];
        const auto start = std::chrono::steady_clock::now();
        for (size_t l = 0; l < shares_.size(); ++l) run(static_cast<int64_t>(l));
        rounds[i].push_back(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      }
    }
    size_t best = 0;
    for (size_t i = 0; i < rounds.size(); ++i) {
      std::sort(rounds[i].begin(), rounds[i].end());
      if (rounds[i][kRounds / 2] < rounds[best][kRounds / 2]) best = i;
    }
    pattern_ = patterns[best];
  }

  std::string notes() const override {
    return fmt::format("reads {:.2f} MB a forward, {} (the faster at set-up); cpu: {}",
                       static_cast<double>(bytes_) * 1e-6, to_string(pattern_), cpu_->notes());
  }

  void run(int64_t layer) override {
    const auto& shares = shares_[static_cast<size_t>(layer)];
    float total = 0;
#pragma omp parallel num_threads(threads_) reduction(+ : total)
    {
      for (const auto& s : shares[static_cast<size_t>(omp_get_thread_num())]) {
        total += read_bytes(s.data(), static_cast<int64_t>(s.size()), pattern_);
      }
    }
    sink_ = total;
  }

  std::span<const float> output() const override { return y_; }
  std::span<const int32_t> selected_experts() const override { return selected_; }

 private:
  // The spans cut into threads_ shares of about total / threads_ bytes each, on line boundaries.
  std::vector<std::vector<std::span<const char>>> split(
      const std::vector<std::span<const char>>& spans, int64_t total) const {
    std::vector<std::vector<std::span<const char>>> out(static_cast<size_t>(threads_));
    const int64_t per = (total / threads_ + kLine - 1) / kLine * kLine;
    size_t t = 0;
    int64_t room = per;
    for (std::span<const char> s : spans) {
      while (!s.empty()) {
        const int64_t take = t + 1 == out.size() ? std::ssize(s) : std::min(room, std::ssize(s));
        out[t].push_back(s.first(static_cast<size_t>(take)));
        s = s.subspan(static_cast<size_t>(take));
        room -= take;
        if (room == 0 && t + 1 < out.size()) {
          ++t;
          room = per;
        }
      }
    }
    return out;
  }

  std::unique_ptr<Kernel> cpu_ = make_kernel();
  int threads_ = 1;
  ReadPattern pattern_ = ReadPattern::kPrefetched;
  int64_t bytes_ = 0;
  std::vector<std::vector<std::vector<std::span<const char>>>> shares_;  // [layer][thread]
  std::vector<float> y_;
  std::vector<int32_t> selected_;
  volatile float sink_ = 0;
};

}  // namespace

std::unique_ptr<Kernel> make_read_floor_kernel() { return std::make_unique<ReadFloorKernel>(); }

}  // namespace moe_bench::cpu
