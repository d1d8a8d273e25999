#include "eval/afr.h"

#include <fmt/format.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include "eval/bench_runner.h"
#include "eval/pope.h"
#include "eval/pope_runner.h"
#include "image/decode.h"
#include "infer/attention.h"
#include "io/atomic_file.h"
#include "io/errors.h"
#include "io/json_io.h"
#include "train/metrics.h"

namespace p2dpo::eval {

namespace fs = std::filesystem;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

nlohmann::json number_or_null(double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); }

nlohmann::json numbers_or_null(const std::vector<double>& v) {
  nlohmann::json a = nlohmann::json::array();
  for (double x : v) a.push_back(number_or_null(x));
  return a;
}

std::string line_ctx(size_t line) { return "line " + std::to_string(line); }

// Python's str.split()/strip() whitespace, ASCII part.
bool is_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r') || (c >= '\x1c' && c <= '\x1f'); }

std::string strip(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && is_space(s[b])) ++b;
  while (e > b && is_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size())) s.replace(pos, from.size(), to);
  return s;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// re.search(r"(?<=\d)(\,)+(?=\d)", s): a digit, one or more commas, a digit.
bool has_digit_comma_digit(const std::string& s) {
  for (size_t i = 1; i < s.size(); ++i) {
    if (s[i] != ',' || !is_digit(s[i - 1])) continue;
    size_t j = i;
    while (j < s.size() && s[j] == ',') ++j;
    if (j < s.size() && is_digit(s[j])) return true;
  }
  return false;
}

const std::map<std::string, std::string>& contractions() {
  // m4c_evaluator.EvalAIAnswerProcessor.CONTRACTIONS, verbatim (the capitalised keys can never match
  // after lower-casing; kept so the table is the official one).
  static const std::map<std::string, std::string> table = {
      {"aint", "ain't"}, {"arent", "aren't"}, {"cant", "can't"}, {"couldve", "could've"}, {"couldnt", "couldn't"},
      {"couldn'tve", "couldn't've"}, {"couldnt've", "couldn't've"}, {"didnt", "didn't"}, {"doesnt", "doesn't"},
      {"dont", "don't"}, {"hadnt", "hadn't"}, {"hadnt've", "hadn't've"}, {"hadn'tve", "hadn't've"}, {"hasnt", "hasn't"},
      {"havent", "haven't"}, {"hed", "he'd"}, {"hed've", "he'd've"}, {"he'dve", "he'd've"}, {"hes", "he's"},
      {"howd", "how'd"}, {"howll", "how'll"}, {"hows", "how's"}, {"Id've", "I'd've"}, {"I'dve", "I'd've"},
      {"Im", "I'm"}, {"Ive", "I've"}, {"isnt", "isn't"}, {"itd", "it'd"}, {"itd've", "it'd've"}, {"it'dve", "it'd've"},
      {"itll", "it'll"}, {"let's", "let's"}, {"maam", "ma'am"}, {"mightnt", "mightn't"}, {"mightnt've", "mightn't've"},
      {"mightn'tve", "mightn't've"}, {"mightve", "might've"}, {"mustnt", "mustn't"}, {"mustve", "must've"},
      {"neednt", "needn't"}, {"notve", "not've"}, {"oclock", "o'clock"}, {"oughtnt", "oughtn't"},
      {"ow's'at", "'ow's'at"}, {"'ows'at", "'ow's'at"}, {"'ow'sat", "'ow's'at"}, {"shant", "shan't"},
      {"shed've", "she'd've"}, {"she'dve", "she'd've"}, {"she's", "she's"}, {"shouldve", "should've"},
      {"shouldnt", "shouldn't"}, {"shouldnt've", "shouldn't've"}, {"shouldn'tve", "shouldn't've"},
      {"somebody'd", "somebodyd"}, {"somebodyd've", "somebody'd've"}, {"somebody'dve", "somebody'd've"},
      {"somebodyll", "somebody'll"}, {"somebodys", "somebody's"}, {"someoned", "someone'd"},
      {"someoned've", "someone'd've"}, {"someone'dve", "someone'd've"}, {"someonell", "someone'll"},
      {"someones", "someone's"}, {"somethingd", "something'd"}, {"somethingd've", "something'd've"},
      {"something'dve", "something'd've"}, {"somethingll", "something'll"}, {"thats", "that's"},
      {"thered", "there'd"}, {"thered've", "there'd've"}, {"there'dve", "there'd've"}, {"therere", "there're"},
      {"theres", "there's"}, {"theyd", "they'd"}, {"theyd've", "they'd've"}, {"they'dve", "they'd've"},
      {"theyll", "they'll"}, {"theyre", "they're"}, {"theyve", "they've"}, {"twas", "'twas"}, {"wasnt", "wasn't"},
      {"wed've", "we'd've"}, {"we'dve", "we'd've"}, {"weve", "we've"}, {"werent", "weren't"}, {"whatll", "what'll"},
      {"whatre", "what're"}, {"whats", "what's"}, {"whatve", "what've"}, {"whens", "when's"}, {"whered", "where'd"},
      {"wheres", "where's"}, {"whereve", "where've"}, {"whod", "who'd"}, {"whod've", "who'd've"},
      {"who'dve", "who'd've"}, {"wholl", "who'll"}, {"whos", "who's"}, {"whove", "who've"}, {"whyll", "why'll"},
      {"whyre", "why're"}, {"whys", "why's"}, {"wont", "won't"}, {"wouldve", "would've"}, {"wouldnt", "wouldn't"},
      {"wouldnt've", "wouldn't've"}, {"wouldn'tve", "wouldn't've"}, {"yall", "y'all"}, {"yall'll", "y'all'll"},
      {"y'allll", "y'all'll"}, {"yall'd've", "y'all'd've"}, {"y'alld've", "y'all'd've"}, {"y'all'dve", "y'all'd've"},
      {"youd", "you'd"}, {"youd've", "you'd've"}, {"you'dve", "you'd've"}, {"youll", "you'll"},
      {"youre", "you're"}, {"youve", "you've"}};
  return table;
}

