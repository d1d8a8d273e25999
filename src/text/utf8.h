#pragma once
// Small UTF-8 helpers shared by the tokenizers: code point iteration that never throws (invalid
// bytes read as U+FFFD, as Python's errors="replace" would) and Python's notion of whitespace,
// which HF's str.strip()/str.split() calls use.
#include <cstddef>
#include <string>
#include <string_view>

namespace p2dpo::text {

// Reads the code point at `pos` and advances `pos`. An invalid or truncated sequence yields U+FFFD
// and advances by one byte.
char32_t next_code_point(std::string_view s, std::size_t& pos);

void append_utf8(std::string& out, char32_t cp);

// Re-encodes `s` so that every invalid byte becomes U+FFFD (PCRE2 in UTF mode rejects bad UTF-8).
std::string sanitize_utf8(std::string_view s);

// Python's str.isspace() for one code point.
bool is_python_space(char32_t cp);

// Python's str.lstrip() / str.rstrip() with no argument.
std::string python_lstrip(std::string_view s);
std::string python_rstrip(std::string_view s);

}  // namespace p2dpo::text
