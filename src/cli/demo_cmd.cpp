// `p2dpo demo`: the whole method on the embedded world, one command. Every stage is one of p2dpo's
// own subcommands run as a child process of this executable, with its command line logged, so a
// user can rerun or change any step by hand and the demo exercises exactly what users run:
//   world make (eval + prompt scenes) -> pairs -> train (P2-DPO LoRA) [-> ablations, baselines]
//   -> eval pope (noise sweep), chair, afr, ips for every variant -> report.html + results.json.
// A finished stage leaves DIR/stages/<name>.json with its command; rerunning the demo skips it, and
// an interrupted stage resumes through the subcommand's own resume (pairs, train, evaluators).
#include <spawn.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "eval/demo_summary.h"
#include "io/atomic_file.h"
#include "io/errors.h"
#include "io/json_io.h"

extern char** environ;

namespace p2dpo::cli {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

// The world model's POPE prompt: question before the image (how the base model was trained).
constexpr const char* kWorldPromptTemplate = "USER: {question}\n<image> ASSISTANT:";

struct DemoOptions {
  std::string out = "demo-run";
  std::string size = "full";
  std::string model, clip, pairs_config, train_config;
  std::vector<std::string> baselines, ablations;
  int threads = 0;
  int jobs = 0;  // stages run side by side; 0 = one per hardware thread
  bool quiet = false;
  // Sizes; -1 = the --size preset's value.
  int64_t prompts = -1, pope_limit = -1, chair_limit = -1, afr_limit = -1;
  std::vector<double> sigmas;
  uint64_t world_seed = 0;
};

struct SizePreset {
  int64_t prompts, pope_limit, chair_limit, afr_limit;
  std::vector<double> sigmas;
};

SizePreset preset_of(const std::string& size) {
  // full: about 8 minutes on 2 cores without baselines (stages side by side); ci: a minute or two, the same path.
  if (size == "full") return {300, 1000, 200, 200, {0.0, 0.1, 0.2, 0.3}};
  if (size == "ci") return {24, 40, 12, 12, {0.0, 0.2}};
  throw InputError("--size", "must be full or ci, got '" + size + "'");
}

fs::path self_exe() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  if (ec) throw std::runtime_error("cannot resolve /proc/self/exe: " + ec.message());
  return p;
}

// A file the repository ships (models/world/base, configs/...): relative to the working directory,
// else next to the executable's source tree (build/p2dpo -> ../).
std::string find_shipped(const std::string& rel, const std::string& flag) {
  const fs::path exe_dir = self_exe().parent_path();
  for (const fs::path& root : {fs::current_path(), exe_dir.parent_path(), exe_dir.parent_path().parent_path(), exe_dir}) {
    if (fs::exists(root / rel)) return (root / rel).lexically_normal().string();
  }
  throw InputError(flag, "'" + rel + "' not found in the working directory or beside " + exe_dir.string() +
                             "; pass " + flag + " explicitly");
}

std::string format_seconds(double s) {
  char buf[32];
  if (s >= 60) {
    std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s) / 60, static_cast<int>(s) % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%.1fs", s);
  }
  return buf;
}

std::string join_command(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) {
    if (!out.empty()) out += ' ';
    const bool plain = !a.empty() && a.find_first_of(" \t\n'\"\\$<>{}|&;*?") == std::string::npos;
    if (plain) {
      out += a;
    } else {
      out += '\'';
      for (char c : a) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
      out += '\'';
    }
  }
  return out;
}

struct Stage {
  Stage(std::string n, std::vector<std::string> a, bool al = false, std::vector<std::string> af = {})
      : name(std::move(n)), args(std::move(a)), always(al), after(std::move(af)) {}
  std::string name;               // unique; names the marker and the log
  std::vector<std::string> args;  // after the executable
  bool always = false;            // derived from the others' outputs (the report): rerun every time
  std::vector<std::string> after;  // stages whose outputs this one reads (listed earlier)
  // Fills in arguments that depend on earlier stages' outputs, just before the stage starts.
  std::function<void(Stage&)> prepare;
};

