#pragma once
// Attention from chosen query positions to the image tokens, head-averaged, computed only for
// the requested rows and layers; and the gradient-weighted variant (ViCrop's grad_att:
// A * relu(d log p(first greedy token) / d A)) that P2-DPO uses for its crops.
#include <torch/types.h>

#include <map>
#include <vector>

#include "models/vlm.h"

namespace p2dpo::infer {

struct ImageAttention {
  std::vector<int64_t> image_positions;  // absolute positions of the image tokens in the prompt
  // layer -> [n_query_rows, n_image_tokens] head-averaged probabilities (fp32, CPU)
  std::map<int, torch::Tensor> maps;
};

// query_rows: positions in prompt_ids; negative values count from the end (-1 = last token).
ImageAttention attention_to_images(models::VisionLanguageModel& model,
                                   const std::vector<models::PreparedImage>& images,
                                   const std::vector<int64_t>& prompt_ids, const std::vector<int>& layers,
                                   const std::vector<int64_t>& query_rows);

// Gradient-weighted attention of the last prompt token at `layer`, head-averaged, over the image
// tokens: [n_image_tokens]. Also returns the greedy first token it differentiated.
struct GradAttention {
  torch::Tensor map;  // [n_image_tokens] fp32 CPU
  int64_t first_token = -1;
  // Wall seconds of the call's parts (a batched call reports its totals on its first result, 0 on
  // the others); on CUDA each part ends with a device sync. For profiling the pair generator.
  double encode_s = 0, forward_s = 0, backward_s = 0;
};
GradAttention gradient_weighted_attention(models::VisionLanguageModel& model,
                                          const std::vector<models::PreparedImage>& images,
                                          const std::vector<int64_t>& prompt_ids, int layer);

// The same for several prompts in one left-padded forward and one backward (each row's log-prob
// depends on its own row only, so row b's map is the single-prompt map up to float rounding).
// On a GPU one batched pass replaces one launch-bound pass per prompt. One result per prompt.
// encode_together: the prompts' images go through the vision tower in one call instead of one call
// per prompt (the same features to float rounding).
std::vector<GradAttention> gradient_weighted_attention_batch(
    models::VisionLanguageModel& model, const std::vector<std::vector<models::PreparedImage>>& images,
    const std::vector<std::vector<int64_t>>& prompt_ids, int layer, bool encode_together = false);

}  // namespace p2dpo::infer
