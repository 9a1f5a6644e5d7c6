#pragma once

#include <memory>
#include <string>

#include "moe_bench/kernel.hpp"

namespace moe_bench::python {

/// The interpreter the peers run under: --python PATH, else $MOE_BENCH_PYTHON, else the venv
/// scripts/install-peers.sh makes (~/.cache/moe-bench/peers), else Debian's /usr/bin/python3
/// where it exists (where python3-numpy and python3-torch install), else python3 on PATH. Each
/// peer result's notes name the interpreter it ran under.
void set_interpreter(std::string path);
const std::string& interpreter();
/// Seconds a peer may take beyond 3 x the maximum sampling time before it is killed (default 120:
/// importing torch and loading weights take a while).
void set_startup_allowance(double seconds);
/// The folder of the peers' scripts (baselines/python of the source tree this was built from).
const char* scripts_dir();

std::unique_ptr<Kernel> make_numpy_kernel();
std::unique_ptr<Kernel> make_torch_kernel();
/// PyTorch on the GPU: the Hugging Face loop, and torch._grouped_mm over expert-sorted tokens.
std::unique_ptr<Kernel> make_torch_cuda_kernel();
std::unique_ptr<Kernel> make_torch_grouped_mm_kernel();
/// Intel Extension for PyTorch's fused MoE (GatedMLPMOE), where the interpreter has it.
std::unique_ptr<Kernel> make_ipex_kernel();
/// The preset family's Hugging Face transformers MoE block, where transformers is installed.
std::unique_ptr<Kernel> make_hf_kernel();

}  // namespace moe_bench::python
