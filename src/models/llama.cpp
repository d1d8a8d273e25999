#include "models/llama.h"

#include <torch/autograd.h>
#include <torch/types.h>
#include <torch/utils.h>
#include <torch/version.h>

#include <algorithm>
#include <cmath>

#include "io/errors.h"
#include "models/fused_ops.h"
#include "models/weights.h"

namespace p2dpo::models {

namespace {
// RoPE tables for positions' frequencies [B, L, d/2]: cos of cat(f, f), and sin of cat(f, f) with
// its first half negated, both [B, 1, L, d] in `dtype`. HF's x*cos + rotate_half(x)*sin, with
// rotate_half(x) = cat(-x2, x1), equals x*cos + roll(x, d/2)*signed_sin bit for bit (-(a*b) is
// (-a)*b in IEEE arithmetic), in one op (roll) where rotate_half takes four.
std::pair<torch::Tensor, torch::Tensor> rope_tables(const torch::Tensor& freqs, torch::Dtype dtype) {
  const auto s = freqs.sin();
  auto cos = torch::cat({freqs, freqs}, -1).cos().to(dtype).unsqueeze(1);
  auto signed_sin = torch::cat({-s, s}, -1).to(dtype).unsqueeze(1);
  return {cos, signed_sin};
}

torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& signed_sin) {
  return x * cos + torch::roll(x, x.size(-1) / 2, -1) * signed_sin;
}

// Appends x [B, n_kv, L, d] to a layer's cache view (the first T rows of buf) and returns the new
// view. torch::cat would copy the whole cache every step and ask the allocator for a slightly
// larger block each time; the buffer grows to the next multiple of 128 rows above what it must
// hold instead, so a decode step writes one row and copies the cache once per 128 tokens.
void append_to_cache(torch::Tensor& buf, torch::Tensor& view, const torch::Tensor& x, int64_t room_after) {
  const int64_t T = view.defined() ? view.size(2) : 0, L = x.size(2);
  const bool view_in_buf = buf.defined() && view.defined() && view.data_ptr() == buf.data_ptr() &&
                           buf.size(0) == x.size(0) && buf.scalar_type() == x.scalar_type();
  if (!view_in_buf || buf.size(2) < T + L) {
    constexpr int64_t kChunk = 128;
    const int64_t capacity = room_after > 0 ? T + L + room_after : (T + L) / kChunk * kChunk + kChunk;
    auto grown = torch::empty({x.size(0), x.size(1), capacity, x.size(3)}, x.options());
    if (T > 0) grown.narrow(2, 0, T).copy_(view);
    buf = grown;
  }
  buf.narrow(2, T, L).copy_(x);
  view = buf.narrow(2, 0, T + L);
}

// [B, n_kv, T, d] -> [B, n_kv * rep, T, d], head h reading kv head h / rep (HF repeat_kv).
torch::Tensor repeat_kv(const torch::Tensor& x, int64_t rep) {
  if (rep == 1) return x;
  const int64_t B = x.size(0), n = x.size(1), T = x.size(2), d = x.size(3);
  return x.unsqueeze(2).expand({B, n, rep, T, d}).reshape({B, n * rep, T, d});
}
// Whether a layer may project q, k and v with its fused weight: no enabled LoRA on them (a
// disabled one adds nothing), weights that are not being trained (their gradients would not reach
// them through the fused tensor) and still the fused tensor's rows.
bool qkv_fused(const LlamaLayer& l) {
  if (!l.qkv_weight.defined()) return false;
  int64_t offset = 0;
  for (const Linear* p : {&l.q_proj, &l.k_proj, &l.v_proj}) {
    if ((p->lora && p->lora->enabled) || p->bias.defined() || p->weight.requires_grad()) return false;
    if (!p->weight.defined() ||
        static_cast<const char*>(p->weight.data_ptr()) != static_cast<const char*>(l.qkv_weight.data_ptr()) + offset)
      return false;
    offset += p->weight.numel() * p->weight.element_size();
  }
  return true;
}
}  // namespace

