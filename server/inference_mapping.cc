#include "server/inference_mapping.h"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tcm {
namespace {

using inference::InferParameter;
using inference::ModelInferRequest;

constexpr const char* kParameters[] = {"steps", "seed", "num_images", "priority"};

// The int64 value of request parameter `name`, if given (int64_param or
// uint64_param), in [min, max]; `range_note` follows the range in messages.
absl::StatusOr<std::optional<int64_t>> IntParameter(const ModelInferRequest& request, const std::string& name,
                                                    int64_t min, int64_t max, const std::string& range_note = "") {
  const auto it = request.parameters().find(name);
  if (it == request.parameters().end()) return std::optional<int64_t>();
  const InferParameter& p = it->second;
  int64_t value = 0;
  if (p.parameter_choice_case() == InferParameter::kInt64Param) {
    value = p.int64_param();
  } else if (p.parameter_choice_case() == InferParameter::kUint64Param && p.uint64_param() <= uint64_t(INT64_MAX)) {
    value = static_cast<int64_t>(p.uint64_param());
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("parameter '", name, "': must be an int64 in [", min, ", ", max, "]", range_note));
  }
  if (value < min || value > max)
    return absl::InvalidArgumentError(
        absl::StrCat("parameter '", name, "': must be in [", min, ", ", max, "]", range_note, ", got ", value));
  return std::optional<int64_t>(value);
}

// The N class labels of the `class_label` input (index `i` of the inputs);
// N above `max_images` is refused before any value is read, the message
// saying so with `range_note` after the number.
absl::StatusOr<std::vector<int64_t>> ClassLabels(const ModelInferRequest& request, int i, int64_t max_images,
                                                 const std::string& range_note) {
  const ModelInferRequest::InferInputTensor& input = request.inputs(i);
  if (input.datatype() != "INT64")
    return absl::InvalidArgumentError(
        absl::StrCat("input '", kClassLabelInput, "': datatype must be INT64, got '", input.datatype(), "'"));
  if (input.shape_size() != 1 || input.shape(0) < 1)
    return absl::InvalidArgumentError(absl::StrCat("input '", kClassLabelInput,
                                                   "': shape must be [N] with N >= 1 (one class per image), got [",
                                                   absl::StrJoin(input.shape(), ", "), "]"));
  const int64_t n = input.shape(0);
  if (n > max_images)
    return absl::InvalidArgumentError(
        absl::StrCat("input '", kClassLabelInput, "': N must be at most ", max_images, range_note, ", got ", n));
  std::vector<int64_t> labels;
  if (request.raw_input_contents_size() > 0) {
    const std::string& raw = request.raw_input_contents(i);
    if (static_cast<int64_t>(raw.size() / 8) != n || raw.size() % 8 != 0)
      return absl::InvalidArgumentError(absl::StrCat("input '", kClassLabelInput, "': shape [", n, "] needs ", n,
                                                     " INT64 values (", n, " x 8 bytes) in raw_input_contents, got ",
                                                     raw.size(), " bytes"));
    labels.resize(n);
    for (int64_t k = 0; k < n; ++k) {
      uint64_t v = 0;
      for (int b = 7; b >= 0; --b) v = (v << 8) | static_cast<uint8_t>(raw[8 * k + b]);  // little-endian
      labels[k] = static_cast<int64_t>(v);
    }
  } else {
    if (input.contents().int64_contents_size() != n)
      return absl::InvalidArgumentError(absl::StrCat("input '", kClassLabelInput, "': shape [", n, "] needs ", n,
                                                     " values in contents.int64_contents, got ",
                                                     input.contents().int64_contents_size()));
    labels.assign(input.contents().int64_contents().begin(), input.contents().int64_contents().end());
  }
  return labels;
}

}  // namespace

