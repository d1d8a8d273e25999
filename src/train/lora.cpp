#include "train/lora.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <set>

#include "image/noise.h"
#include "io/atomic_file.h"
#include "io/errors.h"
#include "io/hf_config.h"
#include "io/json_io.h"
#include "io/safetensors.h"
#include "models/layers.h"
#include "models/load.h"
#include "models/vlm.h"
#include "models/weights.h"
#include "train/checkpoint.h"
#include "train/rng.h"

namespace p2dpo::train {

namespace fs = std::filesystem;

namespace {

const char* kConfigFile = "adapter_config.json";
const char* kWeightsFile = "adapter_model.safetensors";
const std::string kKeyPrefix = "base_model.model.";

std::string short_name(const std::string& module) {
  const auto dot = module.rfind('.');
  return dot == std::string::npos ? module : module.substr(dot + 1);
}

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

// The module's name in transformers >= 4.52's LLaVA layout (what PEFT matches target_modules
// against there); other names map to themselves.
std::string new_layout_name(const std::string& legacy) {
  static const std::pair<const char*, const char*> kLegacyToNew[] = {
      {"language_model.model", "model.language_model"},
      {"language_model.lm_head", "lm_head"},
      {"vision_tower", "model.vision_tower"},
      {"multi_modal_projector", "model.multi_modal_projector"},
  };
  for (const auto& [from, to] : kLegacyToNew) {
    const std::string f(from);
    if (legacy == f || starts_with(legacy, f + ".")) return std::string(to) + legacy.substr(f.size());
  }
  return legacy;
}

// A module name of either layout back to our canonical (legacy) one.
std::string canonical_module(const std::string& module) {
  const std::string key = io::canonical_llava_key(module + ".weight");
  return key.substr(0, key.size() - std::string(".weight").size());
}

// Python's re.fullmatch, close enough for module-name patterns: PCRE2 anchored at both ends.
class FullMatcher {
 public:
  FullMatcher(const std::string& pattern, const std::string& file) {
    int err = 0;
    PCRE2_SIZE offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                          PCRE2_ANCHORED | PCRE2_ENDANCHORED, &err, &offset, nullptr);
    if (!code_) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      throw InputError(file, "field 'target_modules': regex '" + pattern + "' does not compile at offset " +
                                 std::to_string(offset) + ": " + reinterpret_cast<const char*>(msg));
    }
    data_ = pcre2_match_data_create_from_pattern(code_, nullptr);
  }
  ~FullMatcher() {
    pcre2_match_data_free(data_);
    pcre2_code_free(code_);
  }
  FullMatcher(const FullMatcher&) = delete;
  FullMatcher& operator=(const FullMatcher&) = delete;
  bool operator()(const std::string& s) const {
    return pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), 0, 0, data_, nullptr) >= 0;
  }

 private:
  pcre2_code* code_ = nullptr;
  pcre2_match_data* data_ = nullptr;
};

std::string regex_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (std::string(".^$*+?()[]{}|\\").find(c) != std::string::npos) out += '\\';
    out += c;
  }
  return out;
}

std::vector<models::NamedLinear> language_model_linears(models::VisionLanguageModel& model) {
  std::vector<models::NamedLinear> out;
  for (auto& l : model.linear_layers()) {
    if (l.part == models::NamedLinear::Part::kLanguageModel) out.push_back(l);
  }
  return out;
}

