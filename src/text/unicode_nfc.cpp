#include "text/unicode_nfc.h"

#include <algorithm>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "text/utf8.h"

namespace p2dpo::text {
namespace {

struct CanonicalDecomposition {
  char32_t code_point, first, second;  // second == 0: singleton decomposition
  int primary_composite;               // 1 when NFC composes first+second back into code_point
};
struct CombiningClassRange {
  char32_t first, last;
  int combining_class;
};
#include "text/unicode_tables.inc"

// Hangul syllable constants from the Unicode standard, section 3.12.
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

struct Tables {
  std::unordered_map<char32_t, const CanonicalDecomposition*> decomposition;
  std::unordered_map<uint64_t, char32_t> composition;
  Tables() {
    for (const auto& entry : kCanonicalDecompositions) {
      decomposition[entry.code_point] = &entry;
      if (entry.primary_composite) {
        composition[(uint64_t(entry.first) << 21) | entry.second] = entry.code_point;
      }
    }
  }
};
const Tables& tables() {
  static const Tables instance;
  return instance;
}

int combining_class(char32_t cp) {
  const auto* end = std::end(kCombiningClasses);
  const auto* it = std::upper_bound(std::begin(kCombiningClasses), end, cp,
                                    [](char32_t value, const CombiningClassRange& range) { return value < range.first; });
  if (it == std::begin(kCombiningClasses)) return 0;
  --it;
  return cp <= it->last ? it->combining_class : 0;
}

void decompose(char32_t cp, std::u32string& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const char32_t index = cp - kSBase;
    out.push_back(kLBase + index / kNCount);
    out.push_back(kVBase + (index % kNCount) / kTCount);
    if (index % kTCount != 0) out.push_back(kTBase + index % kTCount);
    return;
  }
  const auto& map = tables().decomposition;
  const auto it = map.find(cp);
  if (it == map.end()) {
    out.push_back(cp);
    return;
  }
  decompose(it->second->first, out);
  if (it->second->second != 0) decompose(it->second->second, out);
}

char32_t compose_pair(char32_t first, char32_t second) {
  if (first >= kLBase && first < kLBase + kLCount && second >= kVBase && second < kVBase + kVCount) {
    return kSBase + ((first - kLBase) * kVCount + (second - kVBase)) * kTCount;
  }
  if (first >= kSBase && first < kSBase + kSCount && (first - kSBase) % kTCount == 0 &&
      second > kTBase && second < kTBase + kTCount) {
    return first + (second - kTBase);
  }
  const auto& map = tables().composition;
  const auto it = map.find((uint64_t(first) << 21) | second);
  return it == map.end() ? 0 : it->second;
}

}  // namespace

std::string nfc(std::string_view utf8) {
  // Fast path: ASCII is always NFC.
  if (std::all_of(utf8.begin(), utf8.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; })) {
    return std::string(utf8);
  }
  std::u32string chars;
  for (std::size_t pos = 0; pos < utf8.size();) decompose(next_code_point(utf8, pos), chars);

  // Canonical ordering: stable sort of each run of non-starters by combining class.
  for (std::size_t i = 0; i < chars.size();) {
    if (combining_class(chars[i]) == 0) {
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < chars.size() && combining_class(chars[j]) != 0) ++j;
    std::stable_sort(chars.begin() + i, chars.begin() + j,
                     [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
    i = j;
  }

  // Canonical composition: a character joins the last starter unless blocked by an intervening
  // character of the same or higher class (or by a starter).
  std::u32string out;
  std::ptrdiff_t starter = -1;
  int last_class = -1;
  for (const char32_t c : chars) {
    const int cls = combining_class(c);
    if (starter >= 0 && (last_class < cls || (last_class == 0 && out.size() == size_t(starter) + 1))) {
      const char32_t composed = compose_pair(out[starter], c);
      if (composed != 0) {
        out[starter] = composed;
        continue;
      }
    }
    if (cls == 0) {
      starter = static_cast<std::ptrdiff_t>(out.size());
      last_class = 0;
    } else {
      last_class = cls;
    }
    out.push_back(c);
  }
  std::string result;
  result.reserve(utf8.size());
  for (const char32_t c : out) append_utf8(result, c);
  return result;
}

}  // namespace p2dpo::text
