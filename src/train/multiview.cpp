#include "train/multiview.h"

#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <map>
#include <string>
#include <utility>

#include "io/errors.h"

namespace p2dpo::train {

namespace {

constexpr const char* kWhere = "answer_logprob_sums";

void validate(const models::ModelInfo& info, const std::vector<ScoredSequence>& seqs,
              const torch::Tensor& image_features) {
  if (image_features.defined() && image_features.dim() != 3) {
    throw InputError(kWhere, "image_features must be [n_images, tokens_per_image, hidden], got " +
                                 std::to_string(image_features.dim()) + " dimensions");
  }
  const int64_t n_images = image_features.defined() ? image_features.size(0) : 0;
  const int64_t per_image = image_features.defined() ? image_features.size(1) : 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const ScoredSequence& s = seqs[i];
    const std::string tag = "sequence " + std::to_string(i) + ": ";
    if (s.prompt_ids.empty()) throw InputError(kWhere, tag + "the prompt has no tokens");
    if (s.answer_ids.empty()) throw InputError(kWhere, tag + "the answer has no tokens");
    for (const int64_t idx : s.image_indices) {
      if (idx < 0 || idx >= n_images) {
        throw InputError(kWhere, tag + "image index " + std::to_string(idx) + " is outside the " +
                                     std::to_string(n_images) + " image feature rows");
      }
    }
    const auto slots = std::count(s.prompt_ids.begin(), s.prompt_ids.end(), info.image_token_id);
    const int64_t expected = static_cast<int64_t>(s.image_indices.size()) * per_image;
    if (slots != expected) {
      throw InputError(kWhere, tag + "the prompt has " + std::to_string(slots) + " image tokens but its " +
                                   std::to_string(s.image_indices.size()) + " image(s) give " +
                                   std::to_string(expected));
    }
    if (std::find(s.answer_ids.begin(), s.answer_ids.end(), info.image_token_id) != s.answer_ids.end()) {
      throw InputError(kWhere, tag + "the answer holds an image token");
    }
  }
}

// Any id but the image token: a pad that equals it would be taken for an image slot.
int64_t padding_id(const models::ModelInfo& info) {
  if (info.pad_token_id != info.image_token_id) return info.pad_token_id;
  return info.image_token_id == 0 ? 1 : 0;
}

// The image rows of a batch in the order the model scatters them: row-major over the batch, each
// row's slots in prompt order. Undefined when the batch has no image.
torch::Tensor batch_image_rows(const torch::Tensor& image_features, const std::vector<const ScoredSequence*>& rows) {
  std::vector<int64_t> order;
  for (const ScoredSequence* s : rows) order.insert(order.end(), s->image_indices.begin(), s->image_indices.end());
  if (order.empty()) return {};
  auto idx = torch::tensor(order, torch::kInt64).to(image_features.device());
  return image_features.index_select(0, idx).reshape({-1, image_features.size(-1)});
}

// The answer tokens' logit rows, gathered from a forward's logits, and what they score.
struct ScoredRows {
  std::vector<int64_t> flat_positions;  // into logits.view({-1, V})
  std::vector<int64_t> targets;
  std::vector<int64_t> owners;          // output slot each row adds to
};

// Log-probs of the targets (fp32 log-softmax over only the needed rows), summed per owner into
// `sums` (float64, so a long answer's sum is rounded once, when it is returned as float32).
torch::Tensor add_row_logprobs(const torch::Tensor& sums, const torch::Tensor& logits, const ScoredRows& r) {
  if (r.targets.empty()) return sums;
  const auto dev = logits.device();
  const auto long_opts = torch::TensorOptions().dtype(torch::kInt64);
  auto flat = logits.reshape({-1, logits.size(-1)});
  auto rows = flat.index_select(0, torch::tensor(r.flat_positions, long_opts).to(dev)).to(torch::kFloat32);
  auto lp = torch::log_softmax(rows, -1)
                .gather(1, torch::tensor(r.targets, long_opts).to(dev).unsqueeze(1))
                .squeeze(1);
  return sums.index_add(0, torch::tensor(r.owners, long_opts).to(dev), lp.to(torch::kFloat64));
}

torch::Tensor host_tensor(const std::vector<int64_t>& v, int64_t rows, int64_t cols) {
  return torch::tensor(v, torch::kInt64).view({rows, cols});
}

// Splits items into forwards by length: runs of the length-sorted order, chosen to minimise
// padded positions + split_cost per forward (O(n^2) dynamic programme; n is a micro-batch).
// Items of length 0 need no forward and are left out. Buckets keep the items' order within them.
std::vector<std::vector<int64_t>> length_buckets(const std::vector<int64_t>& lengths, int64_t split_cost) {
  std::vector<int64_t> order;
  for (size_t i = 0; i < lengths.size(); ++i)
    if (lengths[i] > 0) order.push_back(static_cast<int64_t>(i));
  if (order.empty()) return {};
  if (split_cost < 0) return {order};
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return lengths[a] < lengths[b]; });
  const size_t n = order.size();
  std::vector<int64_t> best(n + 1, 0), cut(n + 1, 0);  // best[j]: cost of the first j sorted items
  for (size_t j = 1; j <= n; ++j) {
    const int64_t longest = lengths[order[j - 1]];
    best[j] = -1;
    for (size_t i = 0; i < j; ++i) {
      const int64_t c = best[i] + static_cast<int64_t>(j - i) * longest + split_cost;
      if (best[j] < 0 || c < best[j]) {
        best[j] = c;
        cut[j] = static_cast<int64_t>(i);
      }
    }
  }
  std::vector<std::vector<int64_t>> buckets;
  for (size_t j = n; j > 0; j = static_cast<size_t>(cut[j])) {
    std::vector<int64_t> b(order.begin() + cut[j], order.begin() + static_cast<int64_t>(j));
    std::sort(b.begin(), b.end());
    buckets.push_back(std::move(b));
  }
  std::reverse(buckets.begin(), buckets.end());
  return buckets;
}

