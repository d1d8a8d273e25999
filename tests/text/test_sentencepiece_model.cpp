// Cross-check of our SentencePiece BPE reader (text/sentencepiece_model.h) against Debian's
// libsentencepiece on the fixture models: same pieces for a corpus of tricky strings, same
// decoding of arbitrary id sequences, with the dummy prefix on and off. This binary does not
// link libtorch, so libsentencepiece's bundled protobuf is safe here.
#include <gtest/gtest.h>
#include <sentencepiece_processor.h>

#include <random>

#include "io/atomic_file.h"
#include "io/errors.h"
#include "test_paths.h"
#include "text/sentencepiece_model.h"

using p2dpo::text::SentencePieceModel;

namespace {

const std::vector<std::string> kCorpus = {
    "", " ", "  ", "a", "Hello world", "  leading and trailing  ", "multiple   spaces   here",
    "USER: What shapes are in the picture? ASSISTANT:", "line one\nline two\n\n", "tab\there",
    "numbers 1234567890 and 3.14", "caf\xC3\xA9 na\xC3\xAFve", "\xE6\xBC\xA2\xE5\xAD\x97", "emoji \xF0\x9F\x98\x80!",
    "\xE2\x96\x81" "already escaped", "<unk> <s> </s> <image>", "A yellow square and a green circle.",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX!", "x\xC3\x28y",  // invalid UTF-8
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "ababababababab abab", "'quoted' \"double\" (paren) [br] {c}",
};

class SentencePieceCrossCheck : public ::testing::TestWithParam<std::string> {};

TEST_P(SentencePieceCrossCheck, EncodeAndDecodeMatchLibsentencepiece) {
  const std::string path = p2dpo::test::data_path(GetParam() + "/tokenizer.model");
  const std::string bytes = p2dpo::io::read_file(path);
  for (bool dummy_prefix : {true, false}) {
    sentencepiece::SentencePieceProcessor ref;
    // Same override HF applies for legacy=False, as raw protobuf (normalizer_spec.add_dummy_prefix=0).
    std::string serialized = dummy_prefix ? bytes : bytes + std::string("\x1A\x02\x18\x00", 4);
    ASSERT_TRUE(ref.LoadFromSerializedProto(serialized).ok());
    auto ours = SentencePieceModel::parse(bytes, path);
    ours.set_add_dummy_prefix(dummy_prefix);
    ASSERT_EQ(ours.size(), ref.GetPieceSize());
    for (int id = 0; id < ref.GetPieceSize(); ++id) {
      ASSERT_EQ(ours.id_to_piece(id), ref.IdToPiece(id));
      ASSERT_EQ(ours.piece_to_id(ref.IdToPiece(id)), ref.PieceToId(ref.IdToPiece(id)));
    }
    for (const auto& text : kCorpus) {
      std::vector<std::string> want;
      ASSERT_TRUE(ref.Encode(text, &want).ok());
      EXPECT_EQ(ours.encode(text), want) << "text '" << text << "' dummy_prefix=" << dummy_prefix;
      std::string want_text;
      ASSERT_TRUE(ref.Decode(want, &want_text).ok());
      EXPECT_EQ(ours.decode(want), want_text) << "text '" << text << "'";
    }
    std::mt19937 rng(1234);
    std::uniform_int_distribution<int> pick(0, ref.GetPieceSize() - 1);
    for (int trial = 0; trial < 200; ++trial) {
      std::vector<std::string> pieces;
      const int n = 1 + trial % 12;
      for (int k = 0; k < n; ++k) pieces.push_back(ref.IdToPiece(pick(rng)));
      std::string want;
      ASSERT_TRUE(ref.Decode(pieces, &want).ok());
      EXPECT_EQ(ours.decode(pieces), want) << "trial " << trial;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, SentencePieceCrossCheck,
                         ::testing::Values("llava-tiny-s0", "llava-tiny-gqa-s0"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (auto& c : n) if (c == '-') c = '_';
                           return n;
                         });

TEST(SentencePieceModel, RejectsTruncatedAndForeignData) {
  const std::string path = p2dpo::test::data_path("llava-tiny-s0/tokenizer.model");
  const std::string bytes = p2dpo::io::read_file(path);
  EXPECT_THROW(SentencePieceModel::parse(bytes.substr(0, bytes.size() / 2), path), p2dpo::InputError);
  EXPECT_THROW(SentencePieceModel::parse("not a protobuf at all", path), p2dpo::InputError);
  EXPECT_THROW(SentencePieceModel::parse("", path), p2dpo::InputError);
}

}  // namespace
