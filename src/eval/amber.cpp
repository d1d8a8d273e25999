#include "eval/amber.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "eval/bench_runner.h"
#include "io/errors.h"
#include "io/json_io.h"
#include "text/utf8.h"

namespace p2dpo::eval {

namespace fs = std::filesystem;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path, "cannot open file");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool starts_with_bracket(const std::string& path) {
  const std::string text = read_text(path);
  for (char c : text) {
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    return c == '[';
  }
  return false;
}

std::vector<std::string> string_list(const nlohmann::json& v, const std::string& file, const std::string& label) {
  if (!v.is_array()) throw InputError(file, "field '" + label + "': expected array, got " + io::json_type_name(v));
  std::vector<std::string> out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (!v[i].is_string()) {
      throw InputError(file, fmt::format("field '{}[{}]': expected string, got {}", label, i, io::json_type_name(v[i])));
    }
    out.push_back(v[i].get<std::string>());
  }
  return out;
}

bool is_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

std::string ascii_lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

// nltk's noun MORPHOLOGICAL_SUBSTITUTIONS, in order.
const std::vector<std::pair<std::string, std::string>>& noun_rules() {
  static const std::vector<std::pair<std::string, std::string>> rules = {
      {"s", ""}, {"ses", "s"}, {"ves", "f"}, {"xes", "x"}, {"zes", "z"},
      {"ches", "ch"}, {"shes", "sh"}, {"men", "man"}, {"ies", "y"}};
  return rules;
}

std::vector<std::string> apply_rules(const std::vector<std::string>& forms) {
  std::vector<std::string> out;
  for (const auto& f : forms) {
    for (const auto& [old_suffix, new_suffix] : noun_rules()) {
      if (f.size() >= old_suffix.size() && f.compare(f.size() - old_suffix.size(), old_suffix.size(), old_suffix) == 0) {
        out.push_back(f.substr(0, f.size() - old_suffix.size()) + new_suffix);
      }
    }
  }
  return out;
}

// Irregular plurals whose lemma is an AMBER word (used only without a WordNet dictionary, where
// noun.exc would supply them).
const std::map<std::string, std::vector<std::string>>& builtin_irregulars() {
  static const std::map<std::string, std::vector<std::string>> m = {
      {"children", {"child"}}, {"mice", {"mouse"}}, {"geese", {"goose"}}, {"knives", {"knife"}}};
  return m;
}

// Tokens after which "can" is a noun (a soda can), not the modal verb.
const std::set<std::string>& can_noun_left() {
  static const std::set<std::string> s = {"a", "an", "the", "this", "that", "one", "each", "every", "another",
                                          "tin", "soda", "beer", "trash", "garbage", "metal", "aluminum", "paint",
                                          "watering", "empty", "open", "small", "large", "red", "blue", "green"};
  return s;
}
const std::set<std::string>& be_forms() {
  static const std::set<std::string> s = {"is", "are", "was", "were", "be", "been", "being", "am", "'s", "'re", "'m"};
  return s;
}
// Tokens after which the next word is a verb: subject pronouns and modals.
const std::set<std::string>& verb_left() {
  static const std::set<std::string> s = {"he",    "she",   "it",   "they", "we",    "i",      "you",
                                          "could", "will",  "would", "may", "might", "should", "must"};
  return s;
}

void add_qa(AmberQaCounters& c, const std::string& truth, const std::string& resp) {
  c.correct_num += 1;
  if (truth == "yes") {
    if (resp == "Yes") c.correct_score += 1;
  } else {
    c.no_num += 1;
    if (resp == "No") {
      c.correct_score += 1;
      c.no_score += 1;
    }
  }
  if (resp == "No") {
    c.ans_no_num += 1;
    if (truth == "no") c.ans_no_score += 1;
  }
}

nlohmann::json qa_json(const AmberQaMetrics& m) {
  return {{"items", m.items},        {"accuracy", m.accuracy}, {"precision", m.precision},
          {"recall", m.recall},      {"f1", m.f1},
          {"counters", {{"correct_num", m.counters.correct_num}, {"correct_score", m.counters.correct_score},
                        {"no_num", m.counters.no_num}, {"no_score", m.counters.no_score},
                        {"ans_no_num", m.counters.ans_no_num}, {"ans_no_score", m.counters.ans_no_score}}}};
}

}  // namespace

