#include "world/clip_train.h"

#include <torch/nn/functional/loss.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>
#include <torch/serialize.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <random>

#include "image/clip_processor.h"
#include "image/decode.h"
#include "io/atomic_file.h"
#include "io/errors.h"
#include "io/json_io.h"
#include "models/clip.h"
#include "models/weights.h"
#include "text/clip_tokenizer.h"
#include "world/bpe_train.h"

namespace p2dpo::world {
namespace fs = std::filesystem;

namespace {

constexpr const char* kCheckpointDir = "checkpoint-last";

// What a text claims, to decide which images of a batch it is true of (its positives).
struct TextInfo {
  std::string text;
  std::string contains;              // true of images whose content holds this entry, or, when empty,
  std::vector<std::string> content;  // of images whose content equals this (a whole-scene caption)
  std::vector<int64_t> ids;          // bos + tokens + eos
};

struct Pair {
  int64_t image = 0;      // index into Data::images
  int64_t text = 0;       // index into Data::texts
  int64_t negative = -1;  // a hard-negative text (index into Data::texts), or -1
};

struct Data {
  std::vector<image::ImageU8> images;               // after resize + centre crop (S x S uint8)
  std::vector<std::vector<std::string>> contents;   // per image: sorted object names (or caption keys)
  std::vector<TextInfo> texts;
  std::vector<Pair> pairs;
  // Dense auxiliary labels per image (G*G class indices, 0 = background, -100 = ignored), empty
  // for views without them (crops, worlds without scenes.jsonl, dense_aux_weight 0).
  std::vector<std::vector<int64_t>> patch_labels;
  std::vector<std::string> dense_classes;  // class k + 1 is dense_classes[k]
  std::vector<std::string> bpe_texts;  // every text plus corpus.txt, for the BPE vocabulary
  int64_t num_captions = 0, num_questions = 0, num_crops = 0, num_negatives = 0;

  bool true_of(const TextInfo& t, int64_t image) const {
    const auto& c = contents[static_cast<size_t>(image)];
    if (!t.contains.empty()) return std::binary_search(c.begin(), c.end(), t.contains);
    return c == t.content;
  }
};

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// The order of pair indices in `epoch`: a Fisher-Yates shuffle driven by mt19937_64 directly
// (std::shuffle's use of the engine differs between standard libraries).
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  std::mt19937_64 rng(splitmix64(seed ^ splitmix64(0xC11Full + static_cast<uint64_t>(epoch))));
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  return order;
}

// The pair indices of `step`'s batch: a flat stream of epochs, so the batch depends on the step only
// (which is what makes a resume continue exactly).
class Sampler {
 public:
  Sampler(int64_t n, int64_t batch, uint64_t seed) : n_(n), batch_(batch), seed_(seed) {}
  std::vector<int64_t> batch_at(int64_t step) {
    std::vector<int64_t> out;
    for (int64_t j = 0; j < batch_; ++j) {
      const int64_t g = step * batch_ + j;
      const int64_t epoch = g / n_;
      if (epoch != cached_epoch_) {
        order_ = epoch_order(n_, seed_, epoch);
        cached_epoch_ = epoch;
      }
      out.push_back(order_[static_cast<size_t>(g % n_)]);
    }
    return out;
  }

 private:
  int64_t n_, batch_;
  uint64_t seed_;
  int64_t cached_epoch_ = -1;
  std::vector<int64_t> order_;
};

double lr_at(int64_t step, const ClipTrainOptions& o) {
  const int64_t warmup = o.warmup_steps >= 0 ? o.warmup_steps : std::max<int64_t>(1, o.steps / 20);
  if (step < warmup) return o.lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const double progress =
      static_cast<double>(step - warmup) / static_cast<double>(std::max<int64_t>(1, o.steps - warmup));
  return o.lr * 0.5 * (1.0 + std::cos(M_PI * std::min(1.0, progress)));
}

std::string format_duration(double seconds) {
  const auto s = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  }
  return buf;
}

void validate(const ClipTrainOptions& o) {
  if (o.world_dir.empty()) throw InputError("--world", "required");
  if (o.out_dir.empty()) throw InputError("--out", "required");
  if (o.steps < 1) throw InputError("--steps", "must be >= 1");
  if (o.batch < 2) throw InputError("--batch", "must be >= 2 (a contrastive batch needs negatives)");
  if (!(o.lr > 0)) throw InputError("--lr", "must be > 0");
  if (o.image_size % o.patch_size != 0) throw InputError("--image-size", "must be a multiple of the patch size");
  if (o.vision_width % o.vision_heads != 0 || o.text_width % o.text_heads != 0) {
    throw InputError("--heads", "the widths must be multiples of the head counts");
  }
  if (o.text_positions < 8) throw InputError("--text-positions", "must be >= 8");
  if (o.checkpoint_every < 1 || o.log_every < 1) throw InputError("--checkpoint-every", "must be >= 1");
}

struct SceneObject {
  std::string name;
  std::string cls;  // colour + shape ("red star"): the object's "class", or its name
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};

// scenes.jsonl's objects by image path (empty when the world has no scenes.jsonl).
std::map<std::string, std::vector<SceneObject>> read_scene_objects(const std::string& world_dir) {
  std::map<std::string, std::vector<SceneObject>> out;
  const std::string path = (fs::path(world_dir) / "scenes.jsonl").string();
  if (!fs::exists(path)) return out;
  const auto rows = io::read_jsonl_file(path);
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::string ctx = "line " + std::to_string(i + 1);
    std::vector<SceneObject> objects;
    for (const auto& obj : io::get_required<nlohmann::json>(rows[i], "objects", path, ctx)) {
      SceneObject so;
      so.name = io::get_required<std::string>(obj, "name", path, ctx + ".objects");
      so.cls = obj.contains("class") ? io::get_required<std::string>(obj, "class", path, ctx + ".objects") : so.name;
      const auto bb = io::get_required<std::vector<int>>(obj, "bbox", path, ctx + ".objects");
      if (bb.size() != 4) throw InputError(path, "field '" + ctx + ".objects.bbox': expected 4 numbers");
      so.x0 = bb[0];
      so.y0 = bb[1];
      so.x1 = bb[2];
      so.y1 = bb[3];
      objects.push_back(so);
    }
    out[io::get_required<std::string>(rows[i], "image", path, ctx)] = std::move(objects);
  }
  return out;
}

image::ImageU8 crop_image(const image::ImageU8& img, int x0, int y0, int side) {
  image::ImageU8 out(side, side);
  for (int y = 0; y < side; ++y) std::copy(img.at(x0, y0 + y), img.at(x0, y0 + y) + 3 * side, out.at(0, y));
  return out;
}

