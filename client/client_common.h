// Shared by the command-line clients: channel set-up from flags and argv
// normalisation. Torch-free.
#ifndef TCM_CLIENT_CLIENT_COMMON_H_
#define TCM_CLIENT_CLIENT_COMMON_H_

#include <grpcpp/grpcpp.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

ABSL_DECLARE_FLAG(std::string, server);

namespace tcm {

struct ChannelOptions {
  std::string server = "localhost:50051";
  bool tls = false;       // TLS with the system roots or `ca`
  std::string ca;         // PEM file of the server's CA
  std::string cert, key;  // PEM client certificate and key (mutual TLS)
  int max_message_mb = 64;
};

// OK when `server` is HOST:PORT (a non-empty host, an IPv6 one in brackets, a
// PORT in 1-65535) or a target with a scheme gRPC resolves (dns:, unix:,
// unix-abstract:, ipv4:, ipv6:, vsock:, xds:, google-c2p:), whose own syntax
// gRPC checks; else InvalidArgument naming --server and quoting `server`.
absl::Status CheckServerTarget(absl::string_view server);

// A channel to options.server, checked by CheckServerTarget first; errors
// name the flag at fault (--server, --tls_ca, --tls_cert, --tls_key).
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ChannelOptions& options);

// The options given by the clients' shared flags: --server, --tls, --tls_ca,
// --tls_cert, --tls_key (defined in client_common.cc).
ChannelOptions ChannelOptionsFromFlags();

// Rewrites "--some-flag" to "--some_flag" (names only, not values), so that
// both spellings work with Abseil flags, and renames each flag of `aliases`
// (name without dashes -> the defined flag's name). The returned argv points
// into *storage, which must outlive it and not change meanwhile.
std::vector<char*> NormalizeFlagNames(int argc, char** argv, std::vector<std::string>* storage,
                                      const std::map<std::string, std::string>& aliases = {});

}  // namespace tcm

#endif  // TCM_CLIENT_CLIENT_COMMON_H_
