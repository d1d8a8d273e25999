#pragma once
// `p2dpo world train-clip`: a tiny CLIP (both towers) trained contrastively on the world's images
// and captions, saved in the HF CLIPModel layout. Its vision tower becomes the base LLaVA's vision
// tower; the whole model is the CLIPScore model for dynamic deficit weighting.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/hf_config.h"

namespace p2dpo::world {

struct ClipTrainOptions {
  std::string world_dir;  // reads train/captions.jsonl ({"image","caption"}, image relative to it)
                          // and, when present, text/corpus.txt (more text for the BPE vocabulary)
  std::string out_dir;    // the HF checkpoint; training state lives in out_dir/checkpoint-last/
  int64_t steps = 2000;
  int64_t batch = 64;
  double lr = 5e-4;
  double weight_decay = 0.1;   // on weight matrices only (not biases, norms, embeddings, logit_scale)
  int64_t warmup_steps = -1;   // -1: 5 % of steps; then cosine decay to 0
  double max_grad_norm = 1.0;  // <= 0: no clipping
  uint64_t seed = 0;           // init, data order: the same seed gives the same run on one machine
  bool resume = false;         // continue from out_dir/checkpoint-last (bit-identical on CPU)
  int64_t stop_after = -1;     // > 0: stop (with a checkpoint) after this many steps of this run,
                               // to split a long run into sessions; --resume continues it
  int64_t checkpoint_every = 200;
  int64_t log_every = 10;
  int threads = 0;  // torch intra-op threads; 0 = leave libtorch's default
  bool quiet = false;  // no progress lines on stderr

