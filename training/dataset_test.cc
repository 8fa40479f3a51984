#include "training/dataset.h"

#include <gtest/gtest.h>
#include <png.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <torch/torch.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/png_encoder.h"

namespace tcm {
namespace {

namespace fs = std::filesystem;

class DatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tcm_dataset_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& bytes) {
    const fs::path p = dir_ / name;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << bytes;
    return p.string();
  }
  std::string Gzip(const std::string& name, const std::string& bytes) {
    const std::string path = (dir_ / name).string();
    gzFile f = gzopen(path.c_str(), "wb");
    gzwrite(f, bytes.data(), unsigned(bytes.size()));
    gzclose(f);
    return path;
  }
  // A grey PNG of width x height pixels, all of `value`.
  std::string WriteGrey(const std::string& name, int width, int height, uint8_t value = 0) {
    const std::vector<uint8_t> pixels(size_t(width) * size_t(height), value);
    auto png = EncodePng(pixels.data(), width, height, 1);
    EXPECT_TRUE(png.ok()) << png.status();
    return Write(name, png.ok() ? *png : "");
  }
  fs::path dir_;
};

std::string IdxHeader(std::vector<uint32_t> dims) {
  std::string h = {0, 0, 8, char(dims.size())};
  for (uint32_t d : dims) h += {char(d >> 24), char(d >> 16), char(d >> 8), char(d)};
  return h;
}

// A 16-bit grey PNG of one row, without a gAMA or sRGB chunk.
std::string Grey16Png(const std::vector<uint16_t>& row) {
  std::string bytes;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  png_set_write_fn(
      png, &bytes,
      [](png_structp p, png_bytep data, png_size_t n) {
        static_cast<std::string*>(png_get_io_ptr(p))->append(reinterpret_cast<const char*>(data), n);
      },
      nullptr);
  png_set_IHDR(png, info, uint32_t(row.size()), 1, 16, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  std::vector<png_byte> big_endian;
  for (uint16_t v : row) big_endian.insert(big_endian.end(), {png_byte(v >> 8), png_byte(v & 0xff)});
  png_write_row(png, big_endian.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return bytes;
}

TEST(FashionMnistTest, LoadsBothSplitsWithClassNames) {
  auto train = LoadDataset("fashion-mnist", Split::kTrain);
  ASSERT_TRUE(train.ok()) << train.status();
  EXPECT_EQ(train->images.sizes(), torch::IntArrayRef({60000, 1, 28, 28}));
  EXPECT_EQ(train->images.scalar_type(), torch::kUInt8);
  EXPECT_EQ(train->labels.min().item<int64_t>(), 0);
  EXPECT_EQ(train->labels.max().item<int64_t>(), 9);
  EXPECT_EQ(train->class_names.size(), 10u);
  EXPECT_EQ(train->class_names[9], "Ankle boot");
  auto test = LoadDataset("fashion-mnist", Split::kTest);
  ASSERT_TRUE(test.ok());
  EXPECT_EQ(test->images.size(0), 10000);
}

TEST_F(DatasetTest, ReadsRawIdxAndNamesProblems) {
  std::string pixels(2 * 3 * 4, '\0');
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = char(i * 10);
  const std::string images = Write("img.idx", IdxHeader({2, 3, 4}) + pixels);
  const std::string labels = Write("lab.idx", IdxHeader({2}) + std::string{1, 0});
  auto data = ReadIdxDataset(images, labels);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->images.sizes(), torch::IntArrayRef({2, 1, 3, 4}));
  EXPECT_EQ(data->images[1][0][2][3].item<int>(), 230);
  EXPECT_EQ(data->labels[0].item<int64_t>(), 1);
  EXPECT_EQ(data->class_names.size(), 2u);

  const std::string short_labels = Write("short.idx", IdxHeader({3}) + std::string(3, '\0'));
  auto mismatch = ReadIdxDataset(images, short_labels);
  ASSERT_FALSE(mismatch.ok());
  EXPECT_NE(mismatch.status().message().find("expected 2 labels"), std::string::npos) << mismatch.status();
  auto truncated = ReadIdxDataset(Write("trunc.idx", IdxHeader({2, 3, 4}) + "abc"), labels);
  ASSERT_FALSE(truncated.ok());
  EXPECT_NE(truncated.status().message().find("header promises 24 bytes of data, file holds 3"), std::string::npos);
  auto missing = ReadIdxDataset((dir_ / "nope.idx").string(), labels);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

// Sizes come from the header with overflow checks and are compared with the
// file's real size before anything is allocated; only regular files are read.
TEST_F(DatasetTest, IdxSizesAreCheckedAgainstTheFileBeforeReading) {
  const std::string labels = Write("lab.idx", IdxHeader({1}) + std::string(1, '\0'));
  const auto message = [&](const std::string& images) {
    auto data = ReadIdxDataset(images, labels);
    EXPECT_FALSE(data.ok());
    EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument) << data.status();
    return std::string(data.status().message());
  };
  const std::string overflow = Write("overflow.idx", IdxHeader({1, 65536, 1u << 24, 1u << 24}));
  EXPECT_EQ(message(overflow), overflow +
                                   ": header's dimensions 1x65536x16777216x16777216 promise more bytes of "
                                   "data than 2^63, file holds 0");
  const std::string big = Write("big.idx", IdxHeader({0xffffffffu, 0xffffffffu, 2}));
  EXPECT_EQ(message(big), big +
                              ": header's dimensions 4294967295x4294967295x2 promise more bytes of data than "
                              "2^63, file holds 0");
  const std::string large = Write("large.idx", IdxHeader({65536, 65536, 65536}) + "abc");
  EXPECT_EQ(message(large), large + ": header promises 281474976710656 bytes of data, file holds 3");
  const std::string longer = Write("long.idx", IdxHeader({1, 2, 2}) + "abcde");
  EXPECT_EQ(message(longer), longer + ": header promises 4 bytes of data, file holds 5");
  EXPECT_EQ(message("/dev/zero"), "/dev/zero: not a regular file");
  EXPECT_EQ(message(dir_.string()), dir_.string() + ": not a regular file");
}

TEST_F(DatasetTest, GzipIdxIsReadAndAHeaderBeyondItsSizeRefused) {
  const auto gzip = [&](const std::string& name, const std::string& bytes) { return Gzip(name, bytes); };
  const std::string labels = gzip("lab.idx.gz", IdxHeader({2}) + std::string{1, 0});
  auto data = ReadIdxDataset(gzip("img.idx.gz", IdxHeader({2, 2, 2}) + std::string(8, '\7')), labels);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->images.sizes(), torch::IntArrayRef({2, 1, 2, 2}));
  const std::string bomb = gzip("bomb.idx.gz", IdxHeader({65536, 65536, 65536}));
  auto refused = ReadIdxDataset(bomb, labels);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().message(),
            absl::StrCat(bomb, ": header promises 281474976710656 bytes of data, more than the compressed file of ",
                         std::filesystem::file_size(bomb), " bytes can hold"));
  const std::string short_data = gzip("short.idx.gz", IdxHeader({2, 2, 2}) + "abc");
  auto truncated = ReadIdxDataset(short_data, labels);
  ASSERT_FALSE(truncated.ok());
  EXPECT_EQ(truncated.status().message(), short_data + ": header promises 8 bytes of data, file holds 3");
}

