#include "model/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

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

// Per process: the tests run in parallel under ctest.
std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("tcm_safetensors_test_" + std::to_string(::getpid()) + "_" + name))
      .string();
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

// The parser's own message, with the byte where it stopped.
TEST(SafetensorsTest, BadJsonHeaderGivesTheParsersMessage) {
  ExpectParseError(Header("{not json"),
                   "bad header: not valid JSON at header byte 3: parse error at line 1, column 3: syntax error while "
                   "parsing object key - invalid literal");
  ExpectParseError(Header(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},})") + std::string(4, 0),
                   "bad header: not valid JSON at header byte 62: parse error at line 1, column 62: syntax error "
                   "while parsing object key - unexpected '}'; expected string literal");
  // Invalid UTF-8 in a name: named as such, the byte escaped, on one line.
  ExpectParseError(Header("{\"w\xff\": {}}"),
                   "not valid JSON at header byte 4: parse error at line 1, column 4: syntax error while parsing "
                   "object key - invalid string: ill-formed UTF-8 byte; last read: '\"w\\xff'");
  ExpectParseError(Header("[1, 2]"), "bad header: not a JSON object (a JSON array)");
}

// nlohmann::json keeps the last of two equal keys: the first would never be
// checked (and another reader may use it).
TEST(SafetensorsTest, DuplicateKeysAreRefusedByName) {
  ExpectParseError(Header(R"({"w": {"dtype": "Q8", "shape": [1], "data_offsets": [0, 1]},
                              "w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}})") +
                       std::string(1, 0),
                   "bad header: tensor 'w' appears twice in the header");
  ExpectParseError(
      Header(R"({"w": {"dtype": "Q8", "dtype": "U8", "shape": [1], "data_offsets": [0, 1]}})") + std::string(1, 0),
      "bad header: tensor 'w': key 'dtype' appears twice");
  ExpectParseError(Header(R"({"__metadata__": {"config": "{}", "config": "{\"x\": 1}"}})"),
                   "bad header: '__metadata__': key 'config' appears twice");
  ExpectParseError(Header(R"({"__metadata__": {}, "__metadata__": {}})"),
                   "bad header: '__metadata__' appears twice in the header");
  // Equal keys in different objects are no duplicates.
  auto file = SafetensorsFile::Parse(Header(R"({"__metadata__": {"w": "x"},
                                                "w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}})") +
                                         std::string(1, 7),
                                     "w.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->metadata().at("w"), "x");
  ASSERT_NE(file->Find("w"), nullptr);
  EXPECT_EQ(file->Find("w")->bytes, std::string(1, 7));
}

// The tensors cover the data section back to back: no gap, no trailing bytes.
TEST(SafetensorsTest, DataSectionMustBeCoveredExactly) {
  ExpectParseError(Header(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})") + std::string(8, 0),
                   "the data section is 8 bytes but its tensors end at byte 4: 4 trailing bytes belong to no tensor");
  ExpectParseError(Header(R"({"__metadata__": {}})") + "junk",
                   "the data section is 4 bytes but its tensors end at byte 0: 4 trailing bytes belong to no tensor");
  ExpectParseError(Header(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                              "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})") +
                       std::string(12, 0),
                   "bytes [4, 8) of the data section belong to no tensor (a gap before tensor 'b')");
  ExpectParseError(Header(R"({"b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})") + std::string(8, 0),
                   "bytes [0, 4) of the data section belong to no tensor (a gap before tensor 'b')");
  // Back to back in any header order, empty tensors anywhere between: read.
  auto file = SafetensorsFile::Parse(Header(R"({"b": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]},
                                                "e": {"dtype": "F32", "shape": [0], "data_offsets": [1, 1]},
                                                "a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}})") +
                                         "xyz",
                                     "w.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->Find("a")->bytes, "x");
  EXPECT_EQ(file->Find("b")->bytes, "yz");
  EXPECT_EQ(file->Find("e")->bytes, "");
}

// A file of `size` bytes (sparse: no disk, no memory) that starts with `start`.
std::string SparseFile(const std::string& name, const std::string& start, uint64_t size) {
  const std::string path = TempPath(name);
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << start;
  }
  std::filesystem::resize_file(path, size);
  return path;
}

// Read checks the length field and the header before the data section: a
// large file is refused from its first bytes, never read whole.
TEST(SafetensorsTest, ReadRefusesABadLengthOrHeaderBeforeTheData) {
  constexpr uint64_t kLarge = uint64_t{1} << 30;
  std::string length(8, '\0');
  length[3] = 0x10;  // 2^28 bytes of header, past the 100 MiB limit but inside the file
  const std::string long_header = SparseFile("long_header.safetensors", length, kLarge);
  auto file = SafetensorsFile::Read(long_header);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().message(),
            long_header + ": bad header: header length 268435456 is more than the 104857600 bytes a header may have");
  // A good header, one 4-byte tensor, then a gigabyte nobody declared.
  const std::string start = Header(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})");
  const std::string trailing = SparseFile("trailing.safetensors", start, kLarge);
  file = SafetensorsFile::Read(trailing);
  ASSERT_FALSE(file.ok());
  const uint64_t data = kLarge - start.size();
  EXPECT_EQ(file.status().message(), trailing + ": the data section is " + std::to_string(data) +
                                         " bytes but its tensors end at byte 4: " + std::to_string(data - 4) +
                                         " trailing bytes belong to no tensor");
  std::remove(long_header.c_str());
  std::remove(trailing.c_str());
}

TEST(SafetensorsTest, ReadNamesTheFileForAShortOne) {
  const std::string path = SparseFile("short.safetensors", "abc", 3);
  auto file = SafetensorsFile::Read(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().message(), path + ": truncated: 3 bytes, shorter than the 8-byte header length");
  std::remove(path.c_str());
}

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
