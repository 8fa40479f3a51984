#include "common/cpu_features.h"

#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace tcm {

bool CpuInfoHasNativeBf16(absl::string_view cpuinfo) {
  for (absl::string_view line : absl::StrSplit(cpuinfo, '\n')) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(line, absl::MaxSplits(':', 1));
    if (absl::StripAsciiWhitespace(kv.first) != "flags") continue;
    for (absl::string_view flag : absl::StrSplit(kv.second, ' ', absl::SkipEmpty()))
      if (flag == "avx512_bf16" || flag == "amx_bf16") return true;
    return false;  // the first processor's flags decide
  }
  return false;
}

bool CpuHasNativeBf16() {
  static const bool native = [] {
    std::ifstream in("/proc/cpuinfo");
    std::stringstream text;
    text << in.rdbuf();
    return CpuInfoHasNativeBf16(text.str());
  }();
  return native;
}

}  // namespace tcm
