// p2dpo eval chair / eval afr: the analyses that need the world's (or TextVQA's) ground truth beyond
// yes/no labels: CHAIR-style object hallucination of descriptions (eval/chair.h) and attention focus
// (AFR per layer, P-Acc, VQA accuracy, answer->image attention share; eval/afr.h).
#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <set>

#include "cli/common.h"
#include "eval/afr.h"
#include "eval/bench_runner.h"
#include "cli/decode_flags.h"
#include "eval/chair.h"
#include "eval/pope_runner.h"
#include "image/clip_processor.h"
#include "io/errors.h"
#include "io/json_io.h"

namespace p2dpo::cli {

namespace fs = std::filesystem;

namespace {

// Flags both analyses share.
struct AnalysisFlags {
  ModelFlags model;
  std::string answers, world, questions, images, out, conv_mode, prompt_template;
  int64_t limit = 0;
  int batch_size = 8, max_new_tokens = 128;
  bool json = false, quiet = false;

  void add(CLI::App* cmd, int default_max_new_tokens, const std::string& questions_help) {
    max_new_tokens = default_max_new_tokens;
    model.add(cmd);
    cmd->get_option("--model")->required(false)->description("Hugging Face model directory to run (omit with --answers)");
    cmd->add_option("--answers", answers, "score this answers JSONL ({\"question_id\", \"text\"} per line) instead of running a model")
        ->excludes(cmd->get_option("--model"));
    cmd->add_option("--world", world, "a `p2dpo world make` directory: sets --questions, --images and the prompt (world.json)");
    cmd->add_option("--questions", questions, questions_help);
    cmd->add_option("--images", images, "directory the records' \"image\" fields are relative to (runs only)");
    cmd->add_option("--out", out, "output directory: answers/*.jsonl (resumable), results.json, per-record JSONL");
    cmd->add_option("--limit", limit, "only the first N records")->capture_default_str();
    cmd->add_option("--batch-size", batch_size)->capture_default_str();
    cmd->add_option("--max-new-tokens", max_new_tokens, "greedy decoding limit")->capture_default_str();
    cmd->add_option("--conv-mode", conv_mode,
                    "llava_v1, vicuna_v1, hf, vlmevalkit (default: the world's template with --world, else llava_v1)");
    cmd->add_option("--prompt-template", prompt_template,
                    "full prompt with one {question} and one <image> (overrides --conv-mode; \\n = newline)");
    cmd->add_flag("--json", json, "print the results JSON instead of the table");
    cmd->add_flag("--quiet", quiet, "no progress lines");
  }

  std::string world_file() const { return world.empty() ? "" : (fs::path(world) / "world.json").string(); }

  // --questions and --images from --world unless given.
  void apply_world(const std::string& records_rel) {
    if (world.empty()) return;
    if (!fs::exists(world_file())) throw InputError("--world", world + " is not a world directory (no world.json)");
    if (questions.empty()) questions = (fs::path(world) / records_rel).string();
    if (images.empty()) images = (fs::path(world) / "images" / "eval").string();
  }

  // --prompt-template, else --conv-mode, else the world's own template, else llava_v1.
  std::string resolve_template(const std::string& vocab_file) const {
    std::string t;
    std::string flag = "--prompt-template";
    if (!prompt_template.empty()) {
      t = unescape(prompt_template);
    } else if (!conv_mode.empty()) {
      t = eval::bench_conv_template(conv_mode);
      flag = "--conv-mode";
    } else {
      if (!vocab_file.empty()) t = eval::world_prompt_template(vocab_file);
      if (t.empty()) t = eval::bench_conv_template("llava_v1");
      flag = "--world";
    }
    eval::check_bench_template(t, flag);
    return t;
  }

  void check_run() const {
    if (model.model_dir.empty()) throw InputError("--model", "give --model to run, or --answers to score");
    if (questions.empty()) throw InputError("--questions", "required (or --world)");
    if (images.empty()) throw InputError("--images", "required with --model (or --world)");
  }

