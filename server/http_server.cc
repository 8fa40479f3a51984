#include "server/http_server.h"

#include <arpa/inet.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/utf8.h"

namespace tcm {
namespace {

// What libmicrohttpd keeps for one request from its headers to its completion.
struct PendingRequest {
  HttpRequest request;
  absl::Time received;
  int status = 0;  // of the response queued; 0 = none
  // A streamed body, released when the request completes, before the
  // completion hook runs (libmicrohttpd frees its response only after).
  std::unique_ptr<HttpBodyStream> stream;
};

// A streamed body between libmicrohttpd's reads: the piece not yet sent.
struct StreamReader {
  HttpBodyStream* stream;  // owned by the PendingRequest
  std::string piece;
  size_t sent = 0;
};

ssize_t ReadStream(void* cls, uint64_t, char* buffer, size_t max) {
  auto* reader = static_cast<StreamReader*>(cls);
  try {
    while (reader->sent == reader->piece.size()) {
      reader->piece.clear();
      reader->sent = 0;
      if (!reader->stream->Next(&reader->piece)) return MHD_CONTENT_READER_END_OF_STREAM;
    }
  } catch (...) {
    return MHD_CONTENT_READER_END_WITH_ERROR;
  }
  const size_t n = std::min(max, reader->piece.size() - reader->sent);
  std::memcpy(buffer, reader->piece.data() + reader->sent, n);
  reader->sent += n;
  return static_cast<ssize_t>(n);
}

void FreeStream(void* cls) { delete static_cast<StreamReader*>(cls); }

MHD_Result Send(MHD_Connection* connection, PendingRequest* pending, HttpResponse response) {
  MHD_Response* r = nullptr;
  if (response.stream != nullptr) {
    pending->stream = std::move(response.stream);
    auto* reader = new StreamReader{pending->stream.get(), {}, 0};
    r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 << 10, &ReadStream, reader, &FreeStream);
    if (r == nullptr) delete reader;
  } else {
    r = MHD_create_response_from_buffer(response.body.size(), const_cast<char*>(response.body.data()),
                                        MHD_RESPMEM_MUST_COPY);
  }
  if (r == nullptr) return MHD_NO;
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, response.content_type.c_str());
  MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");  // a body is what its type says, never sniffed
  for (const auto& [name, value] : response.headers) MHD_add_response_header(r, name.c_str(), value.c_str());
  const MHD_Result queued = MHD_queue_response(connection, static_cast<unsigned>(response.status), r);
  MHD_destroy_response(r);
  if (queued == MHD_YES) pending->status = response.status;
  return queued;
}

// The caller's address as gRPC writes peers: "ipv4:1.2.3.4:5", "ipv6:[::1]:5"
// (an IPv4 caller of a dual-stack socket as IPv4).
std::string PeerOf(MHD_Connection* connection) {
  const MHD_ConnectionInfo* info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  if (info == nullptr || info->client_addr == nullptr) return "";
  char text[INET6_ADDRSTRLEN] = "";
  if (info->client_addr->sa_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(info->client_addr);
    inet_ntop(AF_INET, &v4->sin_addr, text, sizeof(text));
    return absl::StrCat("ipv4:", text, ":", ntohs(v4->sin_port));
  }
  if (info->client_addr->sa_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(info->client_addr);
    if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
      inet_ntop(AF_INET, &v6->sin6_addr.s6_addr[12], text, sizeof(text));
      return absl::StrCat("ipv4:", text, ":", ntohs(v6->sin6_port));
    }
    inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof(text));
    return absl::StrCat("ipv6:[", text, "]:", ntohs(v6->sin6_port));
  }
  return "";
}

MHD_Result AddQueryValue(void* query, MHD_ValueKind, const char* key, const char* value) {
  (*static_cast<std::map<std::string, std::string>*>(query))[key] = value == nullptr ? "" : value;
  return MHD_YES;
}

using HeaderList = std::vector<std::pair<std::string, std::string>>;

MHD_Result AddHeader(void* headers, MHD_ValueKind, const char* key, const char* value) {
  static_cast<HeaderList*>(headers)->emplace_back(absl::AsciiStrToLower(key), value == nullptr ? "" : value);
  return MHD_YES;
}

