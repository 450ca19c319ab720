// fs/: live statistics, the root's "user.qzfs.stats" attribute (read by `qzfs stats`).
#include <pthread.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "inodes.h"

namespace qzfs::fs::detail {

namespace {

// One regular file's share, read without blocking (a FIFO swapped in for it meanwhile must not
// wedge a daemon thread: O_NONBLOCK, and only what is still a regular file now).
bool share_of(int dirfd, const char* name, std::int64_t& logical, std::int64_t& allocated, bool& container) {
  const int fd = ::openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat st {};
  bool ok = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  if (ok) {
    std::uint64_t size = static_cast<std::uint64_t>(st.st_size);
    container = false;
    (void)store::peek_logical_size(fd, size, size, &container);
    logical = static_cast<std::int64_t>(size);
    allocated = static_cast<std::int64_t>(st.st_blocks) * 512;
  }
  ::close(fd);
  return ok;
}

void add_share(space_counters& c, std::int64_t sign, std::int64_t logical, std::int64_t allocated, bool container) {
  c.files += sign;
  (container ? c.containers : c.plain) += sign;
  c.logical += sign * logical;
  c.allocated += sign * allocated;
}

}  // namespace

void scan_backing(fs_state& s) {
  pthread_setname_np(pthread_self(), "qzfs-scan");
  auto& c = s.space;
  std::set<key> linked;  // files with several links, counted once
  std::vector<int> stack;
  stack.push_back(::openat(s.root_fd->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  while (!stack.empty()) {
    {
      std::lock_guard lk(s.timer_m);
      if (s.stopping) break;
    }
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
        continue;
      }
      if (!S_ISREG(st.st_mode)) continue;
      if (st.st_nlink > 1 && !linked.insert({st.st_dev, st.st_ino}).second) continue;
      {
        std::lock_guard lk(c.made_m);
        if (c.made_in_scan.count({st.st_dev, st.st_ino}) != 0) continue;  // counted when made
      }
      std::int64_t logical = 0, allocated = 0;
      bool container = false;
      if (auto f = s.files.find({st.st_dev, st.st_ino})) {
        // Open through the mount: its share is what it was when opened; commits since then add
        // their difference themselves.
        std::lock_guard lk(f->m);
        logical = f->seen_logical;
        allocated = f->seen_allocated;
        container = f->seen_container;
      } else if (!share_of(dfd, e->d_name, logical, allocated, container)) {
        continue;
      }
      add_share(c, 1, logical, allocated, container);
      ++c.scanned_files;
    }
    ::closedir(dp);
  }
  for (int fd : stack) {
    if (fd >= 0) ::close(fd);
  }
  std::lock_guard lk(c.made_m);
  c.scanned = true;
  c.made_in_scan.clear();
}

void recount(fs_state& s, open_file& f) {
  struct stat st {};
  if (::fstat(f.fd(), &st) != 0) return;
  const auto logical = static_cast<std::int64_t>(f.file->size());
  const auto allocated = static_cast<std::int64_t>(st.st_blocks) * 512;
  const bool container = f.file->is_container() && st.st_size > 0;
  std::lock_guard lk(f.m);
  if (!f.counted) return;
  auto& c = s.space;
  c.logical += logical - f.seen_logical;
  c.allocated += allocated - f.seen_allocated;
  if (container != f.seen_container) {
    (container ? c.containers : c.plain) += 1;
    (container ? c.plain : c.containers) -= 1;
  }
  f.seen_logical = logical;
  f.seen_allocated = allocated;
  f.seen_container = container;
}

removal before_remove(fs_state& s, int dirfd, const char* name) {
  removal r;
  struct stat st {};
  if (::fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1) return r;
  r.k = {st.st_dev, st.st_ino};
  if ((r.f = s.files.find(r.k))) {
    r.last = true;
    return r;
  }
  std::uint64_t logical = 0;
  if (s.sizes.find(st, logical, r.container)) {  // remembered: no need to look inside
    r.last = true;
    r.logical = static_cast<std::int64_t>(logical);
    r.allocated = static_cast<std::int64_t>(st.st_blocks) * 512;
    return r;
  }
  r.last = share_of(dirfd, name, r.logical, r.allocated, r.container);
  return r;
}

void after_remove(fs_state& s, removal& r) {
  if (!r.last) return;
  if (r.f) {
    std::lock_guard lk(r.f->m);
    if (r.f->counted) add_share(s.space, -1, r.f->seen_logical, r.f->seen_allocated, r.f->seen_container);
    r.f->counted = false;
    return;
  }
  add_share(s.space, -1, r.logical, r.allocated, r.container);
}

void count_new_file(fs_state& s, const struct stat& made) {
  auto& c = s.space;
  if (!c.scanned) {
    std::lock_guard lk(c.made_m);
    if (!c.scanned) c.made_in_scan.insert({made.st_dev, made.st_ino});
  }
  add_share(c, 1, 0, 0, false);
}

// Live statistics: the root's "user.qzfs.stats" attribute (read by `qzfs stats`). Sizes from the
// space counters; the rest from the engine and the backends since the mount. O(open files).
stats collect_stats(fs_state& s) {
  stats st;
  auto& c = s.space;
  std::int64_t files = c.files, containers = c.containers, plain = c.plain, logical = c.logical, allocated = c.allocated;
  // Files not committed yet: their size and kind as they are now (stored bytes follow commits).
  for (auto& f : s.files.all()) {
    ++st.open_files;
    st.dirty_records += f->file->stats().dirty;
    const auto now = static_cast<std::int64_t>(f->file->size());
    const bool container = f->file->is_container();
    std::lock_guard lk(f->m);
    if (!f->counted) continue;
    logical += now - f->seen_logical;
    if (container != f->seen_container) {
      containers += container ? 1 : -1;
      plain += container ? -1 : 1;
    }
  }
  auto u = [](std::int64_t v) { return static_cast<std::uint64_t>(std::max<std::int64_t>(0, v)); };
  st.backing = s.o.backing;
  st.compression = s.o.compression;
  st.recordsize = s.o.recordsize;
  st.files = u(files);
  st.containers = u(containers);
  st.plain_files = u(plain);
  st.logical_bytes = u(logical);
  st.allocated_bytes = u(allocated);
  st.ratio = allocated > 0 ? static_cast<double>(logical) / static_cast<double>(allocated) : 1.0;
  st.scan_done = c.scanned;
  st.cache = {.limit_bytes = s.budget->limit(), .used_bytes = s.budget->used(), .peak_bytes = s.budget->peak(),
              .reliefs = s.budget->reliefs()};
  st.sync = {.fsyncs = s.fsyncs.load(), .logged = s.fsyncs_logged.load(), .recovered = s.log_recovered.load()};
  st.accel.spec = s.o.accel;
  if (s.svc) s.svc->fill(st);
  return st;
}

}  // namespace qzfs::fs::detail
