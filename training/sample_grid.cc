#include "training/sample_grid.h"

#include <torch/torch.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/image_grid.h"
#include "common/png_encoder.h"
#include "common/write_file.h"
#include "model/sampler.h"

namespace tcm {

absl::Status WriteSampleGrid(Denoiser& model, int steps, int columns, uint64_t seed, const std::string& path) {
  const auto& c = model.config();
  const int rows = c.num_classes() > 0 ? std::min<int>(int(c.num_classes()), 10) : 1;
  std::vector<ImageSpec> specs;
  for (int r = 0; r < rows; ++r)
    for (int col = 0; col < columns; ++col)
      specs.push_back({seed, uint64_t(r * columns + col), c.num_classes() > 0 ? r : -1, steps});
  torch::Tensor pixels;
  {
    torch::InferenceMode inference;
    pixels = ToPixels(SampleImages(model, specs));  // [N, H, W, C]
  }
  const int64_t h = pixels.size(1), w = pixels.size(2), ch = pixels.size(3);
  std::vector<const uint8_t*> images;
  for (int64_t i = 0; i < pixels.size(0); ++i) images.push_back(pixels.data_ptr<uint8_t>() + i * h * w * ch);
  const std::string grid = TileImages(images, int(w), int(h), int(ch), columns);
  auto png = EncodePng(reinterpret_cast<const uint8_t*>(grid.data()), int(columns * w), int(rows * h), int(ch),
                       /*fast=*/false);
  if (!png.ok()) return png.status();
  return WriteFileAtomically(path, *png);
}

absl::Status WriteModelSampleGrids(Denoiser& model, const std::vector<int>& step_counts, const std::string& dir) {
  for (int steps : step_counts) {
    absl::Status written =
        WriteSampleGrid(model, steps, /*columns=*/10, /*seed=*/0, absl::StrCat(dir, "/samples-", steps, "step.png"));
    if (!written.ok()) return written;
  }
  return absl::OkStatus();
}

}  // namespace tcm
