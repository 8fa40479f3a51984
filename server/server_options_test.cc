#include "server/server_options.h"

#include <gtest/gtest.h>

#include <limits>
#include <optional>

#include "absl/strings/match.h"

namespace tcm {
namespace {

v1::ModelConfig WithBatching(std::optional<uint32_t> batch, std::optional<uint64_t> delay_us,
                             std::optional<uint32_t> queue) {
  v1::ModelConfig config;
  if (batch) config.mutable_batching()->set_max_batch_size(*batch);
  if (delay_us) config.mutable_batching()->set_max_queue_delay_us(*delay_us);
  if (queue) config.mutable_batching()->set_max_queue_size(*queue);
  return config;
}

TEST(ServerOptionsTest, DefaultsAreTheBatchersAndValid) {
  const ServerOptions defaults;
  EXPECT_TRUE(CheckServerOptions(defaults).ok());
  const Batcher::ModelQueueOptions batcher;
  EXPECT_EQ(static_cast<size_t>(defaults.max_batch_size), batcher.max_batch_size);
  EXPECT_EQ(static_cast<size_t>(defaults.max_queue_size), batcher.max_queue_size);
  EXPECT_EQ(absl::Microseconds(defaults.max_queue_delay_us), batcher.max_queue_delay);
  EXPECT_EQ(defaults.max_batch_size, 16);
  EXPECT_EQ(defaults.max_queue_size, 256);
}

TEST(ServerOptionsTest, TheServersBatchSizeIsCheckedAgainstAModelsActivations) {
  // Fits at batch 1 (about 2.7e9 values per image), not at the server's 64.
  v1::ModelConfig config;
  config.set_img_resolution(4096);
  config.set_img_channels(1);
  config.mutable_edm2()->set_model_channels(16);
  config.mutable_edm2()->add_channel_mult(1);
  config.mutable_edm2()->set_num_blocks(1);
  ServerOptions flags;
  flags.max_batch_size = 64;
  flags.max_queue_size = 256;
  auto refused = MergeQueueOptions("big", config, true, flags);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(refused.status().message(),
                                "model 'big': --max_batch_size: a batch of 64 images of 4096x4096 needs about"))
      << refused.status();
  config.mutable_batching()->set_max_batch_size(1);  // the model's own batch size wins
  auto alone = MergeQueueOptions("big", config, true, flags);
  EXPECT_TRUE(alone.ok()) << alone.status();
}

TEST(ServerOptionsTest, AModelsBatchingWinsFieldByFieldAndZeroDelayIsAValue) {
  ServerOptions flags;
  flags.max_batch_size = 8;
  flags.max_queue_delay_us = 500;
  flags.max_queue_size = 100;
  auto unset = MergeQueueOptions("m", v1::ModelConfig(), true, flags);
  ASSERT_TRUE(unset.ok()) << unset.status();
  EXPECT_EQ(unset->name, "m");
  EXPECT_EQ(unset->max_batch_size, 8u);
  EXPECT_EQ(unset->max_queue_delay, absl::Microseconds(500));
  EXPECT_EQ(unset->max_queue_size, 100u);

  auto set = MergeQueueOptions("m", WithBatching(4, 0, std::nullopt), true, flags);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->max_batch_size, 4u);
  EXPECT_EQ(set->max_queue_delay, absl::ZeroDuration()) << "0 in the config means no wait, not the flag";
  EXPECT_EQ(set->max_queue_size, 100u);
}

TEST(ServerOptionsTest, AQueueSmallerThanABatchIsRefusedNotRaised) {
  ServerOptions flags;
  flags.max_queue_size = 4;
  auto from_flag = MergeQueueOptions("m", WithBatching(16, std::nullopt, std::nullopt), true, flags);
  ASSERT_FALSE(from_flag.ok());
  EXPECT_EQ(from_flag.status().message(),
            "model 'm': its queue (max_queue_size 4, --max_queue_size) must hold a whole batch (16, "
            "batching.max_batch_size)");
  auto from_config = MergeQueueOptions("m", WithBatching(std::nullopt, std::nullopt, 2), true, ServerOptions());
  ASSERT_FALSE(from_config.ok());
  EXPECT_EQ(from_config.status().message(),
            "model 'm': its queue (max_queue_size 2, batching.max_queue_size) must hold a whole batch (16, "
            "--max_batch_size)");
  auto zero = MergeQueueOptions("m", WithBatching(0, std::nullopt, std::nullopt), true, ServerOptions());
  ASSERT_FALSE(zero.ok());
  EXPECT_EQ(zero.status().message(), "model 'm': batching.max_batch_size must be at least 1, got 0");
}

