// The Content-Security-Policy of a page served with one inline script.
#ifndef TCM_SERVER_PAGE_POLICY_H_
#define TCM_SERVER_PAGE_POLICY_H_

#include <string>
#include <string_view>

namespace tcm {

// For `html` holding one `<script>...</script>`: a policy under which that
// script alone may run (named by its SHA-256), the page may fetch from its
// own server only, show inline styles and data: images, submit no form
// anywhere, and be framed by no other page. So text that reaches the page
// from a model file or a caller can never run as script there, whatever
// else goes wrong.
std::string PageContentSecurityPolicy(std::string_view html);

}  // namespace tcm

#endif  // TCM_SERVER_PAGE_POLICY_H_