LlamaDecoder::LlamaDecoder(WeightStore& w, const std::string& pm, const std::string& ph,
                           const io::LlamaConfig& cfg, const std::string& config_file)
    : cfg_(cfg) {
  const std::string& rope_type = cfg.rope_scaling.type;
  if (!rope_type.empty() && rope_type != "default" && rope_type != "linear") {
    throw InputError(config_file, "field 'text_config.rope_scaling': rope type '" + rope_type +
                                      "' is not supported (default, linear are)");
  }
  check_activation_supported(cfg.hidden_act, config_file, "text_config.hidden_act");
  const int64_t H = cfg.hidden_size, I = cfg.intermediate_size, d = cfg.head_dim;
  const int64_t nq = cfg.num_attention_heads, nkv = cfg.num_key_value_heads;
  embed_tokens_ = w.get(pm + ".embed_tokens.weight", {cfg.vocab_size, H}, "text_config.vocab_size");
  if (w.contains(ph + ".weight")) {
    lm_head_ = w.get(ph + ".weight", {cfg.vocab_size, H}, "text_config.vocab_size");
  } else if (cfg.tie_word_embeddings) {
    lm_head_ = embed_tokens_;
  } else {
    throw InputError(w.dir(), "missing tensor '" + ph + ".weight' (tie_word_embeddings is false)");
  }
  norm_.weight = w.get(pm + ".norm.weight", {H}, "text_config.hidden_size");
  norm_.eps = cfg.rms_norm_eps;
  for (int i = 0; i < cfg.num_hidden_layers; ++i) {
    const std::string p = pm + ".layers." + std::to_string(i);
    LlamaLayer l;
    l.input_layernorm.weight = w.get(p + ".input_layernorm.weight", {H}, "text_config.hidden_size");
    l.input_layernorm.eps = cfg.rms_norm_eps;
    l.post_attention_layernorm.weight =
        w.get(p + ".post_attention_layernorm.weight", {H}, "text_config.hidden_size");
    l.post_attention_layernorm.eps = cfg.rms_norm_eps;
    l.q_proj = Linear::load(w, p + ".self_attn.q_proj", H, nq * d, cfg.attention_bias,
                            "text_config.num_attention_heads*head_dim");
    l.k_proj = Linear::load(w, p + ".self_attn.k_proj", H, nkv * d, cfg.attention_bias,
                            "text_config.num_key_value_heads*head_dim");
    l.v_proj = Linear::load(w, p + ".self_attn.v_proj", H, nkv * d, cfg.attention_bias,
                            "text_config.num_key_value_heads*head_dim");
    l.o_proj = Linear::load(w, p + ".self_attn.o_proj", nq * d, H, cfg.attention_bias,
                            "text_config.num_attention_heads*head_dim");
    l.gate_proj = Linear::load(w, p + ".mlp.gate_proj", H, I, cfg.mlp_bias, "text_config.intermediate_size");
    l.up_proj = Linear::load(w, p + ".mlp.up_proj", H, I, cfg.mlp_bias, "text_config.intermediate_size");
    l.down_proj = Linear::load(w, p + ".mlp.down_proj", I, H, cfg.mlp_bias, "text_config.intermediate_size");
    layers_.push_back(std::move(l));
  }
  if (embed_tokens_.is_cuda() && cuda_fused_ops()) fuse_qkv_projections();
  // inv_freq exactly as HF: 1 / base^(arange(0, d, 2).float() / d), kept in fp32.
  auto exponents = torch::arange(0, d, 2, torch::kInt64).to(torch::kFloat32) / static_cast<float>(d);
  inv_freq_ = 1.0 / torch::pow(torch::tensor(static_cast<float>(cfg.rope_theta)), exponents);
  if (rope_type == "linear") inv_freq_ = inv_freq_ / static_cast<float>(cfg.rope_scaling.factor);
  inv_freq_ = inv_freq_.to(embed_tokens_.device());
}

