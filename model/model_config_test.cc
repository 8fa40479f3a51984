#include "model/model_config.h"

#include <gtest/gtest.h>

#include <functional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/message_differencer.h"

namespace tcm {
namespace {

constexpr char kEdm2Text[] = R"pb(
  architecture: "EDM2UNet"
  img_resolution: 32
  img_channels: 1
  num_classes: 10
  edm2 {
    model_channels: 32
    channel_mult: [ 1, 2, 2 ]
    num_blocks: 2
    attn_resolutions: [ 8 ]
  }
)pb";

v1::ModelConfig ParseOrDie(const std::string& text) {
  auto config = ParseModelConfigText(text, "config.pbtxt");
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *config : v1::ModelConfig();
}

void ExpectErrorStatusImpl(const absl::StatusOr<v1::ModelConfig>& config, const std::string& fragment);
void ExpectErrorStatus(const absl::StatusOr<v1::ModelConfig>& config, const std::string& fragment) {
  ExpectErrorStatusImpl(config, fragment);
}

void ExpectError(const std::string& text, const std::string& fragment) {
  auto config = ParseModelConfigText(text, "config.pbtxt");
  ExpectErrorStatus(config, fragment);
}

// The kEdm2Text configuration with `edit` applied, completed.
absl::StatusOr<v1::ModelConfig> Edited(const std::function<void(v1::ModelConfig&)>& edit) {
  v1::ModelConfig c;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(kEdm2Text, &c));
  edit(c);
  return CompleteModelConfig(c);
}

void ExpectEditError(const std::function<void(v1::ModelConfig&)>& edit, const std::string& fragment) {
  auto config = Edited(edit);
  ASSERT_FALSE(config.ok()) << "expected an error containing: " << fragment;
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(config.status().message().find(fragment), absl::string_view::npos) << config.status();
}

void ExpectErrorStatusImpl(const absl::StatusOr<v1::ModelConfig>& config, const std::string& fragment) {
  ASSERT_FALSE(config.ok()) << "expected an error containing: " << fragment;
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(config.status().message().find(fragment), absl::string_view::npos) << config.status();
  EXPECT_NE(config.status().message().find("config.pbtxt"), absl::string_view::npos);
}

TEST(ModelConfigTest, FillsReferenceDefaults) {
  v1::ModelConfig c = ParseOrDie(kEdm2Text);
  EXPECT_FLOAT_EQ(c.sigma_data(), 0.5f);
  EXPECT_FLOAT_EQ(c.t_max(), 80.0f);
  EXPECT_FLOAT_EQ(c.mid_t(), 0.821f);
  EXPECT_EQ(c.default_steps(), 1u);
  EXPECT_FLOAT_EQ(c.edm2().label_balance(), 0.5f);
  EXPECT_FLOAT_EQ(c.edm2().concat_balance(), 0.5f);
  EXPECT_FLOAT_EQ(c.edm2().res_balance(), 0.3f);
  EXPECT_FLOAT_EQ(c.edm2().attn_balance(), 0.3f);
  EXPECT_FLOAT_EQ(c.edm2().clip_act(), 256.0f);
  EXPECT_EQ(c.edm2().channels_per_head(), 64u);
  ASSERT_EQ(c.edm2().resample_filter_size(), 2);
  EXPECT_FLOAT_EQ(c.edm2().resample_filter(0), 1.0f);
  EXPECT_EQ(NumLevels(c), 3);
}

TEST(ModelConfigTest, ExplicitValuesWin) {
  auto edited = Edited([](v1::ModelConfig& c) {
    c.set_mid_t(1.5f);
    c.set_default_steps(2);
    c.mutable_edm2()->set_clip_act(0);
  });
  ASSERT_TRUE(edited.ok()) << edited.status();
  const v1::ModelConfig& c = *edited;
  EXPECT_FLOAT_EQ(c.mid_t(), 1.5f);
  EXPECT_EQ(c.default_steps(), 2u);
  EXPECT_FLOAT_EQ(c.edm2().clip_act(), 0.0f);  // explicitly disabled, not defaulted
}

