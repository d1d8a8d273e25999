#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "io/errors.h"
#include "io/json_io.h"

namespace p2dpo::io {

static_assert(sizeof(float) == 4, "float must be IEEE binary32");
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this reader copies bytes as-is and needs a little-endian host"
#endif

namespace {

// A real header is a few MB at most (a 7B model's is ~100 KB); anything bigger is corrupt input,
// and refusing it early bounds the memory the JSON parser can be made to use.
constexpr uint64_t kMaxHeaderBytes = 100ull * 1024 * 1024;

struct DTypeInfo {
  DType dtype;
  const char* name;
  size_t size;
};

constexpr DTypeInfo kDTypes[] = {
    {DType::F64, "F64", 8}, {DType::F32, "F32", 4}, {DType::F16, "F16", 2},  {DType::BF16, "BF16", 2},
    {DType::I64, "I64", 8}, {DType::I32, "I32", 4}, {DType::I16, "I16", 2},  {DType::I8, "I8", 1},
    {DType::U8, "U8", 1},   {DType::BOOL, "BOOL", 1},
};

const DTypeInfo& info(DType dtype) {
  for (const auto& d : kDTypes)
    if (d.dtype == dtype) return d;
  throw std::logic_error("invalid DType value");
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// numel * element size in bytes, or false on overflow. A zero dimension gives 0 even if other
// dimensions are huge (their product is never formed).
bool checked_nbytes(const std::vector<int64_t>& shape, size_t element_size, size_t* out) {
  for (int64_t d : shape)
    if (d == 0) {
      *out = 0;
      return true;
    }
  uint64_t total = element_size;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(total, static_cast<uint64_t>(d), &total)) return false;
  }
  // Keep numel representable as int64 and the byte count as size_t.
  if (total > static_cast<uint64_t>(INT64_MAX) || total > SIZE_MAX) return false;
  *out = static_cast<size_t>(total);
  return true;
}

// A JSON value that must be a non-negative integer (nlohmann stores those as unsigned or integer).
bool as_non_negative(const nlohmann::json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(v.get<int64_t>());
    return true;
  }
  return false;
}

TensorEntry parse_entry(const std::string& name, const nlohmann::json& entry, size_t data_size,
                        const std::string& file) {
  const std::string where = "tensor '" + name + "': ";
  auto fail = [&](const std::string& problem) { return InputError(file, where + problem); };
  if (!entry.is_object()) throw fail(std::string("expected an object, got ") + json_type_name(entry));

  TensorEntry t;
  t.name = name;
  auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end()) throw fail("missing 'dtype'");
  if (!dtype_it->is_string()) throw fail(std::string("'dtype' must be a string, got ") + json_type_name(*dtype_it));
  try {
    t.dtype = parse_dtype(dtype_it->get<std::string>(), file);
  } catch (const InputError&) {
    throw fail("unknown dtype '" + dtype_it->get<std::string>() + "'");
  }

  auto shape_it = entry.find("shape");
  if (shape_it == entry.end()) throw fail("missing 'shape'");
  if (!shape_it->is_array()) throw fail(std::string("'shape' must be an array, got ") + json_type_name(*shape_it));
  for (const auto& d : *shape_it) {
    uint64_t dim = 0;
    if (!as_non_negative(d, &dim) || dim > static_cast<uint64_t>(INT64_MAX))
      throw fail("'shape' must hold non-negative integers, got " + d.dump());
    t.shape.push_back(static_cast<int64_t>(dim));
  }
  size_t expected_bytes = 0;
  if (!checked_nbytes(t.shape, dtype_size(t.dtype), &expected_bytes))
    throw fail("shape " + shape_string(t.shape) + " of " + dtype_name(t.dtype) + " overflows the byte count");

  auto off_it = entry.find("data_offsets");
  if (off_it == entry.end()) throw fail("missing 'data_offsets'");
  uint64_t begin = 0, end = 0;
  if (!off_it->is_array() || off_it->size() != 2 || !as_non_negative((*off_it)[0], &begin) ||
      !as_non_negative((*off_it)[1], &end))
    throw fail("'data_offsets' must be [begin, end] with non-negative integers, got " + off_it->dump());
  const std::string offsets = "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "]";
  if (begin > end) throw fail(offsets + " have begin > end");
  if (end > data_size)
    throw fail(offsets + " extend past the end of the data section (" + std::to_string(data_size) +
               " bytes; truncated file?)");
  if (end - begin != expected_bytes)
    throw fail(offsets + " span " + std::to_string(end - begin) + " bytes but shape " + shape_string(t.shape) +
               " of " + dtype_name(t.dtype) + " needs " + std::to_string(expected_bytes) + " bytes");
  t.begin = static_cast<size_t>(begin);
  t.end = static_cast<size_t>(end);
  return t;
}

}  // namespace