void LlamaDecoder::fuse_qkv_projections() {
  for (auto& l : layers_) {
    if (l.qkv_weight.defined() || l.q_proj.bias.defined() || l.k_proj.bias.defined() || l.v_proj.bias.defined()) continue;
    const int64_t nq = l.q_proj.weight.size(0), nkv = l.k_proj.weight.size(0);
    auto fused = torch::empty({nq + 2 * nkv, l.q_proj.weight.size(1)}, l.q_proj.weight.options());
    int64_t row = 0;
    for (Linear* p : {&l.q_proj, &l.k_proj, &l.v_proj}) {
      const int64_t rows = p->weight.size(0);
      fused.narrow(0, row, rows).copy_(p->weight);
      p->weight = fused.narrow(0, row, rows);  // contiguous rows: the same values, now a view
      row += rows;
    }
    l.qkv_weight = fused;
  }
}

torch::Tensor LlamaDecoder::embed(const torch::Tensor& ids) const {
  return embed_tokens_.index_select(0, ids.reshape({-1}).to(embed_tokens_.device()))
      .view({ids.size(0), ids.size(1), -1});
}

torch::Tensor LlamaDecoder::lm_head(const torch::Tensor& hidden) const {
  return torch::linear(hidden, lm_head_);
}

namespace {

// The generator LoRA dropout draws from for activations on `device`: the CPU's, or that CUDA
// device's (PyTorch's checkpoint saves and restores the same two).
at::Generator dropout_generator(const torch::Device& device) { return at::globalContext().defaultGenerator(device); }

// Gradient checkpointing of one decoder layer: forward runs without a graph and saves only the
// layer's inputs (and the dropout generator's state, so LoRA dropout draws the same masks again);
// backward re-runs the layer with autograd on and back-propagates through that fresh graph, which
// also accumulates into the trainable leaves (LoRA weights), as PyTorch's reentrant checkpoint.
struct LayerCheckpoint : public torch::autograd::Function<LayerCheckpoint> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, torch::Tensor h,
                                                torch::Tensor past_k, torch::Tensor past_v, torch::Tensor cos,
                                                torch::Tensor sin, torch::Tensor mask, torch::Tensor /*grad_anchor*/,
                                                int64_t decoder, int64_t layer) {
    ctx->save_for_backward({h, past_k, past_v, cos, sin, mask});
    ctx->saved_data["decoder"] = decoder;
    ctx->saved_data["layer"] = layer;
    ctx->saved_data["rng"] = dropout_generator(h.device()).get_state();
    const auto* self = reinterpret_cast<const LlamaDecoder*>(decoder);
    ForceLoraDropout training_dropout;  // the first pass runs without autograd but is still training
    auto out = self->layer_step(static_cast<int>(layer), h, past_k, past_v, cos, sin,
                                mask.numel() ? mask : torch::Tensor());
    return {out[0], out[1], out[2]};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto* self = reinterpret_cast<const LlamaDecoder*>(ctx->saved_data["decoder"].toInt());
    const int layer = static_cast<int>(ctx->saved_data["layer"].toInt());
    auto h = saved[0].detach().requires_grad_(true);
    auto pk = saved[1].detach().requires_grad_(saved[1].numel() > 0);
    auto pv = saved[2].detach().requires_grad_(saved[2].numel() > 0);
    auto generator = dropout_generator(saved[0].device());
    const auto rng_now = generator.get_state();
    generator.set_state(ctx->saved_data["rng"].toTensor());
    std::array<torch::Tensor, 3> out;
    {
      torch::AutoGradMode grad_on(true);
      out = self->layer_step(layer, h, pk, pv, saved[3], saved[4], saved[5].numel() ? saved[5] : torch::Tensor());
    }
    generator.set_state(rng_now);
    torch::autograd::variable_list outputs, output_grads;
    for (size_t k = 0; k < 3; ++k) {
      if (grads[k].defined() && out[k].requires_grad()) {
        outputs.push_back(out[k]);
        output_grads.push_back(grads[k]);
      }
    }
    if (!outputs.empty()) torch::autograd::backward(outputs, output_grads);
    return {h.grad(), pk.requires_grad() ? pk.grad() : torch::Tensor(), pv.requires_grad() ? pv.grad() : torch::Tensor(),
            torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

std::array<torch::Tensor, 3> recompute_layer(const LlamaDecoder& self, int layer, const torch::Tensor& h,
                                             const torch::Tensor& past_k, const torch::Tensor& past_v,
                                             const torch::Tensor& cos, const torch::Tensor& sin, const torch::Tensor& mask) {
  // The trainable weights (LoRA) are not inputs of the Function, and the embeddings of a frozen
  // model need no gradient, so without an input that requires grad autograd would treat the
  // layer's outputs as constants. An empty leaf that requires grad keeps the layer in the graph.
  thread_local const torch::Tensor grad_anchor = torch::empty({0}).requires_grad_(true);
  auto out = LayerCheckpoint::apply(h, past_k, past_v, cos, sin, mask.defined() ? mask : torch::empty({0}, h.options()),
                                    grad_anchor, reinterpret_cast<int64_t>(&self), static_cast<int64_t>(layer));
  return {out[0], out[1], out[2]};
}

}  // namespace

std::array<torch::Tensor, 3> LlamaDecoder::layer_step(int layer_index, const torch::Tensor& h, const torch::Tensor& past_k,
                                                      const torch::Tensor& past_v, const torch::Tensor& cos,
                                                      const torch::Tensor& sin, const torch::Tensor& mask) const {
  const LlamaLayer& l = layers_[static_cast<size_t>(layer_index)];
  const int64_t B = h.size(0), L = h.size(1);
  const int64_t d = cfg_.head_dim, nq = cfg_.num_attention_heads, nkv = cfg_.num_key_value_heads;
  const auto x = l.input_layernorm(h);
  auto q = l.q_proj(x).view({B, L, nq, d}).transpose(1, 2);
  auto k = l.k_proj(x).view({B, L, nkv, d}).transpose(1, 2);
  auto v = l.v_proj(x).view({B, L, nkv, d}).transpose(1, 2);
  q = apply_rope(q, cos, sin);  // sin: the signed table of rope_tables
  k = apply_rope(k, cos, sin);
  if (past_k.defined() && past_k.size(2) > 0) {
    k = torch::cat({past_k, k}, 2);
    v = torch::cat({past_v, v}, 2);
  }
  const int64_t rep = nq / nkv;
  // The same kernel as forward()'s (SDPA on libtorch 2): a recomputed layer's forward and backward
  // then cost what the plain layer's do, with no [heads, L, L] probabilities in memory.
  auto a = l.o_proj(attend(q, repeat_kv(k, rep), repeat_kv(v, rep), mask, nullptr).transpose(1, 2).reshape({B, L, nq * d}));
  auto h2 = h + a;
  auto x2 = l.post_attention_layernorm(h2);
  auto h3 = h2 + l.down_proj(activation(cfg_.hidden_act, l.gate_proj(x2)) * l.up_proj(x2));
  return {h3, k, v};
}

torch::Tensor LlamaDecoder::forward(const torch::Tensor& embeds, const torch::Tensor& attention_mask,
                                    KVCache* cache, AttentionCapture* capture,
                                    std::vector<torch::Tensor>* hidden_states,
                                    std::vector<torch::Tensor>* attentions) const {
  if (cache && cache->is_fixed()) {
    TORCH_CHECK(!attention_mask.defined() && !capture && !hidden_states && !attentions,
                "a frozen cache takes token ids only (no mask, capture or hidden states)");
    return forward_fixed(embeds, *cache);
  }
  const int64_t B = embeds.size(0), L = embeds.size(1);
  const int64_t past = cache ? cache->length() : 0;
  const auto dev = embeds.device();
  const auto dtype = embeds.scalar_type();
  const auto long_opts = torch::TensorOptions().dtype(torch::kLong).device(dev);

  // Full key mask over past + current tokens. Whether it holds padding is decided on the host:
  // reading it back from a GPU every decode step would stall the launch queue.
  bool has_padding = cache && cache->has_padding;
  if (attention_mask.defined() && !has_padding) {
    // generate() passes host masks, so this is a CPU read; a device mask costs one sync here.
    has_padding = (attention_mask == 0).any().item<bool>();
  }
  torch::Tensor key_mask;  // [B, past+L] int64
  if (attention_mask.defined()) {
    key_mask = attention_mask.to(long_opts);
    if (key_mask.size(1) == L && past > 0) {
      TORCH_CHECK(cache->attention_mask.defined(), "cache without its attention mask");
      key_mask = torch::cat({cache->attention_mask.to(long_opts), key_mask}, 1);
    }
  } else if (cache && cache->attention_mask.defined()) {
    key_mask = torch::cat({cache->attention_mask.to(long_opts), torch::ones({B, L}, long_opts)}, 1);
  } else {
    key_mask = torch::ones({B, past + L}, long_opts);
  }
  TORCH_CHECK(key_mask.size(1) == past + L, "attention mask length ", key_mask.size(1),
              " != past + new tokens ", past + L);
  if (cache) {
    cache->attention_mask = key_mask;
    cache->has_padding = has_padding;
  }

  // Positions: cumsum(mask) - 1 (pads get 1), as HF generate; equals arange without padding.
  auto pos_all = key_mask.cumsum(1) - 1;
  pos_all = pos_all.masked_fill(key_mask == 0, 1);
  auto positions = pos_all.slice(1, past, past + L);  // [B, L]
  auto freqs = positions.to(torch::kFloat32).unsqueeze(-1) * inv_freq_.view({1, 1, -1});
  auto [cos, sin] = rope_tables(freqs, dtype);  // [B, 1, L, d]; sin with its first half negated

  // Additive mask [B, 1, L, past+L]: causal and key padding, HF's finfo.min fill.
  torch::Tensor mask;
  if (L > 1 || has_padding) {
    auto q_pos = torch::arange(past, past + L, long_opts).view({L, 1});
    auto k_pos = torch::arange(0, past + L, long_opts).view({1, past + L});
    auto blocked = (k_pos > q_pos).view({1, 1, L, past + L});
    blocked = blocked.logical_or((key_mask == 0).view({B, 1, 1, past + L}));
    mask = torch::zeros({B, 1, L, past + L}, embeds.options()).masked_fill(blocked, dtype_min(dtype));
  }

  torch::Tensor h = embeds;
  if (hidden_states) hidden_states->push_back(h);
  if (cache && cache->keys.empty()) {
    cache->keys.resize(layers_.size());
    cache->values.resize(layers_.size());
  }
  if (cache && cache->key_buffers.size() != layers_.size()) {
    cache->key_buffers.resize(layers_.size());
    cache->value_buffers.resize(layers_.size());
  }
  // The first `recomputed` layers keep only their inputs (LayerCheckpoint); the rest run as usual.
  const int64_t n_layers = static_cast<int64_t>(layers_.size());
  const bool may_recompute = torch::GradMode::is_enabled() && !capture && !attentions && !hidden_states;
  const int64_t recomputed = !may_recompute ? 0 : recompute_layers_ < 0 ? n_layers : std::min(recompute_layers_, n_layers);
  for (int64_t i = 0; i < n_layers; ++i) {
    if (i < recomputed) {
      torch::Tensor pk, pv;
      if (cache && cache->keys[i].defined()) {
        pk = cache->keys[i];
        pv = cache->values[i];
      } else {
        const auto shape = std::vector<int64_t>{B, cfg_.num_key_value_heads, 0, cfg_.head_dim};
        pk = torch::zeros(shape, embeds.options());
        pv = torch::zeros(shape, embeds.options());
      }
      auto out = recompute_layer(*this, static_cast<int>(i), h, pk, pv, cos, sin, mask);
      h = out[0];
      if (cache) {
        cache->keys[i] = out[1];
        cache->values[i] = out[2];
      }
      continue;
    }
    const auto& l = layers_[static_cast<size_t>(i)];
    auto a = attention(static_cast<int>(i), l, l.input_layernorm(h), cos, sin, mask, cache, capture,
                       attentions);
    h = h + a;
    auto x = l.post_attention_layernorm(h);
    h = h + l.down_proj(activation(cfg_.hidden_act, l.gate_proj(x)) * l.up_proj(x));
    if (hidden_states) hidden_states->push_back(h);
  }
  h = norm_(h);
  if (hidden_states) hidden_states->back() = h;
  return h;
}

void LlamaDecoder::freeze_cache(KVCache& cache, int64_t capacity) const {
  TORCH_CHECK(!cache.is_fixed(), "the cache is frozen already");
  const int64_t T = cache.length();
  TORCH_CHECK(T > 0 && cache.keys.size() == layers_.size(), "freeze_cache needs a cache the prompt has filled");
  TORCH_CHECK(capacity > T, "a frozen cache needs room for new tokens (capacity ", capacity, " <= length ", T, ")");
  torch::NoGradGuard no_grad;
  const torch::Tensor first = cache.keys[0];
  const int64_t B = first.size(0);
  const auto dtype = first.scalar_type();
  auto state = std::make_shared<FixedDecodeState>();
  state->capacity = capacity;
  for (size_t i = 0; i < layers_.size(); ++i) {
    for (auto [valid, buffer] : {std::pair<torch::Tensor*, torch::Tensor*>{&cache.keys[i], &cache.key_buffers[i]},
                                 {&cache.values[i], &cache.value_buffers[i]}}) {
      // Columns past the prompt are zeros, not garbage: masked columns get exactly zero weight,
      // and 0 * NaN would still be NaN.
      const bool adopt = buffer->defined() && buffer->data_ptr() == valid->data_ptr() && buffer->size(2) == capacity &&
                         buffer->is_contiguous();
      if (adopt) {
        // The prompt was written into buffers of this capacity (KVCache::room_after): keep them.
        buffer->narrow(2, T, capacity - T).zero_();
      } else {
        // A copy, layer by layer; on CUDA the old buffers stay in the allocator's pool.
        auto fixed = torch::zeros({B, valid->size(1), capacity, valid->size(3)}, valid->options());
        fixed.narrow(2, 0, T).copy_(*valid);
        *buffer = fixed;
      }
      *valid = torch::Tensor();
    }
  }
  const auto long_opts = torch::TensorOptions().dtype(torch::kLong).device(first.device());
  const torch::Tensor mask = cache.attention_mask.defined() ? cache.attention_mask.to(long_opts) : torch::ones({B, T}, long_opts);
  state->key_mask = torch::full({B, 1, 1, capacity}, dtype_min(dtype), first.options());
  state->key_mask.narrow(3, 0, T).masked_fill_((mask == 1).view({B, 1, 1, T}), 0.0);
  // The next token's position is cumsum(mask) - 1 at its column, i.e. the real tokens so far.
  state->positions = mask.sum(1, /*keepdim=*/true);
  state->write_index = torch::full({1}, T, long_opts);
  cache.attention_mask = torch::Tensor();
  cache.has_padding = false;
  cache.fixed = state;
}

torch::Tensor LlamaDecoder::forward_fixed(const torch::Tensor& embeds, KVCache& cache) const {
  TORCH_CHECK(embeds.size(1) == 1, "a frozen cache takes one token per row, got ", embeds.size(1));
  TORCH_CHECK(!torch::GradMode::is_enabled(), "a frozen cache is for inference (no autograd)");
  FixedDecodeState& state = *cache.fixed;
  const auto dtype = embeds.scalar_type();
  // The fed token is a real key for every row (finished rows step on padding, as HF's generate).
  state.key_mask.index_fill_(3, state.write_index, 0.0);
  auto freqs = state.positions.to(torch::kFloat32).unsqueeze(-1) * inv_freq_.view({1, 1, -1});
  auto [cos, sin] = rope_tables(freqs, dtype);  // [B, 1, 1, d]
  torch::Tensor h = embeds;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const auto& l = layers_[i];
    h = h + attention(static_cast<int>(i), l, l.input_layernorm(h), cos, sin, state.key_mask, &cache, nullptr, nullptr);
    auto x = l.post_attention_layernorm(h);
    h = h + l.down_proj(activation(cfg_.hidden_act, l.gate_proj(x)) * l.up_proj(x));
  }
  state.write_index.add_(1);
  state.positions.add_(1);
  return norm_(h);
}

