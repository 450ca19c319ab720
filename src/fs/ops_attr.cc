// fs/: the operations on attributes: getattr, setattr, statfs, and the extended attributes,
// among them qzfs's own statistics attribute (ops.h).
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "committer.h"
#include "ops.h"
#include "qzfs/codec/codec.h"
#include "qzfs/fs/policy.h"
#include "qzfs/fs/stats.h"

namespace qzfs::fs::detail {
namespace {

constexpr const char* stats_attr = "user.qzfs.stats";
constexpr const char* usage_attr = "user.qzfs.du";

// A plain file can be changed beside the mount (it is the backing directory's own): its
// attributes are asked for each time. Everything else changes only through this mount.
double attr_timeout(bool plain) { return plain ? 0.0 : 1.0; }

// The times of a setattr, UTIME_OMIT where not set.
void times_of(const struct stat* attr, int to_set, timespec tv[2]) {
  tv[0] = tv[1] = {0, UTIME_OMIT};
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
}

int do_truncate(fuse_req_t req, fs_state& s, inode& in, meta_target& t, off_t size, bool mode_set) {
  if (in.type != S_IFREG) return EINVAL;
  if (!t.file) {
    if (int r = open_store(s, in, t.file)) return r;
  }
  auto trunc = [&] { return t.file->file->truncate(static_cast<std::uint64_t>(size)); };
  if (auto ec = t.file->file->is_container() ? trunc() : plain_write(s, *t.file, trunc)) return err_of(ec);
  note_write(*t.file);
  if (!mode_set) drop_privs(req, t.file->fd());
  if (t.file->opens == 0) wake_committer(s);  // a truncate of a closed file: commit it soon
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
    if (int r = do_truncate(req, s, in, t, attr->st_size, (to_set & FUSE_SET_ATTR_MODE) != 0)) return r;
  }
  if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
    timespec tv[2];
    times_of(attr, to_set, tv);
    if (t.file) {
      // A write-back or commit still to come touches the backing file: these times are put back
      // after it (and shown meanwhile).
      std::lock_guard lk(t.file->m);
      if (tv[0].tv_nsec != UTIME_OMIT) t.file->atime = tv[0];
      if (tv[1].tv_nsec != UTIME_OMIT) t.file->mtime = tv[1];
    }
    // An open container with changes still to commit (the kernel's writeback cache sends its
    // mtime before every fsync): that commit puts the times on the backing file, and writing
    // them now would only be undone by its writes or a sync log's. (Set in memory first: a
    // commit that ends meanwhile has them, or the file is clean here and they are written now.)
    const bool at_commit = t.file && t.file->file->is_container() && !t.file->file->clean();
    // On the object itself (a symlink too: AT_EMPTY_PATH on its O_PATH descriptor).
    if (!at_commit && ::utimensat(t.fd, "", tv, AT_EMPTY_PATH) != 0) return errno;
  }
  return 0;
}

// Extended attributes of the object (through its descriptor's /proc path; a symlink's cannot be
// reached that way and user.* ones are not allowed on symlinks anyway). `refuse`: the answer
// before anything else (qzfs's own names), 0 for none.
template <class F>
void with_xattr_target(fuse_req_t req, const char* op, fuse_ino_t ino, int refuse, F&& f) {
  guard(req, op, [&](bool& replied) {
    replied = true;
    if (refuse != 0) return (void)fuse_reply_err(req, refuse);
    auto& s = state(req);
    inode& in = s.get(ino);
    // A symlink's own attributes too (GlusterFS bricks set trusted.gfid on every entry): its
    // descriptor is O_PATH|O_NOFOLLOW, and /proc/self/fd/N names the link itself, not its
    // target. The kernel has checked the namespace rules already (trusted.* needs
    // CAP_SYS_ADMIN; user.* is refused on a symlink), as for any file system.
    meta_target t;
    if (int r = target_of(s, in, t)) return (void)fuse_reply_err(req, r);
    f(proc_path(t.fd));
  });
}

// qzfs's own attributes (the statistics, each container's marker): not the user's to set,
// remove or see in a listing. The policy of a directory or file (qzfs set) is the user's.
bool own_xattr(const char* name) { return std::strncmp(name, "user.qzfs.", 10) == 0 && std::strcmp(name, policy_attr) != 0; }

// The statistics name the backing directory and count what is under every directory: root's
// and the mount owner's to read, nobody else's.
void get_stats(fuse_req_t req, size_t size) {
  guard(req, "getxattr", [&](bool& replied) {
    auto& s = state(req);
    const uid_t uid = fuse_req_ctx(req)->uid;
    replied = true;
    if (uid != 0 && uid != s.owner) return (void)fuse_reply_err(req, EACCES);
    const std::string j = to_json(collect_stats(s));
    if (size == 0) return (void)fuse_reply_xattr(req, j.size() + 4096);  // it may grow by the next call
    if (size < j.size()) return (void)fuse_reply_err(req, ERANGE);
    fuse_reply_buf(req, j.data(), j.size());
  });
}

