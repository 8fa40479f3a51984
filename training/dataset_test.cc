#include "training/dataset.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>

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
  fs::path dir_;
};

std::string IdxHeader(std::vector<uint32_t> dims) {
  std::string h = {0, 0, 8, char(dims.size())};
  for (uint32_t d : dims) h += {char(d >> 24), char(d >> 16), char(d >> 8), char(d)};
  return h;
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
  const auto gzip = [&](const std::string& name, const std::string& bytes) {
    const std::string path = (dir_ / name).string();
    gzFile f = gzopen(path.c_str(), "wb");
    gzwrite(f, bytes.data(), unsigned(bytes.size()));
    gzclose(f);
    return path;
  };
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

TEST_F(DatasetTest, ReadsAnImageFolderInSortedClassOrder) {
  const uint8_t grey[4] = {0, 64, 128, 255};
  for (const std::string cls : {"b-boot", "a-bag"}) {
    auto png = EncodePng(grey, 2, 2, 1);
    ASSERT_TRUE(png.ok());
    Write(cls + "/0.png", *png);
    Write(cls + "/1.png", *png);
  }
  auto data = LoadDataset("folder:" + dir_.string(), Split::kTrain);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->images.sizes(), torch::IntArrayRef({4, 1, 2, 2}));
  EXPECT_EQ(data->class_names, (std::vector<std::string>{"a-bag", "b-boot"}));
  EXPECT_TRUE(torch::equal(data->labels, torch::tensor({0, 0, 1, 1}, torch::kInt64)));
  EXPECT_EQ(data->images[3][0][1][1].item<int>(), 255);
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
