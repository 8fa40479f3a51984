#include "server/http_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace tcm {
namespace {

// A connected TCP socket to `address` (an IPv4 or IPv6 literal) and `port`; -1 on failure.
int Connect(const std::string& address, int port) {
  sockaddr_in v4{};
  sockaddr_in6 v6{};
  const bool ipv6 = inet_pton(AF_INET6, address.c_str(), &v6.sin6_addr) == 1;
  int fd = socket(ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  int rc;
  if (ipv6) {
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(static_cast<uint16_t>(port));
    rc = connect(fd, reinterpret_cast<sockaddr*>(&v6), sizeof(v6));
  } else {
    v4.sin_family = AF_INET;
    v4.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, address.c_str(), &v4.sin_addr);
    rc = connect(fd, reinterpret_cast<sockaddr*>(&v4), sizeof(v4));
  }
  if (rc != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

bool SendAll(int fd, const std::string& data) {
  for (size_t sent = 0; sent < data.size();) {
    const ssize_t n = send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

struct Reply {
  int status = 0;  // 0: no answer
  std::string headers;
  std::string body;
};

// A TCP socket from IPv4 address `source` to 127.0.0.1:`port`; -1 on failure.
int ConnectFrom(const std::string& source, int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in from{}, to{};
  from.sin_family = to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, source.c_str(), &from.sin_addr);
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof(from)) != 0 ||
      connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Sends `request` (a whole HTTP/1.1 request) on the connected socket `fd`,
// reads the reply to the end of the connection and closes `fd`.
Reply ExchangeOn(int fd, const std::string& request) {
  Reply reply;
  if (fd < 0 || !SendAll(fd, request)) {
    if (fd >= 0) close(fd);
    return reply;
  }
  std::string all;
  char buffer[4096];
  for (ssize_t n; (n = recv(fd, buffer, sizeof(buffer), 0)) > 0;) all.append(buffer, static_cast<size_t>(n));
  close(fd);
  const size_t end = all.find("\r\n\r\n");
  if (all.size() < 12 || end == std::string::npos) return reply;
  reply.status = std::stoi(all.substr(9, 3));
  reply.headers = all.substr(0, end);
  reply.body = all.substr(end + 4);
  return reply;
}

Reply Exchange(const std::string& address, int port, const std::string& request) {
  return ExchangeOn(Connect(address, port), request);
}

std::string Get(const std::string& target) {
  return absl::StrCat("GET ", target, " HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
}

std::string Post(const std::string& target, const std::string& body) {
  return absl::StrCat("POST ", target, " HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: ", body.size(),
                      "\r\n\r\n", body);
}

// Echoes the request as "METHOD PATH a=.. b=.. |BODY".
HttpResponse Echo(const HttpRequest& request) {
  std::string text = absl::StrCat(request.method, " ", request.path);
  for (const auto& [name, value] : request.query) absl::StrAppend(&text, " ", name, "=", value);
  return HttpResponse{200, "text/plain", absl::StrCat(text, " |", request.body)};
}

std::unique_ptr<HttpServer> StartOrDie(HttpServer::Options options, HttpServer::Handler handler = Echo) {
  auto server = HttpServer::Start(options, std::move(handler));
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

bool HostHasIpv6Loopback() {
  const int fd = socket(AF_INET6, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  close(fd);
  return ok;
}

TEST(HttpServerTest, TheHandlerGetsMethodPathDecodedQueryAndBody) {
  auto server = StartOrDie({"127.0.0.1"});
  ASSERT_NE(server, nullptr);
  Reply get = Exchange("127.0.0.1", server->port(), Get("/v2/models/m?class=3&name=a%20b"));
  EXPECT_EQ(get.status, 200);
  EXPECT_TRUE(absl::StrContains(get.headers, "Content-Type: text/plain")) << get.headers;
  EXPECT_TRUE(absl::StrContains(get.headers, "X-Content-Type-Options: nosniff")) << get.headers;
  EXPECT_EQ(get.body, "GET /v2/models/m class=3 name=a b |");
  Reply post = Exchange("127.0.0.1", server->port(), Post("/infer", "{\"inputs\": []}"));
  EXPECT_EQ(post.status, 200);
  EXPECT_EQ(post.body, "POST /infer |{\"inputs\": []}");
}

TEST(HttpServerTest, PercentZeroStaysUndecodedInPathAndQuery) {
  auto server = StartOrDie({"127.0.0.1"});
  ASSERT_NE(server, nullptr);
  Reply reply = Exchange("127.0.0.1", server->port(), Get("/v2/models/m%00x?num=1%00junk&name=%41%20b"));
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.body, "GET /v2/models/m%00x name=A b num=1%00junk |");
}

TEST(HttpServerTest, AmbiguousOrUnreadableFramingIsRefusedAtOnceAndTheConnectionClosed) {
  std::atomic<int> handled{0};
  auto server = StartOrDie({"127.0.0.1"}, [&handled](const HttpRequest& request) {
    ++handled;
    return Echo(request);
  });
  ASSERT_NE(server, nullptr);
  struct Case {
    std::string headers;
    int status;
    std::string error;
  };
  const Case cases[] = {
      {"Content-Length: 2\r\nContent-Length: 5", 400, "Content-Length: given more than once; give it once"},
      {"Transfer-Encoding: chunked\r\nContent-Length: 2", 400,
       "Content-Length and Transfer-Encoding: give one of them, not both"},
      {"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", 400,
       "Transfer-Encoding: given more than once; give it once"},
      {"Transfer-Encoding: gzip", 501, "Transfer-Encoding 'gzip': not supported (only chunked)"},
  };
  for (const Case& c : cases) {
    // No "Connection: close" from the caller: the server closes the connection itself.
    Reply reply = Exchange("127.0.0.1", server->port(),
                           absl::StrCat("POST /infer HTTP/1.1\r\nHost: test\r\n", c.headers, "\r\n\r\nab"));
    EXPECT_EQ(reply.status, c.status) << c.headers;
    EXPECT_TRUE(absl::StrContains(reply.headers, "Connection: close")) << reply.headers;
    EXPECT_EQ(reply.body, absl::StrCat("{\"error\": \"", c.error, "\"}"));
  }
  EXPECT_EQ(handled.load(), 0);
}

TEST(HttpServerTest, OneAddressHoldsAtMostItsShareOfConnections) {
  HttpServer::Options options{"127.0.0.1"};
  options.max_connections_per_peer = 4;
  auto server = StartOrDie(options);
  ASSERT_NE(server, nullptr);
  // Four connections from 127.0.0.1 that hold their slots: a request begun, never finished.
  std::vector<int> held;
  for (int i = 0; i < 4; ++i) {
    const int fd = Connect("127.0.0.1", server->port());
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(SendAll(fd, "GET /metrics HTTP/1.1\r\nHost: test\r\n"));
    held.push_back(fd);
  }
  EXPECT_EQ(Exchange("127.0.0.1", server->port(), Get("/metrics")).status, 0) << "a fifth was let in";
  const int other = ConnectFrom("127.0.0.2", server->port());
  ASSERT_GE(other, 0);
  Reply reply = ExchangeOn(other, Get("/metrics"));
  EXPECT_EQ(reply.status, 200) << "another address was refused";
  for (int fd : held) close(fd);
  // Once the four are closed (noticed by the server's threads), the address is let in again.
  int status = 0;
  for (int attempt = 0; attempt < 400 && status != 200; ++attempt) {
    status = Exchange("127.0.0.1", server->port(), Get("/metrics")).status;
    if (status != 200) std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  EXPECT_EQ(status, 200);
}

TEST(HttpServerTest, WaitUntilIdleWaitsForAnAnswerInProgress) {
  std::mutex mu;
  std::condition_variable changed;
  bool entered = false, release = false;
  auto server = StartOrDie({"127.0.0.1"}, [&](const HttpRequest& request) {
    std::unique_lock<std::mutex> lock(mu);
    entered = true;
    changed.notify_all();
    changed.wait(lock, [&] { return release; });
    return Echo(request);
  });
  ASSERT_NE(server, nullptr);
  EXPECT_TRUE(server->WaitUntilIdle(absl::Now()));  // nothing open
  Reply reply;
  std::thread caller([&] { reply = Exchange("127.0.0.1", server->port(), Get("/slow")); });
  {
    std::unique_lock<std::mutex> lock(mu);
    changed.wait(lock, [&] { return entered; });
  }
  EXPECT_FALSE(server->WaitUntilIdle(absl::Now() + absl::Milliseconds(20)));  // the handler holds it
  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
  }
  changed.notify_all();
  EXPECT_TRUE(server->WaitUntilIdle(absl::Now() + absl::Seconds(60)));
  caller.join();
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.body, "GET /slow |");
}

TEST(HttpServerTest, ABodyOverTheLimitIsAnswered413) {
  HttpServer::Options options{"127.0.0.1"};
  options.max_body_bytes = 100;
  auto server = StartOrDie(options);
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(Exchange("127.0.0.1", server->port(), Post("/infer", std::string(100, 'x'))).status, 200);
  Reply declared = Exchange("127.0.0.1", server->port(), Post("/infer", std::string(101, 'x')));
  EXPECT_EQ(declared.status, 413);
  EXPECT_EQ(declared.body, "{\"error\": \"the request body is over the limit of 100 bytes\"}");
  // Chunked: no length up front; the connection is closed once the body passes the limit.
  const std::string chunked =
      "POST /infer HTTP/1.1\r\nHost: test\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
      "50\r\n" +
      std::string(80, 'x') + "\r\n50\r\n" + std::string(80, 'y') + "\r\n0\r\n\r\n";
  EXPECT_EQ(Exchange("127.0.0.1", server->port(), chunked).status, 0);
  EXPECT_EQ(Exchange("127.0.0.1", server->port(), Get("/after")).status, 200);
}

TEST(HttpServerTest, StalledConnectionsDoNotDelayAnotherCaller) {
  auto server = StartOrDie({"127.0.0.1"});
  ASSERT_NE(server, nullptr);
  // 16 callers that send part of a request, then one byte at a time, never finishing it.
  std::vector<int> stalled;
  for (int i = 0; i < 16; ++i) {
    const int fd = Connect("127.0.0.1", server->port());
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(SendAll(fd, "GET /metrics HTTP/1.1\r\nHost: test\r\nX-Slow: "));
    stalled.push_back(fd);
  }
  std::atomic<bool> done{false};
  std::thread trickle([&] {
    while (!done) {
      for (int fd : stalled) SendAll(fd, "a");
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  // Answered while all 16 are held open: the old one-connection-at-a-time
  // listener answered only after each stalled caller gave up.
  Reply reply = Exchange("127.0.0.1", server->port(), Get("/metrics"));
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.body, "GET /metrics |");
  done = true;
  trickle.join();
  for (int fd : stalled) {
    pollfd p{fd, POLLIN, 0};
    EXPECT_EQ(poll(&p, 1, 0), 0) << "a stalled connection was answered or closed";
    close(fd);
  }
}

TEST(HttpServerTest, TwoHundredConcurrentCallersAreAllAnswered) {
  auto server = StartOrDie({"127.0.0.1"});
  ASSERT_NE(server, nullptr);
  std::vector<std::thread> callers;
  std::vector<Reply> replies(200);
  for (int i = 0; i < 200; ++i)
    callers.emplace_back(
        [&, i] { replies[i] = Exchange("127.0.0.1", server->port(), Get(absl::StrCat("/call?i=", i))); });
  for (auto& c : callers) c.join();
  for (int i = 0; i < 200; ++i) {
    EXPECT_EQ(replies[i].status, 200) << i;
    EXPECT_EQ(replies[i].body, absl::StrCat("GET /call i=", i, " |"));
  }
}

TEST(HttpServerTest, ListensOnIpv6LoopbackAndOnEveryAddress) {
  if (!HostHasIpv6Loopback()) GTEST_SKIP() << "this host has no IPv6 loopback (::1)";
  auto v6 = StartOrDie({"::1"});
  ASSERT_NE(v6, nullptr);
  EXPECT_EQ(Exchange("::1", v6->port(), Get("/six")).body, "GET /six |");
  EXPECT_EQ(Exchange("127.0.0.1", v6->port(), Get("/six")).status, 0);  // ::1 only

  for (const char* every : {"", "::"}) {
    SCOPED_TRACE(every);
    auto both = StartOrDie({every});
    ASSERT_NE(both, nullptr);
    EXPECT_EQ(Exchange("::1", both->port(), Get("/any")).body, "GET /any |");
    EXPECT_EQ(Exchange("127.0.0.1", both->port(), Get("/any")).body, "GET /any |");
  }
}

TEST(HttpServerTest, ErrorsNameTheFlag) {
  HttpServer::Options options{"localhost"};
  options.flag_name = "--metrics_port";
  auto bad = HttpServer::Start(options, Echo);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "'localhost' is not an IPv4 or IPv6 address"));

  auto first = StartOrDie({"127.0.0.1"});
  ASSERT_NE(first, nullptr);
  options.address = "127.0.0.1";
  options.port = first->port();
  auto taken = HttpServer::Start(options, Echo);
  EXPECT_EQ(taken.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StartsWith(taken.status().message(), absl::StrCat("--metrics_port ", first->port(), ": ")))
      << taken.status();
}

TEST(HttpServerTest, AHandlerThatThrowsAnswers500AndTheServerGoesOn) {
  auto server = StartOrDie({"127.0.0.1"}, [](const HttpRequest& request) -> HttpResponse {
    if (request.path == "/throw") throw std::runtime_error("boom \"quoted\"");
    return Echo(request);
  });
  ASSERT_NE(server, nullptr);
  Reply thrown = Exchange("127.0.0.1", server->port(), Get("/throw"));
  EXPECT_EQ(thrown.status, 500);
  EXPECT_EQ(thrown.body, "{\"error\": \"internal error: boom \\\"quoted\\\"\"}");
  EXPECT_EQ(Exchange("127.0.0.1", server->port(), Get("/ok")).status, 200);
}

TEST(HttpServerTest, JsonErrorEscapesControlCharacters) {
  HttpResponse r = JsonError(400, "a\nb\\c\xff");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_EQ(r.body, "{\"error\": \"a\\u000ab\\\\c\\ufffd\"}");
}

TEST(HttpServerTest, JsonQuotedKeepsUtf8AndReplacesWhatIsNot) {
  // Valid UTF-8 passes (two, three and four bytes); a C1 control (U+0085,
  // a line end to some readers) and page markup are escaped; a lone
  // continuation byte, an overlong form and a cut-off sequence become U+FFFD.
  EXPECT_EQ(JsonQuoted("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x91\x95"), "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x91\x95\"");
  EXPECT_EQ(JsonQuoted("a\xc2\x85<b>&"), "\"a\\u0085\\u003cb\\u003e\\u0026\"");
  EXPECT_EQ(JsonQuoted("\x80|\xc0\xaf|\xe2\x82"), "\"\\ufffd|\\ufffd\\ufffd|\\ufffd\\ufffd\"");
}

// The body of a chunked reply, its chunks joined; "" with `ok` false when malformed.
std::string Dechunk(const std::string& body, bool* ok) {
  std::string out;
  *ok = false;
  for (size_t at = 0;;) {
    const size_t line_end = body.find("\r\n", at);
    if (line_end == std::string::npos) return "";
    const size_t size = std::stoul(body.substr(at, line_end - at), nullptr, 16);
    if (size == 0) {
      *ok = true;
      return out;
    }
    out += body.substr(line_end + 2, size);
    at = line_end + 2 + size + 2;
  }
}

// Pieces "p0", "p1", ... (`count` of them; -1 = without end), with an empty one
// first, which is skipped; sets `destroyed` when the server lets go of it.
class CountingStream : public HttpBodyStream {
 public:
  CountingStream(int count, std::atomic<bool>* destroyed) : count_(count), destroyed_(destroyed) {}
  ~CountingStream() override { *destroyed_ = true; }
  bool Next(std::string* piece) override {
    if (!gave_empty_) {
      gave_empty_ = true;
      return true;
    }
    if (count_ >= 0 && next_ == count_) return false;
    if (count_ < 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    *piece = absl::StrCat("p", next_++);
    return true;
  }

 private:
  const int count_;
  std::atomic<bool>* const destroyed_;
  bool gave_empty_ = false;
  int next_ = 0;
};

// Waits up to 20 s for `done`: for what a server does after its reply.
bool Eventually(const std::function<bool()>& done) {
  for (int i = 0; i < 2000 && !done(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return done();
}

TEST(HttpServerTest, AStreamedBodyIsSentChunkedAndThenReleased) {
  std::atomic<bool> destroyed{false};
  auto server = StartOrDie({"127.0.0.1"}, [&destroyed](const HttpRequest&) {
    HttpResponse response{200, "application/x-ndjson", ""};
    response.stream = std::make_unique<CountingStream>(3, &destroyed);
    return response;
  });
  ASSERT_NE(server, nullptr);
  Reply reply = Exchange("127.0.0.1", server->port(), Get("/stream"));
  EXPECT_EQ(reply.status, 200);
  EXPECT_TRUE(absl::StrContains(reply.headers, "Transfer-Encoding: chunked")) << reply.headers;
  EXPECT_TRUE(absl::StrContains(reply.headers, "Content-Type: application/x-ndjson")) << reply.headers;
  bool ok = false;
  EXPECT_EQ(Dechunk(reply.body, &ok), "p0p1p2");
  EXPECT_TRUE(ok) << reply.body;
  EXPECT_TRUE(Eventually([&] { return destroyed.load(); }));
}

TEST(HttpServerTest, AStreamIsReleasedWhenItsCallerGoesAway) {
  std::atomic<bool> destroyed{false};
  auto server = StartOrDie({"127.0.0.1"}, [&destroyed](const HttpRequest&) {
    HttpResponse response{200, "application/x-ndjson", ""};
    response.stream = std::make_unique<CountingStream>(-1, &destroyed);  // never ends by itself
    return response;
  });
  ASSERT_NE(server, nullptr);
  const int fd = Connect("127.0.0.1", server->port());
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(SendAll(fd, Get("/endless")));
  char buffer[256];
  EXPECT_GT(recv(fd, buffer, sizeof(buffer), 0), 0);  // the stream has begun
  close(fd);
  EXPECT_TRUE(Eventually([&] { return destroyed.load(); }));
}

TEST(HttpServerTest, AHandlerSeesItsCallerGoneOnceTheConnectionCloses) {
  std::atomic<bool> waiting{false}, saw_gone{false};
  auto server = StartOrDie({"127.0.0.1"}, [&](const HttpRequest& request) {
    EXPECT_TRUE(request.caller_gone);
    EXPECT_FALSE(request.caller_gone());  // the caller is still there
    waiting = true;
    saw_gone = Eventually([&] { return request.caller_gone(); });
    return HttpResponse{200, "text/plain", "too late"};
  });
  ASSERT_NE(server, nullptr);
  const int fd = Connect("127.0.0.1", server->port());
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(SendAll(fd, Get("/slow")));
  ASSERT_TRUE(Eventually([&] { return waiting.load(); }));
  close(fd);
  EXPECT_TRUE(Eventually([&] { return saw_gone.load(); }));
}

TEST(HttpServerTest, TheCompletionHookSeesEveryRequestWithItsStatusAndPeer) {
  struct Seen {
    std::string peer, method, path;
    int status;
  };
  std::mutex mu;
  std::vector<Seen> seen;
  HttpServer::Options options{""};
  options.max_body_bytes = 10;
  const absl::Time before = absl::Now();
  options.on_complete = [&](const HttpRequest& request, int status, absl::Time received) {
    EXPECT_GE(received, before);
    std::lock_guard<std::mutex> lock(mu);
    seen.push_back({request.peer, request.method, request.path, status});
  };
  auto server = StartOrDie(options);
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(Exchange("127.0.0.1", server->port(), Get("/a?x=1")).status, 200);
  EXPECT_EQ(Exchange("127.0.0.1", server->port(), Post("/b", std::string(11, 'x'))).status, 413);
  const bool ipv6 = HostHasIpv6Loopback();
  if (ipv6) EXPECT_EQ(Exchange("::1", server->port(), Get("/c")).status, 200);
  const size_t expected = ipv6 ? 3 : 2;
  ASSERT_TRUE(Eventually([&] {
    std::lock_guard<std::mutex> lock(mu);
    return seen.size() == expected;
  }));
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_TRUE(absl::StartsWith(seen[0].peer, "ipv4:127.0.0.1:")) << seen[0].peer;
  EXPECT_EQ(seen[0].method, "GET");
  EXPECT_EQ(seen[0].path, "/a");
  EXPECT_EQ(seen[0].status, 200);
  EXPECT_EQ(seen[1].method, "POST");
  EXPECT_EQ(seen[1].path, "/b");
  EXPECT_EQ(seen[1].status, 413);
  if (ipv6) EXPECT_TRUE(absl::StartsWith(seen[2].peer, "ipv6:[::1]:")) << seen[2].peer;
}

}  // namespace
}  // namespace tcm