std::string ascii_lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

}  // namespace

std::string vqa_normalize(const std::string& answer) {
  // word_tokenize
  std::string s = ascii_lower(answer);
  s = replace_all(s, ",", "");
  s = replace_all(s, "?", "");
  s = replace_all(s, "'s", " 's");
  s = strip(s);
  s = strip(replace_all(replace_all(s, "\n", " "), "\t", " "));
  // process_punctuation: each mark is deleted where it touches a space (or the comma rule fires) in
  // the step's input, else turned into a space.
  static const char* kPunctuation[] = {";", "/", "[", "]", "\"", "{", "}", "(", ")", "=", "+",
                                       "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"};
  const std::string in = s;
  const bool comma_rule = has_digit_comma_digit(in);
  std::string out = in;
  for (const char* p : kPunctuation) {
    const std::string mark(p);
    if (in.find(mark + " ") != std::string::npos || in.find(" " + mark) != std::string::npos || comma_rule)
      out = replace_all(out, mark, "");
    else
      out = replace_all(out, mark, " ");
  }
  // PERIOD_STRIP.sub("", out, re.UNICODE): '.' not followed by a digit, at most 32 (count = re.UNICODE).
  std::string stripped;
  int removed = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == '.' && removed < 32 && !(i + 1 < out.size() && is_digit(out[i + 1]))) {
      ++removed;
      continue;
    }
    stripped += out[i];
  }
  // process_digit_article
  static const std::map<std::string, std::string> kNumbers = {
      {"none", "0"}, {"zero", "0"}, {"one", "1"}, {"two", "2"}, {"three", "3"}, {"four", "4"},
      {"five", "5"}, {"six", "6"}, {"seven", "7"}, {"eight", "8"}, {"nine", "9"}, {"ten", "10"}};
  std::vector<std::string> words;
  const std::string lowered = ascii_lower(stripped);
  size_t i = 0;
  while (i < lowered.size()) {
    while (i < lowered.size() && is_space(lowered[i])) ++i;
    size_t j = i;
    while (j < lowered.size() && !is_space(lowered[j])) ++j;
    if (j > i) {
      std::string w = lowered.substr(i, j - i);
      auto n = kNumbers.find(w);
      if (n != kNumbers.end()) w = n->second;
      if (w != "a" && w != "an" && w != "the") words.push_back(std::move(w));
    }
    i = j;
  }
  std::string joined;
  for (size_t k = 0; k < words.size(); ++k) {
    auto c = contractions().find(words[k]);
    if (k) joined += ' ';
    joined += c != contractions().end() ? c->second : words[k];
  }
  return joined;
}

double vqa_accuracy(const std::string& prediction, const std::vector<std::string>& gt_answers) {
  if (gt_answers.empty()) throw std::invalid_argument("vqa_accuracy: no ground-truth answers");
  const std::string p = vqa_normalize(prediction);
  std::vector<std::string> g;
  for (const auto& a : gt_answers) g.push_back(vqa_normalize(a));
  double total = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    int matches = 0;
    for (size_t j = 0; j < g.size(); ++j) matches += (j != i && g[j] == p) ? 1 : 0;
    total += std::min(1.0, matches / 3.0);
  }
  return total / static_cast<double>(g.size());
}

