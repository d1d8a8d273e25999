// Multi-view scoring for P2-DPO (train/multiview.h): forward + backward time and peak memory of a
// micro-batch of P2-DPO pairs (6 scored sequences each over 4 image+prompt prefixes) on the world
// base model and the tiny fixture, with LoRA (r 8, q k v o) as the only trainable tensors and the
// image features precomputed (frozen vision tower and projector). Four arms: prefix sharing on/off,
// each with the default length split and with one padded forward per stage.
//
//   ./build/bench_multiview [--out bench/results/multiview_cpu.json] [--threads 2] [--pairs 4] [--iters 5]
//                           [--long-pairs 1] [--lora-rank 8] [--note TEXT]
// --long-pairs: pairs in a third configuration, the world model at LLaVA-1.5 lengths (576 tokens per
// image slot, random features); 0 skips it.
//
// Times come from one process, the arms interleaved per iteration (median reported). Memory, two
// ways: the peak of live tensor storage during one step (a counting wrapper around libtorch's CPU
// allocator, exact), and the peak RSS growth over one step in a child process per arm (this binary
// re-run with --child; VmHWM reset through /proc/self/clear_refs), since in one process malloc's
// retained pages would hide the later arms' RSS peaks.
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <malloc.h>
#include <torch/types.h>
#include <torch/utils.h>
#include <torch/version.h>

#include <mutex>
#include <unordered_map>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "io/json_io.h"
#include "models/llava.h"
#include "train/multiview.h"

namespace fs = std::filesystem;
using namespace p2dpo;
using nlohmann::json;

namespace {

std::string repo_root() { return fs::absolute(__FILE__).parent_path().parent_path().string(); }

struct Options {
  int threads = 2;
  int pairs = 4;
  int iters = 5;
  int lora_rank = 8;
  int long_pairs = 1;    // pairs in the LLaVA-1.5-length configuration
  int image_tokens = 0;  // > 0: this many tokens per image slot (random features), not the model's own
};

// kB from /proc/self/status ("VmRSS", "VmHWM").
int64_t status_kb(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1));
  }
  return -1;
}

// Counts the bytes of live CPU tensor storage and their peak, allocating as libtorch's default CPU
// allocator does (c10::alloc_cpu): an exact measure of what a step holds at once. The data pointer
// is its own context, so raw_allocate (which some kernels use) works too.
class CountingCpuAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) const override {
    void* p = c10::alloc_cpu(n);
    {
      std::lock_guard<std::mutex> lock(mutex());
      sizes()[p] = n;
      live_ += static_cast<int64_t>(n);
      peak_ = std::max(peak_, live_);
    }
    return {p, p, &release, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }
  void reset_peak() {
    std::lock_guard<std::mutex> lock(mutex());
    peak_ = live_;
  }
  int64_t live() const {
    std::lock_guard<std::mutex> lock(mutex());
    return live_;
  }
  int64_t peak() const {
    std::lock_guard<std::mutex> lock(mutex());
    return peak_;
  }

 private:
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }
  static std::unordered_map<void*, size_t>& sizes() {
    static auto* m = new std::unordered_map<void*, size_t>();  // outlives every tensor
    return *m;
  }
  static void release(void* p) {
    if (!p) return;
    {
      std::lock_guard<std::mutex> lock(mutex());
      auto it = sizes().find(p);
      if (it != sizes().end()) {
        live_ -= static_cast<int64_t>(it->second);
        sizes().erase(it);
      }
    }
    c10::free_cpu(p);
  }
  static inline int64_t live_ = 0, peak_ = 0;
};

CountingCpuAllocator& counting_allocator() {
  static CountingCpuAllocator* a = [] {
    auto* alloc = new CountingCpuAllocator();  // owned by c10 from here on
    c10::SetCPUAllocator(alloc, /*priority=*/100);
    return alloc;
  }();
  return *a;
}

void reset_peak_rss() {
  malloc_trim(0);
  std::ofstream("/proc/self/clear_refs") << "5";
}