// W + scaling * B @ A, summed in fp32 and rounded once to W's dtype.
torch::Tensor merged_weight(const torch::Tensor& w, const torch::Tensor& a, const torch::Tensor& b, double scaling) {
  auto delta = torch::matmul(b.to(w.device(), torch::kFloat32), a.to(w.device(), torch::kFloat32)).mul(scaling);
  return (w.to(torch::kFloat32) + delta).to(w.scalar_type());
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

bool json_is_default_like(const nlohmann::json& v) {
  return v.is_null() || (v.is_boolean() && !v.get<bool>()) || (v.is_object() && v.empty()) ||
         (v.is_array() && v.empty()) || (v.is_string() && v.get<std::string>().empty());
}

// adapter_config.json -> what we need, refusing what we cannot reproduce.
struct PeftAdapterSpec {
  LoraConfig config;
  nlohmann::json target_modules;  // string (regex) or array of names
};

PeftAdapterSpec parse_peft_config(const std::string& file) {
  if (!fs::exists(file)) throw InputError(file, "file not found (a PEFT adapter directory needs adapter_config.json)");
  const auto j = io::read_json_file(file);
  if (!j.is_object()) throw InputError(file, std::string("expected a JSON object, got ") + io::json_type_name(j));

  const auto peft_type = io::get_required<std::string>(j, "peft_type", file, "");
  if (peft_type != "LORA") throw InputError(file, "field 'peft_type': '" + peft_type + "' is not supported (only LORA)");

  PeftAdapterSpec spec;
  spec.config.r = io::get_required<int64_t>(j, "r", file, "");
  if (spec.config.r < 1) throw InputError(file, "field 'r': must be >= 1, got " + std::to_string(spec.config.r));
  spec.config.alpha = io::get_optional<double>(j, "lora_alpha", 8.0, file, "");  // PEFT's default
  spec.config.dropout = io::get_optional<double>(j, "lora_dropout", 0.0, file, "");
  if (!(spec.config.dropout >= 0.0 && spec.config.dropout < 1.0))
    throw InputError(file, "field 'lora_dropout': must be in [0, 1)");

  auto refuse = [&](const std::string& field, const std::string& why) {
    throw InputError(file, "field '" + field + "': " + why + "; p2dpo cannot honour it");
  };
  auto must_be_false = [&](const char* field, const char* what) {
    if (io::get_optional<bool>(j, field, false, file, "")) refuse(field, std::string(what) + " is on");
  };
  must_be_false("use_dora", "DoRA");
  must_be_false("use_rslora", "rank-stabilised scaling (alpha / sqrt(r))");
  must_be_false("lora_bias", "a trainable LoRA bias");
  must_be_false("use_qalora", "QALoRA");
  const auto bias = io::get_optional<std::string>(j, "bias", "none", file, "");
  if (bias != "none") refuse("bias", "'" + bias + "' trains base biases (only 'none' is supported)");

  // Options that change what is adapted or how; supported only at their default (empty) value.
  for (const char* field : {"modules_to_save", "rank_pattern", "alpha_pattern", "layers_to_transform",
                            "layer_replication", "exclude_modules", "megatron_config", "trainable_token_indices",
                            "target_parameters", "alora_invocation_tokens", "arrow_config"}) {
    auto it = j.find(field);
    if (it != j.end() && !json_is_default_like(*it)) refuse(field, "set to " + it->dump());
  }

  // Fields that do not change a loaded adapter's function (init schemes, bookkeeping).
  static const std::set<std::string> kHandled = {
      "peft_type", "r", "lora_alpha", "lora_dropout", "target_modules", "bias", "use_dora", "use_rslora",
      "lora_bias", "use_qalora", "modules_to_save", "rank_pattern", "alpha_pattern", "layers_to_transform",
      "layer_replication", "exclude_modules", "megatron_config", "trainable_token_indices", "target_parameters",
      "alora_invocation_tokens", "arrow_config",
      // No effect on loading: fan_in_fan_out is forced off by PEFT for nn.Linear; layers_pattern is
      // used only with layers_to_transform; the rest are init-time or bookkeeping.
      "fan_in_fan_out", "layers_pattern", "base_model_name_or_path", "revision", "task_type", "inference_mode",
      "init_lora_weights", "loftq_config", "eva_config", "corda_config", "megatron_core", "auto_mapping",
      "peft_version", "runtime_config", "qalora_group_size", "ensure_weight_tying"};
  for (const auto& [key, value] : j.items()) {
    if (!kHandled.count(key) && !json_is_default_like(value))
      refuse(key, "unknown option set to " + value.dump());
  }

  auto it = j.find("target_modules");
  if (it == j.end() || it->is_null())
    throw InputError(file, "missing required field 'target_modules' (PEFT's per-architecture default is not supported)");
  if (it->is_string()) {
    if (it->get<std::string>() == "all-linear")
      refuse("target_modules", "'all-linear' on LLaVA also adapts the vision tower and projector");
  } else if (it->is_array()) {
    for (const auto& t : *it) {
      if (!t.is_string()) throw InputError(file, "field 'target_modules': expected strings, got " + t.dump());
    }
    if (it->empty()) throw InputError(file, "field 'target_modules': empty list");
  } else {
    throw InputError(file, std::string("field 'target_modules': expected string or array, got ") +
                               io::json_type_name(*it));
  }
  spec.target_modules = *it;
  return spec;
}

}  // namespace

