#include "cli/common.h"

#include <torch/types.h>
#include <torch/utils.h>

#include <iostream>
#include <sstream>

#include "image/decode.h"
#include "io/errors.h"
#include "models/attention_backend.h"
#include "models/fused_ops.h"
#include "train/lora.h"

namespace p2dpo::cli {

void ModelFlags::add(CLI::App* cmd) {
  cmd->add_option("--model", model_dir, "Hugging Face model directory (config.json, safetensors, tokenizer)")
      ->required();
  cmd->add_option("--device", device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--dtype", dtype, "weights dtype: float32, bfloat16, float16")->capture_default_str();
  cmd->add_flag("--pad-to-square", pad_to_square, "pad images to a square with the mean colour (original LLaVA)");
  cmd->add_option("--adapter", adapter_dir, "LoRA adapter directory (PEFT layout, e.g. a `p2dpo train` run's adapter/) applied on top of --model");
  cmd->add_option("--cudnn-attention", cudnn_attention,
                  "whether PyTorch may run attention on cuDNN's kernels (CUDA, PyTorch >= 2.4): auto (off: the "
                  "memory-efficient kernels, without cuDNN's per-shape plans), on (PyTorch's choice) or off")
      ->capture_default_str();
  cmd->add_option("--cuda-fused-ops", cuda_fused_ops,
                  "on CUDA, q/k/v in one GEMM and RMSNorm as one rms_norm op (the same values as HF's op order "
                  "to float rounding, fewer host launches): on, or off for HF's op order exactly as on the CPU")
      ->capture_default_str();
}

std::unique_ptr<models::VisionLanguageModel> ModelFlags::load() const {
  models::LoadOptions opts;
  opts.device = models::parse_device(device, "--device");
  opts.dtype = models::parse_dtype(dtype, "--dtype");
  opts.pad_to_square = pad_to_square;
  const auto cudnn = models::parse_cudnn_attention(cudnn_attention, "--cudnn-attention");
  if (cuda_fused_ops != "on" && cuda_fused_ops != "off")
    throw InputError("--cuda-fused-ops", "is '" + cuda_fused_ops + "'; expected on or off");
  models::set_cuda_fused_ops(cuda_fused_ops == "on");
  auto model = models::load_model(model_dir, opts);
  cudnn_attention_allowed_ = models::apply_cudnn_attention(cudnn, model->device().is_cuda());
  if (model->device().is_cuda()) cuda_fused_ops_on_ = cuda_fused_ops == "on";
  // The adapter's weights live in the model's layers (Linear::lora); the handle is not needed.
  if (!adapter_dir.empty()) train::LoraAdapter::load(*model, adapter_dir);
  return model;
}

nlohmann::json ModelFlags::cudnn_attention_json() const {
  return cudnn_attention_allowed_ ? nlohmann::json(*cudnn_attention_allowed_) : nlohmann::json(nullptr);
}

nlohmann::json ModelFlags::cuda_fused_ops_json() const {
  return cuda_fused_ops_on_ ? nlohmann::json(*cuda_fused_ops_on_) : nlohmann::json(nullptr);
}

std::vector<models::PreparedImage> load_images(models::VisionLanguageModel& model,
                                               const std::vector<std::string>& paths) {
  std::vector<models::PreparedImage> out;
  for (const auto& p : paths) out.push_back(model.prepare_image(image::decode_image_file(p)));
  return out;
}

void print_result(const nlohmann::json& j, bool as_json) {
  if (as_json) {
    std::cout << j.dump() << std::endl;
    return;
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    std::cout << it.key() << ": ";
    if (it->is_string()) {
      std::cout << it->get<std::string>();
    } else {
      std::cout << it->dump();
    }
    std::cout << "\n";
  }
}

std::vector<int64_t> parse_id_list(const std::string& s, const std::string& flag) {
  std::vector<int64_t> ids;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    try {
      size_t used = 0;
      long long v = std::stoll(item, &used);
      if (used != item.size() || v < 0) throw std::invalid_argument(item);
      ids.push_back(v);
    } catch (const std::exception&) {
      throw InputError(flag, "'" + item + "' is not a token id");
    }
  }
  if (ids.empty()) throw InputError(flag, "no token ids given");
  return ids;
}

std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      const char c = s[i + 1];
      if (c == 'n' || c == 't' || c == '\\') {
        out += c == 'n' ? '\n' : (c == 't' ? '\t' : '\\');
        ++i;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

nlohmann::json profile_brief(const nlohmann::json& profile_summary, const std::string& dir) {
  nlohmann::json phases = nlohmann::json::array();
  for (const auto& p : profile_summary.at("phases"))
    phases.push_back({{"phase", p.at("phase")}, {"wall_s", p.at("wall_s")}, {"host_ops", p.at("host_ops")},
                      {"device_busy_share", p.at("device_busy_share")}});
  return {{"dir", dir}, {"label", profile_summary.at("label")}, {"phases", phases}};
}

}  // namespace p2dpo::cli