TEST(ServerOptionsTest, StepLevelBatchingFollowsTheFlagAndTheNetwork) {
  ServerOptions flags;
  auto shared = MergeQueueOptions("m", v1::ModelConfig(), /*steps_share_network=*/true, flags);
  ASSERT_TRUE(shared.ok());
  EXPECT_TRUE(shared->mix_steps);
  EXPECT_TRUE(shared->mix_kinds);
  auto composed = MergeQueueOptions("m", v1::ModelConfig(), /*steps_share_network=*/false, flags);
  ASSERT_TRUE(composed.ok());
  EXPECT_FALSE(composed->mix_steps);
  EXPECT_TRUE(composed->mix_kinds);
  flags.step_level_batching = false;
  auto apart = MergeQueueOptions("m", v1::ModelConfig(), true, flags);
  ASSERT_TRUE(apart.ok());
  EXPECT_FALSE(apart->mix_steps);
  EXPECT_FALSE(apart->mix_kinds);
}

TEST(ServerOptionsTest, PriorityLevelsComeFromTheConfigOrTheFlagsAndZeroIsTheLowest) {
  ServerOptions flags;  // 2 levels, default 0 = the lowest
  auto from_flags = MergeQueueOptions("m", v1::ModelConfig(), true, flags);
  ASSERT_TRUE(from_flags.ok()) << from_flags.status();
  EXPECT_EQ(from_flags->priority_levels, 2);
  EXPECT_EQ(from_flags->default_priority_level, 2);
  v1::ModelConfig config;
  config.mutable_batching()->set_priority_levels(4);
  auto four = MergeQueueOptions("m", config, true, flags);
  ASSERT_TRUE(four.ok()) << four.status();
  EXPECT_EQ(four->priority_levels, 4);
  EXPECT_EQ(four->default_priority_level, 4);
  config.mutable_batching()->set_default_priority_level(1);
  EXPECT_EQ(MergeQueueOptions("m", config, true, flags)->default_priority_level, 1);
  flags.default_priority_level = 3;
  auto too_low = MergeQueueOptions("m", v1::ModelConfig(), true, flags);
  ASSERT_FALSE(too_low.ok());
  EXPECT_EQ(too_low.status().message(),
            "model 'm': --default_priority_level (3) must be at most its priority levels (2, --priority_levels); "
            "0 = the lowest");
  config.mutable_batching()->set_priority_levels(0);
  EXPECT_EQ(MergeQueueOptions("m", config, true, flags).status().message(),
            "model 'm': batching.priority_levels must be at least 1, got 0");
}

TEST(ServerOptionsTest, ListeningAddressesAreIpLiteralsOrEmptyForEvery) {
  ServerOptions o;
  o.port = 50051;
  EXPECT_EQ(GrpcListenAddress(o), "[::]:50051");
  o.grpc_address = "127.0.0.1";
  EXPECT_EQ(GrpcListenAddress(o), "127.0.0.1:50051");
  o.grpc_address = "::1";
  EXPECT_EQ(GrpcListenAddress(o), "[::1]:50051");
  o.http_address = "::";
  o.metrics_port = 9000;
  EXPECT_TRUE(CheckServerOptions(o).ok());
  EXPECT_EQ(MetricsListener(o, nullptr).address, "::");
  EXPECT_EQ(MetricsListener(o, nullptr).port, 9000);
  EXPECT_EQ(MetricsListener(o, nullptr).flag_name, "--metrics_port");
  EXPECT_FALSE(MetricsListener(o, nullptr).on_complete);  // no access log
  o.http_address = "localhost";
  EXPECT_EQ(CheckServerOptions(o).message(),
            "--http_address: must be an IPv4 or IPv6 address (0.0.0.0, ::, 127.0.0.1, ::1, ...) or empty for every "
            "address, got 'localhost'");
  o.http_address = "";
  o.grpc_address = "[::1]";
  EXPECT_TRUE(absl::StartsWith(CheckServerOptions(o).message(), "--grpc_address: must be")) << CheckServerOptions(o);
}

