#include "eval/pope.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>

#include "io/atomic_file.h"
#include "io/errors.h"
#include "io/json_io.h"

namespace p2dpo::eval {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// One record of a JSONL file or JSON array, with where it came from for messages.
struct Record {
  nlohmann::json value;
  std::string file;
  std::string where;  // "line 12" / "element 12"
  size_t line = 0;
};

[[noreturn]] void fail(const Record& r, const std::string& problem) {
  throw InputError(r.file, r.where + ": " + problem);
}

// Rows of a JSONL file (blank lines skipped, line numbers kept) or of a top-level JSON array.
std::vector<Record> read_records(const std::string& path) {
  const std::string text = io::read_file(path);
  std::vector<Record> rows;
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '[') {
    nlohmann::json array = io::parse_json_text(text, path);
    size_t index = 0;
    for (auto& v : array) {
      ++index;
      rows.push_back({std::move(v), path, "element " + std::to_string(index), index});
    }
    return rows;
  }
  size_t line_number = 0, start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    ++line_number;
    const std::string line = text.substr(start, end - start);
    start = end + 1;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = "line " + std::to_string(line_number);
    try {
      rows.push_back({io::parse_json_text(line, path), path, where, line_number});
    } catch (const InputError& e) {
      throw InputError(path, where + ": " + std::string(e.what()).substr(path.size() + 2));
    }
  }
  return rows;
}

template <typename T>
T convert(const Record& r, const nlohmann::json& v, const std::string& key) {
  try {
    return io::detail::convert_field<T>(v, key, r.file);
  } catch (const InputError& e) {
    fail(r, std::string(e.what()).substr(r.file.size() + 2));
  }
}

template <typename T>
T required(const Record& r, const std::string& key) {
  if (!r.value.is_object()) fail(r, std::string("expected a JSON object, got ") + io::json_type_name(r.value));
  auto it = r.value.find(key);
  if (it == r.value.end()) fail(r, "missing required field '" + key + "'");
  return convert<T>(r, *it, key);
}

template <typename T>
std::optional<T> optional_field(const Record& r, const std::string& key) {
  auto it = r.value.find(key);
  if (it == r.value.end() || it->is_null()) return std::nullopt;
  return convert<T>(r, *it, key);
}

bool parse_label(const Record& r, const std::string& label) {
  if (label == "yes") return true;
  if (label == "no") return false;
  fail(r, "field 'label': expected \"yes\" or \"no\", got \"" + label + "\"");
}

// The split of a record: "category" (LLaVA) or "split" (p2dpo), whichever is present.
std::optional<std::string> split_field(const Record& r) {
  if (auto s = optional_field<std::string>(r, "category")) return s;
  return optional_field<std::string>(r, "split");
}

std::string size_of(const Record& r, const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object()) {
    auto it = v.find("size");
    if (it != v.end() && it->is_string()) return it->get<std::string>();
    return "";
  }
  if (v.is_array() && !v.empty()) return size_of(r, v.front());
  return "";
}

std::string object_size_field(const Record& r) {
  if (auto s = optional_field<std::string>(r, "size")) return *s;
  auto it = r.value.find("objects");
  if (it == r.value.end() || it->is_null()) return "";
  return size_of(r, *it);
}

std::string location(const std::string& file, size_t line) { return file + " line " + std::to_string(line); }

int split_rank(const std::string& split) {
  if (split == "random") return 0;
  if (split == "popular") return 1;
  if (split == "adversarial") return 2;
  return 3;
}

bool split_less(const std::string& a, const std::string& b) {
  const int ra = split_rank(a), rb = split_rank(b);
  return ra != rb ? ra < rb : a < b;
}

double ratio(int64_t num, int64_t den) { return den == 0 ? kNaN : static_cast<double>(num) / den; }

std::string sigma_label(const std::string& noise, double sigma) {
  if (noise == "none") return "clean";
  return fmt::format("{} noise sigma={}", noise, sigma);
}

nlohmann::json number_or_null(double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); }

}  // namespace

