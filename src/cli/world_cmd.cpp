// p2dpo world ...: the embedded, exactly labelled world. `make` draws and writes a world; further
// subcommands (train-clip, train-base) are added to the same group in register_world.
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/common.h"
#include "io/errors.h"
#include "world/base_train.h"
#include "world/make_world.h"

namespace p2dpo::cli {
namespace {

uint64_t parse_seed(const std::string& text) {
  if (text.empty() || text.size() > 20 || text.find_first_not_of("0123456789") != std::string::npos)
    throw InputError("--seed", "expected a non-negative integer, got '" + text + "'");
  try {
    return std::stoull(text);
  } catch (const std::exception&) {
    throw InputError("--seed", "'" + text + "' is out of range (at most 18446744073709551615)");
  }
}

// `p2dpo world make --out DIR --seed S [--train N --prompts N --eval N ...]`
void add_world_make(CLI::App& world) {
  struct Opts {
    world::WorldOptions world;
    std::string seed = "0";
    bool json = false, quiet = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = world.add_subcommand("make", "Draw and write a world: images, ground truth, training text, prompts, eval sets");
  world::WorldOptions& w = o->world;
  cmd->add_option("--out", w.out_dir, "output directory (must not exist or be empty; see --overwrite)")->required();
  cmd->add_option("--seed", o->seed, "seed (non-negative integer); same seed and options give byte-identical files")
      ->capture_default_str();
  cmd->add_option("--train", w.train_count, "training images (conversations, captions, corpus)")->capture_default_str();
  cmd->add_option("--prompts", w.prompt_count, "pair-generation prompt images")->capture_default_str();
  cmd->add_option("--eval", w.eval_count, "held-out evaluation images (POPE, descriptions, AFR)")->capture_default_str();
  cmd->add_option("--shapes", w.shapes, "shape vocabulary, comma-separated (circle, square, triangle, star, diamond, cross, hexagon)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--colors", w.colors,
                  "colour vocabulary, comma-separated (red, green, blue, yellow, purple, orange, cyan, pink, white, black)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--min-side", w.min_image_side, "smallest image side in pixels")->capture_default_str();
  cmd->add_option("--max-side", w.max_image_side, "largest image side in pixels")->capture_default_str();
  cmd->add_option("--min-objects", w.min_objects, "fewest objects per scene")->capture_default_str();
  cmd->add_option("--max-objects", w.max_objects, "most objects per scene")->capture_default_str();
  cmd->add_option("--partner-percent", w.partner_percent,
                  "chance that an object's partner class joins it in train/prompt scenes")->capture_default_str();
  cmd->add_option("--questions-per-image", w.questions_per_image, "question conversations per training image (plus one description)")
      ->capture_default_str();
  cmd->add_option("--prompts-per-image", w.prompts_per_image, "open-ended prompts per prompt image")->capture_default_str();
  cmd->add_option("--pope-per-image", w.pope_per_image, "POPE positives (and negatives) per eval image, at most")
      ->capture_default_str();
  cmd->add_option("--threads", w.threads, "rendering threads (files do not depend on it)")->capture_default_str();
  cmd->add_flag("--overwrite", w.overwrite, "replace a previous world in --out");
  cmd->add_flag("--quiet", o->quiet, "no progress lines");
  cmd->add_flag("--json", o->json, "print the summary as JSON");
  cmd->callback([o]() {
    o->world.seed = parse_seed(o->seed);
    const auto summary = world::make_world(o->world, o->quiet ? nullptr : &std::cerr);
    nlohmann::json j;
    j["out"] = summary.out_dir;
    j["images"] = summary.images;
    j["conversations"] = summary.conversations;
    j["prompts"] = summary.prompts;
    j["pope_questions_per_split"] = summary.pope_questions_per_split;
    j["seconds"] = summary.seconds;
    print_result(j, o->json);
  });
}

// `p2dpo world train-base --world DIR --clip DIR [--tokenizer DIR] --out DIR [--steps-* N ...]`
void add_world_train_base(CLI::App& world) {
  struct Opts {
    world::BaseTrainOptions base;
    std::string seed = "0";
    std::vector<int64_t> steps;
    std::vector<double> lrs;
    bool json = false, quiet = false, no_resume = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = world.add_subcommand("train-base", "Build the tiny LLaVA on the world CLIP's tower and train it stage by stage (resumable)");
  world::BaseTrainOptions& b = o->base;
  cmd->add_option("--world", b.world_dir, "world directory (p2dpo world make)")->required();
  cmd->add_option("--clip", b.clip_dir, "world CLIP checkpoint (p2dpo world train-clip)")->required();
  cmd->add_option("--tokenizer", b.tokenizer_dir, "llava-hf tokenizer files (default: the --clip directory's)");
  cmd->add_option("--out", b.out_dir, "output directory: init/, stages/<name>/, model/")->required();
  cmd->add_option("--seed", o->seed, "seed for initialisation and data order")->capture_default_str();
  cmd->add_option("--hidden", b.model.hidden_size, "decoder width")->capture_default_str();
  cmd->add_option("--intermediate", b.model.intermediate_size, "decoder MLP width")->capture_default_str();
  cmd->add_option("--layers", b.model.num_layers, "decoder layers")->capture_default_str();
  cmd->add_option("--heads", b.model.num_heads, "attention heads")->capture_default_str();
  cmd->add_option("--kv-heads", b.model.num_kv_heads, "key/value heads (grouped-query attention when fewer)")->capture_default_str();
  cmd->add_option("--init", b.model.init, "decoder initialisation: fan_in or hf")->capture_default_str();
  cmd->add_option("--steps", o->steps, "optimizer steps per stage, in stage order (text, projector, curriculum, full)")
      ->delimiter(',');
  cmd->add_option("--lr", o->lrs, "peak learning rate per stage, in stage order")->delimiter(',');
  cmd->add_option("--save-every", b.save_every, "checkpoint every N steps")->capture_default_str();
  cmd->add_option("--stop-after", b.stop_after_total_steps, "leave after N steps in total (a rerun resumes)")
      ->capture_default_str();
  cmd->add_flag("--no-resume", o->no_resume, "start finished or partial stages over");
  cmd->add_flag("--quiet", o->quiet, "no progress lines");
  cmd->add_flag("--json", o->json, "print the summary as JSON");
  cmd->callback([o]() {
    auto& b = o->base;
    b.seed = parse_seed(o->seed);
    b.resume = !o->no_resume;
    b.progress = !o->quiet;
    if (o->steps.size() > b.stages.size()) throw InputError("--steps", "more values than stages (" + std::to_string(b.stages.size()) + ")");
    if (o->lrs.size() > b.stages.size()) throw InputError("--lr", "more values than stages (" + std::to_string(b.stages.size()) + ")");
    for (size_t i = 0; i < o->steps.size(); ++i) {
      if (o->steps[i] < 0) throw InputError("--steps", "must be non-negative");
      b.stages[i].steps = o->steps[i];
    }
    for (size_t i = 0; i < o->lrs.size(); ++i) {
      if (!(o->lrs[i] > 0)) throw InputError("--lr", "must be positive");
      b.stages[i].lr = o->lrs[i];
    }
    auto r = world::train_world_base(b);
    nlohmann::json j;
    j["model"] = r.model_dir;
    j["steps_done"] = r.total_steps_done;
    j["finished_stages"] = r.finished_stages;
    print_result(j, o->json);
  });
}

}  // namespace

void register_world(CLI::App& app) {
  CLI::App* world = app.add_subcommand("world", "The embedded world: scenes, text and evaluation sets; its tiny models");
  world->require_subcommand(1);
  add_world_make(*world);
  add_world_train_base(*world);
  // train-clip / train-base: add_world_train_clip(*world); add_world_train_base(*world);
}

}  // namespace p2dpo::cli