TEST(ModelConfigTest, InfersArchitectureFromNetworkBlock) {
  v1::ModelConfig c = ParseOrDie(
      "img_resolution: 32 img_channels: 3 song { model_channels: 16 channel_mult: [1] "
      "num_blocks: 1 }");
  EXPECT_EQ(c.architecture(), "SongUNet");
  EXPECT_EQ(c.song().embedding_type(), "positional");
  EXPECT_EQ(c.song().channel_mult_emb(), 4u);
}

TEST(ModelConfigTest, BadValuesNameTheField) {
  using C = v1::ModelConfig;
  ExpectEditError([](C& c) { c.set_architecture("ResNet"); }, "architecture: must be \"EDM2UNet\" or \"SongUNet\"");
  ExpectEditError([](C& c) { c.set_mid_t(90); }, "mid_t: must be in (0, t_max = 80)");
  ExpectEditError([](C& c) { c.set_default_steps(3); }, "default_steps: must be 1 or 2");
  ExpectEditError([](C& c) { c.set_img_resolution(30); }, "img_resolution: must be a positive multiple of 4");
  ExpectEditError([](C& c) { c.set_img_channels(0); }, "img_channels");
  ExpectEditError([](C& c) { c.mutable_edm2()->set_label_balance(1.5); }, "edm2.label_balance: must be in [0, 1]");
  ExpectEditError([](C& c) { c.mutable_edm2()->set_dropout(1); }, "edm2.dropout");
  ExpectEditError([](C& c) { c.mutable_edm2()->add_resample_filter(1); }, "edm2.resample_filter");
  ExpectEditError([](C& c) { c.mutable_edm2()->set_channel_mult(1, 0); },
                  "edm2.channel_mult: entries must be positive");
  ExpectError("architecture: \"EDM2UNet\" img_resolution: 32 img_channels: 1", "needs an `edm2 { ... }` block");
  ExpectError(
      "img_resolution: 32 img_channels: 3 song { model_channels: 16 channel_mult: [1] num_blocks: 1 "
      "encoder_type: \"fancy\" }",
      "song.encoder_type: must be \"standard\", \"skip\" or \"residual\", got \"fancy\"");
}

