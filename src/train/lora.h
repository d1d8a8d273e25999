#pragma once
// LoRA adapters on the language model's linear layers, saved and loaded in PEFT's layout so that
// `PeftModel.from_pretrained(LlavaForConditionalGeneration..., dir)` loads what we write and we
// load what PEFT writes (for the options we can honour), plus merging into a full HF checkpoint.
//
// How the layout was checked against PEFT (huggingface/peft sources, read, not run: no Python
// PEFT on the build machines):
//  - key names: peft/utils/save_and_load.py get_peft_model_state_dict keeps the state-dict entries
//    containing "lora_" (bias "none") and removes the adapter name ("...q_proj.lora_A.default.weight"
//    -> "...q_proj.lora_A.weight"); PeftModel's state dict prefixes the HF model's module names with
//    "base_model.model.". So a layer "language_model.model.layers.3.self_attn.q_proj" saves as
//    "base_model.model.language_model.model.layers.3.self_attn.q_proj.lora_{A,B}.weight", A [r, in],
//    B [out, r] (nn.Linear weights), metadata {"format": "pt"} as save_pretrained writes.
//  - adapter_config.json: peft/config.py (PeftConfig) and peft/tuners/lora/config.py (LoraConfig).
//    We write the fields PEFT 0.10 already knew (peft_type, task_type, r, lora_alpha, lora_dropout,
//    target_modules, bias, fan_in_fan_out, inference_mode, modules_to_save, init_lora_weights,
//    use_rslora, use_dora, layers_to_transform, layers_pattern, rank_pattern, alpha_pattern,
//    layer_replication, loftq_config, megatron_config, megatron_core, auto_mapping,
//    base_model_name_or_path, revision): every later PEFT accepts them and fills its newer fields
//    with their defaults, while newer fields (peft_version, lora_bias, exclude_modules, ...) would
//    make an older PEFT refuse the file (newer ones drop unknown keys in
//    PeftConfigMixin.from_peft_type, with a warning; older ones raise TypeError).
//  - target_modules: a str is re.fullmatch'ed against every module name (peft/tuners/tuners_utils.py
//    check_target_module_exists); a list matches a name equal to an entry or ending in ".entry".
//    CLIP's vision tower also has q_proj/k_proj/v_proj, so a list would put adapters there too. We
//    write a regex, e.g. `.*language_model\..*\.(q_proj|k_proj|v_proj|o_proj)`, that selects the
//    language model's layers only, in both module layouts below.
//  - scaling alpha / r (use_rslora false), init A ~ kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(in),
//    1/sqrt(in)) and B = 0 (LoraLayer.reset_lora_parameters), forward y += B A dropout(x) * scaling
//    with x cast to A's dtype (lora/layer.py Linear.forward).
//
// Module layouts. Our canonical names are the legacy llava-hf layout ("language_model.model.layers.N
// ...", transformers < 4.52), which is also the hub checkpoints' key layout, and that is what we
// write. transformers >= 4.52 names the modules "model.language_model.layers.N..."; PEFT handles
// adapters saved with the legacy names there by applying the model's checkpoint conversion mapping
// to the adapter keys when loading (PEFT PR #2574 for 4.52+, peft/utils/transformers_weight_conversion.py
// for transformers 5), and our regex matches both layouts, so the same adapter loads in both. The
// reverse (a new-layout adapter in an old transformers) does not work in PEFT; our load() accepts
// both key layouts.
#include <torch/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace p2dpo::models {
class VisionLanguageModel;
struct Linear;
struct LoraWeights;
}  // namespace p2dpo::models