bool pope_answer_is_yes(const std::string& answer) {
  std::string text = answer.substr(0, answer.find('.'));
  text.erase(std::remove(text.begin(), text.end(), ','), text.end());
  size_t start = 0;
  while (true) {
    const size_t space = text.find(' ', start);
    const std::string word = text.substr(start, space == std::string::npos ? std::string::npos : space - start);
    if (word == "No" || word == "not" || word == "no") return false;
    if (space == std::string::npos) return true;
    start = space + 1;
  }
}

void PopeCounts::add(bool label_yes, bool pred_yes) {
  if (pred_yes) {
    (label_yes ? tp : fp) += 1;
  } else {
    (label_yes ? fn : tn) += 1;
  }
}

PopeMetrics pope_metrics(const PopeCounts& c) {
  PopeMetrics m;
  m.counts = c;
  m.accuracy = ratio(c.tp + c.tn, c.n());
  m.precision = ratio(c.tp, c.tp + c.fp);
  m.recall = ratio(c.tp, c.tp + c.fn);
  m.f1 = 2 * m.precision * m.recall / (m.precision + m.recall);  // NaN when either is NaN or both are 0
  m.yes_ratio = ratio(c.tp + c.fp, c.n());
  return m;
}

std::string pope_split_from_filename(const std::string& path) {
  const std::string stem = std::filesystem::path(path).stem().string();
  std::string found;
  for (const char* split : {"adversarial", "popular", "random"}) {
    if (stem.find(split) != std::string::npos) {
      if (!found.empty()) return stem;  // names two splits: ambiguous, keep the stem
      found = split;
    }
  }
  return found.empty() ? stem : found;
}

std::vector<PopeQuestion> read_pope_questions(const std::string& path) {
  const std::string file_split = pope_split_from_filename(path);
  std::vector<PopeQuestion> out;
  std::map<std::pair<std::string, int64_t>, size_t> first_line;
  for (const auto& r : read_records(path)) {
    PopeQuestion q;
    q.question_id = required<int64_t>(r, "question_id");
    q.image = required<std::string>(r, "image");
    q.text = required<std::string>(r, "text");
    q.split = split_field(r).value_or(file_split);
    if (auto label = optional_field<std::string>(r, "label")) q.label_yes = parse_label(r, *label);
    q.object_size = object_size_field(r);
    q.file = path;
    q.line = r.line;
    auto [it, inserted] = first_line.emplace(std::make_pair(q.split, q.question_id), r.line);
    if (!inserted) {
      fail(r, fmt::format("question_id {} of split '{}' appears twice (first at {})", q.question_id, q.split,
                          r.where.substr(0, r.where.find(' ') + 1) + std::to_string(it->second)));
    }
    out.push_back(std::move(q));
  }
  if (out.empty()) throw InputError(path, "no questions in the file");
  return out;
}

void attach_pope_labels(std::vector<PopeQuestion>& questions, const std::vector<std::string>& label_files) {
  for (const auto& label_file : label_files) {
    const auto labels = read_pope_questions(label_file);
    const std::string split = labels.front().split;
    std::vector<PopeQuestion*> targets;
    for (auto& q : questions)
      if (q.split == split) targets.push_back(&q);
    if (targets.empty()) {
      throw InputError(label_file, "label file for split '" + split + "', but no question has that split");
    }
    if (targets.size() != labels.size()) {
      throw InputError(label_file, fmt::format("{} labels for split '{}', but the question files hold {} questions of it",
                                               labels.size(), split, targets.size()));
    }
    for (size_t k = 0; k < labels.size(); ++k) {
      const auto& l = labels[k];
      PopeQuestion& q = *targets[k];
      if (!l.label_yes) throw InputError(label_file, fmt::format("line {}: missing required field 'label'", l.line));
      std::string mismatch;
      if (q.image != l.image) {
        mismatch = "image";
      } else if (q.text.rfind(l.text, 0) != 0) {  // LLaVA's text = label text + answer suffix
        mismatch = "question text";
      } else if (q.label_yes && *q.label_yes != *l.label_yes) {
        mismatch = "label";
      }
      if (!mismatch.empty()) {
        throw InputError(label_file, fmt::format("line {}: {} differs from {} (paired by position within split '{}')",
                                                 l.line, mismatch, location(q.file, q.line), split));
      }
      q.label_yes = l.label_yes;
      if (q.object_size.empty()) q.object_size = l.object_size;
    }
  }
}