// ---- config ----

const std::vector<std::string>& lora_linear_names() {
  static const std::vector<std::string> names = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                 "gate_proj", "up_proj", "down_proj"};
  return names;
}

std::vector<std::string> expand_target_modules(const std::vector<std::string>& target_modules) {
  if (target_modules.size() == 1 && target_modules[0] == "all-linear") return lora_linear_names();
  std::vector<std::string> out;
  for (const auto& n : lora_linear_names()) {
    for (const auto& t : target_modules) {
      if (t == n) {
        out.push_back(n);
        break;
      }
    }
  }
  return out;
}

std::string lora_target_regex(const std::vector<std::string>& short_names) {
  std::string alt;
  for (const auto& n : short_names) alt += (alt.empty() ? "" : "|") + regex_escape(n);
  return ".*language_model\\..*\\.(" + alt + ")";
}

std::string peft_lora_key(const std::string& module, char factor) {
  return kKeyPrefix + module + ".lora_" + std::string(1, factor) + ".weight";
}

LoraConfig lora_config_from_json(const nlohmann::json& j, const std::string& where) {
  LoraConfig c;
  if (j.is_null()) return c;
  if (!j.is_object()) throw InputError(where, std::string("'lora': expected object, got ") + io::json_type_name(j));
  for (const auto& [key, value] : j.items()) {
    if (key != "r" && key != "alpha" && key != "dropout" && key != "target_modules")
      throw InputError(where, "unknown key 'lora." + key + "' (known: r, alpha, dropout, target_modules)");
  }
  c.r = io::get_optional<int64_t>(j, "r", c.r, where, "lora");
  c.alpha = io::get_optional<double>(j, "alpha", c.alpha, where, "lora");
  c.dropout = io::get_optional<double>(j, "dropout", c.dropout, where, "lora");
  if (c.r < 1) throw InputError(where, "field 'lora.r': must be >= 1, got " + std::to_string(c.r));
  if (!(c.alpha > 0.0) || !std::isfinite(c.alpha)) throw InputError(where, "field 'lora.alpha': must be > 0");
  if (!(c.dropout >= 0.0 && c.dropout < 1.0)) throw InputError(where, "field 'lora.dropout': must be in [0, 1)");
  if (auto it = j.find("target_modules"); it != j.end() && !it->is_null()) {
    if (it->is_string()) {
      c.target_modules = {it->get<std::string>()};
    } else {
      c.target_modules = io::get_required<std::vector<std::string>>(j, "target_modules", where, "lora");
    }
    if (c.target_modules.empty()) throw InputError(where, "field 'lora.target_modules': empty");
    const bool all_linear = c.target_modules.size() == 1 && c.target_modules[0] == "all-linear";
    if (!all_linear) {
      std::set<std::string> seen;
      for (const auto& t : c.target_modules) {
        bool known = false;
        for (const auto& n : lora_linear_names()) known = known || n == t;
        if (!known)
          throw InputError(where, "field 'lora.target_modules': unknown module '" + t +
                                      "' (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, "
                                      "or \"all-linear\" alone)");
        if (!seen.insert(t).second) throw InputError(where, "field 'lora.target_modules': '" + t + "' listed twice");
      }
    }
  }
  return c;
}

nlohmann::json lora_config_to_json(const LoraConfig& c) {
  return {{"r", c.r}, {"alpha", c.alpha}, {"dropout", c.dropout}, {"target_modules", c.target_modules}};
}

// ---- adapter ----

