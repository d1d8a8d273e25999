#pragma once
// Creating and saving llava-hf checkpoints: a new LLaVA from a trained CLIP's vision tower, a
// tokenizer and a freshly initialised projector + LLaMA decoder (how the world's base model starts,
// as LLaVA-1.5 started from OpenAI's CLIP and Vicuna), and writing a (trained) model back in the
// layout HF transformers' LlavaForConditionalGeneration loads unchanged.
#include <cstdint>
#include <string>

namespace p2dpo::models {

class VisionLanguageModel;

struct LlavaBuildSpec {
  std::string vision_from;     // HF CLIPModel (or CLIPVisionModel) checkpoint dir: its vision tower is taken
  std::string tokenizer_from;  // dir holding llava-hf tokenizer files (tokenizer.model, *.json)
  int64_t hidden_size = 192;
  int64_t intermediate_size = 512;
  int num_layers = 4;
  int num_heads = 4;
  int num_kv_heads = 4;
  int64_t max_position_embeddings = 512;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-5;
  int vision_feature_layer = -2;
  std::string vision_feature_select_strategy = "default";
  // "hf": N(0, initializer_range) for every linear and embedding (HF _init_weights);
  // "fan_in": N(0, 1/sqrt(fan_in)) for linears, which the world spec found shortens the plateau.
  std::string init = "fan_in";
  double initializer_range = 0.02;
  uint64_t seed = 0;
};

// Writes config.json, model.safetensors, the tokenizer files, preprocessor_config.json (the CLIP's),
// processor_config.json and generation_config.json into out_dir (created; files written atomically).
// Throws InputError naming the file when an input is missing or inconsistent.
void build_llava_checkpoint(const LlavaBuildSpec& spec, const std::string& out_dir);

// Writes `model`'s parameters (canonical legacy llava-hf names, fp32) to out_dir/model.safetensors
// and copies every other file of source_dir (config, tokenizer, processor) beside it.
void save_llava_checkpoint(VisionLanguageModel& model, const std::string& source_dir, const std::string& out_dir);

}  // namespace p2dpo::models
