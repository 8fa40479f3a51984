#include "training/zip_checksums.h"

#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/read_file.h"

namespace tcm {
namespace {

// Little-endian fields of the zip format (APPNOTE.TXT, sections 4.3.12-4.3.16).
uint64_t Field(const std::string& bytes, size_t at, int width) {
  uint64_t value = 0;
  for (int i = width - 1; i >= 0; --i) value = (value << 8) | uint8_t(bytes[at + size_t(i)]);
  return value;
}

constexpr uint32_t kEndOfCentralDirectory = 0x06054b50;
constexpr uint32_t kZip64EndLocator = 0x07064b50;
constexpr uint32_t kZip64End = 0x06064b50;
constexpr uint32_t kCentralEntry = 0x02014b50;
constexpr uint32_t kLocalHeader = 0x04034b50;
constexpr size_t kEndSize = 22, kLocatorSize = 20, kZip64EndSize = 56, kCentralEntrySize = 46, kLocalHeaderSize = 30;
constexpr size_t kMaxComment = 0xffff;
constexpr uint64_t kMaxDeflateRatio = 1032;

absl::Status Damaged(const std::string& why) {
  return absl::DataLossError(absl::StrCat("not a whole zip archive (", why, ")"));
}

// Where the central directory lies, how many entries it has, and where the
// end records begin (the directory must end before them).
struct Directory {
  uint64_t offset = 0, size = 0, entries = 0, end = 0;
};

absl::StatusOr<Directory> FindDirectory(const RegularFile& file) {
  const uint64_t tail_size = std::min<uint64_t>(file.size(), kEndSize + kMaxComment + kLocatorSize);
  std::string tail;
  if (absl::Status read = file.ReadUpTo(file.size() - tail_size, tail_size, &tail); !read.ok()) return read;
  if (tail.size() < kEndSize) return Damaged("too short");
  size_t end = tail.size() - kEndSize + 1;
  // The end record is the last signature whose comment runs exactly to the file's end
  // (a comment may hold the signature's bytes itself).
  const auto is_end = [&](size_t at) {
    return Field(tail, at, 4) == kEndOfCentralDirectory && at + kEndSize + Field(tail, at + 20, 2) == tail.size();
  };
  do {
    --end;
    if (is_end(end)) break;
  } while (end > 0);
  if (!is_end(end)) return Damaged("no end of central directory");
  const uint64_t end_at = file.size() - tail_size + end;
  Directory d{Field(tail, end + 16, 4), Field(tail, end + 12, 4), Field(tail, end + 10, 2), end_at};
  const bool zip64 = d.offset == 0xffffffff || d.size == 0xffffffff || d.entries == 0xffff;
  if (zip64) {
    if (end < kLocatorSize || Field(tail, end - kLocatorSize, 4) != kZip64EndLocator)
      return Damaged("no ZIP64 end locator");
    const uint64_t zip64_end = Field(tail, end - kLocatorSize + 8, 8);
    if (zip64_end > end_at) return Damaged("ZIP64 end record outside the file");
    std::string record;
    if (absl::Status read = file.ReadUpTo(zip64_end, kZip64EndSize, &record); !read.ok()) return read;
    if (record.size() < kZip64EndSize || Field(record, 0, 4) != kZip64End) return Damaged("no ZIP64 end record");
    d = Directory{Field(record, 48, 8), Field(record, 40, 8), Field(record, 32, 8), zip64_end};
  }
  // The directory lies before the end records: its size can ask for no more than the file holds.
  if (d.offset > d.end || d.size > d.end - d.offset) return Damaged("central directory outside the file");
  return d;
}

// CRC-32 of `size` bytes of `file` from `offset`, read in chunks.
absl::StatusOr<uint32_t> Crc32(const RegularFile& file, uint64_t offset, uint64_t size) {
  uLong crc = crc32(0, nullptr, 0);
  std::string chunk;
  for (uint64_t done = 0; done < size; done += chunk.size()) {
    if (absl::Status read = file.ReadUpTo(offset + done, std::min<uint64_t>(size - done, 1 << 20), &chunk); !read.ok())
      return read;
    if (chunk.empty()) return absl::DataLossError("the file ends inside a record");
    crc = crc32_z(crc, reinterpret_cast<const Bytef*>(chunk.data()), chunk.size());
  }
  return uint32_t(crc);
}

// CRC-32 of what `compressed` bytes of raw deflate data at `offset` inflate
// to, which must be exactly `uncompressed` bytes (inflated in chunks and
// dropped: never more than a chunk in memory, never past the size it claims).
absl::StatusOr<uint32_t> InflatedCrc32(const RegularFile& file, uint64_t offset, uint64_t compressed,
                                       uint64_t uncompressed, const std::string& name) {
  z_stream stream{};
  if (inflateInit2(&stream, -MAX_WBITS) != Z_OK) return absl::InternalError("zlib: inflateInit2 failed");
  struct Ender {
    z_stream* s;
    ~Ender() { inflateEnd(s); }
  } ender{&stream};
  const auto bad = [&] { return Damaged(absl::StrCat("record ", name, " does not inflate to its size")); };
  uLong crc = crc32(0, nullptr, 0);
  uint64_t produced = 0;
  std::string in;
  std::string out(1 << 16, '\0');
  for (uint64_t read = 0;;) {
    if (stream.avail_in == 0 && read < compressed) {
      if (absl::Status r = file.ReadUpTo(offset + read, std::min<uint64_t>(compressed - read, 1 << 20), &in); !r.ok())
        return r;
      if (in.empty()) return Damaged("the file ends inside a record");
      read += in.size();
      stream.next_in = reinterpret_cast<Bytef*>(in.data());
      stream.avail_in = uInt(in.size());
    }
    stream.next_out = reinterpret_cast<Bytef*>(out.data());
    stream.avail_out = uInt(out.size());
    // Z_BUF_ERROR: no progress possible, the record ends inside its stream.
    const int status = inflate(&stream, Z_NO_FLUSH);
    if (status != Z_OK && status != Z_STREAM_END) return bad();
    const uint64_t got = out.size() - stream.avail_out;
    produced += got;
    if (produced > uncompressed) return bad();
    crc = crc32_z(crc, reinterpret_cast<const Bytef*>(out.data()), got);
    if (status == Z_STREAM_END) break;
  }
  if (produced != uncompressed) return bad();
  return uint32_t(crc);
}

}  // namespace

absl::Status VerifyZipChecksums(const std::string& path) {
  auto opened = RegularFile::Open(path);
  if (!opened.ok()) return opened.status();
  const RegularFile& file = **opened;
  auto directory = FindDirectory(file);
  if (!directory.ok()) return directory.status();
  std::string central;
  if (absl::Status read = file.ReadUpTo(directory->offset, directory->size, &central); !read.ok()) return read;
  size_t at = 0;
  // Records may not overlap: together they hold no more bytes than the file
  // (else a few entries pointing at one large record would be read forever).
  uint64_t checked = 0;
  for (uint64_t entry = 0; entry < directory->entries; ++entry) {
    if (at + kCentralEntrySize > central.size() || Field(central, at, 4) != kCentralEntry)
      return Damaged(absl::StrCat("central directory entry ", entry));
    const uint64_t method = Field(central, at + 10, 2), crc = Field(central, at + 16, 4);
    uint64_t compressed = Field(central, at + 20, 4), uncompressed = Field(central, at + 24, 4);
    const size_t name_size = Field(central, at + 28, 2), extra_size = Field(central, at + 30, 2),
                 comment_size = Field(central, at + 32, 2);
    uint64_t local = Field(central, at + 42, 4);
    const size_t next = at + kCentralEntrySize + name_size + extra_size + comment_size;
    if (next > central.size()) return Damaged(absl::StrCat("central directory entry ", entry));
    const std::string name = central.substr(at + kCentralEntrySize, name_size);
    // ZIP64 extra field: the 64-bit values of the fields that read 0xffffffff, in this order.
    const size_t extra_end = at + kCentralEntrySize + name_size + extra_size;
    for (size_t x = at + kCentralEntrySize + name_size; x + 4 <= extra_end;) {
      const uint64_t id = Field(central, x, 2), size = Field(central, x + 2, 2);
      if (x + 4 + size > extra_end) return Damaged(absl::StrCat("extra field of record ", name));
      if (id == 0x0001) {
        size_t v = x + 4;
        for (uint64_t* field : {&uncompressed, &compressed, &local})
          if (*field == 0xffffffff && v + 8 <= x + 4 + size) {
            *field = Field(central, v, 8);
            v += 8;
          }
      }
      x += 4 + size;
    }
    at = next;
    if (method != 0 && method != 8) return Damaged(absl::StrCat("record ", name, " is neither stored nor deflated"));
    if (local > directory->offset) return Damaged(absl::StrCat("no local header for record ", name));
    std::string header;
    if (absl::Status read = file.ReadUpTo(local, kLocalHeaderSize, &header); !read.ok()) return read;
    if (header.size() < kLocalHeaderSize || Field(header, 0, 4) != kLocalHeader)
      return Damaged(absl::StrCat("no local header for record ", name));
    const uint64_t data = local + kLocalHeaderSize + Field(header, 26, 2) + Field(header, 28, 2);
    if (data > directory->offset || compressed > directory->offset - data ||
        (method == 0 && compressed != uncompressed))
      return Damaged(absl::StrCat("record ", name, " outside the file"));
    // Deflate expands at most 1032 times: a larger claim is no deflate stream.
    if (method == 8 && uncompressed / kMaxDeflateRatio > compressed)
      return Damaged(absl::StrCat("record ", name, " claims more than deflate can hold"));
    checked += compressed;
    if (checked > directory->offset) return Damaged("records that overlap");
    auto actual =
        method == 0 ? Crc32(file, data, compressed) : InflatedCrc32(file, data, compressed, uncompressed, name);
    if (!actual.ok()) return actual.status();
    if (*actual != crc)
      return absl::DataLossError(absl::StrCat("record ", name, " is damaged (its CRC-32 is ",
                                              absl::Hex(*actual, absl::kZeroPad8), ", the archive says ",
                                              absl::Hex(crc, absl::kZeroPad8), ")"));
  }
  return absl::OkStatus();
}

}  // namespace tcm
