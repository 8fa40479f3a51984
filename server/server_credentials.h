// TLS from tcm-server's flags, for both listeners: plaintext when none is
// given, TLS with --tls_cert and --tls_key, mutual TLS with --tls_client_ca
// too. A half-given pair is an error naming the flags, never plaintext.
#ifndef TCM_SERVER_SERVER_CREDENTIALS_H_
#define TCM_SERVER_SERVER_CREDENTIALS_H_

#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace tcm {

// The PEM texts of the TLS flags; all empty = plaintext. A text is empty only
// when its flag was not given (ReadTlsFlags refuses an empty file), so both
// listeners may take "not empty" as "the flag was given".
struct TlsPem {
  std::string cert, key;  // both or neither
  std::string client_ca;  // set: clients must present a certificate it signed
  bool enabled() const { return !cert.empty(); }
  bool mutual() const { return !client_ca.empty(); }
};

// Reads the TLS flags' files; the arguments are PEM file paths (empty = not
// given). A given file that is missing, unreadable, not a regular file or
// empty is an error naming its flag, never TLS (or mutual TLS) left off.
absl::StatusOr<TlsPem> ReadTlsFlags(const std::string& cert, const std::string& key, const std::string& client_ca);

// The gRPC listener's credentials for `tls`.
std::shared_ptr<grpc::ServerCredentials> GrpcServerCredentials(const TlsPem& tls);

}  // namespace tcm

#endif  // TCM_SERVER_SERVER_CREDENTIALS_H_