// LoRA on q, k, v, o of every decoder layer through the engine's adapter hook, B != 0 so every
// adapter is on the gradient path. Returns the trainable tensors.
std::vector<torch::Tensor> attach_lora(models::LlavaModel& model, int rank) {
  std::vector<torch::Tensor> params;
  torch::manual_seed(1);
  for (auto& layer : model.language_model().layers()) {
    for (models::Linear* lin : {&layer.q_proj, &layer.k_proj, &layer.v_proj, &layer.o_proj}) {
      auto lora = std::make_shared<models::LoraWeights>();
      lora->A = (torch::randn({rank, lin->weight.size(1)}) * 0.01).requires_grad_(true);
      lora->B = (torch::randn({lin->weight.size(0), rank}) * 0.01).requires_grad_(true);
      lora->scaling = 2.0;  // alpha 16 / r 8
      params.push_back(lora->A);
      params.push_back(lora->B);
      lin->lora = lora;
    }
  }
  return params;
}

struct Batch {
  std::vector<train::ScoredSequence> seqs;
  torch::Tensor features;  // [4 * pairs, T, H], no grad
  int64_t answer_tokens = 0;
};

// `pairs` P2-DPO pairs: images I, I_crop, I_deg, I_noise per pair (random pixels, encoded once);
// sequences (I,P) y_w, (I,P) y_l, (I+I_crop,P2) y_w, (I_deg,P) y_w, (I_noise,Pr) y_w', (I_noise,Pr) y_l'.
// Answers are random text-token ids, 10-40 tokens, + EOS.
// Each run of image tokens (one image slot) resized to n tokens.
std::vector<int64_t> resize_image_slots(const std::vector<int64_t>& ids, int64_t image_token, int64_t n) {
  std::vector<int64_t> out;
  for (size_t i = 0; i < ids.size();) {
    if (ids[i] != image_token) {
      out.push_back(ids[i++]);
      continue;
    }
    while (i < ids.size() && ids[i] == image_token) ++i;
    out.insert(out.end(), static_cast<size_t>(n), image_token);
  }
  return out;
}

Batch make_batch(models::LlavaModel& model, int pairs, int image_tokens) {
  Batch b;
  const auto& info = model.info();
  const int side = info.vision_input_size;
  torch::manual_seed(2);
  std::vector<models::PreparedImage> images;
  for (int i = 0; i < 4 * pairs; ++i) {
    models::PreparedImage im;
    im.pixel_values = torch::rand({3, side, side}) * 2 - 1;
    im.grid_h = im.grid_w = 1;
    images.push_back(im);
  }
  {
    torch::NoGradGuard ng;
    b.features = model.encode_images(images);
    if (image_tokens > 0) {  // LLaVA-1.5 lengths on a small model: random rows with the real rows' spread
      b.features = torch::randn({b.features.size(0), image_tokens, b.features.size(2)}) * b.features.std();
    }
  }
  std::mt19937_64 rng(3);
  const int64_t text_vocab = std::min(info.image_token_id, info.pad_token_id);  // added tokens come last
  auto answer = [&] {
    const int64_t n = 10 + static_cast<int64_t>(rng() % 31);
    std::vector<int64_t> a;
    for (int64_t t = 0; t < n; ++t) a.push_back(3 + static_cast<int64_t>(rng() % static_cast<uint64_t>(text_vocab - 3)));
    a.push_back(info.eos_token_ids.front());
    b.answer_tokens += n + 1;
    return a;
  };
  const std::vector<std::string> questions = {"What is in the picture?", "Describe the image.",
                                              "Which shapes can you see, and what colours are they?",
                                              "Is there a small red circle in the image?"};
  for (int p = 0; p < pairs; ++p) {
    const int64_t I = 4 * p, crop = I + 1, deg = I + 2, noise = I + 3;
    const std::string& q = questions[static_cast<size_t>(p) % questions.size()];
    const std::string& qr = questions[static_cast<size_t>(p + 1) % questions.size()];
    auto P = model.tokenize_prompt("USER: <image>\n" + q + " ASSISTANT:", {images[0]});
    auto P2 = model.tokenize_prompt("USER: <image>\n<image>\n" + q + " ASSISTANT:", {images[0], images[0]});
    auto Pr = model.tokenize_prompt("USER: <image>\n" + qr + " ASSISTANT:", {images[0]});
    if (image_tokens > 0) {
      for (auto* ids : {&P, &P2, &Pr}) *ids = resize_image_slots(*ids, info.image_token_id, image_tokens);
    }
    auto yw = answer(), yl = answer(), rw = answer(), rl = answer();
    b.seqs.push_back({P, {I}, yw});
    b.seqs.push_back({P, {I}, yl});
    b.seqs.push_back({P2, {I, crop}, yw});
    b.seqs.push_back({P, {deg}, yw});
    b.seqs.push_back({Pr, {noise}, rw});
    b.seqs.push_back({Pr, {noise}, rl});
  }
  // The answers shared by several sequences were counted once each.
  b.answer_tokens = 0;
  for (const auto& s : b.seqs) b.answer_tokens += static_cast<int64_t>(s.answer_ids.size());
  return b;
}