std::vector<PopeAnswer> read_pope_answers(const std::string& path) {
  std::vector<PopeAnswer> out;
  for (const auto& r : read_records(path)) {
    PopeAnswer a;
    a.question_id = required<int64_t>(r, "question_id");
    a.text = required<std::string>(r, "text");
    a.split = split_field(r);
    if (auto label = optional_field<std::string>(r, "label")) a.label_yes = parse_label(r, *label);
    a.object_size = optional_field<std::string>(r, "size").value_or("");
    a.sigma = optional_field<double>(r, "sigma").value_or(0.0);
    if (!(a.sigma >= 0.0) || !std::isfinite(a.sigma)) fail(r, "field 'sigma': must be finite and >= 0");
    a.noise = optional_field<std::string>(r, "noise").value_or(a.sigma > 0 ? "pixel" : "none");
    if (a.sigma == 0.0) a.noise = "none";  // every mode is the clean run at sigma 0
    a.file = path;
    a.line = r.line;
    out.push_back(std::move(a));
  }
  return out;
}

std::vector<PopeScore> score_pope(const std::vector<PopeAnswer>& answers, const std::vector<PopeQuestion>& questions,
                                  std::vector<std::string>& warnings) {
  using SplitId = std::pair<std::string, int64_t>;
  std::map<SplitId, const PopeQuestion*> by_split_id;
  std::map<int64_t, std::vector<const PopeQuestion*>> by_id;
  std::map<std::string, std::vector<int64_t>> split_order;  // question ids in question-file order
  for (const auto& q : questions) {
    auto [it, inserted] = by_split_id.emplace(SplitId{q.split, q.question_id}, &q);
    if (!inserted) {
      throw InputError(q.file, fmt::format("line {}: question_id {} of split '{}' already at {}", q.line, q.question_id,
                                           q.split, location(it->second->file, it->second->line)));
    }
    by_id[q.question_id].push_back(&q);
    split_order[q.split].push_back(q.question_id);
  }

  struct Item {
    const PopeAnswer* answer;
    bool label_yes;
    std::string size;
  };
  // (noise, sigma) -> split -> items in answer order
  std::map<std::pair<std::string, double>, std::map<std::string, std::vector<Item>>> groups;
  std::map<std::pair<std::string, double>, std::map<SplitId, const PopeAnswer*>> seen;
  std::map<std::pair<std::string, double>, std::vector<std::string>> group_files;

  for (const auto& a : answers) {
    std::string split;
    bool label_yes = false;
    std::string size = a.object_size;
    if (questions.empty()) {
      if (!a.split || !a.label_yes) {
        throw InputError(a.file, fmt::format("line {}: no '{}' field; give the question files (--questions) to score it",
                                             a.line, a.split ? "label" : "split"));
      }
      split = *a.split;
      label_yes = *a.label_yes;
    } else {
      const PopeQuestion* q = nullptr;
      if (a.split) {
        auto it = by_split_id.find({*a.split, a.question_id});
        if (it == by_split_id.end()) {
          throw InputError(a.file, fmt::format("line {}: question_id {} of split '{}' is not in the question files",
                                               a.line, a.question_id, *a.split));
        }
        q = it->second;
      } else {
        auto it = by_id.find(a.question_id);
        if (it == by_id.end()) {
          throw InputError(a.file, fmt::format("line {}: question_id {} is not in the question files", a.line,
                                               a.question_id));
        }
        if (it->second.size() > 1) {
          throw InputError(a.file, fmt::format("line {}: question_id {} is in several question files ({} and {}) and "
                                               "the answer names no split; score one question file at a time",
                                               a.line, a.question_id, it->second[0]->file, it->second[1]->file));
        }
        q = it->second.front();
      }
      if (!q->label_yes) {
        throw InputError(q->file, fmt::format("line {}: question_id {} has no label; give the label files with --labels",
                                              q->line, q->question_id));
      }
      if (a.label_yes && *a.label_yes != *q->label_yes) {
        throw InputError(a.file, fmt::format("line {}: label '{}' differs from {} ('{}')", a.line,
                                             *a.label_yes ? "yes" : "no", location(q->file, q->line),
                                             *q->label_yes ? "yes" : "no"));
      }
      split = q->split;
      label_yes = *q->label_yes;
      if (!q->object_size.empty()) size = q->object_size;
    }
    const auto key = std::make_pair(a.noise, a.sigma);
    auto [it, inserted] = seen[key].emplace(SplitId{split, a.question_id}, &a);
    if (!inserted) {
      throw InputError(a.file, fmt::format("line {}: question_id {} of split '{}' answered twice ({}: first at {})",
                                           a.line, a.question_id, split, sigma_label(a.noise, a.sigma),
                                           location(it->second->file, it->second->line)));
    }
    groups[key][split].push_back({&a, label_yes, size});
    auto& files = group_files[key];
    if (std::find(files.begin(), files.end(), a.file) == files.end()) files.push_back(a.file);
  }

  std::vector<PopeScore> scores;
  for (auto& [key, splits] : groups) {
    PopeScore score;
    score.noise = key.first;
    score.sigma = key.second;
    score.answer_files = group_files[key];
    const std::string level = sigma_label(score.noise, score.sigma);
    std::vector<std::string> names;
    for (const auto& kv : splits) names.push_back(kv.first);
    std::sort(names.begin(), names.end(), split_less);
    for (const auto& name : names) {
      const auto& items = splits[name];
      PopeSplitScore s;
      s.split = name;
      PopeCounts counts;
      for (const auto& item : items) {
        const bool pred = pope_answer_is_yes(item.answer->text);
        counts.add(item.label_yes, pred);
        if (item.label_yes && !item.size.empty()) s.by_size[item.size].add(true, pred);
      }
      s.metrics = pope_metrics(counts);
      if (!questions.empty()) {
        const auto& order = split_order[name];
        s.unanswered = static_cast<int64_t>(order.size()) - static_cast<int64_t>(items.size());
        bool agrees = true;
        for (size_t k = 0; k < items.size() && agrees; ++k) agrees = items[k].answer->question_id == order[k];
        s.positional_pairing_agrees = agrees;
        if (s.unanswered > 0) {
          warnings.push_back(fmt::format("{}, split {}: {} of {} questions have no answer; scored the {} answered", level,
                                         name, s.unanswered, order.size(), items.size()));
        }
        if (!agrees) {
          warnings.push_back(fmt::format("{}, split {}: answers are not in question-file order; p2dpo pairs them by "
                                         "question_id, the official eval_pope.py (by position) would report different numbers",
                                         level, name));
        }
      }
      if (std::isnan(s.metrics.f1)) {
        warnings.push_back(fmt::format("{}, split {}: F1 undefined (tp={}, fp={}, fn={}); reported as null", level, name,
                                       counts.tp, counts.fp, counts.fn));
      }
      score.splits.push_back(std::move(s));
    }
    const double k = static_cast<double>(score.splits.size());
    PopeMetrics& avg = score.average;
    avg.accuracy = avg.precision = avg.recall = avg.f1 = avg.yes_ratio = 0.0;
    for (const auto& s : score.splits) {
      avg.counts.tp += s.metrics.counts.tp;
      avg.counts.fp += s.metrics.counts.fp;
      avg.counts.tn += s.metrics.counts.tn;
      avg.counts.fn += s.metrics.counts.fn;
      avg.accuracy += s.metrics.accuracy / k;
      avg.precision += s.metrics.precision / k;
      avg.recall += s.metrics.recall / k;
      avg.f1 += s.metrics.f1 / k;
      avg.yes_ratio += s.metrics.yes_ratio / k;
    }
    scores.push_back(std::move(score));
  }
  std::stable_sort(scores.begin(), scores.end(), [](const PopeScore& a, const PopeScore& b) {
    return a.sigma != b.sigma ? a.sigma < b.sigma : a.noise < b.noise;
  });
  return scores;
}

