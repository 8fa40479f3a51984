#include "training/dataset.h"

#include <png.h>
#include <torch/torch.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace tcm {
namespace {

namespace fs = std::filesystem;

constexpr char kFashionMnistDir[] = "/usr/share/datasets/fashion-mnist";

// The whole file, gunzipped when it is gzip-compressed (gzread passes plain files through).
absl::StatusOr<std::string> ReadMaybeGzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::string out;
  char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof(buf))) > 0) out.append(buf, n);
  int err = 0;
  const char* msg = gzerror(f, &err);
  gzclose(f);
  if (n < 0 || err < 0) return absl::DataLossError(absl::StrCat(path, ": read failed: ", msg));
  return out;
}

struct IdxArray {
  std::vector<int64_t> dims;
  std::string data;  // uint8 payload
};

absl::StatusOr<IdxArray> ParseIdx(const std::string& path, const std::string& bytes) {
  if (bytes.size() < 4 || bytes[0] != 0 || bytes[1] != 0)
    return absl::InvalidArgumentError(absl::StrCat(path, ": not an IDX file (bad magic number)"));
  if (static_cast<uint8_t>(bytes[2]) != 0x08)
    return absl::InvalidArgumentError(absl::StrCat(path, ": IDX element type 0x", absl::Hex(uint8_t(bytes[2])),
                                                   " is not supported (only unsigned bytes, 0x08)"));
  IdxArray a;
  const int ndims = static_cast<uint8_t>(bytes[3]);
  if (bytes.size() < 4 + 4 * size_t(ndims)) return absl::InvalidArgumentError(absl::StrCat(path, ": truncated header"));
  int64_t count = 1;
  for (int d = 0; d < ndims; ++d) {
    const auto* p = reinterpret_cast<const uint8_t*>(bytes.data() + 4 + 4 * d);
    const int64_t dim = (int64_t(p[0]) << 24) | (int64_t(p[1]) << 16) | (int64_t(p[2]) << 8) | p[3];
    a.dims.push_back(dim);
    count *= dim;
  }
  const size_t offset = 4 + 4 * size_t(ndims);
  if (bytes.size() - offset != size_t(count))
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": header promises ", count, " bytes of data, file holds ", bytes.size() - offset));
  a.data = bytes.substr(offset);
  return a;
}

absl::StatusOr<IdxArray> ReadIdx(const std::string& path) {
  auto bytes = ReadMaybeGzip(path);
  if (!bytes.ok()) return bytes.status();
  return ParseIdx(path, *bytes);
}

torch::Tensor BytesToTensor(const std::string& data, std::vector<int64_t> shape) {
  return torch::from_blob(const_cast<char*>(data.data()), shape, torch::kUInt8).clone();
}

// Decodes one PNG to uint8 [C, H, W] with its own channel count.
absl::StatusOr<torch::Tensor> ReadPng(const std::string& path) {
  png_image image;
  std::memset(&image, 0, sizeof(image));
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&image, path.c_str()))
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", image.message));
  const bool colour = image.format & PNG_FORMAT_FLAG_COLOR;
  const bool alpha = image.format & PNG_FORMAT_FLAG_ALPHA;
  image.format = colour ? (alpha ? PNG_FORMAT_RGBA : PNG_FORMAT_RGB) : PNG_FORMAT_GRAY;
  const int64_t channels = PNG_IMAGE_PIXEL_CHANNELS(image.format);
  torch::Tensor hwc = torch::empty({int64_t(image.height), int64_t(image.width), channels}, torch::kUInt8);
  if (!png_image_finish_read(&image, nullptr, hwc.data_ptr<uint8_t>(), 0, nullptr)) {
    png_image_free(&image);
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", image.message));
  }
  return hwc.permute({2, 0, 1}).contiguous();
}

}  // namespace

const std::vector<std::string>& FashionMnistClassNames() {
  static const std::vector<std::string> names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                 "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return names;
}

absl::StatusOr<LabeledImages> ReadIdxDataset(const std::string& images_path, const std::string& labels_path) {
  auto images = ReadIdx(images_path);
  if (!images.ok()) return images.status();
  auto labels = ReadIdx(labels_path);
  if (!labels.ok()) return labels.status();
  const auto& d = images->dims;
  if (d.size() != 3 && d.size() != 4)
    return absl::InvalidArgumentError(
        absl::StrCat(images_path, ": images must have 3 ([N, H, W]) or 4 ([N, H, W, C]) dimensions, got ", d.size()));
  if (labels->dims.size() != 1 || labels->dims[0] != d[0])
    return absl::InvalidArgumentError(
        absl::StrCat(labels_path, ": expected ", d[0], " labels (one per image in ", images_path, ")"));
  LabeledImages out;
  const int64_t channels = d.size() == 4 ? d[3] : 1;
  out.images = BytesToTensor(images->data, {d[0], d[1], d[2], channels}).permute({0, 3, 1, 2}).contiguous();
  out.labels = BytesToTensor(labels->data, {d[0]}).to(torch::kInt64);
  const int64_t num_classes = d[0] > 0 ? out.labels.max().item<int64_t>() + 1 : 0;
  for (int64_t c = 0; c < num_classes; ++c) out.class_names.push_back(absl::StrCat(c));
  return out;
}

