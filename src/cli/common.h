#pragma once
// Options and helpers shared by the subcommands that load a model.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "models/load.h"

namespace p2dpo::cli {

struct ModelFlags {
  std::string model_dir;
  std::string device = "cpu";
  std::string dtype = "float32";
  bool pad_to_square = false;
  std::string adapter_dir;  // a PEFT LoRA directory applied on top of the model ("" = none)
  std::string cudnn_attention = "auto";  // models/attention_backend.h
  std::string cuda_fused_ops = "on";     // models/fused_ops.h
  void add(CLI::App* cmd);
  // Loads the model, applying --cuda-fused-ops before and --cudnn-attention after (process-wide
  // switches).
  std::unique_ptr<models::VisionLanguageModel> load() const;
  // After load(), for a command's JSON output (null where there is nothing to switch, as on the
  // CPU): whether PyTorch may pick cuDNN attention kernels; whether the model runs fused ops.
  nlohmann::json cudnn_attention_json() const;
  nlohmann::json cuda_fused_ops_json() const;

 private:
  mutable std::optional<bool> cudnn_attention_allowed_;
  mutable std::optional<bool> cuda_fused_ops_on_;
};

std::vector<models::PreparedImage> load_images(models::VisionLanguageModel& model,
                                               const std::vector<std::string>& paths);

// Prints JSON (with --json) or a short human-readable rendering.
void print_result(const nlohmann::json& j, bool as_json);

// The per-phase lines of an op profile's summary (models/op_profile.h) for a command's --json
// output: phase, wall_s, host_ops, device_busy_share. The full summary is in the profile folder.
nlohmann::json profile_brief(const nlohmann::json& profile_summary, const std::string& dir);

std::vector<int64_t> parse_id_list(const std::string& s, const std::string& flag);

// Templates typed in a shell, where a real newline is awkward: \n, \t and \\ are read as escapes,
// any other backslash stays as it is.
std::string unescape(const std::string& s);

}  // namespace p2dpo::cli
