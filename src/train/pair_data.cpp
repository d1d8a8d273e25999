#include "train/pair_data.h"

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "io/errors.h"
#include "io/json_io.h"
#include "pairs/config.h"

namespace p2dpo::train {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::vector<json> read_records(const std::string& path) {
  // JSONL, or one JSON array (RLHF-V / LLaVA style files).
  std::ifstream in(path);
  if (!in) throw InputError(path, "cannot open");
  char first = 0;
  while (in.get(first) && std::isspace(static_cast<unsigned char>(first))) {}
  if (first == '[') {
    const json all = io::read_json_file(path);
    return std::vector<json>(all.begin(), all.end());
  }
  return io::read_jsonl_file(path);
}

std::string resolve_image(const std::string& images_dir, const std::string& image, const std::string& where) {
  if (image.empty()) throw InputError(where, "field 'image' is empty");
  fs::path p(image);
  if (p.is_relative() && !images_dir.empty()) p = fs::path(images_dir) / p;
  if (!fs::exists(p)) throw InputError(where, "image '" + p.string() + "' does not exist");
  return p.string();
}

pairs::PixelBox read_box(const json& rec, const std::string& file, const std::string& where) {
  const auto b = io::get_required<std::vector<int>>(rec, "bbox", file, "");
  if (b.size() != 4 || b[2] <= b[0] || b[3] <= b[1])
    throw InputError(where, "field 'bbox' must be [x1, y1, x2, y2] with x2 > x1 and y2 > y1");
  return {b[0], b[1], b[2], b[3]};
}

TrainingPair read_p2dpo_record(const json& rec, const std::string& file, int64_t line, const std::string& images_dir) {
  const std::string where = file + ":" + std::to_string(line);
  TrainingPair p;
  p.source = where;
  try {
    p.id = io::get_required<std::string>(rec, "id", file, "");
    p.image_path = resolve_image(images_dir, io::get_required<std::string>(rec, "image", file, ""), where);
    const json& prompts = rec.at("prompts");
    p.prompt = io::get_required<std::string>(prompts, "P", file, "prompts");
    p.prompt_aug = io::get_required<std::string>(prompts, "P_aug", file, "prompts");
    p.bbox = read_box(rec, file, where);
    const json& focus = rec.at("focus");
    p.focus_chosen = io::get_required<std::string>(focus, "chosen", file, "focus");
    p.focus_rejected = io::get_required<std::string>(focus, "rejected", file, "focus");
    const json& robust = rec.at("robust");
    p.robust_chosen = io::get_required<std::string>(robust, "chosen", file, "robust");
    p.robust_rejected = io::get_required<std::string>(robust, "rejected", file, "robust");
    p.has_focus = p.has_robust = true;
    const json& views = rec.at("views");
    const json& erase = views.at("erase");
    p.erase.mode = io::get_required<std::string>(erase, "mode", file, "views.erase");
    p.erase.alpha = io::get_required<double>(erase, "alpha", file, "views.erase");
    p.erase.blur_sigma = io::get_required<double>(erase, "blur_sigma", file, "views.erase");
    p.erase.pil_inclusive_end = io::get_required<bool>(erase, "pil_inclusive_end", file, "views.erase");
    const json& noise = views.at("noise");
    p.noise.mode = io::get_required<std::string>(noise, "mode", file, "views.noise");
    p.noise.diffusion_step = io::get_required<int>(noise, "diffusion_step", file, "views.noise");
    p.noise.pixel_sigma = io::get_required<double>(noise, "pixel_sigma", file, "views.noise");
    p.noise_seed = io::get_required<uint64_t>(noise, "seed", file, "views.noise");
    const json& ref = rec.at("reference");
    ReferenceLogps r;
    r.focus_chosen = io::get_required<double>(ref, "focus_chosen", file, "reference");
    r.focus_rejected = io::get_required<double>(ref, "focus_rejected", file, "reference");
    r.calib_rejected_aug = io::get_required<double>(ref, "calib_rejected_aug", file, "reference");
    r.calib_rejected_deg = io::get_required<double>(ref, "calib_rejected_deg", file, "reference");
    r.robust_chosen = io::get_required<double>(ref, "robust_chosen", file, "reference");
    r.robust_rejected = io::get_required<double>(ref, "robust_rejected", file, "reference");
    p.reference = r;
    if (rec.contains("clip") && rec["clip"].is_object()) {
      p.clip_image = io::get_required<double>(rec["clip"], "image", file, "clip");
      p.clip_crop = io::get_required<double>(rec["clip"], "crop", file, "clip");
    }
  } catch (const json::exception& e) {
    // .at() on a missing section: name it.
    throw InputError(where, std::string("record is missing a section of a p2dpo pairs record (") + e.what() + ")");
  } catch (const InputError& e) {
    const std::string msg = e.what();
    throw InputError(where, msg.rfind(file + ": ", 0) == 0 ? msg.substr(file.size() + 2) : msg);
  }
  return p;
}

}  // namespace

