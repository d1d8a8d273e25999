#include "text/llama_tokenizer.h"

#include <filesystem>
#include <stdexcept>


#include "io/atomic_file.h"
#include "io/errors.h"
#include "io/json_io.h"
#include "text/sentencepiece_model.h"

namespace p2dpo::text {
namespace {

const std::string kSpaceSymbol = "\xE2\x96\x81";  // "▁" U+2581, SentencePiece's space

// HF's get_spm_processor (legacy=False) loads the model with normalizer_spec.add_dummy_prefix
// turned off; SentencePieceModel::set_add_dummy_prefix(false) does the same.

bool optional_bool(const nlohmann::json& config, const char* key, bool fallback,
                   const std::string& file) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) throw InputError(file, std::string("field '") + key + "': expected boolean");
  return it->get<bool>();
}

std::vector<std::string> string_list(const nlohmann::json& config, const char* key,
                                     const std::string& file) {
  std::vector<std::string> result;
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return result;
  if (!it->is_array()) throw InputError(file, std::string("field '") + key + "': expected array");
  for (std::size_t i = 0; i < it->size(); ++i) {
    const auto& entry = (*it)[i];
    if (entry.is_string()) {
      result.push_back(entry.get<std::string>());
    } else if (entry.is_object() && entry.contains("content") && entry["content"].is_string()) {
      result.push_back(entry["content"].get<std::string>());
    } else {
      throw InputError(file, std::string("field '") + key + "[" + std::to_string(i) +
                                 "]': expected a string or an object with string 'content'");
    }
  }
  return result;
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (std::size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size())) {
    s.replace(pos, from.size(), to);
  }
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

