#pragma once
// Runs a VisionLanguageModel on POPE question files (evaluation spec §2.2), optionally under
// Gaussian noise (§3), writing one resumable answers file per (question file, noise level), then
// scores them (eval/pope.h).
//
// Answers files: OUT/answers/<question-file stem>.<level>.jsonl, one LLaVA-style record per
// question ({"question_id", "prompt", "text", "model_id", "metadata"} plus p2dpo's "image",
// "split", "label", "size", "sigma", "noise"), appended and flushed per question. A rerun skips
// the questions already answered (a torn last line is cut first). Questions are cut into fixed
// batches of the full list, and a batch with any answer missing is rerun whole, so a resumed run
// writes the same bytes as an uninterrupted one. Beside each answers file, <name>.run.json records
// the protocol; resuming under a different protocol is refused.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval/bench_runner.h"
#include "eval/pope.h"
#include "models/vlm.h"

namespace p2dpo::eval {

inline constexpr const char* kPopeAnswerSuffix = "\nAnswer the question using a single word or phrase.";

// Conversation templates with one "{question}" and one "<image>" (§1.1):
//   vicuna_v1 (default; LLaVA's pope.sh), llava_v1 (P2-DPO's scripts), hf ("USER: <image>\n{question}
//   ASSISTANT:", the llava-hf model cards' prompt), and vlmevalkit: the benchmark runners' table
//   (eval/bench_runner.h bench_conv_template). Unknown mode -> InputError("--conv-mode").
std::string pope_conv_template(const std::string& conv_mode);

// template with {question} replaced by question_text + suffix (the suffix is not appended twice
// when the text already ends with it, as in LLaVA's llava_pope_test.jsonl).
std::string pope_question_text(const std::string& question_text, const std::string& answer_suffix);
std::string pope_fill_template(const std::string& prompt_template, const std::string& question);

// InputError(flag) unless the template holds exactly one "{question}" and one "<image>".
void check_pope_template(const std::string& prompt_template, const std::string& flag);

enum class NoiseMode {
  Pixel,   // §3.1: on the decoded image at full resolution, clipped and re-quantised (default)
  Tensor,  // §3.2 (variant B): x_norm + sigma * eps on the preprocessed tensor, no clipping
};
NoiseMode parse_noise_mode(const std::string& s, const std::string& flag);
const char* noise_mode_name(NoiseMode m);

struct PopeRunOptions {
  std::vector<std::string> question_files;
  std::vector<std::string> label_files;  // for question files without labels (LLaVA's)
  std::string images_dir;                // joined with each question's "image"
  std::string out_dir;
  std::vector<double> sigmas = {0.0};
  NoiseMode noise_mode = NoiseMode::Pixel;
  uint64_t seed = 0;            // global noise seed (§3.1 item 5)
  int64_t limit = 0;            // > 0: the first `limit` questions of each split of each file
  int batch_size = 8;
  int max_new_tokens = 128;     // §1.3; answers stop at EOS long before
  std::string conv_mode = "vicuna_v1";
  std::string prompt_template;  // empty = pope_conv_template(conv_mode)
  std::string answer_suffix = kPopeAnswerSuffix;
  std::string model_id;         // recorded in answers and results
  nlohmann::json model_settings = nlohmann::json::object();  // recorded (e.g. dtype, pad_to_square)
  DecodeOptions decode;         // greedy (official) or VCD (eval/bench_runner.h); recorded
  bool progress = true;         // progress lines on stderr
};

struct PopeRunResult {
  std::vector<std::string> answer_files;
  std::vector<PopeScore> scores;
  std::vector<std::string> warnings;
  nlohmann::json results;  // what OUT/results.json holds
};

// Questions of one file with labels attached and the limit applied; images are checked to exist
// (InputError naming the missing image, the question and its file).
std::vector<PopeQuestion> load_pope_run_questions(const std::string& question_file, const PopeRunOptions& opts);

// Path of the answers file for a question file at a noise level.
std::string pope_answers_path(const PopeRunOptions& opts, const std::string& question_file, double sigma);

PopeRunResult run_pope(models::VisionLanguageModel& model, const PopeRunOptions& opts);

// The results document both entry points write: protocol (may be empty), per-level scores, warnings.
nlohmann::json pope_results_document(const std::vector<PopeScore>& scores, const nlohmann::json& protocol,
                                     const std::vector<std::string>& warnings);

}  // namespace p2dpo::eval
