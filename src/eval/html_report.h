#pragma once
// Rendering of the report model (report.h) to one self-contained HTML file: inline CSS and SVG,
// PNGs as base64 data URIs, no scripts, and a Content-Security-Policy that forbids any network
// load, so the file opens the same anywhere (and a stray external reference fails loudly).
#include <string>
#include <vector>

#include "eval/report.h"

namespace p2dpo::eval {

// Standard base64 (RFC 4648, with padding).
std::string base64_encode(const std::string& bytes);

// A number as a table cell shows it (Percent: x100, two decimals; Auto: integers plain, else 4 significant digits).
std::string format_value(double v, Format f);

std::string render_report_html(const ReportModel& model);

// Discovers the runs, builds the model, writes `out_path` atomically; returns the model (for the
// CLI's summary line).
ReportModel write_report(const std::vector<std::string>& run_paths, const std::string& out_path,
                         const std::string& title, const DiscoverOptions& opts = {});

}  // namespace p2dpo::eval
