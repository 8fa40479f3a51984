// RestService's generation endpoints without sockets and without LibTorch:
// the test calls Handle as a connection thread would and plays the workers
// of a fake GenerationQueue.
#include "server/rest_service.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "server/fake_generation_queue.h"
#include "server/image_line_stream.h"
#include "server/metrics.h"
#include "server/page_policy.h"
#include "server/served_model_test_util.h"

namespace tcm {
namespace {

constexpr int kSide = 2, kChannels = 1;

class RestServiceTest : public ::testing::Test {
 protected:
  RestServiceTest() {
    ServedModel cond = testing::TenClassModel("cond", kSide, kChannels);
    cond.class_names = testing::DigitNames();
    models_ = {cond};
    metrics_ = std::make_unique<ServerMetrics>(models_);
    GenerationFront::Options options;
    rest_ = std::make_unique<RestService>(
        options, models_, &queue_, metrics_.get(), [](const std::string&) { return true; }, nullptr);
  }

  HttpResponse Get(const std::string& path, std::map<std::string, std::string> query = {}) {
    request_.method = "GET";
    request_.path = path;
    request_.query = std::move(query);
    return rest_->Handle(request_);
  }

  // Every line of a streamed body, parsed, to its end.
  static std::vector<nlohmann::json> ReadLines(HttpBodyStream& stream) {
    std::vector<nlohmann::json> lines;
    for (std::string piece; stream.Next(&piece); piece.clear()) {
      EXPECT_TRUE(absl::EndsWith(piece, "\n")) << piece;
      if (piece == "\n") continue;  // a heartbeat
      lines.push_back(nlohmann::json::parse(piece));
    }
    return lines;
  }

  static void FinishImage(RequestState& request, unsigned index, uint8_t value) {
    const std::vector<uint8_t> pixels(kSide * kSide * kChannels, value);
    request.ImageDone(index, pixels.data(), kSide, kSide, kChannels);
  }

  std::vector<ServedModel> models_;
  testing::FakeGenerationQueue queue_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<RestService> rest_;
  HttpRequest request_;
};

TEST_F(RestServiceTest, AStreamSendsEachImageAsALineThenTheEnd) {
  HttpResponse response = Get("/v1/models/cond/stream", {{"class", "3"}, {"seed", "9"}, {"num", "2"}});
  ASSERT_EQ(response.status, 200) << response.body;
  EXPECT_EQ(response.content_type, "application/x-ndjson");
  ASSERT_NE(response.stream, nullptr);
  auto request = queue_.WaitForRequest(0);
  ASSERT_NE(request, nullptr);
  EXPECT_EQ(request->spec().format, v1::IMAGE_FORMAT_PNG);
  EXPECT_EQ(request->spec().class_labels, (std::vector<int64_t>{3, 3}));
  std::thread workers([&] {
    FinishImage(*request, 1, 10);
    FinishImage(*request, 0, 20);
  });
  const std::vector<nlohmann::json> lines = ReadLines(*response.stream);
  workers.join();
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0]["index"], 1);  // completion order
  EXPECT_EQ(lines[1]["index"], 0);
  for (int i : {0, 1}) {
    EXPECT_EQ(lines[i]["class"], 3);
    EXPECT_EQ(lines[i]["preview"], false);
    std::string png;
    ASSERT_TRUE(absl::Base64Unescape(lines[i]["png"].get<std::string>(), &png));
    EXPECT_EQ(png.substr(0, 8), "\x89PNG\r\n\x1a\n");
  }
  EXPECT_EQ(lines[2], nlohmann::json::parse(R"({"end": true, "status": "OK", "model": "cond", "steps": 1,
                                                "seed": "9"})"));
}

TEST_F(RestServiceTest, AStreamWhoseCallerLeftCancelsItsCallAndWaitsForItsEnd) {
  HttpResponse response = Get("/v1/models/cond/stream", {{"class", "1"}, {"num", "2"}});
  ASSERT_NE(response.stream, nullptr);
  auto request = queue_.WaitForRequest(0);
  ASSERT_NE(request, nullptr);
  FinishImage(*request, 0, 1);
  std::string first;
  ASSERT_TRUE(response.stream->Next(&first));
  // The connection lets go of the body: the call is cancelled, and the body
  // is not gone until the call has ended (so the call never outlives its request).
  std::atomic<bool> released{false};
  std::thread connection([&] {
    response.stream.reset();
    released = true;
  });
  const absl::Status abandoned = testing::WaitUntilAbandoned(*request);
  EXPECT_EQ(abandoned.code(), absl::StatusCode::kCancelled) << abandoned;
  EXPECT_FALSE(released.load());
  request->Fail(abandoned);
  connection.join();
  EXPECT_TRUE(released.load());
}

