// fs/: the operations on names and directories: lookup, forget, mknod, mkdir, symlink,
// readlink, link, unlink, rmdir, rename, opendir, readdir, readdirplus, releasedir, fsyncdir (ops.h).
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstring>
#include <memory>
#include <vector>

#include "caller.h"
#include "ops.h"
#include "qzfs/fs/policy.h"

namespace qzfs::fs::detail {
namespace {

struct dir_handle {
  DIR* dp = nullptr;
  off_t offset = 0;
  dirent* entry = nullptr;
  ~dir_handle() {
    if (dp != nullptr) ::closedir(dp);
  }
};

dir_handle& dir_of(fuse_file_info* fi) { return *reinterpret_cast<dir_handle*>(fi->fh); }

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
    if (fd >= 0) {
      // A directory or regular file takes its parent's policy (qzfs set), as it was made.
      // Only onto what this call made: the name is looked up again as root, and another thread
      // may have put someone else's object under it meanwhile (its owner tells).
      struct stat made {};
      if (::fstat(fd, &made) == 0 && (S_ISDIR(made.st_mode) || S_ISREG(made.st_mode)) && made.st_uid == fuse_req_ctx(req)->uid) {
        inherit_policy(pfd->fd, fd);
      }
    }
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

// Fills `buf` with the directory's entries from `off` on; -errno when the first cannot be read.
// An entry that does not fit comes first next time. `plus` (READDIRPLUS): each with its entry
// and attributes, looked up as LOOKUP would (so `ls -l` and `rm -r` of a directory need no
// LOOKUP per name). A name that cannot be looked up now (gone meanwhile, no descriptor or memory
// left, a damaged header) is listed bare, as readdir lists it: the kernel then looks it up
// itself, and that LOOKUP says what is wrong. A listing never leaves a name out.
ssize_t fill_dir(fuse_req_t req, dir_handle& d, off_t off, std::vector<char>& buf, bool plus = false) {
  const std::size_t size = buf.size();
  std::size_t pos = 0;
  if (off != d.offset) {
    ::seekdir(d.dp, off);
    d.entry = nullptr;
    d.offset = off;
  }
  for (;;) {
    if (d.entry == nullptr) {
      errno = 0;
      d.entry = ::readdir(d.dp);
      if (d.entry == nullptr) {
        if (errno != 0 && pos == 0) return -errno;
        break;
      }
    }
    struct stat st {};
    st.st_ino = d.entry->d_ino;
    st.st_mode = static_cast<mode_t>(d.entry->d_type) << 12;
    const off_t next = ::telldir(d.dp);
    std::size_t n = 0;
    if (plus) {
      const char* name = d.entry->d_name;
      fuse_entry_param e{};
      bool looked_up = false;
      if (std::strcmp(name, ".") != 0 && std::strcmp(name, "..") != 0) {
        const int fd = ::openat(::dirfd(d.dp), name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        looked_up = fd >= 0 && entry_of(state(req), std::make_shared<owned_fd>(fd), &e) == 0;
      }
      if (!looked_up) {
        e = fuse_entry_param{};
        e.attr = st;  // ino 0: no entry, the kernel takes it as a bare name
      }
      n = fuse_add_direntry_plus(req, buf.data() + pos, size - pos, name, &e, next);
      if (n > size - pos) {
        if (looked_up) forget_one(state(req), e.ino, 1);
        break;
      }
    } else {
      n = fuse_add_direntry(req, buf.data() + pos, size - pos, d.entry->d_name, &st, next);
      if (n > size - pos) break;
    }
    pos += n;
    d.entry = nullptr;
    d.offset = next;
  }
  return static_cast<ssize_t>(pos);
}

}  // namespace

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

// A forget is never answered (fuse_reply_none), failure or not: the boundary here only logs.
void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t n) {
  try {
    forget_one(state(req), ino, n);
  } catch (...) {
    (void)failure(req, "forget");
  }
  fuse_reply_none(req);
}

void op_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  try {
    for (size_t i = 0; i < count; ++i) forget_one(state(req), forgets[i].ino, forgets[i].nlookup);
  } catch (...) {
    (void)failure(req, "forget_multi");
  }
  fuse_reply_none(req);
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

void op_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  create_entry(req, "mknod", parent, name, S_ISCHR(mode) || S_ISBLK(mode), [&](int pfd) {
    const int r = S_ISDIR(mode) ? ::mkdirat(pfd, name, mode) : ::mknodat(pfd, name, mode, rdev);
    struct stat made {};
    if (r == 0 && S_ISREG(mode) && ::fstatat(pfd, name, &made, AT_SYMLINK_NOFOLLOW) == 0) count_new_file(state(req), made);
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
    std::vector<char> buf(size);
    const ssize_t n = fill_dir(req, dir_of(fi), off, buf);
    replied = true;
    if (n < 0) return (void)fuse_reply_err(req, static_cast<int>(-n));
    fuse_reply_buf(req, buf.data(), static_cast<std::size_t>(n));
  });
}

void op_readdirplus(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  guard(req, "readdirplus", [&](bool& replied) {
    std::vector<char> buf(size);
    const ssize_t n = fill_dir(req, dir_of(fi), off, buf, true);
    replied = true;
    if (n < 0) return (void)fuse_reply_err(req, static_cast<int>(-n));
    fuse_reply_buf(req, buf.data(), static_cast<std::size_t>(n));
  });
}

void op_releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  guard(req, "releasedir", [&](bool& replied) {
    delete &dir_of(fi);
    replied = true;
    fuse_reply_err(req, 0);
  });
}

void op_fsyncdir(fuse_req_t req, fuse_ino_t, int datasync, fuse_file_info* fi) {
  guard(req, "fsyncdir", [&](bool& replied) {
    const int fd = ::dirfd(dir_of(fi).dp);
    replied = true;
    fuse_reply_err(req, (datasync ? ::fdatasync(fd) : ::fsync(fd)) == 0 ? 0 : errno);
  });
}

}  // namespace qzfs::fs::detail
