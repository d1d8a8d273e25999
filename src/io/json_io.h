#pragma once
// JSON / JSONL reading and writing with errors that name the file, the line and the field.
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/errors.h"

namespace p2dpo::io {

// Parses a whole JSON file. Malformed JSON -> InputError(path, "malformed JSON at line L, column C: ...").
nlohmann::json read_json_file(const std::string& path);

// An optional side file (tokenizer_config.json, special_tokens_map.json, ...): {} when absent,
// InputError when present but not a JSON object.
nlohmann::json read_json_object_if_exists(const std::string& path);

// Parses JSON text that came from `file_for_errors` (same error format as read_json_file).
nlohmann::json parse_json_text(const std::string& text, const std::string& file_for_errors);

// One JSON value per line; blank lines are skipped. Errors name the 1-based line number.
std::vector<nlohmann::json> read_jsonl_file(const std::string& path);

// Writes `value` atomically (temp file + rename), followed by a newline.
void write_json_atomic(const std::string& path, const nlohmann::json& value, int indent = 2);

// Appends one JSON value per line and flushes after each, so a crash loses at most the line being
// written. On open, a truncated last line (no trailing newline, e.g. from a crash mid-write) is cut
// off so the file stays valid JSONL.
class JsonlAppender {
 public:
  JsonlAppender() = default;
  explicit JsonlAppender(const std::string& path) { open(path); }
  ~JsonlAppender();
  JsonlAppender(const JsonlAppender&) = delete;
  JsonlAppender& operator=(const JsonlAppender&) = delete;
  JsonlAppender(JsonlAppender&& other) noexcept;
  JsonlAppender& operator=(JsonlAppender&& other) noexcept;

  void open(const std::string& path);  // creates the file (and parent dirs) if absent
  void write(const nlohmann::json& value);
  void close();
  bool is_open() const { return file_ != nullptr; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

// "number", "string", "object", ... as used in error messages.
const char* json_type_name(const nlohmann::json& value);

namespace detail {
// The JSON type name a C++ type expects, for "expected X, got Y" messages.
template <typename T>
const char* expected_json_type() {
  if constexpr (std::is_same_v<T, bool>) return "boolean";
  else if constexpr (std::is_integral_v<T>) return "integer";
  else if constexpr (std::is_floating_point_v<T>) return "number";
  else if constexpr (std::is_same_v<T, std::string>) return "string";
  else if constexpr (std::is_same_v<T, nlohmann::json>) return "any";
  else return "array or object";
}

std::string field_label(const std::string& context, const std::string& key);

// Converts `value` to T with strict type checks (no string->number, no float->int truncation,
// no bool->number, integers range-checked). Throws InputError(file, "field 'label': ...").
template <typename T>
T convert_field(const nlohmann::json& value, const std::string& label, const std::string& file) {
  auto type_error = [&]() {
    return InputError(file, "field '" + label + "': expected " + expected_json_type<T>() + ", got " +
                                json_type_name(value));
  };
  if constexpr (std::is_same_v<T, nlohmann::json>) {
    return value;
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!value.is_boolean()) throw type_error();
    return value.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    if (value.is_number_unsigned()) {
      auto v = value.get<std::uint64_t>();
      if (v > static_cast<std::uint64_t>(std::numeric_limits<T>::max()))
        throw InputError(file, "field '" + label + "': value " + std::to_string(v) + " out of range");
      return static_cast<T>(v);
    }
    if (value.is_number_integer()) {
      auto v = value.get<std::int64_t>();
      if (v < static_cast<std::int64_t>(std::numeric_limits<T>::min()) ||
          (v > 0 && static_cast<std::uint64_t>(v) > static_cast<std::uint64_t>(std::numeric_limits<T>::max())))
        throw InputError(file, "field '" + label + "': value " + std::to_string(v) + " out of range");
      return static_cast<T>(v);
    }
    throw type_error();
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!value.is_number()) throw type_error();
    return value.get<T>();
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!value.is_string()) throw type_error();
    return value.get<std::string>();
  } else {
    try {
      return value.get<T>();
    } catch (const nlohmann::json::exception& e) {
      throw InputError(file, "field '" + label + "': " + e.what());
    }
  }
}
}  // namespace detail

// obj[key] as T. Missing key (or obj not an object) -> InputError(file, "missing required field 'context.key'");
// wrong type -> InputError(file, "field 'context.key': expected number, got string").
template <typename T>
T get_required(const nlohmann::json& obj, const std::string& key, const std::string& file,
               const std::string& context) {
  const std::string label = detail::field_label(context, key);
  if (!obj.is_object()) {
    throw InputError(file, "'" + (context.empty() ? std::string("(root)") : context) +
                               "': expected object, got " + json_type_name(obj));
  }
  auto it = obj.find(key);
  if (it == obj.end()) throw InputError(file, "missing required field '" + label + "'");
  return detail::convert_field<T>(*it, label, file);
}

// obj[key] as T, or `fallback` when the key is absent or null (HF writes null for "use the default").
template <typename T>
T get_optional(const nlohmann::json& obj, const std::string& key, const T& fallback,
               const std::string& file, const std::string& context) {
  if (!obj.is_object()) return fallback;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  return detail::convert_field<T>(*it, detail::field_label(context, key), file);
}

}  // namespace p2dpo::io
