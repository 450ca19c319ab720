// fs/: the FUSE low-level daemon: its operations, the commit thread and serve().
//
// Shape (after libfuse's passthrough_hp): one fs_state; an inode per backing object (inodes.cc);
// do_x helpers return an errno and thin op_x functions send the reply; every op passes one
// boundary (guard) that turns an unexpected exception into EIO and a log line, and replies
// exactly once.
//
// Regular files: one store::file per backing file in the registry (state.h) while the file is
// open or has uncommitted changes; all handles share it. Closed files are committed by the
// commit thread at once (within ~20 ms, several together) and let go when clean, so the
// descriptors and memory a mount holds follow the files in use, not the files touched since
// the last tick; open ones are committed every commit_seconds.
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <dirent.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "caller.h"
#include "inodes.h"
#include "qzfs/offload/device.h"

namespace qzfs::fs {
using namespace detail;
namespace {

struct handle {
  inode* in;
  file_ptr f;
  int flags;
  std::uint64_t seen_errors;  // the file's error_seq() when this handle last reported (errseq)
};

struct dir_handle {
  DIR* dp = nullptr;
  off_t offset = 0;
  dirent* entry = nullptr;
  ~dir_handle() {
    if (dp != nullptr) ::closedir(dp);
  }
};

fs_state& state(fuse_req_t req) { return *static_cast<fs_state*>(fuse_req_userdata(req)); }

// The boundary every operation passes: an exception becomes EIO and a log line. `f` replies;
// an exception after its reply (replied is set) is only logged: a request is answered once.
template <class F>
void guard(fuse_req_t req, const char* op, F&& f) {
  bool replied = false;
  try {
    f(replied);
  } catch (const std::exception& e) {
    state(req).log(std::string(op) + ": " + e.what());
    if (!replied) fuse_reply_err(req, EIO);
  }
}

int err_of(std::error_code ec) { return ec ? ec.value() : 0; }
handle& handle_of(fuse_file_info* fi) { return *reinterpret_cast<handle*>(fi->fh); }

// An error of the file that this handle has not reported yet (a failed background write-back or
// commit), as the kernel's errseq: each descriptor hears of each failure once.
int pending_error(handle& h) {
  const auto seq = h.f->file->error_seq();
  if (seq == h.seen_errors) return 0;
  h.seen_errors = seq;
  const auto ec = h.f->file->last_error();
  return ec ? ec.value() : EIO;
}

timespec now_ts() {
  timespec t{};
  ::clock_gettime(CLOCK_REALTIME, &t);
  return t;
}

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

// Writes to a plain file: refused when the file changed beside the mount since the mount last
// saw it (its cached pages and size are stale), else `write` runs and what it left is noted.
template <class Write>
std::error_code plain_write(fs_state& s, open_file& f, Write&& write) {
  std::lock_guard lk(f.plain_m);
  struct stat now {};
  if (::fstat(f.fd(), &now) != 0) return {errno, std::generic_category()};
  if (now.st_size != f.seen.st_size || now.st_mtim.tv_sec != f.seen.st_mtim.tv_sec ||
      now.st_mtim.tv_nsec != f.seen.st_mtim.tv_nsec || now.st_ctim.tv_sec != f.seen.st_ctim.tv_sec ||
      now.st_ctim.tv_nsec != f.seen.st_ctim.tv_nsec) {
    s.log(f.name + ": changed in the backing directory while mounted; the mount's writes to it fail until it is closed everywhere");
    return std::make_error_code(std::errc::io_error);
  }
  auto ec = write();
  (void)::fstat(f.fd(), &f.seen);
  return ec;
}

// A write changed the file: its modification time is the write's again.
// Until the commit writes the backing file, its own times are the old ones: the change's time
// is kept here, shown by getattr and put on the backing file after the commit (pjdfstest's
// truncate and O_TRUNC time checks on a nowriteback mount failed without it).
void note_write(open_file& f) {
  const timespec now = now_ts();
  std::lock_guard lk(f.m);
  f.mtime = now;
  f.ctime = now;
}

// A change of the file's data by a caller without CAP_FSETID (taken as: not root) clears
// set-user-ID, and set-group-ID when the file is group-executable or the caller is not in its
// group, as a local file system does (setattr_should_drop_suidgid). The kernel does this itself
// for writes through its page cache, but its FUSE code clears S_ISGID only with S_IXGRP, and it
// never sees direct writes, O_TRUNC opens or truncates as such: those come here with their
// caller. (Writes the kernel's writeback cache sends later carry no caller: docs/FS.md.)
void drop_privs(fuse_req_t req, int fd) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  if (ctx->uid == 0) return;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (st.st_mode & (S_ISUID | S_ISGID)) == 0) return;
  mode_t m = st.st_mode & 07777;
  m &= ~S_ISUID;
  if (m & S_ISGID) {
    bool member = ctx->gid == st.st_gid;
    if (!member && !(m & S_IXGRP)) {
      gid_t groups[256];
      const int n = fuse_req_getgroups(req, 256, groups);
      for (int i = 0; i < std::min(n, 256) && !member; ++i) member = groups[i] == st.st_gid;
    }
    if ((m & S_IXGRP) || !member) m &= ~S_ISGID;
  }
  if (m != (st.st_mode & 07777)) (void)::fchmod(fd, m);
}

// Commits one file; the failure (kept by the store, reported at the file's next fsync or close)
// is logged. Never throws.
void commit_one(fs_state& s, open_file& f) {
  if (f.read_only && s.o.read_only) return;
  try {
    const auto before = f.file->commits();
    if (auto ec = f.file->sync()) {
      s.log("commit of " + f.name + " failed: " + ec.message() + " (kept in memory, tried again)");
      return;
    }
    if (f.file->commits() != before) {
      restore_times(f);
      recount(s, f);
    }
  } catch (const std::exception& e) {
    s.log("commit of " + f.name + ": " + e.what() + " (kept in memory, tried again)");
  }
}

