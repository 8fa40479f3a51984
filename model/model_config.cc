#include "model/model_config.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/batching_defaults.h"
#include "common/read_file.h"
#include "common/status_macros.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "nlohmann/json.hpp"

namespace tcm {
namespace {

using v1::Edm2UNetConfig;
using v1::ModelConfig;
using v1::SongUNetConfig;

absl::Status Bad(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

absl::Status CheckPositiveList(const google::protobuf::RepeatedField<uint32_t>& list, absl::string_view field) {
  if (list.empty()) return Bad(field, "must list at least one value");
  for (uint32_t v : list)
    if (v == 0) return Bad(field, "entries must be positive");
  return absl::OkStatus();
}

absl::Status CheckUnitInterval(float value, absl::string_view field) {
  if (!(value >= 0.0f && value <= 1.0f)) return Bad(field, absl::StrCat("must be in [0, 1], got ", value));
  return absl::OkStatus();
}

absl::Status CheckDropout(float value, absl::string_view field) {
  if (!(value >= 0.0f && value < 1.0f)) return Bad(field, absl::StrCat("must be in [0, 1), got ", value));
  return absl::OkStatus();
}

// `value` of `field` must be finite (NaN passes every comparison, so each
// range check below states what is allowed, not what is refused).
absl::Status CheckFinite(float value, absl::string_view field) {
  if (!std::isfinite(value)) return Bad(field, absl::StrCat("must be a finite number, got ", value));
  return absl::OkStatus();
}

absl::Status CheckResampleFilter(google::protobuf::RepeatedField<float>* filter, absl::string_view field) {
  if (filter->empty()) {
    filter->Add(1.0f);
    filter->Add(1.0f);
  }
  if (filter->size() % 2 != 0) return Bad(field, "must have an even number of taps");
  const std::string taps = absl::StrCat("[", absl::StrJoin(*filter, ", "), "]");
  float sum = 0, largest = 0;
  for (float f : *filter) {
    if (!std::isfinite(f)) return Bad(field, absl::StrCat("taps must be finite numbers, got ", taps));
    sum += f;
    largest = std::max(largest, std::abs(f));
  }
  if (sum == 0.0f) return Bad(field, absl::StrCat("taps must not sum to zero, got ", taps));
  // The network uses taps x taps / sum^2 in float32 (ResampleFilter2d).
  const float square = sum * sum;
  if (!(std::isfinite(largest * largest) && square > 0 && std::isfinite(square) &&
        std::isfinite(largest * largest / square)))
    return Bad(field, absl::StrCat("taps x taps / sum^2 must be finite in float32, got ", taps));
  return absl::OkStatus();
}

// `value` of `field` must be at most `limit`.
absl::Status CheckAtMost(uint64_t value, uint64_t limit, absl::string_view field) {
  if (value > limit) return Bad(field, absl::StrCat("must be at most ", limit, ", got ", value));
  return absl::OkStatus();
}

absl::Status CheckListLimits(const google::protobuf::RepeatedField<uint32_t>& list, int max_entries, uint32_t max_value,
                             absl::string_view field) {
  if (list.size() > max_entries)
    return Bad(field, absl::StrCat("must have at most ", max_entries, " entries, got ", list.size()));
  for (uint32_t v : list) TCM_RETURN_IF_ERROR(CheckAtMost(v, max_value, field));
  return absl::OkStatus();
}

// The sizes shared by both architectures, against ConfigLimits; `prefix` is
// "edm2" or "song", `default_emb_mult` the embedding multiplier an unset
// channel_mult_emb means. A rough count of the weights (two 3x3 convolutions
// and an embedding projection per block, encoder and decoder, the embedding
// network and the class embedding) guards the network's total size
// (CheckBatchActivations, once the config is complete, its activations).
template <typename Net>
absl::Status CheckNetworkLimits(const Net& c, absl::string_view prefix, uint32_t num_classes,
                                uint32_t default_emb_mult) {
  using L = ConfigLimits;
  const std::string p(prefix);
  TCM_RETURN_IF_ERROR(CheckAtMost(c.model_channels(), L::kMaxModelChannels, p + ".model_channels"));
  TCM_RETURN_IF_ERROR(CheckListLimits(c.channel_mult(), L::kMaxLevels, L::kMaxChannelMult, p + ".channel_mult"));
  TCM_RETURN_IF_ERROR(CheckAtMost(c.num_blocks(), L::kMaxBlocks, p + ".num_blocks"));
  TCM_RETURN_IF_ERROR(CheckAtMost(c.channel_mult_emb(), L::kMaxChannelMult, p + ".channel_mult_emb"));
  TCM_RETURN_IF_ERROR(CheckAtMost(c.channel_mult_noise(), L::kMaxChannelMult, p + ".channel_mult_noise"));
  TCM_RETURN_IF_ERROR(
      CheckListLimits(c.attn_resolutions(), L::kMaxListEntries, L::kMaxResolution, p + ".attn_resolutions"));
  if (c.resample_filter_size() > L::kMaxFilterTaps)
    return Bad(p + ".resample_filter",
               absl::StrCat("must have at most ", L::kMaxFilterTaps, " taps, got ", c.resample_filter_size()));
  // model_channels x `mult` (of `field`): a layer's width, at most kMaxLevelChannels.
  auto width_of = [&](uint64_t mult, const char* field) -> absl::StatusOr<uint64_t> {
    const uint64_t width = static_cast<uint64_t>(c.model_channels()) * mult;
    if (width > L::kMaxLevelChannels)
      return Bad(p + "." + field, absl::StrCat("model_channels x ", field, " must be at most ", L::kMaxLevelChannels,
                                               ", got ", c.model_channels(), " x ", mult, " = ", width));
    return width;
  };
  TCM_ASSIGN_OR_RETURN(const uint64_t emb,
                       width_of(c.channel_mult_emb() ? c.channel_mult_emb() : default_emb_mult, "channel_mult_emb"));
  const double e = static_cast<double>(emb);
  double weights = 2.0 * e * e + static_cast<double>(num_classes) * e;
  for (uint32_t mult : c.channel_mult()) {
    TCM_ASSIGN_OR_RETURN(const uint64_t width, width_of(mult, "channel_mult"));
    const double w = static_cast<double>(width);
    weights += 2.0 * (c.num_blocks() + 1) * (2 * 9.0 * w * w + e * w);
  }
  if (weights > L::kMaxParameters)
    return Bad(p, absl::StrCat("a network of about ", absl::StrFormat("%.3g", weights),
                               " weights is past the limit of ", absl::StrFormat("%.3g", L::kMaxParameters),
                               " (model_channels, channel_mult, channel_mult_emb, num_blocks, num_classes)"));
  return absl::OkStatus();
}

absl::Status CheckLimits(const ModelConfig& c) {
  using L = ConfigLimits;
  TCM_RETURN_IF_ERROR(CheckAtMost(c.img_resolution(), L::kMaxResolution, "img_resolution"));
  if (std::find(std::begin(kImageChannelChoices), std::end(kImageChannelChoices), c.img_channels()) ==
      std::end(kImageChannelChoices))
    return Bad("img_channels", absl::StrCat("must be 1 (grey), 3 (RGB) or 4 (RGBA), got ", c.img_channels()));
  TCM_RETURN_IF_ERROR(CheckAtMost(c.num_classes(), L::kMaxClasses, "num_classes"));
  if (c.has_edm2()) {
    uint32_t largest_mult = 1;
    for (uint32_t m : c.edm2().channel_mult()) largest_mult = std::max(largest_mult, m);
    TCM_RETURN_IF_ERROR(CheckNetworkLimits(c.edm2(), "edm2", c.num_classes(), /*default_emb_mult=*/largest_mult));
    TCM_RETURN_IF_ERROR(CheckAtMost(c.edm2().channels_per_head(), L::kMaxChannelsPerHead, "edm2.channels_per_head"));
    TCM_RETURN_IF_ERROR(
        CheckListLimits(c.edm2().dout_resolutions(), L::kMaxListEntries, L::kMaxResolution, "edm2.dout_resolutions"));
  }
  if (c.has_song()) {
    TCM_RETURN_IF_ERROR(CheckNetworkLimits(c.song(), "song", c.num_classes(), /*default_emb_mult=*/4));
    TCM_RETURN_IF_ERROR(CheckAtMost(c.song().augment_dim(), L::kMaxAugmentDim, "song.augment_dim"));
  }
  TCM_RETURN_IF_ERROR(CheckAtMost(c.batching().max_batch_size(), L::kMaxBatchSize, "batching.max_batch_size"));
  TCM_RETURN_IF_ERROR(CheckAtMost(c.batching().max_queue_size(), L::kMaxQueueSize, "batching.max_queue_size"));
  TCM_RETURN_IF_ERROR(
      CheckAtMost(c.batching().max_queue_delay_us(), L::kMaxQueueDelayUs, "batching.max_queue_delay_us"));
  TCM_RETURN_IF_ERROR(CheckAtMost(c.batching().priority_levels(), L::kMaxPriorityLevels, "batching.priority_levels"));
  TCM_RETURN_IF_ERROR(
      CheckAtMost(c.batching().default_priority_level(), L::kMaxPriorityLevels, "batching.default_priority_level"));
  TCM_RETURN_IF_ERROR(CheckAtMost(c.instance().count(), L::kMaxInstances, "instance.count"));
  return absl::OkStatus();
}

absl::Status CompleteEdm2(Edm2UNetConfig* c) {
  if (c->model_channels() == 0) return Bad("edm2.model_channels", "must be positive");
  TCM_RETURN_IF_ERROR(CheckPositiveList(c->channel_mult(), "edm2.channel_mult"));
  if (c->num_blocks() == 0) return Bad("edm2.num_blocks", "must be positive");
  if (!c->has_label_balance()) c->set_label_balance(0.5f);
  if (!c->has_concat_balance()) c->set_concat_balance(0.5f);
  if (!c->has_fourier_scale()) c->set_fourier_scale(1.0f);
  if (!c->has_channels_per_head()) c->set_channels_per_head(64);
  if (!c->has_res_balance()) c->set_res_balance(0.3f);
  if (!c->has_attn_balance()) c->set_attn_balance(0.3f);
  if (!c->has_clip_act()) c->set_clip_act(256.0f);
  if (c->dout_resolutions().empty()) {
    c->add_dout_resolutions(16);
    c->add_dout_resolutions(8);
  }
  TCM_RETURN_IF_ERROR(CheckUnitInterval(c->label_balance(), "edm2.label_balance"));
  TCM_RETURN_IF_ERROR(CheckUnitInterval(c->concat_balance(), "edm2.concat_balance"));
  TCM_RETURN_IF_ERROR(CheckUnitInterval(c->res_balance(), "edm2.res_balance"));
  TCM_RETURN_IF_ERROR(CheckUnitInterval(c->attn_balance(), "edm2.attn_balance"));
  if (c->channels_per_head() == 0) return Bad("edm2.channels_per_head", "must be positive");
  TCM_RETURN_IF_ERROR(CheckFinite(c->fourier_scale(), "edm2.fourier_scale"));
  if (!(c->clip_act() >= 0 && std::isfinite(c->clip_act())))
    return Bad("edm2.clip_act", absl::StrCat("must be a finite number >= 0 (0 = no clipping), got ", c->clip_act()));
  TCM_RETURN_IF_ERROR(CheckDropout(c->dropout(), "edm2.dropout"));
  return CheckResampleFilter(c->mutable_resample_filter(), "edm2.resample_filter");
}

absl::Status CompleteSong(SongUNetConfig* c) {
  if (c->model_channels() == 0) return Bad("song.model_channels", "must be positive");
  TCM_RETURN_IF_ERROR(CheckPositiveList(c->channel_mult(), "song.channel_mult"));
  if (c->num_blocks() == 0) return Bad("song.num_blocks", "must be positive");
  if (!c->has_channel_mult_emb()) c->set_channel_mult_emb(4);
  if (!c->has_channel_mult_noise()) c->set_channel_mult_noise(1);
  if (!c->has_fourier_scale()) c->set_fourier_scale(16.0f);
  if (c->channel_mult_emb() == 0) return Bad("song.channel_mult_emb", "must be positive");
  if (c->channel_mult_noise() == 0) return Bad("song.channel_mult_noise", "must be positive");
  if (c->embedding_type().empty()) c->set_embedding_type("positional");
  if (c->encoder_type().empty()) c->set_encoder_type("standard");
  if (c->decoder_type().empty()) c->set_decoder_type("standard");
  if (c->embedding_type() != "positional" && c->embedding_type() != "fourier")
    return Bad("song.embedding_type",
               absl::StrCat("must be \"positional\" or \"fourier\", got \"", c->embedding_type(), "\""));
  if (c->encoder_type() != "standard" && c->encoder_type() != "skip" && c->encoder_type() != "residual")
    return Bad("song.encoder_type",
               absl::StrCat("must be \"standard\", \"skip\" or \"residual\", got \"", c->encoder_type(), "\""));
  if (c->decoder_type() != "standard" && c->decoder_type() != "skip")
    return Bad("song.decoder_type", absl::StrCat("must be \"standard\" or \"skip\", got \"", c->decoder_type(), "\""));
  TCM_RETURN_IF_ERROR(CheckFinite(c->fourier_scale(), "song.fourier_scale"));
  TCM_RETURN_IF_ERROR(CheckDropout(c->dropout(), "song.dropout"));
  return CheckResampleFilter(c->mutable_resample_filter(), "song.resample_filter");
}

// A JSON integer in [0, UINT32_MAX] (the proto fields' type; each field's
// own limit is checked once the config is complete), never wrapped.
absl::StatusOr<uint32_t> JsonUint(const nlohmann::json& value, absl::string_view key) {
  if (!value.is_number_integer() || (!value.is_number_unsigned() && value.get<int64_t>() < 0))
    return Bad(key, "must be a non-negative integer");
  const uint64_t v = value.get<uint64_t>();
  if (v > UINT32_MAX) return Bad(key, absl::StrCat("must be at most ", UINT32_MAX, ", got ", v));
  return static_cast<uint32_t>(v);
}

// A JSON number inside the float32 range (the proto fields' type), never
// rounded to infinity.
absl::StatusOr<float> JsonFloat(const nlohmann::json& value, absl::string_view key) {
  if (!value.is_number()) return Bad(key, "must be a number");
  const double v = value.get<double>();
  if (!(std::abs(v) <= FLT_MAX))
    return Bad(key, absl::StrCat("must be a finite number of at most ", FLT_MAX, " in magnitude (float32), got ", v));
  return static_cast<float>(v);
}

// Reads a JSON list of non-negative integers into `out`.
absl::Status JsonUintList(const nlohmann::json& value, absl::string_view key,
                          google::protobuf::RepeatedField<uint32_t>* out) {
  if (!value.is_array()) return Bad(key, "must be a list of integers");
  for (const auto& v : value) {
    if (!v.is_number_integer()) return Bad(key, "must be a list of non-negative integers");
    TCM_ASSIGN_OR_RETURN(const uint32_t entry, JsonUint(v, key));
    out->Add(entry);
  }
  return absl::OkStatus();
}

absl::Status JsonFloatList(const nlohmann::json& value, absl::string_view key,
                           google::protobuf::RepeatedField<float>* out) {
  if (!value.is_array()) return Bad(key, "must be a list of numbers");
  for (const auto& v : value) {
    if (!v.is_number()) return Bad(key, "must be a list of numbers");
    TCM_ASSIGN_OR_RETURN(const float entry, JsonFloat(v, key));
    out->Add(entry);
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> JsonBool(const nlohmann::json& value, absl::string_view key) {
  if (!value.is_boolean()) return Bad(key, "must be true or false");
  return value.get<bool>();
}

absl::StatusOr<std::string> JsonString(const nlohmann::json& value, absl::string_view key) {
  if (!value.is_string()) return Bad(key, "must be a string");
  return value.get<std::string>();
}

// Stores a value read by one of the Json* readers above with `config`'s setter `set`, or returns the
// reader's error.
template <typename Config, typename T>
absl::Status ReadInto(absl::StatusOr<T> read, Config* config, void (Config::*set)(T)) {
  if (!read.ok()) return read.status();
  (config->*set)(*read);
  return absl::OkStatus();
}

absl::Status ReadString(const nlohmann::json& value, absl::string_view key, std::string* out) {
  TCM_ASSIGN_OR_RETURN(*out, JsonString(value, key));
  return absl::OkStatus();
}

// One keyword argument of the reference EDM2UNet constructor.
absl::Status Edm2FromJson(const std::string& key, const nlohmann::json& v, Edm2UNetConfig* c) {
  using C = Edm2UNetConfig;
  if (key == "model_channels") return ReadInto(JsonUint(v, key), c, &C::set_model_channels);
  if (key == "channel_mult") return JsonUintList(v, key, c->mutable_channel_mult());
  // null: the constructor's own default, which proto3 leaves unset.
  if (key == "channel_mult_noise")
    return v.is_null() ? absl::OkStatus() : ReadInto(JsonUint(v, key), c, &C::set_channel_mult_noise);
  if (key == "channel_mult_emb")
    return v.is_null() ? absl::OkStatus() : ReadInto(JsonUint(v, key), c, &C::set_channel_mult_emb);
  if (key == "num_blocks") return ReadInto(JsonUint(v, key), c, &C::set_num_blocks);
  if (key == "attn_resolutions") return JsonUintList(v, key, c->mutable_attn_resolutions());
  if (key == "label_balance") return ReadInto(JsonFloat(v, key), c, &C::set_label_balance);
  if (key == "concat_balance") return ReadInto(JsonFloat(v, key), c, &C::set_concat_balance);
  if (key == "emb_norm") return ReadInto(JsonBool(v, key), c, &C::set_emb_norm);
  if (key == "scale") return ReadInto(JsonFloat(v, key), c, &C::set_fourier_scale);
  if (key == "learnable_scale") return ReadInto(JsonBool(v, key), c, &C::set_learnable_scale);
  if (key == "channels_per_head") return ReadInto(JsonUint(v, key), c, &C::set_channels_per_head);
  if (key == "res_balance") return ReadInto(JsonFloat(v, key), c, &C::set_res_balance);
  if (key == "attn_balance") return ReadInto(JsonFloat(v, key), c, &C::set_attn_balance);
  if (key == "clip_act") {  // null: no clipping
    if (v.is_null()) {
      c->set_clip_act(0);
      return absl::OkStatus();
    }
    return ReadInto(JsonFloat(v, key), c, &C::set_clip_act);
  }
  if (key == "resample_filter") return JsonFloatList(v, key, c->mutable_resample_filter());
  if (key == "dropout") return ReadInto(JsonFloat(v, key), c, &C::set_dropout);
  if (key == "dout_resolutions") return JsonUintList(v, key, c->mutable_dout_resolutions());
  return Bad(key, "unknown EDM2UNet argument");
}

// One keyword argument of the reference SongUNet constructor.
absl::Status SongFromJson(const std::string& key, const nlohmann::json& v, SongUNetConfig* c) {
  using C = SongUNetConfig;
  if (key == "model_channels") return ReadInto(JsonUint(v, key), c, &C::set_model_channels);
  if (key == "channel_mult") return JsonUintList(v, key, c->mutable_channel_mult());
  if (key == "channel_mult_emb") return ReadInto(JsonUint(v, key), c, &C::set_channel_mult_emb);
  if (key == "num_blocks") return ReadInto(JsonUint(v, key), c, &C::set_num_blocks);
  if (key == "attn_resolutions") return JsonUintList(v, key, c->mutable_attn_resolutions());
  if (key == "embedding_type") return ReadString(v, key, c->mutable_embedding_type());
  if (key == "channel_mult_noise") return ReadInto(JsonUint(v, key), c, &C::set_channel_mult_noise);
  if (key == "encoder_type") return ReadString(v, key, c->mutable_encoder_type());
  if (key == "decoder_type") return ReadString(v, key, c->mutable_decoder_type());
  if (key == "resample_filter") return JsonFloatList(v, key, c->mutable_resample_filter());
  if (key == "scale") return ReadInto(JsonFloat(v, key), c, &C::set_fourier_scale);
  if (key == "learnable_scale") return ReadInto(JsonBool(v, key), c, &C::set_learnable_scale);
  if (key == "emb_norm") return ReadInto(JsonBool(v, key), c, &C::set_emb_norm);
  if (key == "augment_dim") return ReadInto(JsonUint(v, key), c, &C::set_augment_dim);
  if (key == "dropout") return ReadInto(JsonFloat(v, key), c, &C::set_dropout);
  if (key == "label_dropout") return absl::OkStatus();  // training-only, and zero in every released model
  if (key == "attn_type") {
    TCM_ASSIGN_OR_RETURN(auto x, JsonString(v, key));
    if (x != "dot") return Bad(key, absl::StrCat("only \"dot\" attention is supported, got \"", x, "\""));
    return absl::OkStatus();
  }
  return Bad(key, "unknown SongUNet argument");
}

// One keyword argument of the reference network constructor: a field of ModelConfig or of its network's block.
absl::Status ArgumentFromJson(const std::string& key, const nlohmann::json& v, ModelConfig* c) {
  if (key == "model_type" || key == "use_fp16" || key == "sigma_min" || key == "sigma_max") return absl::OkStatus();
  if (key == "img_resolution") return ReadInto(JsonUint(v, key), c, &ModelConfig::set_img_resolution);
  if (key == "img_channels") return ReadInto(JsonUint(v, key), c, &ModelConfig::set_img_channels);
  if (key == "label_dim") return ReadInto(JsonUint(v, key), c, &ModelConfig::set_num_classes);
  if (key == "sigma_data") return ReadInto(JsonFloat(v, key), c, &ModelConfig::set_sigma_data);
  return c->has_edm2() ? Edm2FromJson(key, v, c->mutable_edm2()) : SongFromJson(key, v, c->mutable_song());
}

}  // namespace

int NumLevels(const ModelConfig& config) {
  return config.has_edm2() ? config.edm2().channel_mult_size() : config.song().channel_mult_size();
}

absl::Status CheckModelName(const std::string& name) {
  bool plain = !name.empty() && name.size() <= 200 && name.front() != '.';
  for (char ch : name)
    plain = plain && ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
                      ch == '_' || ch == '.');
  if (plain) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("model name '", name.substr(0, 64),
                   "': must be 1 to 200 letters, digits, '-', '_' and '.', not starting with '.'"));
}

namespace {

// EstimatedActivationValues of one architecture: `heads(width)` is the
// attention heads of a block of that width.
template <typename Net, typename Heads>
double EstimateActivations(const Net& net, uint32_t img_resolution, Heads heads) {
  const int levels = net.channel_mult_size();
  double skips = 0, widest = 0, scores = 0;
  double previous_width = 0;
  for (int level = 0; level < levels; ++level) {
    const double res = static_cast<double>(img_resolution >> level);
    const double pixels = res * res;
    const double width = static_cast<double>(net.model_channels()) * net.channel_mult(level);
    // The level's first skip: the input convolution's output, else the
    // downsampling block's (the previous level's width); then one per block.
    skips += pixels * ((level == 0 ? width : previous_width) + net.num_blocks() * width);
    widest = std::max(widest, pixels * width);
    // Attention at the listed resolutions and always at the lowest level (the
    // decoder's first block): a score matrix and its softmax per head.
    const auto& attn = net.attn_resolutions();
    if (level == levels - 1 ||
        std::find(attn.begin(), attn.end(), static_cast<uint32_t>(img_resolution >> level)) != attn.end())
      scores = std::max(scores, 2.0 * heads(width) * pixels * pixels);
    previous_width = width;
  }
  return skips + 8.0 * widest + scores;
}

}  // namespace

double EstimatedActivationValues(const ModelConfig& c) {
  if (c.has_edm2()) {
    const uint32_t per_head = c.edm2().has_channels_per_head() ? c.edm2().channels_per_head() : 64;
    return EstimateActivations(c.edm2(), c.img_resolution(),
                               [per_head](double width) { return per_head ? std::floor(width / per_head) : 0.0; });
  }
  if (c.has_song()) return EstimateActivations(c.song(), c.img_resolution(), [](double) { return 1.0; });
  return 0;
}

absl::Status CheckBatchActivations(const ModelConfig& c, uint64_t max_batch_size, absl::string_view batch_field) {
  const double per_image = EstimatedActivationValues(c);
  const double batch = static_cast<double>(std::max<uint64_t>(max_batch_size, 1));
  if (per_image * batch <= ConfigLimits::kMaxBatchActivationValues) return absl::OkStatus();
  return Bad(
      batch_field,
      absl::StrCat("a batch of ", batch, batch == 1 ? " image" : " images", " of ", c.img_resolution(), "x",
                   c.img_resolution(), " needs about ", absl::StrFormat("%.3g", per_image * batch),
                   " activation values at once (", absl::StrFormat("%.3g", per_image),
                   " per image), past the limit of ", absl::StrFormat("%.3g", ConfigLimits::kMaxBatchActivationValues),
                   " values for a whole batch; a smaller batch, img_resolution, model_channels, channel_mult "
                   "or num_blocks, or fewer attn_resolutions, need fewer"));
}

absl::StatusOr<ModelConfig> CompleteModelConfig(ModelConfig c) {
  TCM_RETURN_IF_ERROR(CheckLimits(c));
  if (!c.name().empty())
    if (absl::Status named = CheckModelName(c.name()); !named.ok()) return Bad("name", named.message());
  if (c.architecture().empty()) {
    if (c.has_edm2()) c.set_architecture(std::string(kEdm2UNet));
    if (c.has_song()) c.set_architecture(std::string(kSongUNet));
  }
  if (c.architecture() == kEdm2UNet) {
    if (!c.has_edm2()) return Bad("edm2", "architecture \"EDM2UNet\" needs an `edm2 { ... }` block");
    TCM_RETURN_IF_ERROR(CompleteEdm2(c.mutable_edm2()));
  } else if (c.architecture() == kSongUNet) {
    if (!c.has_song()) return Bad("song", "architecture \"SongUNet\" needs a `song { ... }` block");
    TCM_RETURN_IF_ERROR(CompleteSong(c.mutable_song()));
  } else {
    return Bad("architecture", absl::StrCat("must be \"EDM2UNet\" or \"SongUNet\", got \"", c.architecture(), "\""));
  }
  const uint32_t divisor = 1u << (NumLevels(c) - 1);
  if (c.img_resolution() == 0 || c.img_resolution() % divisor != 0)
    return Bad("img_resolution", absl::StrCat("must be a positive multiple of ", divisor, " for ", NumLevels(c),
                                              " resolution levels, got ", c.img_resolution()));
  if (!c.has_sigma_data()) c.set_sigma_data(0.5f);
  if (!c.has_t_max()) c.set_t_max(80.0f);
  if (!c.has_mid_t()) c.set_mid_t(0.821f);
  if (c.default_steps() == 0) c.set_default_steps(1);
  if (!(c.sigma_data() > 0 && std::isfinite(c.sigma_data())))
    return Bad("sigma_data", absl::StrCat("must be a positive finite number, got ", c.sigma_data()));
  if (!(c.t_max() > 0 && c.t_max() <= ConfigLimits::kMaxTMax))
    return Bad("t_max", absl::StrCat("must be a finite number in (0, ", ConfigLimits::kMaxTMax,
                                     "] (the released models use 80), got ", c.t_max()));
  if (!(c.mid_t() > 0 && c.mid_t() < c.t_max()))
    return Bad("mid_t", absl::StrCat("must be in (0, t_max = ", c.t_max(), "), got ", c.mid_t()));
  if (c.default_steps() > 2) return Bad("default_steps", absl::StrCat("must be 1 or 2, got ", c.default_steps()));
  if (c.has_transition_t() && !(c.transition_t() > 0 && c.transition_t() < c.t_max()))
    return Bad("transition_t", absl::StrCat("must be in (0, t_max = ", c.t_max(), "), got ", c.transition_t()));
  // Unset, the batch size is the server's --max_batch_size, checked where the
  // server knows it (MergeQueueOptions); here, one image must fit.
  TCM_RETURN_IF_ERROR(CheckBatchActivations(
      c, c.batching().has_max_batch_size() ? c.batching().max_batch_size() : 1,
      c.batching().has_max_batch_size() ? "batching.max_batch_size" : "img_resolution (one image)"));
  return c;
}

absl::StatusOr<ModelConfig> ParseModelConfigText(absl::string_view text, const std::string& source) {
  struct Collector : google::protobuf::io::ErrorCollector {
    std::string first;
    void AddError(int line, int column, const std::string& message) override {
      if (first.empty()) first = absl::StrCat("line ", line + 1, " column ", column + 1, ": ", message);
    }
  } errors;
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  ModelConfig config;
  if (!parser.ParseFromString(std::string(text), &config))
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", errors.first));
  auto completed = CompleteModelConfig(std::move(config));
  if (!completed.ok()) return absl::InvalidArgumentError(absl::StrCat(source, ": ", completed.status().message()));
  return completed;
}

absl::StatusOr<ModelConfig> ReadModelConfigFile(const std::string& path) {
  TCM_ASSIGN_OR_RETURN(std::string text, ReadRegularFile(path, kMaxConfigFileBytes));
  return ParseModelConfigText(text, path);
}

absl::StatusOr<ModelConfig> ModelConfigFromReferenceKwargs(absl::string_view json) {
  nlohmann::json kwargs = nlohmann::json::parse(json.begin(), json.end(), nullptr, /*allow_exceptions=*/false);
  if (kwargs.is_discarded() || !kwargs.is_object())
    return absl::InvalidArgumentError("reference config: not a JSON object");
  ModelConfig c;
  const std::string model_type = kwargs.value("model_type", std::string("DhariwalUNet"));
  c.set_architecture(model_type);
  if (model_type == kEdm2UNet) {
    c.mutable_edm2();
  } else if (model_type == kSongUNet) {
    c.mutable_song();
  } else {
    return Bad("model_type", absl::StrCat("must be \"EDM2UNet\" or \"SongUNet\", got \"", model_type, "\""));
  }
  for (auto it = kwargs.begin(); it != kwargs.end(); ++it)
    TCM_RETURN_IF_ERROR(ArgumentFromJson(it.key(), it.value(), &c));
  // The reference constructors' defaults for fields proto3 cannot mark as unset.
  if (c.has_edm2()) {
    auto* e = c.mutable_edm2();
    if (!kwargs.contains("model_channels")) e->set_model_channels(192);
    if (!kwargs.contains("channel_mult"))
      for (uint32_t m : {1, 2, 3, 4}) e->add_channel_mult(m);
    if (!kwargs.contains("num_blocks")) e->set_num_blocks(3);
    if (!kwargs.contains("attn_resolutions"))
      for (uint32_t r : {16, 8}) e->add_attn_resolutions(r);
  } else {
    auto* s = c.mutable_song();
    if (!kwargs.contains("model_channels")) s->set_model_channels(128);
    if (!kwargs.contains("channel_mult"))
      for (uint32_t m : {1, 2, 2, 2}) s->add_channel_mult(m);
    if (!kwargs.contains("num_blocks")) s->set_num_blocks(4);
    if (!kwargs.contains("attn_resolutions")) s->add_attn_resolutions(16);
    if (!kwargs.contains("dropout")) s->set_dropout(0.1f);
  }
  return CompleteModelConfig(std::move(c));
}

std::string ReferenceKwargsFromModelConfig(const ModelConfig& c) {
  nlohmann::json j;
  j["img_resolution"] = c.img_resolution();
  j["img_channels"] = c.img_channels();
  j["label_dim"] = c.num_classes();
  j["sigma_data"] = c.sigma_data();
  j["model_type"] = c.architecture();
  auto list = [](const auto& repeated) {
    nlohmann::json out = nlohmann::json::array();
    for (auto v : repeated) out.push_back(v);
    return out;
  };
  if (c.has_edm2()) {
    const auto& e = c.edm2();
    j["model_channels"] = e.model_channels();
    j["channel_mult"] = list(e.channel_mult());
    j["channel_mult_noise"] = e.channel_mult_noise() ? nlohmann::json(e.channel_mult_noise()) : nlohmann::json();
    j["channel_mult_emb"] = e.channel_mult_emb() ? nlohmann::json(e.channel_mult_emb()) : nlohmann::json();
    j["num_blocks"] = e.num_blocks();
    j["attn_resolutions"] = list(e.attn_resolutions());
    j["label_balance"] = e.label_balance();
    j["concat_balance"] = e.concat_balance();
    j["emb_norm"] = e.emb_norm();
    j["scale"] = e.fourier_scale();
    j["learnable_scale"] = e.learnable_scale();
    j["channels_per_head"] = e.channels_per_head();
    j["res_balance"] = e.res_balance();
    j["attn_balance"] = e.attn_balance();
    j["clip_act"] = e.clip_act() > 0 ? nlohmann::json(e.clip_act()) : nlohmann::json();
    j["resample_filter"] = list(e.resample_filter());
    j["dropout"] = e.dropout();
    j["dout_resolutions"] = list(e.dout_resolutions());
  } else {
    const auto& s = c.song();
    j["model_channels"] = s.model_channels();
    j["channel_mult"] = list(s.channel_mult());
    j["channel_mult_emb"] = s.channel_mult_emb();
    j["num_blocks"] = s.num_blocks();
    j["attn_resolutions"] = list(s.attn_resolutions());
    j["embedding_type"] = s.embedding_type();
    j["channel_mult_noise"] = s.channel_mult_noise();
    j["encoder_type"] = s.encoder_type();
    j["decoder_type"] = s.decoder_type();
    j["resample_filter"] = list(s.resample_filter());
    j["scale"] = s.fourier_scale();
    j["learnable_scale"] = s.learnable_scale();
    j["emb_norm"] = s.emb_norm();
    j["augment_dim"] = s.augment_dim();
    j["dropout"] = s.dropout();
  }
  return j.dump();
}

}  // namespace tcm
