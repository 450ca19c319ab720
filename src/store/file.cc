#include "qzfs/store/file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <limits>
#include <thread>

#include "qzfs/codec/workspace.h"
#include "qzfs/engine/checker.h"
#include "qzfs/format/frame.h"

namespace qzfs::store {
namespace {

using format::container_header_size;
using format::frame_header_size;
using format::slot_size;

constexpr std::uint64_t block = 4096;  // punch granularity

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

}  // namespace

file::file(std::unique_ptr<io> backing, const options& o, bool container)
    : io_(std::move(backing)), o_(o), container_(container) {
  acct_.budget = o_.budget;
  if (o_.budget != nullptr) o_.budget->enroll(this);
  if (!o_.log) o_.log = [](std::string_view m) { std::fprintf(stderr, "qzfs: %.*s\n", int(m.size()), m.data()); };
  const std::size_t workers = o_.eng != nullptr ? o_.eng->workers() : 1;
  batch_ = o_.batch_records != 0 ? o_.batch_records : std::max<std::size_t>(4, 2 * workers);
  spare_core_ = workers < std::max(1u, std::thread::hardware_concurrency());
}

file::~file() {
  // No relief may reach a file being torn down (waits for one in progress).
  if (o_.budget != nullptr) o_.budget->withdraw(this);
  if (container_) {
    if (auto ec = sync()) report("closing: " + ec.message());
  }
  // Batches in flight refer to this file's buffers; a failed sync may have left one behind.
  if (auto ec = drain()) report("closing: " + ec.message());
}

void file::report(std::string_view what) {
  std::string line = o_.name.empty() ? std::string("container") : o_.name;
  line += ": ";
  line += what;
  o_.log(line);
}

std::error_code file::create(std::unique_ptr<io> backing, const options& o, std::unique_ptr<file>& out) {
  std::unique_ptr<file> f(new file(std::move(backing), o, true));
  if (auto ec = f->io_->truncate(0)) return ec;
  if (auto ec = f->init_empty()) return ec;
  std::lock_guard lk(f->m_);
  if (auto ec = f->materialize_locked()) return ec;
  out = std::move(f);
  return {};
}

std::error_code file::init_empty() {
  const std::uint32_t rs = o_.record_size;
  if (rs < (1u << format::min_record_shift) || rs > (1u << format::max_record_shift) || (rs & (rs - 1)) != 0) {
    return std::make_error_code(std::errc::invalid_argument);
  }
  std::lock_guard lk(m_);
  container_ = true;
  materialized_ = false;
  rs_ = rs;
  shift_ = static_cast<unsigned>(__builtin_ctz(rs));
  durable_gen_ = 1;
  cur_gen_ = 2;
  durable_epoch_ = 1;
  return {};
}

std::error_code file::materialize_locked() {
  if (materialized_) return {};
  // Generation 1 (empty) in slot 0, durable before any frame is written: a frame must never
  // reach the disk ahead of the magic that makes the file a container (it would read as a
  // plain file of compressed bytes after a crash). One sync per new container; a torn header
  // write leaves a file open() takes for an empty container.
  format::container_slot s;
  s.generation = 1;
  s.record_shift = static_cast<std::uint8_t>(shift_);
  std::array<std::byte, container_header_size> hdr{};
  format::encode_slot(s, std::span(hdr).first<slot_size>());
  if (auto ec = io_->pwrite(hdr, 0)) return ec;
  if (auto ec = io_->sync()) return ec;
  set_marker_locked(std::span(hdr).first<slot_size>());
  materialized_ = true;
  backing_len_ = std::max<std::uint64_t>(backing_len_, container_header_size);
  return {};
}

std::error_code file::open(std::unique_ptr<io> backing, const options& o, std::unique_ptr<file>& out) {
  std::uint64_t len = 0;
  if (auto ec = backing->size(len)) return ec;
  std::array<std::byte, container_header_size> hdr{};
  std::size_t got = 0;
  if (len > 0) {
    if (auto ec = backing->pread(std::span(hdr).first(std::min<std::uint64_t>(len, hdr.size())), 0, got)) return ec;
  }
  // Generation 1 is in slot 0, every later even one in slot 1: a container has the magic at 0
  // or 64. A file shorter than the magic that is a prefix of it is a torn first header write.
  static constexpr char magic_text[] = "QZCT";
  const bool magic = format::has_container_magic(std::span(hdr).first(got)) ||
                     (got > slot_size && format::has_container_magic(std::span(hdr).subspan(slot_size, got - slot_size)));
  const bool torn_start = (got > 0 && got < 4 && std::memcmp(hdr.data(), magic_text, got) == 0);
  // The marker tells a container whose first block is damaged (or zeroed) from a plain file: it
  // is read as the container it is (from the marker's slot), or fails with EIO, never served as
  // plain bytes.
  std::array<std::byte, slot_size> mk{};
  bool has_marker = false;
  (void)backing->get_marker(mk, has_marker);
  format::container_slot mslot;
  const bool marker_ok = has_marker && format::parse_slot(mk, mslot) == format::container_error::ok;
  const bool container = magic || has_marker;
  std::unique_ptr<file> f(new file(std::move(backing), o, container));
  if (container) {
    if (!magic) f->report("the container's header is damaged (its marker says what it was)");
    if (auto ec = f->load(std::span(hdr).first(got), len, marker_ok ? &mslot : nullptr)) return ec;
  } else if (torn_start || (len == 0 && o.convert_plain)) {
    // Empty: a container from its first write on (its header is written with the first frame).
    if (auto ec = f->init_empty()) return ec;
  }
  out = std::move(f);
  return {};
}

std::error_code file::load(std::span<const std::byte> hdr, std::uint64_t len, const format::container_slot* marker) {
  const std::size_t got = hdr.size();
  format::container_slot best;
  bool found = marker != nullptr;
  if (found) best = *marker;  // the newest committed slot, unless a slot is newer (a crash before the marker)
  for (int i = 0; i < 2; ++i) {
    format::container_slot s;
    if (got < (i + 1) * slot_size) continue;
    if (format::parse_slot(hdr.subspan(i * slot_size, slot_size), s) != format::container_error::ok) continue;
    // A commit writes generation G to slot (G + 1) % 2, then copies it into the other slot: any
    // valid slot may hold any generation; the newest is the state.
    if (!found || s.generation > best.generation) best = s, found = true;
  }
  if (!found) {
    // Creation is the only write that can leave no valid slot behind (a torn first write).
    if (len <= container_header_size && marker == nullptr) return init_empty();
    report("no valid slot: the container's header is damaged");
    return eio();
  }
  std::lock_guard lk(m_);
  materialized_ = true;
  rs_ = 1u << best.record_shift;
  shift_ = best.record_shift;

  // The map: copy 0 in one read, each damaged chunk from copy 1, else its records are lost.
  const std::size_t n = best.map_records;
  const std::uint64_t mlen = n > 0 ? format::map_bytes(best) : 0;
  if (n > 0 && (mlen > len || best.map_offset[0] > len - mlen || best.map_offset[1] > len - mlen)) {
    report("the record map lies past the end of the container");
    return eio();
  }
  const std::uint64_t records = (best.logical_size + rs_ - 1) >> shift_;
  std::vector<format::indexed_entry> entries;  // ascending
  std::vector<std::pair<std::uint64_t, std::uint64_t>> lost;  // ranges, inclusive
  if (n > 0) {
    std::vector<std::byte> copy(mlen);
    std::size_t got0 = 0;
    if (auto ec = io_->pread(copy, best.map_offset[0], got0)) return ec;
    std::vector<std::byte> chunk;
    const bool v1 = best.version == 1;
    const std::size_t chunks = v1 ? format::map_chunks(n) : format::map_chunks_v2(n);
    std::vector<format::map_entry> dense;
    std::vector<format::indexed_entry> part;
    // A chunk damaged in both copies: its records are lost, never zeros. For a sparse map that is
    // everything between the chunks around it; `gap_from` is where the gap began.
    std::optional<std::uint64_t> gap_from;
    auto close_gap = [&](std::uint64_t next_index) {
      if (gap_from && *gap_from < next_index) lost.emplace_back(*gap_from, next_index - 1);
      gap_from.reset();
    };
    for (std::size_t k = 0; k < chunks; ++k) {
      const std::size_t at = v1 ? format::map_chunk_offset(k) : format::map_chunk_offset_v2(k);
      const std::size_t clen = v1 ? format::map_chunk_length(n, k) : format::map_chunk_length_v2(n, k);
      const std::size_t cn = (clen - format::map_trailer_size) / (v1 ? format::map_entry_size : format::map_entry_size_v2);
      auto decode = [&](std::span<const std::byte> bytes) {
        if (v1) {
          dense.assign(cn, {});
          return format::decode_map_chunk(bytes, k, best.generation, dense);
        }
        part.assign(cn, {});
        return format::decode_map_chunk_v2(bytes, k, best.generation, part);
      };
      bool ok = got0 >= at + clen && decode(std::span(copy).subspan(at, clen));
      if (!ok) {
        chunk.resize(clen);
        std::size_t got1 = 0;
        ok = !io_->pread(chunk, best.map_offset[1] + at, got1) && got1 == clen && decode(chunk);
        if (ok) report("map chunk " + std::to_string(k) + " damaged in copy 0, read from copy 1");
      }
      if (v1) {
        const std::uint64_t first = k * format::map_chunk_entries;
        if (!ok) {
          report("map chunk " + std::to_string(k) + " damaged in both copies: records " + std::to_string(first) + ".." +
                 std::to_string(first + cn - 1) + " are lost");
          lost.emplace_back(first, first + cn - 1);
          continue;
        }
        for (std::size_t i = 0; i < cn; ++i) {
          if (dense[i].lost()) {
            lost.emplace_back(first + i, first + i);
          } else if (!dense[i].hole()) {
            entries.push_back({first + i, dense[i]});
          }
        }
        continue;
      }
      if (!ok) {
        if (!gap_from) gap_from = entries.empty() && lost.empty() ? 0 : std::max(entries.empty() ? 0 : entries.back().last() + 1,
                                                                                  lost.empty() ? 0 : lost.back().second + 1);
        continue;
      }
      // Chunks must follow each other in order, like the entries inside them.
      const std::uint64_t floor = std::max(entries.empty() ? 0 : entries.back().last() + 1, lost.empty() ? 0 : lost.back().second + 1);
      if ((!entries.empty() || !lost.empty() || gap_from) && part.front().index < floor) {
        report("map chunk " + std::to_string(k) + " is out of order");
        return eio();
      }
      close_gap(part.front().index);
      for (const auto& x : part) {
        if (x.e.lost()) {
          lost.emplace_back(x.index, x.last());
        } else {
          entries.push_back(x);
        }
      }
    }
    if (gap_from) {
      if (records > *gap_from) report("records from " + std::to_string(*gap_from) + " on are lost: their map chunk is damaged in both copies");
      close_gap(std::max<std::uint64_t>(records, *gap_from));
    }
  }

  // Every extent in use: frames and both map copies. Overlaps cannot come from this code; a map
  // that has them (crafted, or a bug) loses the overlapping records rather than sharing bytes.
  struct ext {
    std::uint64_t off, len;
    std::size_t at;  // position in `entries`; ~0 for a map copy
  };
  constexpr std::size_t map_copy = ~std::size_t{0};
  std::vector<ext> used;
  used.reserve(entries.size() + 2);
  if (n > 0) used.push_back({best.map_offset[0], mlen, map_copy}), used.push_back({best.map_offset[1], mlen, map_copy});
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const auto& x = entries[i];
    if (x.index >= records) {
      report("the record map names record " + std::to_string(x.index) + " past the end of the file");
      return eio();
    }
    used.push_back({x.e.offset, x.e.length, i});
  }
  std::sort(used.begin(), used.end(), [](const ext& a, const ext& b) { return a.off < b.off; });
  std::uint64_t reach = container_header_size;
  std::vector<bool> overlapping(entries.size(), false);
  for (const auto& u : used) {
    if (u.off < reach) {
      if (u.at == map_copy) {
        report("map copies overlap other extents");
        return eio();
      }
      report("record " + std::to_string(entries[u.at].index) + " overlaps another extent: lost");
      overlapping[u.at] = true;
      continue;
    }
    space_.take(u.off, u.len);
    reach = u.off + u.len;
  }
  map_.clear();
  lost_.clear();
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const auto& x = entries[i];
    if (overlapping[i]) {
      lost.emplace_back(x.index, x.index);
      continue;
    }
    map_.emplace_hint(map_.end(), x.index, entry{x.e, best.generation});
    live_frames_ += x.e.length;
  }
  for (auto [first, last] : lost) {
    if (first >= records) continue;
    add_lost_locked(first, std::min(last, records - 1));
  }
  size_ = best.logical_size;
  durable_gen_ = best.generation;
  cur_gen_ = best.generation + 1;
  durable_epoch_ = best.generation;
  map_off_[0] = best.map_offset[0];
  map_off_[1] = best.map_offset[1];
  map_len_ = mlen;
  backing_len_ = len;
  return {};
}