const AmberAnnotation& AmberData::annotation(int64_t id, const std::string& file, size_t row) const {
  auto it = index_of_id.find(id);
  if (it == index_of_id.end()) {
    throw InputError(file, fmt::format("row {}: field 'id': {} is not an id of {}/annotations.json", row, id, dir));
  }
  return annotations[it->second];
}

AmberData read_amber_data(const std::string& dir) {
  AmberData d;
  d.dir = dir;
  const std::string ann_path = (fs::path(dir) / "annotations.json").string();
  const auto ann = io::read_json_file(ann_path);
  if (!ann.is_array()) throw InputError(ann_path, "expected a JSON array, got " + std::string(io::json_type_name(ann)));
  for (size_t i = 0; i < ann.size(); ++i) {
    const std::string ctx = fmt::format("[{}]", i);
    AmberAnnotation a;
    a.id = io::get_required<int64_t>(ann[i], "id", ann_path, ctx);
    a.type = io::get_required<std::string>(ann[i], "type", ann_path, ctx);
    // inference.py reads annotations[id - 1]; in the official file element i has id i + 1, so
    // looking ids up gives the same item and also works on a cut of the file.
    if (!d.index_of_id.emplace(a.id, d.annotations.size()).second) {
      throw InputError(ann_path, fmt::format("element {}: duplicate id {}", i + 1, a.id));
    }
    if (a.generative()) {
      a.truth = string_list(io::get_required<nlohmann::json>(ann[i], "truth", ann_path, ctx), ann_path, ctx + ".truth");
      a.hallu = string_list(io::get_required<nlohmann::json>(ann[i], "hallu", ann_path, ctx), ann_path, ctx + ".hallu");
    } else {
      a.truth_answer = io::get_required<std::string>(ann[i], "truth", ann_path, ctx);
      if (a.truth_answer != "yes" && a.truth_answer != "no") {
        throw InputError(ann_path, fmt::format("field '{}.truth': expected \"yes\" or \"no\", got \"{}\"", ctx, a.truth_answer));
      }
    }
    d.annotations.push_back(std::move(a));
  }
  const std::string rel_path = (fs::path(dir) / "relation.json").string();
  const auto rel = io::read_json_file(rel_path);
  if (!rel.is_object()) throw InputError(rel_path, "expected a JSON object, got " + std::string(io::json_type_name(rel)));
  for (auto it = rel.begin(); it != rel.end(); ++it) {
    d.relation[it.key()] = string_list(it.value(), rel_path, it.key());
    d.vocabulary.insert(it.key());
    for (const auto& w : d.relation[it.key()]) d.vocabulary.insert(w);
  }
  // safe_words.txt: `for line in f: line.split('\n')[0]`.
  const std::string safe_path = (fs::path(dir) / "safe_words.txt").string();
  const std::string text = read_text(safe_path);
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string::npos) nl = text.size();
    d.safe_words.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  return d;
}

std::vector<AmberQuery> read_amber_queries(const std::string& path) {
  const auto doc = io::read_json_file(path);
  if (!doc.is_array()) throw InputError(path, "expected a JSON array, got " + std::string(io::json_type_name(doc)));
  std::vector<AmberQuery> out;
  std::set<int64_t> seen;
  for (size_t i = 0; i < doc.size(); ++i) {
    const std::string ctx = fmt::format("[{}]", i);
    AmberQuery q;
    q.id = io::get_required<int64_t>(doc[i], "id", path, ctx);
    q.image = io::get_required<std::string>(doc[i], "image", path, ctx);
    q.query = io::get_required<std::string>(doc[i], "query", path, ctx);
    if (!seen.insert(q.id).second) throw InputError(path, fmt::format("element {}: duplicate id {}", i + 1, q.id));
    out.push_back(std::move(q));
  }
  return out;
}

std::vector<AmberResponse> read_amber_responses(const std::string& path) {
  std::vector<nlohmann::json> rows;
  const bool array = starts_with_bracket(path);
  if (array) {
    for (const auto& r : io::read_json_file(path)) rows.push_back(r);
  } else {
    rows = io::read_jsonl_file(path);
  }
  std::vector<AmberResponse> out;
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::string ctx = fmt::format("{} {}", array ? "element" : "line", i + 1);
    AmberResponse r;
    r.id = io::get_required<int64_t>(rows[i], "id", path, ctx);
    r.response = io::get_required<std::string>(rows[i], "response", path, ctx);
    r.file = path;
    r.row = i + 1;
    out.push_back(std::move(r));
  }
  return out;
}

