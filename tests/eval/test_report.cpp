// `p2dpo report`: discovery and labelling of run directories, the paper-shaped tables (best value,
// deltas vs base), SVG charts, HTML escaping and well-formedness, and the page as headless
// Chromium renders it (every section, chart and table in the DOM, no console error, a screenshot).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "eval/html_report.h"
#include "eval/report.h"
#include "eval/svg_chart.h"
#include "io/atomic_file.h"
#include "test_paths.h"
#include "test_util.h"

namespace p2dpo::eval {
namespace {
namespace fs = std::filesystem;

std::string fixture() { return test::data_path("eval/report-run"); }

size_t count_of(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t pos = haystack.find(needle); pos != std::string::npos; pos = haystack.find(needle, pos + needle.size())) ++n;
  return n;
}

const ResultDoc* find_result(const ReportInputs& in, const std::string& benchmark, const std::string& label) {
  for (const auto& r : in.results)
    if (r.benchmark == benchmark && r.label == label) return &r;
  return nullptr;
}

const Table* find_table(const ReportModel& m, const std::string& id) {
  for (const auto& s : m.sections)
    for (const auto& b : s.blocks)
      if (b.kind == Block::Kind::TableBlock && b.table.id == id) return &b.table;
  return nullptr;
}

std::set<std::string> section_ids(const ReportModel& m) {
  std::set<std::string> ids;
  for (const auto& s : m.sections) ids.insert(s.id);
  return ids;
}

const std::vector<std::string> kAllSections = {"overview",         "table2-pope",   "figure4-noise", "table1-afr",
                                               "table3-ips",       "table4-benchmarks", "table5-filter",
                                               "pairs-truth",
                                               "table6-crop-clip", "training",      "heatmaps",      "other-benchmarks",
                                               "configs"};

// Non-void elements must nest and close; returns "" or what is wrong.
std::string tag_balance_error(const std::string& html) {
  static const std::set<std::string> kVoid = {"meta", "img", "br", "hr", "input", "link", "col"};
  static const std::regex kTag(R"(<(/?)([a-zA-Z][a-zA-Z0-9]*)([^<>]*)>)");
  std::vector<std::string> stack;
  // Skip the <style> body (no tags inside, but keep the scan simple and safe).
  for (auto it = std::sregex_iterator(html.begin(), html.end(), kTag); it != std::sregex_iterator(); ++it) {
    const std::string closing = (*it)[1], name = (*it)[2], rest = (*it)[3];
    if (kVoid.count(name) || (!rest.empty() && rest.back() == '/')) continue;
    if (closing.empty()) {
      stack.push_back(name);
    } else {
      if (stack.empty() || stack.back() != name)
        return "unexpected </" + name + "> (open: " + (stack.empty() ? std::string("none") : stack.back()) + ")";
      stack.pop_back();
    }
  }
  return stack.empty() ? "" : "unclosed <" + stack.back() + ">";
}

// ------------------------------------------------------------------ charts

TEST(ReportSvg, LineChartHasOnePolylinePerSeriesAndOneMarkerPerFinitePoint) {
  LineChart c;
  c.id = "t";
  c.title = "F1 <vs> sigma";
  c.x_label = "sigma";
  c.y_label = "F1";
  c.series = {{"base", {0, 0.1, 0.2}, {80, 78, 70}}, {"p2dpo & co", {0, 0.1, 0.2, 0.3}, {82, NAN, 79, 75}}};
  const std::string svg = render_line_chart(c);
  EXPECT_EQ(count_of(svg, "<polyline"), 2u);
  EXPECT_EQ(count_of(svg, "<circle"), 6u);  // 3 + 3 finite
  EXPECT_EQ(count_of(svg, "<svg"), 1u);
  EXPECT_EQ(count_of(svg, "</svg>"), 1u);
  EXPECT_NE(svg.find("<title id=\"t-title\">F1 &lt;vs&gt; sigma</title>"), std::string::npos);
  EXPECT_NE(svg.find("aria-labelledby=\"t-title t-desc\""), std::string::npos);
  EXPECT_NE(svg.find("p2dpo &amp; co"), std::string::npos);  // legend, escaped
  EXPECT_EQ(svg.find("p2dpo & co"), std::string::npos);
  EXPECT_EQ(tag_balance_error(svg), "");
  // The polyline of the second series has its three finite points.
  const std::regex poly("<polyline[^>]*points=\"([^\"]*)\"");
  std::vector<size_t> points;
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), poly); it != std::sregex_iterator(); ++it) {
    const std::string pts = (*it)[1].str();
    points.push_back(static_cast<size_t>(std::count(pts.begin(), pts.end(), ',')));  // one comma per x,y pair
  }
  EXPECT_EQ(points, (std::vector<size_t>{3, 3}));

  LineChart many = c;
  many.series = {{"long", {}, {}}};
  for (int i = 0; i < 100; ++i) many.series[0].x.push_back(i), many.series[0].y.push_back(i * 0.5);
  const std::string long_svg = render_line_chart(many);
  EXPECT_EQ(count_of(long_svg, "<circle"), 0u);  // more points than max_markers: line only
  EXPECT_EQ(count_of(long_svg, "<polyline"), 1u);
}

