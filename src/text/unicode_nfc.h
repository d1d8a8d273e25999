#pragma once
// Unicode NFC (canonical decomposition, canonical ordering, canonical composition, Hangul
// algorithmically), needed by the CLIP tokenizer's BasicTokenizer cleanup
// (unicodedata.normalize("NFC", text)). No library linked here does NFC (PCRE2 and SentencePiece
// do not; ICU/libunistring would), so the tables are generated from Python's unicodedata by
// make_unicode_tables.py (Unicode 14.0.0, the version of Python 3.11 and of PCRE2 10.42).
#include <string>
#include <string_view>

namespace p2dpo::text {

// NFC of UTF-8 text; invalid bytes become U+FFFD first.
std::string nfc(std::string_view utf8);

}  // namespace p2dpo::text
