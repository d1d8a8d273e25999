#include "pairs/pipeline.h"

#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <future>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "image/decode.h"
#include "image/png_write.h"
#include "infer/attention.h"
#include "infer/generate.h"
#include "io/atomic_file.h"
#include "io/errors.h"
#include "io/json_io.h"
#include "models/device_memory.h"
#include "models/op_profile.h"
#include "models/runtime_info.h"
#include "models/synced_lap.h"
#include "pairs/clip_scorer.h"
#include "pairs/contrastive.h"
#include "pairs/crop.h"
#include "pairs/filter.h"
#include "pairs/heatmap.h"
#include "pairs/responses.h"
#include "pairs/views.h"
#include "train/metrics.h"
#include "train/multiview.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace p2dpo::pairs {

// ---------------------------------------------------------------------------------------------
// Input

namespace {
std::string strip_image_marker(std::string text) {
  for (const std::string m : {"<image>\n", "\n<image>", "<image>"}) {
    for (size_t p; (p = text.find(m)) != std::string::npos;) text.erase(p, m.size());
  }
  const auto b = text.find_first_not_of(" \n\t"), e = text.find_last_not_of(" \n\t");
  return b == std::string::npos ? "" : text.substr(b, e - b + 1);
}

std::string id_of(const json& rec, int64_t index) {
  for (const char* key : {"id", "idx", "question_id"}) {
    if (!rec.contains(key)) continue;
    const auto& v = rec.at(key);
    if (v.is_string()) return v.get<std::string>();
    if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  }
  return std::to_string(index);
}
}  // namespace

std::vector<PromptSample> load_prompt_samples(const std::string& path) {
  if (!fs::exists(path)) throw InputError(path, "no such data file");
  const bool jsonl = path.size() >= 6 && path.compare(path.size() - 6, 6, ".jsonl") == 0;
  std::vector<json> items;
  if (jsonl) {
    items = io::read_jsonl_file(path);
  } else {
    json all = io::read_json_file(path);
    if (all.is_object()) {
      for (const char* key : {"data", "records", "examples"})
        if (all.contains(key)) {
          all = all.at(key);
          break;
        }
    }
    if (!all.is_array()) throw InputError(path, "must be a JSON list of records (LLaVA conversation format) or JSONL");
    items.assign(all.begin(), all.end());
  }
  std::vector<PromptSample> out;
  for (size_t i = 0; i < items.size(); ++i) {
    const json& rec = items[i];
    const std::string where = "record " + std::to_string(i);
    if (!rec.is_object()) throw InputError(path, where + " is not an object");
    PromptSample s;
    s.index = static_cast<int64_t>(i);
    s.id = id_of(rec, s.index);
    s.image = io::get_required<std::string>(rec, "image", path, where);
    if (rec.contains("question")) {
      s.question = io::get_required<std::string>(rec, "question", path, where);
    } else if (rec.contains("conversations")) {
      const auto& conv = rec.at("conversations");
      if (!conv.is_array() || conv.empty() || !conv[0].is_object())
        throw InputError(path, where + ": field 'conversations' must be a non-empty list of turns");
      s.question = io::get_required<std::string>(conv[0], "value", path, where + " conversations[0]");
    } else {
      throw InputError(path, where + ": needs a 'question' field or a 'conversations' list");
    }
    s.question = strip_image_marker(s.question);
    if (s.question.empty()) throw InputError(path, where + ": the question is empty");
    out.push_back(std::move(s));
  }
  if (out.empty()) throw InputError(path, "holds no samples");
  return out;
}

std::vector<int> attention_layers(const AttentionConfig& cfg, int num_layers) {
  if (!cfg.layers.empty()) {
    for (int l : cfg.layers)
      if (l < 0 || l >= num_layers)
        throw InputError("attention.layers", "layer " + std::to_string(l) + " is outside 0.." + std::to_string(num_layers - 1));
    return cfg.layers;
  }
  const int l = static_cast<int>(std::lround(14.0 / 32.0 * num_layers));
  return {std::clamp(l, 0, num_layers - 1)};
}

// ---------------------------------------------------------------------------------------------
// One batch of samples

namespace {

// Wall time per stage of a batch, each stage ended by a device sync on CUDA (models/synced_lap.h),
// and on CUDA the allocator's peak memory within the stage (the largest over batches).
class StageClock {
 public:
  StageClock(const models::VisionLanguageModel& model, std::map<std::string, double>* totals,
             std::map<std::string, models::DeviceMemoryPeak>* peaks)
      : lap_(model.device().is_cuda()), totals_(totals), peaks_(model.device().is_cuda() ? peaks : nullptr),
        device_index_(model.device().is_cuda() ? model.device().index() : -1) {
    if (device_index_ < 0) device_index_ = 0;  // "cuda" without an index: the current device, 0 here
    if (peaks_) models::take_device_memory_peak(device_index_);  // this batch's stages only
  }
  void lap(const std::string& stage) {
    const double s = lap_.next(stage.c_str());
    if (totals_) (*totals_)[stage] += s;
    if (!peaks_) return;
    if (const auto p = models::take_device_memory_peak(device_index_)) {
      auto& kept = (*peaks_)[stage];
      kept.allocated_bytes = std::max(kept.allocated_bytes, p->allocated_bytes);
      kept.reserved_bytes = std::max(kept.reserved_bytes, p->reserved_bytes);
    }
  }

