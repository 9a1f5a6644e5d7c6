#include "moe_bench/placement.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>

#include "moe_bench/error.hpp"

namespace moe_bench {

std::vector<double> Placement::rank_load(const std::vector<int64_t>& expert_load) const {
  std::vector<double> load(static_cast<size_t>(ranks), 0.0);
  for (size_t e = 0; e < owners.size() && e < expert_load.size(); ++e) {
    const double share =
        static_cast<double>(expert_load[e]) / static_cast<double>(owners[e].size());
    for (int r : owners[e]) load[static_cast<size_t>(r)] += share;
  }
  return load;
}

double max_over_mean(const std::vector<double>& load) {
  if (load.empty()) return 0;
  const double sum = std::accumulate(load.begin(), load.end(), 0.0);
  if (sum <= 0) return 0;
  return *std::max_element(load.begin(), load.end()) / (sum / static_cast<double>(load.size()));
}

Placement place_experts(std::string_view policy, int64_t experts, int ranks,
                        const std::vector<int64_t>& expert_load, int replicas) {
  if (ranks < 1) throw UsageError("expert parallelism needs at least one rank");
  if (replicas < 0) throw UsageError(fmt::format("--replicas {} is below 0", replicas));
  Placement p;
  p.policy = std::string(policy);
  p.ranks = ranks;
  p.owners.assign(static_cast<size_t>(experts), {});
  const auto E = static_cast<size_t>(experts);
  if (policy == "contiguous") {
    const int64_t base = experts / ranks, extra = experts % ranks;
    int64_t e = 0;
    for (int r = 0; r < ranks; ++r) {
      const int64_t n = base + (r < extra ? 1 : 0);
      for (int64_t i = 0; i < n; ++i) p.owners[static_cast<size_t>(e++)] = {r};
    }
    return p;
  }
  if (policy == "round-robin") {
    for (size_t e = 0; e < E; ++e) p.owners[e] = {static_cast<int>(e % static_cast<size_t>(ranks))};
    return p;
  }
  if (policy != "load-aware") {
    throw UsageError(
        fmt::format("unknown placement '{}' (known: contiguous, round-robin, load-aware)", policy));
  }
  if (expert_load.size() != E) throw std::logic_error("place_experts: a load per expert needed");
  // A second copy for the most loaded experts (ties to the lower index); a copy on every rank is
  // the most an expert can use.
  std::vector<size_t> by_load(E);
  std::iota(by_load.begin(), by_load.end(), size_t{0});
  std::stable_sort(by_load.begin(), by_load.end(),
                   [&](size_t a, size_t b) { return expert_load[a] > expert_load[b]; });
  std::vector<int> copies(E, 1);
  const int extra = ranks > 1 ? std::min<int>(replicas, static_cast<int>(E)) : 0;
  for (int i = 0; i < extra; ++i) copies[by_load[static_cast<size_t>(i)]] = 2;
  p.replicas = extra;
  // Longest processing time first: each copy, heaviest first, to the least loaded rank that does
  // not hold this expert yet (ties to the lower rank).
  struct Item {
    size_t expert;
    double load;
  };
  std::vector<Item> items;
  for (size_t e : by_load) {
    for (int c = 0; c < copies[e]; ++c) {
      items.push_back({e, static_cast<double>(expert_load[e]) / copies[e]});
    }
  }
  std::stable_sort(items.begin(), items.end(),
                   [](const Item& a, const Item& b) { return a.load > b.load; });
  std::vector<double> load(static_cast<size_t>(ranks), 0.0);
  std::vector<int> count(static_cast<size_t>(ranks), 0);
  for (const Item& it : items) {
    int best = -1;
    for (int r = 0; r < ranks; ++r) {
      const auto& o = p.owners[it.expert];
      if (std::find(o.begin(), o.end(), r) != o.end()) continue;
      const auto ri = static_cast<size_t>(r);
      if (best < 0 || load[ri] < load[static_cast<size_t>(best)] ||
          (load[ri] == load[static_cast<size_t>(best)] &&
           count[ri] < count[static_cast<size_t>(best)])) {
        best = r;
      }
    }
    p.owners[it.expert].push_back(best);
    load[static_cast<size_t>(best)] += it.load;
    ++count[static_cast<size_t>(best)];
  }
  return p;
}

}  // namespace moe_bench
