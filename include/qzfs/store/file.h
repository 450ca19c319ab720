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
// Lock order: commit_m_ -> layout_ -> flush_m_ -> record stripes (ascending) -> m_ -> cache_m_.

#include <sys/uio.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <vector>

#include "qzfs/engine/engine.h"
#include "qzfs/format/container.h"
#include "qzfs/store/budget.h"
#include "qzfs/store/io.h"
#include "qzfs/store/space.h"

namespace qzfs::store {

struct options {
  engine::engine* eng = nullptr;          // required to write a container (the policy lives there)
  std::uint32_t record_size = 128 << 10;  // for new containers: a power of two, 4 KiB .. 1 MiB
  std::size_t batch_records = 0;          // records per engine batch; 0: 2 per CPU worker, at least 4
  std::size_t max_dirty_records = 64;     // buffered records per file before write-back is forced
  std::size_t cache_records = 4;          // decoded records kept per file for small reads
  bool convert_plain = true;              // a plain file truncated to 0 becomes a container
  bool compact = true;                    // keep the space bound (tests turn it off to see why)
  std::uint64_t compact_slack = 1 << 20;  // bytes over 2 x live allowed before compaction runs
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
};

struct damage {
  std::uint64_t record = 0;
  std::string what;
};

class file {
 public:
  /// Makes `backing` (empty) a new container.
  [[nodiscard]] static std::error_code create(std::unique_ptr<io> backing, const options& o, std::unique_ptr<file>& out);
  /// Opens a container (recovering its last committed state) or a plain file.
  [[nodiscard]] static std::error_code open(std::unique_ptr<io> backing, const options& o, std::unique_ptr<file>& out);
  ~file();
  file(const file&) = delete;
  file& operator=(const file&) = delete;

  [[nodiscard]] bool is_container() const noexcept { return container_; }
  [[nodiscard]] std::uint32_t record_size() const noexcept { return rs_; }

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

  [[nodiscard]] std::uint64_t size() const noexcept;
  /// Bytes the backing file system has allocated for the container (or the plain file).
  [[nodiscard]] std::uint64_t physical_size() const noexcept;
  [[nodiscard]] file_stats stats() const;
  /// Commits that wrote something, so far.
  [[nodiscard]] std::uint64_t commits() const noexcept { return commits_.load(std::memory_order_relaxed); }
  /// Reads and verifies every record; returns the damaged ones (empty: all good).
  [[nodiscard]] std::error_code check(std::vector<damage>& found);

  /// Nothing written since the last durable commit (no buffered record, no batch in flight, no
  /// change of the map or the size): letting go of the file loses nothing.
  [[nodiscard]] bool clean() const;
  /// Failures of write-back or commit so far, and the last one (for errseq-style reporting).
  [[nodiscard]] std::uint64_t error_seq() const noexcept { return error_seq_.load(std::memory_order_acquire); }
  [[nodiscard]] std::error_code last_error() const;

  /// Bytes of record buffers this file holds (dirty, clean, in flight, spare).
  [[nodiscard]] std::uint64_t charged() const noexcept { return acct_.used.load(std::memory_order_relaxed); }
  /// Lets go of memory for the budget: drops clean records and spare buffers, writes back dirty
  /// records (not durable). Called by memory_budget::relieve without this file's locks.
  void shed();

  /// For tests and tools: the backing io.
  [[nodiscard]] io& backing() noexcept { return *io_; }

 private:
  struct entry {
    format::map_entry e;
    std::uint64_t alloc_gen = 0;  // generation being built when its extent was allocated
  };
  struct dirty {
    buffer buf;  // record_size bytes; what the record holds now
    std::uint32_t lo = 0, hi = 0;      // bytes written contiguously since it became dirty
    bool whole = false;                // every byte of the record has been set
    bool busy = false;                 // frozen: a batch in flight is compressing it
  };
  struct cached {
    std::uint64_t index = ~std::uint64_t{0};
    std::uint32_t len = 0;
    buffer buf;
    std::uint64_t used = 0;
  };
  struct deferred_free {
    std::uint64_t off, len, gen_needed;
  };

