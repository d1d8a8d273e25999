// p2dpo world ...: the embedded, exactly labelled world. `make` draws and writes a world; further
// subcommands (train-clip, train-base) are added to the same group in register_world.
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/common.h"
#include "io/errors.h"
#include "io/json_io.h"
#include "world/base_train.h"
#include "world/pairs_sanity.h"
#include "world/clip_train.h"
#include "world/tokenizer_train.h"
#include "world/truth_pairs.h"
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
    std::vector<int> small_size, large_size;
    bool json = false, quiet = false;
  };
  auto o = std::make_shared<Opts>();
  o->small_size = {o->world.small_min_permille, o->world.small_max_permille};
  o->large_size = {o->world.large_min_permille, o->world.large_max_permille};
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
  cmd->add_option("--small-size", o->small_size,
                  "small objects' side range, per mille of the central square's side: MIN,MAX (below one patch)")
      ->delimiter(',')
      ->expected(2)
      ->capture_default_str();
  cmd->add_option("--large-size", o->large_size, "large objects' side range, per mille of the central square's side: MIN,MAX")
      ->delimiter(',')
      ->expected(2)
      ->capture_default_str();
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
    o->world.small_min_permille = o->small_size.at(0);
    o->world.small_max_permille = o->small_size.at(1);
    o->world.large_min_permille = o->large_size.at(0);
    o->world.large_max_permille = o->large_size.at(1);
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

// `p2dpo world train-tokenizer --world DIR --out DIR [--vocab-size N --seed S]`
void add_world_train_tokenizer(CLI::App& world) {
  struct Opts {
    std::string world_dir, out_dir, seed = "0";
    int vocab_size = 448;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = world.add_subcommand("train-tokenizer", "Train the world's LLaMA (SentencePiece BPE) tokenizer; writes llava-hf tokenizer files");
  cmd->add_option("--world", o->world_dir, "world directory (reads text/corpus.txt)")->required();
  cmd->add_option("--out", o->out_dir, "output directory for tokenizer.model and its JSON files")->required();
  cmd->add_option("--vocab-size", o->vocab_size, "SentencePiece pieces (specials + 256 bytes + characters + merges)")
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "trainer seed")->capture_default_str();
  cmd->add_flag("--json", o->json, "print the summary as JSON");
  cmd->callback([o]() {
    // The chat template's words occur once per training conversation; SentencePiece only learns
    // pieces for them when it sees them that often (once gives letter-by-letter "USER").
    const std::string conv_path = o->world_dir + "/train/conversations.json";
    const size_t conversations = io::read_json_file(conv_path).size();
    auto info = world::train_world_tokenizer(o->world_dir + "/text/corpus.txt", o->out_dir, o->vocab_size,
                                             parse_seed(o->seed),
                                             std::vector<std::string>(conversations, "USER: ASSISTANT:"));
    nlohmann::json j{{"out", o->out_dir}, {"sentencepiece_size", info.sentencepiece_size},
                     {"image_token_id", info.image_token_id}, {"pad_token_id", info.pad_token_id},
                     {"tokenizer_size", info.tokenizer_size}};
    print_result(j, o->json);
  });
}