// "large red star" -> {"large red", "star"}: the world's object names end with the shape.
std::pair<std::string, std::string> split_shape(const std::string& name) {
  const auto space = name.rfind(' ');
  if (space == std::string::npos) return {"", name};
  return {name.substr(0, space), name.substr(space + 1)};
}

// Gives every pair whose text names an object of its image a hard negative (NegCLIP): the text
// with that object's shape swapped for another shape, colour and size kept, such that the new object
// is absent from the image. Which object and which shape come from a hash of the seed and the pair
// index, so the data is the same on every run. The negative is a text like the others: true of the
// batch images that do hold the swapped object (or, for a whole-scene caption, whose content is the
// swapped content), false of its own image.
void add_hard_negatives(Data& d, uint64_t seed, const std::function<int64_t(const std::string&, const std::string&,
                                                                          const std::vector<std::string>&)>& text_id) {
  std::vector<std::string> shapes;
  for (const auto& content : d.contents) {
    for (const auto& name : content) shapes.push_back(split_shape(name).second);
  }
  std::sort(shapes.begin(), shapes.end());
  shapes.erase(std::unique(shapes.begin(), shapes.end()), shapes.end());
  if (shapes.size() < 2) return;
  for (size_t p = 0; p < d.pairs.size(); ++p) {
    Pair& pair = d.pairs[p];
    const TextInfo text = d.texts[static_cast<size_t>(pair.text)];  // a copy: text_id may grow d.texts
    const auto& content = d.contents[static_cast<size_t>(pair.image)];
    // The objects this text names: the one it is about, or every object of a whole-scene caption.
    std::vector<std::string> named;
    if (!text.contains.empty()) {
      named.push_back(text.contains);
    } else if (text.content == content) {
      named = content;
    }
    if (named.empty()) continue;
    uint64_t h = splitmix64(seed ^ splitmix64(0x4E6Aull + p));
    const std::string target = named[h % named.size()];
    if (text.text.find(target) == std::string::npos) continue;
    const auto [prefix, shape] = split_shape(target);
    std::vector<std::string> options;
    for (const auto& other : shapes) {
      const std::string swapped = prefix.empty() ? other : prefix + " " + other;
      if (other != shape && !std::binary_search(content.begin(), content.end(), swapped)) options.push_back(swapped);
    }
    if (options.empty()) continue;
    const std::string swapped = options[(h >> 32) % options.size()];
    std::string negative = text.text;
    negative.replace(negative.find(target), target.size(), swapped);
    if (!text.contains.empty()) {
      pair.negative = text_id(negative, swapped, {});
    } else {
      std::vector<std::string> swapped_content = content;
      *std::find(swapped_content.begin(), swapped_content.end(), target) = swapped;
      std::sort(swapped_content.begin(), swapped_content.end());
      pair.negative = text_id(negative, "", swapped_content);
    }
    ++d.num_negatives;
  }
}

