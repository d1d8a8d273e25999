// p2dpo pairs: on-policy, vision-aware preference pairs (src/pairs/pipeline.h).
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "cli/commands.h"
#include "cli/common.h"
#include "io/errors.h"
#include "pairs/clip_scorer.h"
#include "pairs/config.h"
#include "pairs/pipeline.h"

namespace p2dpo::cli {

namespace {
// torchrun's environment; absent means one process.
int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < 0) throw InputError(name, std::string("environment variable is not a count: '") + v + "'");
  return static_cast<int>(x);
}
}  // namespace

void register_pairs(CLI::App& app) {
  struct Opts {
    ModelFlags model;
    std::string config, preset, data, images, out, clip, profile;
    int64_t limit = 0;
    bool merge = false, quiet = false, json = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("pairs", "Generate P2-DPO preference pairs with the model itself (focus + robustness pairs)");
  o->model.add(cmd);
  cmd->get_option("--model")->required(false);  // --merge needs no model; checked in the callback
  cmd->add_option("--config", o->config, "pairs config (YAML or JSON; keys at top level or under 'pairs:')");
  cmd->add_option("--preset", o->preset, "paper | released-code (overrides the config's preset)");
  cmd->add_option("--data", o->data, "prompts: LLaVA/RLHF-V conversation JSON or JSONL {id, image, question}");
  cmd->add_option("--images", o->images, "folder the data's image paths are relative to");
  cmd->add_option("--out", o->out, "output folder (resumable: rerun the same command to continue)")->required();
  cmd->add_option("--clip", o->clip, "HF CLIPModel folder for CLIPScore and dynamic deficit weighting");
  cmd->add_option("--limit", o->limit, "only the first N samples");
  cmd->add_flag("--merge", o->merge, "only merge finished shards and write pairs.jsonl, filtered.jsonl, stats.json");
  cmd->add_option("--profile", o->profile,
                  "write an op profile of one batch (the second computed) to this folder: per-stage host ops, "
                  "GPU busy time, top ops and kernels, and a Chrome trace");
  cmd->add_flag("--quiet", o->quiet, "no progress line");
  cmd->add_flag("--json", o->json, "print the statistics as JSON");
  cmd->callback([o]() {
    namespace fs = std::filesystem;
    if (o->merge) {
      const auto cfg = pairs::load_pairs_config((fs::path(o->out) / "config.json").string());
      print_result(pairs::finalize_pairs(o->out, cfg), o->json);
      return;
    }
    for (const auto& [flag, value] : {std::pair<const char*, const std::string*>{"--model", &o->model.model_dir},
                                      {"--data", &o->data}, {"--images", &o->images}}) {
      if (value->empty()) throw InputError(flag, "is required (unless --merge)");
    }
    const auto cfg = pairs::load_pairs_config(o->config, o->preset);
    auto model = o->model.load();
    std::unique_ptr<pairs::ClipScorer> clip;
    if (!o->clip.empty()) clip = pairs::ClipScorer::load(o->clip, model->device().str());
    pairs::PairsRunOptions opt;
    opt.data_path = o->data;
    opt.images_dir = o->images;
    opt.out_dir = o->out;
    opt.model_dir = o->model.model_dir;
    opt.clip_dir = o->clip;
    opt.limit = o->limit;
    opt.rank = env_int("RANK", 0);
    opt.world_size = env_int("WORLD_SIZE", 1);
    opt.progress = !o->quiet;
    opt.profile_dir = o->profile;
    const auto summary = pairs::generate_pairs(*model, clip.get(), cfg, opt);
    if (!summary.finalized) {
      std::cerr << "pairs: rank " << opt.rank << " finished its shard (" << summary.generated_now
                << " new records); rank 0 merges\n";
      return;
    }
    // This process's throughput rides along with the statistics it prints (stats.json itself stays
    // a pure function of the records, identical however the run was split or resumed).
    nlohmann::json shown = summary.stats;
    const double secs = summary.generation_seconds;
    shown["run"] = {{"generated_now", summary.generated_now},
                    {"generation_seconds", secs},
                    {"pairs_per_hour", secs > 0 ? 3600.0 * static_cast<double>(summary.generated_now) / secs : 0.0},
                    {"stage_seconds", summary.stage_seconds},
                    {"batch_seconds", summary.batch_seconds}};
    if (!summary.stage_peak_memory.empty()) {
      nlohmann::json peaks;
      for (const auto& [stage, p] : summary.stage_peak_memory)
        peaks[stage] = {{"allocated", static_cast<double>(p.allocated_bytes) / (1 << 20)},
                        {"reserved", static_cast<double>(p.reserved_bytes) / (1 << 20)}};
      shown["run"]["stage_peak_gpu_mib"] = peaks;  // the CUDA allocator's, as torch.cuda.max_memory_*
    }
    if (!summary.profile.is_null()) shown["run"]["profile"] = profile_brief(summary.profile, o->profile);
    if (const auto cudnn = o->model.cudnn_attention_json(); !cudnn.is_null()) shown["run"]["cudnn_attention"] = cudnn;
    if (const auto fused = o->model.cuda_fused_ops_json(); !fused.is_null()) shown["run"]["cuda_fused_ops"] = fused;
    print_result(shown, o->json);
  });
}

}  // namespace p2dpo::cli
