// The world CLIP: HF-style random init, save/reload in the HF layout, the BPE learner, and a few
// contrastive training steps on tiny drawn images.
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>

#include "image/clip_processor.h"
#include "image/image.h"
#include "image/png_write.h"
#include "io/atomic_file.h"
#include "io/json_io.h"
#include "io/safetensors.h"
#include "image/decode.h"
#include "models/weights.h"
#include "models/clip.h"
#include "test_paths.h"
#include "test_util.h"
#include "text/clip_tokenizer.h"
#include "world/bpe_train.h"
#include "world/clip_train.h"
#include "world/world_text_fixture.h"

namespace p2dpo::world {
namespace {
namespace fs = std::filesystem;

io::ClipConfig tiny_config() {
  ClipTrainOptions o;
  o.image_size = 32;
  o.patch_size = 8;
  o.vision_width = 32;
  o.vision_layers = 2;
  o.vision_heads = 4;
  o.text_width = 32;
  o.text_layers = 2;
  o.text_heads = 4;
  o.text_positions = 16;
  o.projection_dim = 16;
  return world_clip_config(o, 100, 98, 99);
}

TEST(WorldClipModel, RandomInitFollowsHfInitAndOrder) {
  const auto cfg = tiny_config();
  const auto model = models::ClipModel::random_init(cfg, 5);
  const auto params = model->named_parameters();
  // HF CLIPModel.named_parameters(): text tower, vision tower, projections, logit_scale.
  ASSERT_GT(params.size(), 10u);
  EXPECT_EQ(params.front().first, "text_model.embeddings.token_embedding.weight");
  EXPECT_EQ(params[2].first, "text_model.encoder.layers.0.self_attn.k_proj.weight");
  EXPECT_EQ(params.back().first, "logit_scale");
  EXPECT_EQ(params[params.size() - 2].first, "text_projection.weight");
  // 2 embeddings + per layer 16 tensors + final LN (2), vision 3 + pre LN 2 + layers + post LN 2, 3 heads.
  EXPECT_EQ(params.size(), 2u + 2 * 16 + 2 + 3 + 2 + 2 * 16 + 2 + 3);
  std::set<std::string> names;
  for (const auto& [name, t] : params) {
    EXPECT_TRUE(names.insert(name).second) << "duplicate " << name;
    EXPECT_EQ(t.scalar_type(), torch::kFloat32);
    if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) {
      EXPECT_EQ(t.abs().max().item<float>(), 0.0f) << name;
    }
    if (name.find("layer_norm1.weight") != std::string::npos) EXPECT_TRUE(torch::equal(t, torch::ones_like(t)));
  }
  EXPECT_FLOAT_EQ(static_cast<float>(model->logit_scale()), 2.6592f);
  // Std per HF: q_proj D^-0.5 (2L)^-0.5 = 32^-0.5 / 2; fc1 (2D)^-0.5; token embedding 0.02.
  auto find = [&](const std::string& n) {
    for (const auto& [name, t] : params) {
      if (name == n) return t;
    }
    ADD_FAILURE() << "no " << n;
    return torch::Tensor();
  };
  EXPECT_NEAR(find("vision_model.encoder.layers.1.self_attn.q_proj.weight").std().item<double>(),
              std::pow(32.0, -0.5) / 2.0, 0.012);
  EXPECT_NEAR(find("text_model.encoder.layers.0.mlp.fc1.weight").std().item<double>(), std::pow(64.0, -0.5), 0.012);
  EXPECT_NEAR(find("text_model.embeddings.token_embedding.weight").std().item<double>(), 0.02, 0.003);
  EXPECT_NEAR(find("text_model.embeddings.token_embedding.weight").mean().item<double>(), 0.0, 0.003);
  // Different tensors draw from different streams.
  EXPECT_FALSE(torch::equal(find("vision_model.encoder.layers.0.self_attn.q_proj.weight"),
                            find("vision_model.encoder.layers.0.self_attn.k_proj.weight")));
}

TEST(WorldClipModel, SaveReloadGivesIdenticalWeightsAndFeatures) {
  const std::string dir = test::scratch_dir("clip-save");
  const auto cfg = tiny_config();
  const auto model = models::ClipModel::random_init(cfg, 11);
  model->save_pretrained(dir + "/a");
  const auto loaded = models::ClipModel::load(dir + "/a");
  const auto p0 = model->named_parameters();
  const auto p1 = loaded->named_parameters();
  ASSERT_EQ(p0.size(), p1.size());
  for (size_t i = 0; i < p0.size(); ++i) {
    EXPECT_EQ(p0[i].first, p1[i].first);
    EXPECT_TRUE(torch::equal(p0[i].second, p1[i].second)) << p0[i].first;
  }
  // The safetensors file holds exactly these keys.
  const auto file = io::SafetensorsFile::open(dir + "/a/model.safetensors");
  EXPECT_EQ(file->names().size(), p0.size());
  EXPECT_EQ(file->metadata().at("format"), "pt");

  torch::NoGradGuard ng;
  const auto pixels = torch::linspace(-2, 2, 2 * 3 * 32 * 32).view({2, 3, 32, 32});
  const auto ids = torch::tensor({98, 5, 7, 99, 99, 98, 9, 10, 11, 99}, torch::kLong).view({2, 5});
  const auto mask = torch::tensor({1, 1, 1, 1, 0, 1, 1, 1, 1, 1}, torch::kLong).view({2, 5});
  EXPECT_TRUE(torch::equal(model->image_features(pixels), loaded->image_features(pixels)));
  EXPECT_TRUE(torch::equal(model->text_features(ids, mask), loaded->text_features(ids, mask)));
  EXPECT_EQ(loaded->config().text.eos_token_id, 99);
  EXPECT_EQ(loaded->config().vision.patch_size, 8);

  // Same seed -> same bytes; another seed -> other weights.
  models::ClipModel::random_init(cfg, 11)->save_pretrained(dir + "/b");
  models::ClipModel::random_init(cfg, 12)->save_pretrained(dir + "/c");
  EXPECT_EQ(io::read_file(dir + "/a/model.safetensors"), io::read_file(dir + "/b/model.safetensors"));
  EXPECT_EQ(io::read_file(dir + "/a/config.json"), io::read_file(dir + "/b/config.json"));
  EXPECT_NE(io::read_file(dir + "/a/model.safetensors"), io::read_file(dir + "/c/model.safetensors"));
}

TEST(WorldClipModel, FixtureRoundTripsThroughSave) {
  // The HF fixture's tensors come back under the same keys after our save, so both directions
  // speak HF's layout.
  const std::string dir = test::scratch_dir("clip-fixture-save");
  const auto fixture = models::ClipModel::load(test::data_path("clip-tiny-s0"));
  fixture->save_pretrained(dir);
  const auto original = io::SafetensorsFile::open(test::data_path("clip-tiny-s0/model.safetensors"));
  std::vector<std::string> expected;
  for (const auto& n : original->names()) {
    if (!io::is_ignorable_buffer_key(n)) expected.push_back(n);
  }
  EXPECT_EQ(io::SafetensorsFile::open(dir + "/model.safetensors")->names(), expected);
  const auto reloaded = models::ClipModel::load(dir);
  const auto a = fixture->named_parameters();
  const auto b = reloaded->named_parameters();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i].second, b[i].second)) << a[i].first;
  EXPECT_EQ(reloaded->config().text.eos_token_id, 813);
  EXPECT_EQ(reloaded->config().vision.image_size, 56);
}

