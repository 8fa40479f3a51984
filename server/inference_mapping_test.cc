#include "server/inference_mapping.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "server/served_model_test_util.h"

namespace tcm {
namespace {

using inference::ModelInferRequest;

std::vector<ServedModel> Models() {
  ServedModel cond = testing::TenClassModel("cond", 4, 3);
  cond.priority_levels = 2;
  cond.default_priority_level = 2;
  ServedModel uncond = testing::Unconditional(cond, "uncond");
  uncond.default_steps = 2;
  uncond.channels = 1;
  return {cond, uncond};
}

ModelInferRequest Conditional(const std::vector<int64_t>& labels) {
  ModelInferRequest request;
  request.set_model_name("cond");
  auto* input = request.add_inputs();
  input->set_name("class_label");
  input->set_datatype("INT64");
  input->add_shape(static_cast<int64_t>(labels.size()));
  for (int64_t l : labels) input->mutable_contents()->add_int64_contents(l);
  return request;
}

absl::StatusOr<GenerationSpec> Map(const ModelInferRequest& request, unsigned max_images = 64) {
  ValidationLimits limits;
  limits.max_images_per_request = max_images;
  return SpecFromInferRequest(request, Models(), /*default_model=*/0, limits, /*fresh_seed=*/99);
}

// The error's code and that its message contains `fragment`.
void ExpectError(const ModelInferRequest& request, absl::StatusCode code, const std::string& fragment) {
  const auto spec = Map(request);
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), code) << spec.status();
  EXPECT_NE(spec.status().message().find(fragment), std::string::npos) << spec.status();
}

TEST(InferenceMappingTest, ClassLabelsBecomeOneImageEachWithTheModelsDefaults) {
  const auto spec = Map(Conditional({3, 7, 3}));
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->model, 0);
  EXPECT_EQ(spec->num_images, 3u);
  EXPECT_EQ(spec->class_labels, (std::vector<int64_t>{3, 7, 3}));
  EXPECT_EQ(spec->steps, 1u);  // the model's default
  EXPECT_EQ(spec->seed, 99u);  // the server's choice
  EXPECT_FALSE(spec->seeded);
  EXPECT_EQ(spec->priority, 2u);  // the model's default level
  EXPECT_EQ(spec->format, v1::IMAGE_FORMAT_RAW);
}

TEST(InferenceMappingTest, RawInputContentsAreLittleEndianInt64) {
  ModelInferRequest request = Conditional({});
  request.mutable_inputs(0)->clear_contents();
  request.mutable_inputs(0)->set_shape(0, 2);
  std::string raw(16, '\0');
  raw[0] = 9;  // 9
  raw[8] = 1;  // 1
  request.add_raw_input_contents(raw);
  (*request.mutable_parameters())["steps"].set_int64_param(2);
  (*request.mutable_parameters())["seed"].set_int64_param(7);
  const auto spec = Map(request);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->class_labels, (std::vector<int64_t>{9, 1}));
  EXPECT_EQ(spec->steps, 2u);
  EXPECT_EQ(spec->seed, 7u);
  EXPECT_TRUE(spec->seeded);
}

TEST(InferenceMappingTest, UnconditionalModelsTakeNumImagesAndNoInputs) {
  ModelInferRequest request;
  request.set_model_name("uncond");
  (*request.mutable_parameters())["num_images"].set_int64_param(4);
  const auto spec = Map(request);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->num_images, 4u);
  EXPECT_EQ(spec->class_labels, (std::vector<int64_t>(4, -1)));
  EXPECT_EQ(spec->steps, 2u);
  request.clear_parameters();
  EXPECT_EQ(Map(request)->num_images, 1u);
}