// Classes in sorted order, their images taken in turn, so that the last
// images (the held-out ones) come from every class.
TEST_F(DatasetTest, ReadsAnImageFolderClassByClassInTurn) {
  const auto write_grey = [&](const std::string& path, uint8_t value) {
    const uint8_t pixels[4] = {value, value, value, 255};
    auto png = EncodePng(pixels, 2, 2, 1);
    ASSERT_TRUE(png.ok());
    Write(path, *png);
  };
  write_grey("b-boot/0.png", 100);
  write_grey("a-bag/0.png", 10);
  write_grey("a-bag/1.png", 11);
  write_grey("a-bag/2.png", 12);
  auto data = LoadDataset("folder:" + dir_.string(), Split::kTrain);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->images.sizes(), torch::IntArrayRef({4, 1, 2, 2}));
  EXPECT_EQ(data->class_names, (std::vector<std::string>{"a-bag", "b-boot"}));
  EXPECT_TRUE(torch::equal(data->labels, torch::tensor({0, 1, 0, 0}, torch::kInt64)));
  const std::vector<int> first_pixels = {10, 100, 11, 12};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(data->images[i][0][0][0].item<int>(), first_pixels[i]) << i;
  EXPECT_EQ(data->images[3][0][1][1].item<int>(), 255);
}

