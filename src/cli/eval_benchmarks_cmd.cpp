// p2dpo eval hallusionbench / eval amber: the two public benchmarks whose text files ship with the
// official repositories (evaluation spec §4, §5). Each either runs a model (--model [--adapter],
// resumable answers under --out) or scores an existing answers file (--answers).
#include <fmt/format.h>

#include <filesystem>
#include <iostream>
#include <memory>

#include "cli/common.h"
#include "cli/decode_flags.h"
#include "eval/amber.h"
#include "eval/bench_runner.h"
#include "eval/hallusionbench.h"
#include "io/errors.h"
#include "io/json_io.h"

namespace p2dpo::cli {

namespace fs = std::filesystem;

namespace {

// The flags both benchmarks share.
struct RunFlags {
  ModelFlags model;
  std::string answers, images, out, conv_mode = "llava_v1", prompt_template;
  int64_t limit = 0;
  int batch_size = 8, max_new_tokens = 128;
  bool json = false, quiet = false;
  eval::DecodeOptions decode;

  void add(CLI::App* cmd, int default_max_new_tokens) {
    max_new_tokens = default_max_new_tokens;
    model.add(cmd);
    cmd->get_option("--model")->required(false)->description("Hugging Face model directory to run (omit with --answers)");
    auto* a = cmd->add_option("--answers", answers, "score this answers file instead of running a model");
    a->excludes(cmd->get_option("--model"));
    cmd->add_option("--images", images, "the benchmark's image directory (runs only)");
    cmd->add_option("--out", out, "output directory: answers/*.jsonl (resumable), results.json");
    cmd->add_option("--limit", limit, "only the first N selected questions")->capture_default_str();
    cmd->add_option("--batch-size", batch_size)->capture_default_str();
    cmd->add_option("--max-new-tokens", max_new_tokens, "greedy decoding limit")->capture_default_str();
    cmd->add_option("--conv-mode", conv_mode, "llava_v1, vicuna_v1, hf, vlmevalkit")->capture_default_str();
    cmd->add_option("--prompt-template", prompt_template,
                    "full prompt with one {question} and one <image> (overrides --conv-mode; \\n = newline)");
    add_decode_flags(cmd, decode);
    cmd->add_flag("--json", json, "print the results JSON instead of the table");
    cmd->add_flag("--quiet", quiet, "no progress lines");
  }

  // Validates what can be checked before the (slow) model load.
  void check_run() const {
    if (model.model_dir.empty()) throw InputError("--model", "give --model (with --images) to run, or --answers to score");
    if (images.empty()) throw InputError("--images", "required with --model");
    if (prompt_template.empty()) eval::check_bench_template(eval::bench_conv_template(conv_mode), "--conv-mode");
    else eval::check_bench_template(unescape(prompt_template), "--prompt-template");
    eval::check_decode_options(decode);
  }

