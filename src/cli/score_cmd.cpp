// p2dpo score: log-probabilities of an answer given a prompt and images.
#include <torch/types.h>
#include <torch/utils.h>

#include "cli/commands.h"
#include "cli/common.h"
#include "infer/scoring.h"
#include "io/errors.h"

namespace p2dpo::cli {

void register_score(CLI::App& app) {
  struct Opts {
    ModelFlags model;
    std::vector<std::string> images;
    std::string prompt, answer, answer_ids;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("score", "Per-token log-probs of an answer (sum, mean, perplexity)");
  o->model.add(cmd);
  cmd->add_option("--image", o->images, "image file; repeat for several <image> slots");
  cmd->add_option("--prompt", o->prompt, "full prompt text, one <image> per image")->required();
  auto* a = cmd->add_option("--answer", o->answer, "answer text, tokenized as prompt + \" \" + answer");
  auto* ai = cmd->add_option("--answer-ids", o->answer_ids, "explicit answer token ids, e.g. 1,2,3");
  a->excludes(ai);
  cmd->add_flag("--json", o->json, "print JSON");
  cmd->callback([o, a, ai]() {
    if (a->count() == 0 && ai->count() == 0) throw InputError("--answer", "give --answer or --answer-ids");
    auto model = o->model.load();
    auto images = load_images(*model, o->images);
    infer::ScoreResult r;
    if (ai->count() > 0) {
      auto ids = parse_id_list(o->answer_ids, "--answer-ids");
      for (auto id : ids)
        if (id >= model->info().vocab_size)
          throw InputError("--answer-ids", "id " + std::to_string(id) + " is outside the vocabulary");
      r = infer::score_ids(*model, images, model->tokenize_prompt(o->prompt, images), ids);
    } else {
      r = infer::score_text(*model, images, o->prompt, o->answer);
    }
    nlohmann::json j;
    j["prompt_ids"] = r.prompt_ids;
    j["answer_ids"] = r.answer_ids;
    j["logprobs"] = r.logprobs;
    j["sum"] = r.sum;
    j["mean"] = r.mean;
    j["ppl"] = r.ppl;
    print_result(j, o->json);
  });
}

}  // namespace p2dpo::cli
