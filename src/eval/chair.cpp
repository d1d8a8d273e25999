#include "eval/chair.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <sstream>

#include "eval/bench_runner.h"
#include "io/atomic_file.h"
#include "io/errors.h"
#include "io/json_io.h"

namespace p2dpo::eval {

namespace fs = std::filesystem;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double ratio(int64_t num, int64_t den) { return den == 0 ? kNaN : static_cast<double>(num) / den; }

nlohmann::json number_or_null(double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); }

std::string line_ctx(size_t line) { return "line " + std::to_string(line); }

// A vocabulary entry as a word sequence (so "light blue" matches two words).
struct Phrase {
  std::vector<std::string> words;
  std::string name;
};

std::vector<Phrase> phrases_of(const std::vector<std::string>& names) {
  std::vector<Phrase> out;
  for (const auto& n : names) {
    Phrase p{chair_words(n), n};
    if (!p.words.empty()) out.push_back(std::move(p));
  }
  // Longest first, so "light blue" wins over "blue".
  std::stable_sort(out.begin(), out.end(), [](const Phrase& a, const Phrase& b) { return a.words.size() > b.words.size(); });
  return out;
}

// Length in words of the phrase matching at words[i], or 0; `matched` gets the phrase.
size_t match_at(const std::vector<std::string>& words, size_t i, const std::vector<Phrase>& phrases,
                const Phrase** matched) {
  for (const auto& p : phrases) {
    if (i + p.words.size() > words.size()) continue;
    bool ok = true;
    for (size_t k = 0; k < p.words.size() && ok; ++k) ok = words[i + k] == p.words[k];
    if (ok) {
      *matched = &p;
      return p.words.size();
    }
  }
  return 0;
}

// A shape phrase or its plural (the plural is formed on the last word).
size_t match_shape(const std::vector<std::string>& words, size_t i, const std::vector<Phrase>& shapes,
                   const Phrase** matched, bool* plural) {
  for (const auto& p : shapes) {
    const size_t n = p.words.size();
    if (i + n > words.size()) continue;
    bool ok = true;
    for (size_t k = 0; k + 1 < n && ok; ++k) ok = words[i + k] == p.words[k];
    if (!ok) continue;
    const std::string& last = words[i + n - 1];
    if (last == p.words.back() || last == plural_of(p.words.back())) {
      *matched = &p;
      *plural = last != p.words.back();
      return n;
    }
  }
  return 0;
}

std::vector<std::string> string_list(const nlohmann::json& v, const std::string& file, const std::string& label) {
  std::vector<std::string> out;
  if (v.is_array()) {
    for (const auto& e : v) {
      if (e.is_string()) out.push_back(e.get<std::string>());
      else if (e.is_object() && e.contains("name") && e["name"].is_string()) out.push_back(e["name"].get<std::string>());
      else throw InputError(file, "field '" + label + "': expected names or {\"name\": ...} objects");
    }
  } else if (v.is_object()) {
    for (auto it = v.begin(); it != v.end(); ++it) out.push_back(it.key());
  } else {
    throw InputError(file, "field '" + label + "': expected an array or object, got " + io::json_type_name(v));
  }
  return out;
}

}  // namespace

std::string plural_of(const std::string& word) {
  const auto ends = [&](const char* s) {
    const std::string suf(s);
    return word.size() >= suf.size() && word.compare(word.size() - suf.size(), suf.size(), suf) == 0;
  };
  if (ends("s") || ends("x") || ends("z") || ends("ch") || ends("sh")) return word + "es";
  return word + "s";
}

std::vector<std::string> chair_words(const std::string& text) {
  std::vector<std::string> words;
  std::string cur;
  for (char ch : text) {
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')) {
      cur += static_cast<char>(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch);
    } else if (!cur.empty()) {
      words.push_back(std::move(cur));
      cur.clear();
    }
  }
  if (!cur.empty()) words.push_back(std::move(cur));
  return words;
}

