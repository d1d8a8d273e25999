#include "models/clip.h"

#include <torch/torch.h>

#include <cmath>

#include "io/errors.h"
#include "models/weights.h"

namespace p2dpo::models {

namespace {

ClipEncoder load_encoder(WeightStore& w, const std::string& prefix, int64_t layers, int64_t hidden,
                         int64_t inter, int64_t heads, double eps, const std::string& act,
                         const std::string& cfg_name) {
  ClipEncoder enc;
  enc.num_heads = static_cast<int>(heads);
  enc.hidden_act = act;
  for (int i = 0; i < layers; ++i) {
    std::string p = prefix + ".encoder.layers." + std::to_string(i);
    ClipEncoderLayer l;
    l.layer_norm1 = LayerNorm::load(w, p + ".layer_norm1", hidden, eps, cfg_name + ".hidden_size");
    l.layer_norm2 = LayerNorm::load(w, p + ".layer_norm2", hidden, eps, cfg_name + ".hidden_size");
    l.q_proj = Linear::load(w, p + ".self_attn.q_proj", hidden, hidden, true, cfg_name + ".hidden_size");
    l.k_proj = Linear::load(w, p + ".self_attn.k_proj", hidden, hidden, true, cfg_name + ".hidden_size");
    l.v_proj = Linear::load(w, p + ".self_attn.v_proj", hidden, hidden, true, cfg_name + ".hidden_size");
    l.out_proj = Linear::load(w, p + ".self_attn.out_proj", hidden, hidden, true, cfg_name + ".hidden_size");
    l.fc1 = Linear::load(w, p + ".mlp.fc1", hidden, inter, true, cfg_name + ".intermediate_size");
    l.fc2 = Linear::load(w, p + ".mlp.fc2", inter, hidden, true, cfg_name + ".intermediate_size");
    enc.layers.push_back(std::move(l));
  }
  return enc;
}

void add_linear(std::map<std::string, torch::Tensor>& out, const std::string& p, const Linear& l) {
  out[p + ".weight"] = l.weight;
  if (l.bias.defined()) out[p + ".bias"] = l.bias;
}
void add_ln(std::map<std::string, torch::Tensor>& out, const std::string& p, const LayerNorm& l) {
  out[p + ".weight"] = l.weight;
  out[p + ".bias"] = l.bias;
}

}  // namespace

torch::Tensor ClipEncoder::forward(torch::Tensor x, const torch::Tensor& mask, int num_layers,
                                   std::vector<torch::Tensor>* hidden_states,
                                   std::vector<torch::Tensor>* attentions) const {
  const int n = num_layers < 0 ? static_cast<int>(layers.size()) : num_layers;
  if (hidden_states) hidden_states->push_back(x);
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2);
  const int64_t d = D / num_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  for (int i = 0; i < n; ++i) {
    const auto& l = layers[i];
    torch::Tensor h = l.layer_norm1(x);
    // transformers <= 4.51 scales Q before QK^T (the fixtures' 4.45 does); same math, same bits.
    auto q = (l.q_proj(h) * scale).view({B, L, num_heads, d}).transpose(1, 2);
    auto k = l.k_proj(h).view({B, L, num_heads, d}).transpose(1, 2);
    auto v = l.v_proj(h).view({B, L, num_heads, d}).transpose(1, 2);
    auto scores = torch::matmul(q, k.transpose(-1, -2));
    if (mask.defined()) scores = scores + mask;
    auto probs = torch::softmax(scores, -1, torch::kFloat32).to(scores.scalar_type());
    if (attentions) attentions->push_back(probs);
    auto o = torch::matmul(probs, v).transpose(1, 2).reshape({B, L, D});
    x = x + l.out_proj(o);
    h = l.layer_norm2(x);
    x = x + l.fc2(activation(hidden_act, l.fc1(h)));
    if (hidden_states) hidden_states->push_back(x);
  }
  return x;
}

