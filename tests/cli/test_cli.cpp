// End-to-end checks of the p2dpo executable: JSON outputs, and for bad input a clear message
// naming the file or flag and exit status 2.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "cli_run.h"
#include "test_paths.h"

namespace fs = std::filesystem;
using p2dpo::test::data_path;
using p2dpo::test::scratch_dir;

namespace {

using Run = p2dpo::test::CliRun;

Run run(const std::vector<std::string>& args) { return p2dpo::test::run_cli(args); }

const std::string kPrompt = "USER: <image>\nWhat shapes are in the picture? ASSISTANT:";

std::string model() { return data_path("llava-tiny-s0"); }
std::string image0() { return data_path("llava-tiny-s0/image0.png"); }

std::string copy_model(const std::string& name) {
  auto dir = scratch_dir(name);
  for (const auto& f : fs::directory_iterator(model())) fs::copy(f.path(), dir + "/" + f.path().filename().string());
  return dir;
}

void expect_input_error(const Run& r, const std::string& must_contain_1, const std::string& must_contain_2 = "") {
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("error: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(must_contain_1), std::string::npos) << r.out;
  if (!must_contain_2.empty()) EXPECT_NE(r.out.find(must_contain_2), std::string::npos) << r.out;
}

TEST(Cli, GenerateMatchesReferenceGreedyIds) {
  auto r = run({"generate", "--model", model(), "--image", image0(), "--prompt", kPrompt, "--max-new-tokens", "8",
                "--no-eos-stop", "--json"});
  ASSERT_EQ(r.status, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["token_ids"].get<std::vector<int64_t>>(), (std::vector<int64_t>{355, 202, 32, 362, 64, 288, 127, 253}));
  EXPECT_EQ(j["logprobs"].size(), 8u);
  EXPECT_TRUE(j["text"].is_string());
}

TEST(Cli, SamplingIsSeeded) {
  std::vector<std::string> a = {"generate", "--model", model(), "--image", image0(), "--prompt", kPrompt,
                                "--max-new-tokens", "12", "--temperature", "1.0", "--top-p", "0.9", "--top-k", "50",
                                "--json", "--seed"};
  auto r1 = run([&] { auto v = a; v.push_back("7"); return v; }());
  auto r2 = run([&] { auto v = a; v.push_back("7"); return v; }());
  auto r3 = run([&] { auto v = a; v.push_back("8"); return v; }());
  ASSERT_EQ(r1.status, 0) << r1.out;
  EXPECT_EQ(r1.out, r2.out);
  EXPECT_NE(r1.out, r3.out);
}

TEST(Cli, ScoreTextAndIdsAgreeWithReference) {
  auto r = run({"score", "--model", model(), "--image", image0(), "--prompt", kPrompt, "--answer",
                "A yellow square and a green circle.", "--json"});
  ASSERT_EQ(r.status, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_NEAR(j["sum"].get<double>(), -143.349304, 1e-4);
  std::string ids;
  for (auto id : j["answer_ids"]) ids += (ids.empty() ? "" : ",") + std::to_string(id.get<int64_t>());
  auto r2 = run({"score", "--model", model(), "--image", image0(), "--prompt", kPrompt, "--answer-ids", ids, "--json"});
  ASSERT_EQ(r2.status, 0) << r2.out;
  EXPECT_NEAR(nlohmann::json::parse(r2.out)["sum"].get<double>(), -143.349304, 1e-4);
}

TEST(Cli, PreprocessWritesPixelValuesAndPng) {
  auto dir = scratch_dir("cli_preprocess");
  auto r = run({"preprocess", "--model", model(), "--image", image0(), "--out", dir + "/px.safetensors", "--png",
                dir + "/view.png", "--json"});
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(fs::exists(dir + "/px.safetensors"));
  EXPECT_GT(fs::file_size(dir + "/view.png"), 0u);
  EXPECT_EQ(nlohmann::json::parse(r.out)["shape"], nlohmann::json({1, 3, 56, 56}));
}

TEST(Cli, ClipScoreMatrix) {
  auto c = data_path("clip-tiny-s0");
  auto r = run({"clipscore", "--model", c, "--image", c + "/image0.png", "--image", c + "/image1.png", "--text",
                "is there a red circle in the image?", "--json"});
  ASSERT_EQ(r.status, 0) << r.out;
  auto m = nlohmann::json::parse(r.out)["clip_score"];
  ASSERT_EQ(m.size(), 1u);
  ASSERT_EQ(m[0].size(), 2u);
  EXPECT_NEAR(m[0][0].get<double>(), 29.58535, 1e-3);
  EXPECT_NEAR(m[0][1].get<double>(), 0.0, 1e-9);
}

TEST(CliBadInput, MissingImage) {
  expect_input_error(run({"generate", "--model", model(), "--image", "/nonexistent/cat.png", "--prompt", kPrompt}),
                     "/nonexistent/cat.png");
}

TEST(CliBadInput, CorruptAndZeroSizeImage) {
  auto dir = scratch_dir("cli_bad_images");
  { std::ofstream(dir + "/empty.png"); }
  expect_input_error(run({"generate", "--model", model(), "--image", dir + "/empty.png", "--prompt", kPrompt}),
                     "empty.png");
  auto bytes = p2dpo::io::read_file(image0());
  p2dpo::io::write_file_atomic(dir + "/cut.png", bytes.substr(0, bytes.size() / 2));
  expect_input_error(run({"generate", "--model", model(), "--image", dir + "/cut.png", "--prompt", kPrompt}),
                     "cut.png");
  p2dpo::io::write_file_atomic(dir + "/text.jpg", "this is not an image at all");
  expect_input_error(run({"generate", "--model", model(), "--image", dir + "/text.jpg", "--prompt", kPrompt}),
                     "text.jpg");
}

TEST(CliBadInput, ImageMarkerCountMismatch) {
  expect_input_error(run({"generate", "--model", model(), "--image", image0(), "--image", image0(), "--prompt", kPrompt}),
                     "--prompt", "2 image(s)");
  expect_input_error(run({"generate", "--model", model(), "--prompt", kPrompt}), "--prompt", "0 image(s)");
}

TEST(CliBadInput, EmptyPrompt) {
  expect_input_error(run({"generate", "--model", model(), "--prompt", ""}), "--prompt", "empty");
}

TEST(CliBadInput, TruncatedSafetensors) {
  auto dir = copy_model("cli_truncated");
  auto bytes = p2dpo::io::read_file(dir + "/model.safetensors");
  p2dpo::io::write_file_atomic(dir + "/model.safetensors", bytes.substr(0, bytes.size() - 1000));
  expect_input_error(run({"generate", "--model", dir, "--image", image0(), "--prompt", kPrompt}), "model.safetensors");
}

TEST(CliBadInput, ConfigShapeMismatchNamesTensorAndField) {
  auto dir = copy_model("cli_shape_mismatch");
  auto cfg = p2dpo::io::read_file(dir + "/config.json");
  auto j = nlohmann::json::parse(cfg);
  j["text_config"]["intermediate_size"] = 96;
  p2dpo::io::write_file_atomic(dir + "/config.json", j.dump(2));
  expect_input_error(run({"generate", "--model", dir, "--image", image0(), "--prompt", kPrompt}), "mlp",
                     "intermediate_size");
}

TEST(CliBadInput, MissingConfigKeyAndMalformedConfig) {
  auto dir = copy_model("cli_config_missing");
  auto j = nlohmann::json::parse(p2dpo::io::read_file(dir + "/config.json"));
  j.erase("text_config");
  p2dpo::io::write_file_atomic(dir + "/config.json", j.dump(2));
  expect_input_error(run({"generate", "--model", dir, "--image", image0(), "--prompt", kPrompt}), "config.json",
                     "text_config");
  p2dpo::io::write_file_atomic(dir + "/config.json", "{\"model_type\": \"llava\", ");
  expect_input_error(run({"generate", "--model", dir, "--image", image0(), "--prompt", kPrompt}), "config.json");
}

TEST(CliBadInput, MissingTensor) {
  // Rewrite the checkpoint without one tensor: the error names the checkpoint and the tensor.
  auto dir = copy_model("cli_missing_tensor");
  {
    auto src = p2dpo::io::SafetensorsFile::open(model() + "/model.safetensors");
    std::vector<p2dpo::io::TensorToWrite> keep;
    for (const auto& name : src->names()) {
      if (name == "multi_modal_projector.linear_2.bias") continue;
      auto v = src->tensor(name);
      keep.push_back({name, v.dtype, v.shape, v.data, v.nbytes});
    }
    p2dpo::io::write_safetensors(dir + "/model.safetensors", keep);
  }
  expect_input_error(run({"generate", "--model", dir, "--image", image0(), "--prompt", kPrompt}),
                     "multi_modal_projector.linear_2.bias", "missing");
  fs::remove(dir + "/model.safetensors");
  expect_input_error(run({"generate", "--model", dir, "--image", image0(), "--prompt", kPrompt}), dir);
}

TEST(CliBadInput, AnswerIdOutsideVocabulary) {
  expect_input_error(run({"score", "--model", model(), "--image", image0(), "--prompt", kPrompt, "--answer-ids", "999999"}),
                     "--answer-ids");
}

TEST(CliBadInput, UnknownCudnnAttentionChoice) {
  expect_input_error(run({"generate", "--model", model(), "--cudnn-attention", "sometimes", "--image", image0(), "--prompt",
                          kPrompt}),
                     "--cudnn-attention", "sometimes");
}

TEST(Cli, CudnnAttentionChoiceChangesNothingOnTheCpu) {
  // A CUDA-only switch (models/attention_backend.h): on the CPU every choice decodes the same.
  std::vector<std::string> a = {"generate", "--model", model(), "--image", image0(), "--prompt", kPrompt,
                                "--max-new-tokens", "6", "--json"};
  const auto plain = run(a);
  ASSERT_EQ(plain.status, 0) << plain.out;
  for (const std::string choice : {"on", "off", "auto"}) {
    auto v = a;
    v.insert(v.end(), {"--cudnn-attention", choice});
    const auto r = run(v);
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_EQ(r.out, plain.out) << choice;
  }
  // So is --cuda-fused-ops (models/fused_ops.h): the CPU always runs HF's op order.
  for (const std::string choice : {"on", "off"}) {
    auto v = a;
    v.insert(v.end(), {"--cuda-fused-ops", choice});
    const auto r = run(v);
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_EQ(r.out, plain.out) << choice;
  }
  auto bad = a;
  bad.insert(bad.end(), {"--cuda-fused-ops", "maybe"});
  expect_input_error(run(bad), "--cuda-fused-ops", "maybe");
}

TEST(CliBadInput, UnknownDevice) {
  expect_input_error(run({"generate", "--model", model(), "--device", "tpu", "--image", image0(), "--prompt", kPrompt}),
                     "--device");
}

}  // namespace
