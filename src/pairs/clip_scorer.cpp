#include "pairs/clip_scorer.h"

#include <torch/types.h>
#include <torch/utils.h>

#include <filesystem>

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
  torch::NoGradGuard no_grad;
  if (images.empty()) return {};
  const auto& m = *impl_->model;
  std::vector<torch::Tensor> px;
  for (const auto& im : images) px.push_back(models::pixels_to_tensor(image::preprocess_clip(im, impl_->processor)));
  const auto batch = impl_->tokenizer->encode_batch({text}, static_cast<int>(m.config().text.max_position_embeddings));
  const auto L = static_cast<int64_t>(batch.length);
  const torch::Device dev = impl_->device;
  auto ids = torch::tensor(batch.input_ids, torch::kLong).view({1, L}).to(dev);
  auto mask = torch::tensor(batch.attention_mask, torch::kLong).view({1, L}).to(dev);
  auto score = m.clip_score(m.text_features(ids, mask), m.image_features(torch::stack(px).to(dev)))
                   .to(torch::kCPU, torch::kFloat64)
                   .contiguous();
  const double* d = score.data_ptr<double>();
  return std::vector<double>(d, d + score.size(1));
}

}  // namespace p2dpo::pairs