AmberAnswerRule parse_amber_answer_rule(const std::string& s, const std::string& flag) {
  if (s == "prefix") return AmberAnswerRule::Prefix;
  if (s == "exact") return AmberAnswerRule::Exact;
  if (s == "pope") return AmberAnswerRule::Pope;
  throw InputError(flag, "unknown answer rule '" + s + "' (prefix, exact, pope)");
}

const char* amber_answer_rule_name(AmberAnswerRule r) {
  switch (r) {
    case AmberAnswerRule::Prefix: return "prefix";
    case AmberAnswerRule::Exact: return "exact";
    default: return "pope";
  }
}

std::string amber_normalise_answer(const std::string& response, AmberAnswerRule rule) {
  switch (rule) {
    case AmberAnswerRule::Exact:
      return response;
    case AmberAnswerRule::Prefix: {
      const std::string r = ascii_lower(text::python_rstrip(text::python_lstrip(response)));
      if (r.rfind("yes", 0) == 0) return "Yes";
      if (r.rfind("no", 0) == 0) return "No";
      return response;
    }
    default: {
      // POPE (spec §2.3): cut at the first '.', drop ',', split on ' ', No/not/no -> No.
      std::string t = response.substr(0, response.find('.'));
      t.erase(std::remove(t.begin(), t.end(), ','), t.end());
      size_t start = 0;
      while (true) {
        const size_t sp = t.find(' ', start);
        const std::string w = t.substr(start, sp == std::string::npos ? std::string::npos : sp - start);
        if (w == "No" || w == "not" || w == "no") return "No";
        if (sp == std::string::npos) break;
        start = sp + 1;
      }
      return "Yes";
    }
  }
}

AmberQaCounters& AmberQaCounters::operator+=(const AmberQaCounters& o) {
  correct_num += o.correct_num;
  correct_score += o.correct_score;
  no_num += o.no_num;
  no_score += o.no_score;
  ans_no_num += o.ans_no_num;
  ans_no_score += o.ans_no_score;
  return *this;
}

double python_round1(double x) {
  if (!std::isfinite(x)) return x;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f", x);  // glibc: exact decimal value, ties to even = Python's round
  return std::strtod(buf, nullptr);
}

AmberQaMetrics amber_qa_metrics(const AmberQaCounters& c, int64_t items, double eps) {
  AmberQaMetrics m;
  m.counters = c;
  m.items = items;
  m.accuracy = python_round1(c.correct_score / c.correct_num * 100);
  m.precision = python_round1(c.ans_no_score / c.ans_no_num * 100);
  m.recall = python_round1(c.no_score / c.no_num * 100);
  const double p = m.precision / 100, r = m.recall / 100;
  m.f1 = python_round1(2 * p * r / (p + r + eps) * 100);
  return m;
}

bool AmberNlp::similar_words(const std::string& a, const std::string& b) const {
  if (!has_similarity()) return a == b;
  return similar.count({a, b}) > 0;
}

void load_wordnet(AmberNlp& nlp, const std::string& dir) {
  const std::string index_path = (fs::path(dir) / "index.noun").string();
  const std::string exc_path = (fs::path(dir) / "noun.exc").string();
  {
    std::istringstream in(read_text(index_path));
    for (std::string line; std::getline(in, line);) {
      if (line.empty() || line[0] == ' ') continue;  // the licence header lines start with spaces
      nlp.wordnet_nouns.insert(line.substr(0, line.find(' ')));
    }
  }
  if (nlp.wordnet_nouns.empty()) throw InputError(index_path, "no lemma read: not a WordNet index.noun file");
  std::istringstream in(read_text(exc_path));
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::string form, base;
    if (!(words >> form)) continue;
    auto& bases = nlp.wordnet_exc[form];
    while (words >> base) bases.push_back(base);
  }
}

void load_similar_pairs(AmberNlp& nlp, const std::string& path, const std::set<std::string>& vocabulary) {
  std::istringstream in(read_text(path));
  size_t line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    const size_t tab = line.find('\t');
    if (tab == std::string::npos || line.find('\t', tab + 1) != std::string::npos) {
      throw InputError(path, fmt::format("line {}: expected \"word1<TAB>word2\", got \"{}\"", line_no, line));
    }
    const std::string a = line.substr(0, tab), b = line.substr(tab + 1);
    for (const auto& w : {a, b}) {
      if (!vocabulary.count(w)) {
        throw InputError(path, fmt::format("line {}: '{}' is not an AMBER vocabulary word (relation.json)", line_no, w));
      }
    }
    nlp.similar.insert({a, b});
    nlp.similar.insert({b, a});
  }
}