ChairVocabulary read_world_vocabulary(const std::string& path) {
  const nlohmann::json w = io::read_json_file(path);
  const auto vocab = io::get_required<nlohmann::json>(w, "vocabulary", path, "");
  ChairVocabulary v;
  v.shapes = string_list(io::get_required<nlohmann::json>(vocab, "shapes", path, "vocabulary"), path, "vocabulary.shapes");
  v.colors = string_list(io::get_required<nlohmann::json>(vocab, "colors", path, "vocabulary"), path, "vocabulary.colors");
  if (vocab.contains("sizes"))
    v.sizes = string_list(vocab["sizes"], path, "vocabulary.sizes");
  if (v.shapes.empty() || v.colors.empty()) throw InputError(path, "vocabulary.shapes and vocabulary.colors must not be empty");
  if (vocab.contains("classes") && vocab["classes"].is_array()) {
    for (const auto& c : vocab["classes"]) {
      const auto name = io::get_optional<std::string>(c, "name", "", path, "vocabulary.classes[]");
      const auto partner = io::get_optional<std::string>(c, "partner", "", path, "vocabulary.classes[]");
      if (!name.empty() && !partner.empty()) v.partner[name] = partner;
    }
  }
  return v;
}

std::string world_prompt_template(const std::string& world_json_path) {
  const nlohmann::json w = io::read_json_file(world_json_path);
  if (!w.contains("text") || !w["text"].is_object()) return "";
  const auto turn = io::get_optional<std::string>(w["text"], "human_turn", "", world_json_path, "text");
  return turn.empty() ? "" : "USER: " + turn + " ASSISTANT:";
}

DescriptionParse parse_description(const std::string& text, const ChairVocabulary& vocab) {
  const auto words = chair_words(text);
  const auto sizes = phrases_of(vocab.sizes), colors = phrases_of(vocab.colors), shapes = phrases_of(vocab.shapes);
  DescriptionParse out;
  size_t i = 0;
  while (i < words.size()) {
    const Phrase *size = nullptr, *color = nullptr, *shape = nullptr;
    bool plural = false;
    size_t j = i;
    if (size_t n = match_at(words, j, sizes, &size)) j += n;
    if (size_t n = match_at(words, j, colors, &color)) {
      j += n;
      if (size_t m = match_shape(words, j, shapes, &shape, &plural)) {
        ObjectMention mention;
        mention.color = color->name;
        mention.shape = shape->name;
        mention.cls = color->name + " " + shape->name;
        mention.size = size ? size->name : "";
        mention.plural = plural;
        mention.word = i;
        out.mentions.push_back(std::move(mention));
        i = j + m;
        continue;
      }
    }
    // No class mention starts here; a shape word reached directly is a shape-only mention (a shape
    // right after a colour was taken above).
    if (size_t m = match_shape(words, i, shapes, &shape, &plural)) {
      out.shape_only.push_back(shape->name);
      i += m;
      continue;
    }
    ++i;
  }
  return out;
}

std::vector<ChairItem> read_chair_items(const std::string& path) {
  const auto records = io::read_jsonl_file(path);
  std::vector<ChairItem> items;
  std::set<int64_t> seen;
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    const std::string ctx = line_ctx(i + 1);
    ChairItem it;
    it.question_id = io::get_required<int64_t>(r, "question_id", path, ctx);
    it.image = io::get_required<std::string>(r, "image", path, ctx);
    it.question = io::get_required<std::string>(r, "text", path, ctx);
    if (r.contains("object_details")) {
      for (const auto& d : io::get_required<nlohmann::json>(r, "object_details", path, ctx)) {
        ChairObject o;
        o.cls = io::get_required<std::string>(d, "class", path, ctx + ".object_details[]");
        o.size = io::get_optional<std::string>(d, "size", "", path, ctx + ".object_details[]");
        it.objects.push_back(std::move(o));
      }
    } else {
      for (const auto& name : io::get_required<std::vector<std::string>>(r, "objects", path, ctx))
        it.objects.push_back(ChairObject{name, ""});
    }
    if (!seen.insert(it.question_id).second)
      throw InputError(path, fmt::format("{}: question_id {} appears twice", ctx, it.question_id));
    items.push_back(std::move(it));
  }
  return items;
}

std::vector<ChairAnswer> read_chair_answers(const std::string& path) {
  const auto records = io::read_jsonl_file(path);
  std::vector<ChairAnswer> out;
  for (size_t i = 0; i < records.size(); ++i) {
    ChairAnswer a;
    a.question_id = io::get_required<int64_t>(records[i], "question_id", path, line_ctx(i + 1));
    a.text = io::get_required<std::string>(records[i], "text", path, line_ctx(i + 1));
    a.line = i + 1;
    out.push_back(std::move(a));
  }
  return out;
}

