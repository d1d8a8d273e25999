#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "io/errors.h"
#include "io/hf_config.h"
#include "io/json_io.h"
#include "io/safetensors.h"
#include "test_paths.h"
#include "test_util.h"

using nlohmann::json;
using p2dpo::InputError;
namespace io = p2dpo::io;

namespace {
using p2dpo::test::error_of;

json tiny_llava_json() { return io::read_json_file(p2dpo::test::data_path("llava-tiny-s0/config.json")); }

}  // namespace

// Values from tests/data/llava-tiny-*/README.md ("Model" section).
void expect_tiny_llava(const io::LlavaConfig& c, int64_t kv_heads) {
  EXPECT_EQ(c.vision.image_size, 56);
  EXPECT_EQ(c.vision.patch_size, 14);
  EXPECT_EQ(c.vision.num_patches(), 16);
  EXPECT_EQ(c.vision.hidden_size, 32);
  EXPECT_EQ(c.vision.num_hidden_layers, 3);
  EXPECT_EQ(c.vision.num_attention_heads, 4);
  EXPECT_EQ(c.vision.intermediate_size, 64);
  EXPECT_EQ(c.vision.hidden_act, "quick_gelu");
  EXPECT_DOUBLE_EQ(c.vision.layer_norm_eps, 1e-5);
  EXPECT_EQ(c.text.vocab_size, 400);
  EXPECT_EQ(c.text.hidden_size, 64);
  EXPECT_EQ(c.text.num_hidden_layers, 2);
  EXPECT_EQ(c.text.num_attention_heads, 4);
  EXPECT_EQ(c.text.num_key_value_heads, kv_heads);
  EXPECT_EQ(c.text.head_dim, 16);
  EXPECT_EQ(c.text.intermediate_size, 128);
  EXPECT_EQ(c.text.hidden_act, "silu");
  EXPECT_DOUBLE_EQ(c.text.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.text.rope_theta, 10000.0);
  EXPECT_EQ(c.text.rope_scaling.type, "default");
  EXPECT_FALSE(c.text.tie_word_embeddings);
  EXPECT_FALSE(c.text.attention_bias);
  EXPECT_FALSE(c.text.mlp_bias);
  EXPECT_EQ(c.text.eos_token_ids, (std::vector<int64_t>{2}));
  EXPECT_EQ(c.image_token_index, 384);
  EXPECT_EQ(c.vision_feature_layers, (std::vector<int64_t>{-2}));
  EXPECT_FALSE(c.vision_feature_layer_is_list);
  EXPECT_EQ(c.vision_feature_select_strategy, "default");
  EXPECT_EQ(c.projector_hidden_act, "gelu");
  EXPECT_TRUE(c.multimodal_projector_bias);
  EXPECT_EQ(c.image_seq_length, 16);
  ASSERT_TRUE(c.pad_token_id.has_value());
  EXPECT_EQ(*c.pad_token_id, 385);
}

TEST(HfConfig, TinyLlavaFixtures) {
  expect_tiny_llava(io::load_llava_config(p2dpo::test::data_path("llava-tiny-s0")), 4);
  expect_tiny_llava(io::load_llava_config(p2dpo::test::data_path("llava-tiny-sharp-s0/config.json")), 4);
  expect_tiny_llava(io::load_llava_config(p2dpo::test::data_path("llava-tiny-gqa-s0")), 2);
}

TEST(HfConfig, TinyClipFixture) {
  // tests/data/clip-tiny-s0/README.md: the file omits many keys, so HF defaults fill them in.
  auto c = io::load_clip_config(p2dpo::test::data_path("clip-tiny-s0"));
  EXPECT_EQ(c.vision.image_size, 56);
  EXPECT_EQ(c.vision.patch_size, 14);
  EXPECT_EQ(c.vision.hidden_size, 32);
  EXPECT_EQ(c.vision.num_hidden_layers, 3);
  EXPECT_EQ(c.vision.num_attention_heads, 4);
  EXPECT_EQ(c.vision.head_dim(), 8);
  EXPECT_EQ(c.vision.intermediate_size, 64);
  EXPECT_EQ(c.vision.hidden_act, "quick_gelu");
  EXPECT_DOUBLE_EQ(c.vision.layer_norm_eps, 1e-5);
  EXPECT_EQ(c.text.vocab_size, 814);
  EXPECT_EQ(c.text.max_position_embeddings, 32);
  EXPECT_EQ(c.text.hidden_size, 32);
  EXPECT_EQ(c.text.num_hidden_layers, 2);
  EXPECT_EQ(c.text.num_attention_heads, 4);
  EXPECT_EQ(c.text.intermediate_size, 64);
  EXPECT_EQ(c.text.hidden_act, "quick_gelu");
  EXPECT_EQ(c.text.bos_token_id, 812);
  EXPECT_EQ(c.text.eos_token_id, 813);
  EXPECT_EQ(c.text.pad_token_id, 813);
  EXPECT_EQ(c.projection_dim, 16);
  EXPECT_DOUBLE_EQ(c.logit_scale_init_value, 2.6592);
}

