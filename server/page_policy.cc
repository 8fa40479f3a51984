#include "server/page_policy.h"

#include <gnutls/crypto.h>

#include <cstdlib>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace tcm {

std::string PageContentSecurityPolicy(std::string_view html) {
  constexpr std::string_view kOpen = "<script>", kClose = "</script>";
  const size_t open = html.find(kOpen);
  const size_t close = open == std::string_view::npos ? open : html.find(kClose, open);
  if (close == std::string_view::npos) std::abort();  // the page is built in; a build without its script is broken
  const std::string_view script = html.substr(open + kOpen.size(), close - open - kOpen.size());
  unsigned char digest[32];
  if (gnutls_hash_fast(GNUTLS_DIG_SHA256, script.data(), script.size(), digest) != 0) std::abort();
  return absl::StrCat("default-src 'none'; script-src 'sha256-",
                      absl::Base64Escape(absl::string_view(reinterpret_cast<const char*>(digest), sizeof(digest))),
                      "'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'; form-action 'none'; ",
                      "base-uri 'none'; frame-ancestors 'none'");
}

}  // namespace tcm
