#include "eval/hallusionbench.h"

#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "eval/bench_runner.h"
#include "io/errors.h"
#include "io/json_io.h"
#include "text/utf8.h"

namespace p2dpo::eval {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

std::string ascii_lower(const std::string& s) {
  std::string out = s;
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

// Python's str.split() with no argument: runs of Unicode whitespace, no empty words.
std::vector<std::string> python_split(const std::string& s) {
  std::vector<std::string> words;
  std::string cur;
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t start = pos;
    const char32_t cp = text::next_code_point(s, pos);
    if (text::is_python_space(cp)) {
      if (!cur.empty()) words.push_back(std::move(cur));
      cur.clear();
    } else {
      cur.append(s, start, pos - start);
    }
  }
  if (!cur.empty()) words.push_back(std::move(cur));
  return words;
}

std::string replace_all(const std::string& s, char from, const std::string& to) {
  std::string out;
  for (char c : s) {
    if (c == from) out += to;
    else out += c;
  }
  return out;
}

std::string where(size_t index, const char* unit) { return fmt::format("{} {}", unit, index); }

// A key field: string as is, integer as its decimal text (answers written by other tools).
std::string key_field(const nlohmann::json& row, const std::string& name, const std::string& file,
                      const std::string& ctx) {
  if (!row.is_object()) throw InputError(file, ctx + ": expected an object, got " + io::json_type_name(row));
  auto it = row.find(name);
  if (it == row.end()) throw InputError(file, ctx + ": missing required field '" + name + "'");
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number_integer()) return std::to_string(it->get<int64_t>());
  throw InputError(file, ctx + ": field '" + name + "': expected string, got " + io::json_type_name(*it));
}

std::string string_field(const nlohmann::json& row, const std::string& name, const std::string& file,
                         const std::string& ctx) {
  auto it = row.find(name);
  if (it == row.end()) throw InputError(file, ctx + ": missing required field '" + name + "'");
  if (!it->is_string()) {
    throw InputError(file, ctx + ": field '" + name + "': expected string, got " + io::json_type_name(*it));
  }
  return it->get<std::string>();
}

std::optional<std::string> optional_string(const nlohmann::json& row, const std::string& name,
                                           const std::string& file, const std::string& ctx) {
  auto it = row.find(name);
  if (it == row.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number_integer()) return std::to_string(it->get<int64_t>());
  throw InputError(file, ctx + ": field '" + name + "': expected string, got " + io::json_type_name(*it));
}

std::string join_key(std::initializer_list<const std::string*> parts) {
  std::string k;
  for (const auto* p : parts) {
    if (!k.empty()) k += '_';
    k += *p;
  }
  return k;
}

bool starts_with_bracket(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path, "cannot open file");
  char c;
  while (in.get(c)) {
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    return c == '[';
  }
  return false;
}

struct Tally {
  int64_t correct = 0, total = 0;
};

HbAccuracy all_correct_groups(const std::map<std::string, Tally>& groups) {
  HbAccuracy a;
  for (const auto& [k, t] : groups) {
    ++a.total;
    if (t.correct == t.total) ++a.correct;
  }
  return a;
}

HbMetrics metrics_over(const std::vector<HbRowResult>& rows, HbProtocol protocol, bool rule_based) {
  HbMetrics m;
  m.protocol = protocol;
  std::map<std::string, Tally> q_groups, f_groups, easy, hard;
  for (const auto& r : rows) {
    const HbQuestion& q = *r.question;
    if (protocol == HbProtocol::VlmEvalKit && !hb_has_image(q)) continue;
    ++m.questions;
    ++m.aacc.total;
    m.aacc.correct += r.correct;
    auto& cat = m.aacc_by_category[q.category];
    ++cat.total;
    cat.correct += r.correct;
    const int c = r.correct ? 1 : 0;
    auto add = [&](std::map<std::string, Tally>& g, const std::string& key) {
      auto& t = g[key];
      t.correct += c;
      ++t.total;
    };
    add(q_groups, hb_question_key(q));
    // Official get_eval_fig skips the VS rows without a figure; VLMEvalKit never sees them.
    if (!(protocol == HbProtocol::Official && q.category == "VS" && q.figure_id == "0")) add(f_groups, hb_figure_key(q));
    add(q.figure_id == "0" ? easy : hard, hb_question_key(q));
    if (rule_based) {
      if (r.extracted == YesNo::Yes) ++m.extracted_yes;
      else if (r.extracted == YesNo::No) ++m.extracted_no;
      else ++m.extracted_unknown;
    }
  }
  m.qacc = all_correct_groups(q_groups);
  m.facc = all_correct_groups(f_groups);
  m.easy_qacc = all_correct_groups(easy);
  m.hard_qacc = all_correct_groups(hard);
  return m;
}

