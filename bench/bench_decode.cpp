// Batch-1 prefill and decode latency of one llava-hf checkpoint on one device, for the GPU
// comparison with HF transformers (bench/gpu/run_gpu_bench.py runs both on the same weights and
// the same inputs). Works on CPU too (that is how it is tested without a GPU):
//   ./build/bench_decode --model DIR [--device cuda] [--dtype bf16] [--image PNG]
//       [--new-tokens 128] [--repeats 3] [--long-context 2048] [--out FILE.json] [--dump DIR]
//       [--rows 16] [--modes growing,growing_nocudnn,fixed,fixed_nocudnn,graphs,graphs_nocudnn]
// --modes times decoding with the growing KV cache (the CPU's default), a frozen cache (CUDA's
// default) and, on CUDA, CUDA graphs over it (infer::SamplingConfig), each with PyTorch's own choice
// of attention kernels and, as MODE_nocudnn, with its cuDNN attention turned off (CUDA, PyTorch >= 2.4;
// p2dpo's default on CUDA), all at --rows identical prompts, in this process;
// `decoding_modes` reports each one's ms per step, its ratio to the growing cache and whether its
// greedy tokens equal the growing cache's.
// --dump writes the exact inputs (prompt ids, pixel values) and our outputs (prefill logits of the
// last position, greedy tokens) so the HF side can be fed the same tensors and compared.
#include <torch/cuda.h>
#include <torch/types.h>
#include <torch/utils.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>

#include "image/decode.h"
#include "infer/decode_graph.h"
#include "infer/generate.h"
#include "io/json_io.h"
#include "io/safetensors.h"
#include "models/attention_backend.h"
#include "models/llava.h"

namespace fs = std::filesystem;
using namespace p2dpo;
using nlohmann::json;

namespace {

struct Args {
  std::string model, device = "cpu", dtype = "fp32", image, out, dump;
  int new_tokens = 128, repeats = 3, long_context = 2048, long_new_tokens = 32, rows = 1;
  std::string modes = "growing,growing_nocudnn,fixed,fixed_nocudnn,graphs,graphs_nocudnn";
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error("missing value for " + k);
      return argv[++i];
    };
    if (k == "--model") a.model = next();
    else if (k == "--device") a.device = next();
    else if (k == "--dtype") a.dtype = next();
    else if (k == "--image") a.image = next();
    else if (k == "--out") a.out = next();
    else if (k == "--dump") a.dump = next();
    else if (k == "--new-tokens") a.new_tokens = std::stoi(next());
    else if (k == "--repeats") a.repeats = std::stoi(next());
    else if (k == "--long-context") a.long_context = std::stoi(next());
    else if (k == "--long-new-tokens") a.long_new_tokens = std::stoi(next());
    else if (k == "--rows") a.rows = std::stoi(next());
    else if (k == "--modes") a.modes = next();
    else throw std::runtime_error("unknown flag " + k);
  }
  if (a.model.empty()) throw std::runtime_error("--model is required");
  return a;
}