ChairCaption score_caption(const ChairItem& item, const std::string& text, const ChairVocabulary& vocab) {
  ChairCaption c;
  c.question_id = item.question_id;
  c.image = item.image;
  c.text = text;
  c.parse = parse_description(text, vocab);
  std::set<std::string> true_shapes, true_colors;
  std::map<std::string, std::set<std::string>> sizes_of;  // class -> sizes present
  for (const auto& o : item.objects) {
    c.truth.insert(o.cls);
    if (!o.size.empty()) sizes_of[o.cls].insert(o.size);
  }
  // A class name is "colour shape"; split it with the vocabulary (a colour may hold a space).
  for (const auto& cls : c.truth) {
    for (const auto& col : vocab.colors) {
      if (cls.size() > col.size() + 1 && cls.compare(0, col.size() + 1, col + " ") == 0) {
        true_colors.insert(col);
        true_shapes.insert(cls.substr(col.size() + 1));
        break;
      }
    }
  }
  for (const auto& m : c.parse.mentions) {
    const bool hallucinated = c.truth.count(m.cls) == 0;
    c.hallucinated.push_back(hallucinated);
    c.mentioned.insert(m.cls);
    if (hallucinated) {
      c.hallucinated_classes.insert(m.cls);
      if (true_shapes.count(m.shape)) ++c.wrong_color;
      else if (true_colors.count(m.color)) ++c.wrong_shape;
      else ++c.absent;
      for (const auto& t : c.truth) {
        auto p = vocab.partner.find(t);
        if (p != vocab.partner.end() && p->second == m.cls) {
          ++c.partner;
          break;
        }
      }
    } else {
      c.covered.insert(m.cls);
      auto s = sizes_of.find(m.cls);
      if (!m.size.empty() && s != sizes_of.end()) {
        ++c.size_mentions;
        if (!s->second.count(m.size)) ++c.size_errors;
      }
    }
  }
  for (const auto& s : c.parse.shape_only)
    if (!true_shapes.count(s)) ++c.shape_only_hallucinated;
  return c;
}

ChairScore score_chair(const std::vector<ChairItem>& items, const std::vector<ChairAnswer>& answers,
                       const ChairVocabulary& vocab, const std::string& answers_file,
                       std::vector<std::string>& warnings) {
  std::map<int64_t, size_t> index;
  for (size_t i = 0; i < items.size(); ++i) index[items[i].question_id] = i;
  std::map<int64_t, const ChairAnswer*> by_id;
  for (const auto& a : answers) {
    if (!index.count(a.question_id))
      throw InputError(answers_file, fmt::format("line {}: question_id {} is not in the descriptions file", a.line, a.question_id));
    if (!by_id.emplace(a.question_id, &a).second)
      throw InputError(answers_file, fmt::format("line {}: question_id {} is answered twice", a.line, a.question_id));
  }
  ChairScore s;
  double cover_sum = 0;
  int64_t cover_n = 0;
  for (const auto& item : items) {
    auto it = by_id.find(item.question_id);
    if (it == by_id.end()) {
      ++s.unanswered;
      continue;
    }
    ChairCaption c = score_caption(item, it->second->text, vocab);
    ++s.captions;
    s.mentions += static_cast<int64_t>(c.parse.mentions.size());
    for (bool h : c.hallucinated) s.hallucinated_mentions += h;
    s.distinct_mentions += static_cast<int64_t>(c.mentioned.size());
    s.distinct_hallucinated += static_cast<int64_t>(c.hallucinated_classes.size());
    s.hallucinated_captions += c.hallucinated_classes.empty() ? 0 : 1;
    s.true_objects += static_cast<int64_t>(c.truth.size());
    s.covered_objects += static_cast<int64_t>(c.covered.size());
    if (!c.truth.empty()) {
      cover_sum += static_cast<double>(c.covered.size()) / static_cast<double>(c.truth.size());
      ++cover_n;
    }
    s.wrong_color += c.wrong_color;
    s.wrong_shape += c.wrong_shape;
    s.absent += c.absent;
    s.partner += c.partner;
    s.size_mentions += c.size_mentions;
    s.size_errors += c.size_errors;
    s.shape_only_mentions += static_cast<int64_t>(c.parse.shape_only.size());
    s.shape_only_hallucinated += c.shape_only_hallucinated;
    s.per_caption.push_back(std::move(c));
  }
  if (s.unanswered > 0)
    warnings.push_back(fmt::format("{} of {} descriptions have no answer and are left out", s.unanswered, items.size()));
  if (s.mentions == 0 && s.captions > 0)
    warnings.push_back("no object mention was found in any answer: CHAIR_i is undefined (null)");
  s.chair_i = ratio(s.hallucinated_mentions, s.mentions);
  s.chair_i_distinct = ratio(s.distinct_hallucinated, s.distinct_mentions);
  s.chair_s = ratio(s.hallucinated_captions, s.captions);
  s.recall = ratio(s.covered_objects, s.true_objects);
  s.cover = cover_n == 0 ? kNaN : cover_sum / static_cast<double>(cover_n);
  s.mentions_per_caption = ratio(s.mentions, s.captions);
  s.distinct_per_caption = ratio(s.distinct_mentions, s.captions);
  return s;
}

