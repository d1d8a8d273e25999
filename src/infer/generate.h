#pragma once
// Generation: greedy and sampling (HF's processor order: temperature -> top-k -> top-p), batched
// over prompts of different lengths with left padding, KV-cached, stopping on EOS. The same loop
// steps several contexts of one sequence together (contrastive decoding: expert and amateur in
// one batched forward), combining their next-token logits with a caller-given function.
#include <torch/types.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "models/vlm.h"

namespace p2dpo::infer {

struct SamplingConfig {
  int max_new_tokens = 64;
  int min_new_tokens = 0;    // EOS is scored -inf until this many tokens exist (HF's min_new_tokens)
  double temperature = 0.0;  // 0 = greedy (argmax, first max on ties)
  double top_p = 1.0;
  int top_k = 0;             // 0 = off
  uint64_t seed = 0;         // sequence i samples from its own generator seeded seed + i
  bool stop_on_eos = true;
  std::vector<int64_t> eos_token_ids;  // empty = the model's
  bool use_cache = true;               // false recomputes the whole sequence each step (benchmarks)
  // After the prompt's forward, freeze the cache to fixed shapes (VisionLanguageModel::freeze_cache):
  // the same tokens, to float rounding, with every step's shapes and addresses constant. Unset: on
  // for CUDA models (a 7B step of 16 rows took 18 instead of 70 ms on an H200, bench/README.md GPU
  // run 6), off on the CPU (slower there for the world model, whose attention then spans the buffer).
  std::optional<bool> fixed_cache;
  // On a CUDA model, replay each step of a frozen cache as one CUDA graph (infer/decode_graph.h);
  // implies fixed_cache there. Ignored on the CPU.
  bool cuda_graphs = false;
  bool greedy() const { return temperature <= 0.0; }
};

struct GenerationRequest {
  std::vector<int64_t> prompt_ids;  // image tokens expanded
  torch::Tensor image_features;     // [n_images, tokens, hidden] (undefined if no image)
  std::optional<uint64_t> seed;     // overrides SamplingConfig::seed + index
};

struct GenerationResult {
  std::vector<int64_t> token_ids;   // generated tokens, EOS included when it stopped on one
  std::vector<float> logprobs;      // log-softmax of the (combined) scores before warping
  bool stopped_on_eos = false;
};

std::vector<GenerationResult> generate(models::VisionLanguageModel& model,
                                       const std::vector<GenerationRequest>& requests,
                                       const SamplingConfig& cfg);

// logits [N, K, V] (sequence, context) -> scores [N, V] to pick from.
using LogitsCombiner = std::function<torch::Tensor(const torch::Tensor&)>;

// contexts[i] lists the K contexts of sequence i (same K for all). Every chosen token is appended
// to all K contexts of its sequence.
std::vector<GenerationResult> generate_multi_context(models::VisionLanguageModel& model,
                                                     const std::vector<std::vector<GenerationRequest>>& contexts,
                                                     const LogitsCombiner& combine,
                                                     const SamplingConfig& cfg);

// One group of a fused decoding call: sequences with the same number of contexts, decoded with one
// sampling configuration and combiner (null: K must be 1, or the first context is used).
struct DecodeGroup {
  std::vector<std::vector<GenerationRequest>> contexts;  // [N][K]
  LogitsCombiner combine;
  SamplingConfig cfg;
};

// Decodes several groups in one loop: each step is one forward over every group's contexts, and each
// group then picks its own tokens with its own configuration (greedy, sampled, contrastive), limits
// and EOS. A host-bound GPU decoding step costs about the same for 40 rows as for 16, so the pairs
// pipeline's separate greedy, sampled and contrastive stages cost one loop instead of three.
// Each group's results equal its own generate_multi_context call to float rounding (the padded
// shapes differ); default seeds count within the group. The groups must agree on use_cache,
// fixed_cache and cuda_graphs, which shape the shared loop.
std::vector<std::vector<GenerationResult>> generate_groups(models::VisionLanguageModel& model,
                                                           const std::vector<DecodeGroup>& groups);

// The warpers alone (exposed for tests): temperature, top-k, top-p on scores [N, V].
torch::Tensor warp_scores(const torch::Tensor& scores, const SamplingConfig& cfg);

}  // namespace p2dpo::infer
