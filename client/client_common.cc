#include "client/client_common.h"

#include <string_view>

#include "absl/algorithm/container.h"
#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/read_file.h"
#include "common/utf8.h"

ABSL_FLAG(std::string, server, "localhost:50051",
          "Server address: host:port ([v6]:port for an IPv6 address), or a gRPC target such as dns:///host:port "
          "or unix:path.");
ABSL_FLAG(bool, tls, false, "Use TLS (system roots unless --tls_ca).");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA that signed the server certificate (implies --tls).");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate for mutual TLS (implies --tls).");
ABSL_FLAG(std::string, tls_key, "", "PEM key of --tls_cert.");

namespace tcm {
namespace {

// The schemes of the gRPC targets left to gRPC (its resolvers' names).
constexpr absl::string_view kGrpcSchemes[] = {"dns",  "unix",  "unix-abstract", "ipv4",
                                              "ipv6", "vsock", "xds",           "google-c2p"};

// A port of HOST:PORT: 1 to 5 digits, no sign or space, in 1-65535.
bool IsPort(absl::string_view port) {
  int value = 0;
  return !port.empty() && port.size() <= 5 && absl::c_all_of(port, absl::ascii_isdigit) &&
         absl::SimpleAtoi(port, &value) && value >= 1 && value <= 65535;
}

}  // namespace

absl::Status CheckServerTarget(absl::string_view server) {
  for (absl::string_view scheme : kGrpcSchemes)
    if (absl::StartsWith(server, absl::StrCat(scheme, ":"))) return absl::OkStatus();
  absl::string_view host, port;
  if (absl::StartsWith(server, "[")) {  // [IPv6]:PORT
    const size_t close = server.find(']');
    if (close != absl::string_view::npos && server.substr(close + 1, 1) == ":") {
      host = server.substr(1, close - 1);
      port = server.substr(close + 2);
    }
  } else if (const size_t colon = server.find(':'); colon != absl::string_view::npos) {
    host = server.substr(0, colon);
    port = server.substr(colon + 1);
  }
  if (!host.empty() && IsPort(port)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("--server: expected HOST:PORT with PORT in 1-65535 (or a gRPC target such as dns:///HOST:PORT or "
                   "unix:PATH), got '",
                   PrintableLine(std::string_view(server.data(), server.size())), "'"));
}

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
  if (absl::Status target = CheckServerTarget(options.server); !target.ok()) return target;
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
