#include "train/collate.h"

#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <map>

#include "io/errors.h"
#include "train/loss.h"

namespace p2dpo::train {

CausalLMBatch collate_causal_lm(const std::vector<TokenizedExample>& examples, const CollateOptions& opts) {
  if (examples.empty()) throw InputError("batch", "no examples to collate");
  CausalLMBatch b;
  b.batch_size = static_cast<int64_t>(examples.size());
  std::vector<int64_t> lengths;
  for (const auto& ex : examples) {
    if (ex.input_ids.size() != ex.loss_mask.size()) {
      throw InputError(ex.id, "input_ids (" + std::to_string(ex.input_ids.size()) + ") and loss_mask (" +
                                  std::to_string(ex.loss_mask.size()) + ") differ in length");
    }
    int64_t len = static_cast<int64_t>(ex.input_ids.size());
    if (opts.max_length > 0 && len > opts.max_length) {
      if (opts.image_token_id >= 0 &&
          std::find(ex.input_ids.begin() + opts.max_length, ex.input_ids.end(), opts.image_token_id) != ex.input_ids.end()) {
        throw InputError(ex.id, "is " + std::to_string(len) + " tokens; truncating to max_length " +
                                    std::to_string(opts.max_length) + " would cut image tokens");
      }
      len = opts.max_length;
    }
    lengths.push_back(len);
    b.length = std::max(b.length, len);
  }
  const size_t total = static_cast<size_t>(b.batch_size * b.length);
  b.input_ids.assign(total, opts.pad_token_id);
  b.attention_mask.assign(total, 0);
  b.labels.assign(total, kIgnoreIndex);
  std::map<std::string, int64_t> image_slot;
  for (size_t r = 0; r < examples.size(); ++r) {
    const auto& ex = examples[r];
    const size_t row = r * static_cast<size_t>(b.length);
    for (int64_t i = 0; i < lengths[r]; ++i) {
      const size_t at = row + static_cast<size_t>(i);
      b.input_ids[at] = ex.input_ids[static_cast<size_t>(i)];
      b.attention_mask[at] = 1;
      if (ex.loss_mask[static_cast<size_t>(i)]) {
        b.labels[at] = ex.input_ids[static_cast<size_t>(i)];
        if (i >= 1) ++b.target_tokens;  // position 0 is never predicted
      }
    }
    b.real_tokens += lengths[r];
    std::vector<int64_t> index;
    for (const auto& img : ex.images) {
      auto [it, inserted] = image_slot.emplace(img, static_cast<int64_t>(b.images.size()));
      if (inserted) b.images.push_back(img);
      index.push_back(it->second);
    }
    b.image_index.push_back(std::move(index));
    b.ids.push_back(ex.id);
  }
  return b;
}

std::vector<int64_t> image_feature_order(const CausalLMBatch& batch) {
  std::vector<int64_t> order;
  for (const auto& idx : batch.image_index) order.insert(order.end(), idx.begin(), idx.end());
  return order;
}

CausalLMTensors to_tensors(const CausalLMBatch& batch, torch::Device device) {
  auto make = [&](const std::vector<int64_t>& v) {
    return torch::tensor(v, torch::kInt64).view({batch.batch_size, batch.length}).to(device);
  };
  return {make(batch.input_ids), make(batch.attention_mask), make(batch.labels)};
}

}  // namespace p2dpo::train
