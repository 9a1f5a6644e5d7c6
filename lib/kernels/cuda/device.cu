// The device as the engines see it: whether one is usable, its properties, the engine factory
// and the ceilings (copy bandwidth, cuBLAS BF16 GEMM) the CUDA results are held to.
#include <type_traits>

#include "engine_base.cuh"

namespace moe_bench::cuda {
namespace {

// Fills a buffer with values in [-1, 1) from a per-element hash: the ceilings are measured on
// random data, since zeros draw less power and run faster (about 13% for a BF16 GEMM on an H200).
template <typename T>
__global__ void fill_random(T* out, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n;
       i += size_t{gridDim.x} * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 0x9E3779B9u ^ seed;
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    if constexpr (std::is_integral_v<T>) {
      out[i] = static_cast<T>(h);
    } else {
      out[i] = static_cast<T>(static_cast<float>(h >> 8) * (2.0f / 16777216.0f) - 1.0f);
    }
  }
}

template <typename T>
void randomize(T* out, size_t n, uint32_t seed) {
  fill_random<<<1024, 256>>>(out, n, seed);
  check(cudaGetLastError(), "fill_random launch");
}

}  // namespace

std::string unavailable_reason() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) return std::string("no CUDA device (") + cudaGetErrorString(err) + ")";
  if (count == 0) return "no CUDA device (none found)";
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return "no CUDA device (properties)";
  if (prop.major < 8) {
    return std::string("device ") + prop.name + " is sm_" + std::to_string(prop.major) +
           std::to_string(prop.minor) + "; the CUDA kernels need sm_80 or newer";
  }
  return {};
}

std::string cutlass_unavailable_reason() {
  std::string why = unavailable_reason();
  if (!why.empty()) return why;
#if !defined(MOE_BENCH_HAVE_CUTLASS)
  return MOE_BENCH_CUTLASS_WHY;
#else
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return "no CUDA device (properties)";
  if (prop.major != 9 || prop.minor != 0) {
    return std::string("device ") + prop.name + " is sm_" + std::to_string(prop.major) +
           std::to_string(prop.minor) + "; the CUTLASS engine is built for sm_90a (Hopper) only";
  }
  return {};
#endif
}

#if !defined(MOE_BENCH_HAVE_CUTLASS)
std::unique_ptr<Engine> make_cutlass_engine(bool, const LayerSpec&, const float*,
                                            const std::vector<HostLayer>&) {
  throw DeviceError(MOE_BENCH_CUTLASS_WHY);
}
#endif

DeviceInfo device_info() {
  DeviceInfo info;
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return info;
  info.name = prop.name;
  info.sms = prop.multiProcessorCount;
  info.cc_major = prop.major;
  info.cc_minor = prop.minor;
  int clock = 0;
  cudaDeviceGetAttribute(&clock, cudaDevAttrClockRate, 0);
  info.sm_clock_mhz = clock / 1000;
  cudaDeviceGetAttribute(&clock, cudaDevAttrMemoryClockRate, 0);
  info.mem_clock_mhz = clock / 1000;
  cudaDeviceGetAttribute(&info.bus_width_bits, cudaDevAttrGlobalMemoryBusWidth, 0);
  info.memory_bytes = static_cast<int64_t>(prop.totalGlobalMem);
  size_t free = 0, total = 0;
  if (cudaMemGetInfo(&free, &total) == cudaSuccess) info.free_bytes = static_cast<int64_t>(free);
  cudaDriverGetVersion(&info.driver);
  cudaRuntimeGetVersion(&info.runtime);
  return info;
}

std::string device_summary() {
  int runtime = 0;
  cudaRuntimeGetVersion(&runtime);
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    return std::string("no CUDA device (") +
           (err != cudaSuccess ? cudaGetErrorString(err) : "no devices found") + ")";
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  int driver = 0;
  cudaDriverGetVersion(&driver);
  return std::string(prop.name) + ", sm_" + std::to_string(prop.major) +
         std::to_string(prop.minor) + ", " + std::to_string(prop.multiProcessorCount) + " SMs, " +
         std::to_string(prop.totalGlobalMem >> 20) + " MiB, driver " + std::to_string(driver) +
         ", runtime " + std::to_string(runtime);
}

std::unique_ptr<Engine> make_engine(Algo algo, const LayerSpec& spec, const float* x,
                                    const std::vector<HostLayer>& layers) {
  const bool cutlass = algo == Algo::kCutlass || algo == Algo::kCutlassGraph;
  const std::string why = cutlass ? cutlass_unavailable_reason() : unavailable_reason();
  if (!why.empty()) throw DeviceError(why);
  if (cutlass) return make_cutlass_engine(algo == Algo::kCutlassGraph, spec, x, layers);
  return algo == Algo::kCublas ? make_cublas_engine(spec, x, layers)
                               : make_grouped_engine(algo, spec, x, layers);
}

DevicePeaks measure_device_peaks() {
  DevicePeaks p;
  if (!unavailable_reason().empty()) return p;
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  auto best_of = [&](int reps, auto&& body) {
    float best = 1e30f;
    for (int i = 0; i < reps; ++i) {
      check(cudaEventRecord(start), "cudaEventRecord");
      body();
      check(cudaEventRecord(stop), "cudaEventRecord");
      check(cudaEventSynchronize(stop), "peak measurement");
      float ms = 0;
      check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
      best = std::min(best, ms);
    }
    return best * 1e-3;
  };
  {
    const size_t bytes = size_t{1} << 30;
    DeviceBuffer<char> a(bytes), b(bytes);
    randomize(reinterpret_cast<unsigned char*>(a.get()), bytes, 1);
    const double s = best_of(5, [&] {
      check(cudaMemcpy(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice), "copy peak");
    });
    p.copy_gbytes_per_s = 2.0 * static_cast<double>(bytes) / s * 1e-9;
  }
  {
    constexpr int n = 8192;
    DeviceBuffer<__nv_bfloat16> a(size_t{n} * n), b(size_t{n} * n);
    DeviceBuffer<float> c(size_t{n} * n);
    randomize(a.get(), size_t{n} * n, 2);
    randomize(b.get(), size_t{n} * n, 3);
    cublasHandle_t h = nullptr;
    check_blas(cublasCreate(&h), "cublasCreate");
    const float one = 1.0f, zero = 0.0f;
    const double s = best_of(5, [&] {
      check_blas(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &one, a.get(), CUDA_R_16BF, n,
                              b.get(), CUDA_R_16BF, n, &zero, c.get(), CUDA_R_32F, n,
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 "BF16 GEMM peak");
    });
    cublasDestroy(h);
    p.bf16_tflops = 2.0 * n * static_cast<double>(n) * n / s * 1e-12;
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return p;
}

}  // namespace moe_bench::cuda