torch::Tensor LlamaDecoder::attend(const torch::Tensor& q, const torch::Tensor& kr, const torch::Tensor& vr,
                                   const torch::Tensor& mask, std::vector<torch::Tensor>* attentions) const {
  const double root_d = std::sqrt(static_cast<double>(q.size(-1)));
#if defined(TORCH_VERSION_MAJOR) && TORCH_VERSION_MAJOR >= 2
  if (use_sdpa_ && !attentions)
    return at::scaled_dot_product_attention(q, kr, vr, mask.defined() ? std::optional<torch::Tensor>(mask) : std::nullopt,
                                            0.0, false, 1.0 / root_d);
#endif
  auto scores = torch::matmul(q, kr.transpose(2, 3)) / root_d;
  if (mask.defined()) scores = scores + mask;
  auto probs = torch::softmax(scores, -1, torch::kFloat32).to(q.scalar_type());
  if (attentions) attentions->push_back(probs);
  return torch::matmul(probs, vr);
}

torch::Tensor LlamaDecoder::attention(int layer_index, const LlamaLayer& l, const torch::Tensor& x,
                                      const torch::Tensor& cos, const torch::Tensor& sin,
                                      const torch::Tensor& mask, KVCache* cache,
                                      AttentionCapture* capture,
                                      std::vector<torch::Tensor>* attentions) const {
  const int64_t B = x.size(0), L = x.size(1);
  const int64_t d = cfg_.head_dim, nq = cfg_.num_attention_heads, nkv = cfg_.num_key_value_heads;
  torch::Tensor q, k, v;
  if (qkv_fused(l)) {
    auto qkv = torch::linear(x, l.qkv_weight).view({B, L, nq + 2 * nkv, d}).transpose(1, 2);
    auto qk = apply_rope(qkv.narrow(1, 0, nq + nkv), cos, sin);  // q and k in one pass
    q = qk.narrow(1, 0, nq);
    k = qk.narrow(1, nq, nkv);
    v = qkv.narrow(1, nq + nkv, nkv);
  } else {
    q = l.q_proj(x).view({B, L, nq, d}).transpose(1, 2);
    k = l.k_proj(x).view({B, L, nkv, d}).transpose(1, 2);
    v = l.v_proj(x).view({B, L, nkv, d}).transpose(1, 2);
    q = apply_rope(q, cos, sin);  // sin: the signed table of rope_tables
    k = apply_rope(k, cos, sin);
  }
  if (cache && cache->is_fixed()) {
    // Write this step's column in place (the index lives on the device: no host arithmetic, the
    // same kernels every step) and attend over the whole buffer through the key mask.
    const auto& column = cache->fixed->write_index;
    cache->key_buffers[layer_index].index_copy_(2, column, k);
    cache->value_buffers[layer_index].index_copy_(2, column, v);
    k = cache->key_buffers[layer_index];
    v = cache->value_buffers[layer_index];
  } else if (cache) {
    auto& ck = cache->keys[layer_index];
    auto& cv = cache->values[layer_index];
    if (torch::GradMode::is_enabled()) {
      // In-place writes into a shared buffer would break the graph: concatenate instead.
      if (ck.defined()) {
        k = torch::cat({ck, k}, 2);
        v = torch::cat({cv, v}, 2);
      }
      ck = k;
      cv = v;
    } else {
      append_to_cache(cache->key_buffers[layer_index], ck, k, cache->room_after);
      append_to_cache(cache->value_buffers[layer_index], cv, v, cache->room_after);
      k = ck;
      v = cv;
    }
  }
  const int64_t rep = nq / nkv;
  auto kr = repeat_kv(k, rep);
  auto vr = repeat_kv(v, rep);

  bool captured = capture && std::find(capture->layers.begin(), capture->layers.end(), layer_index) !=
                                 capture->layers.end();
  torch::Tensor out = attend(q, kr, vr, mask, attentions);
  if (captured) {
    // Recompute only the requested query rows explicitly; with keep_graph they replace the rows of
    // the output so d(loss)/d(probs) flows through them (the gradient-weighted attention map).
    auto rows = torch::tensor(capture->query_rows, torch::TensorOptions().dtype(torch::kLong).device(q.device()));
    auto q_rows = q.index_select(2, rows);
    auto scores = torch::matmul(q_rows, kr.transpose(2, 3)) / std::sqrt(static_cast<double>(d));
    if (mask.defined()) scores = scores + mask.index_select(2, rows);
    auto probs = torch::softmax(scores, -1, torch::kFloat32);
    if (capture->keep_graph) {
      if (!probs.requires_grad()) probs.requires_grad_(true);
      auto o_rows = torch::matmul(probs.to(q.scalar_type()), vr);
      out = out.index_copy(2, rows, o_rows);
      probs.retain_grad();
      capture->probs[layer_index] = probs;
    } else {
      capture->probs[layer_index] = probs.detach();
    }
  }
  out = out.transpose(1, 2).reshape({B, L, nq * d});
  return l.o_proj(out);
}

}  // namespace p2dpo::models

