#include "io/hf_config.h"

#include <cmath>
#include <filesystem>

#include "io/errors.h"
#include "io/json_io.h"

namespace p2dpo::io {

namespace {

using nlohmann::json;

std::string label(const std::string& context, const std::string& key) { return detail::field_label(context, key); }

void require_positive(int64_t value, const std::string& context, const std::string& key, const std::string& file) {
  if (value <= 0)
    throw InputError(file, "field '" + label(context, key) + "': must be positive, got " + std::to_string(value));
}

void require_positive(double value, const std::string& context, const std::string& key, const std::string& file) {
  if (!(value > 0.0) || !std::isfinite(value))
    throw InputError(file, "field '" + label(context, key) + "': must be a positive finite number, got " +
                               std::to_string(value));
}

// A nested config that must be present as an object.
const json& required_object(const json& parent, const std::string& key, const std::string& file,
                            const std::string& context) {
  const std::string name = label(context, key);
  if (!parent.is_object()) throw InputError(file, "expected a JSON object, got " + std::string(json_type_name(parent)));
  auto it = parent.find(key);
  if (it == parent.end() || it->is_null()) throw InputError(file, "missing required field '" + name + "'");
  if (!it->is_object())
    throw InputError(file, "field '" + name + "': expected object, got " + std::string(json_type_name(*it)));
  return *it;
}

void require_object(const json& j, const std::string& file, const std::string& context) {
  if (!j.is_object())
    throw InputError(file, (context.empty() ? std::string("config") : "field '" + context + "'") +
                               ": expected object, got " + json_type_name(j));
}

// model_type, when present, must be one of `accepted` (absent is fine for nested configs).
void check_model_type(const json& j, const std::vector<std::string>& accepted, bool required,
                      const std::string& file, const std::string& context) {
  auto it = j.find("model_type");
  if (it == j.end() || it->is_null()) {
    if (required) throw InputError(file, "missing required field '" + label(context, "model_type") + "'");
    return;
  }
  const auto value = detail::convert_field<std::string>(*it, label(context, "model_type"), file);
  for (const auto& a : accepted)
    if (value == a) return;
  std::string list;
  for (const auto& a : accepted) list += (list.empty() ? "'" : ", '") + a + "'";
  throw InputError(file, "field '" + label(context, "model_type") + "': unsupported model type '" + value +
                             "' (expected " + list + ")");
}

void check_heads(int64_t hidden, int64_t heads, const std::string& context, const std::string& file) {
  if (hidden % heads != 0)
    throw InputError(file, "field '" + label(context, "hidden_size") + "': " + std::to_string(hidden) +
                               " is not divisible by " + label(context, "num_attention_heads") + " " +
                               std::to_string(heads));
}

RopeScaling parse_rope_object(const json& obj, const std::string& file, const std::string& ctx) {
  RopeScaling r;
  r.raw = obj;
  // Older configs spell it "type", newer ones "rope_type"; both may be present and then agree.
  r.type = get_optional<std::string>(obj, "type", r.type, file, ctx);
  r.type = get_optional<std::string>(obj, "rope_type", r.type, file, ctx);
  r.factor = get_optional<double>(obj, "factor", 1.0, file, ctx);
  require_positive(r.factor, ctx, "factor", file);
  return r;
}

}  // namespace

ClipVisionConfig parse_clip_vision_config(const json& j, const std::string& file, const std::string& ctx) {
  require_object(j, file, ctx);
  check_model_type(j, {"clip_vision_model"}, false, file, ctx);
  ClipVisionConfig c;
  c.hidden_size = get_optional<int64_t>(j, "hidden_size", c.hidden_size, file, ctx);
  c.intermediate_size = get_optional<int64_t>(j, "intermediate_size", c.intermediate_size, file, ctx);
  c.num_hidden_layers = get_optional<int64_t>(j, "num_hidden_layers", c.num_hidden_layers, file, ctx);
  c.num_attention_heads = get_optional<int64_t>(j, "num_attention_heads", c.num_attention_heads, file, ctx);
  c.image_size = get_optional<int64_t>(j, "image_size", c.image_size, file, ctx);
  c.patch_size = get_optional<int64_t>(j, "patch_size", c.patch_size, file, ctx);
  c.num_channels = get_optional<int64_t>(j, "num_channels", c.num_channels, file, ctx);
  c.hidden_act = get_optional<std::string>(j, "hidden_act", c.hidden_act, file, ctx);
  c.layer_norm_eps = get_optional<double>(j, "layer_norm_eps", c.layer_norm_eps, file, ctx);
  c.projection_dim = get_optional<int64_t>(j, "projection_dim", c.projection_dim, file, ctx);

  for (auto [key, value] : {std::pair<const char*, int64_t>{"hidden_size", c.hidden_size},
                            {"intermediate_size", c.intermediate_size},
                            {"num_hidden_layers", c.num_hidden_layers},
                            {"num_attention_heads", c.num_attention_heads},
                            {"image_size", c.image_size},
                            {"patch_size", c.patch_size},
                            {"num_channels", c.num_channels},
                            {"projection_dim", c.projection_dim}})
    require_positive(value, ctx, key, file);
  require_positive(c.layer_norm_eps, ctx, "layer_norm_eps", file);
  check_heads(c.hidden_size, c.num_attention_heads, ctx, file);
  if (c.patch_size > c.image_size)
    throw InputError(file, "field '" + label(ctx, "patch_size") + "': " + std::to_string(c.patch_size) +
                               " is larger than image_size " + std::to_string(c.image_size));
  return c;
}

ClipTextConfig parse_clip_text_config(const json& j, const std::string& file, const std::string& ctx) {
  require_object(j, file, ctx);
  check_model_type(j, {"clip_text_model"}, false, file, ctx);
  ClipTextConfig c;
  c.vocab_size = get_optional<int64_t>(j, "vocab_size", c.vocab_size, file, ctx);
  c.hidden_size = get_optional<int64_t>(j, "hidden_size", c.hidden_size, file, ctx);
  c.intermediate_size = get_optional<int64_t>(j, "intermediate_size", c.intermediate_size, file, ctx);
  c.num_hidden_layers = get_optional<int64_t>(j, "num_hidden_layers", c.num_hidden_layers, file, ctx);
  c.num_attention_heads = get_optional<int64_t>(j, "num_attention_heads", c.num_attention_heads, file, ctx);
  c.max_position_embeddings =
      get_optional<int64_t>(j, "max_position_embeddings", c.max_position_embeddings, file, ctx);
  c.hidden_act = get_optional<std::string>(j, "hidden_act", c.hidden_act, file, ctx);
  c.layer_norm_eps = get_optional<double>(j, "layer_norm_eps", c.layer_norm_eps, file, ctx);
  c.bos_token_id = get_optional<int64_t>(j, "bos_token_id", c.bos_token_id, file, ctx);
  c.eos_token_id = get_optional<int64_t>(j, "eos_token_id", c.eos_token_id, file, ctx);
  c.pad_token_id = get_optional<int64_t>(j, "pad_token_id", c.pad_token_id, file, ctx);
  c.projection_dim = get_optional<int64_t>(j, "projection_dim", c.projection_dim, file, ctx);

  for (auto [key, value] : {std::pair<const char*, int64_t>{"vocab_size", c.vocab_size},
                            {"hidden_size", c.hidden_size},
                            {"intermediate_size", c.intermediate_size},
                            {"num_hidden_layers", c.num_hidden_layers},
                            {"num_attention_heads", c.num_attention_heads},
                            {"max_position_embeddings", c.max_position_embeddings},
                            {"projection_dim", c.projection_dim}})
    require_positive(value, ctx, key, file);
  require_positive(c.layer_norm_eps, ctx, "layer_norm_eps", file);
  check_heads(c.hidden_size, c.num_attention_heads, ctx, file);
  return c;
}

LlamaConfig parse_llama_config(const json& j, const std::string& file, const std::string& ctx) {
  require_object(j, file, ctx);
  check_model_type(j, {"llama"}, false, file, ctx);
  LlamaConfig c;
  c.vocab_size = get_optional<int64_t>(j, "vocab_size", c.vocab_size, file, ctx);
  c.hidden_size = get_optional<int64_t>(j, "hidden_size", c.hidden_size, file, ctx);
  c.intermediate_size = get_optional<int64_t>(j, "intermediate_size", c.intermediate_size, file, ctx);
  c.num_hidden_layers = get_optional<int64_t>(j, "num_hidden_layers", c.num_hidden_layers, file, ctx);
  c.num_attention_heads = get_optional<int64_t>(j, "num_attention_heads", c.num_attention_heads, file, ctx);
  require_positive(c.hidden_size, ctx, "hidden_size", file);
  require_positive(c.num_attention_heads, ctx, "num_attention_heads", file);
  c.num_key_value_heads = get_optional<int64_t>(j, "num_key_value_heads", c.num_attention_heads, file, ctx);
  auto head_dim_it = j.find("head_dim");
  const bool explicit_head_dim = head_dim_it != j.end() && !head_dim_it->is_null();
  if (!explicit_head_dim) check_heads(c.hidden_size, c.num_attention_heads, ctx, file);
  c.head_dim = get_optional<int64_t>(j, "head_dim", c.hidden_size / c.num_attention_heads, file, ctx);
  c.rms_norm_eps = get_optional<double>(j, "rms_norm_eps", c.rms_norm_eps, file, ctx);
  c.max_position_embeddings =
      get_optional<int64_t>(j, "max_position_embeddings", c.max_position_embeddings, file, ctx);
  c.hidden_act = get_optional<std::string>(j, "hidden_act", c.hidden_act, file, ctx);
  c.attention_bias = get_optional<bool>(j, "attention_bias", c.attention_bias, file, ctx);
  c.mlp_bias = get_optional<bool>(j, "mlp_bias", c.mlp_bias, file, ctx);
  c.tie_word_embeddings = get_optional<bool>(j, "tie_word_embeddings", c.tie_word_embeddings, file, ctx);
  c.bos_token_id = get_optional<int64_t>(j, "bos_token_id", c.bos_token_id, file, ctx);

  // RoPE: transformers >= 5 writes rope_parameters {rope_type, rope_theta, ...}; older versions a
  // top-level rope_theta plus an optional rope_scaling {type|rope_type, factor}.
  c.rope_theta = get_optional<double>(j, "rope_theta", c.rope_theta, file, ctx);
  auto params = j.find("rope_parameters");
  if (params != j.end() && !params->is_null()) {
    const std::string pctx = label(ctx, "rope_parameters");
    if (!params->is_object())
      throw InputError(file, "field '" + pctx + "': expected object, got " + json_type_name(*params));
    c.rope_theta = get_optional<double>(*params, "rope_theta", c.rope_theta, file, pctx);
    c.rope_scaling = parse_rope_object(*params, file, pctx);
  }
  auto scaling = j.find("rope_scaling");
  if (scaling != j.end() && !scaling->is_null()) {
    const std::string sctx = label(ctx, "rope_scaling");
    if (!scaling->is_object())
      throw InputError(file, "field '" + sctx + "': expected object, got " + json_type_name(*scaling));
    c.rope_scaling = parse_rope_object(*scaling, file, sctx);
  }

  auto eos = j.find("eos_token_id");
  if (eos != j.end()) {
    const std::string ectx = label(ctx, "eos_token_id");
    if (eos->is_null()) {
      c.eos_token_ids.clear();
    } else if (eos->is_array()) {
      c.eos_token_ids.clear();
      for (size_t i = 0; i < eos->size(); ++i)
        c.eos_token_ids.push_back(detail::convert_field<int64_t>((*eos)[i], ectx + "[" + std::to_string(i) + "]", file));
    } else if (eos->is_number_integer()) {
      c.eos_token_ids = {detail::convert_field<int64_t>(*eos, ectx, file)};
    } else {
      throw InputError(file, "field '" + ectx + "': expected integer or array of integers, got " +
                                 json_type_name(*eos));
    }
  }
  auto pad = j.find("pad_token_id");
  if (pad != j.end() && !pad->is_null()) c.pad_token_id = detail::convert_field<int64_t>(*pad, label(ctx, "pad_token_id"), file);

  for (auto [key, value] : {std::pair<const char*, int64_t>{"vocab_size", c.vocab_size},
                            {"intermediate_size", c.intermediate_size},
                            {"num_hidden_layers", c.num_hidden_layers},
                            {"num_key_value_heads", c.num_key_value_heads},
                            {"head_dim", c.head_dim},
                            {"max_position_embeddings", c.max_position_embeddings}})
    require_positive(value, ctx, key, file);
  require_positive(c.rms_norm_eps, ctx, "rms_norm_eps", file);
  require_positive(c.rope_theta, ctx, "rope_theta", file);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    throw InputError(file, "field '" + label(ctx, "num_key_value_heads") + "': num_attention_heads " +
                               std::to_string(c.num_attention_heads) + " is not divisible by " +
                               std::to_string(c.num_key_value_heads));
  return c;
}

ClipConfig parse_clip_config(const json& j, const std::string& file) {
  require_object(j, file, "");
  check_model_type(j, {"clip"}, false, file, "");
  ClipConfig c;
  c.text = parse_clip_text_config(required_object(j, "text_config", file, ""), file, "text_config");
  c.vision = parse_clip_vision_config(required_object(j, "vision_config", file, ""), file, "vision_config");
  c.projection_dim = get_optional<int64_t>(j, "projection_dim", c.projection_dim, file, "");
  c.logit_scale_init_value = get_optional<double>(j, "logit_scale_init_value", c.logit_scale_init_value, file, "");
  require_positive(c.projection_dim, "", "projection_dim", file);
  return c;
}

LlavaConfig parse_llava_config(const json& j, const std::string& file) {
  require_object(j, file, "");
  check_model_type(j, {"llava"}, true, file, "");
  LlavaConfig c;
  c.text = parse_llama_config(required_object(j, "text_config", file, ""), file, "text_config");
  c.vision = parse_clip_vision_config(required_object(j, "vision_config", file, ""), file, "vision_config");

  // image_token_id is the newer spelling; image_token_index wins when both are present (HF does the same).
  c.image_token_index = get_optional<int64_t>(j, "image_token_id", c.image_token_index, file, "");
  c.image_token_index = get_optional<int64_t>(j, "image_token_index", c.image_token_index, file, "");
  // Not bounded by text vocab_size: HF's own defaults (32000 with vocab 32000) put it just outside,
  // and the model overwrites those embedding rows with image features anyway.
  if (c.image_token_index < 0)
    throw InputError(file, "field 'image_token_index': must be non-negative, got " + std::to_string(c.image_token_index));

  auto layer = j.find("vision_feature_layer");
  if (layer != j.end() && !layer->is_null()) {
    if (layer->is_array()) {
      if (layer->empty()) throw InputError(file, "field 'vision_feature_layer': empty list");
      c.vision_feature_layers.clear();
      c.vision_feature_layer_is_list = true;
      for (size_t i = 0; i < layer->size(); ++i)
        c.vision_feature_layers.push_back(
            detail::convert_field<int64_t>((*layer)[i], "vision_feature_layer[" + std::to_string(i) + "]", file));
    } else if (layer->is_number_integer()) {
      c.vision_feature_layers = {detail::convert_field<int64_t>(*layer, "vision_feature_layer", file)};
    } else {
      throw InputError(file, std::string("field 'vision_feature_layer': expected integer or array of integers, got ") +
                                 json_type_name(*layer));
    }
  }
  // Indices into hidden_states, which has num_hidden_layers + 1 entries (embeddings first).
  const int64_t n_states = c.vision.num_hidden_layers + 1;
  for (int64_t l : c.vision_feature_layers)
    if (l < -n_states || l >= n_states)
      throw InputError(file, "field 'vision_feature_layer': " + std::to_string(l) + " is out of range for " +
                                 std::to_string(c.vision.num_hidden_layers) + " vision layers");

  c.vision_feature_select_strategy =
      get_optional<std::string>(j, "vision_feature_select_strategy", c.vision_feature_select_strategy, file, "");
  if (c.vision_feature_select_strategy != "default" && c.vision_feature_select_strategy != "full")
    throw InputError(file, "field 'vision_feature_select_strategy': expected \"default\" or \"full\", got \"" +
                               c.vision_feature_select_strategy + "\"");
  c.projector_hidden_act = get_optional<std::string>(j, "projector_hidden_act", c.projector_hidden_act, file, "");
  c.multimodal_projector_bias =
      get_optional<bool>(j, "multimodal_projector_bias", c.multimodal_projector_bias, file, "");
  c.image_seq_length = get_optional<int64_t>(j, "image_seq_length", c.image_seq_length, file, "");
  require_positive(c.image_seq_length, "", "image_seq_length", file);
  auto pad = j.find("pad_token_id");
  if (pad != j.end() && !pad->is_null()) c.pad_token_id = detail::convert_field<int64_t>(*pad, "pad_token_id", file);
  return c;
}

namespace {
std::string config_path_for(const std::string& model_dir_or_config_path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(model_dir_or_config_path, ec)) return (fs::path(model_dir_or_config_path) / "config.json").string();
  return model_dir_or_config_path;
}
}  // namespace

