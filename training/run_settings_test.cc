#include "training/run_settings.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "absl/strings/match.h"

namespace tcm {
namespace {

std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() / (name + "_" + std::to_string(::getpid()) + ".json")).string();
}

TEST(RunSettingsTest, WrittenSettingsReadBackEqual) {
  const std::string path = TempPath("tcm_run_settings");
  const RunSettings settings = {{"stage", "truncated"}, {"lr", "0.0005"}, {"teacher", "runs/ct/model"}, {"init", ""}};
  ASSERT_TRUE(WriteRunSettings(path, settings).ok());
  auto read = ReadRunSettings(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, settings);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  std::filesystem::remove(path);
}

TEST(RunSettingsTest, AbsentOrMalformedFilesAreErrors) {
  EXPECT_EQ(ReadRunSettings(TempPath("tcm_run_settings_absent")).status().code(), absl::StatusCode::kNotFound);
  const std::string path = TempPath("tcm_run_settings_bad");
  for (const char* text : {"not json", "[1, 2]", "{\"lr\": 0.001}"}) {
    std::ofstream(path) << text;
    const auto read = ReadRunSettings(path);
    EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument) << text;
  }
  std::filesystem::remove(path);
}

TEST(RunSettingsTest, ChangesNameEachDifferingSettingInOrder) {
  const RunSettings run = {{"stage", "consistency"}, {"lr", "0.001"}, {"seed", "0"}, {"dropout", "0.1"}};
  EXPECT_TRUE(DescribeSettingChanges(run, run).empty());
  RunSettings now = run;
  now["lr"] = "0.002";
  now["dropout"] = "0.2";
  now.erase("seed");
  now["q"] = "4";
  EXPECT_EQ(DescribeSettingChanges(run, now),
            (std::vector<std::string>{"--dropout: the run's 0.1, now 0.2", "--lr: the run's 0.001, now 0.002",
                                      "--q: the run's unset, now 4", "--seed: the run's 0, now unset"}));
}

// A resumed run cuts its logs back to its checkpoint's step: lines of later
// steps and a partial last line go, the rest stays byte for byte.
TEST(TrimStepLogTest, CutsBackToTheCheckpointsStep) {
  const std::string path = TempPath("tcm_trim_log");
  const auto write = [&](const std::string& text) { std::ofstream(path, std::ios::binary) << text; };
  const auto read = [&] {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  const std::string kept = "{\"step\": 1, \"loss\": 0.5}\n{\"step\": 2, \"loss\": 0.4}\n";
  write(kept + "{\"step\": 3, \"loss\": 0.3}\n{\"step\": 4, \"lo");
  ASSERT_TRUE(TrimStepLog(path, 2).ok());
  EXPECT_EQ(read(), kept);
  write(kept + "{\"step\": 3, \"lo");  // only a partial line
  ASSERT_TRUE(TrimStepLog(path, 3).ok());
  EXPECT_EQ(read(), kept);
  ASSERT_TRUE(TrimStepLog(path, 5).ok());  // nothing past the step: unchanged
  EXPECT_EQ(read(), kept);
  ASSERT_TRUE(TrimStepLog(path, 0).ok());  // a new run in a directory with an old log
  EXPECT_EQ(read(), "");
  std::filesystem::remove(path);
  ASSERT_TRUE(TrimStepLog(path, 1).ok());  // no log yet
  EXPECT_FALSE(std::filesystem::exists(path));
}

// A directory or a FIFO where a run's file belongs is refused by name before
// it is opened (reading a directory throws; opening a FIFO blocks for good).
TEST(RunSettingsTest, FilesThatAreNotRegularAreRefusedByName) {
  const std::string dir = TempPath("tcm_run_settings_dir"), fifo = TempPath("tcm_run_settings_fifo");
  ASSERT_TRUE(std::filesystem::create_directory(dir));
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  for (const std::string& path : {dir, fifo}) {
    const auto settings = ReadRunSettings(path);
    EXPECT_EQ(settings.status().code(), absl::StatusCode::kInvalidArgument) << path;
    EXPECT_EQ(settings.status().message(), path + ": not a regular file");
    const absl::Status trimmed = TrimStepLog(path, 1);
    EXPECT_EQ(trimmed.message(), path + ": not a regular file");
    const auto digest = FileDigest(path);
    EXPECT_EQ(digest.status().message(), path + ": not a regular file");
  }
  std::filesystem::remove(dir);
  std::filesystem::remove(fifo);
}

TEST(FileDigestTest, FollowsTheContents) {
  const std::string path = TempPath("tcm_digest");
  std::ofstream(path) << "a";
  const absl::StatusOr<std::string> a = FileDigest(path);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(*a, "fnv1a64:af63dc4c8601ec8c");  // FNV-1a of "a"
  std::ofstream(path) << "b";
  EXPECT_NE(*FileDigest(path), *a);
  std::filesystem::remove(path);
  EXPECT_EQ(FileDigest(path).status().code(), absl::StatusCode::kNotFound);
}

// Many files in one digest: a change to any file's contents, a file added or
// renamed, or another order changes it.
TEST(FilesDigestTest, FollowsEveryFileAndItsName) {
  const std::string a = TempPath("tcm_digest_a"), b = TempPath("tcm_digest_b"), c = TempPath("tcm_digest_c");
  std::ofstream(a) << "a";
  std::ofstream(b) << "b";
  std::ofstream(c) << "b";
  const absl::StatusOr<std::string> ab = FilesDigest({a, b});
  ASSERT_TRUE(ab.ok()) << ab.status();
  EXPECT_TRUE(absl::StartsWith(*ab, "2 files fnv1a64:")) << *ab;
  EXPECT_EQ(ab->size(), std::string("2 files fnv1a64:").size() + 16);
  EXPECT_EQ(*FilesDigest({a, b}), *ab);
  EXPECT_NE(*FilesDigest({b, a}), *ab);
  EXPECT_NE(*FilesDigest({a, c}), *ab);  // the same contents under another name
  EXPECT_TRUE(absl::StartsWith(*FilesDigest({a, b, c}), "3 files fnv1a64:"));
  std::ofstream(b) << "B";
  EXPECT_NE(*FilesDigest({a, b}), *ab);
  std::filesystem::remove(b);
  EXPECT_EQ(FilesDigest({a, b}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*FilesDigest({}), "0 files fnv1a64:cbf29ce484222325");  // FNV-1a's offset basis
  EXPECT_TRUE(absl::StartsWith(*FilesDigest({a}), "1 file fnv1a64:"));
  std::filesystem::remove(a);
  std::filesystem::remove(c);
}

}  // namespace
}  // namespace tcm