void sync(const torch::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize();
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::vector<int64_t> to_vec(const torch::Tensor& t) {
  auto c = t.reshape({-1}).to(torch::kCPU, torch::kLong).contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

void save_f32(const std::string& path, const std::string& name, const torch::Tensor& t) {
  auto c = t.to(torch::kCPU, torch::kFloat32).contiguous();
  io::TensorToWrite w{name, io::DType::F32, c.sizes().vec(), c.data_ptr(), static_cast<size_t>(c.nbytes())};
  io::write_safetensors(path, {w});
}

// Prefill of the whole prompt (vision tower included, as HF's generate does it) into a fresh cache;
// returns seconds and the last position's logits.
std::pair<double, torch::Tensor> prefill(models::LlavaModel& m, const std::vector<int64_t>& ids,
                                         const models::PreparedImage& img) {
  torch::NoGradGuard ng;
  sync(m.device());
  auto t0 = std::chrono::steady_clock::now();
  models::KVCache cache = m.new_cache();
  models::ForwardInput in;
  in.input_ids = torch::tensor(ids, torch::kLong).view({1, -1});
  in.image_features = m.encode_images({img});
  in.cache = &cache;
  in.logits_last_only = true;
  auto out = m.forward(in);
  auto logits = out.logits.to(torch::kCPU);  // the host read a generation step would make
  return {seconds_since(t0), logits.view({-1})};
}

// generate() end to end: encode + prefill + n tokens, EOS ignored so every run has n tokens.
// How the decoding steps run: the growing cache, a frozen one, or CUDA graphs over a frozen one.
struct Decoding {
  bool fixed_cache = false, cuda_graphs = false;
  int rows = 1;  // identical prompts decoded together
};

std::pair<double, std::vector<int64_t>> timed_generate(models::LlavaModel& m, const std::vector<int64_t>& ids,
                                                       const models::PreparedImage& img, int n,
                                                       const Decoding& d = {}) {
  torch::NoGradGuard ng;
  infer::SamplingConfig cfg;
  cfg.max_new_tokens = n;
  cfg.stop_on_eos = false;
  cfg.fixed_cache = d.fixed_cache;
  cfg.cuda_graphs = d.cuda_graphs;
  sync(m.device());
  auto t0 = std::chrono::steady_clock::now();
  infer::GenerationRequest req;
  req.prompt_ids = ids;
  req.image_features = m.encode_images({img});
  auto r = infer::generate(m, std::vector<infer::GenerationRequest>(static_cast<size_t>(d.rows), req), cfg);
  sync(m.device());
  return {seconds_since(t0), r[0].token_ids};
}

json measure(models::LlavaModel& m, const std::vector<int64_t>& ids, const models::PreparedImage& img,
             int new_tokens, int repeats, const Decoding& d = {}) {
  std::vector<double> pre, g1, gn;
  std::vector<int64_t> tokens;
  timed_generate(m, ids, img, 2, d);  // warm-up: allocator, kernels, lazy init
  for (int r = 0; r < repeats; ++r) {
    pre.push_back(prefill(m, ids, img).first);
    g1.push_back(timed_generate(m, ids, img, 1, d).first);
    auto [t, toks] = timed_generate(m, ids, img, new_tokens, d);
    gn.push_back(t);
    tokens = toks;
  }
  const double decode_ms = (median(gn) - median(g1)) / (new_tokens - 1) * 1e3;
  return {{"prompt_tokens", ids.size()},
          {"new_tokens", new_tokens},
          {"prefill_ms", median(pre) * 1e3},
          {"generate_1_ms", median(g1) * 1e3},
          {"generate_n_ms", median(gn) * 1e3},
          {"decode_ms_per_token", decode_ms},
          {"decode_tokens_per_s", 1e3 / decode_ms},
          {"greedy_tokens", tokens}};
}

}  // namespace

int main(int argc, char** argv) try {
  Args a = parse(argc, argv);
  torch::manual_seed(0);
  const torch::Device dev(a.device);
  models::LoadOptions opts;
  opts.device = dev;
  opts.dtype = a.dtype == "bf16" ? torch::kBFloat16 : a.dtype == "fp16" ? torch::kFloat16 : torch::kFloat32;
  auto t0 = std::chrono::steady_clock::now();
  auto m = models::LlavaModel::load(a.model, opts);
  sync(dev);
  const double load_s = seconds_since(t0);
  std::cerr << "loaded " << a.model << " in " << load_s << " s\n";

  image::ImageU8 raw;
  if (!a.image.empty()) {
    raw = image::decode_image_file(a.image);
  } else {  // a deterministic gradient, so no file is needed
    raw.width = 640;
    raw.height = 480;
    raw.rgb.resize(static_cast<size_t>(raw.width) * raw.height * 3);
    for (int y = 0; y < raw.height; ++y)
      for (int x = 0; x < raw.width; ++x)
        for (int c = 0; c < 3; ++c)
          raw.rgb[(static_cast<size_t>(y) * raw.width + x) * 3 + c] = static_cast<uint8_t>((x * (c + 1) + y * (3 - c)) % 256);
  }
  auto img = m->prepare_image(raw);
  const std::string prompt = "USER: <image>\nDescribe the image in detail. ASSISTANT:";
  auto ids = m->tokenize_prompt(prompt, {img});

  // A long prompt: the image prompt, then filler text tokens up to the context length.
  auto long_ids = ids;
  auto filler = m->tokenizer().encode(" the quick brown fox jumps over the lazy dog", false);
  while (static_cast<int>(long_ids.size()) < a.long_context) {
    for (auto t : filler) {
      if (static_cast<int>(long_ids.size()) >= a.long_context) break;
      long_ids.push_back(t);
    }
  }

  json result;
  result["model"] = a.model;
  result["device"] = a.device;
  result["dtype"] = a.dtype;
  result["torch_version"] = TORCH_VERSION;
  result["load_s"] = load_s;
  int64_t params = 0, lm_bytes = 0;
  for (const auto& [name, t] : m->named_parameters()) {
    params += t.numel();
    if (name.rfind("language_model.", 0) == 0) lm_bytes += t.numel() * t.element_size();
  }
  result["parameters"] = params;
  result["language_model_bytes"] = lm_bytes;

  for (const std::string attn : {"sdpa", "eager"}) {
#if !(defined(TORCH_VERSION_MAJOR) && TORCH_VERSION_MAJOR >= 2)
    if (attn == "sdpa") continue;  // libtorch 1.x has no scaled_dot_product_attention
#endif
    m->language_model().set_use_sdpa(attn == "sdpa");
    std::cerr << "measuring " << attn << " attention\n";
    result["short_" + attn] = measure(*m, ids, img, a.new_tokens, a.repeats);
  }
  m->language_model().set_use_sdpa(true);

  // The decoding modes side by side at --rows rows; a frozen cache's first step is a normal one
  // (and, with graphs, the capture), so the per-step time comes from the n- minus 2-token runs.
  json modes = json::object();
  json growing;
  // A mode's `_nocudnn` form runs it with PyTorch's cuDNN attention turned off (models/attention_backend.h;
  // `p2dpo --cudnn-attention auto` on CUDA); the plain forms keep PyTorch's own choice, as GPU run 6 did.
  for (const std::string mode : {"growing", "growing_nocudnn", "fixed", "fixed_nocudnn", "graphs", "graphs_nocudnn"}) {
    if (("," + a.modes + ",").find("," + mode + ",") == std::string::npos) continue;
    const bool nocudnn = mode.size() > 8 && mode.compare(mode.size() - 8, 8, "_nocudnn") == 0;
    const std::string base = nocudnn ? mode.substr(0, mode.size() - 8) : mode;
    if (base == "graphs" && !(dev.is_cuda() && infer::decode_graphs_available())) continue;
    if (nocudnn && !(dev.is_cuda() && models::set_cudnn_attention(false))) continue;
    Decoding d;
    d.rows = a.rows;
    d.fixed_cache = base == "fixed";
    d.cuda_graphs = base == "graphs";
    std::cerr << "measuring decoding: " << mode << ", " << a.rows << " rows\n";
    std::vector<double> two, n;
    std::vector<int64_t> tokens;
    timed_generate(*m, ids, img, 3, d);  // warm-up
    for (int r = 0; r < a.repeats; ++r) {
      two.push_back(timed_generate(*m, ids, img, 2, d).first);
      auto [t, toks] = timed_generate(*m, ids, img, a.new_tokens, d);
      n.push_back(t);
      tokens = toks;
    }
    json j = {{"rows", a.rows},
              {"new_tokens", a.new_tokens},
              {"decode_ms_per_step", (median(n) - median(two)) / (a.new_tokens - 2) * 1e3},
              {"generate_n_ms", median(n) * 1e3},
              {"greedy_tokens", tokens}};
    if (mode == "growing") {
      growing = j;
    } else if (!growing.is_null()) {
      j["step_speedup_over_growing"] = growing["decode_ms_per_step"].get<double>() / j["decode_ms_per_step"].get<double>();
      j["same_greedy_tokens_as_growing"] = tokens == growing["greedy_tokens"].get<std::vector<int64_t>>();
    }
    modes[mode] = j;
    if (nocudnn) models::set_cudnn_attention(true);
  }
  result["decoding_modes"] = modes;

  if (!a.dump.empty()) {
    fs::create_directories(a.dump);
    auto [s, logits] = prefill(*m, ids, img);
    save_f32(a.dump + "/prefill_logits.safetensors", "logits", logits);
    save_f32(a.dump + "/pixel_values.safetensors", "pixel_values", img.pixel_values.unsqueeze(0));
    json in;
    in["prompt"] = prompt;
    in["input_ids"] = ids;
    if (a.long_context > 0) in["long_input_ids"] = long_ids;
    in["greedy_tokens"] = result.contains("short_sdpa") ? result["short_sdpa"]["greedy_tokens"]
                                                          : result["short_eager"]["greedy_tokens"];
    io::write_json_atomic(a.dump + "/inputs.json", in);
  }

  if (a.long_context > 0) {
    std::cerr << "measuring a " << long_ids.size() << "-token context\n";
    result["long_context"] = measure(*m, long_ids, img, a.long_new_tokens, 1);
  }
  const std::string text = result.dump(2);
  if (!a.out.empty()) io::write_json_atomic(a.out, result);
  std::cout << text << std::endl;
  return 0;
} catch (const std::exception& e) {
  std::cerr << "error: " << e.what() << std::endl;
  return 2;
}
