// container: durability. A commit writes the map (two copies), syncs, then the slot of the next
// generation, and syncs again; after a failed sync the frames written since the last durable
// commit are rewritten first; compaction keeps the space bound.

#include <algorithm>
#include <limits>

#include "container.h"
#include "qzfs/format/frame.h"

namespace qzfs::store {

using format::container_header_size;
using format::slot_size;

/// One commit: the slot it writes, the map it names, and where that map goes.
struct container::commit_plan {
  format::container_slot slot;
  std::vector<format::indexed_entry> snap;
  std::uint64_t seq = 0, epoch = 0, off[2] = {0, 0}, mlen = 0;
  std::array<std::byte, slot_size> sb{};  // the slot, encoded
  bool slot_written = false;
  bool new_log = false;  // the log the slot names is new (zeroed with the maps)
  bool drops_log = false;  // planned for a closed file: names no log
  // What the sync log's bookkeeping was before the plan: given back if the commit fails.
  std::map<std::uint64_t, std::uint64_t> pending_before;
  bool pending_over_before = false;
  std::uint64_t logged_size_before = 0;
};

/// A group commit's part of one container: the commit's locks, held from its maps to its end.
class container::group_commit final : public group_part {
 public:
  group_commit(container& c, std::unique_lock<std::mutex> cm, std::shared_lock<std::shared_mutex> layout) noexcept
      : c_(c), cm_(std::move(cm)), layout_(std::move(layout)) {}
  std::error_code after_first() override { return c_.core_.note_error(c_.write_slot(p)); }
  bool after_second() override {
    c_.finish_slot(p);
    std::lock_guard lk(c_.m_);
    c_.finish_commit_locked(p);
    c_.commits_.fetch_add(1, std::memory_order_relaxed);
    return c_.compaction_due_locked();
  }
  std::error_code failed(std::error_code ec) override { return c_.core_.note_error(c_.fail_commit(p, ec, true)); }

  commit_plan p;

