#include "client/client_common.h"


#include "absl/strings/str_cat.h"
#include "common/read_file.h"

namespace tcm {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, const std::string& flag) {
  auto text = ReadFile(path);
  if (!text.ok()) return absl::NotFoundError(absl::StrCat("--", flag, ": ", text.status().message()));
  return text;
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ChannelOptions& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_mb << 20);
  args.SetMaxSendMessageSize(options.max_message_mb << 20);
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (options.tls || !options.ca.empty() || !options.cert.empty()) {
    grpc::SslCredentialsOptions ssl;
    if (!options.ca.empty()) {
      auto ca = ReadPem(options.ca, "tls_ca");
      if (!ca.ok()) return ca.status();
      ssl.pem_root_certs = *ca;
    }
    if (options.cert.empty() != options.key.empty())
      return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
    if (!options.cert.empty()) {
      auto cert = ReadPem(options.cert, "tls_cert");
      if (!cert.ok()) return cert.status();
      auto key = ReadPem(options.key, "tls_key");
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *cert;
      ssl.pem_private_key = *key;
    }
    credentials = grpc::SslCredentials(ssl);
  }
  return grpc::CreateCustomChannel(options.server, credentials, args);
}

std::vector<char*> NormalizeFlagNames(int argc, char** argv, std::vector<std::string>* storage) {
  storage->clear();
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (i > 0 && arg.rfind("--", 0) == 0) {
      const size_t end = std::min(arg.find('='), arg.size());
      for (size_t j = 2; j < end; ++j)
        if (arg[j] == '-') arg[j] = '_';
    }
    storage->push_back(arg);
  }
  std::vector<char*> out;
  for (auto& s : *storage) out.push_back(s.data());
  return out;
}

}  // namespace tcm
