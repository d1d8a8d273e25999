#include "text/clip_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <filesystem>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "io/atomic_file.h"
#include "io/errors.h"
#include "io/json_io.h"
#include "text/unicode_nfc.h"
#include "text/utf8.h"

namespace p2dpo::text {
namespace {

// A compiled PCRE2 pattern in UTF + UCP mode (so \p{L}, \p{N}, \s and case folding are Unicode).
class Regex {
 public:
  explicit Regex(const std::string& pattern, uint32_t extra_options = 0) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), pattern.size(),
                          PCRE2_UTF | PCRE2_UCP | extra_options, &error, &offset, nullptr);
    if (code_ == nullptr) throw std::logic_error("bad built-in regex: " + pattern);
  }
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // All non-overlapping matches (Python re.findall without groups). `subject` must be valid UTF-8.
  std::vector<std::string> find_all(const std::string& subject) const {
    std::vector<std::string> matches;
    pcre2_match_data* data = pcre2_match_data_create_from_pattern(code_, nullptr);
    PCRE2_SIZE start = 0;
    while (start <= subject.size()) {
      const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(), start,
                                 0, data, nullptr);
      if (rc < 0) break;
      const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data);
      if (ovector[1] == ovector[0]) {  // cannot happen with our patterns; avoid looping forever
        start = ovector[1] + 1;
        continue;
      }
      matches.emplace_back(subject, ovector[0], ovector[1] - ovector[0]);
      start = ovector[1];
    }
    pcre2_match_data_free(data);
    return matches;
  }

  // Global substitution with PCRE2's extended replacement syntax (\L, $1, ...).
  std::string replace_all(const std::string& subject, const std::string& replacement) const {
    std::string out(subject.size() * 2 + 16, '\0');
    for (int attempt = 0; attempt < 2; ++attempt) {
      PCRE2_SIZE out_length = out.size();
      const int rc = pcre2_substitute(
          code_, reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(), 0,
          PCRE2_SUBSTITUTE_GLOBAL | PCRE2_SUBSTITUTE_EXTENDED | PCRE2_SUBSTITUTE_OVERFLOW_LENGTH, nullptr,
          nullptr, reinterpret_cast<PCRE2_SPTR>(replacement.data()), replacement.size(),
          reinterpret_cast<PCRE2_UCHAR*>(out.data()), &out_length);
      if (rc >= 0) {
        out.resize(out_length);
        return out;
      }
      if (rc != PCRE2_ERROR_NOMEMORY) throw std::logic_error("PCRE2 substitution failed");
      out.assign(out_length + 1, '\0');  // out_length now holds the size needed
    }
    throw std::logic_error("PCRE2 substitution did not fit");
  }

 private:
  pcre2_code* code_ = nullptr;
};

// CLIP's pre-tokenizer pattern (tokenization_clip.py), compiled caseless like re.IGNORECASE.
const Regex& clip_pattern() {
  static const Regex regex(
      R"(<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+)",
      PCRE2_CASELESS);
  return regex;
}

// GPT-2's bytes_to_unicode: printable bytes map to themselves, the other 68 to U+0100 + n.
std::vector<std::string> bytes_to_unicode() {
  std::vector<std::string> table(256);
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    const char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + extra++);
    append_utf8(table[b], cp);
  }
  return table;
}

}  // namespace

std::string clip_basic_clean(const std::string& text) {
  // _clean_text: drop NUL, U+FFFD and control characters; whitespace -> " ".
  static const Regex controls(R"((?![\t\n\r])[\p{C}\x{0}\x{FFFD}])");
  static const Regex whitespace(R"([\t\n\r\p{Zs}])");
  // _tokenize_chinese_chars: the CJK ideograph blocks of BasicTokenizer._is_chinese_char.
  static const Regex cjk(
      R"(([\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}\x{2A700}-\x{2B73F}\x{2B740}-\x{2B81F})"
      R"(\x{2B820}-\x{2CEAF}\x{F900}-\x{FAFF}\x{2F800}-\x{2FA1F}]))");
  // token.lower(): PCRE2 \L case forcing (simple letter mappings, see the header).
  static const Regex any_text(R"((?s).+)");

  std::string s = sanitize_utf8(text);  // invalid bytes -> U+FFFD, which is then dropped
  s = controls.replace_all(s, "");
  s = whitespace.replace_all(s, " ");
  s = cjk.replace_all(s, " $1 ");
  s = nfc(s);
  bool ascii = true;
  for (char c : s) ascii = ascii && static_cast<unsigned char>(c) < 0x80;
  if (ascii) {
    for (char& c : s) c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  } else if (!s.empty()) {
    s = any_text.replace_all(s, R"(\L$0)");
  }
  // whitespace_tokenize + " ".join: split on Python whitespace, drop empties.
  std::string out;
  std::string word;
  auto flush = [&]() {
    if (word.empty()) return;
    if (!out.empty()) out += ' ';
    out += word;
    word.clear();
  };
  for (std::size_t pos = 0; pos < s.size();) {
    const std::size_t begin = pos;
    const char32_t cp = next_code_point(s, pos);
    if (is_python_space(cp)) {
      flush();
    } else {
      word.append(s, begin, pos - begin);
    }
  }
  flush();
  return out;
}

