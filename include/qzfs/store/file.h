#pragma once
// store/: the data of one file on the backing file system (docs/FORMAT.md "Container",
// docs/STORE.md).
//
// A backing file is either a container (records compressed through the engine, placed
// copy-on-write, described by a record map that a commit makes durable atomically) or a plain
// file (anything else: read and written as it is, never reinterpreted). open() tells them apart
// by the container magic; a plain file becomes a container only when it is truncated to zero
// (and options::convert_plain), or by pack_file().
//
// Contract
// - pread/pwrite/truncate/punch_hole/zero_range behave like their POSIX namesakes on the
//   logical bytes. Errors are errno values: EIO for damaged records (never wrong bytes; the rest
//   of the file stays readable); ENOSPC and others from the backing file. A failed write-back or
//   commit keeps everything in memory (records stay buffered, nothing durable is touched) and is
//   tried again by the next flush() or sync(); every failure also advances error_seq(), so a
//   caller that did not see it (a background committer's) can report it later, as the kernel's
//   errseq does.
// - Writes land in per-record buffers (a partial record is merged in memory, not rewritten per
//   write) and go through the engine in batches: when `batch_records` records are complete, when
//   more than `max_dirty_records` are buffered, on flush(), and on sync(). Only sync() (and
//   close()) makes them durable: it writes the frames, then the map (two copies), syncs, then the
//   slot of the next generation, and syncs again.
// - Crash safety: a live frame or map is never overwritten; space freed by generation G is
//   reused only once generation G is durable. Opening reads two slots and the map: its cost
//   grows with the map, never with the file's history.
// - Space: after every commit, the container's length is at most 2 x its live bytes + 1 MiB
//   (compaction rewrites it when not; docs/STORE.md); freed extents are punched.
//
// Thread-safety: every member may be called from any thread. Reads and writes of different
// records run in parallel; truncate, punch_hole, zero_range and compaction are exclusive.
//
// Inside (src/store/): file.cc is the front; container.h (and the files it lists) and
// plain_file.h are the two implementations behind it.

#include <sys/uio.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "qzfs/codec/ids.h"

namespace qzfs::engine {
class engine;
}

namespace qzfs::store {

class io;             // qzfs/store/io.h
class memory_budget;  // qzfs/store/budget.h

struct options {
  engine::engine* compressor = nullptr;          // required to write a container (the policy lives there)
  std::uint32_t record_size = 128 << 10;  // for new containers: a power of two, 4 KiB .. 1 MiB
  std::size_t batch_records = 0;          // records per engine batch; 0: 2 per CPU worker, at least 4
  std::size_t max_dirty_records = 64;     // buffered records per file before write-back is forced
  std::size_t cache_records = 4;          // decoded records kept per file for small reads
  bool convert_plain = true;              // a plain file truncated to 0 becomes a container
  bool compact = true;                    // keep the space bound (tests turn it off to see why)
  std::uint64_t compact_slack = 1 << 20;  // bytes over 2 x live allowed before compaction runs
  // The sync log of a file fsynced often (docs/STORE.md "Sync log"): its size; 0: none, every
  // fsync commits.
  std::uint32_t sync_log_bytes = 1 << 20;
  memory_budget* budget = nullptr;        // shared by every open file; none: per-file limits only
  std::string name;                       // for log lines
  std::function<void(std::string_view)> log;  // damage and failures; default: stderr
};

struct file_stats {
  std::uint64_t logical_size = 0;
  std::uint64_t container_size = 0;    // length of the backing file the store needs
  std::uint64_t live_bytes = 0;        // frames and maps the last state references
  std::uint64_t records = 0, holes = 0, raw = 0, damaged = 0, dirty = 0;
  std::array<std::uint64_t, codec::payload_format_count> per_format{};  // compressed records by format
  std::uint64_t commits = 0, compactions = 0, flushes = 0, rmw_reads = 0, cache_hits = 0, damaged_reads = 0;
  std::uint64_t log_syncs = 0, log_replayed = 0;  // fsyncs made durable by the sync log; batches recovered from it
};

struct damage {
  std::uint64_t record = 0;
  std::string what;
};

/// What file::rewrite did with the records of its range.
struct rewrite_tally {
  std::uint64_t records = 0;   // read and compressed again
  std::uint64_t buffered = 0;  // dirty already: their own write-back compresses them
  std::uint64_t holes = 0;     // nothing stored, nothing to do
  std::uint64_t damaged = 0;   // unreadable: left as they are (qzfs check names them)
};

class file {
 public:
  /// Makes `backing` (empty) a new container.
  [[nodiscard]] static std::error_code create(std::unique_ptr<io> backing, const options& o, std::unique_ptr<file>& out);
  /// Opens a container (recovering its last committed state) or a plain file.
  [[nodiscard]] static std::error_code open(std::unique_ptr<io> backing, const options& o, std::unique_ptr<file>& out);
  /// Commits what is buffered (a failure is logged and counted).
  ~file();
  file(const file&) = delete;
  file& operator=(const file&) = delete;