absl::StatusOr<GenerationSpec> SpecFromInferRequest(const ModelInferRequest& request,
                                                    const std::vector<ServedModel>& models, int default_model,
                                                    const ValidationLimits& limits, uint64_t fresh_seed) {
  // The model and version; the rest of the rules are tcm.v1's, on a GenerateRequest.
  v1::GenerateRequest generate;
  generate.set_model(request.model_name());
  generate.set_format(v1::IMAGE_FORMAT_RAW);
  absl::StatusOr<const ServedModel*> found = FindInferenceModel(models, default_model, request.model_name(),
                                                                request.model_version(), "model_name", "model_version");
  if (!found.ok()) return found.status();
  const ServedModel* model = *found;

  for (const auto& [name, value] : request.parameters()) {
    bool known = false;
    for (const char* k : kParameters) known = known || name == k;
    if (!known)
      return absl::InvalidArgumentError(
          absl::StrCat("parameter '", name, "': unknown (known: ", absl::StrJoin(kParameters, ", "), ")"));
  }
  absl::StatusOr<std::optional<int64_t>> steps = IntParameter(request, "steps", 1, 2);
  if (!steps.ok()) return steps.status();
  if (*steps) generate.set_steps(static_cast<uint32_t>(**steps));
  absl::StatusOr<std::optional<int64_t>> seed = IntParameter(request, "seed", 0, INT64_MAX);
  if (!seed.ok()) return seed.status();
  if (*seed) generate.set_seed(static_cast<uint64_t>(**seed));
  absl::StatusOr<std::optional<int64_t>> priority = IntParameter(request, "priority", 0, model->priority_levels);
  if (!priority.ok()) return priority.status();
  if (*priority) generate.set_priority(static_cast<uint32_t>(**priority));
  // The most images a call may ask for: --max_images_per_request, or the model's own cap where smaller.
  bool model_caps = false;
  const unsigned max_images = MaxImagesPerCall(*model, limits, &model_caps);
  const std::string for_model = model_caps ? absl::StrCat(" for model '", model->name, "'") : "";
  absl::StatusOr<std::optional<int64_t>> num_images = IntParameter(request, "num_images", 1, max_images, for_model);
  if (!num_images.ok()) return num_images.status();

  // Inputs: class_label for conditional models, none for unconditional ones.
  const bool conditional = model->num_classes > 0;
  int label_input = -1;
  for (int i = 0; i < request.inputs_size(); ++i) {
    const std::string& name = request.inputs(i).name();
    if (!conditional || name != kClassLabelInput)
      return absl::InvalidArgumentError(
          conditional ? absl::StrCat("input '", name, "': unknown; model '", model->name, "' takes one input, '",
                                     kClassLabelInput, "' (INT64 [N])")
                      : absl::StrCat("input '", name, "': model '", model->name,
                                     "' is unconditional and takes no inputs (give parameter 'num_images')"));
    if (label_input >= 0)
      return absl::InvalidArgumentError(absl::StrCat("input '", kClassLabelInput, "': given twice"));
    label_input = i;
  }
  if (request.raw_input_contents_size() > 0) {
    if (request.raw_input_contents_size() != request.inputs_size())
      return absl::InvalidArgumentError(absl::StrCat("raw_input_contents: one entry per input (", request.inputs_size(),
                                                     "), got ", request.raw_input_contents_size()));
    for (const auto& input : request.inputs())
      if (input.has_contents())
        return absl::InvalidArgumentError(
            absl::StrCat("input '", input.name(),
                         "': has contents although raw_input_contents holds the data; give one of the two"));
  }
  for (const auto& output : request.outputs())
    if (output.name() != kImageOutput)
      return absl::InvalidArgumentError(absl::StrCat("output '", output.name(), "': unknown; model '", model->name,
                                                     "' gives one output, '", kImageOutput, "' (UINT8 [N, H, W, C])"));

  std::vector<int64_t> labels;
  if (conditional) {
    if (label_input < 0)
      return absl::InvalidArgumentError(absl::StrCat("input '", kClassLabelInput, "': required by model '", model->name,
                                                     "' (INT64 [N], one class per image)"));
    if (*num_images)
      return absl::InvalidArgumentError(absl::StrCat("parameter 'num_images': only for unconditional models; model '",
                                                     model->name, "' makes one image per '", kClassLabelInput,
                                                     "' value"));
    absl::StatusOr<std::vector<int64_t>> read = ClassLabels(request, label_input, max_images, for_model);
    if (!read.ok()) return read.status();
    labels = *std::move(read);
    for (size_t k = 0; k < labels.size(); ++k)
      if (labels[k] < 0 || labels[k] >= model->num_classes)
        return absl::InvalidArgumentError(absl::StrCat("input '", kClassLabelInput, "'[", k, "]: must be in [0, ",
                                                       model->num_classes, ") for model '", model->name, "', got ",
                                                       labels[k]));
    generate.set_num_images(static_cast<uint32_t>(std::min<size_t>(labels.size(), UINT32_MAX)));
    generate.set_class_label(labels[0]);  // checked again by ValidateRequest; every label is set below
  } else {
    generate.set_num_images(*num_images ? static_cast<uint32_t>(**num_images) : 1);
  }

  absl::StatusOr<GenerationSpec> spec = ValidateRequest(generate, models, default_model, limits, fresh_seed);
  // tcm.v1's num_images is, here, class_label's N or the parameter num_images.
  if (!spec.ok())
    return RestateField(spec.status(), "num_images",
                        conditional ? absl::StrCat("input '", kClassLabelInput, "': N ") : "parameter 'num_images': ");
  if (conditional) spec->class_labels = labels;
  return spec;
}

