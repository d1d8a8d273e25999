// p2dpo train: LoRA fine-tuning with the P2-DPO objective (src/train/p2dpo_trainer.h).
#include <iostream>
#include <memory>

#include "cli/commands.h"
#include "cli/common.h"
#include "io/errors.h"
#include "train/distributed.h"
#include "train/p2dpo_config.h"
#include "train/p2dpo_trainer.h"

namespace p2dpo::cli {

void register_train(CLI::App& app) {
  struct Opts {
    ModelFlags model;
    std::vector<std::string> config;
    std::string preset, pairs, images, out, objective, profile;
    std::vector<std::string> ablate;
    int64_t max_steps = -1, stop_after = 0, profile_step = 2;
    bool resume = false, quiet = false, json = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("train", "Train a LoRA adapter with P2-DPO on pairs from `p2dpo pairs` (or plain DPO on external pairs)");
  o->model.add(cmd);
  cmd->add_option("--config", o->config, "train config (YAML or JSON; keys at top level or under 'train:'); repeat to overlay files in order");
  cmd->add_option("--preset", o->preset, "paper | released-code (overrides the config's preset)");
  cmd->add_option("--pairs", o->pairs, "a `p2dpo pairs` output folder (or its filtered.jsonl); external pairs with --objective dpo")->required();
  cmd->add_option("--images", o->images, "folder the pairs' image paths are relative to (default: the pairs run's own)");
  cmd->add_option("--out", o->out, "run folder: config.json, metrics.jsonl, checkpoints/, adapter/")->required();
  cmd->add_option("--objective", o->objective, "p2dpo | dpo (overrides the config)");
  cmd->add_option("--ablate", o->ablate, "focus | robust | calib | ddw (repeatable): the paper's Table 4 ablations");
  cmd->add_option("--max-steps", o->max_steps, "train this many optimizer steps instead of the configured epochs");
  cmd->add_option("--stop-after", o->stop_after, "leave after this many steps in total (split a run; rerun with --resume)");
  cmd->add_flag("--resume", o->resume, "continue from the run folder's latest checkpoint");
  cmd->add_option("--profile", o->profile,
                  "write an op profile of one optimizer step to this folder: per-phase host ops, GPU busy time, "
                  "top ops and kernels, and a Chrome trace");
  cmd->add_option("--profile-step", o->profile_step, "the step --profile records (1-based)")->check(CLI::PositiveNumber);
  cmd->add_flag("--quiet", o->quiet, "no progress line");
  cmd->add_flag("--json", o->json, "print the summary as JSON");
  cmd->callback([o, cmd]() {
    if (!o->model.adapter_dir.empty())
      throw InputError("--adapter", "train starts a new adapter; to continue from one, merge it into the base first (p2dpo merge)");
    train::P2DpoTrainConfig cfg = train::load_train_config(o->config, o->preset);
    if (!o->objective.empty()) {
      if (o->objective != "p2dpo" && o->objective != "dpo") throw InputError("--objective", "expected p2dpo or dpo, got '" + o->objective + "'");
      cfg.objective = o->objective;
    }
    for (const auto& a : o->ablate) train::apply_ablation(cfg, a);
    if (o->max_steps == 0 || o->max_steps < -1) throw InputError("--max-steps", "must be >= 1");
    if (o->max_steps > 0) cfg.max_steps = o->max_steps;
    if (cmd->count("--dtype") == 0) {  // the config decides: bf16 on CUDA unless told otherwise
      const bool cuda = o->model.device.rfind("cuda", 0) == 0;
      o->model.dtype = cfg.dtype == "auto" ? (cuda ? "bfloat16" : "float32") : cfg.dtype;
    }
    const train::DistributedEnv env = train::distributed_env_from_environment();
    std::unique_ptr<train::ProcessGroup> group;
    if (env.world_size > 1) group = std::make_unique<train::ProcessGroup>(env, cfg.grad_backend == "auto");
    auto model = o->model.load();
    train::P2DpoRunOptions opt;
    opt.model_dir = o->model.model_dir;
    opt.pairs_path = o->pairs;
    opt.images_dir = o->images;
    opt.out_dir = o->out;
    opt.resume = o->resume;
    opt.progress = !o->quiet;
    opt.stop_after_steps = o->stop_after;
    opt.group = group.get();
    opt.profile_dir = o->profile;
    opt.profile_step = o->profile_step;
    const auto r = train::train_p2dpo(*model, cfg, opt);
    if (env.rank != 0) return;
    nlohmann::json summary = {{"steps_done", r.steps_done}, {"total_steps", r.total_steps},
                              {"first_loss", r.first_loss}, {"last_loss", r.last_loss},
                              {"adapter", r.adapter_dir}, {"out", o->out}};
    if (r.resumed_from) summary["resumed_from"] = *r.resumed_from;
    if (!r.last_metrics.is_null()) summary["last_metrics"] = r.last_metrics;
    if (!r.profile.is_null()) summary["profile"] = profile_brief(r.profile, o->profile);
    if (const auto cudnn = o->model.cudnn_attention_json(); !cudnn.is_null()) summary["cudnn_attention"] = cudnn;
    if (const auto fused = o->model.cuda_fused_ops_json(); !fused.is_null()) summary["cuda_fused_ops"] = fused;
    print_result(summary, o->json);
  });
}

}  // namespace p2dpo::cli
