#pragma once
// scenes.jsonl <-> Scene. A scene line holds everything the renderer needs, so a reader can redraw
// the exact image (render_scene(scene_from_json(line)) has the line's pixel_fnv1a64).
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "world/scene.h"

namespace p2dpo::world {

// One scenes.jsonl line. `pixel_hash` is the FNV-1a 64 of the rendered RGB bytes.
nlohmann::ordered_json scene_to_json(const Scene& scene, const Vocabulary& vocab, uint64_t pixel_hash);

// Parses one scenes.jsonl line; InputError(file, "... field ...") for anything missing or
// inconsistent with the vocabulary.
Scene scene_from_json(const nlohmann::json& j, const Vocabulary& vocab, const std::string& file_for_errors);

// The vocabulary (with its priors) a world.json describes.
Vocabulary vocabulary_from_world_json(const std::string& world_json_path);

// Every scene of DIR/scenes.jsonl, with the vocabulary of DIR/world.json.
std::vector<Scene> read_scenes(const std::string& world_dir, const Vocabulary& vocab);

// "images/<split>/<id>.png", relative to the world directory.
std::string image_rel_path(const Scene& scene);

// "0123456789abcdef"
std::string hex64(uint64_t v);

}  // namespace p2dpo::world
