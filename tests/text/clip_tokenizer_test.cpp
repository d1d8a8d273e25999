// ClipTokenizer against the clip-tiny fixture (HF 4.45 slow CLIPTokenizer without ftfy).
#include <algorithm>
#include <fstream>
#include <gtest/gtest.h>

#include "io/errors.h"
#include "io/json_io.h"
#include "test_paths.h"
#include "text/clip_tokenizer.h"

namespace p2dpo::text {
namespace {

// The table of tests/data/clip-tiny-s0/README.md.
const std::vector<std::pair<std::string, std::vector<int64_t>>> kReadmeTable = {
    {"is there a red circle in the image?", {812, 573, 614, 320, 733, 323, 700, 754, 524, 324, 612, 286, 813}},
    {"a photo of a yellow square and a green circle.",
     {812, 320, 809, 737, 320, 636, 681, 521, 323, 320, 807, 700, 269, 813}},
    {"A tall picture with white diagonal stripes, fading from blue to purple",
     {812, 320, 738, 749, 86, 556, 327, 682, 796, 719, 267, 805, 725, 65, 562, 324, 694, 660, 813}},
    {"two zebras? no, 3 black dots!!", {812, 757, 89, 68, 65, 583, 338, 286, 687, 267, 274, 616, 747, 0, 256, 813}},
};

TEST(ClipTokenizer, ReadmeTable) {
  const auto tok = ClipTokenizer::load(test::data_path("clip-tiny-s0"));
  EXPECT_EQ(tok.bos_id(), 812);
  EXPECT_EQ(tok.eos_id(), 813);
  EXPECT_EQ(tok.pad_id(), 813);
  EXPECT_EQ(tok.model_max_length(), 32);
  for (const auto& [text, ids] : kReadmeTable) EXPECT_EQ(tok.encode(text), ids) << text;
  EXPECT_EQ(tok.tokenize("two zebras?"), (std::vector<std::string>{"two</w>", "z", "e", "b", "ra", "s</w>", "?</w>"}));
}

TEST(ClipTokenizer, BatchMatchesReferenceTensorLayout) {
  const auto tok = ClipTokenizer::load(test::data_path("clip-tiny-s0"));
  std::vector<std::string> texts;
  for (const auto& [text, ids] : kReadmeTable) texts.push_back(text);
  const ClipBatch batch = tok.encode_batch(texts);
  ASSERT_EQ(batch.batch, 4);
  ASSERT_EQ(batch.length, 19);
  for (std::size_t row = 0; row < kReadmeTable.size(); ++row) {
    const auto& ids = kReadmeTable[row].second;
    for (std::size_t col = 0; col < 19; ++col) {
      const bool real = col < ids.size();
      EXPECT_EQ(batch.input_ids[row * 19 + col], real ? ids[col] : 813);
      EXPECT_EQ(batch.attention_mask[row * 19 + col], real ? 1 : 0);
    }
  }
}

TEST(ClipTokenizer, ReferenceJsonIdsTokensAndEosPositions) {
  const auto tok = ClipTokenizer::load(test::data_path("clip-tiny-s0"));
  const auto reference = io::read_json_file(test::data_path("clip-tiny-s0/reference.json"));
  const auto texts = reference["texts"].get<std::vector<std::string>>();
  ASSERT_EQ(texts.size(), 4u);
  const ClipBatch batch = tok.encode_batch(texts);
  for (std::size_t row = 0; row < texts.size(); ++row) {
    const auto ids = reference["input_ids"][row].get<std::vector<int64_t>>();
    EXPECT_EQ(tok.encode(texts[row]), ids);
    auto tokens = reference["tokens"][row].get<std::vector<std::string>>();
    tokens = std::vector<std::string>(tokens.begin() + 1, tokens.end() - 1);  // drop bos/eos
    EXPECT_EQ(tok.tokenize(texts[row]), tokens);
    // HF pools at the first eos of each padded row.
    const auto begin = batch.input_ids.begin() + static_cast<std::ptrdiff_t>(row * batch.length);
    const auto first_eos = std::find(begin, begin + batch.length, tok.eos_id()) - begin;
    EXPECT_EQ(first_eos, reference["eos_positions"][row].get<int64_t>());
  }
}

TEST(ClipTokenizer, TruncationKeepsEos) {
  const auto tok = ClipTokenizer::load(test::data_path("clip-tiny-s0"));
  const std::string text = kReadmeTable[2].first;
  const auto full = tok.encode(text);  // 19 ids
  const ClipBatch batch = tok.encode_batch({text, "a"}, 8);
  ASSERT_EQ(batch.length, 8);
  std::vector<int64_t> expected(full.begin(), full.begin() + 7);
  expected.push_back(813);
  EXPECT_EQ(std::vector<int64_t>(batch.input_ids.begin(), batch.input_ids.begin() + 8), expected);
  EXPECT_EQ(std::vector<int64_t>(batch.input_ids.begin() + 8, batch.input_ids.end()),
            (std::vector<int64_t>{812, 320, 813, 813, 813, 813, 813, 813}));
  EXPECT_THROW(tok.encode_batch({"a"}, 1), std::invalid_argument);
}

TEST(ClipTokenizer, CleanupAndSpecialTokens) {
  const auto tok = ClipTokenizer::load(test::data_path("clip-tiny-s0"));
  // Case, extra whitespace and control characters do not change the ids.
  EXPECT_EQ(tok.encode("  A  PHOTO\tof\x07 a yellow square and a green circle.\n"), kReadmeTable[1].second);
  // A literal special token is split out as its id.
  EXPECT_EQ(tok.encode("a<|endoftext|>a"), (std::vector<int64_t>{812, 320, 813, 320, 813}));
  // Bytes outside the merges stay byte symbols; the empty text is just bos + eos.
  EXPECT_EQ(tok.encode(""), (std::vector<int64_t>{812, 813}));
  EXPECT_EQ(tok.encode("\xC3\xA9").size(), 4u);  // "é" -> two byte symbols ("Ã", "©</w>")
}

TEST(ClipTokenizer, BasicCleanMatchesPythonReference) {
  const auto cases = io::read_json_file(test::data_path("text/clip_clean_cases.json"));
  ASSERT_GE(cases["cases"].size(), 10u);
  for (const auto& c : cases["cases"]) {
    EXPECT_EQ(clip_basic_clean(c["input"].get<std::string>()), c["expected"].get<std::string>())
        << c["input"].get<std::string>();
  }
}

TEST(ClipTokenizer, BadInputNamesTheFile) {
  const std::string dir = test::scratch_dir("text_clip_bad");
  try {
    ClipTokenizer::load(dir);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(e.where(), dir + "/vocab.json");
  }
  std::ofstream(dir + "/vocab.json") << "{\"a\": 0,";
  try {
    ClipTokenizer::load(dir);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(e.where(), dir + "/vocab.json");
  }
  std::ofstream(dir + "/vocab.json", std::ios::trunc) << "{\"a\": 0}";
  try {
    ClipTokenizer::load(dir);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(e.where(), dir + "/merges.txt");
  }
  std::ofstream(dir + "/merges.txt") << "#version: 0.2\n";
  try {
    ClipTokenizer::load(dir);  // no <|startoftext|> anywhere
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("bos_token"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace p2dpo::text