TEST(WorldClipBpe, LearnsWholeWordsThatClipTokenizerReads) {
  const std::string dir = test::scratch_dir("clip-bpe");
  auto texts = test::world_sentences();
  const auto vocab = learn_clip_bpe(texts, 400);
  EXPECT_GT(vocab.merges.size(), 20u);
  EXPECT_EQ(vocab.tokens.size(), static_cast<size_t>(vocab.eos_id + 1));
  EXPECT_EQ(vocab.tokens[static_cast<size_t>(vocab.bos_id)], "<|startoftext|>");
  EXPECT_EQ(vocab.tokens[0], "!");
  EXPECT_EQ(vocab.tokens[256], "!</w>");
  write_clip_tokenizer_files(dir, vocab, 32);
  const auto tok = text::ClipTokenizer::load(dir);
  EXPECT_EQ(tok.vocab_size(), vocab.tokens.size());
  EXPECT_EQ(tok.bos_id(), vocab.bos_id);
  EXPECT_EQ(tok.eos_id(), vocab.eos_id);
  EXPECT_EQ(tok.pad_id(), vocab.eos_id);
  EXPECT_EQ(tok.model_max_length(), 32);
  EXPECT_EQ(tok.tokenize("Is there a small red circle?"),
            (std::vector<std::string>{"is</w>", "there</w>", "a</w>", "small</w>", "red</w>", "circle</w>", "?</w>"}));
  for (const auto& s : texts) {
    const auto tokens = tok.tokenize(s);
    const auto ids = tok.encode(s);
    ASSERT_EQ(ids.size(), tokens.size() + 2);
    for (size_t i = 1; i + 1 < ids.size(); ++i) EXPECT_NE(ids[i], tok.unk_id()) << s << " token " << tokens[i - 1];
    // Concatenating the tokens gives back the pre-tokenizer's words.
    std::string joined, expected;
    for (const auto& t : tokens) joined += t;
    for (const auto& w : clip_pretokenize(s)) expected += w + "</w>";
    EXPECT_EQ(joined, expected);
  }
  // The result depends on the texts, not their order.
  std::reverse(texts.begin(), texts.end());
  const auto again = learn_clip_bpe(texts, 400);
  EXPECT_EQ(again.tokens, vocab.tokens);
  EXPECT_EQ(again.merges, vocab.merges);
  // Files as HF writes them: a version header, then one merge per line.
  const std::string merges = io::read_file(dir + "/merges.txt");
  EXPECT_EQ(merges.rfind("#version: 0.2\n", 0), 0u);
  EXPECT_EQ(static_cast<size_t>(std::count(merges.begin(), merges.end(), '\n')), vocab.merges.size() + 1);
}

