#include "server/rest_json.h"

#include <cstdint>
#include <limits>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace tcm {
namespace {

using nlohmann::json;

absl::Status Invalid(const std::string& where, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

// The deepest nesting of arrays and objects in `text`, outside strings.
int JsonDepth(const std::string& text) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

absl::Status ParameterFromJson(const std::string& where, const json& value, inference::InferParameter* parameter) {
  if (value.is_boolean()) {
    parameter->set_bool_param(value.get<bool>());
  } else if (value.is_number_unsigned() && value.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max())) {
    parameter->set_uint64_param(value.get<uint64_t>());
  } else if (value.is_number_integer()) {
    parameter->set_int64_param(value.get<int64_t>());
  } else if (value.is_number_float()) {
    parameter->set_double_param(value.get<double>());
  } else if (value.is_string()) {
    parameter->set_string_param(value.get<std::string>());
  } else {
    return Invalid(where, "must be a boolean, number or string");
  }
  return absl::OkStatus();
}

absl::Status ParametersFromJson(const std::string& where, const json& object,
                                google::protobuf::Map<std::string, inference::InferParameter>* parameters) {
  if (!object.is_object()) return Invalid(where, "must be an object");
  for (const auto& [name, value] : object.items())
    if (absl::Status s = ParameterFromJson(absl::StrCat(where, ".", name), value, &(*parameters)[name]); !s.ok())
      return s;
  return absl::OkStatus();
}

// Appends the integers of `data` (nested arrays allowed, row-major) to `out`.
absl::Status FlattenIntegers(const std::string& where, const json& data,
                             google::protobuf::RepeatedField<int64_t>* out) {
  if (data.is_array()) {
    for (const json& element : data)
      if (absl::Status s = FlattenIntegers(where, element, out); !s.ok()) return s;
    return absl::OkStatus();
  }
  if (!data.is_number_integer() ||
      (data.is_number_unsigned() && data.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max())))
    return Invalid(where, absl::StrCat("must hold INT64 integers, got ", data.dump()));
  out->Add(data.get<int64_t>());
  return absl::OkStatus();
}

absl::Status InputFromJson(const std::string& where, const json& input,
                           inference::ModelInferRequest::InferInputTensor* tensor) {
  if (!input.is_object()) return Invalid(where, "must be an object with name, datatype, shape and data");
  for (const auto& [key, value] : input.items())
    if (key != "name" && key != "datatype" && key != "shape" && key != "parameters" && key != "data")
      return Invalid(absl::StrCat(where, ".", key), "unknown field (known: name, datatype, shape, parameters, data)");
  for (const char* field : {"name", "datatype"}) {
    if (!input.contains(field) || !input[field].is_string())
      return Invalid(absl::StrCat(where, ".", field), "required, a string");
  }
  tensor->set_name(input["name"].get<std::string>());
  tensor->set_datatype(input["datatype"].get<std::string>());
  if (!input.contains("shape") || !input["shape"].is_array())
    return Invalid(absl::StrCat(where, ".shape"), "required, an array of integers");
  for (const json& d : input["shape"]) {
    if (!d.is_number_integer() || (d.is_number_unsigned() && d.get<uint64_t>() > uint64_t(INT64_MAX)))
      return Invalid(absl::StrCat(where, ".shape"), absl::StrCat("must hold INT64 integers, got ", d.dump()));
    tensor->add_shape(d.get<int64_t>());
  }
  if (input.contains("parameters"))
    if (absl::Status s =
            ParametersFromJson(absl::StrCat(where, ".parameters"), input["parameters"], tensor->mutable_parameters());
        !s.ok())
      return s;
  if (!input.contains("data")) return Invalid(absl::StrCat(where, ".data"), "required");
  if (tensor->datatype() != "INT64")  // the only datatype any model takes; the mapping names it
    return absl::OkStatus();
  return FlattenIntegers(absl::StrCat(where, ".data"), input["data"],
                         tensor->mutable_contents()->mutable_int64_contents());
}

json ParametersToJson(const google::protobuf::Map<std::string, inference::InferParameter>& parameters) {
  json object = json::object();
  for (const auto& [name, p] : parameters) {
    switch (p.parameter_choice_case()) {
      case inference::InferParameter::kBoolParam:
        object[name] = p.bool_param();
        break;
      case inference::InferParameter::kInt64Param:
        object[name] = p.int64_param();
        break;
      case inference::InferParameter::kUint64Param:
        object[name] = p.uint64_param();
        break;
      case inference::InferParameter::kDoubleParam:
        object[name] = p.double_param();
        break;
      case inference::InferParameter::kStringParam:
        object[name] = p.string_param();
        break;
      default:
        break;
    }
  }
  return object;
}

