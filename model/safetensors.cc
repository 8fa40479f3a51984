#include "model/safetensors.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/read_file.h"
#include "common/status_macros.h"
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

// A tensor the header declares: its entry (bytes not yet set) and its byte
// range in the data section.
struct PendingTensor {
  TensorEntry entry;
  uint64_t begin = 0, end = 0;
};

// What a header declares, checked against a data section of known size.
struct Header {
  std::map<std::string, std::string> metadata;
  std::vector<PendingTensor> tensors;  // ordered by name
};

absl::StatusOr<PendingTensor> ParseEntry(const std::string& source, const std::string& name, const nlohmann::json& spec,
                                         uint64_t data_size) {
  const std::string where = absl::StrCat("tensor '", name, "'");
  if (!spec.is_object()) return Invalid(source, absl::StrCat(where, ": header entry is not an object"));
  if (!spec.contains("dtype") || !spec["dtype"].is_string())
    return Invalid(source, absl::StrCat(where, ": missing string field 'dtype'"));
  auto dtype = ParseDType(spec["dtype"].get<std::string>());
  if (!dtype.ok()) return Invalid(source, absl::StrCat(where, ": ", dtype.status().message()));

  PendingTensor tensor;
  TensorEntry& entry = tensor.entry;
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
  tensor.begin = offsets[0].get<uint64_t>();
  tensor.end = offsets[1].get<uint64_t>();
  if (tensor.begin > tensor.end || tensor.end > data_size)
    return Invalid(source, absl::StrCat(where, ": data_offsets [", tensor.begin, ", ", tensor.end,
                                        "] out of range (data section is ", data_size, " bytes)"));
  if (tensor.end - tensor.begin != expected)
    return Invalid(
        source, absl::StrCat(where, ": holds ", tensor.end - tensor.begin, " bytes but shape [",
                             absl::StrJoin(entry.shape, ", "), "] of ", DTypeName(entry.dtype), " needs ", expected));
  return tensor;
}

// How an error names the top-level header key `key`.
std::string HeaderKeyName(const std::string& key) {
  return key == "__metadata__" ? std::string("'__metadata__'") : absl::StrCat("tensor '", key, "'");
}

// The header's JSON, parsed. Refused with the parser's own message and byte
// position when it is not JSON (invalid UTF-8 in a name, a trailing comma),
// and when a key appears twice in one object: the parser would keep the last
// value, so a first entry (or a first 'dtype' of an entry) would never be
// checked, and another reader may take the first.
absl::StatusOr<nlohmann::json> ParseHeaderJson(const std::string& source, absl::string_view text) {
  using Event = nlohmann::json::parse_event_t;
  std::vector<std::set<std::string>> keys;  // those of each object being parsed, the innermost last
  std::string top_key;                      // the top-level key whose value is being parsed
  std::string duplicate;                    // the first key seen twice, described
  const nlohmann::json::parser_callback_t note_keys = [&](int, Event event, nlohmann::json& parsed) {
    if (event == Event::object_start) {
      keys.emplace_back();
    } else if (event == Event::object_end) {
      if (!keys.empty()) keys.pop_back();
    } else if (event == Event::key && !keys.empty() && parsed.is_string()) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (keys.size() == 1) top_key = key;
      if (!keys.back().insert(key).second && duplicate.empty())
        duplicate = keys.size() == 1 ? absl::StrCat(HeaderKeyName(key), " appears twice in the header")
                                     : absl::StrCat(HeaderKeyName(top_key), ": key '", key, "' appears twice");
    }
    return true;
  };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text.begin(), text.end(), note_keys);
  } catch (const nlohmann::json::parse_error& e) {
    // e.what() is "[json.exception.parse_error.101] parse error at line 1, column 9: ...".
    absl::string_view what = e.what();
    if (const size_t id_end = what.find("] "); id_end != absl::string_view::npos) what.remove_prefix(id_end + 2);
    return Invalid(source, absl::StrCat("bad header: not valid JSON at header byte ", e.byte, ": ", what));
  } catch (const nlohmann::json::exception& e) {
    return Invalid(source, absl::StrCat("bad header: not valid JSON: ", e.what()));
  }
  if (!duplicate.empty()) return Invalid(source, absl::StrCat("bad header: ", duplicate));
  if (!header.is_object())
    return Invalid(source, absl::StrCat("bad header: not a JSON object (a JSON ", header.type_name(), ")"));
  return header;
}

// The tensors must cover the data section exactly, back to back, as the
// format lays them out: no byte in two tensors, and none in no tensor (a gap,
// or bytes after the last tensor, would be data that nothing accounts for,
// read for nothing).
absl::Status CheckCoverage(const std::string& source, const std::vector<PendingTensor>& tensors, uint64_t data_size) {
  std::vector<const PendingTensor*> by_offset;
  for (const auto& t : tensors) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](const PendingTensor* a, const PendingTensor* b) {
    return std::tie(a->begin, a->end) < std::tie(b->begin, b->end);
  });
  uint64_t covered = 0;  // bytes [0, covered) belong to the tensors so far
  const PendingTensor* previous = nullptr;
  for (const PendingTensor* t : by_offset) {
    if (t->begin < covered)
      return Invalid(source, absl::StrCat("tensors '", previous->entry.name, "' and '", t->entry.name, "' overlap"));
    if (t->begin > covered)
      return Invalid(source, absl::StrCat("bytes [", covered, ", ", t->begin,
                                          ") of the data section belong to no tensor (a gap before tensor '",
                                          t->entry.name, "')"));
    covered = t->end;
    previous = t;
  }
  if (covered != data_size)
    return Invalid(source, absl::StrCat("the data section is ", data_size, " bytes but its tensors end at byte ",
                                        covered, ": ", data_size - covered, " trailing bytes belong to no tensor"));
  return absl::OkStatus();
}