BoxMapping parse_box_mapping(const std::string& s, const std::string& flag) {
  if (s == "crop") return BoxMapping::Crop;
  if (s == "pad") return BoxMapping::Pad;
  if (s == "stretch") return BoxMapping::Stretch;
  throw InputError(flag, "unknown box mapping '" + s + "' (crop, pad, stretch)");
}

const char* box_mapping_name(BoxMapping m) {
  switch (m) {
    case BoxMapping::Crop: return "crop";
    case BoxMapping::Pad: return "pad";
    case BoxMapping::Stretch: return "stretch";
  }
  return "?";
}

BboxFormat parse_bbox_format(const std::string& s, const std::string& flag) {
  if (s == "xyxy") return BboxFormat::Xyxy;
  if (s == "xywh") return BboxFormat::Xywh;
  throw InputError(flag, "unknown bbox format '" + s + "' (xyxy, xywh)");
}

GridCells box_grid_cells(const std::array<double, 4>& box, int width, int height,
                         const image::ClipProcessorConfig& processor, BoxMapping mapping, int grid_h, int grid_w) {
  if (width <= 0 || height <= 0 || grid_h <= 0 || grid_w <= 0)
    throw std::invalid_argument("box_grid_cells: empty image or grid");
  // Per axis, cell units u = ((x + offset) * resized - crop_start * base) * grid / (base * frame),
  // every factor an integer, so exact ties with cell centres (c + 1/2) compare exactly.
  double u[2], v[2];
  if (mapping == BoxMapping::Stretch) {
    for (int k = 0; k < 2; ++k) {
      u[k] = box[k * 2] * grid_w / width;
      v[k] = box[k * 2 + 1] * grid_h / height;
    }
  } else {
    int base_w = width, base_h = height, off_x = 0, off_y = 0;
    if (mapping == BoxMapping::Pad) {
      const int side = std::max(width, height);
      off_x = (side - width) / 2;
      off_y = (side - height) / 2;
      base_w = base_h = side;
    }
    int rh = base_h, rw = base_w;
    if (processor.do_resize) {
      const auto hw = image::clip_resize_output_hw(base_h, base_w, processor);
      rh = hw[0];
      rw = hw[1];
    }
    int top = 0, left = 0, frame_h = rh, frame_w = rw;
    if (processor.do_center_crop) {
      const auto tl = image::center_crop_top_left(rh, rw, processor.crop_height, processor.crop_width);
      top = tl[0];
      left = tl[1];
      frame_h = processor.crop_height;
      frame_w = processor.crop_width;
    }
    for (int k = 0; k < 2; ++k) {
      u[k] = ((box[k * 2] + off_x) * rw - static_cast<double>(left) * base_w) * grid_w /
             (static_cast<double>(base_w) * frame_w);
      v[k] = ((box[k * 2 + 1] + off_y) * rh - static_cast<double>(top) * base_h) * grid_h /
             (static_cast<double>(base_h) * frame_h);
    }
  }
  GridCells out;
  out.inside.assign(static_cast<size_t>(grid_h) * grid_w, false);
  if (u[0] >= grid_w || u[1] <= 0 || v[0] >= grid_h || v[1] <= 0) {
    out.dropped = true;
    return out;
  }
  for (int r = 0; r < grid_h; ++r) {
    const double cy = r + 0.5;
    if (!(v[0] <= cy && cy < v[1])) continue;
    for (int c = 0; c < grid_w; ++c) {
      const double cx = c + 0.5;
      if (u[0] <= cx && cx < u[1]) {
        out.inside[static_cast<size_t>(r) * grid_w + c] = true;
        ++out.count;
      }
    }
  }
  if (out.count == 0) {
    const double cu = (std::max(u[0], 0.0) + std::min(u[1], static_cast<double>(grid_w))) / 2;
    const double cv = (std::max(v[0], 0.0) + std::min(v[1], static_cast<double>(grid_h))) / 2;
    const int c = std::clamp(static_cast<int>(std::floor(cu)), 0, grid_w - 1);
    const int r = std::clamp(static_cast<int>(std::floor(cv)), 0, grid_h - 1);
    out.inside[static_cast<size_t>(r) * grid_w + c] = true;
    out.count = 1;
    out.centre_fallback = true;
  }
  return out;
}

