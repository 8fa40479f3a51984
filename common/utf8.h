// UTF-8 text from callers and files, checked and made safe to print.
// Header-only.
#ifndef TCM_COMMON_UTF8_H_
#define TCM_COMMON_UTF8_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"

namespace tcm {

// The character at the start of `text`: its code point and its length in
// bytes, or length 0 where `text` does not start with valid UTF-8 (a stray
// continuation byte, an overlong form, a surrogate, a code point past
// U+10FFFF, a sequence cut short, or an empty `text`).
struct Utf8Char {
  uint32_t code = 0;
  size_t length = 0;
};
inline Utf8Char DecodeUtf8(std::string_view text) {
  if (text.empty()) return {};
  const unsigned char lead = static_cast<unsigned char>(text[0]);
  if (lead < 0x80) return {lead, 1};
  size_t extra;
  uint32_t code;
  if (lead >= 0xc2 && lead <= 0xdf) {
    extra = 1, code = lead & 0x1f;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    extra = 2, code = lead & 0x0f;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    extra = 3, code = lead & 0x07;
  } else {
    return {};
  }
  if (extra >= text.size()) return {};
  for (size_t k = 1; k <= extra; ++k) {
    const unsigned char next = static_cast<unsigned char>(text[k]);
    if ((next & 0xc0) != 0x80) return {};
    code = (code << 6) | (next & 0x3f);
  }
  const uint32_t smallest[] = {0, 0x80, 0x800, 0x10000};
  if (code < smallest[extra] || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return {};
  return {code, extra + 1};
}

// C0 and C1 control characters and DEL: what moves a terminal's cursor or
// ends a log line.
inline bool IsControlCharacter(uint32_t code) { return code < 0x20 || code == 0x7f || (code >= 0x80 && code <= 0x9f); }

// Whether `text` is valid UTF-8 without control characters.
inline bool IsPrintableUtf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const Utf8Char c = DecodeUtf8(text.substr(i));
    if (c.length == 0 || IsControlCharacter(c.code)) return false;
    i += c.length;
  }
  return true;
}

// `text` made one printable line: valid UTF-8 other than control characters
// passes as it is; every other byte (a newline, an escape, a byte that is
// not UTF-8) becomes \xNN, and a backslash becomes \\, so the line reads
// back unambiguously.
inline std::string PrintableLine(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const Utf8Char c = DecodeUtf8(text.substr(i));
    if (c.length == 0 || IsControlCharacter(c.code)) {
      const size_t bytes = c.length == 0 ? 1 : c.length;  // a C1 control is two bytes
      for (size_t k = 0; k < bytes; ++k)
        absl::StrAppend(&out, "\\x", absl::Hex(static_cast<unsigned char>(text[i + k]), absl::kZeroPad2));
      i += bytes;
      continue;
    }
    if (text[i] == '\\') out += '\\';
    out.append(text.substr(i, c.length));
    i += c.length;
  }
  return out;
}

}  // namespace tcm

#endif  // TCM_COMMON_UTF8_H_