void wake_committer(fs_state& s) {
  {
    std::lock_guard lk(s.timer_m);
    ++s.closed;
  }
  s.timer_cv.notify_all();
}

// ------------------------------------------------------------------------------------------

void op_init(void* userdata, fuse_conn_info* conn) {
  auto& s = *static_cast<fs_state*>(userdata);
  conn->max_write = preferred_io_size;
  // The kernel keeps the lower of this and its device's read-ahead, which set_readahead() raised
  // before this reply.
  if (s.o.readahead_kb != 0) conn->max_readahead = s.o.readahead_kb * 1024;
  if (conn->capable & FUSE_CAP_PARALLEL_DIROPS) conn->want |= FUSE_CAP_PARALLEL_DIROPS;
  // The kernel's writeback cache turns page-sized writes into large ones (up to max_write): the
  // store then gets whole records. Safe here because every change to a container goes through
  // this mount (the backing directory is ours while mounted), the store serves the kernel's
  // read-before-partial-write from any handle, and O_APPEND is left to the kernel.
  if (s.o.writeback && (conn->capable & FUSE_CAP_WRITEBACK_CACHE)) {
    conn->want |= FUSE_CAP_WRITEBACK_CACHE;
    s.writeback = true;
  } else {
    conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  }
  // Many users (issue 13): the request's umask is applied by the backing file system itself,
  // exactly once and only where no default ACL applies; ACLs are enforced by the kernel from
  // the backing file system's; set-user-ID and set-group-ID are cleared by the kernel on every
  // write, truncate and chown of a non-owner (HANDLE_KILLPRIV would leave that to us, and a
  // write through the page cache reaches us as the flusher, not as its writer).
  if (conn->capable & FUSE_CAP_DONT_MASK) {
    conn->want |= FUSE_CAP_DONT_MASK;
    s.dont_mask = true;
  }
  if (s.o.acl && (conn->capable & FUSE_CAP_POSIX_ACL)) conn->want |= FUSE_CAP_POSIX_ACL;
  conn->want &= ~FUSE_CAP_HANDLE_KILLPRIV;
}

void op_destroy(void* userdata) {
  auto& s = *static_cast<fs_state*>(userdata);
  if (s.o.read_only) return;
  for (auto& f : s.files.all()) {
    commit_one(s, *f);
    if (!f->file->clean()) {
      // Only unmount gives up, and it says so, naming the file.
      const std::string m = "unmount: " + f->name + " could not be committed (" + f->file->last_error().message() +
                            "); its latest changes are lost";
      s.log(m);
      if (!s.o.foreground) std::fprintf(s.err, "qzfs: %s\n", m.c_str());
    }
  }
}

void reply_entry(fuse_req_t req, bool& replied, int r, const fuse_entry_param& e) {
  replied = true;
  if (r == 0) {
    fuse_reply_entry(req, &e);
  } else {
    fuse_reply_err(req, r);
  }
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  guard(req, "lookup", [&](bool& replied) {
    fuse_entry_param e;
    const int r = do_lookup(state(req), parent, name, &e);
    if (r == ENOENT) {
      // A negative entry the kernel may keep: it cannot appear behind the mount's back.
      std::memset(&e, 0, sizeof e);
      e.entry_timeout = 1.0;
      replied = true;
      return (void)fuse_reply_entry(req, &e);
    }
    reply_entry(req, replied, r, e);
  });
}

void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t n) {
  forget_one(state(req), ino, n);
  fuse_reply_none(req);
}

void op_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  for (size_t i = 0; i < count; ++i) forget_one(state(req), forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}

double attr_timeout(bool plain) { return plain ? 0.0 : 1.0; }

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  guard(req, "getattr", [&](bool& replied) {
    struct stat st {};
    bool plain = false;
    replied = true;
    if (int r = stat_of(state(req), state(req).get(ino), st, &plain)) return (void)fuse_reply_err(req, r);
    fuse_reply_attr(req, &st, attr_timeout(plain));
  });
}

// A descriptor that stands for the object in metadata calls: the store's for a regular file that
// has one (it works even once the file is unlinked), else the inode's O_PATH one.
struct meta_target {
  fd_ptr path;
  file_ptr file;
  int fd = -1;
};
int target_of(fs_state& s, inode& in, meta_target& t) {
  if (in.type == S_IFREG && (t.file = s.files.find({in.dev, in.ino}))) {
    t.fd = t.file->fd();
    return 0;
  }
  int err = 0;
  t.path = path_fd(s, in, err);
  if (!t.path) return err;
  t.fd = t.path->fd;
  return 0;
}

int do_setattr(fuse_req_t req, fs_state& s, inode& in, struct stat* attr, int to_set) {
  meta_target t;
  if (int r = target_of(s, in, t)) return r;
  const std::string path = proc_path(t.fd);
  if ((to_set & FUSE_SET_ATTR_MODE) && ::fchmodat(AT_FDCWD, path.c_str(), attr->st_mode, 0) != 0) return errno;
  if (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
    const uid_t uid = (to_set & FUSE_SET_ATTR_UID) ? attr->st_uid : static_cast<uid_t>(-1);
    const gid_t gid = (to_set & FUSE_SET_ATTR_GID) ? attr->st_gid : static_cast<gid_t>(-1);
    if (::fchownat(t.fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return errno;
  }
  if (to_set & FUSE_SET_ATTR_SIZE) {
    if (in.type != S_IFREG) return EINVAL;
    if (!t.file) {
      if (int r = open_store(s, in, t.file)) return r;
    }
    auto trunc = [&] { return t.file->file->truncate(static_cast<std::uint64_t>(attr->st_size)); };
    if (auto ec = t.file->file->is_container() ? trunc() : plain_write(s, *t.file, trunc)) return err_of(ec);
    note_write(*t.file);
    if (!(to_set & FUSE_SET_ATTR_MODE)) drop_privs(req, t.file->fd());
    if (t.file->opens == 0) wake_committer(s);  // a truncate of a closed file: commit it soon
  }
  if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
    timespec tv[2] = {{0, UTIME_OMIT}, {0, UTIME_OMIT}};
    if (to_set & FUSE_SET_ATTR_ATIME_NOW) {
      tv[0] = now_ts();
    } else if (to_set & FUSE_SET_ATTR_ATIME) {
      tv[0] = attr->st_atim;
    }
    if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
      tv[1] = now_ts();
    } else if (to_set & FUSE_SET_ATTR_MTIME) {
      tv[1] = attr->st_mtim;
    }
    // On the object itself (a symlink too: AT_EMPTY_PATH on its O_PATH descriptor).
    if (::utimensat(t.fd, "", tv, AT_EMPTY_PATH) != 0) return errno;
    if (t.file) {
      // A write-back or commit still to come touches the backing file: these times are put back
      // after it (and shown meanwhile).
      std::lock_guard lk(t.file->m);
      if (tv[0].tv_nsec != UTIME_OMIT) t.file->atime = tv[0];
      if (tv[1].tv_nsec != UTIME_OMIT) t.file->mtime = tv[1];
    }
  }
  return 0;
}

