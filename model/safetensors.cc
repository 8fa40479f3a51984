#include "model/safetensors.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/read_file.h"
#include "common/utf8.h"
#include "nlohmann/json.hpp"

namespace tcm {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100 * 1024 * 1024;
// The format's header is flat: {"name": {"dtype", "shape": [..], "data_offsets": [..]}}.
constexpr int kMaxHeaderNesting = 8;
// Values in a header's arrays and objects: a tensor takes about eight, so
// this is room for 250,000 tensors while the parsed header stays within a
// few hundred MB (a value's node is up to about 100 bytes), not the
// gigabytes 100 MB of text could make.
constexpr int64_t kMaxHeaderValues = 2'000'000;
constexpr int kMaxDims = 16;

// What the parser would build from `json`, counted without parsing it: how
// deep arrays and objects nest (the parser and the destructor of a parsed
// document recurse per level; counted up to `depth_limit` + 1) and how many
// values arrays and objects hold (each costs a node of the document).
struct JsonShape {
  int depth = 0;
  int64_t values = 0;
};
JsonShape ScanJson(absl::string_view json, int depth_limit) {
  JsonShape shape;
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : json) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      shape.depth = std::max(shape.depth, ++depth);
      ++shape.values;  // the container, and its first value if any
      if (shape.depth > depth_limit) return shape;
    } else if (c == ']' || c == '}') {
      --depth;
    } else if (c == ',') {
      ++shape.values;
    }
  }
  return shape;
}

struct DTypeInfo {
  DType dtype;
  absl::string_view name;
  size_t size;
};

constexpr DTypeInfo kDTypes[] = {
    {DType::kBool, "BOOL", 1}, {DType::kU8, "U8", 1},   {DType::kI8, "I8", 1},   {DType::kI16, "I16", 2},
    {DType::kI32, "I32", 4},   {DType::kI64, "I64", 8}, {DType::kF16, "F16", 2}, {DType::kBF16, "BF16", 2},
    {DType::kF32, "F32", 4},   {DType::kF64, "F64", 8},
};

// The error for file `source`: one line, whatever names the file holds (a
// tensor or metadata name may carry any character, "\n" among them).
absl::Status Invalid(const std::string& source, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", PrintableLine(std::string(what))));
}

absl::StatusOr<TensorEntry> ParseEntry(const std::string& source, const std::string& name, const nlohmann::json& spec,
                                       absl::string_view data) {
  const std::string where = absl::StrCat("tensor '", name, "'");
  if (!spec.is_object()) return Invalid(source, absl::StrCat(where, ": header entry is not an object"));
  if (!spec.contains("dtype") || !spec["dtype"].is_string())
    return Invalid(source, absl::StrCat(where, ": missing string field 'dtype'"));
  auto dtype = ParseDType(spec["dtype"].get<std::string>());
  if (!dtype.ok()) return Invalid(source, absl::StrCat(where, ": ", dtype.status().message()));

  TensorEntry entry;
  entry.name = name;
  entry.dtype = *dtype;
  if (!spec.contains("shape") || !spec["shape"].is_array())
    return Invalid(source, absl::StrCat(where, ": missing array field 'shape'"));
  if (spec["shape"].size() > kMaxDims)
    return Invalid(source, absl::StrCat(where, ": shape has ", spec["shape"].size(), " dimensions, at most ", kMaxDims,
                                        " are allowed"));
  // The byte size, checked against overflow: a shape whose size passes 2^63
  // cannot match any file.
  uint64_t expected = DTypeSize(entry.dtype);
  bool overflow = false;
  for (const auto& dim : spec["shape"]) {
    if (!dim.is_number_integer() || dim.get<int64_t>() < 0)
      return Invalid(source, absl::StrCat(where, ": shape entries must be non-negative integers"));
    entry.shape.push_back(dim.get<int64_t>());
    overflow = overflow || __builtin_mul_overflow(expected, static_cast<uint64_t>(dim.get<int64_t>()), &expected);
  }
  if (overflow || expected > static_cast<uint64_t>(INT64_MAX))
    return Invalid(source, absl::StrCat(where, ": shape [", absl::StrJoin(entry.shape, ", "),
                                        "] is too large (its byte size overflows 64 bits)"));
  const auto& offsets = spec.contains("data_offsets") ? spec["data_offsets"] : nlohmann::json();
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned())
    return Invalid(source, absl::StrCat(where, ": 'data_offsets' must be two non-negative integers"));
  const uint64_t begin = offsets[0].get<uint64_t>();
  const uint64_t end = offsets[1].get<uint64_t>();
  if (begin > end || end > data.size())
    return Invalid(source, absl::StrCat(where, ": data_offsets [", begin, ", ", end, "] out of range (data section is ",
                                        data.size(), " bytes)"));
  if (end - begin != expected)
    return Invalid(source,
                   absl::StrCat(where, ": holds ", end - begin, " bytes but shape [", absl::StrJoin(entry.shape, ", "),
                                "] of ", DTypeName(entry.dtype), " needs ", expected));
  entry.bytes = data.substr(begin, end - begin);
  return entry;
}

}  // namespace

