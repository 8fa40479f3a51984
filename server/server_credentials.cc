#include "server/server_credentials.h"

#include "common/read_file.h"

namespace tcm {

absl::StatusOr<TlsPem> ReadTlsFlags(const std::string& cert, const std::string& key, const std::string& client_ca) {
  TlsPem tls;
  if (cert.empty() && key.empty() && client_ca.empty()) return tls;
  if (cert.empty() != key.empty())
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together: give both or neither");
  if (cert.empty()) return absl::InvalidArgumentError("--tls_client_ca: needs --tls_cert and --tls_key (mutual TLS)");
  // ReadFlagFile refuses an empty file: each text below is non-empty.
  auto cert_text = ReadFlagFile(cert, "tls_cert");
  if (!cert_text.ok()) return cert_text.status();
  auto key_text = ReadFlagFile(key, "tls_key");
  if (!key_text.ok()) return key_text.status();
  tls.cert = *std::move(cert_text);
  tls.key = *std::move(key_text);
  if (!client_ca.empty()) {
    auto ca_text = ReadFlagFile(client_ca, "tls_client_ca");
    if (!ca_text.ok()) return ca_text.status();
    tls.client_ca = *std::move(ca_text);
  }
  return tls;
}

std::shared_ptr<grpc::ServerCredentials> GrpcServerCredentials(const TlsPem& tls) {
  if (!tls.enabled()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions options;
  options.pem_key_cert_pairs.push_back({tls.key, tls.cert});
  if (tls.mutual()) {
    options.pem_root_certs = tls.client_ca;
    options.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(options);
}

}  // namespace tcm
