#pragma once
// CLIP towers as HF transformers computes them (modeling_clip.py, eager attention):
// the vision tower for LLaVA's image features and both towers + projections for CLIPScore.
// The tensors are plain autograd leaves, so the same classes train (world/clip_train.h): random
// init as HF's CLIPModel._init_weights, named_parameters() in HF order, save in the HF layout.
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "io/hf_config.h"
#include "models/layers.h"

namespace p2dpo::models {

// Where a tower's tensors come from: (HF key, expected shape, config field for errors) -> tensor.
// WeightStore-backed when loading, an initialiser when building a fresh model.
using TensorSource =
    std::function<torch::Tensor(const std::string& name, const std::vector<int64_t>& shape,
                                const std::string& config_field)>;
using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

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
  ClipVisionTower(const TensorSource& source, const std::string& prefix, const io::ClipVisionConfig& cfg,
                  bool load_post_layernorm);
  // pixel_values [B, 3, S, S] -> hidden_states list (index 0 = after pre_layrnorm), computing
  // only the first `num_layers` encoder layers (-1 = all).
  std::vector<torch::Tensor> hidden_states(const torch::Tensor& pixel_values, int num_layers = -1,
                                           std::vector<torch::Tensor>* attentions = nullptr) const;
  // CLS token after post_layernorm (CLIP's pooled output). When `hidden_states` is given, the
  // pass's hidden states are also returned there (as hidden_states() gives them).
  torch::Tensor pooled(const torch::Tensor& pixel_values, std::vector<torch::Tensor>* hidden_states = nullptr) const;
  const io::ClipVisionConfig& config() const { return cfg_; }
  int num_patches_per_side() const { return static_cast<int>(cfg_.image_size / cfg_.patch_size); }
  void collect_parameters(const std::string& prefix, std::map<std::string, torch::Tensor>& out) const;
  // The same tensors in HF's named_parameters() order (CLIPVisionTransformer).
  void append_parameters(const std::string& prefix, NamedTensors& out) const;

 private:
  io::ClipVisionConfig cfg_;
  torch::Tensor class_embedding, patch_embedding, position_embedding;
  LayerNorm pre_layrnorm, post_layernorm;
  ClipEncoder encoder_;
};

class ClipTextTower {
 public:
  ClipTextTower(const TensorSource& source, const std::string& prefix, const io::ClipTextConfig& cfg);
  // ids [B, L] int64, attention_mask [B, L] (1 = token) -> pooled [B, hidden] after final LN.
  torch::Tensor pooled(const torch::Tensor& ids, const torch::Tensor& attention_mask) const;
  const io::ClipTextConfig& config() const { return cfg_; }
  // HF's named_parameters() order (CLIPTextTransformer).
  void append_parameters(const std::string& prefix, NamedTensors& out) const;

 private:
  io::ClipTextConfig cfg_;
  torch::Tensor token_embedding, position_embedding;
  LayerNorm final_layer_norm;
  ClipEncoder encoder_;
};

// HF config defaults that only matter for initialisation (not in io::ClipConfig).
struct ClipInitOptions {
  double initializer_factor = 1.0;
  double initializer_range = 0.02;
};

// HF CLIPModel: both towers and projections, for CLIPScore and contrastive training.
class ClipModel {
 public:
  static std::unique_ptr<ClipModel> load(const std::string& dir,
                                         torch::Device device = torch::kCPU);
  // A fresh float32 model initialised as HF CLIPModel._init_weights (normal weights with HF's
  // per-module std, zero biases, unit LayerNorms, logit_scale = logit_scale_init_value). Each
  // tensor draws from its own stream seeded by (seed, key), from a portable generator
  // (mt19937_64 + Box-Muller), so the same seed gives the same bytes on any machine.
  static std::unique_ptr<ClipModel> random_init(const io::ClipConfig& cfg, uint64_t seed,
                                                const ClipInitOptions& init = {});

  // Every tensor under its HF key, in HF CLIPModel.named_parameters() order. The tensors are the
  // model's own (shared storage): set requires_grad on them, hand them to an optimizer, or copy
  // values in under NoGradGuard.
  NamedTensors named_parameters() const;
  // Writes config.json (CLIPConfig) and model.safetensors (float32, HF keys) into `dir`, as
  // CLIPModel.save_pretrained does; the tokenizer and processor files are the caller's.
  void save_pretrained(const std::string& dir, const ClipInitOptions& init = {}) const;

  // Projected, unnormalised; `hidden_states` as in ClipVisionTower::pooled (one pass for both).
  torch::Tensor image_features(const torch::Tensor& pixel_values,
                               std::vector<torch::Tensor>* hidden_states = nullptr) const;
  torch::Tensor text_features(const torch::Tensor& ids, const torch::Tensor& mask) const;
  // 100 * max(cos, 0) for every (text, image): [n_texts, n_images].
  torch::Tensor clip_score(const torch::Tensor& text_features, const torch::Tensor& image_features) const;
  double logit_scale() const;                                // the stored (log-space) value
  const torch::Tensor& logit_scale_tensor() const { return logit_scale_; }  // 0-d parameter
  const io::ClipConfig& config() const { return cfg_; }
  const ClipVisionTower& vision_tower() const { return *vision_; }

 private:
  ClipModel(const TensorSource& source, const io::ClipConfig& cfg);
  io::ClipConfig cfg_;
  std::unique_ptr<ClipVisionTower> vision_;
  std::unique_ptr<ClipTextTower> text_;
  torch::Tensor visual_projection, text_projection;
  torch::Tensor logit_scale_;
};

// config.json of a CLIPModel (and its nested vision_config, which a LLaVA config embeds too), with
// every architecture field written out.
nlohmann::json clip_config_json(const io::ClipConfig& cfg, const ClipInitOptions& init = {});
nlohmann::json clip_vision_config_json(const io::ClipVisionConfig& cfg, const ClipInitOptions& init = {});

}  // namespace p2dpo::models
