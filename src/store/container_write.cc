// container: writing (into record buffers, or whole records straight to the write-back),
// truncation, holes, allocation and SEEK_DATA / SEEK_HOLE.

#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "container.h"
#include "qzfs/codec/codec.h"
#include "qzfs/format/frame.h"
#include "record_range.h"

namespace qzfs::store {

// ---------------------------------------------------------------------------------------------
// Writing

std::error_code container::make_dirty(std::uint64_t index, dirty_record*& d, bool need_old, std::uint32_t lo,
                                      std::uint32_t hi) {
  map_slot en;
  buffer buf;
  {
    std::lock_guard lk(m_);
    if (auto* have = bufs_.find(index)) {
      d = have;
      return {};
    }
    en = entry_locked(index);
    buf = bufs_.take_buffer();
  }
  std::uint32_t len = 0;
  if (need_old && !en.e.hole()) {
    rmw_reads_.fetch_add(1, std::memory_order_relaxed);
    if (auto ec = read_record(index, en, std::span(buf.get(), rs_), len)) {
      std::lock_guard lk(m_);
      bufs_.give_buffer(std::move(buf));
      return ec;
    }
  }
  // Zero what neither the old record nor the coming write [lo, hi) fills.
  if (need_old || lo >= hi) {
    std::memset(buf.get() + len, 0, rs_ - len);
  } else {
    std::memset(buf.get(), 0, lo);
    std::memset(buf.get() + hi, 0, rs_ - hi);
  }
  std::lock_guard lk(m_);
  d = &bufs_.add(index, std::move(buf));
  return {};
}

std::error_code container::write_into(std::uint64_t index, std::uint32_t at, std::span<const iovec> in, std::size_t skip,
                                      std::size_t n, bool& write_back) {
  std::uint32_t cur_len;
  dirty_record* d = nullptr;
  {
    // The common case (page-sized writes into a buffered record) takes the map lock once here
    // and once after the copy.
    std::lock_guard lk(m_);
    cur_len = record_len_locked(index);
    d = bufs_.find(index);
    // Frozen by a batch in flight: the caller lets it finish and comes back.
    if (d != nullptr && d->busy) return std::make_error_code(std::errc::resource_unavailable_try_again);
  }
  const bool covers = at == 0 && n >= cur_len;
  if (d == nullptr) {
    if (auto ec = make_dirty(index, d, !covers, at, static_cast<std::uint32_t>(at + n))) return ec;
  }
  // Gather the caller's bytes [skip, skip + n) into the record at `at`.
  std::byte* dst = d->buf.get() + at;
  std::size_t left = n;
  for (const auto& v : in) {
    if (left == 0) break;
    if (skip >= v.iov_len) {
      skip -= v.iov_len;
      continue;
    }
    const std::size_t take = std::min(v.iov_len - skip, left);
    std::memcpy(dst, static_cast<const std::byte*>(v.iov_base) + skip, take);
    dst += take;
    left -= take;
    skip = 0;
  }
  const auto end = static_cast<std::uint32_t>(at + n);
  std::lock_guard lk(m_);
  bufs_.note_written(*d, at, end, covers);
  size_ = std::max(size_, (index << shift_) + end);
  ++change_seq_;
  write_back = write_back || bufs_.whole_count() >= batch_ || bufs_.count() > o_.max_dirty_records || bufs_.over();
  return {};
}

std::error_code container::write_buffered(std::uint64_t index, std::uint32_t at, std::span<const iovec> in,
                                          std::size_t skip, std::size_t n, bool& write_back) {
  for (;;) {
    std::error_code ec;
    {
      std::unique_lock rec(stripe(index));
      ec = write_into(index, at, in, skip, n, write_back);
      if (!ec) bufs_.cache_forget(index);
    }
    if (ec != std::errc::resource_unavailable_try_again) return ec;
    if (auto e2 = write_back_.drain()) return e2;
  }
}

std::error_code container::write_whole(std::uint64_t first, std::uint64_t last, std::span<const iovec> in, std::size_t done) {
  std::vector<iovec> rest;  // the caller's list from byte `done` on
  std::size_t skip = done;
  for (const auto& v : in) {
    if (skip >= v.iov_len) {
      skip -= v.iov_len;
      continue;
    }
    rest.push_back(iovec{static_cast<char*>(v.iov_base) + skip, v.iov_len - skip});
    skip = 0;
  }
  std::vector<std::uint64_t> indices;
  for (std::uint64_t j = first; j < last; ++j) indices.push_back(j);
  return write_back_.write_direct(indices, rest);
}

std::error_code container::pwrite(std::span<const iovec> in, std::uint64_t off) {
  const std::size_t total = codec::total_size(in);
  if (total == 0) return {};
  if (off > format::max_container_size || total > format::max_container_size - off) {
    return std::make_error_code(std::errc::file_too_large);
  }
  // Memory short and other files hold some of it: they let go first (no lock of ours is held
  // here). What this file holds itself goes out through its own write-back below.
  if (o_.budget != nullptr && o_.budget->over() && o_.budget->used() > charged()) o_.budget->relieve(core_.owner());
  // Once the bytes are in (or the write failed part way): the sync log's next batch has them.
  struct noted {
    container& c;
    std::uint64_t off, len;
    ~noted() {
      std::lock_guard lk(c.m_);
      c.note_change_locked(off, len);
    }
  } note{*this, off, total};
  bool write_back = false;
  {
    std::shared_lock layout(layout_);
    const record_range range(off, total, shift_);
    // Whole records, when a write brings several, are compressed straight from the caller's
    // buffers (the paper's vectored I/O): no copy, all workers busy on one call.
    const std::uint64_t end_whole = range.end_whole();
    // (Opened read-only, only a recovery writes, into buffers alone: nothing reaches the file.)
    std::uint64_t next_whole = end_whole >= range.first_whole() + 2 && !read_only_ ? range.first_whole() : ~std::uint64_t{0};
    for (std::uint64_t i = range.first(); i <= range.last(); ++i) {
      const record_part p = range.at(i);
      if (i != next_whole) {
        if (auto ec = write_buffered(i, p.lo, in, p.pos, p.size(), write_back)) return ec;
        continue;
      }
      // Up to 1 MiB of whole records in one batch (fewer idle workers at its end).
      const std::uint64_t last = std::min<std::uint64_t>(end_whole, i + std::max<std::size_t>(batch_, (1u << 20) >> shift_));
      if (auto ec = write_whole(i, last, in, p.pos)) {
        // The backing file system refused (full, quota, I/O error): the records are kept in
        // memory like any buffered write and written back later; the failure is counted for
        // the next fsync or close. With the kernel's writeback cache a failed WRITE would be
        // data the kernel drops.
        if (!keep_in_memory(ec)) return ec;
        (void)core_.note_error(ec);
        next_whole = ~std::uint64_t{0};
        --i;
        continue;
      }
      if (last < end_whole) next_whole = last;
      i = last - 1;
    }
  }
  if (write_back && !read_only_) {
    std::shared_lock layout(layout_);
    // This write's bytes are buffered: a write-back that fails keeps them (and the earlier ones)
    // in memory and is counted for the next fsync or close.
    if (auto ec = core_.note_error(write_back_.flush_some(false)); ec && !keep_in_memory(ec)) return ec;
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// Size and holes

std::error_code container::settle_locked(std::uint64_t& size) {
  if (auto ec = write_back_.drain()) return ec;
  std::lock_guard lk(m_);
  size = size_;
  return {};
}

std::error_code container::truncate(std::uint64_t size) {
  if (size > format::max_container_size) return std::make_error_code(std::errc::file_too_large);
  std::unique_lock layout(layout_);
  std::uint64_t old;
  if (auto ec = settle_locked(old)) return ec;
  if (size < old) {
    // The record that now ends the file keeps no bytes past the new end: they would come back
    // as old data when the file grows again.
    const std::uint64_t b = size >> shift_;
    const auto cut = static_cast<std::uint32_t>(size & (rs_ - 1));
    if (cut != 0) {
      dirty_record* d = nullptr;
      if (auto ec = make_dirty(b, d, true); ec && ec != std::errc::io_error) return ec;
      if (d != nullptr) std::memset(d->buf.get() + cut, 0, rs_ - cut);
    }
    std::lock_guard lk(m_);
    block_log_locked();  // a shrink: the next sync commits
    const std::uint64_t keep = record_range::records_for(size, shift_);
    bufs_.erase_from(keep);
    if (cut != 0) {
      if (auto* d = bufs_.find(b)) bufs_.unwhole(*d);
    }
    for (auto it = map_.lower_bound(keep); it != map_.end();) {
      free_extent_locked(it->second);
      it = map_.erase(it);
    }
    unlose_locked(keep, ~std::uint64_t{0});
    size_ = size;
    ++change_seq_;
  } else if (size > old) {
    std::lock_guard lk(m_);
    size_ = size;
    ++change_seq_;
  }
  bufs_.cache_forget_from(size >> shift_);
  return {};
}

void container::clear_record_locked(std::uint64_t i) {
  bufs_.erase(i);
  set_entry_locked(i, format::map_entry{}, cur_gen_);
  ++change_seq_;
}

std::error_code container::zero_part(std::uint64_t i, std::uint32_t a, std::uint32_t b) {
  std::uint32_t cur;
  {
    std::lock_guard lk(m_);
    cur = record_len_locked(i);
  }
  bufs_.cache_forget(i);
  if (a == 0 && b >= cur) {
    std::lock_guard lk(m_);
    clear_record_locked(i);
    return {};
  }
  dirty_record* d = nullptr;
  if (auto ec = make_dirty(i, d, true)) return ec;
  std::memset(d->buf.get() + a, 0, b - a);
  std::lock_guard lk(m_);
  ++change_seq_;
  return {};
}

std::error_code container::zero_records(std::uint64_t off, std::uint64_t len) {
  // Costs what the range holds, not its length: a punch over 2^50 bytes of a sparse file visits
  // only the records with data (layout_ is held exclusively: nothing changes meanwhile).
  {
    std::lock_guard lk(m_);
    block_log_locked();  // holes: the next sync commits
  }
  const record_range range(off, len, shift_);
  const std::uint64_t first = range.first(), last = range.last();
  const record_part head = range.at(first), tail = range.at(last);
  if (auto ec = zero_part(first, head.lo, head.hi)) return ec;
  if (last == first) return {};
  if (last > first + 1) {
    std::vector<std::uint64_t> with_data;
    {
      std::lock_guard lk(m_);
      for (auto it = map_.upper_bound(first); it != map_.end() && it->first < last; ++it) with_data.push_back(it->first);
      for (auto& [j, d] : bufs_.records()) {
        if (j > first && j < last && !map_.count(j)) with_data.push_back(j);
      }
      unlose_locked(first + 1, last - 1);
      ++change_seq_;
    }
    for (auto i : with_data) {
      bufs_.cache_forget(i);
      std::lock_guard lk(m_);
      clear_record_locked(i);
    }
  }
  return zero_part(last, tail.lo, tail.hi);
}

std::error_code container::punch_hole(std::uint64_t off, std::uint64_t len) {
  std::unique_lock layout(layout_);
  std::uint64_t sz;
  if (auto ec = settle_locked(sz)) return ec;
  if (off >= sz || len == 0) return {};
  return zero_records(off, std::min(len, sz - off));
}

std::error_code container::zero_range(std::uint64_t off, std::uint64_t len, bool keep_size) {
  std::unique_lock layout(layout_);
  std::uint64_t sz;
  if (auto ec = settle_locked(sz)) return ec;
  if (off < sz) {
    if (auto ec = zero_records(off, std::min(len, sz - off))) return ec;
  }
  if (!keep_size && off + len > sz) {
    std::lock_guard lk(m_);
    size_ = off + len;
    ++change_seq_;
  }
  return {};
}

std::error_code container::allocate(std::uint64_t off, std::uint64_t len, bool keep_size) {
  if (off > format::max_container_size || len > format::max_container_size - off) {
    return std::make_error_code(std::errc::file_too_large);
  }
  // Compressed sizes are unknown until the data is written: the range is not reserved on the
  // backing file system, and compression stays on for it (docs/STORE.md). What can be promised
  // is checked: the records of the range that hold no data yet must fit, stored raw, in what
  // the backing file system has left; ENOSPC now if they cannot, as a file system that reserves.
  std::unique_lock layout(layout_);
  std::lock_guard lk(m_);
  if (len > 0) {
    // Records without data in [first, last]: those in the map without a frame, every one past
    // the map (counted, not walked: the range may be huge), less the buffered ones.
    const record_range range(off, len, shift_);
    const std::uint64_t first = range.first(), last = range.last();
    std::uint64_t empty = range.count();
    for (auto it = map_.lower_bound(first); it != map_.end() && it->first <= last; ++it) --empty;
    for (const auto& [i, d] : bufs_.records()) {
      if (i >= first && i <= last && !map_.count(i)) --empty;
    }
    std::uint64_t free = 0;
    const std::uint64_t worst = empty * (rs_ + format::frame_header_size);
    if (auto ec = io_.available(free); !ec && worst > free) return std::make_error_code(std::errc::no_space_on_device);
  }
  if (!keep_size && off + len > size_) size_ = off + len, ++change_seq_;
  return {};
}

std::error_code container::seek(std::uint64_t off, int whence, std::uint64_t& out) {
  if (whence != SEEK_DATA && whence != SEEK_HOLE) return std::make_error_code(std::errc::invalid_argument);
  std::shared_lock layout(layout_);
  std::lock_guard lk(m_);
  if (off >= size_) return std::make_error_code(std::errc::no_such_device_or_address);
  // O(log n) in the records with data (and the few buffered ones), whatever the offsets.
  const record_range rest(off, size_ - off, shift_);
  const std::uint64_t last = rest.last(), i0 = rest.first();
  if (whence == SEEK_DATA) {
    std::uint64_t cand = ~std::uint64_t{0};
    if (auto it = map_.lower_bound(i0); it != map_.end()) cand = it->first;
    if (auto lt = lost_.upper_bound(i0); lt != lost_.begin() && std::prev(lt)->second >= i0) {
      cand = i0;
    } else if (lt != lost_.end()) {
      cand = std::min(cand, lt->first);
    }
    for (auto& [j, d] : bufs_.records()) {
      if (j >= i0) cand = std::min(cand, j);
    }
    if (cand > last) return std::make_error_code(std::errc::no_such_device_or_address);
    out = std::max(off, cand << shift_);
    return {};
  }
  std::uint64_t i = i0;
  while (i <= last) {
    if (auto lt = lost_.upper_bound(i); lt != lost_.begin() && std::prev(lt)->second >= i) {
      i = std::prev(lt)->second + 1;
    } else if (map_.count(i) != 0 || bufs_.find(i) != nullptr) {
      ++i;
    } else {
      break;
    }
  }
  out = i > last ? size_ : std::max(off, i << shift_);
  return {};
}

}  // namespace qzfs::store

namespace qzfs::store {

std::error_code container::rewrite_one(std::uint64_t index, rewrite_tally& tally, bool& write_back) {
  {
    std::lock_guard lk(m_);
    if (dirty_record* d = bufs_.find(index)) {
      if (d->busy) return std::make_error_code(std::errc::resource_unavailable_try_again);
      ++tally.buffered;  // its write-back compresses it by the file's engine as it is now
      return {};
    }
    if (lost_locked(index)) {
      ++tally.damaged;
      return {};
    }
    if (entry_locked(index).e.hole()) {
      ++tally.holes;
      return {};
    }
  }
  dirty_record* d = nullptr;
  if (auto ec = make_dirty(index, d, true)) {
    if (ec != std::errc::io_error) return ec;
    ++tally.damaged;  // unreadable: it stays as it is, never replaced by a guess
    return {};
  }
  std::lock_guard lk(m_);
  // Its bytes are unchanged: nothing for the sync log, but a change of the map for the commit.
  bufs_.note_written(*d, 0, record_len_locked(index), true);
  ++change_seq_;
  ++tally.records;
  write_back = write_back || bufs_.whole_count() >= batch_ || bufs_.count() > o_.max_dirty_records || bufs_.over();
  return {};
}

std::error_code container::rewrite(std::uint64_t off, std::uint64_t len, rewrite_tally& tally) {
  if (read_only_) return std::make_error_code(std::errc::read_only_file_system);
  {
    std::shared_lock layout(layout_);
    std::uint64_t first = 0, end = 0;
    {
      std::lock_guard lk(m_);
      const std::uint64_t stop = off >= size_ ? size_ : (len > size_ - off ? size_ : off + len);
      first = off >> shift_;
      end = std::min(records_locked(), (stop + rs_ - 1) >> shift_);
    }
    for (std::uint64_t i = first; i < end; ++i) {
      bool write_back = false;
      for (;;) {
        std::error_code ec;
        {
          std::unique_lock rec(stripe(i));
          ec = rewrite_one(i, tally, write_back);
        }
        if (ec != std::errc::resource_unavailable_try_again) {
          if (ec) return ec;
          break;
        }
        if (auto e2 = write_back_.drain()) return core_.note_error(e2);
      }
      if (write_back) {
        if (auto ec = core_.note_error(write_back_.flush_some(false)); ec && !keep_in_memory(ec)) return ec;
      }
    }
  }
  return commit_sync();
}

}  // namespace qzfs::store
