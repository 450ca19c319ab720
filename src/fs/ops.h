#pragma once
// fs/: what the FUSE operations share (not a public header): the per-open handles, the one
// boundary every operation passes (guard), and helpers used by more than one group of them.
//
// The operations (after libfuse's passthrough_hp: do_x helpers return an errno, thin op_x
// functions send the reply), grouped by concern:
//   ops_file.cc   open, create, read, write, flush, release, fsync, fallocate, lseek
//   ops_names.cc  lookup, forget, mknod, mkdir, symlink, readlink, link, unlink, rmdir, rename,
//                 opendir, readdir, readdirplus, releasedir, fsyncdir
//   ops_attr.cc   getattr, setattr, statfs, the extended attributes (and the statistics)
//   ops_recompress.cc  recompression through the mount (an attribute of a regular file)
//   serve.cc      init, destroy, and the table of all of them
// They depend on store/ (through inodes.h and state.h), never on the engine or offload headers.
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <sys/stat.h>

#include <cerrno>
#include <cstdint>
#include <ctime>
#include <mutex>
#include <string>
#include <system_error>

#include "boundary.h"
#include "inodes.h"

namespace qzfs::fs::detail {

/// An open regular file (fuse_file_info::fh).
struct handle {
  inode* in;
  file_ptr f;
  int flags;
  std::uint64_t seen_errors;  // the file's error_seq() when this handle last reported (errseq)
};

inline fs_state& state(fuse_req_t req) { return *static_cast<fs_state*>(fuse_req_userdata(req)); }
inline handle& handle_of(fuse_file_info* fi) { return *reinterpret_cast<handle*>(fi->fh); }
inline int err_of(std::error_code ec) { return ec ? ec.value() : 0; }

/// Inside a catch block: the errno of the failure (boundary.h), logged under `op` when it was
/// unexpected. Never throws.
int failure(fuse_req_t req, const char* op) noexcept;

/// The boundary every operation passes: `f(replied)` answers the request and sets `replied`
/// first; an exception it lets out becomes the errno failure() gives (a system_error keeps its
/// own) unless the request was answered already (then it is only logged: a request is answered
/// once).
template <class F>
void guard(fuse_req_t req, const char* op, F&& f) noexcept {
  bool replied = false;
  try {
    f(replied);
  } catch (...) {
    const int err = failure(req, op);
    if (!replied) fuse_reply_err(req, err);
  }
}

inline timespec now_ts() {
  timespec t{};
  ::clock_gettime(CLOCK_REALTIME, &t);
  return t;
}

/// A write changed the file: its mtime and ctime are now, kept until the commit (ops_file.cc).
void note_write(open_file& f);
/// Clears set-user-ID / set-group-ID after a change of the file's data by `req`'s caller as a
/// local file system does (ops_file.cc).
void drop_privs(fuse_req_t req, int fd);
/// Writes to a plain file: refused (EIO) when the file changed beside the mount since the mount
/// last saw it (its cached pages and size are stale), else `write` runs and what it left is noted.
std::error_code check_plain(fs_state& s, open_file& f);
template <class Write>
std::error_code plain_write(fs_state& s, open_file& f, Write&& write) {
  std::lock_guard lk(f.plain_m);
  if (auto ec = check_plain(s, f)) return ec;
  auto ec = write();
  (void)::fstat(f.fd(), &f.seen);
  return ec;
}

/// A descriptor that stands for the object in metadata calls: the store's for a regular file
/// that has one (it works even once the file is unlinked), else the inode's O_PATH one.
struct meta_target {
  fd_ptr path;
  file_ptr file;
  int fd = -1;
};
int target_of(fs_state& s, inode& in, meta_target& t);

/// Answers an entry (r == 0) or the error r.
void reply_entry(fuse_req_t req, bool& replied, int r, const fuse_entry_param& e);

// ---- the operations (fuse_lowlevel_ops), by unit
// ops_file.cc
void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi);
void op_read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi);
void op_write(fuse_req_t req, fuse_ino_t, const char* data, size_t size, off_t off, fuse_file_info* fi);
void op_flush(fuse_req_t req, fuse_ino_t, fuse_file_info* fi);
void op_release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi);
void op_fsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info* fi);
void op_fallocate(fuse_req_t req, fuse_ino_t, int mode, off_t off, off_t len, fuse_file_info* fi);
void op_lseek(fuse_req_t req, fuse_ino_t, off_t off, int whence, fuse_file_info* fi);
// ops_names.cc
void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t n);
void op_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets);
void op_readlink(fuse_req_t req, fuse_ino_t ino);
void op_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev);
void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode);
void op_symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name);
void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname);
void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name);
void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name);
void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent, const char* newname,
               unsigned int flags);
void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
void op_readdir(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi);
void op_readdirplus(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi);
void op_releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi);
void op_fsyncdir(fuse_req_t req, fuse_ino_t, int datasync, fuse_file_info* fi);
// ops_attr.cc
void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*);
void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info*);
void op_statfs(fuse_req_t req, fuse_ino_t);
void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size, int flags);
void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size);
void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char* name);
// ops_recompress.cc: the attribute user.qzfs.recompress (qzfs recompress through the mount)
bool recompress_attr(const char* name);
void get_recompress(fuse_req_t req, fuse_ino_t ino, size_t size);
void set_recompress(fuse_req_t req, fuse_ino_t ino, const char* value, size_t size);
/// An open file's engine follows its policy attribute (changed by qzfs set while it was open).
void follow_policy(fs_state& s, open_file& f);
/// The policy attribute of `in` (at `path`) was set to another value or removed: the mark of an
/// earlier recompression goes, an open file's engine follows.
void policy_changed(fs_state& s, inode& in, const std::string& path);

}  // namespace qzfs::fs::detail