std::vector<TrainingPair> load_p2dpo_pairs(const std::string& pairs_path, const PairDataOptions& opt) {
  std::string file = pairs_path;
  std::string images_dir = opt.images_dir;
  if (fs::is_directory(pairs_path)) {
    file = (fs::path(pairs_path) / (opt.kept_only ? "filtered.jsonl" : "pairs.jsonl")).string();
    if (!fs::exists(file))
      throw InputError(pairs_path, "no " + fs::path(file).filename().string() +
                                       " (is this a finished `p2dpo pairs` output directory?)");
    if (images_dir.empty()) {
      const std::string manifest = (fs::path(pairs_path) / "manifest.json").string();
      if (!fs::exists(manifest)) throw InputError(pairs_path, "no manifest.json to take the images directory from; give --images");
      images_dir = io::get_required<std::string>(io::read_json_file(manifest), "images", manifest, "");
    }
  } else if (!fs::exists(pairs_path)) {
    throw InputError(pairs_path, "no such pairs file or directory");
  }
  const std::vector<json> records = io::read_jsonl_file(file);
  std::vector<TrainingPair> out;
  for (size_t i = 0; i < records.size(); ++i) {
    if (opt.limit > 0 && static_cast<int64_t>(out.size()) >= opt.limit) break;
    out.push_back(read_p2dpo_record(records[i], file, static_cast<int64_t>(i) + 1, images_dir));
  }
  if (out.empty()) throw InputError(file, "no pairs to train on");
  return out;
}

std::vector<TrainingPair> load_external_pairs(const std::string& path, const std::string& images_dir,
                                              const std::string& prompt_template, int64_t limit) {
  if (!fs::exists(path)) throw InputError(path, "no such pairs file");
  const std::vector<json> records = read_records(path);
  std::vector<TrainingPair> out;
  auto strip_marker = [](std::string q) {
    for (size_t pos; (pos = q.find("<image>")) != std::string::npos;) q.erase(pos, 7);
    const auto b = q.find_first_not_of(" \n"), e = q.find_last_not_of(" \n");
    return b == std::string::npos ? std::string() : q.substr(b, e - b + 1);
  };
  for (size_t i = 0; i < records.size(); ++i) {
    if (limit > 0 && static_cast<int64_t>(out.size()) >= limit) break;
    const json& r = records[i];
    const std::string where = path + ":" + std::to_string(i + 1);
    TrainingPair p;
    p.source = where;
    std::string question, chosen, rejected;
    try {
      if (r.contains("chosen")) {
        question = io::get_required<std::string>(r, "question", path, "");
        chosen = io::get_required<std::string>(r, "chosen", path, "");
        rejected = io::get_required<std::string>(r, "rejected", path, "");
      } else if (r.contains("text") && r["text"].is_string()) {  // RLHF-V: a JSON string
        json t;
        try {
          t = json::parse(r["text"].get<std::string>());
        } catch (const json::exception& e) {
          throw InputError(where, std::string("field 'text' is not JSON: ") + e.what());
        }
        question = io::get_required<std::string>(t, "question", path, "text");
        chosen = io::get_required<std::string>(t, "chosen", path, "text");
        rejected = io::get_required<std::string>(t, "rejected", path, "text");
      } else if (r.contains("conversations") && r.contains("contrastive_conversations")) {  // V-DPO
        const json& c = r["conversations"];
        const json& k = r["contrastive_conversations"];
        if (!c.is_array() || c.size() < 2 || !k.is_array() || k.size() < 2)
          throw InputError(where, "fields 'conversations' and 'contrastive_conversations' need a human and a gpt turn");
        question = io::get_required<std::string>(c[0], "value", path, "conversations[0]");
        chosen = io::get_required<std::string>(c[1], "value", path, "conversations[1]");
        rejected = io::get_required<std::string>(k[1], "value", path, "contrastive_conversations[1]");
      } else {
        throw InputError(where, "expected 'question'/'chosen'/'rejected', RLHF-V's 'text' or V-DPO's 'conversations' + 'contrastive_conversations'");
      }
      p.id = r.contains("id") ? (r["id"].is_string() ? r["id"].get<std::string>() : r["id"].dump())
                              : (r.contains("idx") ? r["idx"].dump() : std::to_string(i));
      p.image_path = resolve_image(images_dir, io::get_required<std::string>(r, "image", path, ""), where);
    } catch (const InputError& e) {
      const std::string msg = e.what();
      throw InputError(where, msg.rfind(path + ": ", 0) == 0 ? msg.substr(path.size() + 2) : msg);
    }
    p.prompt = pairs::fill_question(prompt_template, strip_marker(question));
    p.focus_chosen = chosen;
    p.focus_rejected = rejected;
    p.has_focus = true;
    out.push_back(std::move(p));
  }
  if (out.empty()) throw InputError(path, "no pairs to train on");
  return out;
}

}  // namespace p2dpo::train
