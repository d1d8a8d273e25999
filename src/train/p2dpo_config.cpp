#include "train/p2dpo_config.h"

#include "io/errors.h"
#include "pairs/config.h"

namespace p2dpo::train {
using nlohmann::json;

json P2DpoTrainConfig::to_json() const {
  return {
      {"preset", preset},
      {"seed", seed},
      {"objective", objective},
      {"lora", {{"r", lora.r}, {"alpha", lora.alpha}, {"dropout", lora.dropout}, {"target_modules", lora.target_modules}}},
      {"loss",
       {{"beta", loss.beta}, {"lambda_calib", loss.lambda_calib}, {"focus", loss.use_focus},
        {"robust", loss.use_robust}, {"calib", loss.use_calib}}},
      {"ddw", {{"enabled", ddw.enabled}, {"w_base", ddw.w_base}, {"alpha_max", ddw.alpha_max}, {"tau", ddw.tau}, {"eps", ddw.eps}}},
      {"reference", reference},
      {"sft_weight", sft_weight},
      {"optim",
       {{"epochs", epochs}, {"max_steps", max_steps}, {"micro_batch_size", micro_batch_size},
        {"effective_batch", effective_batch}, {"lr", lr}, {"warmup_steps", warmup_steps},
        {"warmup_ratio", warmup_ratio}, {"min_lr_ratio", min_lr_ratio}, {"beta1", adamw.beta1},
        {"beta2", adamw.beta2}, {"eps", adamw.eps}, {"weight_decay", adamw.weight_decay},
        {"max_grad_norm", max_grad_norm}}},
      {"checkpoint", {{"save_every", save_every}, {"keep_last", keep_last}}},
      {"data", {{"kept_only", kept_only}, {"limit", limit}, {"external_prompt", external_prompt}}},
      {"runtime",
       {{"share_prefixes", share_prefixes}, {"split_cost_positions", split_cost_positions},
        {"feature_cache_mb", feature_cache_mb}, {"prefetch_images", prefetch_images}, {"dtype", dtype},
        {"lora_precision", lora_precision},
        {"recompute_layers", recompute_layers < 0 ? json(true) : recompute_layers == 0 ? json(false) : json(recompute_layers)},
        {"reference_check_tolerance", reference_check_tolerance},
        {"grad_backend", grad_backend}}},
  };
}

namespace {

P2DpoTrainConfig from_resolved(const json& j, const std::string& path) {
  P2DpoTrainConfig c;
  c.preset = j.at("preset");
  c.seed = j.at("seed").get<uint64_t>();
  c.objective = j.at("objective");
  const json& l = j.at("lora");
  c.lora.r = l.at("r");
  c.lora.alpha = l.at("alpha");
  c.lora.dropout = l.at("dropout");
  c.lora.target_modules = l.at("target_modules").get<std::vector<std::string>>();
  const json& s = j.at("loss");
  c.loss.beta = s.at("beta");
  c.loss.lambda_calib = s.at("lambda_calib");
  c.loss.use_focus = s.at("focus");
  c.loss.use_robust = s.at("robust");
  c.loss.use_calib = s.at("calib");
  const json& d = j.at("ddw");
  c.ddw.enabled = d.at("enabled");
  c.ddw.w_base = d.at("w_base");
  c.ddw.alpha_max = d.at("alpha_max");
  c.ddw.tau = d.at("tau");
  c.ddw.eps = d.at("eps");
  c.reference = j.at("reference");
  c.sft_weight = j.at("sft_weight");
  const json& o = j.at("optim");
  c.epochs = o.at("epochs");
  c.max_steps = o.at("max_steps");
  c.micro_batch_size = o.at("micro_batch_size");
  c.effective_batch = o.at("effective_batch");
  c.lr = o.at("lr");
  c.warmup_steps = o.at("warmup_steps");
  c.warmup_ratio = o.at("warmup_ratio");
  c.min_lr_ratio = o.at("min_lr_ratio");
  c.adamw.beta1 = o.at("beta1");
  c.adamw.beta2 = o.at("beta2");
  c.adamw.eps = o.at("eps");
  c.adamw.weight_decay = o.at("weight_decay");
  c.max_grad_norm = o.at("max_grad_norm");
  c.save_every = j.at("checkpoint").at("save_every");
  c.keep_last = j.at("checkpoint").at("keep_last");
  c.kept_only = j.at("data").at("kept_only");
  c.limit = j.at("data").at("limit");
  c.external_prompt = j.at("data").at("external_prompt");
  const json& r = j.at("runtime");
  c.share_prefixes = r.at("share_prefixes");
  c.split_cost_positions = r.value("split_cost_positions", int64_t{64});  // absent from configs written before it
  c.feature_cache_mb = r.at("feature_cache_mb");
  c.prefetch_images = r.value("prefetch_images", true);  // absent from configs written before it
  c.dtype = r.at("dtype");
  // Configs written before the key ran the adapter in fp32.
  c.lora_precision = r.value("lora_precision", "float32");
  if (const json& rl = r.at("recompute_layers"); rl.is_boolean()) {
    c.recompute_layers = rl.get<bool>() ? -1 : 0;
  } else if (rl.is_number_integer() && rl.get<int64_t>() >= 0) {
    c.recompute_layers = rl.get<int64_t>();
  } else {
    throw InputError(path, "key 'runtime.recompute_layers' must be true, false or a number of layers (>= 0), got " + rl.dump());
  }
  c.reference_check_tolerance = r.at("reference_check_tolerance");
  c.grad_backend = r.value("grad_backend", "auto");  // absent from configs written before it

  auto fail = [&](const std::string& key, const std::string& why) { throw InputError(path, "key '" + key + "' " + why); };
  auto one_of = [&](const std::string& key, const std::string& v, std::initializer_list<const char*> allowed) {
    std::string list;
    for (const char* a : allowed) {
      if (v == a) return;
      list += std::string(list.empty() ? "" : ", ") + a;
    }
    fail(key, "is '" + v + "'; expected one of " + list);
  };
  one_of("objective", c.objective, {"p2dpo", "dpo"});
  one_of("reference", c.reference, {"recorded", "recompute"});
  one_of("runtime.dtype", c.dtype, {"auto", "float32", "bfloat16"});
  one_of("runtime.grad_backend", c.grad_backend, {"auto", "gloo"});
  one_of("runtime.lora_precision", c.lora_precision, {"autocast", "float32"});
  if (c.lora.r < 1) fail("lora.r", "must be >= 1");
  if (!(c.lora.dropout >= 0 && c.lora.dropout < 1)) fail("lora.dropout", "must be in [0, 1)");
  if (c.lora.target_modules.empty()) fail("lora.target_modules", "is empty");
  if (!(c.loss.beta > 0)) fail("loss.beta", "must be > 0");
  if (c.lora.alpha <= 0) fail("lora.alpha", "must be > 0");
  if (!c.loss.use_focus && !c.loss.use_robust) fail("loss.focus", "and 'loss.robust' are both off: nothing to train");
  if (!(c.ddw.tau > 0)) fail("ddw.tau", "must be > 0");
  if (c.epochs < 1 && c.max_steps < 1) fail("optim.epochs", "must be >= 1 (or set optim.max_steps)");
  if (c.micro_batch_size < 1) fail("optim.micro_batch_size", "must be >= 1");
  if (c.effective_batch < 1) fail("optim.effective_batch", "must be >= 1");
  if (!(c.lr > 0)) fail("optim.lr", "must be > 0");
  if (c.keep_last < 1) fail("checkpoint.keep_last", "must be >= 1");
  if (c.feature_cache_mb < 0) fail("runtime.feature_cache_mb", "must be >= 0");
  return c;
}

}  // namespace

bool same_run_config(json saved, const json& resolved, bool fp32_model) {
  if (!saved.is_object()) return false;
  if (saved.contains("runtime") && saved["runtime"].is_object() && !saved["runtime"].contains("lora_precision"))
    saved["runtime"]["lora_precision"] = "float32";
  json filled = resolved;
  filled.merge_patch(saved);
  std::vector<const char*> free_keys{"grad_backend", "feature_cache_mb", "prefetch_images"};
  if (fp32_model) free_keys.push_back("lora_precision");
  for (const char* key : free_keys) filled["runtime"][key] = resolved["runtime"][key];
  return filled == resolved;
}

P2DpoTrainConfig train_preset(const std::string& preset) {
  P2DpoTrainConfig c;
  if (preset == "paper") return c;
  if (preset == "released-code") {
    // p2_dpo.sh / V-DPO (method.md §7.3–7.4).
    c.preset = preset;
    c.lora.r = 32;
    c.lora.alpha = 32;
    c.lora.dropout = 0.05;
    c.lora.target_modules = {"all-linear"};
    c.lr = 1e-5;
    c.adamw.weight_decay = 0.05;
    c.adamw.beta2 = 0.95;
    c.warmup_steps = -1;
    c.warmup_ratio = 0.03;
    return c;
  }
  throw InputError("--preset", "unknown preset '" + preset + "' (paper | released-code)");
}

P2DpoTrainConfig load_train_config(const std::string& path, const std::string& preset_override) {
  return load_train_config(path.empty() ? std::vector<std::string>{} : std::vector<std::string>{path}, preset_override);
}

P2DpoTrainConfig load_train_config(const std::vector<std::string>& paths, const std::string& preset_override) {
  std::vector<json> users;
  std::string preset = preset_override;
  std::string file_preset;
  for (const auto& path : paths) {
    json user = pairs::read_config_file(path);
    if (user.is_null()) user = json::object();
    if (user.is_object() && user.contains("train")) user = user.at("train");
    if (!user.is_object()) throw InputError(path, "the config must be a mapping of keys");
    if (user.contains("preset")) {
      if (!user["preset"].is_string()) throw InputError(path, "key 'preset' must be text");
      file_preset = user["preset"].get<std::string>();
      user.erase("preset");
    }
    users.push_back(std::move(user));
  }
  if (preset.empty()) preset = file_preset.empty() ? "paper" : file_preset;
  const json defaults = train_preset(preset).to_json();
  json merged = defaults;
  for (size_t i = 0; i < users.size(); ++i) {
    pairs::check_known_keys(users[i], defaults, paths[i], "");
    merged.merge_patch(users[i]);
  }
  return from_resolved(merged, paths.empty() ? "--config" : paths.back());
}

void apply_ablation(P2DpoTrainConfig& cfg, const std::string& name) {
  if (name == "focus") cfg.loss.use_focus = false;
  else if (name == "robust") cfg.loss.use_robust = false;
  else if (name == "calib") cfg.loss.use_calib = false;
  else if (name == "ddw") cfg.ddw.enabled = false;
  else throw InputError("--ablate", "unknown ablation '" + name + "' (focus | robust | calib | ddw)");
  if (!cfg.loss.use_focus && !cfg.loss.use_robust)
    throw InputError("--ablate", "focus and robust ablated together leave nothing to train");
}

}  // namespace p2dpo::train
