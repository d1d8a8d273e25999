// The op profile behind `--profile`: phases ended by SyncedLap laps, top-level ops counted once
// (aten::matmul, not also the aten::mm inside it), and files a reader can open.
#include <gtest/gtest.h>
#include <torch/types.h>

#include <filesystem>

#include "io/json_io.h"
#include "models/op_profile.h"
#include "models/synced_lap.h"
#include "test_paths.h"

namespace p2dpo::models {
namespace {

using nlohmann::json;

const json& phase_named(const json& summary, const std::string& name) {
  for (const auto& p : summary.at("phases"))
    if (p.at("phase") == name) return p;
  throw std::runtime_error("no phase " + name);
}

bool has_op(const json& phase, const std::string& op) {
  for (const auto& t : phase.at("top_ops_by_self_time"))
    if (t.at("name") == op) return true;
  return false;
}

TEST(OpProfile, PhasesCountTopLevelOpsAndWriteTraceAndSummary) {
  const auto a = torch::randn({32, 32}), b = torch::randn({32, 32});
  OpProfile::phase_end("nothing is recording");  // a no-op without a profile
  const std::string dir = test::scratch_dir("op_profile");
  json summary;
  {
    OpProfile profile(/*cuda=*/false);
    EXPECT_THROW(OpProfile second(false), std::runtime_error);  // one profile at a time
    SyncedLap lap(false);
    lap.next();  // an unnamed lap ends no phase
    for (int i = 0; i < 3; ++i) (void)torch::matmul(a, b);
    lap.next("products");
    for (int i = 0; i < 2; ++i) (void)torch::tanh(a);
    lap.next("tanh");
    (void)torch::tanh(b);
    lap.next("products");  // a phase ended twice adds up
    summary = profile.finish(dir, "unit");
  }
  const json& products = phase_named(summary, "products");
  const json& tanh = phase_named(summary, "tanh");
  EXPECT_EQ(products.at("host_ops").get<int64_t>(), 4);  // 3 matmul + 1 tanh
  EXPECT_GE(products.at("all_ops").get<int64_t>(), 7);   // matmul's nested aten::mm counted here only
  EXPECT_TRUE(has_op(products, "aten::mm"));
  EXPECT_EQ(tanh.at("host_ops").get<int64_t>(), 2);
  EXPECT_FALSE(has_op(tanh, "aten::mm"));
  EXPECT_EQ(summary.at("phases").size(), 2u);  // "products" once, "tanh"; nothing unmarked
  EXPECT_GT(products.at("wall_s").get<double>(), 0.0);
  EXPECT_EQ(products.at("device_events").get<int64_t>(), 0);  // a CPU profile has no device work
  EXPECT_EQ(summary.at("total").at("host_ops").get<int64_t>(), 6);

  // Both files are complete JSON; the trace has the ops and one instant event per phase end.
  EXPECT_EQ(io::read_json_file(dir + "/unit.summary.json"), summary);
  const json trace = io::read_json_file(dir + "/unit.trace.json");
  int ends = 0, matmuls = 0;
  for (const auto& e : trace.at("traceEvents")) {
    if (e.at("ph") == "i") ++ends;
    if (e.at("name") == "aten::matmul") ++matmuls;
  }
  EXPECT_EQ(ends, 3);
  EXPECT_EQ(matmuls, 3);

  // Finished profiles free the slot for the next one.
  OpProfile again(false);
  (void)torch::tanh(a);
  EXPECT_EQ(again.finish(dir, "again").at("total").at("host_ops").get<int64_t>(), 1);
  EXPECT_THROW(again.finish(dir, "again"), std::runtime_error);
}

}  // namespace
}  // namespace p2dpo::models