// Reference path: one row per sequence, prompt + answer[:-1], right-padded, no cache.
torch::Tensor score_unshared(models::VisionLanguageModel& model, const std::vector<ScoredSequence>& seqs,
                             const torch::Tensor& image_features, const MultiViewOptions& opt, MultiViewStats& st) {
  const auto& info = model.info();
  const int64_t N = static_cast<int64_t>(seqs.size());
  std::vector<int64_t> lengths;
  for (const auto& s : seqs) {
    lengths.push_back(static_cast<int64_t>(s.prompt_ids.size() + s.answer_ids.size()) - 1);
    st.prefix_tokens += static_cast<int64_t>(s.prompt_ids.size());
    st.continuation_tokens += static_cast<int64_t>(s.answer_ids.size()) - 1;
  }
  st.prefixes = N;
  st.distinct_sequences = N;
  torch::Tensor sums;
  for (const auto& bucket : length_buckets(lengths, opt.split_cost_positions)) {
    const int64_t B = static_cast<int64_t>(bucket.size());
    int64_t L = 0;
    for (const int64_t i : bucket) L = std::max(L, lengths[static_cast<size_t>(i)]);
    std::vector<int64_t> ids(static_cast<size_t>(B * L), padding_id(info)), mask(static_cast<size_t>(B * L), 0);
    std::vector<const ScoredSequence*> rows;
    ScoredRows r;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t i = bucket[static_cast<size_t>(b)];
      const ScoredSequence& s = seqs[static_cast<size_t>(i)];
      const int64_t P = static_cast<int64_t>(s.prompt_ids.size()), A = static_cast<int64_t>(s.answer_ids.size());
      std::copy(s.prompt_ids.begin(), s.prompt_ids.end(), ids.begin() + b * L);
      std::copy(s.answer_ids.begin(), s.answer_ids.end() - 1, ids.begin() + b * L + P);
      std::fill(mask.begin() + b * L, mask.begin() + b * L + P + A - 1, 1);
      for (int64_t t = 0; t < A; ++t) {  // row position P-1+t predicts answer[t]
        r.flat_positions.push_back(b * L + P - 1 + t);
        r.targets.push_back(s.answer_ids[static_cast<size_t>(t)]);
        r.owners.push_back(i);
      }
      rows.push_back(&s);
    }
    models::ForwardInput in;
    in.input_ids = host_tensor(ids, B, L);
    in.attention_mask = host_tensor(mask, B, L);
    in.image_features = batch_image_rows(image_features, rows);
    auto out = model.forward(in);
    if (!sums.defined()) sums = torch::zeros({N}, torch::TensorOptions().dtype(torch::kFloat64).device(out.logits.device()));
    sums = add_row_logprobs(sums, out.logits, r);
    st.padded_positions += B * L;
    st.forwards += 1;
  }
  return sums.to(torch::kFloat32);
}

