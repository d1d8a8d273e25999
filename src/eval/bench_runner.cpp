#include "eval/bench_runner.h"

#include <fmt/format.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>

#include "image/decode.h"
#include "infer/generate.h"
#include "io/errors.h"
#include "io/json_io.h"
#include "pairs/contrastive.h"
#include "pairs/views.h"
#include "train/metrics.h"
#include "text/prompt.h"
#include "text/utf8.h"

namespace p2dpo::eval {

namespace fs = std::filesystem;

namespace {

const char* kVicunaSystem =
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions.";
const char* kLlavaSystem =
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the human's questions.";

int count_occurrences(const std::string& s, const std::string& needle) {
  int n = 0;
  for (size_t pos = s.find(needle); pos != std::string::npos; pos = s.find(needle, pos + needle.size())) ++n;
  return n;
}

}  // namespace

DecodeOptions::Mode parse_decode_mode(const std::string& s, const std::string& flag) {
  if (s == "greedy") return DecodeOptions::Mode::Greedy;
  if (s == "vcd") return DecodeOptions::Mode::Vcd;
  throw InputError(flag, "unknown decoding '" + s + "' (greedy, vcd)");
}

const char* decode_mode_name(DecodeOptions::Mode m) { return m == DecodeOptions::Mode::Vcd ? "vcd" : "greedy"; }

void check_decode_options(const DecodeOptions& d) {
  if (!d.vcd()) return;
  if (!std::isfinite(d.cd_alpha)) throw InputError("--cd-alpha", fmt::format("{} is not finite", d.cd_alpha));
  if (!(d.cd_beta >= 0.0 && d.cd_beta <= 1.0))
    throw InputError("--cd-beta", fmt::format("{} is outside [0, 1]", d.cd_beta));
  if (d.noise_step < 0 || d.noise_step > 999)
    throw InputError("--vcd-noise-step", fmt::format("{} is outside [0, 999]", d.noise_step));
}

nlohmann::json decode_protocol(const DecodeOptions& d) {
  if (!d.vcd()) return "greedy";
  return {{"mode", "vcd"},
          {"cd_alpha", d.cd_alpha},
          {"cd_beta", d.cd_beta},
          {"noise_step", d.noise_step},
          {"noise", "VCD diffusion noise on the normalized tensor, seed view_seed(seed, image, \"vcd\")"},
          {"seed", d.seed},
          {"token_choice", "argmax of the VCD scores (VCD samples at temperature 1)"}};
}

models::PreparedImage vcd_noisy_view(const models::PreparedImage& clean, const DecodeOptions& d,
                                     const std::string& image_key) {
  models::PreparedImage noisy = clean;
  noisy.pixel_values = pairs::add_diffusion_noise(clean.pixel_values, d.noise_step,
                                                  pairs::view_seed(d.seed, image_key, "vcd"));
  return noisy;
}

std::vector<infer::GenerationResult> generate_decoded(models::VisionLanguageModel& model,
                                                      const std::vector<infer::GenerationRequest>& expert,
                                                      const std::vector<infer::GenerationRequest>& amateur,
                                                      const DecodeOptions& d, int max_new_tokens) {
  infer::SamplingConfig cfg;
  cfg.max_new_tokens = max_new_tokens;
  cfg.temperature = 0.0;
  cfg.stop_on_eos = true;
  if (!d.vcd()) return infer::generate(model, expert, cfg);
  check_decode_options(d);
  if (amateur.size() != expert.size())
    throw std::invalid_argument("generate_decoded: VCD needs one amateur context per expert context");
  std::vector<std::vector<infer::GenerationRequest>> contexts;
  contexts.reserve(expert.size());
  for (size_t i = 0; i < expert.size(); ++i) contexts.push_back({expert[i], amateur[i]});
  pairs::ContrastiveConfig cc;
  cc.lambda = d.cd_alpha;
  cc.beta = d.cd_beta;
  return infer::generate_multi_context(model, contexts, pairs::contrastive_combiner(cc), cfg);
}

void check_or_write_run_record(const std::string& answers_path, const nlohmann::json& protocol,
                               const nlohmann::json& extra) {
  const std::string record_path = answers_path + ".run.json";
  if (fs::exists(record_path)) {
    const nlohmann::json old = io::read_json_file(record_path);
    const nlohmann::json old_protocol = old.contains("protocol") ? old["protocol"] : nlohmann::json();
    for (auto it = protocol.begin(); it != protocol.end(); ++it) {
      const nlohmann::json before = old_protocol.is_object() && old_protocol.contains(it.key())
                                        ? old_protocol[it.key()] : nlohmann::json();
      if (before != it.value()) {
        throw InputError(record_path, fmt::format("the answers beside it were written with {} = {}, this run has {}; "
                                                  "use another --out or delete {}",
                                                  it.key(), before.dump(), it.value().dump(), answers_path));
      }
    }
    return;
  }
  if (fs::exists(answers_path) && fs::file_size(answers_path) > 0) {
    throw InputError(answers_path, "exists without its run record " + record_path +
                                       "; cannot tell how it was made: use another --out or delete it");
  }
  nlohmann::json record = extra.is_object() ? extra : nlohmann::json::object();
  record["protocol"] = protocol;
  io::write_json_atomic(record_path, record);
}

std::string bench_conv_template(const std::string& conv_mode) {
  if (conv_mode == "llava_v1") return std::string(kLlavaSystem) + " USER: <image>\n{question} ASSISTANT:";
  if (conv_mode == "vicuna_v1") return std::string(kVicunaSystem) + " USER: <image>\n{question} ASSISTANT:";
  if (conv_mode == "hf") return "USER: <image>\n{question} ASSISTANT:";
  if (conv_mode == "vlmevalkit") return std::string(kLlavaSystem) + " USER:  <image> {question} ASSISTANT: ";
  throw InputError("--conv-mode", "unknown mode '" + conv_mode + "' (llava_v1, vicuna_v1, hf, vlmevalkit)");
}

std::string bench_prompt(const std::string& prompt_template, const std::string& question, bool with_image) {
  std::string t = prompt_template;
  if (!with_image) {
    const size_t pos = t.find("<image>");
    if (pos != std::string::npos) {
      size_t end = pos + 7;
      if (end < t.size() && (t[end] == '\n' || t[end] == ' ')) ++end;
      t.erase(pos, end - pos);
    }
  }
  const size_t pos = t.find("{question}");
  if (pos == std::string::npos) return t;
  return t.substr(0, pos) + question + t.substr(pos + 10);
}

void check_bench_template(const std::string& prompt_template, const std::string& flag) {
  const int q = count_occurrences(prompt_template, "{question}");
  const int img = text::count_image_markers(prompt_template, "<image>");
  if (q != 1 || img != 1) {
    throw InputError(flag, fmt::format("the template needs exactly one {{question}} and one <image>, found {} and {}: \"{}\"",
                                       q, img, prompt_template));
  }
}

std::string model_id_from_dir(const std::string& dir) {
  fs::path p = fs::path(dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

int64_t run_generation(models::VisionLanguageModel& model, const std::vector<GenerationItem>& items,
                       const GenerationRunOptions& opts, const RecordMaker& make_record, const RecordKey& key_of,
                       const std::vector<std::string>& known_ids) {
  if (opts.batch_size < 1) throw InputError("--batch-size", "must be >= 1");
  if (opts.max_new_tokens < 1) throw InputError("--max-new-tokens", "must be >= 1");
  std::set<std::string> item_ids, known(known_ids.begin(), known_ids.end());
  for (const auto& it : items) {
    if (!item_ids.insert(it.id).second) throw std::invalid_argument("run_generation: duplicate item id " + it.id);
  }
  check_decode_options(opts.decode);
  nlohmann::json protocol = opts.protocol.is_object() ? opts.protocol : nlohmann::json::object();
  protocol["decoding"] = decode_protocol(opts.decode);
  check_or_write_run_record(opts.answers_path, protocol);
  io::JsonlAppender appender(opts.answers_path);  // cuts a torn last line
  std::set<std::string> done;
  {
    const auto records = io::read_jsonl_file(opts.answers_path);
    for (size_t i = 0; i < records.size(); ++i) {
      const std::string id = key_of(records[i], i + 1);
      if (!item_ids.count(id) && !known.count(id)) {
        throw InputError(opts.answers_path, fmt::format("line {}: '{}' is not a question of this run; the file "
                                                        "belongs to another benchmark or selection", i + 1, id));
      }
      done.insert(id);
    }
  }
  int64_t already = 0;
  for (const auto& it : items) already += done.count(it.id);

  const bool vcd = opts.decode.vcd();
  const auto start = std::chrono::steady_clock::now();
  int64_t written_total = 0;
  const size_t B = static_cast<size_t>(opts.batch_size);
  for (size_t b0 = 0; b0 < items.size(); b0 += B) {
    const size_t b1 = std::min(items.size(), b0 + B);
    bool complete = true;
    for (size_t i = b0; i < b1 && complete; ++i) complete = done.count(items[i].id) > 0;
    if (complete) continue;
    // The whole fixed batch runs again even if part of it was answered, so padding and batched
    // arithmetic match the uninterrupted run exactly.
    std::map<std::string, size_t> image_index;
    std::vector<models::PreparedImage> prepared;
    std::vector<std::string> image_keys;
    for (size_t i = b0; i < b1; ++i) {
      const auto& path = items[i].image_path;
      if (path.empty() || image_index.count(path)) continue;
      image_index[path] = prepared.size();
      prepared.push_back(model.prepare_image(image::decode_image_file(path)));
      image_keys.push_back(items[i].image_key.empty() ? fs::path(path).filename().string() : items[i].image_key);
    }
    // VCD: each image's noisy view is encoded in the same call, rows M + k.
    const int64_t M = static_cast<int64_t>(prepared.size());
    std::vector<models::PreparedImage> to_encode = prepared;
    if (vcd) {
      for (size_t k = 0; k < prepared.size(); ++k) to_encode.push_back(vcd_noisy_view(prepared[k], opts.decode, image_keys[k]));
    }
    torch::Tensor features;
    if (!to_encode.empty()) {
      torch::NoGradGuard no_grad;
      features = model.encode_images(to_encode);
    }
    std::vector<infer::GenerationRequest> requests, amateurs;
    for (size_t i = b0; i < b1; ++i) {
      const auto& it = items[i];
      infer::GenerationRequest req;
      if (it.image_path.empty()) {
        req.prompt_ids = model.tokenize_prompt(it.prompt, {});
        if (vcd) amateurs.push_back(req);  // nothing to contrast: the expert's own context
      } else {
        const auto k = static_cast<int64_t>(image_index.at(it.image_path));
        req.prompt_ids = model.tokenize_prompt(it.prompt, {prepared[static_cast<size_t>(k)]});
        req.image_features = features.slice(0, k, k + 1);
        if (vcd) {
          infer::GenerationRequest am = req;
          am.image_features = features.slice(0, M + k, M + k + 1);
          amateurs.push_back(std::move(am));
        }
      }
      requests.push_back(std::move(req));
    }
    const auto generated = generate_decoded(model, requests, amateurs, opts.decode, opts.max_new_tokens);
    for (size_t i = b0; i < b1; ++i) {
      if (done.count(items[i].id)) continue;
      // LLaVA: batch_decode(skip_special_tokens=True)[0].strip()
      const std::string answer =
          text::python_rstrip(text::python_lstrip(model.decode(generated[i - b0].token_ids)));
      appender.write(make_record(i, answer));
      done.insert(items[i].id);
      ++written_total;
    }
    if (opts.progress) {
      const int64_t now_done = already + written_total;
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double rate = elapsed > 0 ? written_total / elapsed : 0.0;
      const double eta = rate > 0 ? (static_cast<double>(items.size()) - now_done) / rate : NAN;
      std::cerr << fmt::format("[{}] {}/{} ({:.1f}%), {:.2f} q/s, ETA {}\n", opts.progress_label, now_done,
                               items.size(), items.empty() ? 100.0 : 100.0 * now_done / items.size(), rate,
                               train::ProgressLine::format_duration(eta));
    }
  }
  appender.close();
  return written_total;
}

}  // namespace p2dpo::eval