LoraAdapter LoraAdapter::attach(models::VisionLanguageModel& model, const LoraConfig& cfg, uint64_t seed) {
  if (cfg.r < 1) throw InputError("lora.r", "must be >= 1");
  const bool all_linear = cfg.target_modules.size() == 1 && cfg.target_modules[0] == "all-linear";
  for (const auto& t : cfg.target_modules) {
    const auto& known = lora_linear_names();
    if (!all_linear && std::find(known.begin(), known.end(), t) == known.end())
      throw InputError("lora.target_modules", "unknown module '" + t + "' (q_proj ... down_proj, or all-linear alone)");
  }
  const auto names = expand_target_modules(cfg.target_modules);
  LoraAdapter a;
  a.config_ = cfg;
  const double scaling = cfg.alpha / static_cast<double>(cfg.r);
  torch::NoGradGuard no_grad;
  for (auto& l : language_model_linears(model)) {
    bool wanted = false;
    for (const auto& n : names) wanted = wanted || short_name(l.name) == n;
    if (!wanted) continue;
    if (l.layer->lora)
      throw InputError("lora", "layer '" + l.name + "' already has a LoRA adapter (detach it first)");
    const int64_t out = l.layer->weight.size(0), in = l.layer->weight.size(1);
    // PEFT: kaiming_uniform_(A, a=sqrt(5)) -> bound = sqrt(6 / ((1 + 5) * fan_in)) = 1 / sqrt(in).
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    std::mt19937_64 rng(derive_seed(seed, image::fnv1a64(l.name)));
    std::vector<float> values(static_cast<size_t>(cfg.r * in));
    for (auto& v : values) v = static_cast<float>((2.0 * uniform_unit(rng) - 1.0) * bound);
    auto w = std::make_shared<models::LoraWeights>();
    const auto opts = torch::TensorOptions().dtype(torch::kFloat32).device(model.device());
    w->A = torch::from_blob(values.data(), {cfg.r, in}, torch::kFloat32).clone().to(model.device());
    w->B = torch::zeros({out, cfg.r}, opts);
    w->scaling = scaling;
    w->dropout = cfg.dropout;
    a.slots_.push_back({l.name, l.layer, w});
  }
  if (a.slots_.empty()) throw InputError("lora.target_modules", "no language-model linear layer matches");
  for (auto& s : a.slots_) {
    s.layer->lora = s.weights;
    a.parameters_[peft_lora_key(s.module, 'A')] = s.weights->A;
    a.parameters_[peft_lora_key(s.module, 'B')] = s.weights->B;
  }
  a.attached_ = true;
  a.covers_all_layers_ = true;
  return a;
}