ClipTokenizer ClipTokenizer::load(const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string vocab_path = (fs::path(dir) / "vocab.json").string();
  const std::string merges_path = (fs::path(dir) / "merges.txt").string();
  const std::string config_path = (fs::path(dir) / "tokenizer_config.json").string();
  const std::string special_path = (fs::path(dir) / "special_tokens_map.json").string();

  ClipTokenizer tok;
  tok.byte_symbols_ = bytes_to_unicode();

  if (!fs::exists(vocab_path)) throw InputError(vocab_path, "file not found");
  const nlohmann::json vocab = io::read_json_file(vocab_path);
  if (!vocab.is_object() || vocab.empty()) throw InputError(vocab_path, "expected a non-empty object token -> id");
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0) {
      throw InputError(vocab_path, "field '" + token + "': expected a non-negative integer id");
    }
    tok.encoder_[token] = id.get<int64_t>();
  }

  if (!fs::exists(merges_path)) throw InputError(merges_path, "file not found");
  {
    // HF: read().strip().split("\n")[1 : 49152 - 256 - 2 + 1]; the first line is always skipped
    // (the "#version" header). Lines without exactly two symbols never match any pair.
    std::istringstream lines(io::read_file(merges_path));
    std::string line;
    std::getline(lines, line);
    constexpr int kMaxMerges = 49152 - 256 - 2;
    for (int rank = 0; rank < kMaxMerges && std::getline(lines, line); ++rank) {
      std::istringstream fields(line);
      std::string first, second, rest;
      if (!(fields >> first >> second) || (fields >> rest)) continue;
      tok.merge_ranks_.emplace(first + " " + second, rank);
    }
  }

  const nlohmann::json config = io::read_json_object_if_exists(config_path);
  const nlohmann::json special_map = io::read_json_object_if_exists(special_path);
  auto special = [&](const std::string& key, const std::string& fallback) {
    std::string value = special_token_content(special_map, key, special_path);
    if (value.empty()) value = special_token_content(config, key, config_path);
    return value.empty() ? fallback : value;
  };
  tok.added_by_id_ = parse_added_tokens_decoder(config, config_path);
  for (const auto& [id, spec] : tok.added_by_id_) tok.added_by_content_[spec.content] = id;
  auto special_id = [&](const std::string& content, const std::string& field) {
    const auto added = tok.added_by_content_.find(content);
    if (added != tok.added_by_content_.end()) return added->second;
    const auto it = tok.encoder_.find(content);
    if (it == tok.encoder_.end()) {
      throw InputError(vocab_path, "special token '" + content + "' (" + field + ") is not in the vocabulary");
    }
    AddedTokenSpec spec;  // HF registers every special token as an added token
    spec.content = content;
    spec.id = it->second;
    spec.special = true;
    tok.added_by_id_[spec.id] = spec;
    tok.added_by_content_[content] = spec.id;
    return spec.id;
  };
  tok.bos_id_ = special_id(special("bos_token", "<|startoftext|>"), "bos_token");
  tok.eos_id_ = special_id(special("eos_token", "<|endoftext|>"), "eos_token");
  tok.pad_id_ = special_id(special("pad_token", "<|endoftext|>"), "pad_token");
  tok.unk_id_ = special_id(special("unk_token", "<|endoftext|>"), "unk_token");

  const auto max_length = config.find("model_max_length");
  if (max_length != config.end() && max_length->is_number()) {
    const double value = max_length->get<double>();
    if (value >= 2 && value <= 1e6) tok.model_max_length_ = static_cast<int>(value);
  }
  return tok;
}

