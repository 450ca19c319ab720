// fs/: the operations on open regular files: open, create, read, write, flush, release, fsync,
// fallocate, lseek (ops.h).
//
// Regular files: one store::file per backing file in the registry (state.h) while the file is
// open or has uncommitted changes; all handles share it. Closing the last handle hands the file
// to the commit thread (committer.h).
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <span>
#include <vector>

#include "caller.h"
#include "committer.h"
#include "ops.h"
#include "qzfs/fs/policy.h"

namespace qzfs::fs::detail {
namespace {

// An error of the file that this handle has not reported yet (a failed background write-back or
// commit), as the kernel's errseq: each descriptor hears of each failure once.
int pending_error(handle& h) {
  const auto seq = h.f->file->error_seq();
  if (seq == h.seen_errors) return 0;
  h.seen_errors = seq;
  const auto ec = h.f->file->last_error();
  return ec ? ec.value() : EIO;
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

// create's new file, made as the caller. Always exclusive: a name that exists (someone made it
// since the kernel's lookup, or renamed another file there) is opened through the open path with
// the caller's own rights, never created over or handed over. A descriptor, or -errno.
int create_as_caller(fuse_req_t req, fs_state& s, int dirfd, const char* name, mode_t mode, int flags, bool& made) {
  as_caller as(req, s.dont_mask);
  if (as.error() != 0) return -as.error();
  made = true;
  int fd = ::openat(dirfd, name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0 && errno == EEXIST && !(flags & O_EXCL)) {
    made = false;
    fd = ::openat(dirfd, name, (flags & O_ACCMODE) | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  }
  return fd < 0 ? -errno : fd;
}

}  // namespace

void note_write(open_file& f) {
  // Until the commit writes the backing file, its own times are the old ones: the change's time
  // is kept here, shown by getattr and put on the backing file after the commit (pjdfstest's
  // truncate and O_TRUNC time checks on a nowriteback mount failed without it).
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

std::error_code check_plain(fs_state& s, open_file& f) {
  struct stat now {};
  if (::fstat(f.fd(), &now) != 0) return {errno, std::generic_category()};
  if (now.st_size != f.seen.st_size || now.st_mtim.tv_sec != f.seen.st_mtim.tv_sec ||
      now.st_mtim.tv_nsec != f.seen.st_mtim.tv_nsec || now.st_ctim.tv_sec != f.seen.st_ctim.tv_sec ||
      now.st_ctim.tv_nsec != f.seen.st_ctim.tv_nsec) {
    s.log(f.name + ": changed in the backing directory while mounted; the mount's writes to it fail until it is closed everywhere");
    return std::make_error_code(std::errc::io_error);
  }
  return {};
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
    bool made = false;
    const int fd = create_as_caller(req, s, pfd->fd, name, mode, fi->flags, made);
    if (fd < 0) return (void)fuse_reply_err(req, -fd);
    auto holder = std::make_shared<owned_fd>(fd);
    struct stat made_st {};
    (void)::fstat(fd, &made_st);
    if (made) {
      inherit_policy(pfd->fd, fd);  // before do_open below opens its store with it
      count_new_file(s, made_st);
      s.sizes.put(made_st, 0, false);  // empty: entry_of's stat need not look inside
    }
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
    // Made by this call: it is the mount's own (written, it becomes a container), so its
    // attributes are kept like a container's; the kernel would otherwise ask for them again at
    // once (a GETATTR before touch's SETATTR: one round trip in seven per file created).
    if (made) e.attr_timeout = 1.0;
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
    // and read-ahead), so bytes a damaged record covers would read as zeros.
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
      f->file->close_log();
      commit_one(s, *f);
      (void)let_go(s, f);
    } else {
      wake_committer(s);
    }
  });
}

void op_fsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info* fi) {
  guard(req, "fsync", [&](bool& replied) {
    auto& h = handle_of(fi);
    auto& s = state(req);
    const auto before = h.f->file->commits();
    const auto logged = h.f->file->log_syncs();
    int r = err_of(h.f->file->sync());
    if (r == 0 && h.f->file->commits() != before) after_commit(s, *h.f);
    s.fsyncs.fetch_add(1, std::memory_order_relaxed);
    if (h.f->file->log_syncs() != logged) s.fsyncs_logged.fetch_add(1, std::memory_order_relaxed);
    const int pending = pending_error(h);
    replied = true;
    fuse_reply_err(req, r != 0 ? r : pending);
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
  guard(req, "lseek", [&](bool& replied) {
    replied = true;
    if (state(req).writeback) return (void)fuse_reply_err(req, ENOSYS);
    auto& f = *handle_of(fi).f->file;
    std::uint64_t at = 0;
    if (auto ec = f.seek(static_cast<std::uint64_t>(off), whence, at)) return (void)fuse_reply_err(req, err_of(ec));
    fuse_reply_lseek(req, static_cast<off_t>(at));
  });
}

}  // namespace qzfs::fs::detail