  [[nodiscard]] bool is_container() const noexcept;
  /// The container's record size; 0 for a plain file.
  [[nodiscard]] std::uint32_t record_size() const noexcept;

  /// Reads up to out.size() bytes at `off` (fewer only at the end of the file).
  [[nodiscard]] std::error_code pread(std::span<std::byte> out, std::uint64_t off, std::size_t& got);
  [[nodiscard]] std::error_code pwrite(std::span<const iovec> in, std::uint64_t off);
  [[nodiscard]] std::error_code pwrite(std::span<const std::byte> in, std::uint64_t off) {
    iovec v{const_cast<std::byte*>(in.data()), in.size()};
    return pwrite(std::span<const iovec>(&v, 1), off);
  }
  [[nodiscard]] std::error_code truncate(std::uint64_t size);
  /// Deallocates [off, off+len): reads zeros, size unchanged.
  [[nodiscard]] std::error_code punch_hole(std::uint64_t off, std::uint64_t len);
  /// Zeros [off, off+len); grows the file unless keep_size.
  [[nodiscard]] std::error_code zero_range(std::uint64_t off, std::uint64_t len, bool keep_size);
  /// fallocate mode 0: the range reads as before (zeros where new); grows the file unless keep_size.
  [[nodiscard]] std::error_code allocate(std::uint64_t off, std::uint64_t len, bool keep_size);
  /// SEEK_DATA / SEEK_HOLE at record granularity; ENXIO like lseek.
  [[nodiscard]] std::error_code seek(std::uint64_t off, int whence, std::uint64_t& out);

  /// Writes every buffered record (not yet durable).
  [[nodiscard]] std::error_code flush();
  /// flush() and commit: everything written before the call is durable when it returns.
  [[nodiscard]] std::error_code sync();
  /// sync() of many files with their syncs shared: two barriers for the whole group instead of
  /// two syncs each. Files on the file system of `fs_fd` (an open descriptor, not O_PATH, of a
  /// directory there, kept open between calls; -1: none) share one syncfs(2) per barrier; the
  /// others, and all of them after a failed syncfs, are synced on their own, so every failure is
  /// still its own file's. results[i] is what files[i]->sync() would have returned.
  static void sync_group(std::span<file* const> files, int fs_fd, std::span<std::error_code> results);

  [[nodiscard]] std::uint64_t size() const noexcept;
  /// Bytes the backing file system has allocated for the container (or the plain file).
  [[nodiscard]] std::uint64_t physical_size() const noexcept;
  [[nodiscard]] file_stats stats() const;
  /// Commits that wrote something, so far.
  [[nodiscard]] std::uint64_t commits() const noexcept;
  /// The file was closed: its next commit names no sync log (a file with one is not clean() until
  /// then, so it is never let go with a commit still owed by its destructor).
  void close_log();
  /// Syncs made durable through the sync log (no commit), and its batches recovered at open.
  [[nodiscard]] std::uint64_t log_syncs() const noexcept;
  [[nodiscard]] std::uint64_t log_replayed() const noexcept;
  /// Recompression (qzfs recompress): every record of [off, off+len) that holds data is read and
  /// compressed again by the file's engine, then committed (the old frames are freed once that
  /// commit is durable; a crash keeps either). Runs beside reads and writes: a record is taken
  /// under its own lock, so a write racing with it is never lost. Damaged records are left as
  /// they are and counted. ENOTSUP for a plain file, EROFS when opened read-only.
  [[nodiscard]] std::error_code rewrite(std::uint64_t off, std::uint64_t len, rewrite_tally& tally);
  /// The engine records are compressed by from now on (the file's policy changed while open).
  void set_compressor(engine::engine& e) noexcept;
  [[nodiscard]] engine::engine* compressor() const noexcept;