TEST(HfConfig, Llava15PartialConfigUsesClassDefaults) {
  auto c = io::load_llava_config(p2dpo::test::data_path("io/llava-1.5-7b-config.json"));
  EXPECT_DOUBLE_EQ(c.text.rms_norm_eps, 1e-5);  // from the file, not LlamaConfig's 1e-6
  EXPECT_EQ(c.text.num_hidden_layers, 32);
  EXPECT_EQ(c.text.hidden_size, 4096);
  EXPECT_EQ(c.text.intermediate_size, 11008);
  EXPECT_EQ(c.text.num_attention_heads, 32);
  EXPECT_EQ(c.text.num_key_value_heads, 32);
  EXPECT_EQ(c.text.head_dim, 128);
  EXPECT_EQ(c.text.vocab_size, 32064);
  EXPECT_EQ(c.text.max_position_embeddings, 4096);
  EXPECT_DOUBLE_EQ(c.text.rope_theta, 10000.0);
  EXPECT_EQ(c.text.hidden_act, "silu");
  EXPECT_EQ(c.text.bos_token_id, 1);
  EXPECT_EQ(c.text.eos_token_ids, (std::vector<int64_t>{2}));
  EXPECT_FALSE(c.text.pad_token_id.has_value());
  EXPECT_EQ(c.vision.hidden_size, 1024);
  EXPECT_EQ(c.vision.num_hidden_layers, 24);
  EXPECT_EQ(c.vision.head_dim(), 64);
  EXPECT_EQ(c.vision.num_patches(), 576);
  EXPECT_EQ(c.vision.hidden_act, "quick_gelu");
  EXPECT_EQ(c.vision.num_channels, 3);
  EXPECT_EQ(c.image_token_index, 32000);
  EXPECT_EQ(c.image_seq_length, 576);
  EXPECT_TRUE(c.multimodal_projector_bias);
  EXPECT_EQ(*c.pad_token_id, 32001);
}

TEST(HfConfig, EmptyNestedConfigsGiveHfDefaults) {
  json j = {{"model_type", "llava"}, {"text_config", json::object()}, {"vision_config", json::object()}};
  auto c = io::parse_llava_config(j, "config.json");
  EXPECT_EQ(c.text.vocab_size, 32000);
  EXPECT_DOUBLE_EQ(c.text.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.text.max_position_embeddings, 2048);
  EXPECT_EQ(c.text.head_dim, 128);
  EXPECT_EQ(c.vision.hidden_size, 768);
  EXPECT_EQ(c.vision.patch_size, 32);
  EXPECT_EQ(c.vision.image_size, 224);
  EXPECT_EQ(c.vision.projection_dim, 512);
  EXPECT_EQ(c.image_token_index, 32000);
  EXPECT_EQ(c.vision_feature_layers, (std::vector<int64_t>{-2}));
  EXPECT_EQ(c.projector_hidden_act, "gelu");
  EXPECT_EQ(c.image_seq_length, 576);

  auto clip = io::parse_clip_config({{"text_config", json::object()}, {"vision_config", json::object()}}, "c.json");
  EXPECT_EQ(clip.text.vocab_size, 49408);
  EXPECT_EQ(clip.text.hidden_size, 512);
  EXPECT_EQ(clip.text.num_attention_heads, 8);
  EXPECT_EQ(clip.text.max_position_embeddings, 77);
  EXPECT_EQ(clip.text.bos_token_id, 49406);
  EXPECT_EQ(clip.text.eos_token_id, 49407);
  EXPECT_EQ(clip.text.pad_token_id, 1);
  EXPECT_EQ(clip.vision.intermediate_size, 3072);
  EXPECT_EQ(clip.projection_dim, 512);
}

