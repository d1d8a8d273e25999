#include "models/llava.h"

#include <torch/types.h>
#include <torch/utils.h>

#include <filesystem>

#include "image/clip_processor.h"
#include "io/errors.h"
#include "io/json_io.h"
#include "models/weights.h"
#include "text/prompt.h"

namespace p2dpo::models {

namespace fs = std::filesystem;

std::unique_ptr<LlavaModel> LlavaModel::load(const std::string& dir, const LoadOptions& opts) {
  std::unique_ptr<LlavaModel> m(new LlavaModel());
  m->dir_ = dir;
  m->opts_ = opts;
  const std::string config_file = (fs::path(dir) / "config.json").string();
  m->cfg_ = io::load_llava_config(dir);
  const auto& cfg = m->cfg_;
  check_activation_supported(cfg.projector_hidden_act, config_file, "projector_hidden_act");
  check_activation_supported(cfg.vision.hidden_act, config_file, "vision_config.hidden_act");

  m->tokenizer_ = std::make_unique<text::LlamaTokenizer>(text::LlamaTokenizer::load(dir));
  m->processor_ = image::load_clip_processor_config((fs::path(dir) / "preprocessor_config.json").string());
  m->processor_.pad_to_square = opts.pad_to_square;
  if (m->processor_.crop_height != cfg.vision.image_size || m->processor_.crop_width != cfg.vision.image_size) {
    throw InputError((fs::path(dir) / "preprocessor_config.json").string(),
                     "field 'crop_size' (" + std::to_string(m->processor_.crop_height) + "x" +
                         std::to_string(m->processor_.crop_width) +
                         ") does not match config.json vision_config.image_size " +
                         std::to_string(cfg.vision.image_size));
  }

  WeightStore w(dir,
                [](const std::string& k) {
                  return io::is_ignorable_buffer_key(k) ? std::string() : io::canonical_llava_key(k);
                },
                opts.dtype, opts.device);
  m->vision_ = std::make_unique<ClipVisionTower>(w, "vision_tower.vision_model", cfg.vision,
                                                 /*load_post_layernorm=*/false);
  m->lm_ = std::make_unique<LlamaDecoder>(w, "language_model.model", "language_model.lm_head", cfg.text,
                                          config_file);
  const int64_t vision_in = cfg.vision.hidden_size * static_cast<int64_t>(cfg.vision_feature_layers.size());
  m->linear_1_ = Linear::load(w, "multi_modal_projector.linear_1", vision_in, cfg.text.hidden_size,
                              cfg.multimodal_projector_bias, "vision_config.hidden_size/text_config.hidden_size");
  m->linear_2_ = Linear::load(w, "multi_modal_projector.linear_2", cfg.text.hidden_size,
                              cfg.text.hidden_size, cfg.multimodal_projector_bias, "text_config.hidden_size");

  const int64_t side = cfg.vision.image_size / cfg.vision.patch_size;
  m->tokens_per_image_ = side * side + (cfg.vision_feature_select_strategy == "full" ? 1 : 0);

  auto tok_image = m->tokenizer_->token_id("<image>");
  if (!tok_image || *tok_image != cfg.image_token_index) {
    throw InputError(dir, "tokenizer's <image> id (" + (tok_image ? std::to_string(*tok_image) : "absent") +
                              ") does not match config.json image_token_index " +
                              std::to_string(cfg.image_token_index));
  }
  ModelInfo& info = m->info_;
  info.family = "llava";
  info.vocab_size = cfg.text.vocab_size;
  info.hidden_size = cfg.text.hidden_size;
  info.num_layers = cfg.text.num_hidden_layers;
  info.num_heads = cfg.text.num_attention_heads;
  info.image_token_id = cfg.image_token_index;
  info.bos_token_id = m->tokenizer_->bos_id();
  info.eos_token_ids = cfg.text.eos_token_ids;
  // generation_config.json, when present, is what HF generate stops on.
  const auto gen_path = fs::path(dir) / "generation_config.json";
  if (fs::exists(gen_path)) {
    auto g = io::read_json_file(gen_path.string());
    if (g.contains("eos_token_id")) {
      info.eos_token_ids.clear();
      if (g["eos_token_id"].is_array()) {
        for (auto& e : g["eos_token_id"]) info.eos_token_ids.push_back(e.get<int64_t>());
      } else if (g["eos_token_id"].is_number_integer()) {
        info.eos_token_ids.push_back(g["eos_token_id"].get<int64_t>());
      }
    }
  }
  if (info.eos_token_ids.empty()) info.eos_token_ids.push_back(m->tokenizer_->eos_id());
  info.pad_token_id = cfg.pad_token_id ? *cfg.pad_token_id
                                        : (m->tokenizer_->pad_id() >= 0 ? m->tokenizer_->pad_id() : 0);
  info.vision_input_size = cfg.vision.image_size;
  return m;
}

PreparedImage LlavaModel::prepare_image(const image::ImageU8& img) const {
  image::ProcessedImage p = image::preprocess_clip(img, processor_);
  PreparedImage out;
  out.pixel_values = pixels_to_tensor(p);
  out.grid_h = out.grid_w = cfg_.vision.image_size / cfg_.vision.patch_size;
  out.view = std::move(p.view);
  out.orig_width = img.width;
  out.orig_height = img.height;
  return out;
}

torch::Tensor LlavaModel::select_image_features(const torch::Tensor& pixel_values) const {
  const int n_layers = static_cast<int>(cfg_.vision.num_hidden_layers);
  int deepest = 0;
  std::vector<int> indices;  // into hidden_states (length n_layers + 1)
  for (int64_t fl : cfg_.vision_feature_layers) {
    int idx = static_cast<int>(fl < 0 ? n_layers + 1 + fl : fl);
    indices.push_back(idx);
    deepest = std::max(deepest, idx);
  }
  // HF runs every layer; layers past the deepest selected one cannot change the result.
  auto hs = vision_->hidden_states(pixel_values.to(opts_.device), deepest);
  std::vector<torch::Tensor> parts;
  for (int idx : indices) parts.push_back(hs[idx]);
  auto feats = parts.size() == 1 ? parts[0] : torch::cat(parts, -1);
  if (cfg_.vision_feature_select_strategy == "default") feats = feats.slice(1, 1);
  return feats;
}

torch::Tensor LlavaModel::project(const torch::Tensor& selected) const {
  return linear_2_(activation(cfg_.projector_hidden_act, linear_1_(selected)));
}

torch::Tensor LlavaModel::vision_features(const std::vector<PreparedImage>& images) {
  if (images.empty()) return {};
  std::vector<torch::Tensor> px;
  for (const auto& im : images) px.push_back(im.pixel_values);
  auto pixel_values = torch::stack(px).to(opts_.device, opts_.dtype);
  return select_image_features(pixel_values);
}

torch::Tensor LlavaModel::encode_images(const std::vector<PreparedImage>& images) {
  if (images.empty()) return {};
  return project(vision_features(images));
}

namespace {
void check_prompt(const std::string& prompt, size_t n_images) {
  if (prompt.empty()) throw InputError("--prompt", "the prompt is empty");
  const size_t markers = static_cast<size_t>(text::count_image_markers(prompt, "<image>"));
  if (markers != n_images) {
    throw InputError("--prompt", "the prompt has " + std::to_string(markers) + " <image> marker(s) but " +
                                     std::to_string(n_images) + " image(s) were given; put one <image> per image");
  }
}
}  // namespace

std::vector<int64_t> LlavaModel::tokenize_prompt(const std::string& prompt,
                                                 const std::vector<PreparedImage>& images) const {
  check_prompt(prompt, images.size());
  return text::expand_image_tokens(tokenizer_->encode(prompt), cfg_.image_token_index, static_cast<int>(tokens_per_image_));
}

std::pair<std::vector<int64_t>, std::vector<int64_t>> LlavaModel::tokenize_prompt_answer(
    const std::string& prompt, const std::string& answer, const std::vector<PreparedImage>& images) const {
  check_prompt(prompt, images.size());
  auto pa = text::tokenize_prompt_answer(*tokenizer_, prompt, answer);
  return {text::expand_image_tokens(pa.prompt_ids, cfg_.image_token_index, static_cast<int>(tokens_per_image_)),
          text::expand_image_tokens(pa.answer_ids, cfg_.image_token_index, static_cast<int>(tokens_per_image_))};
}

std::string LlavaModel::decode(const std::vector<int64_t>& ids) const {
  return tokenizer_->decode(ids, /*skip_special_tokens=*/true);
}

torch::Tensor LlavaModel::merged_embeddings(const torch::Tensor& ids, const torch::Tensor& image_features) const {
  // Image slots are counted where the ids are (on the host, in generation): a count read back from
  // a GPU would make every decoding step wait for the queue to drain.
  const auto is_image_here = ids == cfg_.image_token_index;
  const int64_t n_slots = is_image_here.sum().item<int64_t>();
  auto embeds = lm_->embed(ids);
  const int64_t n_rows = image_features.defined() ? image_features.numel() / embeds.size(-1) : 0;
  if (n_slots != n_rows) {
    throw InputError("input", "image tokens (" + std::to_string(n_slots) + ") do not match image features (" +
                                  std::to_string(n_rows) + " rows)");
  }
  if (n_slots == 0) return embeds;
  const auto is_image = is_image_here.to(embeds.device());
  auto rows = image_features.reshape({-1, embeds.size(-1)}).to(embeds.scalar_type());
  return embeds.masked_scatter(is_image.unsqueeze(-1).expand_as(embeds), rows);
}

ForwardOutput LlavaModel::forward(const ForwardInput& in) {
  const bool fixed = in.cache && in.cache->is_fixed();
  TORCH_CHECK(!fixed || !in.image_features.defined(), "a frozen cache takes no image features");
  // A frozen cache's step counts no image slots: that would read the device ids back to the host.
  // Nor does any step continuing a cached sequence without images: a generated token that happens to
  // be the image token embeds like any other, as in HF (whose check runs only with pixel_values).
  const bool continuing = in.cache && in.cache->length() > 0 && !in.image_features.defined();
  torch::Tensor embeds = in.inputs_embeds.defined() ? in.inputs_embeds
                         : fixed || continuing      ? lm_->embed(in.input_ids)
                                                    : merged_embeddings(in.input_ids, in.image_features);
  ForwardOutput out;
  out.hidden = lm_->forward(embeds, in.attention_mask, in.cache, in.capture);
  auto h = in.logits_last_only ? out.hidden.slice(1, out.hidden.size(1) - 1) : out.hidden;
  out.logits = lm_->lm_head(h).to(torch::kFloat32);
  return out;
}

std::map<std::string, torch::Tensor> LlavaModel::named_parameters() {
  std::map<std::string, torch::Tensor> out;
  vision_->collect_parameters("vision_tower.vision_model", out);
  out["multi_modal_projector.linear_1.weight"] = linear_1_.weight;
  if (linear_1_.bias.defined()) out["multi_modal_projector.linear_1.bias"] = linear_1_.bias;
  out["multi_modal_projector.linear_2.weight"] = linear_2_.weight;
  if (linear_2_.bias.defined()) out["multi_modal_projector.linear_2.bias"] = linear_2_.bias;
  lm_->collect_parameters("language_model.model", "language_model.lm_head", out);
  return out;
}

std::vector<NamedLinear> LlavaModel::linear_layers() {
  std::vector<NamedLinear> out{{"multi_modal_projector.linear_1", &linear_1_, NamedLinear::Part::kProjector},
                               {"multi_modal_projector.linear_2", &linear_2_, NamedLinear::Part::kProjector}};
  for (auto& l : lm_->linear_layers("language_model.model")) out.push_back(std::move(l));
  return out;
}

}  // namespace p2dpo::models