TEST(ModelConfigTest, AbsurdSizesAreRefusedWithTheLimit) {
  using C = v1::ModelConfig;
  ExpectEditError([](C& c) { c.mutable_edm2()->set_model_channels(2000000000); },
                  "edm2.model_channels: must be at most 4096, got 2000000000");
  ExpectEditError([](C& c) { c.set_num_classes(4000000000u); }, "num_classes: must be at most 100000, got 4000000000");
  ExpectEditError([](C& c) { c.set_img_resolution(1u << 20); }, "img_resolution: must be at most 4096");
  ExpectEditError([](C& c) { c.set_img_channels(100); },
                  "img_channels: must be 1 (grey), 3 (RGB) or 4 (RGBA), got 100");
  ExpectEditError([](C& c) { c.mutable_edm2()->set_num_blocks(1000); }, "edm2.num_blocks: must be at most 64");
  ExpectEditError([](C& c) { c.mutable_edm2()->set_channel_mult(0, 1000); }, "edm2.channel_mult: must be at most 64");
  ExpectEditError(
      [](C& c) {
        for (int i = 0; i < 10; ++i) c.mutable_edm2()->add_channel_mult(1);
      },
      "edm2.channel_mult: must have at most 8 entries, got 13");
  ExpectEditError(
      [](C& c) {
        c.mutable_edm2()->set_model_channels(4096);
        c.mutable_edm2()->set_channel_mult_emb(1);
        c.mutable_edm2()->set_channel_mult(1, 8);
      },
      "edm2.channel_mult: model_channels x channel_mult must be at most 16384, got 4096 x 8 = 32768");
  ExpectEditError(
      [](C& c) {
        c.mutable_edm2()->set_model_channels(4096);
        c.mutable_edm2()->set_num_blocks(64);
      },
      "weights is past the limit of 4e+09");
  ExpectEditError([](C& c) { c.mutable_edm2()->set_channels_per_head(1u << 30); }, "edm2.channels_per_head");
  // The embedding network and the activations are bounded too.
  ExpectError(
      "img_resolution: 32 img_channels: 3 song { model_channels: 4096 channel_mult: [1] num_blocks: 1 "
      "channel_mult_emb: 64 }",
      "song.channel_mult_emb: model_channels x channel_mult_emb must be at most 16384, got 4096 x 64 = 262144");
  ExpectEditError(
      [](C& c) {
        c.set_num_classes(100000);
        c.mutable_edm2()->set_model_channels(4096);
        c.mutable_edm2()->set_channel_mult_emb(4);
      },
      "weights is past the limit of 4e+09");
  ExpectEditError(
      [](C& c) {
        c.set_img_resolution(4096);
        c.mutable_edm2()->set_model_channels(256);
      },
      "img_resolution (one image): a batch of 1 image of 4096x4096 needs about");
  ExpectEditError([](C& c) { c.mutable_batching()->set_max_batch_size(1u << 30); }, "batching.max_batch_size");
  ExpectEditError([](C& c) { c.mutable_batching()->set_max_queue_delay_us(1ull << 40); },
                  "batching.max_queue_delay_us: must be at most 60000000");
  ExpectEditError([](C& c) { c.mutable_instance()->set_count(1u << 20); }, "instance.count: must be at most 1024");
  ExpectError(
      "img_resolution: 32 img_channels: 3 song { model_channels: 16 channel_mult: [1] num_blocks: 1 "
      "augment_dim: 1000000 }",
      "song.augment_dim: must be at most 1024");
  // The largest released network is well inside the limits, in batches of 64 too.
  auto xl = Edited([](C& c) {
    c.set_img_resolution(64);
    c.set_img_channels(4);
    c.set_num_classes(1000);
    auto* e = c.mutable_edm2();
    e->set_model_channels(384);
    e->clear_channel_mult();
    for (int m : {1, 2, 3, 4}) e->add_channel_mult(m);
    e->set_num_blocks(3);
    e->clear_attn_resolutions();
    for (int r : {16, 8}) e->add_attn_resolutions(r);
    c.mutable_batching()->set_max_batch_size(64);
  });
  EXPECT_TRUE(xl.ok()) << xl.status();
}

// img_channels is what a PNG can hold: a 2-channel model would load and then
// fail every request for the default format (PNG), so it is refused at load.
TEST(ModelConfigTest, ImageChannelsAreThoseAnImageCanHave) {
  for (uint32_t channels : {0u, 2u, 5u, 16u}) {
    ExpectEditError([channels](v1::ModelConfig& c) { c.set_img_channels(channels); },
                    absl::StrCat("img_channels: must be 1 (grey), 3 (RGB) or 4 (RGBA), got ", channels));
  }
  for (uint32_t channels : {1u, 3u, 4u}) {
    auto config = Edited([channels](v1::ModelConfig& c) { c.set_img_channels(channels); });
    EXPECT_TRUE(config.ok()) << channels << ": " << config.status();
  }
}

