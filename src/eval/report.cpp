#include "eval/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>

#include "io/atomic_file.h"
#include "io/errors.h"
#include "io/json_io.h"

namespace p2dpo::eval {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// ================================================================ discovery

// Directories that never hold results: images, model weights, resumable answers, heat-maps.
bool skipped_dir(const std::string& name) {
  static const std::set<std::string> kSkip = {"images", "checkpoints", "adapter", "answers", "heatmaps", "text"};
  return name.empty() || name[0] == '.' || kSkip.count(name) > 0;
}

// POPE's question files are JSON Lines named .json: not malformed, just not one document.
bool parses_as_jsonl(const std::string& text) {
  size_t start = 0, values = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(start, end - start);
    start = end + 1;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (!json::accept(line)) return false;
    ++values;
  }
  return values >= 2;
}

std::string join_label(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  if (b.empty()) return a;
  return a + "/" + b;
}

std::string run_name_of(const fs::path& p) {
  fs::path norm = p.lexically_normal();
  if (norm.filename().empty()) norm = norm.parent_path();  // "run/" -> "run"
  std::string name = fs::is_regular_file(p) ? norm.stem().string() : norm.filename().string();
  if (name.empty() || name == "." || name == "..") name = fs::absolute(norm).lexically_normal().filename().string();
  if (name.empty()) name = "run";
  return name;
}

bool looks_like_ips_doc(const json& doc) {
  const auto src = doc.find("source");
  return src != doc.end() && src->is_string() && (*src == "model" || *src == "recorded") &&
         (doc.contains("focus") || doc.contains("external"));
}

std::optional<double> number_at(const json& j, std::initializer_list<const char*> path) {
  const json* cur = &j;
  for (const char* k : path) {
    if (!cur->is_object()) return std::nullopt;
    auto it = cur->find(k);
    if (it == cur->end()) return std::nullopt;
    cur = &*it;
  }
  if (!cur->is_number()) return std::nullopt;
  const double v = cur->get<double>();
  if (!std::isfinite(v)) return std::nullopt;
  return v;
}

std::string string_at(const json& j, std::initializer_list<const char*> path) {
  const json* cur = &j;
  for (const char* k : path) {
    if (!cur->is_object()) return "";
    auto it = cur->find(k);
    if (it == cur->end()) return "";
    cur = &*it;
  }
  return cur->is_string() ? cur->get<std::string>() : std::string();
}

class Discoverer {
 public:
  Discoverer(ReportInputs& in, const DiscoverOptions& opts) : in_(in), opts_(opts) {}

  void add_run(size_t run, const fs::path& path, bool prefix) {
    run_ = run;
    prefix_ = prefix ? in_.runs[run] : std::string();
    if (fs::is_regular_file(path)) {
      consider_json(path, prefix ? in_.runs[run] : path.stem().string(), "");
      return;
    }
    root_ = path;
    walk(path, 0);
  }

 private:
  std::string label_for(const fs::path& dir) const {
    std::string rel = dir.lexically_relative(root_).generic_string();
    if (rel == "." || rel.empty()) rel.clear();
    const std::string label = join_label(prefix_, rel);
    return label.empty() ? in_.runs[run_] : label;
  }

  void walk(const fs::path& dir, int depth) {
    std::vector<fs::directory_entry> entries;
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) entries.push_back(*it);
    if (ec) {
      in_.notes.push_back(fmt::format("{}: not readable ({})", dir.string(), ec.message()));
      return;
    }
    std::sort(entries.begin(), entries.end(),
              [](const auto& a, const auto& b) { return a.path().filename() < b.path().filename(); });
    std::set<std::string> consumed;
    const std::string label = label_for(dir);
    if (fs::is_regular_file(dir / "metrics.jsonl")) {
      read_train(dir, label);
      consumed.insert({"config.json", "summary.json"});
    }
    if (fs::is_regular_file(dir / "stats.json") && fs::is_regular_file(dir / "pairs.jsonl")) {
      read_pairs(dir, label);
      consumed.insert({"stats.json", "config.json", "manifest.json"});
    }
    for (const auto& e : entries) {
      const std::string name = e.path().filename().string();
      if (!e.is_regular_file() || e.path().extension() != ".json" || consumed.count(name)) continue;
      if (name.size() > 9 && name.compare(name.size() - 9, 9, ".run.json") == 0) continue;  // resume records
      const std::string rel = e.path().lexically_relative(root_).generic_string();
      consider_json(e.path(), label, join_label(prefix_, rel));
    }
    if (depth >= opts_.max_depth) return;
    for (const auto& e : entries) {
      if (e.is_directory() && !e.is_symlink() && !skipped_dir(e.path().filename().string())) walk(e.path(), depth + 1);
    }
  }

  // A .json file: a benchmark result, a config-like file worth showing, or nothing.
  void consider_json(const fs::path& file, const std::string& dir_label, const std::string& file_label) {
    std::error_code ec;
    const auto size = fs::file_size(file, ec);
    if (ec || size > opts_.max_json_bytes) {
      in_.notes.push_back(fmt::format("{}: skipped ({})", file.string(), ec ? ec.message() : "too large"));
      return;
    }
    const std::string text = io::read_file(file.string());
    json doc;
    try {
      doc = io::parse_json_text(text, file.string());
    } catch (const InputError&) {
      if (parses_as_jsonl(text)) return;
      throw;
    }
    if (!doc.is_object()) return;
    std::string benchmark = string_at(doc, {"benchmark"});
    if (benchmark.empty() && looks_like_ips_doc(doc)) benchmark = "ips";
    if (!benchmark.empty()) {
      in_.results.push_back({run_, dir_label, file.string(), benchmark, std::move(doc)});
      return;
    }
    const std::string name = file.filename().string();
    if (name == "config.json" || name == "results.json" || name == "summary.json") {
      in_.configs.push_back({run_, file_label.empty() ? dir_label : file_label, file.string(), std::move(doc)});
    }
  }

  json read_optional_json(const fs::path& file) {
    return fs::is_regular_file(file) ? io::read_json_file(file.string()) : json();
  }

  void read_train(const fs::path& dir, const std::string& label) {
    TrainRun t;
    t.run = run_;
    t.label = label;
    t.path = dir.string();
    t.metrics = io::read_jsonl_file((dir / "metrics.jsonl").string());
    t.config = read_optional_json(dir / "config.json");
    t.summary = read_optional_json(dir / "summary.json");
    in_.trains.push_back(std::move(t));
  }

  void read_pairs(const fs::path& dir, const std::string& label) {
    PairsRun p;
    p.run = run_;
    p.label = label;
    p.path = dir.string();
    p.stats = io::read_json_file((dir / "stats.json").string());
    p.config = read_optional_json(dir / "config.json");
    p.sanity = read_optional_json(dir / "sanity.json");
    const std::string records = (dir / "pairs.jsonl").string();
    std::ifstream f(records);
    std::string line;
    size_t line_no = 0;
    // Bounded scan: the first records with a heat-map are the samples (a full run has thousands).
    while (p.samples.size() < opts_.heatmap_samples && line_no < 10000 && std::getline(f, line)) {
      ++line_no;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      json r;
      try {
        r = json::parse(line);
      } catch (const json::exception& e) {
        throw InputError(records, fmt::format("line {}: malformed JSON: {}", line_no, e.what()));
      }
      const std::string heatmap = string_at(r, {"heatmap"});
      if (heatmap.empty()) continue;
      const fs::path png = dir / heatmap;
      if (!fs::is_regular_file(png)) {
        in_.notes.push_back(fmt::format("{}: heat-map of line {} missing ({})", records, line_no, png.string()));
        continue;
      }
      PairSample s;
      s.heatmap_path = png.string();
      s.heatmap_png = io::read_file(png.string());
      if (s.heatmap_png.size() < 8 || s.heatmap_png.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0) {
        in_.notes.push_back(fmt::format("{}: not a PNG file, not embedded", png.string()));
        continue;
      }
      s.id = string_at(r, {"id"});
      s.question = string_at(r, {"question"});
      s.image = string_at(r, {"image"});
      s.focus_chosen = string_at(r, {"focus", "chosen"});
      s.focus_rejected = string_at(r, {"focus", "rejected"});
      s.robust_chosen = string_at(r, {"robust", "chosen"});
      s.robust_rejected = string_at(r, {"robust", "rejected"});
      s.filter_reason = string_at(r, {"filter", "reason"});
      if (r.contains("bbox") && r["bbox"].is_array())
        for (const auto& v : r["bbox"])
          if (v.is_number()) s.bbox.push_back(v.get<double>());
      s.crop_ratio = number_at(r, {"crop", "ratio"});
      s.clip_ratio = number_at(r, {"clip", "ratio"});
      s.ips_focus = number_at(r, {"ips", "focus"});
      s.ips_robust = number_at(r, {"ips", "robust"});
      s.erased_share = number_at(r, {"erased_share"});
      p.samples.push_back(std::move(s));
    }
    in_.pairs.push_back(std::move(p));
  }

  ReportInputs& in_;
  const DiscoverOptions& opts_;
  size_t run_ = 0;
  std::string prefix_;
  fs::path root_;
};

