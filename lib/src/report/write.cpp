#include <fmt/format.h>
#include <unistd.h>

#include <fstream>

#include "moe_bench/error.hpp"
#include "moe_bench/report.hpp"

namespace moe_bench {

Format parse_format(std::string_view s) {
  if (s == "table") return Format::kTable;
  if (s == "json") return Format::kJson;
  if (s == "jsonl") return Format::kJsonl;
  if (s == "csv") return Format::kCsv;
  if (s == "md" || s == "markdown") return Format::kMarkdown;
  throw UsageError(fmt::format("unknown format '{}' (known: table, json, jsonl, csv, md)", s));
}

std::string render(const Report& report, Format format) {
  switch (format) {
    case Format::kTable:
      return render_table(report);
    case Format::kJson:
      return render_json(report);
    case Format::kJsonl:
      return render_jsonl(report);
    case Format::kCsv:
      return render_csv(report);
    case Format::kMarkdown:
      return render_markdown(report);
  }
  return {};
}

void check_writable(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (path.empty()) throw UsageError("output path is empty");
  if (fs::is_directory(path, ec)) {
    throw UsageError(fmt::format("cannot write '{}': it is a directory", path.string()));
  }
  fs::path dir = path.parent_path().empty() ? fs::path(".") : path.parent_path();
  if (!fs::is_directory(dir, ec)) {
    throw UsageError(
        fmt::format("cannot write '{}': folder '{}' does not exist", path.string(), dir.string()));
  }
  if (fs::exists(path, ec) && access(path.c_str(), W_OK) != 0) {
    throw UsageError(fmt::format("cannot write '{}': permission denied", path.string()));
  }
  // The report is written as a temporary file beside it and renamed: try exactly that now, so a
  // folder that looks writable but is not (/proc, a read-only mount) fails before the run.
  fs::path probe = path;
  probe += fmt::format(".probe.{}", getpid());
  {
    std::ofstream out(probe, std::ios::binary | std::ios::trunc);
    out << '\n';
    out.close();
    if (out.fail()) {
      fs::remove(probe, ec);
      throw UsageError(fmt::format("cannot write '{}': a file cannot be created in '{}'",
                                   path.string(), dir.string()));
    }
  }
  fs::remove(probe, ec);
}

void write_file_atomically(const std::filesystem::path& path, std::string_view content) {
  namespace fs = std::filesystem;
  fs::path tmp = path;
  tmp += fmt::format(".tmp.{}", getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    out.flush();
    if (!out) {
      std::error_code ec;
      fs::remove(tmp, ec);
      throw EnvironmentError(fmt::format("failed writing '{}'", path.string()));
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw EnvironmentError(fmt::format("failed to move report into '{}'", path.string()));
  }
}

}  // namespace moe_bench