ClipConfig load_clip_config(const std::string& model_dir_or_config_path) {
  const std::string path = config_path_for(model_dir_or_config_path);
  return parse_clip_config(read_json_file(path), path);
}

LlavaConfig load_llava_config(const std::string& model_dir_or_config_path) {
  const std::string path = config_path_for(model_dir_or_config_path);
  return parse_llava_config(read_json_file(path), path);
}

std::string canonical_llava_key(const std::string& key) {
  // hf-port.md §A.1.3, applied in reverse (new -> legacy). Prefixes end in '.' so that e.g.
  // "lm_head_extra" is not mistaken for "lm_head.".
  static const std::pair<const char*, const char*> kNewToLegacy[] = {
      {"model.language_model.", "language_model.model."},
      {"model.vision_tower.", "vision_tower."},
      {"model.multi_modal_projector.", "multi_modal_projector."},
      {"lm_head.", "language_model.lm_head."},
  };
  std::string out = key;
  for (const auto& [from, to] : kNewToLegacy) {
    const std::string prefix(from);
    if (key.compare(0, prefix.size(), prefix) == 0) {
      out = to + key.substr(prefix.size());
      break;
    }
  }
  // transformers 5 saves the CLIP tower without its "vision_model." level
  // (model.vision_tower.embeddings...); every earlier layout has it.
  static const std::string tower = "vision_tower.", nested = "vision_tower.vision_model.";
  if (out.compare(0, tower.size(), tower) == 0 && out.compare(0, nested.size(), nested) != 0)
    out = nested + out.substr(tower.size());
  return out;
}

bool is_ignorable_buffer_key(const std::string& key) {
  auto is_suffix = [&](const std::string& suffix) {
    if (key.size() < suffix.size() || key.compare(key.size() - suffix.size(), suffix.size(), suffix) != 0) return false;
    // Whole key, or the suffix starts a new dotted component.
    return key.size() == suffix.size() || key[key.size() - suffix.size() - 1] == '.';
  };
  return is_suffix("position_ids") || is_suffix("rotary_emb.inv_freq");
}

}  // namespace p2dpo::io