// ================================================================ model helpers

std::string norm_key(const std::string& s) {
  std::string out;
  for (char c : s)
    if (std::isalnum(static_cast<unsigned char>(c))) out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string last_component(const std::string& path, char sep) {
  const auto pos = path.rfind(sep);
  return pos == std::string::npos ? path : path.substr(pos + 1);
}

// The value of the first flattened metric whose last path component is one of `names` (normalized),
// preferring the shallowest.
std::optional<double> find_metric(const json& doc, const std::vector<std::string>& names) {
  std::optional<double> best;
  size_t best_depth = 1000;
  for (const auto& [path, v] : flatten_metrics(doc, 4)) {
    const std::string key = norm_key(last_component(path, '.'));
    if (std::find(names.begin(), names.end(), key) == names.end()) continue;
    const size_t depth = static_cast<size_t>(std::count(path.begin(), path.end(), '.'));
    if (depth < best_depth) best = v, best_depth = depth;
  }
  return best;
}

// A string usable as an HTML id: letters, digits, '-' and '_' only.
std::string html_id(const std::string& s) {
  std::string out;
  for (char c : s) out += std::isalnum(static_cast<unsigned char>(c)) || c == '_' ? c : '-';
  return out;
}

Cell cell(std::optional<double> v) {
  Cell c;
  c.value = v;
  if (!v) c.text = "–";
  return c;
}
Cell text_cell(const std::string& t) {
  Cell c;
  c.text = t;
  return c;
}

LineChart line_chart(const std::string& title, const std::string& x_label, const std::string& y_label) {
  LineChart c;
  c.title = title;
  c.x_label = x_label;
  c.y_label = y_label;
  return c;
}

BarChart bar_chart(const std::string& title, const std::string& y_label) {
  BarChart c;
  c.title = title;
  c.y_label = y_label;
  return c;
}

struct RowKey {
  size_t run;
  std::string label;
};

// Rows for a label-keyed table: runs in order, base rows first, then labels alphabetically.
std::vector<RowKey> ordered_rows(std::vector<RowKey> keys) {
  std::sort(keys.begin(), keys.end(), [](const RowKey& a, const RowKey& b) {
    if (a.run != b.run) return a.run < b.run;
    const bool ab = is_base_label(a.label), bb = is_base_label(b.label);
    if (ab != bb) return ab;
    return a.label < b.label;
  });
  keys.erase(std::unique(keys.begin(), keys.end(),
                         [](const RowKey& a, const RowKey& b) { return a.run == b.run && a.label == b.label; }),
             keys.end());
  return keys;
}

TableRow make_row(const RowKey& k) {
  TableRow r;
  r.label = k.label;
  r.run = k.run;
  r.is_base = is_base_label(k.label);
  return r;
}

std::vector<const ResultDoc*> docs_of(const ReportInputs& in, const std::set<std::string>& benchmarks) {
  std::vector<const ResultDoc*> out;
  for (const auto& r : in.results)
    if (benchmarks.count(r.benchmark)) out.push_back(&r);
  return out;
}

const ResultDoc* doc_for(const std::vector<const ResultDoc*>& docs, const RowKey& k) {
  for (const auto* d : docs)
    if (d->run == k.run && d->label == k.label) return d;
  return nullptr;
}

// POPE: the results entry without noise (sigma 0), else the smallest sigma.
const json* pope_clean(const json& doc) {
  const json* best = nullptr;
  double best_sigma = 1e300;
  if (!doc.contains("results") || !doc["results"].is_array()) return nullptr;
  for (const auto& r : doc["results"]) {
    const double s = number_at(r, {"sigma"}).value_or(0.0);
    if (s < best_sigma) best = &r, best_sigma = s;
  }
  return best;
}

std::string pretty_json(const json& doc) {
  std::string s = doc.dump(2, ' ', false, json::error_handler_t::replace);
  constexpr size_t kMax = 200000;  // a config, not a data dump
  if (s.size() > kMax) s = s.substr(0, kMax) + "\n... (truncated)";
  return s;
}

class Builder {
 public:
  Builder(const ReportInputs& in, ReportModel& m) : in_(in), m_(m) {}

  void build() {
    overview();
    table2_pope();
    figure4_noise();
    table1_afr();
    table3_ips();
    table4_benchmarks();
    table5_filter();
    pairs_truth();
    table6_crop_clip();
    training();
    heatmaps();
    other_benchmarks();
    configs();
    // The overview lists what was left out, so it is filled last.
    for (const auto& o : m_.omitted) m_.sections.front().blocks.push_back(para("Not shown: " + o + "."));
  }

 private:
  static Block para(const std::string& text) {
    Block b;
    b.kind = Block::Kind::Paragraph;
    b.text = text;
    return b;
  }
  Block table_block(Table t) {
    t.id = html_id(t.id);
    finalize_table(t);
    Block b;
    b.kind = Block::Kind::TableBlock;
    b.table = std::move(t);
    ++m_.tables;
    return b;
  }
  Block line_block(LineChart c) {
    c.id = fmt::format("chart-{}", ++chart_id_);
    Block b;
    b.kind = Block::Kind::Line;
    b.line = std::move(c);
    ++m_.charts;
    return b;
  }
  Block bar_block(BarChart c) {
    c.id = fmt::format("chart-{}", ++chart_id_);
    Block b;
    b.kind = Block::Kind::Bar;
    b.bar = std::move(c);
    ++m_.charts;
    return b;
  }
  static Block details(const std::string& summary, const json& doc) {
    Block b;
    b.kind = Block::Kind::Details;
    b.text = summary;
    b.pre = pretty_json(doc);
    return b;
  }
  Section& section(const std::string& id, const std::string& title) {
    m_.sections.push_back(Section{id, title, {}});
    return m_.sections.back();
  }
  std::vector<RowKey> keys_of(const std::vector<const ResultDoc*>& docs) const {
    std::vector<RowKey> keys;
    for (const auto* d : docs) keys.push_back({d->run, d->label});
    return ordered_rows(keys);
  }

  // ------------------------------------------------------------ overview
  void overview() {
    auto& s = section("overview", "Overview");
    for (size_t i = 0; i < in_.runs.size(); ++i) {
      m_.runs.push_back(in_.runs[i] + ": " + in_.run_paths[i]);
    }
    Table t;
    t.id = "overview-inputs";
    t.caption = "What was found";
    t.row_header = "run";
    t.highlight_best = t.deltas = false;
    t.columns = {{"path"}, {"result files"}, {"benchmarks"}, {"pair runs"}, {"training runs"}};
    for (size_t i = 0; i < in_.runs.size(); ++i) {
      std::set<std::string> benches;
      size_t files = 0, pairs = 0, trains = 0;
      for (const auto& r : in_.results)
        if (r.run == i) ++files, benches.insert(r.benchmark);
      for (const auto& p : in_.pairs) pairs += p.run == i;
      for (const auto& tr : in_.trains) trains += tr.run == i;
      std::string b;
      for (const auto& x : benches) b += (b.empty() ? "" : ", ") + x;
      TableRow row;
      row.label = in_.runs[i];
      row.run = i;
      row.cells = {text_cell(in_.run_paths[i]), text_cell(std::to_string(files)), text_cell(b.empty() ? "–" : b),
                   text_cell(std::to_string(pairs)), text_cell(std::to_string(trains))};
      t.rows.push_back(std::move(row));
    }
    s.blocks.push_back(table_block(std::move(t)));
    s.blocks.push_back(para("Rows are labelled by their directory relative to the run path. Best value per column is "
                            "bold; arrows give the change against the row named base (green: better, red: worse; "
                            "yes-ratio: closer to 50 % is better). POPE and rates are percentages."));
    for (const auto& n : in_.notes) s.blocks.push_back(para("Note: " + n));
  }

  // ------------------------------------------------------------ Table 2: POPE splits + CHAIR
  void table2_pope() {
    const auto pope = docs_of(in_, {"pope"});
    const auto chair = docs_of(in_, {"chair"});
    if (pope.empty() && chair.empty()) {
      m_.omitted.push_back("Table 2 (POPE splits, CHAIR): no pope or chair results found");
      return;
    }
    auto& s = section("table2-pope", "Table 2 · POPE and CHAIR");
    std::vector<const ResultDoc*> all = pope;
    all.insert(all.end(), chair.begin(), chair.end());
    Table t;
    t.id = "table2";
    t.caption = "POPE accuracy, F1 and yes-ratio per split (clean images) and CHAIR on descriptions";
    static const std::vector<std::pair<std::string, std::string>> kSplits = {
        {"adversarial", "Adversarial"}, {"popular", "Popular"}, {"random", "Random"}, {"average", "Average"}};
    if (!pope.empty()) {
      for (const auto& [key, name] : kSplits) {
        t.columns.push_back({"Acc", Better::Higher, Format::Percent, name, "accuracy"});
        t.columns.push_back({"F1", Better::Higher, Format::Percent, name, "F1 score"});
        t.columns.push_back({"Yes", Better::Half, Format::Percent, name, "share of yes answers (50 % is balanced)"});
      }
    }
    const size_t chair_col = t.columns.size();
    if (!chair.empty()) {
      t.columns.push_back({"CHAIR_s", Better::Lower, Format::Auto, "CHAIR", "captions with a hallucinated object"});
      t.columns.push_back({"CHAIR_i", Better::Lower, Format::Auto, "CHAIR", "hallucinated object mentions"});
      t.columns.push_back({"Recall", Better::Higher, Format::Auto, "CHAIR", "true objects mentioned"});
    }
    for (const auto& k : keys_of(all)) {
      TableRow row = make_row(k);
      if (!pope.empty()) {
        const ResultDoc* d = doc_for(pope, k);
        const json* clean = d ? pope_clean(d->doc) : nullptr;
        for (const auto& [key, name] : kSplits) {
          const json part = !clean ? json()
                            : key == "average" ? clean->value("average", json())
                                               : (clean->contains("splits") ? (*clean)["splits"].value(key, json()) : json());
          row.cells.push_back(cell(number_at(part, {"accuracy"})));
          row.cells.push_back(cell(number_at(part, {"f1"})));
          row.cells.push_back(cell(number_at(part, {"yes_ratio"})));
        }
      }
      if (!chair.empty()) {
        const ResultDoc* d = doc_for(chair, k);
        row.cells.push_back(cell(d ? find_metric(d->doc, {"chairs"}) : std::nullopt));
        row.cells.push_back(cell(d ? find_metric(d->doc, {"chairi"}) : std::nullopt));
        row.cells.push_back(cell(d ? find_metric(d->doc, {"recall", "cover", "coverage"}) : std::nullopt));
      }
      t.rows.push_back(std::move(row));
    }
    percent_if_fractions(t, chair_col);
    s.blocks.push_back(table_block(std::move(t)));

    // Recall by object size (the world's small objects are below one patch).
    Table sizes;
    sizes.id = "table2-recall-by-size";
    sizes.caption = "POPE recall by object size (adversarial split, clean images)";
    sizes.columns = {{"small", Better::Higher, Format::Percent, "", "recall on small objects"},
                     {"large", Better::Higher, Format::Percent, "", "recall on large objects"}};
    for (const auto& k : keys_of(pope)) {
      const json* clean = pope_clean(doc_for(pope, k)->doc);
      if (!clean) continue;
      auto small = number_at(*clean, {"splits", "adversarial", "recall_by_size", "small", "recall"});
      auto large = number_at(*clean, {"splits", "adversarial", "recall_by_size", "large", "recall"});
      if (!small && !large) continue;
      TableRow row = make_row(k);
      row.cells = {cell(small), cell(large)};
      sizes.rows.push_back(std::move(row));
    }
    if (!sizes.rows.empty()) s.blocks.push_back(table_block(std::move(sizes)));
    if (!chair.empty()) s.blocks.push_back(generic_table_block("chair-all", "CHAIR · every metric of the results", chair));
  }

  // A column of CHAIR-like rates: fractions are shown as percentages, percentages as they are.
  static void percent_if_fractions(Table& t, size_t first_col) {
    for (size_t c = first_col; c < t.columns.size(); ++c) {
      bool fractions = true, any = false;
      for (const auto& r : t.rows)
        if (r.cells[c].value) any = true, fractions = fractions && std::abs(*r.cells[c].value) <= 1.0;
      t.columns[c].format = any && fractions ? Format::Percent : Format::Fixed2;
    }
  }

  // ------------------------------------------------------------ Figure 4: F1 vs sigma
  void figure4_noise() {
    const auto pope = docs_of(in_, {"pope"});
    std::set<double> sigmas;
    bool sweep = false;
    for (const auto* d : pope) {
      std::set<double> own;
      if (d->doc.contains("results") && d->doc["results"].is_array())
        for (const auto& r : d->doc["results"])
          if (auto s = number_at(r, {"sigma"})) own.insert(*s);
      sweep = sweep || own.size() >= 2;
      sigmas.insert(own.begin(), own.end());
    }
    if (!sweep) {
      m_.omitted.push_back(pope.empty() ? "Figure 4 (F1 vs noise): no pope results found"
                                        : "Figure 4 (F1 vs noise): no POPE result has more than one sigma");
      return;
    }
    auto& s = section("figure4-noise", "Figure 4 · POPE under Gaussian noise");
    std::string noise;
    for (const auto* d : pope) {
      const std::string n = string_at(d->doc, {"protocol", "noise"});
      if (!n.empty()) noise = n;
    }
    LineChart f1 = line_chart("POPE F1 vs noise sigma (mean of splits)", "noise sigma", "F1 (%)");
    LineChart acc = line_chart("POPE accuracy vs noise sigma (mean of splits)", "noise sigma", "accuracy (%)");
    LineChart adv = line_chart("POPE adversarial F1 vs noise sigma", "noise sigma", "F1 (%)");
    Table t;
    t.id = "figure4-table";
    t.caption = "POPE F1 (mean of splits) at each noise level" + (noise.empty() ? "" : " (" + noise + " noise)");
    for (double sg : sigmas) t.columns.push_back({fmt::format("σ={:g}", sg), Better::Higher, Format::Percent, "F1"});
    for (const auto& k : keys_of(pope)) {
      const json& doc = doc_for(pope, k)->doc;
      std::vector<std::tuple<double, double, double, double>> pts;  // sigma, f1, acc, adversarial f1
      if (doc.contains("results") && doc["results"].is_array())
        for (const auto& r : doc["results"]) {
          auto sg = number_at(r, {"sigma"});
          if (!sg) continue;
          pts.emplace_back(*sg, number_at(r, {"average", "f1"}).value_or(NAN),
                           number_at(r, {"average", "accuracy"}).value_or(NAN),
                           number_at(r, {"splits", "adversarial", "f1"}).value_or(NAN));
        }
      std::sort(pts.begin(), pts.end());
      ChartSeries sf{k.label, {}, {}}, sa{k.label, {}, {}}, sd{k.label, {}, {}};
      TableRow row = make_row(k);
      for (double sg : sigmas) {
        std::optional<double> v;
        for (const auto& p : pts)
          if (std::get<0>(p) == sg && std::isfinite(std::get<1>(p))) v = std::get<1>(p);
        row.cells.push_back(cell(v));
      }
      for (const auto& [sg, vf, va, vd] : pts) {
        sf.x.push_back(sg), sf.y.push_back(vf * 100);
        sa.x.push_back(sg), sa.y.push_back(va * 100);
        sd.x.push_back(sg), sd.y.push_back(vd * 100);
      }
      f1.series.push_back(sf), acc.series.push_back(sa), adv.series.push_back(sd);
      t.rows.push_back(std::move(row));
    }
    s.blocks.push_back(line_block(f1));
    s.blocks.push_back(line_block(adv));
    s.blocks.push_back(line_block(acc));
    s.blocks.push_back(table_block(std::move(t)));
  }

  // ------------------------------------------------------------ Table 1: AFR, P-Acc, attention per layer
  void table1_afr() {
    std::vector<const ResultDoc*> afr;
    for (const auto& r : in_.results)
      if (r.benchmark == "afr" || r.benchmark.find("attention") != std::string::npos) afr.push_back(&r);
    if (afr.empty()) {
      m_.omitted.push_back("Table 1 (AFR, P-Acc): no afr results found");
      return;
    }
    auto& s = section("table1-afr", "Table 1 · Attention focus (AFR) and processing accuracy (P-Acc)");
    // AFR and P-Acc first, then the rest of the document's scalar metrics.
    Block b = generic_table_block("table1", "AFR (mean attention inside / outside the answer box) and P-Acc", afr,
                                  {"afr", "pacc", "processing"});
    s.blocks.push_back(std::move(b));
    // Per-layer arrays: one chart per key, one line per variant.
    std::vector<std::string> keys;
    for (const auto* d : afr)
      for (const auto& [key, arr] : layer_arrays(d->doc))
        if (std::find(keys.begin(), keys.end(), key) == keys.end()) keys.push_back(key);
    for (const auto& key : keys) {
      LineChart c = line_chart(key + " per layer", "layer", key);
      c.integer_x = true;
      for (const auto& k : keys_of(afr)) {
        const ResultDoc* d = doc_for(afr, k);
        for (const auto& [name, arr] : layer_arrays(d->doc)) {
          if (name != key) continue;
          ChartSeries cs{k.label, {}, {}};
          const json* layers = d->doc.contains("layers") && d->doc["layers"].is_array() ? &d->doc["layers"] : nullptr;
          for (size_t i = 0; i < arr->size(); ++i) {
            double x = static_cast<double>(i);
            if (layers && layers->size() == arr->size() && (*layers)[i].is_number()) x = (*layers)[i].get<double>();
            cs.x.push_back(x);
            cs.y.push_back((*arr)[i].is_number() ? (*arr)[i].get<double>() : NAN);
          }
          c.series.push_back(std::move(cs));
        }
      }
      if (!c.series.empty()) s.blocks.push_back(line_block(std::move(c)));
    }
  }

  // Numeric arrays whose key mentions a layer, AFR, attention or a share (afr_per_layer,
  // image_attention_share, ...), at the top level or one object below it; "layers" is the x axis.
  static std::vector<std::pair<std::string, const json*>> layer_arrays(const json& doc) {
    std::vector<std::pair<std::string, const json*>> out;
    auto scan = [&](const json& obj, const std::string& prefix) {
      if (!obj.is_object()) return;
      for (auto it = obj.begin(); it != obj.end(); ++it) {
        if (!it.value().is_array() || it.value().empty() || it.key() == "layers") continue;
        if (it.key().find("_n_") != std::string::npos || it.key().rfind("n_", 0) == 0) continue;  // counts
        const std::string k = norm_key(it.key());
        if (k.find("layer") == std::string::npos && k.find("share") == std::string::npos &&
            k.find("afr") == std::string::npos && k.find("attention") == std::string::npos)
          continue;
        bool numeric = true;
        for (const auto& v : it.value()) numeric = numeric && (v.is_number() || v.is_null());
        if (numeric) out.emplace_back(prefix + it.key(), &it.value());
      }
    };
    scan(doc, "");
    for (auto it = doc.begin(); doc.is_object() && it != doc.end(); ++it)
      if (it.key() != "protocol" && it.value().is_object()) scan(it.value(), it.key() + ".");
    return out;
  }

  // ------------------------------------------------------------ Table 3: IPS
  void table3_ips() {
    struct Source {
      std::string label;
      size_t run;
      const json* doc;  // {"focus": table, "robust": table, "external": table}
    };
    std::vector<Source> sources;
    for (const auto* d : docs_of(in_, {"ips"})) sources.push_back({d->label, d->run, &d->doc});
    for (const auto& p : in_.pairs)
      if (p.stats.contains("table3_ips")) sources.push_back({p.label + " (recorded)", p.run, &p.stats["table3_ips"]});
    if (sources.empty()) {
      m_.omitted.push_back("Table 3 (IPS): no ips results or pair statistics found");
      return;
    }
    auto& s = section("table3-ips", "Table 3 · Implicit preference strength (IPS)");
    Table t;
    t.id = "table3";
    t.caption = "IPS = Σ log π(y_w) − Σ log π(y_l) per pair type: mean, std and share below zero";
    t.row_header = "pairs";
    t.highlight_best = false;
    t.deltas = false;
    t.columns = {{"pair type"}, {"n", Better::None, Format::Integer},
                 {"Avg. IPS", Better::Higher, Format::Fixed2}, {"Std. Dev.", Better::None, Format::Fixed2},
                 {"Neg. ratio", Better::Lower, Format::Percent}};
    std::vector<std::string> kinds;
    BarChart bars = bar_chart("Mean IPS per pair type", "mean IPS (nats)");
    for (const auto& src : sources) {
      for (const char* kind : {"focus", "robust", "external"}) {
        if (!src.doc->contains(kind) || !(*src.doc)[kind].is_object()) continue;
        const json& k = (*src.doc)[kind];
        TableRow row;
        row.label = src.label;
        row.run = src.run;
        row.cells = {text_cell(kind), cell(number_at(k, {"n"})), cell(number_at(k, {"mean"})),
                     cell(number_at(k, {"std"})), cell(number_at(k, {"share_negative"}))};
        t.rows.push_back(std::move(row));
        if (std::find(kinds.begin(), kinds.end(), kind) == kinds.end()) kinds.push_back(kind);
      }
    }
    for (const auto& src : sources) {
      ChartSeries cs{src.label, {}, {}};
      for (const auto& kind : kinds) cs.y.push_back(number_at(*src.doc, {kind.c_str(), "mean"}).value_or(NAN));
      bars.series.push_back(std::move(cs));
    }
    bars.categories = kinds;
    s.blocks.push_back(table_block(std::move(t)));
    s.blocks.push_back(bar_block(std::move(bars)));
  }

  // ------------------------------------------------------------ Table 4: benchmark summary
  void table4_benchmarks() {
    const auto hb = docs_of(in_, {"hallusionbench"});
    const auto amber = docs_of(in_, {"amber"});
    const auto mmhal = docs_of(in_, {"mmhal"});
    if (hb.empty() && amber.empty() && mmhal.empty()) {
      m_.omitted.push_back("Table 4 (HallusionBench, AMBER, MMHal-Bench): no results found");
      return;
    }
    const auto pope = docs_of(in_, {"pope"});
    auto& s = section("table4-benchmarks", "Table 4 · Hallucination benchmarks");
    Table t;
    t.id = "table4";
    t.caption = "Benchmark summary (HallusionBench and AMBER in percent, MMHal-Bench score 0-6)";
    if (!pope.empty()) t.columns.push_back({"F1", Better::Higher, Format::Percent, "POPE", "mean of splits"});
    if (!amber.empty())
      for (const char* n : {"CHAIR", "Hal", "Cover", "Cog", "F1_E", "F1_A", "F1_R"})
        t.columns.push_back({n, guess_direction(n), Format::Fixed1, "AMBER"});
    if (!mmhal.empty()) {
      t.columns.push_back({"Score", Better::Higher, Format::Fixed2, "MMHal-Bench", "average rating"});
      t.columns.push_back({"Hal", Better::Lower, Format::Fixed2, "MMHal-Bench", "hallucination rate"});
    }
    if (!hb.empty())
      for (const char* n : {"qAcc", "fAcc", "aAcc"}) t.columns.push_back({n, Better::Higher, Format::Fixed2, "HallusionBench"});
    std::vector<const ResultDoc*> all = hb;
    all.insert(all.end(), amber.begin(), amber.end());
    all.insert(all.end(), mmhal.begin(), mmhal.end());
    for (const auto& k : keys_of(all)) {
      TableRow row = make_row(k);
      if (!pope.empty()) {
        const ResultDoc* d = doc_for(pope, k);
        const json* clean = d ? pope_clean(d->doc) : nullptr;
        row.cells.push_back(cell(clean ? number_at(*clean, {"average", "f1"}) : std::nullopt));
      }
      if (!amber.empty()) {
        const ResultDoc* d = doc_for(amber, k);
        const json doc = d ? d->doc : json::object();
        for (const char* g : {"CHAIR", "Hal", "Cover", "Cog"}) row.cells.push_back(cell(number_at(doc, {"generative", g})));
        for (const char* part : {"existence", "attribute", "relation"})
          row.cells.push_back(cell(number_at(doc, {"discriminative", part, "f1"})));
      }
      if (!mmhal.empty()) {
        const ResultDoc* d = doc_for(mmhal, k);
        row.cells.push_back(cell(d ? find_metric(d->doc, {"averagescore", "avgscore", "score", "meanscore"}) : std::nullopt));
        row.cells.push_back(cell(d ? find_metric(d->doc, {"hallucinationrate", "halrate", "hallucination", "hal"})
                                   : std::nullopt));
      }
      if (!hb.empty()) {
        const ResultDoc* d = doc_for(hb, k);
        const json m = d ? hb_headline(d->doc) : json::object();
        for (const char* n : {"qAcc", "fAcc", "aAcc"}) row.cells.push_back(cell(number_at(m, {n, "percent"})));
      }
      t.rows.push_back(std::move(row));
    }
    s.blocks.push_back(table_block(std::move(t)));

    if (!hb.empty()) {
      Table h;
      h.id = "table4-hallusionbench";
      h.caption = "HallusionBench by protocol (percent; official = every answered row, vlmevalkit = rows with an image)";
      h.columns = {{"protocol"}, {"questions", Better::None, Format::Integer}, {"aAcc", Better::Higher, Format::Fixed2},
                   {"fAcc", Better::Higher, Format::Fixed2}, {"qAcc", Better::Higher, Format::Fixed2},
                   {"easy qAcc", Better::Higher, Format::Fixed2}, {"hard qAcc", Better::Higher, Format::Fixed2}};
      h.deltas = false;
      for (const auto& k : keys_of(hb)) {
        const json& doc = doc_for(hb, k)->doc;
        if (!doc.contains("results") || !doc["results"].is_object()) continue;
        for (auto it = doc["results"].begin(); it != doc["results"].end(); ++it) {
          TableRow row = make_row(k);
          const json& m = it.value();
          row.cells = {text_cell(it.key()), cell(number_at(m, {"questions"})), cell(number_at(m, {"aAcc", "percent"})),
                       cell(number_at(m, {"fAcc", "percent"})), cell(number_at(m, {"qAcc", "percent"})),
                       cell(number_at(m, {"easy_qAcc", "percent"})), cell(number_at(m, {"hard_qAcc", "percent"}))};
          h.rows.push_back(std::move(row));
        }
      }
      s.blocks.push_back(table_block(std::move(h)));
    }
    if (!amber.empty()) {
      Table a;
      a.id = "table4-amber";
      a.caption = "AMBER discriminative (percent; 'No' is the positive class, as the official scorer)";
      for (const char* part : {"overall", "existence", "attribute", "relation"}) {
        a.columns.push_back({"Acc", Better::Higher, Format::Fixed1, part});
        a.columns.push_back({"F1", Better::Higher, Format::Fixed1, part});
      }
      for (const auto& k : keys_of(amber)) {
        const json& doc = doc_for(amber, k)->doc;
        if (!doc.contains("discriminative")) continue;
        TableRow row = make_row(k);
        for (const char* part : {"overall", "existence", "attribute", "relation"}) {
          row.cells.push_back(cell(number_at(doc, {"discriminative", part, "accuracy"})));
          row.cells.push_back(cell(number_at(doc, {"discriminative", part, "f1"})));
        }
        a.rows.push_back(std::move(row));
      }
      if (!a.rows.empty()) s.blocks.push_back(table_block(std::move(a)));
    }
    if (!mmhal.empty()) s.blocks.push_back(generic_table_block("mmhal-all", "MMHal-Bench · every metric of the results", mmhal));
  }

  static json hb_headline(const json& doc) {
    const std::string headline = string_at(doc, {"headline_protocol"});
    if (doc.contains("results") && doc["results"].is_object()) {
      const json& r = doc["results"];
      if (!headline.empty() && r.contains(headline)) return r[headline];
      if (!r.empty()) return r.begin().value();
    }
    return json::object();
  }

  // ------------------------------------------------------------ Table 5: filter statistics
  void table5_filter() {
    std::vector<const PairsRun*> runs;
    for (const auto& p : in_.pairs)
      if (p.stats.contains("table5_filter")) runs.push_back(&p);
    if (runs.empty()) {
      m_.omitted.push_back("Table 5 (filter statistics): no pairs/stats.json found");
      return;
    }
    auto& s = section("table5-filter", "Table 5 · Filter statistics of the raw pairs");
    Table counts;
    counts.id = "table5-counts";
    counts.caption = "Filter outcome per pair run";
    counts.row_header = "pairs";
    counts.highlight_best = counts.deltas = false;
    std::vector<std::string> reasons;
    for (const auto* p : runs) {
      const json c = p->stats["table5_filter"].value("counts", json::object());
      for (auto it = c.begin(); c.is_object() && it != c.end(); ++it)
        if (std::find(reasons.begin(), reasons.end(), it.key()) == reasons.end()) reasons.push_back(it.key());
    }
    counts.columns = {{"candidates", Better::None, Format::Integer}, {"kept", Better::None, Format::Integer},
                      {"retained", Better::None, Format::Percent}};
    for (const auto& r : reasons) counts.columns.push_back({r, Better::None, Format::Integer, "count by outcome"});
    BarChart bars = bar_chart("Filter outcome (pairs per reason)", "pairs");
    bars.categories = reasons;
    for (const auto* p : runs) {
      const json& f = p->stats["table5_filter"];
      Table t;
      t.id = "table5-" + p->label;
      t.caption = "Distribution of the reference model's metrics over the raw pairs · " + p->label;
      t.row_header = "statistic";
      t.highlight_best = t.deltas = false;
      struct Col {
        const char* title;
        const json* dist;
      };
      std::vector<Col> cols;
      auto add = [&](const char* title, const json& parent, const char* key) {
        if (parent.is_object() && parent.contains(key) && parent[key].is_object()) cols.push_back({title, &parent[key]});
      };
      add("PPL (Win)", f, "ppl_chosen");
      add("PPL (Lose)", f, "ppl_rejected");
      add("max PPL", f, "ppl_max");
      add("Log-Prob Margin", f, "margin");
      add("Margin (kept)", f, "margin_kept");
      if (p->stats.contains("robust_pairs")) {
        add("Robust max PPL", p->stats["robust_pairs"], "max_ppl");
        add("Robust margin", p->stats["robust_pairs"], "margin");
      }
      add("w_focus (DDW)", p->stats, "w_focus");
      for (const auto& c : cols) t.columns.push_back({c.title, Better::None, Format::Fixed3});
      static const std::vector<std::pair<const char*, const char*>> kStats = {
          {"Mean", "mean"}, {"Std. Dev.", "std"}, {"Min", "min"}, {"2.5%", "p2_5"}, {"25% (Q1)", "p25"},
          {"50% (Median)", "median"}, {"75% (Q3)", "p75"}, {"97.5%", "p97_5"}, {"Max", "max"}, {"n", "n"}};
      for (const auto& [name, key] : kStats) {
        TableRow row;
        row.label = name;
        for (const auto& c : cols) {
          row.cells.push_back(cell(number_at(*c.dist, {key})));
          if (std::string(key) == "n") row.cells.back().format = Format::Integer;
        }
        t.rows.push_back(std::move(row));
      }
      TableRow thr;
      thr.label = "Final threshold";
      const json th = f.value("thresholds", json::object());
      for (const auto& c : cols) {
        const std::string title = c.title;
        if (title == "max PPL" && number_at(th, {"max_ppl"}))
          thr.cells.push_back(text_cell(fmt::format("max(·) < {:.2f}", *number_at(th, {"max_ppl"}))));
        else if (title == "Log-Prob Margin" && number_at(th, {"margin_low"}) && number_at(th, {"margin_high"}))
          thr.cells.push_back(text_cell(fmt::format("[{:.3f}, {:.3f}] ({})", *number_at(th, {"margin_low"}),
                                                    *number_at(th, {"margin_high"}), string_at(th, {"rule"}))));
        else
          thr.cells.push_back(text_cell(""));
      }
      t.rows.push_back(std::move(thr));
      s.blocks.push_back(table_block(std::move(t)));

      TableRow row;
      row.label = p->label;
      row.run = p->run;
      row.cells = {cell(number_at(f, {"n_candidates"})), cell(number_at(f, {"n_kept"})),
                   cell(number_at(f, {"retained_share"}))};
      ChartSeries cs{p->label, {}, {}};
      for (const auto& r : reasons) {
        auto v = number_at(f, {"counts", r.c_str()});
        row.cells.push_back(cell(v));
        cs.y.push_back(v.value_or(NAN));
      }
      counts.rows.push_back(std::move(row));
      bars.series.push_back(std::move(cs));
    }
    s.blocks.push_back(table_block(std::move(counts)));
    if (!reasons.empty()) s.blocks.push_back(bar_block(std::move(bars)));
  }

  // ------------------------------------------------------------ pairs against the world's truth
  // Only where a pair run has sanity.json (the demo writes it): which side of each pair names
  // fewer absent objects, and whether each winner beats the model's own plain-view answer.
  void pairs_truth() {
    std::vector<const PairsRun*> runs;
    for (const auto& p : in_.pairs)
      if (p.sanity.is_object() && p.sanity.contains("focus")) runs.push_back(&p);
    if (runs.empty()) return;  // real-model runs have no ground truth: nothing to say
    auto& s = section("pairs-truth", "Pairs against the ground truth");
    s.blocks.push_back(para(
        "Shares of the pairs checked (kept pairs where the run says so) in which each side is more faithful "
        "to the scene: fewer absent objects named, or as many and more present ones. The second table puts "
        "each winner against the model's own greedy answer on the plain view (I, P): a winner that is not "
        "better than that answer gives DPO nothing better to move toward."));
    Table t;
    t.id = "pairs-truth-order";
    t.caption = "Chosen vs rejected, judged by the world's truth";
    t.row_header = "pairs · type";
    t.highlight_best = t.deltas = false;
    t.columns = {{"pairs", Better::None, Format::Integer}, {"chosen better", Better::Higher, Format::Percent},
                 {"rejected better", Better::Lower, Format::Percent}, {"neither", Better::None, Format::Percent}};
    Table w;
    w.id = "pairs-truth-vs-own";
    w.caption = "Each winner vs the model's own answer on the plain view";
    w.row_header = "pairs · type";
    w.highlight_best = w.deltas = false;
    w.columns = {{"pairs", Better::None, Format::Integer}, {"winner better", Better::Higher, Format::Percent},
                 {"own answer better", Better::Lower, Format::Percent}, {"neither", Better::None, Format::Percent}};
    for (const auto* p : runs) {
      for (const char* type : {"focus", "robust"}) {
        if (!p->sanity.contains(type)) continue;
        const json& o = p->sanity[type];
        TableRow row;
        row.label = p->label + " · " + type;
        row.run = p->run;
        row.cells = {cell(number_at(p->sanity, {"pairs"})), cell(number_at(o, {"chosen_more_faithful"})),
                     cell(number_at(o, {"rejected_more_faithful"})), cell(number_at(o, {"neither"}))};
        t.rows.push_back(std::move(row));
        if (!p->sanity.contains("winners_vs_original")) continue;
        const json& v = p->sanity["winners_vs_original"];
        TableRow vrow;
        vrow.label = p->label + " · " + type;
        vrow.run = p->run;
        vrow.cells = {cell(number_at(v, {"pairs"})), cell(number_at(v, {type, "winner_more_faithful"})),
                      cell(number_at(v, {type, "original_more_faithful"})), cell(number_at(v, {type, "neither"}))};
        w.rows.push_back(std::move(vrow));
      }
    }
    s.blocks.push_back(table_block(std::move(t)));
    if (!w.rows.empty()) s.blocks.push_back(table_block(std::move(w)));
  }

  // ------------------------------------------------------------ Table 6: crop CLIP statistics
  void table6_crop_clip() {
    std::vector<const PairsRun*> runs;
    for (const auto& p : in_.pairs)
      if (p.stats.contains("table6_crop_clip") && number_at(p.stats, {"table6_crop_clip", "n"}).value_or(0) > 0)
        runs.push_back(&p);
    if (runs.empty()) {
      m_.omitted.push_back("Table 6 (crop CLIPScore): no pair run with CLIP statistics");
      return;
    }
    auto& s = section("table6-crop-clip", "Table 6 · CLIPScore of attention crops vs inverse crops");
    for (const auto* p : runs) {
      const json& c = p->stats["table6_crop_clip"];
      Table t;
      t.id = "table6-" + p->label;
      t.caption = "Crop CLIPScore relative to the whole image · " + p->label;
      t.row_header = "group · metric";
      t.highlight_best = t.deltas = false;
      t.columns = {{"Count", Better::None, Format::Integer}, {"Mean", Better::None, Format::Fixed2},
                   {"Median", Better::None, Format::Fixed2}, {"Std", Better::None, Format::Fixed2},
                   {"Min", Better::None, Format::Fixed2}, {"Max", Better::None, Format::Fixed2},
                   {"Share > 1 (ratio) / > 0 (diff)", Better::None, Format::Percent}};
      auto add = [&](const std::string& label, const json& d, const char* share_key) {
        TableRow row;
        row.label = label;
        row.cells = {cell(number_at(d, {"n"})),   cell(number_at(d, {"mean"})), cell(number_at(d, {"median"})),
                     cell(number_at(d, {"std"})), cell(number_at(d, {"min"})),  cell(number_at(d, {"max"})),
                     cell(share_key ? number_at(d, {share_key}) : std::nullopt)};
        t.rows.push_back(std::move(row));
      };
      for (const char* group : {"att_crop", "att_inverse"}) {
        if (!c.contains(group)) continue;
        if (c[group].contains("improvement_ratio"))
          add(std::string(group) + " · improvement_ratio", c[group]["improvement_ratio"], "share_gt_1");
        if (c[group].contains("improvement_diff"))
          add(std::string(group) + " · improvement_diff", c[group]["improvement_diff"], "share_gt_0");
      }
      if (c.contains("clip_image") && c["clip_image"].is_object()) add("whole image · CLIPScore", c["clip_image"], nullptr);
      s.blocks.push_back(table_block(std::move(t)));
    }
  }

  // ------------------------------------------------------------ training curves
  void training() {
    if (in_.trains.empty()) {
      m_.omitted.push_back("Training curves: no metrics.jsonl found");
      return;
    }
    auto& s = section("training", "Training curves");
    Table t;
    t.id = "training-summary";
    t.caption = "Training runs";
    t.row_header = "run";
    t.columns = {{"objective"}, {"pairs", Better::None, Format::Integer}, {"steps", Better::None, Format::Integer},
                 {"first loss", Better::None, Format::Fixed3}, {"last loss", Better::Lower, Format::Fixed3},
                 {"last reward acc.", Better::Higher, Format::Percent, "", "last step's reward accuracy (focus, else plain)"},
                 {"elapsed (s)", Better::None, Format::Fixed1}};
    t.deltas = false;
    std::vector<RowKey> keys;
    for (const auto& tr : in_.trains) keys.push_back({tr.run, tr.label});
    auto find = [&](const RowKey& k) -> const TrainRun& {
      for (const auto& tr : in_.trains)
        if (tr.run == k.run && tr.label == k.label) return tr;
      return in_.trains.front();
    };
    LineChart all_loss = line_chart("Loss per step, all training runs", "step", "loss");
    all_loss.integer_x = true;
    for (const auto& k : ordered_rows(keys)) {
      const TrainRun& tr = find(k);
      TableRow row = make_row(k);
      row.is_base = false;
      const json* last = tr.metrics.empty() ? nullptr : &tr.metrics.back();
      std::optional<double> acc;
      if (last) {
        acc = number_at(*last, {"focus/rewards/accuracies"});
        if (!acc) acc = number_at(*last, {"rewards/accuracies"});
      }
      std::string objective = string_at(tr.config, {"config", "objective"});
      if (objective.empty()) objective = string_at(tr.config, {"objective"});
      row.cells = {text_cell(objective.empty() ? "–" : objective),
                   cell(number_at(tr.config, {"pairs_count"})),
                   cell(static_cast<double>(tr.metrics.size())),
                   cell(tr.metrics.empty() ? std::nullopt : number_at(tr.metrics.front(), {"loss"})),
                   cell(last ? number_at(*last, {"loss"}) : std::nullopt),
                   cell(acc),
                   cell(last ? number_at(*last, {"elapsed_s"}) : std::nullopt)};
      t.rows.push_back(std::move(row));
      all_loss.series.push_back(metric_series(tr, "loss", k.label));
    }
    s.blocks.push_back(table_block(std::move(t)));
    if (in_.trains.size() > 1) s.blocks.push_back(line_block(std::move(all_loss)));
    for (const auto& k : ordered_rows(keys)) {
      const TrainRun& tr = find(k);
      auto chart = [&](const std::string& title, const std::string& ylabel, auto&& select) {
        std::vector<std::string> names;
        for (const auto& m : tr.metrics)
          for (auto it = m.begin(); m.is_object() && it != m.end(); ++it)
            if (it.value().is_number() && select(it.key()) &&
                std::find(names.begin(), names.end(), it.key()) == names.end())
              names.push_back(it.key());
        if (names.empty()) return;
        LineChart c = line_chart(title + " · " + k.label, "step", ylabel);
        c.integer_x = true;
        for (const auto& n : names) c.series.push_back(metric_series(tr, n, n));
        s.blocks.push_back(line_block(std::move(c)));
      };
      auto ends_with = [](const std::string& s2, const std::string& suffix) {
        return s2.size() >= suffix.size() && s2.compare(s2.size() - suffix.size(), suffix.size(), suffix) == 0;
      };
      chart("Loss", "loss", [](const std::string& n) { return n.rfind("loss", 0) == 0; });
      chart("Reward accuracies", "accuracy", [&](const std::string& n) { return ends_with(n, "rewards/accuracies"); });
      chart("Reward margins", "margin (β·log-ratio)", [&](const std::string& n) { return ends_with(n, "rewards/margins"); });
    }
  }

  static ChartSeries metric_series(const TrainRun& tr, const std::string& key, const std::string& name) {
    ChartSeries cs{name, {}, {}};
    for (size_t i = 0; i < tr.metrics.size(); ++i) {
      const json& m = tr.metrics[i];
      cs.x.push_back(number_at(m, {"step"}).value_or(static_cast<double>(i + 1)));
      cs.y.push_back(m.is_object() && m.contains(key) && m[key].is_number() ? m[key].get<double>() : NAN);
    }
    return cs;
  }

  // ------------------------------------------------------------ heat-maps
  void heatmaps() {
    size_t n = 0;
    for (const auto& p : in_.pairs) n += p.samples.size();
    if (n == 0) {
      m_.omitted.push_back("Attention heat-maps: no pair run with heat-maps");
      return;
    }
    auto& s = section("heatmaps", "Attention heat-maps and crop boxes (cf. Figure 1)");
    s.blocks.push_back(para("Attention of the answer on the image grid with the chosen crop box, for the first pairs "
                            "of each pair run; focus pairs compare the answer with the crop against the answer with "
                            "the box erased, robustness pairs the clean against the noisy image."));
    for (const auto& p : in_.pairs) {
      for (const auto& smp : p.samples) {
        Block b;
        b.kind = Block::Kind::Sample;
        b.sample.caption = p.label + " · " + smp.id;
        b.sample.png = smp.heatmap_png;
        auto& f = b.sample.facts;
        f.emplace_back("Question", smp.question);
        f.emplace_back("Focus chosen", smp.focus_chosen);
        f.emplace_back("Focus rejected", smp.focus_rejected);
        f.emplace_back("Robust chosen", smp.robust_chosen);
        f.emplace_back("Robust rejected", smp.robust_rejected);
        if (smp.bbox.size() == 4)
          f.emplace_back("Crop box", fmt::format("[{:g}, {:g}, {:g}, {:g}]", smp.bbox[0], smp.bbox[1], smp.bbox[2], smp.bbox[3]) +
                                         (smp.crop_ratio ? fmt::format(" (scale {:g})", *smp.crop_ratio) : ""));
        if (smp.clip_ratio) f.emplace_back("CLIP crop/inverse", fmt::format("{:.3f}", *smp.clip_ratio));
        if (smp.ips_focus || smp.ips_robust)
          f.emplace_back("IPS focus / robust", fmt::format("{} / {}", smp.ips_focus ? fmt::format("{:.2f}", *smp.ips_focus) : "–",
                                                            smp.ips_robust ? fmt::format("{:.2f}", *smp.ips_robust) : "–"));
        if (!smp.filter_reason.empty()) f.emplace_back("Filter", smp.filter_reason);
        s.blocks.push_back(std::move(b));
      }
    }
  }

  // ------------------------------------------------------------ anything else
  void other_benchmarks() {
    static const std::set<std::string> kKnown = {"pope", "chair", "afr", "ips", "hallusionbench", "amber", "mmhal"};
    std::map<std::string, std::vector<const ResultDoc*>> other;
    for (const auto& r : in_.results)
      if (!kKnown.count(r.benchmark) && r.benchmark.find("attention") == std::string::npos)
        other[r.benchmark].push_back(&r);
    if (other.empty()) return;  // nothing unknown: not a missing section
    auto& s = section("other-benchmarks", "Other benchmarks");
    for (const auto& [name, docs] : other)
      s.blocks.push_back(generic_table_block("other-" + name, name + " (all numeric metrics)", docs));
  }

  // Rows = variants, columns = the union of the documents' scalar metrics (preferred names first).
  Block generic_table_block(const std::string& id, const std::string& caption, const std::vector<const ResultDoc*>& docs,
                            const std::vector<std::string>& preferred = {}) {
    constexpr size_t kMaxColumns = 24;
    std::vector<std::string> cols;
    for (const auto* d : docs)
      for (const auto& [path, v] : flatten_metrics(d->doc))
        if (std::find(cols.begin(), cols.end(), path) == cols.end()) cols.push_back(path);
    auto rank = [&](const std::string& path) {
      const std::string k = norm_key(path);
      for (size_t i = 0; i < preferred.size(); ++i)
        if (k.find(preferred[i]) != std::string::npos) return i;
      return preferred.size();
    };
    std::stable_sort(cols.begin(), cols.end(), [&](const auto& a, const auto& b) { return rank(a) < rank(b); });
    Table t;
    t.id = id;
    t.caption = caption;
    if (cols.size() > kMaxColumns) {
      t.note = fmt::format("{} more metrics in the file", cols.size() - kMaxColumns);
      cols.resize(kMaxColumns);
    }
    for (const auto& c : cols) t.columns.push_back({c, guess_direction(c), Format::Auto});
    for (const auto& k : keys_of(docs)) {
      const ResultDoc* d = doc_for(docs, k);
      const auto flat = flatten_metrics(d->doc);
      TableRow row = make_row(k);
      for (const auto& c : cols) {
        std::optional<double> v;
        for (const auto& [path, x] : flat)
          if (path == c) v = x;
        row.cells.push_back(cell(v));
      }
      t.rows.push_back(std::move(row));
    }
    if (cols.empty()) return para(caption + ": no numeric metrics.");
    return table_block(std::move(t));
  }

  // ------------------------------------------------------------ configs
  void configs() {
    std::vector<Block> blocks;
    for (const auto& p : in_.pairs)
      if (!p.config.is_null()) blocks.push_back(details(p.label + "/config.json (pairs)", p.config));
    for (const auto& t : in_.trains)
      if (!t.config.is_null()) blocks.push_back(details(t.label + "/config.json (training)", t.config));
    for (const auto& t : in_.trains)
      if (!t.summary.is_null()) blocks.push_back(details(t.label + "/summary.json (training)", t.summary));
    for (const auto& c : in_.configs) blocks.push_back(details(c.label, c.doc));
    for (const auto& r : in_.results)
      if (r.doc.contains("protocol")) blocks.push_back(details(r.label + " · " + r.benchmark + " protocol", r.doc["protocol"]));
    if (blocks.empty()) {
      m_.omitted.push_back("Configs: no config files or protocols found");
      return;
    }
    auto& s = section("configs", "Resolved configs and protocols");
    for (auto& b : blocks) s.blocks.push_back(std::move(b));
  }

  const ReportInputs& in_;
  ReportModel& m_;
  size_t chart_id_ = 0;
};

}  // namespace

