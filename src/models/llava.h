#pragma once
// LlavaForConditionalGeneration (llava-hf layout): CLIP vision tower -> feature layer select ->
// 2-layer projector -> image rows scattered into the LLaMA input embeddings at <image> tokens.
#include <memory>
#include <string>

#include "image/clip_processor.h"
#include "io/hf_config.h"
#include "models/clip.h"
#include "models/llama.h"
#include "models/vlm.h"
#include "text/llama_tokenizer.h"

namespace p2dpo::models {

struct LoadOptions {
  torch::Device device = torch::kCPU;
  torch::Dtype dtype = torch::kFloat32;  // weights are converted to this at load
  bool pad_to_square = false;            // original LLaVA's expand2square preprocessing
};

class LlavaModel : public VisionLanguageModel {
 public:
  static std::unique_ptr<LlavaModel> load(const std::string& dir, const LoadOptions& opts = {});

  const ModelInfo& info() const override { return info_; }
  torch::Device device() const override { return opts_.device; }
  PreparedImage prepare_image(const image::ImageU8& img) const override;
  torch::Tensor encode_images(const std::vector<PreparedImage>& images) override;
  torch::Tensor vision_features(const std::vector<PreparedImage>& images) override;
  torch::Tensor project_vision_features(const torch::Tensor& features) override { return project(features); }
  std::vector<std::string> vision_feature_parameter_prefixes() const override { return {"vision_tower."}; }
  int64_t tokens_per_image(const PreparedImage&) const override { return tokens_per_image_; }
  std::vector<int64_t> tokenize_prompt(const std::string& prompt,
                                       const std::vector<PreparedImage>& images) const override;
  std::pair<std::vector<int64_t>, std::vector<int64_t>> tokenize_prompt_answer(
      const std::string& prompt, const std::string& answer,
      const std::vector<PreparedImage>& images) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  ForwardOutput forward(const ForwardInput& in) override;
  KVCache new_cache() const override { return {}; }
  void freeze_cache(KVCache& cache, int64_t capacity) const override { lm_->freeze_cache(cache, capacity); }
  std::map<std::string, torch::Tensor> named_parameters() override;
  std::vector<NamedLinear> linear_layers() override;
  void set_activation_recomputation(int64_t layers) override { lm_->set_recompute_layers(layers); }

  // Parity/debug access to the stages.
  const ClipVisionTower& vision_tower() const { return *vision_; }
  LlamaDecoder& language_model() { return *lm_; }
  const io::LlavaConfig& config() const { return cfg_; }
  const text::LlamaTokenizer& tokenizer() const { return *tokenizer_; }
  const image::ClipProcessorConfig& processor_config() const { return processor_; }
  // Vision features after layer selection and CLS dropping, before the projector: [n, T, Dv].
  torch::Tensor select_image_features(const torch::Tensor& pixel_values) const;
  torch::Tensor project(const torch::Tensor& selected) const;
  // Embeds ids and scatters image rows; exposes HF's "inputs_embeds after merge".
  torch::Tensor merged_embeddings(const torch::Tensor& ids, const torch::Tensor& image_features) const;

 private:
  LlavaModel() = default;
  io::LlavaConfig cfg_;
  LoadOptions opts_;
  ModelInfo info_;
  std::unique_ptr<ClipVisionTower> vision_;
  std::unique_ptr<LlamaDecoder> lm_;
  Linear linear_1_, linear_2_;
  std::unique_ptr<text::LlamaTokenizer> tokenizer_;
  image::ClipProcessorConfig processor_;
  int64_t tokens_per_image_ = 0;
  std::string dir_;
};

}  // namespace p2dpo::models