size_t dtype_size(DType dtype) { return info(dtype).size; }
const char* dtype_name(DType dtype) { return info(dtype).name; }

DType parse_dtype(const std::string& name, const std::string& file_for_errors) {
  for (const auto& d : kDTypes)
    if (name == d.name) return d.dtype;
  throw InputError(file_for_errors, "unknown dtype '" + name + "'");
}

bool is_float_dtype(DType dtype) {
  return dtype == DType::F64 || dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsHeader parse_safetensors_header(const uint8_t* bytes, size_t size, const std::string& file) {
  if (size < 8)
    throw InputError(file, "truncated file: " + std::to_string(size) +
                               " bytes, too short for the 8-byte safetensors header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > kMaxHeaderBytes)
    throw InputError(file, "header length " + std::to_string(header_len) + " is larger than the " +
                               std::to_string(kMaxHeaderBytes) + "-byte limit (not a safetensors file?)");
  if (header_len > size - 8)
    throw InputError(file, "header length " + std::to_string(header_len) + " goes beyond the end of the file (" +
                               std::to_string(size) + " bytes; truncated file?)");

  SafetensorsHeader header;
  header.data_start = 8 + static_cast<size_t>(header_len);
  const size_t data_size = size - header.data_start;
  const std::string text(reinterpret_cast<const char*>(bytes + 8), static_cast<size_t>(header_len));
  nlohmann::json json;
  try {
    json = parse_json_text(text, file);
  } catch (const InputError& e) {
    throw InputError(file, std::string("safetensors header: ") + (e.what() + file.size() + 2));
  }
  if (!json.is_object())
    throw InputError(file, std::string("safetensors header must be a JSON object, got ") + json_type_name(json));

  for (const auto& [name, entry] : json.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object())
        throw InputError(file, std::string("'__metadata__' must be an object, got ") + json_type_name(entry));
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string())
          throw InputError(file, "'__metadata__' entry '" + key + "' must be a string, got " + json_type_name(value));
        header.metadata[key] = value.get<std::string>();
      }
      continue;
    }
    header.tensors.push_back(parse_entry(name, entry, data_size, file));
  }

  // Overlap check on the byte ranges; empty tensors occupy no bytes and overlap nothing.
  std::vector<const TensorEntry*> by_offset;
  for (const auto& t : header.tensors)
    if (t.end > t.begin) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorEntry* a, const TensorEntry* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorEntry& prev = *by_offset[i - 1];
    const TensorEntry& cur = *by_offset[i];
    if (cur.begin < prev.end)
      throw InputError(file, "tensor '" + cur.name + "': data_offsets [" + std::to_string(cur.begin) + ", " +
                                 std::to_string(cur.end) + "] overlap tensor '" + prev.name + "' [" +
                                 std::to_string(prev.begin) + ", " + std::to_string(prev.end) + "]");
  }
  // nlohmann objects iterate in key order, so tensors are already sorted by name.
  return header;
}

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) throw InputError(path, "file not found");
    throw InputError(path, std::string("cannot open: ") + std::strerror(err));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw InputError(path, "not a regular file");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    throw InputError(path, "truncated file: " + std::to_string(size) +
                               " bytes, too short for the 8-byte safetensors header length");
  }
  void* mapped = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_err = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (mapped == MAP_FAILED) throw InputError(path, std::string("cannot mmap: ") + std::strerror(map_err));

  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->mapping_ = static_cast<const uint8_t*>(mapped);
  file->mapping_size_ = size;
  file->header_ = parse_safetensors_header(file->mapping_, size, path);  // unmapped by ~ on throw
  for (size_t i = 0; i < file->header_.tensors.size(); ++i) file->index_[file->header_.tensors[i].name] = i;
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_) ::munmap(const_cast<uint8_t*>(mapping_), mapping_size_);
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& kv : index_) out.push_back(kv.first);
  return out;
}

bool SafetensorsFile::contains(const std::string& name) const { return index_.count(name) != 0; }

