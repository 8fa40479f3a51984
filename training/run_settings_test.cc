#include "training/run_settings.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

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

}  // namespace
}  // namespace tcm
