#include "models/clip.h"

#include <torch/types.h>
#include <torch/utils.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "io/errors.h"
#include "io/json_io.h"
#include "io/safetensors.h"
#include "models/weights.h"

namespace p2dpo::models {

namespace {

TensorSource source_of(WeightStore& w) {
  return [&w](const std::string& name, const std::vector<int64_t>& shape, const std::string& field) {
    return w.get(name, shape, field);
  };
}

Linear make_linear(const TensorSource& src, const std::string& p, int64_t in, int64_t out,
                   const std::string& field) {
  Linear l;
  l.weight = src(p + ".weight", {out, in}, field);
  l.bias = src(p + ".bias", {out}, field);
  return l;
}

LayerNorm make_layer_norm(const TensorSource& src, const std::string& p, int64_t dim, double eps,
                          const std::string& field) {
  LayerNorm n;
  n.weight = src(p + ".weight", {dim}, field);
  n.bias = src(p + ".bias", {dim}, field);
  n.eps = eps;
  return n;
}

ClipEncoder load_encoder(const TensorSource& src, const std::string& prefix, int64_t layers, int64_t hidden,
                         int64_t inter, int64_t heads, double eps, const std::string& act,
                         const std::string& cfg_name) {
  ClipEncoder enc;
  enc.num_heads = static_cast<int>(heads);
  enc.hidden_act = act;
  const std::string hs = cfg_name + ".hidden_size", is = cfg_name + ".intermediate_size";
  for (int i = 0; i < layers; ++i) {
    std::string p = prefix + ".encoder.layers." + std::to_string(i);
    ClipEncoderLayer l;
    // HF module order (CLIPAttention: k, v, q, out), so a fresh model draws in a familiar order.
    l.k_proj = make_linear(src, p + ".self_attn.k_proj", hidden, hidden, hs);
    l.v_proj = make_linear(src, p + ".self_attn.v_proj", hidden, hidden, hs);
    l.q_proj = make_linear(src, p + ".self_attn.q_proj", hidden, hidden, hs);
    l.out_proj = make_linear(src, p + ".self_attn.out_proj", hidden, hidden, hs);
    l.layer_norm1 = make_layer_norm(src, p + ".layer_norm1", hidden, eps, hs);
    l.fc1 = make_linear(src, p + ".mlp.fc1", hidden, inter, is);
    l.fc2 = make_linear(src, p + ".mlp.fc2", inter, hidden, is);
    l.layer_norm2 = make_layer_norm(src, p + ".layer_norm2", hidden, eps, hs);
    enc.layers.push_back(std::move(l));
  }
  return enc;
}

void push_linear(NamedTensors& out, const std::string& p, const Linear& l) {
  out.emplace_back(p + ".weight", l.weight);
  if (l.bias.defined()) out.emplace_back(p + ".bias", l.bias);
}
void push_ln(NamedTensors& out, const std::string& p, const LayerNorm& l) {
  out.emplace_back(p + ".weight", l.weight);
  out.emplace_back(p + ".bias", l.bias);
}
void push_encoder(NamedTensors& out, const std::string& prefix, const ClipEncoder& enc) {
  for (size_t i = 0; i < enc.layers.size(); ++i) {
    const auto& l = enc.layers[i];
    const std::string p = prefix + ".encoder.layers." + std::to_string(i);
    push_linear(out, p + ".self_attn.k_proj", l.k_proj);
    push_linear(out, p + ".self_attn.v_proj", l.v_proj);
    push_linear(out, p + ".self_attn.q_proj", l.q_proj);
    push_linear(out, p + ".self_attn.out_proj", l.out_proj);
    push_ln(out, p + ".layer_norm1", l.layer_norm1);
    push_linear(out, p + ".mlp.fc1", l.fc1);
    push_linear(out, p + ".mlp.fc2", l.fc2);
    push_ln(out, p + ".layer_norm2", l.layer_norm2);
  }
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// splitmix64 (Steele et al.): decorrelates the per-tensor seeds.
uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t fnv1a64(const std::string& s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001B3ull;
  }
  return h;
}

// N(0, std^2) float32 values from mt19937_64 via Box-Muller (std::normal_distribution's output
// differs between standard libraries).
torch::Tensor portable_normal(const std::vector<int64_t>& shape, double stddev, uint64_t stream_seed) {
  std::mt19937_64 rng(stream_seed);
  auto t = torch::empty(shape, torch::kFloat32);
  float* p = t.data_ptr<float>();
  const int64_t n = t.numel();
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  for (int64_t i = 0; i < n; i += 2) {
    const double u1 = (static_cast<double>(rng() >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
    const double u2 = static_cast<double>(rng() >> 11) * 0x1.0p-53;          // [0, 1)
    const double r = std::sqrt(-2.0 * std::log(u1)) * stddev;
    p[i] = static_cast<float>(r * std::cos(kTwoPi * u2));
    if (i + 1 < n) p[i + 1] = static_cast<float>(r * std::sin(kTwoPi * u2));
  }
  return t;
}

// HF CLIPPreTrainedModel._init_weights, by key: the std each module type gets.
torch::Tensor hf_clip_init(const std::string& name, const std::vector<int64_t>& shape, const io::ClipConfig& cfg,
                           const ClipInitOptions& init, uint64_t seed) {
  const double f = init.initializer_factor;
  if (name == "logit_scale") return torch::full({}, cfg.logit_scale_init_value, torch::kFloat32);
  const bool text = name.rfind("text_model.", 0) == 0;
  const double D = static_cast<double>(text ? cfg.text.hidden_size : cfg.vision.hidden_size);
  const double L = static_cast<double>(text ? cfg.text.num_hidden_layers : cfg.vision.num_hidden_layers);
  const bool norm = name.find("layer_norm") != std::string::npos || name.find("layrnorm") != std::string::npos ||
                    name.find("post_layernorm") != std::string::npos;
  if (ends_with(name, ".bias")) return torch::zeros(shape, torch::kFloat32);
  if (norm) return torch::ones(shape, torch::kFloat32);
  double stddev = 0.0;
  if (name == "text_projection.weight") {
    stddev = std::pow(static_cast<double>(cfg.text.hidden_size), -0.5) * f;
  } else if (name == "visual_projection.weight") {
    stddev = std::pow(static_cast<double>(cfg.vision.hidden_size), -0.5) * f;
  } else if (ends_with(name, "token_embedding.weight") || (text && ends_with(name, "position_embedding.weight"))) {
    stddev = 0.02 * f;
  } else if (ends_with(name, "class_embedding")) {
    stddev = std::pow(D, -0.5) * f;
  } else if (ends_with(name, "patch_embedding.weight") || ends_with(name, "position_embedding.weight")) {
    stddev = init.initializer_range * f;
  } else if (ends_with(name, "q_proj.weight") || ends_with(name, "k_proj.weight") ||
             ends_with(name, "v_proj.weight") || ends_with(name, "fc2.weight")) {
    stddev = std::pow(D, -0.5) * std::pow(2.0 * L, -0.5) * f;
  } else if (ends_with(name, "out_proj.weight")) {
    stddev = std::pow(D, -0.5) * f;
  } else if (ends_with(name, "fc1.weight")) {
    stddev = std::pow(2.0 * D, -0.5) * f;
  } else {
    throw std::logic_error("no CLIP initialiser for '" + name + "'");
  }
  return portable_normal(shape, stddev, splitmix64(seed ^ splitmix64(fnv1a64(name))));
}

}  // namespace

torch::Tensor ClipEncoder::forward(torch::Tensor x, const torch::Tensor& mask, int num_layers,
                                   std::vector<torch::Tensor>* hidden_states,
                                   std::vector<torch::Tensor>* attentions) const {
  const int n = num_layers < 0 ? static_cast<int>(layers.size()) : num_layers;
  if (hidden_states) hidden_states->push_back(x);
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2);
  const int64_t d = D / num_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  for (int i = 0; i < n; ++i) {
    const auto& l = layers[i];
    torch::Tensor h = l.layer_norm1(x);
    // transformers <= 4.51 scales Q before QK^T (the fixtures' 4.45 does); same math, same bits.
    auto q = (l.q_proj(h) * scale).view({B, L, num_heads, d}).transpose(1, 2);
    auto k = l.k_proj(h).view({B, L, num_heads, d}).transpose(1, 2);
    auto v = l.v_proj(h).view({B, L, num_heads, d}).transpose(1, 2);
    auto scores = torch::matmul(q, k.transpose(-1, -2));
    if (mask.defined()) scores = scores + mask;
    auto probs = torch::softmax(scores, -1, torch::kFloat32).to(scores.scalar_type());
    if (attentions) attentions->push_back(probs);
    auto o = torch::matmul(probs, v).transpose(1, 2).reshape({B, L, D});
    x = x + l.out_proj(o);
    h = l.layer_norm2(x);
    x = x + l.fc2(activation(hidden_act, l.fc1(h)));
    if (hidden_states) hidden_states->push_back(x);
  }
  return x;
}

ClipVisionTower::ClipVisionTower(WeightStore& w, const std::string& prefix,
                                 const io::ClipVisionConfig& cfg, bool load_post_layernorm)
    : ClipVisionTower(source_of(w), prefix, cfg, load_post_layernorm) {}

ClipVisionTower::ClipVisionTower(const TensorSource& src, const std::string& prefix,
                                 const io::ClipVisionConfig& cfg, bool load_post_layernorm)
    : cfg_(cfg) {
  const int64_t D = cfg.hidden_size;
  const int64_t n_pos = static_cast<int64_t>(num_patches_per_side()) * num_patches_per_side() + 1;
  class_embedding = src(prefix + ".embeddings.class_embedding", {D}, "vision_config.hidden_size");
  patch_embedding = src(prefix + ".embeddings.patch_embedding.weight",
                        {D, cfg.num_channels, cfg.patch_size, cfg.patch_size}, "vision_config.patch_size");
  position_embedding = src(prefix + ".embeddings.position_embedding.weight", {n_pos, D},
                           "vision_config.image_size/patch_size");
  pre_layrnorm = make_layer_norm(src, prefix + ".pre_layrnorm", D, cfg.layer_norm_eps, "vision_config.hidden_size");
  encoder_ = load_encoder(src, prefix, cfg.num_hidden_layers, D, cfg.intermediate_size,
                          cfg.num_attention_heads, cfg.layer_norm_eps, cfg.hidden_act, "vision_config");
  if (load_post_layernorm) {
    post_layernorm = make_layer_norm(src, prefix + ".post_layernorm", D, cfg.layer_norm_eps,
                                     "vision_config.hidden_size");
  }
}

std::vector<torch::Tensor> ClipVisionTower::hidden_states(const torch::Tensor& pixel_values,
                                                          int num_layers,
                                                          std::vector<torch::Tensor>* attentions) const {
  auto x = pixel_values.to(patch_embedding.scalar_type());
  auto patches = torch::conv2d(x, patch_embedding, {}, cfg_.patch_size);  // [B, D, g, g]
  patches = patches.flatten(2).transpose(1, 2);                            // [B, g*g, D]
  auto cls = class_embedding.view({1, 1, -1}).expand({patches.size(0), 1, patches.size(2)});
  auto emb = torch::cat({cls, patches}, 1) + position_embedding.unsqueeze(0);
  emb = pre_layrnorm(emb);
  std::vector<torch::Tensor> hs;
  encoder_.forward(emb, {}, num_layers, &hs, attentions);
  return hs;
}

torch::Tensor ClipVisionTower::pooled(const torch::Tensor& pixel_values,
                                      std::vector<torch::Tensor>* hidden_states_out) const {
  auto hs = hidden_states(pixel_values);
  auto out = post_layernorm(hs.back().select(1, 0));
  if (hidden_states_out != nullptr) *hidden_states_out = std::move(hs);
  return out;
}

void ClipVisionTower::collect_parameters(const std::string& prefix,
                                         std::map<std::string, torch::Tensor>& out) const {
  NamedTensors ordered;
  append_parameters(prefix, ordered);
  for (auto& [name, t] : ordered) out[name] = t;
}

void ClipVisionTower::append_parameters(const std::string& prefix, NamedTensors& out) const {
  out.emplace_back(prefix + ".embeddings.class_embedding", class_embedding);
  out.emplace_back(prefix + ".embeddings.patch_embedding.weight", patch_embedding);
  out.emplace_back(prefix + ".embeddings.position_embedding.weight", position_embedding);
  push_ln(out, prefix + ".pre_layrnorm", pre_layrnorm);
  push_encoder(out, prefix, encoder_);
  if (post_layernorm.weight.defined()) push_ln(out, prefix + ".post_layernorm", post_layernorm);
}

ClipTextTower::ClipTextTower(const TensorSource& src, const std::string& prefix, const io::ClipTextConfig& cfg)
    : cfg_(cfg) {
  const int64_t D = cfg.hidden_size;
  token_embedding = src(prefix + ".embeddings.token_embedding.weight", {cfg.vocab_size, D},
                        "text_config.vocab_size");
  position_embedding = src(prefix + ".embeddings.position_embedding.weight",
                           {cfg.max_position_embeddings, D}, "text_config.max_position_embeddings");
  encoder_ = load_encoder(src, prefix, cfg.num_hidden_layers, D, cfg.intermediate_size,
                          cfg.num_attention_heads, cfg.layer_norm_eps, cfg.hidden_act, "text_config");
  final_layer_norm = make_layer_norm(src, prefix + ".final_layer_norm", D, cfg.layer_norm_eps,
                                     "text_config.hidden_size");
}

void ClipTextTower::append_parameters(const std::string& prefix, NamedTensors& out) const {
  out.emplace_back(prefix + ".embeddings.token_embedding.weight", token_embedding);
  out.emplace_back(prefix + ".embeddings.position_embedding.weight", position_embedding);
  push_encoder(out, prefix, encoder_);
  push_ln(out, prefix + ".final_layer_norm", final_layer_norm);
}

torch::Tensor ClipTextTower::pooled(const torch::Tensor& ids, const torch::Tensor& attention_mask) const {
  const int64_t B = ids.size(0), L = ids.size(1);
  if (L > cfg_.max_position_embeddings) {
    throw InputError("text", "CLIP text of " + std::to_string(L) + " tokens exceeds max_position_embeddings " +
                                 std::to_string(cfg_.max_position_embeddings));
  }
  auto x = token_embedding.index_select(0, ids.reshape({-1})).view({B, L, -1}) +
           position_embedding.slice(0, 0, L).unsqueeze(0);
  auto dtype = x.scalar_type();
  const double neg = dtype_min(dtype);
  auto causal = torch::ones({L, L}, torch::TensorOptions().dtype(torch::kBool).device(x.device())).triu(1);  // true = masked
  auto masked = causal.view({1, 1, L, L}).expand({B, 1, L, L});
  if (attention_mask.defined()) {
    auto pad = (attention_mask == 0).view({B, 1, 1, L});
    masked = masked.logical_or(pad);
  }
  auto mask = torch::zeros({B, 1, L, L}, x.options()).masked_fill(masked.to(x.device()), neg);
  auto h = encoder_.forward(x, mask, -1, nullptr, nullptr);
  h = final_layer_norm(h);
  // EOS pooling (modeling_clip): legacy configs (eos_token_id == 2) take argmax of the ids.
  torch::Tensor pos;
  if (cfg_.eos_token_id == 2) {
    pos = ids.argmax(-1);
  } else {
    pos = (ids == cfg_.eos_token_id).to(torch::kInt32).argmax(-1);
  }
  return h.index({torch::arange(B, torch::TensorOptions().dtype(torch::kLong).device(h.device())),
                  pos.to(h.device())});
}

std::unique_ptr<ClipModel> ClipModel::load(const std::string& dir, torch::Device device) {
  io::ClipConfig cfg = io::load_clip_config(dir);
  WeightStore w(dir, [](const std::string& k) { return io::is_ignorable_buffer_key(k) ? std::string() : k; },
                torch::kFloat32, device);
  return std::unique_ptr<ClipModel>(new ClipModel(source_of(w), cfg));
}

std::unique_ptr<ClipModel> ClipModel::random_init(const io::ClipConfig& cfg, uint64_t seed,
                                                  const ClipInitOptions& init) {
  TensorSource src = [&](const std::string& name, const std::vector<int64_t>& shape, const std::string&) {
    return hf_clip_init(name, shape, cfg, init, seed);
  };
  return std::unique_ptr<ClipModel>(new ClipModel(src, cfg));
}

ClipModel::ClipModel(const TensorSource& src, const io::ClipConfig& cfg) : cfg_(cfg) {
  text_ = std::make_unique<ClipTextTower>(src, "text_model", cfg.text);
  vision_ = std::make_unique<ClipVisionTower>(src, "vision_model", cfg.vision, true);
  visual_projection = src("visual_projection.weight", {cfg.projection_dim, cfg.vision.hidden_size},
                          "projection_dim");
  text_projection = src("text_projection.weight", {cfg.projection_dim, cfg.text.hidden_size},
                        "projection_dim");
  logit_scale_ = src("logit_scale", {}, "logit_scale");
}

double ClipModel::logit_scale() const { return logit_scale_.item<double>(); }

NamedTensors ClipModel::named_parameters() const {
  NamedTensors out;
  text_->append_parameters("text_model", out);
  vision_->append_parameters("vision_model", out);
  out.emplace_back("visual_projection.weight", visual_projection);
  out.emplace_back("text_projection.weight", text_projection);
  out.emplace_back("logit_scale", logit_scale_);
  return out;
}

void ClipModel::save_pretrained(const std::string& dir, const ClipInitOptions& init) const {
  namespace fs = std::filesystem;
  std::vector<torch::Tensor> owned;  // keeps the CPU float32 copies alive until written
  std::vector<io::TensorToWrite> tensors;
  for (const auto& [name, t] : named_parameters()) {
    owned.push_back(t.detach().to(torch::kCPU, torch::kFloat32).contiguous());
    const auto& c = owned.back();
    io::TensorToWrite w;
    w.name = name;
    w.dtype = io::DType::F32;
    w.shape = c.sizes().vec();
    w.data = c.data_ptr();
    w.nbytes = static_cast<size_t>(c.numel()) * sizeof(float);
    tensors.push_back(std::move(w));
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw InputError(dir, "cannot create directory: " + ec.message());
  io::write_safetensors((fs::path(dir) / "model.safetensors").string(), tensors, {{"format", "pt"}});
  io::write_json_atomic((fs::path(dir) / "config.json").string(), clip_config_json(cfg_, init));
}

nlohmann::json clip_vision_config_json(const io::ClipVisionConfig& v, const ClipInitOptions& init) {
  return {{"attention_dropout", 0.0},
          {"dropout", 0.0},
          {"hidden_act", v.hidden_act},
          {"hidden_size", v.hidden_size},
          {"image_size", v.image_size},
          {"initializer_factor", init.initializer_factor},
          {"initializer_range", init.initializer_range},
          {"intermediate_size", v.intermediate_size},
          {"layer_norm_eps", v.layer_norm_eps},
          {"model_type", "clip_vision_model"},
          {"num_attention_heads", v.num_attention_heads},
          {"num_channels", v.num_channels},
          {"num_hidden_layers", v.num_hidden_layers},
          {"patch_size", v.patch_size},
          {"projection_dim", v.projection_dim}};
}

nlohmann::json clip_config_json(const io::ClipConfig& cfg, const ClipInitOptions& init) {
  const auto& t = cfg.text;
  nlohmann::json text = {{"attention_dropout", 0.0},
                         {"bos_token_id", t.bos_token_id},
                         {"dropout", 0.0},
                         {"eos_token_id", t.eos_token_id},
                         {"hidden_act", t.hidden_act},
                         {"hidden_size", t.hidden_size},
                         {"initializer_factor", init.initializer_factor},
                         {"initializer_range", init.initializer_range},
                         {"intermediate_size", t.intermediate_size},
                         {"layer_norm_eps", t.layer_norm_eps},
                         {"max_position_embeddings", t.max_position_embeddings},
                         {"model_type", "clip_text_model"},
                         {"num_attention_heads", t.num_attention_heads},
                         {"num_hidden_layers", t.num_hidden_layers},
                         {"pad_token_id", t.pad_token_id},
                         {"projection_dim", t.projection_dim},
                         {"vocab_size", t.vocab_size}};
  return {{"architectures", {"CLIPModel"}},
          {"initializer_factor", init.initializer_factor},
          {"logit_scale_init_value", cfg.logit_scale_init_value},
          {"model_type", "clip"},
          {"projection_dim", cfg.projection_dim},
          {"text_config", text},
          {"torch_dtype", "float32"},
          {"transformers_version", "4.45.1"},
          {"vision_config", clip_vision_config_json(cfg.vision, init)}};
}

torch::Tensor ClipModel::image_features(const torch::Tensor& pixel_values,
                                        std::vector<torch::Tensor>* hidden_states) const {
  return torch::linear(vision_->pooled(pixel_values, hidden_states), visual_projection);
}

torch::Tensor ClipModel::text_features(const torch::Tensor& ids, const torch::Tensor& mask) const {
  return torch::linear(text_->pooled(ids, mask), text_projection);
}

torch::Tensor ClipModel::clip_score(const torch::Tensor& text_features,
                                    const torch::Tensor& image_features) const {
  // Normalise as HF: x / sqrt(sum(x^2)).
  auto t = text_features / text_features.pow(2).sum(-1, true).sqrt();
  auto i = image_features / image_features.pow(2).sum(-1, true).sqrt();
  return 100.0 * torch::clamp_min(torch::matmul(t, i.t()), 0.0);
}

}  // namespace p2dpo::models
