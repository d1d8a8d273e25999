// LlamaTokenizer against the HF 4.45 slow-tokenizer references of the llava-tiny fixtures.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/errors.h"
#include "io/json_io.h"
#include "test_paths.h"
#include "text/llama_tokenizer.h"
#include "text/prompt.h"

namespace p2dpo::text {
namespace {

const char* const kFixtures[] = {"llava-tiny-s0", "llava-tiny-sharp-s0", "llava-tiny-gqa-s0"};

std::string repeat_image_marker(const std::string& text, int n) {
  std::string expanded;
  for (int i = 0; i < n; ++i) expanded += "<image>";
  std::string out;
  std::size_t start = 0;
  for (std::size_t pos = text.find("<image>"); pos != std::string::npos; pos = text.find("<image>", start)) {
    out += text.substr(start, pos - start) + expanded;
    start = pos + 7;
  }
  return out + text.substr(start);
}

std::vector<int64_t> ids_of(const nlohmann::json& value) { return value.get<std::vector<int64_t>>(); }

// Copies the fixture's tokenizer files into a scratch dir, with `edit` applied to the config.
std::string tokenizer_copy(const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
  const std::string dir = test::scratch_dir(name);
  for (const char* file : {"tokenizer.model", "added_tokens.json", "special_tokens_map.json"}) {
    std::ifstream in(test::data_path(std::string("llava-tiny-s0/") + file), std::ios::binary);
    std::ofstream out(dir + "/" + file, std::ios::binary);
    out << in.rdbuf();
  }
  nlohmann::json config = io::read_json_file(test::data_path("llava-tiny-s0/tokenizer_config.json"));
  edit(config);
  std::ofstream(dir + "/tokenizer_config.json") << config.dump(2);
  return dir;
}

TEST(LlamaTokenizer, FixtureIdsMatchHuggingFace) {
  for (const char* fixture : kFixtures) {
    SCOPED_TRACE(fixture);
    const auto tok = LlamaTokenizer::load(test::data_path(fixture));
    const auto reference = io::read_json_file(test::data_path(std::string(fixture) + "/reference.json"));
    const int n = reference["num_image_tokens"].get<int>();
    const int64_t image_id = reference["image_token_id"].get<int64_t>();
    ASSERT_EQ(reference["examples"].size(), 3u);
    for (const auto& example : reference["examples"]) {
      const std::string prompt = example["prompt"];
      const std::string answer = example["answer"];
      const auto input_ids = ids_of(example["input_ids"]);
      const auto prompt_len = example["prompt_len"].get<std::size_t>();
      const std::vector<int64_t> prompt_ids(input_ids.begin(), input_ids.begin() + prompt_len);

      EXPECT_EQ(tok.encode(repeat_image_marker(example["full_text"], n)), input_ids);
      EXPECT_EQ(tok.encode(repeat_image_marker(prompt, n)), prompt_ids);
      // One id per "<image>" string, expanded afterwards == the processor's string repetition.
      EXPECT_EQ(expand_image_tokens(tok.encode(prompt), image_id, n), prompt_ids);

      const auto split = tokenize_prompt_answer(tok, repeat_image_marker(prompt, n), answer);
      EXPECT_FALSE(split.boundary_merged);
      EXPECT_EQ(split.prompt_ids, prompt_ids);
      EXPECT_EQ(split.answer_ids, ids_of(example["answer_ids"]));

      // The answer tokens as strings, e.g. "▁", "A", "▁", "y", ...
      const auto answer_tokens = example["answer_tokens"].get<std::vector<std::string>>();
      ASSERT_EQ(answer_tokens.size(), split.answer_ids.size());
      for (std::size_t i = 0; i < answer_tokens.size(); ++i) {
        EXPECT_EQ(tok.id_to_piece(split.answer_ids[i]), answer_tokens[i]);
      }
    }
  }
}

TEST(LlamaTokenizer, SpecialIdsAndSize) {
  const auto tok = LlamaTokenizer::load(test::data_path("llava-tiny-s0"));
  EXPECT_FALSE(tok.legacy());
  EXPECT_EQ(tok.size(), 386u);
  EXPECT_EQ(tok.base_vocab_size(), 384u);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.unk_id(), 0);
  EXPECT_EQ(tok.pad_id(), 385);
  EXPECT_EQ(tok.token_id("<image>"), 384);
  EXPECT_EQ(tok.token_id("<pad>"), 385);
  EXPECT_EQ(tok.token_id("<0x0A>"), 13);
  EXPECT_EQ(tok.token_id("<unk>"), 0);
  EXPECT_EQ(tok.token_id("no-such-piece"), std::nullopt);
  EXPECT_EQ(tok.id_to_piece(384), "<image>");
  EXPECT_EQ(tok.id_to_piece(1), "<s>");
  EXPECT_THROW(tok.id_to_piece(386), std::out_of_range);
  EXPECT_EQ(tok.encode("", true), std::vector<int64_t>{1});
  EXPECT_TRUE(tok.encode("", false).empty());
  EXPECT_EQ(tok.encode("ab", false).front() == 1, false);
  // A literal "<s>" in the text is the BOS token (it is an added token), as in HF's slow tokenizer.
  const auto ids = tok.encode("x<s>y", false);
  EXPECT_NE(std::find(ids.begin(), ids.end(), 1), ids.end());
}

TEST(LlamaTokenizer, DecodeRoundTrips) {
  const auto tok = LlamaTokenizer::load(test::data_path("llava-tiny-s0"));
  for (const std::string text :
       {"A yellow square and a green circle.", "Is there a circle in the image?", "It fades from blue to purple.",
        "Numbers 12345 and  two  spaces", "caf\xC3\xA9", "\xE6\xBC\xA2 kanji", "emoji \xF0\x9F\x98\x80!",
        "line one\nline two\ttab"}) {
    const auto ids = tok.encode(text);
    EXPECT_EQ(tok.decode(ids), text) << text;
  }
  // Characters outside the 384-piece vocabulary fall back to their UTF-8 bytes <0xNN> (id 3 + byte).
  const auto tokens = tok.tokenize("\xC3\xA9");
  EXPECT_EQ(tokens, (std::vector<std::string>{"\xE2\x96\x81", "<0xC3>", "<0xA9>"}));
  EXPECT_EQ(tok.encode("\xC3\xA9", false), (std::vector<int64_t>{332, 3 + 0xC3, 3 + 0xA9}));
}

TEST(LlamaTokenizer, DecodeMatchesReferenceGreedyText) {
  for (const char* fixture : kFixtures) {
    SCOPED_TRACE(fixture);
    const auto tok = LlamaTokenizer::load(test::data_path(fixture));
    const auto reference = io::read_json_file(test::data_path(std::string(fixture) + "/reference.json"));
    for (const auto& example : reference["examples"]) {
      EXPECT_EQ(tok.decode(ids_of(example["greedy_ids"])), example["greedy_text"].get<std::string>());
    }
  }
}

TEST(LlamaTokenizer, DecodeSpecialTokens) {
  const auto tok = LlamaTokenizer::load(test::data_path("llava-tiny-s0"));
  const auto ids = tok.encode("USER: <image>\nHi");
  EXPECT_EQ(tok.decode(ids, true), "USER: \nHi");
  // HF: "<image>" (an additional special token past the base vocabulary) is decoded on its own and
  // joined with spaces (hence two spaces after "USER:"); "<s>" is glued, and the first piece after
  // it keeps its space.
  EXPECT_EQ(tok.decode(ids, false), "<s> USER:  <image> \nHi");
  // Ids past the tokenizer (the LM's padding rows 386..399) are skipped.
  EXPECT_EQ(tok.decode({1, 399, 386}), "");
}

TEST(LlamaTokenizer, LegacyFalseDisablesDummyPrefix) {
  const auto tok = LlamaTokenizer::load(test::data_path("llava-tiny-s0"));
  // No "▁" is invented after a special token, and none before text that has no space.
  EXPECT_EQ(tok.tokenize("<image>a"), (std::vector<std::string>{"<image>", "a"}));
  EXPECT_EQ(tok.tokenize("<image> a").at(1).rfind("\xE2\x96\x81", 0), 0u);
  // The leading lone "▁" before a special token is dropped.
  EXPECT_EQ(tok.tokenize("<image>").size(), 1u);
  // "▁" in the input is treated as a space.
  EXPECT_EQ(tok.encode("a\xE2\x96\x81" "b"), tok.encode("a b"));
}

TEST(LlamaTokenizer, LegacyTrueAddsPrefixAfterImage) {
  const auto legacy_dir = tokenizer_copy("text_legacy_true", [](nlohmann::json& c) { c["legacy"] = true; });
  const auto absent_dir = tokenizer_copy("text_legacy_absent", [](nlohmann::json& c) { c.erase("legacy"); });
  const auto legacy = LlamaTokenizer::load(legacy_dir);
  const auto absent = LlamaTokenizer::load(absent_dir);
  const auto modern = LlamaTokenizer::load(test::data_path("llava-tiny-s0"));
  EXPECT_TRUE(legacy.legacy());
  EXPECT_TRUE(absent.legacy());  // HF default when the flag is missing
  const int64_t space = 332;     // the lone "▁" piece of the fixture model
  ASSERT_EQ(modern.id_to_piece(space), "\xE2\x96\x81");
  const auto reference = io::read_json_file(test::data_path("llava-tiny-s0/reference.json"));
  for (const auto& example : reference["examples"]) {
    const std::string text = example["full_text"];
    // hf-port §E.2: legacy gives every chunk its own dummy prefix, i.e. one extra "▁" right after
    // "<image>"; everything else is identical.
    auto expected = modern.encode(text);
    const auto image = std::find(expected.begin(), expected.end(), 384);
    ASSERT_NE(image, expected.end());
    expected.insert(image + 1, space);
    EXPECT_EQ(legacy.encode(text), expected);
    EXPECT_EQ(absent.encode(text), expected);
  }
  EXPECT_EQ(legacy.tokenize("<image>a"), (std::vector<std::string>{"<image>", "\xE2\x96\x81" "a"}));
  EXPECT_EQ(legacy.decode(legacy.encode("A yellow square.")), "A yellow square.");
}

TEST(LlamaTokenizer, AddedTokenStripFlags) {
  const auto dir = tokenizer_copy("text_strip_flags", [](nlohmann::json& c) {
    c["added_tokens_decoder"]["384"]["lstrip"] = true;
    c["added_tokens_decoder"]["384"]["rstrip"] = true;
  });
  const auto stripping = LlamaTokenizer::load(dir);
  const auto plain = LlamaTokenizer::load(test::data_path("llava-tiny-s0"));
  // Whitespace around "<image>" (Python's notion, "\n" included) is eaten, so the result equals the
  // text written without it.
  EXPECT_EQ(stripping.encode("USER:  <image> \n Hi"), plain.encode("USER:<image>Hi"));
  EXPECT_NE(plain.encode("USER:  <image> \n Hi"), plain.encode("USER:<image>Hi"));
}

TEST(PromptAnswer, BoundaryMergeFollowsFirstDifference) {
  const auto tok = LlamaTokenizer::load(test::data_path("llava-tiny-s0"));
  // "yello" + "w": the prompt ends in "o" but the full text tokenizes "...ow" as one piece.
  const std::string prompt = "USER: yello";
  const auto full = tok.encode(prompt + "w");
  const auto prompt_only = tok.encode(prompt);
  ASSERT_FALSE(std::equal(prompt_only.begin(), prompt_only.end(), full.begin()));
  const auto split = tokenize_prompt_answer(tok, prompt, "w", "");
  EXPECT_TRUE(split.boundary_merged);
  EXPECT_LT(split.prompt_ids.size(), prompt_only.size());
  std::vector<int64_t> joined = split.prompt_ids;
  joined.insert(joined.end(), split.answer_ids.begin(), split.answer_ids.end());
  EXPECT_EQ(joined, full);
  EXPECT_EQ(tok.id_to_piece(split.answer_ids.front()), "ow");

  const auto clean = tokenize_prompt_answer(tok, "USER: Hi ASSISTANT:", "Yes");
  EXPECT_FALSE(clean.boundary_merged);
  EXPECT_EQ(tok.decode(clean.answer_ids), "Yes");  // first piece "▁Yes..." loses its space
}

TEST(PromptAnswer, Errors) {
  const auto tok = LlamaTokenizer::load(test::data_path("llava-tiny-s0"));
  try {
    tokenize_prompt_answer(tok, "", "x");
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_EQ(e.where(), "--prompt");
  }
  EXPECT_THROW(expand_image_tokens({1, 384}, 384, 0), std::invalid_argument);
  EXPECT_EQ(expand_image_tokens({1, 384, 5, 384}, 384, 2), (std::vector<int64_t>{1, 384, 384, 5, 384, 384}));
  EXPECT_EQ(count_image_markers("USER: <image>\n<image><image> x"), 3);
  EXPECT_EQ(count_image_markers("no images"), 0);
}

void expect_input_error(const std::string& dir, const std::string& file, const std::string& needle = "") {
  try {
    LlamaTokenizer::load(dir);
    FAIL() << "expected InputError for " << file;
  } catch (const InputError& e) {
    EXPECT_EQ(e.where(), dir + "/" + file) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(LlamaTokenizer, BadInputNamesTheFile) {
  const auto missing = tokenizer_copy("text_missing_model", [](nlohmann::json&) {});
  std::remove((missing + "/tokenizer.model").c_str());
  expect_input_error(missing, "tokenizer.model", "not found");

  const auto corrupt = tokenizer_copy("text_corrupt_model", [](nlohmann::json&) {});
  std::ofstream(corrupt + "/tokenizer.model", std::ios::binary | std::ios::trunc) << "\xFF\xFF\xFF garbage";
  expect_input_error(corrupt, "tokenizer.model", "SentencePiece");

  const auto malformed = tokenizer_copy("text_bad_config", [](nlohmann::json&) {});
  std::ofstream(malformed + "/tokenizer_config.json", std::ios::trunc) << "{\"legacy\": false,";
  expect_input_error(malformed, "tokenizer_config.json");

  const auto wrong_type = tokenizer_copy("text_bad_legacy", [](nlohmann::json& c) { c["legacy"] = "no"; });
  expect_input_error(wrong_type, "tokenizer_config.json", "legacy");

  const auto bad_added = tokenizer_copy("text_bad_added", [](nlohmann::json& c) {
    c["added_tokens_decoder"]["384"]["content"] = 7;
  });
  expect_input_error(bad_added, "tokenizer_config.json", "added_tokens_decoder.384");
}

}  // namespace
}  // namespace p2dpo::text