// A regular file's "user.qzfs.du": what it holds (qzfs du). The kernel has checked that the
// caller may read the file (default_permissions), as for any user.* attribute. An open file
// answers from its store (records not committed yet counted as dirty); a closed one from its
// backing file opened read-only for the moment (its committed state; nothing is written).
void get_usage(fuse_req_t req, fuse_ino_t ino, size_t size) {
  guard(req, "getxattr", [&](bool& replied) {
    auto& s = state(req);
    inode& in = s.get(ino);
    replied = true;
    if (in.type != S_IFREG) return (void)fuse_reply_err(req, ENODATA);
    meta_target t;
    if (int r = target_of(s, in, t)) return (void)fuse_reply_err(req, r);
    file_usage u;
    struct stat st {};
    if (::fstat(t.fd, &st) != 0) return (void)fuse_reply_err(req, errno);
    u.allocated_bytes = static_cast<std::uint64_t>(st.st_blocks) * 512;
    auto fill = [&](store::file& f) {
      const auto fs = f.stats();
      u.container = f.is_container() && st.st_size > 0;
      u.logical_bytes = f.size();
      u.records = fs.records;
      u.holes = fs.holes;
      u.raw = fs.raw;
      u.dirty_records = fs.dirty;
      for (std::size_t i = 0; i < fs.per_format.size(); ++i)
        if (fs.per_format[i] != 0) u.per_format[std::string(codec::to_string(static_cast<codec::payload_format>(i)))] = fs.per_format[i];
    };
    if (t.file) {
      fill(*t.file->file);
    } else {
      const int fd = ::open(proc_path(t.fd).c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
      if (fd < 0) return (void)fuse_reply_err(req, errno);
      auto o = s.store_opts;
      o.name = proc_path(t.fd);
      std::unique_ptr<store::file> f;
      if (auto ec = store::file::open(std::make_unique<store::fd_io>(fd), o, f)) return (void)fuse_reply_err(req, ec.value() ? ec.value() : EIO);
      fill(*f);
    }
    const std::string j = to_json(u);
    if (size == 0) return (void)fuse_reply_xattr(req, j.size() + 256);  // it may grow by the next call
    if (size < j.size()) return (void)fuse_reply_err(req, ERANGE);
    fuse_reply_buf(req, j.data(), j.size());
  });
}

}  // namespace

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

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  guard(req, "getattr", [&](bool& replied) {
    struct stat st {};
    bool plain = false;
    replied = true;
    if (int r = stat_of(state(req), state(req).get(ino), st, &plain)) return (void)fuse_reply_err(req, r);
    fuse_reply_attr(req, &st, attr_timeout(plain));
  });
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

void op_statfs(fuse_req_t req, fuse_ino_t) {
  guard(req, "statfs", [&](bool& replied) {
    struct statvfs sv {};
    replied = true;
    if (::fstatvfs(state(req).root_fd->fd, &sv) != 0) return (void)fuse_reply_err(req, errno);
    fuse_reply_statfs(req, &sv);
  });
}

void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size, int flags) {
  if (std::strcmp(name, policy_attr) == 0) {
    // A policy (qzfs set): checked, and kept in its canonical text; new files and directories
    // made under a directory take it (ops_file.cc, ops_names.cc), files opened use it. A new
    // value is root's and the mount owner's to set, as ZFS properties are root's unless
    // delegated: a policy spends the mount's shared workers (zstd-19 in 1 MiB records costs
    // tens of times gzip-1's CPU per byte). Setting the value an object holds already is
    // anyone's (a copy with its attributes, rsync -X, into a directory of the same policy).
    return with_xattr_target(req, "setxattr", ino, 0, [&](const std::string& path) {
      const auto p = parse_file_policy(std::string_view(value, size));
      if (!p) return (void)fuse_reply_err(req, EINVAL);
      const uid_t uid = fuse_req_ctx(req)->uid;
      if (uid != 0 && uid != state(req).owner && !(read_policy_attr(path.c_str()) == *p)) {
        return (void)fuse_reply_err(req, EPERM);
      }
      const std::string text = to_string(*p);
      const bool changed = !(read_policy_attr(path.c_str()) == *p);
      if (::setxattr(path.c_str(), name, text.data(), text.size(), flags) != 0) return (void)fuse_reply_err(req, errno);
      if (changed) policy_changed(state(req), state(req).get(ino), path);
      fuse_reply_err(req, 0);
    });
  }
  if (recompress_attr(name)) return set_recompress(req, ino, value, size);
  with_xattr_target(req, "setxattr", ino, own_xattr(name) ? EPERM : 0, [&](const std::string& path) {
    fuse_reply_err(req, ::setxattr(path.c_str(), name, value, size, flags) == 0 ? 0 : errno);
  });
}

void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  if (ino == FUSE_ROOT_ID && std::strcmp(name, stats_attr) == 0) return get_stats(req, size);
  if (std::strcmp(name, usage_attr) == 0) return get_usage(req, ino, size);
  if (recompress_attr(name)) return get_recompress(req, ino, size);
  with_xattr_target(req, "getxattr", ino, own_xattr(name) ? ENODATA : 0, [&](const std::string& path) {
    std::vector<char> buf(size);
    const ssize_t n = ::getxattr(path.c_str(), name, size ? buf.data() : nullptr, size);
    if (n < 0) return (void)fuse_reply_err(req, errno);
    if (size == 0) return (void)fuse_reply_xattr(req, static_cast<size_t>(n));
    fuse_reply_buf(req, buf.data(), static_cast<size_t>(n));
  });
}

void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  with_xattr_target(req, "listxattr", ino, 0, [&](const std::string& path) {
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
  // A policy may be removed by whoever may write the object (the kernel checks): the mount's own
  // options, root's choice, then apply; copies that strip attributes they do not carry work.
  with_xattr_target(req, "removexattr", ino, own_xattr(name) ? EPERM : 0, [&](const std::string& path) {
    if (::removexattr(path.c_str(), name) != 0) return (void)fuse_reply_err(req, errno);
    if (std::strcmp(name, policy_attr) == 0) policy_changed(state(req), state(req).get(ino), path);
    fuse_reply_err(req, 0);
  });
}

}  // namespace qzfs::fs::detail
