#pragma once
// Opens a Hugging Face model directory as a VisionLanguageModel, choosing the family from
// config.json's model_type. Callers never name the family.
#include <memory>
#include <string>

#include "models/llava.h"
#include "models/vlm.h"

namespace p2dpo::models {

std::unique_ptr<VisionLanguageModel> load_model(const std::string& dir, const LoadOptions& opts = {});

// "cpu", "cuda", "cuda:1"; "float32", "bfloat16", "float16". InputError naming `flag` otherwise.
torch::Device parse_device(const std::string& s, const std::string& flag);
torch::Dtype parse_dtype(const std::string& s, const std::string& flag);

}  // namespace p2dpo::models