std::uint32_t file::record_len_locked(std::uint64_t index) const noexcept {
  const std::uint64_t start = index << shift_;
  if (start >= size_) return 0;
  return static_cast<std::uint32_t>(std::min<std::uint64_t>(rs_, size_ - start));
}

buffer file::take_buffer() {
  if (!pool_.empty()) {
    auto b = std::move(pool_.back());
    pool_.pop_back();
    return b;
  }
  return charged_buffer(acct_, rs_);
}

void file::give_buffer(buffer b) {
  // Kept for reuse unless memory is short.
  if (pool_.size() < 2 * batch_ && !acct_.over()) pool_.push_back(std::move(b));
}

void file::give_frame(buffer b) {
  if (!acct_.over()) frame_pool_.push_back(std::move(b));
}

void file::shed() {
  {
    std::lock_guard lk(cache_m_);
    cache_.clear();
  }
  {
    std::lock_guard lk(m_);
    pool_.clear();
    frame_pool_.clear();
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

bool file::keep_in_memory(std::error_code ec) const noexcept {
  if (ec == std::errc::file_too_large || ec == std::errc::invalid_argument) return false;  // the caller's own
  // Memory is bounded: past twice the budget the writer hears of the failure at once.
  return acct_.budget == nullptr || acct_.budget->used() <= 2 * acct_.budget->limit();
}

void file::set_marker_locked(std::span<const std::byte, format::slot_size> slot) noexcept {
  // Best effort: a backing file system without extended attributes has no marker, and then a
  // container whose first block is destroyed reads as a plain file of its own bytes.
  if (marker_ok_) marker_ok_ = !io_->set_marker(slot);
}

std::error_code file::note_error(std::error_code ec) {
  if (ec) {
    std::lock_guard lk(m_);
    last_error_ = ec;
    error_seq_.fetch_add(1, std::memory_order_release);
  }
  return ec;
}

std::error_code file::last_error() const {
  std::lock_guard lk(m_);
  return last_error_;
}

bool file::clean() const {
  if (!container_) return true;
  std::lock_guard lk(m_);
  return dirty_.empty() && change_seq_ == committed_seq_ && !resync_;
}

void file::drop_cache(std::uint64_t index) {
  // Nothing was ever cached (a file only written): no lock. An entry for `index` is only made
  // by a reader holding its stripe, which the caller holds exclusively.
  if (!cache_used_.load(std::memory_order_acquire)) return;
  std::lock_guard lk(cache_m_);
  for (auto& c : cache_) {
    if (c.index == index) c.index = ~std::uint64_t{0};
  }
}

// ---------------------------------------------------------------------------------------------
// Reading

std::error_code file::read_record(std::uint64_t index, const entry& en, std::span<std::byte> out, std::uint32_t& len,
                                  std::string* why) {
  auto bad = [&](std::string_view what) {
    damaged_reads_.fetch_add(1, std::memory_order_relaxed);
    std::string line = "record " + std::to_string(index) + " (bytes " + std::to_string(index << shift_) + ".." +
                       std::to_string(((index + 1) << shift_) - 1) + "): " + std::string(what);
    report(line);
    if (why != nullptr) *why = std::move(line);
    return eio();
  };
  if (en.e.lost()) return bad("lost: its map chunk was damaged");
  auto& s = thread_scratch();
  if (s.frame.size() < en.e.length) s.frame.resize(en.e.length);
  auto frame = std::span(s.frame).first(en.e.length);
  if (auto ec = io_->pread_exact(frame, en.e.offset)) {
    if (ec == std::errc::io_error) return bad("frame cut short at byte " + std::to_string(en.e.offset));
    return ec;
  }
  format::frame_view v;
  if (auto fe = format::parse_frame(frame, v); fe != format::frame_error::ok) return bad(format::to_string(fe));
  if (v.frame_size != en.e.length || v.header.format != en.e.format || v.header.payload_hash != en.e.payload_hash ||
      v.header.logical_size > rs_ || v.header.logical_size > out.size()) {
    return bad("frame does not match the record map");
  }
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

std::error_code file::pread(std::span<std::byte> out, std::uint64_t off, std::size_t& got) {
  got = 0;
  if (!container_) return io_->pread(out, off, got);
  std::shared_lock layout(layout_);
  std::uint64_t sz;
  {
    std::lock_guard lk(m_);
    sz = size_;
  }
  if (off >= sz || out.empty()) return {};
  const std::uint64_t n = std::min<std::uint64_t>(out.size(), sz - off);
  const std::uint64_t end = off + n;
  for (std::uint64_t i = off >> shift_; (i << shift_) < end; ++i) {
    const std::uint64_t start = i << shift_;
    const auto a = static_cast<std::uint32_t>(std::max(off, start) - start);
    const auto b = static_cast<std::uint32_t>(std::min<std::uint64_t>(end, start + rs_) - start);
    auto dst = out.subspan(start + a - off, b - a);
    std::shared_lock rec(stripe(i));
    const std::byte* dirty_buf = nullptr;
    entry en;
    {
      std::lock_guard lk(m_);
      if (auto it = dirty_.find(i); it != dirty_.end()) {
        dirty_buf = it->second.buf.get();
      } else {
        en = entry_locked(i);
      }
    }
    if (dirty_buf != nullptr) {
      std::memcpy(dst.data(), dirty_buf + a, dst.size());
    } else if (en.e.hole()) {
      std::memset(dst.data(), 0, dst.size());
    } else {
      bool hit = false;
      if (cache_used_.load(std::memory_order_acquire)) {
        std::lock_guard lk(cache_m_);
        for (auto& c : cache_) {
          if (c.index != i) continue;
          const std::uint32_t have = std::min(c.len, b);
          if (have > a) std::memcpy(dst.data(), c.buf.get() + a, have - a);
          if (b > std::max(have, a)) std::memset(dst.data() + (std::max(have, a) - a), 0, b - std::max(have, a));
          c.used = ++cache_clock_;
          hit = true;
          break;
        }
      }
      if (hit) {
        cache_hits_.fetch_add(1, std::memory_order_relaxed);
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
        if (o_.cache_records > 0 && !acct_.over()) {
          std::lock_guard lk(cache_m_);
          if (cache_.size() < o_.cache_records) cache_.push_back(cached{});
          auto victim = std::min_element(cache_.begin(), cache_.end(),
                                         [](const cached& x, const cached& y) { return x.used < y.used; });
          if (!victim->buf) victim->buf = charged_buffer(acct_, rs_);
          std::memcpy(victim->buf.get(), s.record.data(), len);
          cache_used_.store(true, std::memory_order_release);
          victim->index = i;
          victim->len = len;
          victim->used = ++cache_clock_;
        }
      }
    }
    got += dst.size();
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// Writing

std::error_code file::make_dirty(std::uint64_t index, dirty*& d, bool need_old, std::uint32_t lo, std::uint32_t hi) {
  entry en;
  buffer buf;
  {
    std::lock_guard lk(m_);
    if (auto it = dirty_.find(index); it != dirty_.end()) {
      d = &it->second;
      return {};
    }
    en = entry_locked(index);
    buf = take_buffer();
  }
  std::uint32_t len = 0;
  if (need_old && !en.e.hole()) {
    rmw_reads_.fetch_add(1, std::memory_order_relaxed);
    if (auto ec = read_record(index, en, std::span(buf.get(), rs_), len)) {
      std::lock_guard lk(m_);
      give_buffer(std::move(buf));
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
  auto [it, _] = dirty_.emplace(index, dirty{std::move(buf), 0, 0, false});
  d = &it->second;
  return {};
}

std::error_code file::write_into(std::uint64_t index, std::uint32_t at, std::span<const iovec> in, std::size_t skip,
                                 std::size_t n, bool& write_back) {
  std::uint32_t cur_len;
  dirty* d = nullptr;
  {
    // The common case (page-sized writes into a buffered record) takes the map lock once here
    // and once after the copy.
    std::lock_guard lk(m_);
    cur_len = record_len_locked(index);
    if (auto it = dirty_.find(index); it != dirty_.end()) d = &it->second;
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
  const bool was_whole = d->whole;
  if (covers || d->hi == d->lo) {
    d->lo = at, d->hi = end;
  } else if (at <= d->hi && end >= d->lo) {
    d->lo = std::min(d->lo, at), d->hi = std::max(d->hi, end);
  }
  d->whole = d->whole || (d->lo == 0 && d->hi == rs_);
  if (d->whole && !was_whole) ++whole_dirty_;
  size_ = std::max(size_, (index << shift_) + end);
  ++change_seq_;
  write_back = write_back || whole_dirty_ >= batch_ || dirty_.size() > o_.max_dirty_records || acct_.over();
  return {};
}

std::error_code file::pwrite(std::span<const iovec> in, std::uint64_t off) {
  const std::size_t total = codec::total_size(in);
  if (!container_) return io_->pwritev(in, off);
  if (total == 0) return {};
  if (off > format::max_container_size || total > format::max_container_size - off) {
    return std::make_error_code(std::errc::file_too_large);
  }
  // Memory short and other files hold some of it: they let go first (no lock of ours is held
  // here). What this file holds itself goes out through its own write-back below.
  if (o_.budget != nullptr && o_.budget->over() && o_.budget->used() > charged()) o_.budget->relieve(this);
  bool write_back = false;
  {
    std::shared_lock layout(layout_);
    const std::uint64_t end = off + total;
    // Whole records, when a write brings several, are compressed straight from the caller's
    // buffers (the paper's vectored I/O): no copy, all workers busy on one call.
    const std::uint64_t first_whole = (off + rs_ - 1) >> shift_, end_whole = end >> shift_;
    std::uint64_t next_whole = end_whole >= first_whole + 2 ? first_whole : ~std::uint64_t{0};
    std::size_t done = 0;
    for (std::uint64_t i = off >> shift_; (i << shift_) < end; ++i) {
      const std::uint64_t start = i << shift_;
      const auto a = static_cast<std::uint32_t>(std::max(off, start) - start);
      const auto b = static_cast<std::uint32_t>(std::min<std::uint64_t>(end, start + rs_) - start);
      if (i == next_whole) {
        // Up to 1 MiB of whole records in one batch (fewer idle workers at its end).
        const std::uint64_t last = std::min<std::uint64_t>(end_whole, i + std::max<std::size_t>(batch_, (1u << 20) >> shift_));
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
        for (std::uint64_t j = i; j < last; ++j) indices.push_back(j);
        {
          // Synchronous, with the records' stripes held throughout (the caller's buffers are
          // only ours until this call returns, and no buffered write may slip in between), but
          // without the write-back lock: direct writes to other records of the file (the
          // kernel sends several at once) compress side by side.
          std::vector<std::size_t> stripes;
          for (auto j : indices) stripes.push_back(j % stripes_.size());
          std::sort(stripes.begin(), stripes.end());
          stripes.erase(std::unique(stripes.begin(), stripes.end()), stripes.end());
          for (;;) {
            // A batch in flight may hold one of these records: it must land first, not after.
            if (auto ec = drain()) return ec;
            for (auto st : stripes) stripes_[st].lock();
            bool frozen = false;
            {
              std::lock_guard lk(m_);
              for (auto j : indices) {
                auto it = dirty_.find(j);
                frozen = frozen || (it != dirty_.end() && it->second.busy);
              }
            }
            if (!frozen) break;  // with the stripes held, no batch can freeze them any more
            for (auto it = stripes.rbegin(); it != stripes.rend(); ++it) stripes_[*it].unlock();
          }
          std::unique_ptr<inflight> b;
          auto ec = start_batch(indices, rest, b);
          if (!ec && b->helper) {
            // Frames are written here as their records finish.
            for (std::size_t done_k = 0; done_k < b->recs.size();) {
              std::vector<std::size_t> now;
              {
                std::unique_lock lk(b->ready_m);
                b->ready_cv.wait(lk, [&] { return !b->ready.empty(); });
                now.swap(b->ready);
              }
              for (auto k : now) b->cx[k].write(b->recs[k]);
              done_k += now.size();
            }
          }
          if (!ec) ec = finish_batch(*b, false);
          for (auto it = stripes.rbegin(); it != stripes.rend(); ++it) stripes_[*it].unlock();
          if (ec) {
            // The backing file system refused (full, quota, I/O error): the records are kept in
            // memory like any buffered write and written back later; the failure is counted
            // for the next fsync or close. With the kernel's writeback cache a failed WRITE
            // would be data the kernel drops.
            if (!keep_in_memory(ec)) return ec;
            (void)note_error(ec);
            next_whole = ~std::uint64_t{0};
            --i;
            continue;
          }
        }
        done += (last - i) * rs_;
        if (last < end_whole) next_whole = last;
        i = last - 1;
        continue;
      }
      for (;;) {
        std::error_code ec;
        {
          std::unique_lock rec(stripe(i));
          ec = write_into(i, a, in, done, b - a, write_back);
          if (!ec) drop_cache(i);
        }
        if (ec != std::errc::resource_unavailable_try_again) {
          if (ec) return ec;
          break;
        }
        if (auto e2 = drain()) return e2;
      }
      done += b - a;
    }
  }
  if (write_back) {
    std::shared_lock layout(layout_);
    // This write's bytes are buffered: a write-back that fails keeps them (and the earlier ones)
    // in memory and is counted for the next fsync or close.
    if (auto ec = note_error(flush_some(false)); ec && !keep_in_memory(ec)) return ec;
  }
  return {};
}

std::error_code file::flush_some(bool all) {
  std::lock_guard fl(flush_m_);
  for (;;) {
    std::vector<std::uint64_t> pick;
    {
      std::lock_guard lk(m_);
      const bool over = dirty_.size() > o_.max_dirty_records || acct_.over();
      if (all || over || whole_dirty_ >= batch_) {
        for (auto& [i, d] : dirty_) {
          if (!d.busy && (all || over || d.whole)) pick.push_back(i);
        }
        std::sort(pick.begin(), pick.end());
        if (pick.size() > batch_) pick.resize(batch_);
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

std::error_code file::finish_front() {
  auto b = std::move(inflight_.front());
  inflight_.pop_front();
  return finish_batch(*b, true);
}

std::error_code file::drain() {
  std::lock_guard fl(flush_m_);
  std::error_code first;
  while (!inflight_.empty()) {
    auto ec = finish_front();
    if (ec && !first) first = ec;
  }
  return first;
}

std::error_code file::start_batch(std::span<const std::uint64_t> indices, std::span<const iovec> direct,
                                  std::unique_ptr<inflight>& out) {
  const std::size_t n = indices.size();
  auto b = std::make_unique<inflight>();
  b->f = this;
  b->direct = !direct.empty();
  b->indices.assign(indices.begin(), indices.end());
  b->recs.resize(n);
  b->in.resize(n);
  b->own.resize(n);
  b->cx.resize(n);
  {
    std::lock_guard lk(m_);
    for (std::size_t k = 0; k < n; ++k) {
      if (frame_pool_.empty()) frame_pool_.push_back(charged_buffer(acct_, frame_header_size + rs_));
      b->frames.push_back(std::move(frame_pool_.back()));
      frame_pool_.pop_back();
    }
  }
  if (direct.empty()) {
    // The records' buffers are frozen (busy) until the batch finishes: a writer that wants
    // one waits for that. Taking each stripe once makes sure no writer is mid-copy. A record a
    // direct write has replaced since it was picked is no longer buffered: it is left out.
    std::size_t kept = 0;
    for (std::size_t k = 0; k < n; ++k) {
      std::unique_lock rec(stripe(indices[k]));
      std::lock_guard lk(m_);
      auto it = dirty_.find(indices[k]);
      if (it == dirty_.end() || it->second.busy) continue;
      auto& d = it->second;
      if (d.whole) --whole_dirty_;
      d.busy = true;
      b->indices[kept] = indices[k];
      b->own[kept] = iovec{d.buf.get(), record_len_locked(indices[k])};
      b->in[kept] = std::span<const iovec>(&b->own[kept], 1);
      ++kept;
    }
    if (kept < n) {
      std::lock_guard lk(m_);
      for (std::size_t k = kept; k < n; ++k) give_frame(std::move(b->frames[k]));
      b->frames.resize(kept);
      b->indices.resize(kept);
      b->recs.resize(kept);
      b->in.resize(kept);
      b->cx.resize(kept);
    }
  } else {
    // Whole records of the caller's list, compressed where they lie.
    b->pieces.resize(n);
    std::size_t v = 0, skip = 0;
    for (std::size_t k = 0; k < n; ++k) {
      for (std::size_t left = rs_; left > 0;) {
        const std::size_t take = std::min(direct[v].iov_len - skip, left);
        if (take > 0) b->pieces[k].push_back(iovec{static_cast<char*>(direct[v].iov_base) + skip, take});
        left -= take;
        skip += take;
        if (skip == direct[v].iov_len) ++v, skip = 0;
      }
      b->in[k] = b->pieces[k];
    }
  }
  {
    std::lock_guard lk(m_);
    std::error_code ec = materialize_locked();
    if (ec) {
      unfreeze_locked(*b);
      return ec;
    }
    b->alloc_gen = cur_gen_;
  }
  // Each record's frame is built and written as soon as its outcome is known, on the thread
  // that made it known: a worker for a compressed record, so hashing and writing run in
  // parallel with the other records' compression (the frame header goes in front of the
  // payload, or in front of the record's own bytes when it is stored raw).
  for (std::size_t k = 0; k < b->indices.size(); ++k) {
    b->cx[k] = frame_job{this, b.get(), k, b->in[k], b->frames[k].get(), {}, {}};
    b->recs[k].in = b->in[k];
    b->recs[k].payload = std::span(b->frames[k].get() + frame_header_size, rs_);
    b->recs[k].on_done_ctx = &b->cx[k];
    b->recs[k].on_done = [](engine::record& r, void* p) {
      auto& job = *static_cast<frame_job*>(p);
      if (!job.batch->helper) return job.write(r);
      std::lock_guard lk(job.batch->ready_m);
      job.batch->ready.push_back(job.k);
      job.batch->ready_cv.notify_one();
    };
  }
  b->helper = b->direct && spare_core_;
  if (o_.eng != nullptr) {
    try {
      // The engine allocates before any job leaves for a backend, and sends them all at once
      // at the end: an exception here means none is out. Holes and raw records decided so far
      // may have written frames: their space is given back, and every record stays buffered.
      o_.eng->submit(b->recs, &learning_, b->pend);
    } catch (const std::bad_alloc&) {
      std::lock_guard lk(m_);
      for (const auto& c : b->cx) {
        if (c.entry.offset != 0) release_locked(c.entry.offset, c.entry.length);
      }
      unfreeze_locked(*b);
      return std::make_error_code(std::errc::not_enough_memory);
    }
  } else {
    for (auto& r : b->recs) {
      r.result = engine::is_zero(r.in) ? engine::outcome::hole : engine::outcome::raw;
      r.on_done(r, r.on_done_ctx);
    }
  }
  out = std::move(b);
  return {};
}

void file::frame_job::write(const engine::record& r) noexcept {
  // Runs on a backend's worker thread too: nothing may escape (a failure is this record's error).
  try {
    write_frame(r);
  } catch (const std::exception&) {
    ec = std::make_error_code(std::errc::not_enough_memory);
  }
}

void file::frame_job::write_frame(const engine::record& r) {
  const std::size_t len = codec::total_size(in);
  if (r.result == engine::outcome::hole || len == 0) return;
  format::frame_header h;
  h.logical_size = static_cast<std::uint32_t>(len);
  h.logical_hash = format::hash(in);
  iovec parts[2 + 64];
  std::size_t np = 0;
  std::vector<iovec> many;  // a raw record scattered over more pieces than `parts` holds
  if (r.result == engine::outcome::compressed) {
    h.format = r.spec.format;
    h.producer = r.producer;
    h.level = static_cast<std::int8_t>(r.spec.level);
    h.physical_size = static_cast<std::uint32_t>(r.payload_size);
    h.payload_hash = format::hash(std::span(fb + frame_header_size, r.payload_size));
    parts[np++] = iovec{fb, frame_header_size + r.payload_size};
  } else {
    h.physical_size = h.logical_size;
    h.payload_hash = h.logical_hash;  // a raw payload is the logical bytes
    parts[np++] = iovec{fb, frame_header_size};
    if (in.size() <= 64) {
      for (const auto& v : in) parts[np++] = v;
    } else {
      many.assign(1, parts[0]);
      many.insert(many.end(), in.begin(), in.end());
    }
  }
  format::encode_header(h, std::span(fb, frame_header_size).first<frame_header_size>());
  entry.length = static_cast<std::uint32_t>(frame_header_size + h.physical_size);
  entry.format = h.format;
  entry.producer = h.producer;
  entry.payload_hash = h.payload_hash;
  {
    std::lock_guard lk(f->m_);
    entry.offset = f->space_.allocate(entry.length);
  }
  ec = many.empty() ? f->io_->pwritev(std::span(parts, np), entry.offset) : f->io_->pwritev(many, entry.offset);
}

void file::unfreeze_locked(inflight& b) {
  if (!b.direct) {
    for (auto i : b.indices) {
      if (auto it = dirty_.find(i); it != dirty_.end() && it->second.busy) {
        it->second.busy = false;
        if (it->second.whole) ++whole_dirty_;
      }
    }
  }
  for (auto& fb : b.frames) give_frame(std::move(fb));
  b.frames.clear();
}

std::error_code file::finish_batch(inflight& b, bool take_stripes) {
  if (o_.eng != nullptr) o_.eng->wait(b.pend);
  const std::size_t n = b.indices.size();
  std::error_code ec;
  std::uint64_t high = 0;
  for (const auto& c : b.cx) {
    if (c.entry.offset != 0) high = std::max(high, c.entry.offset + c.entry.length);
    if (c.ec && !ec) ec = c.ec;
  }
  std::vector<std::size_t> stripes;
  if (take_stripes) {
    for (auto i : b.indices) stripes.push_back(i % stripes_.size());
    std::sort(stripes.begin(), stripes.end());
    stripes.erase(std::unique(stripes.begin(), stripes.end()), stripes.end());
    for (auto s : stripes) stripes_[s].lock();
  }
  struct unlock_all {
    file* f;
    std::vector<std::size_t>& s;
    ~unlock_all() {
      for (auto it = s.rbegin(); it != s.rend(); ++it) f->stripes_[*it].unlock();
    }
  } unlocker{this, stripes};

  std::lock_guard lk(m_);
  if (ec) {
    // Nothing names the new frames: their space is free again, and the records stay dirty.
    for (const auto& c : b.cx) {
      if (c.entry.offset != 0) release_locked(c.entry.offset, c.entry.length);
    }
    unfreeze_locked(b);
    report("writing records: " + ec.message());
    return ec;
  }
  backing_len_ = std::max(backing_len_, high);
  for (std::size_t k = 0; k < n; ++k) {
    const std::uint64_t i = b.indices[k];
    try {
      set_entry_locked(i, b.cx[k].entry, b.alloc_gen);
    } catch (const std::bad_alloc&) {
      // Out of memory for the map: the records from here on keep their buffers (a direct batch's
      // caller still has its bytes) and their new frames are free again; nothing is lost.
      for (std::size_t j = k; j < n; ++j) {
        if (b.cx[j].entry.offset != 0) release_locked(b.cx[j].entry.offset, b.cx[j].entry.length);
        if (auto it = dirty_.find(b.indices[j]); it != dirty_.end() && it->second.busy) {
          it->second.busy = false;
          if (it->second.whole) ++whole_dirty_;
        }
      }
      for (auto& fb : b.frames) give_frame(std::move(fb));
      b.frames.clear();
      ++change_seq_;
      return std::make_error_code(std::errc::not_enough_memory);
    }
    // The record's buffer (frozen for this batch, or replaced by a direct write) is done.
    if (auto it = dirty_.find(i); it != dirty_.end()) {
      if (it->second.whole && !it->second.busy) --whole_dirty_;
      give_buffer(std::move(it->second.buf));
      dirty_.erase(it);
    }
    drop_cache(i);
  }
  if (b.direct) size_ = std::max(size_, (b.indices[n - 1] + 1) << shift_);
  for (auto& fb : b.frames) give_frame(std::move(fb));
  b.frames.clear();
  ++change_seq_;
  flushes_.fetch_add(1, std::memory_order_relaxed);
  return {};
}

void file::release_locked(std::uint64_t off, std::uint64_t len) {
  const auto [foff, flen] = space_.release(off, len);
  if (foff >= space_.end()) return;  // the free tail: cut off at the next commit
  // Give the whole blocks inside the free extent back to the file system, before anyone can
  // allocate them again (a punch after reuse would destroy new data).
  const std::uint64_t a = (foff + block - 1) / block * block, b = (foff + flen) / block * block;
  if (b > a) (void)io_->punch(a, b - a);
}

void file::free_extent_locked(const entry& en) {
  if (!en.e.frame()) return;
  live_frames_ -= en.e.length;
  // Allocated since the last snapshot: no committed or committing map names it.
  if (en.alloc_gen == cur_gen_) {
    release_locked(en.e.offset, en.e.length);
  } else {
    deferred_.push_back({en.e.offset, en.e.length, cur_gen_});
  }
}

void file::set_entry_locked(std::uint64_t index, const format::map_entry& e, std::uint64_t alloc_gen) {
  if (auto it = map_.find(index); it != map_.end()) {
    free_extent_locked(it->second);
    if (e.frame()) {
      it->second = entry{e, alloc_gen};
    } else {
      map_.erase(it);
    }
  } else if (e.frame()) {
    map_.emplace(index, entry{e, alloc_gen});
  }
  if (e.lost()) {
    add_lost_locked(index, index);
  } else {
    unlose_locked(index, index);
  }
  if (e.frame()) live_frames_ += e.length;
}

file::entry file::entry_locked(std::uint64_t index) const {
  if (auto it = map_.find(index); it != map_.end()) return it->second;
  if (lost_locked(index)) return entry{format::map_entry{1, 0, {}, {}, 0}, 0};
  return {};
}

bool file::lost_locked(std::uint64_t index) const {
  if (lost_.empty()) return false;
  auto it = lost_.upper_bound(index);
  if (it == lost_.begin()) return false;
  --it;
  return index <= it->second;
}

void file::add_lost_locked(std::uint64_t first, std::uint64_t last) {
  unlose_locked(first, last);  // no overlaps
  lost_[first] = last;
}

void file::unlose_locked(std::uint64_t first, std::uint64_t last) {
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

std::uint64_t file::lost_count_locked(std::uint64_t records) const {
  std::uint64_t n = 0;
  for (auto [a, b] : lost_) {
    if (a < records) n += std::min(b, records - 1) - a + 1;
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// Size and holes

std::error_code file::truncate(std::uint64_t size) {
  if (!container_) {
    if (size == 0 && o_.convert_plain) {
      if (auto ec = io_->truncate(0)) return ec;
      return init_empty();
    }
    return io_->truncate(size);
  }
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
      dirty* d = nullptr;
      if (auto ec = make_dirty(b, d, true); ec && ec != std::errc::io_error) return ec;
      if (d != nullptr) std::memset(d->buf.get() + cut, 0, rs_ - cut);
    }
    std::lock_guard lk(m_);
    const std::uint64_t keep = (size + rs_ - 1) >> shift_;
    for (auto it = dirty_.begin(); it != dirty_.end();) {
      if (it->first >= keep) {
        if (it->second.whole) --whole_dirty_;
        give_buffer(std::move(it->second.buf));
        it = dirty_.erase(it);
      } else {
        ++it;
      }
    }
    if (cut != 0) {
      if (auto it = dirty_.find(b); it != dirty_.end() && it->second.whole) it->second.whole = false, --whole_dirty_;
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
  std::lock_guard lk(cache_m_);
  for (auto& c : cache_) {
    if (c.index != ~std::uint64_t{0} && c.index >= (size >> shift_)) c.index = ~std::uint64_t{0};
  }
  return {};
}

std::error_code file::settle_locked(std::uint64_t& size) {
  if (auto ec = drain()) return ec;
  std::lock_guard lk(m_);
  size = size_;
  return {};
}

std::error_code file::zero_records(std::uint64_t off, std::uint64_t len) {
  // Costs what the range holds, not its length: a punch over 2^50 bytes of a sparse file visits
  // only the records with data (layout_ is held exclusively: nothing changes meanwhile).
  const std::uint64_t end = off + len;
  const std::uint64_t first = off >> shift_, last = (end - 1) >> shift_;
  auto clear_whole_locked = [&](std::uint64_t i) {
    if (auto it = dirty_.find(i); it != dirty_.end()) {
      if (it->second.whole) --whole_dirty_;
      give_buffer(std::move(it->second.buf));
      dirty_.erase(it);
    }
    set_entry_locked(i, format::map_entry{}, cur_gen_);
    ++change_seq_;
  };
  auto zero_one = [&](std::uint64_t i) -> std::error_code {
    const std::uint64_t start = i << shift_;
    const auto a = static_cast<std::uint32_t>(std::max(off, start) - start);
    const auto b = static_cast<std::uint32_t>(std::min<std::uint64_t>(end, start + rs_) - start);
    std::uint32_t cur;
    {
      std::lock_guard lk(m_);
      cur = record_len_locked(i);
    }
    drop_cache(i);
    if (a == 0 && b >= cur) {
      std::lock_guard lk(m_);
      clear_whole_locked(i);
      return {};
    }
    dirty* d = nullptr;
    if (auto ec = make_dirty(i, d, true)) return ec;
    std::memset(d->buf.get() + a, 0, b - a);
    std::lock_guard lk(m_);
    ++change_seq_;
    return {};
  };
  if (auto ec = zero_one(first)) return ec;
  if (last == first) return {};
  if (last > first + 1) {
    std::vector<std::uint64_t> with_data;
    {
      std::lock_guard lk(m_);
      for (auto it = map_.upper_bound(first); it != map_.end() && it->first < last; ++it) with_data.push_back(it->first);
      for (auto& [j, d] : dirty_) {
        if (j > first && j < last && !map_.count(j)) with_data.push_back(j);
      }
      unlose_locked(first + 1, last - 1);
      ++change_seq_;
    }
    for (auto i : with_data) {
      drop_cache(i);
      std::lock_guard lk(m_);
      clear_whole_locked(i);
    }
  }
  return zero_one(last);
}

std::error_code file::punch_hole(std::uint64_t off, std::uint64_t len) {
  if (!container_) return io_->punch(off, len);
  std::unique_lock layout(layout_);
  std::uint64_t sz;
  if (auto ec = settle_locked(sz)) return ec;
  if (off >= sz || len == 0) return {};
  return zero_records(off, std::min(len, sz - off));
}

std::error_code file::zero_range(std::uint64_t off, std::uint64_t len, bool keep_size) {
  if (off > format::max_container_size || len > format::max_container_size - off) {
    return std::make_error_code(std::errc::file_too_large);
  }
  if (!container_) {
    if (auto ec = io_->punch(off, len)) return ec;
    std::uint64_t sz = 0;
    if (auto ec = io_->size(sz)) return ec;
    return !keep_size && off + len > sz ? io_->truncate(off + len) : std::error_code{};
  }
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

std::error_code file::allocate(std::uint64_t off, std::uint64_t len, bool keep_size) {
  if (!container_) return io_->allocate(off, len, keep_size);
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
    const std::uint64_t first = off >> shift_, last = (off + len - 1) >> shift_;
    std::uint64_t empty = last - first + 1;
    for (auto it = map_.lower_bound(first); it != map_.end() && it->first <= last; ++it) --empty;
    for (const auto& [i, d] : dirty_) {
      if (i >= first && i <= last && !map_.count(i)) --empty;
    }
    std::uint64_t free = 0;
    const std::uint64_t worst = empty * (rs_ + format::frame_header_size);
    if (auto ec = io_->available(free); !ec && worst > free) return std::make_error_code(std::errc::no_space_on_device);
  }
  if (!keep_size && off + len > size_) size_ = off + len, ++change_seq_;
  return {};
}

std::error_code file::seek(std::uint64_t off, int whence, std::uint64_t& out) {
  if (!container_) return io_->seek(off, whence, out);
  if (whence != SEEK_DATA && whence != SEEK_HOLE) return std::make_error_code(std::errc::invalid_argument);
  std::shared_lock layout(layout_);
  std::lock_guard lk(m_);
  if (off >= size_) return std::make_error_code(std::errc::no_such_device_or_address);
  // O(log n) in the records with data (and the few buffered ones), whatever the offsets.
  const std::uint64_t last = (size_ - 1) >> shift_, i0 = off >> shift_;
  if (whence == SEEK_DATA) {
    std::uint64_t cand = ~std::uint64_t{0};
    if (auto it = map_.lower_bound(i0); it != map_.end()) cand = it->first;
    if (auto lt = lost_.upper_bound(i0); lt != lost_.begin() && std::prev(lt)->second >= i0) {
      cand = i0;
    } else if (lt != lost_.end()) {
      cand = std::min(cand, lt->first);
    }
    for (auto& [j, d] : dirty_) {
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
    } else if (map_.count(i) != 0 || dirty_.count(i) != 0) {
      ++i;
    } else {
      break;
    }
  }
  out = i > last ? size_ : std::max(off, i << shift_);
  return {};
}

// ---------------------------------------------------------------------------------------------
// Durability

std::error_code file::flush() {
  if (!container_) return {};
  std::shared_lock layout(layout_);
  return note_error(flush_some(true));
}

std::error_code file::sync() {
  if (!container_) return note_error(io_->sync());
  std::lock_guard cm(commit_m_);
  bool over = false, resync = false;
  {
    std::shared_lock layout(layout_);
    if (auto ec = flush_some(true)) return note_error(ec);
    std::lock_guard lk(m_);
    resync = resync_;
  }
  if (resync) {
    std::unique_lock layout(layout_);
    if (auto ec = drain()) return note_error(ec);
    if (auto ec = rewrite_recent()) return note_error(ec);
  }
  {
    std::shared_lock layout(layout_);
    if (auto ec = commit_locked()) return note_error(ec);
    std::lock_guard lk(m_);
    std::uint64_t pending = 0;
    for (auto& d : deferred_) pending += d.len;
    over = o_.compact && space_.end() > 2 * (live_frames_ + 2 * map_len_ + pending) + container_header_size + o_.compact_slack;
  }
  if (over) {
    std::unique_lock layout(layout_);
    if (auto ec = drain()) return note_error(ec);
    return note_error(compact());
  }
  return {};
}

std::error_code file::rewrite_recent() {
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
    if (io_->pread_exact(buf, e.offset) || format::parse_frame(buf, v) != format::frame_error::ok ||
        v.header.payload_hash != e.payload_hash) {
      report("record " + std::to_string(i) + " was lost by the backing file system after a failed sync");
      std::lock_guard lk(m_);
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
    if (auto ec = io_->pwrite(buf, to)) {
      std::lock_guard lk(m_);
      release_locked(to, e.length);
      return ec;
    }
    std::lock_guard lk(m_);
    backing_len_ = std::max(backing_len_, to + e.length);
    auto moved = e;
    moved.offset = to;
    set_entry_locked(i, moved, gen);
    ++change_seq_;
  }
  std::lock_guard lk(m_);
  resync_ = false;
  return {};
}

std::error_code file::commit_locked() {
  std::vector<format::indexed_entry> snap;
  format::container_slot slot;
  std::uint64_t seq, epoch, new_off[2] = {0, 0}, mlen = 0;
  {
    std::lock_guard lk(m_);
    if (change_seq_ == committed_seq_) return {};
    if (auto ec = materialize_locked()) return ec;
    seq = change_seq_;
    // The same generation again after a failed attempt: the durable slot stays untouched until
    // its successor is durable (docs/STORE.md "Failures").
    slot.generation = durable_gen_ + 1;
    epoch = cur_gen_++;
    slot.record_shift = static_cast<std::uint8_t>(shift_);
    slot.logical_size = size_;
    // Lost records stay lost in every later generation: they must never come back as zeros.
    const std::uint64_t records = (size_ + rs_ - 1) >> shift_;
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
    const std::size_t n = snap.size();
    if (n > std::numeric_limits<std::uint32_t>::max()) return std::make_error_code(std::errc::file_too_large);
    slot.map_records = static_cast<std::uint32_t>(n);
    if (n > 0) {
      mlen = format::map_bytes_v2(n);
      new_off[0] = low_first_ ? space_.allocate_low(mlen) : space_.allocate(mlen);
      new_off[1] = low_first_ ? space_.allocate_low(mlen) : space_.allocate(mlen);
    }
    slot.map_offset[0] = new_off[0];
    slot.map_offset[1] = new_off[1];
  }
  bool slot_written = false;
  auto fail = [&](std::error_code ec, bool synced) {
    std::lock_guard lk(m_);
    // Nothing durable was touched and nothing is given up: the records, the map and the size
    // stay as they are in memory and the next sync() tries again. The new map copies are free
    // again at once when no slot can name them, else once a later commit is durable.
    if (mlen > 0) {
      for (auto off : new_off) {
        if (slot_written) {
          deferred_.push_back({off, mlen, cur_gen_});
        } else {
          release_locked(off, mlen);
        }
      }
    }
    if (synced) resync_ = true;
    report("commit of generation " + std::to_string(slot.generation) + " failed (" + ec.message() +
           "); the data stays in memory and the commit is tried again");
    return ec;
  };
  if (mlen > 0) {
    std::vector<std::byte> buf(mlen);
    format::encode_map_v2(snap, slot.generation, buf);
    iovec v{buf.data(), buf.size()};
    if (auto ec = io_->pwritev({&v, 1}, new_off[0])) return fail(ec, false);
    if (auto ec = io_->pwritev({&v, 1}, new_off[1])) return fail(ec, false);
  }
  // Frames and map first, then the slot that names them.
  if (auto ec = io_->sync()) return fail(ec, true);
  std::array<std::byte, slot_size> sb{};
  format::encode_slot(slot, sb);
  slot_written = true;
  if (auto ec = io_->pwrite(sb, ((slot.generation + 1) % 2) * slot_size)) return fail(ec, false);
  if (auto ec = io_->sync()) return fail(ec, true);
  // The other slot becomes a copy (it held the generation before, superseded now): a damaged
  // slot then never rolls the file back to an older state, the copy says the same. Not synced:
  // whichever of the two reaches the disk, the newest valid one is this generation.
  (void)io_->pwrite(sb, (slot.generation % 2) * slot_size);
  set_marker_locked(sb);

  std::lock_guard lk(m_);
  durable_gen_ = slot.generation;
  durable_epoch_ = epoch;
  committed_seq_ = seq;
  backing_len_ = std::max({backing_len_, new_off[0] + mlen, new_off[1] + mlen});
  // The previous map and every extent the new generation no longer names are free now.
  if (map_len_ > 0) {
    release_locked(map_off_[0], map_len_);
    release_locked(map_off_[1], map_len_);
  }
  map_off_[0] = new_off[0];
  map_off_[1] = new_off[1];
  map_len_ = mlen;
  auto keep = std::partition(deferred_.begin(), deferred_.end(), [&](const deferred_free& d) { return d.gen_needed > durable_epoch_; });
  for (auto it = keep; it != deferred_.end(); ++it) release_locked(it->off, it->len);
  deferred_.erase(keep, deferred_.end());
  if (space_.end() < backing_len_) {
    if (!io_->truncate(space_.end())) backing_len_ = space_.end();
  }
  commits_.fetch_add(1, std::memory_order_relaxed);
  return {};
}

std::error_code file::compact() {
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
      if (auto ec = io_->pread_exact(buf, e.offset)) return ec;
      std::uint64_t to, gen;
      {
        std::lock_guard lk(m_);
        to = phase == 0 ? space_.allocate_at_end(e.length) : space_.allocate_low(e.length);
        gen = cur_gen_;
      }
      if (auto ec = io_->pwrite(buf, to)) {
        std::lock_guard lk(m_);
        release_locked(to, e.length);
        return ec;
      }
      std::lock_guard lk(m_);
      backing_len_ = std::max(backing_len_, to + e.length);
      auto moved = e;
      moved.offset = to;
      set_entry_locked(i, moved, gen);
      ++change_seq_;
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

// ---------------------------------------------------------------------------------------------
// Information

std::uint64_t file::size() const noexcept {
  if (!container_) {
    std::uint64_t s = 0;
    return io_->size(s) ? 0 : s;
  }
  std::lock_guard lk(m_);
  return size_;
}

std::uint64_t file::physical_size() const noexcept {
  std::uint64_t s = 0;
  return io_->allocated(s) ? 0 : s;
}

file_stats file::stats() const {
  file_stats st;
  st.commits = commits_.load();
  st.compactions = compactions_.load();
  st.flushes = flushes_.load();
  st.rmw_reads = rmw_reads_.load();
  st.cache_hits = cache_hits_.load();
  st.damaged_reads = damaged_reads_.load();
  if (!container_) {
    st.logical_size = size();
    (void)io_->size(st.container_size);
    st.live_bytes = st.container_size;
    return st;
  }
  std::lock_guard lk(m_);
  st.logical_size = size_;
  st.container_size = space_.end();
  st.live_bytes = live_frames_ + 2 * map_len_ + container_header_size;
  st.dirty = dirty_.size();
  const std::uint64_t records = (size_ + rs_ - 1) >> shift_;
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

std::error_code file::check(std::vector<damage>& found) {
  found.clear();
  if (!container_) return {};
  std::shared_lock layout(layout_);
  std::vector<std::byte> rec(rs_);
  std::vector<std::uint64_t> indices;
  {
    std::lock_guard lk(m_);
    const std::uint64_t records = (size_ + rs_ - 1) >> shift_;
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
    entry en;
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