// Runs the stages as child processes, up to `jobs` at a time, each as soon as the stages it reads
// from have finished. A stage is skipped when its marker says it finished with the same command.
// The child's stdout goes to logs/<name>.log; its stderr (progress lines) to the terminal, or the
// log with --quiet. Why parallel: the stages are small-matrix work that one thread runs at ~1.5x the
// per-thread speed of two (bench: demo --jobs), so two single-threaded stages side by side finish
// the demo in about half the time of one two-threaded stage after another; the results do not
// depend on the order or on the thread count of a stage.
class StageRunner {
 public:
  StageRunner(const DemoOptions& o, int jobs) : o_(o), jobs_(std::max(1, jobs)), exe_(self_exe().string()) {
    fs::create_directories(fs::path(o.out) / "stages");
    fs::create_directories(fs::path(o.out) / "logs");
  }

  void run_all(std::vector<Stage>& stages) {
    const size_t n = stages.size();
    std::map<std::string, size_t> index;
    for (size_t i = 0; i < n; ++i) {
      for (const auto& d : stages[i].after)
        if (!index.count(d)) throw std::logic_error("demo stage " + stages[i].name + " reads from unknown or later stage " + d);
      index[stages[i].name] = i;
    }
    enum class State { Pending, Running, Done };
    std::vector<State> state(n, State::Pending);
    commands_.assign(n, "");
    struct Running {
      size_t i, k;  // stage, its number in the start lines
      std::chrono::steady_clock::time_point t0;
    };
    std::map<pid_t, Running> running;
    const auto t_start = std::chrono::steady_clock::now();
    size_t finished = 0, announced = 0;
    std::string failed_stage, failure;
    auto ready = [&](size_t i) {
      for (const auto& d : stages[i].after)
        if (state[index.at(d)] != State::Done) return false;
      return true;
    };
    while (finished < n) {
      // Start (or skip) every stage that can go, until the job slots are full.
      for (bool progress = failure.empty(); progress;) {
        progress = false;
        for (size_t i = 0; i < n && running.size() < static_cast<size_t>(jobs_); ++i) {
          if (state[i] != State::Pending || !ready(i)) continue;
          Stage& s = stages[i];
          if (s.prepare) {
            try {
              s.prepare(s);
            } catch (const std::exception& e) {
              // An earlier stage's output is unusable: let the running stages finish, start nothing.
              failed_stage = s.name;
              failure = e.what();
              state[i] = State::Done;
              ++finished;
              progress = false;
              break;
            }
          }
          const Launch l = launch_of(s);
          commands_[i] = l.command;
          ++announced;
          const fs::path marker = fs::path(o_.out) / "stages" / (s.name + ".json");
          if (!s.always && fs::exists(marker) &&
              io::read_json_file(marker.string()).value("command", std::string()) == l.command) {
            std::fprintf(stderr, "[%zu/%zu] %s: done earlier (%s)\n", announced, n, s.name.c_str(), marker.c_str());
            state[i] = State::Done;
            ++finished;
            progress = true;
            continue;
          }
          std::fprintf(stderr, "[%zu/%zu] %s ...\n", announced, n, s.name.c_str());
          const fs::path log = fs::path(o_.out) / "logs" / (s.name + ".log");
          running[spawn(l.argv, log.string())] = {i, announced, std::chrono::steady_clock::now()};
          state[i] = State::Running;
          progress = true;
        }
      }
      if (running.empty()) {
        if (!failure.empty()) break;
        throw std::logic_error("demo stages wait on each other");  // cannot happen with earlier-only deps
      }
      int status = 0;
      const pid_t pid = waitpid(-1, &status, 0);
      if (pid < 0) {
        if (errno == EINTR) continue;
        throw std::runtime_error(std::string("waitpid: ") + std::strerror(errno));
      }
      auto it = running.find(pid);
      if (it == running.end()) continue;
      const Running r = it->second;
      running.erase(it);
      const Stage& s = stages[r.i];
      const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
      const auto now = std::chrono::steady_clock::now();
      const double secs = std::chrono::duration<double>(now - r.t0).count();
      state[r.i] = State::Done;
      ++finished;
      if (code != 0) {
        // The others finish what they started (each resumes on a rerun); nothing new starts.
        if (failure.empty()) {
          failed_stage = s.name;
          failure = "stage failed (exit status " + std::to_string(code) + "); its output is in " +
                    (fs::path(o_.out) / "logs" / (s.name + ".log")).string() + "; the command was: " + commands_[r.i];
        }
        continue;
      }
      io::write_json_atomic((fs::path(o_.out) / "stages" / (s.name + ".json")).string(),
                            {{"stage", s.name}, {"command", commands_[r.i]}, {"seconds", secs}});
      std::fprintf(stderr, "[%zu/%zu] %s: done in %s (demo so far %s)\n", r.k, n, s.name.c_str(),
                   format_seconds(secs).c_str(),
                   format_seconds(std::chrono::duration<double>(now - t_start).count()).c_str());
    }
    if (!failure.empty()) throw InputError(failed_stage, failure);
  }

