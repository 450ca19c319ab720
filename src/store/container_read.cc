// container: reading records (a dirty buffer, a hole, the read cache, or a frame decoded) and
// checking them all. A read of several whole gzip records while an accelerator that decodes is
// up hands them to the scheduler: the reading thread reads each frame, checks it, submits it as
// a decompression job straight into the caller's buffer (to the accelerator or a CPU worker),
// decodes the first itself, and checks every result against the record's checksum before it
// returns. Otherwise the reading thread decodes every record itself (the kernel's read-ahead
// keeps several requests, one per thread, in flight: they decode in parallel already).

#include <algorithm>
#include <array>
#include <cstring>

#include "container.h"
#include "qzfs/codec/workspace.h"
#include "qzfs/format/frame.h"
#include "record_range.h"

namespace qzfs::store {

// One record of a read decoded by a backend: its frame (read and checked), its place in the
// caller's buffer, the job.
struct decode_slot {
  std::uint64_t index = 0;
  format::frame_header header{};
  iovec payload{};
  std::span<std::byte> logical;  // the record's bytes in the caller's buffer
  offload::job job;
};
struct decode_batch {
  std::vector<std::vector<std::byte>> frames;  // frames[k]: slots[k]'s frame (kept for the next reads)
  std::vector<decode_slot> slots;              // never grows past max_parallel_records (jobs point in)
  offload::completion done;
};
namespace {

std::error_code eio() { return std::make_error_code(std::errc::io_error); }

// Per-thread scratch for reading frames and decoding partial records: allocated once per thread
// at its largest use, never per call.
struct scratch {
  std::vector<std::byte> frame, record;
  codec::workspace ws;
};
scratch& thread_scratch() {
  thread_local scratch s;
  return s;
}

// Records smaller than this are decoded by the reading thread (a job's hand-over costs about
// what decoding a few KiB does).
constexpr std::uint32_t min_parallel_record = 16 * 1024;
// Records of one read in flight at once (their frames are this thread's buffers).
constexpr std::size_t max_parallel_records = 16;
// Raw records read with one preadv (twice as many buffers: header, payload).
constexpr std::size_t max_run_records = 32;

decode_batch& thread_batch() {
  thread_local decode_batch b;
  return b;
}

}  // namespace

std::error_code container::bad_record(std::uint64_t index, std::string_view what, std::string* why) {
  damaged_reads_.fetch_add(1, std::memory_order_relaxed);
  std::string line = "record " + std::to_string(index) + " (bytes " + std::to_string(index << shift_) + ".." +
                     std::to_string(((index + 1) << shift_) - 1) + "): " + std::string(what);
  report(line);
  if (why != nullptr) *why = std::move(line);
  return eio();
}

std::error_code container::load_frame(std::uint64_t index, const map_slot& en, std::vector<std::byte>& buf,
                                      std::size_t room, format::frame_view& v, std::string* why) {
  auto bad = [&](std::string_view what) { return bad_record(index, what, why); };
  if (buf.size() < en.e.length) buf.resize(en.e.length);
  auto frame = std::span(buf).first(en.e.length);
  if (auto ec = io_.pread_exact(frame, en.e.offset)) {
    if (ec == std::errc::io_error) return bad("frame cut short at byte " + std::to_string(en.e.offset));
    return ec;
  }
  if (auto fe = format::parse_frame(frame, v); fe != format::frame_error::ok) return bad(format::to_string(fe));
  if (v.frame_size != en.e.length || v.header.format != en.e.format || v.header.payload_hash != en.e.payload_hash ||
      v.header.logical_size > rs_ || v.header.logical_size > room) {
    return bad("frame does not match the record map");
  }
  return {};
}

std::string_view container::raw_problem(const map_slot& en, std::span<const std::byte, format::frame_header_size> head,
                                        std::span<const std::byte> payload, std::uint32_t& len) const noexcept {
  format::frame_header h;
  if (auto fe = format::parse_frame_header(head, h); fe != format::frame_error::ok) return format::to_string(fe);
  // The payload first, as parse_frame does: damaged bytes are named as such.
  if (h.physical_size == payload.size() && format::hash(payload) != h.payload_hash) {
    return format::to_string(format::frame_error::payload_checksum);
  }
  if (h.format != en.e.format || h.payload_hash != en.e.payload_hash || h.physical_size != payload.size() ||
      h.logical_size > rs_) {
    return "frame does not match the record map";
  }
  len = h.logical_size;
  return {};
}

std::error_code container::read_record(std::uint64_t index, const map_slot& en, std::span<std::byte> out, std::uint32_t& len,
                                       std::string* why) {
  auto bad = [&](std::string_view what) { return bad_record(index, what, why); };
  if (en.e.lost()) return bad("lost: its map chunk was damaged");
  // A raw record (incompressible, or compression=off): its payload is read straight into `out`
  // beside its header (one preadv) and checked there: no pass through the frame buffer.
  if (en.e.format == codec::payload_format::none && en.e.length > format::frame_header_size &&
      en.e.length - format::frame_header_size <= out.size()) {
    std::array<std::byte, format::frame_header_size> head;
    const auto payload = out.first(en.e.length - format::frame_header_size);
    const iovec v[2] = {{head.data(), head.size()}, {payload.data(), payload.size()}};
    if (auto ec = io_.preadv_exact(v, en.e.offset)) {
      if (ec == std::errc::io_error) return bad("frame cut short at byte " + std::to_string(en.e.offset));
      return ec;
    }
    if (const auto what = raw_problem(en, head, payload, len); !what.empty()) return bad(what);
    return {};
  }
  auto& s = thread_scratch();
  format::frame_view v;
  if (auto ec = load_frame(index, en, s.frame, out.size(), v, why)) return ec;
  auto logical = out.first(v.header.logical_size);
  if (v.header.format == codec::payload_format::none) {
    std::memcpy(logical.data(), v.payload.data(), logical.size());  // checked by parse_frame
  } else if (auto st = s.ws.decompress(v.header.format, v.payload, logical); st != codec::status::ok) {
    return bad("payload does not decode");
  } else if (auto fe = format::verify_logical(v.header, logical); fe != format::frame_error::ok) {
    return bad(format::to_string(fe));
  }
  len = v.header.logical_size;
  return {};
}

std::error_code container::pread(std::span<std::byte> out, std::uint64_t off, std::size_t& got) {
  got = 0;
  std::shared_lock layout(layout_);
  std::uint64_t sz;
  {
    std::lock_guard lk(m_);
    sz = size_;
  }
  if (off >= sz || out.empty()) return {};
  const record_range range(off, std::min<std::uint64_t>(out.size(), sz - off), shift_);
  read_ahead(off, range.end_offset());
  if (auto* eng = core_.compressor();
      eng != nullptr && rs_ >= min_parallel_record && range.count() >= 2 && hand_out_decodes(*eng)) {
    return read_parallel(range, out, *eng, got);
  }
  std::uint64_t next_run = range.first();  // where read_raw_run may find a run next
  for (std::uint64_t i = range.first(); i <= range.last();) {
    // Whole raw records whose frames lie back to back: one read for all of them.
    if (const std::uint64_t n = i >= next_run ? read_raw_run(range, i, out, next_run) : 0; n != 0) {
      const record_part p = range.at(i + n - 1);
      got = p.pos + p.size();
      i += n;
      continue;
    }
    const record_part p = range.at(i++);
    auto dst = out.subspan(p.pos, p.size());
    if (auto ec = read_part(p.index, p.lo, p.hi, dst)) return ec;
    got += dst.size();
  }
  return {};
}

std::uint64_t container::read_raw_run(const record_range& range, std::uint64_t first, std::span<std::byte> out,
                                      std::uint64_t& next) {
  auto raw_frame = [&](std::uint64_t i, map_slot& en) {  // m_
    if (bufs_.find(i) != nullptr) return false;
    en = entry_locked(i);
    const auto& e = en.e;
    return !e.hole() && !e.lost() && e.format == codec::payload_format::none && e.length > format::frame_header_size &&
           e.length - format::frame_header_size <= rs_;
  };
  // Where the next run starts: two or more whole raw records from `first` on whose frames lie
  // back to back (one look at the map for the records before it, which are read one by one).
  const std::uint64_t end = range.end_whole();
  std::uint64_t start = std::max(first, range.first_whole()), n = 0;
  {
    std::lock_guard lk(m_);
    map_slot en;
    for (std::uint64_t i = start, at = 0; i < end && n < max_run_records; ++i) {
      const bool raw = raw_frame(i, en);
      if (raw && n != 0 && en.e.offset == at) {
        ++n;
      } else if (n >= 2) {
        break;
      } else {
        start = i;
        n = raw ? 1 : 0;
      }
      at = en.e.offset + en.e.length;
    }
  }
  if (n < 2) {
    next = range.last() + 1;  // none in this read
    return 0;
  }
  next = start;
  if (start != first) return 0;
  // Under the run's stripes, the run again (a record written meanwhile ends it there).
  stripe_lock held(*this, first, n, true);
  held.lock();
  thread_local std::array<std::array<std::byte, format::frame_header_size>, max_run_records> heads;
  std::array<map_slot, max_run_records> ens;
  std::array<iovec, 2 * max_run_records> v;
  {
    std::lock_guard lk(m_);
    std::uint64_t k = 0;
    for (std::uint64_t at = 0; k < n; ++k) {
      if (!raw_frame(first + k, ens[k]) || (k != 0 && ens[k].e.offset != at)) break;
      at = ens[k].e.offset + ens[k].e.length;
    }
    n = k;
  }
  if (n < 2) return 0;
  for (std::size_t k = 0; k < n; ++k) {
    v[2 * k] = {heads[k].data(), heads[k].size()};
    v[2 * k + 1] = {out.data() + range.at(first + k).pos, ens[k].e.length - format::frame_header_size};
  }
  // A failure (a frame cut short, a read error) is left to the records one by one, which name it.
  if (io_.preadv_exact(std::span(v).first(2 * n), ens[0].e.offset)) {
    next = range.last() + 1;
    return 0;
  }
  for (std::size_t k = 0; k < n; ++k) {
    const std::uint64_t pos = range.at(first + k).pos;
    std::uint32_t len = 0;
    const auto payload = out.subspan(pos, ens[k].e.length - format::frame_header_size);
    if (!raw_problem(ens[k], heads[k], payload, len).empty()) return k;  // read again alone, and reported
    std::memset(out.data() + pos + len, 0, rs_ - len);
  }
  return n;
}

std::error_code container::read_part(std::uint64_t i, std::uint32_t a, std::uint32_t b, std::span<std::byte> dst,
                                     decode_batch* batch, engine::engine* eng) {
  std::shared_lock rec(stripe(i));
  const std::byte* dirty_buf = nullptr;
  map_slot en;
  {
    std::lock_guard lk(m_);
    if (const auto* d = bufs_.find(i)) {
      dirty_buf = d->buf.get();
    } else {
      en = entry_locked(i);
    }
  }
  if (dirty_buf != nullptr) {
    std::memcpy(dst.data(), dirty_buf + a, dst.size());
  } else if (en.e.hole()) {
    std::memset(dst.data(), 0, dst.size());
  } else if (bufs_.cache_read(i, dst, a, b)) {
    cache_hits_.fetch_add(1, std::memory_order_relaxed);
  } else if (a == 0 && b == rs_ && batch != nullptr && en.e.format == codec::payload_format::gzip && !en.e.lost()) {
    return queue_decode(i, en, dst, *batch, *eng, rec);
  } else if (a == 0 && b == rs_) {
    // The whole record is wanted: decode straight into the caller's buffer.
    std::uint32_t len = 0;
    if (auto ec = read_record(i, en, dst, len)) return ec;
    std::memset(dst.data() + len, 0, dst.size() - len);
  } else {
    auto& s = thread_scratch();
    if (s.record.size() < rs_) s.record.resize(rs_);
    std::uint32_t len = 0;
    if (auto ec = read_record(i, en, std::span(s.record).first(rs_), len)) return ec;
    std::memset(s.record.data() + len, 0, rs_ - len);
    std::memcpy(dst.data(), s.record.data() + a, dst.size());
    bufs_.cache_put(i, s.record.data(), len);
  }
  return {};
}

void container::read_ahead(std::uint64_t off, std::uint64_t end) {
  // The window's largest size, in records' bytes: 16 MiB kept one cold reader of raw records as
  // fast as passthrough_hp on an ext4 loop image (4 MiB: 0.90-0.94x; 8 MiB: 0.97x; 4 MiB chunks
  // instead of 2: 0.75x; docs/BENCHMARKS.md "Reads"); gzip reads the same with either.
  constexpr std::uint64_t max_window_bytes = 16 << 20;
  // How far out of order the requests of one stream arrive: the mount's read-ahead (4 MiB).
  constexpr std::uint64_t near_bytes = 4 << 20;
  const std::uint64_t last = ra_next_.load(std::memory_order_relaxed);
  const std::uint32_t open = ra_window_.load(std::memory_order_relaxed);
  // In the stream: where the last read ended, or (a stream already open) near it: the kernel's
  // read-ahead sends several requests at once, and they may arrive out of order.
  const bool near = open != 0 && last != ~std::uint64_t{0} && off + near_bytes >= last && off <= last + near_bytes;
  if (off != last && !near) {  // random (or a new stream): no read-ahead; what was hinted is forgotten
    ra_next_.store(end, std::memory_order_relaxed);
    ra_window_.store(0, std::memory_order_relaxed);
    ra_until_.store(0, std::memory_order_relaxed);
    return;
  }
  ra_next_.store(std::max(last == ~std::uint64_t{0} ? 0 : last, end), std::memory_order_relaxed);
  const auto max_window = static_cast<std::uint32_t>(std::max<std::uint64_t>(1, max_window_bytes >> shift_));
  const std::uint32_t window = std::min(max_window, std::max<std::uint32_t>(2, 2 * open));
  ra_window_.store(window, std::memory_order_relaxed);
  // The records from the end of this read to the end of the window, not hinted yet.
  const std::uint64_t next = ((end - 1) >> shift_) + 1;
  const std::uint64_t hinted = ra_until_.load(std::memory_order_relaxed);
  const std::uint64_t from = hinted > next && hinted <= next + window ? hinted : next;
  const std::uint64_t to = next + window;
  if (from >= to) return;
  ra_until_.store(to, std::memory_order_relaxed);
  // Their frames' stretch of the backing file, named in whole aligned chunks, each once: large
  // reads for the disk whatever order the request threads come in (a hint per few frames, each
  // overlapping what the kernel's own read-ahead is reading, made it read in small pieces). The
  // stretch, not only the chunks that hold the window's frames: a file written by several
  // threads at once has a megabyte of records spread over 3-20 MiB, interleaved with the records
  // the stream reads next. Frames spread wider (a file written in random order) get no hint.
  std::uint64_t lo = ~std::uint64_t{0}, hi = 0, len = 0;
  {
    std::lock_guard lk(m_);
    len = backing_len_;
    for (auto it = map_.lower_bound(from); it != map_.end() && it->first < to; ++it) {
      const auto& e = it->second.e;
      if (e.hole() || e.lost()) continue;
      lo = std::min(lo, e.offset);
      hi = std::max(hi, e.offset + e.length);
    }
  }
  if (hi <= lo || hi - lo > 4 * max_window_bytes) return;  // none, or scattered: the kernel's own
  for (std::uint64_t c = lo >> ra_chunk_shift; c <= (hi - 1) >> ra_chunk_shift; ++c) {
    bool seen = false;
    for (auto& h : ra_chunks_) seen = seen || h.load(std::memory_order_relaxed) == c + 1;
    if (seen) continue;
    ra_chunks_[ra_chunk_next_.fetch_add(1, std::memory_order_relaxed) % ra_chunks_.size()].store(c + 1, std::memory_order_relaxed);
    const std::uint64_t a = c << ra_chunk_shift, b = std::min(len, (c + 1) << ra_chunk_shift);
    if (b > a) io_.will_need(a, b - a);
  }
}

bool container::hand_out_decodes(engine::engine& eng) const noexcept {
  // Records go to the backends when an accelerator can decode them (gzip records inside its
  // window; read_part queues only gzip records). With the CPU alone, the request threads
  // already decode in parallel: the kernel's read-ahead (4 MiB) keeps several requests in
  // flight, one per thread; handing their records to the workers as well cost 5-10% more CPU
  // per GiB and read no faster on two cores (docs/BENCHMARKS.md "Reads").
  return eng.decodes_offloaded(rs_);
}

std::error_code container::read_parallel(const record_range& range, std::span<std::byte> out, engine::engine& eng,
                                         std::size_t& got) {
  auto& b = thread_batch();
  b.slots.clear();
  b.slots.reserve(max_parallel_records);
  if (b.frames.size() < max_parallel_records) b.frames.resize(max_parallel_records);
  // Whatever leaves this function (an error, an exception from an allocation) waits first for
  // the jobs in flight: they write into `out` and read this thread's frames.
  struct settle {
    decode_batch& b;
    ~settle() {
      b.done.wait();
      b.slots.clear();
    }
  } guard{b};
  std::error_code first;  // the first record's error, in the order of the read
  for (const record_part p : range) {
    auto dst = out.subspan(p.pos, p.size());
    if (b.slots.size() == max_parallel_records) first = finish_decodes(b);
    if (!first) first = read_part(p.index, p.lo, p.hi, dst, &b, &eng);
    if (first) break;  // what is in flight is waited for (the guard); nothing after it is read
    got += dst.size();
  }
  if (!first) first = finish_decodes(b);
  if (first) got = 0;
  return first;
}

std::error_code container::queue_decode(std::uint64_t i, const map_slot& en, std::span<std::byte> dst, decode_batch& b,
                                        engine::engine& eng, std::shared_lock<std::shared_mutex>& rec) {
  // The frame is read and checked here, under the record's lock; decoding it needs only this
  // thread's copy, so the job runs without any lock.
  const std::size_t k = b.slots.size();
  format::frame_view v;
  if (auto ec = load_frame(i, en, b.frames[k], dst.size(), v)) return ec;
  decode_slot& s = b.slots.emplace_back();
  s.index = i;
  s.header = v.header;
  s.payload = {const_cast<std::byte*>(v.payload.data()), v.payload.size()};
  s.logical = dst.first(v.header.logical_size);
  std::memset(dst.data() + s.logical.size(), 0, dst.size() - s.logical.size());
  s.job.spec.format = v.header.format;
  s.job.dir = offload::direction::decompress;
  s.job.in = std::span<const iovec>(&s.payload, 1);
  s.job.out = s.logical;
  // The frame is this thread's copy now: writers of the record need not wait for the hand-over
  // (which may wait for a place at the accelerator).
  rec.unlock();
  // The first record of a batch is this thread's: it decodes it while the backends do the rest.
  if (k != 0) eng.submit_decode(s.job, b.done);
  return {};
}

std::error_code container::finish_decodes(decode_batch& b) {
  if (b.slots.empty()) return {};
  auto decode_here = [&](decode_slot& s) -> std::error_code {
    const std::span<const std::byte> payload(static_cast<const std::byte*>(s.payload.iov_base), s.payload.iov_len);
    if (thread_scratch().ws.decompress(s.header.format, payload, s.logical) != codec::status::ok) {
      return bad_record(s.index, "payload does not decode", nullptr);
    }
    if (auto fe = format::verify_logical(s.header, s.logical); fe != format::frame_error::ok) {
      return bad_record(s.index, format::to_string(fe), nullptr);
    }
    return {};
  };
  std::error_code first = decode_here(b.slots[0]);  // this thread's, while the backends do the rest
  b.done.wait();
  for (std::size_t k = 1; k < b.slots.size(); ++k) {
    auto& s = b.slots[k];
    const bool good = s.job.st == codec::status::ok && s.job.out_size == s.logical.size() &&
                      format::verify_logical(s.header, s.logical) == format::frame_error::ok;
    if (good) continue;
    // A backend's answer that is not the record: decoded again here, where the payload (checked
    // when read) either decodes to the record or is damaged. Never served as it came. (An answer
    // that passed the accelerator's CRC-32 check but not the record's checksum: said.)
    if (s.job.st == codec::status::ok) {
      report("record " + std::to_string(s.index) + ": " + std::string(s.job.ran_on) +
             " decoded it to bytes that do not match its checksum; decoded again here");
    }
    auto ec = decode_here(s);
    if (ec && !first) first = ec;
  }
  b.slots.clear();
  return first;
}

std::error_code container::check(std::vector<damage>& found) {
  found.clear();
  std::shared_lock layout(layout_);
  std::vector<std::byte> rec(rs_);
  std::vector<std::uint64_t> indices;
  {
    std::lock_guard lk(m_);
    const std::uint64_t records = records_locked();
    for (auto [a, b] : lost_) {
      if (a >= records) continue;
      found.push_back({a, "records " + std::to_string(a) + ".." + std::to_string(std::min(b, records - 1)) +
                              " are lost: their map chunk was damaged"});
    }
    indices.reserve(map_.size());
    for (auto& [i, en] : map_) indices.push_back(i);
  }
  for (auto i : indices) {
    std::shared_lock s(stripe(i));
    map_slot en;
    {
      std::lock_guard lk(m_);
      en = entry_locked(i);
    }
    if (en.e.hole()) continue;
    std::string what;
    std::uint32_t len = 0;
    if (auto ec = read_record(i, en, rec, len, &what)) found.push_back({i, what.empty() ? ec.message() : what});
  }
  return {};
}

}  // namespace qzfs::store
