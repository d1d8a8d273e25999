#pragma once
// An op-level profile of one window of work (`--profile DIR` of `p2dpo pairs` and `p2dpo train`):
// every ATen operator the host dispatches and, where PyTorch has Kineto and the model runs on
// CUDA, every GPU kernel and copy, grouped into the phases the caller marks. It answers the
// question a wall clock cannot: is a phase bound by the GPU's work or by the host launching it?
//
// Writes DIR/LABEL.summary.json (per phase: wall time, top-level host ops and their time, kernel
// count, GPU busy time and share of the wall, kernel launches and host syncs, the top ops by
// self time and the top kernels) and DIR/LABEL.trace.json (Chrome trace format: open it in
// ui.perfetto.dev or chrome://tracing). Torch-free header.
#include <nlohmann/json_fwd.hpp>

#include <memory>
#include <string>

namespace p2dpo::models {

class OpProfile {
 public:
  // Starts recording (CPU ops; GPU activity too when `cuda`). One profile at a time per process.
  explicit OpProfile(bool cuda);
  ~OpProfile();  // stops a profile that was never finished, writing nothing
  OpProfile(const OpProfile&) = delete;
  OpProfile& operator=(const OpProfile&) = delete;

  // Ends the current phase of whatever profile is recording (a no-op when none is): everything
  // that started since the previous mark (or the start) belongs to `phase`; a phase marked several
  // times adds up. models::SyncedLap::next(phase) calls it after its device sync, so a phase's
  // kernels end inside it.
  static void phase_end(const std::string& phase);
  // Whether a profile is being recorded in this process (CUDA-graph decoding stays off meanwhile:
  // CUPTI and graph capture are known to fail together).
  static bool recording();

  // Stops recording, writes the summary and the trace atomically and returns the summary.
  nlohmann::json finish(const std::string& dir, const std::string& label);

 private:
  bool active_ = false;
};

}  // namespace p2dpo::models