absl::StatusOr<LabeledImages> ReadImageFolder(const std::string& dir) {
  std::error_code ec;
  std::vector<fs::path> class_dirs;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (entry.is_directory()) class_dirs.push_back(entry.path());
  if (ec) return absl::NotFoundError(absl::StrCat(dir, ": ", ec.message()));
  std::sort(class_dirs.begin(), class_dirs.end());
  if (class_dirs.empty()) return absl::InvalidArgumentError(absl::StrCat(dir, ": no class sub-directories"));
  LabeledImages out;
  std::vector<torch::Tensor> images;
  std::vector<int64_t> labels;
  for (size_t c = 0; c < class_dirs.size(); ++c) {
    out.class_names.push_back(class_dirs[c].filename().string());
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(class_dirs[c]))
      if (entry.path().extension() == ".png") files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    for (const auto& file : files) {
      auto image = ReadPng(file.string());
      if (!image.ok()) return image.status();
      if (!images.empty() && image->sizes() != images.front().sizes())
        return absl::InvalidArgumentError(absl::StrCat(file.string(), ": shape ", image->size(0), "x", image->size(1),
                                                       "x", image->size(2), " differs from the first image's"));
      images.push_back(*image);
      labels.push_back(int64_t(c));
    }
  }
  if (images.empty()) return absl::InvalidArgumentError(absl::StrCat(dir, ": no .png images"));
  out.images = torch::stack(images);
  out.labels = torch::tensor(labels, torch::kInt64);
  return out;
}

absl::StatusOr<LabeledImages> LoadDataset(const std::string& spec, Split split) {
  if (spec == "fashion-mnist") {
    const std::string prefix = split == Split::kTrain ? "train" : "t10k";
    auto data = ReadIdxDataset(absl::StrCat(kFashionMnistDir, "/", prefix, "-images-idx3-ubyte.gz"),
                               absl::StrCat(kFashionMnistDir, "/", prefix, "-labels-idx1-ubyte.gz"));
    if (data.ok()) data->class_names = FashionMnistClassNames();
    return data;
  }
  if (absl::StartsWith(spec, "idx:")) {
    std::vector<std::string> parts = absl::StrSplit(spec.substr(4), ',');
    if (parts.size() != 2)
      return absl::InvalidArgumentError(absl::StrCat("--data: expected idx:IMAGES,LABELS, got \"", spec, "\""));
    return ReadIdxDataset(parts[0], parts[1]);
  }
  if (absl::StartsWith(spec, "folder:")) return ReadImageFolder(spec.substr(7));
  return absl::InvalidArgumentError(
      absl::StrCat("--data: unknown data set \"", spec, "\"; allowed: fashion-mnist, idx:IMAGES,LABELS, folder:DIR"));
}

absl::StatusOr<TrainValidation> HoldOutValidation(const LabeledImages& data, int64_t validation_count,
                                                  const std::string& flag) {
  const int64_t n = data.images.size(0);
  if (validation_count < 0 || validation_count >= n)
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": must be at least 0 and below the data's ", n, " images, got ", validation_count));
  const int64_t train = n - validation_count;
  TrainValidation split;
  split.train = {data.images.narrow(0, 0, train), data.labels.narrow(0, 0, train), data.class_names};
  split.validation = {data.images.narrow(0, train, validation_count), data.labels.narrow(0, train, validation_count),
                      data.class_names};
  return split;
}

absl::StatusOr<torch::Tensor> ToModelInput(const torch::Tensor& images, int64_t resolution) {
  const int64_t h = images.size(2), w = images.size(3);
  if (h > resolution || w > resolution)
    return absl::InvalidArgumentError(
        absl::StrCat("images are ", h, "x", w, ", larger than the model's resolution ", resolution));
  torch::Tensor x = images.to(torch::kFloat32).div_(127.5).sub_(1);
  const int64_t top = (resolution - h) / 2, left = (resolution - w) / 2;
  return torch::constant_pad_nd(x, {left, resolution - w - left, top, resolution - h - top}, -1.0);
}

}  // namespace tcm