// Grey with transparency is composed onto black (not onto whatever memory
// held); 16-bit samples are read as sRGB, like 8-bit ones.
TEST_F(DatasetTest, PngTransparencyIsBlackAnd16BitIsNotRelinearised) {
  const auto write = [&](const std::string& path, uint32_t format, const void* pixels) {
    png_image image;
    std::memset(&image, 0, sizeof(image));
    image.version = PNG_IMAGE_VERSION;
    image.width = 2;
    image.height = 1;
    image.format = format;
    png_alloc_size_t size = 0;
    ASSERT_TRUE(png_image_write_get_memory_size(image, size, 0, pixels, 0, nullptr));
    std::string bytes(size, '\0');
    ASSERT_TRUE(png_image_write_to_memory(&image, bytes.data(), &size, 0, pixels, 0, nullptr));
    bytes.resize(size);
    Write(path, bytes);
  };
  const uint8_t grey_alpha[4] = {200, 0, 200, 255};  // transparent, opaque
  write("alpha/a/0.png", PNG_FORMAT_GA, grey_alpha);
  auto alpha = LoadDataset("folder:" + (dir_ / "alpha").string(), Split::kTrain);
  ASSERT_TRUE(alpha.ok()) << alpha.status();
  EXPECT_EQ(alpha->images.sizes(), torch::IntArrayRef({1, 1, 1, 2}));
  EXPECT_EQ(alpha->images[0][0][0][0].item<int>(), 0);
  EXPECT_EQ(alpha->images[0][0][0][1].item<int>(), 200);

  Write("deep/a/0.png", Grey16Png({0x8080, 0xffff}));
  auto deep = LoadDataset("folder:" + (dir_ / "deep").string(), Split::kTrain);
  ASSERT_TRUE(deep.ok()) << deep.status();
  EXPECT_EQ(deep->images[0][0][0][0].item<int>(), 0x80);
  EXPECT_EQ(deep->images[0][0][0][1].item<int>(), 255);
}

TEST_F(DatasetTest, IdxImagesOfNoPixelsAreRefused) {
  const std::string images = Write("empty.idx", IdxHeader({2, 0, 0}));
  const std::string labels = Write("lab.idx", IdxHeader({2}) + std::string(2, '\0'));
  auto data = ReadIdxDataset(images, labels);
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(data.status().message(), images + ": images must have at least 1x1 pixels and 1 channel, got 0x0x1");
}

// A gzip header may promise up to 1032 times its file's size: the data is
// allocated as it arrives, not as promised.
TEST_F(DatasetTest, GzipIdxDataIsAllocatedAsItArrivesNotAsPromised) {
  std::mt19937 random(7);
  std::string junk(300000, '\0');  // incompressible: the file is as large
  for (char& c : junk) c = char(random());
  const std::string bomb = Gzip("junk.idx.gz", IdxHeader({256, 1024, 1024}) + junk);  // promises 256 MiB
  ASSERT_GE(int64_t(fs::file_size(bomb)) * 1032, int64_t(256) << 20);                 // within the ratio check
  const std::string labels = Write("lab.idx", IdxHeader({1}) + std::string(1, '\0'));
  rusage before, after;
  getrusage(RUSAGE_SELF, &before);
  auto refused = ReadIdxDataset(bomb, labels);
  getrusage(RUSAGE_SELF, &after);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().message(), bomb + ": header promises 268435456 bytes of data, file holds 300000");
  EXPECT_LT(after.ru_maxrss - before.ru_maxrss, 64 * 1024) << "KiB of peak memory grew while reading";
}

// An empty data set is refused where it is read, naming its file.
TEST_F(DatasetTest, IdxOfNoImagesIsRefused) {
  const std::string labels = Write("lab.idx", IdxHeader({0}));
  const std::string images = Write("none.idx", IdxHeader({0, 28, 28}));
  auto data = ReadIdxDataset(images, labels);
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(data.status().message(), images + ": holds no images");
  const std::string rgb = Gzip("none-rgb.idx.gz", IdxHeader({0, 2, 2, 3}));
  EXPECT_EQ(ReadIdxDataset(rgb, Gzip("lab.idx.gz", IdxHeader({0}))).status().message(), rgb + ": holds no images");
}

