#pragma once
// The model of `p2dpo report`: what a set of run directories holds (discovery) and the paper-shaped
// tables, charts and samples built from it (Tables 1-6, Figure 4, training curves, heat-maps,
// configs). Rendering to HTML is html_report.h; this layer is plain data so it can be tested.
//
// Discovery walks each RUN path (a directory, bounded depth, or a single results file) and finds:
//   - result documents: *.json objects with a string "benchmark" key (pope, chair, afr, ips,
//     hallusionbench, amber, mmhal, anything else -> a generic table);
//   - pair runs: directories with stats.json and pairs.jsonl (filter/IPS/CLIP statistics, heat-maps);
//   - training runs: directories with metrics.jsonl (+ config.json, summary.json);
//   - other config.json / results.json / summary.json files (shown as resolved configs).
// Each item is labelled by its directory relative to its RUN path ("eval/base"), prefixed with the
// run's name when several RUN paths are given, so variants of several runs compare row by row. An
// evaluator's own output directory named after its benchmark (eval/base/pope/results.json) does not
// count: that result is "eval/base" too.
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval/svg_chart.h"

namespace p2dpo::eval {

// ---------------------------------------------------------------- discovery

struct ResultDoc {
  size_t run = 0;          // index into ReportInputs::runs
  std::string label;       // "eval/base", or "run/eval/base" with several runs
  std::string path;        // the file
  std::string benchmark;   // the document's "benchmark"
  nlohmann::json doc;
};

struct TrainRun {
  size_t run = 0;
  std::string label;
  std::string path;                    // the directory
  std::vector<nlohmann::json> metrics;  // metrics.jsonl rows (one per optimizer step)
  nlohmann::json config;               // config.json (null when absent)
  nlohmann::json summary;              // summary.json (null when absent)
};

struct PairSample {
  std::string id, question, image;
  std::string focus_chosen, focus_rejected, robust_chosen, robust_rejected;
  std::string filter_reason;
  std::vector<double> bbox;             // [x0, y0, x1, y1] in original pixels (empty when absent)
  std::optional<double> crop_ratio, clip_ratio, ips_focus, ips_robust, erased_share;
  std::string heatmap_path;
  std::string heatmap_png;              // the PNG bytes
};

struct PairsRun {
  size_t run = 0;
  std::string label;
  std::string path;
  nlohmann::json stats;    // stats.json
  nlohmann::json config;   // config.json (null when absent)
  nlohmann::json sanity;   // sanity.json: `p2dpo world pairs-sanity` on a world run (null when absent)
  std::vector<PairSample> samples;  // the first few records with a heat-map
};

struct ConfigFile {
  size_t run = 0;
  std::string label;  // "train/config.json"
  std::string path;
  nlohmann::json doc;
};

struct ReportInputs {
  std::vector<std::string> runs;        // run names, in the order given
  std::vector<std::string> run_paths;
  std::vector<ResultDoc> results;
  std::vector<TrainRun> trains;
  std::vector<PairsRun> pairs;
  std::vector<ConfigFile> configs;
  std::vector<std::string> notes;       // skipped files and why
};

struct DiscoverOptions {
  int max_depth = 6;                    // directory levels below each RUN path
  size_t heatmap_samples = 4;           // per pairs run
  std::uintmax_t max_json_bytes = 64ull << 20;  // larger .json files are skipped with a note
};

// Throws InputError for a RUN path that does not exist, a malformed JSON file (one that is not
// JSON Lines either: POPE question files use .json for JSONL) or a malformed metrics/pairs line.
ReportInputs discover_report_inputs(const std::vector<std::string>& run_paths, const DiscoverOptions& opts = {});

// ---------------------------------------------------------------- report model

enum class Better { None, Higher, Lower, Half };  // Half: closest to 0.5 is best (POPE yes-ratio)
enum class Format { Auto, Percent, Fixed1, Fixed2, Fixed3, Integer };  // Percent: a fraction shown x100

struct Column {
  Column() = default;
  Column(std::string name_, Better better_ = Better::None, Format format_ = Format::Auto, std::string group_ = "",
         std::string title_ = "")
      : name(std::move(name_)), better(better_), format(format_), group(std::move(group_)), title(std::move(title_)) {}
  std::string name;
  Better better = Better::None;
  Format format = Format::Auto;
  std::string group;  // a spanning header over consecutive columns with the same group ("Adversarial")
  std::string title;  // hover text (what the column is)
};

struct Cell {
  std::optional<double> value;
  std::string text;                 // shown when value is empty
  std::optional<Format> format;     // overrides the column's (a count row in a statistics table)
  bool best = false;                // best value of its column (set by finalize_table)
  std::optional<double> delta;      // value - base row's value (set by finalize_table)
  int delta_sign = 0;               // +1 improvement, -1 degradation, 0 neutral/unknown
};

struct TableRow {
  std::string label;
  std::vector<Cell> cells;
  size_t run = 0;
  bool is_base = false;
};

struct Table {
  std::string id;
  std::string caption;
  std::string row_header = "variant";
  std::vector<Column> columns;
  std::vector<TableRow> rows;
  bool highlight_best = true;
  bool deltas = true;
  std::string note;
};

struct SampleFigure {
  std::string caption;
  std::string png;  // bytes
  std::vector<std::pair<std::string, std::string>> facts;  // shown as a definition list
};

struct Block {
  enum class Kind { Paragraph, TableBlock, Line, Bar, Sample, Details };
  Kind kind = Kind::Paragraph;
  std::string text;     // Paragraph text; Details: the summary line
  std::string pre;      // Details: the preformatted body (pretty JSON)
  Table table;
  LineChart line;
  BarChart bar;
  SampleFigure sample;
};

struct Section {
  std::string id;
  std::string title;
  std::vector<Block> blocks;
};

struct ReportModel {
  std::string title;
  std::vector<Section> sections;
  std::vector<std::string> omitted;     // "Table 1 (AFR, P-Acc): no afr results found"
  std::vector<std::string> notes;       // from discovery
  std::vector<std::string> runs;        // "name: path"
  size_t charts = 0;                    // line + bar charts in all sections
  size_t tables = 0;
};

// Builds every section the inputs support; sections without data are listed in `omitted`.
ReportModel build_report_model(const ReportInputs& inputs, const std::string& title);

// Marks the best cell per column (at least two values) and fills deltas against each row's base
// row: the row of the same run whose last label component is "base" (or starts with "base-"),
// else the only such row in the table.
void finalize_table(Table& table);

// "eval/base" -> true for "base", "base-pope", "run/eval/base".
bool is_base_label(const std::string& label);

// Numeric leaves of a JSON object as dotted paths ("results.official.qAcc.percent"), skipping
// protocol/warnings/counter/distribution subtrees and arrays, up to `max_depth` levels.
std::vector<std::pair<std::string, double>> flatten_metrics(const nlohmann::json& doc, int max_depth = 3);

// The direction a metric name suggests (chair/hal/loss/ppl lower, acc/f1/recall/score higher, ...).
Better guess_direction(const std::string& name);

}  // namespace p2dpo::eval