// Reads captions.jsonl, decodes and preprocesses each distinct image once, and (with
// opts.augment and a scenes.jsonl) adds per scene one existence question about a present object
// and one object-centred crop paired with "a {name}".
Data load_data(const ClipTrainOptions& o, const image::ClipProcessorConfig& proc) {
  const std::string captions_path = (fs::path(o.world_dir) / "train" / "captions.jsonl").string();
  if (!fs::exists(captions_path)) throw InputError(captions_path, "file not found (run `p2dpo world make` first)");
  const auto rows = io::read_jsonl_file(captions_path);
  if (rows.empty()) throw InputError(captions_path, "no captions");
  const auto scene_objects = o.augment ? read_scene_objects(o.world_dir) : decltype(read_scene_objects("")){};
  Data d;
  std::map<std::string, int64_t> image_index, text_index;
  std::vector<std::string> image_paths;
  std::vector<std::vector<std::string>> captions_of;  // per image, for worlds without scenes.jsonl
  auto text_id = [&](const std::string& text, const std::string& contains, const std::vector<std::string>& content) {
    auto [it, fresh] = text_index.emplace(text, static_cast<int64_t>(d.texts.size()));
    if (fresh) d.texts.push_back({text, contains, content, {}});
    return it->second;
  };
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::string ctx = "line " + std::to_string(i + 1);
    const auto image = io::get_required<std::string>(rows[i], "image", captions_path, ctx);
    const auto caption = io::get_required<std::string>(rows[i], "caption", captions_path, ctx);
    if (caption.empty()) throw InputError(captions_path, "field '" + ctx + ".caption': empty");
    auto [it, fresh] = image_index.emplace(image, static_cast<int64_t>(image_paths.size()));
    if (fresh) {
      image_paths.push_back(image);
      captions_of.emplace_back();
    }
    captions_of[static_cast<size_t>(it->second)].push_back("caption:" + caption);
    d.pairs.push_back({it->second, -1});
  }
  // Image contents: the scene's object names, or else its own captions.
  for (size_t i = 0; i < image_paths.size(); ++i) {
    std::vector<std::string> content;
    const auto so = scene_objects.find(image_paths[i]);
    if (so != scene_objects.end()) {
      for (const auto& obj : so->second) content.push_back(obj.name);
    } else {
      content = captions_of[i];
    }
    std::sort(content.begin(), content.end());
    d.contents.push_back(std::move(content));
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::string caption = rows[i]["caption"].get<std::string>();
    const int64_t image = d.pairs[i].image;
    const bool has_scene = scene_objects.count(image_paths[static_cast<size_t>(image)]) > 0;
    d.pairs[i].text = text_id(caption, has_scene ? "" : "caption:" + caption, d.contents[static_cast<size_t>(image)]);
  }
  d.num_captions = static_cast<int64_t>(d.pairs.size());

  const auto t0 = std::chrono::steady_clock::now();
  const int crop_base = static_cast<int>(o.image_size);
  d.images.resize(image_paths.size());  // image i is images[i]; crops go after them
  d.patch_labels.resize(image_paths.size());
  if (o.dense_aux_weight > 0) {
    for (const auto& [path, objects] : scene_objects) {
      for (const auto& obj : objects) d.dense_classes.push_back(obj.cls);
    }
    std::sort(d.dense_classes.begin(), d.dense_classes.end());
    d.dense_classes.erase(std::unique(d.dense_classes.begin(), d.dense_classes.end()), d.dense_classes.end());
    if (d.dense_classes.empty()) {
      throw InputError("--dense-aux-weight", "needs the world's scenes.jsonl with objects (" + o.world_dir + ")");
    }
  }
  for (size_t i = 0; i < image_paths.size(); ++i) {
    const std::string path = (fs::path(o.world_dir) / image_paths[i]).string();
    const auto decoded = image::decode_image_file(path);
    d.images[i] = image::preprocess_clip(decoded, proc, path).view;
    const auto so = scene_objects.find(image_paths[i]);
    if (so != scene_objects.end() && !d.dense_classes.empty()) {
      std::vector<DenseLabelObject> boxes;
      for (const auto& obj : so->second) boxes.push_back({obj.cls, obj.x0, obj.y0, obj.x1, obj.y1});
      d.patch_labels[i] = dense_patch_labels(boxes, decoded.width, decoded.height, o.image_size, o.patch_size,
                                             d.dense_classes);
    }
    if (so != scene_objects.end() && !so->second.empty()) {
      const auto& objects = so->second;
      const uint64_t h = splitmix64(o.seed ^ splitmix64(0x5CE4Eull + i));
      // An existence question about one present object, on the whole image.
      const auto& asked = objects[h % objects.size()];
      d.pairs.push_back({static_cast<int64_t>(i), text_id("Is there a " + asked.name + " in the image?", asked.name, {})});
      ++d.num_questions;
      // A crop centred on another object (side 1-1.5x the model input side in original pixels, or
      // 1.5x the object), paired with the object's name; true of whatever lies wholly inside it.
      const auto& target = objects[(h >> 20) % objects.size()];
      const int obj_side = std::max(target.x1 - target.x0, target.y1 - target.y0);
      const int side = std::min({std::max(crop_base + crop_base * static_cast<int>((h >> 40) % 3) / 4, obj_side * 3 / 2),
                                 decoded.width, decoded.height});
      const int x0 = std::clamp((target.x0 + target.x1) / 2 - side / 2, 0, decoded.width - side);
      const int y0 = std::clamp((target.y0 + target.y1) / 2 - side / 2, 0, decoded.height - side);
      std::vector<std::string> inside;
      for (const auto& obj : objects) {
        if (obj.x0 >= x0 && obj.y0 >= y0 && obj.x1 <= x0 + side && obj.y1 <= y0 + side) inside.push_back(obj.name);
      }
      std::sort(inside.begin(), inside.end());
      if (std::binary_search(inside.begin(), inside.end(), target.name)) {
        d.images.push_back(image::preprocess_clip(crop_image(decoded, x0, y0, side), proc, path).view);
        d.patch_labels.emplace_back();
        d.contents.push_back(std::move(inside));
        d.pairs.push_back({static_cast<int64_t>(d.images.size()) - 1, text_id("a " + target.name, target.name, {})});
        ++d.num_crops;
      }
    }
    if (!o.quiet && ((i + 1) % 500 == 0 || i + 1 == image_paths.size())) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(stderr, "train-clip: preprocessed %zu/%zu images (%.0f/s)\n", i + 1, image_paths.size(),
                   static_cast<double>(i + 1) / std::max(s, 1e-9));
    }
  }
  if (o.hard_negatives && !scene_objects.empty()) add_hard_negatives(d, o.seed, text_id);
  for (const auto& t : d.texts) d.bpe_texts.push_back(t.text);
  const fs::path corpus = fs::path(o.world_dir) / "text" / "corpus.txt";
  if (fs::exists(corpus)) {
    std::string all = io::read_file(corpus.string());
    size_t start = 0;
    while (start < all.size()) {
      size_t end = all.find('\n', start);
      if (end == std::string::npos) end = all.size();
      if (end > start) d.bpe_texts.push_back(all.substr(start, end - start));
      start = end + 1;
    }
  }
  return d;
}

struct Batch {
  torch::Tensor pixels;     // [B, 3, S, S]
  torch::Tensor ids, mask;  // [B, L]
  // Soft targets, rows summing to 1: text r -> the batch images it is true of, and image c -> the
  // batch texts true of it.
  torch::Tensor text_targets, image_targets;  // [B, B] and [B, B + K]
  // K hard-negative texts follow the B texts in ids/mask; they only take part in the image->text
  // loss (image_targets' last K columns), as extra texts each image must rank below its own.
  int64_t num_negatives = 0;
  torch::Tensor patch_labels;  // [B, G*G] int64 (-100 = ignored); undefined without dense labels
};

Batch make_batch(const Data& d, const std::vector<int64_t>& idx, const image::ClipProcessorConfig& proc,
                 int64_t side, int64_t patch, int64_t pad_id) {
  const auto B = static_cast<int64_t>(idx.size());
  Batch b;
  if (!d.dense_classes.empty()) {
    const int64_t cells = (side / patch) * (side / patch);
    b.patch_labels = torch::full({B, cells}, int64_t{-100}, torch::kLong);
    for (int64_t r = 0; r < B; ++r) {
      const auto& labels = d.patch_labels[static_cast<size_t>(d.pairs[static_cast<size_t>(idx[static_cast<size_t>(r)])].image)];
      if (!labels.empty()) std::copy(labels.begin(), labels.end(), b.patch_labels[r].data_ptr<int64_t>());
    }
  }
  b.pixels = torch::empty({B, 3, side, side}, torch::kFloat32);
  // Texts: the batch's own, then its hard negatives.
  std::vector<int64_t> text_of;
  for (int64_t i : idx) text_of.push_back(d.pairs[static_cast<size_t>(i)].text);
  for (int64_t i : idx) {
    if (d.pairs[static_cast<size_t>(i)].negative >= 0) text_of.push_back(d.pairs[static_cast<size_t>(i)].negative);
  }
  const auto T = static_cast<int64_t>(text_of.size());
  b.num_negatives = T - B;
  size_t longest = 0;
  for (int64_t t : text_of) longest = std::max(longest, d.texts[static_cast<size_t>(t)].ids.size());
  const auto L = static_cast<int64_t>(longest);
  b.ids = torch::full({T, L}, pad_id, torch::kLong);
  b.mask = torch::zeros({T, L}, torch::kLong);
  auto truth = torch::zeros({T, B}, torch::kFloat32);  // [text r, image c]
  auto ids = b.ids.accessor<int64_t, 2>();
  auto mask = b.mask.accessor<int64_t, 2>();
  auto tgt = truth.accessor<float, 2>();
  for (int64_t r = 0; r < B; ++r) {
    const Pair& p = d.pairs[static_cast<size_t>(idx[static_cast<size_t>(r)])];
    image::normalize_to_chw(d.images[static_cast<size_t>(p.image)], proc, b.pixels[r].data_ptr<float>());
  }
  for (int64_t r = 0; r < T; ++r) {
    const TextInfo& text = d.texts[static_cast<size_t>(text_of[static_cast<size_t>(r)])];
    for (size_t t = 0; t < text.ids.size(); ++t) {
      ids[r][static_cast<int64_t>(t)] = text.ids[t];
      mask[r][static_cast<int64_t>(t)] = 1;
    }
    const int64_t own_image = r < B ? d.pairs[static_cast<size_t>(idx[static_cast<size_t>(r)])].image : -1;
    for (int64_t c = 0; c < B; ++c) {
      const Pair& q = d.pairs[static_cast<size_t>(idx[static_cast<size_t>(c)])];
      if (c == r || q.image == own_image || d.true_of(text, q.image)) tgt[r][c] = 1.0f;
    }
  }
  const auto own = truth.narrow(0, 0, B);
  b.text_targets = own / own.sum(1, true);
  const auto t = truth.t();
  b.image_targets = t / t.sum(1, true);
  return b;
}