TEST(InferenceMappingTest, ErrorsNameTheTensorOrParameter) {
  ModelInferRequest unknown = Conditional({1});
  unknown.set_model_name("nope");
  ExpectError(unknown, absl::StatusCode::kNotFound, "model_name: 'nope' is not served (available: cond, uncond)");
  ModelInferRequest version = Conditional({1});
  version.set_model_version("2");
  ExpectError(version, absl::StatusCode::kNotFound, "model_version");

  ExpectError(Conditional({10}), absl::StatusCode::kInvalidArgument,
              "input 'class_label'[0]: must be in [0, 10) for model 'cond', got 10");
  ExpectError(Conditional({1, -1}), absl::StatusCode::kInvalidArgument, "input 'class_label'[1]");
  ModelInferRequest missing = Conditional({1});
  missing.clear_inputs();
  ExpectError(missing, absl::StatusCode::kInvalidArgument, "input 'class_label': required");
  ModelInferRequest wrong_type = Conditional({1});
  wrong_type.mutable_inputs(0)->set_datatype("FP32");
  ExpectError(wrong_type, absl::StatusCode::kInvalidArgument, "datatype must be INT64");
  ModelInferRequest wrong_shape = Conditional({1, 2});
  wrong_shape.mutable_inputs(0)->add_shape(1);
  ExpectError(wrong_shape, absl::StatusCode::kInvalidArgument, "shape must be [N]");
  ModelInferRequest short_data = Conditional({1, 2});
  short_data.mutable_inputs(0)->set_shape(0, 3);
  ExpectError(short_data, absl::StatusCode::kInvalidArgument, "needs 3 values in contents.int64_contents, got 2");
  ModelInferRequest short_raw = Conditional({});
  short_raw.mutable_inputs(0)->set_shape(0, 3);
  short_raw.add_raw_input_contents(std::string(8, '\0'));
  ExpectError(short_raw, absl::StatusCode::kInvalidArgument, "in raw_input_contents, got 8 bytes");
  ModelInferRequest extra_input = Conditional({1});
  extra_input.add_inputs()->set_name("noise");
  ExpectError(extra_input, absl::StatusCode::kInvalidArgument, "input 'noise': unknown");
  ModelInferRequest output = Conditional({1});
  output.add_outputs()->set_name("latent");
  ExpectError(output, absl::StatusCode::kInvalidArgument, "output 'latent': unknown");

  ModelInferRequest steps = Conditional({1});
  (*steps.mutable_parameters())["steps"].set_int64_param(3);
  ExpectError(steps, absl::StatusCode::kInvalidArgument, "parameter 'steps': must be in [1, 2], got 3");
  ModelInferRequest steps_type = Conditional({1});
  (*steps_type.mutable_parameters())["steps"].set_string_param("2");
  ExpectError(steps_type, absl::StatusCode::kInvalidArgument, "parameter 'steps': must be an int64");
  ModelInferRequest typo = Conditional({1});
  (*typo.mutable_parameters())["step"].set_int64_param(2);
  ExpectError(typo, absl::StatusCode::kInvalidArgument, "parameter 'step': unknown (known: steps, seed, num_images");
  ModelInferRequest num = Conditional({1});
  (*num.mutable_parameters())["num_images"].set_int64_param(2);
  ExpectError(num, absl::StatusCode::kInvalidArgument, "parameter 'num_images': only for unconditional models");
  ModelInferRequest priority = Conditional({1});
  (*priority.mutable_parameters())["priority"].set_int64_param(3);
  ExpectError(priority, absl::StatusCode::kInvalidArgument, "parameter 'priority': must be in [0, 2]");

  ModelInferRequest uncond_input = Conditional({1});
  uncond_input.set_model_name("uncond");
  ExpectError(uncond_input, absl::StatusCode::kInvalidArgument, "is unconditional and takes no inputs");
}

TEST(InferenceMappingTest, TooManyImagesNamesClassLabelOrNumImages) {
  ModelInferRequest many = Conditional(std::vector<int64_t>(65, 1));
  ExpectError(many, absl::StatusCode::kInvalidArgument, "input 'class_label': N must be at most 64");
  // A huge N is refused from the shape alone, before its values are read or counted.
  ModelInferRequest huge = Conditional({1});
  huge.mutable_inputs(0)->set_shape(0, int64_t{1} << 40);
  ExpectError(huge, absl::StatusCode::kInvalidArgument, "input 'class_label': N must be at most 64, got 1099511627776");
  ModelInferRequest uncond;
  uncond.set_model_name("uncond");
  (*uncond.mutable_parameters())["num_images"].set_int64_param(65);
  ExpectError(uncond, absl::StatusCode::kInvalidArgument, "parameter 'num_images': must be in [1, 64], got 65");
}

