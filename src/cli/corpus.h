#pragma once
// A benchmark corpus: real files read into memory and cut into records the way the file
// system cuts a file (fixed record size, the last record of each file shorter).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace qzfs::cli {

struct corpus {
  struct record {
    std::size_t offset;  // into data
    std::size_t size;
    std::uint32_t source = 0;  // index of the PATH argument it came from
    std::uint32_t file = 0;    // index of the file it came from
  };
  std::vector<std::string> sources;  // the PATH arguments
  std::unique_ptr<std::byte[]> data;
  std::size_t bytes = 0;
  std::size_t files = 0;
  std::vector<record> records;
};

/// Reads regular files under `paths` (directories recursively, symlinks not followed) until
/// `max_bytes` from each PATH. Throws std::runtime_error naming the path for a missing or unreadable input.
corpus load_corpus(const std::vector<std::string>& paths, std::size_t record_size, std::size_t max_bytes);

}  // namespace qzfs::cli