TEST_F(RestServiceTest, ACallerThatClosesItsConnectionCancelsItsCall) {
  std::atomic<bool> gone{false};
  request_.caller_gone = [&gone] { return gone.load(); };
  for (const std::string path : {"/v1/models/cond/generate", "/v2/models/cond/infer"}) {
    SCOPED_TRACE(path);
    const size_t n = queue_.submitted();
    gone = false;
    std::future<HttpResponse> answer = std::async(std::launch::async, [&] {
      request_.method = path == "/v2/models/cond/infer" ? "POST" : "GET";
      request_.path = path;
      request_.query = {};
      if (request_.method == "GET") request_.query = {{"class", "2"}, {"num", "2"}};
      request_.body = R"({"inputs": [{"name": "class_label", "datatype": "INT64", "shape": [2], "data": [2, 2]}]})";
      return rest_->Handle(request_);
    });
    auto request = queue_.WaitForRequest(n);
    ASSERT_NE(request, nullptr);
    EXPECT_TRUE(request->Abandoned(absl::Now()).ok());  // still wanted while the caller is there
    gone = true;
    const absl::Status abandoned = testing::WaitUntilAbandoned(*request);
    EXPECT_EQ(abandoned.code(), absl::StatusCode::kCancelled) << abandoned;
    request->Fail(abandoned);  // as the batcher does with a cancelled call's images
    EXPECT_EQ(answer.get().status, 499);
  }
}

TEST_F(RestServiceTest, AStreamEndsOnceItsCallerIsGoneAndCancelsItsCall) {
  std::atomic<bool> gone{false};
  request_.caller_gone = [&gone] { return gone.load(); };
  HttpResponse response = Get("/v1/models/cond/stream", {{"class", "1"}, {"num", "2"}});
  ASSERT_NE(response.stream, nullptr);
  EXPECT_EQ(response.headers, (std::vector<std::pair<std::string, std::string>>{{"Cache-Control", "no-cache"},
                                                                                {"X-Accel-Buffering", "no"}}));
  auto request = queue_.WaitForRequest(0);
  ASSERT_NE(request, nullptr);
  gone = true;
  std::string piece;
  EXPECT_FALSE(response.stream->Next(&piece));  // no image came, and nobody would read it
  std::thread connection([&] { response.stream.reset(); });
  const absl::Status abandoned = testing::WaitUntilAbandoned(*request);
  EXPECT_EQ(abandoned.code(), absl::StatusCode::kCancelled) << abandoned;
  request->Fail(abandoned);
  connection.join();
}

TEST(ImageLineBodyTest, AQuietCallSendsEmptyLinesUntilItsNextLine) {
  auto channel = std::make_shared<ImageLineChannel>();
  auto* sink = new ImageLineSink(channel);  // deletes itself at OnFinish
  ImageLineBody body(channel, nullptr, /*heartbeat=*/absl::ZeroDuration());
  std::string piece;
  ASSERT_TRUE(body.Next(&piece));
  EXPECT_EQ(piece, "\n");
  v1::Image image;
  image.set_index(4);
  image.set_class_label(7);
  image.set_data("png bytes");
  sink->OnImage(image);
  ASSERT_TRUE(body.Next(&piece));
  EXPECT_EQ(nlohmann::json::parse(piece)["index"], 4);
  sink->OnFinish(absl::DeadlineExceededError("too late"), v1::Timings());
  ASSERT_TRUE(body.Next(&piece));
  EXPECT_EQ(nlohmann::json::parse(piece),
            nlohmann::json::parse(R"({"end": true, "status": "DEADLINE_EXCEEDED", "error": "too late"})"));
  EXPECT_FALSE(body.Next(&piece));
}

TEST_F(RestServiceTest, AStreamRefusedByTheQueueIsAnErrorNotAStream) {
  queue_.RefuseWith(absl::ResourceExhaustedError("queue full"));
  HttpResponse response = Get("/v1/models/cond/stream", {{"class", "1"}});
  EXPECT_EQ(response.status, 429);
  EXPECT_EQ(response.stream, nullptr);
  EXPECT_EQ(response.body, R"({"error": "queue full"})");
}