 private:
  models::SyncedLap lap_;
  std::map<std::string, double>* totals_;
  std::map<std::string, models::DeviceMemoryPeak>* peaks_;
  int device_index_;
};

struct SampleWork {
  const PromptSample* sample = nullptr;
  image::ImageU8 original, crop, erased;
  AttentionGrid grid;
  int64_t first_token = -1;
  AdaptiveCropResult crop_result, inverse_result;
  models::PreparedImage p_orig, p_crop, p_deg, p_noise;
  uint64_t noise_seed = 0, chosen_seed = 0, loser_seed = 0;
  std::string P, P_two, P_att, P_enh, P_rob, P_loser;
};

struct GeneratedText {
  std::string text;
  int tokens = 0;
  double logp_mean = 0.0, ppl = 1.0;
  bool stopped_on_eos = false;
};

GeneratedText to_text(const models::VisionLanguageModel& model, const infer::GenerationResult& r) {
  GeneratedText g;
  std::vector<int64_t> ids = r.token_ids;
  if (r.stopped_on_eos && !ids.empty()) ids.pop_back();
  std::string t = model.decode(ids);
  const auto b = t.find_first_not_of(" \n\t"), e = t.find_last_not_of(" \n\t");
  g.text = b == std::string::npos ? "" : t.substr(b, e - b + 1);
  g.tokens = static_cast<int>(r.token_ids.size());
  g.stopped_on_eos = r.stopped_on_eos;
  if (!r.logprobs.empty()) {
    double s = 0;
    for (float v : r.logprobs) s += v;
    g.logp_mean = s / static_cast<double>(r.logprobs.size());
    g.ppl = std::exp(-g.logp_mean);
  }
  return g;
}

json box_json(const PixelBox& b) { return json::array({b.x1, b.y1, b.x2, b.y2}); }

AttentionGrid grid_of(const SampleWork& w, torch::Tensor map);

// Adds a gradient-attention call's parts to the stage times (sub-items of "attention").
void add_attention_parts(std::map<std::string, double>* parts, const infer::GradAttention& g) {
  if (!parts) return;
  (*parts)["attention.encode"] += g.encode_s;
  (*parts)["attention.forward"] += g.forward_s;
  (*parts)["attention.backward"] += g.backward_s;
}

AttentionGrid attention_grid(models::VisionLanguageModel& model, const SampleWork& w, const PairsConfig& cfg,
                             int64_t& first_token, std::map<std::string, double>* parts) {
  const std::vector<models::PreparedImage> imgs = {w.p_orig};
  const auto ids = model.tokenize_prompt(w.P_att, imgs);
  const auto layers = attention_layers(cfg.attention, model.info().num_layers);
  torch::Tensor map;
  if (cfg.attention.method == "grad") {
    for (int l : layers) {
      auto g = infer::gradient_weighted_attention(model, imgs, ids, l);
      add_attention_parts(parts, g);
      map = map.defined() ? map + g.map : g.map;
      first_token = g.first_token;
    }
    map = map / static_cast<double>(layers.size());
  } else {
    std::vector<int> use = layers;
    const bool all_layers = cfg.attention.method == "layer_mean" || cfg.attention.method == "tok_img";
    if (all_layers) {
      use.clear();
      for (int l = 0; l < model.info().num_layers; ++l) use.push_back(l);
    }
    auto att = infer::attention_to_images(model, imgs, ids, use, {-1});
    for (auto& [l, m] : att.maps) {
      torch::Tensor layer_map = m.select(0, 0);
      // tok_img, the paper's A = A_tok ⊗ A_img (App. B): A_tok is each layer's head-mean attention
      // of the answer position (the last prompt token, which emits the first answer token) over
      // the image tokens, A_img the connector's map from image tokens to grid cells. An MLP
      // projector maps token i to cell i (A_img = identity on the token grid, L_c = 1), so A is the
      // stack of per-layer maps; each is normalised to a distribution over the image before the
      // layers are averaged, so layers that attend to the image little still shape the crop.
      if (cfg.attention.method == "tok_img") layer_map = layer_map / layer_map.sum().clamp_min(1e-12);
      map = map.defined() ? map + layer_map : layer_map.clone();
    }
    map = map / static_cast<double>(att.maps.size());
  }
  return grid_of(w, map);
}

// The head-mean map over the image tokens as the image-token grid (row-major), on the host.
AttentionGrid grid_of(const SampleWork& w, torch::Tensor map) {
  AttentionGrid grid;
  grid.rows = w.p_orig.grid_h;
  grid.cols = w.p_orig.grid_w;
  map = map.to(torch::kCPU, torch::kFloat64).contiguous();
  if (map.numel() != static_cast<int64_t>(grid.rows) * grid.cols) {
    throw std::runtime_error("attention map has " + std::to_string(map.numel()) + " image tokens, the grid " +
                             std::to_string(grid.rows) + "x" + std::to_string(grid.cols));
  }
  grid.values.assign(map.data_ptr<double>(), map.data_ptr<double>() + map.numel());
  return grid;
}

// Every sample's grid. ViCrop's gradient map (`grad`) runs `attention.batch` prompts per
// left-padded forward; the other methods, and batch 1, run one prompt per forward.
void attention_grids(models::VisionLanguageModel& model, std::vector<SampleWork>& work, const PairsConfig& cfg,
                     std::map<std::string, double>* parts) {
  const size_t per_forward = static_cast<size_t>(std::max(1, cfg.attention.batch));
  if (cfg.attention.method != "grad" || per_forward == 1) {
    for (auto& w : work) w.grid = attention_grid(model, w, cfg, w.first_token, parts);
    return;
  }
  const auto layers = attention_layers(cfg.attention, model.info().num_layers);
  for (size_t i0 = 0; i0 < work.size(); i0 += per_forward) {
    const size_t i1 = std::min(work.size(), i0 + per_forward);
    std::vector<std::vector<models::PreparedImage>> images;
    std::vector<std::vector<int64_t>> ids;
    for (size_t i = i0; i < i1; ++i) {
      images.push_back({work[i].p_orig});
      ids.push_back(model.tokenize_prompt(work[i].P_att, images.back()));
    }
    std::vector<torch::Tensor> maps(i1 - i0);
    for (int l : layers) {
      const auto g = infer::gradient_weighted_attention_batch(model, images, ids, l,
                                                              cfg.decoding.encoded_together_on(model.device().is_cuda()));
      for (size_t k = 0; k < g.size(); ++k) {
        add_attention_parts(parts, g[k]);
        maps[k] = maps[k].defined() ? maps[k] + g[k].map : g[k].map;
        work[i0 + k].first_token = g[k].first_token;
      }
    }
    for (size_t k = 0; k < maps.size(); ++k)
      work[i0 + k].grid = grid_of(work[i0 + k], maps[k] / static_cast<double>(layers.size()));
  }
}

// The same grid with high and low attention swapped: its adaptive crop is the paper's
// "att_inverse" control (App. G: crop from the complementary, low-attention region).
AttentionGrid inverted(const AttentionGrid& g) {
  AttentionGrid inv = g;
  const double hi = *std::max_element(g.values.begin(), g.values.end());
  for (auto& v : inv.values) v = hi - v;
  return inv;
}

// A sample's image and prompts, before its attention map.
SampleWork start_sample(models::VisionLanguageModel& model, const PromptSample& s, const PairsConfig& cfg,
                        const std::string& images_dir) {
  SampleWork w;
  w.sample = &s;
  w.original = image::decode_image_file((fs::path(images_dir) / s.image).string());
  const auto& pc = cfg.prompt;
  const std::string two_slots = with_image_slots(pc.template_, pc.image_marker, 2);
  w.P = fill_question(pc.template_, s.question);
  w.P_two = fill_question(two_slots, s.question);
  w.P_att = fill_question(pc.template_, pc.attention == "locate" ? fill_question(pc.locate, s.question) : s.question);
  w.P_enh = fill_question(two_slots, fill_question(pc.enhanced, s.question));
  w.P_rob = fill_question(pc.template_, fill_question(cfg.robust.prompt, s.question));
  w.P_loser = fill_question(pc.template_, fill_question(cfg.robust.loser_prompt, s.question));

  w.p_orig = model.prepare_image(w.original);
  return w;
}

// The crop from its attention grid, and the views built from it.
void finish_sample(models::VisionLanguageModel& model, SampleWork& w, const PairsConfig& cfg) {
  const PromptSample& s = *w.sample;
  AdaptiveCropConfig cc;
  const double side = model.info().vision_input_size;
  cc.base_w = cfg.crop.base_width > 0 ? cfg.crop.base_width : side;
  cc.base_h = cfg.crop.base_height > 0 ? cfg.crop.base_height : side;
  cc.ratios = cfg.crop.ratios;
  w.crop_result = adaptive_crop(w.grid, w.original.width, w.original.height, cc);
  w.inverse_result = adaptive_crop(inverted(w.grid), w.original.width, w.original.height, cc);

  w.crop = crop_view(w.original, w.crop_result.box);
  EraseConfig ec;
  ec.mode = cfg.erase.mode;
  ec.alpha = cfg.erase.alpha;
  ec.blur_sigma = cfg.erase.blur_sigma;
  ec.pil_inclusive_end = cfg.erase.pil_inclusive_end;
  w.erased = erase_region(w.original, w.crop_result.box, ec);
  w.noise_seed = view_seed(cfg.seed, s.id, "noise");
  w.chosen_seed = view_seed(cfg.seed, s.id, "robust_chosen");
  w.loser_seed = view_seed(cfg.seed, s.id, "robust_rejected");
  NoiseConfig nc;
  nc.mode = cfg.noise.mode;
  nc.diffusion_step = cfg.noise.diffusion_step;
  nc.pixel_sigma = cfg.noise.pixel_sigma;
  w.p_crop = model.prepare_image(w.crop);
  w.p_deg = model.prepare_image(w.erased);
  w.p_noise = noisy_view(model, w.original, nc, w.noise_seed);
}

// A generation request on some of a sample's views, given as rows of its encoded views
// [n_views, T, hidden] (each view is encoded once per sample, for every request and the
// reference scoring).
infer::GenerationRequest request(models::VisionLanguageModel& model, const std::string& prompt,
                                 const std::vector<models::PreparedImage>& imgs, const torch::Tensor& view_features,
                                 const std::vector<int64_t>& rows) {
  infer::GenerationRequest r;
  r.prompt_ids = model.tokenize_prompt(prompt, imgs);
  r.image_features = view_features.index_select(0, torch::tensor(rows, torch::kInt64).to(view_features.device()));
  return r;
}

// Runs fn(i) for every sample of a batch, each on its own thread: a sample's image work (decoding,
// preprocessing, crop, erase, noise) is a pure function of the sample, seeded per sample, so the
// results are a serial loop's. The first failure in sample order is rethrown, as the loop would.
template <typename Fn>
void for_each_sample(size_t n, Fn fn) {
  std::vector<std::future<void>> jobs;
  jobs.reserve(n);
  for (size_t i = 0; i < n; ++i) jobs.push_back(std::async(std::launch::async, [&fn, i] { fn(i); }));
  for (auto& j : jobs) j.get();
}

std::vector<json> run_batch(models::VisionLanguageModel& model, const ClipScorer* clip, const PairsConfig& cfg,
                            const std::vector<const PromptSample*>& batch, const PairsRunOptions& opt,
                            const std::string& out_dir, std::map<std::string, double>* stage_seconds,
                            std::map<std::string, models::DeviceMemoryPeak>* stage_peaks) {
  StageClock clock(model, stage_seconds, stage_peaks);
  std::vector<SampleWork> work(batch.size());
  for_each_sample(batch.size(), [&](size_t i) { work[i] = start_sample(model, *batch[i], cfg, opt.images_dir); });
  clock.lap("decode_and_preprocess");
  attention_grids(model, work, cfg, stage_seconds);
  clock.lap("attention");
  for_each_sample(work.size(), [&](size_t i) { finish_sample(model, work[i], cfg); });
  clock.lap("views");
  torch::NoGradGuard no_grad;
  // Each sample's four views, encoded once: rows 0 I, 1 I_crop, 2 I_deg, 3 I_noise.
  std::vector<torch::Tensor> view_features;
  if (cfg.decoding.encoded_together_on(model.device().is_cuda())) {
    std::vector<models::PreparedImage> views;
    for (const auto& w : work) views.insert(views.end(), {w.p_orig, w.p_crop, w.p_deg, w.p_noise});
    const auto all = model.encode_images(views);
    for (size_t i = 0; i < work.size(); ++i) view_features.push_back(all.narrow(0, static_cast<int64_t>(4 * i), 4));
  } else {
    for (const auto& w : work) view_features.push_back(model.encode_images({w.p_orig, w.p_crop, w.p_deg, w.p_noise}));
  }
  clock.lap("encode_views");

  // The batch's answers, one decoding group per kind (infer::DecodeGroup).
  // Focus pairs: greedy on (I, I_crop) with P_enh (chosen) and on I_deg with P (rejected).
  auto decoding = [&](infer::SamplingConfig c) {
    c.min_new_tokens = cfg.min_new_tokens;
    c.fixed_cache = cfg.decoding.fixed_cache;  // unset: generate_groups() decides by device
    c.cuda_graphs = cfg.decoding.cuda_graphs;
    return c;
  };
  infer::SamplingConfig focus_cfg;  // greedy unless focus.temperature > 0
  focus_cfg.max_new_tokens = cfg.focus.max_new_tokens;
  focus_cfg.temperature = cfg.focus.temperature;
  focus_cfg.top_p = cfg.focus.top_p;
  infer::DecodeGroup focus_chosen{{}, nullptr, decoding(focus_cfg)}, focus_rejected = focus_chosen;
  // The model's own answer on the plain view (released code: ori_answer_vicrop), its own group so
  // that recording it leaves the pairs' generations untouched.
  infer::DecodeGroup original = focus_chosen;
  // Robustness pairs: the loser sampled from the noisy image alone; the winner by contrastive
  // amplification, expert (I) and amateur (I_noise) stepped together in one batched forward.
  infer::SamplingConfig loser_cfg;
  loser_cfg.temperature = cfg.robust.loser_temperature;
  loser_cfg.top_p = cfg.robust.loser_top_p;
  loser_cfg.max_new_tokens = cfg.robust.loser_max_new_tokens;
  infer::DecodeGroup loser{{}, nullptr, decoding(loser_cfg)};
  infer::SamplingConfig ca_cfg;
  ca_cfg.temperature = cfg.robust.temperature;
  ca_cfg.top_p = cfg.robust.top_p;
  ca_cfg.max_new_tokens = cfg.robust.max_new_tokens;
  ContrastiveConfig cac;
  cac.lambda = cfg.robust.lambda;
  cac.beta = cfg.robust.beta;
  infer::DecodeGroup contrastive{{}, contrastive_combiner(cac), decoding(ca_cfg)};
  for (size_t i = 0; i < work.size(); ++i) {
    const SampleWork& w = work[i];
    const std::string& id = w.sample->id;
    focus_chosen.contexts.push_back({request(model, w.P_enh, {w.p_orig, w.p_crop}, view_features[i], {0, 1})});
    focus_chosen.contexts.back()[0].seed = view_seed(cfg.seed, id, "focus_chosen");
    focus_rejected.contexts.push_back({request(model, w.P, {w.p_deg}, view_features[i], {2})});
    focus_rejected.contexts.back()[0].seed = view_seed(cfg.seed, id, "focus_rejected");
    if (cfg.focus.original_answer) {
      original.contexts.push_back({request(model, w.P, {w.p_orig}, view_features[i], {0})});
      original.contexts.back()[0].seed = view_seed(cfg.seed, id, "focus_original");
    }
    loser.contexts.push_back({request(model, w.P_loser, {w.p_noise}, view_features[i], {3})});
    loser.contexts.back()[0].seed = w.loser_seed;
    auto expert = request(model, w.P_rob, {w.p_orig}, view_features[i], {0});
    expert.seed = w.chosen_seed;
    contrastive.contexts.push_back({std::move(expert), request(model, w.P_rob, {w.p_noise}, view_features[i], {3})});
  }
  std::vector<infer::GenerationResult> chosen_answers, rejected_answers, originals, losers, winners;
  if (cfg.decoding.fused_on(model.device().is_cuda())) {
    // Two loops: the two-image prompts, then every one-image prompt together (no row pads to twice
    // its length; the second loop holds about as many key positions as the focus stage did alone).
    chosen_answers = std::move(infer::generate_groups(model, {focus_chosen})[0]);
    clock.lap("focus_chosen_generation");
    auto one_image = infer::generate_groups(model, {focus_rejected, original, loser, contrastive});
    rejected_answers = std::move(one_image[0]);
    originals = std::move(one_image[1]);
    losers = std::move(one_image[2]);
    winners = std::move(one_image[3]);
    clock.lap("one_image_generation");
  } else {
    // Stage by stage; the focus pair's two answers share one batch, interleaved per sample.
    infer::DecodeGroup focus{{}, nullptr, focus_chosen.cfg};
    for (size_t i = 0; i < work.size(); ++i) {
      focus.contexts.push_back(focus_chosen.contexts[i]);
      focus.contexts.push_back(focus_rejected.contexts[i]);
    }
    auto both = std::move(infer::generate_groups(model, {focus})[0]);
    for (size_t i = 0; i < work.size(); ++i) {
      chosen_answers.push_back(std::move(both[2 * i]));
      rejected_answers.push_back(std::move(both[2 * i + 1]));
    }
    clock.lap("focus_generation");
    if (cfg.focus.original_answer) {
      originals = std::move(infer::generate_groups(model, {original})[0]);
      clock.lap("original_generation");
    }
    losers = std::move(infer::generate_groups(model, {loser})[0]);
    clock.lap("robust_loser_generation");
    winners = std::move(infer::generate_groups(model, {contrastive})[0]);
    clock.lap("contrastive_generation");
  }

  // Reference log-prob sums for training (method.md §7.2), by the same frozen model: the six
  // sequences of `reference_batch` samples (0: the whole batch) per multi-view call (each
  // (prompt, images) prefix is computed once; the views are encoded once per sample), scored as the
  // trainer scores them. Smaller calls bound the memory of the prefixes' keys and values.
  constexpr int kRefs = 6;  // y_w|I, y_l|I, y_l|(I + I_crop), y_l|I_deg, robust y_w|I_noise, robust y_l|I_noise
  std::vector<std::array<GeneratedText, 4>> texts;  // focus chosen, focus rejected, robust chosen, robust rejected
  std::vector<std::vector<train::ScoredSequence>> sample_seqs;  // per sample, view indices 0..3 of its own views
  for (size_t i = 0; i < work.size(); ++i) {
    const SampleWork& w = work[i];
    texts.push_back({to_text(model, chosen_answers[i]), to_text(model, rejected_answers[i]), to_text(model, winners[i]),
                     to_text(model, losers[i])});
    const std::vector<models::PreparedImage> views = {w.p_orig, w.p_crop, w.p_deg, w.p_noise};
    std::vector<train::ScoredSequence> seqs;
    auto add = [&](const std::string& prompt, const std::string& y, std::vector<int64_t> view_ids) {
      std::vector<models::PreparedImage> imgs;
      for (int64_t v : view_ids) imgs.push_back(views[static_cast<size_t>(v)]);
      const ResponseTokens t = response_tokens(model, prompt, y, imgs);
      seqs.push_back({t.prompt_ids, std::move(view_ids), t.answer_ids});
    };
    const auto& tx = texts.back();
    add(w.P, tx[0].text, {0});
    add(w.P, tx[1].text, {0});
    add(w.P_two, tx[1].text, {0, 1});
    add(w.P, tx[1].text, {2});
    add(w.P, tx[2].text, {3});
    add(w.P, tx[3].text, {3});
    sample_seqs.push_back(std::move(seqs));
  }
  const size_t per_call = cfg.reference_batch > 0 ? static_cast<size_t>(cfg.reference_batch) : work.size();
  std::vector<torch::Tensor> ref_parts;
  for (size_t i0 = 0; i0 < work.size(); i0 += per_call) {
    const size_t i1 = std::min(work.size(), i0 + per_call);
    std::vector<train::ScoredSequence> ref_seqs;
    std::vector<torch::Tensor> ref_features;
    for (size_t i = i0; i < i1; ++i) {
      const int64_t base = static_cast<int64_t>(4 * (i - i0));  // this sample's views in the call's features
      for (auto seq : sample_seqs[i]) {
        for (auto& v : seq.image_indices) v += base;
        ref_seqs.push_back(std::move(seq));
      }
      ref_features.push_back(view_features[i]);
    }
    ref_parts.push_back(train::answer_logprob_sums(model, ref_seqs, torch::cat(ref_features)).to(torch::kCPU, torch::kFloat64));
  }
  const torch::Tensor ref_sums = torch::cat(ref_parts).contiguous();
  clock.lap("reference_scoring");
  const double* ref_values = ref_sums.data_ptr<double>();

  // CLIPScore of (P, I), (P, I_crop) and (P, inverse crop) for every sample: with
  // decoding.encode_together one call for the batch, else one per sample in the loop below.
  std::vector<std::vector<double>> clip_scores(work.size());
  auto clip_images = [](const SampleWork& w) {
    return std::vector<image::ImageU8>{w.original, w.crop, crop_view(w.original, w.inverse_result.box)};
  };
  if (clip && cfg.decoding.encoded_together_on(model.device().is_cuda())) {
    std::vector<std::string> questions;
    std::vector<std::vector<image::ImageU8>> images;
    for (const auto& w : work) {
      questions.push_back(w.sample->question);
      images.push_back(clip_images(w));
    }
    clip_scores = clip->scores_each(questions, images);
  }

  std::vector<json> records;
  for (size_t i = 0; i < work.size(); ++i) {
    const SampleWork& w = work[i];
    const PromptSample& s = *w.sample;
    const GeneratedText &fw = texts[i][0], &fl = texts[i][1], &rw = texts[i][2], &rl = texts[i][3];
    const double* r = ref_values + kRefs * i;
    const double ref_fw_I = r[0], ref_fl_I = r[1], ref_fl_aug = r[2], ref_fl_deg = r[3];
    const double ref_rw_noise = r[4], ref_rl_noise = r[5];

    json rec;
    rec["index"] = s.index;
    rec["id"] = s.id;
    rec["image"] = s.image;
    rec["question"] = s.question;
    rec["width"] = w.original.width;
    rec["height"] = w.original.height;
    rec["prompts"] = {{"P", w.P}, {"P_aug", w.P_two}, {"attention", w.P_att}, {"enhanced", w.P_enh},
                      {"robust", w.P_rob}, {"robust_loser", w.P_loser}};
    rec["attention"] = {{"method", cfg.attention.method},
                        {"layers", attention_layers(cfg.attention, model.info().num_layers)},
                        {"grid", {w.grid.rows, w.grid.cols}},
                        {"first_token", w.first_token},
                        {"map", w.grid.values}};
    rec["bbox"] = box_json(w.crop_result.box);
    rec["crop"] = {{"ratio", w.crop_result.ratio}, {"full_image", w.crop_result.full_image},
                   {"inverse_bbox", box_json(w.inverse_result.box)}};
    rec["erased_share"] = erased_share(w.crop_result.box, w.original.width, w.original.height);
    rec["views"] = {{"erase", {{"mode", cfg.erase.mode}, {"alpha", cfg.erase.alpha}, {"blur_sigma", cfg.erase.blur_sigma},
                               {"pil_inclusive_end", cfg.erase.pil_inclusive_end}}},
                    {"noise", {{"mode", cfg.noise.mode}, {"diffusion_step", cfg.noise.diffusion_step},
                               {"pixel_sigma", cfg.noise.pixel_sigma}, {"seed", w.noise_seed}}},
                    {"robust_chosen_seed", w.chosen_seed},
                    {"robust_rejected_seed", w.loser_seed}};
    rec["focus"] = {{"chosen", fw.text}, {"rejected", fl.text},
                    {"chosen_logp", fw.logp_mean}, {"rejected_logp", fl.logp_mean},
                    {"chosen_ppl", fw.ppl}, {"rejected_ppl", fl.ppl},
                    {"chosen_tokens", fw.tokens}, {"rejected_tokens", fl.tokens},
                    {"chosen_eos", fw.stopped_on_eos}, {"rejected_eos", fl.stopped_on_eos}};
    if (cfg.focus.original_answer) {
      const GeneratedText o = to_text(model, originals[i]);
      rec["focus"]["original"] = o.text;
      rec["focus"]["original_logp"] = o.logp_mean;
      rec["focus"]["original_ppl"] = o.ppl;
      rec["focus"]["original_tokens"] = o.tokens;
    }
    rec["robust"] = {{"chosen", rw.text}, {"rejected", rl.text},
                     {"chosen_logp", rw.logp_mean}, {"rejected_logp", rl.logp_mean},
                     {"chosen_ppl", rw.ppl}, {"rejected_ppl", rl.ppl},
                     {"chosen_tokens", rw.tokens}, {"rejected_tokens", rl.tokens}};
    rec["reference"] = {{"focus_chosen", ref_fw_I},       {"focus_rejected", ref_fl_I},
                        {"calib_rejected_aug", ref_fl_aug}, {"calib_rejected_deg", ref_fl_deg},
                        {"robust_chosen", ref_rw_noise},  {"robust_rejected", ref_rl_noise}};
    rec["ips"] = {{"focus", ref_fw_I - ref_fl_I}, {"robust", ref_rw_noise - ref_rl_noise}};

    const DdwConfig& dc = cfg.ddw;
    if (clip) {
      const auto sc = clip_scores[i].empty() ? clip->scores(s.question, clip_images(w)) : clip_scores[i];
      const DdwWeights dw = ddw_weights(sc[0], sc[1], dc);
      rec["clip"] = {{"image", sc[0]}, {"crop", sc[1]}, {"inverse_crop", sc[2]}, {"ratio", dw.ratio}};
      rec["weights"] = {{"alpha", dw.alpha}, {"w_focus", dw.w_focus}, {"w_robust", dw.w_robust}, {"ddw", dc.enabled}};
    } else {
      rec["clip"] = nullptr;
      // No CLIP model: no evidence for either pair type, both weighted w_base (DDW off).
      rec["weights"] = {{"alpha", 0.0}, {"w_focus", dc.w_base}, {"w_robust", dc.w_base}, {"ddw", false}};
    }
    if (s.index < cfg.heatmaps) {
      std::string safe = s.id;
      for (char& c : safe)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') c = '_';
      const std::string rel = "heatmaps/" + std::to_string(s.index) + "-" + safe + ".png";
      image::write_png_atomic((fs::path(out_dir) / rel).string(),
                              attention_overlay(w.original, w.grid, w.crop_result.box, w.inverse_result.box));
      rec["heatmap"] = rel;
    }
    records.push_back(std::move(rec));
  }
  clock.lap("clip_scores_and_records");
  return records;
}

std::string shard_dir(const std::string& out_dir, int rank) {
  return (fs::path(out_dir) / "shards" / ("rank-" + std::to_string(rank))).string();
}

PairCandidate candidate_of(const json& r) {
  PairCandidate c;
  const auto& f = r.at("focus");
  c.chosen_logp_mean = f.at("chosen_logp");
  c.rejected_logp_mean = f.at("rejected_logp");
  c.chosen_ppl = f.at("chosen_ppl");
  c.rejected_ppl = f.at("rejected_ppl");
  const auto& rb = r.at("robust");
  c.identical_texts = f.at("chosen") == f.at("rejected") || rb.at("chosen") == rb.at("rejected");
  c.empty_response = f.at("chosen").get<std::string>().empty() || f.at("rejected").get<std::string>().empty() ||
                     rb.at("chosen").get<std::string>().empty() || rb.at("rejected").get<std::string>().empty();
  c.erased_share = r.at("erased_share");
  auto ratio = [](const json& pair) {
    const double a = pair.value("chosen_tokens", 0.0), b = pair.value("rejected_tokens", 0.0);
    return std::max(a, b) / std::max(1.0, std::min(a, b));
  };
  c.length_ratio = std::max(ratio(f), ratio(rb));
  return c;
}


}  // namespace