LoraAdapter LoraAdapter::load(models::VisionLanguageModel& model, const std::string& dir) {
  const std::string config_file = (fs::path(dir) / kConfigFile).string();
  const std::string weights_file = (fs::path(dir) / kWeightsFile).string();
  if (!fs::is_directory(dir)) throw InputError(dir, "adapter directory not found");
  const PeftAdapterSpec spec = parse_peft_config(config_file);
  if (!fs::exists(weights_file))
    throw InputError(weights_file, "file not found (a PEFT adapter directory needs adapter_model.safetensors; "
                                   "adapter_model.bin is not supported)");

  // Which LM linear layers the config targets, with PEFT's matching rules applied to the module's
  // name in either LLaVA layout.
  const auto lm = language_model_linears(model);
  std::set<std::string> lm_names;
  for (const auto& l : lm) lm_names.insert(l.name);
  std::vector<models::NamedLinear> targets;
  if (spec.target_modules.is_string()) {
    const std::string pattern = spec.target_modules.get<std::string>();
    FullMatcher match(pattern, config_file);
    // Every module PEFT would see (every dotted prefix of a parameter name): a match outside the
    // LM linears (vision tower, projector, LM head, norms) is an adapter we would silently drop.
    std::set<std::string> modules;
    for (const auto& [name, t] : model.named_parameters()) {
      for (size_t dot = name.find('.'); dot != std::string::npos; dot = name.find('.', dot + 1))
        modules.insert(name.substr(0, dot));
    }
    for (const auto& m : modules) {
      if (lm_names.count(m) || !(match(m) || match(new_layout_name(m)))) continue;
      throw InputError(config_file, "field 'target_modules': regex '" + pattern + "' also selects module '" + m +
                                        "'; p2dpo adapts language-model linear layers only");
    }
    for (const auto& l : lm) {
      if (match(l.name) || match(new_layout_name(l.name))) targets.push_back(l);
    }
  } else {
    // A list: exact name or ".name" suffix. Adapters PEFT would also have put on the vision tower
    // show up below as unexpected keys.
    for (const auto& l : lm) {
      for (const auto& t : spec.target_modules) {
        const std::string s = t.get<std::string>();
        const std::string alt = new_layout_name(l.name);
        if (l.name == s || alt == s || ends_with(l.name, "." + s) || ends_with(alt, "." + s)) {
          targets.push_back(l);
          break;
        }
      }
    }
  }
  if (targets.empty())
    throw InputError(config_file, "field 'target_modules': " + spec.target_modules.dump() +
                                      " selects no language-model linear layer of this model");

  // The weights, by canonical module name.
  auto file = io::SafetensorsFile::open(weights_file);
  std::map<std::string, std::pair<std::string, std::string>> keys_of;  // module -> (A key, B key)
  for (const auto& key : file->names()) {
    std::string module;
    char factor = 0;
    for (char f : {'A', 'B'}) {
      const std::string suffix = std::string(".lora_") + f + ".weight";
      if (starts_with(key, kKeyPrefix) && ends_with(key, suffix) && key.size() > kKeyPrefix.size() + suffix.size()) {
        module = canonical_module(key.substr(kKeyPrefix.size(), key.size() - kKeyPrefix.size() - suffix.size()));
        factor = f;
      }
    }
    bool targeted = false;
    for (const auto& t : targets) targeted = targeted || t.name == module;
    if (!factor || !targeted) {
      throw InputError(weights_file, "unexpected tensor '" + key +
                                         "' (expected only base_model.model.<module>.lora_{A,B}.weight for the "
                                         "language-model layers adapter_config.json targets)");
    }
    auto& slot = keys_of[module];
    (factor == 'A' ? slot.first : slot.second) = key;
  }

  LoraAdapter a;
  a.config_ = spec.config;
  {
    std::set<std::string> shorts;
    for (const auto& t : targets) shorts.insert(short_name(t.name));
    a.config_.target_modules.clear();
    for (const auto& n : lora_linear_names())
      if (shorts.count(n)) a.config_.target_modules.push_back(n);
    // Anything else (an unusual regex) still works; the short list is then only informational.
    for (const auto& n : shorts)
      if (std::find(lora_linear_names().begin(), lora_linear_names().end(), n) == lora_linear_names().end())
        a.config_.target_modules.push_back(n);
  }
  const int64_t r = spec.config.r;
  const double scaling = spec.config.alpha / static_cast<double>(r);
  for (const auto& t : targets) {
    const auto it = keys_of.find(t.name);
    for (char f : {'A', 'B'}) {
      if (it == keys_of.end() || (f == 'A' ? it->second.first : it->second.second).empty())
        throw InputError(weights_file, "missing tensor '" + peft_lora_key(t.name, f) + "'");
    }
    if (t.layer->lora)
      throw InputError(dir, "layer '" + t.name + "' already has a LoRA adapter (detach it first)");
    const int64_t out = t.layer->weight.size(0), in = t.layer->weight.size(1);
    auto read = [&](const std::string& key, std::vector<int64_t> expected) {
      const auto view = file->tensor(key);
      if (!io::is_float_dtype(view.dtype))
        throw InputError(weights_file, "tensor '" + key + "': expected a float dtype, got " + io::dtype_name(view.dtype));
      if (view.shape != expected)
        throw InputError(weights_file, "tensor '" + key + "': shape " + shape_str(view.shape) +
                                           " does not fit the model, expected " + shape_str(expected) +
                                           " (r = " + std::to_string(r) + " from adapter_config.json, layer " +
                                           std::to_string(out) + " x " + std::to_string(in) + ")");
      return models::tensor_from_view(view).to(model.device(), torch::kFloat32);
    };
    auto w = std::make_shared<models::LoraWeights>();
    w->A = read(it->second.first, {r, in});
    w->B = read(it->second.second, {out, r});
    w->scaling = scaling;
    w->dropout = spec.config.dropout;
    a.slots_.push_back({t.name, t.layer, w});
  }
  for (auto& s : a.slots_) {
    s.layer->lora = s.weights;
    a.parameters_[peft_lora_key(s.module, 'A')] = s.weights->A;
    a.parameters_[peft_lora_key(s.module, 'B')] = s.weights->B;
  }
  a.attached_ = true;
  // Exactly every LM layer with these short names? Then the short regex describes it on save.
  size_t full = 0;
  for (const auto& l : lm) {
    for (const auto& n : a.config_.target_modules) full += short_name(l.name) == n ? 1 : 0;
  }
  a.covers_all_layers_ = full == a.slots_.size();
  return a;
}

