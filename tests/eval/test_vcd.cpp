// VCD decoding for the generative evaluators (eval/bench_runner.h): alpha 0 is greedy, a VCD step
// equals the hand-computed contrast over the plausible set, the amateur noise is a pure function of
// (seed, image name), and the decoding is recorded in the run records (resume under another
// decoding is refused) for run_generation and the POPE runner.
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include "eval/bench_runner.h"
#include "eval/pope_runner.h"
#include "image/decode.h"
#include "io/json_io.h"
#include "models/load.h"
#include "pairs/views.h"
#include "test_paths.h"
#include "test_util.h"

using namespace p2dpo;
using namespace p2dpo::eval;
using p2dpo::test::data_path;
using p2dpo::test::error_of;
using p2dpo::test::scratch_dir;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

models::VisionLanguageModel& tiny_model() {
  static auto model = models::load_model(data_path("llava-tiny-s0"));
  return *model;
}

const std::vector<std::string> kQuestions = {"What is in the image?", "Describe the picture.",
                                             "Is there a red circle?", "What colour is the shape?"};

// Expert (clean image) and amateur (VCD noise) requests for every (image, question) pair.
struct Batch {
  std::vector<infer::GenerationRequest> expert, amateur;
};

Batch make_batch(models::VisionLanguageModel& model, const DecodeOptions& d) {
  torch::NoGradGuard no_grad;
  Batch b;
  for (int img = 0; img < 3; ++img) {
    const std::string name = "image" + std::to_string(img) + ".png";
    const auto clean = model.prepare_image(image::decode_image_file(data_path("llava-tiny-s0/" + name)));
    const auto noisy = vcd_noisy_view(clean, d, name);
    const auto feats = model.encode_images({clean, noisy});
    for (const auto& q : kQuestions) {
      const auto ids = model.tokenize_prompt("USER: <image>\n" + q + " ASSISTANT:", {clean});
      b.expert.push_back({ids, feats.slice(0, 0, 1), std::nullopt});
      b.amateur.push_back({ids, feats.slice(0, 1, 2), std::nullopt});
    }
  }
  return b;
}

DecodeOptions vcd(double alpha, double beta) {
  DecodeOptions d;
  d.mode = DecodeOptions::Mode::Vcd;
  d.cd_alpha = alpha;
  d.cd_beta = beta;
  return d;
}

}  // namespace

TEST(VcdDecoding, AlphaZeroIsGreedyTokenForToken) {
  auto& model = tiny_model();
  const auto d = vcd(0.0, 0.1);
  const auto b = make_batch(model, d);
  const auto greedy = generate_decoded(model, b.expert, b.amateur, DecodeOptions{}, 8);
  const auto contrast = generate_decoded(model, b.expert, b.amateur, d, 8);
  ASSERT_EQ(greedy.size(), contrast.size());
  for (size_t i = 0; i < greedy.size(); ++i) EXPECT_EQ(greedy[i].token_ids, contrast[i].token_ids) << "request " << i;
}

