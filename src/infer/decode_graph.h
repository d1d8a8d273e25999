#pragma once
// Decoding steps as one CUDA graph. A host-bound GPU decode step costs the launch of a few
// thousand small kernels (bench/README.md); over a frozen cache (VisionLanguageModel::freeze_cache)
// every step runs the same kernels on the same addresses, so it is captured once and replayed,
// which launches the whole step at once. Needs a CUDA build of PyTorch (P2DPO_WITH_CUDA).
#include <torch/types.h>

#include <memory>

#include "models/vlm.h"

namespace p2dpo::infer {

// Whether this build can capture CUDA graphs (a CUDA build of PyTorch).
bool decode_graphs_available();

class DecodeGraph {
 public:
  // `cache` is frozen and lives on the model's CUDA device; both must outlive this object.
  DecodeGraph(models::VisionLanguageModel& model, models::KVCache& cache);
  ~DecodeGraph();
  DecodeGraph(const DecodeGraph&) = delete;
  DecodeGraph& operator=(const DecodeGraph&) = delete;

  // Feeds ids [B, 1] int64 (host or device) through one step and returns its logits [B, 1, V]
  // fp32 on the device, valid until the next call. The first call runs the step eagerly (warming
  // up the libraries on the capture stream) and then captures the next one; later calls replay.
  torch::Tensor step(const torch::Tensor& ids);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace p2dpo::infer
