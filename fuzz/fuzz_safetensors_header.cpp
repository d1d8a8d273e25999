// libFuzzer target: safetensors header validation must reject any byte string with an InputError,
// never crash, hang or read outside the buffer. The input is treated as a whole file.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "io/errors.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto header = p2dpo::io::parse_safetensors_header(data, size, "fuzz.safetensors");
    // Whatever passed validation must describe bytes inside the buffer: touch them all.
    volatile uint8_t sink = 0;
    for (const auto& t : header.tensors) {
      if (header.data_start + t.end > size) __builtin_trap();
      for (size_t i = t.begin; i < t.end; ++i) sink = sink ^ data[header.data_start + i];
    }
    (void)sink;
  } catch (const p2dpo::InputError&) {
  }
  return 0;
}