int64_t ClipTokenizer::token_to_id(const std::string& token) const {
  const auto added = added_by_content_.find(token);
  if (added != added_by_content_.end()) return added->second;
  const auto it = encoder_.find(token);
  return it == encoder_.end() ? unk_id_ : it->second;
}

// HF CLIPTokenizer.bpe on a word given as byte symbols; returns its BPE tokens.
std::vector<std::string> ClipTokenizer::bpe(const std::vector<std::string>& symbols) const {
  std::vector<std::string> word = symbols;
  word.back() += "</w>";
  if (word.size() == 1) return word;
  while (true) {
    int best_rank = std::numeric_limits<int>::max();
    std::string best_first, best_second;
    for (std::size_t i = 0; i + 1 < word.size(); ++i) {
      const auto it = merge_ranks_.find(word[i] + " " + word[i + 1]);
      if (it != merge_ranks_.end() && it->second < best_rank) {
        best_rank = it->second;
        best_first = word[i];
        best_second = word[i + 1];
      }
    }
    if (best_rank == std::numeric_limits<int>::max()) break;
    std::vector<std::string> merged;
    for (std::size_t i = 0; i < word.size();) {
      if (i + 1 < word.size() && word[i] == best_first && word[i + 1] == best_second) {
        merged.push_back(best_first + best_second);
        i += 2;
      } else {
        merged.push_back(word[i]);
        ++i;
      }
    }
    word = std::move(merged);
    if (word.size() == 1) break;
  }
  return word;
}

void ClipTokenizer::tokenize_chunk(const std::string& chunk, std::vector<std::string>& out) const {
  const std::string cleaned = clip_basic_clean(chunk);
  for (const std::string& match : clip_pattern().find_all(cleaned)) {
    // HF's bpe cache maps the two special strings to themselves.
    if (match == "<|startoftext|>" || match == "<|endoftext|>") {
      out.push_back(match);
      continue;
    }
    std::vector<std::string> symbols;
    for (unsigned char byte : match) symbols.push_back(byte_symbols_[byte]);
    for (std::string& token : bpe(symbols)) out.push_back(std::move(token));
  }
}

std::vector<std::string> ClipTokenizer::tokenize(const std::string& text) const {
  std::vector<std::string> tokens;
  for (const std::string& part : split_on_added_tokens(text, added_by_content_, added_by_id_)) {
    if (part.empty()) continue;
    if (added_by_content_.count(part)) {
      tokens.push_back(part);
    } else {
      tokenize_chunk(part, tokens);
    }
  }
  return tokens;
}

std::vector<int64_t> ClipTokenizer::encode(const std::string& text) const {
  std::vector<int64_t> ids{bos_id_};
  for (const std::string& token : tokenize(text)) ids.push_back(token_to_id(token));
  ids.push_back(eos_id_);
  return ids;
}

ClipBatch ClipTokenizer::encode_batch(const std::vector<std::string>& texts, int max_length) const {
  if (max_length < 2) throw std::invalid_argument("max_length must be >= 2 (room for bos and eos)");
  std::vector<std::vector<int64_t>> rows;
  std::size_t longest = 0;
  for (const std::string& text : texts) {
    std::vector<int64_t> ids = encode(text);
    if (ids.size() > static_cast<std::size_t>(max_length)) {
      ids.resize(static_cast<std::size_t>(max_length) - 1);  // bos + first max_length-2 text ids
      ids.push_back(eos_id_);
    }
    longest = std::max(longest, ids.size());
    rows.push_back(std::move(ids));
  }
  ClipBatch batch;
  batch.batch = static_cast<int64_t>(rows.size());
  batch.length = static_cast<int64_t>(longest);
  for (const auto& row : rows) {
    batch.input_ids.insert(batch.input_ids.end(), row.begin(), row.end());
    batch.input_ids.insert(batch.input_ids.end(), longest - row.size(), pad_id_);
    batch.attention_mask.insert(batch.attention_mask.end(), row.size(), 1);
    batch.attention_mask.insert(batch.attention_mask.end(), longest - row.size(), 0);
  }
  return batch;
}

}  // namespace p2dpo::text
