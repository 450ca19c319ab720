// fs/: the FUSE low-level daemon. The only file that includes <fuse_lowlevel.h>.
//
// Shape (after libfuse's passthrough_hp): one fs_state; an inode per backing object, keyed by
// (st_dev, st_ino) and holding an O_PATH descriptor to it; do_x helpers return an errno and
// thin op_x functions send the reply; every op passes one boundary (guard) that turns an
// unexpected exception into EIO and a log line.
//
// Regular files: an inode holds one store::file while the file is open or has uncommitted
// changes; all handles share it. The commit thread syncs every such file each commit_seconds
// and lets go of those no one has open.
//
// Lock order: table_m -> inode::m -> store::file's own locks.
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <dirent.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <syslog.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "qzfs/engine/engine.h"
#include "qzfs/offload/accel_backend.h"
#include "qzfs/offload/cpu_backend.h"
#include "qzfs/offload/device.h"
#include "qzfs/offload/scheduler.h"
#include "qzfs/fs/filesystem.h"
#include "qzfs/store/file.h"

namespace qzfs::fs {
namespace {

// max_write, and the st_blksize of regular files.
constexpr unsigned preferred_io_size = 1u << 20;

struct inode {
  int fd = -1;  // O_PATH | O_NOFOLLOW, beneath the backing root
  dev_t dev = 0;
  ino_t ino = 0;
  mode_t type = 0;
  std::uint64_t nlookup = 0;  // guarded by fs_state::table_m
  std::mutex m;               // guards file and opens
  std::shared_ptr<store::file> file;
  int opens = 0;
  inode() = default;
  inode(const inode&) = delete;
  inode& operator=(const inode&) = delete;
  ~inode() {
    if (fd >= 0) ::close(fd);
  }
};

struct handle {
  inode* in;
  int flags;
};

struct dir_handle {
  DIR* dp = nullptr;
  off_t offset = 0;
  dirent* entry = nullptr;
  ~dir_handle() {
    if (dp != nullptr) ::closedir(dp);
  }
};

std::string proc_path(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

struct fs_state {
  mount_options o;
  inode root;
  std::unique_ptr<store::memory_budget> budget;  // outlives every store::file in the table
  std::mutex table_m;  // lock order: first
  std::map<std::pair<dev_t, ino_t>, std::unique_ptr<inode>> table;
  std::unique_ptr<offload::cpu_backend> cpu;
  std::unique_ptr<offload::accel_backend> accel;
  std::unique_ptr<offload::scheduler> sched;
  std::unique_ptr<engine::engine> eng;
  store::options so;
  std::FILE* err = stderr;
  std::mutex log_m;
  bool writeback = false;  // negotiated in init

  std::mutex timer_m;
  std::condition_variable timer_cv;
  bool stopping = false;
  std::thread committer;

  void log(const std::string& m) {
    std::lock_guard lk(log_m);
    if (o.foreground) {
      std::fprintf(err, "qzfs: %s\n", m.c_str());
      std::fflush(err);
    } else {
      ::syslog(LOG_ERR, "%s", m.c_str());  // detached: stderr is /dev/null
    }
  }
  inode& get(fuse_ino_t ino) { return ino == FUSE_ROOT_ID ? root : *reinterpret_cast<inode*>(ino); }
};

fs_state& state(fuse_req_t req) { return *static_cast<fs_state*>(fuse_req_userdata(req)); }

// The boundary every operation passes: an exception becomes EIO and a log line.
template <class F>
void guard(fuse_req_t req, const char* op, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    state(req).log(std::string(op) + ": " + e.what());
    fuse_reply_err(req, EIO);
  }
}

int err_of(std::error_code ec) { return ec ? ec.value() : 0; }

// Opens the store::file of a regular file's inode if it is not open yet.  in.m held.
int ensure_file(fs_state& s, inode& in) {
  if (in.file) return 0;
  int fd = ::open(proc_path(in.fd).c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0 && (errno == EACCES || errno == EROFS || errno == EPERM)) fd = ::open(proc_path(in.fd).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  std::unique_ptr<store::file> f;
  auto o = s.so;
  o.name = proc_path(in.fd);
  char target[4096];
  const ssize_t n = ::readlink(o.name.c_str(), target, sizeof target - 1);
  if (n > 0) o.name.assign(target, static_cast<std::size_t>(n));
  if (auto ec = store::file::open(std::make_unique<store::fd_io>(fd), o, f)) return err_of(ec);
  in.file = std::move(f);
  return 0;
}

int stat_of(fs_state& s, inode& in, struct stat& st) {
  if (::fstatat(in.fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return errno;
  if (!S_ISREG(st.st_mode)) return 0;
  // The I/O size that pays here is the largest the kernel sends in one request: every write(2)
  // to a FUSE file costs the writer a round trip to the daemon (the kernel asks for
  // security.capability first), so cp, stdio and friends, which size their buffers by
  // st_blksize, should write 1 MiB at a time, not 4 KiB or 128 KiB.
  st.st_blksize = preferred_io_size;
  std::lock_guard lk(in.m);
  if (in.file) {
    st.st_size = static_cast<off_t>(in.file->size());
    return 0;
  }
  const int fd = ::open(proc_path(in.fd).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;  // unreadable to the daemon: the backing size is all there is
  std::uint64_t logical = 0;
  const auto ec = store::peek_logical_size(fd, static_cast<std::uint64_t>(st.st_size), logical);
  ::close(fd);
  if (!ec) st.st_size = static_cast<off_t>(logical);
  (void)s;
  return 0;
}

int do_lookup(fs_state& s, fuse_ino_t parent, const char* name, fuse_entry_param* e) {
  std::memset(e, 0, sizeof *e);
  e->attr_timeout = 1.0;
  e->entry_timeout = 1.0;
  const int fd = ::openat(s.get(parent).fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return errno;
  struct stat st {};
  if (::fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
    const int e2 = errno;
    ::close(fd);
    return e2;
  }
  inode* in;
  {
    std::lock_guard lk(s.table_m);
    auto& slot = s.table[{st.st_dev, st.st_ino}];
    if (slot) {
      ::close(fd);
    } else {
      slot = std::make_unique<inode>();
      slot->fd = fd;
      slot->dev = st.st_dev;
      slot->ino = st.st_ino;
      slot->type = st.st_mode & S_IFMT;
    }
    in = slot.get();
    ++in->nlookup;
  }
  e->ino = reinterpret_cast<fuse_ino_t>(in);
  if (int r = stat_of(s, *in, e->attr)) return r;
  return 0;
}

// Files, directories, nodes and links are created owned by the calling process (with
// set-group-ID directories passing their group on), as a kernel file system would.
void chown_to_caller(fs_state& s, fuse_req_t req, int parent_fd, const char* name) {
  if (::geteuid() != 0) return;
  const fuse_ctx* ctx = fuse_req_ctx(req);
  struct stat pst {};
  gid_t gid = ctx->gid;
  if (::fstatat(parent_fd, "", &pst, AT_EMPTY_PATH) == 0 && (pst.st_mode & S_ISGID)) gid = pst.st_gid;
  if (::fchownat(parent_fd, name, ctx->uid, gid, AT_SYMLINK_NOFOLLOW) != 0) s.log(std::string("chown ") + name + ": " + std::strerror(errno));
}

void forget_one(fs_state& s, fuse_ino_t ino, std::uint64_t n) {
  if (ino == FUSE_ROOT_ID) return;
  std::unique_ptr<inode> gone;
  {
    std::lock_guard lk(s.table_m);
    inode& in = s.get(ino);
    in.nlookup -= std::min(in.nlookup, n);
    if (in.nlookup != 0) return;
    std::lock_guard il(in.m);
    if (in.opens != 0) return;
    auto it = s.table.find({in.dev, in.ino});
    if (it == s.table.end()) return;
    gone = std::move(it->second);
    s.table.erase(it);
  }
  // The store file (if any) commits in its destructor, outside the table lock.
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
  // store then gets whole records. Safe here because every change to a file goes through this
  // mount (the backing directory is ours while mounted), the store serves the kernel's
  // read-before-partial-write from any handle, and O_APPEND is left to the kernel.
  if (s.o.writeback && (conn->capable & FUSE_CAP_WRITEBACK_CACHE)) {
    conn->want |= FUSE_CAP_WRITEBACK_CACHE;
    s.writeback = true;
  } else {
    conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  }
}

void op_destroy(void* userdata) {
  auto& s = *static_cast<fs_state*>(userdata);
  std::lock_guard lk(s.table_m);
  for (auto& [key, in] : s.table) {
    std::lock_guard il(in->m);
    if (in->file) {
      if (auto ec = in->file->sync()) s.log("unmount: " + ec.message());
    }
  }
}

void reply_entry_of(fuse_req_t req, fuse_ino_t parent, const char* name) {
  fuse_entry_param e;
  const int r = do_lookup(state(req), parent, name, &e);
  if (r == 0) {
    fuse_reply_entry(req, &e);
  } else {
    fuse_reply_err(req, r);
  }
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  guard(req, "lookup", [&] { reply_entry_of(req, parent, name); });
}

void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t n) {
  forget_one(state(req), ino, n);
  fuse_reply_none(req);
}

void op_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  for (size_t i = 0; i < count; ++i) forget_one(state(req), forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  guard(req, "getattr", [&] {
    struct stat st {};
    if (int r = stat_of(state(req), state(req).get(ino), st)) return (void)fuse_reply_err(req, r);
    fuse_reply_attr(req, &st, 1.0);
  });
}

void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi) {
  guard(req, "setattr", [&] {
    auto& s = state(req);
    inode& in = s.get(ino);
    const std::string path = proc_path(in.fd);
    if ((to_set & FUSE_SET_ATTR_MODE) && ::fchmodat(AT_FDCWD, path.c_str(), attr->st_mode, 0) != 0) {
      return (void)fuse_reply_err(req, errno);
    }
    if (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
      const uid_t uid = (to_set & FUSE_SET_ATTR_UID) ? attr->st_uid : static_cast<uid_t>(-1);
      const gid_t gid = (to_set & FUSE_SET_ATTR_GID) ? attr->st_gid : static_cast<gid_t>(-1);
      if (::fchownat(in.fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return (void)fuse_reply_err(req, errno);
    }
    if (to_set & FUSE_SET_ATTR_SIZE) {
      if (in.type != S_IFREG) return (void)fuse_reply_err(req, EINVAL);
      std::lock_guard lk(in.m);
      if (int r = ensure_file(s, in)) return (void)fuse_reply_err(req, r);
      if (auto ec = in.file->truncate(static_cast<std::uint64_t>(attr->st_size))) return (void)fuse_reply_err(req, err_of(ec));
    }
    if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
      struct timespec tv[2];
      tv[0].tv_nsec = UTIME_OMIT;
      tv[1].tv_nsec = UTIME_OMIT;
      if (to_set & FUSE_SET_ATTR_ATIME_NOW) tv[0].tv_nsec = UTIME_NOW;
      else if (to_set & FUSE_SET_ATTR_ATIME) tv[0] = attr->st_atim;
      if (to_set & FUSE_SET_ATTR_MTIME_NOW) tv[1].tv_nsec = UTIME_NOW;
      else if (to_set & FUSE_SET_ATTR_MTIME) tv[1] = attr->st_mtim;
      if (in.type == S_IFLNK) return (void)fuse_reply_err(req, EPERM);
      if (::utimensat(AT_FDCWD, path.c_str(), tv, 0) != 0) return (void)fuse_reply_err(req, errno);
    }
    (void)fi;
    struct stat st {};
    if (int r = stat_of(s, in, st)) return (void)fuse_reply_err(req, r);
    fuse_reply_attr(req, &st, 1.0);
  });
}

void op_readlink(fuse_req_t req, fuse_ino_t ino) {
  guard(req, "readlink", [&] {
    char buf[PATH_MAX + 1];
    const ssize_t n = ::readlinkat(state(req).get(ino).fd, "", buf, sizeof buf - 1);
    if (n < 0) return (void)fuse_reply_err(req, errno);
    buf[n] = '\0';
    fuse_reply_readlink(req, buf);
  });
}

// mknod, mkdir, symlink: `make` creates `name` under the parent's descriptor; then the new
// object is given to the caller and its entry returned.
template <class Make>
void create_entry(fuse_req_t req, const char* op, fuse_ino_t parent, const char* name, Make&& make) {
  guard(req, op, [&] {
    auto& s = state(req);
    const int pfd = s.get(parent).fd;
    if (make(pfd) != 0) return (void)fuse_reply_err(req, errno);
    chown_to_caller(s, req, pfd, name);
    reply_entry_of(req, parent, name);
  });
}

void op_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  create_entry(req, "mknod", parent, name,
               [&](int pfd) { return S_ISDIR(mode) ? ::mkdirat(pfd, name, mode) : ::mknodat(pfd, name, mode, rdev); });
}

void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  create_entry(req, "mkdir", parent, name, [&](int pfd) { return ::mkdirat(pfd, name, mode); });
}

void op_symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
  create_entry(req, "symlink", parent, name, [&](int pfd) { return ::symlinkat(link, pfd, name); });
}

void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) {
  guard(req, "link", [&] {
    auto& s = state(req);
    if (::linkat(AT_FDCWD, proc_path(s.get(ino).fd).c_str(), s.get(newparent).fd, newname, AT_SYMLINK_FOLLOW) != 0) {
      return (void)fuse_reply_err(req, errno);
    }
    reply_entry_of(req, newparent, newname);
  });
}

void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  fuse_reply_err(req, ::unlinkat(state(req).get(parent).fd, name, 0) == 0 ? 0 : errno);
}

void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  fuse_reply_err(req, ::unlinkat(state(req).get(parent).fd, name, AT_REMOVEDIR) == 0 ? 0 : errno);
}