TensorView SafetensorsFile::tensor(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw InputError(path_, "missing tensor '" + name + "'");
  const TensorEntry& e = header_.tensors[it->second];
  TensorView v;
  v.name = e.name;
  v.dtype = e.dtype;
  v.shape = e.shape;
  v.data = mapping_ + header_.data_start + e.begin;
  v.nbytes = e.end - e.begin;
  v.file = path_;
  return v;
}

// ---------------------------------------------------------------------------------------------
// Checkpoint

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

Checkpoint Checkpoint::open_dir(const std::string& dir_or_file) {
  namespace fs = std::filesystem;
  Checkpoint ckpt;
  ckpt.path_ = dir_or_file;
  std::error_code ec;
  const fs::path given(dir_or_file);

  std::string index_path;
  if (fs::is_directory(given, ec)) {
    const fs::path index = given / "model.safetensors.index.json";
    const fs::path single = given / "model.safetensors";
    if (fs::exists(index, ec)) {
      index_path = index.string();
    } else if (fs::exists(single, ec)) {
      ckpt.files_.push_back(SafetensorsFile::open(single.string()));
    } else {
      throw InputError(dir_or_file, "no model.safetensors or model.safetensors.index.json in this directory");
    }
  } else if (!fs::exists(given, ec)) {
    throw InputError(dir_or_file, "checkpoint not found (expected a model directory or a .safetensors file)");
  } else if (ends_with(dir_or_file, ".index.json")) {
    index_path = dir_or_file;
  } else {
    ckpt.files_.push_back(SafetensorsFile::open(dir_or_file));
  }

  if (index_path.empty()) {
    for (const auto& name : ckpt.files_[0]->names()) ckpt.owner_[name] = ckpt.files_[0].get();
    return ckpt;
  }

  const nlohmann::json index = read_json_file(index_path);
  if (!index.is_object())
    throw InputError(index_path, std::string("expected a JSON object, got ") + json_type_name(index));
  const auto weight_map = get_required<nlohmann::json>(index, "weight_map", index_path, "");
  if (!weight_map.is_object())
    throw InputError(index_path, std::string("field 'weight_map': expected object, got ") + json_type_name(weight_map));
  if (weight_map.empty()) throw InputError(index_path, "field 'weight_map' is empty");

  const fs::path base = fs::path(index_path).parent_path();
  std::map<std::string, const SafetensorsFile*> shard_by_name;
  for (const auto& [tensor_name, shard_json] : weight_map.items()) {
    const std::string label = "weight_map." + tensor_name;
    const std::string shard = detail::convert_field<std::string>(shard_json, label, index_path);
    const fs::path shard_rel(shard);
    // Shards live next to the index; refuse paths that would escape the checkpoint directory.
    if (shard.empty() || shard_rel.is_absolute() ||
        std::any_of(shard_rel.begin(), shard_rel.end(), [](const fs::path& p) { return p == ".."; }))
      throw InputError(index_path, "field '" + label + "': shard file name '" + shard +
                                       "' must be a relative path inside the checkpoint directory");
    auto found = shard_by_name.find(shard);
    if (found == shard_by_name.end()) {
      const fs::path shard_path = base / shard_rel;
      if (!fs::is_regular_file(shard_path, ec))
        throw InputError(index_path, "weight_map names shard '" + shard + "' (for tensor '" + tensor_name +
                                         "') but " + shard_path.string() + " does not exist");
      ckpt.files_.push_back(SafetensorsFile::open(shard_path.string()));
      found = shard_by_name.emplace(shard, ckpt.files_.back().get()).first;
    }
    if (!found->second->contains(tensor_name))
      throw InputError(index_path, "weight_map puts tensor '" + tensor_name + "' in shard '" + shard +
                                       "' but that shard does not contain it");
    ckpt.owner_[tensor_name] = found->second;
  }
  return ckpt;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(owner_.size());
  for (const auto& kv : owner_) out.push_back(kv.first);
  return out;
}

bool Checkpoint::contains(const std::string& name) const { return owner_.count(name) != 0; }

TensorView Checkpoint::tensor(const std::string& name) const {
  auto it = owner_.find(name);
  if (it == owner_.end()) throw InputError(path_, "missing tensor '" + name + "'");
  return it->second->tensor(name);
}

std::string Checkpoint::file_of(const std::string& name) const {
  auto it = owner_.find(name);
  if (it == owner_.end()) throw InputError(path_, "missing tensor '" + name + "'");
  return it->second->path();
}

