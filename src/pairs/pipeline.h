#pragma once
// `p2dpo pairs`: the model builds its own preference pairs (paper §4.1, method.md §1–6).
// Per sample: attention map -> adaptive crop -> views (I_aug, I_deg, I_noise) -> focus pair
// (greedy on I_aug with P_enh vs greedy on I_deg) and robustness pair (contrastive amplification
// vs sampling on I_noise) -> per-token log-probs and PPL under each response's own context ->
// reference log-prob sums for training -> CLIPScore and DDW weights. After all samples: the
// PPL/margin filter (thresholds from the run's own margins by default) and the statistics.
//
// Files in --out:
//   config.json      the resolved config (preset + file), manifest.json (inputs, sample count)
//   generated.jsonl  one record per sample, appended and flushed as batches finish (resume reads it);
//                    with RANK/WORLD_SIZE, shards/rank-R/generated.jsonl instead
//   pairs.jsonl      every record, in input order, with its filter decision
//   filtered.jsonl   the kept records; stats.json (Tables 3, 5, 6); heatmaps/<id>.png
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "models/device_memory.h"
#include "models/vlm.h"
#include "pairs/config.h"

namespace p2dpo::pairs {

class ClipScorer;

struct PromptSample {
  int64_t index = 0;    // position in the input file (the record order of every output)
  std::string id;       // the input's id (or idx), else the index
  std::string image;    // as written in the input (relative to --images)
  std::string question;
};

// RLHF-V / LLaVA conversation JSON (question = first human turn, <image> marker removed; answers
// ignored) or JSONL {id, image, question}. Errors name the file and the record.
std::vector<PromptSample> load_prompt_samples(const std::string& path);

struct PairsRunOptions {
  std::string data_path;
  std::string images_dir;
  std::string out_dir;
  std::string model_dir;  // recorded in the manifest
  std::string clip_dir;   // recorded; the scorer is passed in (nullptr: no CLIPScore, DDW weights w_base)
  int64_t limit = 0;      // > 0: the first N samples only
  int rank = 0, world_size = 1;
  bool progress = true;
  // Test hook standing in for a kill: leave after this many batches have been written (0 = off).
  int64_t stop_after_batches = 0;
  // Non-empty: record an op profile (models/op_profile.h) of one batch, the second this process
  // computes (the first pays one-time costs: kernel loading, allocator growth), or the first if it
  // computes only one; written as PROFILE_DIR/pairs-batch-B.{summary,trace}.json, stages as phases.
  std::string profile_dir;
};

struct PairsRunSummary {
  int64_t samples = 0;           // in this run's input (after --limit)
  int64_t generated_now = 0;     // records this process wrote
  int64_t already_done = 0;      // records found on disk at start
  bool finalized = false;        // pairs.jsonl / filtered.jsonl / stats.json written
  double generation_seconds = 0; // wall time of this process's batches (model loading excluded)
  std::map<std::string, double> stage_seconds;  // where that time went (attention, views, focus, ...)
  std::vector<double> batch_seconds;            // wall time of each batch this process computed, in order
  // On CUDA (where the build reads the allocator's statistics): each stage's peak allocated and
  // reserved memory, the largest over batches; empty otherwise.
  std::map<std::string, models::DeviceMemoryPeak> stage_peak_memory;
  nlohmann::json profile;                       // the op profile's summary when profile_dir was set
  nlohmann::json stats;          // when finalized
};

// Generates this rank's records (resuming), then, for a single process, finalizes. With several
// ranks each writes its shard and rank 0 merges once every shard is complete (it waits for them).
PairsRunSummary generate_pairs(models::VisionLanguageModel& model, const ClipScorer* clip, const PairsConfig& cfg,
                               const PairsRunOptions& opt);

// Reads every record (single file or shards), checks that each sample is present once, applies
// the filter and writes pairs.jsonl, filtered.jsonl and stats.json atomically. Returns stats.
nlohmann::json finalize_pairs(const std::string& out_dir, const PairsConfig& cfg);

// The attention layer(s) used for `num_layers` decoder layers: the configured ones, or the paper's
// layer 14 of 32 scaled by depth.
std::vector<int> attention_layers(const AttentionConfig& cfg, int num_layers);

}  // namespace p2dpo::pairs
