#include "training/dataset.h"

#include <png.h>
#include <torch/torch.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "model/model_config.h"

namespace tcm {
namespace {

namespace fs = std::filesystem;

constexpr char kFashionMnistDir[] = "/usr/share/datasets/fashion-mnist";

struct IdxArray {
  std::vector<int64_t> dims;
  std::string data;  // uint8 payload
};

// Deflate compresses at most 1032:1: a gzip file of n bytes holds at most
// this many (and a raw file exactly n).
constexpr int64_t kMaxDeflateRatio = 1032;

// IDX data is read in chunks of this many bytes, the buffer growing only as
// data arrives (a gzip header can promise up to 1032 times its file's size).
constexpr int64_t kReadChunk = int64_t(16) << 20;

// Reads an IDX file, gzip-compressed or raw: its header first, then exactly
// the bytes its dimensions promise, checked against the file's size before
// anything is allocated (a header can promise far more than a file holds),
// and allocated as they arrive.
absl::StatusOr<IdxArray> ReadIdx(const std::string& path) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (ec || !fs::exists(status)) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  if (!fs::is_regular_file(status)) return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  const uintmax_t file_size = fs::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", ec.message()));
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  // Reads up to n bytes; fewer only at the end of the data.
  std::string read_error;
  const auto read = [&](char* into, int64_t n) -> int64_t {
    int64_t done = 0;
    while (done < n) {
      const int got = gzread(f, into + done, unsigned(std::min<int64_t>(n - done, 1 << 30)));
      if (got < 0) {
        int err = 0;
        read_error = gzerror(f, &err);
        return -1;
      }
      if (got == 0) break;
      done += got;
    }
    return done;
  };
  struct Closer {
    gzFile f;
    ~Closer() { gzclose(f); }
  } closer{f};
  unsigned char magic[4];
  const int64_t got = read(reinterpret_cast<char*>(magic), 4);
  if (got < 0) return absl::DataLossError(absl::StrCat(path, ": read failed: ", read_error));
  if (got < 4 || magic[0] != 0 || magic[1] != 0)
    return absl::InvalidArgumentError(absl::StrCat(path, ": not an IDX file (bad magic number)"));
  if (magic[2] != 0x08)
    return absl::InvalidArgumentError(absl::StrCat(path, ": IDX element type 0x", absl::Hex(magic[2]),
                                                   " is not supported (only unsigned bytes, 0x08)"));
  const int ndims = magic[3];
  std::string header(4 * size_t(ndims), '\0');
  const int64_t header_got = read(header.data(), int64_t(header.size()));
  if (header_got < 0) return absl::DataLossError(absl::StrCat(path, ": read failed: ", read_error));
  if (header_got < int64_t(header.size())) return absl::InvalidArgumentError(absl::StrCat(path, ": truncated header"));
  IdxArray a;
  int64_t count = 1;
  bool overflow = false;
  for (int d = 0; d < ndims; ++d) {
    const auto* p = reinterpret_cast<const uint8_t*>(header.data() + 4 * d);
    const int64_t dim = (int64_t(p[0]) << 24) | (int64_t(p[1]) << 16) | (int64_t(p[2]) << 8) | p[3];
    a.dims.push_back(dim);
    overflow = overflow || __builtin_mul_overflow(count, dim, &count);
  }
  const int64_t offset = 4 + 4 * int64_t(ndims);
  const bool raw = gzdirect(f) == 1;
  const int64_t held = int64_t(file_size) - offset;  // raw: the data's bytes
  const auto dims_text = [&] { return absl::StrJoin(a.dims, "x"); };
  if (overflow)
    return absl::InvalidArgumentError(absl::StrCat(path, ": header's dimensions ", dims_text(),
                                                   " promise more bytes of data than 2^63, file holds ",
                                                   raw ? held : int64_t(file_size)));
  if (raw && count != held)
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": header promises ", count, " bytes of data, file holds ", held));
  if (!raw && count / kMaxDeflateRatio > int64_t(file_size))
    return absl::InvalidArgumentError(absl::StrCat(path, ": header promises ", count,
                                                   " bytes of data, more than the compressed file of ", file_size,
                                                   " bytes can hold"));
  int64_t data_got = 0;
  if (raw) a.data.reserve(size_t(count));  // its size is checked against the file's: allocated once
  while (data_got < count) {
    const int64_t want = std::min(count - data_got, kReadChunk);
    a.data.resize(size_t(data_got + want));
    const int64_t got = read(a.data.data() + data_got, want);
    if (got < 0) return absl::DataLossError(absl::StrCat(path, ": read failed: ", read_error));
    data_got += got;
    if (got < want) break;  // the end of the data
  }
  a.data.resize(size_t(data_got));
  char extra;
  const int64_t more = data_got == count ? read(&extra, 1) : 0;
  if (more < 0) return absl::DataLossError(absl::StrCat(path, ": read failed: ", read_error));
  if (data_got != count || more > 0)
    return absl::InvalidArgumentError(absl::StrCat(path, ": header promises ", count, " bytes of data, file holds ",
                                                   more > 0 ? "more" : absl::StrCat(data_got)));
  return a;
}

