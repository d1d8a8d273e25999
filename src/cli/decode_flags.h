#pragma once
// The decoding flags every generative evaluator shares (`--decode greedy|vcd` and VCD's settings).
#include <CLI/CLI.hpp>

#include "eval/bench_runner.h"

namespace p2dpo::cli {

// Adds --decode (parsed when read: InputError("--decode") for an unknown mode), --cd-alpha,
// --cd-beta, --vcd-noise-step and --vcd-seed, writing into `d`. Range checks are
// eval::check_decode_options(d), which the command calls before loading the model.
void add_decode_flags(CLI::App* cmd, eval::DecodeOptions& d);

}  // namespace p2dpo::cli
