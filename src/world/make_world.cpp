#include "world/make_world.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>
#include <vector>

#include "image/png_write.h"
#include "io/errors.h"
#include "world/pope.h"
#include "world/render.h"
#include "world/scene.h"
#include "world/scene_io.h"
#include "world/text.h"

namespace p2dpo::world {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

namespace {

constexpr int64_t kMaxCount = 999999;  // ids have six digits

void require_range(const std::string& flag, int64_t value, int64_t lo, int64_t hi) {
  if (value < lo || value > hi)
    throw InputError(flag, "must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " +
                               std::to_string(value));
}

}  // namespace

void validate_world_options(const WorldOptions& opt) {
  if (opt.out_dir.empty()) throw InputError("--out", "an output directory is required");
  require_range("--train", opt.train_count, 0, kMaxCount);
  require_range("--prompts", opt.prompt_count, 0, kMaxCount);
  require_range("--eval", opt.eval_count, 0, kMaxCount);
  if (opt.train_count + opt.prompt_count + opt.eval_count == 0)
    throw InputError("--train", "--train, --prompts and --eval are all 0: nothing to generate");
  const Vocabulary vocab = build_vocabulary(opt.shapes, opt.colors, opt.popularity_decay_permille);
  require_range("model_input_side", opt.model_input_side, 8, 4096);
  require_range("patch_size", opt.patch_size, 1, opt.model_input_side);
  require_range("--min-side", opt.min_image_side, opt.model_input_side, 4096);
  require_range("--max-side", opt.max_image_side, opt.min_image_side, 4096);
  require_range("square_percent", opt.square_percent, 0, 100);
  require_range("small_percent", opt.small_percent, 0, 100);
  require_range("partner_percent", opt.partner_percent, 0, 100);
  require_range("eval_partner_percent", opt.eval_partner_percent, 0, 100);
  require_range("--min-objects", opt.min_objects, 1, 12);
  require_range("--max-objects", opt.max_objects, opt.min_objects, 12);
  if (opt.max_objects > vocab.num_classes())
    throw InputError("--max-objects", "at most " + std::to_string(vocab.num_classes()) +
                                          " objects (one per class of the vocabulary), got " + std::to_string(opt.max_objects));
  require_range("--small-size", opt.small_min_permille, 1, 1000);
  require_range("--small-size", opt.small_max_permille, opt.small_min_permille, 1000);
  require_range("--large-size", opt.large_min_permille, opt.small_max_permille + 1, 1000);
  require_range("--large-size", opt.large_max_permille, opt.large_min_permille, 1000);
  // The point of small objects: after the model's downscaling they cover less than one patch.
  if (static_cast<int64_t>(opt.small_max_permille) * opt.model_input_side >= static_cast<int64_t>(opt.patch_size) * 1000)
    throw InputError("--small-size", "small objects must stay below one " + std::to_string(opt.patch_size) +
                                               "-pixel patch at the model's input side");
  require_range("edge_margin_permille", opt.edge_margin_permille, 0, 200);
  if (opt.large_max_permille + 2 * opt.edge_margin_permille > 1000)
    throw InputError("--large-size", "a large object plus both edge margins exceeds the central square");
  for (auto [name, lo, hi] : {std::tuple{"small", opt.small_min_permille, opt.small_max_permille},
                              std::tuple{"large", opt.large_min_permille, opt.large_max_permille}})
    if (static_cast<int64_t>(opt.min_image_side) * (hi - lo) < 1000)
      throw InputError("--" + std::string(name) + "-size", "size range too narrow to hold a whole pixel at the smallest image side");
  require_range("object_gap_permille", opt.object_gap_permille, 0, 200);
  require_range("region_margin_permille", opt.region_margin_permille, 0, 100);
  require_range("relation_margin_permille", opt.relation_margin_permille, 0, 500);
  require_range("color_jitter", opt.color_jitter, 0, 40);
  require_range("--questions-per-image", opt.questions_per_image, 0, 20);
  require_range("--prompts-per-image", opt.prompts_per_image, 1, 20);
  require_range("--pope-per-image", opt.pope_per_image, 1, 12);
  require_range("--threads", opt.threads, 1, 256);
}

namespace {

std::string image_file_name(const Scene& s) { return s.id + ".png"; }

ojson bbox_json(const Object& o) { return ojson::array({o.x0, o.y0, o.x1, o.y1}); }
ojson rgb_json(const Rgb& c) { return ojson::array({c[0], c[1], c[2]}); }

ojson object_json(const Vocabulary& vocab, const Object& o) {
  ojson j;
  j["name"] = full_name(vocab, o);
  j["class"] = vocab.class_name(o.cls);
  j["shape"] = vocab.shapes[o.shape];
  j["color"] = vocab.colors[o.color];
  j["size"] = size_name(o.size);
  j["bbox"] = bbox_json(o);
  return j;
}

// JSON Lines: one compact value per line.
class Lines {
 public:
  void add(const ojson& j) {
    text_ += j.dump();
    text_ += '\n';
    ++count_;
  }
  const std::string& text() const { return text_; }
  int64_t count() const { return count_; }

