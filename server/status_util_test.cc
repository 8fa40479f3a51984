#include "server/status_util.h"

#include <gtest/gtest.h>

#include <string>

namespace tcm {
namespace {

TEST(StatusUtilTest, MessagesUpToTheLimitPassWhole) {
  const grpc::Status status = ToGrpcStatus(absl::NotFoundError(std::string(kMaxStatusMessageBytes, 'a')));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(status.error_message(), std::string(kMaxStatusMessageBytes, 'a'));
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
}

TEST(StatusUtilTest, LongerMessagesAreCutAtACharacterStartWithTheirLengthNoted) {
  // 959 ASCII bytes, then two-byte characters: the cut, due at byte 960,
  // falls inside one and moves back to its start.
  std::string message(959, 'a');
  for (int i = 0; i < 200; ++i) message += "\xC3\xA9";  // U+00E9
  const grpc::Status status = ToGrpcStatus(absl::InvalidArgumentError(message));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), std::string(959, 'a') + "... (cut at 959 of 1359 bytes)");
  EXPECT_LE(status.error_message().size(), kMaxStatusMessageBytes);
}

}  // namespace
}  // namespace tcm
