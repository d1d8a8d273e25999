#pragma once
// Writing files so that a reader never sees half of one: write a sibling temp file, flush,
// fsync, then rename over the target (rename is atomic within a filesystem).
#include <string>

namespace p2dpo::io {

// Writes `contents` to `path` atomically. Creates parent directories. Throws InputError on failure.
void write_file_atomic(const std::string& path, const std::string& contents);

// Reads a whole file. Throws InputError naming the file if it is missing or unreadable.
std::string read_file(const std::string& path);

// The temporary sibling name used for `path` (so callers that stream can use the same scheme).
std::string temp_path_for(const std::string& path);

// Renames `tmp` to `path` after fsync; throws InputError naming `path` on failure.
void commit_temp_file(const std::string& tmp, const std::string& path);

}  // namespace p2dpo::io
