#pragma once
// format/: the record frame, the on-disk unit of one record (docs/FORMAT.md).
//
//   [ 40-byte header | payload (physical_size bytes) ]
//
// The header names the payload's format and producer, the logical and physical sizes, a
// 64-bit XXH3 of the logical bytes, a 64-bit XXH3 of the payload bytes, and ends with a 32-bit
// check of the header itself. A gzip payload is a standard RFC 1952 member.
//
// Contract: parse_frame() treats every byte as untrusted. It accepts a frame only when the
// header is intact, the sizes are within the limits, the payload is all there and its XXH3
// matches: every single-bit flip and every truncation is rejected before any decoder runs.
// The logical XXH3 is verified after decoding (verify_logical), which also catches a codec or
// an accelerator that produced a wrong payload with a right checksum.
//
// Thread-safety: pure functions; safe from any thread.

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "qzfs/codec/ids.h"

namespace qzfs::format {

inline constexpr std::uint8_t frame_version = 1;
inline constexpr std::size_t frame_header_size = 40;
/// Largest logical record a frame may describe (recordsize is at most 1 MiB; room to grow).
inline constexpr std::uint32_t max_logical_size = 16u << 20;

struct frame_header {
  codec::payload_format format = codec::payload_format::none;
  codec::producer_id producer = codec::producer_id::none;
  std::int8_t level = 0;
  std::uint32_t logical_size = 0;
  std::uint32_t physical_size = 0;
  std::uint64_t logical_hash = 0;
  std::uint64_t payload_hash = 0;
};

enum class frame_error : std::uint8_t {
  ok = 0,
  truncated,        // fewer bytes than the header or the payload it announces
  bad_magic,        // not a record frame
  bad_version,      // a version this build does not read
  bad_header,       // header checksum mismatch, bad header length, unknown flags
  bad_codec,        // payload format or producer unknown
  bad_sizes,        // sizes out of range or inconsistent (raw payload of the wrong size)
  payload_checksum, // payload bytes damaged
  logical_checksum, // decoded bytes differ from what was written
};
[[nodiscard]] std::string_view to_string(frame_error e) noexcept;

struct frame_view {
  frame_header header;
  std::span<const std::byte> payload;
  std::size_t frame_size = 0;  // header + payload
};

/// XXH3-64 of bytes, contiguous or scattered (the same value for the same bytes).
[[nodiscard]] std::uint64_t hash(std::span<const std::byte> bytes) noexcept;
[[nodiscard]] std::uint64_t hash(std::span<const iovec> bytes) noexcept;

/// Writes the header for `h` (hashes must already be set).
void encode_header(const frame_header& h, std::span<std::byte, frame_header_size> out) noexcept;

/// Writes a full header for a payload already placed at frame[frame_header_size..]: computes the
/// payload hash (for format none, the payload is the logical bytes and its hash is
/// `logical_hash`, which the caller computed while the input was hot). Returns the header as
/// written.
frame_header seal_frame(frame_header h, std::span<std::byte> frame) noexcept;

/// The header of a raw frame whose payload is `logical` itself, scattered where it lies (the
/// writer sends header + those iovecs in one pwritev: no copy): format none, both sizes the
/// logical size, one hash for both. Returns the header as written.
frame_header seal_raw_header(std::span<const iovec> logical, std::span<std::byte, frame_header_size> out) noexcept;

/// Parses and checks the frame at the start of `bytes` (trailing bytes are left alone).
[[nodiscard]] frame_error parse_frame(std::span<const std::byte> bytes, frame_view& out) noexcept;
/// Parses and checks a frame's header alone (everything parse_frame checks but the payload,
/// which the caller then checks against out.payload_hash).
[[nodiscard]] frame_error parse_frame_header(std::span<const std::byte, frame_header_size> bytes, frame_header& out) noexcept;

/// After decoding: the logical bytes match the header's size and hash. Not needed for format
/// none: parse_frame has already checked those very bytes against the same hash.
[[nodiscard]] frame_error verify_logical(const frame_header& h, std::span<const std::byte> logical) noexcept;

}  // namespace qzfs::format
