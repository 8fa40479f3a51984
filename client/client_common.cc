#include "client/client_common.h"

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/read_file.h"

ABSL_FLAG(std::string, server, "localhost:50051", "Server address, host:port.");
ABSL_FLAG(bool, tls, false, "Use TLS (system roots unless --tls_ca).");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA that signed the server certificate (implies --tls).");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate for mutual TLS (implies --tls).");
ABSL_FLAG(std::string, tls_key, "", "PEM key of --tls_cert.");

namespace tcm {
namespace {}  // namespace

ChannelOptions ChannelOptionsFromFlags() {
  ChannelOptions options;
  options.server = absl::GetFlag(FLAGS_server);
  options.tls = absl::GetFlag(FLAGS_tls);
  options.ca = absl::GetFlag(FLAGS_tls_ca);
  options.cert = absl::GetFlag(FLAGS_tls_cert);
  options.key = absl::GetFlag(FLAGS_tls_key);
  return options;
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ChannelOptions& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_mb << 20);
  args.SetMaxSendMessageSize(options.max_message_mb << 20);
  // Spread calls over every address the name resolves to (a headless
  // Kubernetes Service behind dns:///...), instead of pinning the first.
  args.SetLoadBalancingPolicyName("round_robin");
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (options.cert.empty() != options.key.empty())
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together: give both or neither");
  if (options.tls || !options.ca.empty() || !options.cert.empty()) {
    grpc::SslCredentialsOptions ssl;
    if (!options.ca.empty()) {
      auto ca = ReadFlagFile(options.ca, "tls_ca");
      if (!ca.ok()) return ca.status();
      ssl.pem_root_certs = *ca;
    }
    if (!options.cert.empty()) {
      auto cert = ReadFlagFile(options.cert, "tls_cert");
      if (!cert.ok()) return cert.status();
      auto key = ReadFlagFile(options.key, "tls_key");
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *cert;
      ssl.pem_private_key = *key;
    }
    credentials = grpc::SslCredentials(ssl);
  }
  return grpc::CreateCustomChannel(options.server, credentials, args);
}

std::vector<char*> NormalizeFlagNames(int argc, char** argv, std::vector<std::string>* storage,
                                      const std::map<std::string, std::string>& aliases) {
  storage->clear();
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (i > 0 && arg.rfind("--", 0) == 0) {
      const size_t end = std::min(arg.find('='), arg.size());
      for (size_t j = 2; j < end; ++j)
        if (arg[j] == '-') arg[j] = '_';
      auto alias = aliases.find(arg.substr(2, end - 2));
      if (alias != aliases.end()) arg = "--" + alias->second + arg.substr(end);
    }
    storage->push_back(arg);
  }
  // Pointers are taken only once storage is complete: a later push_back could move the strings.
  std::vector<char*> out;
  for (auto& s : *storage) out.push_back(s.data());
  return out;
}

}  // namespace tcm