// The answer to a request whose body's framing is ambiguous (a proxy in front
// could read it otherwise) or in a coding it cannot read; none when it is sound.
std::optional<HttpResponse> FramingError(const HeaderList& headers) {
  int lengths = 0, codings = 0;
  std::string coding;
  for (const auto& [name, value] : headers) {
    if (name == "content-length") ++lengths;
    if (name == "transfer-encoding") {
      ++codings;
      coding = std::string(absl::StripAsciiWhitespace(value));
    }
  }
  std::optional<HttpResponse> error;
  if (lengths > 1) {
    error = JsonError(400, "Content-Length: given more than once; give it once");
  } else if (codings > 1) {
    error = JsonError(400, "Transfer-Encoding: given more than once; give it once");
  } else if (codings == 1 && lengths == 1) {
    error = JsonError(400, "Content-Length and Transfer-Encoding: give one of them, not both");
  } else if (codings == 1 && !absl::EqualsIgnoreCase(coding, "chunked")) {
    error = JsonError(501, absl::StrCat("Transfer-Encoding '", coding, "': not supported (only chunked)"));
  }
  if (error) error->headers.emplace_back("Connection", "close");  // the body's end is unknown
  return error;
}

// libmicrohttpd's decoding of paths and query values, except that "%00" stays
// as it is: a NUL would end the C string the decoded text is handed on in,
// and the rest would go unseen.
size_t DecodeKeepingNul(void*, MHD_Connection*, char* text) noexcept try {
  const std::string raw = text;
  std::string decoded;
  for (size_t start = 0;;) {
    const size_t nul = raw.find("%00", start);
    std::string piece = raw.substr(start, nul == std::string::npos ? std::string::npos : nul - start);
    piece.resize(MHD_http_unescape(piece.data()));
    decoded += piece;
    if (nul == std::string::npos) break;
    decoded += "%00";
    start = nul + 3;
  }
  std::memcpy(text, decoded.c_str(), decoded.size() + 1);  // never longer than `raw`
  return decoded.size();
} catch (...) {  // no exception may cross into libmicrohttpd's C code: the text stays undecoded
  return std::strlen(text);
}

// False on a host whose kernel has no IPv6 (sockets of that family fail).
bool HostHasIpv6() {
  const int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno != EAFNOSUPPORT;
  close(fd);
  return true;
}

// A check of whether the caller closed its side of `connection`'s socket: a
// hang-up or an orderly shutdown of its writing side (POLLRDHUP).
std::function<bool()> CallerGoneCheck(MHD_Connection* connection) {
  const MHD_ConnectionInfo* info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
  if (info == nullptr) return nullptr;
  return [fd = info->connect_fd] {
    pollfd p{fd, POLLRDHUP, 0};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
  };
}

// Whether the TLS connection's peer presented a certificate that the
// listener's client CA signed (libmicrohttpd asks for one but leaves the
// verdict to the application).
bool PresentedTrustedCertificate(MHD_Connection* connection) {
  const MHD_ConnectionInfo* info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_GNUTLS_SESSION);
  if (info == nullptr || info->tls_session == nullptr) return false;
  unsigned int verdict = 0;
  const auto session = static_cast<gnutls_session_t>(info->tls_session);
  // A client certificate: one whose extended key usage (where it states one) allows TLS clients.
  gnutls_typed_vdata_st purpose{GNUTLS_DT_KEY_PURPOSE_OID,
                                reinterpret_cast<unsigned char*>(const_cast<char*>(GNUTLS_KP_TLS_WWW_CLIENT)), 0};
  return gnutls_certificate_verify_peers(session, &purpose, 1, &verdict) == GNUTLS_E_SUCCESS && verdict == 0;
}

HttpResponse TooLarge(size_t limit) {
  return JsonError(413, absl::StrCat("the request body is over the limit of ", limit, " bytes"));
}

}  // namespace

struct HttpServerCallbacks {
  // No exception may cross into libmicrohttpd's C code: one (an allocation
  // that failed) closes the connection instead.
  static MHD_Result OnRequest(void* cls, MHD_Connection* connection, const char* url, const char* method,
                              const char* version, const char* upload_data, size_t* upload_data_size,
                              void** state_slot) {
    try {
      return Answer(cls, connection, url, method, version, upload_data, upload_data_size, state_slot);
    } catch (...) {
      return MHD_NO;
    }
  }

