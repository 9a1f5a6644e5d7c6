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

enum class Format { kTable, kJson, kJsonl, kCsv, kMarkdown };
Format parse_format(std::string_view s);

/// Exporters: pure functions of a report, one file each under src/report/.
nlohmann::json to_json(const Report& report);
std::string render_json(const Report& report);
std::string render_jsonl(const Report& report);
std::string render_csv(const Report& report);
std::string render_table(const Report& report);
std::string render(const Report& report, Format format);

std::string render_markdown(const Report& report);

/// Parses a JSON report of this schema version; throws UsageError naming the source and the
/// problem (not JSON, no or another schema_version, missing or mistyped field).
Report parse_report(std::string_view text, std::string_view source);
Report read_report(const std::filesystem::path& path);

/// Warnings about the run's trustworthiness: noisy results (CV above 5%), a debug build, a
/// fallback BLAS kernel, a busy machine. A pure function of the report.
std::vector<std::string> collect_warnings(const Report& report);

/// One flat row per result (the columns of JSONL and CSV), in a fixed column order.
std::vector<std::pair<std::string, nlohmann::json>> flat_row(const Result& result);

/// A short human label of a case, e.g. "E8 k2 d1024 f4096 T=32 zipf:1.2".
std::string case_label(const Case& c);

/// Case fields as the JSON names them.
nlohmann::json case_to_json(const Case& c);

/// Throws UsageError when `path` cannot be written (missing folder, no permission), before any
/// work is done; creates nothing.
void check_writable(const std::filesystem::path& path);
/// Writes `content` to a temporary file beside `path` and renames it into place.
void write_file_atomically(const std::filesystem::path& path, std::string_view content);

}  // namespace moe_bench
