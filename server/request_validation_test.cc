#include "server/request_validation.h"

#include <gtest/gtest.h>

#include <set>

namespace tcm {
namespace {

const std::vector<ServedModel> kModels = NumberSlots({{"fashion", 10, 1}, {"cifar", 0, 2}});

absl::StatusOr<GenerationSpec> Validate(const v1::GenerateRequest& r, unsigned max_images = 8) {
  return ValidateRequest(r, kModels, /*default_model=*/0, ValidationLimits{max_images}, /*fresh_seed=*/777);
}

void ExpectError(const v1::GenerateRequest& r, absl::StatusCode code, const std::string& fragment) {
  auto spec = Validate(r);
  ASSERT_FALSE(spec.ok()) << fragment;
  EXPECT_EQ(spec.status().code(), code) << spec.status();
  EXPECT_NE(spec.status().message().find(fragment), absl::string_view::npos) << spec.status();
}

TEST(RequestValidationTest, DefaultsFillAnEmptyRequest) {
  auto spec = Validate(v1::GenerateRequest());
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->model_name, "fashion");
  EXPECT_EQ(spec->steps, 1u);
  EXPECT_EQ(spec->num_images, 1u);
  EXPECT_EQ(spec->seed, 777u);
  EXPECT_EQ(spec->format, v1::IMAGE_FORMAT_PNG);
  ASSERT_EQ(spec->class_labels.size(), 1u);
  EXPECT_GE(spec->class_labels[0], 0);
  EXPECT_LT(spec->class_labels[0], 10);
}

TEST(RequestValidationTest, PriorityZeroIsTheModelsDefaultLevelAndOutOfRangeNamesTheLevels) {
  std::vector<ServedModel> models = kModels;
  models[0].priority_levels = 3;
  models[0].default_priority_level = 2;
  v1::GenerateRequest r;
  auto spec = ValidateRequest(r, models, 0, ValidationLimits{8}, 1);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->priority, 2u);
  r.set_priority(1);
  EXPECT_EQ(ValidateRequest(r, models, 0, ValidationLimits{8}, 1)->priority, 1u);
  r.set_priority(3);
  EXPECT_EQ(ValidateRequest(r, models, 0, ValidationLimits{8}, 1)->priority, 3u);
  r.set_priority(4);
  auto bad = ValidateRequest(r, models, 0, ValidationLimits{8}, 1);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(),
            "priority: must be 1 (highest) to 3 for model 'fashion', or 0 (the model's default, 2), got 4");
}

TEST(RequestValidationTest, ExplicitFieldsAreKept) {
  v1::GenerateRequest r;
  r.set_model("cifar");
  r.set_num_images(3);
  r.set_seed(5);
  r.set_format(v1::IMAGE_FORMAT_RAW);
  auto spec = Validate(r);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->model, 1);
  EXPECT_EQ(spec->steps, 2u);  // the model's default
  EXPECT_EQ(spec->seed, 5u);
  EXPECT_EQ(spec->class_labels, (std::vector<int64_t>{-1, -1, -1}));
}

TEST(RequestValidationTest, TheSpecCarriesTheModelsSlotVersionAndCaching) {
  std::vector<ServedModel> models = kModels;
  models[1].slot = 7;  // a reloaded model's queue
  models[1].version = 3;
  models[1].cacheable = false;
  v1::GenerateRequest r;
  r.set_model("cifar");
  auto spec = ValidateRequest(r, models, 0, ValidationLimits{8}, 1);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->model, 7);
  EXPECT_EQ(spec->model_version, 3u);
  EXPECT_FALSE(spec->cacheable);
  r.set_model("fashion");
  spec = ValidateRequest(r, models, 0, ValidationLimits{8}, 1);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->model, 0);
  EXPECT_EQ(spec->model_version, 1u);
  EXPECT_TRUE(spec->cacheable);
}

TEST(RequestValidationTest, WithoutADefaultModelARequestMustNameOne) {
  auto spec = ValidateRequest(v1::GenerateRequest(), kModels, /*default_model=*/-1, ValidationLimits{8}, 1);
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(spec.status().message(), "model: the default model is not served; name one (available: fashion, cifar)");
}