json TensorMetadataToJson(const inference::ModelMetadataResponse::TensorMetadata& tensor) {
  return json{{"name", tensor.name()}, {"datatype", tensor.datatype()}, {"shape", tensor.shape()}};
}

}  // namespace

absl::StatusOr<inference::ModelInferRequest> InferRequestFromJson(const std::string& model, const std::string& version,
                                                                  const std::string& body) {
  if (JsonDepth(body) > kMaxJsonDepth)
    return Invalid("body", absl::StrCat("JSON nested deeper than ", kMaxJsonDepth, " levels"));
  const json root = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return Invalid("body", "not valid JSON");
  if (!root.is_object()) return Invalid("body", "must be a JSON object with \"inputs\"");
  inference::ModelInferRequest request;
  request.set_model_name(model);
  request.set_model_version(version);
  for (const auto& [key, value] : root.items()) {
    if (key == "id") {
      if (!value.is_string()) return Invalid("id", "must be a string");
      request.set_id(value.get<std::string>());
    } else if (key == "parameters") {
      if (absl::Status s = ParametersFromJson("parameters", value, request.mutable_parameters()); !s.ok()) return s;
    } else if (key == "inputs") {
      if (!value.is_array()) return Invalid("inputs", "must be an array");
      for (size_t i = 0; i < value.size(); ++i)
        if (absl::Status s = InputFromJson(absl::StrCat("inputs[", i, "]"), value[i], request.add_inputs()); !s.ok())
          return s;
    } else if (key == "outputs") {
      if (!value.is_array()) return Invalid("outputs", "must be an array");
      for (size_t i = 0; i < value.size(); ++i) {
        const json& output = value[i];
        const std::string where = absl::StrCat("outputs[", i, "]");
        if (!output.is_object() || !output.contains("name") || !output["name"].is_string())
          return Invalid(where, "must be an object with a string name");
        auto* tensor = request.add_outputs();
        tensor->set_name(output["name"].get<std::string>());
        for (const auto& [field, setting] : output.items()) {
          if (field == "parameters") {
            // Read and kept, not acted on: outputs are always JSON data.
            if (absl::Status s =
                    ParametersFromJson(absl::StrCat(where, ".parameters"), setting, tensor->mutable_parameters());
                !s.ok())
              return s;
          } else if (field != "name") {
            return Invalid(absl::StrCat(where, ".", field), "unknown field (known: name, parameters)");
          }
        }
      }
    } else {
      return Invalid(key, "unknown field (known: id, parameters, inputs, outputs)");
    }
  }
  return request;
}

std::string InferResponseToJson(const inference::ModelInferResponse& response) {
  json outputs = json::array();
  for (int i = 0; i < response.outputs_size(); ++i) {
    const auto& tensor = response.outputs(i);
    json data = json::array();
    if (i < response.raw_output_contents_size())
      for (unsigned char byte : response.raw_output_contents(i)) data.push_back(static_cast<int>(byte));
    outputs.push_back(json{{"name", tensor.name()},
                           {"datatype", tensor.datatype()},
                           {"shape", tensor.shape()},
                           {"data", std::move(data)}});
  }
  json root{{"model_name", response.model_name()},
            {"model_version", response.model_version()},
            {"parameters", ParametersToJson(response.parameters())},
            {"outputs", std::move(outputs)}};
  if (!response.id().empty()) root["id"] = response.id();
  return root.dump();
}

std::string ModelMetadataToJson(const inference::ModelMetadataResponse& metadata) {
  json inputs = json::array(), outputs = json::array();
  for (const auto& t : metadata.inputs()) inputs.push_back(TensorMetadataToJson(t));
  for (const auto& t : metadata.outputs()) outputs.push_back(TensorMetadataToJson(t));
  return json{{"name", metadata.name()},
              {"versions", metadata.versions()},
              {"platform", metadata.platform()},
              {"inputs", std::move(inputs)},
              {"outputs", std::move(outputs)}}
      .dump();
}

std::string ServerMetadataToJson(const inference::ServerMetadataResponse& metadata) {
  return json{{"name", metadata.name()}, {"version", metadata.version()}, {"extensions", metadata.extensions()}}.dump();
}

int HttpStatusOf(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      return 400;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    case absl::StatusCode::kCancelled:
      return 499;  // the caller closed its connection first (nginx's code; nobody reads it but the access log)
    default:
      return 500;
  }
}

}  // namespace tcm