void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info*) {
  guard(req, "setattr", [&](bool& replied) {
    auto& s = state(req);
    inode& in = s.get(ino);
    replied = true;
    if (int r = do_setattr(req, s, in, attr, to_set)) return (void)fuse_reply_err(req, r);
    struct stat st {};
    bool plain = false;
    if (int r = stat_of(s, in, st, &plain)) return (void)fuse_reply_err(req, r);
    fuse_reply_attr(req, &st, attr_timeout(plain));
  });
}

void op_readlink(fuse_req_t req, fuse_ino_t ino) {
  guard(req, "readlink", [&](bool& replied) {
    int err = 0;
    auto fd = path_fd(state(req), state(req).get(ino), err);
    replied = true;
    if (!fd) return (void)fuse_reply_err(req, err);
    char buf[PATH_MAX + 1];
    const ssize_t n = ::readlinkat(fd->fd, "", buf, sizeof buf - 1);
    if (n < 0) return (void)fuse_reply_err(req, errno);
    buf[n] = '\0';
    fuse_reply_readlink(req, buf);
  });
}

// mknod, mkdir, symlink: `make` creates `name` under the parent's descriptor as the caller (so
// it is the caller's from its first instant, with the caller's umask and the backing file
// system's rules for groups and default ACLs); then its entry is returned. If that fails the new
// object is removed again: a failed operation leaves nothing behind.
template <class Make>
void create_entry(fuse_req_t req, const char* op, fuse_ino_t parent, const char* name, bool mknod, Make&& make) {
  guard(req, op, [&](bool& replied) {
    auto& s = state(req);
    int err = 0;
    auto pfd = path_fd(s, s.get(parent), err);
    replied = true;
    if (!pfd) return (void)fuse_reply_err(req, err);
    {
      as_caller as(req, s.dont_mask, mknod);
      if (as.error() != 0) return (void)fuse_reply_err(req, as.error());
      if (make(pfd->fd) != 0) return (void)fuse_reply_err(req, errno);
    }
    const int fd = ::openat(pfd->fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    fuse_entry_param e;
    const int r = fd < 0 ? errno : entry_of(s, std::make_shared<owned_fd>(fd), &e);
    if (r != 0) {
      struct stat st {};
      const bool dir = ::fstatat(pfd->fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
      (void)::unlinkat(pfd->fd, name, dir ? AT_REMOVEDIR : 0);
      return (void)fuse_reply_err(req, r);
    }
    fuse_reply_entry(req, &e);
  });
}

void op_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  create_entry(req, "mknod", parent, name, S_ISCHR(mode) || S_ISBLK(mode), [&](int pfd) {
    const int r = S_ISDIR(mode) ? ::mkdirat(pfd, name, mode) : ::mknodat(pfd, name, mode, rdev);
    if (r == 0 && S_ISREG(mode)) count_new_file(state(req));
    return r;
  });
}

void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  create_entry(req, "mkdir", parent, name, false, [&](int pfd) { return ::mkdirat(pfd, name, mode); });
}

void op_symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
  create_entry(req, "symlink", parent, name, false, [&](int pfd) { return ::symlinkat(link, pfd, name); });
}

void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) {
  guard(req, "link", [&](bool& replied) {
    auto& s = state(req);
    int err = 0;
    auto fd = path_fd(s, s.get(ino), err);
    auto pfd = fd ? path_fd(s, s.get(newparent), err) : fd_ptr{};
    replied = true;
    if (!fd || !pfd) return (void)fuse_reply_err(req, err);
    if (::linkat(AT_FDCWD, proc_path(fd->fd).c_str(), pfd->fd, newname, AT_SYMLINK_FOLLOW) != 0) {
      return (void)fuse_reply_err(req, errno);
    }
    fuse_entry_param e;
    const int r = entry_of(s, fd, &e);
    reply_entry(req, replied, r, e);
  });
}

void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  guard(req, "unlink", [&](bool& replied) {
    int err = 0;
    auto pfd = path_fd(state(req), state(req).get(parent), err);
    replied = true;
    if (!pfd) return (void)fuse_reply_err(req, err);
    auto gone = before_remove(state(req), pfd->fd, name);
    if (::unlinkat(pfd->fd, name, 0) != 0) return (void)fuse_reply_err(req, errno);
    after_remove(state(req), gone);
    fuse_reply_err(req, 0);
  });
}

void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  guard(req, "rmdir", [&](bool& replied) {
    int err = 0;
    auto pfd = path_fd(state(req), state(req).get(parent), err);
    replied = true;
    if (!pfd) return (void)fuse_reply_err(req, err);
    fuse_reply_err(req, ::unlinkat(pfd->fd, name, AT_REMOVEDIR) == 0 ? 0 : errno);
  });
}