TEST(VcdDecoding, DiffersFromGreedyAndMatchesAHandComputedStep) {
  auto& model = tiny_model();
  const auto d = vcd(1.0, 0.1);  // VCD's LLaVA-1.5 defaults
  const auto b = make_batch(model, d);
  const auto greedy = generate_decoded(model, b.expert, b.amateur, DecodeOptions{}, 8);
  const auto contrast = generate_decoded(model, b.expert, b.amateur, d, 8);
  size_t differing = 0;
  for (size_t i = 0; i < greedy.size(); ++i) differing += greedy[i].token_ids != contrast[i].token_ids;
  EXPECT_GT(differing, 0u) << "VCD changed no answer of " << greedy.size();

  // The first step of every request by hand: (1 + a) l(I) - a l(I_noise) with the tokens below
  // log(beta) + max l(I) removed; its argmax is VCD's first token and its log-softmax the logprob.
  torch::NoGradGuard no_grad;
  size_t first_differs = 0;
  for (size_t i = 0; i < b.expert.size(); ++i) {
    auto last_logits = [&](const infer::GenerationRequest& r) {
      models::ForwardInput in;
      in.input_ids = torch::tensor(r.prompt_ids, torch::kLong).view({1, -1});
      in.image_features = r.image_features;
      in.logits_last_only = true;
      return model.forward(in).logits.view({-1}).to(torch::kDouble);
    };
    const auto le = last_logits(b.expert[i]);
    const auto la = last_logits(b.amateur[i]);
    auto scores = 2.0 * le - la;
    const double cutoff = le.max().item<double>() + std::log(0.1);
    scores = scores.masked_fill(le < cutoff, -std::numeric_limits<double>::infinity());
    const int64_t tok = scores.argmax().item<int64_t>();
    ASSERT_FALSE(contrast[i].token_ids.empty());
    EXPECT_EQ(contrast[i].token_ids[0], tok) << "request " << i;
    EXPECT_NEAR(contrast[i].logprobs[0], torch::log_softmax(scores, 0)[tok].item<double>(), 1e-4) << "request " << i;
    first_differs += tok != le.argmax().item<int64_t>();
    // A token outside the plausible set is never chosen, however large its contrast.
    EXPECT_GE(le[tok].item<double>(), cutoff);
  }
  EXPECT_GT(first_differs + differing, 0u);
}

TEST(VcdDecoding, NoiseIsAPureFunctionOfSeedAndImageName) {
  auto& model = tiny_model();
  const auto clean = model.prepare_image(image::decode_image_file(data_path("llava-tiny-s0/image0.png")));
  DecodeOptions d = vcd(1.0, 0.1);
  d.seed = 7;
  const auto a = vcd_noisy_view(clean, d, "image0.png");
  const auto again = vcd_noisy_view(clean, d, "image0.png");
  EXPECT_TRUE(torch::equal(a.pixel_values, again.pixel_values));
  EXPECT_TRUE(torch::equal(a.pixel_values,
                           pairs::add_diffusion_noise(clean.pixel_values, 500, pairs::view_seed(7, "image0.png", "vcd"))));
  EXPECT_FALSE(torch::equal(a.pixel_values, vcd_noisy_view(clean, d, "other.png").pixel_values));
  d.noise_step = 999;
  const auto heavy = vcd_noisy_view(clean, d, "image0.png");
  // Step 500 keeps sqrt(alpha_bar) = 0.863 of the image; step 999 almost nothing.
  const double corr500 = torch::corrcoef(torch::stack({clean.pixel_values.flatten(), a.pixel_values.flatten()}))[0][1].item<double>();
  const double corr999 = torch::corrcoef(torch::stack({clean.pixel_values.flatten(), heavy.pixel_values.flatten()}))[0][1].item<double>();
  EXPECT_GT(corr500, corr999);
}

TEST(VcdDecoding, OptionsAndProtocol) {
  EXPECT_EQ(parse_decode_mode("vcd", "--decode"), DecodeOptions::Mode::Vcd);
  EXPECT_EQ(parse_decode_mode("greedy", "--decode"), DecodeOptions::Mode::Greedy);
  EXPECT_TRUE(contains(error_of([] { parse_decode_mode("beam", "--decode"); }), "--decode: unknown decoding 'beam'"));
  auto d = vcd(1.0, 1.5);
  EXPECT_TRUE(contains(error_of([&] { check_decode_options(d); }), "--cd-beta: 1.5 is outside [0, 1]"));
  d = vcd(1.0, 0.1);
  d.noise_step = 1000;
  EXPECT_TRUE(contains(error_of([&] { check_decode_options(d); }), "--vcd-noise-step: 1000 is outside [0, 999]"));
  EXPECT_EQ(decode_protocol(DecodeOptions{}), "greedy") << "greedy records stay as before VCD existed";
  const auto p = decode_protocol(vcd(1.0, 0.1));
  EXPECT_EQ(p["mode"], "vcd");
  EXPECT_EQ(p["cd_alpha"], 1.0);
  EXPECT_EQ(p["noise_step"], 500);
}

