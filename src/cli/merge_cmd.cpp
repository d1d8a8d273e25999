// p2dpo merge: a PEFT LoRA adapter folded into its base model, written as a full HF checkpoint.
#include <cstdio>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "train/lora.h"

namespace p2dpo::cli {

void register_merge(CLI::App& app) {
  struct Opts {
    std::string model, adapter, out;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "merge", "Merge a LoRA adapter (PEFT layout) into its base model and write a full HF checkpoint");
  cmd->add_option("--model", o->model, "base model directory (HF llava layout)")->required();
  cmd->add_option("--adapter", o->adapter, "adapter directory (adapter_config.json + adapter_model.safetensors)")
      ->required();
  cmd->add_option("--out", o->out, "output directory: config/tokenizer files copied, merged model.safetensors")
      ->required();
  cmd->callback([o]() {
    const int n = train::merge_adapter_checkpoint(o->model, o->adapter, o->out);
    std::printf("merged %d adapted layers into %s/model.safetensors\n", n, o->out.c_str());
  });
}

}  // namespace p2dpo::cli
