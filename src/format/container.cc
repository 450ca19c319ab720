#include "qzfs/format/container.h"

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>
#if defined(__x86_64__)
// libxxhash's run-time dispatch: the AVX2/AVX-512 kernels where the CPU has them (2.4x the
// SSE2 default on this project's machines, measured in docs/BENCHMARKS.md "Store").
#include <xxh_x86dispatch.h>
#endif

#include <cstring>

#include "le.h"
#include "qzfs/format/frame.h"

namespace qzfs::format {
namespace {

// Slot layout (little-endian):
//   0  4  magic "QZCT"          16  8  logical size          44  8  v3: sync log offset
//   4  1  version (1, 2, 3)     24  8  map copy 0 offset     52  4  v3: sync log length
//   5  1  slot length (64)      32  8  map copy 1 offset     56  4  reserved, zero
//   6  1  record shift (12-20)  40  4  map entries           60  4  low 32 bits of XXH3-64
//   7  1  flags (none defined)                                      of bytes [0, 60)
//   8  8  generation (>= 1)
// (bytes 44-59 are zero in versions 1 and 2)
constexpr std::byte magic[4] = {std::byte{'Q'}, std::byte{'Z'}, std::byte{'C'}, std::byte{'T'}};

std::uint32_t slot_check(const std::byte* p) noexcept { return static_cast<std::uint32_t>(XXH3_64bits(p, slot_size - 4)); }

// A chunk's hash is seeded with its generation and index: a chunk of an older map, or one
// written at another position, does not verify.
std::uint64_t chunk_seed(std::uint64_t generation, std::size_t k) noexcept {
  return generation * 0x9E3779B97F4A7C15ull ^ (static_cast<std::uint64_t>(k) + 1);
}

}  // namespace

std::string_view to_string(container_error e) noexcept {
  switch (e) {
    case container_error::ok: return "ok";
    case container_error::not_container: return "not a container slot";
    case container_error::bad_version: return "unsupported container version";
    case container_error::bad_header: return "damaged container slot";
    case container_error::bad_values: return "container slot values out of range";
  }
  return "unknown container error";
}

bool has_container_magic(std::span<const std::byte> slot) noexcept {
  return slot.size() >= 4 && std::memcmp(slot.data(), magic, 4) == 0;
}

void encode_slot(const container_slot& s, std::span<std::byte, slot_size> out) noexcept {
  std::byte* p = out.data();
  std::memset(p, 0, slot_size);
  std::memcpy(p, magic, 4);
  p[4] = std::byte{s.log_len != 0 ? std::uint8_t{3} : s.version};
  p[5] = std::byte{slot_size};
  p[6] = std::byte{s.record_shift};
  put64(p + 8, s.generation);
  put64(p + 16, s.logical_size);
  put64(p + 24, s.map_offset[0]);
  put64(p + 32, s.map_offset[1]);
  put32(p + 40, s.map_records);
  if (s.log_len != 0) {
    put64(p + 44, s.log_offset);
    put32(p + 52, s.log_len);
  }
  put32(p + 60, slot_check(p));
}

container_error parse_slot(std::span<const std::byte> in, container_slot& out) noexcept {
  if (in.size() < slot_size || !has_container_magic(in)) return container_error::not_container;
  const std::byte* p = in.data();
  if (p[4] != std::byte{1} && p[4] != std::byte{2} && p[4] != std::byte{3}) return container_error::bad_version;
  const bool v3 = p[4] == std::byte{3};
  if (p[5] != std::byte{slot_size} || get32(p + 60) != slot_check(p) || p[7] != std::byte{0}) {
    return container_error::bad_header;
  }
  for (std::size_t i = v3 ? 56 : 44; i < 60; ++i) {
    if (p[i] != std::byte{0}) return container_error::bad_header;
  }
  container_slot s;
  s.version = v3 ? std::uint8_t{2} : static_cast<std::uint8_t>(p[4]);  // version 3 is a version-2 map and a log
  if (v3) {
    s.log_offset = get64(p + 44);
    s.log_len = get32(p + 52);
    if (s.log_len == 0 || s.log_len > max_log_len || s.log_offset < container_header_size ||
        s.log_offset > max_container_size) {
      return container_error::bad_values;
    }
  }
  s.record_shift = static_cast<std::uint8_t>(p[6]);
  s.generation = get64(p + 8);
  s.logical_size = get64(p + 16);
  s.map_offset[0] = get64(p + 24);
  s.map_offset[1] = get64(p + 32);
  s.map_records = get32(p + 40);
  if (s.generation == 0 || s.record_shift < min_record_shift || s.record_shift > max_record_shift ||
      s.logical_size > max_container_size) {
    return container_error::bad_values;
  }
  const std::uint64_t records_in_size = (s.logical_size + (std::uint64_t{1} << s.record_shift) - 1) >> s.record_shift;
  if (s.map_records > records_in_size) return container_error::bad_values;
  for (auto off : s.map_offset) {
    if (s.map_records == 0 ? off != 0 : off < container_header_size || off > max_container_size) {
      return container_error::bad_values;
    }
  }
  out = s;
  return container_error::ok;
}

namespace {

// A version-1 entry's 24 bytes (shared by both versions; v2 puts the index in front).
void put_entry(std::byte* p, const map_entry& e) noexcept {
  put64(p, e.offset);
  put32(p + 8, e.length);
  p[12] = std::byte(e.format);
  p[13] = std::byte(e.producer);
  put16(p + 14, 0);
  put64(p + 16, e.payload_hash);
}

// Reads and checks one entry; `lost_as_range`: v2's lost entries carry their last index.
bool get_entry(const std::byte* p, map_entry& e, bool lost_as_range) noexcept {
  e.offset = get64(p);
  e.length = get32(p + 8);
  const auto fmt = static_cast<std::uint8_t>(p[12]);
  const auto prod = static_cast<std::uint8_t>(p[13]);
  e.payload_hash = get64(p + 16);
  if (get16(p + 14) != 0 || fmt >= codec::payload_format_count || prod >= codec::producer_count) return false;
  e.format = static_cast<codec::payload_format>(fmt);
  e.producer = static_cast<codec::producer_id>(prod);
  if (e.offset <= 1) {
    return e.length == 0 && fmt == 0 && prod == 0 && (e.payload_hash == 0 || (lost_as_range && e.offset == 1));
  }
  return e.offset >= container_header_size && e.offset <= max_container_size && e.length > frame_header_size &&
         e.length <= max_frame_size;
}

// The trailer after a chunk's `body` bytes of entries: its generation and the seeded hash.
void seal(std::byte* c, std::size_t body, std::uint64_t generation, std::size_t k) noexcept {
  put64(c + body, generation);
  put64(c + body + 8, XXH3_64bits_withSeed(c, body + 8, chunk_seed(generation, k)));
}
bool sealed(const std::byte* c, std::size_t body, std::uint64_t generation, std::size_t k) noexcept {
  return get64(c + body) == generation && get64(c + body + 8) == XXH3_64bits_withSeed(c, body + 8, chunk_seed(generation, k));
}

}  // namespace

void encode_map(std::span<const map_entry> entries, std::uint64_t generation, std::span<std::byte> out) noexcept {
  const std::size_t chunks = map_chunks(entries.size());
  for (std::size_t k = 0; k < chunks; ++k) {
    std::byte* c = out.data() + map_chunk_offset(k);
    const std::size_t first = k * map_chunk_entries;
    const std::size_t len = map_chunk_length(entries.size(), k);
    const std::size_t n = (len - map_trailer_size) / map_entry_size;
    for (std::size_t i = 0; i < n; ++i) put_entry(c + i * map_entry_size, entries[first + i]);
    seal(c, n * map_entry_size, generation, k);
  }
}

bool decode_map_chunk(std::span<const std::byte> chunk, std::size_t k, std::uint64_t generation,
                      std::span<map_entry> out) noexcept {
  if (chunk.size() < map_trailer_size || (chunk.size() - map_trailer_size) % map_entry_size != 0) return false;
  const std::size_t n = (chunk.size() - map_trailer_size) / map_entry_size;
  if (n != out.size() || n > map_chunk_entries) return false;
  const std::byte* c = chunk.data();
  if (!sealed(c, n * map_entry_size, generation, k)) return false;
  for (std::size_t i = 0; i < n; ++i) {
    map_entry e;
    if (!get_entry(c + i * map_entry_size, e, false)) return false;
    out[i] = e;
  }
  return true;
}

void encode_map_v2(std::span<const indexed_entry> entries, std::uint64_t generation, std::span<std::byte> out) noexcept {
  const std::size_t chunks = map_chunks_v2(entries.size());
  for (std::size_t k = 0; k < chunks; ++k) {
    std::byte* c = out.data() + map_chunk_offset_v2(k);
    const std::size_t first = k * map_chunk_entries_v2;
    const std::size_t n = (map_chunk_length_v2(entries.size(), k) - map_trailer_size) / map_entry_size_v2;
    for (std::size_t i = 0; i < n; ++i) {
      std::byte* p = c + i * map_entry_size_v2;
      put64(p, entries[first + i].index);
      put_entry(p + 8, entries[first + i].e);
    }
    seal(c, n * map_entry_size_v2, generation, k);
  }
}

bool decode_map_chunk_v2(std::span<const std::byte> chunk, std::size_t k, std::uint64_t generation,
                         std::span<indexed_entry> out) noexcept {
  if (chunk.size() < map_trailer_size || (chunk.size() - map_trailer_size) % map_entry_size_v2 != 0) return false;
  const std::size_t n = (chunk.size() - map_trailer_size) / map_entry_size_v2;
  if (n != out.size() || n > map_chunk_entries_v2 || n == 0) return false;
  const std::byte* c = chunk.data();
  if (!sealed(c, n * map_entry_size_v2, generation, k)) return false;
  for (std::size_t i = 0; i < n; ++i) {
    const std::byte* p = c + i * map_entry_size_v2;
    indexed_entry x;
    x.index = get64(p);
    if (!get_entry(p + 8, x.e, true) || x.e.hole()) return false;
    if (x.e.lost() && x.e.payload_hash < x.index) return false;
    if (i > 0 && x.index <= out[i - 1].last()) return false;  // ascending, ranges apart
    out[i] = x;
  }
  return true;
}

bool decode_map(std::span<const std::byte> copy, const container_slot& s, std::vector<indexed_entry>& out) {
  out.clear();
  const std::size_t n = s.map_records;
  if (copy.size() < map_bytes(s)) return false;
  if (s.version == 1) {
    std::vector<map_entry> dense(n);
    for (std::size_t k = 0; k < map_chunks(n); ++k) {
      const std::size_t len = map_chunk_length(n, k);
      auto dst = std::span(dense).subspan(k * map_chunk_entries, (len - map_trailer_size) / map_entry_size);
      if (!decode_map_chunk(copy.subspan(map_chunk_offset(k), len), k, s.generation, dst)) return false;
    }
    for (std::size_t i = 0; i < n; ++i) {
      if (!dense[i].hole()) out.push_back({i, dense[i]});
    }
    return true;
  }
  out.resize(n);
  for (std::size_t k = 0; k < map_chunks_v2(n); ++k) {
    const std::size_t len = map_chunk_length_v2(n, k);
    auto dst = std::span(out).subspan(k * map_chunk_entries_v2, (len - map_trailer_size) / map_entry_size_v2);
    if (!decode_map_chunk_v2(copy.subspan(map_chunk_offset_v2(k), len), k, s.generation, dst)) return false;
    if (k > 0 && dst.front().index <= out[k * map_chunk_entries_v2 - 1].last()) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Sync log entries (little-endian):
//   0  4  magic "QZLG"       16  8  seq                 44  4  reserved, zero
//   4  1  flags (log_end)    24  8  offset              48  8  XXH3-64 of bytes [0, 48) and
//   5  3  reserved, zero     32  8  logical size               the data, seeded with the
//   8  8  base generation    40  4  length                     generation
namespace {

constexpr std::byte log_magic[4] = {std::byte{'Q'}, std::byte{'Z'}, std::byte{'L'}, std::byte{'G'}};

std::uint64_t log_hash(const std::byte* hdr, std::span<const std::byte> data, std::uint64_t generation) noexcept {
  // Initialised first: a seeded reset keeps the secret a stack state holds when its (stale) seed
  // matches, and the hash would depend on what an earlier call left there.
  XXH3_state_t st;
  XXH3_INITSTATE(&st);
  XXH3_64bits_reset_withSeed(&st, generation * 0x9E3779B97F4A7C15ull);
  XXH3_64bits_update(&st, hdr, 48);
  XXH3_64bits_update(&st, data.data(), data.size());
  return XXH3_64bits_digest(&st);
}

}  // namespace

void encode_log_entry(const log_entry& e, std::span<const std::byte> data, std::span<std::byte, log_header_size> out) noexcept {
  std::byte* p = out.data();
  std::memset(p, 0, log_header_size);
  std::memcpy(p, log_magic, 4);
  p[4] = std::byte{e.flags};
  put64(p + 8, e.base_generation);
  put64(p + 16, e.seq);
  put64(p + 24, e.offset);
  put64(p + 32, e.logical_size);
  put32(p + 40, e.length);
  put64(p + 48, log_hash(p, data, e.base_generation));
}

bool parse_log_header(std::span<const std::byte, log_header_size> in, log_entry& out) noexcept {
  const std::byte* p = in.data();
  if (std::memcmp(p, log_magic, 4) != 0 || (p[4] & ~std::byte{log_end}) != std::byte{0}) return false;
  for (std::size_t i : {5u, 6u, 7u, 44u, 45u, 46u, 47u}) {
    if (p[i] != std::byte{0}) return false;
  }
  log_entry e;
  e.flags = static_cast<std::uint8_t>(p[4]);
  e.base_generation = get64(p + 8);
  e.seq = get64(p + 16);
  e.offset = get64(p + 24);
  e.logical_size = get64(p + 32);
  e.length = get32(p + 40);
  if (e.base_generation == 0 || e.length > max_log_len || e.logical_size > max_container_size ||
      e.offset > max_container_size || e.length > max_container_size - e.offset) {
    return false;
  }
  out = e;
  return true;
}

bool log_data_matches(std::span<const std::byte, log_header_size> in, std::span<const std::byte> data) noexcept {
  return get64(in.data() + 48) == log_hash(in.data(), data, get64(in.data() + 8));
}

}  // namespace qzfs::format
