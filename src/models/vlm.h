#pragma once
// The one seam everything above models/ depends on: pairs, training and evaluation talk to a
// VisionLanguageModel and never ask which family (LLaVA, Qwen2.5-VL) is behind it.
#include <torch/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "image/image.h"

namespace p2dpo::models {

struct Linear;  // models/layers.h

// One linear layer by canonical module name (HF legacy layout, without ".weight"), so adapters
// (LoRA) attach to it and name their tensors the way PEFT does, without knowing the family.
struct NamedLinear {
  enum class Part { kVisionTower, kProjector, kLanguageModel };
  std::string name;  // e.g. "language_model.model.layers.3.self_attn.q_proj"
  Linear* layer = nullptr;
  Part part = Part::kLanguageModel;
};

// The fixed-shape form of a cache (VisionLanguageModel::freeze_cache): every tensor a decoding
// step reads or writes has the same shape and address at every step, and the step advances this
// state itself, in place on the device. Such a step can be captured once as a CUDA graph and
// replayed (infer/decode_graph.h), which removes the host's per-kernel launch cost.
struct FixedDecodeState {
  int64_t capacity = 0;       // cache columns; a step attends to all of them through key_mask
  torch::Tensor write_index;  // [1] int64: the column this step's keys and values go to
  torch::Tensor positions;    // [B, 1] int64: each row's position (RoPE) for the token being fed
  torch::Tensor key_mask;     // [B, 1, 1, capacity] model dtype: 0 = attend, the dtype's min = masked
};

// Per-layer key/value cache. Keys are stored after RoPE, before any GQA repeat: [B, n_kv, T, d].
struct KVCache {
  std::vector<torch::Tensor> keys, values;  // the valid part: views into the buffers below
  // Without autograd the cache grows inside preallocated buffers [B, n_kv, capacity, d], so a
  // decode step writes only its new rows (see LlamaDecoder::attention).
  std::vector<torch::Tensor> key_buffers, value_buffers;
  torch::Tensor attention_mask;  // [B, T] int64, 1 = real token, 0 = padding; grows with the cache
  bool has_padding = false;      // any 0 in attention_mask, tracked on the host (no device sync per step)
  // When > 0, a buffer allocated for T positions gets room for exactly T + room_after (else it grows
  // in chunks). A cache frozen right after its prompt with that room then keeps its buffers:
  // freeze_cache neither copies the prompt nor holds it twice.
  int64_t room_after = 0;
  // Set once frozen: keys/values then live in key_buffers/value_buffers [B, n_kv, capacity, d] and
  // `keys`, `values` and `attention_mask` are no longer kept up to date.
  std::shared_ptr<FixedDecodeState> fixed;
  bool is_fixed() const { return fixed != nullptr; }
  int64_t length() const { return keys.empty() || !keys[0].defined() ? 0 : keys[0].size(2); }
};

// Ask a forward pass for attention probabilities of some query rows at some layers, without
// materialising full maps for every layer. Rows are positions within the current input chunk.
struct AttentionCapture {
  std::vector<int> layers;          // decoder layer indices (0-based)
  std::vector<int64_t> query_rows;  // positions in the current chunk (applies to every batch row)
  bool keep_graph = false;          // keep probabilities in the autograd graph (for d logp / d attn)
  // Filled by the forward: layer -> [B, heads, n_rows, kv_len] post-softmax probabilities (fp32).
  std::map<int, torch::Tensor> probs;
};

struct ForwardInput {
  torch::Tensor input_ids;       // [B, L] int64
  torch::Tensor attention_mask;  // [B, L] int64 for this chunk (undefined = all ones)
  torch::Tensor image_features;  // [n_image_tokens_in_chunk, hidden] rows scattered into the
                                 // image-token positions in order (undefined if none)
  KVCache* cache = nullptr;      // appended to when given
  AttentionCapture* capture = nullptr;
  bool logits_last_only = false;  // compute logits for the last position only (generation)
  torch::Tensor inputs_embeds;    // optional: use these instead of embedding input_ids (image rows already merged)
};

struct ForwardOutput {
  torch::Tensor logits;  // [B, L, V] fp32 (or [B, 1, V] with logits_last_only)
  torch::Tensor hidden;  // [B, L, H] after the final norm
};

// A preprocessed image, ready for the vision tower.
struct PreparedImage {
  torch::Tensor pixel_values;  // [3, H, W] float32
  int grid_h = 0, grid_w = 0;  // the image-token grid the LM sees
  image::ImageU8 view;         // uint8 pixels after resize/crop (what the model sees)
  int orig_width = 0, orig_height = 0;
};

struct ModelInfo {
  std::string family;       // "llava", "qwen2_5_vl"
  int64_t vocab_size = 0;   // logit columns
  int64_t hidden_size = 0;  // LM hidden size
  int num_layers = 0;       // LM decoder layers
  int num_heads = 0;
  int64_t image_token_id = -1;
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;
  int64_t pad_token_id = 0;
  int vision_input_size = 0;  // side of the square the vision tower sees (336 for LLaVA-1.5)
};

class VisionLanguageModel {
 public:
  virtual ~VisionLanguageModel() = default;
  virtual const ModelInfo& info() const = 0;
  virtual torch::Device device() const = 0;

