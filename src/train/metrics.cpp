#include "train/metrics.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "io/atomic_file.h"
#include "io/errors.h"

namespace p2dpo::train {

MetricsLogger::MetricsLogger(const std::string& path, std::optional<int64_t> resumed_step) : path_(path) {
  std::string kept;
  if (resumed_step && std::filesystem::exists(path)) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream buf;
    buf << in.rdbuf();
    const std::string all = buf.str();
    size_t begin = 0;
    while (begin < all.size()) {
      const size_t nl = all.find('\n', begin);
      if (nl == std::string::npos) break;  // torn last line from a crash: drop it
      const std::string line = all.substr(begin, nl - begin);
      begin = nl + 1;
      if (line.empty()) continue;
      const auto rec = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (rec.is_discarded() || !rec.is_object() || !rec.contains("step") || !rec["step"].is_number_integer()) {
        throw InputError(path, "not a metrics line with an integer 'step': " + line.substr(0, 80));
      }
      if (rec["step"].get<int64_t>() <= *resumed_step) kept += line + "\n";
    }
  }
  io::write_file_atomic(path, kept);
  out_.open(path);
}

void MetricsLogger::log(const nlohmann::json& record) {
  if (!record.is_object() || !record.contains("step") || !record["step"].is_number_integer()) {
    throw std::invalid_argument("MetricsLogger::log: record needs an integer \"step\"");
  }
  out_.write(record);
}

ProgressLine::ProgressLine(std::string label, int64_t total, int64_t already_done, double min_interval_s)
    : label_(std::move(label)),
      total_(total),
      start_done_(already_done),
      min_interval_s_(min_interval_s),
      start_(std::chrono::steady_clock::now()),
      last_print_(start_) {}

std::string ProgressLine::format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = static_cast<int64_t>(std::llround(seconds));
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(s));
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  else std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(s / 3600), static_cast<long long>((s % 3600) / 60));
  return buf;
}

void ProgressLine::update(int64_t done, const std::string& extra) {
  const auto now = std::chrono::steady_clock::now();
  const double since_print = std::chrono::duration<double>(now - last_print_).count();
  if (printed_ && since_print < min_interval_s_ && done < total_) return;
  last_print_ = now;
  printed_ = true;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double rate = elapsed > 0 ? static_cast<double>(done - start_done_) / elapsed : 0.0;
  const double eta = rate > 0 ? static_cast<double>(total_ - done) / rate : NAN;
  const double pct = total_ > 0 ? 100.0 * static_cast<double>(done) / static_cast<double>(total_) : 100.0;
  std::fprintf(stderr, "%s %lld/%lld (%.1f%%) %.3g it/s ETA %s%s%s\n", label_.c_str(), static_cast<long long>(done),
               static_cast<long long>(total_), pct, rate, format_duration(eta).c_str(), extra.empty() ? "" : " ",
               extra.c_str());
  std::fflush(stderr);
}

}  // namespace p2dpo::train