TEST(ServerOptionsTest, OutOfRangeFlagsNameTheFlagAndTheRange) {
  ServerOptions o;
  o.metrics_port = 70000;
  EXPECT_EQ(CheckServerOptions(o).message(), "--metrics_port: must be in [-1, 65535], got 70000");
  o = ServerOptions();
  o.max_queue_size = -5;
  EXPECT_EQ(CheckServerOptions(o).message(), "--max_queue_size: must be at least 1, got -5");
  o = ServerOptions();
  o.device = "tpu";
  EXPECT_EQ(CheckServerOptions(o).message(), "--device: must be cpu or cuda, got tpu");
  o = ServerOptions();
  o.compute_nice = 20;
  EXPECT_EQ(CheckServerOptions(o).message(), "--compute_nice: must be in [0, 19], got 20");
  o = ServerOptions();
  o.http_max_connections_per_ip = -1;
  EXPECT_EQ(CheckServerOptions(o).message(), "--http_max_connections_per_ip: must be in [0, 1024], got -1");
}

TEST(ServerOptionsTest, ConnectionAgeIsCappedWhereGrpcsMillisecondsWouldWrap) {
  ServerOptions o;
  EXPECT_EQ(MaxConnectionAgeMs(o), 0);
  o.max_connection_age_s = 300;
  EXPECT_TRUE(CheckServerOptions(o).ok());
  EXPECT_EQ(MaxConnectionAgeMs(o), 300000);
  // The largest allowed age is the largest whole second gRPC's int holds.
  o.max_connection_age_s = kMaxConnectionAgeS;
  EXPECT_TRUE(CheckServerOptions(o).ok());
  EXPECT_EQ(MaxConnectionAgeMs(o), 2147483000);
  EXPECT_GT(MaxConnectionAgeMs(o), 0);
  // One second more would have wrapped negative (2147484 * 1000 > INT_MAX):
  // it is refused naming the flag and the range.
  o.max_connection_age_s = kMaxConnectionAgeS + 1;
  EXPECT_EQ(CheckServerOptions(o).message(), "--max_connection_age_s: must be in [0, 2147483], got 2147484");
  EXPECT_EQ(MaxConnectionAgeMs(o), std::numeric_limits<int>::max()) << "clamped, never negative";
  o.max_connection_age_s = std::numeric_limits<int>::max();
  EXPECT_EQ(CheckServerOptions(o).message(), "--max_connection_age_s: must be in [0, 2147483], got 2147483647");
  EXPECT_EQ(MaxConnectionAgeMs(o), std::numeric_limits<int>::max());
  o.max_connection_age_s = -1;
  EXPECT_EQ(CheckServerOptions(o).message(), "--max_connection_age_s: must be in [0, 2147483], got -1");
  // The message size flag, the other one handed to gRPC as an int, stays within it too.
  o = ServerOptions();
  o.max_message_mb = 2047;
  EXPECT_TRUE(CheckServerOptions(o).ok());
  EXPECT_GT(o.max_message_mb << 20, 0);
  o.max_message_mb = 2048;
  EXPECT_EQ(CheckServerOptions(o).message(), "--max_message_mb: must be in [1, 2047], got 2048");
}

TEST(ServerOptionsTest, BothHttpListenersTakeThePerAddressConnectionLimit) {
  ServerOptions o;
  EXPECT_EQ(RestListener(o, {}, nullptr).max_connections_per_peer, 256u);
  o.http_max_connections_per_ip = 0;
  EXPECT_EQ(RestListener(o, {}, nullptr).max_connections_per_peer, 0u);
  EXPECT_EQ(MetricsListener(o, nullptr).max_connections_per_peer, 0u);
}

v1::ModelConfig WithPrecision(v1::InstanceConfig::Precision precision) {
  v1::ModelConfig config;
  config.mutable_instance()->set_precision(precision);
  return config;
}