torch::Tensor BytesToTensor(const std::string& data, std::vector<int64_t> shape) {
  return torch::from_blob(const_cast<char*>(data.data()), shape, torch::kUInt8).clone();
}

// Decodes one PNG to uint8 [C, H, W] with its own channel count. Refuses,
// from its header, one wider or taller than the largest model resolution.
absl::StatusOr<torch::Tensor> ReadPng(const std::string& path) {
  png_image image;
  std::memset(&image, 0, sizeof(image));
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&image, path.c_str()))
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", image.message));
  constexpr uint32_t kMaxSide = ConfigLimits::kMaxResolution;
  if (image.width > kMaxSide || image.height > kMaxSide) {
    png_image_free(&image);
    return absl::InvalidArgumentError(absl::StrCat(path, ": PNG is ", image.width, "x", image.height,
                                                   " (width x height); each must be at most ", kMaxSide,
                                                   ", the largest model resolution"));
  }
  const bool colour = image.format & PNG_FORMAT_FLAG_COLOR;
  const bool alpha = image.format & PNG_FORMAT_FLAG_ALPHA;
  image.format = colour ? (alpha ? PNG_FORMAT_RGBA : PNG_FORMAT_RGB) : PNG_FORMAT_GRAY;
  // 16-bit samples are taken as sRGB-encoded, as 8-bit ones are (not linear).
  image.flags |= PNG_IMAGE_FLAG_16BIT_sRGB;
  const int64_t channels = PNG_IMAGE_PIXEL_CHANNELS(image.format);
  // Grey with transparency is composed onto this buffer: black.
  torch::Tensor hwc = torch::zeros({int64_t(image.height), int64_t(image.width), channels}, torch::kUInt8);
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
  if (d[0] == 0) return absl::InvalidArgumentError(absl::StrCat(images_path, ": holds no images"));
  if (labels->dims.size() != 1 || labels->dims[0] != d[0])
    return absl::InvalidArgumentError(
        absl::StrCat(labels_path, ": expected ", d[0], " labels (one per image in ", images_path, ")"));
  const int64_t channels = d.size() == 4 ? d[3] : 1;
  if (d[1] < 1 || d[2] < 1 || channels < 1)
    return absl::InvalidArgumentError(absl::StrCat(
        images_path, ": images must have at least 1x1 pixels and 1 channel, got ", d[1], "x", d[2], "x", channels));
  LabeledImages out;
  out.images = BytesToTensor(images->data, {d[0], d[1], d[2], channels}).permute({0, 3, 1, 2}).contiguous();
  out.labels = BytesToTensor(labels->data, {d[0]}).to(torch::kInt64);
  const int64_t num_classes = out.labels.max().item<int64_t>() + 1;
  for (int64_t c = 0; c < num_classes; ++c) out.class_names.push_back(absl::StrCat(c));
  return out;
}