struct StepStats {
  torch::Tensor loss;
  double acc_t2i = 0, acc_i2t = 0;
  double dense_loss = 0, dense_acc = 0;  // when the batch has dense labels
  double dense_object_acc = 0;           // accuracy on the patches labelled with an object
};

// The dense auxiliary head (ClipTrainOptions::dense_aux_weight): logits = h W^T + b over the
// patch tokens of one hidden state. Zero-initialised (deterministic, and a linear probe needs no
// symmetry breaking).
struct DenseHead {
  torch::Tensor weight, bias;  // [K, D], [K]
  int layer = -2;
  double weight_in_loss = 0;
  bool defined() const { return weight.defined(); }
};

// Symmetric InfoNCE (HF clip_loss) with soft targets over the batch's positives, plus the dense
// auxiliary cross-entropy when `head` is defined.
StepStats contrastive_step(const models::ClipModel& model, const Batch& b, const DenseHead& head) {
  std::vector<torch::Tensor> hidden;
  const bool dense = head.defined() && b.patch_labels.defined();
  auto img = model.image_features(b.pixels, dense ? &hidden : nullptr);
  auto txt = model.text_features(b.ids, b.mask);
  img = img / img.pow(2).sum(-1, true).sqrt();
  txt = txt / txt.pow(2).sum(-1, true).sqrt();
  auto logits_all = torch::matmul(txt, img.t()) * model.logit_scale_tensor().exp();  // [B + K, B]
  const int64_t B = logits_all.size(1);
  auto logits_per_text = logits_all.narrow(0, 0, B);
  auto loss_t = -(b.text_targets * torch::log_softmax(logits_per_text, 1)).sum(1).mean();
  auto loss_i = -(b.image_targets * torch::log_softmax(logits_all.t(), 1)).sum(1).mean();
  StepStats s;
  s.loss = (loss_t + loss_i) / 2.0;
  if (dense) {
    const auto n = static_cast<int64_t>(hidden.size());
    const auto& h = hidden[static_cast<size_t>(head.layer < 0 ? n + head.layer : head.layer)];
    auto logits = torch::linear(h.narrow(1, 1, h.size(1) - 1), head.weight, head.bias);  // [B, G*G, K]
    logits = logits.reshape({-1, logits.size(-1)});
    const auto labels = b.patch_labels.reshape({-1});
    const auto labelled = labels.ne(-100);
    if (labelled.any().item<bool>()) {
      auto ce = torch::nn::functional::cross_entropy(
          logits, labels, torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100));
      s.loss = s.loss + head.weight_in_loss * ce;
      torch::NoGradGuard ng;
      s.dense_loss = ce.item<double>();
      const auto hit = logits.argmax(1).eq(labels).logical_and(labelled);
      s.dense_acc = hit.sum().item<double>() / labelled.sum().item<double>();
      const auto object = labels.gt(0);
      s.dense_object_acc = hit.logical_and(object).sum().item<double>() / std::max(1.0, object.sum().item<double>());
    }
  }
  torch::NoGradGuard ng;
  const auto hit_t = b.text_targets.gather(1, logits_per_text.argmax(1).unsqueeze(1)) > 0;
  const auto hit_i = b.image_targets.gather(1, logits_all.t().argmax(1).unsqueeze(1)) > 0;
  s.acc_t2i = hit_t.to(torch::kFloat64).mean().item<double>();
  s.acc_i2t = hit_i.to(torch::kFloat64).mean().item<double>();
  return s;
}

nlohmann::json options_json(const ClipTrainOptions& o) {
  return {{"world_dir", o.world_dir},       {"steps", o.steps},
          {"batch", o.batch},               {"lr", o.lr},
          {"weight_decay", o.weight_decay}, {"warmup_steps", o.warmup_steps},
          {"max_grad_norm", o.max_grad_norm}, {"seed", o.seed},
          {"image_size", o.image_size},     {"patch_size", o.patch_size},
          {"vision_width", o.vision_width}, {"vision_layers", o.vision_layers},
          {"vision_heads", o.vision_heads}, {"text_width", o.text_width},
          {"text_layers", o.text_layers},   {"text_heads", o.text_heads},
          {"text_positions", o.text_positions}, {"projection_dim", o.projection_dim},
          {"bpe_merges", o.bpe_merges},     {"augment", o.augment},
          {"hard_negatives", o.hard_negatives}, {"dense_aux_weight", o.dense_aux_weight},
          {"dense_aux_layer", o.dense_aux_layer}};
}

// Model + optimizer + step into out/checkpoint-last, replaced as a whole: written to a sibling
// temp dir first, so a crash leaves either the old or the new checkpoint.
void save_checkpoint(const std::string& out_dir, const models::ClipModel& model, const DenseHead& head,
                     torch::optim::AdamW& opt, int64_t step, const ClipTrainOptions& o) {
  const fs::path final_dir = fs::path(out_dir) / kCheckpointDir;
  const fs::path tmp = fs::path(out_dir) / (std::string(kCheckpointDir) + ".tmp");
  const fs::path old = fs::path(out_dir) / (std::string(kCheckpointDir) + ".old");
  fs::remove_all(tmp);
  model.save_pretrained(tmp.string());
  torch::save(opt, (tmp / "optimizer.pt").string());
  if (head.defined()) torch::save(std::vector<torch::Tensor>{head.weight, head.bias}, (tmp / "dense_head.pt").string());
  io::write_json_atomic((tmp / "state.json").string(),
                        {{"step", step}, {"options", options_json(o)}});
  fs::remove_all(old);
  if (fs::exists(final_dir)) fs::rename(final_dir, old);
  fs::rename(tmp, final_dir);
  fs::remove_all(old);
}

