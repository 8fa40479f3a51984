#include "common/tool_main.h"

#include <gtest/gtest.h>

#include <stdexcept>

namespace tcm {
namespace {

TEST(RunToolMainTest, AnOkStatusExitsZeroSilently) {
  testing::internal::CaptureStderr();
  EXPECT_EQ(RunToolMain("tool", [] { return absl::OkStatus(); }), 0);
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
}

TEST(RunToolMainTest, ABodysOwnExitCodeIsKept) {
  EXPECT_EQ(RunToolMain("tool", []() -> absl::StatusOr<int> { return 1; }), 1);
  EXPECT_EQ(RunToolMain("tool", []() -> absl::StatusOr<int> { return 0; }), 0);
}

TEST(RunToolMainTest, AFailedStatusPrintsOneLineAndExitsTwo) {
  testing::internal::CaptureStderr();
  EXPECT_EQ(RunToolMain("tcm-x", [] { return absl::InvalidArgumentError("--num must be positive"); }), 2);
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "tcm-x: --num must be positive\n");
  testing::internal::CaptureStderr();
  EXPECT_EQ(RunToolMain("tcm-x", []() -> absl::StatusOr<int> { return absl::NotFoundError("no such file"); }), 2);
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "tcm-x: no such file\n");
}

TEST(RunToolMainTest, AnExceptionPrintsOneLineAndExitsTwo) {
  testing::internal::CaptureStderr();
  EXPECT_EQ(RunToolMain("tcm-x", []() -> absl::Status { throw std::runtime_error("shape mismatch"); }), 2);
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "tcm-x: shape mismatch\n");
  // A message with a stack trace after its first line (as LibTorch's have) prints that line only.
  testing::internal::CaptureStderr();
  EXPECT_EQ(RunToolMain("tcm-x",
                        []() -> absl::Status {
                          throw std::runtime_error("Invalid learning rate: nan\nException raised from ...\nframe #0");
                        }),
            2);
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "tcm-x: Invalid learning rate: nan\n");
}

}  // namespace
}  // namespace tcm