  nlohmann::json model_settings() const {
    return {{"dtype", model.dtype}, {"pad_to_square", model.pad_to_square}, {"adapter", model.adapter_dir}};
  }
};

void print_outcome(const nlohmann::json& doc, const std::string& table, bool as_json) {
  for (const auto& w : doc.value("warnings", nlohmann::json::array())) std::cerr << "warning: " << w.get<std::string>() << "\n";
  if (as_json) {
    std::cout << doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
  } else {
    std::cout << table << std::flush;
  }
}

void register_eval_hallusionbench(CLI::App& eval) {
  struct Opts {
    RunFlags run;
    std::string benchmark, protocol = "vlmevalkit", prediction_field = "model_prediction", judge_field;
    bool old_period_rule = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = eval.add_subcommand(
      "hallusionbench",
      "HallusionBench aAcc/fAcc/qAcc (official aggregation, rule-based yes/no extraction). Run a model: --model "
      "--benchmark --images; score answers: --answers --benchmark");
  o->run.add(cmd, 128);
  cmd->add_option("--benchmark", o->benchmark, "the official HallusionBench.json")->required();
  cmd->add_option("--protocol,--hb-protocol", o->protocol,
                  "headline protocol, and the rows a run asks: vlmevalkit (the 951 questions with an image; P2-DPO "
                  "Table 2's LLaVA rows) or official (all 1129; rows without an image are asked without one). Both "
                  "are always reported")
      ->capture_default_str();
  cmd->add_option("--prediction-field", o->prediction_field, "answers field holding the model output")
      ->capture_default_str();
  cmd->add_option("--judge-field", o->judge_field,
                  "score with the correctness codes (\"0\"/\"1\"/\"2\") in this answers field (e.g. the official "
                  "script's gpt4v_output_gpt_check) instead of the rule-based extraction");
  cmd->add_flag("--old-period-rule", o->old_period_rule,
                "older VLMEvalKit period regex (?!<=\\d)(\\.)(?!\\d) in the yes/no extraction");

  cmd->callback([o]() {
    const auto headline = eval::parse_hb_protocol(o->protocol, "--protocol");
    eval::HbScoreOptions score_opts;
    score_opts.old_period_rule = o->old_period_rule;
    score_opts.use_judge_codes = !o->judge_field.empty();
    if (!o->run.answers.empty()) {
      const auto benchmark = eval::read_hallusionbench(o->benchmark);
      const auto answers = eval::read_hallusionbench_answers(o->run.answers, o->prediction_field, o->judge_field);
      const auto score = eval::score_hallusionbench(benchmark, answers, score_opts);
      const nlohmann::json protocol = {{"mode", "score answers"},
                                       {"answers_file", o->run.answers},
                                       {"benchmark_file", o->benchmark},
                                       {"prediction_field", o->prediction_field}};
      auto doc = eval::hb_results_document(score, headline, score_opts, protocol);
      if (!o->run.out.empty()) io::write_json_atomic((fs::path(o->run.out) / "results.json").string(), doc);
      print_outcome(doc, eval::format_hb_table(score, headline), o->run.json);
      return;
    }
    o->run.check_run();
    eval::HbRunOptions run;
    run.benchmark_path = o->benchmark;
    run.images_dir = o->run.images;
    run.out_dir = o->run.out.empty() ? "hallusionbench-eval" : o->run.out;
    run.protocol = headline;
    run.limit = o->run.limit;
    run.batch_size = o->run.batch_size;
    run.max_new_tokens = o->run.max_new_tokens;
    run.conv_mode = o->run.conv_mode;
    run.prompt_template = unescape(o->run.prompt_template);
    run.model_id = eval::model_id_from_dir(o->run.model.model_dir);
    run.model_settings = o->run.model_settings();
    run.score = score_opts;
    run.decode = o->run.decode;
    run.progress = !o->run.quiet;
    // Read the benchmark and check the images before the model loads.
    eval::hb_select_rows(eval::read_hallusionbench(run.benchmark_path), run.protocol, run.limit, run.images_dir);
    auto model = o->run.model.load();
    auto result = eval::run_hallusionbench(*model, run);
    std::cerr << "answers: " << result.answers_path << ", results: "
              << (fs::path(run.out_dir) / "results.json").string() << "\n";
    print_outcome(result.results, eval::format_hb_table(result.score, headline), o->run.json);
  });
}

void register_eval_amber(CLI::App& eval) {
  struct Opts {
    RunFlags run;
    std::string data, queries, mode = "all", answer_rule = "prefix", wordnet, similar_pairs;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = eval.add_subcommand(
      "amber",
      "AMBER discriminative (existence/attribute/relation F1, official formulas) and generative (CHAIR, Cover, Hal, "
      "Cog; approximate noun extraction). Run a model: --model --data --images; score answers: --answers --data");
  o->run.add(cmd, 256);
  cmd->add_option("--data", o->data,
                  "the official AMBER data/ directory (annotations.json, relation.json, safe_words.txt, query/)")
      ->required();
  cmd->add_option("--queries", o->queries, "query file to run (default: DATA/query/query_all.json)");
  cmd->add_option("--mode", o->mode, "discriminative, generative or all")->capture_default_str();
  cmd->add_option("--answer-rule", o->answer_rule,
                  "yes/no reading of discriminative responses: prefix (strip+lower, starts with yes/no; spec 5.2), "
                  "exact (official: exactly \"Yes\"/\"No\"), pope")
      ->capture_default_str();
  cmd->add_option("--wordnet", o->wordnet,
                  "WordNet 3.0 dictionary directory (index.noun, noun.exc; Debian wordnet-base: /usr/share/wordnet) "
                  "for nltk's exact lemmatizer");
  cmd->add_option("--similar-pairs", o->similar_pairs,
                  "word pairs with spaCy en_core_web_lg similarity > 0.8 (\"w1<TAB>w2\" per line) to stand in for "
                  "spaCy; default: exact equality");

  cmd->callback([o]() {
    const auto mode = eval::parse_amber_mode(o->mode, "--mode");
    const auto rule = eval::parse_amber_answer_rule(o->answer_rule, "--answer-rule");
    const auto data = eval::read_amber_data(o->data);
    eval::AmberNlp nlp;
    if (!o->wordnet.empty()) eval::load_wordnet(nlp, o->wordnet);
    if (!o->similar_pairs.empty()) eval::load_similar_pairs(nlp, o->similar_pairs, data.vocabulary);
    if (!o->run.answers.empty()) {
      const auto responses = eval::read_amber_responses(o->run.answers);
      std::vector<int64_t> expected;
      for (const auto& a : data.annotations)
        if (eval::amber_mode_includes(mode, a)) expected.push_back(a.id);
      const auto score = eval::score_amber(data, responses, rule, nlp, expected);
      const nlohmann::json protocol = {{"mode", "score answers"},
                                       {"answers_file", o->run.answers},
                                       {"data_dir", o->data},
                                       {"expected", eval::amber_mode_name(mode)},
                                       {"wordnet", o->wordnet},
                                       {"similar_pairs", o->similar_pairs}};
      auto doc = eval::amber_results_document(score, rule, nlp, protocol);
      if (!o->run.out.empty()) io::write_json_atomic((fs::path(o->run.out) / "results.json").string(), doc);
      print_outcome(doc, eval::format_amber_table(score), o->run.json);
      return;
    }
    o->run.check_run();
    eval::AmberRunOptions run;
    run.data_dir = o->data;
    run.queries_path = o->queries;
    run.images_dir = o->run.images;
    run.out_dir = o->run.out.empty() ? "amber-eval" : o->run.out;
    run.mode = mode;
    run.limit = o->run.limit;
    run.batch_size = o->run.batch_size;
    run.max_new_tokens = o->run.max_new_tokens;
    run.conv_mode = o->run.conv_mode;
    run.prompt_template = unescape(o->run.prompt_template);
    run.model_id = eval::model_id_from_dir(o->run.model.model_dir);
    run.model_settings = o->run.model_settings();
    run.answer_rule = rule;
    run.decode = o->run.decode;
    run.progress = !o->run.quiet;
    // Check the queries and images before the model loads.
    eval::amber_select_queries(data, run.queries_path.empty() ? (fs::path(run.data_dir) / "query" / "query_all.json").string()
                                                               : run.queries_path,
                               run.mode, run.limit, run.images_dir);
    auto model = o->run.model.load();
    auto result = eval::run_amber(*model, run, nlp);
    result.results["protocol"]["wordnet"] = o->wordnet;
    result.results["protocol"]["similar_pairs"] = o->similar_pairs;
    io::write_json_atomic((fs::path(run.out_dir) / "results.json").string(), result.results);
    std::cerr << "answers: " << result.answers_path << ", results: "
              << (fs::path(run.out_dir) / "results.json").string() << "\n";
    print_outcome(result.results, eval::format_amber_table(result.score), o->run.json);
  });
}

}  // namespace

void register_eval_benchmarks(CLI::App& eval) {
  register_eval_hallusionbench(eval);
  register_eval_amber(eval);
}

}  // namespace p2dpo::cli