namespace p2dpo::train {

struct LoraConfig {
  int64_t r = 64;
  double alpha = 64;
  double dropout = 0.0;
  // Short module names ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
  // or the single entry "all-linear" (every LM linear layer; never the LM head, projector or vision tower).
  std::vector<std::string> target_modules = {"q_proj", "k_proj", "v_proj", "o_proj"};
};

// The config's "lora" object: {"r", "alpha", "dropout", "target_modules"} (a list of short names, or
// "all-linear" as a string or a one-entry list). Absent keys keep the defaults. InputError(where, ...)
// on unknown keys ("unknown key 'lora.x'"), wrong types or values out of range.
LoraConfig lora_config_from_json(const nlohmann::json& j, const std::string& where);
nlohmann::json lora_config_to_json(const LoraConfig& c);

// The seven LLaMA linear-layer short names, in decoder order; what "all-linear" expands to.
const std::vector<std::string>& lora_linear_names();
// The short names `target_modules` stands for ("all-linear" expanded), in decoder order.
std::vector<std::string> expand_target_modules(const std::vector<std::string>& target_modules);
// The regex written to adapter_config.json for adapters on every LM layer with these short names.
std::string lora_target_regex(const std::vector<std::string>& short_names);
// PEFT's key for a module's factor: peft_lora_key("language_model.model.layers.0.self_attn.q_proj", 'A')
// = "base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_A.weight".
std::string peft_lora_key(const std::string& module, char factor);

// A set of adapters attached to one model. It refers to the model's layers: keep the model alive
// (and its layer storage unchanged) while using it. Copies share the same adapter tensors.
class LoraAdapter {
 public:
  // Attaches fresh adapters to every targeted language-model linear layer: PEFT's init, A ~
  // kaiming_uniform(a=sqrt(5)) i.e. U(-1/sqrt(in), 1/sqrt(in)), B = 0, fp32 on the model's device,
  // scaling = alpha / r. A is drawn from std::mt19937_64 seeded per layer from (seed, module name),
  // so a layer's initial A does not depend on which other layers are targeted, on any machine.
  // InputError if nothing matches or a layer already has an adapter.
  static LoraAdapter attach(models::VisionLanguageModel& model, const LoraConfig& cfg, uint64_t seed);
  // Loads a PEFT adapter directory (adapter_config.json + adapter_model.safetensors, PEFT key names
  // in the legacy or the transformers >= 4.52 layout) and attaches it; tensors become fp32.
  // InputError naming the file (and key/field) on: missing files, malformed JSON, peft_type != LORA,
  // options we cannot honour (use_dora, use_rslora, bias != none, modules_to_save, rank/alpha
  // patterns, layers_to_transform, lora_bias, ...), target_modules that select anything but LM linear
  // layers, missing or unexpected keys, shapes that do not fit the model.
  static LoraAdapter load(models::VisionLanguageModel& model, const std::string& dir);

  const LoraConfig& config() const { return config_; }
  // Trainable tensors by PEFT key (leaf tensors; the trainer sets requires_grad). Sorted map.
  const std::map<std::string, torch::Tensor>& parameters() const { return parameters_; }
  // Canonical names of the adapted modules, in the model's layer order.
  std::vector<std::string> modules() const;
  double scaling() const;
  bool attached() const { return attached_; }

  void set_enabled(bool on);  // off: the model computes exactly the base model (reference log-probs)
  bool enabled() const { return enabled_; }
  // Adapter matmuls in the activations' dtype (bf16 on CUDA) with fp32 master weights, as under
  // autocast; off (the default, and what eval and merge use): fp32 as PEFT computes without autocast.
  void set_autocast(bool on);

  // Writes dir/adapter_model.safetensors then dir/adapter_config.json, each atomically (temp +
  // rename), as PEFT's save_pretrained does for this model; `base_model_path` goes into
  // base_model_name_or_path.
  void save(const std::string& dir, const std::string& base_model_path) const;
  // The adapter_config.json object save() writes.
  nlohmann::json peft_config_json(const std::string& base_model_path) const;

  // W = (W.float() + scaling * B.float() @ A.float()).to(W.dtype) for every adapted layer, then
  // detach(). (PEFT adds the delta in W's dtype; summing in fp32 rounds once instead of twice.)
  void merge_into_base();
  void detach();  // removes the adapters from the model (Linear::lora reset); tensors stay readable

 private:
  struct Slot {
    std::string module;
    models::Linear* layer = nullptr;
    std::shared_ptr<models::LoraWeights> weights;
  };
  LoraConfig config_;
  std::vector<Slot> slots_;
  std::map<std::string, torch::Tensor> parameters_;
  bool attached_ = false;
  bool enabled_ = true;
  // True when the slots are exactly every LM layer with config_.target_modules' short names (then
  // adapter_config.json gets the short regex; otherwise an exact alternation of the modules).
  bool covers_all_layers_ = true;
};

// `p2dpo merge`: loads the base, the adapter, merges, writes a full HF checkpoint in out_dir that
// loads like the base: every non-weight file of model_dir copied, weights in out_dir/model.safetensors
// with the base's key names and dtypes (untouched tensors byte for byte; adapted weights computed
// from the base's stored values in fp32 and rounded once to their dtype). A sharded base becomes one
// file. InputError if out_dir is model_dir. Returns the number of merged layers.
int merge_adapter_checkpoint(const std::string& model_dir, const std::string& adapter_dir, const std::string& out_dir);

}  // namespace p2dpo::train