TEST(VcdDecoding, RunGenerationRecordsTheDecodingAndRefusesAnother) {
  auto& model = tiny_model();
  const std::string dir = scratch_dir("vcd_run_generation");
  std::vector<GenerationItem> items;
  for (int i = 0; i < 3; ++i) {
    GenerationItem it;
    it.id = "q" + std::to_string(i);
    it.image_path = i < 2 ? data_path("llava-tiny-s0/image" + std::to_string(i) + ".png") : "";
    it.prompt = i < 2 ? "USER: <image>\nWhat is it? ASSISTANT:" : "USER: What is it? ASSISTANT:";
    items.push_back(it);
  }
  auto make_record = [&](size_t i, const std::string& answer) {
    return nlohmann::json{{"id", items[i].id}, {"answer", answer}};
  };
  auto key_of = [](const nlohmann::json& r, size_t) { return r.at("id").get<std::string>(); };
  GenerationRunOptions o;
  o.answers_path = dir + "/vcd.jsonl";
  o.protocol = {{"benchmark", "test"}, {"decoding", "greedy"}};
  o.decode = vcd(1.0, 0.1);
  o.max_new_tokens = 4;
  o.batch_size = 3;
  o.progress = false;
  EXPECT_EQ(run_generation(model, items, o, make_record, key_of), 3) << "image and text-only items under VCD";
  const auto record = io::read_json_file(o.answers_path + ".run.json");
  EXPECT_EQ(record["protocol"]["decoding"]["mode"], "vcd");
  EXPECT_EQ(record["protocol"]["decoding"]["cd_beta"], 0.1);

  auto greedy = o;
  greedy.decode = DecodeOptions{};
  const auto msg = error_of([&] { run_generation(model, items, greedy, make_record, key_of); });
  EXPECT_TRUE(contains(msg, "vcd.jsonl.run.json: the answers beside it were written with decoding = {")) << msg;
  auto other = o;
  other.decode.cd_alpha = 0.5;
  EXPECT_TRUE(contains(error_of([&] { run_generation(model, items, other, make_record, key_of); }), "\"cd_alpha\":1.0"));

  // The text-only item has nothing to contrast: its VCD answer is its greedy answer.
  greedy.answers_path = dir + "/greedy.jsonl";
  run_generation(model, items, greedy, make_record, key_of);
  const auto v = io::read_jsonl_file(o.answers_path);
  const auto g = io::read_jsonl_file(greedy.answers_path);
  EXPECT_EQ(v[2]["answer"], g[2]["answer"]);
}

TEST(VcdDecoding, PopeRunnerAlphaZeroEqualsGreedyAndRecordsVcd) {
  auto& model = tiny_model();
  PopeRunOptions o;
  o.question_files = {data_path("pope/tiny/tiny_pope_adversarial.json")};
  o.images_dir = data_path("llava-tiny-s0");
  o.conv_mode = "hf";
  o.max_new_tokens = 4;
  o.batch_size = 3;
  o.model_id = "llava-tiny-s0";
  o.progress = false;
  o.out_dir = scratch_dir("vcd_pope_greedy");
  const auto greedy = run_pope(model, o);
  auto v = o;
  v.out_dir = scratch_dir("vcd_pope_vcd0");
  v.decode = vcd(0.0, 0.1);
  const auto vcd0 = run_pope(model, v);
  const auto ga = io::read_jsonl_file(greedy.answer_files[0]);
  const auto va = io::read_jsonl_file(vcd0.answer_files[0]);
  ASSERT_EQ(ga.size(), va.size());
  for (size_t i = 0; i < ga.size(); ++i) EXPECT_EQ(ga[i]["text"], va[i]["text"]) << i;
  EXPECT_EQ(vcd0.results["protocol"]["decoding"]["mode"], "vcd");
  EXPECT_EQ(greedy.results["protocol"]["decoding"], "greedy");
  // The same --out under greedy is refused.
  v.decode = DecodeOptions{};
  EXPECT_TRUE(contains(error_of([&] { run_pope(model, v); }), "written with decoding = {"));
}
