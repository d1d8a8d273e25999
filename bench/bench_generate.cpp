// CPU generation throughput (tokens/s): the fixture LLaVA and a randomly initialised
// ~100M-parameter LLaVA-shaped model, batch 1 vs 8, with vs without KV cache.
// Prints JSON with ratios against the baseline measured in the same process:
//   ./build/bench_generate [--out bench/results/generate_cpu.json] [--new-tokens 64]
#include <torch/types.h>
#include <torch/utils.h>
#include <torch/version.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "image/decode.h"
#include "infer/generate.h"
#include "io/atomic_file.h"
#include "io/json_io.h"
#include "io/safetensors.h"
#include "models/llava.h"

namespace fs = std::filesystem;
using namespace p2dpo;
using nlohmann::json;

namespace {

std::string repo_root() {
  fs::path p = fs::absolute(__FILE__).parent_path().parent_path();
  return p.string();
}

// Writes a llava-hf directory with random N(0, 0.02) weights and the fixture's tokenizer.
std::string make_random_llava(const std::string& dir, int64_t hidden, int layers, int heads, int64_t inter,
                              int64_t vision_hidden, int vision_layers, int image_size) {
  fs::create_directories(dir);
  const std::string fixture = repo_root() + "/tests/data/llava-tiny-s0";
  for (const char* f : {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                        "generation_config.json", "processor_config.json"}) {
    fs::copy_file(fixture + "/" + f, dir + "/" + f, fs::copy_options::overwrite_existing);
  }
  auto pre = io::read_json_file(fixture + "/preprocessor_config.json");
  pre["size"] = {{"shortest_edge", image_size}};
  pre["crop_size"] = {{"height", image_size}, {"width", image_size}};
  io::write_json_atomic(dir + "/preprocessor_config.json", pre);
  auto cfg = io::read_json_file(fixture + "/config.json");
  const int64_t vocab = 400;
  cfg["text_config"]["hidden_size"] = hidden;
  cfg["text_config"]["num_hidden_layers"] = layers;
  cfg["text_config"]["num_attention_heads"] = heads;
  cfg["text_config"]["num_key_value_heads"] = heads;
  cfg["text_config"]["intermediate_size"] = inter;
  cfg["text_config"].erase("head_dim");
  cfg["vision_config"]["hidden_size"] = vision_hidden;
  cfg["vision_config"]["num_hidden_layers"] = vision_layers;
  cfg["vision_config"]["intermediate_size"] = vision_hidden * 4;
  cfg["vision_config"]["image_size"] = image_size;
  const int64_t n_tok = (image_size / 14) * (image_size / 14);
  cfg["image_seq_length"] = n_tok;
  io::write_json_atomic(dir + "/config.json", cfg);

  torch::manual_seed(0);
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
  auto add = [&](const std::string& n, std::vector<int64_t> s) { shapes.push_back({n, s}); };
  const std::string v = "vision_tower.vision_model";
  add(v + ".embeddings.class_embedding", {vision_hidden});
  add(v + ".embeddings.patch_embedding.weight", {vision_hidden, 3, 14, 14});
  add(v + ".embeddings.position_embedding.weight", {n_tok + 1, vision_hidden});
  for (const char* ln : {".pre_layrnorm", ".post_layernorm"}) {
    add(v + ln + ".weight", {vision_hidden});
    add(v + ln + ".bias", {vision_hidden});
  }
  for (int i = 0; i < vision_layers; ++i) {
    std::string p = v + ".encoder.layers." + std::to_string(i);
    for (const char* n : {".self_attn.q_proj", ".self_attn.k_proj", ".self_attn.v_proj", ".self_attn.out_proj"}) {
      add(p + n + ".weight", {vision_hidden, vision_hidden});
      add(p + n + ".bias", {vision_hidden});
    }
    add(p + ".mlp.fc1.weight", {vision_hidden * 4, vision_hidden});
    add(p + ".mlp.fc1.bias", {vision_hidden * 4});
    add(p + ".mlp.fc2.weight", {vision_hidden, vision_hidden * 4});
    add(p + ".mlp.fc2.bias", {vision_hidden});
    for (const char* ln : {".layer_norm1", ".layer_norm2"}) {
      add(p + ln + ".weight", {vision_hidden});
      add(p + ln + ".bias", {vision_hidden});
    }
  }
  add("multi_modal_projector.linear_1.weight", {hidden, vision_hidden});
  add("multi_modal_projector.linear_1.bias", {hidden});
  add("multi_modal_projector.linear_2.weight", {hidden, hidden});
  add("multi_modal_projector.linear_2.bias", {hidden});
  const std::string m = "language_model.model";
  add(m + ".embed_tokens.weight", {vocab, hidden});
  add("language_model.lm_head.weight", {vocab, hidden});
  add(m + ".norm.weight", {hidden});
  for (int i = 0; i < layers; ++i) {
    std::string p = m + ".layers." + std::to_string(i);
    for (const char* n : {".self_attn.q_proj", ".self_attn.k_proj", ".self_attn.v_proj", ".self_attn.o_proj"})
      add(p + n + ".weight", {hidden, hidden});
    add(p + ".mlp.gate_proj.weight", {inter, hidden});
    add(p + ".mlp.up_proj.weight", {inter, hidden});
    add(p + ".mlp.down_proj.weight", {hidden, inter});
    add(p + ".input_layernorm.weight", {hidden});
    add(p + ".post_attention_layernorm.weight", {hidden});
  }
  std::vector<torch::Tensor> keep;
  std::vector<io::TensorToWrite> out;
  for (auto& [name, shape] : shapes) {
    bool norm = name.find("norm") != std::string::npos;
    bool bias = name.size() > 5 && name.substr(name.size() - 5) == ".bias";
    torch::Tensor t = norm && !bias ? torch::ones(shape) : torch::randn(shape) * 0.02;
    t = t.contiguous();
    keep.push_back(t);
    out.push_back({name, io::DType::F32, shape, t.data_ptr<float>(), static_cast<size_t>(t.numel()) * 4});
  }
  io::write_safetensors(dir + "/model.safetensors", out);
  return dir;
}

struct Timing {
  double seconds = 0;
  int64_t tokens = 0;
  double tokens_per_s() const { return tokens / seconds; }
};

Timing time_generation(models::VisionLanguageModel& model, int batch, int new_tokens, bool use_cache) {
  auto img = image::decode_image_file(repo_root() + "/tests/data/llava-tiny-s0/image0.png");
  auto prepared = model.prepare_image(img);
  std::vector<infer::GenerationRequest> reqs;
  torch::NoGradGuard ng;
  for (int b = 0; b < batch; ++b) {
    infer::GenerationRequest r;
    r.prompt_ids = model.tokenize_prompt(std::string("USER: <image>\nDescribe picture ") + std::to_string(b) +
                                             std::string(b, '!') + " ASSISTANT:",
                                         {prepared});
    r.image_features = model.encode_images({prepared});
    reqs.push_back(r);
  }
  infer::SamplingConfig cfg;
  cfg.max_new_tokens = new_tokens;
  cfg.stop_on_eos = false;
  cfg.use_cache = use_cache;
  auto t0 = std::chrono::steady_clock::now();
  auto res = infer::generate(model, reqs, cfg);
  auto t1 = std::chrono::steady_clock::now();
  Timing t;
  t.seconds = std::chrono::duration<double>(t1 - t0).count();
  for (auto& r : res) t.tokens += static_cast<int64_t>(r.token_ids.size());
  return t;
}

json bench_model(const std::string& name, const std::string& dir, int new_tokens, bool nocache_batch8) {
  auto model = models::LlavaModel::load(dir);
  int64_t params = 0;
  for (auto& [k, t] : model->named_parameters()) params += t.numel();
  time_generation(*model, 1, 4, true);  // warm-up
  json r;
  r["model"] = name;
  r["parameters"] = params;
  r["new_tokens"] = new_tokens;
  auto b1 = time_generation(*model, 1, new_tokens, true);
  auto b8 = time_generation(*model, 8, new_tokens, true);
  auto b1_nc = time_generation(*model, 1, new_tokens, false);
  r["batch1_cache_tokens_per_s"] = b1.tokens_per_s();
  r["batch8_cache_tokens_per_s"] = b8.tokens_per_s();
  r["batch1_nocache_tokens_per_s"] = b1_nc.tokens_per_s();
  r["cache_speedup_batch1"] = b1.tokens_per_s() / b1_nc.tokens_per_s();
  r["batch8_over_batch1"] = b8.tokens_per_s() / b1.tokens_per_s();
  if (nocache_batch8) {
    auto b8_nc = time_generation(*model, 8, new_tokens, false);
    r["batch8_nocache_tokens_per_s"] = b8_nc.tokens_per_s();
  }
  std::cerr << r.dump() << std::endl;
  return r;
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown";
}

}  // namespace