 private:
  std::string text_;
  int64_t count_ = 0;
};

// Prints "label: done/total (rate/s, ETA)" at most every two seconds, and once at the end.
class Progress {
 public:
  Progress(std::ostream* out, std::string label, int64_t total)
      : out_(out), label_(std::move(label)), total_(total), start_(Clock::now()), last_(start_) {}
  void update(int64_t done, bool final_line = false) {
    if (!out_) return;
    const auto now = Clock::now();
    if (!final_line && now - last_ < std::chrono::seconds(2)) return;
    last_ = now;
    const double secs = std::chrono::duration<double>(now - start_).count();
    const double rate = secs > 0 ? static_cast<double>(done) / secs : 0.0;
    char line[200];
    if (final_line)
      std::snprintf(line, sizeof line, "%s: %lld/%lld in %.1f s (%.0f/s)", label_.c_str(), static_cast<long long>(done),
                    static_cast<long long>(total_), secs, rate);
    else
      std::snprintf(line, sizeof line, "%s: %lld/%lld (%.0f/s, ETA %.0f s)", label_.c_str(), static_cast<long long>(done),
                    static_cast<long long>(total_), rate, rate > 0 ? static_cast<double>(total_ - done) / rate : 0.0);
    *out_ << line << std::endl;
  }

 private:
  using Clock = std::chrono::steady_clock;
  std::ostream* out_;
  std::string label_;
  int64_t total_;
  Clock::time_point start_, last_;
};

// A file inside the staging directory: no temp file or fsync of its own, because nobody can see
// the directory before sync_staged_tree() and the rename that publishes it whole.
void write_staged_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw InputError(path, std::string("cannot open for writing: ") + std::strerror(errno));
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.flush();
  if (!out) throw InputError(path, "write failed (disk full?)");
}

// Flushes everything written under `dir` to disk (one syncfs instead of one fsync per image).
void sync_staged_tree(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) throw InputError(dir.string(), std::string("cannot open: ") + std::strerror(errno));
  const int rc = ::syncfs(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) throw InputError(dir.string(), std::string("syncing to disk failed: ") + std::strerror(err));
}

// Renders and writes every scene's PNG on `threads` workers; returns each scene's pixel hash.
std::vector<uint64_t> write_images(const std::vector<Scene>& scenes, const Vocabulary& vocab, const fs::path& root,
                                   int threads, std::ostream* progress) {
  std::vector<uint64_t> hashes(scenes.size(), 0);
  std::atomic<size_t> next{0}, done{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&]() {
    for (;;) {
      const size_t i = next.fetch_add(1);
      if (i >= scenes.size() || failed.load()) return;
      try {
        const image::ImageU8 img = render_scene(scenes[i], vocab);
        hashes[i] = pixel_hash(img);
        const std::string path = (root / image_rel_path(scenes[i])).string();
        write_staged_file(path, image::encode_png(img, path));
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        failed.store(true);
        return;
      }
      done.fetch_add(1);
    }
  };
  Progress bar(progress, "world make: images", static_cast<int64_t>(scenes.size()));
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) workers.emplace_back(work);
  while (done.load() < scenes.size() && !failed.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    bar.update(static_cast<int64_t>(done.load()));
  }
  for (auto& w : workers) w.join();
  if (error) std::rethrow_exception(error);
  bar.update(static_cast<int64_t>(done.load()), true);
  return hashes;
}

