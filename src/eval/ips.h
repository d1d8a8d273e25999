#pragma once
// Implicit preference strength of a pair set (paper §5.4, Table 3; evaluation.md §8):
//   IPS = Σ log π(y_w | context) − Σ log π(y_l | context), summed over the answer tokens + EOS
// (pairs/responses.h, the scoring of the trainer). Contexts: focus pairs and external pairs on
// (I, P), robustness pairs on (I_noise, P) rebuilt from the record's seed. Measured with any model
// (a base, or base + adapter, so a trained model's IPS on the same pairs can be compared), or read
// from the references `p2dpo pairs` recorded. Reported per pair type: mean, population std (and
// ddof 1), share < 0, distribution.
#include <nlohmann/json.hpp>

#include <string>

#include "models/vlm.h"

namespace p2dpo::eval {

struct IpsOptions {
  std::string pairs_path;   // `p2dpo pairs` directory / JSONL, or external pairs (RLHF-V, V-DPO, plain)
  std::string images_dir;   // "" = the pairs run's own (p2dpo records) or paths as written
  std::string prompt_template = "USER: <image>\n{question} ASSISTANT:";  // external pairs only
  bool kept_only = true;    // p2dpo records: filtered.jsonl rather than pairs.jsonl
  int64_t limit = 0;
  std::string out_dir;      // ips.jsonl (per pair) and results.json; "" = none written
  bool progress = true;
};

// With a model: measures. The results document: {"pairs": path, "source": "model" | "recorded",
// "focus": table, "robust": table (p2dpo records) | "external": table}.
nlohmann::json measure_ips(models::VisionLanguageModel& model, const IpsOptions& opt);
// Without a model: the IPS `p2dpo pairs` recorded with its references (p2dpo records only).
nlohmann::json recorded_ips(const IpsOptions& opt);

}  // namespace p2dpo::eval