 private:
  container& c_;
  std::unique_lock<std::mutex> cm_;
  std::shared_lock<std::shared_mutex> layout_;
};

std::error_code container::begin_group(std::unique_ptr<group_part>& out) {
  out.reset();
  std::unique_lock cm(commit_m_);
  std::shared_lock layout(layout_);
  if (auto ec = write_back_.flush_some(true)) return core_.note_error(ec);
  bool own = false;
  {
    std::lock_guard lk(m_);
    if (!resync_ && change_seq_ == committed_seq_ && !(drop_log_ && log_len_ != 0)) return {};
    own = resync_;
  }
  if (own) {  // frames to write again first: the whole sync(), on its own
    layout.unlock();
    cm.unlock();
    return commit_sync();
  }
  auto g = std::make_unique<group_commit>(*this, std::move(cm), std::move(layout));
  {
    std::lock_guard lk(m_);
    if (auto ec = plan_commit_locked(g->p)) return core_.note_error(ec);
  }
  if (auto ec = write_maps(g->p)) return core_.note_error(ec);
  out = std::move(g);
  return {};
}

std::error_code container::flush() {
  std::shared_lock layout(layout_);
  return core_.note_error(write_back_.flush_some(true));
}

std::error_code container::sync() {
  if (read_only_) return {};
  if (o_.sync_log_bytes != 0) {
    // A small change of a file fsynced often: one batch appended to its log and one sync.
    std::lock_guard cm(commit_m_);
    std::shared_lock layout(layout_);
    bool done = false;
    auto ec = log_sync(done);
    if (done) return core_.note_error(ec);
  }
  return commit_sync();
}

std::error_code container::commit_sync() {
  if (read_only_) return {};
  std::lock_guard cm(commit_m_);
  bool over = false, resync = false;
  {
    std::shared_lock layout(layout_);
    if (auto ec = write_back_.flush_some(true)) return core_.note_error(ec);
    std::lock_guard lk(m_);
    resync = resync_;
  }
  if (resync) {
    std::unique_lock layout(layout_);
    if (auto ec = write_back_.drain()) return core_.note_error(ec);
    if (auto ec = rewrite_recent()) return core_.note_error(ec);
  }
  {
    std::shared_lock layout(layout_);
    if (auto ec = commit_locked()) return core_.note_error(ec);
    std::lock_guard lk(m_);
    over = compaction_due_locked();
  }
  if (over) {
    std::unique_lock layout(layout_);
    if (auto ec = write_back_.drain()) return core_.note_error(ec);
    return core_.note_error(compact());
  }
  return {};
}

bool container::compaction_due_locked() const {
  std::uint64_t pending = 0;
  for (auto& d : deferred_) pending += d.len;
  return o_.compact &&
         space_.end() > 2 * (live_frames_ + 2 * map_len_ + pending) + log_len_ + container_header_size + o_.compact_slack;
}

std::error_code container::move_frame(std::uint64_t index, const format::map_entry& e, std::uint64_t to, std::uint64_t gen,
                                      std::vector<std::byte>& buf) {
  if (auto ec = io_.pwrite(buf, to)) {
    std::lock_guard lk(m_);
    release_locked(to, e.length);
    return ec;
  }
  std::lock_guard lk(m_);
  backing_len_ = std::max(backing_len_, to + e.length);
  auto moved = e;
  moved.offset = to;
  set_entry_locked(index, moved, gen);
  ++change_seq_;
  return {};
}

std::error_code container::rewrite_recent() {
  // After a failed sync the kernel may have dropped the pages it could not write (and marked
  // them clean): frames written since the last durable commit may never reach the disk, so each
  // is read back (the page cache still has it, or the disk does), checked against its payload
  // hash and written again to fresh space before the next commit names it.
  std::vector<std::pair<std::uint64_t, format::map_entry>> recent;
  {
    std::lock_guard lk(m_);
    for (auto& [i, en] : map_) {
      if (en.alloc_gen > durable_epoch_) recent.emplace_back(i, en.e);
    }
  }
  std::vector<std::byte> buf;
  for (auto& [i, e] : recent) {
    buf.resize(e.length);
    format::frame_view v;
    if (io_.pread_exact(buf, e.offset) || format::parse_frame(buf, v) != format::frame_error::ok ||
        v.header.payload_hash != e.payload_hash) {
      report("record " + std::to_string(i) + " was lost by the backing file system after a failed sync");
      std::lock_guard lk(m_);
      block_log_locked();
      set_entry_locked(i, format::map_entry{1, 0, {}, {}, 0}, cur_gen_);
      ++change_seq_;
      continue;
    }
    std::uint64_t to, gen;
    {
      std::lock_guard lk(m_);
      to = space_.allocate(e.length);
      gen = cur_gen_;
    }
    if (auto ec = move_frame(i, e, to, gen, buf)) return ec;
  }
  std::lock_guard lk(m_);
  resync_ = false;
  return {};
}

std::error_code container::commit_locked() {
  commit_plan p;
  {
    std::lock_guard lk(m_);
    if (change_seq_ == committed_seq_ && !(drop_log_ && log_len_ != 0)) return {};
    if (auto ec = plan_commit_locked(p)) return ec;
  }
  if (auto ec = write_commit(p)) return ec;
  std::lock_guard lk(m_);
  finish_commit_locked(p);
  commits_.fetch_add(1, std::memory_order_relaxed);
  return {};
}

std::error_code container::plan_commit_locked(commit_plan& p) {
  if (auto ec = materialize_locked()) return ec;
  p.seq = change_seq_;
  // The same generation again after a failed attempt: the durable slot stays untouched until
  // its successor is durable (docs/STORE.md "Failures").
  p.slot.generation = durable_gen_ + 1;
  p.epoch = cur_gen_++;
  p.slot.record_shift = static_cast<std::uint8_t>(shift_);
  p.slot.logical_size = size_;
  // Lost records stay lost in every later generation: they must never come back as zeros.
  p.snap = snapshot_locked(records_locked());
  const std::size_t n = p.snap.size();
  if (n > std::numeric_limits<std::uint32_t>::max()) return std::make_error_code(std::errc::file_too_large);
  p.slot.map_records = static_cast<std::uint32_t>(n);
  if (n > 0) {
    p.mlen = format::map_bytes_v2(n);
    p.off[0] = low_first_ ? space_.allocate_low(p.mlen) : space_.allocate(p.mlen);
    p.off[1] = low_first_ ? space_.allocate_low(p.mlen) : space_.allocate(p.mlen);
  }
  p.slot.map_offset[0] = p.off[0];
  p.slot.map_offset[1] = p.off[1];
  // The sync log: kept, made (zeroed with the maps, before the slot names it) or dropped.
  if (drop_log_) {
    p.slot.log_offset = 0, p.slot.log_len = 0;
    p.drops_log = true;
  } else if (log_len_ != 0) {
    p.slot.log_offset = log_off_, p.slot.log_len = log_len_;
  } else if (want_log_) {
    p.slot.log_len = std::min(o_.sync_log_bytes, format::max_log_len);
    p.slot.log_offset = space_.allocate(p.slot.log_len);
    p.new_log = true;
  }
  // From here on, a sync logs what this snapshot does not hold.
  p.pending_before.swap(pending_);
  p.pending_over_before = pending_over_;
  p.logged_size_before = logged_size_;
  restart_pending_locked();
  logged_size_ = size_;
  return {};
}

std::error_code container::write_commit(commit_plan& p) {
  // Frames and map first, then the slot that names them.
  if (auto ec = write_maps(p)) return ec;
  if (auto ec = io_.sync()) return fail_commit(p, ec, true);
  if (auto ec = write_slot(p)) return ec;
  if (auto ec = io_.sync()) return fail_commit(p, ec, true);
  finish_slot(p);
  return {};
}

std::error_code container::write_maps(commit_plan& p) {
  if (p.new_log) {
    // Written blocks, so that a batch later overwrites them in place (no allocation to sync),
    // and no stale bytes that could pass for an entry.
    static const std::vector<std::byte> zeros(64 << 10);
    for (std::uint64_t at = 0; at < p.slot.log_len; at += zeros.size()) {
      const auto n = std::min<std::uint64_t>(zeros.size(), p.slot.log_len - at);
      if (auto ec = io_.pwrite(std::span(zeros).first(n), p.slot.log_offset + at)) return fail_commit(p, ec, false);
    }
  }
  if (p.mlen == 0) return {};
  std::vector<std::byte> buf(p.mlen);
  format::encode_map_v2(p.snap, p.slot.generation, buf);
  iovec v{buf.data(), buf.size()};
  if (auto ec = io_.pwritev({&v, 1}, p.off[0])) return fail_commit(p, ec, false);
  if (auto ec = io_.pwritev({&v, 1}, p.off[1])) return fail_commit(p, ec, false);
  return {};
}

std::error_code container::write_slot(commit_plan& p) {
  format::encode_slot(p.slot, p.sb);
  p.slot_written = true;
  if (auto ec = io_.pwrite(p.sb, ((p.slot.generation + 1) % 2) * slot_size)) return fail_commit(p, ec, false);
  return {};
}

void container::finish_slot(commit_plan& p) noexcept {
  // The other slot becomes a copy (it held the generation before, superseded now): a damaged
  // slot then never rolls the file back to an older state, the copy says the same. Not synced:
  // whichever of the two reaches the disk, the newest valid one is this generation.
  (void)io_.pwrite(p.sb, (p.slot.generation % 2) * slot_size);
  set_marker_locked(p.sb);
}

std::error_code container::fail_commit(const commit_plan& p, std::error_code ec, bool synced) {
  std::lock_guard lk(m_);
  // Nothing durable was touched and nothing is given up: the records, the map and the size
  // stay as they are in memory and the next sync() tries again. The new map copies are free
  // again at once when no slot can name them, else once a later commit is durable.
  if (p.mlen > 0) {
    for (auto off : p.off) {
      if (p.slot_written) {
        deferred_.push_back({off, p.mlen, cur_gen_});
      } else {
        release_locked(off, p.mlen);
      }
    }
  }
  if (p.new_log) {
    if (p.slot_written) {
      deferred_.push_back({p.slot.log_offset, p.slot.log_len, cur_gen_});
    } else {
      release_locked(p.slot.log_offset, p.slot.log_len);
    }
  }
  for (auto [a, b] : p.pending_before) note_change_locked(a, b - a);
  if (p.pending_over_before) block_log_locked();
  logged_size_ = p.logged_size_before;
  if (synced) resync_ = true;
  report("commit of generation " + std::to_string(p.slot.generation) + " failed (" + ec.message() +
         "); the data stays in memory and the commit is tried again");
  return ec;
}

void container::finish_commit_locked(const commit_plan& p) {
  durable_gen_ = p.slot.generation;
  durable_epoch_ = p.epoch;
  committed_seq_ = p.seq;
  backing_len_ = std::max({backing_len_, p.off[0] + p.mlen, p.off[1] + p.mlen});
  // The previous map and every extent the new generation no longer names are free now.
  if (map_len_ > 0) {
    release_locked(map_off_[0], map_len_);
    release_locked(map_off_[1], map_len_);
  }
  map_off_[0] = p.off[0];
  map_off_[1] = p.off[1];
  map_len_ = p.mlen;
  // The log starts again in the new generation; a log the slot no longer names is free.
  if (log_len_ != 0 && (p.slot.log_len == 0 || p.slot.log_offset != log_off_)) release_locked(log_off_, log_len_);
  if (p.new_log) want_log_ = false;
  if (p.drops_log) drop_log_ = false;  // reopened since: its syncs may use a log again
  log_off_ = p.slot.log_offset;
  log_len_ = p.slot.log_len;
  log_pos_ = 0;
  log_seq_ = 0;
  backing_len_ = std::max(backing_len_, log_off_ + log_len_);
  auto keep = std::partition(deferred_.begin(), deferred_.end(), [&](const deferred_free& d) { return d.gen_needed > durable_epoch_; });
  for (auto it = keep; it != deferred_.end(); ++it) release_locked(it->off, it->len);
  deferred_.erase(keep, deferred_.end());
  if (space_.end() < backing_len_) {
    if (!io_.truncate(space_.end())) backing_len_ = space_.end();
  }
}

std::error_code container::compact() {
  // Two moves, each committed: every live frame to fresh space past the end (so the old
  // places can be freed without ever overwriting a committed frame), then back down into the
  // now empty front of the file. Costs two copies of the live data; runs only when the file has
  // grown past twice its live bytes.
  for (int phase = 0; phase < 2; ++phase) {
    std::vector<std::pair<std::uint64_t, format::map_entry>> frames;
    {
      std::lock_guard lk(m_);
      for (auto& [i, en] : map_) frames.emplace_back(i, en.e);
    }
    std::sort(frames.begin(), frames.end(), [](auto& x, auto& y) { return x.second.offset < y.second.offset; });
    std::vector<std::byte> buf;
    for (auto& [i, e] : frames) {
      buf.resize(e.length);
      if (auto ec = io_.pread_exact(buf, e.offset)) return ec;
      std::uint64_t to, gen;
      {
        std::lock_guard lk(m_);
        to = phase == 0 ? space_.allocate_at_end(e.length) : space_.allocate_low(e.length);
        gen = cur_gen_;
      }
      if (auto ec = move_frame(i, e, to, gen, buf)) return ec;
    }
    {
      std::lock_guard lk(m_);
      low_first_ = phase == 1;  // the second commit's maps go to the front too
    }
    auto ec = commit_locked();
    std::lock_guard lk(m_);
    low_first_ = false;
    if (ec) return ec;
  }
  compactions_.fetch_add(1, std::memory_order_relaxed);
  return {};
}

}  // namespace qzfs::store
