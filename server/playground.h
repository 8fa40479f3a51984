// The playground page served at / on --http_port: one HTML file with its
// script and style (server/playground.html), compiled into the binary; it
// loads nothing from elsewhere. It lists the models from /v1/models, takes
// its state from its URL (/?model=fashion-mnist-tcm&class=3&steps=2&seed=7&num=8,
// generating at once when opened with one) and shows each image's preview
// and final image as /v1/models/{m}/stream sends them.
#ifndef TCM_SERVER_PLAYGROUND_H_
#define TCM_SERVER_PLAYGROUND_H_

#include <string_view>

namespace tcm {

// The page's bytes (UTF-8 HTML).
std::string_view PlaygroundHtml();

}  // namespace tcm

#endif  // TCM_SERVER_PLAYGROUND_H_