const std::vector<std::string>& description_questions() {
  static const std::vector<std::string> q = {kDescribeQuestion, kDescribeQuestion, "What is in the image?",
                                             "What do you see in the image?", "List the objects in the image."};
  return q;
}

// The image goes after the question in the first human turn: measured on the prototype, a small
// decoder matches the question against the image far sooner when it has read the question first.
std::string human_turn(const std::string& question) { return question + "\n<image>"; }

ojson conversation_json(const std::string& id, const Scene& s, const QA& qa) {
  ojson j;
  j["id"] = id;
  j["image"] = image_rel_path(s);
  j["type"] = qa.type;
  j["conversations"] = ojson::array({ojson{{"from", "human"}, {"value", human_turn(qa.question)}},
                                     ojson{{"from", "gpt"}, {"value", qa.answer}}});
  return j;
}

struct SceneStats {
  std::vector<int64_t> class_count, partner_present, objects_histogram;
  int64_t small = 0, large = 0, scenes = 0;
  explicit SceneStats(int classes, int max_objects)
      : class_count(classes, 0), partner_present(classes, 0), objects_histogram(max_objects + 1, 0) {}
  void add(const Scene& s, const Vocabulary& vocab) {
    ++scenes;
    ++objects_histogram[std::min(s.objects.size(), objects_histogram.size() - 1)];
    for (const auto& o : s.objects) {
      ++class_count[o.cls];
      (o.size == SizeClass::Small ? small : large) += 1;
      const int p = vocab.partner[o.cls];
      if (p >= 0 && s.find_class(p) >= 0) ++partner_present[o.cls];
    }
  }
  ojson to_json(const Vocabulary& vocab) const {
    ojson j;
    j["scenes"] = scenes;
    j["objects_per_scene"] = objects_histogram;
    j["small_objects"] = small;
    j["large_objects"] = large;
    ojson counts, rates;
    int64_t with_partner = 0, together = 0;
    for (int cls : vocab.by_popularity) {
      counts[vocab.class_name(cls)] = class_count[cls];
      if (vocab.partner[cls] >= 0 && class_count[cls] > 0) {
        rates[vocab.class_name(cls)] = static_cast<double>(partner_present[cls]) / static_cast<double>(class_count[cls]);
        with_partner += class_count[cls];
        together += partner_present[cls];
      }
    }
    j["class_counts"] = counts;
    j["partner_present_rate"] = rates;
    j["partner_present_rate_overall"] = with_partner > 0 ? static_cast<double>(together) / static_cast<double>(with_partner) : 0.0;
    return j;
  }
};

ojson pope_line(int64_t qid, const Scene& s, const Vocabulary& vocab, int cls, const char* source) {
  ojson j;
  j["question_id"] = qid;
  j["image"] = image_file_name(s);
  j["text"] = existence_question(vocab, cls);
  const int found = s.find_class(cls);
  j["label"] = found >= 0 ? "yes" : "no";
  j["object"] = vocab.class_name(cls);
  if (found >= 0) {
    const Object& o = s.objects[found];
    j["size"] = size_name(o.size);
    j["bbox"] = bbox_json(o);
    j["objects"] = ojson::array({object_json(vocab, o)});
  } else {
    j["negative_source"] = source;
    j["objects"] = ojson::array();
  }
  j["scene"] = s.id;
  return j;
}

