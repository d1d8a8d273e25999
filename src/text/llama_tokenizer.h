#pragma once
// LLaMA SentencePiece tokenizer with the semantics of HF transformers 4.45's SLOW LlamaTokenizer
// (tokenization_llama.py + PreTrainedTokenizer.tokenize/_decode), over text/sentencepiece_model.h.
//
// Encoding (hf-port §E):
//  1. legacy=False only: every "▁" in the text becomes " ", and one "▁" is prepended to the whole
//     text when add_prefix_space (default true).
//  2. The text is split on added tokens (every entry of added_tokens_decoder / added_tokens.json and
//     the special tokens; leftmost, longest match first). Each added token's lstrip/rstrip/
//     single_word flags edit its neighbouring text chunks exactly as PreTrainedTokenizer.tokenize.
//  3. Each text chunk goes through SentencePiece:
//     - legacy=True: sp.encode(chunk) with the model's own dummy prefix, so every chunk (also one
//       right after "<image>") starts with "▁".
//     - legacy=False: the model is loaded with add_dummy_prefix disabled; a chunk that starts with
//       "▁"/" " is encoded as sp.encode(unk_token + chunk) minus the pieces of unk_token (so the
//       leading space survives SentencePiece), any other chunk as sp.encode(chunk).
//  4. legacy=False: a leading lone "▁" directly followed by a special token is dropped.
//  5. BOS/EOS per add_bos_token/add_eos_token.
// "legacy" absent or null in tokenizer_config.json means legacy=True (HF's default, which HF warns
// about); llava-hf checkpoints differ on this, so check legacy() when comparing with references.
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "text/added_tokens.h"



#include "text/sentencepiece_model.h"

namespace p2dpo::text {

class LlamaTokenizer {
 public:
  // Reads tokenizer.model (required), tokenizer_config.json, added_tokens.json and
  // special_tokens_map.json (each optional). Missing/corrupt files and wrongly typed fields throw
  // InputError naming the file (and the field).
  static LlamaTokenizer load(const std::string& model_dir);

  // Token ids of `text`. With add_bos (HF add_special_tokens=True) BOS is prepended when the config
  // says add_bos_token (default true) and EOS appended when add_eos_token (default false); with
  // add_bos=false neither is added.
  std::vector<int64_t> encode(const std::string& text, bool add_bos = true) const;

  // The token strings HF's tokenize() returns (SentencePiece pieces and added-token contents).
  std::vector<std::string> tokenize(const std::string& text) const;

  // HF slow decode (clean_up_tokenization_spaces from the config, spaces_between_special_tokens
  // true as in PreTrainedTokenizer._decode): byte pieces are fused into UTF-8 (invalid sequences
  // become U+FFFD), "▁" becomes " ", and the first piece of each run loses its leading "▁" when
  // add_prefix_space. Ids that are neither SentencePiece ids nor added tokens (e.g. the LM's padding
  // rows beyond size()) are skipped; HF would raise on them instead.
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = true) const;

  int64_t bos_id() const { return bos_id_; }
  int64_t eos_id() const { return eos_id_; }
  int64_t pad_id() const { return pad_id_; }  // -1 when the tokenizer has no pad token
  int64_t unk_id() const { return unk_id_; }

  // Id of a token string: added tokens first (e.g. "<image>"), then SentencePiece pieces. nullopt
  // when the string is neither (rather than silently mapping it to <unk>).
  std::optional<int64_t> token_id(const std::string& token) const;
  // Added-token content or SentencePiece piece; throws std::out_of_range for an unknown id.
  std::string id_to_piece(int64_t id) const;
  // HF len(tokenizer): distinct token strings over SentencePiece pieces and added tokens.
  size_t size() const { return size_; }
  // SentencePiece pieces only (HF vocab_size).
  size_t base_vocab_size() const;

  bool legacy() const { return legacy_; }
  bool add_prefix_space() const { return add_prefix_space_; }
  const std::map<int64_t, AddedTokenSpec>& added_tokens() const { return added_by_id_; }

 private:
  LlamaTokenizer() = default;
  std::vector<std::string> encode_chunk(const std::string& chunk) const;
  int64_t piece_to_id(const std::string& piece) const;
  std::string tokens_to_string(std::vector<std::string> tokens) const;

  std::shared_ptr<const SentencePieceModel> sp_;
  bool legacy_ = true;
  bool add_prefix_space_ = true;
  bool add_bos_token_ = true;
  bool add_eos_token_ = false;
  bool clean_up_tokenization_spaces_ = false;
  std::string unk_token_ = "<unk>";
  size_t unk_token_length_ = 0;  // pieces of unk_token as plain text (legacy=False trick)
  int64_t bos_id_ = -1, eos_id_ = -1, pad_id_ = -1, unk_id_ = -1;
  std::map<int64_t, AddedTokenSpec> added_by_id_;
  std::map<std::string, int64_t> added_by_content_;
  std::set<std::string> all_special_tokens_;
  std::set<int64_t> all_special_ids_;
  std::set<std::string> additional_special_tokens_;
  size_t size_ = 0;
};

}  // namespace p2dpo::text
