#include "common/write_file.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"

namespace tcm {
namespace {

namespace fs = std::filesystem;

std::string Contents(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The names of the files in `dir`, sorted.
std::vector<std::string> FilesIn(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

class WriteFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("write_file_test." + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(WriteFileTest, WritesTheBytesAndReplacesAnOldFile) {
  const std::string path = (dir_ / "a.bin").string();
  ASSERT_TRUE(WriteFileAtomically(path, "old contents").ok());
  const std::string data("new\0bytes", 9);
  ASSERT_TRUE(WriteFileAtomically(path, data).ok());
  EXPECT_EQ(Contents(path), data);
  EXPECT_EQ(FilesIn(dir_), std::vector<std::string>{"a.bin"});
  EXPECT_EQ(fs::status(path).permissions(),
            fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read | fs::perms::others_read);
}

TEST_F(WriteFileTest, AFailedWriteLeavesTheOldFileAndNoTemporaryOne) {
  const std::string path = (dir_ / "a.bin").string();
  ASSERT_TRUE(WriteFileAtomically(path, "old contents").ok());
  // A file size limit of 4 bytes: writes past it fail (EFBIG), as on a full disk.
  struct sigaction ignore {
  }, before{};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(sigaction(SIGXFSZ, &ignore, &before), 0);
  rlimit saved{};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &saved), 0);
  rlimit small = saved;
  small.rlim_cur = 4;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  const absl::Status status = WriteFileAtomically(path, std::string(4096, 'x'));
  setrlimit(RLIMIT_FSIZE, &saved);
  sigaction(SIGXFSZ, &before, nullptr);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(absl::StartsWith(status.message(), path + ": write failed: ")) << status.message();
  EXPECT_EQ(Contents(path), "old contents");
  EXPECT_EQ(FilesIn(dir_), std::vector<std::string>{"a.bin"});
}

TEST_F(WriteFileTest, AMissingFolderIsAnErrorNamingThePath) {
  const std::string path = (dir_ / "no" / "such" / "a.bin").string();
  const absl::Status status = WriteFileAtomically(path, "x");
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(absl::StartsWith(status.message(), path + ": cannot create: ")) << status.message();
}

// The problems WriteFileAtomically would meet, found without touching the file.
TEST_F(WriteFileTest, WritableFileProblemLooksWithoutWriting) {
  const fs::path old_file = dir_ / "old.json";
  std::ofstream(old_file) << "kept";
  EXPECT_EQ(WritableFileProblem(old_file.string()), "");
  EXPECT_EQ(Contents(old_file), "kept");
  EXPECT_EQ(WritableFileProblem((dir_ / "new.json").string()), "");
  EXPECT_FALSE(fs::exists(dir_ / "new.json"));
  EXPECT_EQ(WritableFileProblem(dir_.string()), "it is a directory");
  EXPECT_EQ(WritableFileProblem(dir_.string() + "/"), "it names a directory");
  EXPECT_EQ(WritableFileProblem("/dev/null"), "it is not a regular file");
  EXPECT_EQ(WritableFileProblem((dir_ / "no" / "a.json").string()),
            "its directory " + (dir_ / "no").string() + " does not exist");
  EXPECT_EQ(WritableFileProblem((old_file / "a.json").string()), old_file.string() + " is not a directory");
}

}  // namespace
}  // namespace tcm