nlohmann::json accuracy_json(const HbAccuracy& a) {
  const double p = a.percent();
  return {{"correct", a.correct}, {"total", a.total}, {"percent", std::isnan(p) ? nlohmann::json() : nlohmann::json(p)}};
}

std::string pct(const HbAccuracy& a) {
  const double p = a.percent();
  return std::isnan(p) ? std::string("n/a") : fmt::format("{:.2f}", p);
}

}  // namespace

std::string hb_row_key(const HbQuestion& q) {
  return join_key({&q.category, &q.subcategory, &q.set_id, &q.figure_id, &q.question_id});
}
std::string hb_question_key(const HbQuestion& q) {
  return join_key({&q.category, &q.subcategory, &q.set_id, &q.question_id});
}
std::string hb_figure_key(const HbQuestion& q) {
  return join_key({&q.category, &q.subcategory, &q.set_id, &q.figure_id});
}
std::string hb_answer_key(const HbAnswer& a) {
  return join_key({&a.category, &a.subcategory, &a.set_id, &a.figure_id, &a.question_id});
}
bool hb_has_image(const HbQuestion& q) { return q.visual_input != "0"; }

std::string hb_image_relpath(const HbQuestion& q) {
  if (q.filename) {
    std::string f = *q.filename;
    while (f.rfind("./", 0) == 0) f.erase(0, 2);
    return f;
  }
  return q.category + "/" + q.subcategory + "/" + q.set_id + "_" + q.figure_id + ".png";
}

std::vector<HbQuestion> read_hallusionbench(const std::string& path) {
  const nlohmann::json doc = io::read_json_file(path);
  if (!doc.is_array()) throw InputError(path, "expected a JSON array of questions, got " + std::string(io::json_type_name(doc)));
  std::vector<HbQuestion> out;
  std::set<std::string> keys;
  for (size_t i = 0; i < doc.size(); ++i) {
    const auto& row = doc[i];
    const std::string ctx = where(i + 1, "element");
    HbQuestion q;
    q.category = key_field(row, "category", path, ctx);
    q.subcategory = key_field(row, "subcategory", path, ctx);
    q.set_id = key_field(row, "set_id", path, ctx);
    q.figure_id = key_field(row, "figure_id", path, ctx);
    q.question_id = key_field(row, "question_id", path, ctx);
    q.visual_input = key_field(row, "visual_input", path, ctx);
    q.gt_answer = key_field(row, "gt_answer", path, ctx);
    q.question = string_field(row, "question", path, ctx);
    q.gt_answer_details = optional_string(row, "gt_answer_details", path, ctx).value_or("");
    q.sample_note = optional_string(row, "sample_note", path, ctx).value_or("");
    q.filename = optional_string(row, "filename", path, ctx);
    if (q.category != "VD" && q.category != "VS") {
      throw InputError(path, ctx + ": field 'category': expected \"VD\" or \"VS\", got \"" + q.category + "\"");
    }
    if (q.gt_answer != "0" && q.gt_answer != "1") {
      throw InputError(path, ctx + ": field 'gt_answer': expected \"0\" or \"1\", got \"" + q.gt_answer + "\"");
    }
    if (q.visual_input != "0" && q.visual_input != "1" && q.visual_input != "2") {
      throw InputError(path, ctx + ": field 'visual_input': expected \"0\", \"1\" or \"2\", got \"" + q.visual_input + "\"");
    }
    q.raw = row;
    q.index = i + 1;
    if (!keys.insert(hb_row_key(q)).second) throw InputError(path, ctx + ": duplicate question key " + hb_row_key(q));
    out.push_back(std::move(q));
  }
  return out;
}

