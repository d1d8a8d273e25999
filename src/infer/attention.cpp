#include "infer/attention.h"

#include <torch/autograd.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <stdexcept>

#include "io/errors.h"
#include "models/synced_lap.h"

namespace p2dpo::infer {

namespace {
std::vector<int64_t> image_positions_of(const std::vector<int64_t>& ids, int64_t image_token) {
  std::vector<int64_t> pos;
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] == image_token) pos.push_back(static_cast<int64_t>(i));
  return pos;
}

void check_layers(const std::vector<int>& layers, int n) {
  for (int l : layers)
    if (l < 0 || l >= n)
      throw InputError("--layers", "layer " + std::to_string(l) + " is outside 0.." + std::to_string(n - 1));
}

// The gradient-weighted pass's forward, recording only what its backward needs. The prompt but its
// last token runs without autograd into a KV cache; the last token, the query row, then runs alone
// with autograd on, capturing its attention row at the layer (cap.query_rows = {0}). Positions
// before the query row do not depend on its attention probabilities, so the backward carries one
// token through the layers above the captured one instead of the whole prompt. Recording the
// whole prompt kept about 1.6 GiB of activations per 620-token prompt on a 7B (bench/README.md,
// GPU run 6: attention.batch 8 cost 11 GiB more than 1). Returns the last token's logits [B, 1, V].
torch::Tensor query_row_logits(models::VisionLanguageModel& model, const torch::Tensor& ids, const torch::Tensor& mask,
                               const torch::Tensor& image_features, models::AttentionCapture& cap) {
  const int64_t L = ids.size(1);
  cap.query_rows = {0};
  models::KVCache cache = model.new_cache();
  models::ForwardInput last;
  last.capture = &cap;
  last.logits_last_only = true;
  if (L == 1) {
    last.input_ids = ids;
    last.attention_mask = mask;
    last.image_features = image_features;
    return model.forward(last).logits;
  }
  {
    torch::NoGradGuard no_grad;
    models::ForwardInput head;
    head.input_ids = ids.slice(1, 0, L - 1);
    if (mask.defined()) head.attention_mask = mask.slice(1, 0, L - 1);
    head.image_features = image_features;  // image slots never end a prompt
    head.cache = &cache;
    head.logits_last_only = true;
    model.forward(head);
  }
  last.input_ids = ids.slice(1, L - 1, L);
  if (mask.defined()) last.attention_mask = mask.slice(1, L - 1, L);
  last.cache = &cache;
  return model.forward(last).logits;
}
}  // namespace

ImageAttention attention_to_images(models::VisionLanguageModel& model,
                                   const std::vector<models::PreparedImage>& images,
                                   const std::vector<int64_t>& prompt_ids, const std::vector<int>& layers,
                                   const std::vector<int64_t>& query_rows) {
  torch::NoGradGuard no_grad;
  check_layers(layers, model.info().num_layers);
  ImageAttention out;
  out.image_positions = image_positions_of(prompt_ids, model.info().image_token_id);
  const int64_t L = static_cast<int64_t>(prompt_ids.size());
  models::AttentionCapture cap;
  cap.layers = layers;
  for (int64_t r : query_rows) {
    int64_t row = r < 0 ? L + r : r;
    if (row < 0 || row >= L) throw InputError("--query", "query position " + std::to_string(r) + " is outside the prompt");
    cap.query_rows.push_back(row);
  }
  models::ForwardInput in;
  in.input_ids = torch::tensor(prompt_ids, torch::kLong).view({1, -1});
  in.image_features = model.encode_images(images);
  in.capture = &cap;
  in.logits_last_only = true;
  model.forward(in);
  auto pos = torch::tensor(out.image_positions, torch::kLong);
  for (auto& [layer, probs] : cap.probs) {
    // [1, heads, rows, kv] -> head mean -> image columns
    out.maps[layer] = probs.to(torch::kCPU).select(0, 0).mean(0).index_select(-1, pos).contiguous();
  }
  return out;
}

GradAttention gradient_weighted_attention(models::VisionLanguageModel& model,
                                          const std::vector<models::PreparedImage>& images,
                                          const std::vector<int64_t>& prompt_ids, int layer) {
  check_layers({layer}, model.info().num_layers);
  models::SyncedLap lap(model.device().is_cuda());
  torch::AutoGradMode grad_on(true);
  if (prompt_ids.empty()) throw InputError("--prompt", "a prompt has no tokens");
  auto positions = image_positions_of(prompt_ids, model.info().image_token_id);
  models::AttentionCapture cap;
  cap.layers = {layer};
  cap.keep_graph = true;
  torch::Tensor features;
  {
    torch::NoGradGuard no_grad;  // image features are constants here
    features = model.encode_images(images);
  }
  GradAttention g;
  g.encode_s = lap.next("attention.encode");
  const auto logits = query_row_logits(model, torch::tensor(prompt_ids, torch::kLong).view({1, -1}), torch::Tensor(),
                                       features, cap);
  auto last = logits.select(1, 0).select(0, 0);  // [V]
  const int64_t target = last.argmax().item<int64_t>();
  auto logp = torch::log_softmax(last, -1)[target];
  g.forward_s = lap.next("attention.forward");
  auto probs = cap.probs.at(layer);  // [1, heads, 1, kv]
  auto grads = torch::autograd::grad({logp}, {probs})[0];
  auto weighted = (probs.detach() * torch::relu(grads)).select(0, 0).select(1, 0).mean(0);  // [kv]
  g.backward_s = lap.next("attention.backward");
  g.map = weighted.to(torch::kCPU).index_select(0, torch::tensor(positions, torch::kLong)).contiguous();
  g.first_token = target;
  return g;
}

