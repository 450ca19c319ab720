#pragma once
// store/ (internal): a container (docs/FORMAT.md "Container", docs/STORE.md): a file's records
// compressed through the engine, placed copy-on-write in the backing file, described by a
// record map that a commit makes durable atomically (two map copies, then the slot).
//
// Where the code is:
//   container_open.cc    create, open: choosing the slot, reading the map, claiming its space
//   container_read.cc    pread (dirty buffer, hole, read cache or a decoded frame), check
//   container_write.cc   pwrite into record buffers, truncate, holes, allocate, seek
//   container_commit.cc  flush, sync: commit, the rewrite after a failed sync, compaction
//   container_log.cc     the sync log: small fsyncs as appended changes, and their recovery
//   container_map.cc     the record map and lost ranges, freeing space, stats, memory relief
//   record_buffers.*     dirty records, spare buffers and the read cache (one memory account)
//   write_back.*         batches of records through the engine to frames in the backing file
//   record_range.h       the record arithmetic of a byte range
//
// Contract and thread-safety: store::file's (file.h). Every member may be called from any
// thread; reads and writes of different records run in parallel; truncate, punch_hole,
// zero_range and compaction are exclusive (layout_).
// Lock order: commit_m_ -> layout_ -> write_back::flush_m_ -> record stripes (ascending) -> m_
// -> record_buffers' cache lock.

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <string>
#include <vector>

#include "file_impl.h"
#include "qzfs/engine/engine.h"
#include "qzfs/format/container.h"
#include "qzfs/format/frame.h"
#include "qzfs/store/space.h"
#include "record_buffers.h"
#include "write_back.h"

namespace qzfs::store {

class record_range;
struct decode_batch;  // container_read.cc: a read's records in flight

/// A record's place in the map, and the generation being built when its extent was allocated.
struct map_slot {
  format::map_entry e;
  std::uint64_t alloc_gen = 0;
};

class container final : public file_impl {
 public:
  /// An empty container of options::record_size, whose header is written with its first frame
  /// (or now, by create()). EINVAL for a bad record size.
  [[nodiscard]] static std::error_code make_empty(file_core& core, std::unique_ptr<container>& out);
  /// The container in `core`'s (empty) backing file, its header durable.
  [[nodiscard]] static std::error_code create(file_core& core, std::unique_ptr<container>& out);
  /// The container's last committed state. `header`: the backing file's first bytes (both
  /// slots, or fewer); `marker`: the slot kept in the marker, when there is a valid one.
  [[nodiscard]] static std::error_code open(file_core& core, std::span<const std::byte> header, std::uint64_t backing_len,
                                            const format::container_slot* marker, std::unique_ptr<container>& out);
  /// Commits what is buffered (a failure is logged) and waits for every batch in flight.
  ~container() override;

  [[nodiscard]] bool is_container() const noexcept override { return true; }
  [[nodiscard]] std::uint32_t record_size() const noexcept override { return rs_; }

  [[nodiscard]] std::error_code pread(std::span<std::byte> out, std::uint64_t off, std::size_t& got) override;
  [[nodiscard]] std::error_code pwrite(std::span<const iovec> in, std::uint64_t off) override;
  [[nodiscard]] std::error_code truncate(std::uint64_t size) override;
  [[nodiscard]] std::error_code punch_hole(std::uint64_t off, std::uint64_t len) override;
  [[nodiscard]] std::error_code zero_range(std::uint64_t off, std::uint64_t len, bool keep_size) override;
  [[nodiscard]] std::error_code allocate(std::uint64_t off, std::uint64_t len, bool keep_size) override;
  [[nodiscard]] std::error_code seek(std::uint64_t off, int whence, std::uint64_t& out) override;
  [[nodiscard]] std::error_code flush() override;
  [[nodiscard]] std::error_code sync() override;
  [[nodiscard]] std::error_code begin_group(std::unique_ptr<group_part>& out) override;

