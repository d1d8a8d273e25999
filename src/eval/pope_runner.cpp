#include "eval/pope_runner.h"

#include <fmt/format.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>

#include "eval/bench_runner.h"
#include "image/decode.h"
#include "image/noise.h"
#include "infer/generate.h"
#include "io/atomic_file.h"
#include "io/errors.h"
#include "io/json_io.h"
#include "text/prompt.h"
#include "text/utf8.h"
#include "train/metrics.h"

namespace p2dpo::eval {

namespace fs = std::filesystem;

namespace {

std::string level_name(NoiseMode mode, double sigma) {
  if (sigma == 0.0) return "clean";
  return fmt::format("{}-sigma{}", noise_mode_name(mode), sigma);
}

// The protocol of one answers file: resuming under a different one would mix two experiments.
nlohmann::json run_protocol(const PopeRunOptions& opts, const std::string& prompt_template, double sigma) {
  return {{"benchmark", "pope"},
          {"model_id", opts.model_id},
          {"model_settings", opts.model_settings},
          {"prompt_template", prompt_template},
          {"answer_suffix", opts.answer_suffix},
          {"decoding", decode_protocol(opts.decode)},
          {"max_new_tokens", opts.max_new_tokens},
          {"noise", sigma == 0.0 ? "none" : noise_mode_name(opts.noise_mode)},
          {"sigma", sigma},
          {"seed", opts.seed}};
}

class Progress {
 public:
  Progress(std::string label, int64_t total, int64_t already, bool enabled)
      : label_(std::move(label)), total_(total), done_(already), start_done_(already), enabled_(enabled),
        start_(std::chrono::steady_clock::now()) {}
  void advance(int64_t n) {
    done_ += n;
    if (!enabled_) return;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double rate = elapsed > 0 ? (done_ - start_done_) / elapsed : 0.0;
    const double eta = rate > 0 ? (total_ - done_) / rate : NAN;
    std::cerr << fmt::format("[pope] {}: {}/{} ({:.1f}%), {:.2f} q/s, ETA {}\n", label_, done_, total_,
                             total_ ? 100.0 * done_ / total_ : 100.0, rate, train::ProgressLine::format_duration(eta));
  }