LlamaTokenizer LlamaTokenizer::load(const std::string& model_dir) {
  namespace fs = std::filesystem;
  const std::string model_path = (fs::path(model_dir) / "tokenizer.model").string();
  const std::string config_path = (fs::path(model_dir) / "tokenizer_config.json").string();
  const std::string added_path = (fs::path(model_dir) / "added_tokens.json").string();
  const std::string special_path = (fs::path(model_dir) / "special_tokens_map.json").string();

  LlamaTokenizer tok;
  const nlohmann::json config = io::read_json_object_if_exists(config_path);
  const nlohmann::json special_map = io::read_json_object_if_exists(special_path);
  const nlohmann::json added_json = io::read_json_object_if_exists(added_path);

  // HF: legacy=None -> True (with a warning), so an absent flag means the per-chunk dummy prefix.
  tok.legacy_ = optional_bool(config, "legacy", true, config_path);
  tok.add_prefix_space_ = optional_bool(config, "add_prefix_space", true, config_path);
  tok.add_bos_token_ = optional_bool(config, "add_bos_token", true, config_path);
  tok.add_eos_token_ = optional_bool(config, "add_eos_token", false, config_path);
  tok.clean_up_tokenization_spaces_ =
      optional_bool(config, "clean_up_tokenization_spaces", false, config_path);

  if (!fs::exists(model_path)) throw InputError(model_path, "file not found");
  std::string serialized = io::read_file(model_path);
  auto model = std::make_shared<SentencePieceModel>(SentencePieceModel::parse(serialized, model_path));
  if (!tok.legacy_) model->set_add_dummy_prefix(false);
  auto sp = model;
  tok.sp_ = model;
  const int64_t sp_size = sp->size();

  // Special tokens: special_tokens_map.json overrides tokenizer_config.json (as from_pretrained).
  auto special = [&](const std::string& key, const std::string& fallback) {
    std::string value = special_token_content(special_map, key, special_path);
    if (value.empty()) value = special_token_content(config, key, config_path);
    return value.empty() ? fallback : value;
  };
  tok.unk_token_ = special("unk_token", "<unk>");
  const std::string bos_token = special("bos_token", "<s>");
  const std::string eos_token = special("eos_token", "</s>");
  const std::string pad_token = special("pad_token", "");
  std::vector<std::string> additional = string_list(special_map, "additional_special_tokens", special_path);
  if (additional.empty()) additional = string_list(config, "additional_special_tokens", config_path);

  // Added tokens: tokenizer_config.json's added_tokens_decoder, then added_tokens.json, then any
  // special token not yet present (HF adds those to _added_tokens_decoder too).
  tok.added_by_id_ = parse_added_tokens_decoder(config, config_path);
  for (const auto& [id, spec] : tok.added_by_id_) tok.added_by_content_[spec.content] = id;
  for (const auto& [content, id_json] : added_json.items()) {
    if (!id_json.is_number_integer() || id_json.get<int64_t>() < 0) {
      throw InputError(added_path, "field '" + content + "': expected a non-negative integer id");
    }
    const int64_t id = id_json.get<int64_t>();
    if (tok.added_by_content_.count(content) || tok.added_by_id_.count(id)) continue;
    AddedTokenSpec spec;
    spec.content = content;
    spec.id = id;
    tok.added_by_id_[id] = spec;
    tok.added_by_content_[content] = id;
  }
  std::vector<std::string> special_tokens = {bos_token, eos_token, tok.unk_token_};
  if (!pad_token.empty()) special_tokens.push_back(pad_token);
  for (const char* key : {"sep_token", "cls_token", "mask_token"}) {
    const std::string value = special(key, "");
    if (!value.empty()) special_tokens.push_back(value);
  }
  special_tokens.insert(special_tokens.end(), additional.begin(), additional.end());
  for (const std::string& content : special_tokens) {
    tok.all_special_tokens_.insert(content);
    if (tok.added_by_content_.count(content)) {
      tok.added_by_id_[tok.added_by_content_[content]].special = true;
      continue;
    }
    int64_t id = sp->piece_to_id(content);
    if (id == sp->unk_id() && content != sp->id_to_piece(sp->unk_id())) {
      // Not a SentencePiece piece: HF appends it after the current vocabulary.
      id = std::max<int64_t>(sp_size, tok.added_by_id_.empty() ? 0 : tok.added_by_id_.rbegin()->first + 1);
    }
    AddedTokenSpec spec;
    spec.content = content;
    spec.id = id;
    spec.special = true;
    tok.added_by_id_[id] = spec;
    tok.added_by_content_[content] = id;
  }
  tok.additional_special_tokens_.insert(additional.begin(), additional.end());
  for (const std::string& content : tok.all_special_tokens_) {
    tok.all_special_ids_.insert(tok.piece_to_id(content));
  }

  tok.unk_id_ = tok.piece_to_id(tok.unk_token_);
  tok.bos_id_ = tok.piece_to_id(bos_token);
  tok.eos_id_ = tok.piece_to_id(eos_token);
  tok.pad_id_ = pad_token.empty() ? -1 : tok.piece_to_id(pad_token);

  // unk_token encoded as plain text by the (dummy-prefix-free) model: HF's unk_token_length.
  std::vector<std::string> unk_pieces;
  unk_pieces = sp->encode(tok.unk_token_);
  tok.unk_token_length_ = unk_pieces.size();

  // len(tokenizer) = distinct strings over the base pieces and the added tokens.
  std::set<std::string> vocab;
  for (int64_t id = 0; id < sp_size; ++id) {
    const auto added = tok.added_by_id_.find(id);
    vocab.insert(added != tok.added_by_id_.end() ? added->second.content : sp->id_to_piece(static_cast<int>(id)));
  }
  for (const auto& [content, id] : tok.added_by_content_) vocab.insert(content);
  tok.size_ = vocab.size();
  return tok;
}

size_t LlamaTokenizer::base_vocab_size() const { return static_cast<size_t>(sp_->size()); }

int64_t LlamaTokenizer::piece_to_id(const std::string& piece) const {
  const auto added = added_by_content_.find(piece);
  if (added != added_by_content_.end()) return added->second;
  return sp_->piece_to_id(piece);
}

std::optional<int64_t> LlamaTokenizer::token_id(const std::string& token) const {
  const int64_t id = piece_to_id(token);
  if (id == sp_->unk_id() && token != unk_token_ && token != sp_->id_to_piece(sp_->unk_id())) {
    return std::nullopt;
  }
  return id;
}

std::string LlamaTokenizer::id_to_piece(int64_t id) const {
  const auto added = added_by_id_.find(id);
  if (added != added_by_id_.end()) return added->second.content;
  if (id < 0 || id >= sp_->size()) {
    throw std::out_of_range("token id " + std::to_string(id) + " is not in the tokenizer");
  }
  return sp_->id_to_piece(static_cast<int>(id));
}

std::vector<std::string> LlamaTokenizer::encode_chunk(const std::string& chunk) const {
  std::vector<std::string> pieces;
  if (legacy_ || !(starts_with(chunk, kSpaceSymbol) || starts_with(chunk, " "))) {
    return sp_->encode(chunk);
  }
  // Without the dummy prefix SentencePiece would drop a leading space; encoding after unk_token
  // keeps it, then the unk_token pieces are removed (HF's _tokenize).
  pieces = sp_->encode(unk_token_ + chunk);
  if (pieces.size() >= unk_token_length_) {
    pieces.erase(pieces.begin(), pieces.begin() + static_cast<std::ptrdiff_t>(unk_token_length_));
  }
  return pieces;
}