// The header `text` of a file whose data section is `data_size` bytes,
// checked whole: its shape before it is parsed, every entry, and the data
// section's coverage.
absl::StatusOr<Header> ParseHeader(const std::string& source, absl::string_view text, uint64_t data_size) {
  const JsonShape shape = ScanJson(text, kMaxHeaderNesting);
  if (shape.depth > kMaxHeaderNesting)
    return Invalid(source, absl::StrCat("bad header: JSON nested deeper than ", kMaxHeaderNesting, " levels"));
  if (shape.values > kMaxHeaderValues)
    return Invalid(source, absl::StrCat("bad header: ", shape.values, " JSON values, more than the ", kMaxHeaderValues,
                                        " a header may hold"));
  TCM_ASSIGN_OR_RETURN(const nlohmann::json json, ParseHeaderJson(source, text));
  Header header;
  for (auto it = json.begin(); it != json.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object()) return Invalid(source, "bad header: '__metadata__' is not an object");
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        if (!m.value().is_string())
          return Invalid(source, absl::StrCat("bad header: metadata '", m.key(), "' is not a string"));
        header.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    TCM_ASSIGN_OR_RETURN(PendingTensor tensor, ParseEntry(source, it.key(), it.value(), data_size));
    header.tensors.push_back(std::move(tensor));
  }
  std::sort(header.tensors.begin(), header.tensors.end(),
            [](const PendingTensor& a, const PendingTensor& b) { return a.entry.name < b.entry.name; });
  TCM_RETURN_IF_ERROR(CheckCoverage(source, header.tensors, data_size));
  return header;
}

// The header length field's value, checked before anything it declares is
// read: at most kMaxHeaderBytes, and inside the `available` bytes after the
// field.
absl::StatusOr<uint64_t> HeaderLength(const std::string& source, absl::string_view length_field, uint64_t available) {
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(length_field[i]);
  if (header_len > kMaxHeaderBytes)
    return Invalid(source, absl::StrCat("bad header: header length ", header_len, " is more than the ", kMaxHeaderBytes,
                                        " bytes a header may have"));
  if (header_len > available)
    return Invalid(source, absl::StrCat("truncated or bad header: header length ", header_len, " but the file has ",
                                        available, " bytes after the length field"));
  return header_len;
}

// `header`'s tensors, their bytes viewing `data` (the data section).
std::vector<TensorEntry> BindTensors(Header& header, absl::string_view data) {
  std::vector<TensorEntry> tensors;
  tensors.reserve(header.tensors.size());
  for (PendingTensor& t : header.tensors) {
    t.entry.bytes = data.substr(t.begin, t.end - t.begin);
    tensors.push_back(std::move(t.entry));
  }
  return tensors;
}

// Bytes [offset, offset + n) of `file` into `out`; the file must still hold them.
absl::Status ReadExactly(const RegularFile& file, uint64_t offset, uint64_t n, std::string* out) {
  TCM_RETURN_IF_ERROR(file.ReadUpTo(offset, n, out));
  if (out->size() != n) return Invalid(file.path(), "truncated: the file shrank while it was read");
  return absl::OkStatus();
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
  TCM_ASSIGN_OR_RETURN(const std::unique_ptr<RegularFile> in, RegularFile::Open(path));
  if (in->size() < 8)
    return Invalid(path, absl::StrCat("truncated: ", in->size(), " bytes, shorter than the 8-byte header length"));
  std::string length_field, header_text;
  TCM_RETURN_IF_ERROR(ReadExactly(*in, 0, 8, &length_field));
  TCM_ASSIGN_OR_RETURN(const uint64_t header_len, HeaderLength(path, length_field, in->size() - 8));
  TCM_RETURN_IF_ERROR(ReadExactly(*in, 8, header_len, &header_text));
  const uint64_t data_size = in->size() - 8 - header_len;
  TCM_ASSIGN_OR_RETURN(Header header, ParseHeader(path, header_text, data_size));
  // Only a header checked whole, whose tensors cover the rest of the file
  // exactly, gets the data section read.
  SafetensorsFile file;
  file.buffer_ = std::make_unique<std::string>();
  TCM_RETURN_IF_ERROR(ReadExactly(*in, 8 + header_len, data_size, file.buffer_.get()));
  file.metadata_ = std::move(header.metadata);
  file.tensors_ = BindTensors(header, *file.buffer_);
  return file;
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Parse(std::string contents, const std::string& source) {
  if (contents.size() < 8)
    return Invalid(source,
                   absl::StrCat("truncated: ", contents.size(), " bytes, shorter than the 8-byte header length"));
  TCM_ASSIGN_OR_RETURN(const uint64_t header_len,
                       HeaderLength(source, absl::string_view(contents).substr(0, 8), contents.size() - 8));
  TCM_ASSIGN_OR_RETURN(Header header, ParseHeader(source, absl::string_view(contents).substr(8, header_len),
                                                  contents.size() - 8 - header_len));
  SafetensorsFile file;
  file.buffer_ = std::make_unique<std::string>(std::move(contents));
  file.metadata_ = std::move(header.metadata);
  file.tensors_ = BindTensors(header, absl::string_view(*file.buffer_).substr(8 + header_len));
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
