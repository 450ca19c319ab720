// fs/: the commit thread (committer.h).
#include "committer.h"

#include <pthread.h>

#include <sys/stat.h>

#include <chrono>
#include <exception>
#include <functional>
#include <string>
#include <system_error>
#include <vector>

#include "inodes.h"

namespace qzfs::fs::detail {
namespace {

// The file's times as set through the mount, back on the backing file after a commit touched it.
void restore_times(open_file& f) {
  timespec ts[2] = {{0, UTIME_OMIT}, {0, UTIME_OMIT}};
  {
    std::lock_guard lk(f.m);
    if (!f.atime && !f.mtime) return;
    if (f.atime) ts[0] = *f.atime;
    if (f.mtime) ts[1] = *f.mtime;
  }
  (void)::futimens(f.fd(), ts);
}

// Commits every open file each commit_seconds, and every closed one as soon as it is closed (a
// few together), then lets it go.
void commit_loop(fs_state& s) {
  pthread_setname_np(pthread_self(), "qzfs-commit");
  using clock = std::chrono::steady_clock;
  const auto period = std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(s.o.commit_seconds));
  auto next_tick = clock::now() + period;
  std::unique_lock tl(s.timer_m);
  while (!s.stopping) {
    s.timer_cv.wait_until(tl, next_tick, [&] { return s.stopping || s.closed > 0; });
    if (s.stopping) break;
    const bool tick = clock::now() >= next_tick;
    if (!tick) {
      // Closed files: a moment to gather more (an untar closes thousands a second).
      s.timer_cv.wait_for(tl, std::chrono::milliseconds(20), [&] { return s.stopping; });
      if (s.stopping) break;
    }
    s.closed = 0;
    tl.unlock();
    auto files = s.files.all();
    std::vector<file_ptr> group, idle;
    group.reserve(files.size());
    for (auto& slot : files) {
      file_ptr f = std::move(slot);
      bool closed;
      {
        std::lock_guard lk(f->m);
        closed = f->opens == 0;
      }
      if (!tick && !closed) continue;
      if (closed) {
        f->file->close_log();  // its commit now names no sync log: a closed file keeps none
        idle.push_back(f);
      }
      group.push_back(std::move(f));
    }
    if (!s.o.read_only) commit_group(s, group);
    group.clear();
    for (auto& f : idle) (void)let_go(s, f);
    idle.clear();
    tl.lock();
    if (tick) next_tick = clock::now() + period;
  }
}

}  // namespace

void after_commit(fs_state& s, open_file& f) {
  restore_times(f);
  recount(s, f);
}

bool let_go(fs_state& s, const file_ptr& f) {
  if (!s.files.let_go_if_idle(f)) return false;
  // Clean and no longer reachable: what a stat says of it from now on (size_memo).
  struct stat st {};
  if (::fstat(f->fd(), &st) == 0) s.sizes.put(st, f->file->size(), f->file->is_container());
  return true;
}

void commit_one(fs_state& s, open_file& f) noexcept {
  if (f.read_only && s.o.read_only) return;
  try {
    const auto before = f.file->commits();
    if (auto ec = f.file->sync()) {
      s.log("commit of " + f.name + " failed: " + ec.message() + " (kept in memory, tried again)");
      return;
    }
    if (f.file->commits() != before) after_commit(s, f);
  } catch (const std::exception& e) {
    try {
      s.log("commit of " + f.name + ": " + e.what() + " (kept in memory, tried again)");
    } catch (...) {
    }
  }
}

void commit_group(fs_state& s, const std::vector<file_ptr>& files) noexcept {
  // A few hundred at a time: each holds its file's commit locks until the group's end.
  constexpr std::size_t most = 512;
  try {
    std::vector<store::file*> members;
    std::vector<open_file*> of;
    std::vector<std::uint64_t> before;
    std::vector<std::error_code> results;
    for (std::size_t at = 0; at < files.size(); at += most) {
      members.clear();
      of.clear();
      before.clear();
      for (std::size_t i = at; i < std::min(files.size(), at + most); ++i) {
        open_file& f = *files[i];
        if (f.read_only && s.o.read_only) continue;
        members.push_back(f.file.get());
        of.push_back(&f);
        before.push_back(f.file->commits());
      }
      results.assign(members.size(), std::error_code{});
      store::file::sync_group(members, s.lock_fd, results);
      for (std::size_t i = 0; i < members.size(); ++i) {
        if (results[i]) {
          s.log("commit of " + of[i]->name + " failed: " + results[i].message() + " (kept in memory, tried again)");
        } else if (members[i]->commits() != before[i]) {
          after_commit(s, *of[i]);
        }
      }
    }
  } catch (const std::exception& e) {
    // Out of memory for the lists: each on its own, as before.
    for (auto& f : files) commit_one(s, *f);
  }
}

void wake_committer(fs_state& s) {
  {
    std::lock_guard lk(s.timer_m);
    ++s.closed;
  }
  s.timer_cv.notify_all();
}

void start_committer(fs_state& s) { s.committer = std::thread(commit_loop, std::ref(s)); }

void stop_committer(fs_state& s) {
  {
    std::lock_guard lk(s.timer_m);
    s.stopping = true;
  }
  s.timer_cv.notify_all();
  if (s.committer.joinable()) s.committer.join();
  if (s.scanner.joinable()) s.scanner.join();
}

}  // namespace qzfs::fs::detail
