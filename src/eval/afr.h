#pragma once
// Attention analysis (evaluation spec §7): VQA accuracy with the official TextVQA normalisation
// (§7.2), per-layer attention of the last prompt token to the image tokens (§7.3), the attention
// focus ratio AFR inside / outside the answer box (§7.4), P-Acc on the high-focus subset (§7.5) and
// the share of answer-token attention that goes to the image, per layer and global (§7.6, App. H).
//
// Records (JSONL): TextVQA-style {"question_id", "image", "text"|"question", "answers": [10 str],
// "bbox"} scored by VQA accuracy, or the world's afr.jsonl {"question_id", "image", "text",
// "answer_object", "label": "yes"|"no", "bbox", "size"} scored by yes/no correctness with POPE's
// answer parsing. bbox in original-image pixels: [x0, y0, x1, y1] (x1/y1 exclusive; the world's) or
// [x, y, w, h] (TextVQA_GT_bbox) by BboxFormat.
//
// Attention (one forward per record, on prompt + the generated answer re-tokenized, batch 1):
//   A_l = head mean of the attention of the last prompt position (the query that predicts the first
//   answer token) over the image tokens, row-major on the image-token grid (infer::attention_to_images).
//   Image share (§7.6): queries a = the last prompt position and every answer token (the queries that
//   predict answer tokens 1..n and the closing EOS); per head and query the probabilities sum to 1, so
//   txt = 1 - img. image_share_l = pooled over all records and queries; mean_image_ratio = mean over
//   records of their per-record mean over layers; global_image_ratio = pooled over records, layers,
//   queries [decision: the two App. H numbers differ, so one of them must weigh records equally].
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "image/clip_processor.h"
#include "models/vlm.h"