nlohmann::json pope_metrics_json(const PopeMetrics& m) {
  return {{"n", m.counts.n()},
          {"tp", m.counts.tp},
          {"fp", m.counts.fp},
          {"tn", m.counts.tn},
          {"fn", m.counts.fn},
          {"accuracy", number_or_null(m.accuracy)},
          {"precision", number_or_null(m.precision)},
          {"recall", number_or_null(m.recall)},
          {"f1", number_or_null(m.f1)},
          {"yes_ratio", number_or_null(m.yes_ratio)}};
}

nlohmann::json pope_scores_json(const std::vector<PopeScore>& scores) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& score : scores) {
    nlohmann::json j;
    j["noise"] = score.noise;
    j["sigma"] = score.sigma;
    j["answer_files"] = score.answer_files;
    j["split_order"] = nlohmann::json::array();
    j["splits"] = nlohmann::json::object();
    for (const auto& s : score.splits) {
      nlohmann::json sj = pope_metrics_json(s.metrics);
      sj["unanswered"] = s.unanswered;
      sj["positional_pairing_agrees"] =
          s.positional_pairing_agrees ? nlohmann::json(*s.positional_pairing_agrees) : nlohmann::json(nullptr);
      if (!s.by_size.empty()) {
        nlohmann::json sizes = nlohmann::json::object();
        for (const auto& [size, c] : s.by_size) {
          sizes[size] = {{"positives", c.tp + c.fn}, {"tp", c.tp}, {"fn", c.fn}, {"recall", number_or_null(ratio(c.tp, c.tp + c.fn))}};
        }
        sj["recall_by_size"] = sizes;
      }
      j["split_order"].push_back(s.split);
      j["splits"][s.split] = sj;
    }
    nlohmann::json avg = pope_metrics_json(score.average);
    avg["splits"] = score.splits.size();
    avg["note"] = "accuracy..yes_ratio: unweighted mean over splits; n..fn: summed";
    j["average"] = avg;
    out.push_back(j);
  }
  return out;
}

