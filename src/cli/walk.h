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
/// Removes the temporary files of tools that were killed under the directories among `paths`
/// (of a backing directory, never through a mount): only files named as file_beside names them,
/// whose process is gone, the caller's own, mode 0600, with one link; how many went.
std::uint64_t remove_leftovers(const std::vector<std::string>& paths);
/// Whether `path` lies on a qzfs mount (the mount table's entry holding it is fuse.qzfs).
bool on_qzfs_mount(const std::filesystem::path& path);
/// What a progress bar shows as its total: the files' sizes, summed only when one is drawn.
std::uint64_t total_size(const std::vector<std::filesystem::path>& files, std::FILE* out);
/// Keeps qzfs mounts away from the directories a tool rewrites files in: hold(path) takes a
/// shared flock on every directory from `path` up, which a daemon's exclusive one on its backing
/// directory excludes, so no mount starts there while the tool runs (it would keep its own state
/// of files renamed under it). Answers "" when none is mounted, else the mounted backing
/// directory (the daemon holds it). Let go when the guard goes.
class unmounted_guard {
 public:
  unmounted_guard() = default;
  ~unmounted_guard();
  unmounted_guard(const unmounted_guard&) = delete;
  unmounted_guard& operator=(const unmounted_guard&) = delete;
  std::string hold(const std::filesystem::path& path);

 private:
  std::vector<int> fds_;
};

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