TEST(ServerOptionsTest, PrecisionComesFromTheModelThenTheFlagAndSuitsTheDevice) {
  using P = v1::InstanceConfig;
  ServerOptions o;  // --precision auto
  auto resolve = [&](P::Precision asked, bool native_bf16) {
    return ResolvePrecision("m", WithPrecision(asked), o, native_bf16);
  };
  // auto: bf16 where the CPU has it natively, else fp32; fp16 on GPUs.
  EXPECT_EQ(resolve(P::PRECISION_DEFAULT, true)->precision, P::PRECISION_BF16);
  EXPECT_EQ(resolve(P::PRECISION_DEFAULT, false)->precision, P::PRECISION_FP32);
  EXPECT_EQ(resolve(P::PRECISION_DEFAULT, false)->note, "");
  // The model's own setting wins over the flag.
  o.precision = "bf16";
  EXPECT_EQ(resolve(P::PRECISION_FP32, true)->precision, P::PRECISION_FP32);
  EXPECT_EQ(resolve(P::PRECISION_DEFAULT, true)->precision, P::PRECISION_BF16);
  // bf16 without native support runs fp32, with one line saying so.
  auto fallback = resolve(P::PRECISION_BF16, false);
  ASSERT_TRUE(fallback.ok());
  EXPECT_EQ(fallback->precision, P::PRECISION_FP32);
  EXPECT_EQ(fallback->note,
            "model 'm': instance.precision asks for bf16, but this CPU has no native bf16 (avx512_bf16 or "
            "amx_bf16): running fp32");
  // fp16 is refused on the CPU, naming the model and the field (or the flag).
  auto fp16 = resolve(P::PRECISION_FP16, true);
  EXPECT_EQ(fp16.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(fp16.status().message(),
            "model 'm': instance.precision: fp16 runs on GPUs only (--device=cuda); on the CPU use bf16 or fp32");
  o.precision = "fp16";
  EXPECT_EQ(resolve(P::PRECISION_DEFAULT, true).status().message(),
            "model 'm': --precision: fp16 runs on GPUs only (--device=cuda); on the CPU use bf16 or fp32");
  o.device = "cuda";
  EXPECT_EQ(resolve(P::PRECISION_DEFAULT, false)->precision, P::PRECISION_FP16);
  EXPECT_EQ(resolve(P::PRECISION_BF16, false)->precision, P::PRECISION_BF16) << "GPUs are not asked for avx512_bf16";
  o.precision = "auto";
  EXPECT_EQ(resolve(P::PRECISION_DEFAULT, true)->precision, P::PRECISION_FP16);
  EXPECT_STREQ(PrecisionName(P::PRECISION_BF16), "bf16");
}

TEST(ServerOptionsTest, PrecisionFlagMustBeKnown) {
  ServerOptions o;
  o.precision = "int8";
  EXPECT_EQ(CheckServerOptions(o).message(), "--precision: must be auto, fp32, bf16 or fp16, got int8");
}

TEST(ServerOptionsTest, ModelControlIsAKnownModeOnTheCpuWithASanePollInterval) {
  ServerOptions o;
  EXPECT_EQ(o.model_control, "none");
  for (const char* mode : {"none", "poll", "explicit"}) {
    o.model_control = mode;
    EXPECT_TRUE(CheckServerOptions(o).ok()) << mode;
  }
  o.model_control = "auto";
  EXPECT_EQ(CheckServerOptions(o).message(), "--model_control: must be none, poll or explicit, got auto");
  o.model_control = "poll";
  o.device = "cuda";
  EXPECT_EQ(CheckServerOptions(o).message(),
            "--model_control: poll needs --device cpu; on cuda only none is supported");
  o.device = "cpu";
  o.repository_poll_s = 0;
  EXPECT_EQ(CheckServerOptions(o).message(), "--repository_poll_s: must be in [0.05, 86400], got 0");
}

TEST(ServerOptionsTest, DefaultModelIsFoundByNameOrListsTheModels) {
  const std::vector<std::string> names = {"a", "b"};
  EXPECT_EQ(*DefaultModelIndex(names, ""), 0);
  EXPECT_EQ(*DefaultModelIndex(names, "b"), 1);
  auto missing = DefaultModelIndex(names, "c");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), "--default_model: no model named 'c' (available: a, b)");
}

}  // namespace
}  // namespace tcm
