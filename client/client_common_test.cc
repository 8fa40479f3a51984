// NormalizeFlagNames: dash spellings, aliases, and an argv that stays valid.
#include "client/client_common.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

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

}  // namespace
}  // namespace tcm
