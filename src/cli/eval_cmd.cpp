// p2dpo eval <benchmark>: one subcommand per benchmark under the `eval` group. A new benchmark adds
// a register_eval_<name>(CLI::App& eval) below (or in its own file, declared here) and one line in
// register_eval.
#include <fmt/format.h>

#include <filesystem>
#include <iostream>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/decode_flags.h"
#include "eval/bench_runner.h"
#include "eval/ips.h"
#include "eval/pope.h"
#include "eval/pope_runner.h"
#include "io/errors.h"
#include "io/json_io.h"

namespace p2dpo::cli {

namespace fs = std::filesystem;

namespace {

void print_outcome(const nlohmann::json& doc, const std::vector<eval::PopeScore>& scores,
                   const std::vector<std::string>& warnings, bool as_json) {
  for (const auto& w : warnings) std::cerr << "warning: " << w << "\n";
  if (as_json) {
    std::cout << doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
  } else {
    std::cout << eval::format_pope_table(scores) << std::flush;
  }
}

void register_eval_pope(CLI::App& eval) {
  struct Opts {
    ModelFlags model;
    std::vector<std::string> answers, questions, labels;
    std::string images, out, noise_mode = "pixel", conv_mode = "vicuna_v1", prompt_template;
    std::string answer_suffix = eval::kPopeAnswerSuffix;
    bool no_answer_suffix = false, json = false, quiet = false;
    std::vector<double> sigmas;
    int64_t limit = 0;
    int batch_size = 8, max_new_tokens = 128;
    uint64_t seed = 0;
    eval::DecodeOptions decode;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = eval.add_subcommand(
      "pope",
      "POPE yes/no object hallucination (official parsing and metrics). Run a model: --model --questions --images; "
      "score existing answers: --answers [--questions]");
  o->model.add(cmd);
  cmd->get_option("--model")->required(false)->description(
      "Hugging Face model directory to run (omit with --answers)");
  auto* answers = cmd->add_option("--answers", o->answers,
                                  "score these answers JSONL files instead of running a model (LLaVA format; "
                                  "p2dpo's carry split/label/sigma and need no --questions)");
  cmd->add_option("--questions", o->questions,
                  "POPE question files (official coco_pope_*.json, LLaVA's llava_pope_test.jsonl, the world's "
                  "eval/pope/*.json)");
  cmd->add_option("--labels", o->labels,
                  "label files (coco_pope_<split>.json) for question files without labels, paired by position "
                  "within each split as LLaVA's eval_pope.py does");
  cmd->add_option("--images", o->images, "directory the questions' \"image\" fields are relative to");
  cmd->add_option("--out", o->out,
                  "output directory: answers/*.jsonl (resumable) and results.json; run default: pope-eval");
  cmd->add_option("--noise-sigma", o->sigmas, "Gaussian noise sigma(s) on the [0,1] pixel scale; 0 = clean")
      ->expected(1, -1);
  cmd->add_option("--noise-mode", o->noise_mode,
                  "pixel: on the decoded image, clipped and re-quantised (spec 3.1); tensor: on the normalised "
                  "input (3.2)")
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "global noise seed (per image: fnv1a64(image) ^ seed)")->capture_default_str();
  cmd->add_option("--limit", o->limit, "only the first N questions of each split of each file")->capture_default_str();
  cmd->add_option("--batch-size", o->batch_size)->capture_default_str();
  cmd->add_option("--max-new-tokens", o->max_new_tokens, "greedy decoding limit (LLaVA: 128)")->capture_default_str();
  cmd->add_option("--conv-mode", o->conv_mode,
                  "vicuna_v1 (LLaVA's pope.sh), llava_v1 (P2-DPO's scripts), hf (\"USER: <image>\\n{question} "
                  "ASSISTANT:\")")
      ->capture_default_str();
  cmd->add_option("--prompt-template", o->prompt_template,
                  "full prompt with one {question} and one <image> (overrides --conv-mode; \\n = newline), e.g. "
                  "\"USER: {question}\\n<image> ASSISTANT:\"");
  cmd->add_option("--answer-suffix", o->answer_suffix,
                  "appended to each question unless already there (\\n = newline)");
  cmd->add_flag("--no-answer-suffix", o->no_answer_suffix, "ask the bare question (P2-DPO's pope_llava_3.py)");
  add_decode_flags(cmd, o->decode);
  cmd->add_flag("--json", o->json, "print the results JSON instead of the table");
  cmd->add_flag("--quiet", o->quiet, "no progress lines");
  answers->excludes(cmd->get_option("--model"));

  cmd->callback([o]() {
    if (!o->answers.empty()) {
      // Score existing answers.
      std::vector<eval::PopeAnswer> answers;
      for (const auto& f : o->answers) {
        auto part = eval::read_pope_answers(f);
        answers.insert(answers.end(), part.begin(), part.end());
      }
      std::vector<eval::PopeQuestion> questions;
      for (const auto& f : o->questions) {
        auto part = eval::read_pope_questions(f);
        questions.insert(questions.end(), part.begin(), part.end());
      }
      if (!o->labels.empty()) {
        if (questions.empty()) throw InputError("--labels", "label files pair with question files: give --questions");
        eval::attach_pope_labels(questions, o->labels);
      }
      std::vector<std::string> warnings;
      auto scores = eval::score_pope(answers, questions, warnings);
      nlohmann::json protocol = {{"mode", "score answers"},
                                 {"answer_files", o->answers},
                                 {"question_files", o->questions},
                                 {"label_files", o->labels}};
      auto doc = eval::pope_results_document(scores, protocol, warnings);
      if (!o->out.empty()) io::write_json_atomic((fs::path(o->out) / "results.json").string(), doc);
      print_outcome(doc, scores, warnings, o->json);
      return;
    }
    if (o->model.model_dir.empty()) {
      throw InputError("--model", "give --model (with --questions and --images) to run, or --answers to score");
    }
    if (o->questions.empty()) throw InputError("--questions", "required with --model");
    if (o->images.empty()) throw InputError("--images", "required with --model");
    eval::PopeRunOptions run;
    run.question_files = o->questions;
    run.label_files = o->labels;
    run.images_dir = o->images;
    run.out_dir = o->out.empty() ? "pope-eval" : o->out;
    run.sigmas = o->sigmas.empty() ? std::vector<double>{0.0} : o->sigmas;
    run.noise_mode = eval::parse_noise_mode(o->noise_mode, "--noise-mode");
    run.seed = o->seed;
    run.limit = o->limit;
    run.batch_size = o->batch_size;
    run.max_new_tokens = o->max_new_tokens;
    run.conv_mode = o->conv_mode;
    run.prompt_template = unescape(o->prompt_template);
    run.answer_suffix = o->no_answer_suffix ? "" : unescape(o->answer_suffix);
    run.model_id = eval::model_id_from_dir(o->model.model_dir);
    run.model_settings = {{"dtype", o->model.dtype}, {"pad_to_square", o->model.pad_to_square},
                          {"adapter", o->model.adapter_dir}};
    run.decode = o->decode;
    run.progress = !o->quiet;
    // Validate the cheap things before the model loads.
    eval::check_decode_options(run.decode);
    if (run.prompt_template.empty()) {
      eval::check_pope_template(eval::pope_conv_template(run.conv_mode), "--conv-mode");
    } else {
      eval::check_pope_template(run.prompt_template, "--prompt-template");
    }
    auto model = o->model.load();
    auto result = eval::run_pope(*model, run);
    std::cerr << "answers: " << (fs::path(run.out_dir) / "answers").string() << "/, results: "
              << (fs::path(run.out_dir) / "results.json").string() << "\n";
    print_outcome(result.results, result.scores, result.warnings, o->json);
  });
}

void register_eval_ips(CLI::App& eval) {
  struct Opts {
    ModelFlags model;
    eval::IpsOptions ips;
    bool all = false, json = false, quiet = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = eval.add_subcommand(
      "ips", "Implicit preference strength of a pair set (Table 3): measured with --model [--adapter], or as recorded by `p2dpo pairs`");
  o->model.add(cmd);
  cmd->get_option("--model")->required(false)->description("model to measure with (omit: the IPS recorded with the pairs)");
  cmd->add_option("--pairs", o->ips.pairs_path, "a `p2dpo pairs` folder or JSONL, or external pairs (RLHF-V, V-DPO, {image, question, chosen, rejected})")->required();
  cmd->add_option("--images", o->ips.images_dir, "folder the pairs' image paths are relative to (default: the pairs run's own)");
  cmd->add_option("--prompt-template", o->ips.prompt_template, "prompt for external pairs, with {question} and <image> (\\n = newline)")->capture_default_str();
  cmd->add_flag("--all", o->all, "every record of pairs.jsonl, not only the filter's kept ones");
  cmd->add_option("--limit", o->ips.limit, "only the first N pairs");
  cmd->add_option("--out", o->ips.out_dir, "write ips.jsonl (per pair) and results.json here");
  cmd->add_flag("--json", o->json, "print the results JSON");
  cmd->add_flag("--quiet", o->quiet, "no progress line");
  cmd->callback([o]() {
    o->ips.kept_only = !o->all;
    o->ips.progress = !o->quiet;
    o->ips.prompt_template = unescape(o->ips.prompt_template);
    nlohmann::json doc;
    if (o->model.model_dir.empty()) {
      if (!o->model.adapter_dir.empty()) throw InputError("--adapter", "needs --model");
      doc = eval::recorded_ips(o->ips);
    } else {
      auto model = o->model.load();
      doc = eval::measure_ips(*model, o->ips);
    }
    if (o->json) {
      std::cout << doc.dump(2) << std::endl;
      return;
    }
    std::cout << fmt::format("IPS of {} ({}, {} pairs)\n{:<10} {:>9} {:>9} {:>9}\n", o->ips.pairs_path,
                             doc["source"].get<std::string>(), doc["n_pairs"].get<int64_t>(), "pairs", "mean", "std", "neg %");
    for (const char* kind : {"focus", "robust", "external"}) {
      if (!doc.contains(kind) || doc[kind].value("n", 0) == 0) continue;
      const auto& t = doc[kind];
      std::cout << fmt::format("{:<10} {:>9.2f} {:>9.2f} {:>9.1f}\n", kind, t["mean"].get<double>(), t["std"].get<double>(),
                               100.0 * t["share_negative"].get<double>());
    }
  });
}

}  // namespace

void register_eval_benchmarks(CLI::App& eval);  // src/cli/eval_benchmarks_cmd.cpp: hallusionbench, amber
void register_eval_mmhal(CLI::App& eval);       // src/cli/eval_mmhal_cmd.cpp
void register_eval_analysis(CLI::App& eval);    // src/cli/eval_analysis_cmd.cpp: chair, afr

void register_eval(CLI::App& app) {
  auto* eval = app.add_subcommand("eval", "Evaluate a model on a benchmark (pope, hallusionbench, amber, mmhal), an analysis (chair, afr) or a pair set (ips)");
  eval->require_subcommand(1);
  register_eval_pope(*eval);
  register_eval_ips(*eval);
  register_eval_benchmarks(*eval);
  register_eval_mmhal(*eval);
  register_eval_analysis(*eval);
}

}  // namespace p2dpo::cli
