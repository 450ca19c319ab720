// container: reading records (a dirty buffer, a hole, the read cache, or a frame decoded) and
// checking them all.

#include <array>
#include <cstring>

#include "container.h"
#include "qzfs/codec/workspace.h"
#include "qzfs/format/frame.h"
#include "record_range.h"

namespace qzfs::store {
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

}  // namespace

std::error_code container::read_record(std::uint64_t index, const map_slot& en, std::span<std::byte> out, std::uint32_t& len,
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
  // A raw record (incompressible, or compression=off): its payload is read straight into `out`
  // beside its header (one preadv) and checked there: no pass through the frame buffer.
  if (en.e.format == codec::payload_format::none && en.e.length > format::frame_header_size &&
      en.e.length - format::frame_header_size <= out.size()) {
    std::array<std::byte, format::frame_header_size> head;
    const auto payload = out.first(en.e.length - format::frame_header_size);
    if (auto ec = io_.pread_split(head, payload, en.e.offset)) {
      if (ec == std::errc::io_error) return bad("frame cut short at byte " + std::to_string(en.e.offset));
      return ec;
    }
    format::frame_header h;
    if (auto fe = format::parse_frame_header(head, h); fe != format::frame_error::ok) return bad(format::to_string(fe));
    // The payload first, as parse_frame does: damaged bytes are named as such.
    if (h.physical_size == payload.size() && format::hash(payload) != h.payload_hash) {
      return bad(format::to_string(format::frame_error::payload_checksum));
    }
    if (h.format != en.e.format || h.payload_hash != en.e.payload_hash || h.physical_size != payload.size() ||
        h.logical_size > rs_) {
      return bad("frame does not match the record map");
    }
    len = h.logical_size;
    return {};
  }
  auto& s = thread_scratch();
  if (s.frame.size() < en.e.length) s.frame.resize(en.e.length);
  auto frame = std::span(s.frame).first(en.e.length);
  if (auto ec = io_.pread_exact(frame, en.e.offset)) {
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
  for (const record_part p : range) {
    auto dst = out.subspan(p.pos, p.size());
    if (auto ec = read_part(p.index, p.lo, p.hi, dst)) return ec;
    got += dst.size();
  }
  return {};
}

std::error_code container::read_part(std::uint64_t i, std::uint32_t a, std::uint32_t b, std::span<std::byte> dst) {
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
