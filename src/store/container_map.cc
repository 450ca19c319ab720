// container: the record map and its lost ranges, freeing space, statistics, memory relief.

#include <algorithm>

#include "container.h"
#include "record_range.h"

namespace qzfs::store {

constexpr std::uint64_t punch_block = 4096;  // punch granularity

std::uint32_t container::record_len_locked(std::uint64_t index) const noexcept {
  const std::uint64_t start = index << shift_;
  if (start >= size_) return 0;
  return static_cast<std::uint32_t>(std::min<std::uint64_t>(rs_, size_ - start));
}

std::uint64_t container::records_locked() const noexcept { return record_range::records_for(size_, shift_); }

void container::release_locked(std::uint64_t off, std::uint64_t len) {
  const auto [foff, flen] = space_.release(off, len);
  if (foff >= space_.end()) return;  // the free tail: cut off at the next commit
  // Give the whole blocks inside the free extent back to the file system, before anyone can
  // allocate them again (a punch after reuse would destroy new data).
  const std::uint64_t a = (foff + punch_block - 1) / punch_block * punch_block;
  const std::uint64_t b = (foff + flen) / punch_block * punch_block;
  if (b > a) (void)io_.punch(a, b - a);
}

void container::free_extent_locked(const map_slot& en) {
  if (!en.e.frame()) return;
  live_frames_ -= en.e.length;
  // Allocated since the last snapshot: no committed or committing map names it.
  if (en.alloc_gen == cur_gen_) {
    release_locked(en.e.offset, en.e.length);
  } else {
    deferred_.push_back({en.e.offset, en.e.length, cur_gen_});
  }
}

void container::set_entry_locked(std::uint64_t index, const format::map_entry& e, std::uint64_t alloc_gen) {
  if (auto it = map_.find(index); it != map_.end()) {
    free_extent_locked(it->second);
    if (e.frame()) {
      it->second = map_slot{e, alloc_gen};
    } else {
      map_.erase(it);
    }
  } else if (e.frame()) {
    map_.emplace(index, map_slot{e, alloc_gen});
  }
  if (e.lost()) {
    add_lost_locked(index, index);
  } else {
    unlose_locked(index, index);
  }
  if (e.frame()) live_frames_ += e.length;
}

map_slot container::entry_locked(std::uint64_t index) const {
  if (auto it = map_.find(index); it != map_.end()) return it->second;
  if (lost_locked(index)) return map_slot{format::map_entry{1, 0, {}, {}, 0}, 0};
  return {};
}

bool container::lost_locked(std::uint64_t index) const {
  if (lost_.empty()) return false;
  auto it = lost_.upper_bound(index);
  if (it == lost_.begin()) return false;
  --it;
  return index <= it->second;
}

void container::add_lost_locked(std::uint64_t first, std::uint64_t last) {
  unlose_locked(first, last);  // no overlaps
  lost_[first] = last;
}

void container::unlose_locked(std::uint64_t first, std::uint64_t last) {
  if (lost_.empty()) return;
  auto it = lost_.upper_bound(first);
  if (it != lost_.begin()) --it;
  while (it != lost_.end() && it->first <= last) {
    const auto [a, b] = *it;
    it = lost_.erase(it);
    if (b < first) continue;  // entirely before
    if (a < first) lost_[a] = first - 1;
    if (b > last) lost_[last + 1] = b;
  }
}

std::uint64_t container::lost_count_locked(std::uint64_t records) const {
  std::uint64_t n = 0;
  for (auto [a, b] : lost_) {
    if (a < records) n += std::min(b, records - 1) - a + 1;
  }
  return n;
}

std::vector<format::indexed_entry> container::snapshot_locked(std::uint64_t records) const {
  std::vector<format::indexed_entry> snap;
  snap.reserve(map_.size() + lost_.size());
  auto lt = lost_.begin();
  auto put_lost = [&] {
    if (lt->first < records) snap.push_back({lt->first, format::map_entry{1, 0, {}, {}, std::min(lt->second, records - 1)}});
    ++lt;
  };
  for (auto& [i, en] : map_) {
    while (lt != lost_.end() && lt->first < i) put_lost();
    snap.push_back({i, en.e});
  }
  while (lt != lost_.end()) put_lost();
  return snap;
}

// ---------------------------------------------------------------------------------------------
// State, statistics, memory

bool container::keep_in_memory(std::error_code ec) const noexcept {
  if (ec == std::errc::file_too_large || ec == std::errc::invalid_argument) return false;  // the caller's own
  // Memory is bounded: past twice the budget the writer hears of the failure at once.
  const auto* budget = bufs_.acct().budget;
  return budget == nullptr || budget->used() <= 2 * budget->limit();
}

bool container::clean() const {
  std::lock_guard lk(m_);
  // A sync log still named: a commit is owed (close_log), and the file must not be let go with
  // its destructor owing it (a new open of the file could meanwhile load the old state).
  return bufs_.empty() && change_seq_ == committed_seq_ && !resync_ && (log_len_ == 0 || read_only_);
}

void container::shed() {
  bufs_.cache_clear();
  {
    std::lock_guard lk(m_);
    bufs_.drop_spares();
  }
  // Dirty records go to the backing file (their buffers are freed as the budget is over). A
  // failure keeps them buffered and is counted (error_seq); the file's next fsync or close says
  // it, not every relief that asks again.
  try {
    (void)flush();
  } catch (const std::exception& e) {
    report(std::string("writing back for memory: ") + e.what());
  }
}

std::uint64_t container::size() const noexcept {
  std::lock_guard lk(m_);
  return size_;
}

file_stats container::stats() const {
  file_stats st;
  st.commits = commits_.load();
  st.compactions = compactions_.load();
  st.flushes = flushes_.load();
  st.rmw_reads = rmw_reads_.load();
  st.cache_hits = cache_hits_.load();
  st.damaged_reads = damaged_reads_.load();
  st.log_syncs = log_syncs_.load();
  st.log_replayed = log_replayed_.load();
  std::lock_guard lk(m_);
  st.logical_size = size_;
  st.container_size = space_.end();
  st.live_bytes = live_frames_ + 2 * map_len_ + log_len_ + format::container_header_size;
  st.dirty = bufs_.count();
  const std::uint64_t records = records_locked();
  st.records = records;
  st.holes = records;
  for (auto& [i, en] : map_) {
    if (i >= records) break;
    --st.holes;
    if (en.e.format == codec::payload_format::none) {
      ++st.raw;
    } else {
      ++st.per_format[static_cast<std::size_t>(en.e.format)];
    }
  }
  st.damaged = lost_count_locked(records);
  st.holes -= st.damaged;
  return st;
}

}  // namespace qzfs::store
