#include "train/p2dpo_trainer.h"

#include <torch/types.h>
#include <torch/utils.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <future>
#include <map>
#include <memory>
#include <optional>

#include "image/decode.h"
#include "io/errors.h"
#include "io/json_io.h"
#include "models/op_profile.h"
#include "models/runtime_info.h"
#include "models/synced_lap.h"
#include "pairs/responses.h"
#include "pairs/views.h"
#include "train/checkpoint.h"
#include "train/distributed.h"
#include "train/grad.h"
#include "train/lora.h"
#include "train/metrics.h"
#include "train/multiview.h"
#include "train/pair_data.h"
#include "train/params.h"
#include "train/rng.h"
#include "train/sampler.h"
#include "train/schedule.h"

namespace p2dpo::train {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The sequences a pair contributes; each is scored once per step.
enum Role { kFocusChosenI, kFocusRejectedI, kChosenAug, kChosenDeg, kRejectedAug, kRejectedDeg, kRobustChosen, kRobustRejected, kRoles };

// What a pair needs at every step, built once: the frozen views' image features and the token ids
// of each role (the vision tower and projector never train here, so features are constants).
struct PairInputs {
  torch::Tensor features;  // [n_views, T, hidden], no grad; view order I, [I_crop, I_deg], [I_noise]
  std::array<ScoredSequence, kRoles> seqs;  // image_indices relative to this pair's views
  std::array<bool, kRoles> present{};
  int64_t bytes = 0;
};

ScoredSequence make_sequence(const models::VisionLanguageModel& model, const std::string& prompt, const std::string& response,
                             const std::vector<models::PreparedImage>& images, std::vector<int64_t> image_indices) {
  const pairs::ResponseTokens t = pairs::response_tokens(model, prompt, response, images);
  ScoredSequence s;
  s.prompt_ids = t.prompt_ids;
  s.answer_ids = t.answer_ids;
  s.image_indices = std::move(image_indices);
  return s;
}

// The host half of a pair's inputs: its views' pixels and every role's token ids. A pure
// function of the pair, built on a worker thread ahead of the step that needs it.
struct HostPairInputs {
  std::vector<models::PreparedImage> views;
  std::array<ScoredSequence, kRoles> seqs;
  std::array<bool, kRoles> present{};
};

HostPairInputs prepare_pair_host(const models::VisionLanguageModel& model, const TrainingPair& p, bool p2dpo_views) {
  torch::NoGradGuard no_grad;
  HostPairInputs in;
  const image::ImageU8 img = image::decode_image_file(p.image_path);
  std::vector<models::PreparedImage>& views = in.views;
  views.push_back(model.prepare_image(img));
  int64_t crop_i = -1, deg_i = -1, noise_i = -1;
  try {
    if (p.has_focus && p2dpo_views) {
      crop_i = static_cast<int64_t>(views.size());
      views.push_back(model.prepare_image(pairs::crop_view(img, p.bbox)));
      deg_i = static_cast<int64_t>(views.size());
      views.push_back(model.prepare_image(pairs::erase_region(img, p.bbox, p.erase)));
    }
    if (p.has_robust) {
      noise_i = static_cast<int64_t>(views.size());
      views.push_back(pairs::noisy_view(model, img, p.noise, p.noise_seed));
    }
  } catch (const std::invalid_argument& e) {
    throw InputError(p.source, std::string("cannot rebuild the pair's views: ") + e.what());
  }
  auto add = [&](Role r, const std::string& prompt, const std::string& y, std::vector<int64_t> idx) {
    std::vector<models::PreparedImage> imgs;
    for (int64_t i : idx) imgs.push_back(views[static_cast<size_t>(i)]);
    in.seqs[r] = make_sequence(model, prompt, y, imgs, std::move(idx));
    in.present[r] = true;
  };
  if (p.has_focus) {
    add(kFocusChosenI, p.prompt, p.focus_chosen, {0});
    add(kFocusRejectedI, p.prompt, p.focus_rejected, {0});
    if (crop_i >= 0) {
      add(kChosenAug, p.prompt_aug, p.focus_chosen, {0, crop_i});
      add(kRejectedAug, p.prompt_aug, p.focus_rejected, {0, crop_i});
      add(kChosenDeg, p.prompt, p.focus_chosen, {deg_i});
      add(kRejectedDeg, p.prompt, p.focus_rejected, {deg_i});
    }
  }
  if (p.has_robust) {
    add(kRobustChosen, p.prompt, p.robust_chosen, {noise_i});
    add(kRobustRejected, p.prompt, p.robust_rejected, {noise_i});
  }
  return in;
}

// The device half: the views through the frozen vision tower and projector.
std::shared_ptr<const PairInputs> encode_pair(models::VisionLanguageModel& model, HostPairInputs host) {
  torch::NoGradGuard no_grad;
  auto in = std::make_shared<PairInputs>();
  in->features = model.encode_images(host.views);
  in->seqs = std::move(host.seqs);
  in->present = host.present;
  in->bytes = in->features.numel() * static_cast<int64_t>(in->features.element_size());
  return in;
}

// Frozen per-pair inputs kept across epochs up to a byte budget, and the next micro-batch's host
// halves prepared on a worker thread while the current one trains. Values never depend on whether
// they came from the cache or the worker (each pair is built alone), so resume stays bit-identical.
class PairInputCache {
 public:
  PairInputCache(models::VisionLanguageModel& model, const std::vector<TrainingPair>& data, bool p2dpo_views, int64_t budget_bytes)
      : model_(model), data_(data), p2dpo_views_(p2dpo_views), budget_(budget_bytes) {}

