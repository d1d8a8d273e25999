#include "models/op_profile.h"

#include <ATen/record_function.h>
#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/types.h>
#include <torch/version.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

#include "io/atomic_file.h"
#include "io/json_io.h"

namespace p2dpo::models {

namespace {

namespace tap = torch::autograd::profiler;
namespace tpi = torch::profiler::impl;

using nlohmann::json;

constexpr const char* kMarkPrefix = "p2dpo.phase_end:";
// Recorded when the profile starts: the first phase begins there even when its work ran on other
// threads, which the profiler does not follow (the pairs' per-sample image threads).
constexpr const char* kStartMark = "p2dpo.profile_start";
constexpr int64_t kTraceEventsPerPhase = 20000;

// PyTorch 1.13 reports event times in microseconds (startUs, durationUs); 2.x in nanoseconds
// (startNs, durationNs). Detect which the installed headers have.
template <typename E, typename = void>
struct HasNanoseconds : std::false_type {};
template <typename E>
struct HasNanoseconds<E, std::void_t<decltype(std::declval<const E&>().startNs()),
                                     decltype(std::declval<const E&>().durationNs())>> : std::true_type {};

template <typename E>
std::pair<int64_t, int64_t> start_and_duration_ns(const E& e) {
  if constexpr (HasNanoseconds<E>::value) {
    return {static_cast<int64_t>(e.startNs()), static_cast<int64_t>(e.durationNs())};
  } else {
    return {static_cast<int64_t>(e.startUs()) * 1000, static_cast<int64_t>(e.durationUs()) * 1000};
  }
}

enum class Kind { kHostOp, kRuntime, kDevice, kUserScope };

struct Event {
  std::string name;
  Kind kind = Kind::kHostOp;
  int64_t start = 0, duration = 0;  // ns
  uint64_t thread = 0;
  int device_index = 0;
  uint64_t order = 0;               // host ops and marks: start order (the op's correlation id)
  int64_t self = 0;                 // host ops: duration minus direct children's (ns)
  bool top_level = false;           // host ops: not nested inside another host op
  size_t phase = 0;
};

struct Aggregate {
  int64_t count = 0, ns = 0;
};

json top_by_time(const std::map<std::string, Aggregate>& by_name, size_t n) {
  std::vector<std::pair<std::string, Aggregate>> rows(by_name.begin(), by_name.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) {
    return a.second.ns != b.second.ns ? a.second.ns > b.second.ns : a.first < b.first;
  });
  json out = json::array();
  for (size_t i = 0; i < rows.size() && i < n; ++i)
    out.push_back({{"name", rows[i].first}, {"count", rows[i].second.count}, {"s", rows[i].second.ns * 1e-9}});
  return out;
}

// Length of the union of [start, start + duration) intervals: the time a device had work.
int64_t busy_ns(std::vector<std::pair<int64_t, int64_t>> spans) {
  std::sort(spans.begin(), spans.end());
  int64_t total = 0, cur_start = 0, cur_end = 0;
  bool open = false;
  for (const auto& [s, d] : spans) {
    const int64_t e = s + d;
    if (!open || s > cur_end) {
      if (open) total += cur_end - cur_start;
      cur_start = s;
      cur_end = e;
      open = true;
    } else {
      cur_end = std::max(cur_end, e);
    }
  }
  if (open) total += cur_end - cur_start;
  return total;
}

bool is_sync_call(const std::string& name) {
  // Runtime calls that block the host until the device catches up.
  return name.find("Synchronize") != std::string::npos || name == "cudaMemcpy" ||
         name.rfind("cudaMemcpy2D", 0) == 0 || name == "cuMemcpyDtoH_v2" || name == "cuMemcpyHtoD_v2";
}

}  // namespace