void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent, const char* newname,
               unsigned int flags) {
  guard(req, "rename", [&](bool& replied) {
    auto& s = state(req);
    int err = 0;
    auto a = path_fd(s, s.get(parent), err);
    auto b = a ? path_fd(s, s.get(newparent), err) : fd_ptr{};
    replied = true;
    if (!a || !b) return (void)fuse_reply_err(req, err);
    // A rename over a file removes it (unless both names are one file, or they are exchanged).
    removal gone;
    if (!(flags & RENAME_EXCHANGE)) {
      struct stat from {};
      gone = before_remove(s, b->fd, newname);
      if (gone.last && ::fstatat(a->fd, name, &from, AT_SYMLINK_NOFOLLOW) == 0 && key{from.st_dev, from.st_ino} == gone.k) gone = {};
    }
    if (::renameat2(a->fd, name, b->fd, newname, flags) != 0) return (void)fuse_reply_err(req, errno);
    after_remove(s, gone);
    fuse_reply_err(req, 0);
  });
}

int do_open(fuse_req_t req, fs_state& s, inode& in, fuse_file_info* fi) {
  if (in.type != S_IFREG) return EINVAL;
  file_ptr f;
  if (int r = open_store(s, in, f)) return r;
  if ((fi->flags & O_ACCMODE) != O_RDONLY && f->read_only) return s.o.read_only ? EROFS : EACCES;
  if ((fi->flags & O_TRUNC) && (fi->flags & O_ACCMODE) != O_RDONLY) {
    if (auto ec = f->file->truncate(0)) return err_of(ec);
    note_write(*f);
    drop_privs(req, f->fd());  // the kernel's atomic O_TRUNC sends no setattr that would
  }
  {
    std::lock_guard lk(f->m);
    ++f->opens;
  }
  // With the writeback cache the kernel places appends itself (its size is the truth).
  const int flags = s.writeback ? (fi->flags & ~O_APPEND) : fi->flags;
  fi->fh = reinterpret_cast<std::uint64_t>(new handle{&in, f, flags, f->file->error_seq()});
  // O_DIRECT: no page cache at the FUSE level either; the store still batches records. A plain
  // file may change beside the mount: the kernel's cached pages of it go at every open.
  fi->direct_io = (fi->flags & O_DIRECT) ? 1 : 0;
  fi->keep_cache = f->file->is_container() ? 1 : 0;
  return 0;
}

void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guard(req, "open", [&](bool& replied) {
    const int r = do_open(req, state(req), state(req).get(ino), fi);
    replied = true;
    if (r == 0) {
      fuse_reply_open(req, fi);
    } else {
      fuse_reply_err(req, r);
    }
  });
}

void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi) {
  guard(req, "create", [&](bool& replied) {
    auto& s = state(req);
    int err = 0;
    auto pfd = path_fd(s, s.get(parent), err);
    replied = true;
    if (!pfd) return (void)fuse_reply_err(req, err);
    int fd;
    bool made = true;
    {
      as_caller as(req, s.dont_mask);
      if (as.error() != 0) return (void)fuse_reply_err(req, as.error());
      // Always exclusive: a name that exists (someone made it since the kernel's lookup, or
      // renamed another file there) is opened through the open path with the caller's own
      // rights, never created over or handed over.
      fd = ::openat(pfd->fd, name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC | O_NOFOLLOW, mode);
      if (fd < 0 && errno == EEXIST && !(fi->flags & O_EXCL)) {
        made = false;
        fd = ::openat(pfd->fd, name, (fi->flags & O_ACCMODE) | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
      }
      if (fd < 0) return (void)fuse_reply_err(req, errno);
    }
    auto holder = std::make_shared<owned_fd>(fd);
    struct stat made_st {};
    (void)::fstat(fd, &made_st);
    if (made) count_new_file(s);
    fuse_entry_param e;
    int r = entry_of(s, holder, &e);
    if (r == 0) {
      r = do_open(req, s, s.get(e.ino), fi);
      if (r != 0) forget_one(s, e.ino, 1);
    }
    if (r != 0) {
      // Undo what this call made, and only that (the name may have been reused meanwhile).
      struct stat now {};
      if (made && ::fstatat(pfd->fd, name, &now, AT_SYMLINK_NOFOLLOW) == 0 && now.st_ino == made_st.st_ino &&
          now.st_dev == made_st.st_dev) {
        (void)::unlinkat(pfd->fd, name, 0);
      }
      return (void)fuse_reply_err(req, r);
    }
    fuse_reply_create(req, &e, fi);
  });
}

void op_read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  guard(req, "read", [&](bool& replied) {
    auto& h = handle_of(fi);
    thread_local std::vector<std::byte> buf;
    if (buf.size() < size) buf.resize(size);
    std::size_t got = 0;
    auto ec = h.f->file->pread(std::span(buf).first(size), static_cast<std::uint64_t>(off), got);
    replied = true;
    // An error is an error: a short answer would be zero-filled by the kernel (its page cache
    // and read-ahead), so bytes a damaged record covers would read as zeros (issue 12, item 2).
    if (ec) return (void)fuse_reply_err(req, err_of(ec));
    fuse_reply_buf(req, reinterpret_cast<const char*>(buf.data()), got);
  });
}

void op_write(fuse_req_t req, fuse_ino_t, const char* data, size_t size, off_t off, fuse_file_info* fi) {
  guard(req, "write", [&](bool& replied) {
    auto& h = handle_of(fi);
    std::error_code ec;
    const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
    // A write the caller made itself (direct, or without the writeback cache).
    if ((h.flags & O_DIRECT) || !state(req).writeback) drop_privs(req, h.f->fd());
    auto write = [&] {
      if (h.flags & O_APPEND) {
        // Appends from every descriptor go one after the other, each at the end.
        std::lock_guard lk(h.f->append_m);
        return h.f->file->pwrite(bytes, h.f->file->size());
      }
      return h.f->file->pwrite(bytes, static_cast<std::uint64_t>(off));
    };
    ec = h.f->file->is_container() ? write() : plain_write(state(req), *h.f, write);
    replied = true;
    if (ec) return (void)fuse_reply_err(req, err_of(ec));
    note_write(*h.f);
    fuse_reply_write(req, size);
  });
}