struct Arm {
  std::string name;
  bool share = true;
  int64_t split_cost = 64;
};
// shared / unshared with the default length split; "one forward" = one padded forward per stage
// (the unshared one-forward arm is a TRL-style concatenated batch).
const std::vector<Arm> kArms = {{"shared", true, 64}, {"shared_one_forward", true, -1},
                                {"unshared", false, 64}, {"unshared_one_forward", false, -1}};

// One training step's worth of work: scores, a scalar loss, backward; returns seconds.
double step(models::LlavaModel& model, const Batch& b, const Arm& arm, std::vector<torch::Tensor>& params,
            train::MultiViewStats* stats) {
  for (auto& p : params) p.mutable_grad() = torch::Tensor();
  train::MultiViewOptions opt;
  opt.share_prefixes = arm.share;
  opt.split_cost_positions = arm.split_cost;
  const auto t0 = std::chrono::steady_clock::now();
  auto sums = train::answer_logprob_sums(model, b.seqs, b.features, opt, stats);
  sums.sum().backward();
  const auto t1 = std::chrono::steady_clock::now();
  return std::chrono::duration<double>(t1 - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

json stats_json(const train::MultiViewStats& s) {
  return {{"sequences", s.sequences}, {"distinct_sequences", s.distinct_sequences}, {"prefixes", s.prefixes},
          {"prefix_tokens", s.prefix_tokens}, {"continuation_tokens", s.continuation_tokens},
          {"padded_positions", s.padded_positions}, {"forwards", s.forwards}};
}

// Child mode: one step of one arm, peak RSS growth over the step, as JSON on stdout.
int run_child(const std::string& dir, const Arm& arm, const Options& o) {
  torch::set_num_threads(o.threads);
  auto model = models::LlavaModel::load(dir);
  auto params = attach_lora(*model, o.lora_rank);
  Batch b = make_batch(*model, o.pairs, o.image_tokens);
  reset_peak_rss();
  const int64_t before = status_kb("VmRSS");
  step(*model, b, arm, params, nullptr);
  const int64_t peak = status_kb("VmHWM");
  std::cout << json{{"rss_before_kb", before}, {"peak_kb", peak}, {"step_peak_growth_kb", peak - before}}.dump()
            << std::endl;
  return 0;
}

json child_memory(const std::string& exe, const std::string& dir, const Arm& arm, const Options& o) {
  std::ostringstream cmd;
  cmd << "'" << exe << "' --child '" << dir << "' " << arm.name << " --threads " << o.threads << " --pairs "
      << o.pairs << " --lora-rank " << o.lora_rank << " --image-tokens " << o.image_tokens;
  FILE* f = popen(cmd.str().c_str(), "r");
  if (!f) throw std::runtime_error("cannot run " + cmd.str());
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, f)) out.append(buf, n);
  if (pclose(f) != 0) throw std::runtime_error("child failed: " + cmd.str());
  return json::parse(out);
}

