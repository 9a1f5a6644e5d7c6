#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

#include "moe_bench/error.hpp"
#include "moe_bench/kernel.hpp"

namespace moe_bench {

std::vector<std::string> Registry::names() const {
  std::vector<std::string> out;
  for (const auto& e : entries_) out.emplace_back(e.name);
  return out;
}

std::vector<std::string> Registry::default_names() const {
  std::vector<std::string> out;
  for (const auto& e : entries_) {
    if (e.runs_by_default) out.emplace_back(e.name);
  }
  return out;
}

int Registry::extra_weight_copies(const std::vector<std::string>& impls) const {
  int copies = 0;
  for (const auto& name : impls) copies = std::max(copies, make(name)->info().weight_copies);
  return copies;
}

std::unique_ptr<Kernel> Registry::make(std::string_view name) const {
  for (const auto& e : entries_) {
    if (name == e.name) return e.make();
  }
  throw UsageError(
      fmt::format("unknown implementation '{}' (known: {})", name, fmt::join(names(), ", ")));
}

std::optional<std::string> Kernel::refuses(const Shape& shape, Dtype dtype) const {
  const KernelInfo about = info();
  if (std::find(about.weights.begin(), about.weights.end(), shape.weights) == about.weights.end()) {
    if (shape.weights == WeightFormat::kSame) {
      return fmt::format("{} runs quantized weights only (--weights int8 or q4)", about.name);
    }
    return fmt::format("{} has no {} weight kernels", about.name, to_string(shape.weights));
  }
  return can_run(shape, dtype);
}

void Kernel::run_prefix(int64_t, int64_t) {
  throw std::logic_error(info().name + " cannot run a batch of another size than prepared");
}

void Kernel::route(int64_t, int64_t, std::span<int32_t>, std::span<float>) {
  throw std::logic_error(info().name + " does not split routing from its experts");
}

void Kernel::run_routed(int64_t, const RoutedRows&, std::span<float>) {
  throw std::logic_error(info().name + " does not split routing from its experts");
}

void Kernel::hold_experts(std::vector<uint8_t>) {
  throw std::logic_error(info().name + " does not split routing from its experts");
}

DeviceDescription Registry::device() const {
  for (const auto& e : entries_) {
    if (auto d = e.make()->device()) return *d;
  }
  return {"no device implementation in this build", false, std::nullopt};
}

std::optional<DevicePeaks> Registry::device_peaks_for(const std::vector<std::string>& impls) const {
  for (const std::string& impl : impls) {
    auto kernel = make(impl);
    if (kernel->unavailable_reason()) continue;
    if (auto peaks = kernel->measure_device_peaks()) return peaks;
  }
  return std::nullopt;
}

}  // namespace moe_bench
