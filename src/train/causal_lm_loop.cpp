#include "train/causal_lm_loop.h"

#include <torch/types.h>
#include <torch/utils.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>

#include "image/decode.h"
#include "io/errors.h"
#include "models/vlm.h"
#include "train/checkpoint.h"
#include "train/collate.h"
#include "train/grad.h"
#include "train/loss.h"
#include "train/metrics.h"
#include "train/params.h"
#include "train/rng.h"
#include "train/sampler.h"
#include "train/schedule.h"

namespace p2dpo::train {

namespace fs = std::filesystem;

TokenizedExample tokenize_for_model(const models::VisionLanguageModel& model, const Conversation& conv,
                                    const ConversationTemplate& tpl, const std::vector<models::PreparedImage>& images) {
  const PromptAnswerTokenizer tokenize = [&](const std::string& prompt, const std::string& answer, int n_images) {
    if (n_images > static_cast<int>(images.size())) {
      throw InputError(conv.id, "the prompt has " + std::to_string(n_images) + " <image> markers but " +
                                    std::to_string(images.size()) + " image(s) were given");
    }
    const std::vector<models::PreparedImage> in_prompt(images.begin(), images.begin() + n_images);
    return model.tokenize_prompt_answer(prompt, answer, in_prompt);
  };
  return tokenize_conversation(conv, tpl, tokenize);
}

models::ForwardOutput forward_batch(models::VisionLanguageModel& model, const CausalLMBatch& batch,
                                    const std::vector<models::PreparedImage>& batch_images) {
  TORCH_CHECK(batch_images.size() == batch.images.size(), "forward_batch: ", batch.images.size(),
              " images in the batch, ", batch_images.size(), " prepared");
  return forward_batch_features(model, batch, batch_images.empty() ? torch::Tensor() : model.encode_images(batch_images));
}

models::ForwardOutput forward_batch_features(models::VisionLanguageModel& model, const CausalLMBatch& batch,
                                             const torch::Tensor& per_image) {
  const CausalLMTensors t = to_tensors(batch, model.device());
  torch::Tensor features;
  if (!batch.images.empty()) {
    TORCH_CHECK(per_image.defined() && per_image.size(0) == static_cast<int64_t>(batch.images.size()),
                "forward_batch_features: ", batch.images.size(), " images in the batch, features for ",
                per_image.defined() ? per_image.size(0) : 0);
    const auto order = image_feature_order(batch);
    features = per_image.index_select(0, torch::tensor(order, torch::kInt64).to(per_image.device()))
                   .reshape({-1, per_image.size(-1)});
  }
  models::ForwardInput in;
  in.input_ids = t.input_ids;
  in.attention_mask = t.attention_mask;
  in.image_features = features;
  return model.forward(in);
}

namespace {
// One micro-batch, ready for the forward: collated ids/labels and the prepared images it needs.
struct MicroBatch {
  CausalLMBatch batch;
  std::vector<models::PreparedImage> images;  // batch.images, prepared, same order
};

// Images of a run. With a frozen vision tower (cache_vision) an image is decoded and encoded once
// per run and its pixels dropped; otherwise images are decoded once per step.
struct ImageStore {
  bool cache_vision = false;
  std::map<std::string, models::PreparedImage> prepared;  // this step's (or, cached, the run's, pixel-free)
  std::map<std::string, torch::Tensor> vision;           // cache_vision: path -> [T, Dv], no grad

