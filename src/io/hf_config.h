#pragma once
// Hugging Face config.json parsing for CLIP, Llama and LLaVA, with the HF class defaults filled in
// for missing keys (hf-port.md §A.1, §A.2). The defaults matter: e.g. llava-1.5's text_config
// omits everything but rms_norm_eps/vocab/max positions, and LlamaConfig's own rms_norm_eps
// default (1e-6) differs from the file's 1e-5. A key present with value null also means "default".
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace p2dpo::io {

struct ClipVisionConfig {
  int64_t hidden_size = 768;
  int64_t intermediate_size = 3072;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t image_size = 224;
  int64_t patch_size = 32;
  int64_t num_channels = 3;
  std::string hidden_act = "quick_gelu";
  double layer_norm_eps = 1e-5;
  int64_t projection_dim = 512;

  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  int64_t num_patches() const { return (image_size / patch_size) * (image_size / patch_size); }
};

struct ClipTextConfig {
  int64_t vocab_size = 49408;
  int64_t hidden_size = 512;
  int64_t intermediate_size = 2048;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 8;
  int64_t max_position_embeddings = 77;
  std::string hidden_act = "quick_gelu";
  double layer_norm_eps = 1e-5;
  int64_t bos_token_id = 49406;
  int64_t eos_token_id = 49407;  // == 2 selects the legacy argmax(input_ids) pooling (hf-port.md §B.8)
  int64_t pad_token_id = 1;
  int64_t projection_dim = 512;

  int64_t head_dim() const { return hidden_size / num_attention_heads; }
};

struct ClipConfig {
  ClipTextConfig text;
  ClipVisionConfig vision;
  int64_t projection_dim = 512;
  double logit_scale_init_value = 2.6592;  // only initialises the parameter; the weights hold logit_scale
};

// RoPE scaling as written in the config. Only "default" (no scaling) and "linear" are implemented by
// the model; other types are still parsed so the model can refuse them by name.
struct RopeScaling {
  std::string type = "default";  // rope_scaling.type / rope_type, or rope_parameters.rope_type
  double factor = 1.0;
  nlohmann::json raw;  // the whole rope_scaling / rope_parameters object (null if absent)
};

struct LlamaConfig {
  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 32;  // = num_attention_heads when absent
  int64_t head_dim = 128;            // = hidden_size / num_attention_heads when absent
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  int64_t max_position_embeddings = 2048;
  std::string hidden_act = "silu";
  bool attention_bias = false;
  bool mlp_bias = false;
  bool tie_word_embeddings = false;
  int64_t bos_token_id = 1;
  std::vector<int64_t> eos_token_ids{2};  // eos_token_id may be an int or a list; null -> empty
  std::optional<int64_t> pad_token_id;
};

struct LlavaConfig {
  LlamaConfig text;
  ClipVisionConfig vision;
  int64_t image_token_index = 32000;  // also read from the alias image_token_id
  // vision_feature_layer: one index into the vision hidden_states tuple (length layers+1), or a list
  // whose selected layers are concatenated on the feature dim.
  std::vector<int64_t> vision_feature_layers{-2};
  bool vision_feature_layer_is_list = false;
  std::string vision_feature_select_strategy = "default";  // "default" drops CLS, "full" keeps it
  std::string projector_hidden_act = "gelu";
  bool multimodal_projector_bias = true;
  int64_t image_seq_length = 576;
  std::optional<int64_t> pad_token_id;
};

// `file` names the source in error messages: InputError(file, "field 'text_config.hidden_size': ...").
ClipVisionConfig parse_clip_vision_config(const nlohmann::json& j, const std::string& file,
                                          const std::string& context = "vision_config");
ClipTextConfig parse_clip_text_config(const nlohmann::json& j, const std::string& file,
                                      const std::string& context = "text_config");
LlamaConfig parse_llama_config(const nlohmann::json& j, const std::string& file,
                               const std::string& context = "text_config");
ClipConfig parse_clip_config(const nlohmann::json& j, const std::string& file);
LlavaConfig parse_llava_config(const nlohmann::json& j, const std::string& file);

// Reads <dir>/config.json, or the given .json file.
ClipConfig load_clip_config(const std::string& model_dir_or_config_path);
LlavaConfig load_llava_config(const std::string& model_dir_or_config_path);

// Maps a LLaVA weight key in the newer in-memory layout (transformers >= 4.52: model.language_model.*,
// model.vision_tower.*, model.multi_modal_projector.*, lm_head.*) to the legacy hub layout
// (language_model.model.*, vision_tower.*, multi_modal_projector.*, language_model.lm_head.*),
// hf-port.md §A.1.3. Legacy keys and anything else map to themselves.
std::string canonical_llava_key(const std::string& key);

// Non-persistent buffers that some checkpoints carry and a loader should skip:
// *.position_ids and *.rotary_emb.inv_freq.
bool is_ignorable_buffer_key(const std::string& key);

}  // namespace p2dpo::io
