#pragma once
// `p2dpo world make`: draws, renders and writes a whole world (images, ground truth, training text,
// pair-generation prompts, held-out evaluation sets, world.json). The layout is the contract in
// docs / world.json "files"; every file is byte-identical for the same options and seed.
#include <cstdint>
#include <ostream>
#include <string>

#include <nlohmann/json.hpp>

#include "world/options.h"

namespace p2dpo::world {

struct WorldSummary {
  std::string out_dir;
  int64_t images = 0;
  int64_t conversations = 0;
  int64_t prompts = 0;
  int64_t pope_questions_per_split = 0;
  double seconds = 0;  // wall time (informational, not written to any file)
};

// Throws InputError naming the flag (--train, --out, --shapes, ...) for a bad option.
void validate_world_options(const WorldOptions& opt);

// Writes the world into opt.out_dir. Everything is built in a sibling staging directory and renamed
// into place at the end, so a reader never sees half a world. out_dir must not exist, be empty, or
// (with opt.overwrite) hold a previous world (a world.json). Progress lines go to `progress` if given.
WorldSummary make_world(const WorldOptions& opt, std::ostream* progress = nullptr);

}  // namespace p2dpo::world
