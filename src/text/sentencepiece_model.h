#pragma once
// A SentencePiece BPE model read straight from tokenizer.model, with encode and decode as
// libsentencepiece does them (bpe_model.cc, sentencepiece_processor.cc) for the models LLaMA-family
// checkpoints ship (BPE, identity normalisation, byte fallback).
//
// Why hand-written: Debian's libsentencepiece bundles its own protobuf 3.14 runtime and exports
// its symbols; libtorch links the system libprotobuf 3.21, and the two cannot live in one process
// (the static initialisers abort or crash). tests/text cross-checks this class against
// libsentencepiece in a binary without libtorch.
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace p2dpo::text {

class SentencePieceModel {
 public:
  enum class PieceType { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 };

  // Parses the serialized ModelProto. InputError naming `file` for malformed or unsupported models.
  static SentencePieceModel parse(const std::string& bytes, const std::string& file);

  void set_add_dummy_prefix(bool on) { add_dummy_prefix_ = on; }
  bool add_dummy_prefix() const { return add_dummy_prefix_; }

  // Normalises (dummy prefix, spaces -> U+2581) and BPE-encodes into pieces.
  std::vector<std::string> encode(const std::string& text) const;
  // Pieces back to text as SentencePieceProcessor::Decode does.
  std::string decode(const std::vector<std::string>& pieces) const;

  int size() const { return static_cast<int>(pieces_.size()); }
  int piece_to_id(const std::string& piece) const;  // unk_id() when unknown
  const std::string& id_to_piece(int id) const { return pieces_.at(static_cast<size_t>(id)).piece; }
  PieceType type(int id) const { return pieces_.at(static_cast<size_t>(id)).type; }
  int unk_id() const { return unk_id_; }

 private:
  struct Piece {
    std::string piece;
    float score = 0;
    PieceType type = PieceType::Normal;
  };
  std::string normalize(const std::string& text) const;

  std::vector<Piece> pieces_;
  std::unordered_map<std::string, int> normal_;    // NORMAL, USER_DEFINED, UNUSED
  std::unordered_map<std::string, int> reserved_;  // CONTROL, UNKNOWN, BYTE
  std::vector<std::string> user_defined_;
  int unk_id_ = 0;
  bool byte_fallback_ = false;
  bool add_dummy_prefix_ = true;
  bool remove_extra_whitespaces_ = true;
  bool escape_whitespaces_ = true;
  bool treat_whitespace_as_suffix_ = false;
  std::string unk_surface_ = " \xE2\x81\x87 ";
};

}  // namespace p2dpo::text