std::vector<std::string> amber_tokenize(const std::string& text) {
  std::vector<std::string> tokens;
  size_t i = 0;
  const size_t n = text.size();
  while (i < n) {
    if (is_alnum(text[i])) {
      size_t j = i;
      while (j < n && (is_alnum(text[j]) || (text[j] == '-' && j + 1 < n && is_alnum(text[j + 1]) && j > i))) ++j;
      tokens.push_back(text.substr(i, j - i));
      i = j;
    } else if (text[i] == '\'' && !tokens.empty() && i > 0 && is_alnum(text[i - 1]) && i + 1 < n && is_alnum(text[i + 1])) {
      // Treebank splits clitics off: "dog's" -> "dog", "'s".
      size_t j = i + 1;
      while (j < n && is_alnum(text[j])) ++j;
      tokens.push_back(text.substr(i, j - i));
      i = j;
    } else {
      ++i;
    }
  }
  return tokens;
}

std::string amber_lemmatize(const std::string& word, const AmberNlp& nlp, const std::set<std::string>& vocabulary) {
  auto known = [&](const std::string& f) {
    if (nlp.has_wordnet()) return nlp.wordnet_nouns.count(f) > 0;
    if (vocabulary.count(f)) return true;
    for (const auto& [plural, bases] : builtin_irregulars())
      if (std::find(bases.begin(), bases.end(), f) != bases.end()) return true;
    return false;
  };
  auto filter = [&](const std::vector<std::string>& forms) {
    std::vector<std::string> out;
    for (const auto& f : forms)
      if (known(f) && std::find(out.begin(), out.end(), f) == out.end()) out.push_back(f);
    return out;
  };
  std::vector<std::string> lemmas;
  const auto& exceptions = nlp.has_wordnet() ? nlp.wordnet_exc : builtin_irregulars();
  auto exc = exceptions.find(word);
  if (exc != exceptions.end()) {
    std::vector<std::string> forms = {word};
    forms.insert(forms.end(), exc->second.begin(), exc->second.end());
    lemmas = filter(forms);
  } else {
    std::vector<std::string> forms = apply_rules({word});
    std::vector<std::string> with_word = {word};
    with_word.insert(with_word.end(), forms.begin(), forms.end());
    lemmas = filter(with_word);
    while (lemmas.empty() && !forms.empty()) {
      forms = apply_rules(forms);
      lemmas = filter(forms);
    }
  }
  if (lemmas.empty()) return word;
  // min(lemmas, key=len): the first of the shortest.
  const std::string* best = &lemmas[0];
  for (const auto& l : lemmas)
    if (l.size() < best->size()) best = &l;
  return *best;
}

std::vector<std::string> amber_vocabulary_nouns(const std::string& text, const AmberNlp& nlp,
                                                const std::set<std::string>& vocabulary) {
  const auto tokens = amber_tokenize(text);
  std::vector<std::string> nouns;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string& tok = tokens[i];
    const std::string lower = ascii_lower(tok);
    const std::string prev = i > 0 ? ascii_lower(tokens[i - 1]) : std::string();
    // The stand-in for nltk.pos_tag's NN* test (see the header).
    if (lower == "hot") continue;
    if (lower == "can" && !can_noun_left().count(prev)) continue;
    if (lower.size() > 4 && lower.compare(lower.size() - 3, 3, "ing") == 0 && be_forms().count(prev)) continue;
    if (verb_left().count(prev) || (prev == "can" && i >= 2 && !can_noun_left().count(ascii_lower(tokens[i - 2]))))
      continue;
    const std::string lemma = amber_lemmatize(tok, nlp, vocabulary);
    if (vocabulary.count(lemma)) nouns.push_back(lemma);
  }
  return nouns;
}