// NaN passes every comparison: each float field is held finite, in range.
TEST(ModelConfigTest, NonFiniteFloatsAreRefusedByName) {
  auto with = [](const std::string& edm2_fields, const std::string& top = "") {
    std::string text = std::string(kEdm2Text) + top;
    return text.replace(text.find("num_blocks"), 0, edm2_fields + " ");
  };
  ExpectError(with("resample_filter: [nan, 1]"), "edm2.resample_filter: taps must be finite numbers, got [nan, 1]");
  ExpectError(with("resample_filter: [inf, 1]"), "edm2.resample_filter: taps must be finite numbers, got [inf, 1]");
  ExpectError(with("resample_filter: [1, -1]"), "edm2.resample_filter: taps must not sum to zero, got [1, -1]");
  ExpectError(with("resample_filter: [1e30, 1e30]"),
              "edm2.resample_filter: taps x taps / sum^2 must be finite in float32, got [1e+30, 1e+30]");
  ExpectError(with("resample_filter: [1e-30, 1e-30]"), "edm2.resample_filter: taps x taps / sum^2 must be finite");
  ExpectError(with("clip_act: nan"), "edm2.clip_act: must be a finite number >= 0 (0 = no clipping), got nan");
  ExpectError(with("clip_act: inf"), "edm2.clip_act: must be a finite number >= 0 (0 = no clipping), got inf");
  ExpectError(with("clip_act: -1"), "edm2.clip_act: must be a finite number >= 0 (0 = no clipping), got -1");
  ExpectError(with("fourier_scale: nan"), "edm2.fourier_scale: must be a finite number, got nan");
  ExpectError(with("label_balance: nan"), "edm2.label_balance: must be in [0, 1], got nan");
  ExpectError(with("dropout: nan"), "edm2.dropout: must be in [0, 1), got nan");
  ExpectError(with("", "sigma_data: nan"), "sigma_data: must be a positive finite number, got nan");
  ExpectError(with("", "mid_t: nan"), "mid_t: must be in (0, t_max = 80), got nan");
  ExpectError(with("", "transition_t: nan"), "transition_t: must be in (0, t_max = 80), got nan");
  ExpectError(
      "img_resolution: 32 img_channels: 3 song { model_channels: 16 channel_mult: [1] num_blocks: 1 "
      "fourier_scale: -inf }",
      "song.fourier_scale: must be a finite number, got -inf");
  ExpectError(
      "img_resolution: 32 img_channels: 3 song { model_channels: 16 channel_mult: [1] num_blocks: 1 "
      "resample_filter: [1, nan] }",
      "song.resample_filter: taps must be finite numbers, got [1, nan]");
  // t_max: a noise level past 10000 (80 in every released model) only makes garbage.
  for (const std::string t_max : {"1e38", "10001", "inf", "nan", "0", "-80"})
    ExpectError(with("", "t_max: " + t_max),
                "t_max: must be a finite number in (0, 10000] (the released models use 80), got ");
  auto largest = ParseModelConfigText(with("", "t_max: 10000 mid_t: 9999"), "config.pbtxt");
  ASSERT_TRUE(largest.ok()) << largest.status();
  EXPECT_FLOAT_EQ(largest->t_max(), 10000.0f);
  ExpectError(with("", "t_max: 100 mid_t: 100"), "mid_t: must be in (0, t_max = 100), got 100");
}

