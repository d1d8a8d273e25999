#include "eval/mmhal.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <set>

#include "io/atomic_file.h"
#include "io/errors.h"
#include "io/json_io.h"
#include "text/utf8.h"
#include "train/metrics.h"

namespace p2dpo::eval {

namespace fs = std::filesystem;

namespace {

std::string record_ctx(size_t i) { return fmt::format("[{}]", i); }

// Python's '{:.2f}'.format(x): glibc's printf rounds the exact binary value half-to-even, as
// CPython's correctly rounded dtoa does.
std::string fixed2(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f", x);
  return buf;
}

// Python's str(round(x, 2)): the correctly rounded value, printed as its shortest repr ("3.0", not "3").
std::string python_round2_str(double x) {
  const double r = std::strtod(fixed2(x).c_str(), nullptr);
  std::string s = fmt::format("{}", r);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

std::string strip_answer(std::string a) {
  // model_vqa_mmhal.py: strip, drop a trailing "</s>", strip again.
  a = text::python_rstrip(text::python_lstrip(a));
  const std::string stop = "</s>";
  if (a.size() >= stop.size() && a.compare(a.size() - stop.size(), stop.size(), stop) == 0) {
    a.erase(a.size() - stop.size());
    a = text::python_rstrip(text::python_lstrip(a));
  }
  return a;
}

std::string file_sha256(const std::string& path) { return sha256_hex(io::read_file(path)); }

std::string default_output_path(const std::string& out_dir, const std::string& name) {
  return (fs::path(out_dir) / name).string();
}

// Judges questions[i] with answers[i]; resumable through the judge JSONL. Returns calls made.
int64_t judge_all(const std::vector<MmhalQuestion>& questions, const std::vector<std::string>& answers,
                  const std::string& judge_template, const std::string& template_sha, const MmhalRunOptions& opts,
                  const std::string& judge_path, std::vector<nlohmann::json>& final_records) {
  JudgeClient client(opts.judge_config);
  const nlohmann::json protocol = {{"benchmark", "mmhal"},
                                   {"judge_model", opts.judge_config.model},
                                   {"endpoint", judge_endpoint(opts.judge_config)},
                                   {"temperature", opts.judge_config.temperature},
                                   {"max_tokens", opts.judge_config.max_tokens},
                                   {"template_sha256", template_sha}};
  check_or_write_run_record(judge_path, protocol);
  io::JsonlAppender appender(judge_path);  // cuts a torn last line
  // The latest record of each index wins (a failed call is retried by the next run and appended).
  std::map<size_t, nlohmann::json> latest;
  {
    const auto records = io::read_jsonl_file(judge_path);
    for (size_t i = 0; i < records.size(); ++i) {
      const auto idx = io::get_required<size_t>(records[i], "index", judge_path, fmt::format("line {}", i + 1));
      latest[idx] = records[i];
    }
  }
  std::vector<std::string> prompts(questions.size());
  size_t pending = 0;
  for (size_t i = 0; i < questions.size(); ++i) {
    prompts[i] = mmhal_judge_prompt(judge_template, questions[i], answers[i]);
    auto it = latest.find(questions[i].index);
    const bool done = it != latest.end() && !it->second.contains("judge_error") &&
                      it->second.value("prompt_sha256", "") == sha256_hex(prompts[i]);
    if (!done) ++pending;
  }
  const auto start = std::chrono::steady_clock::now();
  int64_t calls = 0;
  final_records.assign(questions.size(), nlohmann::json());
  for (size_t i = 0; i < questions.size(); ++i) {
    const auto& q = questions[i];
    const std::string prompt_sha = sha256_hex(prompts[i]);
    auto it = latest.find(q.index);
    if (it != latest.end() && !it->second.contains("judge_error") && it->second.value("prompt_sha256", "") == prompt_sha) {
      final_records[i] = it->second;
      continue;
    }
    nlohmann::json rec = {{"index", q.index},
                          {"image_id", q.image_id},
                          {"question_type", q.question_type},
                          {"prompt_sha256", prompt_sha},
                          {"judge_model", opts.judge_config.model}};
    try {
      const JudgeReply reply = client.complete(prompts[i]);
      const MmhalRating rating = mmhal_rating(reply.content);
      rec["reply"] = reply.content;
      rec["rating"] = rating.score;
      rec["ratings_found"] = rating.found;
      rec["attempts"] = reply.attempts;
      rec["response"] = reply.raw;
    } catch (const JudgeError& e) {
      // A refusal (bad key, unknown model) fails every call the same way: stop, record nothing.
      if (!e.retryable()) throw InputError("--judge-url", e.what());
      // Retries ran out: scored 0 as the official parser scores an empty reply; the next run retries.
      rec["reply"] = "";
      rec["rating"] = 0;
      rec["ratings_found"] = nlohmann::json::array();
      rec["judge_error"] = e.what();
    }
    appender.write(rec);
    final_records[i] = rec;
    ++calls;
    if (opts.progress) {
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double rate = elapsed > 0 ? calls / elapsed : 0.0;
      const double eta = rate > 0 ? (static_cast<double>(pending) - calls) / rate : NAN;
      std::cerr << fmt::format("[mmhal judge] {}/{} calls, {:.2f} calls/s, ETA {}{}\n", calls, pending, rate,
                               train::ProgressLine::format_duration(eta),
                               rec.contains("judge_error") ? " (failed: " + rec["judge_error"].get<std::string>() + ")" : "");
    }
  }
  appender.close();
  return calls;
}

// Judging and scoring shared by run_mmhal and judge_mmhal_answers.
void judge_and_score(const std::vector<MmhalQuestion>& questions, const std::vector<std::string>& answers,
                     const std::string& judge_template, const MmhalRunOptions& opts, nlohmann::json protocol,
                     const std::vector<std::string>& warnings, MmhalRunResult& result) {
  const std::string template_sha = sha256_hex(judge_template);
  result.judge_path = default_output_path(opts.out_dir, "judge/mmhal_judge.jsonl");
  std::vector<nlohmann::json> records;
  result.judged = judge_all(questions, answers, judge_template, template_sha, opts, result.judge_path, records);

  std::vector<int> scores;
  int64_t errors = 0, unrated = 0;
  bool all_ok = true;
  nlohmann::json evaluation = nlohmann::json::array();
  for (const auto& r : records) {
    scores.push_back(r.value("rating", 0));
    if (r.contains("judge_error")) {
      ++errors;
      all_ok = false;
    } else {
      evaluation.push_back(r.value("response", nlohmann::json()));
      if (r.value("ratings_found", nlohmann::json::array()).size() != 1) ++unrated;
    }
  }
  result.score = score_mmhal(questions, scores);
  result.score.judge_errors = errors;
  result.score.unrated = unrated;
  if (errors > 0) {
    result.score.warnings.push_back(fmt::format("{} judge call(s) failed after every retry and count as score 0; "
                                                "rerun the same command to retry them",
                                                errors));
  }
  result.score.warnings.insert(result.score.warnings.begin(), warnings.begin(), warnings.end());
  if (all_ok) io::write_json_atomic(default_output_path(opts.out_dir, "evaluation.json"), evaluation);

  protocol["judge"] = judge_config_json(opts.judge_config);
  protocol["judge_template"] = opts.judge_template_path;
  protocol["judge_template_sha256"] = template_sha;
  protocol["judge_template_official"] = template_sha == kMmhalTemplateSha256;
  protocol["judge_file"] = result.judge_path;
  result.results = mmhal_results_document(result.score, protocol);
  io::write_json_atomic(default_output_path(opts.out_dir, "results.json"), result.results);
}

std::vector<MmhalQuestion> apply_limit(std::vector<MmhalQuestion> qs, int64_t limit) {
  if (limit < 0) throw InputError("--limit", "must be >= 0");
  if (limit > 0 && static_cast<size_t>(limit) < qs.size()) qs.resize(static_cast<size_t>(limit));
  return qs;
}

}  // namespace

const std::vector<std::string>& mmhal_question_types() {
  static const std::vector<std::string> types = {"attribute", "adversarial", "comparison", "counting",
                                                 "relation",  "environment", "holistic",   "other"};
  return types;
}

std::vector<MmhalQuestion> read_mmhal_questions(const std::string& path) {
  const nlohmann::json j = io::read_json_file(path);
  if (!j.is_array()) throw InputError(path, "expected a JSON array of MMHal-Bench records (response_template.json)");
  std::vector<MmhalQuestion> out;
  for (size_t i = 0; i < j.size(); ++i) {
    const auto& r = j[i];
    const std::string ctx = record_ctx(i);
    MmhalQuestion q;
    q.index = i;
    q.question_type = io::get_required<std::string>(r, "question_type", path, ctx);
    q.question_topic = io::get_optional<std::string>(r, "question_topic", "", path, ctx);
    q.image_id = io::get_required<std::string>(r, "image_id", path, ctx);
    q.image_src = io::get_optional<std::string>(r, "image_src", "", path, ctx);
    q.image_content = io::get_required<std::vector<std::string>>(r, "image_content", path, ctx);
    q.question = io::get_required<std::string>(r, "question", path, ctx);
    q.gt_answer = io::get_required<std::string>(r, "gt_answer", path, ctx);
    q.model_answer = io::get_optional<std::string>(r, "model_answer", "", path, ctx);
    q.raw = r;
    out.push_back(std::move(q));
  }
  if (out.empty()) throw InputError(path, "holds no questions");
  return out;
}

std::string mmhal_image_path(const MmhalQuestion& q, const std::string& images_dir) {
  std::vector<std::string> tried;
  auto under = [&](const std::string& rel) {
    const fs::path p(rel);
    return (p.is_absolute() ? p : fs::path(images_dir) / p).string();
  };
  for (const char* field : {"image_path", "image"}) {
    if (q.raw.contains(field) && q.raw[field].is_string()) {
      const std::string p = under(q.raw[field].get<std::string>());
      if (fs::is_regular_file(p)) return p;
      tried.push_back(p);
    }
  }
  if (!q.image_src.empty()) {
    std::string name = q.image_src.substr(q.image_src.find_last_of('/') + 1);
    name = name.substr(0, name.find_first_of("?#"));
    if (!name.empty()) {
      const std::string p = under(name);
      if (fs::is_regular_file(p)) return p;
      tried.push_back(p);
    }
  }
  for (const char* ext : {".jpg", ".jpeg", ".png"}) {
    const std::string p = under(q.image_id + ext);
    if (fs::is_regular_file(p)) return p;
    tried.push_back(p);
  }
  std::string list;
  for (const auto& t : tried) list += (list.empty() ? "" : ", ") + t;
  throw InputError(images_dir, fmt::format("no image for question {} (image_id {}); tried {}", q.index, q.image_id, list));
}

std::string python_format(const std::string& fmt_str, const std::vector<std::string>& args, const std::string& where) {
  std::string out;
  size_t auto_next = 0;
  bool used_auto = false, used_manual = false;
  for (size_t i = 0; i < fmt_str.size(); ++i) {
    const char c = fmt_str[i];
    if (c == '}') {
      if (i + 1 < fmt_str.size() && fmt_str[i + 1] == '}') {
        out.push_back('}');
        ++i;
        continue;
      }
      throw InputError(where, fmt::format("single '}}' at byte {} (write '}}}}' for a brace)", i));
    }
    if (c != '{') {
      out.push_back(c);
      continue;
    }
    if (i + 1 < fmt_str.size() && fmt_str[i + 1] == '{') {
      out.push_back('{');
      ++i;
      continue;
    }
    const size_t close = fmt_str.find('}', i);
    if (close == std::string::npos) throw InputError(where, fmt::format("unclosed '{{' at byte {}", i));
    const std::string field = fmt_str.substr(i + 1, close - i - 1);
    size_t index = 0;
    if (field.empty()) {
      used_auto = true;
      index = auto_next++;
    } else if (field.find_first_not_of("0123456789") == std::string::npos && field.size() < 6) {
      used_manual = true;
      index = static_cast<size_t>(std::stoul(field));
    } else {
      throw InputError(where, fmt::format("field '{{{}}}' at byte {}: only positional {{}} or {{N}} fields are supported",
                                          field, i));
    }
    if (used_auto && used_manual)
      throw InputError(where, "mixes automatic {} and numbered {N} fields (Python refuses this too)");
    if (index >= args.size())
      throw InputError(where, fmt::format("field {} at byte {} has no argument ({} given)", index, i, args.size()));
    out += args[index];
    i = close;
  }
  return out;
}

std::string read_judge_template(const std::string& path, const std::string& expected_sha256, bool allow_change,
                                std::vector<std::string>& warnings) {
  if (path.empty()) {
    throw InputError("--judge-template",
                     "required: a file holding the official judge template (LLaVA-RLHF Eval/eval_gpt_mmhal.py, the "
                     "`template` string, GPL-3.0, not shipped with p2dpo)");
  }
  if (!fs::is_regular_file(path)) throw InputError(path, "judge template not found");
  const std::string t = io::read_file(path);
  const std::string sha = sha256_hex(t);
  if (sha != expected_sha256) {
    const std::string what = fmt::format("sha256 {} ({} bytes) differs from the official template's {} (evaluation "
                                         "spec §0: 6631 characters, the string between the triple quotes, no trailing "
                                         "newline)",
                                         sha, t.size(), expected_sha256);
    if (!allow_change) {
      throw InputError(path, what + "; scores with another template are not MMHal-Bench scores. Pass "
                                    "--allow-template-change to use it anyway");
    }
    warnings.push_back(path + ": " + what + "; used because of --allow-template-change");
  }
  // Exactly four positional fields: image contents, question, human answer, model answer.
  const std::vector<std::string> probe = {"\x01", "\x02", "\x03", "\x04", "\x05"};
  const std::string filled = python_format(t, probe, path);
  for (size_t k = 0; k < probe.size(); ++k) {
    const bool present = filled.find(probe[k]) != std::string::npos;
    if (present != (k < 4)) {
      throw InputError(path, "the judge template needs exactly four {} fields (image contents, question, human "
                             "answer, model answer)");
    }
  }
  return t;
}

std::string mmhal_judge_prompt(const std::string& judge_template, const MmhalQuestion& q, const std::string& answer) {
  std::string contents;
  for (size_t i = 0; i < q.image_content.size(); ++i) contents += (i ? ", " : "") + q.image_content[i];
  return python_format(judge_template, {contents, q.question, q.gt_answer, answer}, "--judge-template");
}

MmhalRating mmhal_rating(const std::string& reply) {
  std::string lower = reply;
  for (char& c : lower)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  MmhalRating r;
  for (int s = 0; s <= 6; ++s)
    if (lower.find("rating: " + std::to_string(s)) != std::string::npos) r.found.push_back(s);
  r.score = r.found.size() == 1 ? r.found[0] : 0;
  return r;
}

MmhalScore score_mmhal(const std::vector<MmhalQuestion>& questions, const std::vector<int>& scores) {
  if (questions.size() != scores.size()) throw std::invalid_argument("score_mmhal: one score per question");
  MmhalScore s;
  s.n = static_cast<int64_t>(scores.size());
  s.scores = scores;
  int64_t sum = 0, hallucinated = 0;
  std::map<std::string, std::pair<int64_t, int64_t>> by_type;  // type -> (n, sum)
  for (size_t i = 0; i < scores.size(); ++i) {
    sum += scores[i];
    hallucinated += scores[i] < 3 ? 1 : 0;
    auto& t = by_type[questions[i].question_type];
    ++t.first;
    t.second += scores[i];
  }
  if (s.n > 0) {
    s.average = static_cast<double>(sum) / static_cast<double>(s.n);
    s.hallucination_rate = static_cast<double>(hallucinated) / static_cast<double>(s.n);
  }
  std::set<std::string> official(mmhal_question_types().begin(), mmhal_question_types().end());
  auto add = [&](const std::string& type) {
    auto it = by_type.find(type);
    if (it == by_type.end()) return;
    s.per_type.push_back({type, it->second.first, static_cast<double>(it->second.second) / it->second.first});
  };
  for (const auto& t : mmhal_question_types()) add(t);
  for (const auto& [type, v] : by_type)
    if (!official.count(type)) add(type);
  if (s.n != 96) {
    s.warnings.push_back(fmt::format("{} questions scored; the official summarizer expects all 96 (its numbers are "
                                     "not comparable with a subset)",
                                     s.n));
  }
  for (size_t i = 0; i < questions.size(); ++i) {
    const auto& types = mmhal_question_types();
    if (questions[i].question_type != types[questions[i].index % 8]) {
      s.warnings.push_back(fmt::format("question {} has type '{}' where the official order has '{}'; per-type "
                                       "averages follow the type field, the official script uses index % 8",
                                       questions[i].index, questions[i].question_type, types[questions[i].index % 8]));
      break;
    }
  }
  return s;
}

std::vector<std::string> mmhal_official_lines(const MmhalScore& s) {
  if (s.n != 96 || s.scores.size() != 96) return {};
  std::vector<std::string> lines;
  lines.push_back("Average score: " + fixed2(s.average));
  lines.push_back("Hallucination rate: " + fixed2(s.hallucination_rate));
  std::string per;
  for (int k = 0; k < 8; ++k) {
    int64_t sum = 0;
    for (int i = k; i < 96; i += 8) sum += s.scores[static_cast<size_t>(i)];
    per += (k ? "," : "") + python_round2_str(static_cast<double>(sum) / 12.0);
  }
  lines.push_back("Average score for each question type: " + per);
  return lines;
}

MmhalRunResult run_mmhal(models::VisionLanguageModel& model, const MmhalRunOptions& opts) {
  const std::string prompt_template =
      opts.prompt_template.empty() ? bench_conv_template(opts.conv_mode) : opts.prompt_template;
  check_bench_template(prompt_template, opts.prompt_template.empty() ? "--conv-mode" : "--prompt-template");
  check_decode_options(opts.decode);
  std::vector<std::string> warnings;
  std::string judge_template;
  if (opts.judge) {
    // Fail on the template and the judge settings before any forward pass.
    judge_template =
        read_judge_template(opts.judge_template_path, opts.template_sha256, opts.allow_template_change, warnings);
    check_judge_config(opts.judge_config);
  }
  const auto all = read_mmhal_questions(opts.questions_path);
  const auto questions = apply_limit(all, opts.limit);
  std::vector<GenerationItem> items;
  for (const auto& q : questions) {
    GenerationItem it;
    it.id = std::to_string(q.index);
    it.image_path = mmhal_image_path(q, opts.images_dir);
    it.image_key = q.image_id;
    // model_vqa_mmhal.py: qs = "<image>\n" + question (no suffix) in conv llava_v1.
    it.prompt = bench_prompt(prompt_template, q.question, true);
    items.push_back(std::move(it));
  }
  std::vector<std::string> known;
  for (const auto& q : all) known.push_back(std::to_string(q.index));

  const std::string questions_sha = file_sha256(opts.questions_path);
  nlohmann::json protocol = bench_protocol("mmhal", opts, prompt_template);
  protocol["questions_sha256"] = questions_sha;
  MmhalRunResult result;
  result.answers_path = default_output_path(opts.out_dir, "answers/mmhal.jsonl");
  const GenerationRunOptions gen = bench_generation_options(opts, result.answers_path, protocol, "mmhal");
  auto make_record = [&](size_t i, const std::string& answer) {
    const auto& q = questions[i];
    return nlohmann::json{{"index", q.index},         {"image_id", q.image_id}, {"question_type", q.question_type},
                          {"question", q.question},   {"model_answer", strip_answer(answer)},
                          {"prompt", items[i].prompt}, {"model_id", opts.model_id}};
  };
  auto key_of = [&](const nlohmann::json& rec, size_t line) {
    return std::to_string(io::get_required<size_t>(rec, "index", gen.answers_path, fmt::format("line {}", line)));
  };
  result.generated = run_generation(model, items, gen, make_record, key_of, known);

  std::map<size_t, std::string> by_index;
  for (const auto& rec : io::read_jsonl_file(result.answers_path))
    by_index[rec.at("index").get<size_t>()] = rec.at("model_answer").get<std::string>();
  std::vector<std::string> answers;
  nlohmann::json response = nlohmann::json::array();
  for (const auto& q : questions) {
    answers.push_back(by_index.at(q.index));
    nlohmann::json r = q.raw;
    r["model_answer"] = answers.back();
    response.push_back(std::move(r));
  }
  io::write_json_atomic(default_output_path(opts.out_dir, "response.json"), response);
  if (!opts.judge) return result;

  nlohmann::json run_protocol = protocol;
  run_protocol["conv_mode"] = opts.prompt_template.empty() ? opts.conv_mode : "custom";
  run_protocol["questions_file"] = opts.questions_path;
  run_protocol["images_dir"] = opts.images_dir;
  run_protocol["limit"] = opts.limit;
  run_protocol["batch_size"] = opts.batch_size;
  run_protocol["answers_file"] = result.answers_path;
  judge_and_score(questions, answers, judge_template, opts, run_protocol, warnings, result);
  return result;
}

MmhalRunResult judge_mmhal_answers(const std::string& response_file, const MmhalRunOptions& opts) {
  std::vector<std::string> warnings;
  const std::string judge_template =
      read_judge_template(opts.judge_template_path, opts.template_sha256, opts.allow_template_change, warnings);
  check_judge_config(opts.judge_config);
  const auto responses = apply_limit(read_mmhal_questions(response_file), opts.limit);
  std::vector<MmhalQuestion> questions = responses;
  if (!opts.questions_path.empty()) {
    // The response file must be the question file with answers: same questions in the same order.
    const auto official = apply_limit(read_mmhal_questions(opts.questions_path), opts.limit);
    if (official.size() != responses.size()) {
      throw InputError(response_file, fmt::format("{} records, the question file {} has {}", responses.size(),
                                                  opts.questions_path, official.size()));
    }
    for (size_t i = 0; i < official.size(); ++i) {
      if (official[i].question != responses[i].question || official[i].image_id != responses[i].image_id) {
        throw InputError(response_file, fmt::format("record {} asks '{}' about image {}, the question file has '{}' "
                                                    "about {}", i, responses[i].question, responses[i].image_id,
                                                    official[i].question, official[i].image_id));
      }
    }
    questions = official;
  }
  std::vector<std::string> answers;
  for (const auto& r : responses) answers.push_back(r.model_answer);
  MmhalRunResult result;
  result.answers_path = response_file;
  const nlohmann::json protocol = {{"benchmark", "mmhal"},
                                   {"mode", "judge answers"},
                                   {"response_file", response_file},
                                   {"response_sha256", file_sha256(response_file)},
                                   {"questions_file", opts.questions_path},
                                   {"limit", opts.limit}};
  judge_and_score(questions, answers, judge_template, opts, protocol, warnings, result);
  return result;
}

MmhalScore score_mmhal_evaluation(const std::string& evaluation_file, const std::vector<MmhalQuestion>& questions) {
  const std::string text = io::read_file(evaluation_file);
  const size_t first = text.find_first_not_of(" \t\r\n");
  std::vector<int> scores(questions.size(), 0);
  int64_t unrated = 0;
  auto content_of = [&](const nlohmann::json& response, const std::string& ctx) -> std::string {
    if (!response.is_object() || !response.contains("choices") || !response["choices"].is_array() ||
        response["choices"].empty()) {
      throw InputError(evaluation_file, ctx + ": no choices[0].message.content");
    }
    const auto& m = response["choices"][0];
    return io::get_required<std::string>(io::get_required<nlohmann::json>(m, "message", evaluation_file, ctx + ".choices[0]"),
                                         "content", evaluation_file, ctx + ".choices[0].message");
  };
  if (first != std::string::npos && text[first] == '[') {
    // eval_gpt_mmhal.py --evaluation: the responses in question order.
    const nlohmann::json j = io::parse_json_text(text, evaluation_file);
    if (j.size() < questions.size()) {
      throw InputError(evaluation_file, fmt::format("{} responses for {} questions", j.size(), questions.size()));
    }
    for (size_t i = 0; i < questions.size(); ++i) {
      const auto r = mmhal_rating(content_of(j[questions[i].index], record_ctx(questions[i].index)));
      scores[i] = r.score;
      unrated += r.found.size() == 1 ? 0 : 1;
    }
  } else {
    std::map<size_t, nlohmann::json> latest;
    const auto records = io::read_jsonl_file(evaluation_file);
    for (size_t i = 0; i < records.size(); ++i)
      latest[io::get_required<size_t>(records[i], "index", evaluation_file, fmt::format("line {}", i + 1))] = records[i];
    for (size_t i = 0; i < questions.size(); ++i) {
      auto it = latest.find(questions[i].index);
      if (it == latest.end()) throw InputError(evaluation_file, fmt::format("no judgement of question {}", questions[i].index));
      const auto r = mmhal_rating(it->second.value("reply", ""));
      scores[i] = r.score;
      unrated += r.found.size() == 1 ? 0 : 1;
    }
  }
  MmhalScore s = score_mmhal(questions, scores);
  s.unrated = unrated;
  return s;
}

nlohmann::json mmhal_results_document(const MmhalScore& s, const nlohmann::json& protocol) {
  nlohmann::json per_type = nlohmann::json::object();
  for (const auto& t : s.per_type) per_type[t.type] = {{"n", t.n}, {"average", t.average}};
  nlohmann::json doc;
  doc["benchmark"] = "mmhal";
  doc["protocol"] = protocol;
  doc["results"] = {{"n", s.n},
                    {"average_score", s.average},
                    {"hallucination_rate", s.hallucination_rate},
                    {"per_type", per_type},
                    {"unrated", s.unrated},
                    {"judge_errors", s.judge_errors},
                    {"scores", s.scores}};
  doc["official_output"] = mmhal_official_lines(s);
  doc["warnings"] = s.warnings;
  doc["metrics_note"] =
      "summarize_gpt_mmhal.py: score = the one s in 0..6 with 'rating: s' in the lowercased reply, else 0; average = "
      "mean score (0-6); hallucination_rate = share of scores < 3 (fraction); per_type by question_type";
  return doc;
}

std::string format_mmhal_table(const MmhalScore& s) {
  std::string out = fmt::format("MMHal-Bench ({} questions)\n", s.n);
  out += fmt::format("{:<14} {:>8}\n", "average score", fixed2(s.average));
  out += fmt::format("{:<14} {:>8}\n", "halluc. rate", fixed2(s.hallucination_rate));
  for (const auto& t : s.per_type) out += fmt::format("  {:<12} {:>8}  (n={})\n", t.type, fixed2(t.average), t.n);
  if (s.unrated > 0) out += fmt::format("{} replies without exactly one rating (scored 0)\n", s.unrated);
  if (s.judge_errors > 0) out += fmt::format("{} failed judge calls (scored 0)\n", s.judge_errors);
  return out;
}

}  // namespace p2dpo::eval