// The checkpoint to resume from: checkpoint-last, or checkpoint-last.old when a crash hit between
// the two renames above.
fs::path find_checkpoint(const std::string& out_dir) {
  for (const char* suffix : {"", ".old"}) {
    const fs::path p = fs::path(out_dir) / (std::string(kCheckpointDir) + suffix);
    if (fs::exists(p / "state.json")) return p;
  }
  throw InputError("--resume", "no checkpoint in " + (fs::path(out_dir) / kCheckpointDir).string());
}

// Keeps metrics lines up to `step` (a killed run may have logged past its last checkpoint).
void trim_metrics(const std::string& path, int64_t step) {
  if (!fs::exists(path)) return;
  std::string kept;
  for (const auto& row : io::read_jsonl_file(path)) {
    if (row.value("step", int64_t{0}) <= step) kept += row.dump() + "\n";
  }
  io::write_file_atomic(path, kept);
}

}  // namespace

std::vector<int64_t> dense_patch_labels(const std::vector<DenseLabelObject>& objects, int width, int height,
                                        int64_t side, int64_t patch, const std::vector<std::string>& classes) {
  image::ClipProcessorConfig proc;  // the world CLIP's: short side to `side`, centre crop side x side
  proc.shortest_edge = static_cast<int>(side);
  proc.crop_height = proc.crop_width = static_cast<int>(side);
  const auto hw = image::clip_resize_output_hw(height, width, proc);
  const auto tl = image::center_crop_top_left(hw[0], hw[1], static_cast<int>(side), static_cast<int>(side));
  const double sx = static_cast<double>(hw[1]) / width, sy = static_cast<double>(hw[0]) / height;
  std::vector<int64_t> class_of;  // per object: 1 + its index in `classes`
  for (const auto& obj : objects) {
    const auto it = std::lower_bound(classes.begin(), classes.end(), obj.cls);
    if (it == classes.end() || *it != obj.cls) throw InputError("scenes.jsonl", "unknown object class '" + obj.cls + "'");
    class_of.push_back(1 + (it - classes.begin()));
  }
  const int64_t grid = side / patch;
  std::vector<int64_t> labels(static_cast<size_t>(grid * grid), 0);
  const double patch_area = static_cast<double>(patch * patch);
  for (int64_t gy = 0; gy < grid; ++gy) {
    for (int64_t gx = 0; gx < grid; ++gx) {
      const double px0 = static_cast<double>(gx * patch), py0 = static_cast<double>(gy * patch);
      double best = 0;
      int64_t best_class = 0;
      for (size_t k = 0; k < objects.size(); ++k) {
        const auto& obj = objects[k];
        const double x0 = obj.x0 * sx - tl[1], x1 = obj.x1 * sx - tl[1];
        const double y0 = obj.y0 * sy - tl[0], y1 = obj.y1 * sy - tl[0];
        const double ow = std::min(x1, px0 + static_cast<double>(patch)) - std::max(x0, px0);
        const double oh = std::min(y1, py0 + static_cast<double>(patch)) - std::max(y0, py0);
        if (ow <= 0 || oh <= 0) continue;
        const double box_area = std::max((x1 - x0) * (y1 - y0), 1e-9);
        const double share = ow * oh / std::min(patch_area, box_area);
        if (share > best) {
          best = share;
          best_class = class_of[k];
        }
      }
      labels[static_cast<size_t>(gy * grid + gx)] = best >= 0.5 ? best_class : best < 0.1 ? 0 : -100;
    }
  }
  return labels;
}

io::ClipConfig world_clip_config(const ClipTrainOptions& o, int64_t vocab_size, int64_t bos_id, int64_t eos_id) {
  io::ClipConfig cfg;
  cfg.projection_dim = o.projection_dim;
  cfg.vision.hidden_size = o.vision_width;
  cfg.vision.intermediate_size = 4 * o.vision_width;
  cfg.vision.num_hidden_layers = o.vision_layers;
  cfg.vision.num_attention_heads = o.vision_heads;
  cfg.vision.image_size = o.image_size;
  cfg.vision.patch_size = o.patch_size;
  cfg.vision.projection_dim = o.projection_dim;
  cfg.text.vocab_size = vocab_size;
  cfg.text.hidden_size = o.text_width;
  cfg.text.intermediate_size = 4 * o.text_width;
  cfg.text.num_hidden_layers = o.text_layers;
  cfg.text.num_attention_heads = o.text_heads;
  cfg.text.max_position_embeddings = o.text_positions;
  cfg.text.bos_token_id = bos_id;
  cfg.text.eos_token_id = eos_id;  // not 2: HF pools at the first eos, not at argmax(ids)
  cfg.text.pad_token_id = eos_id;
  cfg.text.projection_dim = o.projection_dim;
  return cfg;
}

void write_clip_preprocessor_config(const std::string& dir, int64_t image_size) {
  const nlohmann::json j = {
      {"crop_size", {{"height", image_size}, {"width", image_size}}},
      {"do_center_crop", true},
      {"do_convert_rgb", true},
      {"do_normalize", true},
      {"do_rescale", true},
      {"do_resize", true},
      {"image_mean", {0.48145466, 0.4578275, 0.40821073}},
      {"image_processor_type", "CLIPImageProcessor"},
      {"image_std", {0.26862954, 0.26130258, 0.27577711}},
      {"processor_class", "CLIPProcessor"},
      {"resample", 3},
      {"rescale_factor", 1.0 / 255.0},
      {"size", {{"shortest_edge", image_size}}},
  };
  io::write_json_atomic((fs::path(dir) / "preprocessor_config.json").string(), j);
}