double attention_focus_ratio(const std::vector<float>& map, const std::vector<bool>& inside) {
  if (map.size() != inside.size()) throw std::invalid_argument("attention_focus_ratio: map and cells differ in size");
  double in_sum = 0, out_sum = 0;
  int64_t in_n = 0, out_n = 0;
  for (size_t i = 0; i < map.size(); ++i) {
    if (inside[i]) {
      in_sum += map[i];
      ++in_n;
    } else {
      out_sum += map[i];
      ++out_n;
    }
  }
  if (in_n == 0 || out_n == 0 || out_sum == 0) return kNaN;
  return (in_sum / static_cast<double>(in_n)) / (out_sum / static_cast<double>(out_n));
}

std::vector<AfrRecord> read_afr_records(const std::string& path, BboxFormat format) {
  const auto records = io::read_jsonl_file(path);
  std::vector<AfrRecord> out;
  std::set<int64_t> seen;
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    const std::string ctx = line_ctx(i + 1);
    AfrRecord a;
    a.question_id = io::get_required<int64_t>(r, "question_id", path, ctx);
    a.image = io::get_required<std::string>(r, "image", path, ctx);
    a.question = r.contains("text") ? io::get_required<std::string>(r, "text", path, ctx)
                                    : io::get_required<std::string>(r, "question", path, ctx);
    if (r.contains("answers")) a.answers = io::get_required<std::vector<std::string>>(r, "answers", path, ctx);
    if (r.contains("label")) {
      const auto label = io::get_required<std::string>(r, "label", path, ctx);
      if (label != "yes" && label != "no") throw InputError(path, ctx + ": label must be \"yes\" or \"no\", got \"" + label + "\"");
      a.label_yes = label == "yes";
    }
    if (a.answers.empty() && !a.label_yes)
      throw InputError(path, ctx + ": needs \"answers\" (TextVQA style) or \"label\" (yes/no)");
    const auto b = io::get_required<std::vector<double>>(r, "bbox", path, ctx);
    if (b.size() != 4) throw InputError(path, ctx + ": bbox needs 4 numbers, got " + std::to_string(b.size()));
    a.bbox = format == BboxFormat::Xyxy ? std::array<double, 4>{b[0], b[1], b[2], b[3]}
                                        : std::array<double, 4>{b[0], b[1], b[0] + b[2], b[1] + b[3]};
    if (!(a.bbox[2] > a.bbox[0] && a.bbox[3] > a.bbox[1]))
      throw InputError(path, fmt::format("{}: bbox [{}, {}, {}, {}] is empty (format {})", ctx, b[0], b[1], b[2], b[3],
                                         format == BboxFormat::Xyxy ? "xyxy" : "xywh"));
    a.size = io::get_optional<std::string>(r, "size", "", path, ctx);
    a.answer_object = io::get_optional<std::string>(r, "answer_object", "", path, ctx);
    if (!seen.insert(a.question_id).second)
      throw InputError(path, fmt::format("{}: question_id {} appears twice", ctx, a.question_id));
    out.push_back(std::move(a));
  }
  return out;
}

double afr_answer_accuracy(const AfrRecord& r, const std::string& answer) {
  if (!r.answers.empty()) return vqa_accuracy(answer, r.answers);
  return pope_answer_is_yes(answer) == *r.label_yes ? 1.0 : 0.0;
}

int default_pacc_layer(int num_layers) {
  return std::clamp(static_cast<int>(std::lround(14.0 * num_layers / 32.0)), 0, std::max(0, num_layers - 1));
}

