// Precompiled header for every translation unit that includes libtorch (CMakeLists.txt compiles
// the others without it). Parsing torch costs ~20 s per file on 2 cores; compiling it once saves
// minutes. It holds the tensor API and autograd, not all of <torch/torch.h>: a file that loads a
// PCH still instantiates and emits the code its headers define, so the whole API (nn modules,
// optimisers, data loaders, JIT) added ~10 s to every file, used or not (an empty file: 22 s with
// torch/torch.h, 12 s with these). The few files that need more include it themselves.
#pragma once
#include <torch/autograd.h>
#include <torch/types.h>
#include <torch/utils.h>
#include <torch/version.h>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>
#include <map>
#include <memory>
#include <optional>
