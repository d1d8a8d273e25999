#pragma once
// Integer-only rasteriser for scenes: same pixels on every machine and compiler.
#include <cstdint>
#include <vector>

#include "image/image.h"
#include "world/scene.h"

namespace p2dpo::world {

// Samples per pixel along each axis; a pixel's coverage is the share of its 4 x 4 samples inside
// the shape, and its colour mixes object and background in that proportion (anti-aliasing).
inline constexpr int kSubsamples = 4;

image::ImageU8 render_background(const Scene& scene);
image::ImageU8 render_scene(const Scene& scene, const Vocabulary& vocab);

// Coverage (0..16) of each pixel of the object's box, row-major, side x side.
std::vector<uint8_t> shape_coverage(ShapeKind kind, int side);

// FNV-1a 64 of the RGB bytes: identifies the pixels independently of how the PNG was compressed.
uint64_t pixel_hash(const image::ImageU8& img);

}  // namespace p2dpo::world
