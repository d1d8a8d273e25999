// p2dpo eval mmhal: MMHal-Bench with an OpenAI-compatible judge (evaluation spec §6). Runs a model
// (--model [--adapter], resumable answers) and judges its answers, judges answers made elsewhere
// (--answers, the official response format), or re-scores an existing evaluation (--evaluation).
#include <fmt/format.h>

#include <filesystem>
#include <iostream>
#include <memory>

#include "cli/common.h"
#include "cli/decode_flags.h"
#include "eval/bench_runner.h"
#include "eval/mmhal.h"
#include "io/errors.h"
#include "io/json_io.h"

namespace p2dpo::cli {

namespace fs = std::filesystem;

namespace {

void print_outcome(const nlohmann::json& doc, const eval::MmhalScore& score, bool as_json) {
  for (const auto& w : score.warnings) std::cerr << "warning: " << w << "\n";
  if (as_json) {
    std::cout << doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
  } else {
    std::cout << eval::format_mmhal_table(score) << std::flush;
  }
}

}  // namespace

void register_eval_mmhal(CLI::App& eval) {
  struct Opts {
    ModelFlags model;
    eval::MmhalRunOptions run;
    std::string answers, evaluation, judge_config_file;
    std::string judge_url, judge_model, judge_ca_bundle;
    double judge_timeout = -1, judge_interval = -1;
    int judge_max_retries = -1, judge_max_tokens = -1;
    bool no_judge = false, json = false, quiet = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = eval.add_subcommand(
      "mmhal",
      "MMHal-Bench: answers rated 0-6 by an OpenAI-compatible judge with the official template (read from "
      "--judge-template, checked by sha256). Run: --model --questions --images --judge-template; judge answers: "
      "--answers; re-score: --evaluation --questions");
  o->model.add(cmd);
  cmd->get_option("--model")->required(false)->description("Hugging Face model directory to run (omit with --answers/--evaluation)");
  cmd->add_option("--questions", o->run.questions_path,
                  "the official response_template.json (96 records; image_content, question, gt_answer)");
  cmd->add_option("--images", o->run.images_dir,
                  "image directory: a record's image_path/image field, else the file name of image_src, else "
                  "<image_id>.jpg|.jpeg|.png");
  cmd->add_option("--out", o->run.out_dir, "output directory (answers/, judge/, response.json, evaluation.json, "
                                           "results.json); default mmhal-eval");
  auto* answers = cmd->add_option("--answers", o->answers,
                                  "judge these answers instead of running a model: the official response format "
                                  "(the question records with model_answer filled)");
  auto* evaluation = cmd->add_option("--evaluation", o->evaluation,
                                     "only score an existing evaluation: eval_gpt_mmhal.py's --evaluation JSON or "
                                     "p2dpo's judge/mmhal_judge.jsonl (needs --questions)");
  cmd->add_option("--judge-template", o->run.judge_template_path,
                  "file holding the official judge template (LLaVA-RLHF Eval/eval_gpt_mmhal.py `template`, not "
                  "shipped); its sha256 must match spec §0");
  cmd->add_flag("--allow-template-change", o->run.allow_template_change,
                "use a judge template whose sha256 differs from the official one (recorded, warned)");
  cmd->add_option("--judge-config", o->judge_config_file,
                  "JSON {url, model, api_key, timeout_s, max_retries, backoff_s, max_tokens, interval_s, ca_bundle}; flags "
                  "override it, it overrides the environment (JUDGE_BASE_URL, JUDGE_MODEL, JUDGE_API_KEY or "
                  "OPENAI_API_KEY, JUDGE_TIMEOUT_S, JUDGE_MAX_RETRIES, JUDGE_CA_BUNDLE; a P2DPO_JUDGE_* twin wins, P2DPO_JUDGE_URL for the URL)");
  cmd->add_option("--judge-url", o->judge_url, "base URL of the chat-completions API (default https://api.openai.com/v1)");
  cmd->add_option("--judge-model", o->judge_model, "judge model (default gpt-4-0314, the official one)");
  cmd->add_option("--judge-timeout", o->judge_timeout, "seconds per request (default 120)");
  cmd->add_option("--judge-max-retries", o->judge_max_retries,
                  "retries on 429/5xx/network errors, exponential back-off (default 5)");
  cmd->add_option("--judge-max-tokens", o->judge_max_tokens, "max_tokens sent to the judge (default: not sent, as official)");
  cmd->add_option("--judge-interval", o->judge_interval, "seconds between judge calls (official script: 1; default 0)");
  cmd->add_option("--judge-ca-bundle", o->judge_ca_bundle,
                  "PEM CA certificates that verify an https:// judge (default: the system store)");
  cmd->add_flag("--no-judge", o->no_judge, "only generate the answers (response.json); judge later with --answers");
  cmd->add_option("--limit", o->run.limit, "only the first N questions")->capture_default_str();
  cmd->add_option("--batch-size", o->run.batch_size)->capture_default_str();
  cmd->add_option("--max-new-tokens", o->run.max_new_tokens, "decoding limit (model_vqa_mmhal.py: 1024)")->capture_default_str();
  cmd->add_option("--conv-mode", o->run.conv_mode, "llava_v1 (official), vicuna_v1, hf, vlmevalkit")->capture_default_str();
  cmd->add_option("--prompt-template", o->run.prompt_template,
                  "full prompt with one {question} and one <image> (overrides --conv-mode; \\n = newline)");
  add_decode_flags(cmd, o->run.decode);
  cmd->add_flag("--json", o->json, "print the results JSON instead of the table");
  cmd->add_flag("--quiet", o->quiet, "no progress lines");
  answers->excludes(cmd->get_option("--model"));
  evaluation->excludes(cmd->get_option("--model"));
  evaluation->excludes(answers);

  cmd->callback([o]() {
    auto& run = o->run;
    run.prompt_template = unescape(run.prompt_template);
    run.progress = !o->quiet;
    const bool out_given = !run.out_dir.empty();
    if (!out_given) run.out_dir = "mmhal-eval";
    if (!o->evaluation.empty()) {
      if (run.questions_path.empty()) throw InputError("--questions", "required with --evaluation (the question types)");
      auto questions = eval::read_mmhal_questions(run.questions_path);
      if (run.limit > 0 && static_cast<size_t>(run.limit) < questions.size()) questions.resize(static_cast<size_t>(run.limit));
      const auto score = eval::score_mmhal_evaluation(o->evaluation, questions);
      const nlohmann::json protocol = {{"mode", "score evaluation"},
                                       {"evaluation_file", o->evaluation},
                                       {"questions_file", run.questions_path}};
      const auto doc = eval::mmhal_results_document(score, protocol);
      if (out_given) io::write_json_atomic((fs::path(run.out_dir) / "results.json").string(), doc);
      print_outcome(doc, score, o->json);
      return;
    }
    // Judge settings: defaults < environment < --judge-config < flags.
    eval::apply_judge_environment(run.judge_config);
    if (!o->judge_config_file.empty()) eval::apply_judge_config_file(run.judge_config, o->judge_config_file);
    if (!o->judge_url.empty()) run.judge_config.url = o->judge_url;
    if (!o->judge_model.empty()) run.judge_config.model = o->judge_model;
    if (o->judge_timeout >= 0) run.judge_config.timeout_s = o->judge_timeout;
    if (o->judge_max_retries >= 0) run.judge_config.max_retries = o->judge_max_retries;
    if (!o->judge_ca_bundle.empty()) run.judge_config.ca_bundle = o->judge_ca_bundle;
    if (o->judge_max_tokens >= 0) run.judge_config.max_tokens = o->judge_max_tokens;
    if (o->judge_interval >= 0) run.judge_config.interval_s = o->judge_interval;
    run.judge = !o->no_judge;

    eval::MmhalRunResult result;
    if (!o->answers.empty()) {
      if (o->no_judge) throw InputError("--no-judge", "--answers only judges; nothing to do");
      result = eval::judge_mmhal_answers(o->answers, run);
    } else {
      if (o->model.model_dir.empty()) {
        throw InputError("--model", "give --model (with --questions, --images, --judge-template) to run, --answers "
                                    "to judge answers, or --evaluation to re-score");
      }
      if (run.questions_path.empty()) throw InputError("--questions", "required with --model");
      if (run.images_dir.empty()) throw InputError("--images", "required with --model");
      eval::check_bench_template(run.prompt_template.empty() ? eval::bench_conv_template(run.conv_mode) : run.prompt_template,
                                 run.prompt_template.empty() ? "--conv-mode" : "--prompt-template");
      eval::check_decode_options(run.decode);
      if (run.judge) {
        std::vector<std::string> ignored;
        eval::read_judge_template(run.judge_template_path, run.template_sha256, run.allow_template_change, ignored);
        eval::check_judge_config(run.judge_config);
      }
      const auto questions = eval::read_mmhal_questions(run.questions_path);
      for (const auto& q : questions)
        if (run.limit <= 0 || static_cast<int64_t>(q.index) < run.limit) eval::mmhal_image_path(q, run.images_dir);
      run.model_id = eval::model_id_from_dir(o->model.model_dir);
      run.model_settings = {{"dtype", o->model.dtype}, {"pad_to_square", o->model.pad_to_square},
                            {"adapter", o->model.adapter_dir}};
      auto model = o->model.load();
      result = eval::run_mmhal(*model, run);
      std::cerr << "answers: " << result.answers_path << ", response file: "
                << (fs::path(run.out_dir) / "response.json").string() << "\n";
      if (!run.judge) return;
    }
    std::cerr << "judgements: " << result.judge_path << ", results: " << (fs::path(run.out_dir) / "results.json").string()
              << "\n";
    print_outcome(result.results, result.score, o->json);
  });
}

}  // namespace p2dpo::cli
