#pragma once
// store/ (internal): a container's write-back: records go to the engine in batches and come
// back as frames in the backing file, named in the record map.
//
// A batch is started (start_batch: freeze the records, submit them) and finished later
// (finish_batch: wait, then put the frames in the map), so the writer fills the next batch
// while the workers compress this one; at most one buffered batch runs behind the writer.
// Each record's frame is built and written by the thread that finishes the record (a worker,
// or the writer itself when it has a core to spare), so hashing and writing run in parallel
// with the other records' compression. A failed batch frees its frames and leaves its records
// buffered: nothing is lost and the next flush tries again.
//
// Two kinds of batch: buffered (the dirty records of record_buffers, frozen while in flight)
// and direct (whole records of a write, compressed straight from the caller's buffers, the
// paper's vectored I/O: no copy; finished before the write returns).
//
// What it touches in the container (a friend): its m_-guarded state (record buffers, space,
// map, generation, size, change count) under m_; the record stripes; the engine and the
// backing io. Lock order: the container's (container.h); flush_m_ comes after layout_.

#include <sys/uio.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <system_error>
#include <vector>

namespace qzfs::store {

class container;

class write_back {
 public:
  explicit write_back(container& c) noexcept;
  ~write_back();
  write_back(const write_back&) = delete;
  write_back& operator=(const write_back&) = delete;

  /// Starts batches of the buffered records that are ready (every one when `all`), and
  /// finishes all but the last (all of them when `all`).  layout_ shared
  [[nodiscard]] std::error_code flush_some(bool all);
  /// Every batch in flight finished (the first failure returned).  Takes flush_m_.
  [[nodiscard]] std::error_code drain();
  /// The whole records `indices` (consecutive) from the caller's list `in` (starting at the
  /// first of them), compressed in place and in the map when it returns; nothing buffered
  /// takes their place meanwhile.  layout_ shared
  [[nodiscard]] std::error_code write_direct(std::span<const std::uint64_t> indices, std::span<const iovec> in);

 private:
  struct inflight;
  struct frame_job;

  /// Freezes the records `indices` (their dirty buffers; or, direct not empty, consecutive
  /// whole records of the caller's list) and submits them.  flush_m_ for buffered batches;
  /// a direct batch's caller holds its records' stripes instead.
  [[nodiscard]] std::error_code start_batch(std::span<const std::uint64_t> indices, std::span<const iovec> direct,
                                            std::unique_ptr<inflight>& out);
  void freeze_buffered(inflight& b);                            // takes stripes and m_
  void slice_direct(inflight& b, std::span<const iovec> direct);  // nothing: the caller's list
  void wire_jobs(inflight& b);
  [[nodiscard]] std::error_code submit(inflight& b);
  /// Waits for the batch and puts its frames in the map (or, on error, frees them).  As for
  /// start_batch; takes the stripes unless the caller holds them.
  [[nodiscard]] std::error_code finish_batch(inflight& b, bool take_stripes);
  [[nodiscard]] std::error_code map_frames_locked(inflight& b);  // m_ + the records' stripes
  [[nodiscard]] std::error_code finish_front();                   // flush_m_
  void unfreeze_locked(inflight& b);                              // m_
  void release_frames_locked(const inflight& b, std::size_t from);  // m_

  container& c_;
  std::mutex flush_m_;
  std::deque<std::unique_ptr<inflight>> inflight_;  // guarded by flush_m_
};

/// The stripes of a set of records, each once, exclusive or shared, locked in ascending order
/// (the lock order), unlocked in reverse; unlocked when it goes, if still locked. No allocation.
class stripe_lock {
 public:
  stripe_lock(container& c, std::span<const std::uint64_t> indices, bool shared = false) noexcept;
  /// Records [first, first + count).
  stripe_lock(container& c, std::uint64_t first, std::uint64_t count, bool shared = false) noexcept;
  ~stripe_lock() {
    if (locked_) unlock();
  }
  stripe_lock(const stripe_lock&) = delete;
  stripe_lock& operator=(const stripe_lock&) = delete;
  void lock();
  void unlock();

 private:
  container& c_;
  std::uint64_t mask_ = 0;  // bit s: stripe s (a container has 64)
  bool shared_;
  bool locked_ = false;
};

}  // namespace qzfs::store
