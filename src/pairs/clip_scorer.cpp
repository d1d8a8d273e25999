#include "pairs/clip_scorer.h"

#include <torch/types.h>
#include <torch/utils.h>

#include <filesystem>
#include <stdexcept>

#include "image/clip_processor.h"
#include "models/clip.h"
#include "models/weights.h"
#include "text/clip_tokenizer.h"

namespace p2dpo::pairs {

struct ClipScorer::Impl {
  std::unique_ptr<models::ClipModel> model;
  std::unique_ptr<text::ClipTokenizer> tokenizer;
  image::ClipProcessorConfig processor;
  torch::Device device = torch::kCPU;
};

ClipScorer::ClipScorer() : impl_(std::make_unique<Impl>()) {}
ClipScorer::~ClipScorer() = default;

std::unique_ptr<ClipScorer> ClipScorer::load(const std::string& dir, const std::string& device) {
  std::unique_ptr<ClipScorer> s(new ClipScorer());
  s->impl_->device = torch::Device(device);
  s->impl_->model = models::ClipModel::load(dir, s->impl_->device);
  s->impl_->tokenizer = std::make_unique<text::ClipTokenizer>(text::ClipTokenizer::load(dir));
  s->impl_->processor =
      image::load_clip_processor_config((std::filesystem::path(dir) / "preprocessor_config.json").string());
  return s;
}

std::vector<double> ClipScorer::scores(const std::string& text, const std::vector<image::ImageU8>& images) const {
  return scores_each({text}, {images})[0];
}

std::vector<std::vector<double>> ClipScorer::scores_each(const std::vector<std::string>& texts,
                                                         const std::vector<std::vector<image::ImageU8>>& images) const {
  torch::NoGradGuard no_grad;
  if (texts.size() != images.size()) throw std::invalid_argument("scores_each: one image list per text");
  std::vector<std::vector<double>> out(texts.size());
  std::vector<torch::Tensor> px;
  for (const auto& list : images)
    for (const auto& im : list) px.push_back(models::pixels_to_tensor(image::preprocess_clip(im, impl_->processor)));
  if (px.empty()) return out;
  const auto& m = *impl_->model;
  const auto batch = impl_->tokenizer->encode_batch(texts, static_cast<int>(m.config().text.max_position_embeddings));
  const auto n = static_cast<int64_t>(texts.size()), L = static_cast<int64_t>(batch.length);
  const torch::Device dev = impl_->device;
  auto ids = torch::tensor(batch.input_ids, torch::kLong).view({n, L}).to(dev);
  auto mask = torch::tensor(batch.attention_mask, torch::kLong).view({n, L}).to(dev);
  // [n_texts, n_images]: each text keeps only the columns of its own images.
  const auto score = m.clip_score(m.text_features(ids, mask), m.image_features(torch::stack(px).to(dev)))
                         .to(torch::kCPU, torch::kFloat64)
                         .contiguous();
  const auto columns = score.size(1);
  const double* d = score.data_ptr<double>();
  int64_t column = 0;
  for (size_t t = 0; t < texts.size(); ++t)
    for (size_t k = 0; k < images[t].size(); ++k, ++column)
      out[t].push_back(d[static_cast<int64_t>(t) * columns + column]);
  return out;
}

}  // namespace p2dpo::pairs
