#pragma once
// Batching tokenized causal-LM examples.
//
// Padding is on the RIGHT for training: every real token keeps position id = its index and sees
// exactly the keys it sees unpadded, so a padded row's logits equal the unpadded forward's and the
// labels need no offset; pads only add masked keys after the sequence, and their own rows are
// ignored by the loss. (Generation pads on the left so that the last column is every row's next
// position; training never samples, so it has no reason to.)
#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "train/conversations.h"

namespace p2dpo::train {

struct CollateOptions {
  int64_t pad_token_id = 0;
  // 0 = no limit. Longer examples are cut on the right (losing answer tail tokens, as HF's
  // truncation); a cut that would remove image tokens throws InputError(example id, ...).
  int64_t max_length = 0;
  int64_t image_token_id = -1;  // for the truncation check; -1 = no image tokens to protect
};

struct CausalLMBatch {
  int64_t batch_size = 0;
  int64_t length = 0;                  // L = longest example (after truncation)
  std::vector<int64_t> input_ids;      // [B, L] row-major, pad_token_id after each sequence
  std::vector<int64_t> attention_mask; // [B, L] 1 real, 0 pad
  std::vector<int64_t> labels;         // [B, L] token id where loss_mask, else -100
  std::vector<std::string> images;     // distinct image keys, in first-use order
  std::vector<std::vector<int64_t>> image_index;  // per example: indices into images, prompt order
  std::vector<std::string> ids;        // example ids
  int64_t target_tokens = 0;  // labels != -100 at positions >= 1 (the loss items after the shift)
  int64_t real_tokens = 0;    // sum of attention_mask (for tokens/s)
};

// InputError if `examples` is empty or an example's ids and mask lengths differ.
CausalLMBatch collate_causal_lm(const std::vector<TokenizedExample>& examples, const CollateOptions& opts);

// The order in which image features must be concatenated for the batch's forward: the model fills
// image-token slots row-major (example 0's images first), so this lists image_index flattened.
std::vector<int64_t> image_feature_order(const CausalLMBatch& batch);

struct CausalLMTensors {
  torch::Tensor input_ids, attention_mask, labels;  // [B, L] int64 each
};
CausalLMTensors to_tensors(const CausalLMBatch& batch, torch::Device device);

}  // namespace p2dpo::train