nlohmann::json chair_caption_json(const ChairCaption& c) {
  nlohmann::json mentions = nlohmann::json::array();
  for (size_t i = 0; i < c.parse.mentions.size(); ++i) {
    const auto& m = c.parse.mentions[i];
    mentions.push_back({{"class", m.cls}, {"size", m.size}, {"plural", m.plural}, {"hallucinated", bool(c.hallucinated[i])}});
  }
  return {{"question_id", c.question_id},
          {"image", c.image},
          {"text", c.text},
          {"truth", c.truth},
          {"mentions", mentions},
          {"hallucinated", c.hallucinated_classes},
          {"covered", c.covered},
          {"chair_s", c.hallucinated_classes.empty() ? 0 : 1},
          {"chair_i", number_or_null(ratio(static_cast<int64_t>(std::count(c.hallucinated.begin(), c.hallucinated.end(), true)),
                                           static_cast<int64_t>(c.hallucinated.size())))},
          {"kinds", {{"wrong_color", c.wrong_color}, {"wrong_shape", c.wrong_shape}, {"absent", c.absent}, {"partner", c.partner}}},
          {"size_errors", c.size_errors},
          {"shape_only", c.parse.shape_only},
          {"shape_only_hallucinated", c.shape_only_hallucinated}};
}

nlohmann::json chair_results_document(const ChairScore& s, const nlohmann::json& protocol,
                                      const std::vector<std::string>& warnings) {
  nlohmann::json doc;
  doc["benchmark"] = "chair";
  doc["n"] = s.captions;
  doc["metrics"] = {{"chair_i", number_or_null(s.chair_i)},
                    {"chair_i_distinct", number_or_null(s.chair_i_distinct)},
                    {"chair_s", number_or_null(s.chair_s)},
                    {"recall", number_or_null(s.recall)},
                    {"cover", number_or_null(s.cover)},
                    {"mentions_per_caption", number_or_null(s.mentions_per_caption)},
                    {"distinct_per_caption", number_or_null(s.distinct_per_caption)},
                    {"size_error_rate", number_or_null(ratio(s.size_errors, s.size_mentions))}};
  doc["counts"] = {{"captions", s.captions},
                   {"unanswered", s.unanswered},
                   {"mentions", s.mentions},
                   {"hallucinated_mentions", s.hallucinated_mentions},
                   {"distinct_mentions", s.distinct_mentions},
                   {"distinct_hallucinated", s.distinct_hallucinated},
                   {"hallucinated_captions", s.hallucinated_captions},
                   {"true_objects", s.true_objects},
                   {"covered_objects", s.covered_objects},
                   {"hallucination_kinds",
                    {{"wrong_color", s.wrong_color}, {"wrong_shape", s.wrong_shape}, {"absent", s.absent}, {"partner", s.partner}}},
                   {"size_mentions", s.size_mentions},
                   {"size_errors", s.size_errors},
                   {"shape_only_mentions", s.shape_only_mentions},
                   {"shape_only_hallucinated", s.shape_only_hallucinated}};
  doc["definitions"] = {
      {"chair_i", "hallucinated mentions / mentions, with repetition (official chair.py)"},
      {"chair_i_distinct", "distinct hallucinated classes / distinct mentioned classes, per caption, pooled"},
      {"chair_s", "captions with >= 1 hallucinated mention / captions"},
      {"recall", "distinct true classes mentioned / true classes, pooled"},
      {"cover", "per-caption mean of mentioned true classes / true classes"},
      {"mention", "[size] colour shape(s), adjacent words of the world vocabulary (src/eval/chair.h)"}};
  doc["protocol"] = protocol;
  doc["warnings"] = warnings;
  return doc;
}

