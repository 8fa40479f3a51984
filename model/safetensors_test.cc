#include "model/safetensors.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace tcm {
namespace {

std::string Header(const std::string& json) {
  std::string out(8, '\0');
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + json;
}

std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("tcm_safetensors_test_" + name)).string();
}

TEST(SafetensorsTest, WriteThenReadRoundTrips) {
  const float values[] = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -8.5f};
  const int64_t ints[] = {3, -9};
  std::vector<TensorEntry> tensors(2);
  tensors[0].name = "b.weight";
  tensors[0].dtype = DType::kF32;
  tensors[0].shape = {2, 3};
  tensors[0].bytes = absl::string_view(reinterpret_cast<const char*>(values), sizeof(values));
  tensors[1].name = "a.labels";
  tensors[1].dtype = DType::kI64;
  tensors[1].shape = {2};
  tensors[1].bytes = absl::string_view(reinterpret_cast<const char*>(ints), sizeof(ints));
  const std::string path = TempPath("roundtrip.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, tensors, {{"config", "{\"x\": 1}"}}).ok());

  auto file = SafetensorsFile::Read(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->metadata().at("config"), "{\"x\": 1}");
  ASSERT_EQ(file->tensors().size(), 2u);
  EXPECT_EQ(file->tensors()[0].name, "a.labels");  // ordered by name
  const TensorEntry* w = file->Find("b.weight");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->dtype, DType::kF32);
  EXPECT_EQ(w->shape, (std::vector<int64_t>{2, 3}));
  ASSERT_EQ(w->bytes.size(), sizeof(values));
  EXPECT_EQ(std::memcmp(w->bytes.data(), values, sizeof(values)), 0);
  EXPECT_EQ(file->Find("missing"), nullptr);
  std::remove(path.c_str());
}

TEST(SafetensorsTest, WriteRejectsWrongByteCount) {
  const float v[] = {1.0f};
  TensorEntry t;
  t.name = "w";
  t.shape = {2};
  t.bytes = absl::string_view(reinterpret_cast<const char*>(v), sizeof(v));
  auto status = WriteSafetensors(TempPath("bad.safetensors"), {t}, {});
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("'w'"), absl::string_view::npos);
}

void ExpectParseError(const std::string& contents, const std::string& expected_fragment) {
  auto file = SafetensorsFile::Parse(contents, "w.safetensors");
  ASSERT_FALSE(file.ok()) << "expected an error containing: " << expected_fragment;
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(file.status().message().find(expected_fragment), absl::string_view::npos) << file.status();
  EXPECT_NE(file.status().message().find("w.safetensors"), absl::string_view::npos);
  EXPECT_EQ(file.status().message().find('\n'), absl::string_view::npos) << "errors are one line";
}

TEST(SafetensorsTest, ShorterThanLengthFieldIsTruncated) { ExpectParseError("abc", "truncated"); }

TEST(SafetensorsTest, HeaderLongerThanFileIsTruncated) {
  std::string contents = Header("{\"w\": {}}");
  contents[0] = 100;  // claims a 100-byte header
  ExpectParseError(contents, "header length 100");
}

TEST(SafetensorsTest, BadJsonHeader) { ExpectParseError(Header("{not json"), "not a JSON object"); }

TEST(SafetensorsTest, UnknownDtypeNamesTensorAndKnownTypes) {
  ExpectParseError(Header(R"({"w": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}})") + std::string(16, 0),
                   "tensor 'w': unknown dtype 'F128' (known: BOOL");
}

TEST(SafetensorsTest, ControlCharactersInNamesStayOnOneLine) {
  // Found by fuzz_safetensors: a name with an escaped newline put a second line into the error.
  ExpectParseError(Header(R"({"a\nb\u0007": {"dtype": "Q8", "shape": [1], "data_offsets": [0, 1]}})") + "x",
                   "tensor 'a\\x0ab\\x07': unknown dtype 'Q8'");
}

