// An HTTP/1.1 listener on GNU libmicrohttpd (Debian's libmicrohttpd-dev): one
// thread per connection, so a connection that sends slowly or stalls holds its
// own thread only and never delays another caller (a Prometheus scrape among
// them). Threads get the system's default stack: LibTorch's thread-local
// storage does not fit the small fixed stacks of some embedded servers.
//
// Limits: a connection idle for `idle_timeout_seconds` is closed; at most
// `max_connections` at once, and at most `max_connections_per_peer` from one
// address, so that one caller cannot take every slot (more are refused at
// accept); a request body over `max_body_bytes` is answered 413 from its
// Content-Length, unread; a chunked one closes its connection when it passes
// the limit. A request whose body's framing is ambiguous (Content-Length given
// twice, or beside Transfer-Encoding) is answered 400, and one in a transfer
// coding other than chunked 501, at once, and its connection closed. "%00" in
// a path or query value is left undecoded (it names nothing). Listens on IPv4
// and IPv6 (`address` empty or "::") or on one address.
#ifndef TCM_SERVER_HTTP_SERVER_H_
#define TCM_SERVER_HTTP_SERVER_H_

#include <atomic>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

struct MHD_Daemon;

namespace tcm {

struct HttpRequest {
  std::string peer;                            // "ipv4:127.0.0.1:43210" or "ipv6:[::1]:43210", as gRPC writes it
  std::string method;                          // "GET", "POST", ...
  std::string path;                            // without the query
  std::map<std::string, std::string> query;    // decoded ?name=value pairs
  std::map<std::string, std::string> headers;  // names in lower case; a repeated one keeps its last value
  std::string body;
  // True once the caller has closed its side of the connection (it can no
  // longer read the answer); a handler that waits long asks it now and then.
  // Empty: not known.
  std::function<bool()> caller_gone;
};

// A response body produced while it is sent (chunked): Next is called on the
// connection's thread and may block until it has a piece. The stream is
// destroyed when the response ends, or when the caller goes away first.
class HttpBodyStream {
 public:
  virtual ~HttpBodyStream() = default;
  // The next piece of the body in `piece`; false at its end.
  virtual bool Next(std::string* piece) = 0;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::unique_ptr<HttpBodyStream> stream;                    // when set, the body instead of `body`
  std::vector<std::pair<std::string, std::string>> headers;  // besides Content-Type
};

class HttpServer {
 public:
  // Called on the connection's thread, concurrently for different connections.
  using Handler = std::function<HttpResponse(const HttpRequest&)>;
  // Called once per request when its connection is done with it (the response
  // sent, or the connection closed first): its status (0 = none was sent) and
  // when it arrived. The request is alive from the handler's call until then.
  using CompletionHook = std::function<void(const HttpRequest&, int status, absl::Time received)>;

  struct Options {
    std::string address;               // "" = every address, IPv4 and IPv6; else one IPv4 or IPv6 literal
    int port = 0;                      // 0 = any free port (see port()); -1 = none: Start returns nullptr
    size_t max_body_bytes = 64 << 10;  // an infer request of 64 class labels is under 2 KiB
    unsigned idle_timeout_seconds = 30;
    unsigned max_connections = 1024;
    unsigned max_connections_per_peer = 256;  // from one IP address; 0 = no limit but max_connections
    std::string flag_name = "--http_port";    // names the listener in errors
    CompletionHook on_complete;               // may be empty
    // TLS (PEM texts): with a certificate and its key the listener speaks
    // HTTPS only; with a client CA too, a request whose connection did not
    // present a certificate that CA signed is answered 403.
    std::string tls_cert_pem, tls_key_pem, tls_client_ca_pem;
  };

  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const Options& options, Handler handler);
  ~HttpServer();  // stops listening and closes every connection

  int port() const { return port_; }

  // Waits until no request is open (each answered in full, or its connection
  // closed) or `deadline` passes; whether none is. The destructor closes
  // every connection at once: a stop that lets the last answers go out
  // calls this first.
  bool WaitUntilIdle(absl::Time deadline) const;

 private:
  friend struct HttpServerCallbacks;  // libmicrohttpd's callbacks, in http_server.cc
  HttpServer(const Options& options, Handler handler) : options_(options), handler_(std::move(handler)) {}

  const Options options_;
  const Handler handler_;
  MHD_Daemon* daemon_ = nullptr;
  int port_ = 0;
  mutable std::atomic<int> open_requests_{0};  // from their headers' arrival to their completion
};

// `text` as a JSON string, quotes included: valid UTF-8 passes; quotes,
// backslashes, control characters and < > & are escaped, and each byte that
// is not UTF-8 becomes U+FFFD, so any bytes give valid JSON on one line,
// safe to embed in a page. For text from callers and files.
std::string JsonQuoted(std::string_view text);

// The error body every HTTP endpoint of the server uses: {"error": "..."}.
HttpResponse JsonError(int status, const std::string& message);

// 405 for `request`, whose path answers the methods `allowed` ("GET, HEAD")
// only: a JSON error naming them, and the Allow header.
HttpResponse MethodNotAllowed(const HttpRequest& request, const std::string& allowed);

}  // namespace tcm

#endif  // TCM_SERVER_HTTP_SERVER_H_
