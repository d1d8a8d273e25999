#include "models/runtime_info.h"

#include <torch/types.h>
#include <torch/version.h>

#include "models/attention_backend.h"
#include "models/fused_ops.h"
#include "models/layers.h"
#include "models/vlm.h"

namespace p2dpo::models {

nlohmann::json describe_model_runtime(VisionLanguageModel& model) {
  const torch::Device device = model.device();
  const torch::Dtype dtype = model.linear_layers().front().layer->weight.scalar_type();
  const char* name = dtype == torch::kFloat32    ? "float32"
                     : dtype == torch::kBFloat16 ? "bfloat16"
                     : dtype == torch::kFloat16  ? "float16"
                                                 : "other";
  nlohmann::json j{{"device", device.str()}, {"dtype", name}, {"torch", TORCH_VERSION}};
  if (device.is_cuda()) {
    j["cuda_fused_ops"] = cuda_fused_ops();
    if (const auto cudnn = cudnn_attention_allowed()) j["cudnn_attention"] = *cudnn;
  }
  return j;
}

}  // namespace p2dpo::models