json bench_model(const std::string& exe, const std::string& name, const std::string& dir, const Options& o) {
  auto model = models::LlavaModel::load(dir);
  auto params = attach_lora(*model, o.lora_rank);
  Batch b = make_batch(*model, o.pairs, o.image_tokens);
  int64_t lm_params = 0, lora_params = 0;
  for (auto& [k, t] : model->named_parameters())
    if (k.rfind("language_model.", 0) == 0) lm_params += t.numel();
  for (auto& p : params) lora_params += p.numel();

  std::vector<train::MultiViewStats> stats(kArms.size());
  for (size_t a = 0; a < kArms.size(); ++a) step(*model, b, kArms[a], params, &stats[a]);  // warm-up
  // The arms must compute the same thing: compare one step's LoRA gradients with the last arm's.
  double max_grad_diff = 0, max_grad = 0;
  {
    std::vector<std::vector<torch::Tensor>> g(kArms.size());
    for (size_t a = 0; a < kArms.size(); ++a) {
      step(*model, b, kArms[a], params, nullptr);
      for (auto& p : params) g[a].push_back(p.grad().clone());
    }
    for (size_t a = 0; a + 1 < kArms.size(); ++a) {
      for (size_t i = 0; i < params.size(); ++i) {
        max_grad_diff = std::max(max_grad_diff, (g[a][i] - g.back()[i]).abs().max().item<double>());
        max_grad = std::max(max_grad, g.back()[i].abs().max().item<double>());
      }
    }
  }
  // Peak live tensor bytes of one step per arm, above what was live before it.
  std::vector<int64_t> peak_tensor_bytes(kArms.size());
  for (size_t a = 0; a < kArms.size(); ++a) {
    for (auto& p : params) p.mutable_grad() = torch::Tensor();
    auto& counter = counting_allocator();
    const int64_t before = counter.live();
    counter.reset_peak();
    step(*model, b, kArms[a], params, nullptr);
    peak_tensor_bytes[a] = counter.peak() - before;
  }
  // Arms interleaved, the order rotating per iteration, so drifting machine load hits all alike.
  std::vector<std::vector<double>> times(kArms.size());
  for (int it = 0; it < o.iters; ++it) {
    for (size_t k = 0; k < kArms.size(); ++k) {
      const size_t a = (k + static_cast<size_t>(it)) % kArms.size();
      times[a].push_back(step(*model, b, kArms[a], params, nullptr));
    }
    std::cerr << name << ": iteration " << it + 1 << "/" << o.iters;
    for (size_t a = 0; a < kArms.size(); ++a) std::cerr << ", " << kArms[a].name << " " << times[a].back() * 1e3 << " ms";
    std::cerr << std::endl;
  }
  json r;
  r["model"] = name;
  r["dir"] = fs::relative(dir, repo_root()).string();
  r["lm_parameters"] = lm_params;
  r["lora_parameters"] = lora_params;
  r["pairs"] = o.pairs;
  r["tokens_per_image"] = b.features.size(1);
  r["answer_tokens"] = b.answer_tokens;
  std::map<std::string, double> median_s;
  std::map<std::string, int64_t> peak_kb;
  std::map<std::string, double> peak_mb;
  for (size_t a = 0; a < kArms.size(); ++a) {
    const Arm& arm = kArms[a];
    const double t = median(times[a]);
    const json mem = child_memory(exe, dir, arm, o);
    median_s[arm.name] = t;
    peak_kb[arm.name] = mem["step_peak_growth_kb"].get<int64_t>();
    peak_mb[arm.name] = static_cast<double>(peak_tensor_bytes[a]) / (1 << 20);
    r["arms"][arm.name] = {{"share_prefixes", arm.share}, {"split_cost_positions", arm.split_cost},
                           {"median_ms", t * 1e3}, {"all_ms", times[a]}, {"pairs_per_s", o.pairs / t},
                           {"answer_tokens_per_s", b.answer_tokens / t}, {"stats", stats_json(stats[a])},
                           {"step_peak_tensor_mb", peak_mb[arm.name]}, {"memory_rss", mem}};
  }
  auto ratio = [](double x, double y) { return x / std::max(y, 1e-12); };
  r["speedup_shared_over_unshared"] = ratio(median_s["unshared"], median_s["shared"]);
  r["speedup_shared_over_unshared_one_forward"] = ratio(median_s["unshared_one_forward"], median_s["shared"]);
  r["speedup_shared_over_shared_one_forward"] = ratio(median_s["shared_one_forward"], median_s["shared"]);
  r["tensor_memory_ratio_unshared_over_shared"] = ratio(peak_mb["unshared"], peak_mb["shared"]);
  r["tensor_memory_ratio_unshared_one_forward_over_shared"] = ratio(peak_mb["unshared_one_forward"], peak_mb["shared"]);
  r["rss_growth_ratio_unshared_over_shared"] = ratio(peak_kb["unshared"], peak_kb["shared"]);
  r["rss_growth_ratio_unshared_one_forward_over_shared"] = ratio(peak_kb["unshared_one_forward"], peak_kb["shared"]);
  r["lora_grad_max_abs_diff_between_arms"] = max_grad_diff;
  r["lora_grad_max_abs"] = max_grad;
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

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::string out_path, child_dir, note;
  std::string child_arm;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      return std::string(argv[++i]);
    };
    if (a == "--out") out_path = next();
    else if (a == "--threads") o.threads = std::stoi(next());
    else if (a == "--pairs") o.pairs = std::stoi(next());
    else if (a == "--iters") o.iters = std::stoi(next());
    else if (a == "--lora-rank") o.lora_rank = std::stoi(next());
    else if (a == "--long-pairs") o.long_pairs = std::stoi(next());
    else if (a == "--note") note = next();
    else if (a == "--image-tokens") o.image_tokens = std::stoi(next());
    else if (a == "--child") {
      child_dir = next();
      child_arm = next();
    } else {
      std::cerr << "unknown argument " << a << "\n";
      return 2;
    }
  }
  counting_allocator();  // before any tensor, so every step's storage is counted
  if (!child_dir.empty()) {
    for (const Arm& arm : kArms)
      if (arm.name == child_arm) return run_child(child_dir, arm, o);
    std::cerr << "unknown arm " << child_arm << "\n";
    return 2;
  }

  torch::set_num_threads(o.threads);
  const std::string exe = fs::read_symlink("/proc/self/exe").string();
  json result;
  result["benchmark"] = "bench_multiview";
  std::string cmd = argv[0];
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    cmd += a.find(' ') == std::string::npos ? " " + a : " '" + a + "'";
  }
  result["command"] = cmd;
  if (!note.empty()) result["note"] = note;
  {
    char date[32];
    const std::time_t now = std::time(nullptr);
    std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
    result["date"] = date;
  }
  result["machine"] = {{"cpu", cpu_model()}, {"hardware_threads", std::thread::hardware_concurrency()},
                       {"torch_threads", torch::get_num_threads()}, {"libtorch", TORCH_VERSION},
                       {"load_average_at_start", load_average()}};
  result["what"] = "forward + backward of answer_logprob_sums over a micro-batch of P2-DPO pairs (6 sequences, "
                   "4 prefixes each), LoRA r8 on q,k,v,o trainable, image features precomputed. Arms: shared = "
                   "share_prefixes on; unshared = one full-length row per sequence; *_one_forward = no length "
                   "split (one padded forward per stage; unshared_one_forward is a TRL-style batch). Time: "
                   "median over interleaved iterations in one process; step_peak_tensor_mb: peak live tensor "
                   "storage during one step above what was live before it (counting CPU allocator); "
                   "memory_rss: VmHWM growth over one step, one child process per arm";
  result["results"].push_back(bench_model(exe, "world base (models/world/base)", repo_root() + "/models/world/base", o));
  result["results"].push_back(bench_model(exe, "llava-tiny-s0 (fixture)", repo_root() + "/tests/data/llava-tiny-s0", o));
  if (o.long_pairs > 0) {
    // LLaVA-1.5-7B's prefix lengths (576 tokens per image, ~615-token prompts, ~1190 with two
    // images) on the world model's weights: where the prefix dominates, as in the paper's setting.
    Options lo = o;
    lo.pairs = o.long_pairs;
    lo.image_tokens = 576;
    result["results"].push_back(bench_model(exe, "world base at LLaVA-1.5 lengths (576 random-feature tokens per image)",
                                            repo_root() + "/models/world/base", lo));
  }
  result["machine"]["load_average_at_end"] = load_average();
  std::cout << result.dump(2) << std::endl;
  if (!out_path.empty()) io::write_json_atomic(out_path, result);
  return 0;
}