AfrSample analyze_attention(models::VisionLanguageModel& model, const models::PreparedImage& image,
                            const std::string& prompt, const std::string& answer, const GridCells& cells,
                            bool keep_map, int pacc_layer) {
  const int L = model.info().num_layers;
  std::vector<int> layers(static_cast<size_t>(L));
  for (int l = 0; l < L; ++l) layers[static_cast<size_t>(l)] = l;
  const std::vector<models::PreparedImage> images = {image};
  const auto prompt_ids = model.tokenize_prompt(prompt, images);
  const auto rows_from = [](int64_t first, size_t n) {
    std::vector<int64_t> rows;
    for (size_t k = 0; k <= n; ++k) rows.push_back(first + static_cast<int64_t>(k));
    return rows;
  };
  infer::ImageAttention focus, answer_att;
  if (answer.empty()) {
    focus = infer::attention_to_images(model, images, prompt_ids, layers, {-1});
    answer_att = focus;
  } else {
    auto [p_ids, a_ids] = model.tokenize_prompt_answer(prompt, answer, images);
    std::vector<int64_t> full = p_ids;
    full.insert(full.end(), a_ids.begin(), a_ids.end());
    const auto rows = rows_from(static_cast<int64_t>(p_ids.size()) - 1, a_ids.size());
    answer_att = infer::attention_to_images(model, images, full, layers, rows);
    // The usual case: the answer's tokenization leaves the prompt's intact, so row 0 is the last
    // prompt position of the prompt alone (causal attention ignores what follows).
    if (p_ids == prompt_ids) focus = answer_att;
    else focus = infer::attention_to_images(model, images, prompt_ids, layers, {-1});
  }
  AfrSample s;
  const size_t T = cells.inside.size();
  for (int l = 0; l < L; ++l) {
    const torch::Tensor f = focus.maps.at(l);
    if (f.size(-1) != static_cast<int64_t>(T))
      throw std::runtime_error(fmt::format("analyze_attention: {} image tokens, grid of {} cells", f.size(-1), T));
    const torch::Tensor row = f.select(0, 0).contiguous();
    std::vector<float> map(row.data_ptr<float>(), row.data_ptr<float>() + T);
    s.afr.push_back(attention_focus_ratio(map, cells.inside));
    const torch::Tensor a = answer_att.maps.at(l);
    s.image_share.push_back(a.to(torch::kDouble).sum(-1).mean().item<double>());
    if (keep_map && l == pacc_layer) s.map = std::move(map);
  }
  s.queries = static_cast<int>(answer_att.maps.at(0).size(0));
  s.cells_inside = cells.count;
  s.centre_fallback = cells.centre_fallback;
  s.dropped = cells.dropped;
  s.answer = answer;
  return s;
}

AfrSummary summarize_afr(const std::vector<AfrSample>& samples, int num_layers, int pacc_layer,
                         std::optional<double> pacc_threshold) {
  AfrSummary s;
  s.num_layers = num_layers;
  s.n = static_cast<int64_t>(samples.size());
  s.pacc_layer = pacc_layer;
  s.afr_per_layer.assign(static_cast<size_t>(num_layers), 0.0);
  s.afr_n_per_layer.assign(static_cast<size_t>(num_layers), 0);
  s.image_share_per_layer.assign(static_cast<size_t>(num_layers), 0.0);
  double acc_sum = 0, queries = 0, per_record_ratio_sum = 0;
  for (const auto& x : samples) {
    s.dropped += x.dropped;
    s.centre_fallback += x.centre_fallback;
    acc_sum += x.accuracy;
    double record_ratio = 0;
    if (x.afr.size() != static_cast<size_t>(num_layers) || x.image_share.size() != static_cast<size_t>(num_layers))
      throw std::invalid_argument("summarize_afr: a sample's per-layer values do not match the layer count");
    for (int l = 0; l < num_layers; ++l) {
      if (std::isfinite(x.afr[static_cast<size_t>(l)])) {
        s.afr_per_layer[static_cast<size_t>(l)] += x.afr[static_cast<size_t>(l)];
        ++s.afr_n_per_layer[static_cast<size_t>(l)];
      }
      s.image_share_per_layer[static_cast<size_t>(l)] += x.image_share[static_cast<size_t>(l)] * x.queries;
      record_ratio += x.image_share[static_cast<size_t>(l)];
    }
    queries += x.queries;
    per_record_ratio_sum += num_layers > 0 ? record_ratio / num_layers : 0.0;
  }
  double layer_mean_sum = 0;
  int layer_mean_n = 0;
  for (size_t l = 0; l < s.afr_per_layer.size(); ++l) {
    s.afr_per_layer[l] = s.afr_n_per_layer[l] ? s.afr_per_layer[l] / static_cast<double>(s.afr_n_per_layer[l]) : kNaN;
    if (std::isfinite(s.afr_per_layer[l])) {
      layer_mean_sum += s.afr_per_layer[l];
      ++layer_mean_n;
    }
    s.image_share_per_layer[l] = queries > 0 ? s.image_share_per_layer[l] / queries : kNaN;
  }
  s.afr_mean_over_layers = layer_mean_n ? layer_mean_sum / layer_mean_n : kNaN;
  s.accuracy = s.n ? 100.0 * acc_sum / static_cast<double>(s.n) : kNaN;
  s.mean_image_ratio = s.n ? per_record_ratio_sum / static_cast<double>(s.n) : kNaN;
  double g = 0;
  for (double v : s.image_share_per_layer) g += v;
  s.global_image_ratio = num_layers > 0 && queries > 0 ? g / num_layers : kNaN;  // equal queries per layer
  if (pacc_layer >= 0 && pacc_layer < num_layers) {
    s.pacc_threshold_source = pacc_threshold ? "fixed" : "mean";
    s.pacc_threshold = pacc_threshold ? *pacc_threshold : s.afr_per_layer[static_cast<size_t>(pacc_layer)];
    double sub = 0;
    for (const auto& x : samples) {
      const double a = x.afr[static_cast<size_t>(pacc_layer)];
      if (std::isfinite(a) && a > s.pacc_threshold) {
        sub += x.accuracy;
        ++s.pacc_n;
      }
    }
    s.pacc = s.pacc_n ? 100.0 * sub / static_cast<double>(s.pacc_n) : kNaN;
  } else {
    s.pacc = s.pacc_threshold = kNaN;
  }
  return s;
}

