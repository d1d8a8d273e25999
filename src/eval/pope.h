#pragma once
// POPE (Li et al., EMNLP 2023) scoring, torch-free: question and answers files, the official answer
// parsing and metrics (evaluation spec §2.3-2.4), per split, averaged, by object size and by noise
// level. The model run that produces answers files lives in eval/pope_runner.h.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace p2dpo::eval {

// §2.3, transcribed from POPE's evaluate.py / LLaVA's eval_pope.py: keep the text before the first
// '.', delete every ',', split on single U+0020 spaces (empty tokens kept, '\n' does not split), and
// answer "no" iff a token is exactly "No", "not" or "no". Everything else (also "") is "yes".
bool pope_answer_is_yes(const std::string& answer);

// Confusion counts with yes as the positive class.
struct PopeCounts {
  int64_t tp = 0, fp = 0, tn = 0, fn = 0;
  int64_t n() const { return tp + fp + tn + fn; }
  void add(bool label_yes, bool pred_yes);
};

// §2.4. A metric whose denominator is 0 is NaN (the official code raises ZeroDivisionError).
struct PopeMetrics {
  PopeCounts counts;
  double accuracy = 0, precision = 0, recall = 0, f1 = 0, yes_ratio = 0;
};
PopeMetrics pope_metrics(const PopeCounts& counts);

struct PopeQuestion {
  int64_t question_id = 0;
  std::string image;        // as written: relative to the images directory
  std::string text;         // as written (LLaVA's file already carries the answer suffix)
  std::string split;        // "random" / "popular" / "adversarial", or the file stem
  std::optional<bool> label_yes;
  std::string object_size;  // "small" / "large" for the world's positives, "" when not given
  std::string file;         // where it was read, for messages
  size_t line = 0;          // 1-based line (JSONL) or element index + 1 (JSON array)
};

// The split named by a file: the one of "adversarial", "popular", "random" its stem contains
// (coco_pope_random.json, world_pope_adversarial.json), else the whole stem.
std::string pope_split_from_filename(const std::string& path);

// Reads a POPE question file, JSONL (one object per line) or a JSON array:
//   official label files   {"question_id", "image", "text", "label": "yes"|"no"}
//   LLaVA's question file  {"question_id", "image", "text", "category"}   (labels via attach_pope_labels)
//   the world's files      {..., "label", "objects": size of the asked object}
// Split: the "category" or "split" field when present, else pope_split_from_filename(path).
// Object size, read from the first of: "size": "small"; "objects": "small"; "objects": {"size": ..};
// "objects": ["small", ..]; "objects": [{"size": ..}, ..] (the first element). Duplicate
// (split, question_id) pairs, missing fields and labels other than "yes"/"no" throw InputError
// naming the file and line.
std::vector<PopeQuestion> read_pope_questions(const std::string& path);

// Fills labels from official label files (coco_pope_<split>.json): the k-th question of a split (in
// question-file order) takes the label of the k-th line of that split's label file, as LLaVA's
// eval_pope.py pairs them. Checks that counts, images and question texts (label text is a prefix of
// the question text) agree; throws InputError naming both files otherwise. A label already present
// must agree too.
void attach_pope_labels(std::vector<PopeQuestion>& questions, const std::vector<std::string>& label_files);

// One answers-file record: LLaVA's {"question_id", "prompt", "text", "model_id", ...}, optionally
// with the fields p2dpo's runner adds so the file scores on its own: "split", "label", "size",
// "sigma", "noise".
struct PopeAnswer {
  int64_t question_id = 0;
  std::string text;
  std::optional<std::string> split;
  std::optional<bool> label_yes;
  std::string object_size;
  double sigma = 0.0;
  std::string noise = "none";  // "none", "pixel" (§3.1) or "tensor" (§3.2)
  std::string file;
  size_t line = 0;
};

// Reads an answers JSONL file; a malformed line or field throws InputError naming file and line.
std::vector<PopeAnswer> read_pope_answers(const std::string& path);

struct PopeSplitScore {
  std::string split;
  PopeMetrics metrics;
  std::map<std::string, PopeCounts> by_size;  // positives only: recall = tp / (tp + fn)
  int64_t unanswered = 0;                     // questions of the split without an answer
  // Whether the official positional pairing (answers in file order against the split's questions
  // in order) pairs exactly as question_id does; unset when no question files were given.
  std::optional<bool> positional_pairing_agrees;
};

struct PopeScore {
  std::string noise = "none";
  double sigma = 0.0;
  std::vector<PopeSplitScore> splits;  // random, popular, adversarial, then others by name
  PopeMetrics average;  // unweighted mean of each metric over the splits (Avg F1 of P2-DPO Table 2)
  std::vector<std::string> answer_files;
};

// Pairs answers with questions by (split, question_id) — an answer without a split by question_id
// alone, which must then be unique across the question files — and scores every (noise, sigma)
// group. With no questions, every answer must carry "split" and "label". Throws InputError for an
// answer whose question is unknown, a question answered twice in a group, or a label conflict.
// Recoverable oddities (unanswered questions, orders that the official code would mis-pair, NaN
// metrics) are appended to `warnings`.
std::vector<PopeScore> score_pope(const std::vector<PopeAnswer>& answers,
                                  const std::vector<PopeQuestion>& questions,
                                  std::vector<std::string>& warnings);

nlohmann::json pope_metrics_json(const PopeMetrics& m);  // NaN -> null
nlohmann::json pope_scores_json(const std::vector<PopeScore>& scores);

// A fixed-width table per noise level (values ×100) and, for several levels, average F1 by sigma.
std::string format_pope_table(const std::vector<PopeScore>& scores);

}  // namespace p2dpo::eval