// ---------------------------------------------------------------------------------------------
// The run

PairsRunSummary generate_pairs(models::VisionLanguageModel& model, const ClipScorer* clip, const PairsConfig& cfg,
                               const PairsRunOptions& opt) {
  if (opt.out_dir.empty()) throw InputError("--out", "is required");
  if (opt.world_size < 1 || opt.rank < 0 || opt.rank >= opt.world_size)
    throw InputError("RANK/WORLD_SIZE", "rank " + std::to_string(opt.rank) + " of " + std::to_string(opt.world_size) + " is invalid");
  std::vector<PromptSample> samples = load_prompt_samples(opt.data_path);
  if (opt.limit > 0 && static_cast<int64_t>(samples.size()) > opt.limit) samples.resize(static_cast<size_t>(opt.limit));
  fs::create_directories(opt.out_dir);

  // The manifest pins what a resumed run must continue: same inputs, config, sharding, batches.
  json manifest = {{"format", "p2dpo-pairs"}, {"version", 1},
                   {"data", opt.data_path}, {"images", opt.images_dir}, {"model", opt.model_dir},
                   {"clip", opt.clip_dir}, {"samples", samples.size()}, {"world_size", opt.world_size},
                   {"batch_size", cfg.batch_size}, {"config", cfg.to_json()}};
  const std::string manifest_path = (fs::path(opt.out_dir) / "manifest.json").string();
  if (fs::exists(manifest_path)) {
    json old = io::read_json_file(manifest_path);
    // Keys added to the config since that run was started hold their defaults there.
    json old_config = PairsConfig{}.to_json();
    old_config.merge_patch(old.value("config", json::object()));
    old["config"] = old_config;
    // How decoding runs changes no record beyond float rounding: a run may resume with other settings.
    old["config"]["decoding"] = manifest["config"]["decoding"];
    for (const char* key : {"data", "samples", "world_size", "batch_size", "config"}) {
      if (old.value(key, json()) != manifest[key])
        throw InputError(manifest_path, std::string("field '") + key + "' differs from this run's (" +
                                            manifest[key].dump().substr(0, 80) + "): not a continuation; use a new --out");
    }
  } else if (opt.rank == 0) {
    manifest["model_runtime"] = models::describe_model_runtime(model);  // how the run that started it computed
    io::write_json_atomic(manifest_path, manifest);
  }
  if (opt.rank == 0) io::write_json_atomic((fs::path(opt.out_dir) / "config.json").string(), cfg.to_json());

  const std::string dir = opt.world_size > 1 ? shard_dir(opt.out_dir, opt.rank) : opt.out_dir;
  const std::string gen_path = (fs::path(dir) / "generated.jsonl").string();
  io::JsonlAppender out(gen_path);  // cuts a line a kill left half-written
  std::set<int64_t> done;
  for (const auto& r : io::read_jsonl_file(gen_path)) done.insert(r.at("index").get<int64_t>());

  // Batches are fixed slices of the input, dealt to ranks round-robin: a sample is computed in the
  // same batch whatever the rank count or resume point, so its record is the same.
  const int64_t n = static_cast<int64_t>(samples.size()), B = cfg.batch_size;
  const int64_t n_batches = (n + B - 1) / B;
  std::vector<int64_t> my_batches;
  int64_t my_samples = 0;
  for (int64_t b = opt.rank; b < n_batches; b += opt.world_size) {
    my_batches.push_back(b);
    my_samples += std::min(n, (b + 1) * B) - b * B;
  }
  PairsRunSummary summary;
  summary.samples = n;
  summary.already_done = static_cast<int64_t>(done.size());
  train::ProgressLine progress("pairs", my_samples, summary.already_done);
  const auto t0 = std::chrono::steady_clock::now();
  int64_t written_batches = 0, kept_so_far = 0, seen_now = 0;
  auto batch_missing = [&](int64_t b) {
    for (int64_t i = b * B; i < std::min(n, (b + 1) * B); ++i)
      if (!done.count(i)) return true;
    return false;
  };
  int64_t to_compute = 0;
  for (const int64_t b : my_batches) to_compute += batch_missing(b) ? 1 : 0;
  const int64_t profiled_batch = opt.profile_dir.empty() ? -1 : std::min<int64_t>(1, to_compute - 1);
  for (const int64_t b : my_batches) {
    if (!batch_missing(b)) continue;
    std::vector<const PromptSample*> batch;
    for (int64_t i = b * B; i < std::min(n, (b + 1) * B); ++i) batch.push_back(&samples[static_cast<size_t>(i)]);
    std::optional<models::OpProfile> profile;
    const int64_t computed = static_cast<int64_t>(summary.batch_seconds.size());
    if (computed == profiled_batch) profile.emplace(model.device().is_cuda());
    const auto tb = std::chrono::steady_clock::now();
    // A batch a kill interrupted is recomputed whole (same composition, same numbers); only the
    // records not yet on disk are written.
    auto records = run_batch(model, clip, cfg, batch, opt, opt.out_dir, &summary.stage_seconds, &summary.stage_peak_memory);
    summary.batch_seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - tb).count());
    if (profile) {
      summary.profile = profile->finish(opt.profile_dir, "pairs-batch-" + std::to_string(b));
      summary.profile["batch"] = b;
      summary.profile["samples"] = batch.size();
    }
    for (auto& rec : records) {
      const int64_t idx = rec.at("index").get<int64_t>();
      if (done.count(idx)) continue;
      const auto c = candidate_of(rec);
      kept_so_far += (!c.identical_texts && std::max(c.chosen_ppl, c.rejected_ppl) < cfg.filter.max_ppl) ? 1 : 0;
      ++seen_now;
      out.write(rec);
      done.insert(idx);
      ++summary.generated_now;
    }
    ++written_batches;
    if (opt.progress) {
      const double min = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 60.0;
      char extra[128];
      std::snprintf(extra, sizeof extra, "%.1f pairs/min, %.0f%% pass PPL+identity", min > 0 ? seen_now / min : 0.0,
                    seen_now > 0 ? 100.0 * kept_so_far / seen_now : 0.0);
      int64_t mine_done = 0;
      for (const int64_t bb : my_batches)
        for (int64_t i = bb * B; i < std::min(n, (bb + 1) * B); ++i) mine_done += done.count(i);
      progress.update(mine_done, extra);
    }
    if (opt.stop_after_batches > 0 && written_batches >= opt.stop_after_batches) return summary;
  }
  out.close();
  summary.generation_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  if (opt.world_size > 1) {
    io::write_json_atomic((fs::path(dir) / "done.json").string(), {{"rank", opt.rank}, {"records", done.size()}});
    if (opt.rank != 0) return summary;
    // Rank 0 merges once every shard has finished.
    for (int waited = 0;; ++waited) {
      bool all = true;
      for (int r = 0; r < opt.world_size; ++r) all = all && fs::exists(fs::path(shard_dir(opt.out_dir, r)) / "done.json");
      if (all) break;
      if (opt.progress && waited % 30 == 0) std::cerr << "pairs: rank 0 waits for the other shards to finish\n";
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
  }
  summary.stats = finalize_pairs(opt.out_dir, cfg);
  summary.finalized = true;
  return summary;
}