nlohmann::json afr_summary_json(const AfrSummary& s) {
  nlohmann::json j;
  j["benchmark"] = "afr";
  j["n"] = s.n;
  j["accuracy"] = number_or_null(s.accuracy);
  j["num_layers"] = s.num_layers;
  j["grid"] = {s.grid_h, s.grid_w};
  j["afr_per_layer"] = numbers_or_null(s.afr_per_layer);
  j["afr_n_per_layer"] = s.afr_n_per_layer;
  j["afr_mean_over_layers"] = number_or_null(s.afr_mean_over_layers);
  j["afr_pacc_layer"] = s.pacc_layer >= 0 && s.pacc_layer < static_cast<int>(s.afr_per_layer.size())
                            ? number_or_null(s.afr_per_layer[static_cast<size_t>(s.pacc_layer)]) : nlohmann::json(nullptr);
  j["pacc"] = number_or_null(s.pacc);
  j["pacc_n"] = s.pacc_n;
  j["pacc_layer"] = s.pacc_layer;
  j["pacc_threshold"] = number_or_null(s.pacc_threshold);
  j["pacc_threshold_source"] = s.pacc_threshold_source;
  j["image_attention_share_per_layer"] = numbers_or_null(s.image_share_per_layer);
  j["mean_image_ratio"] = number_or_null(s.mean_image_ratio);
  j["global_image_ratio"] = number_or_null(s.global_image_ratio);
  j["dropped"] = s.dropped;
  j["centre_fallback"] = s.centre_fallback;
  return j;
}

std::string format_afr_table(const AfrSummary& s) {
  const auto num = [](double v, const char* f) { return std::isnan(v) ? std::string("n/a") : fmt::format(fmt::runtime(f), v); };
  std::ostringstream out;
  out << fmt::format("AFR / P-Acc on {} records ({} boxes outside the frame, {} by the centre-cell rule)\n", s.n,
                     s.dropped, s.centre_fallback);
  out << fmt::format("{:<7} {:>9} {:>12}\n", "layer", "AFR", "image share");
  for (size_t l = 0; l < s.afr_per_layer.size(); ++l)
    out << fmt::format("{:<7} {:>9} {:>12}\n", l, num(s.afr_per_layer[l], "{:.3f}"), num(s.image_share_per_layer[l], "{:.4f}"));
  out << fmt::format("AFR mean over layers {}; accuracy {}; P-Acc {} (layer {}, AFR > {} [{}], {} records)\n",
                     num(s.afr_mean_over_layers, "{:.3f}"), num(s.accuracy, "{:.2f}"), num(s.pacc, "{:.2f}"), s.pacc_layer,
                     num(s.pacc_threshold, "{:.3f}"), s.pacc_threshold_source, s.pacc_n);
  out << fmt::format("image ratio: mean {}, global {}\n", num(s.mean_image_ratio, "{:.4f}"), num(s.global_image_ratio, "{:.4f}"));
  return out.str();
}

std::vector<AfrRecord> afr_select_records(const std::string& path, BboxFormat format, int64_t limit,
                                          const std::string& images_dir) {
  auto records = read_afr_records(path, format);
  if (limit > 0 && static_cast<int64_t>(records.size()) > limit) records.resize(static_cast<size_t>(limit));
  if (!images_dir.empty()) {
    for (const auto& r : records) {
      const fs::path p = fs::path(images_dir) / r.image;
      if (!fs::exists(p))
        throw InputError("--images", fmt::format("{} (question_id {} of {}) does not exist", p.string(), r.question_id, path));
    }
  }
  return records;
}

