#include "models/llava_builder.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cmath>
#include <filesystem>

#include "io/atomic_file.h"
#include "io/errors.h"
#include "io/json_io.h"
#include "io/safetensors.h"
#include "models/vlm.h"
#include "models/weights.h"
#include "text/llama_tokenizer.h"

namespace fs = std::filesystem;

namespace p2dpo::models {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Owns the tensors whose bytes a TensorToWrite points at until the file is written.
struct TensorSink {
  std::vector<torch::Tensor> keep;
  std::vector<io::TensorToWrite> out;
  void add(const std::string& name, torch::Tensor t) {
    t = t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
    keep.push_back(t);
    out.push_back({name, io::DType::F32, t.sizes().vec(), t.data_ptr(), static_cast<size_t>(t.nbytes())});
  }
};

void copy_file_atomic(const std::string& from, const std::string& to) {
  io::write_file_atomic(to, io::read_file(from));
}

}  // namespace

void build_llava_checkpoint(const LlavaBuildSpec& s, const std::string& out_dir) {
  if (s.init != "hf" && s.init != "fan_in") throw InputError("init", "must be 'hf' or 'fan_in', got '" + s.init + "'");
  if (s.num_heads <= 0 || s.hidden_size % s.num_heads != 0)
    throw InputError("num_heads", "must divide hidden_size " + std::to_string(s.hidden_size));
  if (s.num_kv_heads <= 0 || s.num_heads % s.num_kv_heads != 0)
    throw InputError("num_kv_heads", "must divide num_heads " + std::to_string(s.num_heads));

  const std::string clip_config_path = s.vision_from + "/config.json";
  auto clip_cfg = io::read_json_file(clip_config_path);
  nlohmann::json vision_cfg = clip_cfg.contains("vision_config") ? clip_cfg["vision_config"] : clip_cfg;
  vision_cfg["model_type"] = "clip_vision_model";
  const int64_t vision_hidden = io::get_required<int64_t>(vision_cfg, "hidden_size", clip_config_path, "vision_config");
  const int64_t image_size = io::get_required<int64_t>(vision_cfg, "image_size", clip_config_path, "vision_config");
  const int64_t patch = io::get_required<int64_t>(vision_cfg, "patch_size", clip_config_path, "vision_config");
  const int64_t grid = image_size / patch;
  const int64_t image_tokens = s.vision_feature_select_strategy == "full" ? grid * grid + 1 : grid * grid;

  auto tok = text::LlamaTokenizer::load(s.tokenizer_from);
  auto image_id = tok.token_id("<image>");
  if (!image_id) throw InputError(s.tokenizer_from, "the tokenizer has no '<image>' token");
  const int64_t vocab = static_cast<int64_t>(tok.size());
  const int64_t pad_id = tok.pad_id() >= 0 ? tok.pad_id() : tok.eos_id();

  fs::create_directories(out_dir);
  TensorSink sink;

  // Vision tower: the CLIP's vision_model.* weights, unchanged.
  auto ckpt = io::Checkpoint::open_dir(s.vision_from);
  int copied = 0;
  for (const auto& name : ckpt.names()) {
    std::string rest;
    if (name.rfind("vision_model.", 0) == 0) rest = name;
    else if (name.rfind("vision_tower.vision_model.", 0) == 0) rest = name.substr(std::string("vision_tower.").size());
    else continue;
    if (ends_with(name, "position_ids")) continue;
    sink.add("vision_tower." + rest, tensor_from_view(ckpt.tensor(name)));
    ++copied;
  }
  if (copied == 0) throw InputError(s.vision_from, "no 'vision_model.*' tensors in the checkpoint");

  // Projector and decoder: fresh weights from one seeded generator, in a fixed name order.
  auto gen = at::detail::createCPUGenerator(s.seed);
  auto normal = [&](std::vector<int64_t> shape, double std) {
    return torch::randn(shape, gen, torch::kFloat32) * std;
  };
  auto linear = [&](const std::string& name, int64_t out, int64_t in, bool bias) {
    const double std = s.init == "hf" ? s.initializer_range : 1.0 / std::sqrt(static_cast<double>(in));
    sink.add(name + ".weight", normal({out, in}, std));
    if (bias) sink.add(name + ".bias", torch::zeros({out}));
  };
  const int64_t H = s.hidden_size, I = s.intermediate_size, d = H / s.num_heads;
  linear("multi_modal_projector.linear_1", H, vision_hidden, true);
  linear("multi_modal_projector.linear_2", H, H, true);
  const std::string m = "language_model.model";
  sink.add(m + ".embed_tokens.weight", normal({vocab, H}, s.init == "hf" ? s.initializer_range : 1.0));
  for (int i = 0; i < s.num_layers; ++i) {
    const std::string p = m + ".layers." + std::to_string(i);
    linear(p + ".self_attn.q_proj", s.num_heads * d, H, false);
    linear(p + ".self_attn.k_proj", s.num_kv_heads * d, H, false);
    linear(p + ".self_attn.v_proj", s.num_kv_heads * d, H, false);
    linear(p + ".self_attn.o_proj", H, s.num_heads * d, false);
    linear(p + ".mlp.gate_proj", I, H, false);
    linear(p + ".mlp.up_proj", I, H, false);
    linear(p + ".mlp.down_proj", H, I, false);
    sink.add(p + ".input_layernorm.weight", torch::ones({H}));
    sink.add(p + ".post_attention_layernorm.weight", torch::ones({H}));
  }
  sink.add(m + ".norm.weight", torch::ones({H}));
  linear("language_model.lm_head", vocab, H, false);
  io::write_safetensors(out_dir + "/model.safetensors", sink.out, {{"format", "pt"}});

  nlohmann::json text_cfg = {
      {"model_type", "llama"},          {"vocab_size", vocab},
      {"hidden_size", H},               {"intermediate_size", I},
      {"num_hidden_layers", s.num_layers}, {"num_attention_heads", s.num_heads},
      {"num_key_value_heads", s.num_kv_heads}, {"head_dim", d},
      {"hidden_act", "silu"},           {"max_position_embeddings", s.max_position_embeddings},
      {"rms_norm_eps", s.rms_norm_eps}, {"rope_theta", s.rope_theta},
      {"rope_scaling", nullptr},        {"attention_bias", false},
      {"mlp_bias", false},              {"tie_word_embeddings", false},
      {"initializer_range", s.initializer_range}, {"bos_token_id", tok.bos_id()},
      {"eos_token_id", tok.eos_id()},   {"pad_token_id", pad_id},
      {"torch_dtype", "float32"}};
  nlohmann::json cfg = {{"architectures", {"LlavaForConditionalGeneration"}},
                        {"model_type", "llava"},
                        {"image_token_index", *image_id},
                        {"image_seq_length", image_tokens},
                        {"ignore_index", -100},
                        {"pad_token_id", pad_id},
                        {"projector_hidden_act", "gelu"},
                        {"multimodal_projector_bias", true},
                        {"vision_feature_layer", s.vision_feature_layer},
                        {"vision_feature_select_strategy", s.vision_feature_select_strategy},
                        {"tie_word_embeddings", false},
                        {"torch_dtype", "float32"},
                        {"text_config", text_cfg},
                        {"vision_config", vision_cfg}};
  io::write_json_atomic(out_dir + "/config.json", cfg);
  io::write_json_atomic(out_dir + "/generation_config.json",
                        {{"bos_token_id", tok.bos_id()}, {"eos_token_id", tok.eos_id()}, {"pad_token_id", pad_id}});
  io::write_json_atomic(out_dir + "/processor_config.json",
                        {{"image_token", "<image>"}, {"patch_size", patch}, {"processor_class", "LlavaProcessor"},
                         {"vision_feature_select_strategy", s.vision_feature_select_strategy}});
  const std::string pre = s.vision_from + "/preprocessor_config.json";
  if (!fs::exists(pre)) throw InputError(pre, "file not found (the CLIP checkpoint needs its image processor config)");
  auto pre_cfg = io::read_json_file(pre);
  pre_cfg["processor_class"] = "LlavaProcessor";
  io::write_json_atomic(out_dir + "/preprocessor_config.json", pre_cfg);
  for (const char* f : {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"}) {
    const std::string from = s.tokenizer_from + "/" + f;
    if (fs::exists(from)) copy_file_atomic(from, out_dir + "/" + f);
  }
}

void save_llava_checkpoint(VisionLanguageModel& model, const std::string& source_dir, const std::string& out_dir) {
  fs::create_directories(out_dir);
  if (fs::equivalent(fs::path(source_dir), fs::path(out_dir)) == false) {
    for (const auto& entry : fs::directory_iterator(source_dir)) {
      const std::string name = entry.path().filename().string();
      if (!entry.is_regular_file() || ends_with(name, ".safetensors") || name == "model.safetensors.index.json") continue;
      copy_file_atomic(entry.path().string(), out_dir + "/" + name);
    }
  }
  TensorSink sink;
  for (const auto& [name, t] : model.named_parameters()) sink.add(name, t);
  io::write_safetensors(out_dir + "/model.safetensors", sink.out, {{"format", "pt"}});
  // A sharded source leaves its index behind; the single file replaces it.
  std::error_code ec;
  fs::remove(out_dir + "/model.safetensors.index.json", ec);
}

}  // namespace p2dpo::models