// `p2dpo world train-clip --world DIR --out DIR [--steps N --batch B --lr LR --seed S --resume]`
void add_world_train_clip(CLI::App& world) {
  struct Opts {
    world::ClipTrainOptions clip;
    std::string seed = "0";
    bool json = false, no_augment = false, no_hard_negatives = false;
  };
  auto o = std::make_shared<Opts>();
  o->clip.image_size = o->clip.patch_size = 0;  // 0: from the world's world.json
  auto* cmd = world.add_subcommand("train-clip", "Train the world CLIP contrastively on the world's captions; HF CLIPModel layout");
  auto& c = o->clip;
  cmd->add_option("--world", c.world_dir, "world directory (reads train/captions.jsonl)")->required();
  cmd->add_option("--out", c.out_dir, "output directory (HF checkpoint; training state in checkpoint-last/)")->required();
  cmd->add_option("--steps", c.steps, "optimizer steps")->capture_default_str();
  cmd->add_option("--batch", c.batch, "image-caption pairs per step")->capture_default_str();
  cmd->add_option("--lr", c.lr, "peak learning rate")->capture_default_str();
  cmd->add_option("--seed", o->seed, "seed for initialisation and data order")->capture_default_str();
  cmd->add_option("--threads", c.threads, "torch intra-op threads (0 = libtorch's default)")->capture_default_str();
  cmd->add_option("--stop-after", c.stop_after, "stop with a checkpoint after N steps of this run (--resume continues)")
      ->capture_default_str();
  cmd->add_option("--checkpoint-every", c.checkpoint_every, "checkpoint every N steps")->capture_default_str();
  cmd->add_flag("--resume", c.resume, "continue from --out/checkpoint-last");
  cmd->add_option("--image-size", c.image_size, "vision input side (default: the world's model_input.input_side)");
  cmd->add_option("--patch-size", c.patch_size, "vision patch side (default: the world's model_input.patch_size)");
  cmd->add_flag("--no-augment", o->no_augment, "captions only: no existence questions or object crops");
  cmd->add_flag("--no-hard-negatives", o->no_hard_negatives,
                "no shape-swapped hard-negative texts in the image->text loss (NegCLIP; on by default, it teaches the tower shapes)");
  c.dense_aux_weight = 1.0;  // on from the CLI; the library default stays off
  cmd->add_option("--dense-aux-weight", c.dense_aux_weight,
                  "weight of the per-patch object-class loss on the tower's LLaVA feature layer (0 = off; needs the scenes)")
      ->capture_default_str();
  cmd->add_option("--dense-aux-layer", c.dense_aux_layer, "hidden-state index that loss reads (LLaVA's vision_feature_layer)")
      ->capture_default_str();
  cmd->add_flag("--quiet", c.quiet, "no progress lines");
  cmd->add_flag("--json", o->json, "print the summary as JSON");
  cmd->callback([o]() {
    o->clip.seed = parse_seed(o->seed);
    if (o->no_augment) o->clip.dense_aux_weight = 0;  // the labels come from the scenes
    o->clip.augment = !o->no_augment;
    o->clip.hard_negatives = !o->no_hard_negatives && !o->no_augment;  // they need the scenes
    // The world fixes the model's input geometry (its small objects are sized against the patch).
    const std::string world_json = o->clip.world_dir + "/world.json";
    if (o->clip.image_size == 0 || o->clip.patch_size == 0) {
      const auto w = io::read_json_file(world_json);
      const auto& m = w.contains("model_input") ? w.at("model_input") : nlohmann::json::object();
      if (!m.contains("input_side") || !m.contains("patch_size"))
        throw InputError(world_json, "model_input.input_side / model_input.patch_size missing (or pass --image-size and --patch-size)");
      if (o->clip.image_size == 0) o->clip.image_size = m.at("input_side").get<int64_t>();
      if (o->clip.patch_size == 0) o->clip.patch_size = m.at("patch_size").get<int64_t>();
    }
    auto r = world::train_world_clip(o->clip);
    nlohmann::json j{{"out", o->clip.out_dir}, {"steps_done", r.steps_done}, {"first_loss", r.first_loss},
                     {"last_loss", r.last_loss}, {"seconds", r.seconds}, {"pairs", r.num_pairs},
                     {"caption_pairs", r.num_caption_pairs}, {"question_pairs", r.num_question_pairs},
                     {"crop_pairs", r.num_crop_pairs}, {"dense_classes", r.num_dense_classes},
                     {"dense_patch_accuracy", r.last_dense_accuracy}};
    print_result(j, o->json);
  });
}