std::string hb_process_punctuation(const std::string& lowered, bool old_period_rule) {
  static const char kPunct[] = {';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+',
                                '\\', '_', '-', '>', '<', '@', '`', ',', '?', '!'};
  // commaStrip (\d)(,)(\d) anywhere in the input strips every punctuation mark instead of spacing it.
  bool digit_comma_digit = false;
  for (size_t i = 1; i + 1 < lowered.size(); ++i) {
    if (lowered[i] == ',' && is_digit(lowered[i - 1]) && is_digit(lowered[i + 1])) digit_comma_digit = true;
  }
  std::string out = lowered;
  for (char p : kPunct) {
    const std::string ps = std::string(1, p);
    const bool strip = lowered.find(ps + " ") != std::string::npos || lowered.find(" " + ps) != std::string::npos ||
                       digit_comma_digit;
    out = replace_all(out, p, strip ? "" : " ");
  }
  // periodStrip.sub('', out, re.UNICODE): re.UNICODE lands in `count`, so at most 32 removals.
  std::string result;
  int removed = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == '.' && removed < 32) {
      const bool next_digit = i + 1 < out.size() && is_digit(out[i + 1]);
      const bool prev_digit = i > 0 && is_digit(out[i - 1]);
      const bool match = old_period_rule ? !next_digit : (!next_digit && !prev_digit);
      if (match) {
        ++removed;
        continue;
      }
    }
    result += out[i];
  }
  return result;
}

const char* yes_no_name(YesNo v) {
  switch (v) {
    case YesNo::Yes: return "Yes";
    case YesNo::No: return "No";
    default: return "Unknown";
  }
}

YesNo yorn_extract(const std::string& prediction, bool old_period_rule) {
  const auto words = python_split(hb_process_punctuation(ascii_lower(prediction), old_period_rule));
  bool yes = false, no = false;
  for (const auto& w : words) {
    yes = yes || w == "yes";
    no = no || w == "no";
  }
  if (yes && !no) return YesNo::Yes;
  if (no && !yes) return YesNo::No;
  return YesNo::Unknown;
}

std::vector<HbAnswer> read_hallusionbench_answers(const std::string& path, const std::string& prediction_field,
                                                  const std::string& judge_field) {
  std::vector<nlohmann::json> rows;
  const bool array = starts_with_bracket(path);
  if (array) {
    const auto doc = io::read_json_file(path);
    for (const auto& r : doc) rows.push_back(r);
  } else {
    rows = io::read_jsonl_file(path);
  }
  std::vector<HbAnswer> out;
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& row = rows[i];
    const std::string ctx = where(i + 1, array ? "element" : "line");
    HbAnswer a;
    a.category = key_field(row, "category", path, ctx);
    a.subcategory = key_field(row, "subcategory", path, ctx);
    a.set_id = key_field(row, "set_id", path, ctx);
    a.figure_id = key_field(row, "figure_id", path, ctx);
    a.question_id = key_field(row, "question_id", path, ctx);
    a.model_prediction = string_field(row, prediction_field, path, ctx);
    a.question = optional_string(row, "question", path, ctx);
    a.gt_answer = optional_string(row, "gt_answer", path, ctx);
    if (!judge_field.empty()) {
      a.judge_code = key_field(row, judge_field, path, ctx);
      if (*a.judge_code != "0" && *a.judge_code != "1" && *a.judge_code != "2") {
        throw InputError(path, ctx + ": field '" + judge_field + "': expected \"0\", \"1\" or \"2\", got \"" +
                                   *a.judge_code + "\"");
      }
    }
    a.file = path;
    a.line = i + 1;
    out.push_back(std::move(a));
  }
  return out;
}

HbProtocol parse_hb_protocol(const std::string& s, const std::string& flag) {
  if (s == "official") return HbProtocol::Official;
  if (s == "vlmevalkit") return HbProtocol::VlmEvalKit;
  throw InputError(flag, "unknown protocol '" + s + "' (official: all 1129 questions; vlmevalkit: the 951 with an image)");
}

const char* hb_protocol_name(HbProtocol p) { return p == HbProtocol::Official ? "official" : "vlmevalkit"; }

double HbAccuracy::percent() const {
  return total == 0 ? std::nan("") : 100.0 * static_cast<double>(correct) / static_cast<double>(total);
}

