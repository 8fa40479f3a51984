// NormalizeFlagNames: dash spellings, aliases, and an argv that stays valid.
// CheckServerTarget and MakeChannel: what --server and the TLS files accept.
#include "client/client_common.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace tcm {
namespace {

std::vector<std::string> Normalize(std::vector<std::string> in,
                                   const std::map<std::string, std::string>& aliases = {}) {
  std::vector<char*> argv;
  for (auto& s : in) argv.push_back(s.data());
  std::vector<std::string> storage;
  std::vector<char*> out = NormalizeFlagNames(static_cast<int>(argv.size()), argv.data(), &storage, aliases);
  return std::vector<std::string>(out.begin(), out.end());
}

TEST(NormalizeFlagNamesTest, DashesInNamesBecomeUnderscoresValuesUntouched) {
  EXPECT_EQ(Normalize({"tcm-client", "--list-models", "--out-dir=a-b", "--seed", "-3", "x-y"}),
            (std::vector<std::string>{"tcm-client", "--list_models", "--out_dir=a-b", "--seed", "-3", "x-y"}));
}

TEST(NormalizeFlagNamesTest, AliasesRenameTheFlagInEitherForm) {
  const std::map<std::string, std::string> aliases = {{"class", "class_label"}};
  EXPECT_EQ(Normalize({"tcm-client", "--class", "3", "--class=4", "--classes", "--class_label=5"}, aliases),
            (std::vector<std::string>{"tcm-client", "--class_label", "3", "--class_label=4", "--classes",
                                      "--class_label=5"}));
}

// Sixteen short arguments fill a vector's capacity exactly: every pointer must
// still read the right text once the alias has been applied.
TEST(NormalizeFlagNamesTest, EveryPointerReadsItsArgumentWithAnAlias) {
  std::vector<std::string> in = {"tcm-client", "--server", "s", "--model", "m", "--class", "3",     "--steps",
                                 "2",          "--num",    "5", "--seed",  "7", "--grid",  "--out", "d"};
  std::vector<std::string> want = in;
  want[5] = "--class_label";
  EXPECT_EQ(Normalize(in, {{"class", "class_label"}}), want);
}

const char kServerError[] =
    "--server: expected HOST:PORT with PORT in 1-65535 (or a gRPC target such as dns:///HOST:PORT or unix:PATH), got ";

TEST(CheckServerTargetTest, AcceptsHostPortAndGrpcTargets) {
  for (const char* target : {"localhost:50051", "127.0.0.1:1", "serve.example.com:65535", "[::1]:50051",
                             "[fe80::1%eth0]:443", "dns:///tcm.default.svc:50051", "dns://8.8.8.8/host:1",
                             "dns:host:50051", "unix:/run/tcm.sock", "unix:///run/tcm.sock", "unix-abstract:tcm",
                             "ipv4:127.0.0.1:50051,127.0.0.2:50051", "ipv6:[::1]:50051", "xds:///tcm"})
    EXPECT_TRUE(CheckServerTarget(target).ok()) << target << ": " << CheckServerTarget(target);
}

TEST(CheckServerTargetTest, RefusesPortsOutOfRangeAndMissingParts) {
  for (const char* target :
       {"", "127.0.0.1:99999", "127.0.0.1:65536", "localhost:0", "localhost:-1", "localhost:+5",
        "localhost:", "localhost", ":50051", "[::1]", "[::1]50051", "[]:50051", "[::1:50051", "::1:50051",
        "localhost:50051x", "localhost: 50051", "localhost:4294967297", "http://localhost:50051"}) {
    const absl::Status status = CheckServerTarget(target);
    EXPECT_TRUE(absl::IsInvalidArgument(status)) << target << ": " << status;
    EXPECT_EQ(status.message(), absl::StrCat(kServerError, "'", target, "'"));
  }
}

TEST(CheckServerTargetTest, QuotesTheTargetOnOneLine) {
  EXPECT_EQ(CheckServerTarget("a\nb:1\n2").message(), absl::StrCat(kServerError, "'a\\x0ab:1\\x0a2'"));
}

TEST(MakeChannelTest, RefusesABadServerBeforeMakingAChannel) {
  ChannelOptions options;
  options.server = "127.0.0.1:99999";
  EXPECT_EQ(MakeChannel(options).status().message(), absl::StrCat(kServerError, "'127.0.0.1:99999'"));
}

// A TLS file that is empty or a directory is an error naming the flag, never
// the system roots (--tls_ca) or no client certificate (--tls_cert/--tls_key).
class MakeChannelFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Its own folder: ctest runs each test of the suite as a process of its own, in parallel.
    dir_ = ::testing::TempDir() + "make_channel_files." + std::to_string(::getpid());
    ::mkdir(dir_.c_str(), 0700);
    empty_ = dir_ + "/empty.pem";
    std::FILE* f = std::fopen(empty_.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fclose(f);
  }
  void TearDown() override {
    std::remove(empty_.c_str());
    ::rmdir(dir_.c_str());
  }
  std::string dir_, empty_;
};

TEST_F(MakeChannelFilesTest, RefusesAnEmptyOrDirectoryCa) {
  ChannelOptions options;
  options.ca = empty_;
  EXPECT_EQ(MakeChannel(options).status().message(), absl::StrCat("--tls_ca: ", empty_, ": empty file"));
  options.ca = dir_;
  EXPECT_EQ(MakeChannel(options).status().message(), absl::StrCat("--tls_ca: ", dir_, ": not a regular file"));
  options.ca = dir_ + "/absent.pem";
  EXPECT_TRUE(absl::IsNotFound(MakeChannel(options).status())) << MakeChannel(options).status();
}

TEST_F(MakeChannelFilesTest, RefusesAnEmptyOrDirectoryClientCertificateOrKey) {
  ChannelOptions options;
  options.cert = empty_;
  options.key = dir_;
  EXPECT_EQ(MakeChannel(options).status().message(), absl::StrCat("--tls_cert: ", empty_, ": empty file"));
  options.cert = dir_;
  EXPECT_EQ(MakeChannel(options).status().message(), absl::StrCat("--tls_cert: ", dir_, ": not a regular file"));
}

}  // namespace
}  // namespace tcm