void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent, const char* newname,
               unsigned int flags) {
  auto& s = state(req);
  fuse_reply_err(req, ::renameat2(s.get(parent).fd, name, s.get(newparent).fd, newname, flags) == 0 ? 0 : errno);
}

int do_open(fs_state& s, inode& in, fuse_file_info* fi) {
  if (in.type != S_IFREG) return EINVAL;
  std::lock_guard lk(in.m);
  if (int r = ensure_file(s, in)) return r;
  if ((fi->flags & O_TRUNC) && (fi->flags & O_ACCMODE) != O_RDONLY) {
    if (auto ec = in.file->truncate(0)) return err_of(ec);
  }
  ++in.opens;
  // With the writeback cache the kernel places appends itself (its size is the truth).
  fi->fh = reinterpret_cast<std::uint64_t>(new handle{&in, s.writeback ? (fi->flags & ~O_APPEND) : fi->flags});
  // O_DIRECT: no page cache at the FUSE level either; the store still batches records.
  fi->direct_io = (fi->flags & O_DIRECT) ? 1 : 0;
  return 0;
}

void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guard(req, "open", [&] {
    const int r = do_open(state(req), state(req).get(ino), fi);
    if (r == 0) {
      fuse_reply_open(req, fi);
    } else {
      fuse_reply_err(req, r);
    }
  });
}