absl::string_view DTypeName(DType dtype) {
  for (const auto& info : kDTypes)
    if (info.dtype == dtype) return info.name;
  return "?";
}

size_t DTypeSize(DType dtype) {
  for (const auto& info : kDTypes)
    if (info.dtype == dtype) return info.size;
  return 0;
}

absl::StatusOr<DType> ParseDType(absl::string_view name) {
  for (const auto& info : kDTypes)
    if (info.name == name) return info.dtype;
  std::vector<absl::string_view> known;
  for (const auto& info : kDTypes) known.push_back(info.name);
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype '", name, "' (known: ", absl::StrJoin(known, ", "), ")"));
}

int64_t TensorEntry::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Read(const std::string& path) {
  auto contents = ReadRegularFile(path);
  if (!contents.ok()) return contents.status();
  return Parse(std::move(*contents), path);
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Parse(std::string contents, const std::string& source) {
  if (contents.size() < 8)
    return Invalid(source,
                   absl::StrCat("truncated: ", contents.size(), " bytes, shorter than the 8-byte header length"));
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(contents[i]);
  if (header_len > kMaxHeaderBytes || header_len > contents.size() - 8)
    return Invalid(source, absl::StrCat("truncated or bad header: header length ", header_len, " but the file has ",
                                        contents.size() - 8, " bytes after the length field"));

  SafetensorsFile file;
  file.buffer_ = std::make_unique<std::string>(std::move(contents));
  const absl::string_view all(*file.buffer_);
  const absl::string_view header_text = all.substr(8, header_len);
  const absl::string_view data = all.substr(8 + header_len);

  const JsonShape shape = ScanJson(header_text, kMaxHeaderNesting);
  if (shape.depth > kMaxHeaderNesting)
    return Invalid(source, absl::StrCat("bad header: JSON nested deeper than ", kMaxHeaderNesting, " levels"));
  if (shape.values > kMaxHeaderValues)
    return Invalid(source, absl::StrCat("bad header: ", shape.values, " JSON values, more than the ", kMaxHeaderValues,
                                        " a header may hold"));
  nlohmann::json header =
      nlohmann::json::parse(header_text.begin(), header_text.end(), nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) return Invalid(source, "bad header: not a JSON object");

  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object()) return Invalid(source, "bad header: '__metadata__' is not an object");
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        if (!m.value().is_string())
          return Invalid(source, absl::StrCat("bad header: metadata '", m.key(), "' is not a string"));
        file.metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto entry = ParseEntry(source, it.key(), it.value(), data);
    if (!entry.ok()) return entry.status();
    file.tensors_.push_back(std::move(*entry));
  }
  std::sort(file.tensors_.begin(), file.tensors_.end(),
            [](const TensorEntry& a, const TensorEntry& b) { return a.name < b.name; });

  // Byte ranges must not overlap (the format lays tensors out back to back).
  std::vector<const TensorEntry*> by_offset;
  for (const auto& t : file.tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorEntry* a, const TensorEntry* b) { return a->bytes.data() < b->bytes.data(); });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i - 1]->bytes.data() + by_offset[i - 1]->bytes.size() > by_offset[i]->bytes.data())
      return Invalid(source,
                     absl::StrCat("tensors '", by_offset[i - 1]->name, "' and '", by_offset[i]->name, "' overlap"));
  }
  return file;
}

const TensorEntry* SafetensorsFile::Find(absl::string_view name) const {
  auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                             [](const TensorEntry& t, absl::string_view n) { return t.name < n; });
  return (it != tensors_.end() && it->name == name) ? &*it : nullptr;
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorEntry>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    const uint64_t size = static_cast<uint64_t>(t.NumElements()) * DTypeSize(t.dtype);
    if (size != t.bytes.size())
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", t.name, "': has ", t.bytes.size(), " bytes, its shape needs ", size));
    header[t.name] = {
        {"dtype", std::string(DTypeName(t.dtype))}, {"shape", t.shape}, {"data_offsets", {offset, offset + size}}};
    offset += size;
  }
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');  // align the data section

  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::PermissionDeniedError(absl::StrCat(tmp, ": cannot create file"));
    uint64_t len = header_text.size();
    char len_bytes[8];
    for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<char>((len >> (8 * i)) & 0xff);
    out.write(len_bytes, 8);
    out.write(header_text.data(), static_cast<std::streamsize>(header_text.size()));
    for (const auto& t : tensors) out.write(t.bytes.data(), static_cast<std::streamsize>(t.bytes.size()));
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      return absl::DataLossError(absl::StrCat(tmp, ": write failed"));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return absl::DataLossError(absl::StrCat(path, ": cannot rename temporary file into place"));
  }
  return absl::OkStatus();
}

}  // namespace tcm
