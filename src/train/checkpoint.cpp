#include "train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <set>
#include <vector>

#include "io/errors.h"
#include "io/json_io.h"
#include "io/safetensors.h"
#include "models/weights.h"
#include "train/optimizer.h"
#include "train/rng.h"

namespace p2dpo::train {

namespace fs = std::filesystem;

namespace {
constexpr const char* kFormat = "p2dpo-train-checkpoint";
constexpr int kVersion = 1;
constexpr const char* kManifest = "state.json";
constexpr const char* kModelFile = "model.safetensors";
constexpr const char* kOptimizerFile = "optimizer.safetensors";

io::DType io_dtype(torch::ScalarType t, const std::string& name, const std::string& path) {
  switch (t) {
    case torch::kFloat32: return io::DType::F32;
    case torch::kFloat64: return io::DType::F64;
    case torch::kBFloat16: return io::DType::BF16;
    case torch::kHalf: return io::DType::F16;
    case torch::kInt64: return io::DType::I64;
    case torch::kInt32: return io::DType::I32;
    case torch::kInt16: return io::DType::I16;
    case torch::kInt8: return io::DType::I8;
    case torch::kUInt8: return io::DType::U8;
    case torch::kBool: return io::DType::BOOL;
    default: throw InputError(path, "tensor '" + name + "': dtype " + std::string(c10::toString(t)) + " cannot be saved");
  }
}

void fsync_directory(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// Step of a complete checkpoint directory name "ckpt-<digits>", else -1.
int64_t step_of(const fs::path& dir) {
  const std::string name = dir.filename().string();
  const std::string prefix = "ckpt-";
  if (name.rfind(prefix, 0) != 0 || name.size() == prefix.size() || name.size() > prefix.size() + 18) return -1;
  for (size_t i = prefix.size(); i < name.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(name[i]))) return -1;
  }
  return std::stoll(name.substr(prefix.size()));
}

std::vector<std::pair<int64_t, fs::path>> complete_checkpoints(const std::string& checkpoints_dir) {
  std::vector<std::pair<int64_t, fs::path>> out;
  std::error_code ec;
  if (!fs::is_directory(checkpoints_dir, ec)) return out;
  for (const auto& entry : fs::directory_iterator(checkpoints_dir)) {
    if (!entry.is_directory()) continue;
    const int64_t step = step_of(entry.path());
    if (step >= 0 && fs::exists(entry.path() / kManifest)) out.emplace_back(step, entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}
}  // namespace

void write_tensor_file(const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<torch::Tensor> keep;  // CPU contiguous copies that back the raw pointers below
  std::vector<io::TensorToWrite> out;
  keep.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    keep.push_back(t.detach().to(torch::kCPU).contiguous());
    const torch::Tensor& c = keep.back();
    io::TensorToWrite w;
    w.name = name;
    w.dtype = io_dtype(c.scalar_type(), name, path);
    w.shape = c.sizes().vec();
    w.data = c.data_ptr();
    w.nbytes = static_cast<size_t>(c.numel()) * c.element_size();
    out.push_back(std::move(w));
  }
  io::write_safetensors(path, out, metadata);
}

std::map<std::string, torch::Tensor> read_tensor_file(const std::string& path) {
  const auto file = io::SafetensorsFile::open(path);
  std::map<std::string, torch::Tensor> out;
  for (const auto& name : file->names()) out[name] = models::tensor_from_view(file->tensor(name));
  return out;
}

std::string checkpoint_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "ckpt-%08lld", static_cast<long long>(step));
  return buf;
}

