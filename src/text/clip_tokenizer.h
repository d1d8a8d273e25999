#pragma once
// CLIP BPE tokenizer with the semantics of HF transformers 4.45's SLOW CLIPTokenizer when ftfy is
// not installed (how the clip-tiny fixture was made; hf-port §B.10):
//  1. split on added tokens (<|startoftext|>, <|endoftext|>, ...) as PreTrainedTokenizer.tokenize;
//  2. per text chunk, BasicTokenizer(strip_accents=False, do_split_on_punc=False) cleanup:
//     NUL, U+FFFD and control characters (category C* except \t \n \r) removed, whitespace
//     (\t \n \r and category Zs) -> " ", CJK ideographs surrounded by spaces, NFC, split on Python
//     whitespace, each word lower-cased, words joined by " ";
//  3. the CLIP regex (PCRE2, UTF + UCP, caseless), each match's UTF-8 bytes mapped through
//     bytes_to_unicode, BPE by merge rank with "</w>" on the last symbol;
//  4. vocab lookup (unknown -> unk id), then <|startoftext|> ids <|endoftext|>.
// Differences from Python: lower-casing uses PCRE2's case tables (simple one-to-one mappings of
// letters), so Python's multi-character and context-dependent lower() cases (U+0130 "İ" -> "i̇",
// final sigma "Σ" -> "ς") and lowercase mappings of non-letters (Ⓐ, Ⅰ) differ. With ftfy installed
// HF would instead run ftfy.fix_text + whitespace_clean + lower(); that is not reproduced.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "text/added_tokens.h"

namespace p2dpo::text {

// Right-padded batch, row-major [batch, length].
struct ClipBatch {
  int64_t batch = 0;
  int64_t length = 0;
  std::vector<int64_t> input_ids;
  std::vector<int64_t> attention_mask;  // 1 for real tokens (bos/eos included), 0 for padding
};

class ClipTokenizer {
 public:
  // Reads vocab.json and merges.txt (required) and tokenizer_config.json /
  // special_tokens_map.json (optional). Errors throw InputError naming the file.
  static ClipTokenizer load(const std::string& dir);

  // bos + ids + eos, no truncation (HF tokenizer(text) without truncation).
  std::vector<int64_t> encode(const std::string& text) const;
  // BPE token strings without bos/eos (HF tokenize()).
  std::vector<std::string> tokenize(const std::string& text) const;

  // HF tokenizer(texts, padding=True, truncation=True, max_length=max_length): a text longer than
  // max_length keeps bos + its first max_length-2 ids + eos; rows are right-padded with the pad id
  // to the longest row. max_length < 2 -> std::invalid_argument.
  ClipBatch encode_batch(const std::vector<std::string>& texts, int max_length = 77) const;

  int64_t bos_id() const { return bos_id_; }
  int64_t eos_id() const { return eos_id_; }
  int64_t pad_id() const { return pad_id_; }
  int64_t unk_id() const { return unk_id_; }
  // tokenizer_config.json's model_max_length (77 when absent or absurdly large).
  int model_max_length() const { return model_max_length_; }
  size_t vocab_size() const { return encoder_.size(); }

 private:
  ClipTokenizer() = default;
  std::vector<std::string> bpe(const std::vector<std::string>& symbols) const;
  void tokenize_chunk(const std::string& chunk, std::vector<std::string>& out) const;
  int64_t token_to_id(const std::string& token) const;

  std::unordered_map<std::string, int64_t> encoder_;
  std::unordered_map<std::string, int> merge_ranks_;  // key: first + " " + second
  std::map<int64_t, AddedTokenSpec> added_by_id_;
  std::map<std::string, int64_t> added_by_content_;
  std::vector<std::string> byte_symbols_;  // bytes_to_unicode: byte -> UTF-8 of its symbol
  int64_t bos_id_ = -1, eos_id_ = -1, pad_id_ = -1, unk_id_ = -1;
  int model_max_length_ = 77;
};

// BasicTokenizer cleanup of step 2 above (exposed for tests).
std::string clip_basic_clean(const std::string& text);

}  // namespace p2dpo::text
