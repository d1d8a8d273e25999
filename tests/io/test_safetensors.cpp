#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "io/atomic_file.h"
#include "io/errors.h"
#include "io/json_io.h"
#include "io/safetensors.h"
#include "test_paths.h"
#include "test_util.h"

using p2dpo::InputError;
namespace io = p2dpo::io;

namespace {
using p2dpo::test::error_of;

// Builds raw safetensors bytes from a header JSON string and a data section.
std::string raw_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(n >> (8 * i));
  return out + header + data;
}

std::string write_raw(const std::string& dir, const std::string& name, const std::string& bytes) {
  const std::string path = dir + "/" + name;
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

// Parses `bytes` written to a file and expects an InputError naming the file and `problem`.
void expect_open_error(const std::string& bytes, const std::string& problem) {
  const std::string dir = p2dpo::test::scratch_dir("st_bad");
  const std::string path = write_raw(dir, "bad.safetensors", bytes);
  const std::string msg = error_of([&] { io::SafetensorsFile::open(path); });
  EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
  EXPECT_NE(msg.find(problem), std::string::npos) << "expected '" << problem << "' in: " << msg;
}

}  // namespace

TEST(Safetensors, DTypeNamesAndSizes) {
  EXPECT_EQ(io::dtype_size(io::DType::BF16), 2u);
  EXPECT_EQ(io::dtype_size(io::DType::F64), 8u);
  EXPECT_EQ(io::dtype_size(io::DType::BOOL), 1u);
  EXPECT_STREQ(io::dtype_name(io::DType::I16), "I16");
  EXPECT_EQ(io::parse_dtype("BF16", "f"), io::DType::BF16);
  EXPECT_EQ(error_of([] { io::parse_dtype("F8_E4M3", "x.safetensors"); }),
            "x.safetensors: unknown dtype 'F8_E4M3'");
}