// ================================================================ public

ReportInputs discover_report_inputs(const std::vector<std::string>& run_paths, const DiscoverOptions& opts) {
  if (run_paths.empty()) throw InputError("RUN_DIR", "give at least one run directory or results file");
  ReportInputs in;
  std::map<std::string, int> used;
  for (const auto& p : run_paths) {
    if (!fs::exists(p)) throw InputError(p, "no such run directory or results file");
    std::string name = run_name_of(p);
    if (int n = ++used[name]; n > 1) name += fmt::format("-{}", n);
    in.runs.push_back(name);
    in.run_paths.push_back(p);
  }
  Discoverer d(in, opts);
  for (size_t i = 0; i < run_paths.size(); ++i) d.add_run(i, run_paths[i], run_paths.size() > 1);
  // eval/<variant>/<benchmark>/results.json (an evaluator's --out directory): the variant is the label.
  for (auto& r : in.results) {
    const auto slash = r.label.rfind('/');
    if (norm_key(last_component(r.label, '/')) != norm_key(r.benchmark)) continue;
    r.label = slash == std::string::npos ? in.runs[r.run] : r.label.substr(0, slash);
  }
  // Two results of one benchmark in one directory: the file name tells them apart.
  std::map<std::pair<std::string, std::string>, int> count;
  for (const auto& r : in.results) ++count[{r.benchmark, r.label}];
  for (auto& r : in.results)
    if (count[{r.benchmark, r.label}] > 1) r.label = join_label(r.label, fs::path(r.path).stem().string());
  return in;
}

