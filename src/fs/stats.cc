// fs/: live statistics, the root's "user.qzfs.stats" attribute (read by `qzfs stats`).
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "inodes.h"

namespace qzfs::fs::detail {

// Live statistics: the root's "user.qzfs.stats" attribute (read by `qzfs stats`). The sizes come
// from a walk of the backing directory (the cost of a `du`); the rest from the engine and the
// backends since the mount.
std::string stats_json(fs_state& s) {
  std::uint64_t files = 0, containers = 0, plain = 0, logical = 0, allocated = 0, open_files = 0, dirty = 0;
  // Files being written: their size is the store's, not yet the committed one. No lock is held
  // while a file's own lock is waited for (a long operation on one file must not hold up the
  // inode table for everyone).
  std::map<key, std::pair<std::uint64_t, bool>> live;
  for (auto& f : s.files.all()) {
    ++open_files;
    const auto st = f->file->stats();
    dirty += st.dirty;
    live[f->k] = {st.logical_size, f->file->is_container()};
  }
  std::set<key> linked;  // files with several links, counted once
  std::vector<int> stack;
  stack.push_back(::openat(s.root_fd->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  while (!stack.empty()) {
    const int dfd = stack.back();
    stack.pop_back();
    if (dfd < 0) continue;
    DIR* dp = ::fdopendir(dfd);
    if (dp == nullptr) {
      ::close(dfd);
      continue;
    }
    while (dirent* e = ::readdir(dp)) {
      if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
      struct stat st {};
      if (::fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      if (S_ISDIR(st.st_mode)) {
        stack.push_back(::openat(dfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      } else if (S_ISREG(st.st_mode)) {
        if (st.st_nlink > 1 && !linked.insert({st.st_dev, st.st_ino}).second) continue;
        ++files;
        allocated += static_cast<std::uint64_t>(st.st_blocks) * 512;
        std::uint64_t size = static_cast<std::uint64_t>(st.st_size);
        bool container = false;
        if (auto it = live.find({st.st_dev, st.st_ino}); it != live.end()) {
          size = it->second.first;
          container = it->second.second;
        } else if (const int fd = ::openat(dfd, e->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC); fd >= 0) {
          // Non-blocking, and only what is still a regular file now: a FIFO swapped in for the
          // file meanwhile must not wedge a daemon thread.
          struct stat now {};
          if (::fstat(fd, &now) == 0 && S_ISREG(now.st_mode)) {
            (void)store::peek_logical_size(fd, static_cast<std::uint64_t>(now.st_size), size, &container);
          }
          ::close(fd);
        }
        logical += size;
        container ? ++containers : ++plain;
      }
    }
    ::closedir(dp);
  }
  const auto es = s.eng->stats();
  const auto ss = s.sched->stats();
  const auto cs = s.cpu->stats();
  // The non-zero counts of an array indexed by an enum, by the enum's name.
  auto by_name = [](const auto& counts, auto as_enum) {
    nlohmann::json o = nlohmann::json::object();
    for (std::size_t i = 0; i < counts.size(); ++i) {
      if (counts[i] != 0) o[std::string(codec::to_string(as_enum(i)))] = counts[i];
    }
    return o;
  };
  const auto per_format = by_name(es.per_format, [](std::size_t i) { return static_cast<codec::payload_format>(i); });
  const auto per_producer = by_name(es.per_producer, [](std::size_t i) { return static_cast<codec::engine>(i); });
  nlohmann::json accel{{"spec", s.o.accel}};
  if (s.accel) {
    const auto as = s.accel->stats();
    accel["name"] = std::string(s.accel->name());
    accel["state"] = std::string(offload::to_string(s.accel->state()));
    accel["reason"] = s.accel->reason();
    accel["jobs"] = as.completed;
    accel["failed"] = as.failed;
    accel["probes"] = as.probes;
    accel["teardowns"] = as.teardowns;
    accel["bytes_in"] = as.bytes_in;
    accel["bytes_out"] = as.bytes_out;
  } else {
    accel["state"] = "none";
  }
  nlohmann::json j{
      {"backing", s.o.backing},
      {"compression", s.o.compression},
      {"recordsize", s.o.recordsize},
      {"files", files},
      {"containers", containers},
      {"plain_files", plain},
      {"logical_bytes", logical},
      {"allocated_bytes", allocated},
      {"ratio", allocated > 0 ? static_cast<double>(logical) / static_cast<double>(allocated) : 1.0},
      {"open_files", open_files},
      {"dirty_records", dirty},
      {"engine",
       {{"records", es.records}, {"holes", es.holes}, {"raw", es.raw}, {"compressed", es.compressed},
        {"checker_skips", es.checker_skips}, {"probe_skips", es.probe_skips}, {"cap_misses", es.cap_misses},
        {"errors", es.errors}, {"bytes_in", es.bytes_in}, {"bytes_out", es.bytes_out},
        {"per_format", per_format}, {"per_producer", per_producer}}},
      {"cache",
       {{"limit_bytes", s.budget->limit()}, {"used_bytes", s.budget->used()}, {"peak_bytes", s.budget->peak()},
        {"reliefs", s.budget->reliefs()}}},
      {"accel", accel},
      {"routing",
       {{"to_accel", ss.to_accel}, {"to_cpu", ss.to_cpu}, {"small", ss.small}, {"overflow", ss.overflow},
        {"not_serving", ss.not_serving}, {"redone", ss.redone}}},
      {"cpu",
       {{"workers", s.cpu->workers()}, {"jobs", cs.completed}, {"failed", cs.failed}, {"bytes_in", cs.bytes_in},
        {"bytes_out", cs.bytes_out}, {"busy_s", static_cast<double>(cs.busy_ns) / 1e9}}}};
  return j.dump();
}

}  // namespace qzfs::fs::detail