TEST(ReportSvg, BarChartHasOneBarPerFiniteValue) {
  BarChart b;
  b.title = "IPS";
  b.y_label = "mean";
  b.categories = {"focus", "robust", "external"};
  b.series = {{"a", {}, {1.0, -2.0, 3.0}}, {"b", {}, {4.0, NAN, 0.5}}};
  const std::string svg = render_bar_chart(b);
  EXPECT_EQ(count_of(svg, "<rect class=\"bar\""), 5u);
  EXPECT_EQ(tag_balance_error(svg), "");
}

TEST(ReportSvg, NiceTicksAndLabels) {
  EXPECT_EQ(nice_ticks(0, 1), (std::vector<double>{0, 0.2, 0.4, 0.6000000000000001, 0.8, 1}));
  const auto t = nice_ticks(58.6, 75.1);
  EXPECT_DOUBLE_EQ(t.front(), 55);
  EXPECT_DOUBLE_EQ(t.back(), 80);
  EXPECT_EQ(format_tick(0.30000000000000004, 0.05), "0.30");
  EXPECT_EQ(format_tick(-0.0, 0.1), "0.0");
  EXPECT_EQ(format_tick(20, 5), "20");
}

// ------------------------------------------------------------------ escaping, base64, formats

TEST(ReportHtml, EscapingBase64AndFormats) {
  EXPECT_EQ(html_escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(format_value(0.72128, Format::Percent), "72.13");
  EXPECT_EQ(format_value(-0.0001, Format::Fixed2), "0.00");
  EXPECT_EQ(format_value(17, Format::Auto), "17");
  EXPECT_EQ(format_value(14.7312, Format::Auto), "14.73");
  EXPECT_EQ(format_value(NAN, Format::Fixed2), "–");
}

TEST(ReportModel, FinalizeMarksBestAndDeltasAgainstTheBaseRow) {
  Table t;
  t.columns = {{"F1", Better::Higher}, {"CHAIR", Better::Lower}, {"yes", Better::Half}, {"n", Better::None}};
  auto row = [](const std::string& label, std::vector<double> v) {
    TableRow r;
    r.label = label;
    r.is_base = is_base_label(label);
    for (double x : v) {
      Cell c;
      c.value = x;
      r.cells.push_back(c);
    }
    return r;
  };
  t.rows = {row("eval/base", {0.80, 0.20, 0.60, 10}), row("eval/p2dpo", {0.85, 0.25, 0.52, 10}),
            row("eval/vcd", {0.70, 0.10, 0.45, 12})};
  finalize_table(t);
  EXPECT_TRUE(t.rows[1].cells[0].best);   // highest F1
  EXPECT_TRUE(t.rows[2].cells[1].best);   // lowest CHAIR
  EXPECT_TRUE(t.rows[1].cells[2].best);   // yes closest to 0.5
  EXPECT_FALSE(t.rows[0].cells[3].best);  // no direction, no best
  EXPECT_FALSE(t.rows[0].cells[0].delta.has_value());  // the base row itself
  ASSERT_TRUE(t.rows[1].cells[0].delta.has_value());
  EXPECT_NEAR(*t.rows[1].cells[0].delta, 0.05, 1e-12);
  EXPECT_EQ(t.rows[1].cells[0].delta_sign, 1);
  EXPECT_EQ(t.rows[1].cells[1].delta_sign, -1);  // CHAIR went up: worse
  EXPECT_EQ(t.rows[1].cells[2].delta_sign, 1);   // 0.52 is closer to 0.5 than 0.60
  EXPECT_EQ(t.rows[2].cells[2].delta_sign, 1);   // 0.45 too
  EXPECT_FALSE(t.rows[2].cells[3].delta.has_value());

  EXPECT_TRUE(is_base_label("base"));
  EXPECT_TRUE(is_base_label("run/eval/base"));
  EXPECT_TRUE(is_base_label("base-pope"));
  EXPECT_FALSE(is_base_label("eval/baseline-dpo"));
  EXPECT_FALSE(is_base_label("database"));
  EXPECT_EQ(guess_direction("metrics.CHAIR_i"), Better::Lower);
  EXPECT_EQ(guess_direction("recall"), Better::Higher);
  EXPECT_EQ(guess_direction("yes_ratio"), Better::Half);
  EXPECT_EQ(guess_direction("n"), Better::None);
  EXPECT_EQ(guess_direction("pacc_n"), Better::None);
  EXPECT_EQ(guess_direction("pacc"), Better::Higher);
  EXPECT_EQ(guess_direction("afr_mean_over_layers"), Better::Higher);
  EXPECT_EQ(guess_direction("pacc_layer"), Better::None);
}

// ------------------------------------------------------------------ discovery

TEST(ReportDiscovery, LabelsByDirectoryAndReadsPairsTrainingAndConfigs) {
  const ReportInputs in = discover_report_inputs({fixture()});
  ASSERT_EQ(in.runs, (std::vector<std::string>{"report-run"}));
  for (const char* variant : {"eval/base", "eval/p2dpo"})
    for (const char* b : {"pope", "chair", "afr", "hallusionbench", "amber", "mmhal"})
      EXPECT_NE(find_result(in, b, variant), nullptr) << b << " " << variant;
  EXPECT_NE(find_result(in, "pope", "eval/vcd"), nullptr);
  EXPECT_NE(find_result(in, "ips", "eval/p2dpo"), nullptr);
  EXPECT_NE(find_result(in, "mystery", "eval/vcd"), nullptr);
  EXPECT_EQ(in.results.size(), 15u);  // the JSONL question file under world/ is not a result, nor an error
  ASSERT_EQ(in.pairs.size(), 1u);
  EXPECT_EQ(in.pairs[0].label, "pairs");
  ASSERT_EQ(in.pairs[0].samples.size(), 2u);  // the record without a heat-map is skipped
  EXPECT_EQ(in.pairs[0].samples[0].id, "prompts-000000-0");
  EXPECT_EQ(in.pairs[0].samples[0].bbox, (std::vector<double>{135, 26, 231, 122}));
  EXPECT_EQ(in.pairs[0].samples[0].heatmap_png.compare(1, 3, "PNG"), 0);
  ASSERT_EQ(in.trains.size(), 1u);
  EXPECT_EQ(in.trains[0].label, "train");
  EXPECT_EQ(in.trains[0].metrics.size(), 8u);
  ASSERT_EQ(in.configs.size(), 1u);  // results.json without a benchmark key
  EXPECT_EQ(in.configs[0].label, "results.json");
}

TEST(ReportDiscovery, SeveralRunsArePrefixedAndSameDirectoryDuplicatesUseTheFileName) {
  const std::string dir = test::scratch_dir("report_runs");
  const std::string other = dir + "/other";
  fs::create_directories(other + "/eval/base");
  fs::copy_file(fixture() + "/eval/base/pope.json", other + "/eval/base/pope.json");
  fs::copy_file(fixture() + "/eval/base/pope.json", other + "/eval/base/pope-vcd.json");
  fs::create_directories(other + "/eval/p2dpo/pope/answers");  // `p2dpo eval pope --out eval/p2dpo/pope`
  fs::copy_file(fixture() + "/eval/p2dpo/pope.json", other + "/eval/p2dpo/pope/results.json");
  io::write_file_atomic(other + "/eval/p2dpo/pope/answers/x.jsonl.run.json", "{\"benchmark\": \"pope\"}");
  const ReportInputs in = discover_report_inputs({fixture(), other, fixture() + "/eval/p2dpo/chair.json"});
  EXPECT_EQ(in.runs, (std::vector<std::string>{"report-run", "other", "chair"}));
  EXPECT_NE(find_result(in, "pope", "report-run/eval/base"), nullptr);
  EXPECT_NE(find_result(in, "pope", "other/eval/base/pope"), nullptr);
  EXPECT_NE(find_result(in, "pope", "other/eval/base/pope-vcd"), nullptr);
  EXPECT_NE(find_result(in, "pope", "other/eval/p2dpo"), nullptr);  // the benchmark's own directory is not a variant
  EXPECT_NE(find_result(in, "chair", "chair"), nullptr);  // a single results file: its name
  EXPECT_EQ(in.trains.at(0).label, "report-run/train");

  // Deltas in one table compare each run with its own base row.
  const ReportModel m = build_report_model(in, "t");
  const Table* t2 = find_table(m, "table2");
  ASSERT_NE(t2, nullptr);
  std::vector<std::string> labels;
  for (const auto& r : t2->rows) labels.push_back(r.label);
  EXPECT_EQ(labels, (std::vector<std::string>{"report-run/eval/base", "report-run/eval/p2dpo", "report-run/eval/vcd",
                                              "other/eval/base/pope", "other/eval/base/pope-vcd", "other/eval/p2dpo",
                                              "chair"}));
}

TEST(ReportDiscovery, MalformedJsonAndMissingRunAreInputErrors) {
  const std::string dir = test::scratch_dir("report_bad");
  fs::create_directories(dir + "/eval/base");
  io::write_file_atomic(dir + "/eval/base/pope.json", "{\"benchmark\": \"pope\", ");
  const std::string msg = test::error_of([&] { discover_report_inputs({dir}); });
  EXPECT_NE(msg.find(dir + "/eval/base/pope.json"), std::string::npos) << msg;
  const std::string missing = test::error_of([&] { discover_report_inputs({dir + "/nope"}); });
  EXPECT_NE(missing.find("nope"), std::string::npos) << missing;
  fs::create_directories(dir + "/t");
  io::write_file_atomic(dir + "/t/metrics.jsonl", "{\"step\": 1}\n{oops\n");
  fs::remove(dir + "/eval/base/pope.json");
  const std::string metrics = test::error_of([&] { discover_report_inputs({dir}); });
  EXPECT_NE(metrics.find("metrics.jsonl"), std::string::npos) << metrics;
}

// ------------------------------------------------------------------ model and HTML

TEST(ReportModel, EverySectionOfTheFixtureWithPaperShapedTables) {
  const ReportModel m = build_report_model(discover_report_inputs({fixture()}), "t");
  for (const auto& id : kAllSections) EXPECT_TRUE(section_ids(m).count(id)) << id;
  EXPECT_TRUE(m.omitted.empty());
  const Table* t2 = find_table(m, "table2");
  ASSERT_NE(t2, nullptr);
  ASSERT_EQ(t2->columns.size(), 15u);  // 4 x (Acc, F1, Yes) + CHAIR_s, CHAIR_i, Recall
  ASSERT_EQ(t2->rows.size(), 3u);
  EXPECT_EQ(t2->rows[0].label, "eval/base");
  EXPECT_TRUE(t2->rows[0].is_base);
  // p2dpo's adversarial F1 is +3 points over base and the best of the column.
  const Cell& f1 = t2->rows[1].cells[1];
  ASSERT_TRUE(f1.value && f1.delta);
  EXPECT_NEAR(*f1.delta, 0.03, 1e-9);
  EXPECT_EQ(f1.delta_sign, 1);
  EXPECT_TRUE(f1.best);
  EXPECT_NEAR(*t2->rows[0].cells[1].value, 0.7279843444227007, 1e-12);
  EXPECT_NEAR(*t2->rows[1].cells[13].value, 0.15, 1e-12);  // CHAIR_i from the nested metrics
  EXPECT_EQ(t2->columns[13].format, Format::Percent);       // fractions shown as percent
  const Table* t4 = find_table(m, "table4");
  ASSERT_NE(t4, nullptr);
  EXPECT_EQ(t4->rows.size(), 2u);
  const Table* t3 = find_table(m, "table3");
  ASSERT_NE(t3, nullptr);
  EXPECT_EQ(t3->rows.size(), 4u);  // ips focus/robust + recorded focus/robust
  EXPECT_NE(find_table(m, "table5-pairs"), nullptr);
  EXPECT_NE(find_table(m, "table6-pairs"), nullptr);
  // The fixture's pairs/sanity.json: focus and robust rows, each winner against the own answer.
  const Table* order = find_table(m, "pairs-truth-order");
  const Table* own = find_table(m, "pairs-truth-vs-own");
  ASSERT_NE(order, nullptr);
  ASSERT_NE(own, nullptr);
  ASSERT_EQ(order->rows.size(), 2u);
  ASSERT_EQ(own->rows.size(), 2u);
  EXPECT_EQ(order->rows[1].label, "pairs · robust");
  EXPECT_NEAR(*order->rows[1].cells[1].value, 0.75, 1e-12);
  EXPECT_NEAR(*own->rows[0].cells[2].value, 0.5, 1e-12);  // focus: own answer better in 2 of 4
  EXPECT_EQ(*own->rows[0].cells[0].value, 4.0);
  EXPECT_GE(m.charts, 8u);
}

TEST(ReportHtml, WellFormedEscapedSelfContainedAndWrittenAtomically) {
  const std::string dir = test::scratch_dir("report_html");
  const std::string out = dir + "/report.html";
  const ReportModel m = write_report({fixture()}, out, "Report <title> & co");
  const std::string html = io::read_file(out);
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_EQ(tag_balance_error(html), "");
  EXPECT_FALSE(fs::exists(io::temp_path_for(out)));
  EXPECT_NE(html.find("<title>Report &lt;title&gt; &amp; co</title>"), std::string::npos);
  // Injected text from a pair record, a config and a metric name stays text.
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_NE(html.find("What is &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; left"), std::string::npos);
  EXPECT_EQ(html.find("<b>injected</b>"), std::string::npos);
  EXPECT_NE(html.find("&lt;/pre&gt;&lt;b&gt;injected&lt;/b&gt;"), std::string::npos);
  EXPECT_EQ(html.find("<img src=x"), std::string::npos);
  // No network: only data: images, and a CSP that blocks anything else.
  EXPECT_EQ(count_of(html, "http://"), count_of(html, "xmlns=\"http://www.w3.org/2000/svg\""));
  EXPECT_EQ(html.find("https://"), std::string::npos);
  EXPECT_EQ(count_of(html, "<img src=\"data:image/png;base64,"), 2u);
  EXPECT_NE(html.find("Content-Security-Policy"), std::string::npos);
  EXPECT_EQ(count_of(html, "<svg"), m.charts);
  EXPECT_EQ(count_of(html, "<table"), m.tables);
  for (const auto& id : kAllSections) {
    EXPECT_NE(html.find("<section id=\"" + id + "\">"), std::string::npos) << id;
    EXPECT_NE(html.find("<a href=\"#" + id + "\">"), std::string::npos) << id;
  }
  EXPECT_NE(html.find("<details><summary>train/config.json (training)</summary>"), std::string::npos);

  // A run with only a POPE result: the other sections are left out with a note, not an error.
  const ReportModel small = write_report({fixture() + "/eval/base/pope.json"}, dir + "/small.html", "small");
  EXPECT_EQ(section_ids(small), (std::set<std::string>{"overview", "table2-pope", "figure4-noise", "configs"}));
  EXPECT_GE(small.omitted.size(), 6u);
  EXPECT_NE(io::read_file(dir + "/small.html").find("Not shown: Table 1 (AFR, P-Acc)"), std::string::npos);
}

// ------------------------------------------------------------------ headless Chromium

std::string find_chromium() {
  if (const char* env = std::getenv("P2DPO_CHROMIUM"); env && *env) return env;
  const char* path = std::getenv("PATH");
  std::stringstream ss(path ? path : "");
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    for (const char* name : {"chromium", "chromium-browser"}) {
      const fs::path p = fs::path(dir) / name;
      if (fs::is_regular_file(p) && access(p.c_str(), X_OK) == 0) return p.string();
    }
  }
  return "";
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs headless Chromium on `url` with extra flags; stdout and stderr go to files.
int run_chromium(const std::string& chromium, const std::string& scratch, const std::string& flags,
                 const std::string& url, const std::string& out, const std::string& err) {
  const std::string cmd = "timeout 180 " + shell_quote(chromium) +
                          " --headless --no-sandbox --disable-gpu --no-first-run --hide-scrollbars"
                          " --user-data-dir=" + shell_quote(scratch + "/profile") +
                          " --virtual-time-budget=3000 --enable-logging=stderr --v=0 " + flags + " " +
                          shell_quote(url) + " > " + shell_quote(out) + " 2> " + shell_quote(err);
  return std::system(cmd.c_str());
}

TEST(ReportChromium, RendersEverySectionChartAndTableWithoutConsoleErrors) {
  const std::string chromium = find_chromium();
  ASSERT_FALSE(chromium.empty())
      << "headless Chromium not found: install Debian's `chromium` (scripts/install-deps.sh) or set P2DPO_CHROMIUM";
  ASSERT_EQ(access(chromium.c_str(), X_OK), 0) << "P2DPO_CHROMIUM=" << chromium << " is not an executable file";
  const std::string dir = test::scratch_dir("report_chromium");
  const std::string report = fs::absolute(dir + "/report.html").string();
  const ReportModel m = write_report({fixture()}, report, "P2-DPO report");
  const std::string url = "file://" + report;

  ASSERT_EQ(run_chromium(chromium, dir, "--dump-dom", url, dir + "/dom.html", dir + "/dom.err"), 0)
      << io::read_file(dir + "/dom.err");
  const std::string dom = io::read_file(dir + "/dom.html");
  for (const auto& id : kAllSections) EXPECT_NE(dom.find("id=\"" + id + "\""), std::string::npos) << id;
  EXPECT_EQ(count_of(dom, "<svg"), m.charts);
  EXPECT_EQ(count_of(dom, "<table"), m.tables);
  EXPECT_GE(m.charts, 8u);
  EXPECT_NE(dom.find("id=\"table2\""), std::string::npos);
  EXPECT_EQ(count_of(dom, "<polyline"), count_of(io::read_file(report), "<polyline"));
  // Console messages (a CSP violation, a failed load) are logged as INFO:CONSOLE.
  const std::string err = io::read_file(dir + "/dom.err");
  EXPECT_EQ(err.find(":CONSOLE"), std::string::npos) << err;

  const std::string png = dir + "/shot.png";
  ASSERT_EQ(run_chromium(chromium, dir, "--window-size=1280,1600 --screenshot=" + shell_quote(png), url,
                         dir + "/shot.out", dir + "/shot.err"),
            0)
      << io::read_file(dir + "/shot.err");
  ASSERT_TRUE(fs::exists(png));
  const std::string bytes = io::read_file(png);
  EXPECT_GT(bytes.size(), 10000u);  // a page with tables and charts, not a blank
  EXPECT_EQ(bytes.compare(0, 8, "\x89PNG\r\n\x1a\n"), 0);
}

}  // namespace
}  // namespace p2dpo::eval
