// container: making one, and opening one (the newest valid slot, its map, its space).

#include <algorithm>
#include <thread>

#include "container.h"
#include "qzfs/format/frame.h"
#include "record_range.h"

namespace qzfs::store {
namespace {

using format::container_header_size;
using format::slot_size;
using lost_ranges = std::vector<std::pair<std::uint64_t, std::uint64_t>>;

std::error_code eio() { return std::make_error_code(std::errc::io_error); }

// A map's entries (ascending) and lost ranges (inclusive), gathered chunk by chunk.
struct map_collector {
  std::vector<format::indexed_entry>& entries;
  lost_ranges& lost;
  // A chunk damaged in both copies: its records are lost, never zeros. For a sparse map that is
  // everything between the chunks around it; `gap_from` is where the gap began.
  bool in_gap = false;
  std::uint64_t gap_from = 0;

  // The first record a later chunk may name.
  [[nodiscard]] std::uint64_t floor() const {
    return std::max(entries.empty() ? 0 : entries.back().last() + 1, lost.empty() ? 0 : lost.back().second + 1);
  }
  void close_gap(std::uint64_t next_index) {
    if (in_gap && gap_from < next_index) lost.emplace_back(gap_from, next_index - 1);
    in_gap = false;
  }
  // Version 1: a dense chunk of records first, first + 1, ...
  void add_dense(std::uint64_t first, std::span<const format::map_entry> dense) {
    for (std::size_t i = 0; i < dense.size(); ++i) {
      if (dense[i].lost()) {
        lost.emplace_back(first + i, first + i);
      } else if (!dense[i].hole()) {
        entries.push_back({first + i, dense[i]});
      }
    }
  }
  void damaged_sparse() {
    if (!in_gap) gap_from = floor(), in_gap = true;
  }
  // Version 2: false when the chunk does not follow the ones before it.
  [[nodiscard]] bool add_sparse(std::span<const format::indexed_entry> part) {
    if ((!entries.empty() || !lost.empty() || in_gap) && part.front().index < floor()) return false;
    close_gap(part.front().index);
    for (const auto& x : part) {
      if (x.e.lost()) {
        lost.emplace_back(x.index, x.last());
      } else {
        entries.push_back(x);
      }
    }
    return true;
  }
};

// The newest valid slot of the two in `hdr` and the marker's.
bool pick_slot(std::span<const std::byte> hdr, const format::container_slot* marker, format::container_slot& best) {
  bool found = marker != nullptr;
  if (found) best = *marker;  // the newest committed slot, unless a slot is newer (a crash before the marker)
  for (std::size_t i = 0; i < 2; ++i) {
    format::container_slot s;
    if (hdr.size() < (i + 1) * slot_size) continue;
    if (format::parse_slot(hdr.subspan(i * slot_size, slot_size), s) != format::container_error::ok) continue;
    // A commit writes generation G to slot (G + 1) % 2, then copies it into the other slot: any
    // valid slot may hold any generation; the newest is the state.
    if (!found || s.generation > best.generation) best = s, found = true;
  }
  return found;
}

}  // namespace

container::container(file_core& core) : core_(core), io_(core.backing()), o_(core.opts()), bufs_(o_.budget, o_.cache_records) {
  const std::size_t workers = o_.compressor != nullptr ? o_.compressor->workers() : 1;
  batch_ = o_.batch_records != 0 ? o_.batch_records : std::max<std::size_t>(4, 2 * workers);
}

container::~container() {
  {
    // The last commit names no sync log: a closed file keeps no space for one.
    std::lock_guard lk(m_);
    drop_log_ = true;
  }
  if (auto ec = commit_sync()) report("closing: " + ec.message());
  // Batches in flight refer to this file's buffers; a failed sync may have left one behind.
  if (auto ec = write_back_.drain()) report("closing: " + ec.message());
}

std::error_code container::make_empty(file_core& core, std::unique_ptr<container>& out) {
  std::unique_ptr<container> c(new container(core));
  if (auto ec = c->init_empty()) return ec;
  out = std::move(c);
  return {};
}

std::error_code container::create(file_core& core, std::unique_ptr<container>& out) {
  if (auto ec = core.backing().truncate(0)) return ec;
  std::unique_ptr<container> c(new container(core));
  if (auto ec = c->init_empty()) return ec;
  {
    std::lock_guard lk(c->m_);
    if (auto ec = c->materialize_locked()) return ec;
  }
  out = std::move(c);
  return {};
}

std::error_code container::open(file_core& core, std::span<const std::byte> header, std::uint64_t backing_len,
                                const format::container_slot* marker, std::unique_ptr<container>& out) {
  std::unique_ptr<container> c(new container(core));
  if (auto ec = c->load(header, backing_len, marker)) return ec;
  if (auto ec = c->replay_log()) return ec;
  out = std::move(c);
  return {};
}

std::error_code container::init_empty() {
  const std::uint32_t rs = o_.record_size;
  if (rs < (1u << format::min_record_shift) || rs > (1u << format::max_record_shift) || (rs & (rs - 1)) != 0) {
    return std::make_error_code(std::errc::invalid_argument);
  }
  std::lock_guard lk(m_);
  materialized_ = false;
  rs_ = rs;
  shift_ = static_cast<unsigned>(__builtin_ctz(rs));
  bufs_.configure(rs_, 2 * batch_);
  durable_gen_ = 1;
  cur_gen_ = 2;
  durable_epoch_ = 1;
  return {};
}

std::error_code container::materialize_locked() {
  if (materialized_) return {};
  // Generation 1 (empty) in slot 0. A frame must never reach the disk ahead of what makes the
  // file a container (it would read as a plain file of compressed bytes after a power loss).
  // The marker goes first: it is metadata, which the journal of the backing file system (ext4,
  // XFS, btrfs) makes durable in order, no later than the allocation of any block written after
  // it, so a file whose frames reached the disk has its marker and reads as the container it is
  // (empty until its first commit, docs/STORE.md "New containers"). Without a marker (no
  // extended attributes there) the header is synced before any frame, one sync per new
  // container. A torn header write leaves a file open() takes for an empty container.
  format::container_slot s;
  s.generation = 1;
  s.record_shift = static_cast<std::uint8_t>(shift_);
  std::array<std::byte, container_header_size> hdr{};
  format::encode_slot(s, std::span(hdr).first<slot_size>());
  set_marker_locked(std::span(hdr).first<slot_size>());
  if (auto ec = io_.pwrite(hdr, 0)) return ec;
  if (!marker_ok_) {
    if (auto ec = io_.sync()) return ec;
  }
  materialized_ = true;
  backing_len_ = std::max<std::uint64_t>(backing_len_, container_header_size);
  return {};
}

void container::set_marker_locked(std::span<const std::byte, format::slot_size> slot) noexcept {
  // Best effort: a backing file system without extended attributes has no marker, and then a
  // container whose first block is destroyed reads as a plain file of its own bytes.
  if (marker_ok_) marker_ok_ = !io_.set_marker(slot);
}

std::error_code container::load(std::span<const std::byte> hdr, std::uint64_t len, const format::container_slot* marker) {
  format::container_slot best;
  if (!pick_slot(hdr, marker, best)) {
    // Creation is the only write that can leave no valid slot behind (a torn first write).
    if (len <= container_header_size && marker == nullptr) return init_empty();
    report("no valid slot: the container's header is damaged");
    return eio();
  }
  std::lock_guard lk(m_);
  materialized_ = true;
  rs_ = 1u << best.record_shift;
  shift_ = best.record_shift;
  bufs_.configure(rs_, 2 * batch_);

  const std::uint64_t mlen = best.map_records > 0 ? format::map_bytes(best) : 0;
  if (mlen > 0 && (mlen > len || best.map_offset[0] > len - mlen || best.map_offset[1] > len - mlen)) {
    report("the record map lies past the end of the container");
    return eio();
  }
  if (best.log_len != 0 && (best.log_len > len || best.log_offset > len - best.log_len)) {
    // The log was zeroed before the slot named it: a shorter file lost its end since.
    report("the sync log lies past the end of the container: changes fsynced after the last commit may be lost");
    best.log_offset = 0, best.log_len = 0;
  }
  std::vector<format::indexed_entry> entries;  // ascending
  lost_ranges lost;
  if (auto ec = read_map(best, entries, lost)) return ec;
  if (auto ec = claim_extents(best, mlen, entries, lost)) return ec;
  size_ = best.logical_size;
  durable_gen_ = best.generation;
  cur_gen_ = best.generation + 1;
  durable_epoch_ = best.generation;
  map_off_[0] = best.map_offset[0];
  map_off_[1] = best.map_offset[1];
  map_len_ = mlen;
  backing_len_ = len;
  log_off_ = best.log_offset;
  log_len_ = best.log_len;
  logged_size_ = size_;
  read_only_ = !io_.writable();
  return {};
}

std::error_code container::read_map(const format::container_slot& best, std::vector<format::indexed_entry>& entries, lost_ranges& lost) {
  // Copy 0 in one read, each damaged chunk from copy 1, else its records are lost.
  const std::size_t n = best.map_records;
  if (n == 0) return {};
  const std::uint64_t mlen = format::map_bytes(best);  // within the file: load() checked
  const std::uint64_t records = record_range::records_for(best.logical_size, best.record_shift);
  std::vector<std::byte> copy(mlen);
  std::size_t got0 = 0;
  if (auto ec = io_.pread(copy, best.map_offset[0], got0)) return ec;
  std::vector<std::byte> chunk;
  const bool v1 = best.version == 1;
  const std::size_t chunks = v1 ? format::map_chunks(n) : format::map_chunks_v2(n);
  std::vector<format::map_entry> dense;
  std::vector<format::indexed_entry> part;
  map_collector got{entries, lost};
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
      ok = !io_.pread(chunk, best.map_offset[1] + at, got1) && got1 == clen && decode(chunk);
      if (ok) report("map chunk " + std::to_string(k) + " damaged in copy 0, read from copy 1");
    }
    if (v1) {
      const std::uint64_t first = k * format::map_chunk_entries;
      if (ok) {
        got.add_dense(first, dense);
        continue;
      }
      report("map chunk " + std::to_string(k) + " damaged in both copies: records " + std::to_string(first) + ".." +
             std::to_string(first + cn - 1) + " are lost");
      lost.emplace_back(first, first + cn - 1);
    } else if (!ok) {
      got.damaged_sparse();
    } else if (!got.add_sparse(part)) {
      report("map chunk " + std::to_string(k) + " is out of order");  // chunks follow each other like their entries
      return eio();
    }
  }
  if (got.in_gap) {
    if (records > got.gap_from) report("records from " + std::to_string(got.gap_from) + " on are lost: their map chunk is damaged in both copies");
    got.close_gap(std::max<std::uint64_t>(records, got.gap_from));
  }
  return {};
}