std::vector<GradAttention> gradient_weighted_attention_batch(
    models::VisionLanguageModel& model, const std::vector<std::vector<models::PreparedImage>>& images,
    const std::vector<std::vector<int64_t>>& prompt_ids, int layer, bool encode_together) {
  if (images.size() != prompt_ids.size()) throw std::invalid_argument("one image list per prompt");
  if (prompt_ids.size() == 1) return {gradient_weighted_attention(model, images[0], prompt_ids[0], layer)};
  std::vector<GradAttention> out;
  if (prompt_ids.empty()) return out;
  check_layers({layer}, model.info().num_layers);
  models::SyncedLap lap(model.device().is_cuda());
  torch::AutoGradMode grad_on(true);
  const int64_t B = static_cast<int64_t>(prompt_ids.size());
  int64_t L = 0;
  for (const auto& ids : prompt_ids) L = std::max<int64_t>(L, static_cast<int64_t>(ids.size()));
  // Left padding: every row's last position is its own last prompt token (the query row).
  int64_t pad = model.info().pad_token_id;
  if (pad == model.info().image_token_id) pad = 0;
  auto ids = torch::full({B, L}, pad, torch::kLong);
  auto mask = torch::zeros({B, L}, torch::kLong);
  std::vector<torch::Tensor> feature_rows;
  {
    torch::NoGradGuard no_grad;  // image features are constants here
    std::vector<models::PreparedImage> all_images;  // encode_together: rows in prompt order, as below
    for (int64_t b = 0; b < B; ++b) {
      const auto& p = prompt_ids[static_cast<size_t>(b)];
      if (p.empty()) throw InputError("--prompt", "a prompt has no tokens");
      const int64_t off = L - static_cast<int64_t>(p.size());
      ids.index_put_({b, torch::indexing::Slice(off, torch::indexing::None)}, torch::tensor(p, torch::kLong));
      mask.index_put_({b, torch::indexing::Slice(off, torch::indexing::None)}, 1);
      const auto& imgs = images[static_cast<size_t>(b)];
      if (imgs.empty()) continue;
      if (encode_together) {
        all_images.insert(all_images.end(), imgs.begin(), imgs.end());
      } else {
        auto f = model.encode_images(imgs);
        feature_rows.push_back(f.reshape({-1, f.size(-1)}));
      }
    }
    if (!all_images.empty()) {
      auto f = model.encode_images(all_images);
      feature_rows.push_back(f.reshape({-1, f.size(-1)}));
    }
  }
  const double encode_s = lap.next("attention.encode");
  models::AttentionCapture cap;
  cap.layers = {layer};
  cap.keep_graph = true;
  const auto logits = query_row_logits(model, ids, mask, feature_rows.empty() ? torch::Tensor() : torch::cat(feature_rows, 0), cap);
  auto last = logits.select(1, 0);  // [B, V]
  const auto targets = last.argmax(-1);
  auto logp = torch::log_softmax(last, -1).gather(1, targets.view({B, 1})).sum();
  const double forward_s = lap.next("attention.forward");
  auto probs = cap.probs.at(layer);  // [B, heads, 1, kv]
  auto grads = torch::autograd::grad({logp}, {probs})[0];
  auto weighted = (probs.detach() * torch::relu(grads)).select(2, 0).mean(1).to(torch::kCPU);  // [B, kv]
  const double backward_s = lap.next("attention.backward");
  const auto first = targets.to(torch::kCPU);
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = prompt_ids[static_cast<size_t>(b)];
    auto positions = image_positions_of(p, model.info().image_token_id);
    const int64_t off = L - static_cast<int64_t>(p.size());
    for (auto& q : positions) q += off;
    GradAttention g;
    g.map = weighted[b].index_select(0, torch::tensor(positions, torch::kLong)).contiguous();
    g.first_token = first[b].item<int64_t>();
    if (b == 0) g.encode_s = encode_s, g.forward_s = forward_s, g.backward_s = backward_s;
    out.push_back(std::move(g));
  }
  return out;
}

}  // namespace p2dpo::infer
