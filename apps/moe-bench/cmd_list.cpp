#include <fmt/format.h>

#include "case_options.hpp"
#include "commands.hpp"
#include "moe_bench/kernel.hpp"
#include "moe_bench/presets.hpp"
#include "moe_bench/sysinfo.hpp"
#include "registry.hpp"

namespace moe_bench::cli {

Command add_list_command(CLI::App& app) {
  auto* sub =
      app.add_subcommand("list", "List implementations (and whether they run here) and presets");
  add_max_isa_option(sub);
  return {sub, [] {
            const std::string cap = isa_cap_note();
            fmt::print("Instruction sets: {}\n",
                       cap.empty()
                           ? std::string(to_string(isa_of(cpu_features()))) + ", this CPU's own"
                           : cap);
            fmt::print("Implementations:\n");
            for (const auto& entry : registry()) {
              auto kernel = entry.make();
              KernelInfo info = kernel->info();
              auto why = kernel->unavailable_reason();
              fmt::print("  {:<18} {:<6} available here: {:<3} {}\n", info.name, info.backend,
                         why ? "no" : "yes", why ? "(" + *why + ")" : "");
              fmt::print("                     {}\n", info.description);
            }
            const DeviceDescription device = registry().device();
            fmt::print("\nCUDA: {}{}\n", device.summary,
                       device.available ? "" : "; CUDA implementations cannot run here");
            BlasInfo blas = blas_info();
            fmt::print("OpenBLAS: {} kernel (chosen by {}), {} threads\n", blas.core,
                       blas.chosen_by, blas.threads);

            fmt::print("\nPresets (--preset NAME):\n");
            fmt::print("  {:<16} {:>7} {:>6} {:>7} {:>5} {:>6}  {:<10} {}\n", "name", "d_model",
                       "d_ff", "experts", "top-k", "shared", "activation", "routing");
            for (const Preset& p : presets()) {
              const Shape& s = p.shape;
              fmt::print(
                  "  {:<16} {:>7} {:>6} {:>7} {:>5} {:>6}  {:<10} {}{}\n", p.name, s.d_model,
                  s.d_ff, s.experts, s.top_k, s.shared_experts, to_string(s.activation),
                  routing_label(s.routing),
                  s.capacity_factor > 0 ? fmt::format(", capacity {:g}", s.capacity_factor) : "");
            }
            fmt::print("\nStandard workloads (--workload NAME):\n");
            for (const Workload& w : standard_workloads()) {
              fmt::print("  {}  experts {}, top-k {}, d_model {}, d_ff {}, tokens {}\n", w.name,
                         w.shape.experts, w.shape.top_k, w.shape.d_model, w.shape.d_ff,
                         fmt::join(w.tokens, ","));
            }
            return 0;
          }};
}

}  // namespace moe_bench::cli