std::vector<std::string> amber_score_generative_item(const std::string& response, const AmberAnnotation& ann,
                                                     const AmberData& data, const AmberNlp& nlp,
                                                     AmberGenerative& acc) {
  const std::string rel_path = (fs::path(data.dir) / "relation.json").string();
  const auto nouns = amber_vocabulary_nouns(response, nlp, data.vocabulary);
  auto build = [&](const std::vector<std::string>& objects, std::vector<std::string>& words, std::vector<int64_t>& list) {
    for (size_t idx = 0; idx < objects.size(); ++idx) {
      auto it = data.relation.find(objects[idx]);
      if (it == data.relation.end()) {
        throw InputError(rel_path, fmt::format("no entry for '{}' (an object of annotation id {})", objects[idx], ann.id));
      }
      words.insert(words.end(), it->second.begin(), it->second.end());
      list.insert(list.end(), it->second.size(), static_cast<int64_t>(idx));
    }
    words.insert(words.end(), objects.begin(), objects.end());
    list.insert(list.end(), objects.size(), 0);
  };
  std::vector<std::string> safe_words, ha_words;
  std::vector<int64_t> safe_list, ha_list;
  build(ann.truth, safe_words, safe_list);
  build(ann.hallu, ha_words, ha_list);
  const size_t safe_len = ann.truth.size(), ha_len = ann.hallu.size();
  // inference.py's marking: an associated word marks its source object's cover flag in the tail.
  auto mark = [](std::vector<int64_t>& list, size_t len_tail, size_t j) {
    if (j < list.size() - len_tail) list[static_cast<size_t>(list[j]) + list.size() - len_tail] = 1;
    else list[j] = 1;
  };
  auto first_index = [](const std::vector<std::string>& words, const std::string& w) {
    return static_cast<size_t>(std::find(words.begin(), words.end(), w) - words.begin());
  };
  std::vector<int> flags(nouns.size(), 0);
  for (size_t idx = 0; idx < nouns.size(); ++idx) {
    const std::string& noun = nouns[idx];
    if (std::find(data.safe_words.begin(), data.safe_words.end(), noun) != data.safe_words.end()) continue;
    const size_t s = first_index(safe_words, noun);
    if (s < safe_words.size()) {
      mark(safe_list, safe_len, s);
      continue;
    }
    const size_t h = first_index(ha_words, noun);
    if (h < ha_words.size()) mark(ha_list, ha_len, h);  // no `continue` in inference.py
    for (size_t j = 0; j < ha_words.size(); ++j) {
      if (nlp.similar_words(noun, ha_words[j])) {
        mark(ha_list, ha_len, j);
        break;
      }
    }
    bool similar_safe = false;
    for (size_t j = 0; j < safe_words.size(); ++j) {
      if (nlp.similar_words(noun, safe_words[j])) {
        similar_safe = true;
        mark(safe_list, safe_len, j);
        break;
      }
    }
    if (similar_safe) continue;
    flags[idx] = 1;
  }
  // Python's list[-n:] is the whole list when n == 0.
  auto tail_sum = [](const std::vector<int64_t>& list, size_t n) {
    const size_t from = n == 0 ? 0 : list.size() - n;
    int64_t s = 0;
    for (size_t i = from; i < list.size(); ++i) s += list[i];
    return std::pair<int64_t, size_t>{s, list.size() - from};
  };
  int64_t flagged = 0;
  std::vector<std::string> hallucinated;
  for (size_t i = 0; i < flags.size(); ++i) {
    flagged += flags[i];
    if (flags[i]) hallucinated.push_back(nouns[i]);
  }
  acc.chair_score += static_cast<double>(flagged);
  acc.chair_num += static_cast<double>(flags.size());
  const auto [safe_sum, safe_n] = tail_sum(safe_list, safe_len);
  const auto [ha_sum, ha_n] = tail_sum(ha_list, ha_len);
  acc.safe_cover_score += static_cast<double>(safe_sum);
  acc.safe_cover_num += static_cast<double>(safe_n);
  acc.hallu_cover_score += static_cast<double>(ha_sum);
  acc.hallu_cover_num += static_cast<double>(ha_n);
  if (flagged == 0) acc.non_hallu_score += 1;
  acc.non_hallu_num += 1;
  ++acc.items;
  acc.nouns += static_cast<int64_t>(nouns.size());
  return hallucinated;
}

