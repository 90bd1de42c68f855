// SPDX-License-Identifier: Apache-2.0
// An RGB raster with the few drawing operations a line chart needs, and its encoding as
// a PNG file (8-bit truecolour, zlib-compressed, optional tEXt chunks), so that the CLI
// draws charts with no Python, plotting library or image library at run time.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace estimator::service {

struct Rgb {
  std::uint8_t r = 0, g = 0, b = 0;
};

class RgbImage {
 public:
  // Filled with `background`.
  RgbImage(int width, int height, Rgb background);

  int width() const { return width_; }
  int height() const { return height_; }
  // Out-of-bounds pixels are ignored, so callers may draw lines that leave the canvas.
  void set(int x, int y, Rgb c);
  Rgb at(int x, int y) const;
  // A one-pixel line from (x0, y0) to (x1, y1), both ends included (Bresenham).
  void line(int x0, int y0, int x1, int y1, Rgb c);
  // The rectangle [x, x + w) x [y, y + h), clipped.
  void fill(int x, int y, int w, int h, Rgb c);

  const std::vector<std::uint8_t>& pixels() const { return pixels_; }  // row-major RGB

 private:
  int width_, height_;
  std::vector<std::uint8_t> pixels_;
};

// The PNG file of `image`, with `text` as tEXt chunks (keyword, Latin-1 text; keywords of
// 1-79 printable characters as the PNG specification requires, else kInvalidArgument).
Result<std::string> encode_png(const RgbImage& image,
                               const std::vector<std::pair<std::string, std::string>>& text = {});

}  // namespace estimator::service