bool hb_is_correct(const HbQuestion& q, char code) {
  if (code == '1') return true;
  return q.category == "VS" && q.figure_id == "0" && code == '2';
}

HbScore score_hallusionbench(const std::vector<HbQuestion>& benchmark, const std::vector<HbAnswer>& answers,
                             const HbScoreOptions& opts) {
  std::map<std::string, size_t> by_key;
  for (size_t i = 0; i < benchmark.size(); ++i) by_key[hb_row_key(benchmark[i])] = i;
  std::vector<const HbAnswer*> answer_of(benchmark.size(), nullptr);
  HbScore score;
  int64_t question_mismatch = 0;
  std::string first_mismatch;
  for (const auto& a : answers) {
    const std::string key = hb_answer_key(a);
    auto it = by_key.find(key);
    const std::string ctx = fmt::format("row {}", a.line);
    if (it == by_key.end()) throw InputError(a.file, ctx + ": no HallusionBench question has the key " + key);
    const HbQuestion& q = benchmark[it->second];
    if (answer_of[it->second]) {
      throw InputError(a.file, fmt::format("{}: question {} answered twice (also row {} of {})", ctx, key,
                                           answer_of[it->second]->line, answer_of[it->second]->file));
    }
    if (a.gt_answer && *a.gt_answer != q.gt_answer) {
      throw InputError(a.file, fmt::format("{}: field 'gt_answer' is \"{}\" but the benchmark says \"{}\" for {}", ctx,
                                           *a.gt_answer, q.gt_answer, key));
    }
    if (a.question && text::python_rstrip(text::python_lstrip(*a.question)) !=
                          text::python_rstrip(text::python_lstrip(q.question))) {
      if (question_mismatch++ == 0) first_mismatch = fmt::format("{} row {} ({})", a.file, a.line, key);
    }
    answer_of[it->second] = &a;
  }
  if (question_mismatch > 0) {
    score.warnings.push_back(fmt::format("{} answer row(s) carry a question text that differs from the benchmark's "
                                         "(first: {}); scored against the benchmark's ground truth",
                                         question_mismatch, first_mismatch));
  }
  for (size_t i = 0; i < benchmark.size(); ++i) {
    const HbQuestion& q = benchmark[i];
    const HbAnswer* a = answer_of[i];
    if (!a) {
      ++score.unanswered;
      score.unanswered_with_image += hb_has_image(q);
      continue;
    }
    HbRowResult r;
    r.question = &q;
    r.answer = a;
    if (opts.use_judge_codes) {
      if (!a->judge_code) throw InputError(a->file, fmt::format("row {}: no judge correctness code", a->line));
      r.code = (*a->judge_code)[0];
    } else {
      r.extracted = yorn_extract(a->model_prediction, opts.old_period_rule);
      if (r.extracted == YesNo::Unknown) r.code = '2';
      else r.code = ((r.extracted == YesNo::Yes) == (q.gt_answer == "1")) ? '1' : '0';
    }
    r.correct = hb_is_correct(q, r.code);
    score.rows.push_back(r);
  }
  if (score.unanswered > 0) {
    score.warnings.push_back(fmt::format("{} of {} benchmark questions have no answer ({} of them with an image); the "
                                         "metrics cover the answered ones only",
                                         score.unanswered, benchmark.size(), score.unanswered_with_image));
  }
  score.official = metrics_over(score.rows, HbProtocol::Official, !opts.use_judge_codes);
  score.vlmevalkit = metrics_over(score.rows, HbProtocol::VlmEvalKit, !opts.use_judge_codes);
  if (score.rows.empty()) score.warnings.push_back("no answered question: every metric is undefined");
  return score;
}

nlohmann::json hb_metrics_json(const HbMetrics& m) {
  nlohmann::json j;
  j["protocol"] = hb_protocol_name(m.protocol);
  j["questions"] = m.questions;
  j["aAcc"] = accuracy_json(m.aacc);
  j["fAcc"] = accuracy_json(m.facc);
  j["qAcc"] = accuracy_json(m.qacc);
  j["easy_qAcc"] = accuracy_json(m.easy_qacc);
  j["hard_qAcc"] = accuracy_json(m.hard_qacc);
  nlohmann::json cats = nlohmann::json::object();
  for (const auto& [c, a] : m.aacc_by_category) cats[c] = accuracy_json(a);
  j["aAcc_by_category"] = cats;
  j["extracted"] = {{"Yes", m.extracted_yes}, {"No", m.extracted_no}, {"Unknown", m.extracted_unknown}};
  return j;
}

