#pragma once
// A box in original-image pixels, x2/y2 exclusive (PIL's crop convention), shared by the crop,
// the views built from it and the records that store it.
namespace p2dpo::pairs {

struct PixelBox {
  int x1 = 0, y1 = 0, x2 = 0, y2 = 0;
  int width() const { return x2 - x1; }
  int height() const { return y2 - y1; }
  bool operator==(const PixelBox& o) const { return x1 == o.x1 && y1 == o.y1 && x2 == o.x2 && y2 == o.y2; }
};

}  // namespace p2dpo::pairs