// Activation memory is bounded for a whole batch (batching.max_batch_size,
// else the default 16), not per image and per activation alone.
TEST(ModelConfigTest, ActivationsOfAWholeBatchAreBounded) {
  // 2^28 values per activation, and about 2.7e9 held at once per image (4.3e10 per batch of 16).
  const std::string huge =
      "img_resolution: 4096 img_channels: 1 edm2 { model_channels: 16 channel_mult: [1] num_blocks: 1 }";
  // Without a batch size of its own, one image must fit; the server checks
  // the batch size it runs the model at (MergeQueueOptions).
  auto unset = ParseModelConfigText(huge, "config.pbtxt");
  EXPECT_TRUE(unset.ok()) << unset.status();
  ExpectError(huge + " batching { max_batch_size: 16 }",
              "batching.max_batch_size: a batch of 16 images of 4096x4096 needs about 4.29e+10 "
              "activation values at once (2.68e+09 per image), past the limit of 4.29e+09 values for a whole batch");
  ExpectError("img_resolution: 256 img_channels: 3 song { model_channels: 16 channel_mult: [1] num_blocks: 1 }",
              "img_resolution (one image): a batch of 1 image of 256x256 needs about 8.6e+09 activation values");
  ExpectError(huge + " batching { max_batch_size: 2 }",
              "batching.max_batch_size: a batch of 2 images of 4096x4096 needs about 5.37e+09 activation values");
  auto alone = ParseModelConfigText(huge + " batching { max_batch_size: 1 }", "config.pbtxt");
  EXPECT_TRUE(alone.ok()) << alone.status();
  // Attention's score matrices count: a one-level DDPM++ attends at its full resolution.
  ExpectError(
      "img_resolution: 256 img_channels: 3 song { model_channels: 16 channel_mult: [1] num_blocks: 1 } "
      "batching { max_batch_size: 1 }",
      "batching.max_batch_size: a batch of 1 image of 256x256 needs about 8.6e+09 activation values");
  auto deeper = ParseModelConfigText(
      "img_resolution: 256 img_channels: 3 song { model_channels: 16 channel_mult: [1, 1, 1, 1, 1] num_blocks: 1 }",
      "config.pbtxt");
  EXPECT_TRUE(deeper.ok()) << deeper.status();
  // A server that runs another batch size checks it the same way.
  v1::ModelConfig config = ParseOrDie(kEdm2Text);
  EXPECT_TRUE(CheckBatchActivations(config, 1024, "--max_batch_size").ok());
  const absl::Status past = CheckBatchActivations(config, 65536, "--max_batch_size");
  EXPECT_EQ(past.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(past.message().find("--max_batch_size: a batch of 65536 images of 32x32 needs about"),
            absl::string_view::npos)
      << past;
  EXPECT_GT(EstimatedActivationValues(config), 32.0 * 32 * 32 * 2);  // at least the first level's two skips
}

// Integers past uint32 would wrap (4294967328 -> 32) and floats past float32
// turn infinite: both are refused, naming the argument.
TEST(ModelConfigTest, ReferenceKwargsOutsideTheFieldTypesAreRefused) {
  const std::pair<const char*, const char*> cases[] = {
      {R"("model_type": "SongUNet", "model_channels": 4294967328)",
       "model_channels: must be at most 4294967295, got 4294967328"},
      {R"("model_type": "SongUNet", "model_channels": 18446744073709551615)",
       "model_channels: must be at most 4294967295, got 18446744073709551615"},
      {R"("model_type": "EDM2UNet", "label_dim": 4294967306)", "label_dim: must be at most 4294967295"},
      {R"("model_type": "EDM2UNet", "channel_mult": [1, 4294967297])", "channel_mult: must be at most 4294967295"},
      {R"("model_type": "EDM2UNet", "label_balance": 1e300)", "label_balance: must be a finite number of at most"},
      {R"("model_type": "SongUNet", "resample_filter": [1, -1e39])", "resample_filter: must be a finite number"},
      {R"("model_type": "EDM2UNet", "img_channels": 2)", "img_channels: must be 1 (grey), 3 (RGB) or 4 (RGBA)"},
  };
  for (const auto& [args, error] : cases) {
    auto bad = ModelConfigFromReferenceKwargs(absl::StrCat(R"({"img_resolution": 32, "img_channels": 3, )", args, "}"));
    ASSERT_FALSE(bad.ok()) << args;
    EXPECT_NE(bad.status().message().find(error), absl::string_view::npos) << bad.status();
  }
}

TEST(ModelConfigTest, SyntaxErrorsNameTheLine) {
  ExpectError("architecture: \"EDM2UNet\"\nimg_resolutoin: 32\n", "line 2");
}

TEST(ModelConfigTest, ReadsReferenceKwargs) {
  auto c = ModelConfigFromReferenceKwargs(
      R"({"img_resolution": 64, "img_channels": 3, "label_dim": 1000, "model_type": "EDM2UNet",
          "model_channels": 32, "channel_mult": [1, 2, 3, 4], "num_blocks": 1, "attn_resolutions": [16, 8],
          "dropout": 0.0, "use_fp16": false})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture(), "EDM2UNet");
  EXPECT_EQ(c->num_classes(), 1000u);
  EXPECT_EQ(c->edm2().model_channels(), 32u);
  EXPECT_EQ(c->edm2().channel_mult_size(), 4);
  EXPECT_EQ(c->edm2().num_blocks(), 1u);
}

