#include "infer/generate.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <iostream>
#include <limits>
#include <memory>

#include "infer/decode_graph.h"
#include "io/errors.h"
#include "models/op_profile.h"

namespace p2dpo::infer {

torch::Tensor warp_scores(const torch::Tensor& scores_in, const SamplingConfig& cfg) {
  auto scores = scores_in;
  const double neg_inf = -std::numeric_limits<double>::infinity();
  if (cfg.temperature > 0.0 && cfg.temperature != 1.0) scores = scores / cfg.temperature;
  if (cfg.top_k > 0) {
    const int64_t k = std::min<int64_t>(cfg.top_k, scores.size(-1));
    auto kth = std::get<0>(torch::topk(scores, k, -1)).slice(-1, k - 1, k);
    scores = scores.masked_fill(scores < kth, neg_inf);
  }
  if (cfg.top_p < 1.0) {
    auto sorted = torch::sort(scores, -1, /*descending=*/false);
    auto sorted_logits = std::get<0>(sorted);
    auto sorted_idx = std::get<1>(sorted);
    auto cum = sorted_logits.softmax(-1).cumsum(-1);
    auto remove = cum <= (1.0 - cfg.top_p);
    remove.index_put_({torch::indexing::Ellipsis, -1}, false);  // keep at least one token
    auto remove_orig = remove.scatter(-1, sorted_idx, remove);
    scores = scores.masked_fill(remove_orig, neg_inf);
  }
  return scores;
}

namespace {

struct Batch {
  torch::Tensor ids;            // [R, L] left padded
  torch::Tensor mask;           // [R, L]
  torch::Tensor image_rows;     // [n_rows, H] in batch order, or undefined
};

Batch left_pad(const std::vector<std::vector<int64_t>>& seqs, const std::vector<torch::Tensor>& feats,
               int64_t pad_id) {
  size_t L = 0;
  for (const auto& s : seqs) L = std::max(L, s.size());
  const int64_t R = static_cast<int64_t>(seqs.size());
  Batch b;
  b.ids = torch::full({R, static_cast<int64_t>(L)}, pad_id, torch::kLong);
  b.mask = torch::zeros({R, static_cast<int64_t>(L)}, torch::kLong);
  std::vector<torch::Tensor> rows;
  for (int64_t r = 0; r < R; ++r) {
    const auto& s = seqs[r];
    const int64_t off = static_cast<int64_t>(L - s.size());
    if (!s.empty()) {
      b.ids.index_put_({r, torch::indexing::Slice(off, torch::indexing::None)}, torch::tensor(s, torch::kLong));
      b.mask.index_put_({r, torch::indexing::Slice(off, torch::indexing::None)}, 1);
    }
    if (feats[r].defined()) rows.push_back(feats[r].reshape({-1, feats[r].size(-1)}));
  }
  if (!rows.empty()) b.image_rows = torch::cat(rows, 0);
  return b;
}

}  // namespace

std::vector<GenerationResult> generate_multi_context(models::VisionLanguageModel& model,
                                                     const std::vector<std::vector<GenerationRequest>>& contexts,
                                                     const LogitsCombiner& combine,
                                                     const SamplingConfig& cfg) {
  torch::NoGradGuard no_grad;
  const int64_t N = static_cast<int64_t>(contexts.size());
  std::vector<GenerationResult> results(N);
  if (N == 0) return results;
  const int64_t K = static_cast<int64_t>(contexts[0].size());
  for (const auto& c : contexts) {
    if (static_cast<int64_t>(c.size()) != K || K == 0) throw std::invalid_argument("every sequence needs the same number (>0) of contexts");
    for (const auto& r : c) if (r.prompt_ids.empty()) throw InputError("--prompt", "a prompt has no tokens");
  }
  if (cfg.max_new_tokens <= 0) return results;
  const auto& info = model.info();
  const std::vector<int64_t> eos = cfg.eos_token_ids.empty() ? info.eos_token_ids : cfg.eos_token_ids;
  const int64_t pad_id = info.pad_token_id;

  std::vector<std::vector<int64_t>> seqs;
  std::vector<torch::Tensor> feats;
  for (const auto& c : contexts)
    for (const auto& r : c) {
      seqs.push_back(r.prompt_ids);
      feats.push_back(r.image_features);
    }
  Batch batch = left_pad(seqs, feats, pad_id);

  std::vector<at::Generator> gens;
  if (!cfg.greedy()) {
    for (int64_t i = 0; i < N; ++i) {
      uint64_t s = contexts[i][0].seed.value_or(cfg.seed + static_cast<uint64_t>(i));
      gens.push_back(at::detail::createCPUGenerator(s));
    }
  }

  std::vector<bool> finished(N, false);
  models::KVCache cache = model.new_cache();
  torch::Tensor all_ids = batch.ids;   // for the no-cache path
  torch::Tensor all_mask = batch.mask;
  torch::Tensor step_ids = batch.ids, step_mask = batch.mask;
  bool first = true;
  bool graphs = cfg.cuda_graphs && cfg.use_cache && model.device().is_cuda();
  if (graphs && (!decode_graphs_available() || models::OpProfile::recording())) {
    static bool warned = false;  // once per process, not once per batch
    if (!warned)
      std::cerr << (decode_graphs_available()
                        ? "note: an op profile is recording, and CUPTI and CUDA-graph capture are known to fail together: "
                          "decoding steps run one by one while it records\n"
                        : "warning: this build has no CUDA graphs (P2DPO_CUDA_GRAPHS=OFF); decoding steps run one by one\n");
    warned = true;
    graphs = false;
  }
  const bool fixed = cfg.fixed_cache.value_or(model.device().is_cuda());
  const bool freeze = cfg.use_cache && (fixed || graphs) && cfg.max_new_tokens > 1;
  std::unique_ptr<DecodeGraph> graph;
  for (int step = 0; step < cfg.max_new_tokens; ++step) {
    models::ForwardOutput out;
    if (cache.is_fixed()) {
      if (graph) {
        out.logits = graph->step(step_ids);
      } else {
        models::ForwardInput in;
        in.logits_last_only = true;
        in.input_ids = step_ids.to(model.device());
        in.cache = &cache;
        out = model.forward(in);
      }
    } else {
      models::ForwardInput in;
      in.logits_last_only = true;
      if (cfg.use_cache) {
        in.input_ids = step_ids;
        in.attention_mask = step_mask;
        in.cache = &cache;
        if (first) in.image_features = batch.image_rows;
      } else {
        in.input_ids = all_ids;
        in.attention_mask = all_mask;
        in.image_features = batch.image_rows;
      }
      out = model.forward(in);
      if (first && freeze) {
        // Room for every token still to come; the prompt's forward above ran on the growing cache.
        model.freeze_cache(cache, cache.length() + cfg.max_new_tokens);
        if (graphs) graph = std::make_unique<DecodeGraph>(model, cache);
      }
    }
    first = false;
    // Scores stay on the model's device (a GPU warps, combines and arg-maxes them itself); only the
    // chosen ids and their log-probs cross to the host, or, when sampling, each row's probabilities
    // and log-probs, which the per-sequence CPU generators draw from (same seeds, same draws on
    // any device).
    auto logits = out.logits.select(1, 0).to(torch::kFloat32).view({N, K, -1});  // [N, K, V]
    // HF's MinNewTokensLengthLogitsProcessor: EOS is masked before warping (log-probs see the
    // mask too), in every context before they are combined (a combiner's own cut, such as
    // contrastive amplification's V_head, then never keeps EOS alone) and again after (-inf - -inf).
    const bool hold_eos = step < cfg.min_new_tokens;
    auto mask_eos = [&](torch::Tensor& t) {
      for (int64_t e : eos)
        if (e >= 0 && e < t.size(-1)) t.select(-1, e).fill_(-std::numeric_limits<float>::infinity());
    };
    if (hold_eos) mask_eos(logits);
    auto scores = combine ? combine(logits) : logits.select(1, 0);
    if (hold_eos) mask_eos(scores);
    auto logp = torch::log_softmax(scores, -1);
    // Exactly one device-to-host read per step (each read waits for the queue to drain).
    torch::Tensor next, chosen_logp;  // [N] int64 and [N] float32, on the host
    if (cfg.greedy()) {
      auto next_on_device = scores.argmax(-1);
      auto picked = logp.gather(1, next_on_device.view({N, 1})).view({N});
      // Token ids are exact in float64 (far below 2^53), as are float32 log-probs.
      auto host = torch::stack({next_on_device.to(torch::kFloat64), picked.to(torch::kFloat64)}).to(torch::kCPU);
      next = host[0].to(torch::kInt64).contiguous();
      chosen_logp = host[1].to(torch::kFloat32).contiguous();
    } else {
      auto host = torch::stack({torch::softmax(warp_scores(scores, cfg), -1), logp}).to(torch::kCPU);
      auto probs = host[0], logp_host = host[1];
      std::vector<torch::Tensor> draws;
      for (int64_t i = 0; i < N; ++i) draws.push_back(torch::multinomial(probs[i], 1, false, gens[i]));
      next = torch::cat(draws).contiguous();
      chosen_logp = logp_host.gather(1, next.view({N, 1})).view({N}).contiguous();
    }
    const int64_t* next_ptr = next.data_ptr<int64_t>();
    const float* logp_ptr = chosen_logp.data_ptr<float>();
    bool all_done = true;
    for (int64_t i = 0; i < N; ++i) {
      if (finished[i]) continue;
      const int64_t tok = next_ptr[i];
      results[i].token_ids.push_back(tok);
      results[i].logprobs.push_back(logp_ptr[i]);
      if (cfg.stop_on_eos && std::find(eos.begin(), eos.end(), tok) != eos.end()) {
        finished[i] = true;
        results[i].stopped_on_eos = true;
      }
      all_done = all_done && finished[i];
    }
    for (int64_t i = 0; i < N; ++i)
      if (finished[i]) next[i] = pad_id;  // finished rows keep stepping on padding, as HF
    if (all_done) break;
    // The chosen token goes to every context of its sequence.
    auto next_rows = next.repeat_interleave(K).view({N * K, 1});
    step_ids = next_rows;
    step_mask = torch::ones({N * K, 1}, torch::kLong);
    if (!cfg.use_cache) {
      all_ids = torch::cat({all_ids, next_rows}, 1);
      all_mask = torch::cat({all_mask, step_mask}, 1);
    }
  }
  return results;
}

std::vector<GenerationResult> generate(models::VisionLanguageModel& model,
                                       const std::vector<GenerationRequest>& requests,
                                       const SamplingConfig& cfg) {
  std::vector<std::vector<GenerationRequest>> contexts;
  contexts.reserve(requests.size());
  for (const auto& r : requests) contexts.push_back({r});
  return generate_multi_context(model, contexts, nullptr, cfg);
}

}  // namespace p2dpo::infer