std::string save_checkpoint(const std::string& checkpoints_dir, const std::map<std::string, torch::Tensor>& params,
                            const AdamW& optimizer, const TrainState& state, int keep_last) {
  TORCH_CHECK(keep_last >= 1, "save_checkpoint: keep_last must be >= 1");
  fs::create_directories(checkpoints_dir);
  // Stale partial saves from a crash.
  for (const auto& entry : fs::directory_iterator(checkpoints_dir)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("ckpt-", 0) == 0 && name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0) {
      fs::remove_all(entry.path());
    }
  }
  const fs::path final_dir = fs::path(checkpoints_dir) / checkpoint_name(state.step);
  const fs::path tmp_dir = fs::path(final_dir.string() + ".tmp");
  fs::create_directories(tmp_dir);

  write_tensor_file((tmp_dir / kModelFile).string(), params, {{"format", "pt"}});
  write_tensor_file((tmp_dir / kOptimizerFile).string(), optimizer.state_tensors(), {{"format", "pt"}});

  nlohmann::json no_decay = nlohmann::json::array();
  for (const auto& name : optimizer.names()) {
    if (!optimizer.decays(name)) no_decay.push_back(name);
  }
  const AdamWConfig& oc = optimizer.config();
  nlohmann::json manifest = {
      {"format", kFormat},
      {"version", kVersion},
      {"step", state.step},
      {"data", {{"epoch", state.data.epoch}, {"index", state.data.index}, {"seed", state.data_seed}}},
      {"rng", {{"trainer_mt19937_64", rng_state_string(state.rng)}, {"torch_cpu_hex", to_hex(torch_cpu_rng_state())}}},
      {"elapsed_s", state.elapsed_s},
      {"optimizer",
       {{"type", "AdamW"},
        {"beta1", oc.beta1},
        {"beta2", oc.beta2},
        {"eps", oc.eps},
        {"weight_decay", oc.weight_decay},
        {"no_decay", no_decay}}},
      {"files", {kModelFile, kOptimizerFile}},
      {"extra", state.extra},
  };
  io::write_json_atomic((tmp_dir / kManifest).string(), manifest);
  fsync_directory(tmp_dir);

  if (fs::exists(final_dir)) {  // re-saving a step: swap, then drop the old copy
    const fs::path old_dir = fs::path(final_dir.string() + ".old");
    fs::remove_all(old_dir);
    fs::rename(final_dir, old_dir);
    fs::rename(tmp_dir, final_dir);
    fs::remove_all(old_dir);
  } else {
    fs::rename(tmp_dir, final_dir);
  }
  fsync_directory(checkpoints_dir);

  auto all = complete_checkpoints(checkpoints_dir);
  const size_t keep = static_cast<size_t>(keep_last);
  for (size_t i = 0; i + keep < all.size(); ++i) {
    if (all[i].second != final_dir) fs::remove_all(all[i].second);
  }
  return final_dir.string();
}

std::optional<std::string> latest_checkpoint(const std::string& checkpoints_dir) {
  const auto all = complete_checkpoints(checkpoints_dir);
  if (all.empty()) return std::nullopt;
  return all.back().second.string();
}

nlohmann::json read_checkpoint_manifest(const std::string& checkpoint_dir) {
  const std::string path = (fs::path(checkpoint_dir) / kManifest).string();
  nlohmann::json m = io::read_json_file(path);
  const auto format = io::get_required<std::string>(m, "format", path, "");
  if (format != kFormat) throw InputError(path, "field 'format': expected '" + std::string(kFormat) + "', got '" + format + "'");
  const int version = io::get_required<int>(m, "version", path, "");
  if (version != kVersion) throw InputError(path, "field 'version': unsupported checkpoint version " + std::to_string(version));
  return m;
}

TrainState load_checkpoint(const std::string& checkpoint_dir, const std::map<std::string, torch::Tensor>& params,
                           AdamW& optimizer) {
  const std::string manifest_path = (fs::path(checkpoint_dir) / kManifest).string();
  const nlohmann::json m = read_checkpoint_manifest(checkpoint_dir);

  TrainState state;
  state.step = io::get_required<int64_t>(m, "step", manifest_path, "");
  const auto data = io::get_required<nlohmann::json>(m, "data", manifest_path, "");
  state.data.epoch = io::get_required<int64_t>(data, "epoch", manifest_path, "data");
  state.data.index = io::get_required<int64_t>(data, "index", manifest_path, "data");
  state.data_seed = io::get_required<uint64_t>(data, "seed", manifest_path, "data");
  const auto rng = io::get_required<nlohmann::json>(m, "rng", manifest_path, "");
  state.rng = rng_from_state_string(io::get_required<std::string>(rng, "trainer_mt19937_64", manifest_path, "rng"),
                                    manifest_path);
  const std::string torch_state =
      from_hex(io::get_required<std::string>(rng, "torch_cpu_hex", manifest_path, "rng"), manifest_path);
  state.elapsed_s = io::get_required<double>(m, "elapsed_s", manifest_path, "");
  state.extra = io::get_optional<nlohmann::json>(m, "extra", nlohmann::json::object(), manifest_path, "");

  // Parameters: exactly the saved names, equal shapes; copied in place so every holder of the
  // tensors (the model, the optimizer) sees the restored values.
  const std::string model_path = (fs::path(checkpoint_dir) / kModelFile).string();
  const auto saved = read_tensor_file(model_path);
  for (const auto& [name, t] : params) {
    if (!saved.count(name)) throw InputError(model_path, "missing trainable parameter '" + name + "'");
  }
  for (const auto& [name, t] : saved) {
    auto it = params.find(name);
    if (it == params.end()) throw InputError(model_path, "parameter '" + name + "' is not trainable in this run");
    if (it->second.sizes() != t.sizes()) {
      throw InputError(model_path, "parameter '" + name + "' has shape " + c10::str(t.sizes()) + ", the model has " +
                                       c10::str(it->second.sizes()));
    }
  }
  {
    torch::NoGradGuard no_grad;
    for (const auto& [name, p] : params) p.copy_(saved.at(name));
  }
  const std::string opt_path = (fs::path(checkpoint_dir) / kOptimizerFile).string();
  optimizer.load_state_tensors(read_tensor_file(opt_path), opt_path);
  set_torch_cpu_rng_state(torch_state, manifest_path);
  return state;
}

}  // namespace p2dpo::train
