#pragma once
// fs/: inodes, their descriptors and stat (inodes.cc); see state.h for the model.
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <string>

#include "qzfs/fs/stats.h"
#include "state.h"

namespace qzfs::fs::detail {

// max_write, and the st_blksize of regular files.
inline constexpr unsigned preferred_io_size = 1u << 20;

std::string proc_path(int fd);
/// The inode's O_PATH descriptor (reopened by handle when it was let go); errno in `err`.
fd_ptr path_fd(fs_state& s, inode& in, int& err);
/// The registry's store file of a regular file's inode, opened if needed.
int open_store(fs_state& s, inode& in, file_ptr& out);
/// stat of the backing object with the logical size of a regular file; `plain`: a regular file
/// that is not a container.
int stat_of(fs_state& s, inode& in, struct stat& st, bool* plain = nullptr);
/// The inode of an object the daemon holds a descriptor to (found or made; one lookup counted).
inode* remember(fs_state& s, fd_ptr fd, const struct stat& st);
/// remember() and the entry the kernel gets for it.
int entry_of(fs_state& s, fd_ptr fd, fuse_entry_param* e);
int do_lookup(fs_state& s, fuse_ino_t parent, const char* name, fuse_entry_param* e);
/// Live statistics (stats.cc; the engine's part from s.svc).
stats collect_stats(fs_state& s);
/// The scan at mount start that fills the space counters (stats.cc; runs on s.scanner).
void scan_backing(fs_state& s);
/// After a commit of `f`: its size, stored bytes and kind as the counters see them (stats.cc).
void recount(fs_state& s, open_file& f);
/// Before `name` (under the descriptor `dirfd`) is unlinked or renamed over: what leaves the
/// counters if that removes the last link of a regular file; after_remove() applies it once the
/// removal succeeded (stats.cc).
struct removal {
  bool last = false;
  key k{};
  file_ptr f;
  std::int64_t logical = 0, allocated = 0;
  bool container = false;
};
removal before_remove(fs_state& s, int dirfd, const char* name);
void after_remove(fs_state& s, removal& r);
/// A regular file made through the mount (empty, counted as plain until its first commit).
void count_new_file(fs_state& s, const struct stat& made);

}  // namespace qzfs::fs::detail
