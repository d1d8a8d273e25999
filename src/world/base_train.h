#pragma once
// The world's base model, trained as LLaVA-1.5 was, in miniature (world spec, "The tiny base
// model"): a new LLaVA from the world CLIP's vision tower + the world tokenizer + a fresh LLaMA,
// then a visible sequence of stages, each the reference causal-LM loop (train/causal_lm_loop.h) on
// its own trainable set and data:
//   0 "text"      language model only, on the world's text without images (the Vicuna analogue:
//                 LLaVA's LLM arrived pretrained; ours learns the language first)
//   1 "projector" projector only, on descriptions (LLaVA stage 1)
//   2 "curriculum" projector + language model on scenes with few objects (single-object first)
//   3 "full"      projector + language model on every question and description (LLaVA stage 2)
//   4 "vision"    as "full" with the vision tower trainable too (0 steps unless asked for)
//   5 "zoom"      as "full", plus two-slot copies (the image, then a zoomed crop around the object
//                 the question names) of half the image conversations: the input P2-DPO's focus
//                 pairs give the model (Combine(I, I_crop)), which LLaVA-1.5-7B reads untrained but
//                 a 4-layer model never saw (0 steps unless asked for)
// Each stage writes <out>/stages/<name>/ (metrics.jsonl, checkpoints/, done.json when finished); a
// rerun skips finished stages and resumes an unfinished one from its last checkpoint. The result
// is <out>/model: config, model.safetensors, tokenizer and processor files (llava-hf layout).
#include <cstdint>
#include <string>
#include <vector>

#include "models/llava_builder.h"
#include "train/conversations.h"

namespace p2dpo::world {

struct BaseStage {
  std::string name;
  std::string trainable;      // "lm" | "projector" | "projector+lm" | "projector+lm+vision"
  std::string data;           // "text" | "descriptions" | "all"
  int max_objects = 0;        // > 0: only scenes with at most this many objects
  int64_t steps = 0;          // optimizer steps; 0 skips the stage
  double lr = 1e-3;
  int64_t batch = 32;         // examples per optimizer step
  int64_t micro_batch = 8;
  double zoom_share = 0;      // > 0: add zoom_conversations(share) of the stage's image conversations
};

struct BaseTrainOptions {
  std::string world_dir;      // `p2dpo world make` output
  std::string clip_dir;       // `p2dpo world train-clip` output (HF CLIPModel layout)
  std::string tokenizer_dir;  // llava-hf tokenizer files (`p2dpo world train-tokenizer` output)
  std::string out_dir;
  models::LlavaBuildSpec model;  // vision_from / tokenizer_from are filled from the dirs above
  std::vector<BaseStage> stages = default_stages();
  std::string conversation_template = "no_system";  // "USER: question\n<image> ASSISTANT:" style
  int64_t max_length = 0;
  int64_t save_every = 200;
  uint64_t seed = 0;
  bool resume = true;
  // Leave after this many optimizer steps in total over all stages (0 = run to the end): how CI runs
  // a short version and how the resume test kills a run.
  int64_t stop_after_total_steps = 0;
  bool progress = true;

  static std::vector<BaseStage> default_stages();
};

struct BaseTrainResult {
  std::string model_dir;       // <out>/model once every stage is done, "" when stopped early
  int64_t total_steps_done = 0;
  std::vector<std::string> finished_stages;
};

BaseTrainResult train_world_base(const BaseTrainOptions& opt);

// Two-slot copies of a `share` of the image conversations (each picked by a coin seeded from the
// seed and its id, so the choice does not depend on order): prompt slots (image, crop), the crop a
// square around an object of the scene: the one the first question names by colour and shape, else
// by shape, else one in the region it names ("at the top left"), else any. Its side is input_side
// (the model's input side, in original pixels, as the adaptive crop's base box) times a ratio drawn
// from {1.0, 1.2, ..., 2.0}, shifted at random while the object stays inside, then into the image.
// Ids get "-zoom"; the first "<image>" becomes "<image><image>"; answers are unchanged. Crops are
// written as PNG to crops_dir/<id>.png (atomically; an existing file is kept, for resume).
std::vector<train::Conversation> zoom_conversations(const std::vector<train::Conversation>& conversations,
                                                    const std::string& world_dir, double share, int input_side,
                                                    uint64_t seed, const std::string& crops_dir);

}  // namespace p2dpo::world