namespace {

std::map<int64_t, std::string> read_answer_texts(const std::string& path, const std::set<int64_t>& known) {
  std::map<int64_t, std::string> out;
  const auto records = io::read_jsonl_file(path);
  for (size_t i = 0; i < records.size(); ++i) {
    const auto id = io::get_required<int64_t>(records[i], "question_id", path, line_ctx(i + 1));
    if (!known.count(id)) throw InputError(path, fmt::format("line {}: question_id {} is not a record", i + 1, id));
    if (!out.emplace(id, io::get_required<std::string>(records[i], "text", path, line_ctx(i + 1))).second)
      throw InputError(path, fmt::format("line {}: question_id {} is answered twice", i + 1, id));
  }
  return out;
}

nlohmann::json sample_json(const AfrRecord& r, const AfrSample& s) {
  nlohmann::json j = {{"question_id", r.question_id}, {"image", r.image},          {"question", r.question},
                      {"answer", s.answer},           {"accuracy", s.accuracy},     {"cells_inside", s.cells_inside},
                      {"centre_fallback", s.centre_fallback}, {"dropped", s.dropped},
                      {"afr", numbers_or_null(s.afr)}, {"image_share", numbers_or_null(s.image_share)},
                      {"queries", s.queries}};
  if (!r.size.empty()) j["size"] = r.size;
  if (!r.answer_object.empty()) j["answer_object"] = r.answer_object;
  if (!s.map.empty()) j["map_pacc_layer"] = s.map;
  return j;
}

}  // namespace

