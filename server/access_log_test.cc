#include "server/access_log.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

namespace tcm {
namespace {

AccessRecord GenerateRecord() {
  AccessRecord r;
  r.time = absl::FromUnixMicros(1764752400123456);  // 2025-12-03T09:00:00.123456Z
  r.peer = "ipv4:127.0.0.1:43210";
  r.protocol = "grpc";
  r.method = "/tcm.v1.TcmService/Generate";
  r.status = "OK";
  r.generation = {"fashion-mnist-tcm", 2, 4, 0.25, 0.5};
  r.total_seconds = 0.875;
  return r;
}

TEST(AccessLogTest, LineIsOneJsonObjectWithEveryField) {
  const std::string line = AccessLogLine(GenerateRecord());
  EXPECT_EQ(line.find('\n'), std::string::npos);
  const nlohmann::json json = nlohmann::json::parse(line);
  EXPECT_EQ(json["time"], "2025-12-03T09:00:00.123456Z");
  EXPECT_EQ(json["peer"], "ipv4:127.0.0.1:43210");
  EXPECT_EQ(json["protocol"], "grpc");
  EXPECT_EQ(json["method"], "/tcm.v1.TcmService/Generate");
  EXPECT_FALSE(json.contains("path"));  // gRPC has none
  EXPECT_EQ(json["model"], "fashion-mnist-tcm");
  EXPECT_EQ(json["steps"], 2);
  EXPECT_EQ(json["images"], 4);
  EXPECT_EQ(json["status"], "OK");
  EXPECT_DOUBLE_EQ(json["queue_seconds"].get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(json["compute_seconds"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(json["total_seconds"].get<double>(), 0.875);
}

TEST(AccessLogTest, CallerTextIsEscapedIntoValidJson) {
  AccessRecord r = GenerateRecord();
  r.protocol = "http";
  r.method = "GET";
  r.path = std::string("/v2/\"quoted\"\\\n\x01\xff/caf\xc3\xa9", 22);
  const nlohmann::json json = nlohmann::json::parse(AccessLogLine(r));
  // UTF-8 reads back as sent; a byte that is not UTF-8 (0xff) as U+FFFD.
  EXPECT_EQ(json["path"], "/v2/\"quoted\"\\\n\x01\xef\xbf\xbd/caf\xc3\xa9");
}

TEST(AccessLogTest, AnnotationsAreTakenOnceByTheirKey) {
  auto log = AccessLog::Open("-");
  ASSERT_TRUE(log.ok());
  int a = 0, b = 0;
  (*log)->Annotate(&a, {"m", 1, 3, 0, 0});
  EXPECT_FALSE((*log)->Take(&b).has_value());
  auto taken = (*log)->Take(&a);
  ASSERT_TRUE(taken.has_value());
  EXPECT_EQ(taken->model, "m");
  EXPECT_EQ(taken->images, 3u);
  EXPECT_FALSE((*log)->Take(&a).has_value());
}

TEST(AccessLogTest, FileIsAppendedOneLinePerWrite) {
  const std::string path = ::testing::TempDir() + "/access_log_test." + std::to_string(getpid()) + ".log";
  std::ofstream(path) << "an earlier line\n";
  {
    auto log = AccessLog::Open(path);
    ASSERT_TRUE(log.ok()) << log.status();
    (*log)->Write(GenerateRecord());
    (*log)->Write(GenerateRecord());
  }
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "an earlier line");
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(std::getline(in, line));
    EXPECT_EQ(line, AccessLogLine(GenerateRecord()));
  }
  EXPECT_FALSE(std::getline(in, line));
  std::remove(path.c_str());
}

TEST(AccessLogTest, EmptyIsNoLogAndAnUnwritableFileIsNamed) {
  auto none = AccessLog::Open("");
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, nullptr);
  auto bad = AccessLog::Open("/nonexistent-directory/access.log");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(),
            "--access_log '/nonexistent-directory/access.log': cannot open for appending: No such file or directory "
            "(\"-\" = stderr, empty = no log)");
}

}  // namespace
}  // namespace tcm