TEST(Safetensors, RoundTripEveryDtype) {
  const std::string dir = p2dpo::test::scratch_dir("st_roundtrip");
  const io::DType all[] = {io::DType::F64, io::DType::F32, io::DType::F16, io::DType::BF16, io::DType::I64,
                           io::DType::I32, io::DType::I16, io::DType::I8,  io::DType::U8,   io::DType::BOOL};
  std::vector<std::vector<uint8_t>> buffers;
  std::vector<io::TensorToWrite> tensors;
  for (io::DType d : all) {
    const size_t n = 6;
    std::vector<uint8_t> bytes(n * io::dtype_size(d));
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 37 + static_cast<int>(d));
    if (d == io::DType::BOOL)
      for (auto& b : bytes) b &= 1;
    buffers.push_back(bytes);
  }
  for (size_t k = 0; k < buffers.size(); ++k)
    tensors.push_back({std::string("t_") + io::dtype_name(all[k]), all[k], {2, 3}, buffers[k].data(), buffers[k].size()});
  // A scalar and an empty tensor too.
  const float scalar = 1.5f;
  tensors.push_back({"scalar", io::DType::F32, {}, &scalar, 4});
  tensors.push_back({"empty", io::DType::F32, {0, 5}, nullptr, 0});

  const std::string path = dir + "/all.safetensors";
  io::write_safetensors(path, tensors, {{"format", "pt"}});
  auto f = io::SafetensorsFile::open(path);
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->names().size(), tensors.size());
  for (size_t k = 0; k < buffers.size(); ++k) {
    auto v = f->tensor(tensors[k].name);
    EXPECT_EQ(v.dtype, all[k]);
    EXPECT_EQ(v.shape, (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(v.numel(), 6);
    ASSERT_EQ(v.nbytes, buffers[k].size());
    EXPECT_EQ(std::memcmp(v.data, buffers[k].data(), v.nbytes), 0) << tensors[k].name;
    EXPECT_EQ(v.file, path);
  }
  auto s = f->tensor("scalar");
  EXPECT_TRUE(s.shape.empty());
  EXPECT_EQ(s.numel(), 1);
  float back;
  std::memcpy(&back, s.data, 4);
  EXPECT_EQ(back, 1.5f);
  EXPECT_EQ(f->tensor("empty").nbytes, 0u);

  // Header padded to 8 bytes and the same input gives the same bytes (tensor order irrelevant).
  const std::string bytes = io::read_file(path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  EXPECT_EQ(header_len % 8, 0u);
  std::reverse(tensors.begin(), tensors.end());
  io::write_safetensors(dir + "/again.safetensors", tensors, {{"format", "pt"}});
  EXPECT_EQ(io::read_file(dir + "/again.safetensors"), bytes);
}

TEST(Safetensors, WriteValidatesInput) {
  const std::string dir = p2dpo::test::scratch_dir("st_write_bad");
  const float data[4] = {};
  std::string msg = error_of([&] {
    io::write_safetensors(dir + "/x.safetensors", {{"w", io::DType::F32, {2, 3}, data, 16}});
  });
  EXPECT_NE(msg.find("x.safetensors: tensor 'w': nbytes 16 does not match shape [2, 3] of F32 (24 bytes)"),
            std::string::npos)
      << msg;
  msg = error_of([&] {
    io::write_safetensors(dir + "/x.safetensors",
                          {{"w", io::DType::F32, {1}, data, 4}, {"w", io::DType::F32, {1}, data, 4}});
  });
  EXPECT_NE(msg.find("duplicate tensor name"), std::string::npos) << msg;
}

TEST(Safetensors, ReadsLlavaFixture) {
  const std::string path = p2dpo::test::data_path("llava-tiny-s0/model.safetensors");
  auto f = io::SafetensorsFile::open(path);
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_TRUE(f->contains("language_model.lm_head.weight"));
  auto v = f->tensor("vision_tower.vision_model.embeddings.patch_embedding.weight");
  EXPECT_EQ(v.dtype, io::DType::F32);
  EXPECT_EQ(v.shape, (std::vector<int64_t>{32, 3, 14, 14}));
  EXPECT_EQ(v.nbytes, 32u * 3 * 14 * 14 * 4);
  auto head = f->tensor("language_model.lm_head.weight");
  EXPECT_EQ(head.shape, (std::vector<int64_t>{400, 64}));
  std::vector<float> values(static_cast<size_t>(head.numel()));
  io::convert_to_f32(head, values.data());
  for (float x : values) ASSERT_TRUE(std::isfinite(x));

  auto ckpt = io::Checkpoint::open_dir(p2dpo::test::data_path("llava-tiny-s0"));
  EXPECT_EQ(ckpt.names().size(), f->names().size());
  EXPECT_EQ(ckpt.file_of("language_model.lm_head.weight"), p2dpo::test::data_path("llava-tiny-s0") + "/model.safetensors");
}

TEST(Safetensors, ShardedCheckpoint) {
  const std::string dir = p2dpo::test::scratch_dir("st_sharded");
  const float a[2] = {1, 2}, b[3] = {3, 4, 5}, c[1] = {6};
  io::write_safetensors(dir + "/model-00001-of-00002.safetensors",
                        {{"a", io::DType::F32, {2}, a, 8}, {"b", io::DType::F32, {3}, b, 12}});
  io::write_safetensors(dir + "/model-00002-of-00002.safetensors", {{"c", io::DType::F32, {1, 1}, c, 4}});
  io::write_json_atomic(dir + "/model.safetensors.index.json",
                        {{"metadata", {{"total_size", 24}}},
                         {"weight_map",
                          {{"a", "model-00001-of-00002.safetensors"},
                           {"b", "model-00001-of-00002.safetensors"},
                           {"c", "model-00002-of-00002.safetensors"}}}});
  auto ckpt = io::Checkpoint::open_dir(dir);
  EXPECT_EQ(ckpt.names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(ckpt.file_of("c"), dir + "/model-00002-of-00002.safetensors");
  auto v = ckpt.tensor("c");
  EXPECT_EQ(v.shape, (std::vector<int64_t>{1, 1}));
  float out;
  io::convert_to_f32(v, &out);
  EXPECT_EQ(out, 6.0f);
  float bs[3];
  io::convert_to_f32(ckpt.tensor("b"), bs);
  EXPECT_EQ(bs[2], 5.0f);
  EXPECT_FALSE(ckpt.contains("d"));
  EXPECT_EQ(error_of([&] { ckpt.tensor("d"); }), dir + ": missing tensor 'd'");

  // The index file path itself also opens the checkpoint.
  EXPECT_EQ(io::Checkpoint::open_dir(dir + "/model.safetensors.index.json").names().size(), 3u);
}

TEST(Safetensors, IndexNamingMissingShard) {
  const std::string dir = p2dpo::test::scratch_dir("st_missing_shard");
  const float a[1] = {1};
  io::write_safetensors(dir + "/s1.safetensors", {{"a", io::DType::F32, {1}, a, 4}});
  io::write_json_atomic(dir + "/model.safetensors.index.json",
                        {{"weight_map", {{"a", "s1.safetensors"}, {"b", "s2.safetensors"}}}});
  const std::string msg = error_of([&] { io::Checkpoint::open_dir(dir); });
  EXPECT_EQ(msg.rfind(dir + "/model.safetensors.index.json: ", 0), 0u) << msg;
  EXPECT_NE(msg.find("shard 's2.safetensors' (for tensor 'b')"), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
}

TEST(Safetensors, IndexListingTensorAbsentFromShard) {
  const std::string dir = p2dpo::test::scratch_dir("st_index_absent");
  const float a[1] = {1};
  io::write_safetensors(dir + "/s1.safetensors", {{"a", io::DType::F32, {1}, a, 4}});
  io::write_json_atomic(dir + "/model.safetensors.index.json",
                        {{"weight_map", {{"a", "s1.safetensors"}, {"zz", "s1.safetensors"}}}});
  const std::string msg = error_of([&] { io::Checkpoint::open_dir(dir); });
  EXPECT_NE(msg.find("model.safetensors.index.json: weight_map puts tensor 'zz' in shard 's1.safetensors' but "
                     "that shard does not contain it"),
            std::string::npos)
      << msg;
}

TEST(Safetensors, IndexShardPathEscapingDirIsRefused) {
  const std::string dir = p2dpo::test::scratch_dir("st_index_escape");
  io::write_json_atomic(dir + "/model.safetensors.index.json", {{"weight_map", {{"a", "../x.safetensors"}}}});
  const std::string msg = error_of([&] { io::Checkpoint::open_dir(dir); });
  EXPECT_NE(msg.find("field 'weight_map.a'"), std::string::npos) << msg;
}

TEST(Safetensors, EmptyDirectoryIsRefused) {
  const std::string dir = p2dpo::test::scratch_dir("st_empty_dir");
  const std::string msg = error_of([&] { io::Checkpoint::open_dir(dir); });
  EXPECT_EQ(msg, dir + ": no model.safetensors or model.safetensors.index.json in this directory");
}

TEST(Safetensors, MissingTensorNamesFile) {
  const std::string path = p2dpo::test::data_path("llava-tiny-s0/model.safetensors");
  auto f = io::SafetensorsFile::open(path);
  EXPECT_EQ(error_of([&] { f->tensor("no.such.weight"); }), path + ": missing tensor 'no.such.weight'");
}

TEST(Safetensors, MissingFile) {
  expect_open_error("", "truncated file");  // zero bytes
  const std::string path = p2dpo::test::scratch_dir("st_nofile") + "/x.safetensors";
  EXPECT_EQ(error_of([&] { io::SafetensorsFile::open(path); }), path + ": file not found");
}

// ---- one test per kind of bad input ----

const char* kGoodHeader = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";

TEST(SafetensorsBadInput, GoodBaseline) {
  const std::string dir = p2dpo::test::scratch_dir("st_good");
  auto f = io::SafetensorsFile::open(write_raw(dir, "g.safetensors", raw_file(kGoodHeader, std::string(8, '\0'))));
  EXPECT_EQ(f->tensor("w").numel(), 2);
}

TEST(SafetensorsBadInput, TruncatedFile) {
  expect_open_error(std::string("\x10\x00\x00", 3), "truncated file: 3 bytes");
  // Tensor data cut short: the header is fine but the data section ends early.
  expect_open_error(raw_file(kGoodHeader, std::string(5, '\0')), "tensor 'w': data_offsets [0, 8] extend past the end");
}

TEST(SafetensorsBadInput, HeaderLengthBeyondFile) {
  std::string bytes = raw_file(kGoodHeader, std::string(8, '\0'));
  bytes[0] = static_cast<char>(0xF0);  // header length now 240 + 256 * ..., larger than the file
  expect_open_error(bytes, "goes beyond the end of the file");
  std::string huge(8, '\xff');
  expect_open_error(huge + "{}", "-byte limit");
}

TEST(SafetensorsBadInput, OverlappingOffsets) {
  expect_open_error(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                             std::string(8, '\0')),
                    "tensor 'b': data_offsets [4, 8] overlap tensor 'a' [0, 8]");
}

TEST(SafetensorsBadInput, OutOfRangeOffsets) {
  expect_open_error(raw_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", std::string(8, '\0')),
                    "tensor 'w': data_offsets [8, 16] extend past the end of the data section (8 bytes");
  expect_open_error(raw_file(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", std::string(8, '\0')),
                    "tensor 'w': data_offsets [8, 4] have begin > end");
  expect_open_error(raw_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[-1,7]}})", std::string(8, '\0')),
                    "tensor 'w': 'data_offsets' must be [begin, end]");
}

TEST(SafetensorsBadInput, UnknownDtype) {
  expect_open_error(raw_file(R"({"w":{"dtype":"F8_E5M2","shape":[2],"data_offsets":[0,2]}})", std::string(8, '\0')),
                    "tensor 'w': unknown dtype 'F8_E5M2'");
}

TEST(SafetensorsBadInput, SizeShapeMismatch) {
  expect_open_error(raw_file(R"({"w":{"dtype":"F16","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0')),
                    "tensor 'w': data_offsets [0, 8] span 8 bytes but shape [3] of F16 needs 6 bytes");
  expect_open_error(raw_file(R"({"w":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,8]}})", std::string(8, '\0')),
                    "tensor 'w': 'shape' must hold non-negative integers, got -1");
  expect_open_error(
      raw_file(R"({"w":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", std::string(8, '\0')),
      "tensor 'w': shape [4294967296, 4294967296] of F64 overflows");
}

TEST(SafetensorsBadInput, MalformedJsonHeader) {
  expect_open_error(raw_file(R"({"w":{"dtype":"F32",)", std::string(8, '\0')),
                    "safetensors header: malformed JSON: parse error at line 1, column 21");
  expect_open_error(raw_file("[1,2]", ""), "safetensors header must be a JSON object, got array");
  expect_open_error(raw_file(R"({"w":{"shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')),
                    "tensor 'w': missing 'dtype'");
  expect_open_error(raw_file(R"({"__metadata__":{"format":1}})", ""), "'__metadata__' entry 'format' must be a string");
}

TEST(SafetensorsBadInput, ParseHeaderFromMemory) {
  const std::string bytes = raw_file(kGoodHeader, std::string(8, '\0'));
  auto h = io::parse_safetensors_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "mem");
  ASSERT_EQ(h.tensors.size(), 1u);
  EXPECT_EQ(h.data_start, 8 + std::string(kGoodHeader).size());
  EXPECT_EQ(h.tensors[0].end, 8u);
  EXPECT_EQ(error_of([&] {
              io::parse_safetensors_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size() - 1, "mem");
            }).rfind("mem: tensor 'w'", 0),
            0u);
}

// ---- float conversion ----

TEST(SafetensorsConvert, F16KnownBitPatterns) {
  EXPECT_EQ(io::f16_bits_to_f32(0x3C00), 1.0f);
  EXPECT_EQ(io::f16_bits_to_f32(0xC000), -2.0f);
  EXPECT_EQ(io::f16_bits_to_f32(0x3555), 0.333251953125f);
  EXPECT_EQ(io::f16_bits_to_f32(0x7BFF), 65504.0f);           // largest finite
  EXPECT_EQ(io::f16_bits_to_f32(0x0400), std::ldexp(1.0f, -14));  // smallest normal
  EXPECT_EQ(io::f16_bits_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(io::f16_bits_to_f32(0x03FF), std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_EQ(io::f16_bits_to_f32(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(io::f16_bits_to_f32(0xFC00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(io::f16_bits_to_f32(0x7E00)));
  const float neg_zero = io::f16_bits_to_f32(0x8000);
  EXPECT_EQ(neg_zero, 0.0f);
  EXPECT_TRUE(std::signbit(neg_zero));
}

TEST(SafetensorsConvert, BF16KnownBitPatterns) {
  EXPECT_EQ(io::bf16_bits_to_f32(0x3F80), 1.0f);
  EXPECT_EQ(io::bf16_bits_to_f32(0x4049), 3.140625f);
  EXPECT_EQ(io::bf16_bits_to_f32(0xC2F7), -123.5f);
  EXPECT_EQ(io::bf16_bits_to_f32(0x0001), std::ldexp(1.0f, -133));  // subnormal
  EXPECT_EQ(io::bf16_bits_to_f32(0xFF80), -std::numeric_limits<float>::infinity());
}

TEST(SafetensorsConvert, ConvertTensorsThroughFile) {
  const std::string dir = p2dpo::test::scratch_dir("st_convert");
  const uint16_t f16[3] = {0x3C00, 0xC000, 0x0001};
  const uint16_t bf16[2] = {0x4049, 0xBF80};
  const double f64[2] = {0.1, -1e300};
  const int32_t i32[1] = {7};
  io::write_safetensors(dir + "/c.safetensors", {{"h", io::DType::F16, {3}, f16, 6},
                                                 {"b", io::DType::BF16, {2}, bf16, 4},
                                                 {"d", io::DType::F64, {2}, f64, 16},
                                                 {"i", io::DType::I32, {1}, i32, 4}});
  auto f = io::SafetensorsFile::open(dir + "/c.safetensors");
  float out[3];
  io::convert_to_f32(f->tensor("h"), out);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -2.0f);
  EXPECT_EQ(out[2], std::ldexp(1.0f, -24));
  io::convert_to_f32(f->tensor("b"), out);
  EXPECT_EQ(out[0], 3.140625f);
  EXPECT_EQ(out[1], -1.0f);
  io::convert_to_f32(f->tensor("d"), out);
  EXPECT_EQ(out[0], 0.1f);
  EXPECT_TRUE(std::isinf(out[1]));
  EXPECT_EQ(error_of([&] { io::convert_to_f32(f->tensor("i"), out); }),
            dir + "/c.safetensors: tensor 'i': expected a float dtype, got I32");
}