std::error_code container::claim_extents(const format::container_slot& best, std::uint64_t mlen,
                                         std::vector<format::indexed_entry>& entries, lost_ranges& lost) {
  // Every extent in use: frames, both map copies and the sync log. Overlaps cannot come from this code; a map
  // that has them (crafted, or a bug) loses the overlapping records rather than sharing bytes.
  struct ext {
    std::uint64_t off, len;
    std::size_t at;  // position in `entries`; ~0 for a map copy
  };
  constexpr std::size_t map_copy = ~std::size_t{0};
  const std::uint64_t records = record_range::records_for(best.logical_size, best.record_shift);
  std::vector<ext> used;
  used.reserve(entries.size() + 2);
  if (best.map_records > 0) used.push_back({best.map_offset[0], mlen, map_copy}), used.push_back({best.map_offset[1], mlen, map_copy});
  if (best.log_len != 0) used.push_back({best.log_offset, best.log_len, map_copy});
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
        report("map copies or the sync log overlap other extents");
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
    map_.emplace_hint(map_.end(), x.index, map_slot{x.e, best.generation});
    live_frames_ += x.e.length;
  }
  for (auto [first, last] : lost) {
    if (first >= records) continue;
    add_lost_locked(first, std::min(last, records - 1));
  }
  return {};
}

}  // namespace qzfs::store