void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi) {
  guard(req, "create", [&] {
    auto& s = state(req);
    const int pfd = s.get(parent).fd;
    const int fd = ::openat(pfd, name, O_CREAT | O_RDWR | O_CLOEXEC | O_NOFOLLOW | (fi->flags & O_EXCL), mode);
    if (fd < 0) return (void)fuse_reply_err(req, errno);
    ::close(fd);
    chown_to_caller(s, req, pfd, name);
    fuse_entry_param e;
    if (int r = do_lookup(s, parent, name, &e)) return (void)fuse_reply_err(req, r);
    if (int r = do_open(s, s.get(e.ino), fi)) {
      forget_one(s, e.ino, 1);
      return (void)fuse_reply_err(req, r);
    }
    fuse_reply_create(req, &e, fi);
  });
}

void op_read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  guard(req, "read", [&] {
    auto* h = reinterpret_cast<handle*>(fi->fh);
    thread_local std::vector<std::byte> buf;
    if (buf.size() < size) buf.resize(size);
    std::size_t got = 0;
    auto ec = h->in->file->pread(std::span(buf).first(size), static_cast<std::uint64_t>(off), got);
    if (ec && got == 0) return (void)fuse_reply_err(req, err_of(ec));
    fuse_reply_buf(req, reinterpret_cast<const char*>(buf.data()), got);
  });
}