  file(std::unique_ptr<io> backing, const options& o, bool container);
  /// `marker`: the slot kept in the marker, when there is a valid one.
  [[nodiscard]] std::error_code load(std::span<const std::byte> header, std::uint64_t backing_len,
                                     const format::container_slot* marker);
  void set_marker_locked(std::span<const std::byte, format::slot_size> slot) noexcept;
  [[nodiscard]] std::error_code init_empty();          // an empty container, header not yet written
  [[nodiscard]] std::error_code materialize_locked();  // m_: writes the header of an empty one
  [[nodiscard]] std::shared_mutex& stripe(std::uint64_t index) noexcept { return stripes_[index % stripes_.size()]; }
  [[nodiscard]] std::uint32_t record_len_locked(std::uint64_t index) const noexcept;

  // Containers only; callers hold what each names.
  [[nodiscard]] std::error_code read_record(std::uint64_t index, const entry& en, std::span<std::byte> out,
                                            std::uint32_t& len, std::string* why = nullptr);  // stripe(index) shared
  /// Copies the caller's bytes [skip, skip+n) into record `index` at `at`; sets write_back when
  /// enough records are buffered for a batch.  stripe(index) exclusive
  [[nodiscard]] std::error_code write_into(std::uint64_t index, std::uint32_t at, std::span<const iovec> in,
                                           std::size_t skip, std::size_t n, bool& write_back);
  /// The record's buffer, made on first use: the old content when need_old, else zeros outside
  /// [lo, hi) (which the caller is about to fill).
  [[nodiscard]] std::error_code make_dirty(std::uint64_t index, dirty*& d, bool need_old, std::uint32_t lo = 0,
                                           std::uint32_t hi = 0);  // stripe exclusive
  [[nodiscard]] std::error_code flush_some(bool all);                                      // layout_ shared
  // Write-back: a batch of records goes to the engine (start_batch) and is finished later
  // (finish_batch: wait, then the map), so the writer fills the next batch meanwhile.
  struct inflight;
  struct frame_job {  // one record's frame, built and written by whoever finishes the record
    file* f = nullptr;
    inflight* batch = nullptr;
    std::size_t k = 0;
    std::span<const iovec> in;
    std::byte* fb = nullptr;  // frame buffer: header, then payload
    format::map_entry entry;  // offset 0: nothing written (a hole)
    std::error_code ec;
    void write(const engine::record& r) noexcept;
    void write_frame(const engine::record& r);
  };
  struct inflight {
    file* f = nullptr;
    bool direct = false;  // the caller's buffers (finished before the write returns)
    std::vector<std::uint64_t> indices;
    std::vector<engine::record> recs;
    std::vector<std::span<const iovec>> in;
    std::vector<iovec> own;
    std::vector<std::vector<iovec>> pieces;
    std::vector<frame_job> cx;
    std::vector<buffer> frames;
    std::uint64_t alloc_gen = 0;
    engine::engine::pending pend;
    // A direct batch when the pool leaves a core free: the writer's thread builds and writes
    // the frames as records finish (it would only wait otherwise), the workers only compress.
    bool helper = false;
    std::mutex ready_m;  // lock order: leaf
    std::condition_variable ready_cv;
    std::vector<std::size_t> ready;
  };
  /// Freezes the records `indices` (their dirty buffers; or, direct not empty, consecutive
  /// whole records of the caller's list) and submits them.  flush_m_ for buffered batches;
  /// a direct batch's caller holds its records' stripes instead.
  [[nodiscard]] std::error_code start_batch(std::span<const std::uint64_t> indices, std::span<const iovec> direct,
                                            std::unique_ptr<inflight>& out);
  /// Waits for the batch and puts its frames in the map (or, on error, frees them).  As for
  /// start_batch; takes the stripes unless the caller holds them.
  [[nodiscard]] std::error_code finish_batch(inflight& b, bool take_stripes);
  [[nodiscard]] std::error_code finish_front();  // flush_m_
  [[nodiscard]] std::error_code drain();         // takes flush_m_: every batch in flight finished
  void unfreeze_locked(inflight& b);              // m_
  [[nodiscard]] std::error_code commit();                                                   // commit_m_
  [[nodiscard]] std::error_code commit_locked();  // commit_m_, layout_ exclusive or shared
  [[nodiscard]] std::error_code compact();        // commit_m_ + layout_ exclusive
  [[nodiscard]] std::error_code zero_records(std::uint64_t off, std::uint64_t len);  // layout_ exclusive
  /// layout_ exclusive: every batch in flight finished, and the size.
  [[nodiscard]] std::error_code settle_locked(std::uint64_t& size);
  /// Whether a failed write-back leaves the records buffered and the write succeeds.
  [[nodiscard]] bool keep_in_memory(std::error_code ec) const noexcept;
  /// Counts a failure for error_seq() and returns it.
  std::error_code note_error(std::error_code ec);
  /// commit_m_ + layout_: rewrites every frame written since the last durable commit (after a
  /// failed sync their pages may never reach the disk).
  [[nodiscard]] std::error_code rewrite_recent();
  void free_extent_locked(const entry& en);  // m_
  void set_entry_locked(std::uint64_t index, const format::map_entry& e, std::uint64_t alloc_gen);  // m_
  [[nodiscard]] entry entry_locked(std::uint64_t index) const;  // m_: a hole when not in the map
  [[nodiscard]] bool lost_locked(std::uint64_t index) const;    // m_
  void add_lost_locked(std::uint64_t first, std::uint64_t last);  // m_
  void unlose_locked(std::uint64_t first, std::uint64_t last);    // m_: those records are no longer lost
  [[nodiscard]] std::uint64_t lost_count_locked(std::uint64_t records) const;  // m_
  void release_locked(std::uint64_t off, std::uint64_t len);  // m_: back to the allocator, punched
  void drop_cache(std::uint64_t index);
  void report(std::string_view what);
  [[nodiscard]] buffer take_buffer();  // m_
  void give_buffer(buffer b);           // m_
  void give_frame(buffer b);            // m_

