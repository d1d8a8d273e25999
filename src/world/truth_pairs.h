#pragma once
// Off-policy preference pairs from the world's ground truth: the analogue of RLHF-V's
// human-corrected pairs, for the demo's "plain DPO" baseline. For each open prompt of
// prompts/pairs.jsonl, chosen = the exact ground-truth answer (prompts/pairs_truth.jsonl) and
// rejected = the same answer with one hallucination injected: an object it names becomes a class the
// scene does not hold (its co-occurrence partner when absent, the error the world's priors invite;
// else another absent class of the same colour, else any absent class), or, for answers naming no
// object (colour questions), the colour word becomes another colour. The pairs are written by no
// model, hence off-policy.
#include <cstdint>
#include <string>

namespace p2dpo::world {

struct TruthPairsOptions {
  std::string world_dir;  // reads world.json, scenes.jsonl, prompts/pairs_truth.jsonl
  std::string out_path;   // JSONL {id, image, question, chosen, rejected, injected}, image relative to world_dir
  int64_t limit = 0;      // > 0: stop after N pairs (the demo matches P2-DPO's kept pair count)
  uint64_t seed = 0;      // which mention is corrupted when several could be
};

struct TruthPairsResult {
  int64_t prompts = 0;  // read
  int64_t pairs = 0;    // written (a prompt whose answer cannot be corrupted is skipped)
};

// Writes out_path atomically. InputError naming the file and field on malformed world files.
TruthPairsResult write_truth_pairs(const TruthPairsOptions& opts);

}  // namespace p2dpo::world
