#pragma once
// CLIP towers as HF transformers computes them (modeling_clip.py, eager attention):
// the vision tower for LLaVA's image features and both towers + projections for CLIPScore.
#include <torch/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/hf_config.h"
#include "models/layers.h"

namespace p2dpo::models {

struct ClipEncoderLayer {
  LayerNorm layer_norm1, layer_norm2;
  Linear q_proj, k_proj, v_proj, out_proj, fc1, fc2;
};

// Pre-norm transformer encoder shared by both towers.
struct ClipEncoder {
  std::vector<ClipEncoderLayer> layers;
  int num_heads = 0;
  std::string hidden_act;
  // Runs layers [0, num_layers) (all when -1). `mask` is additive [B, 1, L, L] or undefined.
  // When `hidden_states` is given, appends the input and every layer's output (HF convention).
  // When `attentions` is given, appends each layer's probabilities [B, heads, L, L].
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& mask, int num_layers,
                        std::vector<torch::Tensor>* hidden_states,
                        std::vector<torch::Tensor>* attentions) const;
};

class ClipVisionTower {
 public:
  // `prefix` is where "embeddings.*" etc. live, e.g. "vision_tower.vision_model" (LLaVA) or
  // "vision_model" (CLIPModel).
  ClipVisionTower(WeightStore& w, const std::string& prefix, const io::ClipVisionConfig& cfg,
                  bool load_post_layernorm);
  // pixel_values [B, 3, S, S] -> hidden_states list (index 0 = after pre_layrnorm), computing
  // only the first `num_layers` encoder layers (-1 = all).
  std::vector<torch::Tensor> hidden_states(const torch::Tensor& pixel_values, int num_layers = -1,
                                           std::vector<torch::Tensor>* attentions = nullptr) const;
  // CLS token after post_layernorm (CLIP's pooled output).
  torch::Tensor pooled(const torch::Tensor& pixel_values) const;
  const io::ClipVisionConfig& config() const { return cfg_; }
  int num_patches_per_side() const { return static_cast<int>(cfg_.image_size / cfg_.patch_size); }
  void collect_parameters(const std::string& prefix, std::map<std::string, torch::Tensor>& out) const;

 private:
  io::ClipVisionConfig cfg_;
  torch::Tensor class_embedding, patch_embedding, position_embedding;
  LayerNorm pre_layrnorm, post_layernorm;
  ClipEncoder encoder_;
};

class ClipTextTower {
 public:
  ClipTextTower(WeightStore& w, const std::string& prefix, const io::ClipTextConfig& cfg);
  // ids [B, L] int64, attention_mask [B, L] (1 = token) -> pooled [B, hidden] after final LN.
  torch::Tensor pooled(const torch::Tensor& ids, const torch::Tensor& attention_mask) const;
  const io::ClipTextConfig& config() const { return cfg_; }

 private:
  io::ClipTextConfig cfg_;
  torch::Tensor token_embedding, position_embedding;
  LayerNorm final_layer_norm;
  ClipEncoder encoder_;
};

// HF CLIPModel: both towers and projections, for CLIPScore.
class ClipModel {
 public:
  static std::unique_ptr<ClipModel> load(const std::string& dir,
                                         torch::Device device = torch::kCPU);
  torch::Tensor image_features(const torch::Tensor& pixel_values) const;  // projected, unnormalised
  torch::Tensor text_features(const torch::Tensor& ids, const torch::Tensor& mask) const;
  // 100 * max(cos, 0) for every (text, image): [n_texts, n_images].
  torch::Tensor clip_score(const torch::Tensor& text_features, const torch::Tensor& image_features) const;
  double logit_scale() const { return logit_scale_; }
  const io::ClipConfig& config() const { return cfg_; }

 private:
  ClipModel(WeightStore& w, const io::ClipConfig& cfg);
  io::ClipConfig cfg_;
  std::unique_ptr<ClipVisionTower> vision_;
  std::unique_ptr<ClipTextTower> text_;
  torch::Tensor visual_projection, text_projection;
  double logit_scale_ = 0.0;
};

}  // namespace p2dpo::models
