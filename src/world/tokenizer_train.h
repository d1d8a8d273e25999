#pragma once
// The world's LLaMA tokenizer: a SentencePiece BPE model trained on the world's text with LLaMA's
// trainer settings, saved as the tokenizer files a llava-hf checkpoint carries.
//
// Training runs Debian's `spm_train` (package `sentencepiece`) as a separate process: linking
// libsentencepiece next to libtorch crashes (see text/sentencepiece_model.h), and the trainer is
// not something we want to rewrite.
#include <cstdint>
#include <string>
#include <vector>

namespace p2dpo::world {

struct WorldTokenizerInfo {
  int64_t sentencepiece_size = 0;  // pieces in tokenizer.model (ids 0 .. size-1)
  int64_t image_token_id = 0;      // "<image>" = sentencepiece_size (as llava-hf: right after the vocab)
  int64_t pad_token_id = 0;        // "<pad>"   = sentencepiece_size + 1
  int64_t tokenizer_size = 0;      // len(tokenizer) = sentencepiece_size + 2
};

// Trains on `corpus_txt` (one sentence per line) and writes into `out_dir`:
//   tokenizer.model         SentencePiece BPE (LLaMA settings: byte_fallback, split_digits, dummy
//                           prefix, identity normalisation, no whitespace squashing, unk=0 <unk>,
//                           bos=1 <s>, eos=2 </s>, no pad piece); deterministic: one thread,
//                           `seed`, every sentence used in file order (no sampling, no shuffle),
//                           and the trainer sees fixed relative file names, so the same corpus
//                           gives a byte-identical model wherever it lives.
//   tokenizer_config.json   slow LlamaTokenizer, legacy=false (as llava-hf/llava-1.5-7b-hf: no
//                           dummy "▁" after "<image>"), add_bos, no eos, padding_side left,
//                           added tokens <image> and <pad>; model_max_length omitted (HF's default,
//                           the same "very large" value llava-hf writes).
//   special_tokens_map.json, added_tokens.json
// `vocab_size` counts SentencePiece pieces (3 specials + 256 byte pieces + characters + merges), so
// it must exceed 259 + the number of distinct characters; the world's few dozen words fit in 384-512.
// `extra_lines` are appended to the corpus for training only: the world's corpus.txt holds the
// sentences but not the chat template, so pass the template's words as often as they occur in
// training (e.g. one "USER: ASSISTANT:" line per conversation) to give them pieces. ("<image>" is an
// added token that SentencePiece never sees, so leave it out.)
// Errors (missing corpus, spm_train missing or failing) throw InputError. The spm_train binary is
// found on PATH, or at $P2DPO_SPM_TRAIN when set.
WorldTokenizerInfo train_world_tokenizer(const std::string& corpus_txt, const std::string& out_dir,
                                         int vocab_size, uint64_t seed,
                                         const std::vector<std::string>& extra_lines = {});

// Writes only the JSON side files for a tokenizer.model with `sentencepiece_size` pieces (exposed so
// a model builder can rewrite them next to a copied tokenizer.model).
WorldTokenizerInfo write_llava_tokenizer_files(const std::string& out_dir, int64_t sentencepiece_size);

}  // namespace p2dpo::world
