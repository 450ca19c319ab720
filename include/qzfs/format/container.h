#pragma once
// format/: the container of one file's records (docs/FORMAT.md, "Container").
//
//   [ slot 0 (64 B) | slot 1 (64 B) | frames and map copies, anywhere after byte 128 ]
//
// A slot names one committed state: generation, record size, logical size, and where the two
// copies of its record map lie. Commits alternate between the slots, so a torn slot write
// leaves the other (previous) state intact. The record map is a list of 24-byte entries (where
// a record's frame lies, its size, codec and payload hash) cut into 4 KiB chunks, each with its
// own XXH3-64 seeded with the generation and the chunk's index: a stale or damaged chunk is
// found, and only the records it describes are lost when both copies of it are damaged.
//
// Contract: every parser treats its input as untrusted; a value that passes is within limits.
// Thread-safety: pure functions.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "qzfs/codec/ids.h"

namespace qzfs::format {

inline constexpr std::size_t slot_size = 64;
inline constexpr std::size_t container_header_size = 2 * slot_size;
inline constexpr std::uint8_t container_version = 2;  // written; version 1 is read too
inline constexpr unsigned min_record_shift = 12, max_record_shift = 20;  // 4 KiB .. 1 MiB
/// Largest logical size a container describes (2^56 bytes; the kernel's limit is 2^63).
inline constexpr std::uint64_t max_container_size = std::uint64_t{1} << 56;

struct container_slot {
  std::uint8_t version = container_version;  // 1: dense record map; 2: sparse (indexed entries)
  std::uint64_t generation = 0;
  std::uint8_t record_shift = 17;
  std::uint64_t logical_size = 0;
  std::uint64_t map_offset[2] = {0, 0};  // both 0 when the map is empty
  std::uint32_t map_records = 0;         // entries in the map (v1: records 0..n-1; v2: entries)
  // The sync log (docs/FORMAT.md "Sync log"): a region of log_len bytes at log_offset where
  // small fsyncs append what changed since this generation. A slot that names one is written as
  // version 3 (a version-2 map); both 0: none.
  std::uint64_t log_offset = 0;
  std::uint32_t log_len = 0;
  friend bool operator==(const container_slot&, const container_slot&) = default;
};

/// Largest sync log a slot may name.
inline constexpr std::uint32_t max_log_len = 16u << 20;

enum class container_error : std::uint8_t { ok = 0, not_container, bad_version, bad_header, bad_values };
[[nodiscard]] std::string_view to_string(container_error e) noexcept;

/// True when `slot` begins with the container magic (a file starting so is never taken as plain).
[[nodiscard]] bool has_container_magic(std::span<const std::byte> slot) noexcept;
void encode_slot(const container_slot& s, std::span<std::byte, slot_size> out) noexcept;
[[nodiscard]] container_error parse_slot(std::span<const std::byte> in, container_slot& out) noexcept;

/// One record's place. offset 0 (everything else 0) is a hole; offset 1 (everything else 0) is a
/// record known to be lost (its map chunk was damaged when the map was last read): it reads as
/// an error, never as zeros, in every later generation.
struct map_entry {
  std::uint64_t offset = 0;
  std::uint32_t length = 0;  // frame bytes (header + payload)
  codec::payload_format format = codec::payload_format::none;
  codec::producer_id producer = codec::producer_id::none;
  std::uint64_t payload_hash = 0;  // the frame's payload XXH3-64: binds the map to that exact frame
  [[nodiscard]] bool hole() const noexcept { return offset == 0; }
  [[nodiscard]] bool lost() const noexcept { return offset == 1; }
  [[nodiscard]] bool frame() const noexcept { return offset > 1; }
  friend bool operator==(const map_entry&, const map_entry&) = default;
};

inline constexpr std::size_t map_entry_size = 24;
inline constexpr std::size_t map_chunk_size = 4096;
inline constexpr std::size_t map_trailer_size = 16;
inline constexpr std::size_t map_chunk_entries = (map_chunk_size - map_trailer_size) / map_entry_size;  // 170
/// Largest frame a map entry may name (a 16 MiB record stored raw, plus its header).
inline constexpr std::uint32_t max_frame_size = (16u << 20) + 64;

[[nodiscard]] constexpr std::size_t map_chunks(std::size_t records) noexcept {
  return (records + map_chunk_entries - 1) / map_chunk_entries;
}
[[nodiscard]] constexpr std::size_t map_bytes(std::size_t records) noexcept {
  return records * map_entry_size + map_chunks(records) * map_trailer_size;
}
/// Byte range of chunk `k` inside a map of `records` entries.
[[nodiscard]] constexpr std::size_t map_chunk_offset(std::size_t k) noexcept { return k * map_chunk_size; }
[[nodiscard]] constexpr std::size_t map_chunk_length(std::size_t records, std::size_t k) noexcept {
  const std::size_t first = k * map_chunk_entries;
  const std::size_t n = records - first < map_chunk_entries ? records - first : map_chunk_entries;
  return n * map_entry_size + map_trailer_size;
}

// ---- version 2: a sparse map (docs/FORMAT.md "Record map, version 2") ----
// One 32-byte entry per record that holds data, in ascending record order: the record's index,
// then a version-1 entry (never a hole). A lost entry (offset 1) stands for the records
// index..payload_hash (inclusive): a range, so a damaged chunk of a sparse map loses what lay
// between its neighbours without listing it.
struct indexed_entry {
  std::uint64_t index = 0;
  map_entry e;
  [[nodiscard]] std::uint64_t last() const noexcept { return e.lost() ? e.payload_hash : index; }
  friend bool operator==(const indexed_entry&, const indexed_entry&) = default;
};
inline constexpr std::size_t map_entry_size_v2 = 32;
inline constexpr std::size_t map_chunk_entries_v2 = (map_chunk_size - map_trailer_size) / map_entry_size_v2;  // 127
[[nodiscard]] constexpr std::size_t map_chunks_v2(std::size_t entries) noexcept {
  return (entries + map_chunk_entries_v2 - 1) / map_chunk_entries_v2;
}
[[nodiscard]] constexpr std::size_t map_bytes_v2(std::size_t entries) noexcept {
  return entries * map_entry_size_v2 + map_chunks_v2(entries) * map_trailer_size;
}
[[nodiscard]] constexpr std::size_t map_chunk_offset_v2(std::size_t k) noexcept {
  return k * (map_chunk_entries_v2 * map_entry_size_v2 + map_trailer_size);
}
[[nodiscard]] constexpr std::size_t map_chunk_length_v2(std::size_t entries, std::size_t k) noexcept {
  const std::size_t first = k * map_chunk_entries_v2;
  const std::size_t n = entries - first < map_chunk_entries_v2 ? entries - first : map_chunk_entries_v2;
  return n * map_entry_size_v2 + map_trailer_size;
}
/// The map bytes of a slot of either version.
[[nodiscard]] constexpr std::size_t map_bytes(const container_slot& s) noexcept {
  return s.version == 1 ? map_bytes(s.map_records) : map_bytes_v2(s.map_records);
}
/// Encodes entries (ascending, non-overlapping); out.size() must be map_bytes_v2(entries.size()).
void encode_map_v2(std::span<const indexed_entry> entries, std::uint64_t generation, std::span<std::byte> out) noexcept;
/// Decodes chunk `k` of a version-2 map; false when damaged, stale, out of order or invalid.
[[nodiscard]] bool decode_map_chunk_v2(std::span<const std::byte> chunk, std::size_t k, std::uint64_t generation,
                                       std::span<indexed_entry> out) noexcept;
/// Decodes one whole copy of a slot's map (either version) into indexed entries (holes left
/// out); false if any chunk does not verify. For tools and tests; the store reads chunk by chunk.
[[nodiscard]] bool decode_map(std::span<const std::byte> copy, const container_slot& s, std::vector<indexed_entry>& out);

/// Encodes every entry; out.size() must be map_bytes(entries.size()).
void encode_map(std::span<const map_entry> entries, std::uint64_t generation, std::span<std::byte> out) noexcept;
/// Decodes chunk `k` (its bytes only) of a map of generation `generation`; false when the chunk
/// is damaged, stale or holds an invalid entry. `out` receives map_chunk_length's entry count.
[[nodiscard]] bool decode_map_chunk(std::span<const std::byte> chunk, std::size_t k, std::uint64_t generation,
                                    std::span<map_entry> out) noexcept;

// ---- the sync log (docs/FORMAT.md "Sync log") ----
// A sequence of entries from the start of the log region, each a 56-byte header and `length`
// bytes: "bytes [offset, offset + length) of the file are these, and its size is logical_size".
// An entry belongs to the generation named by the slot (base_generation) and carries its place
// in that generation's sequence (seq: 0, 1, ...); entries of one fsync form a batch whose last
// entry has flag log_end. Recovery applies whole batches in order and stops at the first entry
// that does not verify, belongs to another generation or is out of sequence.
inline constexpr std::size_t log_header_size = 56;
inline constexpr std::uint8_t log_end = 1;
struct log_entry {
  std::uint8_t flags = 0;
  std::uint64_t base_generation = 0, seq = 0, offset = 0, logical_size = 0;
  std::uint32_t length = 0;
  friend bool operator==(const log_entry&, const log_entry&) = default;
};
/// Encodes `e`'s header for the data `data` (e.length must be data.size()).
void encode_log_entry(const log_entry& e, std::span<const std::byte> data, std::span<std::byte, log_header_size> out) noexcept;
/// Parses a header: false when it is not one (magic, reserved bytes, values out of range).
[[nodiscard]] bool parse_log_header(std::span<const std::byte, log_header_size> in, log_entry& out) noexcept;
/// Whether `data` (out.length bytes) is what the parsed header `in` was written with.
[[nodiscard]] bool log_data_matches(std::span<const std::byte, log_header_size> in, std::span<const std::byte> data) noexcept;

}  // namespace qzfs::format