AmberScore score_amber(const AmberData& data, const std::vector<AmberResponse>& responses, AmberAnswerRule rule,
                       const AmberNlp& nlp, const std::vector<int64_t>& expected_ids) {
  AmberScore score;
  std::map<int64_t, const AmberResponse*> seen;
  AmberQaCounters overall, state, number, action, existence, relation;
  int64_t n_overall = 0, n_state = 0, n_number = 0, n_action = 0, n_existence = 0, n_relation = 0;
  AmberGenerative gen;
  AmberDiscriminative disc;
  for (const auto& r : responses) {
    const AmberAnnotation& ann = data.annotation(r.id, r.file, r.row);
    auto [it, fresh] = seen.emplace(r.id, &r);
    if (!fresh) {
      throw InputError(r.file, fmt::format("row {}: id {} answered twice (also row {} of {})", r.row, r.id,
                                           it->second->row, it->second->file));
    }
    ++score.answered;
    if (ann.generative()) {
      amber_score_generative_item(r.response, ann, data, nlp, gen);
      continue;
    }
    const std::string resp = amber_normalise_answer(r.response, rule);
    ++disc.answers[resp == "Yes" || resp == "No" ? resp : std::string("other")];
    add_qa(overall, ann.truth_answer, resp);
    ++n_overall;
    if (ann.type == "discriminative-attribute-state") add_qa(state, ann.truth_answer, resp), ++n_state;
    else if (ann.type == "discriminative-attribute-number") add_qa(number, ann.truth_answer, resp), ++n_number;
    else if (ann.type == "discriminative-attribute-action") add_qa(action, ann.truth_answer, resp), ++n_action;
    else if (ann.type == "discriminative-hallucination") add_qa(existence, ann.truth_answer, resp), ++n_existence;
    else add_qa(relation, ann.truth_answer, resp), ++n_relation;  // "discriminative-relation" and "relation"
  }
  if (n_overall > 0) {
    disc.overall = amber_qa_metrics(overall, n_overall, 0.0001);
    disc.existence = amber_qa_metrics(existence, n_existence, 0.001);
    // Attribute: the three prefixes summed, each started at 0.001 (denominators carry +0.003).
    AmberQaCounters attribute{0, 0, 0, 0, 0, 0};
    attribute += state;
    attribute += number;
    attribute += action;
    disc.attribute = amber_qa_metrics(attribute, n_state + n_number + n_action, 0.0001);
    disc.state = amber_qa_metrics(state, n_state, 0.0001);
    disc.number = amber_qa_metrics(number, n_number, 0.0001);
    disc.action = amber_qa_metrics(action, n_action, 0.0001);
    disc.relation = amber_qa_metrics(relation, n_relation, 0.0001);
    score.discriminative = disc;
  }
  if (gen.items > 0) {
    gen.chair = python_round1(gen.chair_score / gen.chair_num * 100);
    gen.cover = python_round1(gen.safe_cover_score / gen.safe_cover_num * 100);
    gen.hal = python_round1(100 - gen.non_hallu_score / gen.non_hallu_num * 100);
    gen.cog = python_round1(gen.hallu_cover_score / gen.hallu_cover_num * 100);
    score.generative = gen;
  }
  for (int64_t id : expected_ids) {
    if (seen.count(id)) continue;
    const AmberAnnotation& ann = data.annotation(id, "expected ids", 0);
    (ann.generative() ? score.unanswered_generative : score.unanswered_discriminative) += 1;
  }
  if (score.unanswered_generative + score.unanswered_discriminative > 0) {
    score.warnings.push_back(fmt::format("{} generative and {} discriminative queries have no response; the metrics "
                                         "cover the answered ones only",
                                         score.unanswered_generative, score.unanswered_discriminative));
  }
  if (score.discriminative && score.discriminative->answers.count("other")) {
    score.warnings.push_back(fmt::format("{} discriminative responses are neither Yes nor No after the '{}' rule; "
                                         "they count as wrong (and as not-No)",
                                         score.discriminative->answers.at("other"), amber_answer_rule_name(rule)));
  }
  return score;
}

