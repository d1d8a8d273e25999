#pragma once
// The paper's Figure 1 look: the attention map over the image (the grid stretched over the whole
// image, as the adaptive crop reads it), the crop box in red and the inverse-crop box in blue.
#include <optional>

#include "image/image.h"
#include "pairs/box.h"
#include "pairs/crop.h"

namespace p2dpo::pairs {

image::ImageU8 attention_overlay(const image::ImageU8& img, const AttentionGrid& map, const PixelBox& crop,
                                 const std::optional<PixelBox>& inverse_crop = std::nullopt, double opacity = 0.5);

}  // namespace p2dpo::pairs