TEST(HfConfig, LlamaVariants) {
  // GQA, explicit head_dim, eos list, null pad, aliases and rope variants.
  json t = {{"hidden_size", 64},       {"num_attention_heads", 8},  {"num_key_value_heads", 2},
            {"head_dim", 32},          {"eos_token_id", {2, 7}},    {"pad_token_id", nullptr},
            {"rope_scaling", {{"type", "linear"}, {"factor", 2.0}}}};
  auto c = io::parse_llama_config(t, "c.json");
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{2, 7}));
  EXPECT_FALSE(c.pad_token_id.has_value());
  EXPECT_EQ(c.rope_scaling.type, "linear");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 2.0);

  // transformers >= 5: rope_parameters replaces rope_theta / rope_scaling.
  auto n = io::parse_llama_config(
      {{"hidden_size", 64}, {"num_attention_heads", 4}, {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", 500000.0}}}},
      "c.json");
  EXPECT_DOUBLE_EQ(n.rope_theta, 500000.0);
  EXPECT_EQ(n.rope_scaling.type, "default");
  EXPECT_EQ(n.num_key_value_heads, 4);

  // Unsupported scaling types stay representable so the model can refuse them by name.
  auto y = io::parse_llama_config({{"rope_scaling", {{"rope_type", "yarn"}, {"factor", 4}}}}, "c.json");
  EXPECT_EQ(y.rope_scaling.type, "yarn");
  EXPECT_DOUBLE_EQ(y.rope_scaling.factor, 4.0);
}

TEST(HfConfig, LlavaVariants) {
  json j = tiny_llava_json();
  j.erase("image_token_index");
  j["image_token_id"] = 390;
  j["vision_feature_layer"] = {-2, -1};
  j["vision_feature_select_strategy"] = "full";
  auto c = io::parse_llava_config(j, "config.json");
  EXPECT_EQ(c.image_token_index, 390);
  EXPECT_TRUE(c.vision_feature_layer_is_list);
  EXPECT_EQ(c.vision_feature_layers, (std::vector<int64_t>{-2, -1}));
  EXPECT_EQ(c.vision_feature_select_strategy, "full");
}

TEST(HfConfig, BadInputNamesFileAndField) {
  json j = tiny_llava_json();
  j.erase("text_config");
  EXPECT_EQ(error_of([&] { io::parse_llava_config(j, "m/config.json"); }),
            "m/config.json: missing required field 'text_config'");

  j = tiny_llava_json();
  j["text_config"]["hidden_size"] = "64";
  EXPECT_EQ(error_of([&] { io::parse_llava_config(j, "m/config.json"); }),
            "m/config.json: field 'text_config.hidden_size': expected integer, got string");

  j = tiny_llava_json();
  j["vision_config"]["layer_norm_eps"] = "tiny";
  EXPECT_EQ(error_of([&] { io::parse_llava_config(j, "m/config.json"); }),
            "m/config.json: field 'vision_config.layer_norm_eps': expected number, got string");

  j = tiny_llava_json();
  j["text_config"]["num_key_value_heads"] = 3;
  EXPECT_NE(error_of([&] { io::parse_llava_config(j, "m/config.json"); }).find("field 'text_config.num_key_value_heads'"),
            std::string::npos);

  j = tiny_llava_json();
  j["vision_config"]["num_attention_heads"] = 5;
  EXPECT_EQ(error_of([&] { io::parse_llava_config(j, "m/config.json"); }),
            "m/config.json: field 'vision_config.hidden_size': 32 is not divisible by "
            "vision_config.num_attention_heads 5");

  j = tiny_llava_json();
  j["text_config"]["num_hidden_layers"] = 0;
  EXPECT_EQ(error_of([&] { io::parse_llava_config(j, "m/config.json"); }),
            "m/config.json: field 'text_config.num_hidden_layers': must be positive, got 0");

  j = tiny_llava_json();
  j["model_type"] = "qwen2_5_vl";
  EXPECT_NE(error_of([&] { io::parse_llava_config(j, "m/config.json"); }).find("unsupported model type 'qwen2_5_vl'"),
            std::string::npos);

  j = tiny_llava_json();
  j["text_config"]["model_type"] = "mistral";
  EXPECT_NE(error_of([&] { io::parse_llava_config(j, "m/config.json"); })
                .find("field 'text_config.model_type': unsupported model type 'mistral'"),
            std::string::npos);

  j = tiny_llava_json();
  j["vision_feature_select_strategy"] = "cls";
  EXPECT_NE(error_of([&] { io::parse_llava_config(j, "m/config.json"); }).find("field 'vision_feature_select_strategy'"),
            std::string::npos);

  j = tiny_llava_json();
  j["vision_feature_layer"] = -5;  // 3 layers -> hidden_states has 4 entries
  EXPECT_NE(error_of([&] { io::parse_llava_config(j, "m/config.json"); }).find("field 'vision_feature_layer': -5"),
            std::string::npos);

  j = tiny_llava_json();
  j["image_token_index"] = -1;
  EXPECT_NE(error_of([&] { io::parse_llava_config(j, "m/config.json"); }).find("field 'image_token_index': must be non-negative"),
            std::string::npos);

  j = tiny_llava_json();
  j["text_config"]["rope_scaling"] = {{"type", "linear"}, {"factor", -1}};
  EXPECT_NE(error_of([&] { io::parse_llava_config(j, "m/config.json"); }).find("field 'text_config.rope_scaling.factor'"),
            std::string::npos);

  EXPECT_EQ(error_of([&] { io::parse_clip_config({{"text_config", json::object()}}, "c.json"); }),
            "c.json: missing required field 'vision_config'");
  EXPECT_EQ(error_of([&] { io::parse_clip_config({{"text_config", 3}, {"vision_config", json::object()}}, "c.json"); }),
            "c.json: field 'text_config': expected object, got integer");
  EXPECT_EQ(error_of([&] { io::parse_clip_config(json::array(), "c.json"); }), "c.json: config: expected object, got array");
}

TEST(HfConfig, MalformedConfigNamesLineAndColumn) {
  const std::string dir = p2dpo::test::scratch_dir("hf_config_bad");
  std::ofstream(dir + "/config.json") << "{\n  \"model_type\": \"llava\",\n  \"text_config\": {,\n}\n";
  const std::string msg = error_of([&] { io::load_llava_config(dir); });
  EXPECT_EQ(msg.rfind(dir + "/config.json: malformed JSON", 0), 0u) << msg;
  EXPECT_NE(msg.find("line 3, column 19"), std::string::npos) << msg;
  EXPECT_EQ(error_of([&] { io::load_llava_config(dir + "/nothere"); }), dir + "/nothere: file not found");
}

TEST(HfConfig, CanonicalLlavaKeys) {
  EXPECT_EQ(io::canonical_llava_key("model.language_model.layers.0.mlp.up_proj.weight"),
            "language_model.model.layers.0.mlp.up_proj.weight");
  EXPECT_EQ(io::canonical_llava_key("model.vision_tower.vision_model.pre_layrnorm.weight"),
            "vision_tower.vision_model.pre_layrnorm.weight");
  EXPECT_EQ(io::canonical_llava_key("model.multi_modal_projector.linear_1.bias"), "multi_modal_projector.linear_1.bias");
  EXPECT_EQ(io::canonical_llava_key("lm_head.weight"), "language_model.lm_head.weight");
  // transformers 5.17 save_pretrained drops the tower's "vision_model." level, in either prefix
  // layout (seen on the GPU run: bench/results/gpu_h100.json, saved_key_samples).
  EXPECT_EQ(io::canonical_llava_key("vision_tower.embeddings.class_embedding"),
            "vision_tower.vision_model.embeddings.class_embedding");
  EXPECT_EQ(io::canonical_llava_key("model.vision_tower.encoder.layers.0.self_attn.q_proj.bias"),
            "vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.bias");
  // Legacy keys are already canonical.
  for (const char* k : {"language_model.model.norm.weight", "language_model.lm_head.weight",
                        "vision_tower.vision_model.post_layernorm.bias", "multi_modal_projector.linear_2.weight"})
    EXPECT_EQ(io::canonical_llava_key(k), k);
  EXPECT_EQ(io::canonical_llava_key("lm_headx.weight"), "lm_headx.weight");
  // Every key of the (legacy-layout) fixture maps to itself.
  auto ckpt = io::Checkpoint::open_dir(p2dpo::test::data_path("llava-tiny-s0"));
  ASSERT_GT(ckpt.names().size(), 10u);
  for (const auto& k : ckpt.names()) EXPECT_EQ(io::canonical_llava_key(k), k);
}

TEST(HfConfig, IgnorableBufferKeys) {
  EXPECT_TRUE(io::is_ignorable_buffer_key("vision_model.embeddings.position_ids"));
  EXPECT_TRUE(io::is_ignorable_buffer_key("language_model.model.layers.3.self_attn.rotary_emb.inv_freq"));
  EXPECT_FALSE(io::is_ignorable_buffer_key("vision_model.embeddings.position_embedding.weight"));
  EXPECT_FALSE(io::is_ignorable_buffer_key("x.my_position_ids"));
  EXPECT_FALSE(io::is_ignorable_buffer_key("language_model.model.norm.weight"));
}
