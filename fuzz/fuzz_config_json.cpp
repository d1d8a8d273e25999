// libFuzzer target: config.json parsing (JSON text -> LlavaConfig / ClipConfig) must reject bad
// input with an InputError, never crash. The first byte picks the parser so both get coverage.
#include <cstddef>
#include <cstdint>
#include <string>

#include "io/errors.h"
#include "io/hf_config.h"
#include "io/json_io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool as_clip = data[0] & 1;
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    const nlohmann::json j = p2dpo::io::parse_json_text(text, "config.json");
    if (as_clip) {
      auto c = p2dpo::io::parse_clip_config(j, "config.json");
      // Derived sizes must not trap (division by validated non-zero heads/patch).
      (void)c.vision.head_dim();
      (void)c.vision.num_patches();
      (void)c.text.head_dim();
    } else {
      auto c = p2dpo::io::parse_llava_config(j, "config.json");
      (void)c.vision.head_dim();
      (void)c.vision.num_patches();
    }
  } catch (const p2dpo::InputError&) {
  } catch (const nlohmann::json::parse_error&) {
    // parse_json_text already turns these into InputError; kept as the documented contract.
  }
  return 0;
}
