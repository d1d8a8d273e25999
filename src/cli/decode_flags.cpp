#include "cli/decode_flags.h"

#include <string>

namespace p2dpo::cli {

void add_decode_flags(CLI::App* cmd, eval::DecodeOptions& d) {
  cmd->add_option_function<std::string>(
         "--decode", [&d](const std::string& s) { d.mode = eval::parse_decode_mode(s, "--decode"); },
         "greedy (official; default) or vcd: Visual Contrastive Decoding, the training-free baseline "
         "(argmax of (1+a)*l(I) - a*l(I_noise) over the plausible tokens)")
      ->type_name("greedy|vcd");
  cmd->add_option("--cd-alpha", d.cd_alpha, "VCD contrast strength a (VCD's cd_alpha)")->capture_default_str();
  cmd->add_option("--cd-beta", d.cd_beta,
                  "VCD plausibility cutoff: keep tokens with p(v|I) >= beta * max p(.|I) (VCD's cd_beta)")
      ->capture_default_str();
  cmd->add_option("--vcd-noise-step", d.noise_step,
                  "VCD diffusion noise step of the amateur image, of 1000 (VCD's noise_step)")
      ->capture_default_str();
  cmd->add_option("--vcd-seed", d.seed, "seed of the amateur noise (per image: from its name and this seed)")
      ->capture_default_str();
}

}  // namespace p2dpo::cli