ClipVisionTower::ClipVisionTower(WeightStore& w, const std::string& prefix,
                                 const io::ClipVisionConfig& cfg, bool load_post_layernorm)
    : cfg_(cfg) {
  const int64_t D = cfg.hidden_size;
  const int64_t n_pos = static_cast<int64_t>(num_patches_per_side()) * num_patches_per_side() + 1;
  class_embedding = w.get(prefix + ".embeddings.class_embedding", {D}, "vision_config.hidden_size");
  patch_embedding = w.get(prefix + ".embeddings.patch_embedding.weight",
                          {D, cfg.num_channels, cfg.patch_size, cfg.patch_size},
                          "vision_config.patch_size");
  position_embedding = w.get(prefix + ".embeddings.position_embedding.weight", {n_pos, D},
                             "vision_config.image_size/patch_size");
  pre_layrnorm = LayerNorm::load(w, prefix + ".pre_layrnorm", D, cfg.layer_norm_eps,
                                 "vision_config.hidden_size");
  if (load_post_layernorm) {
    post_layernorm = LayerNorm::load(w, prefix + ".post_layernorm", D, cfg.layer_norm_eps,
                                     "vision_config.hidden_size");
  }
  encoder_ = load_encoder(w, prefix, cfg.num_hidden_layers, D, cfg.intermediate_size,
                          cfg.num_attention_heads, cfg.layer_norm_eps, cfg.hidden_act, "vision_config");
}

std::vector<torch::Tensor> ClipVisionTower::hidden_states(const torch::Tensor& pixel_values,
                                                          int num_layers,
                                                          std::vector<torch::Tensor>* attentions) const {
  auto x = pixel_values.to(patch_embedding.scalar_type());
  auto patches = torch::conv2d(x, patch_embedding, {}, cfg_.patch_size);  // [B, D, g, g]
  patches = patches.flatten(2).transpose(1, 2);                            // [B, g*g, D]
  auto cls = class_embedding.view({1, 1, -1}).expand({patches.size(0), 1, patches.size(2)});
  auto emb = torch::cat({cls, patches}, 1) + position_embedding.unsqueeze(0);
  emb = pre_layrnorm(emb);
  std::vector<torch::Tensor> hs;
  encoder_.forward(emb, {}, num_layers, &hs, attentions);
  return hs;
}

torch::Tensor ClipVisionTower::pooled(const torch::Tensor& pixel_values) const {
  auto hs = hidden_states(pixel_values);
  return post_layernorm(hs.back().select(1, 0));
}

void ClipVisionTower::collect_parameters(const std::string& prefix,
                                         std::map<std::string, torch::Tensor>& out) const {
  out[prefix + ".embeddings.class_embedding"] = class_embedding;
  out[prefix + ".embeddings.patch_embedding.weight"] = patch_embedding;
  out[prefix + ".embeddings.position_embedding.weight"] = position_embedding;
  add_ln(out, prefix + ".pre_layrnorm", pre_layrnorm);
  if (post_layernorm.weight.defined()) add_ln(out, prefix + ".post_layernorm", post_layernorm);
  for (size_t i = 0; i < encoder_.layers.size(); ++i) {
    const auto& l = encoder_.layers[i];
    std::string p = prefix + ".encoder.layers." + std::to_string(i);
    add_ln(out, p + ".layer_norm1", l.layer_norm1);
    add_ln(out, p + ".layer_norm2", l.layer_norm2);
    add_linear(out, p + ".self_attn.q_proj", l.q_proj);
    add_linear(out, p + ".self_attn.k_proj", l.k_proj);
    add_linear(out, p + ".self_attn.v_proj", l.v_proj);
    add_linear(out, p + ".self_attn.out_proj", l.out_proj);
    add_linear(out, p + ".mlp.fc1", l.fc1);
    add_linear(out, p + ".mlp.fc2", l.fc2);
  }
}

ClipTextTower::ClipTextTower(WeightStore& w, const std::string& prefix, const io::ClipTextConfig& cfg)
    : cfg_(cfg) {
  const int64_t D = cfg.hidden_size;
  token_embedding = w.get(prefix + ".embeddings.token_embedding.weight", {cfg.vocab_size, D},
                          "text_config.vocab_size");
  position_embedding = w.get(prefix + ".embeddings.position_embedding.weight",
                             {cfg.max_position_embeddings, D}, "text_config.max_position_embeddings");
  final_layer_norm = LayerNorm::load(w, prefix + ".final_layer_norm", D, cfg.layer_norm_eps,
                                     "text_config.hidden_size");
  encoder_ = load_encoder(w, prefix, cfg.num_hidden_layers, D, cfg.intermediate_size,
                          cfg.num_attention_heads, cfg.layer_norm_eps, cfg.hidden_act, "text_config");
}