OpProfile::OpProfile(bool cuda) {
  if (tpi::profilerEnabled()) throw std::runtime_error("a profile is already being recorded in this process");
  const tpi::ProfilerConfig config(tpi::ProfilerState::KINETO);
  std::set<tpi::ActivityType> activities{tpi::ActivityType::CPU};
  if (cuda) activities.insert(tpi::ActivityType::CUDA);
  tap::prepareProfiler(config, activities);
  tap::enableProfiler(config, activities);
  active_ = true;
  RECORD_USER_SCOPE(kStartMark);
}

OpProfile::~OpProfile() {
  if (active_) {
    try {
      tap::disableProfiler();
    } catch (...) {
    }
  }
}

bool OpProfile::recording() { return tpi::profilerEnabled(); }

void OpProfile::phase_end(const std::string& phase) {
  if (!tpi::profilerEnabled()) return;
  const std::string name = kMarkPrefix + phase;
  RECORD_USER_SCOPE(name.c_str());
}

json OpProfile::finish(const std::string& dir, const std::string& label) {
  if (!active_) throw std::runtime_error("OpProfile::finish called twice");
  active_ = false;
  const std::unique_ptr<tap::ProfilerResult> result = tap::disableProfiler();

  // ---- classify ----
  std::vector<Event> events;
  struct Mark {
    std::string phase;
    int64_t time = 0;     // ns
    uint64_t order = 0;   // correlation id
  };
  std::vector<Mark> marks;
  int64_t started = 0;
  for (const auto& k : result->events()) {
    Event e;
    e.name = k.name();
    std::tie(e.start, e.duration) = start_and_duration_ns(k);
    e.thread = k.startThreadId();
    e.device_index = static_cast<int>(k.deviceIndex());
    e.order = k.correlationId();
    if (e.name == kStartMark) {
      started = e.start;
      continue;
    }
    if (e.name.rfind(kMarkPrefix, 0) == 0) {
      marks.push_back({e.name.substr(std::string(kMarkPrefix).size()), e.start, e.order});
      continue;
    }
    if (k.deviceType() != c10::DeviceType::CPU) {
      e.kind = Kind::kDevice;
    } else if (k.scope() == static_cast<uint8_t>(at::RecordScope::USER_SCOPE)) {
      e.kind = Kind::kUserScope;
    } else if (e.name.rfind("cuda", 0) == 0 ||
               (e.name.rfind("cu", 0) == 0 && e.name.size() > 2 && std::isupper(static_cast<unsigned char>(e.name[2])))) {
      e.kind = Kind::kRuntime;  // cudaLaunchKernel, cudaStreamSynchronize, cuLaunchKernel, ...
    } else {
      e.kind = Kind::kHostOp;
    }
    events.push_back(std::move(e));
  }
  // Host ops and marks are ordered by their correlation ids, which count op starts: timestamps
  // can tie (PyTorch 1.13 records microseconds), the order cannot. Device work and runtime calls
  // are placed by time (each phase ends with a device sync, so its kernels ended before its mark).
  std::sort(marks.begin(), marks.end(), [](const Mark& a, const Mark& b) { return a.order < b.order; });
  bool ordered = !marks.empty();
  for (size_t i = 0; i < marks.size(); ++i)
    ordered = ordered && marks[i].order > 0 && (i == 0 || marks[i].order > marks[i - 1].order) &&
              (i == 0 || marks[i].time >= marks[i - 1].time);
  if (!ordered) std::sort(marks.begin(), marks.end(), [](const Mark& a, const Mark& b) { return a.time < b.time; });
  int64_t t_begin = started > 0 ? started : marks.empty() ? 0 : marks.front().time, t_end = t_begin;
  for (const auto& e : events) {
    if (t_begin == 0 || e.start < t_begin) t_begin = e.start;
    t_end = std::max(t_end, e.start + e.duration);
  }
  for (const auto& m : marks) t_end = std::max(t_end, m.time);

  // ---- phases: (previous mark, this mark]; what follows the last mark is "unmarked" ----
  std::vector<std::string> phase_names;
  std::vector<std::pair<int64_t, int64_t>> phase_spans;
  int64_t prev = t_begin;
  for (const auto& m : marks) {
    phase_names.push_back(m.phase);
    phase_spans.emplace_back(prev, m.time);
    prev = m.time;
  }
  const size_t unmarked = phase_names.size();
  phase_names.push_back("unmarked");
  phase_spans.emplace_back(prev, t_end);
  auto phase_of = [&](const Event& e) {
    const bool by_order = ordered && (e.kind == Kind::kHostOp || e.kind == Kind::kUserScope);
    for (size_t i = 0; i < marks.size(); ++i)
      if (by_order ? e.order < marks[i].order : e.start <= marks[i].time) return i;
    return unmarked;
  };
  for (auto& e : events) e.phase = phase_of(e);

  // ---- host ops: nesting per thread gives top-level ops and self time ----
  std::vector<size_t> host;
  for (size_t i = 0; i < events.size(); ++i)
    if (events[i].kind == Kind::kHostOp) host.push_back(i);
  std::sort(host.begin(), host.end(), [&](size_t a, size_t b) {
    const Event &x = events[a], &y = events[b];
    if (x.thread != y.thread) return x.thread < y.thread;
    if (x.start != y.start) return x.start < y.start;
    if (x.duration != y.duration) return x.duration > y.duration;  // the enclosing op first
    return x.order < y.order;  // same microsecond (1.13) and length: the op that started first
  });
  std::vector<size_t> stack;
  uint64_t thread = 0;
  for (size_t idx : host) {
    Event& e = events[idx];
    if (stack.empty() || e.thread != thread) stack.clear();
    thread = e.thread;
    while (!stack.empty() && events[stack.back()].start + events[stack.back()].duration <= e.start) stack.pop_back();
    e.self = e.duration;
    if (stack.empty()) {
      e.top_level = true;
    } else {
      events[stack.back()].self -= e.duration;
    }
    stack.push_back(idx);
  }

  // ---- summary per phase name (a phase ended several times adds up) and in total ----
  struct PhaseSums {
    int64_t wall_ns = 0, host_ops = 0, host_ops_ns = 0, all_ops = 0, kernels = 0, launches = 0, syncs = 0, sync_ns = 0;
    std::vector<std::pair<int64_t, int64_t>> device_spans;
    std::map<std::string, Aggregate> op_self, kernel_time;
  };
  std::vector<std::string> order;                // names in order of first appearance
  std::map<std::string, size_t> index_of_name;
  std::vector<size_t> slot(phase_names.size());  // phase occurrence -> its name's slot
  for (size_t i = 0; i < phase_names.size(); ++i) {
    auto [it, fresh] = index_of_name.emplace(phase_names[i], order.size());
    if (fresh) order.push_back(phase_names[i]);
    slot[i] = it->second;
  }
  std::vector<PhaseSums> sums(order.size() + 1);  // the last one is the total
  PhaseSums& total = sums.back();
  for (size_t i = 0; i < phase_names.size(); ++i) sums[slot[i]].wall_ns += phase_spans[i].second - phase_spans[i].first;
  total.wall_ns = t_end - t_begin;
  for (const auto& e : events) {
    for (PhaseSums* s : {&sums[slot[e.phase]], &total}) {
      switch (e.kind) {
        case Kind::kHostOp:
          ++s->all_ops;
          if (e.top_level) {
            ++s->host_ops;
            s->host_ops_ns += e.duration;
          }
          s->op_self[e.name].count += 1;
          s->op_self[e.name].ns += std::max<int64_t>(e.self, 0);
          break;
        case Kind::kRuntime:
          if (e.name.find("LaunchKernel") != std::string::npos) ++s->launches;
          if (is_sync_call(e.name)) {
            ++s->syncs;
            s->sync_ns += e.duration;
          }
          break;
        case Kind::kDevice:
          ++s->kernels;
          s->device_spans.emplace_back(e.start, e.duration);
          s->kernel_time[e.name].count += 1;
          s->kernel_time[e.name].ns += e.duration;
          break;
        default:
          break;
      }
    }
  }
  auto phase_json = [&](const std::string& name, const PhaseSums& s) {
    const int64_t busy = busy_ns(s.device_spans);
    return json{{"phase", name},
                {"wall_s", s.wall_ns * 1e-9},
                {"host_ops", s.host_ops},
                {"host_ops_s", s.host_ops_ns * 1e-9},
                {"all_ops", s.all_ops},
                {"device_events", s.kernels},
                {"device_busy_s", busy * 1e-9},
                {"device_busy_share", s.wall_ns > 0 ? static_cast<double>(busy) / static_cast<double>(s.wall_ns) : 0.0},
                {"kernel_launches", s.launches},
                {"host_syncs", s.syncs},
                {"host_sync_s", s.sync_ns * 1e-9},
                {"top_ops_by_self_time", top_by_time(s.op_self, 12)},
                {"top_device_events", top_by_time(s.kernel_time, 12)}};
  };
  json phases = json::array();
  for (size_t m = 0; m < order.size(); ++m) {
    const PhaseSums& s = sums[m];
    if (order[m] == "unmarked" && s.all_ops == 0 && s.kernels == 0) continue;  // nothing after the last mark
    phases.push_back(phase_json(order[m], s));
  }
  json summary = {{"label", label},
                  {"torch_version", TORCH_VERSION},
                  {"events", events.size()},
                  {"phases", phases},
                  {"total", phase_json("total", total)},
                  {"how_to_read",
                   "host_ops: top-level ATen ops the host dispatched; device_busy_share: the share of the wall "
                   "time some GPU kernel or copy ran (near 1: GPU-bound; low with many host_ops: launch-bound; "
                   "host_sync_s: time the host waited for the GPU)"}};

  // ---- Chrome trace ----
  std::string trace;
  trace.reserve(events.size() * 120 + 256);
  trace += "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n";
  bool first = true;
  auto add = [&](const json& ev) {
    if (!first) trace += ",\n";
    first = false;
    trace += ev.dump();
  };
  // A 7B decode step is thousands of ops: the trace keeps the first events of each phase (enough
  // to see its steps' rhythm) and the summary counts all of them.
  std::vector<int64_t> kept_in_phase(phase_names.size(), 0);
  int64_t dropped = 0;
  for (const auto& e : events) {
    if (kept_in_phase[e.phase]++ >= kTraceEventsPerPhase) {
      ++dropped;
      continue;
    }
    const bool device = e.kind == Kind::kDevice;
    add({{"name", e.name},
         {"cat", device ? "device" : e.kind == Kind::kRuntime ? "runtime" : e.kind == Kind::kUserScope ? "scope" : "op"},
         {"ph", "X"},
         {"ts", static_cast<double>(e.start - t_begin) * 1e-3},
         {"dur", static_cast<double>(e.duration) * 1e-3},
         {"pid", device ? "GPU " + std::to_string(e.device_index) : std::string("host")},
         {"tid", device ? 0 : e.thread}});
  }
  for (const auto& m : marks)
    add({{"name", "end of " + m.phase}, {"ph", "i"}, {"s", "g"}, {"ts", static_cast<double>(m.time - t_begin) * 1e-3}, {"pid", "host"}, {"tid", 0}});
  trace += "\n]}\n";

  summary["trace_events_dropped"] = dropped;
  summary["trace_events_per_phase"] = kTraceEventsPerPhase;
  std::filesystem::create_directories(dir);
  io::write_file_atomic((std::filesystem::path(dir) / (label + ".trace.json")).string(), trace);
  io::write_json_atomic((std::filesystem::path(dir) / (label + ".summary.json")).string(), summary);
  return summary;
}

}  // namespace p2dpo::models
