// fs/: serve(): the daemon's start, its FUSE session and its end; init and destroy; the table
// of operations (ops.h).
//
// Shape (after libfuse's passthrough_hp): one fs_state; an inode per backing object (inodes.cc);
// the operations in ops_*.cc, each passing one boundary (guard, ops.h); the commit thread
// (committer.cc); the compression service (service.cc, made after fuse_daemonize's fork).
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "caller.h"
#include "committer.h"
#include "mount.h"
#include "ops.h"

namespace qzfs::fs {
namespace detail {

int failure(fuse_req_t req, const char* op) noexcept {
  std::string why;
  const int err = errno_of_current_exception(why);
  if (!why.empty()) {
    try {
      state(req).log(std::string(op) + ": " + why);
    } catch (...) {
    }
  }
  return err;
}

}  // namespace detail

using namespace detail;
namespace {

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
  // Many users: the request's umask is applied by the backing file system itself,
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
  const auto files = s.files.all();
  commit_group(s, files);
  for (auto& f : files) {
    if (!f->file->clean()) {
      // Only unmount gives up, and it says so, naming the file.
      const std::string m = "unmount: " + f->name + " could not be committed (" + f->file->last_error().message() +
                            "); its latest changes are lost";
      s.log(m);
      if (!s.o.foreground) std::fprintf(s.err, "qzfs: %s\n", m.c_str());
    }
  }
}

fuse_lowlevel_ops operations() {
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
  ops.readdirplus = op_readdirplus;
  ops.releasedir = op_releasedir;
  ops.fsyncdir = op_fsyncdir;
  ops.statfs = op_statfs;
  ops.setxattr = op_setxattr;
  ops.getxattr = op_getxattr;
  ops.listxattr = op_listxattr;
  ops.removexattr = op_removexattr;
  ops.fallocate = op_fallocate;
  ops.lseek = op_lseek;
  return ops;
}

// The backing directory opened and locked, the mount point and /dev/fuse checked, the service's
// options checked: "" or why the mount cannot be made (printed after "qzfs mount: ").
std::string prepare(fs_state& s, const mount_options& o) {
  struct stat st {};
  const int root = ::open(o.backing.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root < 0) {
    const int e = errno;
    return "backing " + o.backing + ": " + (e == ENOTDIR ? "not a directory" : std::strerror(e));
  }
  s.root_fd = std::make_shared<owned_fd>(root);
  if (::fstat(root, &st) != 0) {
    const int e = errno;
    return "backing " + o.backing + ": " + std::strerror(e);
  }
  s.root.dev = st.st_dev;
  s.root.ino = st.st_ino;
  s.root.type = S_IFDIR;
  s.root.nlookup = 2;
  // One mount per backing directory: a second daemon would keep its own state of the same files
  // and each would overwrite the other's commits. The lock lives as long as the daemon (its
  // descriptor survives fuse_daemonize's fork) and is what `qzfs pack` checks too.
  s.lock_fd = ::open(o.backing.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (s.lock_fd < 0 || ::flock(s.lock_fd, LOCK_EX | LOCK_NB) != 0) {
    const int e = errno;
    return "backing " + o.backing + ": " +
           (e == EWOULDBLOCK ? "already mounted by another qzfs (one mount per backing directory), or a qzfs pack, unpack "
                               "or recompress is rewriting files in it"
                             : std::strerror(e));
  }
  if (::stat(o.mountpoint.c_str(), &st) != 0 && errno == ENOTCONN) {
    // A FUSE daemon that served this mount point died (kill -9, a crash): the kernel still holds
    // the mount. Detached lazily on request; what it had committed is in the backing directory.
    if (!o.recover) {
      return "mount point " + o.mountpoint +
             ": Transport endpoint is not connected (the daemon that served it died); `qzfs mount --recover` "
             "detaches it first (fusermount3 -u -z), then mounts";
    }
    if (run_fusermount(o.mountpoint, true) != 0) return "mount point " + o.mountpoint + ": cannot detach it (fusermount3 -u -z)";
  }
  if (::stat(o.mountpoint.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    const int e = errno;
    return "mount point " + o.mountpoint + ": " + (e == 0 || S_ISDIR(st.st_mode) ? "not a directory" : std::strerror(e));
  }
  if (::access("/dev/fuse", R_OK | W_OK) != 0) {
    const int e = errno;
    return std::string("/dev/fuse: ") + std::strerror(e) + " (load the fuse module, or run where FUSE is allowed)";
  }
  return service::check(o);
}

// The options libfuse mounts with: the kernel's permission checks, the source shown in
// mountinfo ("qzfs:BACKING", which `qzfs umount` reads back), mount(8)'s own flags.
std::vector<std::string> session_args(const mount_options& o) {
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
  return argv_s;
}

// After fuse_daemonize: the threads (they do not survive a fork), then libfuse's loop until
// unmounted or signalled. The loop's result (0 or 1).
int run(fs_state& s, fuse_session* se) {
  s.svc = std::make_unique<service>(s.o);
  s.store_opts.compressor = &s.svc->engine();
  start_committer(s);
  s.scanner = std::thread(scan_backing, std::ref(s));
  fuse_loop_config* cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_max_threads(cfg, 16);
  const int rc = fuse_session_loop_mt(se, cfg) < 0 ? 1 : 0;
  fuse_loop_cfg_destroy(cfg);
  stop_committer(s);
  return rc;
}

// The FUSE session from mount to unmount; 0, or 1 with the reason on `err`.
int mount_and_run(fs_state& s, const fuse_lowlevel_ops& ops, std::FILE* err) {
  const auto& o = s.o;
  std::vector<std::string> argv_s = session_args(o);
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  fuse_session* se = fuse_session_new(&args, &ops, sizeof ops, &s);
  if (se == nullptr) {
    std::fprintf(err, "qzfs mount: cannot start a FUSE session\n");
    return 1;
  }
  int rc = 1;
  if (fuse_set_signal_handlers(se) == 0) {
    if (fuse_session_mount(se, o.mountpoint.c_str()) == 0) {
      set_readahead(o, err);
      if (fuse_daemonize(o.foreground ? 1 : 0) == 0) rc = run(s, se);
      fuse_session_unmount(se);
    } else {
      std::fprintf(err, "qzfs mount: cannot mount on %s (busy, or not permitted)\n", o.mountpoint.c_str());
    }
    fuse_remove_signal_handlers(se);
  }
  fuse_session_destroy(se);
  fuse_opt_free_args(&args);
  return rc;
}

}  // namespace

int serve(const mount_options& o, std::FILE* err) {
  auto s = std::make_unique<fs_state>();
  s->o = o;
  s->err = err;
  s->owner = ::getuid();
  const std::size_t nofile = raise_fd_limit();
  init_caller_support();  // after the limit is raised, before any thread
  if (const std::string why = prepare(*s, o); !why.empty()) {
    std::fprintf(err, "qzfs mount: %s\n", why.c_str());
    return 1;
  }
  // (open_by_handle_at wants a real descriptor of the file system, not an O_PATH one.)
  s->handles = handles_work(s->root_fd->fd, s->lock_fd);
  const std::size_t spare = nofile > 256 ? nofile - 128 : nofile / 2;
  s->max_files = std::max<std::size_t>(16, spare / 2);
  s->fds.setup(s->lock_fd, std::max<std::size_t>(16, spare / 4));
  s->store_opts.record_size = o.recordsize;
  s->budget = std::make_unique<store::memory_budget>(o.cache_bytes);
  s->store_opts.budget = s->budget.get();
  fs_state* sp = s.get();
  s->store_opts.log = [sp](std::string_view m) { sp->log(std::string(m)); };
  const fuse_lowlevel_ops ops = operations();
  const int rc = mount_and_run(*s, ops, err);
  // Every file commits as the registry goes (store::file's destructor syncs; op_destroy did).
  s->table.clear();
  return rc;
}

}  // namespace qzfs::fs
