// p2dpo: thin command-line front end over the library; each subcommand is one file.
#include <CLI/CLI.hpp>

#include <iostream>

#include "cli/commands.h"
#include "io/errors.h"

int main(int argc, char** argv) {
  CLI::App app{"p2dpo: vision-aware preference optimisation for vision-language models"};
  app.require_subcommand(1);
  p2dpo::cli::register_generate(app);
  p2dpo::cli::register_score(app);
  p2dpo::cli::register_clipscore(app);
  p2dpo::cli::register_preprocess(app);
  p2dpo::cli::register_eval(app);
  p2dpo::cli::register_world(app);
  p2dpo::cli::register_pairs(app);
  p2dpo::cli::register_train(app);
  p2dpo::cli::register_merge(app);
  p2dpo::cli::register_report(app);
  p2dpo::cli::register_demo(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const p2dpo::InputError& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "internal error: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
