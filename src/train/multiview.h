#pragma once
// Multi-view answer scoring for P2-DPO: Σ log p(answer | prompt, images) for many (prompt, images,
// answer) items at once, each distinct image+prompt prefix computed once and its keys/values
// reused, inside autograd, by every answer that continues it. One P2-DPO pair has 6 scored
// sequences over 4 prefixes ((I,P) y_w and y_l; (I+I_crop,P2) y_w; (I_deg,P) y_w; (I_noise,P) y_w
// and y_l), so the chosen and rejected answers share one prefix instead of each paying for it.
#include <torch/types.h>

#include <cstdint>
#include <vector>

#include "models/vlm.h"

namespace p2dpo::train {

struct ScoredSequence {
  std::vector<int64_t> prompt_ids;     // image tokens expanded (VisionLanguageModel::tokenize_prompt / pairs::response_tokens)
  std::vector<int64_t> image_indices;  // rows of `image_features` for the prompt's image slots, in prompt order
  std::vector<int64_t> answer_ids;     // the scored tokens (response + EOS); never empty
};

struct MultiViewOptions {
  // false: every sequence gets its own full-length row (prompt + answer), no prefix reuse and no
  // de-duplication: the reference path, and the bench baseline (a TRL-style concatenated batch).
  bool share_prefixes = true;
  // Rows of very different lengths (a two-image prefix next to one-image ones, a 40-token answer next
  // to a 10-token one) are split into separate forwards by length where that saves more padded
  // positions than this per extra forward (the forward's fixed cost, in positions); < 0: one padded
  // forward per stage. Splitting never changes a result.
  int64_t split_cost_positions = 64;
};

struct MultiViewStats {  // what the call computed (for tokens/s metrics and the bench)
  int64_t sequences = 0, prefixes = 0, prefix_tokens = 0, continuation_tokens = 0;
  int64_t distinct_sequences = 0;  // sequences actually run (identical ones are scored once when sharing)
  int64_t padded_positions = 0;    // positions the forwards processed, padding included
  int64_t forwards = 0;            // model forward calls
};

// Σ log p(answer_ids | prompt_ids, images) per sequence: [n] float32, differentiable w.r.t. the model's trainable
// tensors (e.g. LoRA weights) and image_features ([n_images, tokens_per_image, hidden], any dtype the model uses).
// Log-softmax in fp32. Works with autograd on or off. Padding never changes a result.
// Throws InputError("answer_logprob_sums", ...) for an empty answer or prompt, an image index out of
// range, a prompt whose image-token count does not match its image slots, or an answer holding an
// image token.
torch::Tensor answer_logprob_sums(models::VisionLanguageModel& model, const std::vector<ScoredSequence>& seqs,
                                  const torch::Tensor& image_features, const MultiViewOptions& opt = {},
                                  MultiViewStats* stats = nullptr);

}  // namespace p2dpo::train
