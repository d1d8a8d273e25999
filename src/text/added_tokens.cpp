#include "text/added_tokens.h"

#include "io/errors.h"
#include "text/utf8.h"

namespace p2dpo::text {

std::vector<std::string> split_on_added_tokens(const std::string& text,
                                               const std::map<std::string, int64_t>& by_content,
                                               const std::map<int64_t, AddedTokenSpec>& by_id) {
  std::vector<std::string> parts;
  std::size_t chunk_start = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t best_len = 0;
    for (const auto& [content, id] : by_content) {
      if (content.size() > best_len && text.compare(pos, content.size(), content) == 0) {
        best_len = content.size();
      }
    }
    if (best_len == 0) {
      ++pos;
      continue;
    }
    if (pos > chunk_start) parts.push_back(text.substr(chunk_start, pos - chunk_start));
    parts.push_back(text.substr(pos, best_len));
    pos += best_len;
    chunk_start = pos;
  }
  if (chunk_start < text.size()) parts.push_back(text.substr(chunk_start));

  for (std::size_t i = 0; i < parts.size(); ++i) {
    const auto found = by_content.find(parts[i]);
    if (found == by_content.end()) continue;
    const auto spec = by_id.find(found->second);
    if (spec == by_id.end()) continue;
    const AddedTokenSpec& token = spec->second;
    // As in HF, the single_word checks look at the neighbours as they were before stripping.
    const std::string left = i > 0 ? parts[i - 1] : std::string();
    const std::string right = i + 1 < parts.size() ? parts[i + 1] : std::string();
    if (token.rstrip && !right.empty()) parts[i + 1] = python_lstrip(right);
    if (token.lstrip && !left.empty()) parts[i - 1] = python_rstrip(left);
    if (token.single_word && !left.empty() && left.back() != ' ') {
      parts[i - 1] += parts[i];
      parts[i].clear();
    } else if (token.single_word && !right.empty() && right.front() != ' ') {
      parts[i + 1] = parts[i] + parts[i + 1];
      parts[i].clear();
    }
  }
  return parts;
}

namespace {
bool optional_bool(const nlohmann::json& object, const char* key, const std::string& field,
                   const std::string& file) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return false;
  if (!it->is_boolean()) throw InputError(file, "field '" + field + "." + key + "': expected boolean");
  return it->get<bool>();
}
}  // namespace

std::map<int64_t, AddedTokenSpec> parse_added_tokens_decoder(const nlohmann::json& config,
                                                             const std::string& file) {
  std::map<int64_t, AddedTokenSpec> result;
  const auto it = config.find("added_tokens_decoder");
  if (it == config.end() || it->is_null()) return result;
  if (!it->is_object()) throw InputError(file, "field 'added_tokens_decoder': expected object");
  for (const auto& [key, value] : it->items()) {
    const std::string field = "added_tokens_decoder." + key;
    AddedTokenSpec spec;
    try {
      std::size_t used = 0;
      spec.id = std::stoll(key, &used);
      if (used != key.size() || spec.id < 0) throw std::invalid_argument(key);
    } catch (const std::exception&) {
      throw InputError(file, "field '" + field + "': key is not a token id");
    }
    if (!value.is_object() || !value.contains("content") || !value["content"].is_string()) {
      throw InputError(file, "field '" + field + "': expected an object with string 'content'");
    }
    spec.content = value["content"].get<std::string>();
    if (spec.content.empty()) throw InputError(file, "field '" + field + ".content': empty token");
    spec.lstrip = optional_bool(value, "lstrip", field, file);
    spec.rstrip = optional_bool(value, "rstrip", field, file);
    spec.single_word = optional_bool(value, "single_word", field, file);
    spec.special = optional_bool(value, "special", field, file);
    result[spec.id] = spec;
  }
  return result;
}

std::string special_token_content(const nlohmann::json& config, const std::string& key,
                                  const std::string& file) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  throw InputError(file, "field '" + key + "': expected a string or an object with string 'content'");
}

}  // namespace p2dpo::text