  /// Reads and verifies every record; returns the damaged ones (empty: all good).
  [[nodiscard]] std::error_code check(std::vector<damage>& found);

  /// Nothing written since the last durable commit (no buffered record, no batch in flight, no
  /// change of the map or the size): letting go of the file loses nothing.
  [[nodiscard]] bool clean() const;
  /// Failures of write-back or commit so far, and the last one (for errseq-style reporting).
  [[nodiscard]] std::uint64_t error_seq() const noexcept;
  [[nodiscard]] std::error_code last_error() const;

  /// Bytes of record buffers this file holds (dirty, clean, in flight, spare).
  [[nodiscard]] std::uint64_t charged() const noexcept;
  /// Lets go of memory for the budget: drops clean records and spare buffers, writes back dirty
  /// records (not durable). Called by memory_budget::relieve without this file's locks.
  void shed();

  /// For tests and tools: the backing io.
  [[nodiscard]] io& backing() noexcept;

 private:
  struct impl;  // file.cc
  explicit file(std::unique_ptr<impl> p) noexcept;
  std::unique_ptr<impl> impl_;
};

/// The logical size of a backing file without opening it as a store::file: the committed size
/// of a container (its newest valid slot), else the file's own size. For stat(2) on files no one
/// has open. `backing_size` is what fstat says.
[[nodiscard]] std::error_code peek_logical_size(int fd, std::uint64_t backing_size, std::uint64_t& out,
                                               bool* container = nullptr) noexcept;

/// Rewrites the plain file `name` (relative to `dirfd`) as a container, atomically: a new file
/// beside it, synced, renamed over it. Mode, owner and times are kept. Files with more than one
/// link are left alone (EMLINK), containers too (EEXIST).
[[nodiscard]] std::error_code pack_file(int dirfd, const char* name, const options& o);

/// Rewrites the container `name` (relative to `dirfd`) under `o` (its engine; its record size,
/// or the container's own when 0), atomically: a new container beside it, synced, renamed over
/// it; mode, owner, times and extended attributes kept (qzfs recompress on a backing directory
/// that is not mounted). `finish(fd, record_size)` may set attributes of the new file before it
/// is synced and renamed; `step(bytes)` is called after each part copied (progress,
/// throttling). Plain files are left alone (ENOTSUP), files with more than one link too
/// (EMLINK); a damaged record fails it (EIO) and the container stays; a container that changes
/// meanwhile stays too (EAGAIN).
[[nodiscard]] std::error_code recompress_file(int dirfd, const char* name, const options& o,
                                              const std::function<std::error_code(int, std::uint32_t)>& finish,
                                              const std::function<void(std::uint64_t)>& step);

/// The attribute that says what a container was last recompressed under, and how far
/// ("compression=zstd-3 recordsize=128K", or with " @OFFSET" while a recompression through a
/// mount is under way); the mount removes it when it opens the file under another policy.
inline constexpr const char* recompressed_xattr = "user.qzfs.recompressed";

/// The way out: rewrites the container `name` (relative to `dirfd`) as the plain file of its
/// logical bytes, atomically (a new file beside it, holes kept as holes, synced, renamed over
/// it). Mode, owner, times and extended attributes are kept (the container's marker is not).
/// Plain files are left alone (EEXIST), files with more than one link too (EMLINK); a damaged
/// record fails it (EIO) and the container stays; a container that changes meanwhile stays too
/// (EAGAIN).
[[nodiscard]] std::error_code unpack_file(int dirfd, const char* name, const options& o);

}  // namespace qzfs::store