  // Every stage's command line, in stage order (with the arguments filled in when it ran).
  const std::vector<std::string>& commands() const { return commands_; }

 private:
  struct Launch {
    std::vector<std::string> argv;
    std::string command;  // the stage's identity: without --quiet
  };

  // Children show their own progress lines (rate, ETA) unless the demo is quiet; --quiet is not
  // part of a stage's identity, so a quiet rerun still skips what a verbose run finished.
  Launch launch_of(const Stage& s) const {
    Launch l;
    l.argv = {exe_};
    bool takes_quiet = false;
    for (const auto& a : s.args) {
      if (a == "--quiet") {
        takes_quiet = true;
      } else {
        l.argv.push_back(a);
      }
    }
    l.command = join_command(l.argv);
    if (o_.quiet && takes_quiet) l.argv.push_back("--quiet");
    return l;
  }

  pid_t spawn(const std::vector<std::string>& argv, const std::string& log) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (o_.quiet) posix_spawn_file_actions_adddup2(&actions, 1, 2);
    std::vector<char*> cargv;
    for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    pid_t pid = 0;
    const int rc = posix_spawn(&pid, argv[0].c_str(), &actions, nullptr, cargv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) throw std::runtime_error("cannot start " + argv[0] + ": " + std::strerror(rc));
    return pid;
  }

  const DemoOptions& o_;
  int jobs_;
  std::string exe_;
  std::vector<std::string> commands_;
};

std::string num(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", x);
  return buf;
}