namespace p2dpo::eval {

// ---- VQA accuracy (§7.2, m4c_evaluator.EvalAIAnswerProcessor; lower-casing is ASCII-only) ----

// The official normalisation of one answer.
std::string vqa_normalize(const std::string& answer);
// Mean over the n ground-truth answers of min(1, #{other answers equal to the prediction} / 3), all
// normalised (n = 10 in TextVQA; the official code asserts 10, here any n >= 1). In [0, 1].
double vqa_accuracy(const std::string& prediction, const std::vector<std::string>& gt_answers);

// ---- Box -> image-token grid (§7.4) ----

enum class BoxMapping {
  Crop,     // HF CLIPImageProcessor: shortest-edge resize (HF truncation), centre crop
  Pad,      // original LLaVA: expand2square, then the same resize/crop (a no-op crop on a square)
  Stretch,  // the grid stretched over the original image (S-KNOW's convention)
};
BoxMapping parse_box_mapping(const std::string& s, const std::string& flag);  // crop, pad, stretch
const char* box_mapping_name(BoxMapping m);

enum class BboxFormat { Xyxy, Xywh };
BboxFormat parse_bbox_format(const std::string& s, const std::string& flag);  // xyxy, xywh

// The cells of a grid_h x grid_w image-token grid that belong to a box.
struct GridCells {
  std::vector<bool> inside;     // row-major, grid_h * grid_w
  int count = 0;
  bool centre_fallback = false; // no cell centre was inside: the cell holding the box centre
  bool dropped = false;         // the box lies wholly outside the model's frame (crop); inside empty
};

// Maps a box [x0, y0, x1, y1) in original pixels of a width x height image into the frame the model
// sees (by `mapping` and the processor's resize/crop sizes) and selects the cells whose centre lies
// inside it: u0 <= c + 1/2 < u1 and v0 <= r + 1/2 < v1 in cell units; none -> the cell containing the
// (frame-clipped) box centre. Resize scales each axis by new/old size (PIL's continuous mapping).
GridCells box_grid_cells(const std::array<double, 4>& box, int width, int height,
                         const image::ClipProcessorConfig& processor, BoxMapping mapping, int grid_h, int grid_w);

// AFR of one attention map: mean over inside cells / mean over the other cells; NaN when there is no
// outside cell or the outside mean is 0 (the sample is skipped at that layer).
double attention_focus_ratio(const std::vector<float>& map, const std::vector<bool>& inside);

// ---- Records and the run ----

struct AfrRecord {
  int64_t question_id = 0;
  std::string image;       // relative to the images directory
  std::string question;    // "text", else "question"
  std::vector<std::string> answers;  // TextVQA ground truth (empty for yes/no records)
  std::optional<bool> label_yes;     // world records
  std::array<double, 4> bbox{};      // x0, y0, x1, y1 in original pixels
  std::string size;                  // "small"/"large" when given
  std::string answer_object;         // world records
};

// Reads records; InputError naming the file and line for a missing question/image/bbox, a record with
// neither answers nor label, a degenerate box (x1 < x0) or a repeated question_id.
std::vector<AfrRecord> read_afr_records(const std::string& path, BboxFormat format);

// Correctness of one answer in [0, 1]: VQA accuracy with answers, else POPE's yes/no reading vs label.
double afr_answer_accuracy(const AfrRecord& r, const std::string& answer);

// Per-record analysis result.
struct AfrSample {
  int64_t question_id = 0;
  std::string answer;
  double accuracy = 0;
  int cells_inside = 0;
  bool centre_fallback = false, dropped = false;
  std::vector<double> afr;          // per layer (NaN = skipped)
  std::vector<double> image_share;  // per layer, mean over the record's answer queries
  int queries = 0;                  // answer-token queries (n answer tokens + EOS)
  std::vector<float> map;           // A at the P-Acc layer (kept for the first few records only)
};

struct AfrSummary {
  int num_layers = 0, grid_h = 0, grid_w = 0;
  int64_t n = 0, dropped = 0, centre_fallback = 0;
  std::vector<double> afr_per_layer;       // sample mean over records with a finite AFR at the layer
  std::vector<int64_t> afr_n_per_layer;    // how many records count at each layer
  double afr_mean_over_layers = 0;         // mean over layers of afr_per_layer (App. H "average AFR")
  int pacc_layer = 0;
  double pacc_threshold = 0;               // the threshold used
  std::string pacc_threshold_source;       // "fixed" or "mean" (this model's afr at the layer)
  double pacc = 0;                         // 100 x mean accuracy over {AFR_layer > threshold}; NaN if empty
  int64_t pacc_n = 0;
  double accuracy = 0;                     // 100 x mean accuracy over every record (dropped too)
  std::vector<double> image_share_per_layer;  // pooled over records and queries
  double mean_image_ratio = 0, global_image_ratio = 0;
};

// P-Acc layer default: round(14 / 32 * L) (LLaVA-1.5's layer 14 of 32, scaled by depth).
int default_pacc_layer(int num_layers);

// Aggregates samples; threshold nullopt = this run's own mean AFR at the layer.
AfrSummary summarize_afr(const std::vector<AfrSample>& samples, int num_layers, int pacc_layer,
                         std::optional<double> pacc_threshold);

struct AfrRunOptions {
  std::string records_path;
  std::string images_dir;
  std::string out_dir;  // answers/afr.jsonl (resumable), afr_samples.jsonl, results.json
  BboxFormat bbox_format = BboxFormat::Xyxy;
  image::ClipProcessorConfig processor;  // the model's (with pad_to_square as loaded)
  std::optional<BoxMapping> mapping;     // nullopt: pad if processor.pad_to_square, else crop
  int64_t limit = 0;
  int batch_size = 8;
  int max_new_tokens = 20;  // §7.2 decision
  std::string prompt_template;  // one {question}, one <image>
  std::string answer_suffix;    // appended to the question (spec §7.2: "\nAnswer the question using a single word or phrase.")
  int pacc_layer = -1;          // -1 = default_pacc_layer
  std::optional<double> pacc_threshold = 14.0;  // nullopt = own mean
  int keep_maps = 16;           // records whose P-Acc-layer map goes into afr_samples.jsonl
  std::string model_id;
  nlohmann::json model_settings = nlohmann::json::object();
  bool progress = true;
};

struct AfrRunResult {
  std::string answers_path;
  std::vector<AfrSample> samples;
  AfrSummary summary;
  nlohmann::json results;  // OUT/results.json (written)
  int64_t generated = 0;
};

// The records a run asks (limit applied); with images_dir set, every image is checked to exist.
std::vector<AfrRecord> afr_select_records(const std::string& path, BboxFormat format, int64_t limit,
                                          const std::string& images_dir);

// One record's attention analysis (no generation): prompt = the filled template, answer = the text to
// teacher-force after it.
AfrSample analyze_attention(models::VisionLanguageModel& model, const models::PreparedImage& image,
                            const std::string& prompt, const std::string& answer, const GridCells& cells,
                            bool keep_map, int pacc_layer);

AfrRunResult run_afr(models::VisionLanguageModel& model, const AfrRunOptions& opts);

// Accuracy only, from an answers file ({"question_id", "text"} per line) against the records: the
// results document has "accuracy" and "n", and null attention fields.
nlohmann::json score_afr_answers(const std::vector<AfrRecord>& records, const std::string& answers_path,
                                 std::vector<std::string>& warnings);

nlohmann::json afr_summary_json(const AfrSummary& s);
std::string format_afr_table(const AfrSummary& s);

}  // namespace p2dpo::eval
