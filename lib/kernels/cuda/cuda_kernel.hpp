#pragma once

#include <memory>

#include "moe_bench/kernel.hpp"

namespace moe_bench::cuda {

/// The grouped-GEMM CUDA implementation (`cuda`) and the cuBLAS per-expert baseline (`cublas`).
std::unique_ptr<Kernel> make_cuda_kernel();
std::unique_ptr<Kernel> make_cublas_kernel();
/// `cuda` forced to one math path at every size: the grouped GEMM, or the row GEMV.
std::unique_ptr<Kernel> make_cuda_gemm_kernel();
std::unique_ptr<Kernel> make_cuda_graph_kernel();
std::unique_ptr<Kernel> make_cuda_cutlass_kernel();
std::unique_ptr<Kernel> make_cuda_cutlass_graph_kernel();
std::unique_ptr<Kernel> make_cuda_gemv_kernel();

}  // namespace moe_bench::cuda