  // Architecture (library defaults ViT 96/16; `p2dpo world train-clip` takes side and patch from world.json).
  int64_t image_size = 96, patch_size = 16;
  int64_t vision_width = 128, vision_layers = 4, vision_heads = 4;
  int64_t text_width = 128, text_layers = 4, text_heads = 4, text_positions = 32;
  int64_t projection_dim = 128;
  int bpe_merges = 400;  // upper bound; the world's text usually runs out of pairs first
  // With the world's scenes.jsonl: per train scene also one existence question about a present
  // object ("Is there a {name} in the image?", whole image) and one object-centred crop paired with
  // "a {name}". Without them the CLIP never sees questions or zoomed views, yet CLIPScore is taken
  // between prompts and crops (dynamic deficit weighting).
  bool augment = true;
  // With the world's scenes.jsonl: each pair also gets a fixed hard-negative text, its own text with
  // one named object's shape swapped for another (colour and size kept, the new object absent from
  // the image), as NegCLIP does. The image->text loss must prefer the true text over it. Without
  // it the contrastive loss is mostly satisfied by colours (few batch texts differ only in a
  // shape), and the tower that becomes the base model's eye tells shapes apart poorly. The CLI
  // turns it on (--no-hard-negatives off); the library default stays off so plain calls are HF's loss.
  bool hard_negatives = false;
  // With the world's scenes.jsonl: dense auxiliary supervision of the patch tokens that LLaVA reads.
  // A linear head on hidden state `dense_aux_layer` (HF hidden_states index; -2 is LLaVA-1.5's
  // vision_feature_layer) classifies each patch of a whole-image view as the object class
  // ("red star", from the exact boxes mapped through the processor's resize and crop) covering it,
  // or background; the cross-entropy is added to the contrastive loss with this weight (0 = off).
  // Why: contrastive captions alone leave the tokens coding colour far better than shape, and the
  // base model then answers "is there a red star" from the colour (measured: 52 % "yes" when the
  // only red object is a large one of another shape). Real CLIP learnt localised object features
  // from 400M pairs; the world's CLIP has 6000 images, and its labels are exact. The head is not
  // part of the HF checkpoint (it lives in checkpoint-last/ for resume only). The CLI turns it on.
  double dense_aux_weight = 0.0;
  int dense_aux_layer = -2;
};

struct ClipTrainResult {
  int64_t steps_done = 0;     // total, including steps before a resume
  int64_t steps_this_run = 0;
  double last_loss = 0.0;     // mean over the last log window
  double first_loss = 0.0;    // mean over the first log window of this run
  double seconds = 0.0;       // wall time of this run's steps (without data loading)
  int64_t num_pairs = 0;      // training pairs (captions + questions + crops)
  int64_t num_images = 0;     // distinct views (images + crops)
  int64_t num_caption_pairs = 0, num_question_pairs = 0, num_crop_pairs = 0;
  int64_t num_hard_negatives = 0;  // pairs with a shape-swapped negative text (hard_negatives)
  int64_t num_dense_classes = 0;   // dense_aux_weight > 0: object classes + background
  double last_dense_accuracy = 0;  // patch accuracy over labelled patches, last log window
};

// One object of a scene, for dense_patch_labels: its class ("red star") and box in original pixels
// ([x0, x1) x [y0, y1)).
struct DenseLabelObject {
  std::string cls;
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};

// The dense auxiliary labels of one whole-image view (ClipTrainOptions::dense_aux_weight), row-major
// over the (side / patch)^2 patches of the processed input: the object boxes are mapped through the
// world CLIP processor's resize (short side to `side`) and centre crop; a patch gets 1 + the index
// in `sorted_classes` of the object covering at least half of it (or lying at least half inside it,
// for objects smaller than a patch), 0 (background) when no object covers a tenth of it, and -100
// (ignored by the loss) in between.
std::vector<int64_t> dense_patch_labels(const std::vector<DenseLabelObject>& objects, int width, int height,
                                        int64_t side, int64_t patch, const std::vector<std::string>& sorted_classes);

// The architecture `opts` asks for, with the tokenizer's vocabulary size and special ids.
io::ClipConfig world_clip_config(const ClipTrainOptions& opts, int64_t vocab_size, int64_t bos_id, int64_t eos_id);

// Trains and writes out_dir/{config.json, model.safetensors, preprocessor_config.json, vocab.json,
// merges.txt, tokenizer_config.json, special_tokens_map.json, metrics.jsonl, train_args.json}.
//
// Loss: HF CLIPModel's symmetric InfoNCE with the learnable logit_scale (clamped at ln 100 as
// OpenAI CLIP), with one change the world needs: every batch image a text is true of counts as its
// positive (soft targets spread evenly over them), because many world scenes share a caption and a
// question holds for every image with its object; HF's arange labels would push those apart. A
// caption is true of images with exactly its scene's objects, a question or "a {name}" of images
// holding the object. With distinct captions and no augmentation this is exactly HF's clip_loss.
// Bad inputs (missing files, empty captions, a batch larger than the data, a resume without a
// checkpoint or with different architecture) throw InputError naming the file or flag.
ClipTrainResult train_world_clip(const ClipTrainOptions& opts);

// CLIPScore sanity on the world (issue 3; the shape of the paper's Table 6): for existence
// questions "Is there a {name} in the image?" about objects of held-out scenes, compare
// CLIPScore (100 * max(cos, 0), torchmetrics' convention) of the question with
//   - the whole image,
//   - a square crop centred on the named object (side = crop_side original pixels, or 1.5x the
//     object's side when larger; shifted to stay inside the image),
//   - a crop of the same side elsewhere that touches no object (or, failing that, no object of
//     the named class), the farthest such position from the object.
// A CLIP that grounds words in pixels gives mean ratio crop/whole > 1 and empty/whole < 1.
struct CropSanityOptions {
  std::string model_dir;     // world CLIP in HF layout (config, weights, tokenizer, processor)
  std::string world_dir;     // reads scenes.jsonl
  std::string split = "eval";
  int64_t max_questions = 1000;  // objects considered, in scenes.jsonl order
  int64_t crop_side = 96;        // the model input side in original pixels (the P2-DPO base box)
};

// Table 6's columns for one sample.
struct SampleStats {
  double mean = 0, median = 0, std = 0, min = 0, max = 0;
};

struct CropSanityGroup {
  int64_t questions = 0;
  double mean_score_whole = 0, mean_score_object = 0, mean_score_empty = 0;
  SampleStats ratio_object, ratio_empty;  // CLIPScore(q, crop) / CLIPScore(q, whole), per question
  SampleStats diff_object, diff_empty;    // CLIPScore(q, crop) - CLIPScore(q, whole)
  double share_ratio_object_above_1 = 0, share_ratio_empty_below_1 = 0;
};

struct CropSanityResult {
  CropSanityGroup all, small, large;  // by the named object's size
  int64_t skipped_zero_whole = 0;     // whole-image CLIPScore 0: the ratio is undefined
  int64_t skipped_no_empty_crop = 0;  // no crop position clear of the named class
};

CropSanityResult clipscore_crop_sanity(const CropSanityOptions& opts);
nlohmann::json crop_sanity_json(const CropSanityOptions& opts, const CropSanityResult& r);

// The CLIPImageProcessor config the world CLIP ships (resize shortest edge, centre crop, CLIP
// mean/std), written as preprocessor_config.json.
void write_clip_preprocessor_config(const std::string& dir, int64_t image_size);

}  // namespace p2dpo::world
