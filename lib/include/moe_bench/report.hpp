#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "moe_bench/result.hpp"

namespace moe_bench {

/// Version of the JSON document; bumped when a fixed name changes meaning.
inline constexpr int kSchemaVersion = 1;

enum class Format { kTable, kJson, kJsonl, kCsv };
Format parse_format(std::string_view s);

/// Exporters: pure functions of a report, one file each under src/report/.
nlohmann::json to_json(const Report& report);
std::string render_json(const Report& report);
std::string render_jsonl(const Report& report);
std::string render_csv(const Report& report);
std::string render_table(const Report& report);
std::string render(const Report& report, Format format);

/// Warnings about the run's trustworthiness (debug build, fallback BLAS kernel, ...).
std::vector<std::string> report_warnings(const Report& report);

/// One flat row per result (the columns of JSONL and CSV), in a fixed column order.
std::vector<std::pair<std::string, nlohmann::json>> flat_row(const Result& result);

/// Case fields as the JSON names them.
nlohmann::json case_to_json(const Case& c);

/// Throws UsageError when `path` cannot be written (missing folder, no permission), before any
/// work is done; creates nothing.
void check_writable(const std::filesystem::path& path);
/// Writes `content` to a temporary file beside `path` and renames it into place.
void write_file_atomically(const std::filesystem::path& path, std::string_view content);

}  // namespace moe_bench
