#include "registry.hpp"

#include "baselines/blas/blas.hpp"
#include "baselines/naive/naive.hpp"
#include "baselines/python/python_peer.hpp"
#include "lib/kernels/cpu/cpu_moe.hpp"
#include "lib/kernels/cuda/cuda_kernel.hpp"

namespace moe_bench {

const Registry& registry() {
  // A new implementation is a new file in its own folder plus one line here.
  static const Registry kRegistry({
      {"naive", naive::make_kernel},
      {"blas", blas::make_kernel},
      {"cpu", cpu::make_kernel},
      {"numpy", python::make_numpy_kernel, false},
      {"torch", python::make_torch_kernel, false},
      {"torch_cuda", python::make_torch_cuda_kernel, false},
      {"torch_grouped_mm", python::make_torch_grouped_mm_kernel, false},
      {"ipex", python::make_ipex_kernel, false},
      {"hf", python::make_hf_kernel, false},
      {"cpu_avx512", cpu::make_avx512_kernel, false},
      {"cpu_avx512_bf16", cpu::make_avx512_bf16_kernel, false},
      {"cpu_amx", cpu::make_amx_kernel, false},
      {"cpu_avx2", cpu::make_avx2_kernel, false},
      {"cpu_generic", cpu::make_generic_kernel, false},
      {"cpu_w8a8", cpu::make_a8_kernel, false},
      {"read_floor", cpu::make_read_floor_kernel, false},
      {"cuda", cuda::make_cuda_kernel, false},
      {"cuda_graph", cuda::make_cuda_graph_kernel, false},
      {"cuda_gemm", cuda::make_cuda_gemm_kernel, false},
      {"cuda_gemv", cuda::make_cuda_gemv_kernel, false},
      {"cublas", cuda::make_cublas_kernel, false},
      {"cuda_cutlass", cuda::make_cuda_cutlass_kernel, false},
      {"cuda_cutlass_graph", cuda::make_cuda_cutlass_graph_kernel, false},
  });
  return kRegistry;
}

}  // namespace moe_bench
