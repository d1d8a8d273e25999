// Precompiled header for every translation unit that uses libtorch.
// torch/torch.h costs ~20 s per file on 2 cores; compiling it once saves minutes.
#pragma once
#include <torch/torch.h>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>
#include <map>
#include <memory>
#include <optional>
