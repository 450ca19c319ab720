#include "caller.h"

#include <linux/capability.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

namespace qzfs::fs::detail {
namespace {

bool is_root() noexcept {
  static const bool root = ::geteuid() == 0;
  return root;
}

// Raw syscalls: glibc's setgroups (and setuid family) change every thread of the process.
int set_groups(std::size_t n, const gid_t* list) noexcept { return static_cast<int>(::syscall(SYS_setgroups, n, list)); }

void raise_mknod() noexcept {
  __user_cap_header_struct h{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct d[2]{};
  if (::syscall(SYS_capget, &h, d) != 0) return;
  d[CAP_MKNOD / 32].effective |= 1u << (CAP_MKNOD % 32);
  (void)::syscall(SYS_capset, &h, d);
}

}  // namespace

void init_caller_support() noexcept {
  ::umask(0);
  if (!is_root()) return;
  __user_cap_header_struct h{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct d[2]{};
  if (::syscall(SYS_capget, &h, d) != 0) return;
  d[CAP_SYS_RESOURCE / 32].effective &= ~(1u << (CAP_SYS_RESOURCE % 32));
  d[CAP_SYS_RESOURCE / 32].permitted &= ~(1u << (CAP_SYS_RESOURCE % 32));
  (void)::syscall(SYS_capset, &h, d);
}

as_caller::as_caller(fuse_req_t req, bool umask, bool mknod) noexcept {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  if (umask) {
    // The thread's own umask (its fs_struct unshared from the process's once).
    thread_local bool unshared = ::unshare(CLONE_FS) == 0;
    if (!unshared) {
      err_ = EIO;
      return;
    }
    ::umask(ctx->umask);
  }
  active_ = true;
  if (!is_root()) return;  // a user's own mount: everything is created as that user anyway
  if (ctx->uid == 0) {
    // Root's capabilities decide its access, not its groups; a new object takes its group
    // (fsgid), or the directory's where set-group-ID, and keeps S_ISGID (CAP_FSETID).
    root_ = true;
    if (ctx->gid != 0 && ::syscall(SYS_setfsgid, ctx->gid) < 0) err_ = EPERM;
    return;
  }
  // The caller's supplementary groups decide, as on the backing file system, whether it may
  // create in a directory it reaches through one, and whether a new file in a set-group-ID
  // directory keeps S_ISGID.
  thread_local std::vector<gid_t> groups(64);
  int n = fuse_req_getgroups(req, static_cast<int>(groups.size()), groups.data());
  if (n > static_cast<int>(groups.size())) {
    groups.resize(static_cast<std::size_t>(n));
    n = fuse_req_getgroups(req, static_cast<int>(groups.size()), groups.data());
  }
  if (n < 0) n = 0;  // the process is gone, or no /proc: the primary group alone
  if (set_groups(static_cast<std::size_t>(std::min<int>(n, static_cast<int>(groups.size()))), groups.data()) != 0 ||
      ::syscall(SYS_setfsgid, ctx->gid) < 0 || ::syscall(SYS_setfsuid, ctx->uid) < 0) {
    err_ = EPERM;
  }
  // setfsuid returns the previous value and cannot report failure: check it took.
  if (static_cast<uid_t>(::syscall(SYS_setfsuid, -1)) != ctx->uid) err_ = EPERM;
  if (mknod && ctx->uid != 0) raise_mknod();
}

as_caller::~as_caller() {
  if (!active_) return;
  if (root_) {
    (void)::syscall(SYS_setfsgid, 0);
  } else if (is_root()) {
    (void)::syscall(SYS_setfsuid, 0);  // back to fsuid 0: the kernel gives back the fs capabilities
    (void)::syscall(SYS_setfsgid, 0);
    (void)set_groups(0, nullptr);
  }
  ::umask(0);
}

}  // namespace qzfs::fs::detail