std::string format_pope_table(const std::vector<PopeScore>& scores) {
  std::string out;
  auto pct = [](double v) { return std::isnan(v) ? fmt::format("{:>7}", "n/a") : fmt::format("{:>7.2f}", 100.0 * v); };
  auto row = [&](const std::string& name, const PopeMetrics& m) {
    return fmt::format("{:<12} {:>6} {} {} {} {} {}\n", name, m.counts.n(), pct(m.accuracy), pct(m.precision),
                       pct(m.recall), pct(m.f1), pct(m.yes_ratio));
  };
  for (const auto& score : scores) {
    out += fmt::format("POPE, {}\n", sigma_label(score.noise, score.sigma));
    out += fmt::format("{:<12} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7}\n", "split", "N", "Acc", "Prec", "Rec", "F1", "Yes%");
    for (const auto& s : score.splits) out += row(s.split, s.metrics);
    if (score.splits.size() > 1) out += row("average", score.average);
    for (const auto& s : score.splits) {
      if (s.by_size.empty()) continue;
      out += fmt::format("recall by object size, {}:", s.split);
      for (const auto& [size, c] : s.by_size) {
        out += fmt::format(" {} {} (n={})", size, pct(ratio(c.tp, c.tp + c.fn)), c.tp + c.fn);
      }
      out += "\n";
    }
    out += "\n";
  }
  if (scores.size() > 1) {
    out += "average F1 by noise level:";
    for (const auto& score : scores) {
      out += fmt::format("  {}={}", score.noise == "none" ? std::string("clean") : fmt::format("{}", score.sigma),
                         pct(score.average.f1));
    }
    out += "\n";
  }
  return out;
}

}  // namespace p2dpo::eval
