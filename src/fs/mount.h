#pragma once
// fs/: the plumbing around a mount (mount.cc): what /proc/self/mountinfo says, the kernel's
// read-ahead for the mount, the descriptor limit, whether inodes can be reopened by handle.
// unmount() (filesystem.h) lives there too.
//
// Thread-safety: called by serve() before it serves, and by `qzfs umount`; no shared state.
#include <cstddef>
#include <cstdio>
#include <string>

#include "qzfs/fs/filesystem.h"

namespace qzfs::fs::detail {

/// A path as /proc/self/mountinfo writes it: space, tab, newline and backslash as \ooo octal.
std::string unescape_mountinfo(const char* field);
/// Raises the kernel's read-ahead for the just-mounted `o.mountpoint` to `o.readahead_kb` (root
/// only; quietly nothing otherwise; with o.debug a failure to write the knob is printed).
void set_readahead(const mount_options& o, std::FILE* err);
/// Raises RLIMIT_NOFILE to its hard limit; the limit now.
std::size_t raise_fd_limit();
/// Whether inodes can be reopened by file handle: the daemon may (CAP_DAC_READ_SEARCH) and the
/// backing file system gives handles that open again. `mount_fd`: a real (not O_PATH)
/// descriptor of the backing file system.
bool handles_work(int root_fd, int mount_fd);
/// fusermount3 -u (lazy: -uz, which detaches a mount whose daemon is gone) of `mountpoint`; its
/// exit status, or -1 when it cannot be run.
int run_fusermount(const std::string& mountpoint, bool lazy);

}  // namespace qzfs::fs::detail