int main(int argc, char** argv) {
  std::string out_path;
  int new_tokens = 64;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--out" && i + 1 < argc) out_path = argv[++i];
    else if (a == "--new-tokens" && i + 1 < argc) new_tokens = std::stoi(argv[++i]);
  }
  json result;
  result["benchmark"] = "bench_generate";
  result["command"] = "./build/bench_generate --out bench/results/generate_cpu.json --new-tokens " + std::to_string(new_tokens);
  result["machine"] = {{"cpu", cpu_model()}, {"hardware_threads", std::thread::hardware_concurrency()},
                       {"torch_threads", torch::get_num_threads()}, {"libtorch", TORCH_VERSION}};
  result["results"].push_back(bench_model("llava-tiny-s0 (fixture)", repo_root() + "/tests/data/llava-tiny-s0", new_tokens, true));
  auto dir = make_random_llava((fs::temp_directory_path() / "p2dpo-bench-llava-100m").string(), 768, 12, 12, 2304, 256, 4, 224);
  result["results"].push_back(bench_model("random LLaVA-shaped ~100M (h768, 12 layers, 256 image tokens)", dir, new_tokens, false));
  std::cout << result.dump(2) << std::endl;
  if (!out_path.empty()) io::write_json_atomic(out_path, result);
  return 0;
}
