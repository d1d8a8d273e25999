#include "world/tokenizer_train.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "io/errors.h"
#include "io/json_io.h"
#include "text/sentencepiece_model.h"

namespace p2dpo::world {
namespace fs = std::filesystem;

namespace {

// Runs `argv` in `cwd` with stdout and stderr appended to `log_path`; returns the exit status
// (127 when the program could not be started, 128+signal when killed).
int run_process(const std::vector<std::string>& argv, const std::string& cwd, const std::string& log_path) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(std::string("fork failed: ") + std::strerror(errno));
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec (the parent may run torch threads).
    if (::chdir(cwd.c_str()) != 0) ::_exit(126);
    const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::close(fd);
    }
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw std::runtime_error(std::string("waitpid failed: ") + std::strerror(errno));
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

std::string tail_of(const std::string& text, size_t n) {
  return text.size() <= n ? text : "..." + text.substr(text.size() - n);
}

nlohmann::json added_token(const std::string& content, bool special) {
  nlohmann::json t = {{"content", content}, {"lstrip", false}, {"normalized", false},
                      {"rstrip", false}, {"single_word", false}};
  if (special) t["special"] = true;
  return t;
}

}  // namespace

WorldTokenizerInfo write_llava_tokenizer_files(const std::string& out_dir, int64_t sentencepiece_size) {
  WorldTokenizerInfo info;
  info.sentencepiece_size = sentencepiece_size;
  info.image_token_id = sentencepiece_size;
  info.pad_token_id = sentencepiece_size + 1;
  info.tokenizer_size = sentencepiece_size + 2;

  // The same keys and values HF 4.45's LlamaTokenizer.save_pretrained writes for llava-hf
  // checkpoints (compare tests/data/llava-tiny-s0), except model_max_length (see the header).
  nlohmann::json decoder = nlohmann::json::object();
  decoder["0"] = added_token("<unk>", true);
  decoder["1"] = added_token("<s>", true);
  decoder["2"] = added_token("</s>", true);
  decoder[std::to_string(info.image_token_id)] = added_token("<image>", true);
  decoder[std::to_string(info.pad_token_id)] = added_token("<pad>", true);
  nlohmann::json config = {
      {"add_bos_token", true},
      {"add_eos_token", false},
      {"add_prefix_space", true},
      {"added_tokens_decoder", decoder},
      {"additional_special_tokens", {"<image>"}},
      {"bos_token", "<s>"},
      {"clean_up_tokenization_spaces", false},
      {"eos_token", "</s>"},
      {"legacy", false},
      {"pad_token", "<pad>"},
      {"padding_side", "left"},
      {"processor_class", "LlavaProcessor"},
      {"sp_model_kwargs", nlohmann::json::object()},
      {"spaces_between_special_tokens", false},
      {"tokenizer_class", "LlamaTokenizer"},
      {"unk_token", "<unk>"},
      {"use_default_system_prompt", false},
  };
  nlohmann::json special_map = {
      {"additional_special_tokens", {added_token("<image>", false)}},
      {"bos_token", added_token("<s>", false)},
      {"eos_token", added_token("</s>", false)},
      {"pad_token", added_token("<pad>", false)},
      {"unk_token", added_token("<unk>", false)},
  };
  nlohmann::json added = {{"<image>", info.image_token_id}, {"<pad>", info.pad_token_id}};
  io::write_json_atomic((fs::path(out_dir) / "tokenizer_config.json").string(), config);
  io::write_json_atomic((fs::path(out_dir) / "special_tokens_map.json").string(), special_map);
  io::write_json_atomic((fs::path(out_dir) / "added_tokens.json").string(), added);
  return info;
}

WorldTokenizerInfo train_world_tokenizer(const std::string& corpus_txt, const std::string& out_dir,
                                         int vocab_size, uint64_t seed, const std::vector<std::string>& extra_lines) {
  if (!fs::is_regular_file(corpus_txt)) throw InputError(corpus_txt, "corpus file not found");
  if (fs::file_size(corpus_txt) == 0) throw InputError(corpus_txt, "corpus file is empty");
  if (vocab_size < 262) {
    throw InputError("--vocab-size", "must be at least 262 (3 special + 256 byte pieces + characters), got " +
                                         std::to_string(vocab_size));
  }
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw InputError(out_dir, "cannot create directory: " + ec.message());

  // The trainer records its input and output names in the model (trainer_spec), so it runs in a
  // scratch directory on fixed relative names: the model bytes then depend on the corpus only.
  // Absolute: the child chdirs into it before opening its log.
  const fs::path work = fs::absolute(fs::path(out_dir) / (".spm-train." + std::to_string(::getpid())));
  fs::remove_all(work, ec);
  fs::create_directories(work, ec);
  if (ec) throw InputError(work.string(), "cannot create directory: " + ec.message());
  {
    std::string text = io::read_file(corpus_txt);
    if (!text.empty() && text.back() != '\n') text += '\n';
    for (const auto& line : extra_lines) text += line + "\n";
    io::write_file_atomic((work / "corpus.txt").string(), text);
  }

  const char* env = std::getenv("P2DPO_SPM_TRAIN");
  const std::string program = env && *env ? env : "spm_train";
  // LLaMA's trainer_spec / normalizer_spec (its tokenizer.model), except character_coverage 1.0: on a
  // small corpus 0.99995 could drop a rare character to byte pieces for no gain.
  const std::vector<std::string> argv = {
      program,
      "--input=corpus.txt",
      "--model_prefix=tokenizer",
      "--model_type=bpe",
      "--vocab_size=" + std::to_string(vocab_size),
      "--character_coverage=1.0",
      "--byte_fallback=true",
      "--split_digits=true",
      "--split_by_unicode_script=true",
      "--split_by_number=true",
      "--split_by_whitespace=true",
      "--allow_whitespace_only_pieces=true",
      "--max_sentencepiece_length=16",
      "--max_sentence_length=4192",
      "--normalization_rule_name=identity",
      "--add_dummy_prefix=true",
      "--remove_extra_whitespaces=false",
      "--unk_id=0",
      "--bos_id=1",
      "--eos_id=2",
      "--pad_id=-1",
      "--hard_vocab_limit=true",
      "--num_threads=1",
      "--random_seed=" + std::to_string(static_cast<uint32_t>(seed)),
      "--input_sentence_size=0",
      "--shuffle_input_sentence=false",
  };
  const std::string log_path = (work / "spm_train.log").string();
  const int status = run_process(argv, work.string(), log_path);
  const fs::path model_path = work / "tokenizer.model";
  if (status != 0 || !fs::is_regular_file(model_path)) {
    std::string log;
    try {
      log = io::read_file(log_path);
    } catch (const InputError&) {
    }
    fs::remove_all(work, ec);
    if (status == 127) {
      throw InputError(program, "cannot run it: install the Debian package 'sentencepiece' "
                                "(sudo apt-get install -y sentencepiece) or set P2DPO_SPM_TRAIN");
    }
    throw InputError(corpus_txt, "spm_train failed with status " + std::to_string(status) + ": " +
                                     tail_of(log, 1500));
  }
  const std::string model_bytes = io::read_file(model_path.string());
  fs::remove_all(work, ec);

  const std::string out_model = (fs::path(out_dir) / "tokenizer.model").string();
  const auto model = text::SentencePieceModel::parse(model_bytes, out_model);
  io::write_file_atomic(out_model, model_bytes);
  return write_llava_tokenizer_files(out_dir, model.size());
}

}  // namespace p2dpo::world
