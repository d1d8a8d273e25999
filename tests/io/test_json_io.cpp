#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "io/atomic_file.h"
#include "io/errors.h"
#include "io/json_io.h"
#include "test_paths.h"
#include "test_util.h"

using nlohmann::json;
using p2dpo::InputError;
namespace io = p2dpo::io;

namespace {
using p2dpo::test::error_of;

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// Runs `fn`, expects an InputError, and returns its message.
}  // namespace

TEST(JsonIo, ReadJsonFileParses) {
  const std::string dir = p2dpo::test::scratch_dir("json_read");
  write_text(dir + "/a.json", R"({"x": 1, "y": [1, 2]})");
  json j = io::read_json_file(dir + "/a.json");
  EXPECT_EQ(j["x"].get<int>(), 1);
  EXPECT_EQ(j["y"].size(), 2u);
}

TEST(JsonIo, MalformedJsonNamesFileLineAndColumn) {
  const std::string dir = p2dpo::test::scratch_dir("json_bad");
  const std::string path = dir + "/bad.json";
  write_text(path, "{\n  \"a\": 1,\n  \"b\": ]\n}\n");
  const std::string msg = error_of([&] { io::read_json_file(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("line 3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("column 8"), std::string::npos) << msg;
}

TEST(JsonIo, MissingFileNamesFile) {
  const std::string path = p2dpo::test::scratch_dir("json_missing") + "/nope.json";
  const std::string msg = error_of([&] { io::read_json_file(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("not found"), std::string::npos) << msg;
}

TEST(JsonIo, NumberOverflowIsInputError) {
  // nlohmann reports this as out_of_range, not parse_error; it must still be an InputError.
  const std::string msg = error_of([&] { io::parse_json_text("{\"a\": 1e999}", "big.json"); });
  EXPECT_NE(msg.find("big.json: malformed JSON: number overflow"), std::string::npos) << msg;
}

TEST(JsonIo, DeepNestingIsRefused) {
  const std::string text = std::string(1000, '[') + std::string(1000, ']');
  const std::string msg = error_of([&] { io::parse_json_text(text, "deep.json"); });
  EXPECT_NE(msg.find("deep.json: malformed JSON: nested deeper"), std::string::npos) << msg;
}

TEST(JsonIo, JsonlSkipsBlankLinesAndNamesBadLine) {
  const std::string dir = p2dpo::test::scratch_dir("jsonl");
  write_text(dir + "/ok.jsonl", "{\"a\":1}\n\n  \n{\"a\":2}\r\n{\"a\":3}");
  auto rows = io::read_jsonl_file(dir + "/ok.jsonl");
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[2]["a"].get<int>(), 3);

  write_text(dir + "/bad.jsonl", "{\"a\":1}\n\n{\"a\":}\n");
  const std::string msg = error_of([&] { io::read_jsonl_file(dir + "/bad.jsonl"); });
  EXPECT_NE(msg.find(dir + "/bad.jsonl: line 3: malformed JSON"), std::string::npos) << msg;
}

TEST(JsonIo, WriteJsonAtomicRoundTrips) {
  const std::string path = p2dpo::test::scratch_dir("json_write") + "/sub/out.json";
  json j = {{"b", 2}, {"a", {1, 2, 3}}, {"s", "h\xc3\xa9"}};
  io::write_json_atomic(path, j);
  EXPECT_EQ(io::read_json_file(path), j);
  const std::string text = io::read_file(path);
  EXPECT_EQ(text.back(), '\n');
  EXPECT_NE(text.find("\n  \"a\""), std::string::npos) << "indent 2 expected: " << text;
}

TEST(JsonIo, AppenderAppendsAndFlushes) {
  const std::string path = p2dpo::test::scratch_dir("jsonl_append") + "/log.jsonl";
  {
    io::JsonlAppender out(path);
    out.write({{"i", 0}});
    // Flushed: visible to a reader before close.
    EXPECT_EQ(io::read_jsonl_file(path).size(), 1u);
    out.write({{"i", 1}});
  }
  {
    io::JsonlAppender out(path);
    out.write({{"i", 2}});
  }
  auto rows = io::read_jsonl_file(path);
  ASSERT_EQ(rows.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(rows[i]["i"].get<int>(), i);
}

TEST(JsonIo, AppenderCutsTruncatedLastLine) {
  const std::string path = p2dpo::test::scratch_dir("jsonl_trunc") + "/log.jsonl";
  write_text(path, "{\"i\":0}\n{\"i\":1}\n{\"i\":2, \"te");  // crash mid-write
  {
    io::JsonlAppender out(path);
    out.write({{"i", 3}});
  }
  EXPECT_EQ(io::read_file(path), "{\"i\":0}\n{\"i\":1}\n{\"i\":3}\n");

  // A file holding only a partial line becomes empty before the append.
  write_text(path, "{\"par");
  {
    io::JsonlAppender out(path);
    out.write(1);
  }
  EXPECT_EQ(io::read_file(path), "1\n");

  // A complete last line that only lacks its newline is kept.
  write_text(path, "{\"i\":0}\n{\"i\":1}");
  {
    io::JsonlAppender out(path);
    out.write({{"i", 2}});
  }
  EXPECT_EQ(io::read_file(path), "{\"i\":0}\n{\"i\":1}\n{\"i\":2}\n");
}

TEST(JsonIo, GetRequiredAndOptional) {
  const json j = {{"n", 5}, {"f", 0.5}, {"s", "x"}, {"b", true}, {"nul", nullptr}, {"neg", -3}};
  EXPECT_EQ(io::get_required<int64_t>(j, "n", "c.json", "cfg"), 5);
  EXPECT_DOUBLE_EQ(io::get_required<double>(j, "n", "c.json", "cfg"), 5.0);  // int is a valid number
  EXPECT_DOUBLE_EQ(io::get_required<double>(j, "f", "c.json", "cfg"), 0.5);
  EXPECT_EQ(io::get_required<std::string>(j, "s", "c.json", "cfg"), "x");
  EXPECT_TRUE(io::get_required<bool>(j, "b", "c.json", "cfg"));
  EXPECT_EQ(io::get_optional<int64_t>(j, "absent", 7, "c.json", "cfg"), 7);
  EXPECT_EQ(io::get_optional<int64_t>(j, "nul", 7, "c.json", "cfg"), 7);
  EXPECT_EQ(io::get_optional<int64_t>(j, "n", 7, "c.json", "cfg"), 5);
}

TEST(JsonIo, GetterErrorsNameFileFieldAndTypes) {
  const json j = {{"s", "x"}, {"f", 0.5}, {"neg", -3}, {"b", true}};
  EXPECT_EQ(error_of([&] { io::get_required<double>(j, "s", "c.json", "text_config"); }),
            "c.json: field 'text_config.s': expected number, got string");
  EXPECT_EQ(error_of([&] { io::get_required<int64_t>(j, "missing", "c.json", "text_config"); }),
            "c.json: missing required field 'text_config.missing'");
  EXPECT_EQ(error_of([&] { io::get_optional<int64_t>(j, "f", 1, "c.json", ""); }),
            "c.json: field 'f': expected integer, got number");
  EXPECT_EQ(error_of([&] { io::get_optional<int64_t>(j, "b", 1, "c.json", ""); }),
            "c.json: field 'b': expected integer, got boolean");
  EXPECT_EQ(error_of([&] { io::get_required<uint32_t>(j, "neg", "c.json", ""); }),
            "c.json: field 'neg': value -3 out of range");
  EXPECT_EQ(error_of([&] { io::get_required<std::string>(j, "f", "c.json", "x"); }),
            "c.json: field 'x.f': expected string, got number");
}
