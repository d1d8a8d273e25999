// p2dpo generate: greedy or sampled continuation of a prompt with images.
#include <torch/types.h>
#include <torch/utils.h>

#include "cli/commands.h"
#include "cli/common.h"
#include "infer/generate.h"
#include "io/errors.h"

namespace p2dpo::cli {

void register_generate(CLI::App& app) {
  struct Opts {
    ModelFlags model;
    std::vector<std::string> images;
    std::string prompt;
    int max_new_tokens = 64;
    double temperature = 0.0, top_p = 1.0;
    int top_k = 0;
    uint64_t seed = 0;
    bool no_eos_stop = false, json = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("generate", "Generate an answer (greedy unless --temperature is given)");
  o->model.add(cmd);
  cmd->add_option("--image", o->images, "image file (PNG or JPEG); repeat for several <image> slots");
  cmd->add_option("--prompt", o->prompt, "full prompt text, one <image> per image, e.g. \"USER: <image>\\nWhat is shown? ASSISTANT:\"")
      ->required();
  cmd->add_option("--max-new-tokens", o->max_new_tokens)->capture_default_str();
  cmd->add_option("--temperature", o->temperature, "sampling temperature (0 = greedy)")->capture_default_str();
  cmd->add_option("--top-p", o->top_p)->capture_default_str();
  cmd->add_option("--top-k", o->top_k)->capture_default_str();
  cmd->add_option("--seed", o->seed)->capture_default_str();
  cmd->add_flag("--no-eos-stop", o->no_eos_stop, "keep generating past EOS");
  cmd->add_flag("--json", o->json, "print JSON");
  cmd->callback([o]() {
    if (o->max_new_tokens < 0) throw InputError("--max-new-tokens", "must be >= 0");
    if (o->temperature < 0) throw InputError("--temperature", "must be >= 0");
    if (o->top_p <= 0 || o->top_p > 1) throw InputError("--top-p", "must be in (0, 1]");
    auto model = o->model.load();
    auto images = load_images(*model, o->images);
    infer::GenerationRequest req;
    req.prompt_ids = model->tokenize_prompt(o->prompt, images);
    {
      torch::NoGradGuard ng;
      req.image_features = model->encode_images(images);
    }
    infer::SamplingConfig cfg;
    cfg.max_new_tokens = o->max_new_tokens;
    cfg.temperature = o->temperature;
    cfg.top_p = o->top_p;
    cfg.top_k = o->top_k;
    cfg.seed = o->seed;
    cfg.stop_on_eos = !o->no_eos_stop;
    auto res = infer::generate(*model, {req}, cfg)[0];
    nlohmann::json j;
    j["text"] = model->decode(res.token_ids);
    j["token_ids"] = res.token_ids;
    j["logprobs"] = res.logprobs;
    print_result(j, o->json);
  });
}

}  // namespace p2dpo::cli
