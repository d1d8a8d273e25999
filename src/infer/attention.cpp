#include "infer/attention.h"

#include <torch/autograd.h>
#include <torch/types.h>
#include <torch/utils.h>

#include "io/errors.h"

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
  torch::AutoGradMode grad_on(true);
  const int64_t L = static_cast<int64_t>(prompt_ids.size());
  auto positions = image_positions_of(prompt_ids, model.info().image_token_id);
  models::AttentionCapture cap;
  cap.layers = {layer};
  cap.query_rows = {L - 1};
  cap.keep_graph = true;
  models::ForwardInput in;
  in.input_ids = torch::tensor(prompt_ids, torch::kLong).view({1, -1});
  {
    torch::NoGradGuard no_grad;  // image features are constants here
    in.image_features = model.encode_images(images);
  }
  in.capture = &cap;
  in.logits_last_only = true;
  auto out = model.forward(in);
  auto last = out.logits.select(1, 0).select(0, 0);  // [V]
  const int64_t target = last.argmax().item<int64_t>();
  auto logp = torch::log_softmax(last, -1)[target];
  auto probs = cap.probs.at(layer);  // [1, heads, 1, kv]
  auto grads = torch::autograd::grad({logp}, {probs})[0];
  auto weighted = (probs.detach() * torch::relu(grads)).select(0, 0).select(1, 0).mean(0);  // [kv]
  GradAttention g;
  g.map = weighted.to(torch::kCPU).index_select(0, torch::tensor(positions, torch::kLong)).contiguous();
  g.first_token = target;
  return g;
}

}  // namespace p2dpo::infer
