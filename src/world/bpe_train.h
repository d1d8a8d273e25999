#pragma once
// A tiny byte-level BPE learner for the world CLIP's tokenizer (OpenAI CLIP's vocabulary layout).
//
// Why our own: no Debian package trains CLIP-style BPE (HF `tokenizers` is not packaged, and
// SentencePiece's BPE has a different vocabulary format that CLIPTokenizer cannot read). The world's
// text has a few dozen words, so the textbook algorithm (count adjacent symbol pairs over the word
// counts, merge the most frequent, repeat) is fast enough and easy to verify.
//
// Words are cut exactly as text::ClipTokenizer (and HF's CLIPTokenizer) cut them: BasicTokenizer
// cleanup + lower case, the CLIP regex, UTF-8 bytes through bytes_to_unicode, "</w>" on the last
// symbol. So every merge the learner makes is one the tokenizer applies.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace p2dpo::world {

struct ClipBpeVocabulary {
  // id -> token: 256 byte symbols (bytes_to_unicode order), the same 256 + "</w>", one token per
  // new merge result, then "<|startoftext|>" and "<|endoftext|>" (as OpenAI's 49408 vocabulary).
  std::vector<std::string> tokens;
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  int64_t bos_id = -1;  // <|startoftext|>
  int64_t eos_id = -1;  // <|endoftext|> (also pad and unk, as OpenAI CLIP)
};

// Learns at most `max_merges` merges; stops earlier when no pair occurs `min_pair_count` times.
// Ties between equally frequent pairs go to the lexicographically smallest (first, second), so the
// result depends on the texts only (not on their order or the machine).
ClipBpeVocabulary learn_clip_bpe(const std::vector<std::string>& texts, int max_merges, int min_pair_count = 2);

// Writes vocab.json, merges.txt ("#version: 0.2" header), tokenizer_config.json (slow CLIPTokenizer,
// model_max_length) and special_tokens_map.json, the files HF's CLIPTokenizer and
// text::ClipTokenizer read.
void write_clip_tokenizer_files(const std::string& dir, const ClipBpeVocabulary& vocab, int model_max_length);

// The CLIP pre-tokenizer's words of `text` as byte symbols (exposed for tests).
std::vector<std::string> clip_pretokenize(const std::string& text);

}  // namespace p2dpo::world