bool is_base_label(const std::string& label) {
  const std::string last = last_component(label, '/');
  return last == "base" || last.rfind("base-", 0) == 0 || last.rfind("base_", 0) == 0;
}

std::vector<std::pair<std::string, double>> flatten_metrics(const json& doc, int max_depth) {
  static const std::set<std::string> kSkip = {"protocol", "warnings", "counters", "distribution", "rows",
                                              "per_caption", "captions", "items_detail", "answer_files", "config"};
  std::vector<std::pair<std::string, double>> out;
  std::function<void(const json&, const std::string&, int)> walk = [&](const json& j, const std::string& prefix, int depth) {
    if (!j.is_object() || depth > max_depth) return;
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (kSkip.count(it.key())) continue;
      const std::string path = prefix.empty() ? it.key() : prefix + "." + it.key();
      const json& v = it.value();
      if (v.is_number() && !v.is_boolean()) {
        const double x = v.get<double>();
        if (std::isfinite(x)) out.emplace_back(path, x);
      } else if (v.is_object()) {
        walk(v, path, depth + 1);
      }
    }
  };
  walk(doc, "", 1);
  return out;
}

Better guess_direction(const std::string& name) {
  const std::string raw = last_component(name, '.');
  const std::string k = norm_key(raw);
  if (raw.rfind("n_", 0) == 0 || (raw.size() > 2 && raw.compare(raw.size() - 2, 2, "_n") == 0)) return Better::None;
  auto has = [&](const char* s) { return k.find(s) != std::string::npos; };
  if (has("yesratio")) return Better::Half;
  if (k.rfind("afr", 0) == 0) return Better::Higher;  // afr_mean_over_layers, afr_pacc_layer: values, not layers
  if (k == "n" || has("count") || has("questions") || has("items") || has("threshold") || has("total") ||
      has("nouns") || has("splits") || has("layer") || (has("share") && !has("negative")))
    return Better::None;
  if (has("chair") || has("hal") || has("cog") || has("loss") || has("ppl") || has("error") || has("unanswered") ||
      has("unknown") || has("negative") || k == "fp" || k == "fn")
    return Better::Lower;
  if (has("acc") || has("f1") || has("precision") || has("recall") || has("cover") || has("score") || has("afr") ||
      k == "tp" || k == "tn")
    return Better::Higher;
  return Better::None;
}