ClipTrainResult train_world_clip(const ClipTrainOptions& o) {
  validate(o);
  if (o.threads > 0) torch::set_num_threads(o.threads);
  fs::create_directories(o.out_dir);

  // Processor: the same file the checkpoint ships, read back, so training sees what users will.
  write_clip_preprocessor_config(o.out_dir, o.image_size);
  const auto proc = image::load_clip_processor_config((fs::path(o.out_dir) / "preprocessor_config.json").string());
  Data data = load_data(o, proc);
  if (static_cast<int64_t>(data.pairs.size()) < o.batch) {
    throw InputError("--batch", std::to_string(o.batch) + " is more than the " + std::to_string(data.pairs.size()) +
                                    " training pairs");
  }

  // Tokenizer: learnt from the data (deterministic), written, and read back through ClipTokenizer.
  const ClipBpeVocabulary bpe = learn_clip_bpe(data.bpe_texts, o.bpe_merges);
  write_clip_tokenizer_files(o.out_dir, bpe, static_cast<int>(o.text_positions));
  const auto tok = text::ClipTokenizer::load(o.out_dir);
  int64_t truncated = 0;
  for (auto& t : data.texts) {
    t.ids = tok.encode(t.text);
    if (static_cast<int64_t>(t.ids.size()) > o.text_positions) {
      t.ids.resize(static_cast<size_t>(o.text_positions - 1));
      t.ids.push_back(tok.eos_id());
      ++truncated;
    }
  }
  if (truncated > 0 && !o.quiet) {
    std::fprintf(stderr, "train-clip: warning: %lld texts longer than %lld tokens were truncated\n",
                 static_cast<long long>(truncated), static_cast<long long>(o.text_positions));
  }

  const io::ClipConfig cfg = world_clip_config(o, static_cast<int64_t>(bpe.tokens.size()), bpe.bos_id, bpe.eos_id);
  std::unique_ptr<models::ClipModel> model;
  int64_t start_step = 0;
  fs::path resume_from;
  if (o.resume) {
    resume_from = find_checkpoint(o.out_dir);
    const auto state = io::read_json_file((resume_from / "state.json").string());
    const std::string state_file = (resume_from / "state.json").string();
    start_step = io::get_required<int64_t>(state, "step", state_file, "");
    const auto saved = io::get_required<nlohmann::json>(state, "options", state_file, "");
    for (const char* key : {"seed", "batch", "augment", "hard_negatives", "dense_aux_weight", "dense_aux_layer"}) {
      // Checkpoints from before hard negatives / dense labels existed were trained without them.
      const std::string k = key;
      const nlohmann::json absent = k == "hard_negatives"     ? nlohmann::json(false)
                                    : k == "dense_aux_weight" ? nlohmann::json(0.0)
                                    : k == "dense_aux_layer"  ? nlohmann::json(-2)
                                                              : nlohmann::json();
      if (saved.value(key, absent) != options_json(o)[key]) {
        throw InputError("--resume", std::string("the checkpoint was trained with a different ") + key + " (" +
                                         saved.value(key, absent).dump() + ")");
      }
    }
    model = models::ClipModel::load(resume_from.string());
    if (models::clip_config_json(model->config()) != models::clip_config_json(cfg)) {
      throw InputError("--resume", "the checkpoint's architecture or vocabulary differs from these options/data");
    }
  } else {
    model = models::ClipModel::random_init(cfg, o.seed);
  }

  // AdamW with decoupled weight decay on the weight matrices only (as OpenAI CLIP excludes gains,
  // biases, embeddings and the temperature).
  std::vector<torch::Tensor> decay, no_decay, all;
  for (auto& [name, t] : model->named_parameters()) {
    t.requires_grad_(true);
    all.push_back(t);
    const bool is_matrix = t.dim() >= 2 && name.find("embedding") == std::string::npos;
    (is_matrix ? decay : no_decay).push_back(t);
  }
  auto options_for = [&](double wd) {
    auto opt = std::make_unique<torch::optim::AdamWOptions>(o.lr);
    opt->betas({0.9, 0.98}).eps(1e-6).weight_decay(wd);
    return opt;
  };
  DenseHead head;
  if (!data.dense_classes.empty()) {
    const auto K = static_cast<int64_t>(data.dense_classes.size()) + 1;
    head.weight = torch::zeros({K, o.vision_width}, torch::kFloat32);
    head.bias = torch::zeros({K}, torch::kFloat32);
    if (o.resume) {
      const fs::path head_file = resume_from / "dense_head.pt";
      if (!fs::exists(head_file)) throw InputError("--resume", "no dense_head.pt in " + resume_from.string());
      std::vector<torch::Tensor> saved;
      torch::load(saved, head_file.string());
      if (saved.size() != 2 || !saved[0].sizes().equals(head.weight.sizes()) || !saved[1].sizes().equals(head.bias.sizes())) {
        throw InputError(head_file.string(), "dense head shape differs from this world's classes");
      }
      head.weight = saved[0];
      head.bias = saved[1];
    }
    head.weight.requires_grad_(true);
    head.bias.requires_grad_(true);
    head.layer = o.dense_aux_layer;
    head.weight_in_loss = o.dense_aux_weight;
    decay.push_back(head.weight);
    no_decay.push_back(head.bias);
    all.push_back(head.weight);
    all.push_back(head.bias);
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, options_for(o.weight_decay));
  groups.emplace_back(no_decay, options_for(0.0));
  torch::optim::AdamW optimizer(std::move(groups), torch::optim::AdamWOptions(o.lr));
  if (o.resume) torch::load(optimizer, (resume_from / "optimizer.pt").string());

  const std::string metrics_path = (fs::path(o.out_dir) / "metrics.jsonl").string();
  if (o.resume) {
    trim_metrics(metrics_path, start_step);
  } else if (fs::exists(metrics_path)) {
    fs::remove(metrics_path);
  }
  io::JsonlAppender metrics(metrics_path);
  io::write_json_atomic((fs::path(o.out_dir) / "train_args.json").string(),
                        {{"command", "p2dpo world train-clip"}, {"options", options_json(o)},
                         {"num_pairs", data.pairs.size()}, {"num_images", data.images.size()},
                         {"num_caption_pairs", data.num_captions}, {"num_question_pairs", data.num_questions},
                         {"num_crop_pairs", data.num_crops}, {"num_hard_negatives", data.num_negatives},
                         {"dense_classes", data.dense_classes},
                         {"torch_threads", torch::get_num_threads()}});

  ClipTrainResult result;
  result.num_pairs = static_cast<int64_t>(data.pairs.size());
  result.num_images = static_cast<int64_t>(data.images.size());
  result.num_caption_pairs = data.num_captions;
  result.num_question_pairs = data.num_questions;
  result.num_crop_pairs = data.num_crops;
  result.num_hard_negatives = data.num_negatives;
  result.num_dense_classes = head.defined() ? static_cast<int64_t>(data.dense_classes.size()) + 1 : 0;
  Sampler sampler(result.num_pairs, o.batch, o.seed);
  const double max_log_scale = std::log(100.0);
  const auto t0 = std::chrono::steady_clock::now();
  double window_loss = 0, window_t2i = 0, window_i2t = 0, window_dense_loss = 0, window_dense_acc = 0, window_dense_object_acc = 0,
         grad_norm = 0;
  int64_t window_n = 0;
  bool first_window = true;
  int64_t step = start_step;
  const int64_t end_step = o.stop_after > 0 ? std::min(o.steps, start_step + o.stop_after) : o.steps;
  for (; step < end_step; ++step) {
    const double lr = lr_at(step, o);
    for (auto& g : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    const Batch batch = make_batch(data, sampler.batch_at(step), proc, o.image_size, o.patch_size, tok.pad_id());
    optimizer.zero_grad();
    StepStats s = contrastive_step(*model, batch, head);
    s.loss.backward();
    if (o.max_grad_norm > 0) grad_norm = torch::nn::utils::clip_grad_norm_(all, o.max_grad_norm);
    optimizer.step();
    {
      torch::NoGradGuard ng;
      model->logit_scale_tensor().clamp_(0.0, max_log_scale);  // OpenAI CLIP's temperature bound
    }
    window_loss += s.loss.item<double>();
    window_t2i += s.acc_t2i;
    window_i2t += s.acc_i2t;
    window_dense_loss += s.dense_loss;
    window_dense_acc += s.dense_acc;
    window_dense_object_acc += s.dense_object_acc;
    ++window_n;

    const int64_t done = step + 1;
    if (done % o.log_every == 0 || done == end_step) {
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double rate = static_cast<double>(done - start_step) / std::max(elapsed, 1e-9);
      const double mean_loss = window_loss / static_cast<double>(window_n);
      if (first_window) {
        result.first_loss = mean_loss;
        first_window = false;
      }
      result.last_loss = mean_loss;
      const double n = static_cast<double>(window_n);
      result.last_dense_accuracy = window_dense_acc / n;
      nlohmann::json row = {{"step", done},
                     {"loss", mean_loss},
                     {"acc_text_to_image", window_t2i / static_cast<double>(window_n)},
                     {"acc_image_to_text", window_i2t / static_cast<double>(window_n)},
                     {"logit_scale", std::exp(model->logit_scale())},
                     {"lr", lr},
                     {"grad_norm", grad_norm},
                     {"elapsed_s", elapsed},
                     {"steps_per_s", rate}};
      if (head.defined()) {
        row["dense_loss"] = window_dense_loss / n;
        row["dense_patch_accuracy"] = window_dense_acc / n;
        row["dense_object_patch_accuracy"] = window_dense_object_acc / n;
      }
      metrics.write(row);
      if (!o.quiet) {
        char dense_part[64] = "";
        if (head.defined()) std::snprintf(dense_part, sizeof dense_part, " patches %.3f (objects %.3f)", window_dense_acc / n,
                                          window_dense_object_acc / n);
        std::fprintf(stderr, "train-clip: step %lld/%lld loss %.4f acc %.3f/%.3f%s scale %.1f lr %.2e | %.2f step/s, ETA %s\n",
                     static_cast<long long>(done), static_cast<long long>(o.steps), mean_loss,
                     window_t2i / n, window_i2t / n, dense_part,
                     std::exp(model->logit_scale()), lr, rate,
                     format_duration(static_cast<double>(o.steps - done) / std::max(rate, 1e-9)).c_str());
      }
      window_loss = window_t2i = window_i2t = window_dense_loss = window_dense_acc = window_dense_object_acc = 0;
      window_n = 0;
    }
    if (done % o.checkpoint_every == 0 && done != end_step) save_checkpoint(o.out_dir, *model, head, optimizer, done, o);
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  result.steps_done = step;
  result.steps_this_run = step - start_step;
  metrics.close();

  save_checkpoint(o.out_dir, *model, head, optimizer, step, o);
  model->save_pretrained(o.out_dir);
  return result;
}

namespace {

struct Box {
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;  // x1/y1 exclusive
  bool intersects(const Box& o) const { return x0 < o.x1 && o.x0 < x1 && y0 < o.y1 && o.y0 < y1; }
};

image::ImageU8 crop(const image::ImageU8& img, const Box& b) {
  image::ImageU8 out(b.x1 - b.x0, b.y1 - b.y0);
  for (int y = b.y0; y < b.y1; ++y) {
    std::copy(img.at(b.x0, y), img.at(b.x0, y) + 3 * out.width, out.at(0, y - b.y0));
  }
  return out;
}

// A side x side box centred on (cx, cy), shifted to lie inside the image.
Box square_at(int cx, int cy, int side, int width, int height) {
  Box b;
  b.x0 = std::clamp(cx - side / 2, 0, width - side);
  b.y0 = std::clamp(cy - side / 2, 0, height - side);
  b.x1 = b.x0 + side;
  b.y1 = b.y0 + side;
  return b;
}

// Per-question scores of one group until finish() summarises them.
struct GroupScores {
  std::vector<double> whole, object, empty;
  void add(double w, double o, double e) {
    whole.push_back(w);
    object.push_back(o);
    empty.push_back(e);
  }
};

SampleStats stats_of(std::vector<double> v) {
  SampleStats s;
  if (v.empty()) return s;
  const auto n = static_cast<double>(v.size());
  for (double x : v) s.mean += x / n;
  for (double x : v) s.std += (x - s.mean) * (x - s.mean) / n;
  s.std = std::sqrt(s.std);
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  s.median = v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2.0;
  s.min = v.front();
  s.max = v.back();
  return s;
}

CropSanityGroup finish(const GroupScores& s) {
  CropSanityGroup g;
  g.questions = static_cast<int64_t>(s.whole.size());
  if (g.questions == 0) return g;
  std::vector<double> ro, re, d_o, d_e;
  int64_t above = 0, below = 0;
  for (size_t i = 0; i < s.whole.size(); ++i) {
    ro.push_back(s.object[i] / s.whole[i]);
    re.push_back(s.empty[i] / s.whole[i]);
    d_o.push_back(s.object[i] - s.whole[i]);
    d_e.push_back(s.empty[i] - s.whole[i]);
    above += ro.back() > 1.0;
    below += re.back() < 1.0;
  }
  g.mean_score_whole = stats_of(s.whole).mean;
  g.mean_score_object = stats_of(s.object).mean;
  g.mean_score_empty = stats_of(s.empty).mean;
  g.ratio_object = stats_of(ro);
  g.ratio_empty = stats_of(re);
  g.diff_object = stats_of(d_o);
  g.diff_empty = stats_of(d_e);
  g.share_ratio_object_above_1 = static_cast<double>(above) / static_cast<double>(g.questions);
  g.share_ratio_empty_below_1 = static_cast<double>(below) / static_cast<double>(g.questions);
  return g;
}

nlohmann::json stats_json(const SampleStats& s) {
  return {{"mean", s.mean}, {"median", s.median}, {"std", s.std}, {"min", s.min}, {"max", s.max}};
}

nlohmann::json group_json(const CropSanityGroup& g) {
  return {{"questions", g.questions},
          {"mean_clipscore_whole", g.mean_score_whole},
          {"mean_clipscore_object_crop", g.mean_score_object},
          {"mean_clipscore_empty_crop", g.mean_score_empty},
          {"ratio_object_crop", stats_json(g.ratio_object)},
          {"ratio_empty_crop", stats_json(g.ratio_empty)},
          {"diff_object_crop", stats_json(g.diff_object)},
          {"diff_empty_crop", stats_json(g.diff_empty)},
          {"share_ratio_object_crop_above_1", g.share_ratio_object_above_1},
          {"share_ratio_empty_crop_below_1", g.share_ratio_empty_below_1}};
}

}  // namespace

CropSanityResult clipscore_crop_sanity(const CropSanityOptions& o) {
  if (o.crop_side < 8) throw InputError("--crop-side", "must be >= 8");
  const std::string scenes_path = (fs::path(o.world_dir) / "scenes.jsonl").string();
  const auto scenes = io::read_jsonl_file(scenes_path);
  const auto model = models::ClipModel::load(o.model_dir);
  const auto tok = text::ClipTokenizer::load(o.model_dir);
  const auto proc = image::load_clip_processor_config((fs::path(o.model_dir) / "preprocessor_config.json").string());
  const int max_len = static_cast<int>(model->config().text.max_position_embeddings);
  torch::NoGradGuard ng;
  auto score = [&](const torch::Tensor& text_feature, const std::vector<image::ImageU8>& images) {
    std::vector<torch::Tensor> px;
    for (const auto& im : images) {
      px.push_back(models::pixels_to_tensor(image::preprocess_clip(im, proc)));
    }
    return model->clip_score(text_feature, model->image_features(torch::stack(px)));  // [1, n]
  };

  CropSanityResult r;
  GroupScores all, small, large;
  int64_t seen = 0;
  for (size_t si = 0; si < scenes.size() && seen < o.max_questions; ++si) {
    const auto& scene = scenes[si];
    const std::string ctx = "line " + std::to_string(si + 1);
    if (io::get_required<std::string>(scene, "split", scenes_path, ctx) != o.split) continue;
    const auto rel = io::get_required<std::string>(scene, "image", scenes_path, ctx);
    const auto img = image::decode_image_file((fs::path(o.world_dir) / rel).string());
    const auto objects = io::get_required<nlohmann::json>(scene, "objects", scenes_path, ctx);
    std::vector<Box> boxes;
    std::vector<std::string> classes;
    for (const auto& obj : objects) {
      const auto bb = io::get_required<std::vector<int>>(obj, "bbox", scenes_path, ctx + ".objects");
      if (bb.size() != 4) throw InputError(scenes_path, "field '" + ctx + ".objects.bbox': expected 4 numbers");
      boxes.push_back({bb[0], bb[1], bb[2], bb[3]});
      classes.push_back(io::get_required<std::string>(obj, "color", scenes_path, ctx) + " " +
                        io::get_required<std::string>(obj, "shape", scenes_path, ctx));
    }
    for (size_t k = 0; k < objects.size() && seen < o.max_questions; ++k, ++seen) {
      const auto name = io::get_required<std::string>(objects[k], "name", scenes_path, ctx + ".objects");
      const auto size = io::get_required<std::string>(objects[k], "size", scenes_path, ctx + ".objects");
      const Box& ob = boxes[k];
      const int obj_side = std::max(ob.x1 - ob.x0, ob.y1 - ob.y0);
      const int side = std::min({std::max(static_cast<int>(o.crop_side), obj_side * 3 / 2), img.width, img.height});
      const Box object_crop = square_at((ob.x0 + ob.x1) / 2, (ob.y0 + ob.y1) / 2, side, img.width, img.height);
      // Empty crop: the farthest grid position touching no object (else no object of this class).
      std::optional<Box> empty;
      for (int pass = 0; pass < 2 && !empty; ++pass) {
        int64_t best = -1;
        const int stride = std::max(1, side / 8);
        for (int y = 0; y + side <= img.height; y += stride) {
          for (int x = 0; x + side <= img.width; x += stride) {
            const Box c{x, y, x + side, y + side};
            bool clear = true;
            for (size_t j = 0; j < boxes.size() && clear; ++j) {
              if ((pass == 0 || classes[j] == classes[k]) && c.intersects(boxes[j])) clear = false;
            }
            if (!clear) continue;
            const int64_t dx = (c.x0 + c.x1) - (ob.x0 + ob.x1), dy = (c.y0 + c.y1) - (ob.y0 + ob.y1);
            if (dx * dx + dy * dy > best) {
              best = dx * dx + dy * dy;
              empty = c;
            }
          }
        }
      }
      if (!empty) {
        ++r.skipped_no_empty_crop;
        continue;
      }
      const auto batch = tok.encode_batch({"Is there a " + name + " in the image?"}, max_len);
      const auto ids = torch::tensor(batch.input_ids, torch::kLong).view({batch.batch, batch.length});
      const auto mask = torch::tensor(batch.attention_mask, torch::kLong).view({batch.batch, batch.length});
      const auto s = score(model->text_features(ids, mask), {img, crop(img, object_crop), crop(img, *empty)});
      const double whole = s[0][0].item<double>(), object = s[0][1].item<double>(), none = s[0][2].item<double>();
      if (whole <= 0) {
        ++r.skipped_zero_whole;
        continue;
      }
      all.add(whole, object, none);
      (size == "small" ? small : large).add(whole, object, none);
    }
  }
  r.all = finish(all);
  r.small = finish(small);
  r.large = finish(large);
  if (r.all.questions == 0) throw InputError(scenes_path, "no usable objects in split '" + o.split + "'");
  return r;
}

nlohmann::json crop_sanity_json(const CropSanityOptions& o, const CropSanityResult& r) {
  return {{"model", o.model_dir},
          {"world", o.world_dir},
          {"split", o.split},
          {"crop_side", o.crop_side},
          {"question_template", "Is there a {name} in the image?"},
          {"clipscore", "100 * max(cos, 0)"},
          {"all", group_json(r.all)},
          {"small", group_json(r.small)},
          {"large", group_json(r.large)},
          {"skipped_zero_whole_clipscore", r.skipped_zero_whole},
          {"skipped_no_empty_crop", r.skipped_no_empty_crop}};
}

}  // namespace p2dpo::world
