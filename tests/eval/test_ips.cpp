// Implicit preference strength (Table 3): measured with a model equals what `p2dpo pairs` recorded
// with the same model; external pairs are measured on (I, P); a trained adapter moves it.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "cli_run.h"
#include "eval/ips.h"
#include "io/json_io.h"
#include "models/load.h"
#include "test_paths.h"
#include "test_util.h"

namespace p2dpo::eval {
namespace {
using nlohmann::json;

std::string world_model() { return std::string(P2DPO_TEST_DATA) + "/../../models/world/base"; }

TEST(Ips, MeasuredEqualsRecordedForTheGeneratingModel) {
  IpsOptions o;
  o.pairs_path = test::data_path("train/world-pairs");
  o.images_dir = test::data_path("pairs");
  o.limit = 5;
  o.progress = false;
  const json rec = recorded_ips(o);
  auto model = models::load_model(world_model());
  o.out_dir = test::scratch_dir("ips_measured");
  const json got = measure_ips(*model, o);
  EXPECT_EQ(rec["source"], "recorded");
  EXPECT_EQ(got["source"], "model");
  EXPECT_EQ(got["n_pairs"], 5);
  for (const char* kind : {"focus", "robust"}) {
    EXPECT_NEAR(got[kind]["mean"].get<double>(), rec[kind]["mean"].get<double>(), 1e-3) << kind;
    EXPECT_NEAR(got[kind]["std"].get<double>(), rec[kind]["std"].get<double>(), 1e-3) << kind;
    EXPECT_EQ(got[kind]["share_negative"], rec[kind]["share_negative"]) << kind;
    EXPECT_GE(got[kind]["std_ddof1"].get<double>(), got[kind]["std"].get<double>()) << kind;
  }
  const auto rows = io::read_jsonl_file(o.out_dir + "/ips.jsonl");
  ASSERT_EQ(rows.size(), 5u);
  EXPECT_NEAR(rows[0]["focus"]["ips"].get<double>(),
              rows[0]["focus"]["chosen"].get<double>() - rows[0]["focus"]["rejected"].get<double>(), 1e-9);
  EXPECT_TRUE(std::filesystem::exists(o.out_dir + "/results.json"));
}

TEST(Ips, ExternalPairsAndErrors) {
  const std::string dir = test::scratch_dir("ips_external");
  const std::string img = test::data_path("pairs/images/prompts/prompts-000000.png");
  {
    std::ofstream f(dir + "/ext.jsonl");
    f << json{{"image", img}, {"question", "What is in the image?"}, {"chosen", "A large blue triangle."}, {"rejected", "A cat."}}.dump() << "\n";
    f << json{{"image", img}, {"question", "What is in the image?"}, {"chosen", "A cat."}, {"rejected", "A large blue triangle."}}.dump() << "\n";
  }
  IpsOptions o;
  o.pairs_path = dir + "/ext.jsonl";
  o.progress = false;
  auto model = models::load_model(world_model());
  const json got = measure_ips(*model, o);
  ASSERT_TRUE(got.contains("external"));
  EXPECT_EQ(got["external"]["n"], 2);
  EXPECT_NEAR(got["external"]["mean"].get<double>(), 0.0, 1e-6);  // the two pairs are mirror images
  EXPECT_DOUBLE_EQ(got["external"]["share_negative"].get<double>(), 0.5);
  const std::string err = test::error_of([&] { recorded_ips(o); });
  EXPECT_NE(err.find("ext.jsonl"), std::string::npos) << err;

  // The CLI prints the table and refuses an adapter without a model.
  auto r = test::run_cli({"eval", "ips", "--pairs", test::data_path("train/world-pairs")});
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("focus"), std::string::npos) << r.out;
  r = test::run_cli({"eval", "ips", "--pairs", test::data_path("train/world-pairs"), "--adapter", dir});
  EXPECT_EQ(r.status, 2) << r.out;
}

}  // namespace
}  // namespace p2dpo::eval
