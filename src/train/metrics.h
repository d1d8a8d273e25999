#pragma once
// Training metrics as JSONL (one object per optimizer step, appended and flushed) and a throttled
// progress line on stderr.
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "io/json_io.h"

namespace p2dpo::train {

class MetricsLogger {
 public:
  // Opens `path` for appending. Fresh run (resumed_step = nullopt): any existing file is emptied.
  // Resumed run: lines with "step" > *resumed_step (written after the checkpoint the run resumes
  // from) and a torn last line are dropped, atomically, so the file reads as one uninterrupted run.
  MetricsLogger(const std::string& path, std::optional<int64_t> resumed_step);
  // `record` must be an object with an integer "step"; written as one line and flushed.
  void log(const nlohmann::json& record);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  io::JsonlAppender out_;
};

// "step 120/1000 (12.0%) 1.52 it/s ETA 9m38s loss 2.314" to stderr at most every min_interval_s
// (and always for the last item). The rate counts only work done in this process, so a resumed
// run's ETA is not inflated by steps it did not do.
class ProgressLine {
 public:
  ProgressLine(std::string label, int64_t total, int64_t already_done = 0, double min_interval_s = 2.0);
  void update(int64_t done, const std::string& extra = "");
  static std::string format_duration(double seconds);  // "42s", "9m38s", "2h05m"

 private:
  std::string label_;
  int64_t total_, start_done_;
  double min_interval_s_;
  std::chrono::steady_clock::time_point start_, last_print_;
  bool printed_ = false;
};

}  // namespace p2dpo::train
