#include "server/rest_json.h"

#include <gtest/gtest.h>

#include <string>

#include "absl/strings/match.h"

namespace tcm {
namespace {

TEST(RestJsonTest, ARequestBecomesTheGrpcMessage) {
  auto request = InferRequestFromJson("m", "1", R"({"id": "a", "parameters": {"steps": 2, "seed": 7, "x": 0.5,
      "big": 18446744073709551615, "on": true, "s": "t"},
      "inputs": [{"name": "class_label", "datatype": "INT64", "shape": [2, 2], "data": [[1, 2], [3, 4]]}],
      "outputs": [{"name": "image"}]})");
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->model_name(), "m");
  EXPECT_EQ(request->model_version(), "1");
  EXPECT_EQ(request->id(), "a");
  EXPECT_EQ(request->parameters().at("steps").int64_param(), 2);
  EXPECT_EQ(request->parameters().at("seed").int64_param(), 7);
  EXPECT_EQ(request->parameters().at("x").double_param(), 0.5);
  EXPECT_EQ(request->parameters().at("big").uint64_param(), UINT64_MAX);
  EXPECT_TRUE(request->parameters().at("on").bool_param());
  EXPECT_EQ(request->parameters().at("s").string_param(), "t");
  ASSERT_EQ(request->inputs_size(), 1);
  const auto& input = request->inputs(0);
  EXPECT_EQ(input.name(), "class_label");
  EXPECT_EQ(input.datatype(), "INT64");
  EXPECT_EQ(std::vector<int64_t>(input.shape().begin(), input.shape().end()), (std::vector<int64_t>{2, 2}));
  const auto& data = input.contents().int64_contents();
  EXPECT_EQ(std::vector<int64_t>(data.begin(), data.end()), (std::vector<int64_t>{1, 2, 3, 4}));  // row-major
  ASSERT_EQ(request->outputs_size(), 1);
  EXPECT_EQ(request->outputs(0).name(), "image");
}

TEST(RestJsonTest, ErrorsNameWhereTheyAre) {
  struct Case {
    const char* body;
    const char* message_starts;
  };
  const Case cases[] = {
      {"not json", "body: not valid JSON"},
      {"[1]", "body: must be a JSON object"},
      {R"({"inputs": {}})", "inputs: must be an array"},
      {R"({"inputs": [{"datatype": "INT64", "shape": [1], "data": [1]}]})", "inputs[0].name: required"},
      {R"({"inputs": [{"name": "c", "datatype": "INT64", "data": [1]}]})", "inputs[0].shape: required"},
      {R"({"inputs": [{"name": "c", "datatype": "INT64", "shape": [1]}]})", "inputs[0].data: required"},
      {R"({"inputs": [{"name": "c", "datatype": "INT64", "shape": [1], "data": [1.5]}]})",
       "inputs[0].data: must hold INT64 integers, got 1.5"},
      {R"({"inputs": [{"name": "c", "datatype": "INT64", "shape": [1], "data": [9223372036854775808]}]})",
       "inputs[0].data: must hold INT64 integers"},
      {R"({"parameters": {"steps": [2]}})", "parameters.steps: must be a boolean, number or string"},
      {R"({"parameters": 3})", "parameters: must be an object"},
      {R"({"outputs": [{"name": 3}]})", "outputs[0]: must be an object with a string name"},
      {R"({"id": 5})", "id: must be a string"},
      {R"({"model": "x"})", "model: unknown field"},
      {R"({"inputs": [{"name": "c", "datatype": "INT64", "shape": [18446744073709551615], "data": [1]}]})",
       "inputs[0].shape: must hold INT64 integers, got 18446744073709551615"},
      {R"({"inputs": [{"name": "c", "datatype": "INT64", "shape": [1], "data": [1], "shape_x": [1]}]})",
       "inputs[0].shape_x: unknown field (known: name, datatype, shape, parameters, data)"},
      {R"({"outputs": [{"name": "image", "binary": true}]})",
       "outputs[0].binary: unknown field (known: name, parameters)"},
      {R"({"outputs": [{"name": "image", "parameters": 1}]})", "outputs[0].parameters: must be an object"},
  };
  for (const Case& c : cases) {
    auto request = InferRequestFromJson("m", "", c.body);
    EXPECT_EQ(request.status().code(), absl::StatusCode::kInvalidArgument) << c.body;
    EXPECT_TRUE(absl::StartsWith(request.status().message(), c.message_starts))
        << c.body << " -> " << request.status().message();
  }
}

TEST(RestJsonTest, AnOutputsParametersAreKept) {
  auto request =
      InferRequestFromJson("m", "", R"({"outputs": [{"name": "image", "parameters": {"binary_data": false}}]})");
  ASSERT_TRUE(request.ok()) << request.status();
  ASSERT_EQ(request->outputs_size(), 1);
  EXPECT_EQ(request->outputs(0).name(), "image");
  EXPECT_FALSE(request->outputs(0).parameters().at("binary_data").bool_param());
}

TEST(RestJsonTest, DeepNestingIsRefusedBeforeParsing) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  EXPECT_EQ(InferRequestFromJson("m", "", deep).status().message(), "body: JSON nested deeper than 32 levels");
  // Brackets inside strings do not count.
  const std::string brackets(100, '[');
  auto quoted = InferRequestFromJson("m", "", "{\"id\": \"" + brackets + "\"}");
  ASSERT_TRUE(quoted.ok()) << quoted.status();
  EXPECT_EQ(quoted->id(), brackets);
}

TEST(RestJsonTest, TheResponseCarriesTheBytesAsADataArray) {
  inference::ModelInferResponse response;
  response.set_model_name("m");
  response.set_model_version("1");
  response.set_id("q");
  (*response.mutable_parameters())["seed"].set_int64_param(7);
  auto* output = response.add_outputs();
  output->set_name("image");
  output->set_datatype("UINT8");
  for (int64_t d : {1, 1, 3, 1}) output->add_shape(d);
  response.add_raw_output_contents(std::string("\x00\x7f\xff", 3));
  EXPECT_EQ(InferResponseToJson(response),
            R"({"id":"q","model_name":"m","model_version":"1","outputs":[{"data":[0,127,255],"datatype":"UINT8",)"
            R"("name":"image","shape":[1,1,3,1]}],"parameters":{"seed":7}})");
}

TEST(RestJsonTest, StatusCodesMapToHttp) {
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kOk), 200);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kNotFound), 404);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kCancelled), 499);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kUnavailable), 503);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kDeadlineExceeded), 504);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kInternal), 500);
}

}  // namespace
}  // namespace tcm
