#include "train/conversations.h"

#include <algorithm>
#include <filesystem>

#include "io/errors.h"
#include "io/json_io.h"
#include "text/prompt.h"

namespace p2dpo::train {

namespace fs = std::filesystem;

namespace {
constexpr const char* kImageMarker = "<image>";

std::string python_strip(const std::string& s) {
  const char* ws = " \t\n\r\v\f";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  const size_t e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

std::string remove_all(std::string s, const std::string& what) {
  for (size_t pos = s.find(what); pos != std::string::npos; pos = s.find(what, pos)) s.erase(pos, what.size());
  return s;
}
}  // namespace

std::vector<Conversation> load_llava_conversations(const std::string& json_path, const std::string& image_root) {
  const nlohmann::json root = io::read_json_file(json_path);
  if (!root.is_array()) {
    throw InputError(json_path, std::string("expected a JSON list of conversations, got ") + io::json_type_name(root));
  }
  std::vector<Conversation> out;
  out.reserve(root.size());
  for (size_t n = 0; n < root.size(); ++n) {
    const nlohmann::json& rec = root[n];
    const std::string ctx = "[" + std::to_string(n) + "]";
    Conversation conv;
    if (rec.is_object() && rec.contains("id") && rec["id"].is_number_integer()) {
      conv.id = std::to_string(rec["id"].get<int64_t>());  // LLaVA's own files mix string and int ids
    } else {
      conv.id = io::get_required<std::string>(rec, "id", json_path, ctx);
    }
    auto fail = [&](const std::string& problem) {
      return InputError(json_path, "conversation " + std::to_string(n) + " (id '" + conv.id + "'): " + problem);
    };
    const std::string image = io::get_optional<std::string>(rec, "image", "", json_path, ctx);
    if (!image.empty()) conv.images.push_back((fs::path(image_root) / image).lexically_normal().string());
    const auto msgs = io::get_required<nlohmann::json>(rec, "conversations", json_path, ctx);
    if (!msgs.is_array() || msgs.empty()) throw fail("'conversations' must be a non-empty list");
    if (msgs.size() % 2 != 0) throw fail("turns must come in human/gpt pairs, got " + std::to_string(msgs.size()) + " messages");
    int markers = 0;
    for (size_t i = 0; i < msgs.size(); i += 2) {
      const std::string c1 = ctx + ".conversations[" + std::to_string(i) + "]";
      const std::string c2 = ctx + ".conversations[" + std::to_string(i + 1) + "]";
      const auto from1 = io::get_required<std::string>(msgs[i], "from", json_path, c1);
      const auto from2 = io::get_required<std::string>(msgs[i + 1], "from", json_path, c2);
      if (from1 != "human" || from2 != "gpt") {
        throw fail("message " + std::to_string(i) + " is from '" + from1 + "' and message " + std::to_string(i + 1) +
                   " from '" + from2 + "'; expected human then gpt");
      }
      ConversationTurn turn;
      turn.human = io::get_required<std::string>(msgs[i], "value", json_path, c1);
      turn.gpt = io::get_required<std::string>(msgs[i + 1], "value", json_path, c2);
      markers += text::count_image_markers(turn.human, kImageMarker);
      if (text::count_image_markers(turn.gpt, kImageMarker) > 0) throw fail("a gpt turn contains <image>");
      conv.turns.push_back(std::move(turn));
    }
    if (!conv.images.empty() && markers != 1) {
      throw fail("has an image but its human turns contain <image> " + std::to_string(markers) + " times (need exactly 1)");
    }
    if (conv.images.empty() && markers != 0) throw fail("contains <image> but has no 'image' field");
    out.push_back(std::move(conv));
  }
  return out;
}

ConversationTemplate conversation_template(const std::string& name, const std::string& flag) {
  ConversationTemplate t;  // USER/ASSISTANT, sep " ", sep2 "</s>": LLaVA's SeparatorStyle.TWO
  if (name == "v1" || name == "vicuna_v1") {
    t.system =
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions.";
  } else if (name == "llava_v1") {
    t.system =
        "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the human's questions.";
  } else if (name == "no_system") {
    t.system.clear();
  } else {
    throw InputError(flag, "unknown conversation template '" + name + "' (v1, vicuna_v1, llava_v1, no_system)");
  }
  return t;
}

namespace {
std::string prepare_human(const ConversationTemplate& tpl, const std::string& human) {
  if (!tpl.move_image_to_front || human.find(kImageMarker) == std::string::npos) return human;
  return python_strip(std::string(kImageMarker) + "\n" + python_strip(remove_all(human, kImageMarker)));
}

std::string header(const ConversationTemplate& tpl) { return tpl.system.empty() ? "" : tpl.system + tpl.sep; }

std::string open_turn(const ConversationTemplate& tpl, const std::string& human) {
  return tpl.user_role + ": " + human + tpl.sep + tpl.assistant_role + ":";
}
}  // namespace

std::string render_prompt(const ConversationTemplate& tpl, const std::string& question) {
  return header(tpl) + open_turn(tpl, prepare_human(tpl, question));
}

std::vector<PromptAnswerText> render_turns(const Conversation& conv, const ConversationTemplate& tpl) {
  std::vector<PromptAnswerText> out;
  std::string history = header(tpl);
  for (const auto& turn : conv.turns) {
    const std::string human = prepare_human(tpl, turn.human);
    PromptAnswerText pa;
    pa.prompt = history + open_turn(tpl, human);
    pa.answer = turn.gpt + tpl.sep2;
    pa.images_in_prompt = text::count_image_markers(pa.prompt, kImageMarker);
    // The prompt/answer separator " " of text/prompt.h is the space of role + ": " + message.
    history = pa.prompt + " " + pa.answer;
    out.push_back(std::move(pa));
  }
  return out;
}

TokenizedExample tokenize_conversation(const Conversation& conv, const ConversationTemplate& tpl,
                                       const PromptAnswerTokenizer& tokenize) {
  const auto turns = render_turns(conv, tpl);
  if (turns.empty()) throw InputError(conv.id, "conversation has no turns");
  std::vector<std::pair<size_t, size_t>> spans;  // answer [begin, end) per turn
  std::vector<std::vector<int64_t>> prefixes;
  for (const auto& t : turns) {
    auto [prompt_ids, answer_ids] = tokenize(t.prompt, t.answer, t.images_in_prompt);
    spans.emplace_back(prompt_ids.size(), prompt_ids.size() + answer_ids.size());
    prompt_ids.insert(prompt_ids.end(), answer_ids.begin(), answer_ids.end());
    prefixes.push_back(std::move(prompt_ids));
  }
  TokenizedExample ex;
  ex.id = conv.id;
  ex.input_ids = prefixes.back();
  ex.loss_mask.assign(ex.input_ids.size(), 0);
  for (size_t t = 0; t < turns.size(); ++t) {
    const auto& p = prefixes[t];
    if (p.size() > ex.input_ids.size() || !std::equal(p.begin(), p.end(), ex.input_ids.begin())) {
      throw InputError(conv.id, "turn " + std::to_string(t) +
                                    " tokenizes differently inside the whole conversation (a token merges across "
                                    "the turn boundary); change the template's separators");
    }
    std::fill(ex.loss_mask.begin() + static_cast<std::ptrdiff_t>(spans[t].first),
              ex.loss_mask.begin() + static_cast<std::ptrdiff_t>(spans[t].second), uint8_t{1});
  }
  ex.images = conv.images;
  return ex;
}

}  // namespace p2dpo::train
