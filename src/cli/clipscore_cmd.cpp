// p2dpo clipscore: 100 * max(cos, 0) between every text and image with an HF CLIPModel.
#include <torch/types.h>
#include <torch/utils.h>

#include <filesystem>

#include "cli/commands.h"
#include "cli/common.h"
#include "image/clip_processor.h"
#include "image/decode.h"
#include "io/errors.h"
#include "models/clip.h"
#include "models/weights.h"
#include "text/clip_tokenizer.h"

namespace p2dpo::cli {

void register_clipscore(CLI::App& app) {
  struct Opts {
    std::string model_dir;
    std::vector<std::string> images, texts;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("clipscore", "CLIPScore matrix (rows: texts, columns: images)");
  cmd->add_option("--model", o->model_dir, "HF CLIPModel directory")->required();
  cmd->add_option("--image", o->images, "image file(s)")->required();
  cmd->add_option("--text", o->texts, "text(s)")->required();
  cmd->add_flag("--json", o->json, "print JSON");
  cmd->callback([o]() {
    namespace fs = std::filesystem;
    torch::NoGradGuard ng;
    auto model = models::ClipModel::load(o->model_dir);
    auto tok = text::ClipTokenizer::load(o->model_dir);
    auto proc = image::load_clip_processor_config((fs::path(o->model_dir) / "preprocessor_config.json").string());
    std::vector<torch::Tensor> px;
    for (const auto& p : o->images) {
      px.push_back(models::pixels_to_tensor(image::preprocess_clip(image::decode_image_file(p), proc)));
    }
    auto batch = tok.encode_batch(o->texts, model->config().text.max_position_embeddings);
    const int64_t n = static_cast<int64_t>(batch.batch);
    const int64_t L = static_cast<int64_t>(batch.length);
    auto ids = torch::tensor(batch.input_ids, torch::kLong).view({n, L});
    auto mask = torch::tensor(batch.attention_mask, torch::kLong).view({n, L});
    auto tf = model->text_features(ids, mask);
    auto imf = model->image_features(torch::stack(px));
    auto score = model->clip_score(tf, imf).to(torch::kCPU, torch::kFloat64).contiguous();
    nlohmann::json j;
    j["texts"] = o->texts;
    j["images"] = o->images;
    std::vector<std::vector<double>> rows;
    const double* data = score.data_ptr<double>();
    for (int64_t t = 0; t < n; ++t) rows.emplace_back(data + t * score.size(1), data + (t + 1) * score.size(1));
    j["clip_score"] = rows;
    print_result(j, o->json);
  });
}

}  // namespace p2dpo::cli
