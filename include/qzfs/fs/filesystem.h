#pragma once
// fs/: the FUSE low-level daemon over a backing directory (docs/FS.md). Regular files go through
// the record store (containers, or plain files passed through); everything else (directories,
// symlinks, device nodes, FIFOs, metadata, extended attributes) is passed through. All access to
// the backing directory goes through descriptors opened beneath its root, never by path.
//
// Thread-safety: serve() runs libfuse's multi-threaded loop; every operation may run on any of
// its threads.

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace qzfs::fs {

struct mount_options {
  std::string backing, mountpoint;
  std::string compression = "gzip";   // engine policy: off, lz4, gzip[-N], zstd[-N], auto
  std::uint32_t recordsize = 128 << 10;  // for new files
  unsigned threads = 0;                // CPU workers; 0: one per core
  std::string accel = "auto";          // cpu (none), qat (required), auto (QAT when present), fault:SPEC (tests)
  std::string qatzip;                  // QATzip library; "": $QZFS_QATZIP_LIB, else libqatzip.so.3
  std::string accel_verify = "full";   // how an accelerator's output is checked: full (decoded) or crc
  std::uint64_t cache_bytes = 256ull << 20;  // one memory budget for every file's record buffers
  unsigned readahead_kb = 4096;        // the kernel's read-ahead on the mount (root only; 0: leave it)
  double commit_seconds = 5.0;         // dirty records are committed at least this often
  bool writeback = true;               // the kernel's writeback cache: page-sized writes arrive batched
  bool read_only = false;              // ro: nothing is written, the commit thread included
  bool acl = true;                     // POSIX ACLs enforced by the kernel from the backing ones
  std::vector<std::string> kernel_options;  // mount(8)'s: nosuid, nodev, noexec, ro, sync, dirsync, noatime, ...
  bool foreground = false;
  bool recover = false;                // a mount point left by a daemon that died is detached first
  bool allow_other = false;
  bool debug = false;
};

/// Mounts and serves until unmounted or signalled (SIGTERM, SIGINT, SIGHUP): then flushes and
/// commits every file and returns 0. Errors before serving (bad backing path, busy or missing
/// mount point, no /dev/fuse) are printed to `err` and return 1.
int serve(const mount_options& o, std::FILE* err);

/// Unmounts a qzfs mount point (fusermount3 -u) and waits until its daemon has committed every
/// file and let go of the backing directory, so that `qzfs umount M && qzfs mount B M` (or `qzfs
/// pack B`) finds it free. Says on `err` why it cannot, and returns 0 or 1.
int unmount(const std::string& mountpoint, std::FILE* err);

}  // namespace qzfs::fs
