// The world's SentencePiece tokenizer (spm_train as a process), read back through our LlamaTokenizer.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "io/atomic_file.h"
#include "io/json_io.h"
#include "test_paths.h"
#include "test_util.h"
#include "text/llama_tokenizer.h"
#include "world/tokenizer_train.h"
#include "world/world_text_fixture.h"

namespace p2dpo::world {
namespace {
namespace fs = std::filesystem;

std::string write_corpus(const std::string& dir) {
  const std::string path = dir + "/corpus.txt";
  std::string text;
  for (const auto& s : test::world_sentences()) text += s + "\n";
  io::write_file_atomic(path, text);
  return path;
}

TEST(WorldTokenizer, LoadsAsLlavaTokenizerAndRoundTrips) {
  const std::string dir = test::scratch_dir("world-tok");
  const auto info = train_world_tokenizer(write_corpus(dir), dir + "/tok", 400, 7,
                                          std::vector<std::string>(50, "USER: ASSISTANT:"));
  EXPECT_EQ(info.sentencepiece_size, 400);
  EXPECT_EQ(info.image_token_id, 400);
  EXPECT_EQ(info.pad_token_id, 401);

  const auto tok = text::LlamaTokenizer::load(dir + "/tok");
  EXPECT_FALSE(tok.legacy());
  EXPECT_EQ(tok.size(), 402u);
  EXPECT_EQ(tok.base_vocab_size(), 400u);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.unk_id(), 0);
  EXPECT_EQ(tok.pad_id(), 401);
  EXPECT_EQ(tok.token_id("<image>"), std::optional<int64_t>(400));

  for (const auto& sentence : test::world_sentences()) {
    const auto ids = tok.encode(sentence);
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(ids.front(), tok.bos_id());
    EXPECT_EQ(std::count(ids.begin(), ids.end(), tok.unk_id()), 0) << sentence;
    EXPECT_EQ(std::count(ids.begin(), ids.end(), info.image_token_id),
              sentence.find("<image>") == std::string::npos ? 0 : 1)
        << sentence;
    // Decoding skips <s> and <image> (special tokens); everything else comes back exactly.
    std::string without_image = sentence;
    const auto at = without_image.find("<image>");
    if (at != std::string::npos) without_image.erase(at, 7);
    EXPECT_EQ(tok.decode(ids), without_image);
  }
  // The trainer must have learnt the world's words as pieces, not left them as characters.
  EXPECT_LE(tok.tokenize("a small red circle").size(), 5u);
  EXPECT_EQ(tok.tokenize("123").size(), 4u);  // split_digits: "▁", "1", "2", "3"
  // The chat template's words, given as extra lines, get their own pieces.
  EXPECT_EQ(tok.tokenize("USER: <image>\nIs there a red star? ASSISTANT:"),
            (std::vector<std::string>{"▁USER", ":", "▁", "<image>", "<0x0A>", "I", "s", "▁there", "▁a",
                                      "▁red", "▁star", "?", "▁ASSISTANT", ":"}));
  // Characters never seen fall back to bytes, not <unk>.
  const auto ids = tok.encode("Zebra €");
  EXPECT_EQ(std::count(ids.begin(), ids.end(), tok.unk_id()), 0);
  EXPECT_EQ(tok.decode(ids), "Zebra €");

  const auto config = io::read_json_file(dir + "/tok/tokenizer_config.json");
  EXPECT_EQ(config["tokenizer_class"], "LlamaTokenizer");
  EXPECT_EQ(config["added_tokens_decoder"]["400"]["content"], "<image>");
  EXPECT_EQ(io::read_json_file(dir + "/tok/added_tokens.json"),
            (nlohmann::json{{"<image>", 400}, {"<pad>", 401}}));
  EXPECT_FALSE(fs::exists(dir + "/tok/tokenizer.vocab"));
  for (const auto& entry : fs::directory_iterator(dir + "/tok")) {
    EXPECT_EQ(entry.path().filename().string().rfind(".spm-train", 0), std::string::npos) << "work dir left behind";
  }
}

TEST(WorldTokenizer, SameCorpusGivesByteIdenticalFiles) {
  const std::string a = test::scratch_dir("world-tok-a");
  const std::string b = test::scratch_dir("world-tok-b");
  train_world_tokenizer(write_corpus(a), a + "/out", 384, 3);
  train_world_tokenizer(write_corpus(b), b + "/somewhere/else", 384, 3);
  for (const char* file : {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                           "added_tokens.json"}) {
    EXPECT_EQ(io::read_file(a + "/out/" + file), io::read_file(b + "/somewhere/else/" + file)) << file;
  }
  // A different corpus gives a different model.
  io::write_file_atomic(b + "/corpus2.txt", "only a few other words here\nand here\n");
  train_world_tokenizer(b + "/corpus2.txt", b + "/other", 300, 3);
  EXPECT_NE(io::read_file(a + "/out/tokenizer.model"), io::read_file(b + "/other/tokenizer.model"));
}

TEST(WorldTokenizer, RelativeOutputDirKeepsTheTrainerLogOutOfTheConsole) {
  const std::string dir = test::scratch_dir("world-tok-rel");
  const std::string corpus = write_corpus(dir);
  const auto cwd = fs::current_path();
  fs::current_path(dir);
  testing::internal::CaptureStderr();
  const auto info = train_world_tokenizer("corpus.txt", "rel/out", 300, 1);
  const std::string err = testing::internal::GetCapturedStderr();
  fs::current_path(cwd);
  EXPECT_EQ(info.sentencepiece_size, 300);
  EXPECT_TRUE(fs::exists(dir + "/rel/out/tokenizer.model"));
  EXPECT_EQ(err.find("trainer_spec"), std::string::npos) << "spm_train's log leaked to stderr";
}

TEST(WorldTokenizer, BadInputsNameTheProblem) {
  const std::string dir = test::scratch_dir("world-tok-bad");
  EXPECT_NE(test::error_of([&] { train_world_tokenizer(dir + "/missing.txt", dir + "/o", 400, 0); })
                .find("corpus file not found"),
            std::string::npos);
  const std::string corpus = write_corpus(dir);
  EXPECT_NE(test::error_of([&] { train_world_tokenizer(corpus, dir + "/o", 100, 0); }).find("--vocab-size"),
            std::string::npos);
  // Far more pieces than the corpus can give: spm_train's own error comes through.
  EXPECT_NE(test::error_of([&] { train_world_tokenizer(corpus, dir + "/o", 60000, 0); }).find("spm_train failed"),
            std::string::npos);
  ::setenv("P2DPO_SPM_TRAIN", "/nonexistent/spm_train", 1);
  const std::string missing = test::error_of([&] { train_world_tokenizer(corpus, dir + "/o", 400, 0); });
  ::unsetenv("P2DPO_SPM_TRAIN");
  EXPECT_NE(missing.find("sentencepiece"), std::string::npos) << missing;
}

}  // namespace
}  // namespace p2dpo::world
