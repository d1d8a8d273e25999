#include "models/load.h"

#include <torch/cuda.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cstdlib>
#include <filesystem>

#include "io/errors.h"
#include "io/json_io.h"

namespace p2dpo::models {

std::unique_ptr<VisionLanguageModel> load_model(const std::string& dir, const LoadOptions& opts) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir)) throw InputError(dir, "model directory not found");
  const std::string config = (fs::path(dir) / "config.json").string();
  auto j = io::read_json_file(config);
  const std::string type = j.value("model_type", std::string());
  if (type == "llava") return LlavaModel::load(dir, opts);
  throw InputError(config, "field 'model_type': '" + type + "' is not supported (supported: llava)");
}

torch::Device parse_device(const std::string& s, const std::string& flag) {
  if (s == "cpu") return torch::kCPU;
  if (s.rfind("cuda", 0) == 0) {
    if (!torch::cuda::is_available()) throw InputError(flag, "CUDA requested but this build/machine has no CUDA device");
    // Bare "cuda" under torchrun: each local rank takes its own GPU (round-robin when there are
    // more ranks than GPUs), as `torchrun --nproc-per-node N p2dpo train --device cuda` expects.
    const char* local_rank = std::getenv("LOCAL_RANK");
    if (s == "cuda" && local_rank && *local_rank) {
      const long r = std::strtol(local_rank, nullptr, 10);
      const auto n = static_cast<long>(torch::cuda::device_count());
      if (r >= 0 && n > 0) return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(r % n));
    }
    return torch::Device(s);
  }
  throw InputError(flag, "unknown device '" + s + "' (cpu, cuda, cuda:N)");
}

torch::Dtype parse_dtype(const std::string& s, const std::string& flag) {
  if (s == "float32" || s == "fp32") return torch::kFloat32;
  if (s == "bfloat16" || s == "bf16") return torch::kBFloat16;
  if (s == "float16" || s == "fp16") return torch::kFloat16;
  throw InputError(flag, "unknown dtype '" + s + "' (float32, bfloat16, float16)");
}

}  // namespace p2dpo::models
