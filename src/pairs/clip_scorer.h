#pragma once
// CLIPScore for dynamic deficit weighting: 100 * max(cos(E_img, E_text), 0) with an HF CLIPModel
// checkpoint (method.md §6: the prompt is the raw question, truncated to the text tower's length).
#include <memory>
#include <string>
#include <vector>

#include "image/image.h"

namespace p2dpo::pairs {

class ClipScorer {
 public:
  // `device`: "cpu", "cuda" or "cuda:N" (the scorer runs where the model it serves runs).
  static std::unique_ptr<ClipScorer> load(const std::string& dir, const std::string& device = "cpu");
  ~ClipScorer();
  // One score per image, all against `text`.
  std::vector<double> scores(const std::string& text, const std::vector<image::ImageU8>& images) const;
  // scores() for several texts, each with its own images, in one text-tower and one image-tower
  // call (padded texts: the same scores to float rounding). One list per text.
  std::vector<std::vector<double>> scores_each(const std::vector<std::string>& texts,
                                               const std::vector<std::vector<image::ImageU8>>& images) const;

 private:
  ClipScorer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace p2dpo::pairs
