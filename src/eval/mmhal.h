#pragma once
// MMHal-Bench (Sun et al., LLaVA-RLHF; evaluation spec §6): the model answers 96 open questions,
// an OpenAI-compatible judge rates each answer 0-6 against the human answer and the image contents
// with the official template, and the ratings are summarised as summarize_gpt_mmhal.py does.
//
// A run writes under OUT:
//   answers/mmhal.jsonl (+ .run.json)  the model's answers, resumable (eval/bench_runner.h)
//   response.json                      the official response format (the question file's records
//                                      with model_answer filled), as eval_gpt_mmhal.py --response reads
//   judge/mmhal_judge.jsonl (+ .run.json)  one record per judge call, appended and flushed:
//                                      index, prompt sha256, judge model, reply, rating, raw response;
//                                      a rerun skips items whose record has the same prompt and no error
//   evaluation.json                    the raw responses in question order (eval_gpt_mmhal.py
//                                      --evaluation format; summarize_gpt_mmhal.py reads it), once all
//                                      items are judged
//   results.json                       "benchmark": "mmhal", scores, protocol, judge settings
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval/bench_runner.h"
#include "eval/judge_client.h"
#include "models/vlm.h"

namespace p2dpo::eval {

// sha256 of LLaVA-RLHF@830a083 Eval/eval_gpt_mmhal.py's `template` string (spec §0, Appendix A).
inline constexpr const char* kMmhalTemplateSha256 =
    "2c73d8c50f1740d000fae62cfeed103c2f7a5bcfa904b27e6e09900e7ce600cc";
// The official file's question types in the order its records cycle through them (i % 8).
const std::vector<std::string>& mmhal_question_types();

struct MmhalQuestion {
  size_t index = 0;  // position in the file: the resume key and the official type slot (index % 8)
  std::string question_type, question_topic, image_id, image_src, question, gt_answer;
  std::vector<std::string> image_content;
  std::string model_answer;  // as in the file ("" in response_template.json)
  nlohmann::json raw;        // the whole record
};

// The official response_template.json (a JSON array of records with question_type, image_id,
// image_src, image_content [str], question, gt_answer; model_answer and question_topic optional).
// InputError naming the file and record for a missing or mistyped field.
std::vector<MmhalQuestion> read_mmhal_questions(const std::string& path);

// The image of a question under images_dir: the record's "image_path" or "image" field if it has one
// (relative to images_dir unless absolute), else the file name of image_src (the HF dataset's local
// copies keep it), else image_id + .jpg/.jpeg/.png. InputError listing what was tried.
std::string mmhal_image_path(const MmhalQuestion& q, const std::string& images_dir);

// Reads the judge template (the user's copy of the official string, UTF-8, no trailing newline
// added) and compares its sha256 with `expected_sha256`. A mismatch is refused (InputError naming
// the file, both hashes and --allow-template-change) unless allow_change, then it is a warning.
// The template must hold exactly four "{}" fields (Python str.format; "{{" and "}}" are braces).
std::string read_judge_template(const std::string& path, const std::string& expected_sha256, bool allow_change,
                                std::vector<std::string>& warnings);

// Python's str.format with positional fields only: "{}" (automatic) or "{N}" (manual, not mixed),
// "{{" -> "{", "}}" -> "}". Anything else (format specs, names, a lone brace, too few arguments)
// throws InputError(where).
std::string python_format(const std::string& fmt, const std::vector<std::string>& args, const std::string& where);

// template.format(', '.join(image_content), question, gt_answer, model_answer) (eval_gpt_mmhal.py).
std::string mmhal_judge_prompt(const std::string& judge_template, const MmhalQuestion& q, const std::string& answer);

// summarize_gpt_mmhal.py: the s in 0..6 with "rating: s" in reply.lower(); the score is that s when
// exactly one is found, else 0 (none or several). lower() is ASCII-only here; Python lowercases
// other scripts too, which never changes whether "rating: s" occurs.
struct MmhalRating {
  int score = 0;
  std::vector<int> found;
};
MmhalRating mmhal_rating(const std::string& reply);

struct MmhalTypeScore {
  std::string type;
  int64_t n = 0;
  double average = 0.0;
};

struct MmhalScore {
  int64_t n = 0;
  double average = 0.0;             // sum(score) / n
  double hallucination_rate = 0.0;  // #(score < 3) / n
  std::vector<MmhalTypeScore> per_type;  // official type order first, then other types by name
  int64_t unrated = 0;       // replies with no or several ratings (scored 0, as the official parser)
  int64_t judge_errors = 0;  // judge calls that failed for good (scored 0, recorded with the error)
  std::vector<int> scores;   // per question, file order
  std::vector<std::string> warnings;
};

// Scores per question (file order; types from the questions). The official summarizer asserts 96
// questions and groups by index % 8; grouping by question_type is the same on the official file
// (its records cycle through the types), and also works on subsets (a warning says n != 96).
MmhalScore score_mmhal(const std::vector<MmhalQuestion>& questions, const std::vector<int>& scores);

// The three lines summarize_gpt_mmhal.py prints, byte for byte ("Average score: {:.2f}", ...,
// per-type str(round(x, 2)) joined by ","), in official type order. Empty when n is not a multiple
// of 8 of the official layout (the script would assert).
std::vector<std::string> mmhal_official_lines(const MmhalScore& s);

struct MmhalRunOptions {
  std::string questions_path;  // response_template.json
  std::string images_dir;
  std::string out_dir;
  std::string judge_template_path;
  std::string template_sha256 = kMmhalTemplateSha256;
  bool allow_template_change = false;
  bool judge = true;            // false: answers only (judge later with judge_mmhal_answers)
  int64_t limit = 0;            // > 0: the first N questions
  int batch_size = 8;
  int max_new_tokens = 1024;    // model_vqa_mmhal.py
  std::string conv_mode = "llava_v1";
  std::string prompt_template;  // empty = bench_conv_template(conv_mode); question as is, no suffix
  std::string model_id;
  nlohmann::json model_settings = nlohmann::json::object();
  DecodeOptions decode;
  JudgeConfig judge_config;
  bool progress = true;
};

struct MmhalRunResult {
  std::string answers_path, judge_path;
  int64_t generated = 0;  // answers generated by this call
  int64_t judged = 0;     // judge calls made by this call
  MmhalScore score;
  nlohmann::json results;  // what OUT/results.json holds (empty when the judge did not run)
};

// Generates the missing answers, then (opts.judge) judges and scores. The template and the images
// are checked before the first forward pass, the judge settings before the first call.
MmhalRunResult run_mmhal(models::VisionLanguageModel& model, const MmhalRunOptions& opts);

// Judges answers made elsewhere: `response_file` in the official response format (the question
// records with model_answer filled, e.g. model_vqa_mmhal.py's output). Uses opts except the model
// and generation fields; questions_path may be empty (the response file is the question file).
MmhalRunResult judge_mmhal_answers(const std::string& response_file, const MmhalRunOptions& opts);

// Scores an existing evaluation offline: the official evaluation JSON (array of chat-completion
// responses, question order) or p2dpo's judge JSONL (by "index"), against the question file.
MmhalScore score_mmhal_evaluation(const std::string& evaluation_file, const std::vector<MmhalQuestion>& questions);

nlohmann::json mmhal_results_document(const MmhalScore& s, const nlohmann::json& protocol);
std::string format_mmhal_table(const MmhalScore& s);

}  // namespace p2dpo::eval