void run_demo(DemoOptions o) {
  const SizePreset p = preset_of(o.size);
  if (o.prompts < 0) o.prompts = p.prompts;
  if (o.pope_limit < 0) o.pope_limit = p.pope_limit;
  if (o.chair_limit < 0) o.chair_limit = p.chair_limit;
  if (o.afr_limit < 0) o.afr_limit = p.afr_limit;
  if (o.sigmas.empty()) o.sigmas = p.sigmas;
  if (o.prompts < 1) throw InputError("--prompts", "must be >= 1");
  if (o.model.empty()) o.model = find_shipped("models/world/base", "--model");
  if (o.clip.empty()) o.clip = find_shipped("models/world/clip", "--clip");
  if (o.pairs_config.empty()) o.pairs_config = find_shipped("configs/world-pairs.yaml", "--pairs-config");
  if (o.train_config.empty()) o.train_config = find_shipped("configs/world-train.yaml", "--train-config");
  for (const auto& [flag, path] : {std::pair<std::string, std::string>{"--model", o.model}, {"--clip", o.clip},
                                   {"--pairs-config", o.pairs_config}, {"--train-config", o.train_config}}) {
    if (!fs::exists(path)) throw InputError(flag, "'" + path + "' does not exist");
  }
  for (const auto& b : o.baselines) {
    if (b != "vcd" && b != "dpo") throw InputError("--baseline", "must be vcd or dpo, got '" + b + "'");
  }
  for (const auto& a : o.ablations) {
    if (a != "focus" && a != "robust" && a != "calib" && a != "ddw") {
      throw InputError("--ablate", "must be focus, robust, calib or ddw, got '" + a + "'");
    }
  }
  if (o.jobs < 0) throw InputError("--jobs", "must be >= 0");
  const int hardware = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  if (o.jobs == 0) o.jobs = hardware;
  // Side-by-side stages share the cores: one thread each unless --threads says otherwise.
  if (o.threads == 0 && o.jobs > 1) o.threads = std::max(1, hardware / o.jobs);
  if (o.threads > 0) setenv("OMP_NUM_THREADS", std::to_string(o.threads).c_str(), 1);
  fs::create_directories(o.out);
  const fs::path out = fs::absolute(o.out).lexically_normal();
  const std::string D = out.string();
  const std::string world = D + "/world";

  // Variants: (name, training run folder or "" for the base model, extra eval flags).
  struct Variant {
    std::string name, train_dir;
    std::vector<std::string> eval_flags;
  };
  std::vector<Variant> variants = {{"base", "", {}}, {"p2dpo", D + "/train", {}}};
  for (const auto& b : o.baselines) {
    if (b == "vcd") variants.push_back({"vcd", "", {"--decode", "vcd"}});
    if (b == "dpo") variants.push_back({"dpo-offpolicy", D + "/train-dpo-offpolicy", {}});
  }
  for (const auto& a : o.ablations) variants.push_back({"ablate-" + a, D + "/train-ablate-" + a, {}});

  std::vector<Stage> stages;
  stages.push_back({"world", {"world", "make", "--out", world, "--seed", std::to_string(o.world_seed), "--train", "0"}});
  stages.push_back({"pairs",
                    {"pairs", "--model", o.model, "--clip", o.clip, "--config", o.pairs_config, "--data",
                     world + "/prompts/pairs.jsonl", "--images", world, "--out", D + "/pairs", "--limit",
                     std::to_string(o.prompts), "--quiet"},
                    false,
                    {"world"}});
  // The world knows the truth that P2-DPO never sees: do the kept pairs point the right way, and
  // are their winners better than the model's own plain-view answer? (results.json -> "pairs")
  stages.push_back({"pairs-sanity",
                    {"world", "pairs-sanity", "--pairs", D + "/pairs", "--world", world, "--kept-only", "--out",
                     D + "/pairs/sanity.json", "--json"},
                    false,
                    {"pairs"}});
  auto train_stage = [&](const std::string& name, const std::string& dir, std::vector<std::string> extra,
                         std::vector<std::string> after = {"pairs"}) {
    std::vector<std::string> args = {"train", "--model", o.model, "--config", o.train_config, "--out", dir, "--quiet"};
    args.insert(args.end(), extra.begin(), extra.end());
    // A run killed mid-way continues from its last checkpoint (the trainer checks the config).
    if (fs::exists(fs::path(dir) / "checkpoints") && !fs::exists(fs::path(dir) / "adapter")) args.push_back("--resume");
    stages.push_back({name, args, false, after});
  };
  train_stage("train", D + "/train", {"--pairs", D + "/pairs"});
  for (const auto& a : o.ablations) train_stage("train-ablate-" + a, D + "/train-ablate-" + a, {"--pairs", D + "/pairs", "--ablate", a});
  const bool dpo_baseline = std::find(o.baselines.begin(), o.baselines.end(), "dpo") != o.baselines.end();
  if (dpo_baseline) {
    // The same pair count as P2-DPO kept; filled in once the pairs stage has run (see below).
    Stage truth{"truth-pairs", {}, false, {"pairs"}};
    truth.prepare = [D, world](Stage& st) {
      const json stats = io::read_json_file(D + "/pairs/stats.json");
      const int64_t kept = stats.value("kept", int64_t{0});
      if (kept < 1) throw InputError(D + "/pairs/stats.json", "field 'kept': no P2-DPO pairs kept, nothing to match");
      st.args = {"world", "truth-pairs", "--world", world, "--out", D + "/truth-pairs.jsonl", "--limit", std::to_string(kept)};
    };
    stages.push_back(std::move(truth));
    train_stage("train-dpo-offpolicy", D + "/train-dpo-offpolicy",
                {"--pairs", D + "/truth-pairs.jsonl", "--images", world, "--objective", "dpo"}, {"truth-pairs"});
  }
  for (const auto& v : variants) {
    // The stages a variant's evaluations read from: the world, and its adapter's training run.
    // (a training stage is named after its run folder: train, train-ablate-X, train-dpo-offpolicy).
    std::vector<std::string> after = {"world"};
    if (!v.train_dir.empty()) after.push_back(fs::path(v.train_dir).filename().string());
    std::vector<std::string> model = {"--model", o.model};
    if (!v.train_dir.empty()) model.insert(model.end(), {"--adapter", v.train_dir + "/adapter"});
    const std::string ev = D + "/eval/" + v.name;
    std::vector<std::string> pope = {"eval", "pope"};
    pope.insert(pope.end(), model.begin(), model.end());
    pope.insert(pope.end(), v.eval_flags.begin(), v.eval_flags.end());
    pope.insert(pope.end(), {"--images", world + "/images/eval", "--questions", world + "/eval/pope/world_pope_random.json",
                             world + "/eval/pope/world_pope_popular.json", world + "/eval/pope/world_pope_adversarial.json",
                             "--prompt-template", kWorldPromptTemplate, "--no-answer-suffix", "--max-new-tokens", "24",
                             "--batch-size", "32", "--limit", std::to_string(o.pope_limit), "--out", ev + "/pope",
                             "--quiet", "--noise-sigma"});
    for (double s : o.sigmas) pope.push_back(num(s));
    stages.push_back({"eval-pope-" + v.name, pope, false, after});
    std::vector<std::string> chair = {"eval", "chair"};
    chair.insert(chair.end(), model.begin(), model.end());
    chair.insert(chair.end(), v.eval_flags.begin(), v.eval_flags.end());
    chair.insert(chair.end(), {"--world", world, "--limit", std::to_string(o.chair_limit), "--out", ev + "/chair", "--quiet"});
    stages.push_back({"eval-chair-" + v.name, chair, false, after});
    if (v.eval_flags.empty()) {  // attention and log-probs do not depend on the decoding rule
      std::vector<std::string> afr = {"eval", "afr"};
      afr.insert(afr.end(), model.begin(), model.end());
      // World answers run past the spec's 20 tokens. P-Acc's threshold is the base model's mean AFR
      // at the P-Acc layer, for the base ("mean") and every other variant (filled in once the base
      // has been measured), so the subsets compare; LLaVA-7B's 14 means nothing on a 4-layer model.
      afr.insert(afr.end(), {"--world", world, "--max-new-tokens", "32", "--limit", std::to_string(o.afr_limit),
                             "--out", ev + "/afr", "--quiet"});
      Stage afr_stage{"eval-afr-" + v.name, afr, false, after};
      if (v.name == "base") {
        afr_stage.args.insert(afr_stage.args.end(), {"--pacc-threshold", "mean"});
      } else {
        afr_stage.after.push_back("eval-afr-base");
        afr_stage.prepare = [D](Stage& st) {
          const std::string base_results = D + "/eval/base/afr/results.json";
          const json base = io::read_json_file(base_results);
          if (!base.contains("afr_pacc_layer") || !base["afr_pacc_layer"].is_number()) {
            throw InputError(base_results, "field 'afr_pacc_layer': missing or not a number (the base model's AFR run)");
          }
          st.args.insert(st.args.end(), {"--pacc-threshold", num(base["afr_pacc_layer"].get<double>())});
        };
      }
      stages.push_back(std::move(afr_stage));
      std::vector<std::string> ips = {"eval", "ips"};
      ips.insert(ips.end(), model.begin(), model.end());
      ips.insert(ips.end(), {"--pairs", D + "/pairs", "--out", ev + "/ips", "--quiet"});
      std::vector<std::string> ips_after = after;
      ips_after.push_back("pairs");
      stages.push_back({"eval-ips-" + v.name, ips, false, ips_after});
    }
  }
  std::vector<std::string> report = {"report", D, "--out", D + "/report.html", "--title", "p2dpo demo on the world"};
  std::vector<std::string> everything;
  for (const auto& st : stages) everything.push_back(st.name);
  stages.push_back({"report", report, /*always=*/true, everything});

  json resolved = {{"command", "p2dpo demo"},
                   {"out", D},
                   {"size", o.size},
                   {"model", o.model},
                   {"clip", o.clip},
                   {"pairs_config", o.pairs_config},
                   {"train_config", o.train_config},
                   {"baselines", o.baselines},
                   {"ablations", o.ablations},
                   {"threads", o.threads},
                   {"jobs", o.jobs},
                   {"prompts", o.prompts},
                   {"pope_limit", o.pope_limit},
                   {"chair_limit", o.chair_limit},
                   {"afr_limit", o.afr_limit},
                   {"sigmas", o.sigmas},
                   {"world_seed", o.world_seed},
                   {"prompt_template", kWorldPromptTemplate}};
  io::write_json_atomic(D + "/demo-config.json", resolved);

  StageRunner runner(o, o.jobs);
  const auto t0 = std::chrono::steady_clock::now();
  runner.run_all(stages);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  std::vector<std::string> names;
  for (const auto& v : variants) names.push_back(v.name);
  json summary = eval::summarize_demo(D, names);
  const std::string table = eval::format_demo_table(summary);
  summary["config"] = resolved;
  summary["commands"] = runner.commands();
  summary["seconds_this_run"] = seconds;
  summary["machine"] = {{"hardware_threads", std::thread::hardware_concurrency()}};
  summary["table"] = table;
  io::write_json_atomic(D + "/results.json", summary);
  io::write_file_atomic(D + "/table.txt", table);
  std::cout << table << "\nreport: " << D << "/report.html\nresults: " << D << "/results.json\n";
}

}  // namespace