TEST(ModelConfigTest, ReferenceKwargsUseConstructorDefaults) {
  auto c = ModelConfigFromReferenceKwargs(R"({"img_resolution": 64, "img_channels": 3, "model_type": "EDM2UNet"})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->edm2().model_channels(), 192u);
  EXPECT_EQ(c->edm2().num_blocks(), 3u);
  EXPECT_EQ(c->edm2().attn_resolutions_size(), 2);
}

TEST(ModelConfigTest, UnknownReferenceKwargIsAnError) {
  auto c = ModelConfigFromReferenceKwargs(R"({"img_resolution": 32, "img_channels": 3, "model_type": "SongUNet",
                                              "mystery": 1})");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("mystery"), absl::string_view::npos);
  auto d = ModelConfigFromReferenceKwargs(R"({"img_resolution": 32, "img_channels": 3, "model_type": "DhariwalUNet"})");
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("model_type"), absl::string_view::npos);
}

TEST(ModelConfigTest, ReferenceKwargNullsAndWrongTypes) {
  auto c = ModelConfigFromReferenceKwargs(R"({"img_resolution": 32, "img_channels": 1, "model_type": "EDM2UNet",
                                              "channel_mult_noise": null, "channel_mult_emb": null,
                                              "clip_act": null, "learnable_scale": true})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->edm2().channel_mult_noise(), 0u);  // the constructor's default
  EXPECT_EQ(c->edm2().channel_mult_emb(), 0u);
  EXPECT_TRUE(c->edm2().has_clip_act());
  EXPECT_FLOAT_EQ(c->edm2().clip_act(), 0.0f);  // no clipping
  EXPECT_TRUE(c->edm2().learnable_scale());
  const std::pair<const char*, const char*> cases[] = {
      {R"("model_type": "EDM2UNet", "num_blocks": "3")", "num_blocks: must be a non-negative integer"},
      {R"("model_type": "EDM2UNet", "label_balance": "half")", "label_balance: must be a number"},
      {R"("model_type": "EDM2UNet", "emb_norm": 1)", "emb_norm: must be true or false"},
      {R"("model_type": "SongUNet", "encoder_type": 3)", "encoder_type: must be a string"},
      {R"("model_type": "SongUNet", "attn_type": "flash")", "only \"dot\" attention is supported, got \"flash\""},
      {R"("model_type": "SongUNet", "img_channels": -1)", "img_channels: must be a non-negative integer"},
  };
  for (const auto& [args, error] : cases) {
    auto bad = ModelConfigFromReferenceKwargs(absl::StrCat(R"({"img_resolution": 32, )", args, "}"));
    ASSERT_FALSE(bad.ok()) << args;
    EXPECT_NE(bad.status().message().find(error), absl::string_view::npos) << bad.status();
  }
}

TEST(ModelConfigTest, ReferenceKwargsRoundTrip) {
  for (const std::string text :
       {std::string(kEdm2Text).replace(std::string(kEdm2Text).find("num_blocks"), 0,
                                       "emb_norm: true fourier_scale: 2 clip_act: 0 "),
        std::string("img_resolution: 32 img_channels: 3 num_classes: 10 song { model_channels: 16 "
                    "channel_mult: [1, 2] num_blocks: 1 encoder_type: \"residual\" }")}) {
    v1::ModelConfig c = ParseOrDie(text);
    auto back = ModelConfigFromReferenceKwargs(ReferenceKwargsFromModelConfig(c));
    ASSERT_TRUE(back.ok()) << back.status();
    // t_max, mid_t, name and serving fields are not ECMPrecond arguments.
    v1::ModelConfig expected = c;
    expected.clear_t_max();
    expected.clear_mid_t();
    back->clear_t_max();
    back->clear_mid_t();
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(expected, *back))
        << expected.DebugString() << "\nvs\n"
        << back->DebugString();
  }
}

}  // namespace
}  // namespace tcm
