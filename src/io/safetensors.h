#pragma once
// Reading and writing the safetensors format (8-byte little-endian header length, JSON header,
// raw little-endian tensor bytes) without torch. Files are memory-mapped read-only and fully
// validated at open, so a TensorView's bytes are always inside the file and sized correctly.
// Hand-written: Debian ships no C++ safetensors reader.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace p2dpo::io {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);  // the safetensors spelling: "F32", "BF16", ...
// Throws InputError(file_for_errors, "unknown dtype 'X'") for anything else.
DType parse_dtype(const std::string& name, const std::string& file_for_errors);
bool is_float_dtype(DType dtype);

// A tensor's bytes inside a mapped file (valid while the SafetensorsFile lives). The data pointer
// is NOT guaranteed to be aligned for the element type: copy (memcpy) rather than casting.
struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  std::string file;  // the file it came from, for error messages

  int64_t numel() const;
};

// One header entry; offsets are relative to the start of the data section.
struct TensorEntry {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  size_t begin = 0;
  size_t end = 0;
};

struct SafetensorsHeader {
  std::vector<TensorEntry> tensors;  // sorted by name
  std::map<std::string, std::string> metadata;
  size_t data_start = 0;  // byte offset of the data section in the file (8 + header length)
};

// Parses and validates the header of a complete safetensors file held in `bytes[0, size)`.
// Everything is checked before any tensor byte is touched: header length, JSON, dtypes, shapes,
// offsets inside the data section and consistent with shape*dtype, no overlaps, metadata.
// Errors: InputError(file, "tensor 'x': ...") or InputError(file, "<header problem>").
SafetensorsHeader parse_safetensors_header(const uint8_t* bytes, size_t size, const std::string& file);

class SafetensorsFile {
 public:
  // Maps and validates the file; InputError(path, ...) if missing, unreadable or invalid.
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const;
  // InputError(path, "missing tensor 'name'") if absent.
  TensorView tensor(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  const uint8_t* mapping_ = nullptr;
  size_t mapping_size_ = 0;
  SafetensorsHeader header_;
  std::map<std::string, size_t> index_;  // name -> position in header_.tensors
};

// A model's weights: a directory with model.safetensors, or shards listed by
// model.safetensors.index.json ("weight_map": tensor name -> shard file), or one .safetensors path.
// Copies share the mapped files; a TensorView stays valid while any copy of the Checkpoint lives.
// Only tensors named in weight_map are visible for a sharded checkpoint.
class Checkpoint {
 public:
  static Checkpoint open_dir(const std::string& dir_or_file);

  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const;
  // InputError(<checkpoint path>, "missing tensor 'name'") if absent.
  TensorView tensor(const std::string& name) const;
  std::string file_of(const std::string& name) const;  // the shard holding `name`
  const std::string& path() const { return path_; }

 private:
  std::string path_;  // what open_dir was given
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*> owner_;  // tensor name -> file
};

struct TensorToWrite {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};

// Writes a valid safetensors file atomically (temp file + rename). The header JSON is padded with
// spaces to 8-byte alignment, tensors are sorted by name and laid out contiguously, so the same
// input always gives the same bytes. Throws InputError(path, ...) if a tensor's nbytes does not
// match shape*dtype, a name is empty/duplicated/"__metadata__", or the write fails.
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Exact IEEE conversions of the 16-bit float formats.
float f16_bits_to_f32(uint16_t bits);
float bf16_bits_to_f32(uint16_t bits);

// Converts every element of a F64/F32/F16/BF16 tensor to float (F16/BF16 exactly, F64 rounded) into
// out[0, numel). InputError(file, "tensor 'x': expected a float dtype, got I64") otherwise.
void convert_to_f32(const TensorView& tensor, float* out);

}  // namespace p2dpo::io