void register_demo(CLI::App& app) {
  auto o = std::make_shared<DemoOptions>();
  auto* cmd = app.add_subcommand(
      "demo", "P2-DPO end to end on the embedded world: pairs -> LoRA training -> POPE/CHAIR/AFR/IPS before and after -> report.html");
  cmd->add_option("--out", o->out, "run folder (rerun to resume; finished stages are skipped)")->capture_default_str();
  cmd->add_option("--size", o->size, "full (the committed run, ~8 min on 2 cores) or ci (same path, small)")->capture_default_str();
  cmd->add_option("--model", o->model, "base model (default: the shipped models/world/base)");
  cmd->add_option("--clip", o->clip, "CLIP for CLIPScore weights (default: models/world/clip)");
  cmd->add_option("--pairs-config", o->pairs_config, "pairs config (default: configs/world-pairs.yaml)");
  cmd->add_option("--train-config", o->train_config, "train config (default: configs/world-train.yaml)");
  cmd->add_option("--baseline", o->baselines, "vcd (VCD decoding of the base model) and/or dpo (plain DPO on off-policy ground-truth pairs, same count)");
  cmd->add_option("--ablate", o->ablations, "focus, robust, calib and/or ddw: one extra training run each (Table 4)");
  cmd->add_option("--threads", o->threads, "OMP_NUM_THREADS for every stage (0 = cores / jobs)");
  cmd->add_option("--jobs", o->jobs, "stages run side by side when they do not read each other's outputs (0 = one per core; 1 = one after another)");
  cmd->add_option("--prompts", o->prompts, "world prompts used for pairs (default by --size)");
  cmd->add_option("--pope-limit", o->pope_limit, "questions per POPE split (default by --size)");
  cmd->add_option("--chair-limit", o->chair_limit, "description prompts for CHAIR (default by --size)");
  cmd->add_option("--afr-limit", o->afr_limit, "AFR records (default by --size)");
  cmd->add_option("--noise-sigma", o->sigmas, "POPE noise sweep (default by --size)");
  cmd->add_flag("--quiet", o->quiet, "stage lines only; the stages' own progress goes to the logs");
  cmd->callback([o]() { run_demo(*o); });
}

}  // namespace p2dpo::cli