TEST_F(RestServiceTest, BadQueriesNameTheField) {
  HttpResponse preview = Get("/v1/models/cond/stream", {{"preview", "yes"}});
  EXPECT_EQ(preview.status, 400);
  EXPECT_TRUE(absl::StrContains(preview.body, "query 'preview': must be an integer in [0, 1]")) << preview.body;
  HttpResponse unknown = Get("/v1/models/cond/generate", {{"preview", "1"}});
  EXPECT_EQ(unknown.status, 400);
  EXPECT_TRUE(absl::StrContains(unknown.body, "query 'preview': unknown (known: class, steps, seed, num)"))
      << unknown.body;
  EXPECT_EQ(Get("/v1/models/nope/stream").status, 404);
  // Where tcm.v1's validation refuses, the query's own keys are named.
  const std::vector<std::pair<std::map<std::string, std::string>, std::string>> cases = {
      {{{"num", "65"}}, "query 'num': must be at most 64, got 65"},
      {{{"class", "10"}}, "query 'class': must be in [0, 10) for model 'cond', got 10"},
      {{{"class", "-1"}}, "query 'class': must be in [0, 10) for model 'cond', got -1"},
      {{{"class", "abc"}}, "query 'class': must be an integer, got 'abc'"},
      // The range is the one that applies (--max_images_per_request here), not the type's.
      {{{"num", "0"}}, "query 'num': must be an integer in [1, 64], got '0'"},
      {{{"num", "-3"}}, "query 'num': must be an integer in [1, 64], got '-3'"},
      {{{"num", "two"}}, "query 'num': must be an integer in [1, 64], got 'two'"},
      {{{"num", "4294967296"}}, "query 'num': must be an integer in [1, 64], got '4294967296'"},
  };
  for (const auto& [query, message] : cases) {
    HttpResponse refused = Get("/v1/models/cond/generate", query);
    EXPECT_EQ(refused.status, 400);
    EXPECT_EQ(nlohmann::json::parse(refused.body)["error"], message);
  }
  EXPECT_EQ(queue_.submitted(), 0u);
}

TEST(RestServiceLimitsTest, BadImageCountsNameTheLimitThatApplies) {
  // The server's --max_images_per_request (16) and a model's own smaller cap (4).
  ServedModel cond = testing::TenClassModel("cond", kSide, kChannels);
  ServedModel small = testing::TenClassModel("small", kSide, kChannels);
  small.max_images = 4;
  const std::vector<ServedModel> models = {cond, small};
  ServerMetrics metrics(models);
  testing::FakeGenerationQueue queue;
  GenerationFront::Options options;
  options.limits.max_images_per_request = 16;
  RestService rest(
      options, models, &queue, &metrics, [](const std::string&) { return true; }, nullptr);
  const std::vector<std::tuple<std::string, std::string, std::string>> cases = {
      {"cond", "0", "query 'num': must be an integer in [1, 16], got '0'"},
      {"cond", "17", "query 'num': must be at most 16, got 17"},
      {"small", "0", "query 'num': must be an integer in [1, 4] for model 'small', got '0'"},
      {"small", "5", "query 'num': must be at most 4 for model 'small', got 5"},
      {"small", "99999999999", "query 'num': must be an integer in [1, 4] for model 'small', got '99999999999'"},
  };
  for (const auto& [model, num, message] : cases) {
    HttpRequest request;
    request.method = "GET";
    request.path = "/v1/models/" + model + "/generate";
    request.query = {{"num", num}};
    HttpResponse refused = rest.Handle(request);
    EXPECT_EQ(refused.status, 400) << refused.body;
    EXPECT_EQ(nlohmann::json::parse(refused.body)["error"], message);
  }
  // An unknown model is still a 404, whatever the count.
  HttpRequest unknown;
  unknown.method = "GET";
  unknown.path = "/v1/models/nope/generate";
  unknown.query = {{"num", "3"}};
  EXPECT_EQ(rest.Handle(unknown).status, 404);
  EXPECT_EQ(queue.submitted(), 0u);
}

TEST(RestServiceModelListTest, TheModelListIsTheModelsServedNow) {
  // Model control publishes new tables while serving; GET /v1/models follows them, as ListModels does.
  ServedModel cond = testing::TenClassModel("cond", kSide, kChannels);
  ServerMetrics metrics({cond});
  auto catalog = std::make_shared<ModelCatalog>(ModelTable{NumberSlots({cond}), 0});
  testing::FakeGenerationQueue queue;
  GenerationFront::Options options;
  options.catalog = catalog;
  RestService rest(
      options, {}, &queue, &metrics, [](const std::string&) { return true; }, nullptr);
  auto names = [&] {
    HttpRequest request;
    request.method = "GET";
    request.path = "/v1/models";
    HttpResponse list = rest.Handle(request);
    EXPECT_EQ(list.status, 200);
    std::vector<std::string> served;
    const nlohmann::json json = nlohmann::json::parse(list.body);
    for (const auto& m : json["models"]) served.push_back(m["name"].get<std::string>());
    EXPECT_EQ(json["max_images_per_request"], 64);
    return served;
  };
  EXPECT_EQ(names(), std::vector<std::string>{"cond"});

  ServedModel uncond = testing::Unconditional(cond, "uncond");
  uncond.slot = 1;
  uncond.version = 1;
  ServedModel cond_v2 = cond;
  cond_v2.slot = 0;
  cond_v2.version = 2;
  catalog->Publish(ModelTable{{cond_v2, uncond}, 0});  // a load
  EXPECT_EQ(names(), (std::vector<std::string>{"cond", "uncond"}));
  HttpRequest list;
  list.method = "GET";
  list.path = "/v1/models";
  const nlohmann::json loaded = nlohmann::json::parse(rest.Handle(list).body);
  EXPECT_EQ(loaded["models"][0]["version"], 2);
  EXPECT_EQ(loaded["models"][1]["is_default"], false);

  catalog->Publish(ModelTable{{cond_v2}, 0});  // an unload
  EXPECT_EQ(names(), std::vector<std::string>{"cond"});
  HttpRequest gone;
  gone.method = "GET";
  gone.path = "/v1/models/uncond/generate";
  EXPECT_EQ(rest.Handle(gone).status, 404);
}