  // One entry per index, each alive as long as the caller holds it (cached or not).
  std::vector<std::shared_ptr<const PairInputs>> get_batch(const std::vector<int64_t>& indices) {
    std::map<int64_t, HostPairInputs> prefetched = take_prefetched();
    std::vector<std::shared_ptr<const PairInputs>> out;
    for (int64_t i : indices) {
      if (auto it = cache_.find(i); it != cache_.end()) {
        out.push_back(it->second);
        continue;
      }
      auto h = prefetched.find(i);
      HostPairInputs host = h != prefetched.end() ? std::move(h->second) : prepare_pair_host(model_, pair(i), p2dpo_views_);
      if (h != prefetched.end()) prefetched.erase(h);
      auto in = encode_pair(model_, std::move(host));
      if (used_ + in->bytes <= budget_) {
        used_ += in->bytes;
        cache_.emplace(i, in);
      }
      out.push_back(std::move(in));
    }
    return out;
  }

  // Starts building the host halves of `indices` (those not cached) on a worker thread; the next
  // get_batch collects them (and rethrows what building them threw, e.g. a corrupt image).
  void prefetch(const std::vector<int64_t>& indices) {
    take_prefetched();  // at most one batch in flight
    std::vector<int64_t> uncached;
    for (int64_t i : indices)
      if (!cache_.count(i)) uncached.push_back(i);
    if (uncached.empty()) return;
    pending_ = std::async(std::launch::async, [this, uncached] {
      std::map<int64_t, HostPairInputs> built;
      for (int64_t i : uncached) built.emplace(i, prepare_pair_host(model_, pair(i), p2dpo_views_));
      return built;
    });
  }

 private:
  const TrainingPair& pair(int64_t i) const { return data_[static_cast<size_t>(i)]; }
  std::map<int64_t, HostPairInputs> take_prefetched() { return pending_.valid() ? pending_.get() : std::map<int64_t, HostPairInputs>{}; }