nlohmann::json hb_results_document(const HbScore& score, HbProtocol headline, const HbScoreOptions& opts,
                                   const nlohmann::json& protocol) {
  nlohmann::json doc;
  doc["benchmark"] = "hallusionbench";
  doc["protocol"] = protocol;
  doc["headline_protocol"] = hb_protocol_name(headline);
  doc["correctness"] = opts.use_judge_codes
      ? "judge codes read from the answers (official evaluate_by_chatgpt output)"
      : std::string("rule-based: VLMEvalKit YOrN_Extraction (period rule ") +
            (opts.old_period_rule ? "old (?!<=\\d)(\\.)(?!\\d)" : "current (?<!\\d)\\.(?!\\d)") +
            "), Yes/No vs gt_answer -> code 1/0, Unknown -> 2 (evaluation spec 4.3, hybrid offline mode, no judge)";
  const HbMetrics& first = headline == HbProtocol::Official ? score.official : score.vlmevalkit;
  const HbMetrics& second = headline == HbProtocol::Official ? score.vlmevalkit : score.official;
  doc["results"] = {{hb_protocol_name(first.protocol), hb_metrics_json(first)},
                    {hb_protocol_name(second.protocol), hb_metrics_json(second)}};
  doc["unanswered"] = score.unanswered;
  doc["unanswered_with_image"] = score.unanswered_with_image;
  doc["warnings"] = score.warnings;
  doc["metrics_note"] =
      "official utils.py aggregation (evaluation spec 4.4): aAcc per question, fAcc per figure (official excludes VS "
      "rows without a figure), qAcc per question group, easy/hard qAcc over figure_id \"0\" / other rows; percent "
      "= 100*correct/total unrounded (official prints round(.,4)); official = every answered row, vlmevalkit = "
      "answered rows with an image (full benchmark: 1129 / 951)";
  return doc;
}

std::string format_hb_table(const HbScore& score, HbProtocol headline) {
  std::ostringstream os;
  os << fmt::format("{:<12} {:>9} {:>16} {:>16} {:>16} {:>9} {:>9}\n", "protocol", "questions", "aAcc", "fAcc",
                    "qAcc", "easy qAcc", "hard qAcc");
  for (const HbMetrics* m : {headline == HbProtocol::Official ? &score.official : &score.vlmevalkit,
                             headline == HbProtocol::Official ? &score.vlmevalkit : &score.official}) {
    auto cell = [](const HbAccuracy& a) { return fmt::format("{} ({}/{})", pct(a), a.correct, a.total); };
    os << fmt::format("{:<12} {:>9} {:>16} {:>16} {:>16} {:>9} {:>9}\n", hb_protocol_name(m->protocol), m->questions,
                      cell(m->aacc), cell(m->facc), cell(m->qacc), pct(m->easy_qacc), pct(m->hard_qacc));
  }
  return os.str();
}

std::vector<HbQuestion> hb_select_rows(const std::vector<HbQuestion>& benchmark, HbProtocol protocol, int64_t limit,
                                       const std::string& images_dir) {
  if (limit < 0) throw InputError("--limit", "must be >= 0");
  std::vector<HbQuestion> out;
  for (const auto& q : benchmark) {
    if (protocol == HbProtocol::VlmEvalKit && !hb_has_image(q)) continue;
    if (limit > 0 && static_cast<int64_t>(out.size()) >= limit) break;
    out.push_back(q);
  }
  if (!images_dir.empty()) {
    for (const auto& q : out) {
      if (!hb_has_image(q)) continue;
      const std::string path = (std::filesystem::path(images_dir) / hb_image_relpath(q)).string();
      if (!std::filesystem::is_regular_file(path)) {
        throw InputError(path, fmt::format("image not found (question {}, element {}; --images {})", hb_row_key(q),
                                           q.index, images_dir));
      }
    }
  }
  return out;
}

