#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace moe_bench::python {

/// Writes a little-endian float32 .npy file (format version 1.0).
void write_npy(const std::filesystem::path& path, const float* data, std::vector<int64_t> shape);
/// Writes an int8 .npy file (quantized weights' codes).
void write_npy(const std::filesystem::path& path, const int8_t* data, std::vector<int64_t> shape);

/// Reads a .npy file of dtype `descr` ("<f4" or "<i4"); throws std::runtime_error naming the
/// problem (missing, other dtype, Fortran order, truncated).
struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<char> bytes;
};
NpyArray read_npy(const std::filesystem::path& path, const std::string& descr);

}  // namespace moe_bench::python
