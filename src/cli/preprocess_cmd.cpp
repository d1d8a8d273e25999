// p2dpo preprocess: the exact pixel tensor a model will see, as safetensors (and a PNG view).
#include <torch/types.h>
#include <torch/utils.h>

#include "cli/commands.h"
#include "cli/common.h"
#include "image/decode.h"
#include "image/png_write.h"
#include "io/errors.h"
#include "io/safetensors.h"

namespace p2dpo::cli {

void register_preprocess(CLI::App& app) {
  struct Opts {
    ModelFlags model;
    std::string image, out, png;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("preprocess", "Write the model's view of an image (pixel_values)");
  o->model.add(cmd);
  cmd->add_option("--image", o->image, "image file")->required();
  cmd->add_option("--out", o->out, "output .safetensors (key pixel_values, [1, 3, H, W] float32)")->required();
  cmd->add_option("--png", o->png, "also write the resized/cropped uint8 view as PNG");
  cmd->add_flag("--json", o->json, "print JSON");
  cmd->callback([o]() {
    auto model = o->model.load();
    auto prepared = model->prepare_image(image::decode_image_file(o->image));
    auto px = prepared.pixel_values.contiguous().to(torch::kFloat32);
    io::TensorToWrite t{"pixel_values", io::DType::F32, {1, px.size(0), px.size(1), px.size(2)},
                        px.data_ptr<float>(), static_cast<size_t>(px.numel()) * sizeof(float)};
    io::write_safetensors(o->out, {t}, {{"format", "pt"}});
    if (!o->png.empty()) image::write_png_atomic(o->png, prepared.view);
    nlohmann::json j;
    j["out"] = o->out;
    j["shape"] = {1, px.size(0), px.size(1), px.size(2)};
    j["original_size"] = {prepared.orig_width, prepared.orig_height};
    if (!o->png.empty()) j["png"] = o->png;
    print_result(j, o->json);
  });
}

}  // namespace p2dpo::cli
