#include "pairs/config.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "io/errors.h"
#include "io/json_io.h"

#if P2DPO_HAVE_YAML
#include <yaml-cpp/yaml.h>
#endif

namespace p2dpo::pairs {

using nlohmann::json;

json PairsConfig::to_json() const {
  json j;
  j["preset"] = preset;
  j["seed"] = seed;
  j["prompt"] = {{"template", prompt.template_},   {"image_marker", prompt.image_marker},
                 {"attention", prompt.attention},  {"locate", prompt.locate},
                 {"enhanced", prompt.enhanced}};
  j["attention"] = {{"method", attention.method}, {"layers", attention.layers}, {"batch", attention.batch}};
  j["crop"] = {{"base_width", crop.base_width}, {"base_height", crop.base_height}, {"ratios", crop.ratios}};
  j["erase"] = {{"mode", erase.mode}, {"alpha", erase.alpha}, {"blur_sigma", erase.blur_sigma},
                {"pil_inclusive_end", erase.pil_inclusive_end}};
  j["noise"] = {{"mode", noise.mode}, {"diffusion_step", noise.diffusion_step}, {"pixel_sigma", noise.pixel_sigma}};
  j["focus"] = {{"max_new_tokens", focus.max_new_tokens},
                {"temperature", focus.temperature},
                {"top_p", focus.top_p},
                {"original_answer", focus.original_answer}};
  j["robust"] = {{"prompt", robust.prompt},
                 {"lambda", robust.lambda},
                 {"beta", robust.beta},
                 {"temperature", robust.temperature},
                 {"top_p", robust.top_p},
                 {"max_new_tokens", robust.max_new_tokens},
                 {"loser_prompt", robust.loser_prompt},
                 {"loser_temperature", robust.loser_temperature},
                 {"loser_top_p", robust.loser_top_p},
                 {"loser_max_new_tokens", robust.loser_max_new_tokens}};
  j["filter"] = {{"max_ppl", filter.max_ppl},
                 {"margin_rule", filter.margin_rule},
                 {"margin_low", filter.margin_low},
                 {"margin_high", filter.margin_high},
                 {"percentile_low", filter.percentile_low},
                 {"percentile_high", filter.percentile_high},
                 {"drop_identical", filter.drop_identical},
                 {"max_erased_share", filter.max_erased_share},
                 {"max_length_ratio", filter.max_length_ratio}};
  j["ddw"] = {{"enabled", ddw.enabled}, {"w_base", ddw.w_base}, {"alpha_max", ddw.alpha_max}, {"tau", ddw.tau}, {"eps", ddw.eps}};
  j["batch_size"] = batch_size;
  j["heatmaps"] = heatmaps;
  j["max_length"] = max_length;
  j["min_new_tokens"] = min_new_tokens;
  j["reference_batch"] = reference_batch;
  j["decoding"] = {{"fixed_cache", decoding.fixed_cache ? json(*decoding.fixed_cache) : json("auto")},
                   {"cuda_graphs", decoding.cuda_graphs},
                   {"fuse_stages", decoding.fuse_stages ? json(*decoding.fuse_stages) : json("auto")},
                   {"encode_together", decoding.encode_together ? json(*decoding.encode_together) : json("auto")}};
  return j;
}

PairsConfig preset_config(const std::string& preset) {
  PairsConfig c;
  c.preset = preset;
  if (preset == "paper") return c;
  if (preset == "released-code") {
    // ZrpChuang/P2-DPO HEAD: the plain question for the attention pass (the B.3 template appears in
    // no commit) and the "Strictly answer..." prompt for the three robustness generations.
    c.prompt.attention = "plain";
    c.robust.prompt = c.robust.loser_prompt =
        "Strictly answer the following question according to the facts of the image, and control the length of "
        "the output. Based on this, answer the question: {question}";
    c.filter.margin_rule = "fixed";
    c.erase.pil_inclusive_end = true;
    return c;
  }
  throw InputError("--preset", "must be paper or released-code, got '" + preset + "'");
}

namespace {

#if P2DPO_HAVE_YAML
json yaml_to_json(const YAML::Node& n, const std::string& path) {
  switch (n.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
    case YAML::NodeType::Sequence: {
      json a = json::array();
      for (const auto& e : n) a.push_back(yaml_to_json(e, path));
      return a;
    }
    case YAML::NodeType::Map: {
      json o = json::object();
      for (const auto& kv : n) o[kv.first.as<std::string>()] = yaml_to_json(kv.second, path);
      return o;
    }
    case YAML::NodeType::Scalar: {
      const std::string s = n.Scalar();
      if (n.Tag() == "!") return s;  // quoted: a string even when it looks like a number
      if (s == "true" || s == "True") return true;
      if (s == "false" || s == "False") return false;
      if (s == "null" || s == "~") return nullptr;
      // Integers, then floats; anything else stays text.
      char* end = nullptr;
      const long long i = std::strtoll(s.c_str(), &end, 10);
      if (!s.empty() && end && *end == '\0') return i;
      const double d = std::strtod(s.c_str(), &end);
      if (!s.empty() && end && *end == '\0') return d;
      return s;
    }
  }
  return nullptr;
}
#endif

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Keys whose value may take more than one JSON type: switches that may also be "auto" (decided per
// device) or a count. Their readers check the value and name the key.
bool reader_checks_type(const std::string& name) {
  for (const char* key : {"decoding.fixed_cache", "decoding.fuse_stages", "decoding.encode_together", "runtime.recompute_layers"})
    if (ends_with(name, key)) return true;
  return false;
}

}  // namespace

// Every key of `user` must exist in `defaults` with a compatible type; reports "path: key a.b.c ...".
void check_known_keys(const json& user, const json& defaults, const std::string& path, const std::string& prefix) {
  if (!user.is_object()) throw InputError(path, (prefix.empty() ? std::string("the config") : "key '" + prefix + "'") + " must be a mapping");
  for (const auto& [key, value] : user.items()) {
    const std::string name = prefix.empty() ? key : prefix + "." + key;
    if (!defaults.contains(key)) throw InputError(path, "unknown key '" + name + "'");
    const json& d = defaults.at(key);
    if (reader_checks_type(name)) continue;
    if (d.is_object()) {
      check_known_keys(value, d, path, name);
    } else if (d.is_array()) {
      if (!value.is_array()) throw InputError(path, "key '" + name + "' must be a list, got " + io::json_type_name(value));
      const bool texts = !d.empty() && d.front().is_string();
      for (const auto& e : value)
        if (texts ? !e.is_string() : !e.is_number())
          throw InputError(path, "key '" + name + "' must be a list of " + (texts ? "texts" : "numbers"));
    } else if (d.is_number()) {
      if (!value.is_number()) throw InputError(path, "key '" + name + "' must be a number, got " + io::json_type_name(value));
      if (d.is_number_integer() && !value.is_number_integer())
        throw InputError(path, "key '" + name + "' must be an integer, got " + value.dump());
    } else if (d.is_boolean()) {
      if (!value.is_boolean()) throw InputError(path, "key '" + name + "' must be true or false, got " + value.dump());
    } else if (d.is_string()) {
      if (!value.is_string()) throw InputError(path, "key '" + name + "' must be text, got " + io::json_type_name(value));
    }
  }
}

namespace {

PairsConfig from_resolved_json(const json& j, const std::string& path) {
  PairsConfig c;
  c.preset = j.at("preset").get<std::string>();
  c.seed = j.at("seed").get<uint64_t>();
  const auto& p = j.at("prompt");
  c.prompt.template_ = p.at("template");
  c.prompt.image_marker = p.at("image_marker");
  c.prompt.attention = p.at("attention");
  c.prompt.locate = p.at("locate");
  c.prompt.enhanced = p.at("enhanced");
  c.attention.method = j.at("attention").at("method");
  c.attention.layers = j.at("attention").at("layers").get<std::vector<int>>();
  c.attention.batch = j.at("attention").value("batch", 1);  // absent from configs written before it
  c.crop.base_width = j.at("crop").at("base_width");
  c.crop.base_height = j.at("crop").at("base_height");
  c.crop.ratios = j.at("crop").at("ratios").get<std::vector<double>>();
  c.erase.mode = j.at("erase").at("mode");
  c.erase.alpha = j.at("erase").at("alpha");
  c.erase.blur_sigma = j.at("erase").at("blur_sigma");
  c.erase.pil_inclusive_end = j.at("erase").at("pil_inclusive_end");
  c.noise.mode = j.at("noise").at("mode");
  c.noise.diffusion_step = j.at("noise").at("diffusion_step");
  c.noise.pixel_sigma = j.at("noise").at("pixel_sigma");
  c.focus.max_new_tokens = j.at("focus").at("max_new_tokens");
  c.focus.temperature = j.at("focus").at("temperature");
  c.focus.top_p = j.at("focus").at("top_p");
  c.focus.original_answer = j.at("focus").at("original_answer");
  const auto& r = j.at("robust");
  c.robust.prompt = r.at("prompt");
  c.robust.lambda = r.at("lambda");
  c.robust.beta = r.at("beta");
  c.robust.temperature = r.at("temperature");
  c.robust.top_p = r.at("top_p");
  c.robust.max_new_tokens = r.at("max_new_tokens");
  c.robust.loser_prompt = r.at("loser_prompt");
  c.robust.loser_temperature = r.at("loser_temperature");
  c.robust.loser_top_p = r.at("loser_top_p");
  c.robust.loser_max_new_tokens = r.at("loser_max_new_tokens");
  const auto& f = j.at("filter");
  c.filter.max_ppl = f.at("max_ppl");
  c.filter.margin_rule = f.at("margin_rule");
  c.filter.margin_low = f.at("margin_low");
  c.filter.margin_high = f.at("margin_high");
  c.filter.percentile_low = f.at("percentile_low");
  c.filter.percentile_high = f.at("percentile_high");
  c.filter.drop_identical = f.at("drop_identical");
  c.filter.max_erased_share = f.at("max_erased_share");
  c.filter.max_length_ratio = f.value("max_length_ratio", 0.0);  // absent from configs written before it
  const auto& d = j.at("ddw");
  c.ddw.enabled = d.at("enabled");
  c.ddw.w_base = d.at("w_base");
  c.ddw.alpha_max = d.at("alpha_max");
  c.ddw.tau = d.at("tau");
  c.ddw.eps = d.at("eps");
  c.batch_size = j.at("batch_size");
  c.heatmaps = j.at("heatmaps");
  c.max_length = j.at("max_length");
  c.min_new_tokens = j.value("min_new_tokens", 0);  // absent from configs written before it
  c.reference_batch = j.value("reference_batch", 0);
  const json decoding = j.value("decoding", json::object());  // absent from configs written before it
  auto auto_switch = [&](const char* key) -> std::optional<bool> {
    const json v = decoding.value(key, json("auto"));
    if (v.is_boolean()) return v.get<bool>();
    if (!(v.is_string() && v.get<std::string>() == "auto"))
      throw InputError(path, std::string("key 'decoding.") + key + "' must be true, false or auto, got " + v.dump());
    return std::nullopt;
  };
  c.decoding.fixed_cache = auto_switch("fixed_cache");
  c.decoding.fuse_stages = auto_switch("fuse_stages");
  c.decoding.encode_together = auto_switch("encode_together");
  c.decoding.cuda_graphs = decoding.value("cuda_graphs", false);

  // Values that parse but mean nothing.
  auto one_of = [&](const std::string& key, const std::string& v, std::initializer_list<const char*> allowed) {
    for (const char* a : allowed)
      if (v == a) return;
    std::string list;
    for (const char* a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
    throw InputError(path, "key '" + key + "' must be one of " + list + ", got '" + v + "'");
  };
  one_of("prompt.attention", c.prompt.attention, {"locate", "plain"});
  one_of("attention.method", c.attention.method, {"grad", "mean", "layer_mean", "tok_img"});
  one_of("erase.mode", c.erase.mode, {"mean", "blur", "alpha"});
  one_of("noise.mode", c.noise.mode, {"diffusion", "pixel"});
  one_of("filter.margin_rule", c.filter.margin_rule, {"percentile", "fixed"});
  auto positive = [&](const std::string& key, double v) {
    if (!(v > 0) || !std::isfinite(v)) throw InputError(path, "key '" + key + "' must be > 0, got " + std::to_string(v));
  };
  positive("focus.max_new_tokens", c.focus.max_new_tokens);
  positive("robust.max_new_tokens", c.robust.max_new_tokens);
  positive("robust.loser_max_new_tokens", c.robust.loser_max_new_tokens);
  positive("filter.max_ppl", c.filter.max_ppl);
  positive("ddw.tau", c.ddw.tau);
  positive("batch_size", c.batch_size);
  positive("attention.batch", c.attention.batch);
  if (c.reference_batch < 0) throw InputError(path, "key 'reference_batch' must be >= 0, got " + std::to_string(c.reference_batch));
  if (c.min_new_tokens < 0) throw InputError(path, "key 'min_new_tokens' must be >= 0, got " + std::to_string(c.min_new_tokens));
  if (c.crop.ratios.empty()) throw InputError(path, "key 'crop.ratios' must not be empty");
  for (double v : c.crop.ratios) positive("crop.ratios", v);
  if (c.noise.diffusion_step < 0 || c.noise.diffusion_step > 999)
    throw InputError(path, "key 'noise.diffusion_step' must be in [0, 999], got " + std::to_string(c.noise.diffusion_step));
  if (c.prompt.template_.find(c.prompt.image_marker) == std::string::npos)
    throw InputError(path, "key 'prompt.template' has no image slot '" + c.prompt.image_marker + "'");
  if (c.prompt.template_.find("{question}") == std::string::npos)
    throw InputError(path, "key 'prompt.template' has no {question}");
  if (c.filter.max_length_ratio != 0 && !(c.filter.max_length_ratio >= 1))
    throw InputError(path, "key 'filter.max_length_ratio' must be 0 (off) or >= 1, got " + std::to_string(c.filter.max_length_ratio));
  if (c.filter.margin_low > c.filter.margin_high) throw InputError(path, "key 'filter.margin_low' is above 'filter.margin_high'");
  if (!(c.filter.percentile_low >= 0 && c.filter.percentile_low < c.filter.percentile_high && c.filter.percentile_high <= 100))
    throw InputError(path, "keys 'filter.percentile_low/high' must satisfy 0 <= low < high <= 100");
  return c;
}

}  // namespace

json read_config_file(const std::string& path) {
  if (!std::filesystem::exists(path)) throw InputError(path, "no such config file");
  if (ends_with(path, ".yaml") || ends_with(path, ".yml")) {
#if P2DPO_HAVE_YAML
    try {
      return yaml_to_json(YAML::LoadFile(path), path);
    } catch (const YAML::Exception& e) {
      throw InputError(path, std::string("malformed YAML: ") + e.what());
    }
#else
    throw InputError(path, "this build has no YAML support (yaml-cpp); give the config as JSON");
#endif
  }
  return io::read_json_file(path);
}

PairsConfig load_pairs_config(const std::string& path, const std::string& preset_override) {
  json user = json::object();
  if (!path.empty()) {
    user = read_config_file(path);
    if (user.is_null()) user = json::object();
    if (user.is_object() && user.contains("pairs")) user = user.at("pairs");
    if (!user.is_object()) throw InputError(path, "the config must be a mapping of keys");
  }
  std::string preset = preset_override;
  if (preset.empty()) preset = user.contains("preset") && user["preset"].is_string() ? user["preset"].get<std::string>() : "paper";
  user.erase("preset");
  const json defaults = preset_config(preset).to_json();
  check_known_keys(user, defaults, path.empty() ? "--config" : path, "");
  json merged = defaults;
  merged.merge_patch(user);
  return from_resolved_json(merged, path.empty() ? "--config" : path);
}

std::string fill_question(const std::string& tmpl, const std::string& question) {
  std::string out;
  const std::string key = "{question}";
  size_t start = 0;
  for (size_t p; (p = tmpl.find(key, start)) != std::string::npos; start = p + key.size()) {
    out += tmpl.substr(start, p - start);
    out += question;
  }
  out += tmpl.substr(start);
  return out;
}

std::string with_image_slots(const std::string& prompt, const std::string& marker, int n) {
  const size_t p = prompt.find(marker);
  if (p == std::string::npos) throw InputError("prompt.template", "has no image slot '" + marker + "'");
  std::string slots;
  for (int i = 0; i < n; ++i) slots += marker;
  return prompt.substr(0, p) + slots + prompt.substr(p + marker.size());
}

}  // namespace p2dpo::pairs
