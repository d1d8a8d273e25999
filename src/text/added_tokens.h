#pragma once
// HF "added tokens" (AddedToken) handling shared by the slow tokenizers: splitting text on them the
// way PreTrainedTokenizer.tokenize does (Trie.split, then the lstrip/rstrip/single_word edits).
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace p2dpo::text {

// One entry of HF's added_tokens_decoder.
struct AddedTokenSpec {
  std::string content;
  int64_t id = -1;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool special = false;
};

// Splits `text` into text chunks and added-token contents: at each position the longest added token
// that starts there is cut out, scanning left to right (HF's Trie.split gives the same for
// non-overlapping token sets such as <s>, </s>, <unk>, <image>, <pad>). Empty chunks are not
// produced. Then each added token's flags edit its neighbours as PreTrainedTokenizer.tokenize:
// rstrip -> the right chunk is lstripped, lstrip -> the left chunk is rstripped (Python
// whitespace), single_word glues the token to an adjacent chunk that does not touch a space.
// The result may contain empty strings (fully stripped chunks); callers skip them, and a part is an
// added token exactly when it is a key of `by_content` (HF tests membership by string too).
std::vector<std::string> split_on_added_tokens(const std::string& text,
                                               const std::map<std::string, int64_t>& by_content,
                                               const std::map<int64_t, AddedTokenSpec>& by_id);

// Parses tokenizer_config.json's "added_tokens_decoder" ({"id": {"content": ..., flags}}).
// Wrong types throw InputError(file_for_errors, "field 'added_tokens_decoder.<id>...': ...").
std::map<int64_t, AddedTokenSpec> parse_added_tokens_decoder(const nlohmann::json& config,
                                                             const std::string& file_for_errors);

// A special-token entry of tokenizer_config.json / special_tokens_map.json: either a string or an
// AddedToken object with "content". nullopt-like empty string for null/absent.
std::string special_token_content(const nlohmann::json& config, const std::string& key,
                                  const std::string& file_for_errors);

}  // namespace p2dpo::text