  // Images: decode is the caller's; this resizes/crops/normalises as the HF processor does.
  virtual PreparedImage prepare_image(const image::ImageU8& img) const = 0;
  // Pixel tensor -> image features in LM embedding space, [n_images, tokens_per_image, hidden].
  virtual torch::Tensor encode_images(const std::vector<PreparedImage>& images) = 0;
  // The same in two halves, so a trainer whose vision tower is frozen can cache the first half per
  // image: encode_images(x) == project_vision_features(vision_features(x)).
  virtual torch::Tensor vision_features(const std::vector<PreparedImage>& images) = 0;  // [n, T, Dv]
  virtual torch::Tensor project_vision_features(const torch::Tensor& features) = 0;     // -> [n, T, hidden]
  // Canonical-name prefixes of every parameter vision_features depends on.
  virtual std::vector<std::string> vision_feature_parameter_prefixes() const = 0;
  virtual int64_t tokens_per_image(const PreparedImage& img) const = 0;

  // Text: the prompt is the full text as given to the HF processor, one image marker per image.
  // Returns ids with every image marker expanded to its image's token count.
  virtual std::vector<int64_t> tokenize_prompt(const std::string& prompt,
                                               const std::vector<PreparedImage>& images) const = 0;
  // Prompt + answer under the documented convention (text/prompt.h); returns {prompt ids, answer ids}.
  virtual std::pair<std::vector<int64_t>, std::vector<int64_t>> tokenize_prompt_answer(
      const std::string& prompt, const std::string& answer,
      const std::vector<PreparedImage>& images) const = 0;
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;

  virtual ForwardOutput forward(const ForwardInput& in) = 0;
  virtual KVCache new_cache() const = 0;
  // Turns a filled cache (after the prompt's forward, no autograd) into its fixed-shape form with
  // room for `capacity` columns in all. Later forwards with this cache take one token per row
  // ([B, 1] input_ids on the model's device, no attention_mask, no image features), allocate
  // nothing that depends on the step and never read the device from the host. Their logits
  // equal those of the growing cache to float rounding (masked columns get exactly zero weight).
  virtual void freeze_cache(KVCache& cache, int64_t capacity) const = 0;

  // All parameters by canonical (HF legacy-layout) name, for LoRA, freezing and checkpointing.
  virtual std::map<std::string, torch::Tensor> named_parameters() = 0;
  // The projector's and the language model's linear layers (not the LM head, which PEFT's
  // "all-linear" also leaves out), in layer order.
  virtual std::vector<NamedLinear> linear_layers() = 0;
  // Activation recomputation per language-model decoder layer while autograd is on (trades a
  // second forward for the layers' activations); values and gradients are unchanged. `layers`:
  // how many, from the first; 0 none, < 0 all.
  virtual void set_activation_recomputation(int64_t layers) = 0;
};

}  // namespace p2dpo::models
