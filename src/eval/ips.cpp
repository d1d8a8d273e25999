#include "eval/ips.h"

#include <torch/types.h>
#include <torch/utils.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "image/decode.h"
#include "io/atomic_file.h"
#include "io/errors.h"
#include "io/json_io.h"
#include "pairs/filter.h"
#include "pairs/responses.h"
#include "pairs/views.h"
#include "train/metrics.h"
#include "train/pair_data.h"

namespace p2dpo::eval {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

bool is_p2dpo_pairs(const std::string& path) {
  if (fs::is_directory(path)) return true;
  // A `p2dpo pairs` record has "prompts" and "reference"; anything else is an external pair file.
  std::ifstream in(path);
  std::string first;
  std::getline(in, first);
  try {
    const json j = json::parse(first);
    return j.is_object() && j.contains("prompts") && j.contains("reference");
  } catch (const json::exception&) {
    return false;
  }
}

json table(const std::vector<double>& ips) {
  json t = pairs::ips_table(ips);
  // ddof = 1 beside the population std (evaluation.md §8 prints both).
  double n = 0, mean = 0, ss = 0;
  for (double v : ips)
    if (std::isfinite(v)) n += 1, mean += v;
  if (n > 0) mean /= n;
  for (double v : ips)
    if (std::isfinite(v)) ss += (v - mean) * (v - mean);
  t["std_ddof1"] = n > 1 ? std::sqrt(ss / (n - 1)) : 0.0;
  return t;
}

void write_outputs(const IpsOptions& opt, const std::vector<json>& rows, const json& doc) {
  if (opt.out_dir.empty()) return;
  fs::create_directories(opt.out_dir);
  std::string text;
  for (const auto& r : rows) text += r.dump() + "\n";
  io::write_file_atomic((fs::path(opt.out_dir) / "ips.jsonl").string(), text);
  io::write_json_atomic((fs::path(opt.out_dir) / "results.json").string(), doc);
}

train::PairDataOptions data_options(const IpsOptions& opt) {
  train::PairDataOptions po;
  po.images_dir = opt.images_dir;
  po.kept_only = opt.kept_only;
  po.limit = opt.limit;
  return po;
}

}  // namespace

json measure_ips(models::VisionLanguageModel& model, const IpsOptions& opt) {
  const bool p2dpo = is_p2dpo_pairs(opt.pairs_path);
  const auto data = p2dpo ? train::load_p2dpo_pairs(opt.pairs_path, data_options(opt))
                          : train::load_external_pairs(opt.pairs_path, opt.images_dir, opt.prompt_template, opt.limit);
  torch::NoGradGuard no_grad;
  std::vector<double> focus, robust;
  std::vector<json> rows;
  train::ProgressLine progress("ips", static_cast<int64_t>(data.size()));
  for (size_t i = 0; i < data.size(); ++i) {
    const auto& p = data[i];
    const image::ImageU8 img = image::decode_image_file(p.image_path);
    const models::PreparedImage clean = model.prepare_image(img);
    json row = {{"id", p.id}};
    const double fw = pairs::response_logprob_sum(model, {clean}, p.prompt, p.focus_chosen);
    const double fl = pairs::response_logprob_sum(model, {clean}, p.prompt, p.focus_rejected);
    focus.push_back(fw - fl);
    row[p2dpo ? "focus" : "external"] = {{"chosen", fw}, {"rejected", fl}, {"ips", fw - fl}};
    if (p.has_robust) {
      const models::PreparedImage noisy = pairs::noisy_view(model, img, p.noise, p.noise_seed);
      const double rw = pairs::response_logprob_sum(model, {noisy}, p.prompt, p.robust_chosen);
      const double rl = pairs::response_logprob_sum(model, {noisy}, p.prompt, p.robust_rejected);
      robust.push_back(rw - rl);
      row["robust"] = {{"chosen", rw}, {"rejected", rl}, {"ips", rw - rl}};
    }
    rows.push_back(std::move(row));
    if (opt.progress) progress.update(static_cast<int64_t>(i) + 1);
  }
  json doc = {{"benchmark", "ips"}, {"pairs", opt.pairs_path}, {"source", "model"}, {"n_pairs", data.size()}};
  if (p2dpo) {
    doc["focus"] = table(focus);
    doc["robust"] = table(robust);
  } else {
    doc["external"] = table(focus);
  }
  write_outputs(opt, rows, doc);
  return doc;
}

json recorded_ips(const IpsOptions& opt) {
  if (!is_p2dpo_pairs(opt.pairs_path))
    throw InputError(opt.pairs_path, "recorded IPS needs `p2dpo pairs` records (with 'reference'); give --model to measure external pairs");
  std::vector<double> focus, robust;
  std::vector<json> rows;
  // Read the records directly: the recorded values need no images.
  std::string file = opt.pairs_path;
  if (fs::is_directory(file)) file = (fs::path(file) / (opt.kept_only ? "filtered.jsonl" : "pairs.jsonl")).string();
  const auto records = io::read_jsonl_file(file);
  for (size_t i = 0; i < records.size(); ++i) {
    if (opt.limit > 0 && static_cast<int64_t>(i) >= opt.limit) break;
    const json& r = records[i];
    const std::string ctx = "line " + std::to_string(i + 1);
    if (!r.contains("reference")) throw InputError(file, ctx + ": missing required field 'reference'");
    const json& ref = r["reference"];
    const double fw = io::get_required<double>(ref, "focus_chosen", file, "reference");
    const double fl = io::get_required<double>(ref, "focus_rejected", file, "reference");
    const double rw = io::get_required<double>(ref, "robust_chosen", file, "reference");
    const double rl = io::get_required<double>(ref, "robust_rejected", file, "reference");
    focus.push_back(fw - fl);
    robust.push_back(rw - rl);
    rows.push_back({{"id", r.value("id", std::to_string(i))}, {"focus", {{"ips", fw - fl}}}, {"robust", {{"ips", rw - rl}}}});
  }
  json doc = {{"benchmark", "ips"}, {"pairs", opt.pairs_path}, {"source", "recorded"}, {"n_pairs", rows.size()},
              {"focus", table(focus)}, {"robust", table(robust)}};
  write_outputs(opt, rows, doc);
  return doc;
}

}  // namespace p2dpo::eval