std::vector<std::string> LoraAdapter::modules() const {
  std::vector<std::string> out;
  for (const auto& s : slots_) out.push_back(s.module);
  return out;
}

double LoraAdapter::scaling() const { return config_.alpha / static_cast<double>(config_.r); }

void LoraAdapter::set_enabled(bool on) {
  enabled_ = on;
  for (auto& s : slots_) s.weights->enabled = on;
}

void LoraAdapter::set_autocast(bool on) {
  for (auto& s : slots_) s.weights->autocast = on;
}

nlohmann::json LoraAdapter::peft_config_json(const std::string& base_model_path) const {
  std::string target;
  if (covers_all_layers_) {
    target = lora_target_regex(expand_target_modules(config_.target_modules));
  } else {
    // Exactly these modules, in either LLaVA layout.
    std::string alt;
    const std::string lm_prefix = "language_model.model.";
    for (const auto& s : slots_) {
      const std::string rest = starts_with(s.module, lm_prefix) ? s.module.substr(lm_prefix.size()) : s.module;
      alt += (alt.empty() ? "" : "|") + regex_escape(rest);
    }
    target = "(?:language_model\\.model|model\\.language_model)\\.(?:" + alt + ")";
  }
  // lora_alpha is an int in PEFT; keep integral values integral in the JSON.
  nlohmann::json alpha = config_.alpha;
  if (std::floor(config_.alpha) == config_.alpha && std::abs(config_.alpha) < 1e15)
    alpha = static_cast<int64_t>(config_.alpha);
  return {
      {"alpha_pattern", nlohmann::json::object()},
      {"auto_mapping", nullptr},
      {"base_model_name_or_path", base_model_path},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"layer_replication", nullptr},
      {"layers_pattern", nullptr},
      {"layers_to_transform", nullptr},
      {"loftq_config", nlohmann::json::object()},
      {"lora_alpha", alpha},
      {"lora_dropout", config_.dropout},
      {"megatron_config", nullptr},
      {"megatron_core", "megatron.core"},
      {"modules_to_save", nullptr},
      {"peft_type", "LORA"},
      {"r", config_.r},
      {"rank_pattern", nlohmann::json::object()},
      {"revision", nullptr},
      {"target_modules", target},
      {"task_type", "CAUSAL_LM"},
      {"use_dora", false},
      {"use_rslora", false},
  };
}

void LoraAdapter::save(const std::string& dir, const std::string& base_model_path) const {
  if (slots_.empty()) throw InputError(dir, "no adapter to save");
  fs::create_directories(dir);
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& [key, t] : parameters_) tensors[key] = t.detach().to(torch::kCPU, torch::kFloat32);
  // Weights first: a reader that sees the new config also sees the weights it describes.
  write_tensor_file((fs::path(dir) / kWeightsFile).string(), tensors, {{"format", "pt"}});
  io::write_json_atomic((fs::path(dir) / kConfigFile).string(), peft_config_json(base_model_path));
}