nlohmann::json amber_results_document(const AmberScore& score, AmberAnswerRule rule, const AmberNlp& nlp,
                                      const nlohmann::json& protocol) {
  nlohmann::json doc;
  doc["benchmark"] = "amber";
  doc["protocol"] = protocol;
  doc["answered"] = score.answered;
  doc["unanswered"] = {{"generative", score.unanswered_generative},
                       {"discriminative", score.unanswered_discriminative}};
  if (score.discriminative) {
    const auto& d = *score.discriminative;
    doc["discriminative"] = {{"answer_rule", amber_answer_rule_name(rule)},
                             {"overall", qa_json(d.overall)},
                             {"existence", qa_json(d.existence)},
                             {"attribute", qa_json(d.attribute)},
                             {"state", qa_json(d.state)},
                             {"number", qa_json(d.number)},
                             {"action", qa_json(d.action)},
                             {"relation", qa_json(d.relation)},
                             {"answers", d.answers},
                             {"note", "official inference.py: 'No' is the positive class, counters from 0.001, F1 "
                                      "from the rounded P and R (eps 0.001 existence, 0.0001 otherwise); percent "
                                      "rounded to 0.1"}};
  }
  if (score.generative) {
    const auto& g = *score.generative;
    doc["generative"] = {
        {"CHAIR", g.chair}, {"Cover", g.cover}, {"Hal", g.hal}, {"Cog", g.cog},
        {"items", g.items}, {"nouns", g.nouns},
        {"counters", {{"chair_score", g.chair_score}, {"chair_num", g.chair_num},
                      {"safe_cover_score", g.safe_cover_score}, {"safe_cover_num", g.safe_cover_num},
                      {"hallu_cover_score", g.hallu_cover_score}, {"hallu_cover_num", g.hallu_cover_num},
                      {"non_hallu_score", g.non_hallu_score}, {"non_hallu_num", g.non_hallu_num}}},
        {"noun_extraction",
         {{"tokenizer", "replacement for nltk.word_tokenize: ASCII alphanumeric runs with inner hyphens"},
          {"pos_tagger", "replacement for nltk.pos_tag: every token a noun except modal 'can', 'hot', be+V-ing, "
                         "pronoun+verb"},
          {"lemmatizer", nlp.has_wordnet() ? "WordNet morphy (noun rules + noun.exc + index.noun), as nltk"
                                           : "WordNet morphy noun rules filtered by the AMBER vocabulary (no WordNet "
                                             "dictionary given)"},
          {"similarity", nlp.has_similarity() ? fmt::format("similar-pairs table ({} ordered pairs)", nlp.similar.size())
                                              : std::string("exact equality (no spaCy similarity table given): "
                                                            "synonyms missed, CHAIR/Hal higher, Cover/Cog lower")},
          {"exact", false}}}};
  }
  doc["warnings"] = score.warnings;
  return doc;
}

std::string format_amber_table(const AmberScore& score) {
  std::ostringstream os;
  if (score.generative) {
    const auto& g = *score.generative;
    os << fmt::format("generative ({} items): CHAIR {:.1f}  Cover {:.1f}  Hal {:.1f}  Cog {:.1f}  (approximate noun "
                      "extraction, see results.json)\n", g.items, g.chair, g.cover, g.hal, g.cog);
  }
  if (score.discriminative) {
    const auto& d = *score.discriminative;
    os << fmt::format("{:<12} {:>7} {:>9} {:>10} {:>7} {:>6}\n", "discrim.", "items", "accuracy", "precision", "recall", "F1");
    const std::pair<const char*, const AmberQaMetrics*> rows[] = {
        {"overall", &d.overall}, {"existence", &d.existence}, {"attribute", &d.attribute}, {" state", &d.state},
        {" number", &d.number}, {" action", &d.action}, {"relation", &d.relation}};
    for (const auto& [name, m] : rows) {
      os << fmt::format("{:<12} {:>7} {:>9.1f} {:>10.1f} {:>7.1f} {:>6.1f}\n", name, m->items, m->accuracy,
                        m->precision, m->recall, m->f1);
    }
  }
  if (!score.generative && !score.discriminative) os << "no response scored\n";
  return os.str();
}

AmberMode parse_amber_mode(const std::string& s, const std::string& flag) {
  if (s == "discriminative") return AmberMode::Discriminative;
  if (s == "generative") return AmberMode::Generative;
  if (s == "all") return AmberMode::All;
  throw InputError(flag, "unknown mode '" + s + "' (discriminative, generative, all)");
}

const char* amber_mode_name(AmberMode m) {
  switch (m) {
    case AmberMode::Discriminative: return "discriminative";
    case AmberMode::Generative: return "generative";
    default: return "all";
  }
}

bool amber_mode_includes(AmberMode m, const AmberAnnotation& a) {
  if (m == AmberMode::All) return true;
  return a.generative() == (m == AmberMode::Generative);
}

