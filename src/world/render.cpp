#include "world/render.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <utility>

#include "world/random.h"

namespace p2dpo::world {
namespace {

// Shapes are polygons in a unit box of kUnit x kUnit (y down) that touch all four sides, so the
// object's box is exactly its extent. Coordinates are scaled to 1/8 pixel: samples sit at odd
// eighths (1/8, 3/8, 5/8, 7/8 of a pixel), never on an integer-aligned edge.
constexpr int64_t kUnit = 4096;
constexpr int kEighths = 8;

using Vertex = std::array<int64_t, 2>;

const std::vector<Vertex>& polygon_of(ShapeKind kind) {
  static const std::vector<Vertex> square = {{0, 0}, {kUnit, 0}, {kUnit, kUnit}, {0, kUnit}};
  static const std::vector<Vertex> triangle = {{2048, 0}, {kUnit, kUnit}, {0, kUnit}};
  // Regular five-pointed star (inner/outer radius 0.382), point up, stretched to fill the box.
  static const std::vector<Vertex> star = {{2048, 0},    {2531, 1565}, {4096, 1565}, {2830, 2531}, {3314, 4096},
                                           {2048, 3129}, {782, 4096},  {1266, 2531}, {0, 1565},    {1565, 1565}};
  static const std::vector<Vertex> diamond = {{2048, 0}, {kUnit, 2048}, {2048, kUnit}, {0, 2048}};
  static const std::vector<Vertex> cross = {{1365, 0},    {2731, 0},    {2731, 1365}, {4096, 1365},
                                            {4096, 2731}, {2731, 2731}, {2731, 4096}, {1365, 4096},
                                            {1365, 2731}, {0, 2731},    {0, 1365},    {1365, 1365}};
  // Regular hexagon with flat top and bottom, stretched to fill the box.
  static const std::vector<Vertex> hexagon = {{4096, 2048}, {3072, 4096}, {1024, 4096},
                                              {0, 2048},    {1024, 0},    {3072, 0}};
  switch (kind) {
    case ShapeKind::Square: return square;
    case ShapeKind::Triangle: return triangle;
    case ShapeKind::Star: return star;
    case ShapeKind::Diamond: return diamond;
    case ShapeKind::Cross: return cross;
    case ShapeKind::Hexagon: return hexagon;
    case ShapeKind::Circle: break;
  }
  return square;  // circles are not polygons; callers handle them
}

int64_t isqrt(int64_t v) {
  if (v <= 0) return 0;
  // sqrt of a double is correctly rounded (IEEE 754), then corrected to the exact floor.
  auto r = static_cast<int64_t>(std::sqrt(static_cast<double>(v)));
  while (r * r > v) --r;
  while ((r + 1) * (r + 1) <= v) ++r;
  return r;
}

// Half-open spans [x_begin, x_end) (in eighths) of the shape on the sample row y (in eighths).
void row_spans(ShapeKind kind, const std::vector<Vertex>& poly, int64_t extent, int64_t y,
               std::vector<int64_t>& crossings) {
  crossings.clear();
  if (kind == ShapeKind::Circle) {
    const int64_t c = extent / 2, dy = y - c, r2 = c * c;
    if (dy * dy > r2) return;
    const int64_t hw = isqrt(r2 - dy * dy);
    crossings.push_back(c - hw);
    crossings.push_back(c + hw + 1);
    return;
  }
  const size_t n = poly.size();
  for (size_t i = 0; i < n; ++i) {
    const Vertex& a = poly[i];
    const Vertex& b = poly[(i + 1) % n];
    const int64_t ax = a[0] * extent / kUnit, ay = a[1] * extent / kUnit;
    const int64_t bx = b[0] * extent / kUnit, by = b[1] * extent / kUnit;
    if ((ay <= y) == (by <= y)) continue;  // half-open in y: a vertex on the row counts once
    crossings.push_back(ax + (y - ay) * (bx - ax) / (by - ay));
  }
  std::sort(crossings.begin(), crossings.end());  // even-odd rule: pairs are inside spans
}

uint8_t clamp_u8(int v) { return static_cast<uint8_t>(std::clamp(v, 0, 255)); }

}  // namespace

std::vector<uint8_t> shape_coverage(ShapeKind kind, int side) {
  std::vector<uint8_t> cov(static_cast<size_t>(side) * side, 0);
  const int64_t extent = static_cast<int64_t>(side) * kEighths;
  const auto& poly = polygon_of(kind);
  std::vector<int64_t> crossings;
  for (int py = 0; py < side; ++py) {
    uint8_t* row = cov.data() + static_cast<size_t>(py) * side;
    for (int sy = 0; sy < kSubsamples; ++sy) {
      const int64_t y = static_cast<int64_t>(py) * kEighths + 2 * sy + 1;
      row_spans(kind, poly, extent, y, crossings);
      for (size_t k = 0; k + 1 < crossings.size(); k += 2) {
        const int64_t begin = crossings[k], end = crossings[k + 1];
        // Sample columns x = 8 px + 2 sx + 1 with begin <= x < end.
        const int px_first = static_cast<int>(std::max<int64_t>(0, begin / kEighths - 1));
        const int px_last = static_cast<int>(std::min<int64_t>(side - 1, end / kEighths + 1));
        for (int px = px_first; px <= px_last; ++px)
          for (int sx = 0; sx < kSubsamples; ++sx) {
            const int64_t x = static_cast<int64_t>(px) * kEighths + 2 * sx + 1;
            if (x >= begin && x < end) ++row[px];
          }
      }
    }
  }
  return cov;
}

image::ImageU8 render_background(const Scene& scene) {
  const Background& bg = scene.background;
  const int W = scene.width, H = scene.height;
  image::ImageU8 img(W, H);

  // Noise lattice: corner values in [-A, A], bilinearly interpolated between corners.
  const int P = std::max(1, bg.texture_period), A = bg.texture_amplitude;
  const int lattice_w = W / P + 2, lattice_h = H / P + 2;
  std::vector<int> lattice;
  if (bg.texture == Texture::Noise) {
    lattice.resize(static_cast<size_t>(lattice_w) * lattice_h);
    for (size_t i = 0; i < lattice.size(); ++i)
      lattice[i] = static_cast<int>(mix64(bg.texture_seed + i) % static_cast<uint64_t>(2 * A + 1)) - A;
  }
  const int64_t diag_span = std::max(1, W + H - 2);
  for (int y = 0; y < H; ++y) {
    for (int x = 0; x < W; ++x) {
      int64_t t = 0;  // gradient position 0..1024
      switch (bg.gradient) {
        case Gradient::Horizontal: t = W > 1 ? int64_t{x} * 1024 / (W - 1) : 0; break;
        case Gradient::Vertical: t = H > 1 ? int64_t{y} * 1024 / (H - 1) : 0; break;
        case Gradient::Diagonal: t = int64_t{x + y} * 1024 / diag_span; break;
        case Gradient::AntiDiagonal: t = int64_t{W - 1 - x + y} * 1024 / diag_span; break;
      }
      int offset = 0;
      switch (bg.texture) {
        case Texture::None: break;
        case Texture::Noise: {
          const int i = x / P, j = y / P, fx = x % P, fy = y % P;
          const int v00 = lattice[static_cast<size_t>(j) * lattice_w + i];
          const int v10 = lattice[static_cast<size_t>(j) * lattice_w + i + 1];
          const int v01 = lattice[static_cast<size_t>(j + 1) * lattice_w + i];
          const int v11 = lattice[static_cast<size_t>(j + 1) * lattice_w + i + 1];
          offset = (v00 * (P - fx) * (P - fy) + v10 * fx * (P - fy) + v01 * (P - fx) * fy + v11 * fx * fy) / (P * P);
          break;
        }
        case Texture::Stripes: {
          const int coord = bg.stripe_orientation == 0 ? x : bg.stripe_orientation == 1 ? y : x + y;
          const int triangle = std::abs(2 * (coord % P) - P);  // 0..P
          offset = 2 * A * triangle / P - A;
          break;
        }
        case Texture::Checker: offset = ((x / P + y / P) & 1) ? A : -A; break;
      }
      uint8_t* px = img.at(x, y);
      for (int c = 0; c < 3; ++c) {
        const int base = bg.color0[c] + static_cast<int>((bg.color1[c] - bg.color0[c]) * t / 1024);
        px[c] = clamp_u8(base + offset);
      }
    }
  }
  return img;
}

image::ImageU8 render_scene(const Scene& scene, const Vocabulary& vocab) {
  image::ImageU8 img = render_background(scene);
  constexpr int full = kSubsamples * kSubsamples;
  for (const Object& o : scene.objects) {
    const int side = o.side();
    const auto cov = shape_coverage(vocab.shape_kinds[o.shape], side);
    for (int py = 0; py < side; ++py)
      for (int px = 0; px < side; ++px) {
        const int c = cov[static_cast<size_t>(py) * side + px];
        if (c == 0) continue;
        const int x = o.x0 + px, y = o.y0 + py;
        if (x < 0 || y < 0 || x >= img.width || y >= img.height) continue;
        uint8_t* p = img.at(x, y);
        for (int ch = 0; ch < 3; ++ch) p[ch] = static_cast<uint8_t>((p[ch] * (full - c) + o.rgb[ch] * c + full / 2) / full);
      }
  }
  return img;
}

uint64_t pixel_hash(const image::ImageU8& img) { return fnv1a64(img.rgb.data(), img.rgb.size()); }

}  // namespace p2dpo::world