void LoraAdapter::merge_into_base() {
  torch::NoGradGuard no_grad;
  for (auto& s : slots_) {
    if (!attached_ || s.layer->lora != s.weights) continue;
    s.layer->weight.copy_(merged_weight(s.layer->weight, s.weights->A, s.weights->B, s.weights->scaling));
  }
  detach();
}

void LoraAdapter::detach() {
  for (auto& s : slots_) {
    if (attached_ && s.layer->lora == s.weights) s.layer->lora.reset();
  }
  attached_ = false;
}

// ---- merge to a full checkpoint ----

int merge_adapter_checkpoint(const std::string& model_dir, const std::string& adapter_dir, const std::string& out_dir) {
  if (!fs::is_directory(model_dir)) throw InputError(model_dir, "model directory not found");
  std::error_code ec;
  if (fs::exists(out_dir) && fs::equivalent(out_dir, model_dir, ec))
    throw InputError(out_dir, "the output directory is the base model's directory; choose another");

  auto ckpt = io::Checkpoint::open_dir(model_dir);
  // Load (for validating the adapter against the real layers) in the checkpoint's main float dtype.
  std::map<io::DType, int64_t> numel_by_dtype;
  for (const auto& name : ckpt.names()) {
    const auto v = ckpt.tensor(name);
    if (io::is_float_dtype(v.dtype)) numel_by_dtype[v.dtype] += v.numel();
  }
  io::DType main = io::DType::F32;
  for (const auto& [d, n] : numel_by_dtype)
    if (n > numel_by_dtype[main]) main = d;
  models::LoadOptions opts;
  opts.dtype = main == io::DType::BF16 ? torch::kBFloat16 : main == io::DType::F16 ? torch::kFloat16 : torch::kFloat32;
  auto model = models::load_model(model_dir, opts);
  auto adapter = LoraAdapter::load(*model, adapter_dir);

  // Adapted weights by the checkpoint key that holds them (either layout).
  std::map<std::string, std::string> module_of_key;
  const auto modules = adapter.modules();
  const std::set<std::string> adapted(modules.begin(), modules.end());
  for (const auto& name : ckpt.names()) {
    if (!ends_with(name, ".weight")) continue;
    const std::string canon = io::canonical_llava_key(name);
    const std::string module = canon.substr(0, canon.size() - std::string(".weight").size());
    if (adapted.count(module)) module_of_key[name] = module;
  }
  if (module_of_key.size() != adapted.size())
    throw InputError(model_dir, "the checkpoint does not hold every adapted layer's weight (found " +
                                    std::to_string(module_of_key.size()) + " of " + std::to_string(adapted.size()) + ")");

  std::vector<torch::Tensor> keep;  // merged tensors backing the raw pointers below
  std::vector<io::TensorToWrite> out;
  const auto& params = adapter.parameters();
  for (const auto& name : ckpt.names()) {
    const auto view = ckpt.tensor(name);
    io::TensorToWrite w{name, view.dtype, view.shape, view.data, view.nbytes};
    if (auto it = module_of_key.find(name); it != module_of_key.end()) {
      auto merged = merged_weight(models::tensor_from_view(view), params.at(peft_lora_key(it->second, 'A')).cpu(),
                                  params.at(peft_lora_key(it->second, 'B')).cpu(), adapter.scaling())
                        .contiguous();
      keep.push_back(merged);
      w.data = merged.data_ptr();
      w.nbytes = static_cast<size_t>(merged.nbytes());
    }
    out.push_back(std::move(w));
  }

  fs::create_directories(out_dir);
  for (const auto& entry : fs::directory_iterator(model_dir)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file() || ends_with(name, ".safetensors") || name == "model.safetensors.index.json") continue;
    io::write_file_atomic((fs::path(out_dir) / name).string(), io::read_file(entry.path().string()));
  }
  io::write_safetensors((fs::path(out_dir) / "model.safetensors").string(), out, {{"format", "pt"}});
  fs::remove(fs::path(out_dir) / "model.safetensors.index.json", ec);  // a sharded base's index would shadow it
  return static_cast<int>(adapted.size());
}

}  // namespace p2dpo::train