// The `p2dpo world make` line that rebuilds this world (flags left at their defaults are omitted).
std::string reproducing_command(const WorldOptions& opt) {
  const WorldOptions d;
  std::string cmd = "p2dpo world make --out DIR --seed " + std::to_string(opt.seed) + " --train " +
                    std::to_string(opt.train_count) + " --prompts " + std::to_string(opt.prompt_count) + " --eval " +
                    std::to_string(opt.eval_count);
  const auto join = [](const std::vector<std::string>& v) {
    std::string out;
    for (const auto& x : v) out += (out.empty() ? "" : ",") + x;
    return out;
  };
  if (opt.shapes != d.shapes) cmd += " --shapes " + join(opt.shapes);
  if (opt.colors != d.colors) cmd += " --colors " + join(opt.colors);
  for (auto [flag, value, fallback] : {std::tuple{"--min-side", opt.min_image_side, d.min_image_side},
                                       std::tuple{"--max-side", opt.max_image_side, d.max_image_side},
                                       std::tuple{"--min-objects", opt.min_objects, d.min_objects},
                                       std::tuple{"--max-objects", opt.max_objects, d.max_objects},
                                       std::tuple{"--partner-percent", opt.partner_percent, d.partner_percent},
                                       std::tuple{"--questions-per-image", opt.questions_per_image, d.questions_per_image},
                                       std::tuple{"--prompts-per-image", opt.prompts_per_image, d.prompts_per_image},
                                       std::tuple{"--pope-per-image", opt.pope_per_image, d.pope_per_image}})
    if (value != fallback) cmd += std::string(" ") + flag + " " + std::to_string(value);
  return cmd;
}

