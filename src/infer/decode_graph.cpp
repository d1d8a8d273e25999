#include "infer/decode_graph.h"

#include <stdexcept>

#ifdef P2DPO_WITH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/cuda.h>
#endif

namespace p2dpo::infer {

#ifdef P2DPO_WITH_CUDA

namespace {
torch::Tensor fixed_step_logits(models::VisionLanguageModel& model, models::KVCache& cache, const torch::Tensor& ids) {
  models::ForwardInput in;
  in.input_ids = ids;
  in.cache = &cache;
  in.logits_last_only = true;
  return model.forward(in).logits;
}
}  // namespace

bool decode_graphs_available() { return true; }

struct DecodeGraph::Impl {
  Impl(models::VisionLanguageModel& m, models::KVCache& c) : model(m), cache(c) {}
  models::VisionLanguageModel& model;
  models::KVCache& cache;
  torch::Tensor ids;     // the graph's input: [B, 1] int64 on the device, written before each replay
  torch::Tensor logits;  // the graph's output, in the graph's memory pool
  at::cuda::CUDAGraph graph;
  bool captured = false;
};

DecodeGraph::DecodeGraph(models::VisionLanguageModel& model, models::KVCache& cache)
    : impl_(std::make_unique<Impl>(model, cache)) {
  if (!model.device().is_cuda()) throw std::invalid_argument("CUDA graphs need a model on a CUDA device");
  if (!cache.is_fixed()) throw std::invalid_argument("CUDA graphs need a frozen cache (freeze_cache)");
}

DecodeGraph::~DecodeGraph() = default;

torch::Tensor DecodeGraph::step(const torch::Tensor& ids) {
  Impl& m = *impl_;
  torch::NoGradGuard no_grad;
  if (!m.ids.defined()) m.ids = torch::empty(ids.sizes(), torch::TensorOptions().dtype(torch::kLong).device(m.model.device()));
  TORCH_CHECK(ids.sizes() == m.ids.sizes(), "decode graph rows changed: ", ids.sizes(), " vs ", m.ids.sizes());
  m.ids.copy_(ids);
  if (m.captured) {
    m.graph.replay();
    return m.logits;
  }
  // Capture must run on a side stream; the eager step runs there first so cuBLAS and the
  // attention kernels set up their workspaces outside the capture.
  torch::cuda::synchronize();
  const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool();
  torch::Tensor eager;
  {
    c10::cuda::CUDAStreamGuard on_side(side);
    eager = fixed_step_logits(m.model, m.cache, m.ids);  // this step, for real (advances the state)
    side.synchronize();
    m.graph.capture_begin();
    m.logits = fixed_step_logits(m.model, m.cache, m.ids);  // the next steps, recorded, not run
    m.graph.capture_end();
  }
  torch::cuda::synchronize();
  m.captured = true;
  return eager;
}

#else

bool decode_graphs_available() { return false; }

struct DecodeGraph::Impl {};

DecodeGraph::DecodeGraph(models::VisionLanguageModel&, models::KVCache&) {
  throw std::invalid_argument("this build has no CUDA graphs (PyTorch without CUDA)");
}

DecodeGraph::~DecodeGraph() = default;

torch::Tensor DecodeGraph::step(const torch::Tensor&) { throw std::logic_error("no CUDA graphs in this build"); }

#endif

}  // namespace p2dpo::infer
