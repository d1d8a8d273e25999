// p2dpo report: one self-contained HTML report over run directories (pairs, training, evaluation
// results), comparing variants side by side in the paper's table shapes.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "eval/html_report.h"

namespace p2dpo::cli {

void register_report(CLI::App& app) {
  struct Opts {
    std::vector<std::string> runs;
    std::string out = "report.html";
    std::string title = "P2-DPO report";
    int max_depth = 6;
    size_t samples = 4;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "report",
      "Write one self-contained HTML report (tables in the paper's shapes, inline SVG charts, embedded heat-maps, "
      "configs) from run directories and/or results files; several runs compare side by side");
  cmd->add_option("runs", o->runs,
                  "RUN_DIR... : directories holding pairs/, train*/, eval/<variant>/<benchmark>.json (scanned "
                  "recursively), or single results JSON files")
      ->required();
  cmd->add_option("--out", o->out, "the HTML file to write (atomically)")->capture_default_str();
  cmd->add_option("--title", o->title, "the report's title")->capture_default_str();
  cmd->add_option("--max-depth", o->max_depth, "directory levels scanned below each RUN_DIR")
      ->capture_default_str()
      ->check(CLI::Range(0, 32));
  cmd->add_option("--samples", o->samples, "heat-map samples shown per pair run")->capture_default_str();
  cmd->callback([o]() {
    eval::DiscoverOptions opts;
    opts.max_depth = o->max_depth;
    opts.heatmap_samples = o->samples;
    const eval::ReportModel m = eval::write_report(o->runs, o->out, o->title, opts);
    std::printf("report: %s (%zu sections, %zu tables, %zu charts)\n", o->out.c_str(), m.sections.size(), m.tables,
                m.charts);
    for (const auto& s : m.omitted) std::printf("  not shown: %s\n", s.c_str());
    for (const auto& n : m.notes) std::printf("  note: %s\n", n.c_str());
  });
}

}  // namespace p2dpo::cli