absl::StatusOr<ImageFolderListing> ListImageFolder(const std::string& dir) {
  std::error_code ec;
  std::vector<fs::path> class_dirs;
  // Hidden sub-directories (".ipynb_checkpoints") are no classes.
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (entry.is_directory() && !absl::StartsWith(entry.path().filename().string(), "."))
      class_dirs.push_back(entry.path());
  if (ec) return absl::NotFoundError(absl::StrCat(dir, ": ", ec.message()));
  std::sort(class_dirs.begin(), class_dirs.end());
  if (class_dirs.empty())
    return absl::InvalidArgumentError(absl::StrCat(dir, ": no class sub-directories (hidden ones are skipped)"));
  ImageFolderListing listing;
  listing.files.resize(class_dirs.size());
  for (size_t c = 0; c < class_dirs.size(); ++c) {
    listing.class_names.push_back(class_dirs[c].filename().string());
    // Every *.png (any case) is listed, and must be a regular file once links
    // are followed, before any is opened: opening a FIFO would block forever.
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(class_dirs[c], ec)) {
      const std::string name = entry.path().filename().string();
      // Hidden files are skipped too ("._x.png", the resource forks macOS copies beside each file).
      if (absl::StartsWith(name, ".") || !absl::EqualsIgnoreCase(entry.path().extension().string(), ".png")) continue;
      std::error_code status_ec;  // a dangling link reads as not found
      if (!fs::is_regular_file(fs::status(entry.path(), status_ec)))
        return absl::InvalidArgumentError(absl::StrCat(entry.path().string(), ": not a regular file"));
      files.push_back(entry.path());
    }
    if (ec) return absl::NotFoundError(absl::StrCat(class_dirs[c].string(), ": ", ec.message()));
    if (files.empty())
      return absl::InvalidArgumentError(
          absl::StrCat(class_dirs[c].string(), ": no .png images; every class folder needs at least one"));
    std::sort(files.begin(), files.end());
    for (const fs::path& file : files) listing.files[c].push_back(file.string());
  }
  return listing;
}

absl::StatusOr<LabeledImages> ReadImageFolder(const std::string& dir) {
  absl::StatusOr<ImageFolderListing> listing = ListImageFolder(dir);
  if (!listing.ok()) return listing.status();
  const std::vector<std::vector<std::string>>& files = listing->files;
  LabeledImages out;
  out.class_names = listing->class_names;
  std::vector<torch::Tensor> images;
  std::vector<int64_t> labels;
  for (size_t i = 0, left = 1; left > 0; ++i) {  // image i of every class in turn
    left = 0;
    for (size_t c = 0; c < files.size(); ++c) {
      if (i >= files[c].size()) continue;
      ++left;
      const std::string& file = files[c][i];
      auto image = ReadPng(file);
      if (!image.ok()) return image.status();
      if (!images.empty() && image->sizes() != images.front().sizes())
        return absl::InvalidArgumentError(absl::StrCat(file, ": shape ", image->size(0), "x", image->size(1), "x",
                                                       image->size(2), " differs from the first image's"));
      images.push_back(*image);
      labels.push_back(int64_t(c));
    }
  }
  out.images = torch::stack(images);
  out.labels = torch::tensor(labels, torch::kInt64);
  return out;
}

namespace {

std::vector<std::string> FashionMnistFiles(Split split) {
  const std::string prefix = absl::StrCat(kFashionMnistDir, "/", split == Split::kTrain ? "train" : "t10k");
  return {prefix + "-images-idx3-ubyte.gz", prefix + "-labels-idx1-ubyte.gz"};
}

}  // namespace

std::vector<std::string> DataSetFiles(const std::string& spec) {
  if (spec == "fashion-mnist") return FashionMnistFiles(Split::kTrain);
  if (absl::StartsWith(spec, "idx:")) return absl::StrSplit(spec.substr(4), ',');
  if (absl::StartsWith(spec, "folder:")) {
    absl::StatusOr<ImageFolderListing> listing = ListImageFolder(spec.substr(7));
    std::vector<std::string> all;
    if (listing.ok())
      for (const std::vector<std::string>& class_files : listing->files)
        all.insert(all.end(), class_files.begin(), class_files.end());
    return all;
  }
  return {};
}

absl::StatusOr<LabeledImages> LoadDataset(const std::string& spec, Split split) {
  if (spec == "fashion-mnist") {
    const std::vector<std::string> files = FashionMnistFiles(split);
    auto data = ReadIdxDataset(files[0], files[1]);
    if (data.ok()) data->class_names = FashionMnistClassNames();
    return data;
  }
  if (absl::StartsWith(spec, "idx:")) {
    const std::vector<std::string> parts = DataSetFiles(spec);
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
  if (n > 0) {
    const torch::Tensor all_counts = torch::bincount(data.labels);
    const torch::Tensor train_counts = torch::bincount(data.labels.narrow(0, 0, train), {}, all_counts.size(0));
    for (int64_t c = 0; c < all_counts.size(0); ++c)
      if (all_counts[c].item<int64_t>() > 0 && train_counts[c].item<int64_t>() == 0)
        return absl::InvalidArgumentError(absl::StrCat(
            flag, ": holding out the last ", validation_count, " images leaves class ",
            c < int64_t(data.class_names.size()) ? absl::StrCat("\"", data.class_names[c], "\"") : absl::StrCat(c),
            " no image to train on; hold out fewer"));
  }
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