  nlohmann::json model_settings() const {
    return {{"dtype", model.dtype}, {"pad_to_square", model.pad_to_square}, {"adapter", model.adapter_dir}};
  }
};

void print_doc(const nlohmann::json& doc, const std::string& table, bool as_json) {
  for (const auto& w : doc.value("warnings", nlohmann::json::array())) std::cerr << "warning: " << w.get<std::string>() << "\n";
  if (as_json) std::cout << doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
  else std::cout << table << std::flush;
}

void register_eval_chair(CLI::App& eval) {
  struct Opts {
    AnalysisFlags f;
    std::string vocab;
    eval::DecodeOptions decode;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = eval.add_subcommand(
      "chair",
      "CHAIR_i / CHAIR_s / Recall of generated descriptions against the world's ground truth. Run a model: --model "
      "--world (or --questions --vocab --images); score answers: --answers --world (or --questions --vocab)");
  o->f.add(cmd, 128, "descriptions JSONL (the world's eval/descriptions.jsonl)");
  cmd->add_option("--vocab", o->vocab, "world.json whose vocabulary defines the object mentions (default: --world's)");
  add_decode_flags(cmd, o->decode);
  cmd->callback([o]() {
    auto& f = o->f;
    f.apply_world("eval/descriptions.jsonl");
    const std::string vocab_file = o->vocab.empty() ? f.world_file() : o->vocab;
    if (vocab_file.empty()) throw InputError("--vocab", "give --world or --vocab (a world.json)");
    if (f.questions.empty()) throw InputError("--questions", "required (or --world)");
    const auto vocab = eval::read_world_vocabulary(vocab_file);
    if (!f.answers.empty()) {
      const auto all = eval::read_chair_items(f.questions);
      const auto items = eval::chair_select_items(f.questions, f.limit, "");
      std::set<int64_t> all_ids, selected;
      for (const auto& it : all) all_ids.insert(it.question_id);
      for (const auto& it : items) selected.insert(it.question_id);
      std::vector<eval::ChairAnswer> answers;
      for (auto& a : eval::read_chair_answers(f.answers)) {
        if (!all_ids.count(a.question_id))
          throw InputError(f.answers, fmt::format("line {}: question_id {} is not in {}", a.line, a.question_id, f.questions));
        if (selected.count(a.question_id)) answers.push_back(std::move(a));
      }
      std::vector<std::string> warnings;
      const auto score = eval::score_chair(items, answers, vocab, f.answers, warnings);
      const nlohmann::json protocol = {{"mode", "score answers"}, {"answers_file", f.answers},
                                       {"descriptions_file", f.questions}, {"vocabulary", vocab_file},
                                       {"limit", f.limit}};
      const auto doc = eval::chair_results_document(score, protocol, warnings);
      if (!f.out.empty()) {
        io::write_json_atomic((fs::path(f.out) / "results.json").string(), doc);
        eval::write_chair_captions((fs::path(f.out) / "chair_captions.jsonl").string(), score);
      }
      print_doc(doc, eval::format_chair_table(score), f.json);
      return;
    }
    f.check_run();
    eval::ChairRunOptions run;
    run.descriptions_path = f.questions;
    run.images_dir = f.images;
    run.out_dir = f.out.empty() ? "chair-eval" : f.out;
    run.vocab = vocab;
    run.vocab_source = vocab_file;
    run.limit = f.limit;
    run.batch_size = f.batch_size;
    run.max_new_tokens = f.max_new_tokens;
    run.prompt_template = f.resolve_template(vocab_file);
    run.model_id = eval::model_id_from_dir(f.model.model_dir);
    run.model_settings = f.model_settings();
    run.progress = !f.quiet;
    run.decode = o->decode;
    eval::check_decode_options(run.decode);
    eval::chair_select_items(run.descriptions_path, run.limit, run.images_dir);  // before the model loads
    auto model = f.model.load();
    auto result = eval::run_chair(*model, run);
    std::cerr << "answers: " << result.answers_path << ", results: " << (fs::path(run.out_dir) / "results.json").string()
              << "\n";
    print_doc(result.results, eval::format_chair_table(result.score), f.json);
  });
}

void register_eval_afr(CLI::App& eval) {
  struct Opts {
    AnalysisFlags f;
    std::string answer_suffix, bbox_format = "xyxy", box_mapping, pacc_threshold = "14";
    bool no_answer_suffix = false;
    int pacc_layer = -1, keep_maps = 16;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = eval.add_subcommand(
      "afr",
      "Attention focus ratio per layer, P-Acc, VQA accuracy and the answer->image attention share (attention shift, "
      "App. H) on records with answer boxes (TextVQA-style or the world's eval/afr.jsonl). Run: --model --world (or "
      "--questions --images); accuracy only from answers: --answers --questions");
  o->f.add(cmd, 20, "records JSONL: {question_id, image, text|question, answers[10] | label, bbox}");
  cmd->add_option("--answer-suffix", o->answer_suffix,
                  "appended to each question (\\n = newline; default: \"\\nAnswer the question using a single word or "
                  "phrase.\", none with --world)");
  cmd->add_flag("--no-answer-suffix", o->no_answer_suffix, "ask the bare question");
  cmd->add_option("--bbox-format", o->bbox_format, "xyxy ([x0,y0,x1,y1), the world's) or xywh (TextVQA_GT_bbox)")
      ->capture_default_str();
  cmd->add_option("--box-mapping", o->box_mapping,
                  "box -> image-token grid: crop (HF processor), pad (original LLaVA), stretch; default: pad with "
                  "--pad-to-square, else crop");
  cmd->add_option("--pacc-layer", o->pacc_layer, "layer of P-Acc's AFR (default round(14/32 * layers): 14 for LLaVA-1.5-7B)");
  cmd->add_option("--pacc-threshold", o->pacc_threshold,
                  "P-Acc keeps records with AFR > this at --pacc-layer; \"mean\" = this model's mean AFR there")
      ->capture_default_str();
  cmd->add_option("--keep-maps", o->keep_maps, "records whose P-Acc-layer attention map goes into afr_samples.jsonl")
      ->capture_default_str();
  cmd->callback([o]() {
    auto& f = o->f;
    f.apply_world("eval/afr.jsonl");
    if (f.questions.empty()) throw InputError("--questions", "required (or --world)");
    const auto bbox_format = eval::parse_bbox_format(o->bbox_format, "--bbox-format");
    if (!f.answers.empty()) {
      const auto records = eval::afr_select_records(f.questions, bbox_format, f.limit, "");
      std::vector<std::string> warnings;
      auto doc = eval::score_afr_answers(records, f.answers, warnings);
      doc["protocol"] = {{"mode", "score answers"}, {"answers_file", f.answers}, {"records_file", f.questions},
                         {"limit", f.limit}};
      if (!f.out.empty()) io::write_json_atomic((fs::path(f.out) / "results.json").string(), doc);
      const double acc = doc["accuracy"].is_null() ? NAN : doc["accuracy"].get<double>();
      print_doc(doc, fmt::format("accuracy {:.2f} on {} records (attention needs --model)\n", acc, doc["n"].get<int64_t>()),
                f.json);
      return;
    }
    f.check_run();
    eval::AfrRunOptions run;
    run.records_path = f.questions;
    run.images_dir = f.images;
    run.out_dir = f.out.empty() ? "afr-eval" : f.out;
    run.bbox_format = bbox_format;
    if (!o->box_mapping.empty()) run.mapping = eval::parse_box_mapping(o->box_mapping, "--box-mapping");
    run.limit = f.limit;
    run.batch_size = f.batch_size;
    run.max_new_tokens = f.max_new_tokens;
    run.prompt_template = f.resolve_template(f.world_file());
    if (o->no_answer_suffix) run.answer_suffix = "";
    else if (!o->answer_suffix.empty()) run.answer_suffix = unescape(o->answer_suffix);
    else run.answer_suffix = f.world.empty() ? eval::kPopeAnswerSuffix : "";
    run.pacc_layer = o->pacc_layer;
    if (o->pacc_threshold == "mean") {
      run.pacc_threshold = std::nullopt;
    } else {
      try {
        size_t used = 0;
        run.pacc_threshold = std::stod(o->pacc_threshold, &used);
        if (used != o->pacc_threshold.size()) throw std::invalid_argument(o->pacc_threshold);
      } catch (const std::exception&) {
        throw InputError("--pacc-threshold", "'" + o->pacc_threshold + "' is neither a number nor \"mean\"");
      }
    }
    run.keep_maps = o->keep_maps;
    run.model_id = eval::model_id_from_dir(f.model.model_dir);
    run.model_settings = f.model_settings();
    run.progress = !f.quiet;
    const std::string processor_file = (fs::path(f.model.model_dir) / "preprocessor_config.json").string();
    run.processor = image::load_clip_processor_config(processor_file);
    run.processor.pad_to_square = f.model.pad_to_square;
    eval::afr_select_records(run.records_path, run.bbox_format, run.limit, run.images_dir);  // before the model loads
    auto model = f.model.load();
    auto result = eval::run_afr(*model, run);
    std::cerr << "answers: " << result.answers_path << ", results: " << (fs::path(run.out_dir) / "results.json").string()
              << "\n";
    print_doc(result.results, eval::format_afr_table(result.summary), f.json);
  });
}

}  // namespace

void register_eval_analysis(CLI::App& eval) {
  register_eval_chair(eval);
  register_eval_afr(eval);
}

}  // namespace p2dpo::cli