TEST(SafetensorsTest, OffsetsOutOfRange) {
  ExpectParseError(Header(R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})") + std::string(8, 0),
                   "tensor 'w': data_offsets [0, 16] out of range (data section is 8 bytes)");
}

TEST(SafetensorsTest, TruncatedDataIsOutOfRange) {
  std::string full = Header(R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})") + std::string(16, 0);
  ExpectParseError(full.substr(0, full.size() - 1), "out of range");
}

TEST(SafetensorsTest, SizeDisagreeingWithShape) {
  ExpectParseError(Header(R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}})") + std::string(16, 0),
                   "holds 16 bytes but shape [3] of F32 needs 12");
}

TEST(SafetensorsTest, OverlappingTensors) {
  ExpectParseError(Header(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                              "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})") +
                       std::string(12, 0),
                   "overlap");
}

TEST(SafetensorsTest, MissingFieldsAreNamed) {
  ExpectParseError(Header(R"({"w": {"shape": [1], "data_offsets": [0, 4]}})") + std::string(4, 0), "'dtype'");
  ExpectParseError(Header(R"({"w": {"dtype": "F32", "data_offsets": [0, 4]}})") + std::string(4, 0), "'shape'");
  ExpectParseError(Header(R"({"w": {"dtype": "F32", "shape": [1]}})") + std::string(4, 0), "'data_offsets'");
  ExpectParseError(Header(R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})") + std::string(4, 0),
                   "non-negative");
}

TEST(SafetensorsTest, ShapeWhoseSizeOverflowsIsRefused) {
  // 2^32 x 2^32 F32 elements: 2^66 bytes, 0 modulo 2^64, so an unchecked
  // product would match the empty data range.
  ExpectParseError(Header(R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})"),
                   "tensor 'w': shape [4294967296, 4294967296] is too large (its byte size overflows 64 bits)");
  ExpectParseError(Header(R"({"w": {"dtype": "U8", "shape": [9223372036854775807, 2], "data_offsets": [0, 0]}})"),
                   "is too large");
  ExpectParseError(
      Header(R"({"w": {"dtype": "F32", "shape": [18446744073709551615], "data_offsets": [0, 4]}})") + std::string(4, 0),
      "non-negative");
}

TEST(SafetensorsTest, TooManyDimensionsAreRefused) {
  ExpectParseError(Header(R"({"w": {"dtype": "U8", "shape": [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1], )"
                          R"("data_offsets": [0, 1]}})") +
                       std::string(1, 0),
                   "shape has 17 dimensions, at most 16 are allowed");
}

TEST(SafetensorsTest, DeeplyNestedHeaderIsRefusedBeforeParsing) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  ExpectParseError(Header("{\"w\": " + deep + "}"), "bad header: JSON nested deeper than 8 levels");
  // Brackets inside strings do not count.
  auto file = SafetensorsFile::Parse(Header(R"({"__metadata__": {"note": "[[[[[[[[[[{{{{{{{{{{"}})"), "w.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->metadata().at("note"), "[[[[[[[[[[{{{{{{{{{{");
}

TEST(SafetensorsTest, HeaderWithMillionsOfValuesIsRefusedBeforeParsing) {
  std::string many = "[0";
  for (int i = 0; i < 2'000'000; ++i) many += ",0";
  ExpectParseError(Header("{\"w\": " + many + "]}"), "bad header: 2000002 JSON values, more than the 2000000");
  // Commas inside strings do not count.
  auto file = SafetensorsFile::Parse(Header(R"({"__metadata__": {"note": ",,,,"}})"), "w.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
}

TEST(SafetensorsTest, NonStringMetadata) {
  ExpectParseError(Header(R"({"__metadata__": {"config": 3}})"), "metadata 'config' is not a string");
}

TEST(SafetensorsTest, MissingFileIsNotFound) {
  auto file = SafetensorsFile::Read(TempPath("does_not_exist.safetensors"));
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace tcm
