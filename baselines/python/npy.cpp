#include "npy.hpp"

#include <fmt/format.h>

#include <fstream>
#include <regex>
#include <stdexcept>

namespace moe_bench::python {

namespace {

void write_array(const std::filesystem::path& path, const void* data, const char* descr,
                 int64_t element_bytes, const std::vector<int64_t>& shape) {
  std::string dims;
  int64_t count = 1;
  for (int64_t s : shape) {
    dims += fmt::format("{}, ", s);
    count *= s;
  }
  if (shape.size() > 1) dims.resize(dims.size() - 2);
  std::string header =
      fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': ({}), }}", descr, dims);
  // Magic (6) + version (2) + length (2) + header + newline, padded to a multiple of 64.
  const size_t total = (10 + header.size() + 1 + 63) / 64 * 64;
  header.append(total - 10 - header.size() - 1, ' ');
  header += '\n';
  std::ofstream out(path, std::ios::binary);
  const char magic[] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0};
  out.write(magic, 8);
  const auto len = static_cast<uint16_t>(header.size());
  const char len_bytes[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  out.write(len_bytes, 2);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(count * element_bytes));
  if (!out) throw std::runtime_error(fmt::format("cannot write {}", path.string()));
}

}  // namespace

void write_npy(const std::filesystem::path& path, const float* data, std::vector<int64_t> shape) {
  write_array(path, data, "<f4", 4, shape);
}

void write_npy(const std::filesystem::path& path, const int8_t* data, std::vector<int64_t> shape) {
  write_array(path, data, "|i1", 1, shape);
}

NpyArray read_npy(const std::filesystem::path& path, const std::string& descr) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(fmt::format("{} was not written", path.filename().string()));
  char magic[10];
  in.read(magic, 10);
  if (!in || std::string(magic + 1, 5) != "NUMPY") {
    throw std::runtime_error(fmt::format("{} is not a .npy file", path.filename().string()));
  }
  size_t len = static_cast<unsigned char>(magic[8]) | static_cast<unsigned char>(magic[9]) << 8;
  if (magic[6] != 1) {  // versions 2 and 3 have a 4-byte header length
    char more[2];
    in.read(more, 2);
    len |= static_cast<size_t>(static_cast<unsigned char>(more[0])) << 16 |
           static_cast<size_t>(static_cast<unsigned char>(more[1])) << 24;
  }
  std::string header(len, ' ');
  in.read(header.data(), static_cast<std::streamsize>(len));
  std::smatch m;
  if (!std::regex_search(header, m, std::regex("'descr':\\s*'([^']+)'")) || m[1] != descr) {
    throw std::runtime_error(
        fmt::format("{} has dtype other than {}", path.filename().string(), descr));
  }
  if (header.find("'fortran_order': False") == std::string::npos) {
    throw std::runtime_error(fmt::format("{} is in Fortran order", path.filename().string()));
  }
  NpyArray a;
  if (std::regex_search(header, m, std::regex("'shape':\\s*\\(([^)]*)\\)"))) {
    const std::string dims = m[1];
    std::regex num("[0-9]+");
    for (auto it = std::sregex_iterator(dims.begin(), dims.end(), num);
         it != std::sregex_iterator(); ++it) {
      a.shape.push_back(std::stoll(it->str()));
    }
  }
  int64_t count = 1;
  for (int64_t s : a.shape) count *= s;
  a.bytes.resize(static_cast<size_t>(count * 4));
  in.read(a.bytes.data(), static_cast<std::streamsize>(a.bytes.size()));
  if (!in) throw std::runtime_error(fmt::format("{} is truncated", path.filename().string()));
  return a;
}

}  // namespace moe_bench::python
