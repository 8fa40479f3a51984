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

// Raw deflate (no zlib header) of `data`, as zip records hold it.
std::string RawDeflate(const std::string& data) {
  z_stream stream{};
  deflateInit2(&stream, Z_BEST_COMPRESSION, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&stream, uLong(data.size())), '\0');
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  stream.avail_in = uInt(data.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = uInt(out.size());
  deflate(&stream, Z_FINISH);
  out.resize(stream.total_out);
  deflateEnd(&stream);
  return out;
}

// A zip of one record "a" holding `data` (stored, or deflated with
// `deflated`), its central directory saying CRC-32 `crc`; with `zip64`, its
// sizes and offsets in ZIP64 fields only.
std::string OneRecordZip(const std::string& data, uint32_t crc, bool zip64, bool deflated = false) {
  const std::string held = deflated ? RawDeflate(data) : data;
  const uint64_t size = data.size(), held_size = held.size(), method = deflated ? 8 : 0;
  std::string local = Le(0x04034b50, 4) + Le(20, 2) + Le(0, 2) + Le(method, 2) + Le(0, 4) + Le(crc, 4) +
                      Le(held_size, 4) + Le(size, 4) + Le(1, 2) + Le(0, 2) + "a";
  const std::string extra = zip64 ? Le(0x0001, 2) + Le(24, 2) + Le(size, 8) + Le(held_size, 8) + Le(0, 8) : "";
  std::string central = Le(0x02014b50, 4) + Le(45, 2) + Le(45, 2) + Le(0, 2) + Le(method, 2) + Le(0, 4) + Le(crc, 4) +
                        Le(zip64 ? 0xffffffff : held_size, 4) + Le(zip64 ? 0xffffffff : size, 4) + Le(1, 2) +
                        Le(extra.size(), 2) + Le(0, 2) + Le(0, 2) + Le(0, 2) + Le(0, 4) +
                        Le(zip64 ? 0xffffffff : 0, 4) + "a" + extra;
  const uint64_t central_at = local.size() + held_size;
  std::string out = local + held + central;
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
  // An extra field that says it runs past its entry.
  std::string long_extra = OneRecordZip(data, Crc(data), /*zip64=*/true);
  long_extra.replace(long_extra.find(Le(0x0001, 2) + Le(24, 2)), 4, Le(0x0001, 2) + Le(0xffff, 2));
  Write(long_extra);
  EXPECT_EQ(VerifyZipChecksums(path_).message(), "not a whole zip archive (extra field of record a)");
}

// LibTorch deflates a module's code records: they are inflated and checked too.
TEST_F(ZipChecksumsTest, DeflatedRecordsAreInflatedAndChecked) {
  std::string data;
  for (int i = 0; i < 20000; ++i) data += "def forward(self, x): return x\n";
  Write(OneRecordZip(data, Crc(data), false, /*deflated=*/true));
  EXPECT_TRUE(VerifyZipChecksums(path_).ok()) << VerifyZipChecksums(path_);
  Write(OneRecordZip(data, Crc(data) ^ 1, true, /*deflated=*/true));
  EXPECT_NE(VerifyZipChecksums(path_).message().find("record a is damaged"), std::string::npos)
      << VerifyZipChecksums(path_);
  std::string cut = OneRecordZip(data, Crc(data), false, /*deflated=*/true);  // the stream's last bytes zeroed
  const size_t central_at = cut.find("PK\x01\x02");
  cut.replace(central_at - 8, 8, std::string(8, '\0'));
  Write(cut);
  EXPECT_FALSE(VerifyZipChecksums(path_).ok());
}

TEST_F(ZipChecksumsTest, AnArchiveCommentIsSkipped) {
  const std::string data = "commented";
  std::string zip = OneRecordZip(data, Crc(data), false);
  const std::string comment = "PK\x05\x06, the end record's signature, at the start of a comment";
  zip.replace(zip.size() - 2, 2, Le(comment.size(), 2));
  Write(zip + comment);
  EXPECT_TRUE(VerifyZipChecksums(path_).ok()) << VerifyZipChecksums(path_);
}

// Entries that all point at one record would be read again and again: the
// records together may hold no more bytes than lie before the directory.
TEST_F(ZipChecksumsTest, EntriesThatShareARecordAreRefused) {
  const std::string data = "0123456789";
  const std::string zip = OneRecordZip(data, Crc(data), false);
  const size_t central_at = zip.find("PK\x01\x02"), end_at = zip.find("PK\x05\x06");
  const std::string entry = zip.substr(central_at, end_at - central_at);
  std::string repeated;
  for (int i = 0; i < 5; ++i) repeated += entry;
  std::string end = zip.substr(end_at);
  end.replace(8, 8, Le(5, 2) + Le(5, 2) + Le(repeated.size(), 4));
  Write(zip.substr(0, central_at) + repeated + end);
  EXPECT_EQ(VerifyZipChecksums(path_).message(), "not a whole zip archive (records that overlap)");
  end.replace(8, 8, Le(2, 2) + Le(2, 2) + Le(2 * entry.size(), 4));
  Write(zip.substr(0, central_at) + entry + entry + end);  // 20 bytes of 41: within the bound
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
  EXPECT_EQ(VerifyZipChecksums(path_).message(), "not a whole zip archive (central directory outside the file)");
  std::string record_past_end = zip;
  record_past_end.replace(zip.find("PK\x01\x02") + 20, 8, Le(1000, 4) + Le(1000, 4));
  Write(record_past_end);
  EXPECT_EQ(VerifyZipChecksums(path_).message(), "not a whole zip archive (record a outside the file)");
}

}  // namespace
}  // namespace tcm