// ---------------------------------------------------------------------------------------------
// Writing

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  namespace fs = std::filesystem;
  std::vector<const TensorToWrite*> sorted;
  for (const auto& t : tensors) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(),
            [](const TensorToWrite* a, const TensorToWrite* b) { return a->name < b->name; });

  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t offset = 0;
  for (size_t i = 0; i < sorted.size(); ++i) {
    const TensorToWrite& t = *sorted[i];
    const std::string where = "tensor '" + t.name + "': ";
    if (t.name.empty() || t.name == "__metadata__") throw InputError(path, where + "invalid tensor name");
    if (i > 0 && sorted[i - 1]->name == t.name) throw InputError(path, where + "duplicate tensor name");
    size_t expected = 0;
    if (!checked_nbytes(t.shape, dtype_size(t.dtype), &expected))
      throw InputError(path, where + "shape " + shape_string(t.shape) + " is invalid or overflows");
    if (t.nbytes != expected)
      throw InputError(path, where + "nbytes " + std::to_string(t.nbytes) + " does not match shape " +
                                 shape_string(t.shape) + " of " + dtype_name(t.dtype) + " (" +
                                 std::to_string(expected) + " bytes)");
    if (t.nbytes > 0 && t.data == nullptr) throw InputError(path, where + "data is null");
    header[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }

  std::string header_text;
  try {
    header_text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    throw InputError(path, std::string("cannot encode header (tensor names and metadata must be UTF-8): ") + e.what());
  }
  // Pad so the data section starts 8-byte aligned (8-byte length + header).
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  uint8_t length_bytes[8];
  for (int i = 0; i < 8; ++i) length_bytes[i] = static_cast<uint8_t>(static_cast<uint64_t>(header_text.size()) >> (8 * i));

  const fs::path parent = fs::path(path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    fs::create_directories(parent, ec);
    if (ec) throw InputError(path, "cannot create parent directory: " + ec.message());
  }
  // Streamed rather than built in memory: checkpoints can be many GB.
  const std::string tmp = temp_path_for(path);
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw InputError(path, std::string("cannot open for writing: ") + std::strerror(errno));
    out.write(reinterpret_cast<const char*>(length_bytes), 8);
    out.write(header_text.data(), static_cast<std::streamsize>(header_text.size()));
    for (const TensorToWrite* t : sorted)
      if (t->nbytes) out.write(static_cast<const char*>(t->data), static_cast<std::streamsize>(t->nbytes));
    out.flush();
    if (!out) {
      out.close();
      std::remove(tmp.c_str());
      throw InputError(path, "write failed (disk full?)");
    }
  }
  commit_temp_file(tmp, path);
}

// ---------------------------------------------------------------------------------------------
// Float conversion

float f16_bits_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1Fu;
  const uint32_t mantissa = h & 0x3FFu;
  uint32_t bits;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24 is exact in float.
    float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    std::memcpy(&bits, &magnitude, 4);
    bits |= sign;
  } else if (exponent == 0x1F) {
    bits = sign | 0x7F800000u | (mantissa << 13);  // inf, or NaN keeping its payload
  } else {
    bits = sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13);
  }
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

float bf16_bits_to_f32(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

void convert_to_f32(const TensorView& tensor, float* out) {
  const std::string& where = tensor.file.empty() ? std::string("tensor '" + tensor.name + "'") : tensor.file;
  if (!is_float_dtype(tensor.dtype))
    throw InputError(where, "tensor '" + tensor.name + "': expected a float dtype, got " + dtype_name(tensor.dtype));
  const size_t n = static_cast<size_t>(tensor.numel());
  if (tensor.nbytes != n * dtype_size(tensor.dtype))
    throw InputError(where, "tensor '" + tensor.name + "': " + std::to_string(tensor.nbytes) +
                                " bytes do not match its shape " + shape_string(tensor.shape));
  const uint8_t* src = tensor.data;
  switch (tensor.dtype) {
    case DType::F32:
      if (n) std::memcpy(out, src, n * 4);
      break;
    case DType::F64:
      for (size_t i = 0; i < n; ++i) {
        double v;
        std::memcpy(&v, src + 8 * i, 8);
        out[i] = static_cast<float>(v);
      }
      break;
    case DType::F16:
    case DType::BF16: {
      const bool is_f16 = tensor.dtype == DType::F16;
      for (size_t i = 0; i < n; ++i) {
        uint16_t bits;
        std::memcpy(&bits, src + 2 * i, 2);
        out[i] = is_f16 ? f16_bits_to_f32(bits) : bf16_bits_to_f32(bits);
      }
      break;
    }
    default:
      break;  // rejected above
  }
}

}  // namespace p2dpo::io
