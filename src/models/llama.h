#pragma once
// The LLaMA decoder as HF transformers 4.45 computes it (modeling_llama.py): fp32 RMSNorm,
// rotate-half RoPE with fp32 inv_freq, grouped-query attention, SwiGLU, a KV cache, and eager
// attention whenever probabilities are requested (SDPA on libtorch >= 2 otherwise).
#include <torch/types.h>

#include <array>
#include <map>
#include <string>
#include <vector>

#include "io/hf_config.h"
#include "models/layers.h"
#include "models/vlm.h"

namespace p2dpo::models {

struct LlamaLayer {
  RMSNorm input_layernorm, post_attention_layernorm;
  Linear q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj;
  // When set (LlamaDecoder::fuse_qkv_projections): the rows [q; k; v], of which the three weights
  // are views, so one GEMM projects all three (and RoPE turns q and k in one pass).
  torch::Tensor qkv_weight;
};

class LlamaDecoder {
 public:
  // prefix_model = "language_model.model", prefix_head = "language_model.lm_head" (hub layout).
  LlamaDecoder(WeightStore& w, const std::string& prefix_model, const std::string& prefix_head,
               const io::LlamaConfig& cfg, const std::string& config_file);

  torch::Tensor embed(const torch::Tensor& ids) const;
  // embeds [B, L, H]; attention_mask [B, past+L] int64 (1 = token) or undefined = no padding.
  // Position ids are cumsum(mask) - 1 over the whole (past + current) mask, as HF generate does.
  // Returns hidden states after the final norm. When `hidden_states` is given, appends the
  // embeddings and each layer's output (the last one replaced by the post-norm state, HF style).
  torch::Tensor forward(const torch::Tensor& embeds, const torch::Tensor& attention_mask,
                        KVCache* cache, AttentionCapture* capture,
                        std::vector<torch::Tensor>* hidden_states = nullptr,
                        std::vector<torch::Tensor>* attentions = nullptr) const;
  torch::Tensor lm_head(const torch::Tensor& hidden) const;
  // VisionLanguageModel::freeze_cache for this decoder's cache layout (see vlm.h).
  void freeze_cache(KVCache& cache, int64_t capacity) const;

  const io::LlamaConfig& config() const { return cfg_; }
  std::vector<LlamaLayer>& layers() { return layers_; }
  void collect_parameters(const std::string& prefix_model, const std::string& prefix_head,
                          std::map<std::string, torch::Tensor>& out) const;
  // Every decoder layer's linear layers, q k v o gate up down per layer.
  std::vector<NamedLinear> linear_layers(const std::string& prefix_model);
  // Use SDPA (libtorch >= 2) where no probabilities are requested. Off = eager everywhere.
  void set_use_sdpa(bool on) { use_sdpa_ = on; }
  // Moves every layer's q, k and v weights into one [q; k; v] tensor whose rows they view (no extra
  // memory), so a forward projects them in one GEMM and turns q and k in one RoPE pass: six fewer
  // host ops per layer, for the launch-bound stages of a GPU run. Done at load on CUDA devices; the
  // CPU keeps three GEMMs, which its records were made with (the fused GEMM rounds differently).
  // A layer whose q, k or v has an enabled LoRA, biases, weights that require gradients (full
  // training) or weights replaced since takes the three projections as before.
  void fuse_qkv_projections();
  // Activation recomputation (gradient checkpointing) per decoder layer: with autograd on and no
  // attention or hidden-state capture, each layer keeps only its inputs and runs again in the
  // backward pass (an autograd Function; libtorch has no checkpoint API). Same values and
  // gradients, far less memory for long sequences. Dropout masks are replayed from the saved state
  // of the generator of the activations' device (CPU or CUDA), as PyTorch's checkpoint does.
  // `layers`: how many decoder layers, from the first, are recomputed; 0 none, < 0 all (fewer
  // trade less compute for more memory).
  void set_recompute_layers(int64_t layers) { recompute_layers_ = layers; }
  int64_t recompute_layers() const { return recompute_layers_; }
  // One decoder layer on explicit past keys/values ([B, n_kv, past, d], possibly empty): returns
  // {hidden out, keys past+new, values past+new}. The body of forward() and of the recomputation.
  std::array<torch::Tensor, 3> layer_step(int layer_index, const torch::Tensor& h, const torch::Tensor& past_k,
                                          const torch::Tensor& past_v, const torch::Tensor& cos,
                                          const torch::Tensor& sin, const torch::Tensor& mask) const;

 private:
  // One token per row through a frozen cache: fixed shapes, state advanced in place (vlm.h).
  torch::Tensor forward_fixed(const torch::Tensor& embeds, KVCache& cache) const;
  torch::Tensor attention(int layer_index, const LlamaLayer& l, const torch::Tensor& x,
                          const torch::Tensor& cos, const torch::Tensor& sin,
                          const torch::Tensor& mask, KVCache* cache, AttentionCapture* capture,
                          std::vector<torch::Tensor>* attentions) const;
  // softmax(q k^T / sqrt(d) + mask) v on keys and values already repeated to the query heads:
  // SDPA where this libtorch has it and no probabilities are requested, else eager (probabilities
  // appended to `attentions` when given). The one attention kernel of forward() and layer_step().
  torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& kr, const torch::Tensor& vr,
                       const torch::Tensor& mask, std::vector<torch::Tensor>* attentions) const;

  io::LlamaConfig cfg_;
  torch::Tensor embed_tokens_, lm_head_, inv_freq_;
  RMSNorm norm_;
  std::vector<LlamaLayer> layers_;
  bool use_sdpa_ = true;
  int64_t recompute_layers_ = 0;
};

}  // namespace p2dpo::models