void op_write(fuse_req_t req, fuse_ino_t, const char* data, size_t size, off_t off, fuse_file_info* fi) {
  guard(req, "write", [&] {
    auto* h = reinterpret_cast<handle*>(fi->fh);
    inode& in = *h->in;
    std::error_code ec;
    const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
    if (h->flags & O_APPEND) {
      // Appends from every descriptor go one after the other, each at the end.
      std::lock_guard lk(in.m);
      ec = in.file->pwrite(bytes, in.file->size());
    } else {
      ec = in.file->pwrite(bytes, static_cast<std::uint64_t>(off));
    }
    if (ec) return (void)fuse_reply_err(req, err_of(ec));
    fuse_reply_write(req, size);
  });
}

void op_flush(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  guard(req, "flush", [&] {
    auto* h = reinterpret_cast<handle*>(fi->fh);
    fuse_reply_err(req, err_of(h->in->file->flush()));
  });
}

void op_release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  guard(req, "release", [&] {
    auto* h = reinterpret_cast<handle*>(fi->fh);
    std::shared_ptr<store::file> last;
    {
      std::lock_guard lk(h->in->m);
      if (--h->in->opens == 0) last = h->in->file;
    }
    delete h;
    fuse_reply_err(req, 0);
    // Closed everywhere: its spare and clean buffers go back to the budget now, not when the
    // commit thread lets go of the file.
    if (last) last->shed();
  });
}