ojson world_json(const WorldOptions& opt, const Vocabulary& vocab, const SceneStats& train_stats,
                 const SceneStats& eval_stats, const WorldSummary& summary) {
  ojson w;
  w["generator"] = "p2dpo world make";
  w["generator_version"] = kGeneratorVersion;
  w["seed"] = opt.seed;
  w["counts"] = {{"train", opt.train_count}, {"prompts", opt.prompt_count}, {"eval", opt.eval_count}};
  w["command"] = reproducing_command(opt);

  ojson model;
  model["input_side"] = opt.model_input_side;
  model["patch_size"] = opt.patch_size;
  model["image_tokens"] = (opt.model_input_side / opt.patch_size) * (opt.model_input_side / opt.patch_size);
  model["preprocessing"] =
      "HF CLIPImageProcessor: resize the shortest edge to input_side, centre crop input_side x input_side. Every object lies "
      "inside the image's central square, edge_margin_permille of its side inside, so the crop never cuts one away "
      "(no pad-to-square needed).";
  w["model_input"] = model;

  ojson img;
  img["format"] = "PNG, 8-bit RGB";
  img["min_side"] = opt.min_image_side;
  img["max_side"] = opt.max_image_side;
  img["square_percent"] = opt.square_percent;
  img["central_square"] = "side = min(width, height), origin ((width - side) / 2, (height - side) / 2) (integer division)";
  img["edge_margin_permille"] = opt.edge_margin_permille;
  img["object_gap_permille"] = opt.object_gap_permille;
  img["background"] =
      "linear gradient between two low-saturation mid-grey colours (horizontal, vertical, diagonal or antidiagonal) plus a "
      "mild luminance texture: none, value noise, triangle-wave stripes or a checkerboard, amplitude 2..6 grey levels";
  img["anti_aliasing"] = "4 x 4 samples per pixel; colour = (background * (16 - k) + object * k + 8) / 16 for k samples inside";
  img["color_jitter"] = opt.color_jitter;
  w["images"] = img;

  ojson voc;
  voc["shapes"] = vocab.shapes;
  ojson colors = ojson::array();
  for (size_t c = 0; c < vocab.colors.size(); ++c)
    colors.push_back(ojson{{"name", vocab.colors[c]}, {"rgb", rgb_json(vocab.color_rgb[c])}});
  voc["colors"] = colors;
  voc["sizes"] = {
      {"small", {{"min_permille", opt.small_min_permille}, {"max_permille", opt.small_max_permille}}},
      {"large", {{"min_permille", opt.large_min_permille}, {"max_permille", opt.large_max_permille}}}};
  voc["size_rule"] =
      "object side (square box; the shape touches all four sides) as per mille of the central square's side; small "
      "objects stay below one patch after resizing the short side to the model's input side";
  voc["small_percent"] = opt.small_percent;
  voc["objects_per_scene"] = {{"min", opt.min_objects}, {"max", opt.max_objects}};
  ojson classes = ojson::array();
  for (int cls : vocab.by_popularity) {
    ojson c;
    c["name"] = vocab.class_name(cls);
    c["shape"] = vocab.shapes[vocab.shape_of(cls)];
    c["color"] = vocab.colors[vocab.color_of(cls)];
    c["popularity_rank"] = vocab.popularity_rank[cls];
    c["base_weight"] = vocab.base_weight[cls];
    c["partner"] = vocab.partner[cls] >= 0 ? ojson(vocab.class_name(vocab.partner[cls])) : ojson(nullptr);
    classes.push_back(c);
  }
  voc["classes"] = classes;
  voc["class_rule"] = "a class is a colour + shape (\"red circle\"); each class occurs at most once per scene";
  w["vocabulary"] = voc;

  ojson priors;
  priors["popularity_decay_permille"] = opt.popularity_decay_permille;
  priors["partner_percent"] = opt.partner_percent;
  priors["eval_partner_percent"] = opt.eval_partner_percent;
  priors["rule"] =
      "Objects are drawn one by one among absent classes with weight base_weight (class at popularity rank r: 1e6 * "
      "decay^r). After each object, its partner class (symmetric; partners share the colour and differ in shape, look-alikes like a fork and a knife) is added next "
      "with probability partner_percent (train and prompts scenes) or eval_partner_percent (eval scenes), if absent and "
      "a slot is left. The priors depend on the vocabulary only, not on the seed.";
  w["priors"] = priors;

  ojson geo;
  geo["regions"] = kRegionNames;
  geo["region_phrases"] = kRegionPhrases;
  geo["region_rule"] =
      "3 x 3 grid over the central square; an object's position is the cell of its box centre; centres keep "
      "region_margin_permille of the side away from the grid lines";
  geo["region_margin_permille"] = opt.region_margin_permille;
  geo["relations"] = {"left of", "above"};
  geo["relation_rule"] =
      "subject 'left of' object when the object's box centre x exceeds the subject's by more than margin pixels; "
      "'above' likewise in y; margin = ceil(side * relation_margin_permille / 1000); 'right of' / 'below' are the same "
      "facts read the other way";
  geo["relation_margin_permille"] = opt.relation_margin_permille;
  w["geometry"] = geo;

  ojson text;
  text["human_turn"] = "{question}\n<image>";
  text["image_position"] = "after_question";
  text["spelling"] = "American English (color, center)";
  text["question_types"] = {
      {"description", "Describe the image. (also: What is in the image? / What do you see in the image? / List the objects in the image.)"},
      {"existence", "Is there a {color} {shape} in the image? -> Yes, there is a {size} {color} {shape} {position}. / No, I see {objects}, but no {color} {shape}. (also: in this image? / Do you see a ...?)"},
      {"existence_short", "Is there a {color} {shape} in the image?\nAnswer the question using a single word or phrase. -> Yes / No (LLaVA-1.5's POPE prompt)"},
      {"color", "What color is the {shape}? -> The {shape} is {color}."},
      {"shape", "What shape is the {color} object? -> The {color} object is a {shape}."},
      {"size", "Is the {color} {shape} small or large? -> The {color} {shape} is {size}."},
      {"where", "Where is the {color} {shape}? -> The {color} {shape} is {position}. / There is no {color} {shape} in the image."},
      {"count", "How many objects are in the image? -> There are {n} objects."},
      {"region", "What is {position} of the image? -> There is a {size} {color} {shape} {position}. / There is nothing {position}."},
      {"relation", "What is to the left of the {color} {shape}? -> The {size} {color} {shape} is to the left of the {color} {shape}."},
      {"relation_yesno", "Is the {color} {shape} to the left of the {color} {shape}? -> Yes, ... / No, the ... is to the right of ..."}};
  text["training_mix"] =
      "per train image: one description conversation plus questions_per_image distinct question conversations "
      "(existence 42 %, existence_short 8, color 8, shape 6, size 5, where 8, count 4, region 8, relation 6, "
      "relation_yesno 5); existence questions are balanced yes/no and their negatives are partners, popular and random "
      "classes in equal parts";
  text["questions_per_image"] = opt.questions_per_image;
  text["prompts_per_image"] = opt.prompts_per_image;
  text["prompt_mix"] = "description 30 %, region 20, color 20, where 10, relation 20 (open-ended; never yes/no)";
  w["text"] = text;

  ojson pope;
  pope["per_image"] = opt.pope_per_image;
  pope["template"] = "Is there {a|an} {color} {shape} in the image?";
  pope["object"] = "POPE asks about classes (colour + shape, any size); positives carry the present object's size and bbox";
  pope["splits"] = {
      {"random", "negatives drawn uniformly among the classes absent from the image"},
      {"popular", "the most popular absent classes (vocabulary.classes popularity_rank)"},
      {"adversarial",
       "absent partners of the present objects first (most popular first), then the most popular absent classes"}};
  pope["balance"] = "per image k = min(per_image, objects) positives and k negatives; lines alternate yes, no";
  w["pope"] = pope;

  ojson files;
  files["scenes.jsonl"] = "one scene per line, all splits: id, split, image, width, height, central_square, background, "
                          "objects (name, class, shape, color, size, bbox [x0,y0,x1,y1) in pixels, position, rgb), "
                          "relations (subject, relation, object: indices into objects), pixel_fnv1a64 (of the RGB bytes)";
  files["images/{split}/{id}.png"] = "the rendered scenes";
  files["train/conversations.json"] = "LLaVA conversation list: id, image (relative to this directory), type, conversations";
  files["train/captions.jsonl"] = "id, image, caption (for the CLIP)";
  files["text/corpus.txt"] = "every training question, answer and caption, one per line (for the tokenizer)";
  files["prompts/pairs.jsonl"] = "id, image, question: open-ended pair-generation prompts, no answers";
  files["prompts/pairs_truth.jsonl"] = "id, image, question, type, answer, objects, region (region questions): the truth "
                                       "for analysis; the pair generator must not read it";
  files["eval/pope/world_pope_{random,popular,adversarial}.json"] =
      "POPE format, one object per line: question_id, image (relative to images/eval/), text, label, plus object, size, "
      "bbox, objects (positives), negative_source (negatives), scene";
  files["eval/descriptions.jsonl"] = "question_id, image (relative to images/eval/), text, objects (class names present), "
                                     "object_details, scene: CHAIR-style scoring";
  files["eval/afr.jsonl"] = "question_id, image (relative to images/eval/), text, answer_object, label, size, bbox, scene: "
                            "one positive existence question per eval object, for AFR / P-Acc";
  w["files"] = files;

  w["statistics"] = {{"train", train_stats.to_json(vocab)}, {"eval", eval_stats.to_json(vocab)},
                     {"conversations", summary.conversations},
                     {"prompts", summary.prompts},
                     {"pope_questions_per_split", summary.pope_questions_per_split}};
  return w;
}