std::vector<std::string> LlamaTokenizer::tokenize(const std::string& input) const {
  if (input.empty()) return {};
  std::string text = input;
  if (!legacy_) {
    replace_all(text, kSpaceSymbol, " ");
    if (add_prefix_space_) text = kSpaceSymbol + text;
  }
  std::vector<std::string> tokens;
  for (const std::string& part : split_on_added_tokens(text, added_by_content_, added_by_id_)) {
    if (part.empty()) continue;
    if (added_by_content_.count(part)) {
      tokens.push_back(part);
    } else {
      for (std::string& piece : encode_chunk(part)) tokens.push_back(std::move(piece));
    }
  }
  if (!legacy_ && tokens.size() > 1 && tokens[0] == kSpaceSymbol && all_special_tokens_.count(tokens[1])) {
    tokens.erase(tokens.begin());
  }
  return tokens;
}

std::vector<int64_t> LlamaTokenizer::encode(const std::string& text, bool add_bos) const {
  std::vector<int64_t> ids;
  if (add_bos && add_bos_token_) ids.push_back(bos_id_);
  for (const std::string& token : tokenize(text)) ids.push_back(piece_to_id(token));
  if (add_bos && add_eos_token_) ids.push_back(eos_id_);
  return ids;
}

// HF LlamaTokenizer.convert_tokens_to_string.
std::string LlamaTokenizer::tokens_to_string(std::vector<std::string> tokens) const {
  if (tokens.empty()) return "";
  if (add_prefix_space_ && starts_with(tokens[0], kSpaceSymbol)) tokens[0].erase(0, kSpaceSymbol.size());
  std::string out;
  std::vector<std::string> current;
  bool prev_is_special = false;
  auto sp_decode = [&](const std::vector<std::string>& pieces) {
    return sp_->decode(pieces);
  };
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    const std::string& token = tokens[i];
    if (all_special_tokens_.count(token)) {
      if (!prev_is_special && i != 0 && legacy_) out += " ";
      out += sp_decode(current) + token;
      prev_is_special = true;
      current.clear();
    } else {
      if (prev_is_special && i == 1 && add_prefix_space_ && !starts_with(token, kSpaceSymbol)) out += " ";
      current.push_back(token);
      prev_is_special = false;
    }
  }
  out += sp_decode(current);
  return out;
}

std::string LlamaTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  const int64_t sp_size = sp_->size();
  std::vector<std::string> tokens;
  for (const int64_t id : ids) {
    if (skip_special_tokens && all_special_ids_.count(id)) continue;
    const auto added = added_by_id_.find(id);
    if (added != added_by_id_.end()) {
      tokens.push_back(added->second.content);
    } else if (id >= 0 && id < sp_size) {
      tokens.push_back(sp_->id_to_piece(static_cast<int>(id)));
    }  // else: no such token (LM padding rows); skipped, see the header.
  }

  // Added tokens that are not special, and additional special tokens past the base vocabulary, are
  // kept out of SentencePiece decoding and joined with spaces (HF's legacy_added_tokens).
  auto is_legacy_added = [&](const std::string& token) {
    const auto it = added_by_content_.find(token);
    if (it == added_by_content_.end()) return false;
    if (!all_special_tokens_.count(token)) return true;
    return additional_special_tokens_.count(token) && it->second >= sp_size;
  };
  std::vector<std::string> sub_texts;
  std::vector<std::string> current;
  for (const std::string& token : tokens) {
    if (skip_special_tokens && all_special_tokens_.count(token)) continue;
    if (is_legacy_added(token)) {
      if (!current.empty()) {
        std::string text = tokens_to_string(current);
        if (!text.empty()) sub_texts.push_back(std::move(text));
        current.clear();
      }
      sub_texts.push_back(token);
    } else {
      current.push_back(token);
    }
  }
  if (!current.empty()) sub_texts.push_back(tokens_to_string(current));

  std::string text;
  for (std::size_t i = 0; i < sub_texts.size(); ++i) {
    if (i > 0) text += " ";  // spaces_between_special_tokens=True (PreTrainedTokenizer._decode default)
    text += sub_texts[i];
  }
  if (clean_up_tokenization_spaces_) {
    for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
             {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"},
             {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}}) {
      replace_all(text, from, to);
    }
  }
  return text;
}

}  // namespace p2dpo::text
