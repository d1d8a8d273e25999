#pragma once
// Training data for the P2-DPO trainer: the records `p2dpo pairs` writes (one per prompt, with the
// focus pair, the robustness pair, the box and seeds that rebuild every view, the reference
// log-prob sums and the CLIP scores), or external preference pairs (one image, chosen, rejected;
// e.g. RLHF-V) for the plain-DPO baseline. No torch here: the views are built by the trainer.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "pairs/box.h"
#include "pairs/views.h"

namespace p2dpo::train {

// The six reference sums of method.md §7.2, as recorded by the pair generator.
struct ReferenceLogps {
  double focus_chosen = 0, focus_rejected = 0;              // | (I, P)
  double calib_rejected_aug = 0, calib_rejected_deg = 0;    // y_l | (I + I_crop, P) and (I_deg, P)
  double robust_chosen = 0, robust_rejected = 0;            // | (I_noise, P)
};

struct TrainingPair {
  std::string id;
  std::string source;      // "file:line" of the record, for errors
  std::string image_path;  // resolved
  std::string prompt;      // P: the generation template with the question, one image slot
  std::string prompt_aug;  // P with two image slots (I, I_crop) for the calibration term
  bool has_focus = false, has_robust = false;
  std::string focus_chosen, focus_rejected, robust_chosen, robust_rejected;
  pairs::PixelBox bbox;         // the attention crop (rebuilds I_crop and I_deg)
  pairs::EraseConfig erase;     // as the generator erased
  pairs::NoiseConfig noise;     // as the generator noised
  uint64_t noise_seed = 0;
  std::optional<ReferenceLogps> reference;  // recorded reference sums (P2-DPO records always have them)
  std::optional<double> clip_image, clip_crop;  // CLIPScore(P, I) and (P, I_crop)
};

struct PairDataOptions {
  std::string images_dir;  // "" = the pairs run's own (manifest.json "images")
  bool kept_only = true;   // filtered.jsonl (the filter's decision) rather than pairs.jsonl
  int64_t limit = 0;       // > 0: the first N records
};

// A `p2dpo pairs` output directory (filtered.jsonl or pairs.jsonl, manifest.json for the images
// directory) or one of its JSONL files. Errors name the file, the line and the field.
std::vector<TrainingPair> load_p2dpo_pairs(const std::string& pairs_path, const PairDataOptions& opt);

// External preference pairs for plain DPO: JSON list or JSONL of records with "image" and either
// {"question", "chosen", "rejected"}, RLHF-V's {"text": "{\"question\", \"chosen\", \"rejected\"}"}
// or V-DPO's {"conversations": [human, gpt], "contrastive_conversations": [human, gpt]}. The prompt
// is `prompt_template` with {question} filled ("<image>" markers in the question are dropped).
// They become focus pairs without references (the trainer computes them with the adapter off).
std::vector<TrainingPair> load_external_pairs(const std::string& path, const std::string& images_dir,
                                              const std::string& prompt_template, int64_t limit = 0);

}  // namespace p2dpo::train