// A tiny world: one shape per image on a gradient, captions naming colour and shape.
std::string make_tiny_world(const std::string& dir, int per_caption, int radius_scale = 1) {
  const char* colors[] = {"red", "green", "blue", "yellow"};
  const uint8_t rgb[4][3] = {{220, 30, 30}, {30, 200, 40}, {40, 60, 230}, {230, 220, 30}};
  const char* shapes[] = {"circle", "square"};
  std::string captions, scenes;
  int n = 0;
  for (int c = 0; c < 4; ++c) {
    for (int s = 0; s < 2; ++s) {
      for (int k = 0; k < per_caption; ++k, ++n) {
        const int w = 96 + 8 * (n % 3), h = 96 + 8 * ((n + 1) % 2);  // not always square
        image::ImageU8 img(w, h);
        const int cx = w / 2 + (k % 3 - 1) * 5, cy = h / 2 + (k % 2) * 4 - 2, r = (10 + (k % 3) * 2) * radius_scale;
        for (int y = 0; y < h; ++y) {
          for (int x = 0; x < w; ++x) {
            uint8_t* p = img.at(x, y);
            p[0] = static_cast<uint8_t>(90 + x / 2);
            p[1] = static_cast<uint8_t>(90 + y / 2);
            p[2] = static_cast<uint8_t>(120);
            const bool inside = s == 0 ? (x - cx) * (x - cx) + (y - cy) * (y - cy) <= r * r
                                       : std::abs(x - cx) <= r && std::abs(y - cy) <= r;
            if (inside) std::copy(rgb[c], rgb[c] + 3, p);
          }
        }
        const std::string rel = "images/train/train-" + std::to_string(n) + ".png";
        image::write_png_atomic(dir + "/" + rel, img);
        captions += nlohmann::json{{"image", rel}, {"caption", std::string("A ") + colors[c] + " " + shapes[s] + "."}}
                        .dump() +
                    "\n";
        const nlohmann::json object = {{"name", std::string("large ") + colors[c] + " " + shapes[s]},
                                       {"color", colors[c]},
                                       {"shape", shapes[s]},
                                       {"size", "large"},
                                       {"bbox", {cx - r, cy - r, cx + r + 1, cy + r + 1}}};
        scenes += nlohmann::json{{"id", n}, {"split", "train"}, {"image", rel}, {"objects", {object}}}.dump() + "\n";
      }
    }
  }
  io::write_file_atomic(dir + "/train/captions.jsonl", captions);
  io::write_file_atomic(dir + "/scenes.jsonl", scenes);
  return dir;
}

ClipTrainOptions tiny_train_options(const std::string& world, const std::string& out) {
  ClipTrainOptions o;
  o.world_dir = world;
  o.out_dir = out;
  o.image_size = 32;
  o.patch_size = 8;
  o.vision_width = 32;
  o.vision_layers = 2;
  o.vision_heads = 2;
  o.text_width = 32;
  o.text_layers = 2;
  o.text_heads = 2;
  o.text_positions = 16;
  o.projection_dim = 16;
  o.batch = 16;
  o.lr = 2e-3;
  o.warmup_steps = 2;
  o.log_every = 5;
  o.checkpoint_every = 7;
  o.seed = 3;
  o.quiet = true;
  o.threads = 1;
  return o;
}