void finalize_table(Table& table) {
  const size_t ncols = table.columns.size();
  for (auto& r : table.rows) r.cells.resize(ncols, cell(std::nullopt));
  auto goodness = [](Better b, double v) {  // larger = better
    switch (b) {
      case Better::Higher: return v;
      case Better::Lower: return -v;
      case Better::Half: return -std::abs(v - 0.5);
      default: return 0.0;
    }
  };
  for (size_t c = 0; c < ncols; ++c) {
    const Better b = table.columns[c].better;
    if (table.highlight_best && b != Better::None) {
      size_t n = 0;
      double best = -INFINITY;
      for (const auto& r : table.rows)
        if (r.cells[c].value) ++n, best = std::max(best, goodness(b, *r.cells[c].value));
      if (n >= 2)
        for (auto& r : table.rows)
          if (r.cells[c].value && goodness(b, *r.cells[c].value) >= best - 1e-12) r.cells[c].best = true;
    }
  }
  if (!table.deltas) return;
  std::vector<size_t> bases;
  for (size_t i = 0; i < table.rows.size(); ++i)
    if (table.rows[i].is_base) bases.push_back(i);
  for (auto& r : table.rows) {
    if (r.is_base) continue;
    const TableRow* base = nullptr;
    for (size_t i : bases)
      if (table.rows[i].run == r.run) base = &table.rows[i];
    if (!base && bases.size() == 1) base = &table.rows[bases[0]];
    if (!base) continue;
    for (size_t c = 0; c < ncols; ++c) {
      if (table.columns[c].better == Better::None) continue;  // a count or a spread: no direction, no delta
      const auto& v = r.cells[c].value;
      const auto& bv = base->cells[c].value;
      if (!v || !bv) continue;
      const double d = *v - *bv;
      r.cells[c].delta = d;
      const Better b = table.columns[c].better;
      const double g = goodness(b, *v) - goodness(b, *bv);
      r.cells[c].delta_sign = std::abs(g) < 1e-12 ? 0 : (g > 0 ? 1 : -1);
    }
  }
}

ReportModel build_report_model(const ReportInputs& inputs, const std::string& title) {
  ReportModel m;
  m.title = title;
  m.notes = inputs.notes;
  Builder(inputs, m).build();
  return m;
}

}  // namespace p2dpo::eval