bool directory_is_empty(const fs::path& p) { return fs::directory_iterator(p) == fs::directory_iterator(); }

// Checks out_dir before any work, so a mistake costs nothing.
fs::path checked_out_dir(const WorldOptions& opt) {
  fs::path out = fs::path(opt.out_dir).lexically_normal();
  if (!out.has_filename()) out = out.parent_path();  // "dir/" -> "dir"
  if (out.empty() || out.filename() == "." || out.filename() == "..")
    throw InputError("--out", "'" + opt.out_dir + "' does not name a directory to create (the world is built beside it, then renamed)");
  std::error_code ec;
  if (fs::exists(out, ec)) {
    if (!fs::is_directory(out, ec)) throw InputError("--out", out.string() + " exists and is not a directory");
    if (!directory_is_empty(out)) {
      if (!opt.overwrite)
        throw InputError("--out", out.string() + " exists and is not empty (pass --overwrite to replace a previous world)");
      if (!fs::exists(out / "world.json"))
        throw InputError("--out", "refusing to replace " + out.string() + ": it is not a world (no world.json)");
    }
  }
  return out;
}

void commit_out_dir(const fs::path& staging, const fs::path& out) {
  std::error_code ec;
  fs::path replaced;
  if (fs::exists(out, ec)) {
    if (directory_is_empty(out)) {
      fs::remove(out, ec);
    } else {
      replaced = out.string() + ".replaced-" + std::to_string(::getpid());
      fs::rename(out, replaced, ec);
      if (ec) throw InputError("--out", "cannot move the previous world aside: " + ec.message());
    }
  }
  fs::rename(staging, out, ec);
  if (ec) throw InputError("--out", "cannot rename " + staging.string() + " into place: " + ec.message());
  if (!replaced.empty()) fs::remove_all(replaced, ec);
}

}  // namespace