// Trains `full` in one run, then the same options into `split_dir` stopped after `stop_after`
// steps and resumed, and expects identical weights. Returns the resumed run's options.
ClipTrainOptions expect_split_run_matches(const ClipTrainOptions& full, const std::string& split_dir, int64_t stop_after) {
  train_world_clip(full);
  auto split = full;
  split.out_dir = split_dir;
  split.stop_after = stop_after;
  EXPECT_EQ(train_world_clip(split).steps_done, stop_after);
  split.stop_after = -1;
  split.resume = true;
  const auto second = train_world_clip(split);
  EXPECT_EQ(second.steps_done, full.steps);
  EXPECT_EQ(second.steps_this_run, full.steps - stop_after);
  EXPECT_EQ(io::read_file(full.out_dir + "/model.safetensors"), io::read_file(split.out_dir + "/model.safetensors"));
  return split;
}

TEST(WorldClipTrain, FewStepsLowerTheLossAndSaveAnHfCheckpoint) {
  const std::string dir = test::scratch_dir("clip-train");
  const std::string world = make_tiny_world(dir + "/world", 3);
  auto o = tiny_train_options(world, dir + "/out");
  o.steps = 60;
  const auto result = train_world_clip(o);
  EXPECT_EQ(result.steps_done, 60);
  // 24 captions, plus per scene one existence question and one object crop (from scenes.jsonl).
  EXPECT_EQ(result.num_caption_pairs, 24);
  EXPECT_EQ(result.num_question_pairs, 24);
  EXPECT_EQ(result.num_crop_pairs, 24);
  EXPECT_EQ(result.num_pairs, 72);
  EXPECT_EQ(result.num_images, 48);
  EXPECT_LT(result.last_loss, result.first_loss * 0.8) << result.first_loss << " -> " << result.last_loss;

  for (const char* f : {"config.json", "model.safetensors", "preprocessor_config.json", "vocab.json", "merges.txt",
                        "tokenizer_config.json", "special_tokens_map.json", "metrics.jsonl", "train_args.json",
                        "checkpoint-last/optimizer.pt", "checkpoint-last/state.json"}) {
    EXPECT_TRUE(fs::exists(o.out_dir + "/" + f)) << f;
  }
  const auto metrics = io::read_jsonl_file(o.out_dir + "/metrics.jsonl");
  ASSERT_EQ(metrics.size(), 12u);
  EXPECT_EQ(metrics.back()["step"], 60);
  const auto model = models::ClipModel::load(o.out_dir);
  const auto tok = text::ClipTokenizer::load(o.out_dir);
  EXPECT_EQ(model->config().text.vocab_size, static_cast<int64_t>(tok.vocab_size()));
  EXPECT_EQ(model->config().text.eos_token_id, tok.eos_id());
  EXPECT_EQ(tok.tokenize("A yellow square."), (std::vector<std::string>{"a</w>", "yellow</w>", "square</w>", ".</w>"}));
  EXPECT_EQ(tok.tokenize("Is there a large red circle in the image?").size(), 10u);  // whole words
  EXPECT_NEAR(std::exp(model->logit_scale()), metrics.back()["logit_scale"].get<double>(), 1e-3);

  const auto proc = image::load_clip_processor_config(o.out_dir + "/preprocessor_config.json");
  EXPECT_EQ(proc.crop_height, 32);
  EXPECT_EQ(proc.shortest_edge, 32);

  // It has learnt the captions: each image's best caption (among the 8) is mostly its own.
  {
    torch::NoGradGuard ng;
    const char* colors[] = {"red", "green", "blue", "yellow"};
    const char* shapes[] = {"circle", "square"};
    std::vector<std::string> texts;
    for (const char* c : colors) {
      for (const char* s : shapes) texts.push_back(std::string("A ") + c + " " + s + ".");
    }
    const auto batch = tok.encode_batch(texts, 16);
    const auto ids = torch::tensor(batch.input_ids, torch::kLong).view({batch.batch, batch.length});
    const auto mask = torch::tensor(batch.attention_mask, torch::kLong).view({batch.batch, batch.length});
    std::vector<torch::Tensor> px;
    for (int n = 0; n < 24; ++n) {
      px.push_back(models::pixels_to_tensor(image::preprocess_clip(
          image::decode_image_file(world + "/images/train/train-" + std::to_string(n) + ".png"), proc)));
    }
    const auto scores = model->clip_score(model->text_features(ids, mask), model->image_features(torch::stack(px)));
    const auto best = scores.argmax(0);  // per image
    int correct = 0;
    for (int n = 0; n < 24; ++n) correct += best[n].item<int64_t>() == n / 3;
    EXPECT_GE(correct, 12) << "of 24 (chance: 3)";
  }

  // The crop sanity check runs on it: every object gets a question, an object crop and an empty crop.
  CropSanityOptions sanity;
  sanity.model_dir = o.out_dir;
  sanity.world_dir = world;
  sanity.split = "train";
  sanity.crop_side = 30;
  const auto r = clipscore_crop_sanity(sanity);
  EXPECT_EQ(r.all.questions + r.skipped_zero_whole + r.skipped_no_empty_crop, 24);
  EXPECT_GT(r.all.questions, 0);
  EXPECT_EQ(r.small.questions, 0);
  EXPECT_EQ(r.large.questions, r.all.questions);
  EXPECT_GT(r.all.mean_score_whole, 0.0);
  EXPECT_TRUE(std::isfinite(r.all.ratio_object.mean) && std::isfinite(r.all.ratio_empty.mean));
  EXPECT_LE(r.all.ratio_object.min, r.all.ratio_object.median);
  EXPECT_LE(r.all.ratio_object.median, r.all.ratio_object.max);
  EXPECT_NEAR(r.all.diff_object.mean, r.all.mean_score_object - r.all.mean_score_whole, 1e-9);
  const auto j = crop_sanity_json(sanity, r);
  EXPECT_EQ(j["all"]["questions"], r.all.questions);
  sanity.split = "eval";
  EXPECT_NE(test::error_of([&] { clipscore_crop_sanity(sanity); }).find("no usable objects"), std::string::npos);
}

