// gRPC server credentials from tcm-server's TLS flags: plaintext when none is
// given, TLS with --tls_cert and --tls_key, mutual TLS with --tls_client_ca
// too. A half-given pair is an error naming the flags, never plaintext.
#ifndef TCM_SERVER_SERVER_CREDENTIALS_H_
#define TCM_SERVER_SERVER_CREDENTIALS_H_

#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace tcm {

// The arguments are PEM file paths (empty = not given).
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(const std::string& cert,
                                                                           const std::string& key,
                                                                           const std::string& client_ca);

}  // namespace tcm

#endif  // TCM_SERVER_SERVER_CREDENTIALS_H_
