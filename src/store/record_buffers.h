#pragma once
// store/ (internal): a container's record buffers, all charged to one account under the memory
// budget (budget.h): dirty records (written, not yet written back), spare record and frame
// buffers kept for reuse, and the read cache of decoded records for partial reads.
//
// Dirty records: what a record holds now (record_size bytes), the span written contiguously
// since it became dirty ([lo, hi)), whether every byte is set (`whole`: ready for write-back),
// and whether a batch in flight is compressing it (`busy`: frozen, writers wait). The number of
// whole records that are not busy is kept as records change, so the write-back decides in O(1)
// whether a batch is ready.
//
// Thread-safety: the dirty records and the spare buffers are guarded by the container's m_
// (the caller holds it: members marked `m_`). The read cache has its own lock (lock order:
// leaf, after the container's m_); members marked `cache` take it. The account is atomic.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <span>
#include <unordered_map>
#include <vector>

#include "qzfs/store/budget.h"

namespace qzfs::store {

struct dirty_record {
  buffer buf;                    // record_size bytes; what the record holds now
  std::uint32_t lo = 0, hi = 0;  // bytes written contiguously since it became dirty
  bool whole = false;            // every byte of the record has been set
  bool busy = false;             // frozen: a batch in flight is compressing it
};

class record_buffers {
 public:
  using map = std::unordered_map<std::uint64_t, dirty_record>;

  record_buffers(memory_budget* budget, std::size_t cache_records) noexcept;
  ~record_buffers();
  record_buffers(const record_buffers&) = delete;
  record_buffers& operator=(const record_buffers&) = delete;

  /// Set once, before any buffer is made: the record size, and how many spare record buffers
  /// to keep (a batch's worth, twice).
  void configure(std::uint32_t record_size, std::size_t spare_records) noexcept {
    rs_ = record_size;
    spare_limit_ = spare_records;
  }
  [[nodiscard]] account& acct() noexcept { return acct_; }
  [[nodiscard]] const account& acct() const noexcept { return acct_; }
  [[nodiscard]] std::uint64_t charged() const noexcept { return acct_.used.load(std::memory_order_relaxed); }
  /// The budget is exceeded (the file keeps nothing it need not).
  [[nodiscard]] bool over() const noexcept { return acct_.over(); }

  // --- dirty records (m_)
  [[nodiscard]] dirty_record* find(std::uint64_t index) noexcept;
  [[nodiscard]] const map& records() const noexcept { return dirty_; }
  [[nodiscard]] bool empty() const noexcept { return dirty_.empty(); }
  [[nodiscard]] std::size_t count() const noexcept { return dirty_.size(); }
  /// Dirty records with every byte set and not frozen.
  [[nodiscard]] std::size_t whole_count() const noexcept { return whole_; }
  /// Makes `index` dirty with `buf` (the caller has filled it). Not already dirty.
  dirty_record& add(std::uint64_t index, buffer buf);
  /// Records that bytes [at, end) were just written; `covers`: the write set the whole record
  /// as far as the file reaches.
  void note_written(dirty_record& d, std::uint32_t at, std::uint32_t end, bool covers) noexcept;
  /// A partial change (truncation cut the record): it is no longer whole.
  void unwhole(dirty_record& d) noexcept;
  void freeze(dirty_record& d) noexcept;
  void unfreeze(dirty_record& d) noexcept;
  /// The record is clean again (written back, cut off, or zeroed): its buffer is spare.
  void erase(std::uint64_t index);
  /// erase() for every record from `first` on.
  void erase_from(std::uint64_t first);

  // --- spare buffers (m_)
  /// A record buffer (uninitialised), spare or new.
  [[nodiscard]] buffer take_buffer();
  void give_buffer(buffer b);
  /// A frame buffer (header + a record), spare or new.
  [[nodiscard]] buffer take_frame(std::size_t frame_size);
  void give_frame(buffer b);
  void drop_spares() noexcept;

  // --- read cache (cache)
  /// Copies bytes [lo, hi) of record `index` into `dst` (zeros past its length) if cached.
  [[nodiscard]] bool cache_read(std::uint64_t index, std::span<std::byte> dst, std::uint32_t lo, std::uint32_t hi);
  /// Keeps a decoded record (`len` bytes of `rec`) for partial reads, evicting the least
  /// recently used, unless the cache is off or memory is short.
  void cache_put(std::uint64_t index, const std::byte* rec, std::uint32_t len);
  /// The record changed: forget it. The caller holds the record's stripe exclusively, so no
  /// reader can be putting it back meanwhile.
  void cache_forget(std::uint64_t index);
  void cache_forget_from(std::uint64_t first);
  void cache_clear();

 private:
  struct cached {
    std::uint64_t index = ~std::uint64_t{0};
    std::uint32_t len = 0;
    buffer buf;
    std::uint64_t used = 0;
  };

  account acct_;  // before every buffer: destroyed after them
  std::uint32_t rs_ = 0;
  std::size_t spare_limit_ = 8;
  const std::size_t cache_records_;
  // --- m_
  map dirty_;
  std::size_t whole_ = 0;
  std::vector<buffer> pool_, frame_pool_;
  // --- cache_m_
  std::mutex cache_m_;  // lock order: leaf
  std::vector<cached> cache_;
  std::uint64_t cache_clock_ = 0;
  std::atomic<bool> cache_used_{false};  // nothing was ever cached (a file only written): no lock
};

}  // namespace qzfs::store
