#pragma once
// fs/ internals shared by the daemon's source files (not a public header; only src/fs/ sees it).
//
// - inode: one per backing object the kernel knows (keyed by st_dev, st_ino). It does not keep a
//   descriptor open: it keeps a file handle (name_to_handle_at) and the fd_cache reopens it on
//   demand (open_by_handle_at), so the number of objects a mount serves does not depend on the
//   descriptor limit. Where handles cannot be used (no CAP_DAC_READ_SEARCH, a backing file
//   system without them, another file system mounted below the backing root) the inode's
//   O_PATH descriptor is pinned instead, as libfuse's passthrough_hp does.
// - open_file: the one store::file of a regular file (by st_dev, st_ino) while it is open or
//   holds uncommitted changes. Every open, truncate, stat and the commit thread go through the
//   registry, so a file's state can never fork into two store files. It is
//   let go only when nobody holds it and it is clean (everything committed).
//
// Lock order: fs_state::table_m -> fd_cache::m_ ; registry::m_ -> open_file::m -> store::file.
// (The registry lock and the table lock are never held together.)
#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <list>
#include <map>
#include <set>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "qzfs/fs/filesystem.h"
#include "qzfs/store/budget.h"
#include "qzfs/store/file.h"
#include "qzfs/store/io.h"
#include "service.h"

namespace qzfs::fs::detail {

using key = std::pair<dev_t, ino_t>;

/// A descriptor, closed when the last holder lets go.
struct owned_fd {
  int fd = -1;
  explicit owned_fd(int f) noexcept : fd(f) {}
  ~owned_fd();
  owned_fd(const owned_fd&) = delete;
  owned_fd& operator=(const owned_fd&) = delete;
};
using fd_ptr = std::shared_ptr<const owned_fd>;

struct inode {
  // An inode number is the inode's address (the root's is FUSE_ROOT_ID): fs_state::get() checks
  // this mark before trusting one, so a number the daemon never gave out is caught as the bug it
  // is instead of being served as some other object.
  static constexpr std::uint64_t live_mark = 0x716a66732d696e6fULL;  // "qzfs-ino"
  std::uint64_t mark = live_mark;
  dev_t dev = 0;
  ino_t ino = 0;
  mode_t type = 0;
  std::uint64_t nlookup = 0;         // guarded by fs_state::table_m
  std::vector<unsigned char> handle;  // struct file_handle; empty: `fd` is pinned
  // --- guarded by fd_cache::m_
  fd_ptr fd;
  bool in_lru = false;
  std::list<inode*>::iterator lru;
  inode() = default;
  ~inode() { *static_cast<volatile std::uint64_t*>(&mark) = 0; }  // (a store the compiler keeps)
  inode(const inode&) = delete;
  inode& operator=(const inode&) = delete;
};

/// The O_PATH descriptors of inodes with handles, reopened on demand, at most `capacity` kept.
class fd_cache {
 public:
  void setup(int mount_fd, std::size_t capacity) {
    mount_fd_ = mount_fd;
    capacity_ = capacity;
  }
  /// The inode's descriptor (errno in `err` when it cannot be had: ESTALE once it is gone).
  fd_ptr get(inode& in, int& err);
  /// Makes `fd` the inode's (pinned when the inode has no handle).
  void put(inode& in, fd_ptr fd);
  /// Before the inode is destroyed.
  void drop(inode& in);
  [[nodiscard]] std::size_t open_count() const;

