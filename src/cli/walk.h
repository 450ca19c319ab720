#pragma once
// What the tools that walk a tree of files share (pack, unpack, check, recompress; tools.cc).

#include <sys/types.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "qzfs/fs/policy.h"

namespace qzfs::cli {

/// Regular files under `paths` (directories recursively), symlinks never followed, qzfs's own
/// temporary files (".qzfs-TOOL.PID.N", beside a file being rewritten) left out. Throws
/// std::invalid_argument for a path that does not exist.
std::vector<std::filesystem::path> regular_files(const std::vector<std::string>& paths);
/// Removes the temporary files of tools that were killed (their process is gone) under the
/// directories among `paths`; how many went.
std::uint64_t remove_leftovers(const std::vector<std::string>& paths);
/// What a progress bar shows as its total: the files' sizes, summed only when one is drawn.
std::uint64_t total_size(const std::vector<std::filesystem::path>& files, std::FILE* out);
/// The backing directory of a running qzfs mount at or above `path` (the daemon holds an
/// exclusive flock on it), or "".
std::string mounted_backing(const std::filesystem::path& path);

struct dir_handle {
  int fd;
  explicit dir_handle(const std::filesystem::path& dir);  // throws std::runtime_error
  ~dir_handle();
  dir_handle(const dir_handle&) = delete;
  dir_handle& operator=(const dir_handle&) = delete;
};

/// A file's policy as pack sees it on a backing directory: the file's own attribute, else its
/// nearest directory's, property by property. The walk up stops at the directories the tool was
/// given (a file's own directory when it was named itself): what lies above them (a user's
/// home, say) has no say. Each directory's attribute is read once.
class nearest_policy {
 public:
  explicit nearest_policy(const std::vector<std::string>& paths);
  [[nodiscard]] qzfs::fs::file_policy of(const std::filesystem::path& file);

 private:
  std::set<std::string> tops_;
  std::map<std::string, qzfs::fs::file_policy> dirs_;
};

}  // namespace qzfs::cli