void op_fsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info* fi) {
  guard(req, "fsync", [&] {
    auto* h = reinterpret_cast<handle*>(fi->fh);
    fuse_reply_err(req, err_of(h->in->file->sync()));
  });
}

void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guard(req, "opendir", [&] {
    const int fd = ::openat(state(req).get(ino).fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
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
  guard(req, "readdir", [&] {
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
          if (errno != 0 && pos == 0) return (void)fuse_reply_err(req, errno);
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
  if (::fstatvfs(state(req).root.fd, &sv) != 0) return (void)fuse_reply_err(req, errno);
  fuse_reply_statfs(req, &sv);
}

void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size, int flags) {
  if (std::strncmp(name, "user.qzfs.", 10) == 0) return (void)fuse_reply_err(req, EPERM);  // qzfs's own
  inode& in = state(req).get(ino);
  if (in.type == S_IFLNK) return (void)fuse_reply_err(req, ENOTSUP);
  fuse_reply_err(req, ::setxattr(proc_path(in.fd).c_str(), name, value, size, flags) == 0 ? 0 : errno);
}

// Live statistics: the root's "user.qzfs.stats" attribute (read by `qzfs stats`). The sizes come
// from a walk of the backing directory (the cost of a `du`); the rest from the engine and the
// backends since the mount.
std::string stats_json(fs_state& s) {
  std::uint64_t files = 0, containers = 0, plain = 0, logical = 0, allocated = 0, open_files = 0, dirty = 0;
  // Files being written: their size is the store's, not yet the committed one.
  std::map<std::pair<dev_t, ino_t>, std::pair<std::uint64_t, bool>> live;
  {
    std::lock_guard lk(s.table_m);
    for (auto& [key, in] : s.table) {
      std::lock_guard il(in->m);
      if (!in->file) continue;
      ++open_files;
      const auto st = in->file->stats();
      dirty += st.dirty;
      live[key] = {st.logical_size, in->file->is_container()};
    }
  }
  std::vector<int> stack;
  stack.push_back(::openat(s.root.fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
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
        ++files;
        allocated += static_cast<std::uint64_t>(st.st_blocks) * 512;
        std::uint64_t size = static_cast<std::uint64_t>(st.st_size);
        bool container = false;
        if (auto it = live.find({st.st_dev, st.st_ino}); it != live.end()) {
          size = it->second.first;
          container = it->second.second;
        } else if (const int fd = ::openat(dfd, e->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC); fd >= 0) {
          (void)store::peek_logical_size(fd, static_cast<std::uint64_t>(st.st_size), size, &container);
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

constexpr const char* stats_attr = "user.qzfs.stats";

void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  guard(req, "getxattr", [&] {
    if (ino == FUSE_ROOT_ID && std::strcmp(name, stats_attr) == 0) {
      const std::string j = stats_json(state(req));
      if (size == 0) return (void)fuse_reply_xattr(req, j.size() + 4096);  // it may grow by the next call
      if (size < j.size()) return (void)fuse_reply_err(req, ERANGE);
      return (void)fuse_reply_buf(req, j.data(), j.size());
    }
    inode& in = state(req).get(ino);
    if (in.type == S_IFLNK) return (void)fuse_reply_err(req, ENOTSUP);
    std::vector<char> buf(size);
    const ssize_t n = ::getxattr(proc_path(in.fd).c_str(), name, size ? buf.data() : nullptr, size);
    if (n < 0) return (void)fuse_reply_err(req, errno);
    if (size == 0) return (void)fuse_reply_xattr(req, static_cast<size_t>(n));
    fuse_reply_buf(req, buf.data(), static_cast<size_t>(n));
  });
}

void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  guard(req, "listxattr", [&] {
    inode& in = state(req).get(ino);
    if (in.type == S_IFLNK) return (void)fuse_reply_err(req, ENOTSUP);
    std::vector<char> buf(size);
    const ssize_t n = ::listxattr(proc_path(in.fd).c_str(), size ? buf.data() : nullptr, size);
    if (n < 0) return (void)fuse_reply_err(req, errno);
    if (size == 0) return (void)fuse_reply_xattr(req, static_cast<size_t>(n));
    fuse_reply_buf(req, buf.data(), static_cast<size_t>(n));
  });
}

void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  inode& in = state(req).get(ino);
  if (in.type == S_IFLNK) return (void)fuse_reply_err(req, ENOTSUP);
  fuse_reply_err(req, ::removexattr(proc_path(in.fd).c_str(), name) == 0 ? 0 : errno);
}

void op_fallocate(fuse_req_t req, fuse_ino_t, int mode, off_t off, off_t len, fuse_file_info* fi) {
  guard(req, "fallocate", [&] {
    auto& f = *reinterpret_cast<handle*>(fi->fh)->in->file;
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
    fuse_reply_err(req, err_of(ec));
  });
}

void op_lseek(fuse_req_t req, fuse_ino_t, off_t off, int whence, fuse_file_info* fi) {
  guard(req, "lseek", [&] {
    auto& f = *reinterpret_cast<handle*>(fi->fh)->in->file;
    std::uint64_t at = 0;
    if (auto ec = f.seek(static_cast<std::uint64_t>(off), whence, at)) return (void)fuse_reply_err(req, err_of(ec));
    fuse_reply_lseek(req, static_cast<off_t>(at));
  });
}

// Commits every open or recently closed file each commit_seconds (sync(1) never reaches a
// FUSE daemon), and lets go of the files no one has open.
void committer(fs_state& s) {
  std::unique_lock tl(s.timer_m);
  while (!s.timer_cv.wait_for(tl, std::chrono::duration<double>(s.o.commit_seconds), [&] { return s.stopping; })) {
    tl.unlock();
    std::vector<std::pair<std::pair<dev_t, ino_t>, std::shared_ptr<store::file>>> files;
    {
      std::lock_guard lk(s.table_m);
      for (auto& [key, in] : s.table) {
        std::lock_guard il(in->m);
        if (in->file) files.emplace_back(key, in->file);
      }
    }
    for (auto& [key, f] : files) {
      if (auto ec = f->sync()) s.log("commit: " + ec.message());
      // By key: the inode may have been forgotten meanwhile.
      std::lock_guard lk(s.table_m);
      auto it = s.table.find(key);
      if (it == s.table.end()) continue;
      std::lock_guard il(it->second->m);
      if (it->second->opens == 0 && it->second->file == f) it->second->file.reset();
    }
    files.clear();  // a file let go of commits again in its destructor (nothing new: no I/O)
    tl.lock();
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

}  // namespace

int serve(const mount_options& o, std::FILE* err) {
  auto s = std::make_unique<fs_state>();
  s->o = o;
  s->err = err;
  struct stat st {};
  const int root = ::open(o.backing.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root < 0) {
    std::fprintf(err, "qzfs mount: backing %s: %s\n", o.backing.c_str(),
                 errno == ENOTDIR ? "not a directory" : std::strerror(errno));
    return 1;
  }
  s->root.fd = root;
  s->root.type = S_IFDIR;
  s->root.nlookup = 2;
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
  std::string mount_opts = "default_permissions,fsname=qzfs:" + backing_abs + ",subtype=qzfs";
  if (o.allow_other) mount_opts += ",allow_other";
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
      }
      fuse_session_unmount(se);
    } else {
      std::fprintf(err, "qzfs mount: cannot mount on %s (busy, or not permitted)\n", o.mountpoint.c_str());
    }
    fuse_remove_signal_handlers(se);
  }
  fuse_session_destroy(se);
  fuse_opt_free_args(&args);
  // Every file commits as the table goes (store::file's destructor syncs).
  s->table.clear();
  return rc;
}

}  // namespace qzfs::fs