namespace p2dpo::models {
void LlamaDecoder::collect_parameters(const std::string& pm, const std::string& ph,
                                      std::map<std::string, torch::Tensor>& out) const {
  out[pm + ".embed_tokens.weight"] = embed_tokens_;
  out[ph + ".weight"] = lm_head_;
  out[pm + ".norm.weight"] = norm_.weight;
  auto lin = [&](const std::string& p, const Linear& l) {
    out[p + ".weight"] = l.weight;
    if (l.bias.defined()) out[p + ".bias"] = l.bias;
  };
  for (size_t i = 0; i < layers_.size(); ++i) {
    const auto& l = layers_[i];
    const std::string p = pm + ".layers." + std::to_string(i);
    out[p + ".input_layernorm.weight"] = l.input_layernorm.weight;
    out[p + ".post_attention_layernorm.weight"] = l.post_attention_layernorm.weight;
    lin(p + ".self_attn.q_proj", l.q_proj);
    lin(p + ".self_attn.k_proj", l.k_proj);
    lin(p + ".self_attn.v_proj", l.v_proj);
    lin(p + ".self_attn.o_proj", l.o_proj);
    lin(p + ".mlp.gate_proj", l.gate_proj);
    lin(p + ".mlp.up_proj", l.up_proj);
    lin(p + ".mlp.down_proj", l.down_proj);
  }
}

std::vector<NamedLinear> LlamaDecoder::linear_layers(const std::string& pm) {
  std::vector<NamedLinear> out;
  for (size_t i = 0; i < layers_.size(); ++i) {
    auto& l = layers_[i];
    const std::string p = pm + ".layers." + std::to_string(i);
    for (auto [name, lin] : {std::pair<const char*, Linear*>{".self_attn.q_proj", &l.q_proj},
                             {".self_attn.k_proj", &l.k_proj}, {".self_attn.v_proj", &l.v_proj},
                             {".self_attn.o_proj", &l.o_proj}, {".mlp.gate_proj", &l.gate_proj},
                             {".mlp.up_proj", &l.up_proj}, {".mlp.down_proj", &l.down_proj}})
      out.push_back({p + name, lin, NamedLinear::Part::kLanguageModel});
  }
  return out;
}

}  // namespace p2dpo::models
