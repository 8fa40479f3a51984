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

// Where the central directory lies, and how many entries it has.
struct Directory {
  uint64_t offset = 0, size = 0, entries = 0;
};

absl::StatusOr<Directory> FindDirectory(const RegularFile& file) {
  const auto damaged = [&](const std::string& why) {
    return absl::DataLossError(absl::StrCat("not a whole zip archive (", why, ")"));
  };
  const uint64_t tail_size = std::min<uint64_t>(file.size(), kEndSize + kMaxComment + kLocatorSize);
  std::string tail;
  if (absl::Status read = file.ReadUpTo(file.size() - tail_size, tail_size, &tail); !read.ok()) return read;
  if (tail.size() < kEndSize) return damaged("too short");
  size_t end = tail.size() - kEndSize + 1;
  do {
    --end;
    if (Field(tail, end, 4) == kEndOfCentralDirectory) break;
  } while (end > 0);
  if (Field(tail, end, 4) != kEndOfCentralDirectory) return damaged("no end of central directory");
  Directory d{Field(tail, end + 16, 4), Field(tail, end + 12, 4), Field(tail, end + 10, 2)};
  const bool zip64 = d.offset == 0xffffffff || d.size == 0xffffffff || d.entries == 0xffff;
  if (!zip64) return d;
  if (end < kLocatorSize || Field(tail, end - kLocatorSize, 4) != kZip64EndLocator)
    return damaged("no ZIP64 end locator");
  const uint64_t zip64_end = Field(tail, end - kLocatorSize + 8, 8);
  std::string record;
  if (absl::Status read = file.ReadUpTo(zip64_end, kZip64EndSize, &record); !read.ok()) return read;
  if (record.size() < kZip64EndSize || Field(record, 0, 4) != kZip64End) return damaged("no ZIP64 end record");
  return Directory{Field(record, 48, 8), Field(record, 40, 8), Field(record, 32, 8)};
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

}  // namespace

absl::Status VerifyZipChecksums(const std::string& path) {
  auto opened = RegularFile::Open(path);
  if (!opened.ok()) return opened.status();
  const RegularFile& file = **opened;
  auto directory = FindDirectory(file);
  if (!directory.ok()) return directory.status();
  const auto damaged = [&](const std::string& why) {
    return absl::DataLossError(absl::StrCat("not a whole zip archive (", why, ")"));
  };
  if (directory->offset > file.size() || directory->size > file.size() - directory->offset)
    return damaged("central directory outside the file");
  std::string central;
  if (absl::Status read = file.ReadUpTo(directory->offset, directory->size, &central); !read.ok()) return read;
  size_t at = 0;
  for (uint64_t entry = 0; entry < directory->entries; ++entry) {
    if (at + kCentralEntrySize > central.size() || Field(central, at, 4) != kCentralEntry)
      return damaged(absl::StrCat("central directory entry ", entry));
    const uint64_t method = Field(central, at + 10, 2), crc = Field(central, at + 16, 4);
    uint64_t compressed = Field(central, at + 20, 4), uncompressed = Field(central, at + 24, 4);
    const size_t name_size = Field(central, at + 28, 2), extra_size = Field(central, at + 30, 2),
                 comment_size = Field(central, at + 32, 2);
    uint64_t local = Field(central, at + 42, 4);
    const size_t next = at + kCentralEntrySize + name_size + extra_size + comment_size;
    if (next > central.size()) return damaged(absl::StrCat("central directory entry ", entry));
    const std::string name = central.substr(at + kCentralEntrySize, name_size);
    // ZIP64 extra field: the 64-bit values of the fields that read 0xffffffff, in this order.
    for (size_t x = at + kCentralEntrySize + name_size; x + 4 <= at + kCentralEntrySize + name_size + extra_size;) {
      const uint64_t id = Field(central, x, 2), size = Field(central, x + 2, 2);
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
    if (method != 0) continue;  // compressed: the inflater checks it
    std::string header;
    if (absl::Status read = file.ReadUpTo(local, kLocalHeaderSize, &header); !read.ok()) return read;
    if (header.size() < kLocalHeaderSize || Field(header, 0, 4) != kLocalHeader)
      return damaged(absl::StrCat("no local header for record ", name));
    const uint64_t data = local + kLocalHeaderSize + Field(header, 26, 2) + Field(header, 28, 2);
    if (compressed != uncompressed || data > file.size() || compressed > file.size() - data)
      return damaged(absl::StrCat("record ", name, " outside the file"));
    auto actual = Crc32(file, data, compressed);
    if (!actual.ok()) return actual.status();
    if (*actual != crc)
      return absl::DataLossError(absl::StrCat("record ", name, " is damaged (its CRC-32 is ",
                                              absl::Hex(*actual, absl::kZeroPad8), ", the archive says ",
                                              absl::Hex(crc, absl::kZeroPad8), ")"));
  }
  return absl::OkStatus();
}

}  // namespace tcm