WorldSummary make_world(const WorldOptions& opt, std::ostream* progress) {
  const auto start = std::chrono::steady_clock::now();
  validate_world_options(opt);
  const Vocabulary vocab = build_vocabulary(opt.shapes, opt.colors, opt.popularity_decay_permille);
  const fs::path out = checked_out_dir(opt);
  const fs::path staging = out.string() + ".partial-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(staging, ec);
  fs::create_directories(staging, ec);
  if (ec) throw InputError("--out", "cannot create " + staging.string() + ": " + ec.message());

  WorldSummary summary;
  summary.out_dir = out.string();
  try {
    std::vector<Scene> scenes;
    scenes.reserve(static_cast<size_t>(opt.train_count + opt.prompt_count + opt.eval_count));
    for (auto [split, count] : {std::pair{Split::Train, opt.train_count}, std::pair{Split::Prompts, opt.prompt_count},
                                std::pair{Split::Eval, opt.eval_count}})
      for (int64_t i = 0; i < count; ++i) scenes.push_back(sample_scene(opt, vocab, split, i));
    for (const char* split : {"train", "prompts", "eval"}) fs::create_directories(staging / "images" / split);
    const std::vector<uint64_t> hashes = write_images(scenes, vocab, staging, opt.threads, progress);
    summary.images = static_cast<int64_t>(scenes.size());

    Lines scene_lines, captions, pairs, pairs_truth, descriptions, afr;
    Lines pope_random, pope_popular, pope_adversarial;
    std::string corpus;
    std::vector<std::string> conversations;
    SceneStats train_stats(vocab.num_classes(), opt.max_objects), eval_stats(vocab.num_classes(), opt.max_objects);
    int64_t afr_id = 0, description_id = 0;

    for (size_t i = 0; i < scenes.size(); ++i) {
      const Scene& s = scenes[i];
      scene_lines.add(scene_to_json(s, vocab, hashes[i]));
      Rng text_rng(derive_seed(opt.seed, 0x54455854ULL /* "TEXT" */, static_cast<uint64_t>(s.split), static_cast<uint64_t>(s.index)));
      if (s.split == Split::Train) {
        train_stats.add(s, vocab);
        std::vector<QA> qas = {description_qa(s, vocab, text_rng.pick(description_questions()))};
        for (auto& qa : training_questions(s, vocab, opt.questions_per_image, text_rng)) qas.push_back(std::move(qa));
        for (size_t k = 0; k < qas.size(); ++k) {
          conversations.push_back(conversation_json(s.id + "-" + std::to_string(k), s, qas[k]).dump());
          corpus += qas[k].question + "\n" + qas[k].answer + "\n";
        }
        const std::string caption = caption_scene(s, vocab);
        captions.add(ojson{{"id", s.id}, {"image", image_rel_path(s)}, {"caption", caption}});
        corpus += caption + "\n";
      } else if (s.split == Split::Prompts) {
        const auto prompts = open_prompts(s, vocab, opt.prompts_per_image, text_rng);
        for (size_t k = 0; k < prompts.size(); ++k) {
          const QA& qa = prompts[k];
          const std::string id = s.id + "-" + std::to_string(k);
          pairs.add(ojson{{"id", id}, {"image", image_rel_path(s)}, {"question", qa.question}});
          ojson truth{{"id", id}, {"image", image_rel_path(s)}, {"question", qa.question}, {"type", qa.type},
                      {"answer", qa.answer}};
          ojson objs = ojson::array();
          for (int o : qa.objects) objs.push_back(object_json(vocab, s.objects[o]));
          truth["objects"] = objs;
          if (qa.asked_class >= 0) truth["asked_class"] = vocab.class_name(qa.asked_class);
          if (qa.region >= 0) {
            const auto box = region_box(s, qa.region);
            truth["region"] = ojson::array({box[0], box[1], box[2], box[3]});
          }
          truth["scene"] = s.id;
          pairs_truth.add(truth);
        }
      } else {
        eval_stats.add(s, vocab);
        Rng pope_rng(derive_seed(opt.seed, 0x504f5045ULL /* "POPE" */, static_cast<uint64_t>(s.split), static_cast<uint64_t>(s.index)));
        const PopeSample pope = sample_pope(s, vocab, opt.pope_per_image, pope_rng);
        for (auto [lines, negatives, source] :
             {std::tuple{&pope_random, &pope.random, "random"}, std::tuple{&pope_popular, &pope.popular, "popular"},
              std::tuple{&pope_adversarial, &pope.adversarial, "adversarial"}}) {
          for (size_t k = 0; k < pope.positives.size(); ++k) {
            lines->add(pope_line(lines->count() + 1, s, vocab, s.objects[pope.positives[k]].cls, source));
            if (k < negatives->size()) {
              const int cls = (*negatives)[k];
              const bool partner = std::any_of(s.objects.begin(), s.objects.end(),
                                               [&](const Object& o) { return vocab.partner[o.cls] == cls; });
              lines->add(pope_line(lines->count() + 1, s, vocab, cls,
                                   std::string(source) == "adversarial" ? (partner ? "partner" : "popular") : source));
            }
          }
        }
        ojson names = ojson::array(), details = ojson::array();
        for (const auto& o : s.objects) {
          names.push_back(vocab.class_name(o.cls));
          details.push_back(object_json(vocab, o));
        }
        descriptions.add(ojson{{"question_id", ++description_id}, {"image", image_file_name(s)}, {"text", kDescribeQuestion},
                               {"objects", names}, {"object_details", details}, {"scene", s.id}});
        for (const auto& o : s.objects) {
          afr.add(ojson{{"question_id", ++afr_id}, {"image", image_file_name(s)}, {"text", existence_question(vocab, o.cls)},
                        {"answer_object", vocab.class_name(o.cls)}, {"label", "yes"}, {"size", size_name(o.size)},
                        {"bbox", bbox_json(o)}, {"scene", s.id}});
        }
      }
    }

    std::string conv_text = "[\n";
    for (size_t k = 0; k < conversations.size(); ++k) conv_text += conversations[k] + (k + 1 < conversations.size() ? ",\n" : "\n");
    conv_text += "]\n";
    summary.conversations = static_cast<int64_t>(conversations.size());
    summary.prompts = pairs.count();
    summary.pope_questions_per_split = pope_random.count();

    const auto write = [&](const std::string& rel, const std::string& content) {
      fs::create_directories((staging / rel).parent_path());
      write_staged_file((staging / rel).string(), content);
    };
    write("scenes.jsonl", scene_lines.text());
    write("train/conversations.json", conv_text);
    write("train/captions.jsonl", captions.text());
    write("text/corpus.txt", corpus);
    write("prompts/pairs.jsonl", pairs.text());
    write("prompts/pairs_truth.jsonl", pairs_truth.text());
    write("eval/pope/world_pope_random.json", pope_random.text());
    write("eval/pope/world_pope_popular.json", pope_popular.text());
    write("eval/pope/world_pope_adversarial.json", pope_adversarial.text());
    write("eval/descriptions.jsonl", descriptions.text());
    write("eval/afr.jsonl", afr.text());
    write("world.json", world_json(opt, vocab, train_stats, eval_stats, summary).dump(2) + "\n");
    sync_staged_tree(staging);
    commit_out_dir(staging, out);
  } catch (...) {
    fs::remove_all(staging, ec);
    throw;
  }
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (progress)
    *progress << "world make: wrote " << summary.images << " images, " << summary.conversations << " conversations, "
              << summary.prompts << " prompts, " << summary.pope_questions_per_split << " POPE questions per split to "
              << summary.out_dir << std::endl;
  return summary;
}

}  // namespace p2dpo::world
