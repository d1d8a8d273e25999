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

namespace {

// A group's place in the fused batch and how far it has decoded.
struct GroupState {
  int64_t N = 0, K = 0;
  int64_t first_row = -1;  // -1: the group has no rows in the batch (no sequences, or no tokens to make)
  std::vector<int64_t> eos;
  std::vector<at::Generator> gens;  // per sequence, when sampling
  std::vector<bool> finished;
  bool done = true;
};

}  // namespace

std::vector<std::vector<GenerationResult>> generate_groups(models::VisionLanguageModel& model,
                                                           const std::vector<DecodeGroup>& groups) {
  torch::NoGradGuard no_grad;
  std::vector<std::vector<GenerationResult>> results(groups.size());
  std::vector<GroupState> state(groups.size());
  const auto& info = model.info();
  const int64_t pad_id = info.pad_token_id;

  // The batch: every included group's contexts, group after group, sequence after sequence.
  std::vector<std::vector<int64_t>> seqs;
  std::vector<torch::Tensor> feats;
  const SamplingConfig* loop_cfg = nullptr;  // use_cache, fixed_cache, cuda_graphs: shared by the groups
  int max_steps = 0;
  for (size_t g = 0; g < groups.size(); ++g) {
    const DecodeGroup& group = groups[g];
    GroupState& gs = state[g];
    gs.N = static_cast<int64_t>(group.contexts.size());
    results[g].resize(static_cast<size_t>(gs.N));
    if (gs.N == 0) continue;
    gs.K = static_cast<int64_t>(group.contexts[0].size());
    for (const auto& c : group.contexts) {
      if (static_cast<int64_t>(c.size()) != gs.K || gs.K == 0) throw std::invalid_argument("every sequence needs the same number (>0) of contexts");
      for (const auto& r : c) if (r.prompt_ids.empty()) throw InputError("--prompt", "a prompt has no tokens");
    }
    const SamplingConfig& cfg = group.cfg;
    if (cfg.max_new_tokens <= 0) continue;
    if (!loop_cfg) {
      loop_cfg = &cfg;
    } else if (cfg.use_cache != loop_cfg->use_cache || cfg.fixed_cache != loop_cfg->fixed_cache ||
               cfg.cuda_graphs != loop_cfg->cuda_graphs) {
      throw std::invalid_argument("decoding groups in one call must agree on use_cache, fixed_cache and cuda_graphs");
    }
    gs.first_row = static_cast<int64_t>(seqs.size());
    gs.eos = cfg.eos_token_ids.empty() ? info.eos_token_ids : cfg.eos_token_ids;
    gs.finished.assign(static_cast<size_t>(gs.N), false);
    gs.done = false;
    if (!cfg.greedy()) {
      for (int64_t i = 0; i < gs.N; ++i) {
        uint64_t s = group.contexts[i][0].seed.value_or(cfg.seed + static_cast<uint64_t>(i));
        gs.gens.push_back(at::detail::createCPUGenerator(s));
      }
    }
    for (const auto& c : group.contexts)
      for (const auto& r : c) {
        seqs.push_back(r.prompt_ids);
        feats.push_back(r.image_features);
      }
    max_steps = std::max(max_steps, cfg.max_new_tokens);
  }
  if (!loop_cfg) return results;
  const int64_t R = static_cast<int64_t>(seqs.size());
  Batch batch = left_pad(seqs, feats, pad_id);

  models::KVCache cache = model.new_cache();
  torch::Tensor all_ids = batch.ids;   // for the no-cache path
  torch::Tensor all_mask = batch.mask;
  torch::Tensor step_ids = batch.ids, step_mask = batch.mask;
  bool first = true;
  const bool use_cache = loop_cfg->use_cache;
  bool graphs = loop_cfg->cuda_graphs && use_cache && model.device().is_cuda();
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
  const bool fixed = loop_cfg->fixed_cache.value_or(model.device().is_cuda());
  const bool freeze = use_cache && (fixed || graphs) && max_steps > 1;
  std::unique_ptr<DecodeGraph> graph;
  // The prompt's keys and values go straight into buffers of the frozen capacity.
  if (freeze) cache.room_after = max_steps;
  for (int step = 0; step < max_steps; ++step) {
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
      if (use_cache) {
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
        model.freeze_cache(cache, cache.length() + max_steps);
        if (graphs) graph = std::make_unique<DecodeGraph>(model, cache);
      }
    }
    first = false;
    auto logits_all = out.logits.select(1, 0).to(torch::kFloat32);  // [R, V]
    const int64_t V = logits_all.size(-1);
    // Greedy ids cross to the host as float32 with the log-probs: exact below 2^24.
    if (V >= (int64_t{1} << 24)) throw std::invalid_argument("vocabulary too large for float32 token ids");
    // Scores stay on the model's device (a GPU warps, combines and arg-maxes them itself); only the
    // chosen ids and their log-probs cross to the host, or, when sampling, each row's probabilities
    // and log-probs, which the per-sequence CPU generators draw from (same seeds, same draws on
    // any device). Every group's share goes in one float32 buffer: exactly one device-to-host read
    // per step (each read waits for the queue to drain).
    std::vector<torch::Tensor> parts;
    std::vector<int64_t> host_offset(groups.size(), -1);
    int64_t offset = 0;
    for (size_t g = 0; g < groups.size(); ++g) {
      GroupState& gs = state[g];
      if (gs.done) continue;
      const SamplingConfig& cfg = groups[g].cfg;
      auto logits = logits_all.narrow(0, gs.first_row, gs.N * gs.K).view({gs.N, gs.K, -1});  // [N, K, V]
      // HF's MinNewTokensLengthLogitsProcessor: EOS is masked before warping (log-probs see the
      // mask too), in every context before they are combined (a combiner's own cut, such as
      // contrastive amplification's V_head, then never keeps EOS alone) and again after (-inf - -inf).
      const bool hold_eos = step < cfg.min_new_tokens;
      auto mask_eos = [&](torch::Tensor& t) {
        for (int64_t e : gs.eos)
          if (e >= 0 && e < t.size(-1)) t.select(-1, e).fill_(-std::numeric_limits<float>::infinity());
      };
      if (hold_eos) mask_eos(logits);
      auto scores = groups[g].combine ? groups[g].combine(logits) : logits.select(1, 0);
      if (hold_eos) mask_eos(scores);
      auto logp = torch::log_softmax(scores, -1);
      host_offset[g] = offset;
      if (cfg.greedy()) {
        auto next_on_device = scores.argmax(-1);
        parts.push_back(next_on_device.to(torch::kFloat32));
        parts.push_back(logp.gather(1, next_on_device.view({gs.N, 1})).view({gs.N}));
        offset += 2 * gs.N;
      } else {
        parts.push_back(torch::softmax(warp_scores(scores, cfg), -1).reshape({-1}));
        parts.push_back(logp.reshape({-1}));
        offset += 2 * gs.N * logp.size(-1);
      }
    }
    const torch::Tensor host = (parts.size() == 1 ? parts[0] : torch::cat(parts)).to(torch::kCPU).contiguous();
    // The next step's ids: each chosen token to every context of its sequence; padding for
    // finished sequences and finished groups (they keep stepping, as HF's finished rows do).
    torch::Tensor next_ids = torch::full({R, 1}, pad_id, torch::kLong);
    int64_t* next_ids_ptr = next_ids.data_ptr<int64_t>();
    bool all_done = true;
    for (size_t g = 0; g < groups.size(); ++g) {
      GroupState& gs = state[g];
      if (gs.done) continue;
      const SamplingConfig& cfg = groups[g].cfg;
      const int64_t o = host_offset[g];
      torch::Tensor next, chosen_logp;  // [N] int64 and [N] float32, on the host
      if (cfg.greedy()) {
        next = host.slice(0, o, o + gs.N).to(torch::kInt64).contiguous();
        chosen_logp = host.slice(0, o + gs.N, o + 2 * gs.N).contiguous();
      } else {
        const int64_t nv = gs.N * V;
        auto probs = host.slice(0, o, o + nv).view({gs.N, V});
        auto logp_host = host.slice(0, o + nv, o + 2 * nv).view({gs.N, V});
        std::vector<torch::Tensor> draws;
        for (int64_t i = 0; i < gs.N; ++i) draws.push_back(torch::multinomial(probs[i], 1, false, gs.gens[i]));
        next = torch::cat(draws).contiguous();
        chosen_logp = logp_host.gather(1, next.view({gs.N, 1})).view({gs.N}).contiguous();
      }
      const int64_t* next_ptr = next.data_ptr<int64_t>();
      const float* logp_ptr = chosen_logp.data_ptr<float>();
      bool group_done = true;
      for (int64_t i = 0; i < gs.N; ++i) {
        if (gs.finished[i]) continue;
        const int64_t tok = next_ptr[i];
        auto& res = results[g][static_cast<size_t>(i)];
        res.token_ids.push_back(tok);
        res.logprobs.push_back(logp_ptr[i]);
        if (cfg.stop_on_eos && std::find(gs.eos.begin(), gs.eos.end(), tok) != gs.eos.end()) {
          gs.finished[i] = true;
          res.stopped_on_eos = true;
          continue;
        }
        group_done = false;
        for (int64_t k = 0; k < gs.K; ++k) next_ids_ptr[gs.first_row + i * gs.K + k] = tok;
      }
      gs.done = group_done || step + 1 >= cfg.max_new_tokens;
      all_done = all_done && gs.done;
    }
    if (all_done) break;
    step_ids = next_ids;
    step_mask = torch::ones({R, 1}, torch::kLong);
    if (!use_cache) {
      all_ids = torch::cat({all_ids, next_ids}, 1);
      all_mask = torch::cat({all_mask, step_mask}, 1);
    }
  }
  return results;
}

std::vector<GenerationResult> generate_multi_context(models::VisionLanguageModel& model,
                                                     const std::vector<std::vector<GenerationRequest>>& contexts,
                                                     const LogitsCombiner& combine,
                                                     const SamplingConfig& cfg) {
  return std::move(generate_groups(model, {DecodeGroup{contexts, combine, cfg}})[0]);
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