nlohmann::json finalize_pairs(const std::string& out_dir, const PairsConfig& cfg) {
  const std::string manifest_path = (fs::path(out_dir) / "manifest.json").string();
  const json manifest = io::read_json_file(manifest_path);
  const int64_t n = io::get_required<int64_t>(manifest, "samples", manifest_path, "manifest");
  const int world = io::get_required<int>(manifest, "world_size", manifest_path, "manifest");
  std::vector<std::string> files;
  if (world > 1) {
    for (int r = 0; r < world; ++r) files.push_back((fs::path(shard_dir(out_dir, r)) / "generated.jsonl").string());
  } else {
    files.push_back((fs::path(out_dir) / "generated.jsonl").string());
  }
  std::map<int64_t, json> by_index;
  for (const auto& f : files) {
    if (!fs::exists(f)) throw InputError(f, "is missing: that shard never ran");
    for (auto& r : io::read_jsonl_file(f)) {
      const int64_t idx = io::get_required<int64_t>(r, "index", f, "record");
      if (!by_index.emplace(idx, std::move(r)).second) throw InputError(f, "holds sample " + std::to_string(idx) + " twice");
    }
  }
  if (static_cast<int64_t>(by_index.size()) != n) {
    throw InputError(out_dir, "has " + std::to_string(by_index.size()) + " of " + std::to_string(n) +
                                  " samples generated; rerun `p2dpo pairs` with the same flags to finish");
  }

  std::vector<PairCandidate> cands;
  for (const auto& [idx, r] : by_index) cands.push_back(candidate_of(r));
  const FilterConfig& fc = cfg.filter;
  const std::vector<double> margins = margins_for_thresholds(cands);
  if (fc.margin_rule == "percentile" && margins.empty()) {
    throw InputError(out_dir, "no pair has a margin (every response is empty): the percentile rule has nothing to "
                              "take percentiles of; check the prompts and the model, or set filter.margin_rule: fixed");
  }
  const MarginThresholds th = resolve_margin_thresholds(fc, margins);
  std::vector<FilterDecision> decisions;
  std::string all_lines, kept_lines;
  std::vector<double> ips_focus, ips_robust, clip_img, clip_crop, clip_inv, w_focus;
  std::vector<double> rob_margin, rob_ppl_max;
  int64_t kept = 0, identical_focus = 0, identical_robust = 0, full_image = 0;
  // Against the model's own plain-view answer, where recorded: how often each winner is exactly it.
  int64_t with_original = 0, focus_chosen_is_original = 0, robust_chosen_is_original = 0;
  size_t k = 0;
  for (auto& [idx, r] : by_index) {
    const FilterDecision d = decide(cands[k], fc, th);
    decisions.push_back(d);
    r["filter"] = {{"keep", d.keep}, {"reason", d.reason}, {"margin", d.margin}};
    all_lines += r.dump() + "\n";
    if (d.keep) {
      kept_lines += r.dump() + "\n";
      ++kept;
      ips_focus.push_back(r["ips"]["focus"]);
      ips_robust.push_back(r["ips"]["robust"]);
      w_focus.push_back(r["weights"]["w_focus"]);
    }
    identical_focus += r["focus"]["chosen"] == r["focus"]["rejected"];
    identical_robust += r["robust"]["chosen"] == r["robust"]["rejected"];
    full_image += r["crop"]["full_image"].get<bool>();
    if (r["focus"].contains("original")) {
      ++with_original;
      focus_chosen_is_original += r["focus"]["chosen"] == r["focus"]["original"];
      robust_chosen_is_original += r["robust"]["chosen"] == r["focus"]["original"];
    }
    rob_margin.push_back(r["robust"]["chosen_logp"].get<double>() - r["robust"]["rejected_logp"].get<double>());
    rob_ppl_max.push_back(std::max(r["robust"]["chosen_ppl"].get<double>(), r["robust"]["rejected_ppl"].get<double>()));
    if (!r["clip"].is_null()) {
      clip_img.push_back(r["clip"]["image"]);
      clip_crop.push_back(r["clip"]["crop"]);
      clip_inv.push_back(r["clip"]["inverse_crop"]);
    }
    ++k;
  }
  io::write_file_atomic((fs::path(out_dir) / "pairs.jsonl").string(), all_lines);
  io::write_file_atomic((fs::path(out_dir) / "filtered.jsonl").string(), kept_lines);

  json stats;
  stats["samples"] = n;
  stats["kept"] = kept;
  stats["retention"] = n > 0 ? static_cast<double>(kept) / static_cast<double>(n) : 0.0;
  stats["identical_focus"] = identical_focus;
  stats["identical_robust"] = identical_robust;
  stats["full_image_crops"] = full_image;
  if (with_original > 0)
    stats["winners_equal_original"] = {{"samples", with_original},
                                       {"focus_chosen", focus_chosen_is_original},
                                       {"robust_chosen", robust_chosen_is_original}};
  stats["table5_filter"] = filter_table(cands, decisions, th);
  stats["table3_ips"] = {{"focus", ips_table(ips_focus)}, {"robust", ips_table(ips_robust)}};
  stats["robust_pairs"] = {{"margin", describe(rob_margin).to_json()}, {"max_ppl", describe(rob_ppl_max).to_json()}};
  stats["w_focus"] = describe(w_focus).to_json();
  if (!clip_img.empty()) stats["table6_crop_clip"] = crop_clip_table(clip_img, clip_crop, clip_inv);
  io::write_json_atomic((fs::path(out_dir) / "stats.json").string(), stats);
  return stats;
}

}  // namespace p2dpo::pairs