  std::unique_ptr<io> io_;
  options o_;
  account acct_;  // before every buffer: destroyed after them
  std::atomic<bool> container_;
  bool materialized_ = true;  // false: an empty container whose header is not on disk yet
  std::uint32_t rs_ = 0;
  unsigned shift_ = 0;
  std::size_t batch_ = 4;
  bool spare_core_ = false;  // fewer CPU workers than cores

  std::mutex commit_m_;
  std::shared_mutex layout_;
  std::mutex flush_m_;
  std::array<std::shared_mutex, 64> stripes_;
  mutable std::mutex m_;
  std::mutex cache_m_;

  // --- guarded by m_
  std::uint64_t size_ = 0;
  // The record map, sparse: only records with a frame (memory and map bytes follow the data, not
  // the highest offset). Records known to be lost are ranges apart; every other record is a hole.
  std::map<std::uint64_t, entry> map_;
  std::map<std::uint64_t, std::uint64_t> lost_;  // first -> last (inclusive)
  std::unordered_map<std::uint64_t, dirty> dirty_;
  std::vector<buffer> pool_;
  space_map space_{format::container_header_size};
  std::vector<deferred_free> deferred_;
  // Generations are what slots carry: a commit always writes generation durable_gen_ + 1, again
  // after a failed attempt, so the durable slot is never overwritten before its successor is
  // durable. Epochs count snapshots (attempts included): an extent allocated in the current epoch
  // is named by no snapshot yet; one freed in epoch E is reused once a snapshot of epoch >= E is
  // durable (durable_epoch_).
  std::uint64_t durable_gen_ = 0, cur_gen_ = 1, durable_epoch_ = 0;
  bool resync_ = false;
  bool marker_ok_ = true;  // set_marker worked (or was not tried yet)  // a sync failed: frames written since the last durable commit are rewritten first
  std::uint64_t map_off_[2] = {0, 0}, map_len_ = 0, map_alloc_gen_ = 0;
  std::uint64_t live_frames_ = 0;  // bytes of frames in map_
  std::uint64_t change_seq_ = 0, committed_seq_ = 0;  // map_ or size_ changes; the last one committed
  std::size_t whole_dirty_ = 0;    // dirty records with every byte set (ready for write-back)
  std::error_code last_error_;     // the last failure of a write-back or commit
  std::uint64_t backing_len_ = 0;  // length of the backing file as last set
  bool low_first_ = false;         // compaction: place maps at the lowest offset that fits
  // --- guarded by flush_m_
  std::deque<std::unique_ptr<inflight>> inflight_;
  // --- guarded by m_
  std::vector<buffer> frame_pool_;
  engine::file_learning learning_;
  // --- guarded by cache_m_
  std::vector<cached> cache_;
  std::uint64_t cache_clock_ = 0;
  std::atomic<bool> cache_used_{false};
  // --- counters
  std::atomic<std::uint64_t> error_seq_{0};
  std::atomic<std::uint64_t> commits_{0}, compactions_{0}, flushes_{0}, rmw_reads_{0}, cache_hits_{0}, damaged_reads_{0};
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

}  // namespace qzfs::store
