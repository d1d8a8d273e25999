#include "io/json_io.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "io/atomic_file.h"

namespace p2dpo::io {

namespace {

// Deeper nesting than this is never legitimate in configs or headers, and copying or printing a
// deeply nested value recurses, so refuse it up front.
constexpr int kMaxJsonDepth = 128;

// "[json.exception.parse_error.101] parse error at line 1, column 2: ..." -> "parse error at line ...".
std::string strip_json_exception_prefix(const std::string& what) {
  auto pos = what.find("] ");
  if (what.rfind("[json.exception.", 0) == 0 && pos != std::string::npos) return what.substr(pos + 2);
  return what;
}

}  // namespace

const char* json_type_name(const nlohmann::json& value) {
  switch (value.type()) {
    case nlohmann::json::value_t::null: return "null";
    case nlohmann::json::value_t::boolean: return "boolean";
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned: return "integer";
    case nlohmann::json::value_t::number_float: return "number";
    case nlohmann::json::value_t::string: return "string";
    case nlohmann::json::value_t::array: return "array";
    case nlohmann::json::value_t::object: return "object";
    case nlohmann::json::value_t::binary: return "binary";
    case nlohmann::json::value_t::discarded: return "discarded";
  }
  return "unknown";
}

namespace detail {
std::string field_label(const std::string& context, const std::string& key) {
  return context.empty() ? key : context + "." + key;
}
}  // namespace detail

nlohmann::json parse_json_text(const std::string& text, const std::string& file_for_errors) {
  auto limit_depth = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json&) {
    if ((event == nlohmann::json::parse_event_t::object_start ||
         event == nlohmann::json::parse_event_t::array_start) &&
        depth >= kMaxJsonDepth) {
      throw InputError(file_for_errors,
                       "malformed JSON: nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    }
    return true;
  };
  try {
    return nlohmann::json::parse(text, limit_depth);
  } catch (const nlohmann::json::exception& e) {
    // parse_error, and also out_of_range for numbers like 1e999 (found by fuzzing).
    throw InputError(file_for_errors, "malformed JSON: " + strip_json_exception_prefix(e.what()));
  }
}

nlohmann::json read_json_file(const std::string& path) {
  return parse_json_text(read_file(path), path);
}

std::vector<nlohmann::json> read_jsonl_file(const std::string& path) {
  const std::string text = read_file(path);
  std::vector<nlohmann::json> rows;
  size_t line_number = 0;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    ++line_number;
    std::string line = text.substr(start, end - start);
    start = end + 1;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      rows.push_back(parse_json_text(line, path));
    } catch (const InputError& e) {
      // Re-label with the line number; the inner message already has the column.
      std::string problem = std::string(e.what()).substr(path.size() + 2);
      throw InputError(path, "line " + std::to_string(line_number) + ": " + problem);
    }
  }
  return rows;
}

void write_json_atomic(const std::string& path, const nlohmann::json& value, int indent) {
  // Replace invalid UTF-8 (e.g. a model's partial multi-byte token) instead of failing the write.
  write_file_atomic(path, value.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

JsonlAppender::~JsonlAppender() { close(); }

JsonlAppender::JsonlAppender(JsonlAppender&& other) noexcept
    : path_(std::move(other.path_)), file_(other.file_) {
  other.file_ = nullptr;
}

JsonlAppender& JsonlAppender::operator=(JsonlAppender&& other) noexcept {
  if (this != &other) {
    close();
    path_ = std::move(other.path_);
    file_ = other.file_;
    other.file_ = nullptr;
  }
  return *this;
}

void JsonlAppender::open(const std::string& path) {
  namespace fs = std::filesystem;
  close();
  path_ = path;
  fs::path parent = fs::path(path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    fs::create_directories(parent, ec);
    if (ec) throw InputError(path, "cannot create parent directory: " + ec.message());
  }
  std::FILE* f = std::fopen(path.c_str(), "a+b");
  if (!f) throw InputError(path, std::string("cannot open for appending: ") + std::strerror(errno));

  // Cut a partial last line (everything after the last '\n') left by a crash mid-write.
  if (std::fseek(f, 0, SEEK_END) != 0) {
    std::fclose(f);
    throw InputError(path, "cannot seek");
  }
  long size = std::ftell(f);
  long keep = size;
  while (keep > 0) {
    if (std::fseek(f, keep - 1, SEEK_SET) != 0) break;
    if (std::fgetc(f) == '\n') break;
    --keep;
  }
  if (keep != size) {
    // A complete value merely missing its newline (e.g. written by hand) is kept, not cut.
    std::string tail(static_cast<size_t>(size - keep), '\0');
    bool complete = std::fseek(f, keep, SEEK_SET) == 0 &&
                    std::fread(tail.data(), 1, tail.size(), f) == tail.size() && nlohmann::json::accept(tail);
    if (complete) {
      std::fseek(f, 0, SEEK_END);
      if (std::fputc('\n', f) == EOF || std::fflush(f) != 0) {
        std::fclose(f);
        throw InputError(path, "cannot append newline after the last line");
      }
      file_ = f;
      return;
    }
    if (::ftruncate(::fileno(f), keep) != 0) {
      int err = errno;
      std::fclose(f);
      throw InputError(path, std::string("cannot truncate partial last line: ") + std::strerror(err));
    }
  }
  file_ = f;
}

void JsonlAppender::write(const nlohmann::json& value) {
  if (!file_) throw std::logic_error("JsonlAppender::write called before open");
  const std::string line = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0) {
    throw InputError(path_, std::string("write failed: ") + std::strerror(errno));
  }
}

void JsonlAppender::close() {
  if (file_) {
    std::fclose(file_);
    file_ = nullptr;
  }
}

nlohmann::json read_json_object_if_exists(const std::string& path) {
  if (!std::filesystem::exists(path)) return nlohmann::json::object();
  nlohmann::json value = read_json_file(path);
  if (!value.is_object()) throw InputError(path, "expected a JSON object at the top level");
  return value;
}

}  // namespace p2dpo::io