std::vector<AmberQuery> amber_select_queries(const AmberData& data, const std::string& queries_path, AmberMode mode,
                                             int64_t limit, const std::string& images_dir) {
  if (limit < 0) throw InputError("--limit", "must be >= 0");
  const auto all_queries = read_amber_queries(queries_path);
  std::vector<AmberQuery> queries;
  for (size_t i = 0; i < all_queries.size(); ++i) {
    const AmberQuery& q = all_queries[i];
    if (!amber_mode_includes(mode, data.annotation(q.id, queries_path, i + 1))) continue;
    if (limit > 0 && static_cast<int64_t>(queries.size()) >= limit) break;
    queries.push_back(q);
  }
  if (images_dir.empty()) return queries;
  std::set<std::string> checked;
  for (const auto& q : queries) {
    if (!checked.insert(q.image).second) continue;
    const std::string path = (fs::path(images_dir) / q.image).string();
    if (!fs::is_regular_file(path)) {
      throw InputError(path, fmt::format("image not found (query id {} of {}; --images {})", q.id, queries_path,
                                         images_dir));
    }
  }
  return queries;
}

AmberRunResult run_amber(models::VisionLanguageModel& model, const AmberRunOptions& opts, const AmberNlp& nlp) {
  const std::string prompt_template =
      opts.prompt_template.empty() ? bench_conv_template(opts.conv_mode) : opts.prompt_template;
  check_bench_template(prompt_template, opts.prompt_template.empty() ? "--conv-mode" : "--prompt-template");
  const AmberData data = read_amber_data(opts.data_dir);
  const std::string queries_path = opts.queries_path.empty()
      ? (fs::path(opts.data_dir) / "query" / "query_all.json").string() : opts.queries_path;
  const auto queries = amber_select_queries(data, queries_path, opts.mode, opts.limit, opts.images_dir);
  std::vector<GenerationItem> items;
  for (const auto& q : queries) {
    // AMBER_llava.py: qs = "<image>\n" + query in conv llava_v1, i.e. the template's {question}.
    items.push_back({std::to_string(q.id), (fs::path(opts.images_dir) / q.image).string(),
                     bench_prompt(prompt_template, q.query, true)});
  }
  std::vector<std::string> known;
  for (const auto& a : data.annotations) known.push_back(std::to_string(a.id));

  const nlohmann::json protocol = bench_protocol("amber", opts, prompt_template);
  AmberRunResult result;
  result.answers_path = (fs::path(opts.out_dir) / "answers" / "amber.jsonl").string();
  const GenerationRunOptions gen = bench_generation_options(opts, result.answers_path, protocol, "amber");
  auto make_record = [&](size_t i, const std::string& answer) {
    const auto& q = queries[i];
    return nlohmann::json{{"id", q.id},
                          {"response", answer},
                          {"image", q.image},
                          {"query", q.query},
                          {"type", data.annotation(q.id, queries_path, 0).type},
                          {"prompt", items[i].prompt},
                          {"model_id", opts.model_id}};
  };
  auto key_of = [&](const nlohmann::json& rec, size_t line) {
    return std::to_string(io::get_required<int64_t>(rec, "id", gen.answers_path, fmt::format("line {}", line)));
  };
  result.generated = run_generation(model, items, gen, make_record, key_of, known);

  std::set<int64_t> selected;
  std::vector<int64_t> expected;
  for (const auto& q : queries) {
    selected.insert(q.id);
    expected.push_back(q.id);
  }
  std::vector<AmberResponse> responses;
  for (auto& r : read_amber_responses(result.answers_path))
    if (selected.count(r.id)) responses.push_back(std::move(r));
  result.score = score_amber(data, responses, opts.answer_rule, nlp, expected);

  std::vector<AmberResponse> sorted = responses;
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  nlohmann::json official = nlohmann::json::array();
  for (const auto& r : sorted) official.push_back({{"id", r.id}, {"response", r.response}});
  io::write_json_atomic((fs::path(opts.out_dir) / "AMBER_responses.json").string(), official);

  nlohmann::json run_protocol = protocol;
  run_protocol["data_dir"] = opts.data_dir;
  run_protocol["queries"] = queries_path;
  run_protocol["images_dir"] = opts.images_dir;
  run_protocol["mode"] = amber_mode_name(opts.mode);
  run_protocol["limit"] = opts.limit;
  run_protocol["batch_size"] = opts.batch_size;
  run_protocol["conv_mode"] = opts.prompt_template.empty() ? opts.conv_mode : "custom";
  result.results = amber_results_document(result.score, opts.answer_rule, nlp, run_protocol);
  result.results["answers_file"] = result.answers_path;
  io::write_json_atomic((fs::path(opts.out_dir) / "results.json").string(), result.results);
  return result;
}

}  // namespace p2dpo::eval