  models::VisionLanguageModel& model_;
  const std::vector<TrainingPair>& data_;
  bool p2dpo_views_;
  int64_t budget_, used_ = 0;
  std::map<int64_t, std::shared_ptr<const PairInputs>> cache_;
  std::future<std::map<int64_t, HostPairInputs>> pending_;  // last: destroyed (joined) first
};

// Scores `roles` of every pair of a micro-batch in one multi-view call; returns role -> [B] sums
// (undefined for roles not asked). Pairs' features are stacked and image indices offset.
std::array<torch::Tensor, kRoles> score_roles(models::VisionLanguageModel& model, const std::vector<const PairInputs*>& batch,
                                              const std::vector<Role>& roles, const MultiViewOptions& options,
                                              MultiViewStats* stats) {
  std::vector<ScoredSequence> seqs;
  std::vector<torch::Tensor> feats;
  int64_t offset = 0;
  for (const PairInputs* in : batch) {
    feats.push_back(in->features);
    for (Role r : roles) {
      if (!in->present[r]) throw std::logic_error("score_roles: a pair lacks a role it was asked for");
      ScoredSequence s = in->seqs[r];
      for (auto& i : s.image_indices) i += offset;
      seqs.push_back(std::move(s));
    }
    offset += in->features.size(0);
  }
  const MultiViewOptions& mo = options;
  const torch::Tensor sums = answer_logprob_sums(model, seqs, torch::cat(feats), mo, stats);
  std::array<torch::Tensor, kRoles> out;
  const int64_t B = static_cast<int64_t>(batch.size()), R = static_cast<int64_t>(roles.size());
  const torch::Tensor grid = sums.view({B, R});
  for (int64_t k = 0; k < R; ++k) out[roles[static_cast<size_t>(k)]] = grid.select(1, k);
  return out;
}

// Running sums of one step's metrics (reduced over ranks before division).
enum Metric {
  kCount, kLoss, kDpoFocus, kCalib, kDpoRobust, kFocusChosen, kFocusRejected, kFocusAcc, kRobustChosen_, kRobustRejected_,
  kRobustAcc, kCalibMargin, kWFocus, kTokens, kMetrics
};

double sum_of(const torch::Tensor& t) { return t.defined() ? t.sum().item<double>() : 0.0; }

}  // namespace

