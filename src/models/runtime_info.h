#pragma once
// How a loaded model computes, for a run's own records (train's config.json, pairs' manifest.json):
// what the command line and the machine decided beside the run's config. Device, dtype, PyTorch
// version, and on CUDA the process-wide kernel switches (models/fused_ops.h,
// models/attention_backend.h).
#include <nlohmann/json.hpp>

namespace p2dpo::models {

class VisionLanguageModel;

nlohmann::json describe_model_runtime(VisionLanguageModel& model);

}  // namespace p2dpo::models
