// Labelled image data sets for training and evaluation.
//
// A data set is named by a spec string:
//   fashion-mnist            Debian's dataset-fashion-mnist package (IDX files)
//   idx:IMAGES,LABELS        any IDX pair (gzip or raw): uint8 [N, H, W] or
//                            [N, H, W, C] images and uint8 [N] labels
//   folder:DIR               DIR/<class name>/*.png, classes in sorted order,
//                            images taken from the classes in turn (so the
//                            last images, held out, come from every class
//                            that has images left)
// Images are held as uint8 [N, C, H, W]; the trainer pads and scales them. A
// data set of no images is refused where it is read, naming its file.
#ifndef TCM_TRAINING_DATASET_H_
#define TCM_TRAINING_DATASET_H_

#include <torch/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tcm {

struct LabeledImages {
  torch::Tensor images;                  // uint8 [N, C, H, W]
  torch::Tensor labels;                  // int64 [N]
  std::vector<std::string> class_names;  // one per class
};

enum class Split { kTrain, kTest };

// Loads the data set named by `spec` (see above). `split` selects the train or
// test files of fashion-mnist; the other kinds have one split and ignore it.
absl::StatusOr<LabeledImages> LoadDataset(const std::string& spec, Split split);

// The files whose contents make the training split of `spec`: fashion-mnist's
// two, idx:'s as named (split on commas), folder:'s PNGs in the order
// ListImageFolder gives (none for a folder it refuses); none for another spec.
std::vector<std::string> DataSetFiles(const std::string& spec);

// Reads an IDX image file and its label file (either may be gzip-compressed);
// refuses an image file of no images.
absl::StatusOr<LabeledImages> ReadIdxDataset(const std::string& images_path, const std::string& labels_path);

// The classes of DIR and each one's PNG files (sorted), by ReadImageFolder's
// rules, opening no file: refuses a DIR that cannot be listed or has no class
// folder, a class folder of no PNG and a *.png that is not a regular file.
struct ImageFolderListing {
  std::vector<std::string> class_names;
  std::vector<std::vector<std::string>> files;  // one list per class
};
absl::StatusOr<ImageFolderListing> ListImageFolder(const std::string& dir);

// Reads DIR/<class>/*.png (grey, RGB or RGBA, decoded to 8 bits; grey with
// transparency composed over black; every image the same size), one image of
// each class in turn while a class has images left. Sub-directories whose
// name starts with '.' are no classes; ".png" matches in any case. Refused: a
// class folder of no PNG, a *.png that is not a regular file (links
// followed), a PNG wider or taller than ConfigLimits::kMaxResolution.
absl::StatusOr<LabeledImages> ReadImageFolder(const std::string& dir);

// A data set split in two: its last `validation_count` images held out of
// training (for choosing sampling settings), the rest for training.
struct TrainValidation {
  LabeledImages train;
  LabeledImages validation;  // empty tensors when validation_count is 0
};

// InvalidArgument naming `flag` unless 0 <= validation_count < the data's size
// and every class with images keeps at least one for training.
absl::StatusOr<TrainValidation> HoldOutValidation(const LabeledImages& data, int64_t validation_count,
                                                  const std::string& flag);

// uint8 [N, C, h, w] -> float32 [N, C, resolution, resolution] in [-1, 1],
// centred and padded with -1 (black). Fails if the images are larger.
absl::StatusOr<torch::Tensor> ToModelInput(const torch::Tensor& images, int64_t resolution);

// The ten Fashion-MNIST class names, by label.
const std::vector<std::string>& FashionMnistClassNames();

}  // namespace tcm

#endif  // TCM_TRAINING_DATASET_H_