// A PNG wider or taller than the largest model resolution is refused from its
// header, before its pixels are allocated.
TEST_F(DatasetTest, PngLargerThanTheLargestModelResolutionIsRefused) {
  const auto chunk = [](const std::string& type, const std::string& data) {
    std::string c = {char(data.size() >> 24), char(data.size() >> 16), char(data.size() >> 8), char(data.size())};
    c += type + data;
    const uLong crc = crc32(crc32(0, nullptr, 0), reinterpret_cast<const Bytef*>(c.data() + 4), uInt(c.size() - 4));
    return c + std::string{char(crc >> 24), char(crc >> 16), char(crc >> 8), char(crc)};
  };
  // 1000000x1000000 grey: its header alone promises a terabyte.
  const std::string ihdr = {0, 0x0f, 0x42, 0x40, 0, 0x0f, 0x42, 0x40, 8, 0, 0, 0, 0};
  const std::string idat = {0x78, char(0x9c), 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01};
  Write("huge/a/0.png", "\x89PNG\r\n\x1a\n" + chunk("IHDR", ihdr) + chunk("IDAT", idat) + chunk("IEND", ""));
  auto huge = LoadDataset("folder:" + (dir_ / "huge").string(), Split::kTrain);
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(huge.status().message(),
            (dir_ / "huge/a/0.png").string() +
                ": PNG is 1000000x1000000 (width x height); each must be at most 4096, the largest model resolution");

  const std::string wide = WriteGrey("wide/a/0.png", 4097, 1);
  EXPECT_EQ(ReadImageFolder((dir_ / "wide").string()).status().message(),
            wide + ": PNG is 4097x1 (width x height); each must be at most 4096, the largest model resolution");
  const std::string tall = WriteGrey("tall/a/0.png", 1, 4097);
  EXPECT_EQ(ReadImageFolder((dir_ / "tall").string()).status().message(),
            tall + ": PNG is 1x4097 (width x height); each must be at most 4096, the largest model resolution");
  WriteGrey("edge/a/0.png", 4096, 2, 9);
  auto edge = ReadImageFolder((dir_ / "edge").string());
  ASSERT_TRUE(edge.ok()) << edge.status();
  EXPECT_EQ(edge->images.sizes(), torch::IntArrayRef({1, 1, 2, 4096}));
}

// Only regular files (symbolic links followed) named *.png are opened: a FIFO
// would block its reader forever.
TEST_F(DatasetTest, ImageFolderRefusesPngsThatAreNotRegularFiles) {
  const auto message = [&](const std::string& folder) {
    auto data = ReadImageFolder((dir_ / folder).string());
    EXPECT_FALSE(data.ok());
    EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument) << data.status();
    return std::string(data.status().message());
  };
  WriteGrey("fifo/a/0.png", 2, 2);
  const std::string fifo = (dir_ / "fifo/a/1.png").string();
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_EQ(message("fifo"), fifo + ": not a regular file");

  WriteGrey("dangling/a/0.png", 2, 2);
  const fs::path dangling = dir_ / "dangling/a/1.png";
  fs::create_symlink(dir_ / "dangling/a/gone", dangling);
  EXPECT_EQ(message("dangling"), dangling.string() + ": not a regular file");

  WriteGrey("folder/a/0.png", 2, 2);
  fs::create_directories(dir_ / "folder/a/1.png");
  EXPECT_EQ(message("folder"), (dir_ / "folder/a/1.png").string() + ": not a regular file");

  const std::string target = WriteGrey("linked/a/0.png", 2, 2, 7);
  fs::create_symlink(target, dir_ / "linked/a/1.png");
  auto linked = ReadImageFolder((dir_ / "linked").string());
  ASSERT_TRUE(linked.ok()) << linked.status();
  EXPECT_EQ(linked->images.size(0), 2);
  EXPECT_EQ(linked->images[1][0][0][0].item<int>(), 7);
}

// Hidden sub-folders (.ipynb_checkpoints) are no classes; a class folder
// without PNGs is refused; ".PNG" is a PNG.
TEST_F(DatasetTest, ImageFolderSkipsHiddenFoldersAndRefusesEmptyClasses) {
  WriteGrey("data/.ipynb_checkpoints/0.png", 2, 2, 1);
  WriteGrey("data/a/0.png", 2, 2, 2);
  WriteGrey("data/b/0.PNG", 2, 2, 3);
  Write("data/b/._0.PNG", "a resource fork, not a PNG");
  Write("data/notes.txt", "not a class");
  auto data = ReadImageFolder((dir_ / "data").string());
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->class_names, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(torch::equal(data->labels, torch::tensor({0, 1}, torch::kInt64)));
  EXPECT_EQ(data->images[1][0][0][0].item<int>(), 3);

  Write("data/c/readme.txt", "no images here");
  auto other = ReadImageFolder((dir_ / "data").string());
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(other.status().message(),
            (dir_ / "data/c").string() + ": no .png images; every class folder needs at least one");
  fs::remove_all(dir_ / "data/c");
  fs::create_directories(dir_ / "data/d");
  EXPECT_EQ(ReadImageFolder((dir_ / "data").string()).status().message(),
            (dir_ / "data/d").string() + ": no .png images; every class folder needs at least one");

  WriteGrey("hidden/.a/0.png", 2, 2);
  EXPECT_EQ(ReadImageFolder((dir_ / "hidden").string()).status().message(),
            (dir_ / "hidden").string() + ": no class sub-directories (hidden ones are skipped)");
}

