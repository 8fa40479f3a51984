// Tiling equally sized 8-bit images into one grid image. Torch-free.
#ifndef TCM_COMMON_IMAGE_GRID_H_
#define TCM_COMMON_IMAGE_GRID_H_

#include <cstdint>
#include <string>
#include <vector>

namespace tcm {

// The images (each row-major height x width x channels) laid out left to
// right, top to bottom, `columns` per row; cells past the last image are
// black. The grid is columns*width wide and ceil(n/columns)*height tall.
std::string TileImages(const std::vector<const uint8_t*>& images, int width, int height, int channels, int columns);

// The columns of a near-square grid of `n` images: ceil(sqrt(n)), 1 for n <= 1.
int SquareGridColumns(int n);

}  // namespace tcm

#endif  // TCM_COMMON_IMAGE_GRID_H_