  [[nodiscard]] std::uint64_t size() const noexcept override;
  [[nodiscard]] file_stats stats() const override;
  /// Commits (a log sync is none: it leaves the times set through the mount, which an open file
  /// shows from memory, to the commit at its close).
  [[nodiscard]] std::uint64_t commits() const noexcept override { return commits_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::uint64_t log_syncs() const noexcept override { return log_syncs_.load(std::memory_order_relaxed); }
  void close_log() override;
  [[nodiscard]] std::uint64_t log_replayed() const noexcept override { return log_replayed_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::error_code check(std::vector<damage>& found) override;
  [[nodiscard]] std::error_code rewrite(std::uint64_t off, std::uint64_t len, rewrite_tally& tally) override;
  [[nodiscard]] bool clean() const override;

  [[nodiscard]] std::uint64_t charged() const noexcept override { return bufs_.charged(); }
  void shed() override;

 private:
  friend class stripe_lock;
  friend class write_back;  // builds frames and puts them in the map (write_back.h says what it touches)

  explicit container(file_core& core);
  [[nodiscard]] std::error_code init_empty();          // an empty container, header not yet written
  [[nodiscard]] std::error_code materialize_locked();  // m_: writes the header of an empty one
  void set_marker_locked(std::span<const std::byte, format::slot_size> slot) noexcept;

  // container_open.cc
  [[nodiscard]] std::error_code load(std::span<const std::byte> header, std::uint64_t backing_len,
                                     const format::container_slot* marker);
  [[nodiscard]] std::error_code read_map(const format::container_slot& best, std::vector<format::indexed_entry>& entries,
                                         std::vector<std::pair<std::uint64_t, std::uint64_t>>& lost);
  [[nodiscard]] std::error_code claim_extents(const format::container_slot& best, std::uint64_t map_len,
                                              std::vector<format::indexed_entry>& entries,
                                              std::vector<std::pair<std::uint64_t, std::uint64_t>>& lost);

  // container_read.cc; stripe(index) shared. read_record: the record's logical bytes into `out`
  // (its first `len` bytes), checked; on an error `out` holds nothing to use.
  [[nodiscard]] std::error_code read_record(std::uint64_t index, const map_slot& en, std::span<std::byte> out,
                                            std::uint32_t& len, std::string* why = nullptr);
  /// A raw frame read as its header and payload, checked (its own fields, its hash, the map):
  /// what is wrong with it (empty: nothing; `len` its logical size).
  [[nodiscard]] std::string_view raw_problem(const map_slot& en, std::span<const std::byte, format::frame_header_size> head,
                                             std::span<const std::byte> payload, std::uint32_t& len) const noexcept;
  /// pread's step for whole raw records from `first` on whose frames lie back to back: their
  /// stripes held, one preadv (headers aside, payloads into `out`), each checked. The records
  /// read (0: none). `next`: the first record worth calling again for (where the map shows the
  /// next run starts; past the range when none is left, or when the read itself failed: the
  /// records are then read one by one, and name the failure). A damaged record ends the run
  /// before it, so that it is read and reported alone.  layout_ shared
  [[nodiscard]] std::uint64_t read_raw_run(const record_range& range, std::uint64_t first, std::span<std::byte> out,
                                           std::uint64_t& next);
  /// Bytes [lo, hi) of record `index` into `dst`. With a batch (read_parallel): a whole gzip
  /// record's frame is queued there for decoding instead (queue_decode).  takes stripe(index) shared
  [[nodiscard]] std::error_code read_part(std::uint64_t index, std::uint32_t lo, std::uint32_t hi, std::span<std::byte> dst,
                                          decode_batch* batch = nullptr, engine::engine* eng = nullptr);
  /// The damage of record `index` reported, counted and named in `why`: EIO.
  [[nodiscard]] std::error_code bad_record(std::uint64_t index, std::string_view what, std::string* why);
  /// The frame of record `index` read whole into `buf` and checked (parse_frame, the map, a
  /// logical size within `room`).  stripe(index) shared
  [[nodiscard]] std::error_code load_frame(std::uint64_t index, const map_slot& en, std::vector<std::byte>& buf,
                                           std::size_t room, format::frame_view& v, std::string* why = nullptr);
  /// pread of two or more records while an accelerator decodes: the whole gzip records' frames
  /// read as a batch of this thread's, all but the first of a batch decoded by the backends
  /// (jobs through `eng`); every other record as read_part reads it.
  [[nodiscard]] std::error_code read_parallel(const record_range& range, std::span<std::byte> out, engine::engine& eng,
                                              std::size_t& got);
  /// read_part's step for a whole gzip record in a batch: its frame read into the batch and
  /// checked under `rec` (stripe(i) shared, let go once the frame is this thread's), then (not
  /// the batch's first) submitted to `eng`.
  [[nodiscard]] std::error_code queue_decode(std::uint64_t i, const map_slot& en, std::span<std::byte> dst, decode_batch& b,
                                            engine::engine& eng, std::shared_lock<std::shared_mutex>& rec);
  /// Decodes the batch's first record here, waits for the others and checks each against its
  /// checksum (a wrong answer is decoded again here); empties the batch.
  [[nodiscard]] std::error_code finish_decodes(decode_batch& b);
  /// Read-ahead by access pattern: a read that starts where the last one ended doubles the
  /// stream's window (up to 16 MiB of records), any other read closes it; the backing file is
  /// told to read ahead the aligned 2 MiB chunks that hold the frames of the window's records
  /// not hinted yet, each chunk once.  layout_ shared
  void read_ahead(std::uint64_t off, std::uint64_t end);
  /// Whether a read hands its records to the backends (else the reading thread decodes them).
  [[nodiscard]] bool hand_out_decodes(engine::engine& eng) const noexcept;

  // container_write.cc
  /// The record's buffer, made on first use: the old content when need_old, else zeros outside
  /// [lo, hi) (which the caller is about to fill).  stripe(index) exclusive
  [[nodiscard]] std::error_code make_dirty(std::uint64_t index, dirty_record*& d, bool need_old, std::uint32_t lo = 0,
                                           std::uint32_t hi = 0);
  /// Copies the caller's bytes [skip, skip+n) into record `index` at `at`; sets write_back when
  /// enough records are buffered for a batch.  stripe(index) exclusive
  [[nodiscard]] std::error_code write_into(std::uint64_t index, std::uint32_t at, std::span<const iovec> in,
                                           std::size_t skip, std::size_t n, bool& write_back);
  /// write_into with its stripe, waiting out a batch that has the record frozen.  layout_ shared
  [[nodiscard]] std::error_code write_buffered(std::uint64_t index, std::uint32_t at, std::span<const iovec> in,
                                               std::size_t skip, std::size_t n, bool& write_back);
  /// Records [first, last) whole from the caller's list at byte `done`, straight to frames.
  [[nodiscard]] std::error_code write_whole(std::uint64_t first, std::uint64_t last, std::span<const iovec> in, std::size_t done);
  [[nodiscard]] std::error_code zero_records(std::uint64_t off, std::uint64_t len);  // layout_ exclusive
  [[nodiscard]] std::error_code zero_part(std::uint64_t index, std::uint32_t lo, std::uint32_t hi);  // layout_ exclusive
  void clear_record_locked(std::uint64_t index);  // m_: the record becomes a hole
  /// rewrite's step for one record: made dirty with its own bytes (EAGAIN: frozen by a batch in
  /// flight).  stripe(index) exclusive
  [[nodiscard]] std::error_code rewrite_one(std::uint64_t index, rewrite_tally& tally, bool& write_back);
  /// layout_ exclusive: every batch in flight finished, and the size.
  [[nodiscard]] std::error_code settle_locked(std::uint64_t& size);

  // container_commit.cc
  struct commit_plan;
  class group_commit;  // begin_group's part: commit_m_ and layout_ shared held, maps written
  [[nodiscard]] std::error_code commit_sync();    // sync() without the log: a commit
  [[nodiscard]] std::error_code commit_locked();  // commit_m_, layout_ exclusive or shared
  [[nodiscard]] std::error_code plan_commit_locked(commit_plan& p);  // m_: the snapshot, map space
  [[nodiscard]] std::error_code write_commit(commit_plan& p);        // map copies, slot, syncs
  // write_commit's steps, a sync between each; a failure gives back what the commit took.
  [[nodiscard]] std::error_code write_maps(commit_plan& p);  // the two map copies
  [[nodiscard]] std::error_code write_slot(commit_plan& p);  // the slot that names them
  void finish_slot(commit_plan& p) noexcept;                   // its copy and the marker (durable now)
  /// Gives back what a failed commit took; `synced`: a sync failed (see rewrite_recent).
  [[nodiscard]] std::error_code fail_commit(const commit_plan& p, std::error_code ec, bool synced);
  void finish_commit_locked(const commit_plan& p);  // m_: the generation is durable
  [[nodiscard]] std::error_code compact();        // commit_m_ + layout_ exclusive
  /// commit_m_ + layout_: rewrites every frame written since the last durable commit (after a
  /// failed sync their pages may never reach the disk).
  [[nodiscard]] std::error_code rewrite_recent();
  /// commit_m_ + layout_: writes the frame of record `index` (read into `buf`) to `to`, which the
  /// caller allocated in generation `gen`, and names it in the map; on failure `to` is free again.
  [[nodiscard]] std::error_code move_frame(std::uint64_t index, const format::map_entry& e, std::uint64_t to,
                                           std::uint64_t gen, std::vector<std::byte>& buf);
  [[nodiscard]] bool compaction_due_locked() const;  // m_

  // container_log.cc
  /// commit_m_ + layout_ shared: makes what changed since the last commit or log batch durable
  /// as one batch of the sync log; `done` false when the log cannot take it (the caller commits).
  [[nodiscard]] std::error_code log_sync(bool& done);
  /// open(): applies the log's complete batches of the loaded generation (no lock held).
  [[nodiscard]] std::error_code replay_log();
  /// m_: bytes [off, off+len) changed (a write); block_log_locked: a change the log does not
  /// express (a hole, a shrink): the next sync commits.
  void note_change_locked(std::uint64_t off, std::uint64_t len);
  void block_log_locked() noexcept;
  /// m_: at a commit's plan, what the snapshot will not hold: the dirty records.
  void restart_pending_locked();

  // container_map.cc; m_
  [[nodiscard]] std::uint32_t record_len_locked(std::uint64_t index) const noexcept;
  [[nodiscard]] std::uint64_t records_locked() const noexcept;  // records up to size_
  void free_extent_locked(const map_slot& en);
  void set_entry_locked(std::uint64_t index, const format::map_entry& e, std::uint64_t alloc_gen);
  [[nodiscard]] map_slot entry_locked(std::uint64_t index) const;  // a hole when not in the map
  [[nodiscard]] bool lost_locked(std::uint64_t index) const;
  void add_lost_locked(std::uint64_t first, std::uint64_t last);
  void unlose_locked(std::uint64_t first, std::uint64_t last);  // those records are no longer lost
  [[nodiscard]] std::uint64_t lost_count_locked(std::uint64_t records) const;
  void release_locked(std::uint64_t off, std::uint64_t len);  // back to the allocator, punched
  /// The map as a commit writes it: frames and lost ranges (cut at `records`), ascending.
  [[nodiscard]] std::vector<format::indexed_entry> snapshot_locked(std::uint64_t records) const;

  /// Whether a failed write-back leaves the records buffered and the write succeeds.
  [[nodiscard]] bool keep_in_memory(std::error_code ec) const noexcept;
  void report(std::string_view what) const { core_.report(what); }
  [[nodiscard]] std::shared_mutex& stripe(std::uint64_t index) noexcept { return stripes_[index % stripes_.size()]; }

  file_core& core_;
  io& io_;
  const options& o_;
  record_buffers bufs_;  // before write_back_: batches in flight hold its buffers
  bool materialized_ = true;  // m_; false: an empty container whose header is not on disk yet
  std::uint32_t rs_ = 0;      // set once, before the container is shared
  unsigned shift_ = 0;
  std::size_t batch_ = 4;

  std::mutex commit_m_;
  std::shared_mutex layout_;
  std::array<std::shared_mutex, 64> stripes_;
  mutable std::mutex m_;

  // --- guarded by m_
  std::uint64_t size_ = 0;
  // The record map, sparse: only records with a frame (memory and map bytes follow the data, not
  // the highest offset). Records known to be lost are ranges apart; every other record is a hole.
  std::map<std::uint64_t, map_slot> map_;
  std::map<std::uint64_t, std::uint64_t> lost_;  // first -> last (inclusive)
  space_map space_{format::container_header_size};
  struct deferred_free {
    std::uint64_t off, len, gen_needed;
  };
  std::vector<deferred_free> deferred_;
  // Generations are what slots carry: a commit always writes generation durable_gen_ + 1, again
  // after a failed attempt, so the durable slot is never overwritten before its successor is
  // durable. Epochs count snapshots (attempts included): an extent allocated in the current epoch
  // is named by no snapshot yet; one freed in epoch E is reused once a snapshot of epoch >= E is
  // durable (durable_epoch_).
  std::uint64_t durable_gen_ = 0, cur_gen_ = 1, durable_epoch_ = 0;
  bool resync_ = false;    // a sync failed: frames written since the last durable commit are rewritten first
  bool marker_ok_ = true;  // set_marker worked (or was not tried yet)
  std::uint64_t map_off_[2] = {0, 0}, map_len_ = 0;
  std::uint64_t live_frames_ = 0;  // bytes of frames in map_
  std::uint64_t change_seq_ = 0, committed_seq_ = 0;  // map_ or size_ changes; the last one committed
  std::uint64_t backing_len_ = 0;  // length of the backing file as last set
  bool low_first_ = false;         // compaction: place maps at the lowest offset that fits
  engine::file_learning learning_;
  std::atomic<engine::engine*> last_engine_{nullptr};  // the engine of the last batch (learning_ is its)
  // The sync log (docs/STORE.md "Sync log"): the region the durable slot names (0: none), where
  // its next batch goes and that batch's first sequence number.
  std::uint64_t log_off_ = 0, log_pos_ = 0, log_seq_ = 0;
  std::uint32_t log_len_ = 0;
  // Byte ranges changed since the last commit's plan or log batch (start -> end), unless more
  // changed than a batch takes or a change the log cannot express came (pending_over_).
  std::map<std::uint64_t, std::uint64_t> pending_;
  std::uint64_t pending_bytes_ = 0;
  bool pending_over_ = false;
  std::uint64_t logged_size_ = 0;    // the size the last commit or log batch made durable
  std::int64_t last_small_sync_ = 0;  // steady clock, ns: the last small sync without a log
  unsigned small_syncs_ = 0;          // small syncs in a row, each within a second of the one before
  bool want_log_ = false;  // the next commit makes a log
  bool drop_log_ = false;  // closed (close_log, the destructor): the next commit names no log
  bool read_only_ = false;  // opened read-only: nothing is written (recovered changes stay in memory)

  write_back write_back_{*this};  // after everything its batches refer to

  // --- counters
  std::atomic<std::uint64_t> commits_{0}, compactions_{0}, flushes_{0}, rmw_reads_{0}, cache_hits_{0}, damaged_reads_{0};
  // read_ahead's state: where the last read ended, the window (records), the record up to which
  // the backing file has been told (exclusive). Racing readers may lose an update: a hint more
  // or less.
  std::atomic<std::uint64_t> ra_next_{~std::uint64_t{0}}, ra_until_{0};
  std::atomic<std::uint32_t> ra_window_{0};
  // The backing file's chunks (2^ra_chunk_shift bytes) read_ahead named last (index + 1; 0: none).
  static constexpr unsigned ra_chunk_shift = 21;
  std::array<std::atomic<std::uint64_t>, 16> ra_chunks_{};
  std::atomic<std::uint32_t> ra_chunk_next_{0};
  std::atomic<std::uint64_t> log_syncs_{0}, log_replayed_{0};
};

}  // namespace qzfs::store