void op_flush(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  guard(req, "flush", [&](bool& replied) {
    auto& h = handle_of(fi);
    int r = err_of(h.f->file->flush());
    const int pending = pending_error(h);
    replied = true;
    fuse_reply_err(req, r != 0 ? r : pending);
  });
}

void op_release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  guard(req, "release", [&](bool& replied) {
    auto& s = state(req);
    std::unique_ptr<handle> h(&handle_of(fi));
    file_ptr f = std::move(h->f);
    h.reset();
    bool last;
    {
      std::lock_guard lk(f->m);
      last = --f->opens == 0;
    }
    replied = true;
    fuse_reply_err(req, 0);
    if (!last) return;
    // Closed everywhere: its spare and clean buffers go back to the budget now, and the commit
    // thread commits it and lets it go at once. With more files held than descriptors allow
    // for, this thread does it itself: resources never decide correctness.
    f->file->shed();
    if (s.files.size() > s.max_files) {
      commit_one(s, *f);
      (void)s.files.let_go_if_idle(f);
    } else {
      wake_committer(s);
    }
  });
}

void op_fsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info* fi) {
  guard(req, "fsync", [&](bool& replied) {
    auto& h = handle_of(fi);
    const auto before = h.f->file->commits();
    int r = err_of(h.f->file->sync());
    if (r == 0 && h.f->file->commits() != before) {
      restore_times(*h.f);
      recount(state(req), *h.f);
    }
    const int pending = pending_error(h);
    replied = true;
    fuse_reply_err(req, r != 0 ? r : pending);
  });
}

void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guard(req, "opendir", [&](bool& replied) {
    int err = 0;
    auto pfd = path_fd(state(req), state(req).get(ino), err);
    replied = true;
    if (!pfd) return (void)fuse_reply_err(req, err);
    const int fd = ::openat(pfd->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return (void)fuse_reply_err(req, errno);
    auto d = std::make_unique<dir_handle>();
    d->dp = ::fdopendir(fd);
    if (d->dp == nullptr) {
      const int e = errno;
      ::close(fd);
      return (void)fuse_reply_err(req, e);
    }
    fi->fh = reinterpret_cast<std::uint64_t>(d.release());
    fuse_reply_open(req, fi);
  });
}

void op_readdir(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  guard(req, "readdir", [&](bool& replied) {
    auto* d = reinterpret_cast<dir_handle*>(fi->fh);
    std::vector<char> buf(size);
    std::size_t pos = 0;
    if (off != d->offset) {
      ::seekdir(d->dp, off);
      d->entry = nullptr;
      d->offset = off;
    }
    for (;;) {
      if (d->entry == nullptr) {
        errno = 0;
        d->entry = ::readdir(d->dp);
        if (d->entry == nullptr) {
          if (errno != 0 && pos == 0) {
            replied = true;
            return (void)fuse_reply_err(req, errno);
          }
          break;
        }
      }
      struct stat st {};
      st.st_ino = d->entry->d_ino;
      st.st_mode = static_cast<mode_t>(d->entry->d_type) << 12;
      const off_t next = ::telldir(d->dp);
      const std::size_t n = fuse_add_direntry(req, buf.data() + pos, size - pos, d->entry->d_name, &st, next);
      if (n > size - pos) break;  // does not fit: it comes first next time
      pos += n;
      d->entry = nullptr;
      d->offset = next;
    }
    replied = true;
    fuse_reply_buf(req, buf.data(), pos);
  });
}

void op_releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  delete reinterpret_cast<dir_handle*>(fi->fh);
  fuse_reply_err(req, 0);
}

void op_fsyncdir(fuse_req_t req, fuse_ino_t, int datasync, fuse_file_info* fi) {
  auto* d = reinterpret_cast<dir_handle*>(fi->fh);
  const int fd = ::dirfd(d->dp);
  fuse_reply_err(req, (datasync ? ::fdatasync(fd) : ::fsync(fd)) == 0 ? 0 : errno);
}

void op_statfs(fuse_req_t req, fuse_ino_t) {
  struct statvfs sv {};
  if (::fstatvfs(state(req).root_fd->fd, &sv) != 0) return (void)fuse_reply_err(req, errno);
  fuse_reply_statfs(req, &sv);
}

constexpr const char* stats_attr = "user.qzfs.stats";

// Extended attributes of the object (through its descriptor's /proc path; a symlink's cannot be
// reached that way and user.* ones are not allowed on symlinks anyway).
template <class F>
void with_xattr_target(fuse_req_t req, const char* op, fuse_ino_t ino, F&& f) {
  guard(req, op, [&](bool& replied) {
    auto& s = state(req);
    inode& in = s.get(ino);
    replied = true;
    if (in.type == S_IFLNK) return (void)fuse_reply_err(req, ENOTSUP);
    meta_target t;
    if (int r = target_of(s, in, t)) return (void)fuse_reply_err(req, r);
    f(proc_path(t.fd));
  });
}

// qzfs's own attributes (the statistics, each container's marker): not the user's to set,
// remove or see in a listing.
bool own_xattr(const char* name) { return std::strncmp(name, "user.qzfs.", 10) == 0; }

void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size, int flags) {
  if (own_xattr(name)) return (void)fuse_reply_err(req, EPERM);
  with_xattr_target(req, "setxattr", ino, [&](const std::string& path) {
    fuse_reply_err(req, ::setxattr(path.c_str(), name, value, size, flags) == 0 ? 0 : errno);
  });
}