TEST(InferenceMappingTest, ImageCountErrorsNameTheLimitThatApplies) {
  // The range is the server's --max_images_per_request, not the type's.
  ModelInferRequest zero;
  zero.set_model_name("uncond");
  (*zero.mutable_parameters())["num_images"].set_int64_param(0);
  ExpectError(zero, absl::StatusCode::kInvalidArgument, "parameter 'num_images': must be in [1, 64], got 0");
  auto limited = Map(zero, /*max_images=*/8);
  ASSERT_FALSE(limited.ok());
  EXPECT_EQ(limited.status().message(), "parameter 'num_images': must be in [1, 8], got 0");
  ModelInferRequest typed = zero;
  (*typed.mutable_parameters())["num_images"].set_string_param("2");
  ExpectError(typed, absl::StatusCode::kInvalidArgument, "parameter 'num_images': must be an int64 in [1, 64]");

  // A model whose own cap is smaller: its cap, named as its.
  std::vector<ServedModel> models = Models();
  models[0].max_images = 4;
  models[1].max_images = 4;
  ValidationLimits limits;
  auto capped = SpecFromInferRequest(zero, models, 0, limits, 1);
  ASSERT_FALSE(capped.ok());
  EXPECT_EQ(capped.status().message(), "parameter 'num_images': must be in [1, 4] for model 'uncond', got 0");
  ModelInferRequest five = zero;
  (*five.mutable_parameters())["num_images"].set_int64_param(5);
  capped = SpecFromInferRequest(five, models, 0, limits, 1);
  ASSERT_FALSE(capped.ok());
  EXPECT_EQ(capped.status().message(), "parameter 'num_images': must be in [1, 4] for model 'uncond', got 5");
  (*five.mutable_parameters())["num_images"].set_int64_param(4);
  EXPECT_TRUE(SpecFromInferRequest(five, models, 0, limits, 1).ok());
  capped = SpecFromInferRequest(Conditional({1, 2, 3, 4, 5}), models, 0, limits, 1);
  ASSERT_FALSE(capped.ok());
  EXPECT_EQ(capped.status().message(), "input 'class_label': N must be at most 4 for model 'cond', got 5");
}

v1::Image RawImage(unsigned index, uint8_t value) {
  v1::Image image;
  image.set_index(index);
  image.set_width(4);
  image.set_height(4);
  image.set_channels(3);
  image.set_format(v1::IMAGE_FORMAT_RAW);
  image.set_data(std::string(4 * 4 * 3, static_cast<char>(value)));
  return image;
}

TEST(InferenceMappingTest, TheResponseHoldsTheImagesInIndexOrderAsOneUint8Tensor) {
  ModelInferRequest request = Conditional({1, 2});
  request.set_id("call-7");
  const auto spec = Map(request);
  ASSERT_TRUE(spec.ok());
  const auto response = InferResponseFromImages(request, *spec, {RawImage(1, 20), RawImage(0, 10)});
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->model_name(), "cond");
  EXPECT_EQ(response->model_version(), "1");
  EXPECT_EQ(response->id(), "call-7");
  EXPECT_EQ(response->parameters().at("seed").int64_param(), 99);
  EXPECT_EQ(response->parameters().at("steps").int64_param(), 1);
  ASSERT_EQ(response->outputs_size(), 1);
  EXPECT_EQ(response->outputs(0).name(), "image");
  EXPECT_EQ(response->outputs(0).datatype(), "UINT8");
  EXPECT_EQ(std::vector<int64_t>(response->outputs(0).shape().begin(), response->outputs(0).shape().end()),
            (std::vector<int64_t>{2, 4, 4, 3}));
  ASSERT_EQ(response->raw_output_contents_size(), 1);
  EXPECT_EQ(response->raw_output_contents(0), std::string(48, char(10)) + std::string(48, char(20)));

  EXPECT_FALSE(InferResponseFromImages(request, *spec, {RawImage(0, 10)}).ok());  // image 1 missing
  v1::Image small = RawImage(1, 20);
  small.set_width(2);
  EXPECT_FALSE(InferResponseFromImages(request, *spec, {RawImage(0, 10), small}).ok());
}

TEST(InferenceMappingTest, MetadataListsTheInputAndOutputTensors) {
  const auto cond = ModelMetadataOf(Models()[0]);
  EXPECT_EQ(cond.name(), "cond");
  EXPECT_EQ(cond.platform(), "tcm_libtorch");
  ASSERT_EQ(cond.versions_size(), 1);
  ASSERT_EQ(cond.inputs_size(), 1);
  EXPECT_EQ(cond.inputs(0).name(), "class_label");
  EXPECT_EQ(cond.inputs(0).datatype(), "INT64");
  EXPECT_EQ(std::vector<int64_t>(cond.inputs(0).shape().begin(), cond.inputs(0).shape().end()),
            (std::vector<int64_t>{-1}));
  ASSERT_EQ(cond.outputs_size(), 1);
  EXPECT_EQ(std::vector<int64_t>(cond.outputs(0).shape().begin(), cond.outputs(0).shape().end()),
            (std::vector<int64_t>{-1, 4, 4, 3}));
  const auto uncond = ModelMetadataOf(Models()[1]);
  EXPECT_EQ(uncond.inputs_size(), 0);
  EXPECT_EQ(uncond.outputs(0).shape(3), 1);
}

}  // namespace
}  // namespace tcm