// Shared path. Distinct prefixes run in left-padded forwards (split by length) whose last position
// scores answer[0] and whose keys/values are kept. Then each distinct sequence's answer[:-1] runs in
// right-padded forwards (split by answer length) over a copy of its prefix's keys/values, left-padded
// with masked zeros to the longest prefix of that forward (index_select and pad: inside autograd, so
// the gradients of all continuations of a prefix add up in it). Positions come from the mask
// (cumsum - 1), so padding on either side changes no result.
torch::Tensor score_shared(models::VisionLanguageModel& model, const std::vector<ScoredSequence>& seqs,
                           const torch::Tensor& image_features, const MultiViewOptions& opt, MultiViewStats& st) {
  const auto& info = model.info();
  using PrefixKey = std::pair<std::vector<int64_t>, std::vector<int64_t>>;  // prompt ids, image indices
  std::map<PrefixKey, int64_t> prefix_of_key;
  std::map<std::pair<int64_t, std::vector<int64_t>>, int64_t> distinct_of_key;  // (prefix, answer)
  std::vector<const ScoredSequence*> prefixes, distinct;
  std::vector<int64_t> prefix_of_distinct, distinct_of_seq;
  for (const auto& s : seqs) {
    auto [pit, new_prefix] =
        prefix_of_key.emplace(PrefixKey{s.prompt_ids, s.image_indices}, static_cast<int64_t>(prefixes.size()));
    if (new_prefix) prefixes.push_back(&s);
    auto [dit, new_seq] = distinct_of_key.emplace(std::make_pair(pit->second, s.answer_ids),
                                                  static_cast<int64_t>(distinct.size()));
    if (new_seq) {
      distinct.push_back(&s);
      prefix_of_distinct.push_back(pit->second);
    }
    distinct_of_seq.push_back(dit->second);
  }
  const int64_t G = static_cast<int64_t>(prefixes.size()), D = static_cast<int64_t>(distinct.size());
  st.prefixes = G;
  st.distinct_sequences = D;

  // ---- prefixes, left-padded so every row's last position is its own last token ----
  struct PrefixForward {
    models::KVCache cache;
    int64_t length = 0;
  };
  std::vector<PrefixForward> pf;
  std::vector<int64_t> forward_of_prefix(static_cast<size_t>(G), -1), row_of_prefix(static_cast<size_t>(G), -1);
  std::vector<int64_t> prefix_lengths;
  for (const auto* p : prefixes) prefix_lengths.push_back(static_cast<int64_t>(p->prompt_ids.size()));
  torch::Tensor sums;
  for (const auto& bucket : length_buckets(prefix_lengths, opt.split_cost_positions)) {
    const int64_t B = static_cast<int64_t>(bucket.size());
    int64_t L = 0;
    for (const int64_t g : bucket) L = std::max(L, prefix_lengths[static_cast<size_t>(g)]);
    std::vector<int64_t> ids(static_cast<size_t>(B * L), padding_id(info)), mask(static_cast<size_t>(B * L), 0);
    std::vector<const ScoredSequence*> rows;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t g = bucket[static_cast<size_t>(b)];
      const auto& p = prefixes[static_cast<size_t>(g)]->prompt_ids;
      const int64_t off = L - static_cast<int64_t>(p.size());
      std::copy(p.begin(), p.end(), ids.begin() + b * L + off);
      std::fill(mask.begin() + b * L + off, mask.begin() + (b + 1) * L, 1);
      forward_of_prefix[static_cast<size_t>(g)] = static_cast<int64_t>(pf.size());
      row_of_prefix[static_cast<size_t>(g)] = b;
      rows.push_back(prefixes[static_cast<size_t>(g)]);
      st.prefix_tokens += static_cast<int64_t>(p.size());
    }
    PrefixForward f;
    f.cache = model.new_cache();
    f.length = L;
    models::ForwardInput in;
    in.input_ids = host_tensor(ids, B, L);
    in.attention_mask = host_tensor(mask, B, L);
    in.image_features = batch_image_rows(image_features, rows);
    in.cache = &f.cache;
    in.logits_last_only = true;
    auto out = model.forward(in);
    if (!sums.defined()) sums = torch::zeros({D}, torch::TensorOptions().dtype(torch::kFloat64).device(out.logits.device()));
    ScoredRows first;  // answer[0] from the last position of its prefix's row
    for (int64_t d = 0; d < D; ++d) {
      const int64_t g = prefix_of_distinct[static_cast<size_t>(d)];
      if (forward_of_prefix[static_cast<size_t>(g)] != static_cast<int64_t>(pf.size())) continue;  // not this forward's
      first.flat_positions.push_back(row_of_prefix[static_cast<size_t>(g)]);
      first.targets.push_back(distinct[static_cast<size_t>(d)]->answer_ids[0]);
      first.owners.push_back(d);
    }
    sums = add_row_logprobs(sums, out.logits, first);
    pf.push_back(std::move(f));
    st.padded_positions += B * L;
    st.forwards += 1;
  }

  // ---- continuations, right-padded, one row per distinct sequence with more than one answer token ----
  std::vector<int64_t> cont_lengths;
  for (const auto* s : distinct) cont_lengths.push_back(static_cast<int64_t>(s->answer_ids.size()) - 1);
  for (auto bucket : length_buckets(cont_lengths, opt.split_cost_positions)) {
    // Rows grouped by prefix forward, so each group's keys/values are one index_select.
    std::stable_sort(bucket.begin(), bucket.end(), [&](int64_t a, int64_t b) {
      return forward_of_prefix[static_cast<size_t>(prefix_of_distinct[static_cast<size_t>(a)])] <
             forward_of_prefix[static_cast<size_t>(prefix_of_distinct[static_cast<size_t>(b)])];
    });
    const int64_t B = static_cast<int64_t>(bucket.size());
    int64_t L = 0, past = 0;
    std::map<int64_t, std::vector<int64_t>> rows_of_forward;  // prefix forward -> its rows, in bucket order
    for (const int64_t d : bucket) {
      const int64_t g = prefix_of_distinct[static_cast<size_t>(d)];
      const int64_t fi = forward_of_prefix[static_cast<size_t>(g)];
      L = std::max(L, cont_lengths[static_cast<size_t>(d)]);
      past = std::max(past, pf[static_cast<size_t>(fi)].length);
      rows_of_forward[fi].push_back(row_of_prefix[static_cast<size_t>(g)]);
    }
    models::KVCache cache = model.new_cache();
    const size_t n_layers = pf.front().cache.keys.size();
    cache.keys.assign(n_layers, torch::Tensor());
    cache.values.assign(n_layers, torch::Tensor());
    std::vector<torch::Tensor> mask_parts;
    std::vector<std::vector<torch::Tensor>> key_parts(n_layers), value_parts(n_layers);
    for (const auto& [fi, rows] : rows_of_forward) {
      const PrefixForward& f = pf[static_cast<size_t>(fi)];
      const int64_t left = past - f.length;
      const auto idx = torch::tensor(rows, torch::kInt64);
      const auto kv_idx = idx.to(f.cache.keys.at(0).device());
      for (size_t l = 0; l < n_layers; ++l) {
        auto k = f.cache.keys[l].index_select(0, kv_idx), v = f.cache.values[l].index_select(0, kv_idx);
        if (left > 0) {
          k = torch::constant_pad_nd(k, {0, 0, left, 0});
          v = torch::constant_pad_nd(v, {0, 0, left, 0});
        }
        key_parts[l].push_back(k);
        value_parts[l].push_back(v);
      }
      auto m = f.cache.attention_mask.index_select(0, idx.to(f.cache.attention_mask.device()));
      mask_parts.push_back(left > 0 ? torch::constant_pad_nd(m, {left, 0}) : m);
    }
    for (size_t l = 0; l < n_layers; ++l) {  // parts dropped as we go: one copy of the keys/values at a time
      cache.keys[l] = key_parts[l].size() == 1 ? key_parts[l][0] : torch::cat(key_parts[l], 0);
      cache.values[l] = value_parts[l].size() == 1 ? value_parts[l][0] : torch::cat(value_parts[l], 0);
      key_parts[l].clear();
      value_parts[l].clear();
    }
    cache.attention_mask = mask_parts.size() == 1 ? mask_parts[0] : torch::cat(mask_parts, 0);
    cache.has_padding = true;  // conservative: only makes the forward build the mask it may need

    std::vector<int64_t> ids(static_cast<size_t>(B * L), padding_id(info)), mask(static_cast<size_t>(B * L), 0);
    ScoredRows rest;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t d = bucket[static_cast<size_t>(b)];
      const auto& a = distinct[static_cast<size_t>(d)]->answer_ids;
      const int64_t A = static_cast<int64_t>(a.size());
      std::copy(a.begin(), a.end() - 1, ids.begin() + b * L);
      std::fill(mask.begin() + b * L, mask.begin() + b * L + A - 1, 1);
      for (int64_t t = 1; t < A; ++t) {  // continuation position t-1 (token a[t-1]) predicts a[t]
        rest.flat_positions.push_back(b * L + t - 1);
        rest.targets.push_back(a[static_cast<size_t>(t)]);
        rest.owners.push_back(d);
      }
      st.continuation_tokens += A - 1;
    }
    models::ForwardInput in;
    in.input_ids = host_tensor(ids, B, L);
    in.attention_mask = host_tensor(mask, B, L);
    in.cache = &cache;
    auto out = model.forward(in);
    sums = add_row_logprobs(sums, out.logits, rest);
    st.padded_positions += B * L;
    st.forwards += 1;
  }
  return sums.index_select(0, torch::tensor(distinct_of_seq, torch::kInt64).to(sums.device())).to(torch::kFloat32);
}

}  // namespace

torch::Tensor answer_logprob_sums(models::VisionLanguageModel& model, const std::vector<ScoredSequence>& seqs,
                                  const torch::Tensor& image_features, const MultiViewOptions& opt,
                                  MultiViewStats* stats) {
  MultiViewStats st;
  st.sequences = static_cast<int64_t>(seqs.size());
  torch::Tensor out;
  if (seqs.empty()) {
    out = torch::zeros({0}, torch::TensorOptions().dtype(torch::kFloat32).device(model.device()));
  } else {
    validate(model.info(), seqs, image_features);
    out = opt.share_prefixes ? score_shared(model, seqs, image_features, opt, st)
                             : score_unshared(model, seqs, image_features, opt, st);
  }
  if (stats) *stats = st;
  return out;
}

}  // namespace p2dpo::train