AfrRunResult run_afr(models::VisionLanguageModel& model, const AfrRunOptions& opts) {
  check_bench_template(opts.prompt_template, "--prompt-template");
  const auto all = read_afr_records(opts.records_path, opts.bbox_format);
  const auto records = afr_select_records(opts.records_path, opts.bbox_format, opts.limit, opts.images_dir);
  const int L = model.info().num_layers;
  const int pacc_layer = opts.pacc_layer < 0 ? default_pacc_layer(L) : opts.pacc_layer;
  if (pacc_layer >= L)
    throw InputError("--pacc-layer", fmt::format("layer {} is outside the model's 0..{}", pacc_layer, L - 1));
  const BoxMapping mapping = opts.mapping ? *opts.mapping : (opts.processor.pad_to_square ? BoxMapping::Pad : BoxMapping::Crop);

  std::vector<GenerationItem> items;
  for (const auto& r : records) {
    GenerationItem g;
    g.id = std::to_string(r.question_id);
    g.image_path = (fs::path(opts.images_dir) / r.image).string();
    g.prompt = bench_prompt(opts.prompt_template, pope_question_text(r.question, opts.answer_suffix), true);
    items.push_back(std::move(g));
  }
  std::vector<std::string> known;
  std::set<int64_t> known_ids;
  for (const auto& r : all) {
    known.push_back(std::to_string(r.question_id));
    known_ids.insert(r.question_id);
  }
  const nlohmann::json protocol = {{"benchmark", "afr"},
                                   {"model_id", opts.model_id},
                                   {"model_settings", opts.model_settings},
                                   {"prompt_template", opts.prompt_template},
                                   {"answer_suffix", opts.answer_suffix},
                                   {"decoding", "greedy"},
                                   {"max_new_tokens", opts.max_new_tokens}};
  AfrRunResult result;
  result.answers_path = (fs::path(opts.out_dir) / "answers" / "afr.jsonl").string();
  GenerationRunOptions gen;
  gen.answers_path = result.answers_path;
  gen.protocol = protocol;
  gen.batch_size = opts.batch_size;
  gen.max_new_tokens = opts.max_new_tokens;
  gen.progress_label = "afr answers";
  gen.progress = opts.progress;
  auto make_record = [&](size_t i, const std::string& answer) {
    return nlohmann::json{{"question_id", records[i].question_id},
                          {"image", records[i].image},
                          {"prompt", items[i].prompt},
                          {"text", answer},
                          {"model_id", opts.model_id}};
  };
  auto key_of = [&](const nlohmann::json& rec, size_t line) {
    return std::to_string(io::get_required<int64_t>(rec, "question_id", result.answers_path, line_ctx(line)));
  };
  result.generated = run_generation(model, items, gen, make_record, key_of, known);
  const auto answers = read_answer_texts(result.answers_path, known_ids);

  // The attention pass: one forward per record on prompt + its answer.
  const auto start = std::chrono::steady_clock::now();
  const size_t every = std::max<size_t>(1, records.size() / 20);
  int grid_h = 0, grid_w = 0;
  std::string samples_text;
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    const auto img = image::decode_image_file(items[i].image_path);
    const auto prepared = model.prepare_image(img);
    grid_h = prepared.grid_h;
    grid_w = prepared.grid_w;
    const auto cells = box_grid_cells(r.bbox, img.width, img.height, opts.processor, mapping, grid_h, grid_w);
    const std::string& answer = answers.at(r.question_id);
    AfrSample s = analyze_attention(model, prepared, items[i].prompt, answer, cells,
                                    static_cast<int64_t>(i) < opts.keep_maps, pacc_layer);
    s.question_id = r.question_id;
    s.accuracy = afr_answer_accuracy(r, answer);
    samples_text += sample_json(r, s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    result.samples.push_back(std::move(s));
    if (opts.progress && ((i + 1) % every == 0 || i + 1 == records.size())) {
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double rate = elapsed > 0 ? static_cast<double>(i + 1) / elapsed : 0.0;
      const double eta = rate > 0 ? static_cast<double>(records.size() - i - 1) / rate : NAN;
      std::cerr << fmt::format("[afr attention] {}/{} ({:.1f}%), {:.2f} rec/s, ETA {}\n", i + 1, records.size(),
                               100.0 * static_cast<double>(i + 1) / static_cast<double>(records.size()), rate,
                               train::ProgressLine::format_duration(eta));
    }
  }
  result.summary = summarize_afr(result.samples, L, pacc_layer, opts.pacc_threshold);
  result.summary.grid_h = grid_h;
  result.summary.grid_w = grid_w;

  result.results = afr_summary_json(result.summary);
  // By object size (the world's records): AFR at the P-Acc layer and accuracy.
  std::map<std::string, std::vector<AfrSample>> by_size;
  for (size_t i = 0; i < records.size(); ++i)
    if (!records[i].size.empty()) by_size[records[i].size].push_back(result.samples[i]);
  if (!by_size.empty()) {
    nlohmann::json sizes = nlohmann::json::object();
    for (const auto& [size, part] : by_size) {
      const auto sub = summarize_afr(part, L, pacc_layer, result.summary.pacc_threshold);
      sizes[size] = {{"n", sub.n}, {"accuracy", number_or_null(sub.accuracy)},
                     {"afr_pacc_layer", number_or_null(sub.afr_per_layer[static_cast<size_t>(pacc_layer)])},
                     {"afr_mean_over_layers", number_or_null(sub.afr_mean_over_layers)}};
    }
    result.results["by_size"] = sizes;
  }
  nlohmann::json run_protocol = protocol;
  run_protocol["records_file"] = opts.records_path;
  run_protocol["images_dir"] = opts.images_dir;
  run_protocol["limit"] = opts.limit;
  run_protocol["box_mapping"] = box_mapping_name(mapping);
  run_protocol["bbox_format"] = opts.bbox_format == BboxFormat::Xyxy ? "xyxy" : "xywh";
  run_protocol["attention"] = "head mean; last prompt token -> image tokens (AFR); answer-token queries (image share)";
  run_protocol["answers_file"] = result.answers_path;
  result.results["protocol"] = run_protocol;
  result.results["warnings"] = nlohmann::json::array();
  if (result.summary.dropped > 0)
    result.results["warnings"].push_back(fmt::format("{} boxes fall outside the model's frame; their AFR is skipped",
                                                     result.summary.dropped));
  io::write_file_atomic((fs::path(opts.out_dir) / "afr_samples.jsonl").string(), samples_text);
  io::write_json_atomic((fs::path(opts.out_dir) / "results.json").string(), result.results);
  return result;
}

nlohmann::json score_afr_answers(const std::vector<AfrRecord>& records, const std::string& answers_path,
                                 std::vector<std::string>& warnings) {
  std::set<int64_t> ids;
  for (const auto& r : records) ids.insert(r.question_id);
  const auto answers = read_answer_texts(answers_path, ids);
  double sum = 0;
  int64_t n = 0;
  for (const auto& r : records) {
    auto it = answers.find(r.question_id);
    if (it == answers.end()) continue;
    sum += afr_answer_accuracy(r, it->second);
    ++n;
  }
  if (n < static_cast<int64_t>(records.size()))
    warnings.push_back(fmt::format("{} of {} records have no answer and are left out", records.size() - n, records.size()));
  nlohmann::json j;
  j["benchmark"] = "afr";
  j["n"] = n;
  j["accuracy"] = number_or_null(n ? 100.0 * sum / static_cast<double>(n) : kNaN);
  for (const char* k : {"afr_per_layer", "image_attention_share_per_layer", "pacc", "afr_mean_over_layers",
                        "mean_image_ratio", "global_image_ratio"})
    j[k] = nullptr;
  j["warnings"] = warnings;
  return j;
}

}  // namespace p2dpo::eval