// folder:'s files, for the run's data digest: the PNGs ReadImageFolder
// reads, by class; none for a folder it refuses.
TEST_F(DatasetTest, DataSetFilesOfAFolderAreItsPngsByClass) {
  WriteGrey("files/b/0.png", 2, 2);
  WriteGrey("files/a/1.PNG", 2, 2);
  WriteGrey("files/a/0.png", 2, 2);
  WriteGrey("files/.hidden/0.png", 2, 2);
  Write("files/a/._0.png", "a resource fork, not a PNG");
  Write("files/a/notes.txt", "not a PNG");
  const std::string dir = (dir_ / "files").string();
  EXPECT_EQ(DataSetFiles("folder:" + dir),
            (std::vector<std::string>{dir + "/a/0.png", dir + "/a/1.PNG", dir + "/b/0.png"}));
  fs::create_directories(dir_ / "files/c");  // a class of no PNG: refused
  EXPECT_TRUE(DataSetFiles("folder:" + dir).empty());
  EXPECT_TRUE(DataSetFiles("folder:" + (dir_ / "missing").string()).empty());
  EXPECT_EQ(DataSetFiles("idx:i,l"), (std::vector<std::string>{"i", "l"}));
}

TEST(DatasetSpecTest, UnknownSpecNamesTheAllowedOnes) {
  auto bad = LoadDataset("cifar", Split::kTrain);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("allowed: fashion-mnist, idx:IMAGES,LABELS, folder:DIR"), std::string::npos);
}

TEST(HoldOutValidationTest, TheLastImagesAreHeldOutAndNeverTrainedOn) {
  LabeledImages data;
  data.images = torch::arange(5 * 4, torch::kUInt8).reshape({5, 1, 2, 2});
  data.labels = torch::tensor({0, 1, 2, 0, 1}, torch::kInt64);
  data.class_names = {"a", "b", "c"};
  absl::StatusOr<TrainValidation> split = HoldOutValidation(data, 2, "--validation_images");
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_TRUE(split->train.images.equal(data.images.slice(0, 0, 3)));
  EXPECT_TRUE(split->train.labels.equal(torch::tensor({0, 1, 2}, torch::kInt64)));
  EXPECT_TRUE(split->validation.images.equal(data.images.slice(0, 3, 5)));
  EXPECT_TRUE(split->validation.labels.equal(torch::tensor({0, 1}, torch::kInt64)));
  EXPECT_EQ(split->validation.class_names, data.class_names);

  absl::StatusOr<TrainValidation> none = HoldOutValidation(data, 0, "--validation_images");
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->train.images.size(0), 5);
  EXPECT_EQ(none->validation.images.size(0), 0);

  // A class with no image left to train on is refused, naming it.
  LabeledImages sorted = data;
  sorted.labels = torch::tensor({0, 0, 0, 1, 1}, torch::kInt64);
  absl::StatusOr<TrainValidation> lost = HoldOutValidation(sorted, 2, "--validation_images");
  ASSERT_FALSE(lost.ok());
  EXPECT_EQ(lost.status().message(),
            "--validation_images: holding out the last 2 images leaves class \"b\" no image to train on; hold out "
            "fewer");
  EXPECT_TRUE(HoldOutValidation(sorted, 1, "--validation_images").ok());

  for (int64_t bad : {-1, 5, 6}) {
    absl::StatusOr<TrainValidation> refused = HoldOutValidation(data, bad, "--validation_images");
    ASSERT_FALSE(refused.ok()) << bad;
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string message(refused.status().message());
    EXPECT_NE(message.find("--validation_images"), std::string::npos) << message;
    EXPECT_NE(message.find("5 images"), std::string::npos) << message;
  }
}

TEST(ModelInputTest, ScalesToUnitRangeAndPadsWithBlack) {
  torch::Tensor images = torch::full({1, 1, 28, 28}, 255, torch::kUInt8);
  auto x = ToModelInput(images, 32);
  ASSERT_TRUE(x.ok());
  EXPECT_EQ(x->sizes(), torch::IntArrayRef({1, 1, 32, 32}));
  EXPECT_FLOAT_EQ((*x)[0][0][0][0].item<float>(), -1.0f);   // padding
  EXPECT_FLOAT_EQ((*x)[0][0][2][2].item<float>(), 1.0f);    // first image pixel
  EXPECT_FLOAT_EQ((*x)[0][0][29][29].item<float>(), 1.0f);  // last image pixel
  EXPECT_FLOAT_EQ((*x)[0][0][30][30].item<float>(), -1.0f);
  EXPECT_FALSE(ToModelInput(images, 16).ok());
}

}  // namespace
}  // namespace tcm
