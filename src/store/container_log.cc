// container: the sync log (docs/STORE.md "Sync log"). An fsync of a file fsynced often, when
// little changed, appends the changed bytes to a region its slot names and syncs once: no
// compression, no map, no slot, no allocation. Opening the file applies the complete batches
// of the slot's generation; the next commit holds them all and starts the log again.

#include <chrono>
#include <cstring>
#include <iterator>

#include "container.h"
#include "record_range.h"
#include "sync_log.h"

namespace qzfs::store {
namespace {

constexpr std::size_t max_pending_ranges = 256;
// Small syncs, each less than often_ns after the one before: from the often_count-th on, a log
// pays (a few fsyncs and a close would pay for making and dropping it, 1 MiB written and a commit).
constexpr std::int64_t often_ns = 1'000'000'000;
constexpr unsigned often_count = 8;

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

log_scan scan_log(std::span<const std::byte> region, std::uint64_t generation, const log_batch_fn& on_batch) {
  log_scan out;
  std::vector<log_write> batch;
  std::uint64_t pos = 0, seq = 0, size = 0;
  while (region.size() - pos >= format::log_header_size) {
    const auto hdr = std::span<const std::byte, format::log_header_size>(region.data() + pos, format::log_header_size);
    format::log_entry e;
    if (!format::parse_log_header(hdr, e) || e.base_generation != generation || e.seq != seq) break;
    if (e.length > region.size() - pos - format::log_header_size || e.offset + e.length > e.logical_size) break;
    const auto data = region.subspan(pos + format::log_header_size, e.length);
    if (!format::log_data_matches(hdr, data)) break;
    batch.push_back({e.offset, data});
    size = e.logical_size;
    pos += format::log_header_size + e.length;
    ++seq;
    if ((e.flags & format::log_end) != 0) {
      if (on_batch && !on_batch(batch, size)) break;
      batch.clear();
      out.end = pos;
      out.seq = seq;
      out.size = size;
      ++out.batches;
    }
  }
  return out;
}

void container::close_log() {
  std::lock_guard lk(m_);
  if (log_len_ != 0) drop_log_ = true;
}

void container::block_log_locked() noexcept {
  pending_over_ = true;
  pending_.clear();
  pending_bytes_ = 0;
}

void container::note_change_locked(std::uint64_t off, std::uint64_t len) {
  if (o_.sync_log_bytes == 0 || pending_over_ || len == 0) return;
  std::uint64_t end = off + len;
  auto it = pending_.upper_bound(off);
  if (it != pending_.begin()) {
    auto prev = std::prev(it);
    if (prev->second >= off) {
      off = prev->first;
      end = std::max(end, prev->second);
      pending_bytes_ -= prev->second - prev->first;
      pending_.erase(prev);
    }
  }
  while (it != pending_.end() && it->first <= end) {
    end = std::max(end, it->second);
    pending_bytes_ -= it->second - it->first;
    it = pending_.erase(it);
  }
  pending_.emplace_hint(it, off, end);
  pending_bytes_ += end - off;
  // More than a quarter of the log, or scattered: a commit is the cheaper sync.
  if (pending_bytes_ > o_.sync_log_bytes / 4 || pending_.size() > max_pending_ranges) block_log_locked();
}

void container::restart_pending_locked() {
  pending_.clear();
  pending_bytes_ = 0;
  pending_over_ = false;
  // What a commit's snapshot holds is every frame in the map; a record still buffered (written
  // after the commit's flush) is not in it, so a later batch must carry it whole.
  for (const auto& [i, d] : bufs_.records()) {
    const std::uint64_t at = i << shift_;
    if (at < size_) note_change_locked(at, std::min<std::uint64_t>(rs_, size_ - at));
  }
}

std::error_code container::log_sync(bool& done) {
  done = false;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
  std::map<std::uint64_t, std::uint64_t> taken;
  std::uint64_t size = 0, gen = 0, at = 0, seq = 0, need = 0;
  {
    std::lock_guard lk(m_);
    if (resync_ || drop_log_ || pending_over_ || !materialized_ || change_seq_ == committed_seq_ || compaction_due_locked()) {
      return {};
    }
    if (pending_.empty() && size_ == logged_size_) {
      done = true;  // every change since the last commit is in the log already
      return {};
    }
    if (log_len_ == 0) {
      // No log yet: a file fsynced again and again, each soon after the one before, gets one
      // with this commit.
      const std::int64_t t = now_ns();
      small_syncs_ = last_small_sync_ != 0 && t - last_small_sync_ < often_ns ? small_syncs_ + 1 : 1;
      last_small_sync_ = t;
      if (small_syncs_ >= often_count) want_log_ = true;
      return {};
    }
    for (auto [a, b] : pending_) {
      const std::uint64_t e = std::min(b, size_);
      if (a < e) ranges.emplace_back(a, e), need += format::log_header_size + (e - a);
    }
    if (ranges.empty()) ranges.emplace_back(size_, size_), need += format::log_header_size;  // the size alone
    if (log_pos_ + need > log_len_) return {};  // full: the commit starts it again
    size = size_;
    gen = durable_gen_;
    at = log_pos_;
    seq = log_seq_;
    taken.swap(pending_);
    pending_bytes_ = 0;
  }
  auto give_back = [&] {
    std::lock_guard lk(m_);
    for (auto [a, b] : taken) note_change_locked(a, b - a);
  };
  // The batch: each range's bytes as they are now (a write racing with this one is noted again
  // after its copy, so the next batch carries it).
  std::vector<std::byte> buf(need);
  std::size_t pos = 0;
  for (std::size_t k = 0; k < ranges.size(); ++k) {
    const auto [a, e] = ranges[k];
    const auto data = std::span(buf).subspan(pos + format::log_header_size, e - a);
    if (e > a) {
      for (const record_part p : record_range(a, e - a, shift_)) {
        if (read_part(p.index, p.lo, p.hi, data.subspan(p.pos, p.size()))) {
          give_back();
          return {};  // a damaged record: the commit says so
        }
      }
    }
    format::log_entry le;
    le.flags = k + 1 == ranges.size() ? format::log_end : 0;
    le.base_generation = gen;
    le.seq = seq + k;
    le.offset = a;
    le.logical_size = size;
    le.length = static_cast<std::uint32_t>(e - a);
    format::encode_log_entry(le, data, std::span(buf).subspan(pos).first<format::log_header_size>());
    pos += format::log_header_size + (e - a);
  }
  if (io_.pwrite(buf, log_off_ + at)) {
    give_back();
    return {};  // the commit tries its own way
  }
  if (auto ec = io_.sync()) {
    // The kernel may have dropped what it could not write, the frames written since the last
    // commit too: the next sync commits, rewriting them first.
    std::lock_guard lk(m_);
    resync_ = true;
    block_log_locked();
    report("sync of the log failed (" + ec.message() + "); the data stays in memory and the next sync commits it");
    done = true;
    return ec;
  }
  std::lock_guard lk(m_);
  log_pos_ = at + need;
  log_seq_ = seq + ranges.size();
  logged_size_ = size;
  log_syncs_.fetch_add(1, std::memory_order_relaxed);
  done = true;
  return {};
}

std::error_code container::replay_log() {
  std::uint64_t off, gen;
  std::uint32_t len;
  {
    std::lock_guard lk(m_);
    if (log_len_ == 0) return {};
    off = log_off_;
    len = log_len_;
    gen = durable_gen_;
  }
  std::vector<std::byte> region(len);
  std::size_t got = 0;
  if (auto ec = io_.pread(region, off, got)) return ec;
  std::error_code failed;
  const log_scan scan = scan_log(std::span(region).first(got), gen, [&](std::span<const log_write> batch, std::uint64_t size) {
    for (const auto& w : batch) {
      if (w.data.empty()) continue;
      iovec v{const_cast<std::byte*>(w.data.data()), w.data.size()};
      if (auto ec = pwrite(std::span<const iovec>(&v, 1), w.offset)) {
        failed = ec;
        return false;
      }
    }
    if (size > this->size()) {
      if (auto ec = truncate(size)) {
        failed = ec;
        return false;
      }
    }
    return true;
  });
  if (failed) return failed;
  std::lock_guard lk(m_);
  log_pos_ = scan.end;
  log_seq_ = scan.seq;
  pending_.clear();
  pending_bytes_ = 0;
  pending_over_ = false;
  logged_size_ = size_;
  if (scan.batches > 0) {
    log_replayed_.fetch_add(scan.batches, std::memory_order_relaxed);
    report("recovered " + std::to_string(scan.batches) + " fsync(s) from the sync log");
  }
  return {};
}

}  // namespace qzfs::store