void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  if (ino == FUSE_ROOT_ID && std::strcmp(name, stats_attr) == 0) {
    return guard(req, "getxattr", [&](bool& replied) {
      auto& s = state(req);
      const uid_t uid = fuse_req_ctx(req)->uid;
      replied = true;
      // The statistics name the backing directory and count what is under every directory:
      // root's and the mount owner's to read, nobody else's.
      if (uid != 0 && uid != s.owner) return (void)fuse_reply_err(req, EACCES);
      const std::string j = stats_json(s);
      if (size == 0) return (void)fuse_reply_xattr(req, j.size() + 4096);  // it may grow by the next call
      if (size < j.size()) return (void)fuse_reply_err(req, ERANGE);
      fuse_reply_buf(req, j.data(), j.size());
    });
  }
  if (own_xattr(name)) return (void)fuse_reply_err(req, ENODATA);
  with_xattr_target(req, "getxattr", ino, [&](const std::string& path) {
    std::vector<char> buf(size);
    const ssize_t n = ::getxattr(path.c_str(), name, size ? buf.data() : nullptr, size);
    if (n < 0) return (void)fuse_reply_err(req, errno);
    if (size == 0) return (void)fuse_reply_xattr(req, static_cast<size_t>(n));
    fuse_reply_buf(req, buf.data(), static_cast<size_t>(n));
  });
}

void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  with_xattr_target(req, "listxattr", ino, [&](const std::string& path) {
    // The whole list, then qzfs's own names left out (a size query answers the full length: at
    // least what the filtered list needs).
    ssize_t n = ::listxattr(path.c_str(), nullptr, 0);
    if (n < 0) return (void)fuse_reply_err(req, errno);
    std::vector<char> all(static_cast<std::size_t>(n) + 1);
    n = ::listxattr(path.c_str(), all.data(), all.size());
    if (n < 0) return (void)fuse_reply_err(req, errno);
    std::vector<char> shown;
    for (ssize_t at = 0; at < n;) {
      const char* name = all.data() + at;
      const std::size_t len = std::strlen(name) + 1;
      if (!own_xattr(name)) shown.insert(shown.end(), name, name + len);
      at += static_cast<ssize_t>(len);
    }
    if (size == 0) return (void)fuse_reply_xattr(req, shown.size());
    if (size < shown.size()) return (void)fuse_reply_err(req, ERANGE);
    fuse_reply_buf(req, shown.data(), shown.size());
  });
}

void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  if (own_xattr(name)) return (void)fuse_reply_err(req, EPERM);
  with_xattr_target(req, "removexattr", ino, [&](const std::string& path) {
    fuse_reply_err(req, ::removexattr(path.c_str(), name) == 0 ? 0 : errno);
  });
}

void op_fallocate(fuse_req_t req, fuse_ino_t, int mode, off_t off, off_t len, fuse_file_info* fi) {
  guard(req, "fallocate", [&](bool& replied) {
    auto& h = handle_of(fi);
    auto& f = *h.f->file;
    const auto o = static_cast<std::uint64_t>(off), l = static_cast<std::uint64_t>(len);
    const bool keep = (mode & FALLOC_FL_KEEP_SIZE) != 0;
    std::error_code ec;
    if (mode & FALLOC_FL_PUNCH_HOLE) {
      ec = keep ? f.punch_hole(o, l) : std::make_error_code(std::errc::invalid_argument);
    } else if (mode & FALLOC_FL_ZERO_RANGE) {
      ec = f.zero_range(o, l, keep);
    } else if ((mode & ~FALLOC_FL_KEEP_SIZE) == 0) {
      ec = f.allocate(o, l, keep);
    } else {
      ec = std::make_error_code(std::errc::operation_not_supported);
    }
    if (!ec) {
      note_write(*h.f);
      drop_privs(req, h.f->fd());
    }
    replied = true;
    fuse_reply_err(req, err_of(ec));
  });
}

void op_lseek(fuse_req_t req, fuse_ino_t, off_t off, int whence, fuse_file_info* fi) {
  // With the writeback cache the kernel holds written pages the store has not seen yet, and does
  // not write them back before asking: the store's holes may be data already. ENOSYS makes the
  // kernel answer SEEK_DATA/SEEK_HOLE itself (the whole file as data, up to its own size):
  // correct, without hole information. Without the cache the store knows every byte.
  if (state(req).writeback) return (void)fuse_reply_err(req, ENOSYS);
  guard(req, "lseek", [&](bool& replied) {
    auto& f = *handle_of(fi).f->file;
    std::uint64_t at = 0;
    replied = true;
    if (auto ec = f.seek(static_cast<std::uint64_t>(off), whence, at)) return (void)fuse_reply_err(req, err_of(ec));
    fuse_reply_lseek(req, static_cast<off_t>(at));
  });
}