TEST(WorldClipTrain, HardNegativesSwapTheShapeOfNamedObjects) {
  const std::string dir = test::scratch_dir("clip-train-hardneg");
  const std::string world = make_tiny_world(dir + "/world", 2);
  auto o = tiny_train_options(world, dir + "/out");
  o.steps = 6;
  o.hard_negatives = true;
  const auto result = train_world_clip(o);
  // Questions ("Is there a large red circle ...") and crops ("a large red circle") name the scene's
  // object, so each gets "... large red square ..."; the captions ("A red circle.") do not spell the
  // object's full name and get none.
  EXPECT_EQ(result.num_question_pairs + result.num_crop_pairs, 32);
  EXPECT_EQ(result.num_hard_negatives, 32);
  EXPECT_TRUE(std::isfinite(result.last_loss));
  const auto args = io::read_json_file(o.out_dir + "/train_args.json");
  EXPECT_EQ(args["num_hard_negatives"], 32);
  EXPECT_EQ(args["options"]["hard_negatives"], true);
  // The tokenizer learnt from the negatives too: they are ordinary texts.
  const auto tok = text::ClipTokenizer::load(o.out_dir);
  for (const auto& t : tok.tokenize("Is there a large red square in the image?")) EXPECT_NE(t, "<|endoftext|>");

  // A run without them cannot be resumed with them (a different loss).
  auto plain = tiny_train_options(world, dir + "/plain");
  plain.steps = 4;
  plain.stop_after = 2;
  train_world_clip(plain);
  plain.resume = true;
  plain.hard_negatives = true;
  EXPECT_NE(test::error_of([&] { train_world_clip(plain); }).find("hard_negatives"), std::string::npos);
}

TEST(WorldClipTrain, ResumeContinuesBitIdentically) {
  const std::string dir = test::scratch_dir("clip-resume");
  const std::string world = make_tiny_world(dir + "/world", 2);
  auto full = tiny_train_options(world, dir + "/full");
  full.steps = 10;
  full.batch = 8;
  const auto split = expect_split_run_matches(full, dir + "/split", 4);

  // A changed seed cannot resume this checkpoint.
  auto wrong = split;
  wrong.seed = 99;
  EXPECT_NE(test::error_of([&] { train_world_clip(wrong); }).find("seed"), std::string::npos);
}