TEST_F(RestServiceTest, HeadOfAGenerationChecksTheQueryAndStartsNoWork) {
  for (const char* endpoint : {"generate", "stream"}) {
    request_.method = "HEAD";
    request_.path = absl::StrCat("/v1/models/cond/", endpoint);
    request_.query = {{"class", "3"}, {"num", "2"}};
    HttpResponse head = rest_->Handle(request_);
    EXPECT_EQ(head.status, 200) << head.body;
    EXPECT_EQ(head.content_type, endpoint == std::string("stream") ? "application/x-ndjson" : "image/png");
    EXPECT_EQ(head.stream, nullptr);
    EXPECT_EQ(head.body, "");
    request_.query = {{"class", "10"}};
    HttpResponse refused = rest_->Handle(request_);
    EXPECT_EQ(refused.status, 400);
    EXPECT_TRUE(absl::StrContains(refused.body, "query 'class'")) << refused.body;
  }
  EXPECT_EQ(queue_.submitted(), 0u);
}

TEST_F(RestServiceTest, BinaryTensorDataIsRefusedByName) {
  request_.method = "POST";
  request_.path = "/v2/models/cond/infer";
  request_.headers = {{"inference-header-content-length", "120"}};
  request_.body = R"({"inputs": [{"name": "class_label", "datatype": "INT64", "shape": [1], "data": [3]}]})";
  HttpResponse refused = rest_->Handle(request_);
  EXPECT_EQ(refused.status, 400);
  EXPECT_TRUE(absl::StrContains(refused.body, "Inference-Header-Content-Length: the binary tensor data extension"))
      << refused.body;
  EXPECT_EQ(queue_.submitted(), 0u);
}

TEST(PagePolicyTest, OnlyThePagesOwnScriptMayRun) {
  // SHA-256 of "\nalert(1);\n", base64.
  EXPECT_EQ(PageContentSecurityPolicy("<p>x</p><script>\nalert(1);\n</script>"),
            "default-src 'none'; script-src 'sha256-L+t9q3v5LeakHkwTJJlqwHiLsxVtqG4eOt8NDvhN6eg='; "
            "style-src 'unsafe-inline'; img-src data:; connect-src 'self'; form-action 'none'; base-uri 'none'; "
            "frame-ancestors 'none'");
}

TEST_F(RestServiceTest, ThePageAndTheModelListAreServed) {
  HttpResponse page = Get("/");
  EXPECT_EQ(page.status, 200);
  EXPECT_EQ(page.content_type, "text/html; charset=utf-8");
  EXPECT_TRUE(absl::StartsWith(page.body, "<!doctype html>")) << page.body.substr(0, 40);
  EXPECT_TRUE(absl::StrContains(page.body, "fetch(`v1/models/"));
  EXPECT_EQ(page.headers, (std::vector<std::pair<std::string, std::string>>{
                              {"Content-Security-Policy", PageContentSecurityPolicy(page.body)}}));
  HttpResponse list = Get("/v1/models");
  ASSERT_EQ(list.status, 200);
  const nlohmann::json json = nlohmann::json::parse(list.body);
  EXPECT_EQ(json["models"][0]["name"], "cond");
  EXPECT_EQ(json["models"][0]["class_names"][3], "three");
  EXPECT_EQ(json["models"][0]["is_default"], true);
  EXPECT_EQ(json["max_images_per_request"], 64);
  request_.method = "POST";
  HttpResponse wrong = rest_->Handle(request_);
  EXPECT_EQ(wrong.status, 405);
  EXPECT_EQ(wrong.headers, (std::vector<std::pair<std::string, std::string>>{{"Allow", "GET, HEAD"}}));
  request_.method = "GET";
  request_.path = "/v2/models/cond/infer";
  wrong = rest_->Handle(request_);
  EXPECT_EQ(wrong.status, 405);
  EXPECT_EQ(wrong.headers, (std::vector<std::pair<std::string, std::string>>{{"Allow", "POST"}}));
}

}  // namespace
}  // namespace tcm
