#include "write_back.h"

#include <algorithm>
#include <condition_variable>
#include <vector>

#include "container.h"
#include "qzfs/engine/checker.h"
#include "qzfs/format/frame.h"

namespace qzfs::store {

using format::frame_header_size;

/// One record's frame, built and written by whoever finishes the record.
// One record's frame: told by the engine when the record's outcome is final (on a worker for a
// compressed record), it seals and writes the frame there, or queues it for the batch's helper.
struct write_back::frame_job final : engine::record_sink {
  frame_job() = default;
  frame_job(container* c_, inflight* b, std::size_t k_, std::span<const iovec> in_, std::byte* frame_buf_) noexcept
      : c(c_), batch(b), k(k_), in(in_), frame_buf(frame_buf_) {}
  void record_done(engine::record& r) noexcept override;
  container* c = nullptr;
  inflight* batch = nullptr;
  std::size_t k = 0;
  std::span<const iovec> in;
  std::byte* frame_buf = nullptr;  // frame buffer: header, then payload
  format::map_entry entry;  // offset 0: nothing written (a hole)
  std::error_code ec;
  void write(const engine::record& r) noexcept;
  void write_frame(const engine::record& r);
};

struct write_back::inflight {
  bool direct = false;  // the caller's buffers (finished before the write returns)
  std::vector<std::uint64_t> indices;
  std::vector<engine::record> recs;
  std::vector<std::span<const iovec>> in;
  std::vector<iovec> own;
  std::vector<std::vector<iovec>> pieces;
  std::vector<frame_job> jobs;
  std::vector<buffer> frames;
  std::uint64_t alloc_gen = 0;
  engine::engine::pending pend;
  engine::engine* eng = nullptr;  // the file's engine when the batch was submitted (waited on too)
  // A direct batch when the pool leaves a core free: the writer's thread builds and writes
  // the frames as records finish (it would only wait otherwise), the workers only compress.
  bool helper = false;
  std::mutex ready_m;  // lock order: leaf
  std::condition_variable ready_cv;
  std::vector<std::size_t> ready;
};

write_back::write_back(container& c) noexcept : c_(c) {}
write_back::~write_back() = default;

stripe_lock::stripe_lock(container& c, std::span<const std::uint64_t> indices, bool shared) noexcept : c_(c), shared_(shared) {
  static_assert(std::tuple_size_v<decltype(container::stripes_)> == 64, "stripe_lock keeps the stripes as a 64-bit mask");
  for (auto j : indices) mask_ |= std::uint64_t{1} << (j % 64);
}

stripe_lock::stripe_lock(container& c, std::uint64_t first, std::uint64_t count, bool shared) noexcept
    : c_(c), shared_(shared) {
  for (std::uint64_t j = first; j < first + count && mask_ != ~std::uint64_t{0}; ++j) mask_ |= std::uint64_t{1} << (j % 64);
}

void stripe_lock::lock() {
  // Ascending: the lock order.
  for (unsigned s = 0; s < 64; ++s) {
    if (((mask_ >> s) & 1) == 0) continue;
    if (shared_) {
      c_.stripes_[s].lock_shared();
    } else {
      c_.stripes_[s].lock();
    }
  }
  locked_ = true;
}

void stripe_lock::unlock() {
  for (unsigned s = 64; s-- > 0;) {
    if (((mask_ >> s) & 1) == 0) continue;
    if (shared_) {
      c_.stripes_[s].unlock_shared();
    } else {
      c_.stripes_[s].unlock();
    }
  }
  locked_ = false;
}

// ---------------------------------------------------------------------------------------------
// Buffered batches

std::error_code write_back::flush_some(bool all) {
  std::lock_guard fl(flush_m_);
  for (;;) {
    std::vector<std::uint64_t> pick;
    {
      std::lock_guard lk(c_.m_);
      auto& bufs = c_.bufs_;
      const bool over = bufs.count() > c_.o_.max_dirty_records || bufs.over();
      if (all || over || bufs.whole_count() >= c_.batch_) {
        for (auto& [i, d] : bufs.records()) {
          if (!d.busy && (all || over || d.whole)) pick.push_back(i);
        }
        std::sort(pick.begin(), pick.end());
        if (pick.size() > c_.batch_) pick.resize(c_.batch_);
      }
    }
    if (pick.empty()) {
      // Nothing more to start: a write-back leaves at most one batch running behind the
      // writer; flush(all) waits for every one.
      while (inflight_.size() > (all ? 0u : 1u)) {
        if (auto ec = finish_front()) return ec;
      }
      return {};
    }
    // Start the next batch, then finish the one before it: the writer copies the next records
    // while the workers compress these.
    std::unique_ptr<inflight> b;
    if (auto ec = start_batch(pick, {}, b)) return ec;
    if (b->indices.empty()) continue;  // all replaced by direct writes meanwhile
    inflight_.push_back(std::move(b));
    while (inflight_.size() > 1) {
      if (auto ec = finish_front()) return ec;
    }
    if (!all) return {};
  }
}

std::error_code write_back::finish_front() {
  auto b = std::move(inflight_.front());
  inflight_.pop_front();
  return finish_batch(*b, true);
}

std::error_code write_back::drain() {
  std::lock_guard fl(flush_m_);
  std::error_code first;
  while (!inflight_.empty()) {
    auto ec = finish_front();
    if (ec && !first) first = ec;
  }
  return first;
}

// ---------------------------------------------------------------------------------------------
// Direct batches

std::error_code write_back::write_direct(std::span<const std::uint64_t> indices, std::span<const iovec> in) {
  // Synchronous, with the records' stripes held throughout (the caller's buffers are only ours
  // until this call returns, and no buffered write may slip in between), but without flush_m_:
  // direct writes to other records of the file (the kernel sends several at once) compress
  // side by side.
  stripe_lock stripes(c_, indices);
  for (;;) {
    // A batch in flight may hold one of these records: it must land first, not after.
    if (auto ec = drain()) return ec;
    stripes.lock();
    bool frozen = false;
    {
      std::lock_guard lk(c_.m_);
      for (auto j : indices) {
        const auto* d = c_.bufs_.find(j);
        frozen = frozen || (d != nullptr && d->busy);
      }
    }
    if (!frozen) break;  // with the stripes held, no batch can freeze them any more
    stripes.unlock();
  }
  std::unique_ptr<inflight> b;
  auto ec = start_batch(indices, in, b);
  if (!ec && b->helper) {
    // Frames are written here as their records finish.
    for (std::size_t done_k = 0; done_k < b->recs.size();) {
      std::vector<std::size_t> now;
      {
        std::unique_lock lk(b->ready_m);
        b->ready_cv.wait(lk, [&] { return !b->ready.empty(); });
        now.assign(b->ready.begin(), b->ready.end());  // `ready` keeps its room (see record_done)
        b->ready.clear();
      }
      for (auto k : now) b->jobs[k].write(b->recs[k]);
      done_k += now.size();
    }
  }
  if (!ec) ec = finish_batch(*b, false);
  return ec;
}

// ---------------------------------------------------------------------------------------------
// Starting a batch

std::error_code write_back::start_batch(std::span<const std::uint64_t> indices, std::span<const iovec> direct,
                                        std::unique_ptr<inflight>& out) {
  const std::size_t n = indices.size();
  auto b = std::make_unique<inflight>();
  b->direct = !direct.empty();
  b->indices.assign(indices.begin(), indices.end());
  b->recs.resize(n);
  b->in.resize(n);
  b->own.resize(n);
  b->jobs.resize(n);
  if (b->direct) b->ready.reserve(n);  // a helper's queue never allocates (frame_job::record_done)
  {
    std::lock_guard lk(c_.m_);
    for (std::size_t k = 0; k < n; ++k) b->frames.push_back(c_.bufs_.take_frame(frame_header_size + c_.rs_));
  }
  if (direct.empty()) {
    freeze_buffered(*b);
  } else {
    slice_direct(*b, direct);
  }
  {
    std::lock_guard lk(c_.m_);
    std::error_code ec = c_.materialize_locked();
    if (ec) {
      unfreeze_locked(*b);
      return ec;
    }
    b->alloc_gen = c_.cur_gen_;
  }
  wire_jobs(*b);
  if (auto ec = submit(*b)) return ec;
  out = std::move(b);
  return {};
}

void write_back::freeze_buffered(inflight& b) {
  // The records' buffers are frozen (busy) until the batch finishes: a writer that wants one
  // waits for that. Taking each stripe once makes sure no writer is mid-copy. A record a direct
  // write has replaced since it was picked is no longer buffered: it is left out.
  const std::size_t n = b.indices.size();
  std::size_t kept = 0;
  for (std::size_t k = 0; k < n; ++k) {
    const std::uint64_t i = b.indices[k];
    std::unique_lock rec(c_.stripe(i));
    std::lock_guard lk(c_.m_);
    auto* d = c_.bufs_.find(i);
    if (d == nullptr || d->busy) continue;
    c_.bufs_.freeze(*d);
    b.indices[kept] = i;
    b.own[kept] = iovec{d->buf.get(), c_.record_len_locked(i)};
    b.in[kept] = std::span<const iovec>(&b.own[kept], 1);
    ++kept;
  }
  if (kept < n) {
    std::lock_guard lk(c_.m_);
    for (std::size_t k = kept; k < n; ++k) c_.bufs_.give_frame(std::move(b.frames[k]));
    b.frames.resize(kept);
    b.indices.resize(kept);
    b.recs.resize(kept);
    b.in.resize(kept);
    b.jobs.resize(kept);
  }
}

void write_back::slice_direct(inflight& b, std::span<const iovec> direct) {
  // Whole records of the caller's list, compressed where they lie.
  const std::size_t n = b.indices.size();
  b.pieces.resize(n);
  std::size_t v = 0, skip = 0;
  for (std::size_t k = 0; k < n; ++k) {
    for (std::size_t left = c_.rs_; left > 0;) {
      const std::size_t take = std::min(direct[v].iov_len - skip, left);
      if (take > 0) b.pieces[k].push_back(iovec{static_cast<char*>(direct[v].iov_base) + skip, take});
      left -= take;
      skip += take;
      if (skip == direct[v].iov_len) ++v, skip = 0;
    }
    b.in[k] = b.pieces[k];
  }
}

void write_back::wire_jobs(inflight& b) {
  // Each record's frame is built and written as soon as its outcome is known, on the thread
  // that made it known: a worker for a compressed record, so hashing and writing run in
  // parallel with the other records' compression (the frame header goes in front of the
  // payload, or in front of the record's own bytes when it is stored raw).
  for (std::size_t k = 0; k < b.indices.size(); ++k) {
    b.jobs[k] = frame_job(&c_, &b, k, b.in[k], b.frames[k].get());
    b.recs[k].in = b.in[k];
    b.recs[k].payload = std::span(b.frames[k].get() + frame_header_size, c_.rs_);
    b.recs[k].sink = &b.jobs[k];
  }
  b.eng = c_.core_.compressor();
  // Another engine than the last batch's (the file's policy changed): what the file learnt of
  // how its records fit under the old one says nothing of the new one.
  if (c_.last_engine_.exchange(b.eng, std::memory_order_relaxed) != b.eng) c_.learning_.streak.store(0, std::memory_order_relaxed);
  b.helper = b.direct && b.eng != nullptr && b.eng->spare_core();
}

std::error_code write_back::submit(inflight& b) {
  if (b.eng == nullptr) {
    engine::decide_without_codec(b.recs);
    return {};
  }
  try {
    // The engine allocates before any job leaves for a backend, and sends them all at once at
    // the end: an exception here means none is out. Holes and raw records decided so far may
    // have written frames: their space is given back, and every record stays buffered.
    b.eng->submit(b.recs, &c_.learning_, b.pend);
  } catch (const std::bad_alloc&) {
    std::lock_guard lk(c_.m_);
    release_frames_locked(b, 0);
    unfreeze_locked(b);
    return std::make_error_code(std::errc::not_enough_memory);
  }
  return {};
}

void write_back::frame_job::record_done(engine::record& r) noexcept {
  if (!batch->helper) return write(r);
  // The submitting thread helps with this batch's frames: hand it the record (`ready` has room
  // for every record of the batch, so this never allocates).
  {
    std::lock_guard lk(batch->ready_m);
    batch->ready.push_back(k);
  }
  batch->ready_cv.notify_one();
}

void write_back::frame_job::write(const engine::record& r) noexcept {
  // Runs on a backend's worker thread too: nothing may escape (a failure is this record's error).
  try {
    write_frame(r);
  } catch (const std::exception&) {
    ec = std::make_error_code(std::errc::not_enough_memory);
  }
}

void write_back::frame_job::write_frame(const engine::record& r) {
  const std::size_t len = codec::total_size(in);
  if (r.result == engine::outcome::hole || len == 0) return;
  // format/ seals the frame; the store gives the bytes a place and writes them.
  iovec parts[2 + 64];
  std::size_t np = 0;
  std::vector<iovec> many;  // a raw record scattered over more pieces than `parts` holds
  format::frame_header h;
  if (r.result == engine::outcome::compressed) {
    h.format = r.spec.format;
    h.producer = r.producer;
    h.level = static_cast<std::int8_t>(r.spec.level);
    h.logical_size = static_cast<std::uint32_t>(len);
    h.physical_size = static_cast<std::uint32_t>(r.payload_size);
    h.logical_hash = format::hash(in);
    h = format::seal_frame(h, std::span(frame_buf, frame_header_size + r.payload_size));
    parts[np++] = iovec{frame_buf, frame_header_size + r.payload_size};
  } else {
    // Stored raw: header + the record's own bytes where they lie.
    h = format::seal_raw_header(in, std::span(frame_buf, frame_header_size).first<frame_header_size>());
    parts[np++] = iovec{frame_buf, frame_header_size};
    if (in.size() <= 64) {
      for (const auto& v : in) parts[np++] = v;
    } else {
      many.assign(1, parts[0]);
      many.insert(many.end(), in.begin(), in.end());
    }
  }
  entry.length = static_cast<std::uint32_t>(frame_header_size + h.physical_size);
  entry.format = h.format;
  entry.producer = h.producer;
  entry.payload_hash = h.payload_hash;
  {
    std::lock_guard lk(c->m_);
    entry.offset = c->space_.allocate(entry.length);
  }
  ec = many.empty() ? c->io_.pwritev(std::span(parts, np), entry.offset) : c->io_.pwritev(many, entry.offset);
}

// ---------------------------------------------------------------------------------------------
// Finishing a batch

void write_back::unfreeze_locked(inflight& b) {
  if (!b.direct) {
    for (auto i : b.indices) {
      if (auto* d = c_.bufs_.find(i)) c_.bufs_.unfreeze(*d);
    }
  }
  for (auto& frame_buf : b.frames) c_.bufs_.give_frame(std::move(frame_buf));
  b.frames.clear();
}

void write_back::release_frames_locked(const inflight& b, std::size_t from) {
  for (std::size_t k = from; k < b.jobs.size(); ++k) {
    if (b.jobs[k].entry.offset != 0) c_.release_locked(b.jobs[k].entry.offset, b.jobs[k].entry.length);
  }
}

std::error_code write_back::finish_batch(inflight& b, bool take_stripes) {
  if (b.eng != nullptr) b.eng->wait(b.pend);
  std::error_code ec;
  for (const auto& c : b.jobs) {
    if (c.ec && !ec) ec = c.ec;
  }
  stripe_lock stripes(c_, take_stripes ? std::span<const std::uint64_t>(b.indices) : std::span<const std::uint64_t>());
  if (take_stripes) stripes.lock();
  std::lock_guard lk(c_.m_);
  if (ec) {
    // Nothing names the new frames: their space is free again, and the records stay dirty.
    release_frames_locked(b, 0);
    unfreeze_locked(b);
    c_.report("writing records: " + ec.message());
    return ec;
  }
  return map_frames_locked(b);
}

std::error_code write_back::map_frames_locked(inflight& b) {
  const std::size_t n = b.indices.size();
  std::uint64_t high = 0;
  for (const auto& c : b.jobs) {
    if (c.entry.offset != 0) high = std::max(high, c.entry.offset + c.entry.length);
  }
  c_.backing_len_ = std::max(c_.backing_len_, high);
  for (std::size_t k = 0; k < n; ++k) {
    const std::uint64_t i = b.indices[k];
    try {
      c_.set_entry_locked(i, b.jobs[k].entry, b.alloc_gen);
    } catch (const std::bad_alloc&) {
      // Out of memory for the map: the records from here on keep their buffers (a direct batch's
      // caller still has its bytes) and their new frames are free again; nothing is lost.
      release_frames_locked(b, k);
      for (std::size_t j = k; j < n; ++j) {
        if (auto* d = c_.bufs_.find(b.indices[j])) c_.bufs_.unfreeze(*d);
      }
      for (auto& frame_buf : b.frames) c_.bufs_.give_frame(std::move(frame_buf));
      b.frames.clear();
      ++c_.change_seq_;
      return std::make_error_code(std::errc::not_enough_memory);
    }
    // The record's buffer (frozen for this batch, or replaced by a direct write) is done.
    c_.bufs_.erase(i);
    c_.bufs_.cache_forget(i);
  }
  if (b.direct) c_.size_ = std::max(c_.size_, (b.indices[n - 1] + 1) << c_.shift_);
  for (auto& frame_buf : b.frames) c_.bufs_.give_frame(std::move(frame_buf));
  b.frames.clear();
  ++c_.change_seq_;
  c_.flushes_.fetch_add(1, std::memory_order_relaxed);
  return {};
}

}  // namespace qzfs::store
