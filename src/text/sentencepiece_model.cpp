#include "text/sentencepiece_model.h"

#include <cstring>
#include <functional>
#include <map>
#include <queue>

#include "io/errors.h"

namespace p2dpo::text {

namespace {

const std::string kSpace = "\xE2\x96\x81";  // U+2581

// Minimal protobuf wire-format reader: bounds-checked, never reads past `end`.
struct Reader {
  const uint8_t* p;
  const uint8_t* end;
  const std::string& file;
  [[noreturn]] void fail(const std::string& what) const { throw InputError(file, "not a valid SentencePiece model: " + what); }
  bool done() const { return p >= end; }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p >= end) fail("truncated varint");
      uint8_t b = *p++;
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    fail("varint too long");
  }
  std::string bytes() {
    uint64_t n = varint();
    if (n > static_cast<uint64_t>(end - p)) fail("length beyond the end of the data");
    std::string s(reinterpret_cast<const char*>(p), n);
    p += n;
    return s;
  }
  float fixed32_float() {
    if (end - p < 4) fail("truncated fixed32");
    uint32_t u = static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
                 (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
    p += 4;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  void skip(int wire) {
    switch (wire) {
      case 0: varint(); break;
      case 1: if (end - p < 8) fail("truncated fixed64"); p += 8; break;
      case 2: bytes(); break;
      case 5: if (end - p < 4) fail("truncated fixed32"); p += 4; break;
      default: fail("unsupported wire type " + std::to_string(wire));
    }
  }
};

size_t utf8_len(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) return 2;
  if ((c & 0xF0) == 0xE0) return 3;
  if ((c & 0xF8) == 0xF0) return 4;
  return 1;
}

// Decodes one UTF-8 character at s[i]; returns its length, or 0 if invalid (SentencePiece then
// emits U+FFFD for that single byte).
size_t valid_utf8_at(const std::string& s, size_t i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  size_t n = utf8_len(c);
  if (n == 1) return c < 0x80 ? 1 : 0;
  if (i + n > s.size()) return 0;
  uint32_t cp = c & (0x7F >> n);
  for (size_t k = 1; k < n; ++k) {
    unsigned char d = static_cast<unsigned char>(s[i + k]);
    if ((d & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (d & 0x3F);
  }
  static const uint32_t min_cp[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < min_cp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

bool parse_byte_piece(const std::string& piece, unsigned char* out) {
  if (piece.size() != 6 || piece.compare(0, 3, "<0x") != 0 || piece[5] != '>') return false;
  unsigned v = 0;
  for (int i = 3; i < 5; ++i) {
    char c = piece[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= c - '0';
    else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
    else return false;
  }
  *out = static_cast<unsigned char>(v);
  return true;
}

}  // namespace

SentencePieceModel SentencePieceModel::parse(const std::string& bytes, const std::string& file) {
  SentencePieceModel m;
  Reader r{reinterpret_cast<const uint8_t*>(bytes.data()), reinterpret_cast<const uint8_t*>(bytes.data()) + bytes.size(), file};
  int model_type = 1;  // UNIGRAM by default in the proto
  std::string charsmap;
  while (!r.done()) {
    uint64_t tag = r.varint();
    const int field = static_cast<int>(tag >> 3), wire = static_cast<int>(tag & 7);
    if (field == 1 && wire == 2) {  // SentencePiece
      std::string sub = r.bytes();
      Reader s{reinterpret_cast<const uint8_t*>(sub.data()), reinterpret_cast<const uint8_t*>(sub.data()) + sub.size(), file};
      Piece p;
      while (!s.done()) {
        uint64_t t = s.varint();
        const int f = static_cast<int>(t >> 3), w = static_cast<int>(t & 7);
        if (f == 1 && w == 2) p.piece = s.bytes();
        else if (f == 2 && w == 5) p.score = s.fixed32_float();
        else if (f == 3 && w == 0) p.type = static_cast<PieceType>(s.varint());
        else s.skip(w);
      }
      m.pieces_.push_back(std::move(p));
    } else if ((field == 2 || field == 3) && wire == 2) {  // TrainerSpec / NormalizerSpec (merged)
      std::string sub = r.bytes();
      Reader s{reinterpret_cast<const uint8_t*>(sub.data()), reinterpret_cast<const uint8_t*>(sub.data()) + sub.size(), file};
      while (!s.done()) {
        uint64_t t = s.varint();
        const int f = static_cast<int>(t >> 3), w = static_cast<int>(t & 7);
        if (field == 2) {
          if (f == 3 && w == 0) model_type = static_cast<int>(s.varint());
          else if (f == 35 && w == 0) m.byte_fallback_ = s.varint() != 0;
          else if (f == 24 && w == 0) m.treat_whitespace_as_suffix_ = s.varint() != 0;
          else if (f == 44 && w == 2) m.unk_surface_ = s.bytes();
          else s.skip(w);
        } else {
          if (f == 2 && w == 2) charsmap = s.bytes();
          else if (f == 3 && w == 0) m.add_dummy_prefix_ = s.varint() != 0;
          else if (f == 4 && w == 0) m.remove_extra_whitespaces_ = s.varint() != 0;
          else if (f == 5 && w == 0) m.escape_whitespaces_ = s.varint() != 0;
          else s.skip(w);
        }
      }
    } else {
      r.skip(wire);
    }
  }
  if (m.pieces_.empty()) throw InputError(file, "tokenizer.model has no pieces (not a SentencePiece model?)");
  if (model_type != 2) {
    throw InputError(file, "only SentencePiece BPE models are supported (trainer_spec.model_type = " +
                               std::to_string(model_type) + ")");
  }
  if (!charsmap.empty()) {
    throw InputError(file, "normalizer_spec has a precompiled charsmap (e.g. nmt_nfkc); only the identity "
                           "normaliser LLaMA-family models use is supported");
  }
  if (m.treat_whitespace_as_suffix_) throw InputError(file, "treat_whitespace_as_suffix is not supported");
  bool have_unk = false;
  for (size_t i = 0; i < m.pieces_.size(); ++i) {
    const auto& p = m.pieces_[i];
    const int id = static_cast<int>(i);
    switch (p.type) {
      case PieceType::Normal:
      case PieceType::UserDefined:
      case PieceType::Unused:
        m.normal_.emplace(p.piece, id);
        if (p.type == PieceType::UserDefined) m.user_defined_.push_back(p.piece);
        break;
      case PieceType::Unknown:
        if (!have_unk) m.unk_id_ = id;
        have_unk = true;
        m.reserved_.emplace(p.piece, id);
        break;
      case PieceType::Control:
      case PieceType::Byte:
        m.reserved_.emplace(p.piece, id);
        break;
      default:
        throw InputError(file, "piece " + std::to_string(i) + " has an unknown type");
    }
  }
  if (!have_unk) throw InputError(file, "tokenizer.model has no unknown piece");
  return m;
}

int SentencePieceModel::piece_to_id(const std::string& piece) const {
  auto it = reserved_.find(piece);
  if (it != reserved_.end()) return it->second;
  auto jt = normal_.find(piece);
  if (jt != normal_.end()) return jt->second;
  return unk_id_;
}

std::string SentencePieceModel::normalize(const std::string& text) const {
  // Identity normaliser: optional whitespace squashing, then spaces -> U+2581 and the dummy prefix.
  std::string s = text;
  if (remove_extra_whitespaces_) {
    std::string t;
    bool prev_space = true;
    for (char c : s) {
      if (c == ' ') {
        if (!prev_space) t += ' ';
        prev_space = true;
      } else {
        t += c;
        prev_space = false;
      }
    }
    while (!t.empty() && t.back() == ' ') t.pop_back();
    s = t;
  }
  if (s.empty()) return s;
  std::string out;
  if (add_dummy_prefix_) out += escape_whitespaces_ ? kSpace : " ";
  for (size_t i = 0; i < s.size();) {
    const size_t n = valid_utf8_at(s, i);
    if (n == 0) {  // the normaliser replaces each invalid byte with U+FFFD
      out += "\xEF\xBF\xBD";
      i += 1;
    } else if (s[i] == ' ' && escape_whitespaces_) {
      out += kSpace;
      i += 1;
    } else {
      out.append(s, i, n);
      i += n;
    }
  }
  return out;
}

std::vector<std::string> SentencePieceModel::encode(const std::string& text) const {
  const std::string norm = normalize(text);
  struct Symbol {
    int prev, next;
    size_t begin, len;
    bool freeze;
  };
  std::vector<Symbol> symbols;
  for (size_t i = 0; i < norm.size();) {
    size_t len = 0;
    bool freeze = false;
    for (const auto& u : user_defined_) {  // user-defined symbols are never split or merged
      if (u.size() > len && norm.compare(i, u.size(), u) == 0) {
        len = u.size();
        freeze = true;
      }
    }
    if (!freeze) len = std::min(utf8_len(static_cast<unsigned char>(norm[i])), norm.size() - i);
    const int idx = static_cast<int>(symbols.size());
    symbols.push_back({idx - 1, i + len < norm.size() ? idx + 1 : -1, i, len, freeze});
    i += len;
  }
  struct Pair {
    int left, right;
    float score;
    size_t size;
  };
  auto cmp = [](const Pair& a, const Pair& b) { return a.score < b.score || (a.score == b.score && a.left > b.left); };
  std::priority_queue<Pair, std::vector<Pair>, decltype(cmp)> agenda(cmp);
  std::map<std::string, std::pair<std::string, std::string>> rev_merge;
  auto maybe_add = [&](int left, int right) {
    if (left < 0 || right < 0 || symbols[left].freeze || symbols[right].freeze) return;
    const std::string piece = norm.substr(symbols[left].begin, symbols[left].len + symbols[right].len);
    auto it = normal_.find(piece);
    if (it == normal_.end()) return;
    agenda.push({left, right, pieces_[it->second].score, piece.size()});
    if (pieces_[it->second].type == PieceType::Unused) {
      rev_merge[piece] = {norm.substr(symbols[left].begin, symbols[left].len),
                          norm.substr(symbols[right].begin, symbols[right].len)};
    }
  };
  for (size_t i = 1; i < symbols.size(); ++i) maybe_add(static_cast<int>(i) - 1, static_cast<int>(i));
  while (!agenda.empty()) {
    Pair top = agenda.top();
    agenda.pop();
    auto& l = symbols[top.left];
    auto& r = symbols[top.right];
    if (l.len == 0 || r.len == 0 || l.len + r.len != top.size) continue;  // stale
    l.len += r.len;
    l.next = r.next;
    if (r.next >= 0) symbols[r.next].prev = top.left;
    r.len = 0;
    maybe_add(l.prev, top.left);
    maybe_add(top.left, l.next);
  }
  std::vector<std::string> out;
  std::function<void(const std::string&)> emit = [&](const std::string& w) {
    const int id = piece_to_id(w);
    if (id != unk_id_ && pieces_[id].type == PieceType::Unused) {
      auto p = rev_merge.find(w);
      if (p != rev_merge.end()) {
        emit(p->second.first);
        emit(p->second.second);
        return;
      }
    }
    if (id == unk_id_ && w != pieces_[unk_id_].piece && byte_fallback_) {
      static const char* hex = "0123456789ABCDEF";
      for (unsigned char b : w) out.push_back(std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">");
      return;
    }
    out.push_back(w);
  };
  for (int i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) {
    emit(norm.substr(symbols[i].begin, symbols[i].len));
  }
  return out;
}

std::string SentencePieceModel::decode(const std::vector<std::string>& pieces) const {
  std::string out;
  std::string pending_bytes;
  auto flush_bytes = [&]() {
    for (size_t i = 0; i < pending_bytes.size();) {
      size_t n = valid_utf8_at(pending_bytes, i);
      if (n == 0) {
        out += "\xEF\xBF\xBD";  // U+FFFD for each invalid byte
        i += 1;
      } else {
        out += pending_bytes.substr(i, n);
        i += n;
      }
    }
    pending_bytes.clear();
  };
  bool first_text = true;
  for (const auto& piece : pieces) {
    const int id = piece_to_id(piece);
    const bool known = id != unk_id_ || piece == pieces_[unk_id_].piece;
    unsigned char b = 0;
    if (known && pieces_[id].type == PieceType::Byte && parse_byte_piece(piece, &b)) {
      pending_bytes += static_cast<char>(b);
      first_text = false;
      continue;
    }
    flush_bytes();
    if (known && pieces_[id].type == PieceType::Control) continue;
    // The unknown piece itself decodes to unk_surface; any other string that is not a piece
    // decodes as itself (SentencePieceProcessor::DecodeInternal).
    std::string surface = (id == unk_id_ && piece == pieces_[unk_id_].piece) ? unk_surface_ : piece;
    if (first_text && add_dummy_prefix_ && surface.compare(0, kSpace.size(), kSpace) == 0) {
      surface = surface.substr(kSpace.size());  // the dummy prefix added at encode time
    }
    first_text = false;
    std::string text;
    for (size_t i = 0; i < surface.size();) {
      if (surface.compare(i, kSpace.size(), kSpace) == 0) {
        text += ' ';
        i += kSpace.size();
      } else {
        text += surface[i++];
      }
    }
    out += text;
  }
  flush_bytes();
  return out;
}

}  // namespace p2dpo::text