std::string format_chair_table(const ChairScore& s) {
  const auto pct = [](double v) { return std::isnan(v) ? std::string("n/a") : fmt::format("{:.1f}", 100.0 * v); };
  std::ostringstream out;
  out << fmt::format("CHAIR on {} descriptions ({} mentions, {:.2f} per caption)\n", s.captions, s.mentions,
                     std::isnan(s.mentions_per_caption) ? 0.0 : s.mentions_per_caption);
  out << fmt::format("{:<22} {:>7}\n", "CHAIR_i", pct(s.chair_i));
  out << fmt::format("{:<22} {:>7}\n", "CHAIR_i (distinct)", pct(s.chair_i_distinct));
  out << fmt::format("{:<22} {:>7}\n", "CHAIR_s", pct(s.chair_s));
  out << fmt::format("{:<22} {:>7}\n", "Recall", pct(s.recall));
  out << fmt::format("{:<22} {:>7}\n", "Cover", pct(s.cover));
  out << fmt::format("hallucinated mentions: {} wrong colour, {} wrong shape, {} absent ({} partners); size errors {}/{}\n",
                     s.wrong_color, s.wrong_shape, s.absent, s.partner, s.size_errors, s.size_mentions);
  return out.str();
}

void write_chair_captions(const std::string& path, const ChairScore& score) {
  std::string text;
  for (const auto& c : score.per_caption)
    text += chair_caption_json(c).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  io::write_file_atomic(path, text);
}

std::vector<ChairItem> chair_select_items(const std::string& descriptions_path, int64_t limit,
                                          const std::string& images_dir) {
  auto items = read_chair_items(descriptions_path);
  if (limit > 0 && static_cast<int64_t>(items.size()) > limit) items.resize(static_cast<size_t>(limit));
  if (!images_dir.empty()) {
    for (const auto& it : items) {
      const fs::path p = fs::path(images_dir) / it.image;
      if (!fs::exists(p))
        throw InputError("--images", fmt::format("{} (question_id {} of {}) does not exist", p.string(), it.question_id,
                                                 descriptions_path));
    }
  }
  return items;
}

ChairRunResult run_chair(models::VisionLanguageModel& model, const ChairRunOptions& opts) {
  check_bench_template(opts.prompt_template, "--prompt-template");
  const auto all_items = read_chair_items(opts.descriptions_path);
  const auto items = chair_select_items(opts.descriptions_path, opts.limit, opts.images_dir);
  std::vector<GenerationItem> gen_items;
  for (const auto& it : items) {
    GenerationItem g;
    g.id = std::to_string(it.question_id);
    g.image_path = (fs::path(opts.images_dir) / it.image).string();
    g.prompt = bench_prompt(opts.prompt_template, it.question, true);
    gen_items.push_back(std::move(g));
  }
  std::vector<std::string> known;
  for (const auto& it : all_items) known.push_back(std::to_string(it.question_id));

  const nlohmann::json protocol = bench_protocol("chair", opts, opts.prompt_template);
  ChairRunResult result;
  result.answers_path = (fs::path(opts.out_dir) / "answers" / "chair.jsonl").string();
  const GenerationRunOptions gen = bench_generation_options(opts, result.answers_path, protocol, "chair");
  auto make_record = [&](size_t i, const std::string& answer) {
    return nlohmann::json{{"question_id", items[i].question_id},
                          {"image", items[i].image},
                          {"prompt", gen_items[i].prompt},
                          {"text", answer},
                          {"model_id", opts.model_id}};
  };
  auto key_of = [&](const nlohmann::json& rec, size_t line) {
    return std::to_string(io::get_required<int64_t>(rec, "question_id", result.answers_path, line_ctx(line)));
  };
  result.generated = run_generation(model, gen_items, gen, make_record, key_of, known);

  // Score the selected records only (a wider earlier run may have answered more).
  std::set<int64_t> selected;
  for (const auto& it : items) selected.insert(it.question_id);
  std::vector<ChairAnswer> answers;
  for (auto& a : read_chair_answers(result.answers_path))
    if (selected.count(a.question_id)) answers.push_back(std::move(a));
  result.score = score_chair(items, answers, opts.vocab, result.answers_path, result.warnings);

  nlohmann::json run_protocol = protocol;
  run_protocol["descriptions_file"] = opts.descriptions_path;
  run_protocol["images_dir"] = opts.images_dir;
  run_protocol["vocabulary"] = opts.vocab_source;
  run_protocol["limit"] = opts.limit;
  run_protocol["answers_file"] = result.answers_path;
  result.results = chair_results_document(result.score, run_protocol, result.warnings);
  write_chair_captions((fs::path(opts.out_dir) / "chair_captions.jsonl").string(), result.score);
  io::write_json_atomic((fs::path(opts.out_dir) / "results.json").string(), result.results);
  return result;
}

}  // namespace p2dpo::eval