P2DpoRunResult train_p2dpo(models::VisionLanguageModel& model, const P2DpoTrainConfig& cfg, const P2DpoRunOptions& opt) {
  const int rank = opt.group ? opt.group->rank() : 0;
  const int world = opt.group ? opt.group->world_size() : 1;
  const bool p2dpo = cfg.objective == "p2dpo";

  // ---- data ----
  std::vector<TrainingPair> data;
  if (p2dpo) {
    PairDataOptions po;
    po.images_dir = opt.images_dir;
    po.kept_only = cfg.kept_only;
    po.limit = cfg.limit;
    data = load_p2dpo_pairs(opt.pairs_path, po);
  } else {
    data = load_external_pairs(opt.pairs_path, opt.images_dir, cfg.external_prompt, cfg.limit);
  }
  P2DpoLossConfig loss_cfg = cfg.loss;
  if (!p2dpo) {  // plain DPO: the focus slot holds the external pair; no calibration, no robustness
    loss_cfg.use_focus = true;
    loss_cfg.use_robust = false;
    loss_cfg.use_calib = false;
  }
  const bool recompute = !p2dpo || cfg.reference == "recompute";

  // ---- setup: adapter -> optimizer -> sampler -> schedule -> resume -> logger ----
  fs::create_directories(opt.out_dir);
  const std::string ckpt_dir = (fs::path(opt.out_dir) / "checkpoints").string();
  model.set_activation_recomputation(cfg.recompute_layers);
  LoraAdapter lora = LoraAdapter::attach(model, cfg.lora, derive_seed(cfg.seed, 7));
  // However the run ends, an error included, the model is left as it came: the base model (the
  // adapter lives in adapter/), no recomputation; a caller may train it again.
  struct RestoreModel {
    LoraAdapter& lora;
    models::VisionLanguageModel& model;
    ~RestoreModel() {
      lora.detach();
      model.set_activation_recomputation(0);
    }
  } restore{lora, model};
  lora.set_autocast(cfg.lora_precision == "autocast");
  const std::map<std::string, torch::Tensor>& params = lora.parameters();
  for (const auto& [name, p] : params) p.requires_grad_(true);
  AdamW optimizer(params, cfg.adamw);

  const AccumulationPlan plan = AccumulationPlan::for_effective_batch(cfg.effective_batch, cfg.micro_batch_size, world, "optim.effective_batch");
  EpochSampler sampler(static_cast<int64_t>(data.size()), derive_seed(cfg.seed, 3));
  const int64_t steps_per_epoch = sampler.batches_per_epoch(plan.effective_batch());
  const int64_t total_steps = cfg.max_steps > 0 ? cfg.max_steps : cfg.epochs * steps_per_epoch;
  CosineSchedule schedule;
  schedule.peak_lr = cfg.lr;
  schedule.total_steps = total_steps;
  schedule.warmup_steps = cfg.warmup_steps >= 0 ? cfg.warmup_steps : warmup_steps_from_ratio(cfg.warmup_ratio, total_steps);
  schedule.min_lr_ratio = cfg.min_lr_ratio;

  const json resolved = cfg.to_json();
  const json model_runtime = models::describe_model_runtime(model);  // device, dtype, kernel switches
  TrainState state;
  P2DpoRunResult result;
  result.total_steps = total_steps;
  const std::optional<std::string> latest = opt.resume ? latest_checkpoint(ckpt_dir) : std::nullopt;
  if (latest) {
    const json manifest = read_checkpoint_manifest(*latest);
    json saved = manifest.value("extra", json::object()).value("config", json());
    if (!same_run_config(saved, resolved, model_runtime.at("dtype") == "float32"))
      throw InputError(*latest, "was written with another config (see its state.json 'extra.config'); a resumed run must use the same one");
    state = load_checkpoint(*latest, params, optimizer);
    sampler.set_position(state.data);
    result.resumed_from = state.step;
  } else {
    torch::manual_seed(cfg.seed);
    state.data_seed = cfg.seed;
    state.rng.seed(derive_seed(cfg.seed, 1));
  }
  state.extra["config"] = resolved;
  state.extra["total_steps"] = total_steps;
  state.extra["pairs"] = static_cast<int64_t>(data.size());
  if (rank == 0) {
    io::write_json_atomic((fs::path(opt.out_dir) / "config.json").string(),
                          json{{"config", resolved}, {"model", opt.model_dir}, {"pairs", opt.pairs_path},
                           {"images", opt.images_dir}, {"world_size", world}, {"pairs_count", data.size()},
                           {"total_steps", total_steps}, {"steps_per_epoch", steps_per_epoch},
                           {"trainable_parameters", count_elements(params)}, {"model_runtime", model_runtime}});
  }
  std::optional<MetricsLogger> metrics;
  if (rank == 0) metrics.emplace((fs::path(opt.out_dir) / "metrics.jsonl").string(), latest ? std::optional<int64_t>(state.step) : std::nullopt);
  ProgressLine progress("train step", total_steps, state.step);
  MultiViewOptions multiview;
  multiview.share_prefixes = cfg.share_prefixes;
  multiview.split_cost_positions = cfg.split_cost_positions;
  PairInputCache inputs(model, data, p2dpo, cfg.feature_cache_mb * 1024 * 1024);

  std::vector<Role> policy_roles, reference_roles;
  if (loss_cfg.use_focus) {
    policy_roles = {kFocusChosenI, kFocusRejectedI};
    reference_roles = {kFocusChosenI, kFocusRejectedI};
    if (loss_cfg.use_calib) {
      policy_roles.insert(policy_roles.end(), {kChosenAug, kChosenDeg});
      reference_roles.insert(reference_roles.end(), {kRejectedAug, kRejectedDeg});
    }
  }
  if (loss_cfg.use_robust) {
    policy_roles.insert(policy_roles.end(), {kRobustChosen, kRobustRejected});
    reference_roles.insert(reference_roles.end(), {kRobustChosen, kRobustRejected});
  }

  // This rank's first micro-batch of the step after `step` (none after the last), read from a copy
  // of the sampler so that its position moves only when that step starts.
  auto first_micro_batch_after = [&](const EpochSampler& current, int64_t steps_done) -> std::vector<int64_t> {
    if (steps_done >= total_steps) return {};
    EpochSampler peek = current;
    const auto micros = split_micro_batches(shard_batch(peek.next_batch(plan.effective_batch()), rank, world), plan.micro_batch_size);
    return micros.empty() ? std::vector<int64_t>{} : micros.front();
  };

  // ---- loop: one iteration = one optimizer step ----
  bool reference_checked = latest.has_value() || recompute;
  while (state.step < total_steps) {
    std::optional<models::OpProfile> profile;
    if (!opt.profile_dir.empty() && state.step + 1 == opt.profile_step) profile.emplace(model.device().is_cuda());
    const auto t0 = std::chrono::steady_clock::now();
    const std::vector<int64_t> global = sampler.next_batch(plan.effective_batch());
    const int64_t items_in_step = static_cast<int64_t>(global.size());
    const std::vector<int64_t> mine = shard_batch(global, rank, world);
    std::vector<double> m(kMetrics, 0.0);
    double ref_check = 0.0;
    // Wall time of this rank's phases in the step; on CUDA each phase ends with a device sync so
    // the time is its own (the syncs cost little next to a 7B forward).
    std::map<std::string, double> phase_s;
    models::SyncedLap phase_lap(model.device().is_cuda());
    auto phase_end = [&](const char* name) { phase_s[name] += phase_lap.next(name); };

    const std::vector<std::vector<int64_t>> micros = split_micro_batches(mine, plan.micro_batch_size);
    for (size_t j = 0; j < micros.size(); ++j) {
      const std::vector<int64_t>& micro = micros[j];
      const auto held = inputs.get_batch(micro);
      // The next micro-batch's images and tokens are prepared while this one runs on the model.
      if (cfg.prefetch_images) inputs.prefetch(j + 1 < micros.size() ? micros[j + 1] : first_micro_batch_after(sampler, state.step + 1));
      std::vector<const PairInputs*> batch;
      for (const auto& in : held) batch.push_back(in.get());
      const int64_t B = static_cast<int64_t>(batch.size());
      MultiViewStats stats;

      // Reference sums: recorded with the pairs, or this model with the adapter off.
      std::array<torch::Tensor, kRoles> ref;
      if (recompute) {
        torch::NoGradGuard no_grad;
        lora.set_enabled(false);
        ref = score_roles(model, batch, reference_roles, multiview, nullptr);
        lora.set_enabled(true);
      } else {
        std::array<std::vector<double>, kRoles> v;
        for (int64_t i : micro) {
          const ReferenceLogps& r = *data[static_cast<size_t>(i)].reference;
          v[kFocusChosenI].push_back(r.focus_chosen);
          v[kFocusRejectedI].push_back(r.focus_rejected);
          v[kRejectedAug].push_back(r.calib_rejected_aug);
          v[kRejectedDeg].push_back(r.calib_rejected_deg);
          v[kRobustChosen].push_back(r.robust_chosen);
          v[kRobustRejected].push_back(r.robust_rejected);
        }
        for (Role r : reference_roles) ref[r] = torch::tensor(v[r], torch::kFloat64).to(model.device(), torch::kFloat32);
      }

      phase_end("time/data_and_reference_s");
      const auto pol = score_roles(model, batch, policy_roles, multiview, &stats);
      phase_end("time/forward_s");

      // Step 1 of a fresh run: the adapter is still zero, so the policy IS the base model and must
      // reproduce the recorded reference sums; pairs made by another model, template or
      // preprocessing would otherwise train against wrong constants without any sign.
      if (!reference_checked) {
        for (Role r : {kFocusChosenI, kFocusRejectedI, kRobustChosen, kRobustRejected}) {
          if (!pol[r].defined() || !ref[r].defined()) continue;
          const auto rel = ((pol[r].detach() - ref[r]).abs() / (ref[r].abs() + 1.0)).max().item<double>();
          ref_check = std::max(ref_check, rel);
        }
        if (ref_check > cfg.reference_check_tolerance) {
          throw InputError(opt.pairs_path, "recorded reference log-probs differ from this model's by up to " +
                                               std::to_string(ref_check) + " (relative; tolerance " +
                                               std::to_string(cfg.reference_check_tolerance) +
                                               "): were the pairs made with another model or preprocessing? "
                                               "Use the model that generated them, or reference: recompute");
        }
      }

      P2DpoLogps in;
      in.focus_chosen = pol[kFocusChosenI];
      in.focus_rejected = pol[kFocusRejectedI];
      in.ref_focus_chosen = ref[kFocusChosenI];
      in.ref_focus_rejected = ref[kFocusRejectedI];
      in.calib_chosen_aug = pol[kChosenAug];
      in.calib_chosen_deg = pol[kChosenDeg];
      in.ref_calib_rejected_aug = ref[kRejectedAug];
      in.ref_calib_rejected_deg = ref[kRejectedDeg];
      in.robust_chosen = pol[kRobustChosen];
      in.robust_rejected = pol[kRobustRejected];
      in.ref_robust_chosen = ref[kRobustChosen];
      in.ref_robust_rejected = ref[kRobustRejected];
      std::vector<double> wf, wr;
      for (int64_t i : micro) {
        const TrainingPair& p = data[static_cast<size_t>(i)];
        pairs::DdwWeights w;
        w.w_focus = w.w_robust = cfg.ddw.w_base;
        if (p.clip_image && p.clip_crop) w = pairs::ddw_weights(*p.clip_image, *p.clip_crop, cfg.ddw);
        wf.push_back(w.w_focus);
        wr.push_back(w.w_robust);
      }
      in.w_focus = torch::tensor(wf, torch::kFloat64).to(model.device(), torch::kFloat32);
      in.w_robust = torch::tensor(wr, torch::kFloat64).to(model.device(), torch::kFloat32);
      const P2DpoLossTerms terms = p2dpo_loss(in, loss_cfg);
      torch::Tensor per_sample = terms.per_sample;
      if (cfg.sft_weight > 0) {
        std::vector<double> lengths;
        for (const PairInputs* pi : batch) lengths.push_back(static_cast<double>(pi->seqs[kFocusChosenI].answer_ids.size()));
        const auto len = torch::tensor(lengths, torch::kFloat64).to(model.device(), torch::kFloat32);
        per_sample = per_sample + cfg.sft_weight * (-pol[kFocusChosenI] / len);
      }
      const torch::Tensor scaled = scale_for_accumulation(per_sample.sum(), items_in_step);
      phase_end("time/loss_s");
      scaled.backward();
      phase_end("time/backward_s");

      m[kCount] += static_cast<double>(B);
      m[kLoss] += per_sample.detach().sum().item<double>();
      m[kDpoFocus] += sum_of(terms.dpo_focus);
      m[kCalib] += sum_of(terms.calib);
      m[kDpoRobust] += sum_of(terms.dpo_robust);
      m[kFocusChosen] += sum_of(terms.focus_rewards_chosen);
      m[kFocusRejected] += sum_of(terms.focus_rewards_rejected);
      if (terms.focus_rewards_chosen.defined())
        m[kFocusAcc] += (terms.focus_rewards_chosen > terms.focus_rewards_rejected).sum().item<double>();
      m[kRobustChosen_] += sum_of(terms.robust_rewards_chosen);
      m[kRobustRejected_] += sum_of(terms.robust_rewards_rejected);
      if (terms.robust_rewards_chosen.defined())
        m[kRobustAcc] += (terms.robust_rewards_chosen > terms.robust_rewards_rejected).sum().item<double>();
      m[kCalibMargin] += sum_of(terms.calib_margin);
      m[kWFocus] += in.w_focus.sum().item<double>();
      m[kTokens] += static_cast<double>(stats.prefix_tokens + stats.continuation_tokens);
    }

    // Data parallel: every rank's gradient is its pairs' share of the step's mean, so a sum over
    // ranks is the full step's gradient; metrics are sums too. Ranks without pairs send zeros.
    if (opt.group) {
      std::vector<torch::Tensor> grads;
      for (const auto& [name, p] : params) {
        if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
        grads.push_back(p.mutable_grad());
      }
      opt.group->all_reduce_sum(grads);
      m = opt.group->all_reduce_sum(m);
    }

    const double norm = cfg.max_grad_norm > 0 ? clip_grad_norm(params, cfg.max_grad_norm) : grad_norm(params);
    const double lr = schedule.lr_at(state.step);
    optimizer.step(lr);
    optimizer.zero_grad();
    phase_end("time/optimizer_s");  // with the gradient all-reduce and clipping
    if (profile) {
      std::string label = "train-step-" + std::to_string(state.step + 1);
      if (world > 1) label += "-rank-" + std::to_string(rank);
      result.profile = profile->finish(opt.profile_dir, label);
      result.profile["step"] = state.step + 1;
      profile.reset();
    }

    state.step += 1;
    state.data = sampler.position();
    const double step_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    state.elapsed_s += step_s;
    const double n = std::max(1.0, m[kCount]);
    json rec = {{"step", state.step},
                {"epoch", static_cast<double>(state.step) / static_cast<double>(steps_per_epoch)},
                {"loss", m[kLoss] / n},
                {"lr", lr},
                {"grad_norm", norm},
                {"pairs", m[kCount]},
                {"tokens", m[kTokens]},
                {"tokens_per_s", step_s > 0 ? m[kTokens] / step_s : 0.0},
                {"pairs_per_s", step_s > 0 ? m[kCount] / step_s : 0.0},
                {"elapsed_s", state.elapsed_s}};
    for (const auto& [name, secs] : phase_s) rec[name] = secs;
    if (loss_cfg.use_focus) {
      rec["loss/dpo_focus"] = m[kDpoFocus] / n;
      rec["focus/rewards/chosen"] = m[kFocusChosen] / n;
      rec["focus/rewards/rejected"] = m[kFocusRejected] / n;
      rec["focus/rewards/margins"] = (m[kFocusChosen] - m[kFocusRejected]) / n;
      rec["focus/rewards/accuracies"] = m[kFocusAcc] / n;
      if (loss_cfg.use_calib) {
        rec["loss/calib"] = m[kCalib] / n;
        rec["calib/margin"] = m[kCalibMargin] / n;
      }
    }
    if (loss_cfg.use_robust) {
      rec["loss/dpo_robust"] = m[kDpoRobust] / n;
      rec["robust/rewards/chosen"] = m[kRobustChosen_] / n;
      rec["robust/rewards/rejected"] = m[kRobustRejected_] / n;
      rec["robust/rewards/margins"] = (m[kRobustChosen_] - m[kRobustRejected_]) / n;
      rec["robust/rewards/accuracies"] = m[kRobustAcc] / n;
    }
    if (loss_cfg.use_focus && loss_cfg.use_robust) rec["weights/w_focus"] = m[kWFocus] / n;
    if (!reference_checked) {
      rec["reference_check_max_rel_diff"] = ref_check;
      reference_checked = true;
    }
    if (metrics) metrics->log(rec);
    if (!result.resumed_from && state.step == 1) result.first_loss = rec["loss"];
    result.last_loss = rec["loss"];
    result.last_metrics = rec;
    if (opt.progress && rank == 0) {
      char extra[128];
      std::snprintf(extra, sizeof extra, "loss %.4f lr %.3g %.2f pairs/s", rec["loss"].get<double>(), lr,
                    rec["pairs_per_s"].get<double>());
      progress.update(state.step, extra);
    }

    const bool stop = opt.stop_after_steps > 0 && state.step >= opt.stop_after_steps;
    const bool due = (cfg.save_every > 0 && state.step % cfg.save_every == 0) || state.step == total_steps;
    if (due && rank == 0) save_checkpoint(ckpt_dir, params, optimizer, state, cfg.keep_last);
    if (due && opt.group) opt.group->barrier();  // no rank runs ahead of a checkpoint it may resume from
    if (stop) break;
  }
  result.steps_done = state.step;
  if (state.step >= total_steps) {
    result.adapter_dir = (fs::path(opt.out_dir) / "adapter").string();
    if (rank == 0) {
      lora.save(result.adapter_dir, opt.model_dir);
      io::write_json_atomic((fs::path(opt.out_dir) / "summary.json").string(),
                            json{{"steps", state.step}, {"first_loss", result.first_loss}, {"last_loss", result.last_loss},
                             {"last_metrics", result.last_metrics}, {"adapter", result.adapter_dir},
                             {"elapsed_s", state.elapsed_s}});
    }
  }
  return result;  // `restore` detaches the adapter
}

}  // namespace p2dpo::train
