// fs/: the commit thread (committer.h).
#include "committer.h"

#include <sys/stat.h>

#include <chrono>
#include <exception>
#include <functional>
#include <string>

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
    for (auto& slot : files) {
      file_ptr f = std::move(slot);
      bool idle;
      {
        std::lock_guard lk(f->m);
        idle = f->opens == 0;
      }
      if (!tick && !idle) continue;
      if (!s.o.read_only) commit_one(s, *f);
      if (idle) (void)s.files.let_go_if_idle(f);
    }
    tl.lock();
    if (tick) next_tick = clock::now() + period;
  }
}

}  // namespace

void after_commit(fs_state& s, open_file& f) {
  restore_times(f);
  recount(s, f);
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
