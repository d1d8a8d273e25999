#pragma once
// Each subcommand lives in its own file and registers itself on the root app; main() only
// dispatches and turns InputError into a clear message and exit status 2.
#include <CLI/CLI.hpp>

namespace p2dpo::cli {
void register_generate(CLI::App& app);
void register_score(CLI::App& app);
void register_clipscore(CLI::App& app);
void register_preprocess(CLI::App& app);
void register_eval(CLI::App& app);
void register_world(CLI::App& app);
void register_pairs(CLI::App& app);
void register_train(CLI::App& app);
void register_merge(CLI::App& app);
void register_demo(CLI::App& app);
void register_report(CLI::App& app);
}  // namespace p2dpo::cli