// Commits every open file each commit_seconds (sync(1) never reaches a FUSE daemon), and every
// closed one as soon as it is closed (a few together), then lets it go.
void committer(fs_state& s) {
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

// A path as /proc/self/mountinfo writes it: space, tab, newline and backslash as \ooo octal.
std::string unescape_mountinfo(const char* field) {
  std::string out;
  for (const char* p = field; *p != '\0'; ++p) {
    if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' && p[3] >= '0' && p[3] <= '7') {
      out.push_back(static_cast<char>((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0')));
      p += 3;
    } else {
      out.push_back(*p);
    }
  }
  return out;
}

// The kernel reads ahead at most what the FUSE connection's backing device allows: 128 KiB
// unless raised (the INIT reply can only lower it). More in flight lets several threads decode
// records at once; the device's sysfs knob is writable by root only, so others keep 128 KiB.

void set_readahead(const mount_options& o, std::FILE* err) {
  if (o.readahead_kb == 0) return;
  // The device number from /proc/self/mountinfo: a stat() of the mount point would wait for
  // this daemon, which does not serve yet.
  char real[PATH_MAX];
  if (::realpath(o.mountpoint.c_str(), real) == nullptr) return;
  std::FILE* mi = std::fopen("/proc/self/mountinfo", "re");
  if (mi == nullptr) return;
  std::string dev;
  char line[8192];
  while (std::fgets(line, sizeof line, mi) != nullptr) {
    // id parent major:minor root mountpoint ... - fstype source options
    char devno[64], root[4096], point[4096];
    if (std::sscanf(line, "%*s %*s %63s %4095s %4095s", devno, root, point) == 3 &&
        unescape_mountinfo(point) == real && std::strstr(line, " - fuse.qzfs ") != nullptr) {
      dev = devno;  // the last one: mounts stack
    }
  }
  std::fclose(mi);
  if (dev.empty()) return;
  const std::string knob = "/sys/class/bdi/" + dev + "/read_ahead_kb";
  const int fd = ::open(knob.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return;
  const std::string v = std::to_string(o.readahead_kb);
  if (::write(fd, v.data(), v.size()) < 0 && o.debug) std::fprintf(err, "qzfs mount: %s: %s\n", knob.c_str(), std::strerror(errno));
  ::close(fd);
}


// The descriptor limit decides how many files can be served at once: the hard limit, and a
// share of it for the inodes' cached descriptors and for the store files held.
std::size_t raise_fd_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &rl);
    (void)::getrlimit(RLIMIT_NOFILE, &rl);
  }
  return rl.rlim_cur == RLIM_INFINITY ? (1u << 20) : static_cast<std::size_t>(rl.rlim_cur);
}

// Whether inodes can be reopened by file handle: the daemon may (CAP_DAC_READ_SEARCH) and the
// backing file system gives handles that open again.
bool handles_work(int root_fd, int mount_fd) {
  std::vector<unsigned char> h(sizeof(file_handle) + MAX_HANDLE_SZ);
  auto* fh = reinterpret_cast<file_handle*>(h.data());
  fh->handle_bytes = MAX_HANDLE_SZ;
  int mount_id = 0;
  if (::name_to_handle_at(root_fd, "", fh, &mount_id, AT_EMPTY_PATH) != 0) return false;
  const int fd = ::open_by_handle_at(mount_fd, fh, O_PATH | O_CLOEXEC);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

}  // namespace

int serve(const mount_options& o, std::FILE* err) {
  auto s = std::make_unique<fs_state>();
  s->o = o;
  s->err = err;
  s->owner = ::getuid();
  const std::size_t nofile = raise_fd_limit();
  init_caller_support();  // after the limit is raised, before any thread
  struct stat st {};
  const int root = ::open(o.backing.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root < 0) {
    std::fprintf(err, "qzfs mount: backing %s: %s\n", o.backing.c_str(),
                 errno == ENOTDIR ? "not a directory" : std::strerror(errno));
    return 1;
  }
  s->root_fd = std::make_shared<owned_fd>(root);
  if (::fstat(root, &st) != 0) {
    std::fprintf(err, "qzfs mount: backing %s: %s\n", o.backing.c_str(), std::strerror(errno));
    return 1;
  }
  s->root.dev = st.st_dev;
  s->root.ino = st.st_ino;
  s->root.type = S_IFDIR;
  s->root.nlookup = 2;
  // One mount per backing directory: a second daemon would keep its own state of the same files
  // and each would overwrite the other's commits. The lock lives as long as the daemon (its
  // descriptor survives fuse_daemonize's fork) and is what `qzfs pack` checks too.
  s->lock_fd = ::open(o.backing.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (s->lock_fd < 0 || ::flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    std::fprintf(err, "qzfs mount: backing %s: %s\n", o.backing.c_str(),
                 errno == EWOULDBLOCK ? "already mounted by another qzfs (one mount per backing directory)"
                                      : std::strerror(errno));
    return 1;
  }
  if (::stat(o.mountpoint.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    std::fprintf(err, "qzfs mount: mount point %s: %s\n", o.mountpoint.c_str(),
                 errno == 0 || S_ISDIR(st.st_mode) ? "not a directory" : std::strerror(errno));
    return 1;
  }
  if (::access("/dev/fuse", R_OK | W_OK) != 0) {
    std::fprintf(err, "qzfs mount: /dev/fuse: %s (load the fuse module, or run where FUSE is allowed)\n", std::strerror(errno));
    return 1;
  }
  auto pol = engine::parse_policy(o.compression);
  if (!pol) {
    std::fprintf(err, "qzfs mount: compression=%s: unknown (off, lz4, gzip[-N], zstd[-N], auto)\n", o.compression.c_str());
    return 1;
  }
  // (open_by_handle_at wants a real descriptor of the file system, not an O_PATH one.)
  s->handles = handles_work(root, s->lock_fd);
  const std::size_t spare = nofile > 256 ? nofile - 128 : nofile / 2;
  s->max_files = std::max<std::size_t>(16, spare / 2);
  s->fds.setup(s->lock_fd, std::max<std::size_t>(16, spare / 4));
  s->so.record_size = o.recordsize;
  s->budget = std::make_unique<store::memory_budget>(o.cache_bytes);
  s->so.budget = s->budget.get();
  if (o.accel == "qat") {
    // Asked for by name: refuse to mount without it (accel=auto uses it when present).
    auto dev = offload::make_qat_device({.library = o.qatzip});
    auto probe = dev->open_session();  // (a session must not outlive its device)
    const bool works = probe.session != nullptr;
    probe.session.reset();
    if (!works && probe.permanent) {
      std::fprintf(err, "qzfs mount: accel=qat: %s (accel=auto uses QAT when present)\n", probe.reason.c_str());
      return 1;
    }
  }
  fs_state* sp = s.get();
  s->so.log = [sp](std::string_view m) { sp->log(std::string(m)); };

  fuse_lowlevel_ops ops{};
  ops.init = op_init;
  ops.destroy = op_destroy;
  ops.lookup = op_lookup;
  ops.forget = op_forget;
  ops.forget_multi = op_forget_multi;
  ops.getattr = op_getattr;
  ops.setattr = op_setattr;
  ops.readlink = op_readlink;
  ops.mknod = op_mknod;
  ops.mkdir = op_mkdir;
  ops.symlink = op_symlink;
  ops.link = op_link;
  ops.unlink = op_unlink;
  ops.rmdir = op_rmdir;
  ops.rename = op_rename;
  ops.open = op_open;
  ops.create = op_create;
  ops.read = op_read;
  ops.write = op_write;
  ops.flush = op_flush;
  ops.release = op_release;
  ops.fsync = op_fsync;
  ops.opendir = op_opendir;
  ops.readdir = op_readdir;
  ops.releasedir = op_releasedir;
  ops.fsyncdir = op_fsyncdir;
  ops.statfs = op_statfs;
  ops.setxattr = op_setxattr;
  ops.getxattr = op_getxattr;
  ops.listxattr = op_listxattr;
  ops.removexattr = op_removexattr;
  ops.fallocate = op_fallocate;
  ops.lseek = op_lseek;

  char real[PATH_MAX];
  const std::string backing_abs = ::realpath(o.backing.c_str(), real) != nullptr ? std::string(real) : o.backing;
  // (libfuse splits options at commas; a backslash keeps one, or itself, in the name.)
  std::string fsname = "qzfs:";
  for (const char c : backing_abs) {
    if (c == ',' || c == '\\') fsname += '\\';
    fsname += c;
  }
  std::string mount_opts = "default_permissions,fsname=" + fsname + ",subtype=qzfs";
  if (o.allow_other) mount_opts += ",allow_other";
  // mount(8)'s own options reach the kernel's mount flags (libfuse turns them into MS_*).
  for (const auto& k : o.kernel_options) mount_opts += "," + k;
  std::vector<std::string> argv_s = {"qzfs", "-o", mount_opts};
  if (o.debug) argv_s.emplace_back("-d");
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  fuse_session* se = fuse_session_new(&args, &ops, sizeof ops, s.get());
  if (se == nullptr) {
    std::fprintf(err, "qzfs mount: cannot start a FUSE session\n");
    return 1;
  }
  int rc = 1;
  if (fuse_set_signal_handlers(se) == 0) {
    if (fuse_session_mount(se, o.mountpoint.c_str()) == 0) {
      set_readahead(o, err);
      if (fuse_daemonize(o.foreground ? 1 : 0) == 0) {
        // Threads are made after fuse_daemonize's fork: threads do not survive a fork.
        s->cpu = std::make_unique<offload::cpu_backend>(offload::cpu_backend::options{.workers = o.threads});
        s->accel = offload::make_accel(o.accel, o.qatzip, o.recordsize, "full");
        s->sched = std::make_unique<offload::scheduler>(*s->cpu, s->accel.get());
        s->eng = std::make_unique<engine::engine>(*s->sched, engine::engine_options{.pol = *pol});
        s->so.eng = s->eng.get();
        s->committer = std::thread(committer, std::ref(*s));
        s->scanner = std::thread(scan_backing, std::ref(*s));
        fuse_loop_config* cfg = fuse_loop_cfg_create();
        fuse_loop_cfg_set_max_threads(cfg, 16);
        rc = fuse_session_loop_mt(se, cfg) < 0 ? 1 : 0;
        fuse_loop_cfg_destroy(cfg);
        {
          std::lock_guard lk(s->timer_m);
          s->stopping = true;
        }
        s->timer_cv.notify_all();
        s->committer.join();
        s->scanner.join();
      }
      fuse_session_unmount(se);
    } else {
      std::fprintf(err, "qzfs mount: cannot mount on %s (busy, or not permitted)\n", o.mountpoint.c_str());
    }
    fuse_remove_signal_handlers(se);
  }
  fuse_session_destroy(se);
  fuse_opt_free_args(&args);
  // Every file commits as the registry goes (store::file's destructor syncs; op_destroy did).
  s->table.clear();
  return rc;
}

int unmount(const std::string& mountpoint, std::FILE* err) {
  // The mount point's own path without stat()ing it (that would wait for its daemon): the
  // parent's real path and the last name.
  const std::filesystem::path mp = std::filesystem::path(mountpoint).lexically_normal();
  std::string point = mountpoint;
  {
    const auto name = mp.has_filename() ? mp.filename() : mp.parent_path().filename();
    const auto parent = (mp.has_filename() ? mp : mp.parent_path()).parent_path();
    char real[PATH_MAX];
    if (::realpath(parent.empty() ? "." : parent.c_str(), real) != nullptr) point = (std::filesystem::path(real) / name).string();
  }
  // The backing directory, from the mount's source ("qzfs:BACKING"), opened before the unmount:
  // its lock is held by the daemon until everything is committed.
  int backing = -1;
  if (std::FILE* mi = std::fopen("/proc/self/mountinfo", "re"); mi != nullptr) {
    std::string source;
    char line[16384];
    while (std::fgets(line, sizeof line, mi) != nullptr) {
      char at[4096], src[8192];
      const char* tail = std::strstr(line, " - fuse.qzfs ");
      if (tail != nullptr && std::sscanf(line, "%*s %*s %*s %*s %4095s", at) == 1 && unescape_mountinfo(at) == point &&
          std::sscanf(tail + std::strlen(" - fuse.qzfs "), "%8191s", src) == 1) {
        source = unescape_mountinfo(src);  // the last one: mounts stack
      }
    }
    std::fclose(mi);
    if (source.rfind("qzfs:", 0) == 0) backing = ::open(source.c_str() + 5, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  }
  const owned_fd hold(backing);
  std::fflush(err);
  // fusermount3 run directly (no shell: a mount point is any string).
  const char* const argv_u[] = {"fusermount3", "-u", "--", mountpoint.c_str(), nullptr};
  pid_t pid = 0;
  if (::posix_spawnp(&pid, "fusermount3", nullptr, nullptr, const_cast<char* const*>(argv_u), environ) != 0) {
    std::fprintf(err, "qzfs umount: cannot run fusermount3 (install fuse3)\n");
    return 1;
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return 1;
  if (backing < 0) return 0;
  // The daemon commits every file after the kernel lets go; the lock is free once it is done.
  const auto since = std::chrono::steady_clock::now();
  bool said = false;
  while (::flock(backing, LOCK_SH | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK && errno != EINTR) break;
    if (!said && std::chrono::steady_clock::now() - since > std::chrono::seconds(2)) {
      std::fprintf(err, "qzfs umount: waiting for the daemon to commit its files\n");
      said = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  (void)::flock(backing, LOCK_UN);
  return 0;
}

}  // namespace qzfs::fs
