#include "world/bpe_train.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <filesystem>
#include <map>
#include <set>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "io/errors.h"
#include "io/json_io.h"
#include "text/clip_tokenizer.h"
#include "text/utf8.h"

namespace p2dpo::world {
namespace {

const char* const kBos = "<|startoftext|>";
const char* const kEos = "<|endoftext|>";

// GPT-2 / CLIP bytes_to_unicode in the order OpenAI lists the vocabulary: the printable bytes
// ('!'..'~', '¡'..'¬', '®'..'ÿ') in byte order, then the other 68 bytes mapped to U+0100 + n.
// Returns (byte, symbol) pairs in that order.
std::vector<std::pair<int, std::string>> byte_symbols_in_vocab_order() {
  std::vector<std::pair<int, std::string>> printable, others;
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool is_printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    std::string symbol;
    text::append_utf8(symbol, is_printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + extra++));
    (is_printable ? printable : others).emplace_back(b, symbol);
  }
  printable.insert(printable.end(), others.begin(), others.end());
  return printable;
}

const std::vector<std::string>& byte_to_symbol() {
  static const std::vector<std::string> table = [] {
    std::vector<std::string> t(256);
    for (const auto& [b, s] : byte_symbols_in_vocab_order()) t[static_cast<size_t>(b)] = s;
    return t;
  }();
  return table;
}

// The pattern of text/clip_tokenizer.cpp (HF tokenization_clip.py), compiled the same way.
std::vector<std::string> clip_regex_words(const std::string& subject) {
  static pcre2_code* code = [] {
    const char* pattern =
        R"(<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+)";
    int error = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* c = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED,
                                  PCRE2_UTF | PCRE2_UCP | PCRE2_CASELESS, &error, &offset, nullptr);
    if (c == nullptr) throw std::logic_error("bad built-in CLIP regex");
    return c;
  }();
  std::vector<std::string> words;
  pcre2_match_data* data = pcre2_match_data_create_from_pattern(code, nullptr);
  PCRE2_SIZE start = 0;
  while (start < subject.size()) {
    const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(), start, 0,
                               data, nullptr);
    if (rc < 0) break;
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(data);
    if (ov[1] == ov[0]) {
      start = ov[1] + 1;
      continue;
    }
    words.emplace_back(subject, ov[0], ov[1] - ov[0]);
    start = ov[1];
  }
  pcre2_match_data_free(data);
  return words;
}

using Symbols = std::vector<std::string>;

}  // namespace

std::vector<std::string> clip_pretokenize(const std::string& text) {
  return clip_regex_words(text::clip_basic_clean(text));
}

ClipBpeVocabulary learn_clip_bpe(const std::vector<std::string>& texts, int max_merges, int min_pair_count) {
  // Word counts; each word as byte symbols with "</w>" on the last one.
  std::map<Symbols, int64_t> words;
  for (const std::string& t : texts) {
    for (const std::string& w : clip_pretokenize(t)) {
      if (w == kBos || w == kEos) continue;  // never split: the tokenizer keeps them whole
      Symbols symbols;
      for (unsigned char byte : w) symbols.push_back(byte_to_symbol()[byte]);
      symbols.back() += "</w>";
      ++words[symbols];
    }
  }

  ClipBpeVocabulary out;
  for (const auto& [b, s] : byte_symbols_in_vocab_order()) out.tokens.push_back(s);
  for (size_t i = 0; i < 256; ++i) out.tokens.push_back(out.tokens[i] + "</w>");
  std::set<std::string> known(out.tokens.begin(), out.tokens.end());

  std::vector<std::pair<Symbols, int64_t>> corpus(words.begin(), words.end());
  for (int m = 0; m < max_merges; ++m) {
    std::map<std::pair<std::string, std::string>, int64_t> pairs;  // ordered: ties -> smallest pair
    for (const auto& [symbols, count] : corpus) {
      for (size_t i = 0; i + 1 < symbols.size(); ++i) pairs[{symbols[i], symbols[i + 1]}] += count;
    }
    const std::pair<std::string, std::string>* best = nullptr;
    int64_t best_count = 0;
    for (const auto& [pair, count] : pairs) {
      if (count > best_count) {
        best = &pair;
        best_count = count;
      }
    }
    if (best == nullptr || best_count < min_pair_count) break;
    const auto merge = *best;
    const std::string merged = merge.first + merge.second;
    out.merges.push_back(merge);
    // Two different pairs can spell the same token ("ab"+"c", "a"+"bc"): one id per string.
    if (known.insert(merged).second) out.tokens.push_back(merged);
    for (auto& [symbols, count] : corpus) {
      Symbols next;
      for (size_t i = 0; i < symbols.size();) {
        if (i + 1 < symbols.size() && symbols[i] == merge.first && symbols[i + 1] == merge.second) {
          next.push_back(merged);
          i += 2;
        } else {
          next.push_back(symbols[i]);
          ++i;
        }
      }
      symbols = std::move(next);
    }
  }
  out.bos_id = static_cast<int64_t>(out.tokens.size());
  out.tokens.push_back(kBos);
  out.eos_id = static_cast<int64_t>(out.tokens.size());
  out.tokens.push_back(kEos);
  return out;
}

void write_clip_tokenizer_files(const std::string& dir, const ClipBpeVocabulary& v, int model_max_length) {
  namespace fs = std::filesystem;
  nlohmann::json vocab = nlohmann::json::object();
  for (size_t i = 0; i < v.tokens.size(); ++i) vocab[v.tokens[i]] = static_cast<int64_t>(i);
  std::string merges = "#version: 0.2\n";
  for (const auto& [a, b] : v.merges) merges += a + " " + b + "\n";

  auto special = [](const char* content) {
    return nlohmann::json{{"content", content}, {"lstrip", false}, {"normalized", true},
                          {"rstrip", false},    {"single_word", false}};
  };
  auto decoder_entry = [&](const char* content) {
    auto e = special(content);
    e["special"] = true;
    return e;
  };
  // The keys HF 4.45's CLIPTokenizer.save_pretrained writes (compare tests/data/clip-tiny-s0).
  nlohmann::json config = {
      {"added_tokens_decoder",
       {{std::to_string(v.bos_id), decoder_entry(kBos)}, {std::to_string(v.eos_id), decoder_entry(kEos)}}},
      {"bos_token", kBos},
      {"clean_up_tokenization_spaces", false},
      {"eos_token", kEos},
      {"errors", "replace"},
      {"model_max_length", model_max_length},
      {"pad_token", kEos},
      {"processor_class", "CLIPProcessor"},
      {"tokenizer_class", "CLIPTokenizer"},
      {"unk_token", kEos},
  };
  nlohmann::json special_map = {
      {"bos_token", special(kBos)}, {"eos_token", special(kEos)}, {"pad_token", kEos}, {"unk_token", special(kEos)}};

  // ensure_ascii=False as HF writes vocab.json; nlohmann dumps UTF-8 as is.
  io::write_file_atomic((fs::path(dir) / "vocab.json").string(), vocab.dump(2) + "\n");
  io::write_file_atomic((fs::path(dir) / "merges.txt").string(), merges);
  io::write_json_atomic((fs::path(dir) / "tokenizer_config.json").string(), config);
  io::write_json_atomic((fs::path(dir) / "special_tokens_map.json").string(), special_map);
}

}  // namespace p2dpo::world
