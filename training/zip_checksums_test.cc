#include "training/zip_checksums.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "absl/strings/str_cat.h"

namespace tcm {
namespace {

class ZipChecksumsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = (std::filesystem::temp_directory_path() / ("tcm_zip_checksums_" + std::to_string(::getpid()))).string();
  }
  void TearDown() override { std::filesystem::remove(path_); }

  void Write(const std::string& bytes) { std::ofstream(path_, std::ios::binary) << bytes; }
  std::string Read() {
    std::ifstream in(path_, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }

  std::string path_;
};

// Little-endian bytes of `value`.
std::string Le(uint64_t value, int width) {
  std::string out;
  for (int i = 0; i < width; ++i) out.push_back(char((value >> (8 * i)) & 0xff));
  return out;
}

// A zip of one stored record "a" holding `data`, its central directory saying
// CRC-32 `crc`; with `zip64`, its sizes and offsets in ZIP64 fields only.
std::string OneRecordZip(const std::string& data, uint32_t crc, bool zip64) {
  const uint64_t size = data.size();
  std::string local = Le(0x04034b50, 4) + Le(20, 2) + Le(0, 2) + Le(0, 2) + Le(0, 4) + Le(crc, 4) + Le(size, 4) +
                      Le(size, 4) + Le(1, 2) + Le(0, 2) + "a";
  const std::string extra = zip64 ? Le(0x0001, 2) + Le(24, 2) + Le(size, 8) + Le(size, 8) + Le(0, 8) : "";
  const uint64_t small = zip64 ? 0xffffffff : size;
  std::string central = Le(0x02014b50, 4) + Le(45, 2) + Le(45, 2) + Le(0, 2) + Le(0, 2) + Le(0, 4) + Le(crc, 4) +
                        Le(small, 4) + Le(small, 4) + Le(1, 2) + Le(extra.size(), 2) + Le(0, 2) + Le(0, 2) + Le(0, 2) +
                        Le(0, 4) + Le(zip64 ? 0xffffffff : 0, 4) + "a" + extra;
  const uint64_t central_at = local.size() + size;
  std::string out = local + data + central;
  if (zip64) {
    const uint64_t end64_at = out.size();
    out += Le(0x06064b50, 4) + Le(44, 8) + Le(45, 2) + Le(45, 2) + Le(0, 4) + Le(0, 4) + Le(1, 8) + Le(1, 8) +
           Le(central.size(), 8) + Le(central_at, 8);
    out += Le(0x07064b50, 4) + Le(0, 4) + Le(end64_at, 8) + Le(1, 4);
  }
  out += Le(0x06054b50, 4) + Le(0, 2) + Le(0, 2) + Le(zip64 ? 0xffff : 1, 2) + Le(zip64 ? 0xffff : 1, 2) +
         Le(zip64 ? 0xffffffff : central.size(), 4) + Le(zip64 ? 0xffffffff : central_at, 4) + Le(0, 2);
  return out;
}

uint32_t Crc(const std::string& data) {
  return uint32_t(crc32(0, reinterpret_cast<const Bytef*>(data.data()), uInt(data.size())));
}

TEST_F(ZipChecksumsTest, ALibTorchArchiveChecksAndADamagedRecordIsNamed) {
  torch::serialize::OutputArchive archive;
  archive.write("pattern", torch::full({1000}, 0x5a5a5a5a, torch::kInt32));
  archive.save_to(path_);
  ASSERT_TRUE(VerifyZipChecksums(path_).ok()) << VerifyZipChecksums(path_);
  std::string bytes = Read();
  const size_t at = bytes.find(std::string(64, 'Z'));
  ASSERT_NE(at, std::string::npos);
  bytes[at + 5] = 'Y';  // the zip's CRC-32 is left as it was
  Write(bytes);
  const absl::Status damaged = VerifyZipChecksums(path_);
  EXPECT_EQ(damaged.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(damaged.message().rfind("record ", 0) == 0 &&
              damaged.message().find("/data/0 is damaged (its CRC-32 is ") != std::string::npos)
      << damaged.message();
}

TEST_F(ZipChecksumsTest, Zip64FieldsAreFollowed) {
  const std::string data = "hello, zip64";
  Write(OneRecordZip(data, Crc(data), /*zip64=*/true));
  EXPECT_TRUE(VerifyZipChecksums(path_).ok()) << VerifyZipChecksums(path_);
  Write(OneRecordZip(data, Crc(data) ^ 1, /*zip64=*/true));
  EXPECT_EQ(VerifyZipChecksums(path_).message(),
            absl::StrCat("record a is damaged (its CRC-32 is ", absl::Hex(Crc(data), absl::kZeroPad8),
                         ", the archive says ", absl::Hex(Crc(data) ^ 1, absl::kZeroPad8), ")"));
  Write(OneRecordZip(data, Crc(data), /*zip64=*/false));
  EXPECT_TRUE(VerifyZipChecksums(path_).ok()) << VerifyZipChecksums(path_);
}

TEST_F(ZipChecksumsTest, WhatIsNoWholeArchiveSaysWhy) {
  Write("");
  EXPECT_EQ(VerifyZipChecksums(path_).message(), "not a whole zip archive (too short)");
  Write(std::string(100, 'x'));
  EXPECT_EQ(VerifyZipChecksums(path_).message(), "not a whole zip archive (no end of central directory)");
  const std::string data = "some bytes";
  const std::string zip = OneRecordZip(data, Crc(data), false);
  Write(zip.substr(0, 10) + zip.substr(10 + 4));  // every offset now 4 bytes off
  EXPECT_EQ(VerifyZipChecksums(path_).code(), absl::StatusCode::kDataLoss);
  std::string record_past_end = zip;
  record_past_end.replace(zip.find("PK\x01\x02") + 20, 8, Le(1000, 4) + Le(1000, 4));
  Write(record_past_end);
  EXPECT_EQ(VerifyZipChecksums(path_).message(), "not a whole zip archive (record a outside the file)");
}

}  // namespace
}  // namespace tcm