  static MHD_Result Answer(void* cls, MHD_Connection* connection, const char* url, const char* method, const char*,
                           const char* upload_data, size_t* upload_data_size, void** state_slot) {
    const HttpServer& server = *static_cast<const HttpServer*>(cls);
    auto* state = static_cast<PendingRequest*>(*state_slot);
    if (state == nullptr) {  // the headers have arrived; no body read yet
      state = new PendingRequest();
      *state_slot = state;
      ++server.open_requests_;
      state->received = absl::Now();
      state->request.peer = PeerOf(connection);
      state->request.method = method;
      state->request.path = url;
      state->request.caller_gone = CallerGoneCheck(connection);
      HeaderList headers;
      MHD_get_connection_values(connection, MHD_HEADER_KIND, &AddHeader, &headers);
      for (const auto& [name, value] : headers) state->request.headers[name] = value;
      if (std::optional<HttpResponse> error = FramingError(headers)) return Send(connection, state, *std::move(error));
      if (!server.options_.tls_client_ca_pem.empty() && !PresentedTrustedCertificate(connection))
        return Send(connection, state,
                    JsonError(403, "a client certificate signed by the server's --tls_client_ca is required"));
      const char* length = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
      if (length != nullptr && std::strtoull(length, nullptr, 10) > server.options_.max_body_bytes)
        return Send(connection, state, TooLarge(server.options_.max_body_bytes));  // refused before it is read
      return MHD_YES;
    }
    if (state->status != 0) {  // answered already (413, a framing error): the rest is discarded
      *upload_data_size = 0;
      return MHD_YES;
    }
    if (*upload_data_size > 0) {  // a piece of the body
      const size_t piece = *upload_data_size;
      *upload_data_size = 0;
      // Chunked (no length up front) and over the limit: libmicrohttpd cannot
      // answer before the body's end, so the connection is closed unread.
      if (state->request.body.size() + piece > server.options_.max_body_bytes) return MHD_NO;
      state->request.body.append(upload_data, piece);
      return MHD_YES;
    }
    MHD_get_connection_values(connection, MHD_GET_ARGUMENT_KIND, &AddQueryValue, &state->request.query);
    HttpResponse response;
    try {
      response = server.handler_(state->request);
    } catch (const std::exception& e) {
      response = JsonError(500, absl::StrCat("internal error: ", e.what()));
    }
    return Send(connection, state, std::move(response));
  }

