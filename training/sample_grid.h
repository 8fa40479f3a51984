// A PNG grid of samples: one row per class, `columns` seeds per row.
#ifndef TCM_TRAINING_SAMPLE_GRID_H_
#define TCM_TRAINING_SAMPLE_GRID_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "model/denoiser.h"

namespace tcm {

// Samples rows x columns images at `steps` (1 or 2) with request seed `seed`
// (row = class label, for at most 10 classes; one row when unconditional) and
// writes them as one PNG at `path`.
absl::Status WriteSampleGrid(Denoiser& model, int steps, int columns, uint64_t seed, const std::string& path);

// A model directory's grids: DIR/samples-<steps>step.png for each of
// `step_counts`, 10 columns, seed 0 (what tcm-train writes beside a model).
absl::Status WriteModelSampleGrids(Denoiser& model, const std::vector<int>& step_counts, const std::string& dir);

}  // namespace tcm

#endif  // TCM_TRAINING_SAMPLE_GRID_H_
