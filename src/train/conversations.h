#pragma once
// LLaVA conversation data: loading the JSON, rendering turns with a conversation template, and
// tokenizing a whole conversation into ids plus a per-token loss mask (every gpt turn is a target).
// No torch here, so it is testable with the tokenizer alone.
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace p2dpo::train {

struct ConversationTurn {
  std::string human;
  std::string gpt;
};

struct Conversation {
  std::string id;
  // Resolved image paths, one per "<image>" marker, in slot order; empty for a text-only
  // conversation. LLaVA's JSON holds one; the world's zoom stage adds a second (a zoomed crop).
  std::vector<std::string> images;
  std::vector<ConversationTurn> turns;
};

// Reads LLaVA's conversation JSON: [{"id", "image"?, "conversations": [{"from": "human"|"gpt",
// "value"}, ...]}]. Turns must alternate human, gpt, ... and end with gpt. With an image, the human
// turns hold "<image>" exactly once in total; without, never; gpt turns never. Image paths are
// resolved against image_root (for the world: the world directory, as the layout contract says).
// Every violation throws InputError(json_path, "conversation N (id 'x'): ...").
std::vector<Conversation> load_llava_conversations(const std::string& json_path, const std::string& image_root);

// LLaVA's SeparatorStyle.TWO (llava/conversation.py get_prompt):
//   system + sep + [role_user + ": " + human + sep + role_assistant + ": " + gpt + sep2]*
// and the open assistant turn ends in role_assistant + ":". An empty system drops the leading
// system + sep.
struct ConversationTemplate {
  std::string system;
  std::string user_role = "USER";
  std::string assistant_role = "ASSISTANT";
  std::string sep = " ";
  std::string sep2 = "</s>";  // ends every assistant message; it is part of the target (stop token)
  // LLaVA's preprocess_multimodal: take "<image>" out of the human turn and put "<image>\n" in front
  // (what LLaVA-1.5 training does). Off by default: the data's own placement is kept (the world puts
  // the question before the image on purpose).
  bool move_image_to_front = false;
};

// "v1" / "vicuna_v1" (default; LLaVA-1.5 training's --version v1: "A chat between a curious user
// ..."), "llava_v1" ("... curious human ..."), "no_system" (v1 without the system prompt, the
// llava-hf generation format "USER: <image>\n... ASSISTANT:"). InputError(flag, ...) otherwise.
ConversationTemplate conversation_template(const std::string& name, const std::string& flag = "--template");

// The prompt a model is asked to continue for a single question (generation/evaluation with the
// same template as training): [system + sep] + user + ": " + question + sep + assistant + ":".
std::string render_prompt(const ConversationTemplate& tpl, const std::string& question);

// Turn t's (prompt, answer) texts: prompt = system, the t earlier exchanges, this question, and the
// open "ASSISTANT:"; answer = gpt + sep2. prompt + " " + answer is the conversation up to turn t.
struct PromptAnswerText {
  std::string prompt;
  std::string answer;
  int images_in_prompt = 0;  // "<image>" markers in prompt
};
std::vector<PromptAnswerText> render_turns(const Conversation& conv, const ConversationTemplate& tpl);

// Tokenizes a prompt and an answer under text/prompt.h's convention (prompt ids with BOS and
// expanded image tokens, answer ids), e.g. a VisionLanguageModel's tokenize_prompt_answer with the
// prompt's first images_in_prompt prepared images.
using PromptAnswerTokenizer = std::function<std::pair<std::vector<int64_t>, std::vector<int64_t>>(
    const std::string& prompt, const std::string& answer, int images_in_prompt)>;

struct TokenizedExample {
  std::string id;
  std::vector<int64_t> input_ids;
  std::vector<uint8_t> loss_mask;   // 1 = a target token (answer tokens incl. the sep2 stop token)
  std::vector<std::string> images;  // image keys in prompt order
};

// The whole conversation's ids (= the last turn's prompt + answer ids) with loss_mask set on each
// turn's answer ids. Each turn t is tokenized on its own (prompt_t, answer_t), exactly as scoring
// tokenizes it, and must be a prefix of the whole; otherwise (a merge across turns) InputError(id, ...).
TokenizedExample tokenize_conversation(const Conversation& conv, const ConversationTemplate& tpl,
                                       const PromptAnswerTokenizer& tokenize);

}  // namespace p2dpo::train
