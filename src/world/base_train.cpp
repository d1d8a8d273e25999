#include "world/base_train.h"

#include <torch/types.h>
#include <torch/utils.h>

#include <filesystem>
#include <iostream>
#include <algorithm>
#include <cmath>
#include <map>
#include <random>

#include "image/decode.h"
#include "image/png_write.h"
#include "io/errors.h"
#include "io/json_io.h"
#include "models/llava.h"
#include "pairs/views.h"
#include "train/causal_lm_loop.h"
#include "train/conversations.h"
#include "train/params.h"
#include "world/scene_io.h"

namespace fs = std::filesystem;

namespace p2dpo::world {

std::vector<BaseStage> BaseTrainOptions::default_stages() {
  // Steps and rates for the shipped model are set by `p2dpo world train-base` flags / config; these
  // defaults are the recipe's shape (see the README's world section for the measured run).
  return {
      {"text", "lm", "all", 0, 300, 1e-3, 32, 16},
      {"projector", "projector", "descriptions", 0, 300, 1e-3, 32, 16},
      {"curriculum", "projector+lm", "all", 2, 600, 5e-4, 32, 16},
      {"full", "projector+lm", "all", 0, 3000, 3e-4, 32, 16},
      // Off unless given steps: the answers' loss also trains the vision tower (the CLIP's
      // contrastive loss is met mostly by colours, so its patch features carry shapes weakly).
      {"vision", "projector+lm+vision", "all", 0, 0, 1e-4, 32, 16},
      // Off unless given steps: teaches the second, zoomed image slot of P2-DPO's focus pairs.
      {"zoom", "projector+lm", "all", 0, 0, 1e-4, 32, 16, 0.5},
  };
}

namespace {

std::function<bool(const std::string&)> trainable_of(const BaseStage& s) {
  if (s.trainable == "lm") return train::name_prefix_predicate({"language_model."});
  if (s.trainable == "projector") return train::name_prefix_predicate({"multi_modal_projector."});
  if (s.trainable == "projector+lm")
    return train::name_prefix_predicate({"multi_modal_projector.", "language_model."});
  // Layers above the vision feature layer get no gradient and stay put.
  if (s.trainable == "projector+lm+vision")
    return train::name_prefix_predicate({"multi_modal_projector.", "language_model.", "vision_tower."});
  throw InputError("stages." + s.name + ".trainable",
                   "must be lm, projector, projector+lm or projector+lm+vision, got '" + s.trainable + "'");
}

std::string strip_image_marker(std::string text) {
  for (const std::string m : {"\n<image>", "<image>\n", "<image>"}) {
    for (size_t p; (p = text.find(m)) != std::string::npos;) text.erase(p, m.size());
  }
  return text;
}

struct WorldData {
  std::vector<train::Conversation> conversations;
  std::map<std::string, std::string> type_of;   // conversation id -> "description", "existence", ...
  std::map<std::string, int> objects_in;        // resolved image path -> object count
};

WorldData load_world_data(const std::string& world_dir) {
  WorldData d;
  const std::string conv_path = world_dir + "/train/conversations.json";
  d.conversations = train::load_llava_conversations(conv_path, world_dir);
  for (const auto& c : io::read_json_file(conv_path)) {
    d.type_of[io::get_required<std::string>(c, "id", conv_path, "conversation")] =
        io::get_optional<std::string>(c, "type", "", conv_path, "conversation");
  }
  const std::string scenes_path = world_dir + "/scenes.jsonl";
  for (const auto& s : io::read_jsonl_file(scenes_path)) {
    const auto image = io::get_required<std::string>(s, "image", scenes_path, "scene");
    d.objects_in[(fs::path(world_dir) / image).lexically_normal().string()] = static_cast<int>(s.at("objects").size());
  }
  return d;
}

std::vector<train::Conversation> stage_data(const BaseStage& s, const WorldData& d) {
  if (s.data != "text" && s.data != "descriptions" && s.data != "all")
    throw InputError("stages." + s.name + ".data", "must be text, descriptions or all, got '" + s.data + "'");
  std::vector<train::Conversation> out;
  for (const auto& c : d.conversations) {
    if (s.data == "descriptions") {
      auto t = d.type_of.find(c.id);
      if (t == d.type_of.end() || t->second != "description") continue;
    }
    if (s.max_objects > 0) {
      auto n = c.images.empty() ? d.objects_in.end() : d.objects_in.find(c.images.front());
      if (n == d.objects_in.end() || n->second > s.max_objects) continue;
    }
    out.push_back(c);
    // The text stage reads the same exchanges without their images (LLaVA's LLM came pretrained
    // on text; this one learns the language of the world first).
    if (s.trainable == "lm" && s.data != "descriptions") {
      auto& t = out.back();
      t.images.clear();
      for (auto& turn : t.turns) turn.human = strip_image_marker(turn.human);
    }
  }
  if (out.empty()) throw InputError("stages." + s.name, "selects no training conversations");
  return out;
}


bool contains(const std::string& text, const std::string& word) { return text.find(word) != std::string::npos; }

// The objects a question is about, most specific match first (see zoom_conversations).
std::vector<const Object*> asked_objects(const Scene& scene, const Vocabulary& vocab, const std::string& question) {
  std::vector<const Object*> by_name, by_shape, by_region;
  for (const auto& o : scene.objects) {
    const auto& colour = vocab.colors[static_cast<size_t>(o.color)];
    const auto& shape = vocab.shapes[static_cast<size_t>(o.shape)];
    if (contains(question, colour + " " + shape)) by_name.push_back(&o);
    if (contains(question, shape)) by_shape.push_back(&o);
  }
  if (!by_name.empty()) return by_name;
  if (!by_shape.empty()) return by_shape;
  // Region phrases, longest first, so "at the top left" wins over "at the top".
  std::vector<int> regions(kRegionPhrases.size());
  for (size_t r = 0; r < regions.size(); ++r) regions[r] = static_cast<int>(r);
  std::stable_sort(regions.begin(), regions.end(), [](int a, int b) {
    return std::string(kRegionPhrases[static_cast<size_t>(a)]).size() > std::string(kRegionPhrases[static_cast<size_t>(b)]).size();
  });
  for (int r : regions) {
    if (!contains(question, kRegionPhrases[static_cast<size_t>(r)])) continue;
    for (const auto& o : scene.objects)
      if (region_of(scene, o) == r) by_region.push_back(&o);
    break;
  }
  if (!by_region.empty()) return by_region;
  std::vector<const Object*> all;
  for (const auto& o : scene.objects) all.push_back(&o);
  return all;
}

// A random offset in [-slack, slack] (0 when the box does not fit).
int jitter(std::mt19937_64& rng, int slack) {
  return slack > 0 ? std::uniform_int_distribution<int>(-slack, slack)(rng) : 0;
}

}  // namespace

std::vector<train::Conversation> zoom_conversations(const std::vector<train::Conversation>& conversations,
                                                    const std::string& world_dir, double share, int input_side,
                                                    uint64_t seed, const std::string& crops_dir) {
  if (!(share > 0 && share <= 1)) throw InputError("zoom_share", "must be in (0, 1], got " + std::to_string(share));
  if (input_side <= 0) throw InputError("input_side", "must be positive");
  const Vocabulary vocab = vocabulary_from_world_json(world_dir + "/world.json");
  std::map<std::string, Scene> scene_of;  // resolved image path -> scene
  for (auto& sc : read_scenes(world_dir, vocab)) {
    const std::string path = (fs::path(world_dir) / image_rel_path(sc)).lexically_normal().string();
    scene_of.emplace(path, std::move(sc));
  }
  static const std::vector<double> kRatios = {1.0, 1.2, 1.4, 1.6, 1.8, 2.0};  // the adaptive crop's
  fs::create_directories(crops_dir);
  std::vector<train::Conversation> out;
  for (const auto& conv : conversations) {
    if (conv.images.size() != 1 || conv.turns.empty()) continue;
    std::mt19937_64 rng(seed ^ fnv1a64(conv.id));
    if (std::uniform_real_distribution<double>(0.0, 1.0)(rng) >= share) continue;
    auto sc = scene_of.find(fs::path(conv.images.front()).lexically_normal().string());
    if (sc == scene_of.end())
      throw InputError(world_dir + "/scenes.jsonl", "no scene for image '" + conv.images.front() + "' of conversation '" + conv.id + "'");
    const Scene& scene = sc->second;
    if (scene.objects.empty()) continue;
    const auto candidates = asked_objects(scene, vocab, conv.turns.front().human);
    const Object& target = *candidates[std::uniform_int_distribution<size_t>(0, candidates.size() - 1)(rng)];
    const double ratio = kRatios[std::uniform_int_distribution<size_t>(0, kRatios.size() - 1)(rng)];
    const int side = std::min({static_cast<int>(std::lround(input_side * ratio)), scene.width, scene.height});
    const int slack_x = (side - (target.x1 - target.x0)) / 2, slack_y = (side - (target.y1 - target.y0)) / 2;
    const int cx = (target.x0 + target.x1) / 2 + jitter(rng, slack_x);
    const int cy = (target.y0 + target.y1) / 2 + jitter(rng, slack_y);
    pairs::PixelBox box;
    box.x1 = std::clamp(cx - side / 2, 0, scene.width - side);
    box.y1 = std::clamp(cy - side / 2, 0, scene.height - side);
    box.x2 = box.x1 + side;
    box.y2 = box.y1 + side;

    train::Conversation z = conv;
    z.id = conv.id + "-zoom";
    const std::string crop_path = (fs::path(crops_dir) / (z.id + ".png")).string();
    if (!fs::exists(crop_path)) image::write_png_atomic(crop_path, pairs::crop_view(image::decode_image_file(conv.images.front()), box));
    z.images.push_back(crop_path);
    for (auto& turn : z.turns) {
      const size_t p = turn.human.find("<image>");
      if (p == std::string::npos) continue;
      turn.human.insert(p, "<image>");
      break;
    }
    out.push_back(std::move(z));
  }
  return out;
}

BaseTrainResult train_world_base(const BaseTrainOptions& opt) {
  if (opt.out_dir.empty()) throw InputError("--out", "is required");
  if (opt.tokenizer_dir.empty()) throw InputError("--tokenizer", "is required (p2dpo world train-tokenizer)");
  fs::create_directories(opt.out_dir + "/stages");
  models::LlavaBuildSpec spec = opt.model;
  spec.vision_from = opt.clip_dir;
  spec.tokenizer_from = opt.tokenizer_dir;
  spec.seed = opt.seed;

  // The resolved options, next to the results (every run writes its full configuration).
  nlohmann::json resolved;
  resolved["world_dir"] = opt.world_dir;
  resolved["clip_dir"] = opt.clip_dir;
  resolved["tokenizer_dir"] = spec.tokenizer_from;
  resolved["seed"] = opt.seed;
  resolved["conversation_template"] = opt.conversation_template;
  resolved["model"] = {{"hidden_size", spec.hidden_size}, {"intermediate_size", spec.intermediate_size},
                       {"num_layers", spec.num_layers}, {"num_heads", spec.num_heads},
                       {"num_kv_heads", spec.num_kv_heads}, {"max_position_embeddings", spec.max_position_embeddings},
                       {"init", spec.init}, {"vision_feature_layer", spec.vision_feature_layer}};
  for (const auto& s : opt.stages)
    resolved["stages"].push_back({{"name", s.name}, {"trainable", s.trainable}, {"data", s.data},
                                  {"max_objects", s.max_objects}, {"steps", s.steps}, {"lr", s.lr},
                                  {"batch", s.batch}, {"micro_batch", s.micro_batch}, {"zoom_share", s.zoom_share}});
  io::write_json_atomic(opt.out_dir + "/config.json", resolved);

  const std::string init_dir = opt.out_dir + "/init";
  if (!fs::exists(init_dir + "/model.safetensors")) models::build_llava_checkpoint(spec, init_dir);
  WorldData data = load_world_data(opt.world_dir);

  BaseTrainResult result;
  std::string current = init_dir;  // the model the next stage starts from
  for (const auto& stage : opt.stages) {
    if (stage.steps <= 0) continue;
    const std::string stage_dir = opt.out_dir + "/stages/" + stage.name;
    if (fs::exists(stage_dir + "/done.json")) {
      current = stage_dir + "/model";
      result.total_steps_done += stage.steps;
      result.finished_stages.push_back(stage.name);
      continue;
    }
    auto model = models::LlavaModel::load(current);
    train::CausalLMTrainConfig cfg;
    cfg.conversation = train::conversation_template(opt.conversation_template, "conversation_template");
    cfg.max_steps = stage.steps;
    cfg.peak_lr = stage.lr;
    cfg.effective_batch = stage.batch;
    cfg.micro_batch_size = stage.micro_batch;
    cfg.max_length = opt.max_length;
    cfg.seed = opt.seed;
    cfg.save_every = opt.save_every;
    cfg.resume = opt.resume;
    cfg.progress = opt.progress;
    if (opt.stop_after_total_steps > 0) {
      const int64_t left = opt.stop_after_total_steps - result.total_steps_done;
      if (left <= 0) return result;
      if (left < stage.steps) cfg.stop_after_steps = left;
    }
    if (opt.progress) std::cerr << "stage " << stage.name << ": " << stage.trainable << " on " << stage.data << "\n";
    auto examples = stage_data(stage, data);
    if (stage.zoom_share > 0) {
      auto zoomed = zoom_conversations(examples, opt.world_dir, stage.zoom_share, model->info().vision_input_size,
                                       opt.seed, stage_dir + "/zoom");
      if (opt.progress) std::cerr << "stage " << stage.name << ": " << zoomed.size() << " two-slot zoom copies\n";
      examples.insert(examples.end(), std::make_move_iterator(zoomed.begin()), std::make_move_iterator(zoomed.end()));
    }
    auto r = train::train_causal_lm(*model, examples, trainable_of(stage), cfg, stage_dir);
    result.total_steps_done += r.steps_done;
    if (r.steps_done < stage.steps) return result;  // stopped early: a rerun resumes here
    models::save_llava_checkpoint(*model, current, stage_dir + "/model");
    io::write_json_atomic(stage_dir + "/done.json", {{"steps", r.steps_done}, {"last_loss", r.last_loss}});
    current = stage_dir + "/model";
    result.finished_stages.push_back(stage.name);
  }
  auto final_model = models::LlavaModel::load(current);
  models::save_llava_checkpoint(*final_model, current, opt.out_dir + "/model");
  result.model_dir = opt.out_dir + "/model";
  return result;
}

}  // namespace p2dpo::world
