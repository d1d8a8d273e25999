#pragma once
// HallusionBench (Guan et al., CVPR 2024): the official question file, the rule-based yes/no
// extraction, correctness codes and the official aAcc / fAcc / qAcc aggregation (evaluation spec §4,
// tianyi-lab/HallusionBench utils.py), under two protocols:
//   official    every answered row (the full benchmark: 1129 questions, 178 of them without an image);
//   vlmevalkit  the answered rows that have an image (the full benchmark: 951), as VLMEvalKit and
//               lmms-eval score it; the denominators of P2-DPO Table 2's LLaVA rows.
// Correctness codes ("1" correct, "0" incorrect, "2" unclear) come from the rule-based extraction
// (spec §4.3 "hybrid offline mode": extracted Yes/No vs gt_answer, Unknown -> "2"), or from a judge
// field already in the answers (e.g. the official script's "gpt4v_output_gpt_check").
//
// Differences from Python, documented: lower() is ASCII-only (non-ASCII letters keep their case;
// they never spell "yes"/"no"); Python's str.split() whitespace set is used.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval/bench_runner.h"  // DecodeOptions

namespace p2dpo::models {
class VisionLanguageModel;
}

namespace p2dpo::eval {

// One row of HallusionBench.json; every id is a string, as in the file.
struct HbQuestion {
  std::string category;      // "VD" | "VS"
  std::string subcategory;   // illusion, math, video, figure, ocr, chart, table, map
  std::string visual_input;  // "0" no image, "1" original, "2" edited
  std::string set_id, figure_id, question_id;
  std::string sample_note, question, gt_answer_details;
  std::string gt_answer;               // "1" yes, "0" no
  std::optional<std::string> filename;  // "./VD/illusion/0_0.png"; null without an image
  nlohmann::json raw;                   // the row as read (answers files repeat it)
  size_t index = 0;                     // 1-based element index, for messages
};

// category_subcategory_setid_figureid_questionid: the row's unique key (official get_eval_all).
std::string hb_row_key(const HbQuestion& q);
// category_subcategory_setid_questionid (qAcc groups) and category_subcategory_setid_figureid (fAcc).
std::string hb_question_key(const HbQuestion& q);
std::string hb_figure_key(const HbQuestion& q);
bool hb_has_image(const HbQuestion& q);  // visual_input != "0"
// The image file relative to the images directory: `filename` without its leading "./", else
// {category}/{subcategory}/{set_id}_{figure_id}.png (the zip's layout).
std::string hb_image_relpath(const HbQuestion& q);

// Reads HallusionBench.json (a JSON array). Missing or non-string fields, gt_answer other than
// "0"/"1", visual_input other than "0"/"1"/"2" and duplicate keys throw InputError naming the file,
// the element and the field.
std::vector<HbQuestion> read_hallusionbench(const std::string& path);

// VLMEvalKit's process_punctuation (spec §4.3). `old_period_rule` picks the period regex of older
// VLMEvalKit, (?!<=\d)(\.)(?!\d) (= every '.' not followed by a digit); the default is the current
// (?<!\d)\.(?!\d). At most 32 periods are removed in both (re.UNICODE passed as `count`).
std::string hb_process_punctuation(const std::string& lowered, bool old_period_rule = false);

enum class YesNo { Yes, No, Unknown };
const char* yes_no_name(YesNo v);  // "Yes", "No", "Unknown"
// VLMEvalKit YOrN_Extraction: lower, process_punctuation, split on whitespace runs; "Yes" when the
// words hold "yes" and not "no", "No" for the reverse, else "Unknown".
YesNo yorn_extract(const std::string& prediction, bool old_period_rule = false);

// One answer: the row's key fields, the prediction and optional extras.
struct HbAnswer {
  std::string category, subcategory, set_id, figure_id, question_id;
  std::string model_prediction;
  std::optional<std::string> question;         // checked against the benchmark (after strip) when present
  std::optional<std::string> gt_answer;        // must agree with the benchmark when present
  std::optional<std::string> judge_code;       // the correctness field, when scoring judge output
  std::string file;
  size_t line = 0;  // JSONL line or JSON array element (1-based)
};
std::string hb_answer_key(const HbAnswer& a);

// Reads answers: a JSON array (the official HallusionBench_result.json format) or JSONL (p2dpo's
// resumable answers file). Required per row: category, subcategory, set_id, figure_id, question_id
// (strings or integers), model_prediction (string; `prediction_field` renames it). With
// `judge_field` set, that field ("0"/"1"/"2") is required too. InputError names file, row, field.
std::vector<HbAnswer> read_hallusionbench_answers(const std::string& path,
                                                  const std::string& prediction_field = "model_prediction",
                                                  const std::string& judge_field = "");

enum class HbProtocol { Official, VlmEvalKit };
HbProtocol parse_hb_protocol(const std::string& s, const std::string& flag);
const char* hb_protocol_name(HbProtocol p);

struct HbAccuracy {
  int64_t correct = 0, total = 0;
  double percent() const;  // 100 * correct / total; NaN when total == 0
};

struct HbMetrics {
  HbProtocol protocol = HbProtocol::VlmEvalKit;
  int64_t questions = 0;  // rows scored
  HbAccuracy aacc;        // per question
  HbAccuracy facc;        // per figure: every question on the figure correct
  HbAccuracy qacc;        // per question group: the question correct on every figure
  HbAccuracy easy_qacc;   // qAcc over rows with figure_id "0" (official utils.get_eval_pair_easy)
  HbAccuracy hard_qacc;   // qAcc over rows with figure_id != "0"
  std::map<std::string, HbAccuracy> aacc_by_category;  // "VD", "VS"
  int64_t extracted_yes = 0, extracted_no = 0, extracted_unknown = 0;  // rule-based mode only
};

struct HbScoreOptions {
  bool old_period_rule = false;
  bool use_judge_codes = false;  // codes from HbAnswer::judge_code instead of the rule-based extraction
};

struct HbRowResult {
  const HbQuestion* question = nullptr;
  const HbAnswer* answer = nullptr;
  YesNo extracted = YesNo::Unknown;
  char code = '2';   // '1' correct, '0' incorrect, '2' unclear
  bool correct = false;
};

struct HbScore {
  HbMetrics official, vlmevalkit;
  std::vector<HbRowResult> rows;  // benchmark order
  int64_t unanswered = 0;         // benchmark rows without an answer (all protocols)
  int64_t unanswered_with_image = 0;
  std::vector<std::string> warnings;
};

// Correct per official assign_correctness: code '1', or code '2' on a VS row with figure_id "0"
// (no figure: "uncertain" counts as correct).
bool hb_is_correct(const HbQuestion& q, char code);

// Pairs answers with benchmark rows by key and scores both protocols over the answered rows. An
// answer whose key is not in the benchmark, a row answered twice, or a gt/question conflict throws
// InputError naming the answers file and row. Unanswered rows are a warning.
HbScore score_hallusionbench(const std::vector<HbQuestion>& benchmark, const std::vector<HbAnswer>& answers,
                             const HbScoreOptions& opts = {});

// {"protocol", "questions", "aAcc", "fAcc", "qAcc", "easy_qAcc", "hard_qAcc", each {"correct",
// "total", "percent"} (percent null when undefined), "aAcc_by_category", "extracted"}.
nlohmann::json hb_metrics_json(const HbMetrics& m);
// Both protocols, the headline one first, plus counts, mode notes and warnings.
nlohmann::json hb_results_document(const HbScore& score, HbProtocol headline, const HbScoreOptions& opts,
                                   const nlohmann::json& protocol);
std::string format_hb_table(const HbScore& score, HbProtocol headline);

// `p2dpo eval hallusionbench` with a model (spec §4.2): each question verbatim in the conversation
// template, rows with visual_input "0" without an image, greedy. Answers go to
// OUT/answers/hallusionbench.jsonl (resumable, eval/bench_runner.h; each record is the benchmark row
// plus "model_prediction", "prompt", "model_id"); OUT/HallusionBench_result.json holds the answered
// rows in the official result format (benchmark order) for the official script; OUT/results.json
// the scores of both protocols.
struct HbRunOptions {
  std::string benchmark_path;  // HallusionBench.json
  std::string images_dir;      // holds VD/..., VS/... (hallusion_bench.zip unpacked)
  std::string out_dir;
  HbProtocol protocol = HbProtocol::VlmEvalKit;  // which rows run: vlmevalkit = image rows only
  int64_t limit = 0;                             // > 0: the first N selected rows
  int batch_size = 8;
  int max_new_tokens = 128;  // lmms-eval's limit; the official repo sets none
  std::string conv_mode = "llava_v1";
  std::string prompt_template;  // empty = bench_conv_template(conv_mode)
  std::string model_id;
  nlohmann::json model_settings = nlohmann::json::object();
  HbScoreOptions score;
  DecodeOptions decode;  // greedy (official) or VCD; recorded in the run record
  bool progress = true;
};

struct HbRunResult {
  std::string answers_path;
  HbScore score;             // over the selected rows
  nlohmann::json results;    // what OUT/results.json holds
  int64_t generated = 0;     // answers generated by this call (0 when everything was resumed)
};

// The rows a run asks, in benchmark order (protocol and limit applied); with images_dir set, every
// selected image is checked to exist (InputError naming the image, the row and --images).
std::vector<HbQuestion> hb_select_rows(const std::vector<HbQuestion>& benchmark, HbProtocol protocol, int64_t limit,
                                       const std::string& images_dir);

HbRunResult run_hallusionbench(models::VisionLanguageModel& model, const HbRunOptions& opts);

}  // namespace p2dpo::eval