// `p2dpo world clip-sanity --clip DIR --world DIR [--out FILE]`: the paper's Table 6 shape.
void add_world_clip_sanity(CLI::App& world) {
  struct Opts {
    world::CropSanityOptions sanity;
    std::string out;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = world.add_subcommand("clip-sanity", "CLIPScore of existence questions on object crops vs whole images vs empty crops");
  cmd->add_option("--clip", o->sanity.model_dir, "CLIP checkpoint (HF layout)")->required();
  cmd->add_option("--world", o->sanity.world_dir, "world directory (reads scenes.jsonl)")->required();
  cmd->add_option("--split", o->sanity.split, "scenes of this split")->capture_default_str();
  cmd->add_option("--max-questions", o->sanity.max_questions, "objects considered")->capture_default_str();
  cmd->add_option("--crop-side", o->sanity.crop_side, "crop side in original pixels")->capture_default_str();
  cmd->add_option("--out", o->out, "also write the JSON here (atomically)");
  cmd->add_flag("--json", o->json, "print JSON");
  cmd->callback([o]() {
    auto r = world::clipscore_crop_sanity(o->sanity);
    auto j = world::crop_sanity_json(o->sanity, r);
    if (!o->out.empty()) io::write_json_atomic(o->out, j);
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
    double zoom_share = -1;
    bool json = false, quiet = false, no_resume = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = world.add_subcommand("train-base", "Build the tiny LLaVA on the world CLIP's tower and train it stage by stage (resumable)");
  world::BaseTrainOptions& b = o->base;
  cmd->add_option("--world", b.world_dir, "world directory (p2dpo world make)")->required();
  cmd->add_option("--clip", b.clip_dir, "world CLIP checkpoint (p2dpo world train-clip)")->required();
  cmd->add_option("--tokenizer", b.tokenizer_dir, "llava-hf tokenizer files (p2dpo world train-tokenizer)")->required();
  cmd->add_option("--out", b.out_dir, "output directory: init/, stages/<name>/, model/")->required();
  cmd->add_option("--seed", o->seed, "seed for initialisation and data order")->capture_default_str();
  cmd->add_option("--hidden", b.model.hidden_size, "decoder width")->capture_default_str();
  cmd->add_option("--intermediate", b.model.intermediate_size, "decoder MLP width")->capture_default_str();
  cmd->add_option("--layers", b.model.num_layers, "decoder layers")->capture_default_str();
  cmd->add_option("--heads", b.model.num_heads, "attention heads")->capture_default_str();
  cmd->add_option("--kv-heads", b.model.num_kv_heads, "key/value heads (grouped-query attention when fewer)")->capture_default_str();
  cmd->add_option("--init", b.model.init, "decoder initialisation: fan_in or hf")->capture_default_str();
  cmd->add_option("--steps", o->steps, "optimizer steps per stage, in stage order (text, projector, curriculum, full, vision, zoom)")
      ->delimiter(',');
  cmd->add_option("--lr", o->lrs, "peak learning rate per stage, in stage order")->delimiter(',');
  cmd->add_option("--zoom-share", o->zoom_share,
                  "share of image conversations the zoom stage also shows with a second, zoomed slot (default 0.5)");
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
    if (o->zoom_share >= 0) {
      if (!(o->zoom_share > 0 && o->zoom_share <= 1)) throw InputError("--zoom-share", "must be in (0, 1]");
      for (auto& s : b.stages)
        if (s.name == "zoom") s.zoom_share = o->zoom_share;
    }
    auto r = world::train_world_base(b);
    nlohmann::json j;
    j["model"] = r.model_dir;
    j["steps_done"] = r.total_steps_done;
    j["finished_stages"] = r.finished_stages;
    print_result(j, o->json);
  });
}

// `p2dpo world pairs-sanity --pairs DIR --world DIR`: do the pairs point the right way?
void add_world_pairs_sanity(CLI::App& world) {
  struct Opts {
    std::string pairs, world_dir, out;
    bool kept_only = false, json = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = world.add_subcommand("pairs-sanity", "Check a pairs run against the world's truth: faithfulness order of chosen vs rejected, crop hits vs random boxes");
  cmd->add_option("--pairs", o->pairs, "output folder of `p2dpo pairs` (reads pairs.jsonl)")->required();
  cmd->add_option("--world", o->world_dir, "the world the prompts came from")->required();
  cmd->add_flag("--kept-only", o->kept_only, "only the pairs the filter kept");
  cmd->add_option("--out", o->out, "also write the JSON here (atomically)");
  cmd->add_flag("--json", o->json, "print JSON");
  cmd->callback([o]() {
    auto j = world::pairs_sanity(o->pairs, o->world_dir, o->kept_only);
    if (!o->out.empty()) io::write_json_atomic(o->out, j);
    print_result(j, o->json);
  });
}

// `p2dpo world truth-pairs --world DIR --out FILE`: off-policy pairs from the ground truth.
void add_world_truth_pairs(CLI::App& world) {
  struct Opts {
    world::TruthPairsOptions t;
    std::string seed = "0";
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = world.add_subcommand(
      "truth-pairs", "Off-policy DPO pairs from the ground truth (chosen = true answer, rejected = one injected hallucination), the demo's RLHF-V-like baseline");
  cmd->add_option("--world", o->t.world_dir, "world directory (world.json, scenes.jsonl, prompts/pairs_truth.jsonl)")->required();
  cmd->add_option("--out", o->t.out_path, "JSONL {id, image, question, chosen, rejected}; images relative to --world")->required();
  cmd->add_option("--limit", o->t.limit, "stop after N pairs");
  cmd->add_option("--seed", o->seed, "which mention is corrupted when several could be")->capture_default_str();
  cmd->callback([o]() {
    o->t.seed = parse_seed(o->seed);
    const auto r = world::write_truth_pairs(o->t);
    std::cout << "prompts: " << r.prompts << "\npairs: " << r.pairs << "\nout: " << o->t.out_path << "\n";
  });
}

}  // namespace

void register_world(CLI::App& app) {
  CLI::App* world = app.add_subcommand("world", "The embedded world: scenes, text and evaluation sets; its tiny models");
  world->require_subcommand(1);
  add_world_make(*world);
  add_world_train_tokenizer(*world);
  add_world_train_clip(*world);
  add_world_clip_sanity(*world);
  add_world_train_base(*world);
  add_world_pairs_sanity(*world);
  add_world_truth_pairs(*world);
}

}  // namespace p2dpo::cli