TEST(RequestValidationTest, RandomClassesDependOnSeedAndIndexOnly) {
  v1::GenerateRequest r;
  r.set_num_images(8);
  r.set_seed(42);
  auto a = Validate(r), b = Validate(r);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->class_labels, b->class_labels);
  std::set<int64_t> distinct(a->class_labels.begin(), a->class_labels.end());
  EXPECT_GT(distinct.size(), 2u);
  for (int64_t c : a->class_labels) EXPECT_TRUE(c >= 0 && c < 10);
  EXPECT_EQ(a->class_labels[3], RandomClassLabel(42, 3, 10));
}

TEST(RequestValidationTest, ErrorsNameTheFieldAndAllowedValues) {
  v1::GenerateRequest r;
  r.set_model("nope");
  ExpectError(r, absl::StatusCode::kNotFound, "model: 'nope' is not served (available: fashion, cifar)");
  r = v1::GenerateRequest();
  r.set_steps(3);
  ExpectError(r, absl::StatusCode::kInvalidArgument, "steps: must be 1 or 2 (0 = the model's default, 1), got 3");
  r = v1::GenerateRequest();
  r.set_class_label(10);
  ExpectError(r, absl::StatusCode::kInvalidArgument, "class_label: must be in [0, 10) for model 'fashion', got 10");
  r.set_class_label(-1);
  ExpectError(r, absl::StatusCode::kInvalidArgument, "got -1");
  r = v1::GenerateRequest();
  r.set_model("cifar");
  r.set_class_label(0);
  ExpectError(r, absl::StatusCode::kInvalidArgument, "class_label: model 'cifar' is unconditional");
  r = v1::GenerateRequest();
  r.set_num_images(9);
  ExpectError(r, absl::StatusCode::kInvalidArgument, "num_images: must be at most 8 (0 = 1), got 9");
  r = v1::GenerateRequest();
  r.set_format(static_cast<v1::ImageFormat>(7));
  ExpectError(r, absl::StatusCode::kInvalidArgument,
              "format: must be IMAGE_FORMAT_PNG (0) or IMAGE_FORMAT_RAW (1), got 7");
}

TEST(RequestValidationTest, RestateFieldRenamesOnlyTheNamedFieldsMessages) {
  v1::GenerateRequest r;
  r.set_num_images(9);
  const absl::Status too_many = Validate(r).status();
  const absl::Status restated = RestateField(too_many, "num_images", "query 'num': ");
  EXPECT_EQ(restated.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(restated.message(), "query 'num': must be at most 8, got 9");
  // Another field's message, and a status that is not an error, pass unchanged.
  EXPECT_EQ(RestateField(too_many, "steps", "query 'steps': "), too_many);
  EXPECT_EQ(RestateField(absl::InvalidArgumentError("num_imagesx: y"), "num_images", "n: ").message(),
            "num_imagesx: y");
  EXPECT_TRUE(RestateField(absl::OkStatus(), "num_images", "n: ").ok());
}

// A model whose queue holds fewer images than the server-wide limit caps
// num_images itself: such a request could never be queued.
TEST(RequestValidationTest, ModelQueueSizeCapsNumImages) {
  const std::vector<ServedModel> models = NumberSlots({{"small-queue", 10, 1, 4}, {"big-queue", 10, 1, 100}});
  v1::GenerateRequest r;
  r.set_num_images(5);
  auto capped = ValidateRequest(r, models, 0, ValidationLimits{8}, 1);
  ASSERT_FALSE(capped.ok());
  EXPECT_EQ(capped.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(capped.status().message(), "num_images: must be at most 4 for model 'small-queue' (0 = 1), got 5");
  r.set_num_images(4);
  EXPECT_TRUE(ValidateRequest(r, models, 0, ValidationLimits{8}, 1).ok());
  // The server-wide limit applies where it is the smaller one.
  r.set_model("big-queue");
  r.set_num_images(9);
  auto server_limit = ValidateRequest(r, models, 0, ValidationLimits{8}, 1);
  ASSERT_FALSE(server_limit.ok());
  EXPECT_EQ(server_limit.status().message(), "num_images: must be at most 8 (0 = 1), got 9");
}

}  // namespace
}  // namespace tcm