TEST(WorldClipTrain, DensePatchLabelsFollowTheProcessorsResizeAndCrop) {
  // 200 x 100 image, input 32, patch 8: short side 100 -> 32 (scale 0.32), width 64, centre crop
  // from x = 16. Model-input pixel m is original x = (m + 16) / 0.32, y = m / 0.32.
  const std::vector<std::string> classes = {"blue circle", "green bar", "red square"};
  std::vector<DenseLabelObject> objects = {
      {"red square", 50, 0, 100, 50},    // model [0, 16) x [0, 16): four whole patches
      {"blue circle", 131, 81, 138, 88}, // model ~[26, 28) square: half a patch, inside patch (3, 3)
      {"green bar", 50, 63, 150, 69},    // model [0, 32) x ~[20.2, 22.1): a quarter of each row-2 patch
      {"red square", 0, 0, 10, 10},      // left of the crop: invisible to the model
  };
  const auto labels = dense_patch_labels(objects, 200, 100, 32, 8, classes);
  const std::vector<int64_t> expected = {3, 3, 0, 0,                   //
                                         3, 3, 0, 0,                   //
                                         -100, -100, -100, -100,       // neither object nor background
                                         0, 0, 0, 1};
  EXPECT_EQ(labels, expected);
  objects.push_back({"purple star", 150, 50, 160, 60});
  EXPECT_NE(test::error_of([&] { dense_patch_labels(objects, 200, 100, 32, 8, classes); }).find("purple star"),
            std::string::npos);
}

TEST(WorldClipTrain, DenseAuxLossLearnsPatchClassesOutsideTheHfCheckpointAndResumes) {
  const std::string dir = test::scratch_dir("clip-train-dense");
  const std::string world = make_tiny_world(dir + "/world", 3, /*radius_scale=*/2);  // objects span patches
  auto o = tiny_train_options(world, dir + "/out");
  o.steps = 100;
  o.dense_aux_weight = 1.0;
  const auto result = train_world_clip(o);
  EXPECT_EQ(result.num_dense_classes, 9);  // 4 colours x 2 shapes + background
  const auto metrics = io::read_jsonl_file(o.out_dir + "/metrics.jsonl");
  ASSERT_EQ(metrics.size(), 20u);
  // The head learns (measured on this tiny tower: object-patch accuracy 0.19 -> 0.41 over 100
  // steps, chance 1/8; loss 2.1 -> 0.42).
  const double first_acc = metrics.front()["dense_object_patch_accuracy"].get<double>();
  EXPECT_GT(metrics.back()["dense_object_patch_accuracy"].get<double>(), first_acc + 0.12);
  EXPECT_LT(metrics.back()["dense_loss"].get<double>(), 0.4 * metrics.front()["dense_loss"].get<double>());
  EXPECT_TRUE(fs::exists(o.out_dir + "/checkpoint-last/dense_head.pt"));
  const auto args = io::read_json_file(o.out_dir + "/train_args.json");
  EXPECT_EQ(args["dense_classes"].size(), 8u);
  // The HF checkpoint holds exactly CLIPModel's tensors: the head is training state only.
  const auto model = models::ClipModel::load(o.out_dir);
  const auto fresh = models::ClipModel::random_init(model->config(), 0);
  EXPECT_EQ(model->named_parameters().size(), fresh->named_parameters().size());

  // Resume with the head continues bit-identically.
  auto full = tiny_train_options(world, dir + "/full");
  full.steps = 8;
  full.batch = 8;
  full.dense_aux_weight = 0.5;
  expect_split_run_matches(full, dir + "/split", 3);
  // ... and a checkpoint trained without it cannot resume with it.
  auto plain = tiny_train_options(world, dir + "/plain");
  plain.steps = 4;
  plain.stop_after = 2;
  train_world_clip(plain);
  plain.resume = true;
  plain.dense_aux_weight = 1.0;
  EXPECT_NE(test::error_of([&] { train_world_clip(plain); }).find("dense_aux_weight"), std::string::npos);
}

TEST(WorldClipTrain, BadInputsNameTheProblem) {
  const std::string dir = test::scratch_dir("clip-bad");
  auto o = tiny_train_options(dir + "/nowhere", dir + "/out");
  o.steps = 2;
  EXPECT_NE(test::error_of([&] { train_world_clip(o); }).find("captions.jsonl"), std::string::npos);
  const std::string world = make_tiny_world(dir + "/world", 1);
  o.world_dir = world;
  o.batch = 25;  // 8 captions + 8 questions + 8 crops
  EXPECT_NE(test::error_of([&] { train_world_clip(o); }).find("--batch"), std::string::npos);
  o.batch = 4;
  o.resume = true;
  EXPECT_NE(test::error_of([&] { train_world_clip(o); }).find("--resume"), std::string::npos);
  o.resume = false;
  o.batch = 1;
  EXPECT_NE(test::error_of([&] { train_world_clip(o); }).find("--batch"), std::string::npos);
}

}  // namespace
}  // namespace p2dpo::world
