#pragma once
// The one list of codec numbers. They are written to disk (format/ records them in every
// record frame), so a number is never reused or changed; new ones are appended.
// Header-only: format/ includes it without linking codec/ (docs/decisions/0002).

#include <cstdint>

namespace qzfs::codec {

/// What the payload bytes are: decides which decoder reads them.
enum class payload_format : std::uint8_t {
  none = 0,  // the logical bytes as they are
  gzip = 1,  // one RFC 1952 gzip member (`gzip -d` decodes it)
  zstd = 2,  // one zstd frame with its content size (`zstd -d` decodes it)
  lz4 = 3,   // one LZ4 block (no frame; the record frame carries the sizes)
};
inline constexpr std::uint8_t payload_format_count = 4;

/// Which implementation produced the payload: diagnostics and statistics only; never needed
/// to decode (any gzip member is read by the same decoder, whoever wrote it).
enum class producer_id : std::uint8_t {
  none = 0,
  isal = 1,        // ISA-L igzip (gzip levels 1-3)
  libdeflate = 2,  // libdeflate (gzip levels 4-12)
  zlib = 3,        // zlib (reference codec of ZFS and btrfs)
  zstd = 4,
  lz4 = 5,
  lz4hc = 6,
  qat = 7,  // Intel QAT through QATzip
};
inline constexpr std::uint8_t producer_count = 8;

}  // namespace qzfs::codec