torch::Tensor ClipTextTower::pooled(const torch::Tensor& ids, const torch::Tensor& attention_mask) const {
  const int64_t B = ids.size(0), L = ids.size(1);
  if (L > cfg_.max_position_embeddings) {
    throw InputError("text", "CLIP text of " + std::to_string(L) + " tokens exceeds max_position_embeddings " +
                                 std::to_string(cfg_.max_position_embeddings));
  }
  auto x = token_embedding.index_select(0, ids.reshape({-1})).view({B, L, -1}) +
           position_embedding.slice(0, 0, L).unsqueeze(0);
  auto dtype = x.scalar_type();
  const double neg = dtype_min(dtype);
  auto causal = torch::ones({L, L}, torch::TensorOptions().dtype(torch::kBool).device(x.device())).triu(1);  // true = masked
  auto masked = causal.view({1, 1, L, L}).expand({B, 1, L, L});
  if (attention_mask.defined()) {
    auto pad = (attention_mask == 0).view({B, 1, 1, L});
    masked = masked.logical_or(pad);
  }
  auto mask = torch::zeros({B, 1, L, L}, x.options()).masked_fill(masked.to(x.device()), neg);
  auto h = encoder_.forward(x, mask, -1, nullptr, nullptr);
  h = final_layer_norm(h);
  // EOS pooling (modeling_clip): legacy configs (eos_token_id == 2) take argmax of the ids.
  torch::Tensor pos;
  if (cfg_.eos_token_id == 2) {
    pos = ids.argmax(-1);
  } else {
    pos = (ids == cfg_.eos_token_id).to(torch::kInt32).argmax(-1);
  }
  return h.index({torch::arange(B, torch::TensorOptions().dtype(torch::kLong).device(h.device())),
                  pos.to(h.device())});
}

std::unique_ptr<ClipModel> ClipModel::load(const std::string& dir, torch::Device device) {
  io::ClipConfig cfg = io::load_clip_config(dir);
  WeightStore w(dir, [](const std::string& k) { return io::is_ignorable_buffer_key(k) ? std::string() : k; },
                torch::kFloat32, device);
  return std::unique_ptr<ClipModel>(new ClipModel(w, cfg));
}

ClipModel::ClipModel(WeightStore& w, const io::ClipConfig& cfg) : cfg_(cfg) {
  vision_ = std::make_unique<ClipVisionTower>(w, "vision_model", cfg.vision, true);
  text_ = std::make_unique<ClipTextTower>(w, "text_model", cfg.text);
  visual_projection = w.get("visual_projection.weight", {cfg.projection_dim, cfg.vision.hidden_size},
                            "projection_dim");
  text_projection = w.get("text_projection.weight", {cfg.projection_dim, cfg.text.hidden_size},
                          "projection_dim");
  logit_scale_ = w.get("logit_scale", {}, "logit_scale").item<double>();
}

torch::Tensor ClipModel::image_features(const torch::Tensor& pixel_values) const {
  return torch::linear(vision_->pooled(pixel_values), visual_projection);
}

torch::Tensor ClipModel::text_features(const torch::Tensor& ids, const torch::Tensor& mask) const {
  return torch::linear(text_->pooled(ids, mask), text_projection);
}

torch::Tensor ClipModel::clip_score(const torch::Tensor& text_features,
                                    const torch::Tensor& image_features) const {
  // Normalise as HF: x / sqrt(sum(x^2)).
  auto t = text_features / text_features.pow(2).sum(-1, true).sqrt();
  auto i = image_features / image_features.pow(2).sum(-1, true).sqrt();
  return 100.0 * torch::clamp_min(torch::matmul(t, i.t()), 0.0);
}

}  // namespace p2dpo::models