  const models::PreparedImage& get(models::VisionLanguageModel& model, const std::string& path) {
    auto it = prepared.find(path);
    if (it != prepared.end()) return it->second;
    models::PreparedImage img = model.prepare_image(image::decode_image_file(path));
    if (cache_vision) {
      torch::NoGradGuard no_grad;
      vision[path] = model.vision_features({img})[0].clone();
      img.pixel_values = torch::Tensor();  // the tokenizer needs only the grid
      img.view = image::ImageU8();
    }
    return prepared.emplace(path, std::move(img)).first->second;
  }
  void end_step() {
    if (!cache_vision) prepared.clear();
  }
};

MicroBatch build_micro_batch(models::VisionLanguageModel& model, const std::vector<Conversation>& data,
                             const std::vector<int64_t>& indices, const CausalLMTrainConfig& cfg,
                             ImageStore& store) {
  std::vector<TokenizedExample> examples;
  for (const int64_t i : indices) {
    const Conversation& conv = data[static_cast<size_t>(i)];
    std::vector<models::PreparedImage> conv_images;
    for (const auto& path : conv.images) conv_images.push_back(store.get(model, path));
    examples.push_back(tokenize_for_model(model, conv, cfg.conversation, conv_images));
  }
  CollateOptions copts;
  copts.pad_token_id = model.info().pad_token_id;
  copts.max_length = cfg.max_length;
  copts.image_token_id = model.info().image_token_id;
  MicroBatch mb;
  mb.batch = collate_causal_lm(examples, copts);
  for (const auto& key : mb.batch.images) mb.images.push_back(store.prepared.at(key));
  return mb;
}

// Forward one micro-batch; returns the summed answer-token NLL (differentiable).
torch::Tensor micro_batch_nll_sum(models::VisionLanguageModel& model, const MicroBatch& mb, const ImageStore& store) {
  models::ForwardOutput out;
  if (store.cache_vision && !mb.batch.images.empty()) {
    std::vector<torch::Tensor> rows;
    for (const auto& key : mb.batch.images) rows.push_back(store.vision.at(key));
    out = forward_batch_features(model, mb.batch, model.project_vision_features(torch::stack(rows)));
  } else {
    out = forward_batch(model, mb.batch, mb.images);
  }
  const torch::Tensor labels = torch::tensor(mb.batch.labels, torch::kInt64).view({mb.batch.batch_size, mb.batch.length});
  return masked_token_nll_sum(out.logits, labels).sum;
}
}  // namespace

CausalLMTrainResult train_causal_lm(models::VisionLanguageModel& model, const std::vector<Conversation>& data,
                                    const std::function<bool(const std::string&)>& trainable,
                                    const CausalLMTrainConfig& cfg, const std::string& out_dir) {
  if (data.empty()) throw InputError("--data", "no training conversations");
  const std::string ckpt_dir = (fs::path(out_dir) / "checkpoints").string();

  // ---- setup ----
  const auto params = select_trainable(model.named_parameters(), trainable);
  if (params.empty()) throw InputError("--train", "no parameter is selected for training");
  AdamW optimizer(params, cfg.adamw);
  EpochSampler sampler(static_cast<int64_t>(data.size()), cfg.seed);
  const AccumulationPlan plan = AccumulationPlan::for_effective_batch(cfg.effective_batch, cfg.micro_batch_size, 1,
                                                                     "--effective-batch");
  const int64_t steps_per_epoch = sampler.batches_per_epoch(plan.effective_batch());
  const int64_t total_steps = cfg.max_steps > 0 ? cfg.max_steps : cfg.epochs * steps_per_epoch;
  CosineSchedule schedule;
  schedule.peak_lr = cfg.peak_lr;
  schedule.total_steps = total_steps;
  schedule.warmup_steps = cfg.warmup_steps >= 0 ? cfg.warmup_steps : warmup_steps_from_ratio(cfg.warmup_ratio, total_steps);
  schedule.min_lr_ratio = cfg.min_lr_ratio;

  TrainState state;
  CausalLMTrainResult result;
  result.total_steps = total_steps;
  const std::optional<std::string> latest = cfg.resume ? latest_checkpoint(ckpt_dir) : std::nullopt;
  if (latest) {
    state = load_checkpoint(*latest, params, optimizer);  // params, moments, torch RNG
    if (state.data_seed != cfg.seed) {
      throw InputError("--seed", "the run in " + out_dir + " used seed " + std::to_string(state.data_seed) +
                                     ", not " + std::to_string(cfg.seed));
    }
    const int64_t saved_total = state.extra.value("total_steps", int64_t{-1});
    const int64_t saved_batch = state.extra.value("effective_batch", int64_t{-1});
    if (saved_total != total_steps || saved_batch != plan.effective_batch()) {
      throw InputError(*latest, "was written by a run of " + std::to_string(saved_total) + " steps x batch " +
                                    std::to_string(saved_batch) + "; this run has " + std::to_string(total_steps) +
                                    " x " + std::to_string(plan.effective_batch()) + " (not a continuation)");
    }
    sampler.set_position(state.data);
    result.resumed_from = state.step;
  } else {
    torch::manual_seed(cfg.seed);
    state.data_seed = cfg.seed;
    state.rng.seed(derive_seed(cfg.seed, 1));
  }
  state.extra["total_steps"] = total_steps;
  state.extra["effective_batch"] = plan.effective_batch();
  MetricsLogger metrics((fs::path(out_dir) / "metrics.jsonl").string(),
                        latest ? std::optional<int64_t>(state.step) : std::nullopt);
  ProgressLine progress("train step", total_steps, state.step);
  ImageStore images;
  images.cache_vision = cfg.cache_frozen_vision;
  for (const auto& [name, p] : params) {
    for (const auto& prefix : model.vision_feature_parameter_prefixes())
      if (name.rfind(prefix, 0) == 0) images.cache_vision = false;  // the tower trains: encode every step
  }

  // ---- loop: one iteration = one optimizer step ----
  while (state.step < total_steps) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::vector<int64_t> step_indices = sampler.next_batch(plan.effective_batch());

    // 1. Build every micro-batch first: the step's target-token count normalises each micro loss,
    //    so the accumulated gradient is the gradient of the step's token mean.
    std::vector<MicroBatch> micro;
    int64_t step_tokens = 0, real_tokens = 0;
    for (const auto& idx : split_micro_batches(step_indices, plan.micro_batch_size)) {
      micro.push_back(build_micro_batch(model, data, idx, cfg, images));
      step_tokens += micro.back().batch.target_tokens;
      real_tokens += micro.back().batch.real_tokens;
    }

    // 2. Forward + backward per micro-batch; gradients accumulate in .grad.
    double loss = 0.0;
    for (const auto& mb : micro) {
      const torch::Tensor scaled = scale_for_accumulation(micro_batch_nll_sum(model, mb, images), step_tokens);
      scaled.backward();
      loss += scaled.item<double>();
    }

    // 3. Clip, learning rate for this step, update, clear.
    const double norm = cfg.max_grad_norm > 0 ? clip_grad_norm(params, cfg.max_grad_norm) : grad_norm(params);
    const double lr = schedule.lr_at(state.step);
    optimizer.step(lr);
    optimizer.zero_grad();
    images.end_step();

    // 4. Bookkeeping: the state a checkpoint must capture is now that of `step` completed steps.
    state.step += 1;
    state.data = sampler.position();
    const double step_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    state.elapsed_s += step_s;
    result.last_loss = loss;
    metrics.log({{"step", state.step},
                 {"epoch", static_cast<double>(state.step) / static_cast<double>(steps_per_epoch)},
                 {"loss", loss},
                 {"lr", lr},
                 {"grad_norm", norm},
                 {"target_tokens", step_tokens},
                 {"tokens", real_tokens},
                 {"tokens_per_s", step_s > 0 ? static_cast<double>(real_tokens) / step_s : 0.0},
                 {"elapsed_s", state.elapsed_s}});
    if (cfg.progress) {
      char extra[96];
      std::snprintf(extra, sizeof extra, "loss %.4f lr %.3g", loss, lr);
      progress.update(state.step, extra);
    }

    // 5. Checkpoint (and the optional early stop that splits a run or stands in for a kill).
    const bool stop = cfg.stop_after_steps > 0 && state.step >= cfg.stop_after_steps;
    const bool due = (cfg.save_every > 0 && state.step % cfg.save_every == 0) || state.step == total_steps;
    if (due || (stop && cfg.save_on_stop)) {
      result.last_checkpoint = save_checkpoint(ckpt_dir, params, optimizer, state, cfg.keep_last);
    }
    if (stop) break;
  }
  result.steps_done = state.step;
  return result;
}

}  // namespace p2dpo::train
