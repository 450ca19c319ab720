#pragma once
// fs/: acting as the caller of a FUSE request. The daemon runs as root for many users;
// every object it creates must be the caller's from its first instant, with the caller's
// umask and group rules applied by the backing file system itself, never chowned afterwards by
// name (a window in which another user could swap the name).
//
// While an as_caller is alive, the calling thread has the request's fsuid, fsgid, supplementary
// groups and (when the kernel leaves the umask to us) umask. These are per-thread in Linux (the
// raw syscalls, not glibc's process-wide wrappers; the thread's fs_struct is unshared once so
// its umask is its own). Outside one, a daemon thread is root with umask 0.
//
// Thread-safety: affects only the calling thread; not reentrant.
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

namespace qzfs::fs::detail {

class as_caller {
 public:
  /// `umask`: apply the request's umask (FUSE_CAP_DONT_MASK negotiated). `mknod`: keep
  /// CAP_MKNOD (the kernel has already checked the caller's, and dropping fsuid 0 drops it).
  as_caller(fuse_req_t req, bool umask, bool mknod = false) noexcept;
  ~as_caller();
  as_caller(const as_caller&) = delete;
  as_caller& operator=(const as_caller&) = delete;
  /// 0, or why the caller's identity could not be taken (then nothing may be created).
  [[nodiscard]] int error() const noexcept { return err_; }

 private:
  bool active_ = false;
  bool root_ = false;  // a root caller: only its group taken (root is not held back by groups)
  int err_ = 0;
};

/// Once at start, before any thread: the daemon's own umask is 0 (requests bring theirs), and it
/// gives up CAP_SYS_RESOURCE, so the backing file system's root reserve and quotas hold for the
/// users whose files it writes (it writes them as their owners: store::fd_io).
void init_caller_support() noexcept;

}  // namespace qzfs::fs::detail