 private:
  void touch_locked(inode& in);
  void insert_locked(inode& in);  // most recently used; evicts past capacity
  mutable std::mutex m_;
  std::list<inode*> lru_;  // front: most recently used
  int mount_fd_ = -1;
  std::size_t capacity_ = 256;
};

/// What the backing directory holds, kept as counters (O(1) to read, no walk per
/// read): a scan at mount start adds what it finds, then commits, creations and removals through
/// the mount add their changes. Files counted once however many links they have.
struct space_counters {
  std::atomic<std::int64_t> files{0}, containers{0}, plain{0}, logical{0}, allocated{0};
  std::atomic<bool> scanned{false};
  std::atomic<std::uint64_t> scanned_files{0};
  // Files made through the mount while the scan runs: counted when made, so the scan passes
  // them by (it could find them in a directory it reads after).
  std::mutex made_m;
  std::set<key> made_in_scan;
};

struct open_file {
  std::unique_ptr<store::file> file;
  key k{};
  std::string name;  // for log lines
  std::mutex m;      // guards the fields below
  int opens = 0;
  // Times set through the mount since the file was opened: a later write-back or commit touches
  // the backing file and would move them, so they are put back after each commit and shown by
  // getattr meanwhile.
  std::optional<timespec> atime, mtime;
  std::optional<timespec> ctime;  // the last change through the mount (shown, never set: ctime cannot be)
  bool read_only = false;
  // What this file adds to space_counters now (guarded by m): updated after each commit;
  // `counted` false once its last link is gone.
  std::int64_t seen_logical = 0, seen_allocated = 0;
  bool seen_container = false, counted = true;
  std::mutex append_m;  // O_APPEND writes (without the writeback cache) one after the other
  // A plain file (not a container) belongs to the backing directory too: what the mount last
  // saw of it (size, mtime, ctime). A change made beside the mount makes the mount's writes fail
  // (EIO) instead of writing the kernel's stale view over it. plain_m orders
  // the mount's own writes, which move these.
  std::mutex plain_m;
  struct stat seen {};
  // The file's policy: policy_m orders reading the attribute and switching the engine (a policy
  // change, a recompression step) and the recompression mark's writes; policy_gen counts the
  // changes, so a step that ran across one does not claim its records (ops_recompress.cc).
  std::mutex policy_m;
  std::uint64_t policy_gen = 0;  // guarded by policy_m
  [[nodiscard]] int fd() const;  // the backing file's descriptor
};
using file_ptr = std::shared_ptr<open_file>;

/// One open_file per backing file.
class registry {
 public:
  /// The entry of `k`, or none.
  file_ptr find(const key& k);
  /// The entry of `k`, made with `make` (called without the lock; a racing maker's result loses).
  template <class Make>
  int get(const key& k, file_ptr& out, Make&& make) {
    if ((out = find(k))) return 0;
    file_ptr made;
    if (int r = make(made)) return r;
    std::lock_guard lk(m_);
    auto& slot = files_[k];
    if (!slot) slot = std::move(made);
    out = slot;
    return 0;
  }
  /// Every entry (for the commit thread and statistics).
  std::vector<file_ptr> all();
  /// Lets go of `f` if nobody else holds it and it is clean; true if it went.
  bool let_go_if_idle(const file_ptr& f);
  [[nodiscard]] std::size_t size() const;

 private:
  mutable std::mutex m_;
  std::map<key, file_ptr> files_;
};

/// The logical sizes of files no one has open, as last seen: a stat of a closed file is then a
/// stat of its backing file, not an open and a read of its header. An entry holds while the
/// backing file's size, mtime and ctime are what they were when it was taken: every change of a
/// backing file moves its ctime (docs/FS.md "Sizes from memory"). Bounded: when full it starts
/// over.
class size_memo {
 public:
  /// The remembered size of the file `now` describes, if it still holds.
  bool find(const struct stat& now, std::uint64_t& logical, bool& container);
  void put(const struct stat& backing, std::uint64_t logical, bool container);

 private:
  struct entry {
    off_t backing;
    timespec mtime, ctime;
    std::uint64_t logical;
    bool container;
  };
  static constexpr std::size_t most = std::size_t{1} << 18;
  std::mutex m_;
  std::map<key, entry> map_;
};

struct fs_state {
  mount_options o;
  inode root;
  fd_ptr root_fd;
  int lock_fd = -1;  // the backing root, flocked: one mount per backing directory
  std::unique_ptr<store::memory_budget> budget;  // outlives every store::file
  std::unique_ptr<service> svc;  // outlives every store::file too (their destructors commit)
  std::mutex table_m;  // lock order: before fd_cache's
  std::map<key, std::unique_ptr<inode>> table;
  fd_cache fds;
  registry files;
  size_memo sizes;
  space_counters space;
  // fsyncs of files, those the store made durable through a sync log, and log batches
  // recovered when files were opened (docs/STORE.md "Sync log")
  std::atomic<std::uint64_t> fsyncs{0}, fsyncs_logged{0}, log_recovered{0};
  std::thread scanner;
  std::size_t max_files = 1024;  // store files held before closing ones are committed at once
  bool handles = false;          // inodes reopen by file handle
  uid_t owner = 0;
  std::atomic<unsigned> recompress_steps{0};  // steps of qzfs recompress under way (one at a time)               // who mounted (may read the statistics)
  store::options store_opts;
  std::FILE* err = stderr;
  std::mutex log_m;
  bool writeback = false;  // negotiated in init
  bool dont_mask = false;  // the kernel leaves the umask to us (FUSE_CAP_DONT_MASK)

  std::mutex timer_m;
  std::condition_variable timer_cv;
  bool stopping = false;
  std::size_t closed = 0;  // files closed since the commit thread last looked (timer_m)
  std::thread committer;

  void log(const std::string& m);
  /// The inode of a number the kernel sent (one the daemon gave out); anything else is an
  /// internal error (aborts).
  inode& get(std::uint64_t ino);
};

/// The kernel forgets `n` lookups of `ino` (inodes.cc); the inode goes at 0. More than it was
/// given is an internal error (aborts).
void forget_one(fs_state& s, std::uint64_t ino, std::uint64_t n);

}  // namespace qzfs::fs::detail
