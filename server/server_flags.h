// tcm-server's command-line flags (defined in server_flags.cc, part of the
// tcm-server binary only), gathered into ServerOptions.
#ifndef TCM_SERVER_SERVER_FLAGS_H_
#define TCM_SERVER_SERVER_FLAGS_H_

#include "server/server_options.h"

namespace tcm {

// The parsed flags' values.
ServerOptions ServerOptionsFromFlags();

}  // namespace tcm

#endif  // TCM_SERVER_SERVER_FLAGS_H_