 private:
  std::string label_;
  int64_t total_, done_, start_done_;
  bool enabled_;
  std::chrono::steady_clock::time_point start_;
};

using SplitId = std::pair<std::string, int64_t>;

}  // namespace

std::string pope_conv_template(const std::string& conv_mode) { return bench_conv_template(conv_mode); }

std::string pope_question_text(const std::string& question_text, const std::string& answer_suffix) {
  const bool has_suffix = !answer_suffix.empty() && question_text.size() >= answer_suffix.size() &&
                          question_text.compare(question_text.size() - answer_suffix.size(), std::string::npos,
                                                answer_suffix) == 0;
  return has_suffix ? question_text : question_text + answer_suffix;
}

std::string pope_fill_template(const std::string& prompt_template, const std::string& question) {
  return bench_prompt(prompt_template, question, /*with_image=*/true);
}

void check_pope_template(const std::string& prompt_template, const std::string& flag) {
  check_bench_template(prompt_template, flag);
}

NoiseMode parse_noise_mode(const std::string& s, const std::string& flag) {
  if (s == "pixel") return NoiseMode::Pixel;
  if (s == "tensor") return NoiseMode::Tensor;
  throw InputError(flag, "unknown noise mode '" + s + "' (pixel, tensor)");
}

const char* noise_mode_name(NoiseMode m) { return m == NoiseMode::Pixel ? "pixel" : "tensor"; }

std::vector<PopeQuestion> load_pope_run_questions(const std::string& question_file, const PopeRunOptions& opts) {
  auto all = read_pope_questions(question_file);
  std::set<std::string> unlabelled;
  for (const auto& q : all)
    if (!q.label_yes) unlabelled.insert(q.split);
  if (!unlabelled.empty()) {
    std::vector<std::string> relevant;
    for (const auto& f : opts.label_files)
      if (unlabelled.count(pope_split_from_filename(f))) relevant.push_back(f);
    attach_pope_labels(all, relevant);
    for (const auto& q : all) {
      if (!q.label_yes) {
        throw InputError(question_file, fmt::format("line {}: question_id {} (split '{}') has no label; give the "
                                                    "split's label file with --labels",
                                                    q.line, q.question_id, q.split));
      }
    }
  }
  std::vector<PopeQuestion> out;
  std::map<std::string, int64_t> taken;
  for (auto& q : all) {
    if (opts.limit > 0 && taken[q.split] >= opts.limit) continue;
    ++taken[q.split];
    out.push_back(std::move(q));
  }
  std::set<std::string> checked;
  for (const auto& q : out) {
    if (!checked.insert(q.image).second) continue;
    const std::string path = (fs::path(opts.images_dir) / q.image).string();
    if (!fs::is_regular_file(path)) {
      throw InputError(path, fmt::format("image not found (question_id {}, {} line {}; --images {})", q.question_id,
                                         question_file, q.line, opts.images_dir));
    }
  }
  return out;
}

std::string pope_answers_path(const PopeRunOptions& opts, const std::string& question_file, double sigma) {
  const std::string stem = fs::path(question_file).stem().string();
  return (fs::path(opts.out_dir) / "answers" / (stem + "." + level_name(opts.noise_mode, sigma) + ".jsonl")).string();
}

nlohmann::json pope_results_document(const std::vector<PopeScore>& scores, const nlohmann::json& protocol,
                                     const std::vector<std::string>& warnings) {
  nlohmann::json doc;
  doc["benchmark"] = "pope";
  doc["protocol"] = protocol;
  doc["results"] = pope_scores_json(scores);
  doc["warnings"] = warnings;
  doc["metrics_note"] =
      "official POPE parsing and metrics (evaluation spec 2.3-2.4); fractions in [0,1]; null = undefined (0/0)";
  return doc;
}

PopeRunResult run_pope(models::VisionLanguageModel& model, const PopeRunOptions& opts) {
  if (opts.question_files.empty()) throw InputError("--questions", "no question files given");
  if (opts.batch_size < 1) throw InputError("--batch-size", "must be >= 1");
  if (opts.max_new_tokens < 1) throw InputError("--max-new-tokens", "must be >= 1");
  if (opts.limit < 0) throw InputError("--limit", "must be >= 0");
  std::vector<double> sigmas;
  for (double s : opts.sigmas) {
    if (!(s >= 0.0) || !std::isfinite(s)) throw InputError("--noise-sigma", fmt::format("{} is not a finite sigma >= 0", s));
    if (std::find(sigmas.begin(), sigmas.end(), s) == sigmas.end()) sigmas.push_back(s);
  }
  if (sigmas.empty()) sigmas.push_back(0.0);
  const std::string prompt_template = opts.prompt_template.empty() ? pope_conv_template(opts.conv_mode)
                                                                   : opts.prompt_template;
  check_pope_template(prompt_template, opts.prompt_template.empty() ? "--conv-mode" : "--prompt-template");

  std::set<std::string> stems;
  for (const auto& f : opts.question_files) {
    if (!stems.insert(fs::path(f).stem().string()).second) {
      throw InputError("--questions", "two question files are named " + fs::path(f).stem().string() +
                                          ".*; their answers files would collide");
    }
  }
  // Read and check every file (and every image's presence) before the first forward pass.
  std::vector<std::vector<PopeQuestion>> per_file;
  std::vector<std::set<SplitId>> file_ids;  // every question of the full file, for resume checks
  for (const auto& f : opts.question_files) {
    per_file.push_back(load_pope_run_questions(f, opts));
    std::set<SplitId> ids;
    for (const auto& q : read_pope_questions(f)) ids.insert({q.split, q.question_id});
    file_ids.push_back(std::move(ids));
  }

  check_decode_options(opts.decode);
  const bool vcd = opts.decode.vcd();

  PopeRunResult result;
  std::vector<PopeQuestion> scored_questions;
  std::vector<PopeAnswer> all_answers;
  for (size_t fi = 0; fi < opts.question_files.size(); ++fi) {
    const std::string& question_file = opts.question_files[fi];
    const auto& questions = per_file[fi];
    scored_questions.insert(scored_questions.end(), questions.begin(), questions.end());
    for (double sigma : sigmas) {
      const std::string path = pope_answers_path(opts, question_file, sigma);
      check_or_write_run_record(path, run_protocol(opts, prompt_template, sigma), {{"question_file", question_file}});
      io::JsonlAppender appender(path);  // cuts a torn last line
      std::set<SplitId> done;
      for (const auto& a : read_pope_answers(path)) {
        const SplitId id{a.split.value_or(""), a.question_id};
        if (!file_ids[fi].count(id)) {
          throw InputError(path, fmt::format("line {}: question_id {} (split '{}') is not in {}; the file belongs to "
                                             "another question file", a.line, a.question_id, id.first, question_file));
        }
        done.insert(id);
      }
      int64_t already = 0;
      for (const auto& q : questions) already += done.count({q.split, q.question_id});
      const std::string level = level_name(opts.noise_mode, sigma);
      Progress progress(fs::path(question_file).stem().string() + " " + level, static_cast<int64_t>(questions.size()),
                        already, opts.progress);
      const size_t B = static_cast<size_t>(opts.batch_size);
      for (size_t b0 = 0; b0 < questions.size(); b0 += B) {
        const size_t b1 = std::min(questions.size(), b0 + B);
        bool complete = true;
        for (size_t i = b0; i < b1 && complete; ++i) complete = done.count({questions[i].split, questions[i].question_id});
        if (complete) continue;
        // The whole fixed batch runs again even if part of it was answered, so padding and
        // batched arithmetic match the uninterrupted run exactly.
        std::map<std::string, size_t> image_index;
        std::vector<models::PreparedImage> prepared;
        for (size_t i = b0; i < b1; ++i) {
          const auto& q = questions[i];
          if (image_index.count(q.image)) continue;
          image_index[q.image] = prepared.size();
          auto img = image::decode_image_file((fs::path(opts.images_dir) / q.image).string());
          const uint64_t seed = image::noise_seed_for(q.image, opts.seed);
          if (sigma > 0.0 && opts.noise_mode == NoiseMode::Pixel) img = image::add_pixel_gaussian_noise(img, sigma, seed);
          auto p = model.prepare_image(img);
          if (sigma > 0.0 && opts.noise_mode == NoiseMode::Tensor) {
            auto eps = image::gaussian_noise(static_cast<size_t>(p.pixel_values.numel()), seed);
            auto noise = torch::tensor(eps, torch::kDouble).view(p.pixel_values.sizes());
            p.pixel_values = (p.pixel_values.to(torch::kDouble) + sigma * noise).to(torch::kFloat);
          }
          prepared.push_back(std::move(p));
        }
        // VCD: each image's amateur view (diffusion noise on the tensor the expert sees, seeded by the
        // image's name) is encoded in the same call, rows M + k.
        const int64_t M = static_cast<int64_t>(prepared.size());
        std::vector<models::PreparedImage> to_encode = prepared;
        if (vcd) {
          std::vector<std::string> names(prepared.size());
          for (const auto& [name, k] : image_index) names[k] = name;
          for (size_t k = 0; k < prepared.size(); ++k) to_encode.push_back(vcd_noisy_view(prepared[k], opts.decode, names[k]));
        }
        torch::Tensor features;
        {
          torch::NoGradGuard no_grad;
          features = model.encode_images(to_encode);
        }
        std::vector<infer::GenerationRequest> requests, amateurs;
        for (size_t i = b0; i < b1; ++i) {
          const auto& q = questions[i];
          const auto k = static_cast<int64_t>(image_index[q.image]);
          const std::string prompt =
              pope_fill_template(prompt_template, pope_question_text(q.text, opts.answer_suffix));
          infer::GenerationRequest req;
          req.prompt_ids = model.tokenize_prompt(prompt, {prepared[static_cast<size_t>(k)]});
          req.image_features = features.slice(0, k, k + 1);
          if (vcd) {
            infer::GenerationRequest am = req;
            am.image_features = features.slice(0, M + k, M + k + 1);
            amateurs.push_back(std::move(am));
          }
          requests.push_back(std::move(req));
        }
        const auto generated = generate_decoded(model, requests, amateurs, opts.decode, opts.max_new_tokens);
        int64_t written = 0;
        for (size_t i = b0; i < b1; ++i) {
          const auto& q = questions[i];
          if (done.count({q.split, q.question_id})) continue;
          const std::string answer = text::python_rstrip(text::python_lstrip(model.decode(generated[i - b0].token_ids)));
          nlohmann::json rec = {{"question_id", q.question_id},
                                {"prompt", pope_question_text(q.text, opts.answer_suffix)},
                                {"text", answer},
                                {"model_id", opts.model_id},
                                {"image", q.image},
                                {"split", q.split},
                                {"label", *q.label_yes ? "yes" : "no"},
                                {"sigma", sigma},
                                {"noise", sigma == 0.0 ? "none" : noise_mode_name(opts.noise_mode)},
                                {"metadata", nlohmann::json::object()}};
          if (!q.object_size.empty()) rec["size"] = q.object_size;
          appender.write(rec);
          done.insert({q.split, q.question_id});
          ++written;
        }
        progress.advance(written);
      }
      appender.close();
      result.answer_files.push_back(path);
      std::set<SplitId> in_run;
      for (const auto& q : questions) in_run.insert({q.split, q.question_id});
      for (auto& a : read_pope_answers(path)) {
        // Answers beyond --limit (from an earlier, longer run) stay in the file but are not scored.
        if (in_run.count({a.split.value_or(""), a.question_id})) all_answers.push_back(std::move(a));
      }
    }
  }

  result.scores = score_pope(all_answers, scored_questions, result.warnings);
  nlohmann::json protocol = run_protocol(opts, prompt_template, 0.0);
  protocol.erase("sigma");
  protocol["noise"] = noise_mode_name(opts.noise_mode);
  protocol["sigmas"] = sigmas;
  protocol["conv_mode"] = opts.prompt_template.empty() ? opts.conv_mode : "custom";
  protocol["question_files"] = opts.question_files;
  protocol["label_files"] = opts.label_files;
  protocol["images_dir"] = opts.images_dir;
  protocol["limit"] = opts.limit;
  protocol["batch_size"] = opts.batch_size;
  protocol["noise_protocol"] = opts.noise_mode == NoiseMode::Pixel
      ? "evaluation spec 3.1: x=I/255, clip(x+sigma*eps,0,1), floor(255x+0.5), original resolution, "
        "eps from mt19937_64 + Box-Muller seeded fnv1a64(image field) ^ seed"
      : "evaluation spec 3.2 (variant B): x_norm + sigma*eps on the preprocessed tensor, no clip, same eps seeding";
  result.results = pope_results_document(result.scores, protocol, result.warnings);
  result.results["answer_files"] = result.answer_files;
  io::write_json_atomic((fs::path(opts.out_dir) / "results.json").string(), result.results);
  return result;
}

}  // namespace p2dpo::eval