absl::StatusOr<const ServedModel*> FindInferenceModel(const std::vector<ServedModel>& models, int default_model,
                                                      const std::string& name, const std::string& version,
                                                      const char* name_field, const char* version_field) {
  const bool has_default = default_model >= 0 && default_model < static_cast<int>(models.size());
  const ServedModel* model = name.empty() && has_default ? &models[default_model] : nullptr;
  std::vector<std::string> names;
  for (const ServedModel& m : models) {
    names.push_back(m.name);
    if (m.name == name) model = &m;
  }
  if (model == nullptr && name.empty())
    return absl::NotFoundError(absl::StrCat(
        name_field, ": the default model is not served; name one (available: ", absl::StrJoin(names, ", "), ")"));
  if (model == nullptr)
    return absl::NotFoundError(
        absl::StrCat(name_field, ": '", name, "' is not served (available: ", absl::StrJoin(names, ", "), ")"));
  if (!version.empty() && version != kInferenceModelVersion)
    return absl::NotFoundError(absl::StrCat(version_field, ": model '", model->name, "' has no version '", version,
                                            "' (versions: ", kInferenceModelVersion, ")"));
  return model;
}

absl::StatusOr<inference::ModelInferResponse> InferResponseFromImages(const ModelInferRequest& request,
                                                                      const GenerationSpec& spec,
                                                                      const std::vector<v1::Image>& images) {
  std::vector<const v1::Image*> by_index(spec.num_images, nullptr);
  for (const v1::Image& image : images)
    if (image.index() < spec.num_images) by_index[image.index()] = &image;
  inference::ModelInferResponse response;
  response.set_model_name(spec.model_name);
  response.set_model_version(kInferenceModelVersion);
  response.set_id(request.id());
  (*response.mutable_parameters())["seed"].set_int64_param(static_cast<int64_t>(spec.seed));
  (*response.mutable_parameters())["steps"].set_int64_param(spec.steps);
  if (by_index.empty() || by_index[0] == nullptr) return absl::InternalError("image 0 is missing");
  const v1::Image& first = *by_index[0];
  const size_t bytes = size_t(first.width()) * first.height() * first.channels();
  std::string* data = response.add_raw_output_contents();
  data->reserve(bytes * spec.num_images);
  for (unsigned i = 0; i < spec.num_images; ++i) {
    const v1::Image* image = by_index[i];
    if (image == nullptr) return absl::InternalError(absl::StrCat("image ", i, " is missing"));
    if (image->format() != v1::IMAGE_FORMAT_RAW || image->data().size() != bytes || image->width() != first.width() ||
        image->height() != first.height() || image->channels() != first.channels())
      return absl::InternalError(absl::StrCat("image ", i, " is not a raw image of the size of image 0"));
    data->append(image->data());
  }
  auto* output = response.add_outputs();
  output->set_name(kImageOutput);
  output->set_datatype("UINT8");
  for (int64_t d :
       {int64_t(spec.num_images), int64_t(first.height()), int64_t(first.width()), int64_t(first.channels())})
    output->add_shape(d);
  return response;
}

inference::ModelMetadataResponse ModelMetadataOf(const ServedModel& model) {
  inference::ModelMetadataResponse metadata;
  metadata.set_name(model.name);
  metadata.add_versions(kInferenceModelVersion);
  metadata.set_platform(kInferencePlatform);
  if (model.num_classes > 0) {
    auto* input = metadata.add_inputs();
    input->set_name(kClassLabelInput);
    input->set_datatype("INT64");
    input->add_shape(-1);
  }
  auto* output = metadata.add_outputs();
  output->set_name(kImageOutput);
  output->set_datatype("UINT8");
  for (int64_t d : {int64_t(-1), int64_t(model.resolution), int64_t(model.resolution), int64_t(model.channels)})
    output->add_shape(d);
  return metadata;
}

}  // namespace tcm
