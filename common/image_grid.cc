#include "common/image_grid.h"

#include <algorithm>

namespace tcm {

std::string TileImages(const std::vector<const uint8_t*>& images, int width, int height, int channels, int columns) {
  const int n = static_cast<int>(images.size());
  const int rows = (n + columns - 1) / columns;
  const size_t row_bytes = static_cast<size_t>(width) * channels;
  const size_t grid_row_bytes = row_bytes * columns;
  std::string grid(grid_row_bytes * height * rows, '\0');
  for (int i = 0; i < n; ++i) {
    const size_t x0 = (i % columns) * row_bytes, y0 = static_cast<size_t>(i / columns) * height;
    for (int y = 0; y < height; ++y)
      std::copy_n(images[i] + y * row_bytes, row_bytes, grid.data() + (y0 + y) * grid_row_bytes + x0);
  }
  return grid;
}

int SquareGridColumns(int n) {
  int columns = 1;
  while (columns * columns < n) ++columns;
  return columns;
}

}  // namespace tcm