  static void OnCompleted(void* cls, MHD_Connection*, void** state_slot, MHD_RequestTerminationCode) {
    std::unique_ptr<PendingRequest> state(static_cast<PendingRequest*>(*state_slot));
    *state_slot = nullptr;
    if (state == nullptr) return;
    state->stream.reset();  // a call still producing it is cancelled and ends first
    const HttpServer& server = *static_cast<const HttpServer*>(cls);
    if (server.options_.on_complete) {
      try {
        server.options_.on_complete(state->request, state->status, state->received);
      } catch (...) {  // nothing may cross into libmicrohttpd's C code
      }
    }
    --server.open_requests_;
  }
};

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const Options& options, Handler handler) {
  if (options.port < 0) return nullptr;
  std::unique_ptr<HttpServer> server(new HttpServer(options, std::move(handler)));
  sockaddr_in v4{};
  sockaddr_in6 v6{};
  const sockaddr* address = nullptr;
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL;
  if (options.address.empty()) {
    if (HostHasIpv6()) flags |= MHD_USE_DUAL_STACK;  // else IPv4 alone
  } else if (inet_pton(AF_INET, options.address.c_str(), &v4.sin_addr) == 1) {
    v4.sin_family = AF_INET;
    v4.sin_port = htons(static_cast<uint16_t>(options.port));
    address = reinterpret_cast<const sockaddr*>(&v4);
  } else if (inet_pton(AF_INET6, options.address.c_str(), &v6.sin6_addr) == 1) {
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(static_cast<uint16_t>(options.port));
    address = reinterpret_cast<const sockaddr*>(&v6);
    // "::" means every address, IPv4 too, as for gRPC; another IPv6 address only itself.
    flags |= IN6_IS_ADDR_UNSPECIFIED(&v6.sin6_addr) ? MHD_USE_DUAL_STACK : MHD_USE_IPv6;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("address '", options.address,
                                                   "' is not an IPv4 or IPv6 address (for example 0.0.0.0, ::, "
                                                   "127.0.0.1 or ::1; empty = every address)"));
  }
  const bool tls = !options.tls_cert_pem.empty();
  if (tls != !options.tls_key_pem.empty() || (!tls && !options.tls_client_ca_pem.empty()))
    return absl::InvalidArgumentError(absl::StrCat(options.flag_name, ": TLS needs a certificate and its key"));
  std::vector<MHD_OptionItem> tls_options;
  if (tls) {
    flags |= MHD_USE_TLS;
    // Pointers into the server's own copy of the options, which lives as long as the daemon.
    const Options& kept = server->options_;
    tls_options.push_back({MHD_OPTION_HTTPS_MEM_CERT, 0, const_cast<char*>(kept.tls_cert_pem.c_str())});
    tls_options.push_back({MHD_OPTION_HTTPS_MEM_KEY, 0, const_cast<char*>(kept.tls_key_pem.c_str())});
    if (!kept.tls_client_ca_pem.empty())
      tls_options.push_back({MHD_OPTION_HTTPS_MEM_TRUST, 0, const_cast<char*>(kept.tls_client_ca_pem.c_str())});
  }
  tls_options.push_back({MHD_OPTION_END, 0, nullptr});
  server->daemon_ =
      MHD_start_daemon(flags, static_cast<uint16_t>(options.port), nullptr, nullptr, &HttpServerCallbacks::OnRequest,
                       server.get(), MHD_OPTION_NOTIFY_COMPLETED, &HttpServerCallbacks::OnCompleted, server.get(),
                       MHD_OPTION_CONNECTION_TIMEOUT, options.idle_timeout_seconds, MHD_OPTION_CONNECTION_LIMIT,
                       options.max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT, options.max_connections_per_peer,
                       MHD_OPTION_UNESCAPE_CALLBACK, &DecodeKeepingNul, nullptr, MHD_OPTION_THREAD_STACK_SIZE,
                       size_t{0}, MHD_OPTION_SOCK_ADDR, address, MHD_OPTION_ARRAY, tls_options.data(), MHD_OPTION_END);
  if (server->daemon_ == nullptr)
    return absl::UnavailableError(absl::StrCat(
        options.flag_name, " ", options.port, ": cannot listen on ",
        options.address.empty() ? "every address" : options.address, " (in use, or not an address of this host",
        tls ? "; or --tls_cert and --tls_key are not a PEM certificate and its private key)" : ")"));
  const MHD_DaemonInfo* info = MHD_get_daemon_info(server->daemon_, MHD_DAEMON_INFO_LISTEN_FD);
  sockaddr_storage bound{};
  socklen_t length = sizeof(bound);
  if (info == nullptr || getsockname(info->listen_fd, reinterpret_cast<sockaddr*>(&bound), &length) != 0)
    return absl::InternalError(absl::StrCat(options.flag_name, ": the listening port is unknown"));
  server->port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                                    : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  return server;
}

bool HttpServer::WaitUntilIdle(absl::Time deadline) const {
  while (open_requests_.load() > 0) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

HttpServer::~HttpServer() {
  if (daemon_ != nullptr) MHD_stop_daemon(daemon_);
}

std::string JsonQuoted(std::string_view text) {
  std::string out = "\"";
  for (size_t i = 0; i < text.size();) {
    const Utf8Char c = DecodeUtf8(text.substr(i));
    if (c.length == 0) {  // a byte that is not UTF-8
      out += "\\ufffd";
      ++i;
      continue;
    }
    if (c.code == '"' || c.code == '\\') {
      out += '\\';
      out += text[i];
    } else if (IsControlCharacter(c.code) || c.code == '<' || c.code == '>' || c.code == '&') {
      absl::StrAppend(&out, "\\u", absl::Hex(c.code, absl::kZeroPad4));
    } else {
      out.append(text.substr(i, c.length));
    }
    i += c.length;
  }
  return out + "\"";
}

HttpResponse JsonError(int status, const std::string& message) {
  return HttpResponse{status, "application/json", absl::StrCat("{\"error\": ", JsonQuoted(message), "}")};
}

HttpResponse MethodNotAllowed(const HttpRequest& request, const std::string& allowed) {
  HttpResponse response =
      JsonError(405, absl::StrCat(request.path, " answers ", allowed, " only, got ", request.method));
  response.headers.emplace_back("Allow", allowed);
  return response;
}

}  // namespace tcm