HbRunResult run_hallusionbench(models::VisionLanguageModel& model, const HbRunOptions& opts) {
  namespace fs = std::filesystem;
  const std::string prompt_template =
      opts.prompt_template.empty() ? bench_conv_template(opts.conv_mode) : opts.prompt_template;
  check_bench_template(prompt_template, opts.prompt_template.empty() ? "--conv-mode" : "--prompt-template");
  const auto benchmark = read_hallusionbench(opts.benchmark_path);
  const auto rows = hb_select_rows(benchmark, opts.protocol, opts.limit, opts.images_dir);

  std::vector<GenerationItem> items;
  for (const auto& q : rows) {
    GenerationItem it;
    it.id = hb_row_key(q);
    if (hb_has_image(q)) it.image_path = (fs::path(opts.images_dir) / hb_image_relpath(q)).string();
    it.prompt = bench_prompt(prompt_template, q.question, hb_has_image(q));
    items.push_back(std::move(it));
  }
  std::vector<std::string> known;
  for (const auto& q : benchmark) known.push_back(hb_row_key(q));

  // The protocol of the answers (not the row selection: official and vlmevalkit runs share answers).
  const nlohmann::json protocol = bench_protocol("hallusionbench", opts, prompt_template);
  HbRunResult result;
  result.answers_path = (fs::path(opts.out_dir) / "answers" / "hallusionbench.jsonl").string();
  const GenerationRunOptions gen = bench_generation_options(opts, result.answers_path, protocol, "hallusionbench");
  auto make_record = [&](size_t i, const std::string& answer) {
    nlohmann::json rec = rows[i].raw;
    rec["model_prediction"] = answer;
    rec["prompt"] = items[i].prompt;
    rec["model_id"] = opts.model_id;
    return rec;
  };
  auto key_of = [&](const nlohmann::json& rec, size_t line) {
    const std::string ctx = where(line, "line");
    HbAnswer a;
    a.category = key_field(rec, "category", gen.answers_path, ctx);
    a.subcategory = key_field(rec, "subcategory", gen.answers_path, ctx);
    a.set_id = key_field(rec, "set_id", gen.answers_path, ctx);
    a.figure_id = key_field(rec, "figure_id", gen.answers_path, ctx);
    a.question_id = key_field(rec, "question_id", gen.answers_path, ctx);
    return hb_answer_key(a);
  };
  result.generated = run_generation(model, items, gen, make_record, key_of, known);

  // Score the selected rows (answers beyond the selection, from a wider earlier run, stay in the file).
  std::set<std::string> selected;
  for (const auto& it : items) selected.insert(it.id);
  std::vector<HbAnswer> answers;
  for (auto& a : read_hallusionbench_answers(result.answers_path)) {
    if (selected.count(hb_answer_key(a))) answers.push_back(std::move(a));
  }
  result.score = score_hallusionbench(rows, answers, opts.score);

  // The official result format: the benchmark rows with model_prediction, benchmark order.
  std::map<std::string, const HbAnswer*> by_key;
  for (const auto& a : answers) by_key[hb_answer_key(a)] = &a;
  nlohmann::json official = nlohmann::json::array();
  for (const auto& q : rows) {
    auto it = by_key.find(hb_row_key(q));
    if (it == by_key.end()) continue;
    nlohmann::json rec = q.raw;
    rec["model_prediction"] = it->second->model_prediction;
    official.push_back(std::move(rec));
  }
  io::write_json_atomic((fs::path(opts.out_dir) / "HallusionBench_result.json").string(), official);

  nlohmann::json run_protocol = protocol;
  run_protocol["benchmark_file"] = opts.benchmark_path;
  run_protocol["images_dir"] = opts.images_dir;
  run_protocol["selection"] = hb_protocol_name(opts.protocol);
  run_protocol["limit"] = opts.limit;
  run_protocol["batch_size"] = opts.batch_size;
  run_protocol["conv_mode"] = opts.prompt_template.empty() ? opts.conv_mode : "custom";
  run_protocol["text_only_rows"] = "asked without an image (the <image> marker and its separator removed)";
  result.results = hb_results_document(result.score, opts.protocol, opts.score, run_protocol);
  result.results["answers_file"] = result.answers_path;
  io::write_json_atomic((fs::path(opts.out_dir) / "results.json").string(), result.results);
  return result;
}

}  // namespace p2dpo::eval
