#pragma once
// The reference training loop: supervised fine-tuning of a VisionLanguageModel on LLaVA
// conversations (loss on answer tokens only). It is written out step by step in causal_lm_loop.cpp
// so that other trainers (the base-model stages, P2-DPO) can copy its order of operations:
//
//   setup   select trainable params -> AdamW -> sampler -> schedule -> resume (or seed) -> logger
//   step    next global batch -> micro-batches -> tokenize + collate ALL of them (the step's token
//           count normalises every micro loss) -> per micro: images -> features -> forward ->
//           summed token NLL / step tokens -> backward -> clip -> lr(step) -> AdamW step ->
//           zero grads -> step += 1, data position -> metrics line -> checkpoint
//
// It is also usable as is: the base trainer's stages are this loop with different trainable sets
// and data.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "models/vlm.h"
#include "train/collate.h"
#include "train/conversations.h"
#include "train/optimizer.h"

namespace p2dpo::train {

// The pieces of a step that every trainer over a VisionLanguageModel needs:
// A conversation tokenized through the model interface (the path scoring uses, so answer tokens
// agree), with `images` = the conversation's images, prepared, in prompt order.
TokenizedExample tokenize_for_model(const models::VisionLanguageModel& model, const Conversation& conv,
                                    const ConversationTemplate& tpl, const std::vector<models::PreparedImage>& images);
// The forward of a collated batch: each distinct image (batch.images, prepared as `batch_images`)
// is encoded once, its features are placed in the image-token slots in order, logits come back.
models::ForwardOutput forward_batch(models::VisionLanguageModel& model, const CausalLMBatch& batch,
                                    const std::vector<models::PreparedImage>& batch_images);
// The same with the images already encoded into LM space: [n_distinct, T, hidden] in batch.images order.
models::ForwardOutput forward_batch_features(models::VisionLanguageModel& model, const CausalLMBatch& batch,
                                             const torch::Tensor& per_image_features);

struct CausalLMTrainConfig {
  ConversationTemplate conversation = conversation_template("v1");
  int64_t epochs = 1;
  int64_t max_steps = 0;  // > 0: the run is this many optimizer steps instead of epochs x steps/epoch
  int64_t micro_batch_size = 4;
  int64_t effective_batch = 32;  // examples per optimizer step
  double peak_lr = 2e-5;
  int64_t warmup_steps = -1;     // >= 0: used as is; else ceil(warmup_ratio * total)
  double warmup_ratio = 0.03;
  double min_lr_ratio = 0.0;
  AdamWConfig adamw;
  double max_grad_norm = 1.0;  // <= 0: no clipping (the norm is still logged)
  int64_t max_length = 0;      // 0 = no truncation
  uint64_t seed = 0;
  int64_t save_every = 100;  // steps; the last step is always saved
  int keep_last = 2;
  bool resume = false;       // continue from out_dir/checkpoints' latest checkpoint when there is one
  // > 0: leave the loop once this many steps are done (in total, not in this run). With
  // save_on_stop a checkpoint is written there (splitting a long run); without, the process state
  // is simply dropped, as a kill would (the resume test).
  int64_t stop_after_steps = 0;
  bool save_on_stop = true;
  bool progress = true;  // progress line on stderr
  // When no trainable parameter feeds the vision tower, encode each distinct image once (alone, so
  // its features never depend on which batch it first came in: resume stays bit-identical) and
  // keep the tower's output for later steps; only the projector runs per step. Images are then
  // decoded once per run instead of once per step.
  bool cache_frozen_vision = true;
};

struct CausalLMTrainResult {
  int64_t steps_done = 0;  // optimizer steps completed in total
  int64_t total_steps = 0;
  std::optional<int64_t> resumed_from;  // the step of the checkpoint resumed from
  double last_loss = 0.0;
  std::string last_checkpoint;  // "" if none was written
};

// Trains the parameters `trainable` selects, in place. Writes out_dir/metrics.jsonl and
// out_dir/checkpoints/. Image paths of the conversations are decoded with image/decode.h.
CausalLMTrainResult train_causal_lm(models::VisionLanguageModel& model, const std::vector<Conversation>& data,
                                    const std::function<bool(const std::string&)>& trainable,
                                    const CausalLMTrainConfig& cfg, const std::string& out_dir);

}  // namespace p2dpo::train
