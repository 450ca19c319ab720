#include "record_buffers.h"

#include <algorithm>
#include <cstring>

namespace qzfs::store {

record_buffers::record_buffers(memory_budget* budget, std::size_t cache_records) noexcept
    : cache_records_(cache_records) {
  acct_.budget = budget;
}

record_buffers::~record_buffers() = default;

dirty_record* record_buffers::find(std::uint64_t index) noexcept {
  auto it = dirty_.find(index);
  return it != dirty_.end() ? &it->second : nullptr;
}

dirty_record& record_buffers::add(std::uint64_t index, buffer buf) {
  auto [it, _] = dirty_.emplace(index, dirty_record{std::move(buf), 0, 0, false});
  return it->second;
}

void record_buffers::note_written(dirty_record& d, std::uint32_t at, std::uint32_t end, bool covers) noexcept {
  const bool was_whole = d.whole;
  if (covers || d.hi == d.lo) {
    d.lo = at, d.hi = end;
  } else if (at <= d.hi && end >= d.lo) {
    d.lo = std::min(d.lo, at), d.hi = std::max(d.hi, end);
  }
  d.whole = d.whole || (d.lo == 0 && d.hi == rs_);
  if (d.whole && !was_whole) ++whole_;
}

void record_buffers::unwhole(dirty_record& d) noexcept {
  if (d.whole) d.whole = false, --whole_;
}

void record_buffers::freeze(dirty_record& d) noexcept {
  if (d.whole) --whole_;
  d.busy = true;
}

void record_buffers::unfreeze(dirty_record& d) noexcept {
  if (!d.busy) return;
  d.busy = false;
  if (d.whole) ++whole_;
}

void record_buffers::erase(std::uint64_t index) {
  auto it = dirty_.find(index);
  if (it == dirty_.end()) return;
  if (it->second.whole && !it->second.busy) --whole_;
  give_buffer(std::move(it->second.buf));
  dirty_.erase(it);
}

void record_buffers::erase_from(std::uint64_t first) {
  for (auto it = dirty_.begin(); it != dirty_.end();) {
    if (it->first >= first) {
      if (it->second.whole && !it->second.busy) --whole_;
      give_buffer(std::move(it->second.buf));
      it = dirty_.erase(it);
    } else {
      ++it;
    }
  }
}

buffer record_buffers::take_buffer() {
  if (!pool_.empty()) {
    auto b = std::move(pool_.back());
    pool_.pop_back();
    return b;
  }
  return charged_buffer(acct_, rs_);
}

void record_buffers::give_buffer(buffer b) {
  // Kept for reuse unless memory is short.
  if (pool_.size() < spare_limit_ && !acct_.over()) pool_.push_back(std::move(b));
}

buffer record_buffers::take_frame(std::size_t frame_size) {
  if (frame_pool_.empty()) return charged_buffer(acct_, frame_size);
  auto b = std::move(frame_pool_.back());
  frame_pool_.pop_back();
  return b;
}

void record_buffers::give_frame(buffer b) {
  if (!acct_.over()) frame_pool_.push_back(std::move(b));
}

void record_buffers::drop_spares() noexcept {
  pool_.clear();
  frame_pool_.clear();
}

bool record_buffers::cache_read(std::uint64_t index, std::span<std::byte> dst, std::uint32_t lo, std::uint32_t hi) {
  if (!cache_used_.load(std::memory_order_acquire)) return false;
  std::lock_guard lk(cache_m_);
  for (auto& c : cache_) {
    if (c.index != index) continue;
    const std::uint32_t have = std::min(c.len, hi);
    if (have > lo) std::memcpy(dst.data(), c.buf.get() + lo, have - lo);
    if (hi > std::max(have, lo)) std::memset(dst.data() + (std::max(have, lo) - lo), 0, hi - std::max(have, lo));
    c.used = ++cache_clock_;
    return true;
  }
  return false;
}

void record_buffers::cache_put(std::uint64_t index, const std::byte* rec, std::uint32_t len) {
  if (cache_records_ == 0 || acct_.over()) return;
  std::lock_guard lk(cache_m_);
  if (cache_.size() < cache_records_) cache_.push_back(cached{});
  auto victim = std::min_element(cache_.begin(), cache_.end(), [](const cached& x, const cached& y) { return x.used < y.used; });
  if (!victim->buf) victim->buf = charged_buffer(acct_, rs_);
  std::memcpy(victim->buf.get(), rec, len);
  cache_used_.store(true, std::memory_order_release);
  victim->index = index;
  victim->len = len;
  victim->used = ++cache_clock_;
}

void record_buffers::cache_forget(std::uint64_t index) {
  if (!cache_used_.load(std::memory_order_acquire)) return;
  std::lock_guard lk(cache_m_);
  for (auto& c : cache_) {
    if (c.index == index) c.index = ~std::uint64_t{0};
  }
}

void record_buffers::cache_forget_from(std::uint64_t first) {
  std::lock_guard lk(cache_m_);
  for (auto& c : cache_) {
    if (c.index != ~std::uint64_t{0} && c.index >= first) c.index = ~std::uint64_t{0};
  }
}

void record_buffers::cache_clear() {
  std::lock_guard lk(cache_m_);
  cache_.clear();
}

}  // namespace qzfs::store
