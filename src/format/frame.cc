#include "qzfs/format/frame.h"

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack: no allocation per hash
#include <xxhash.h>
#if defined(__x86_64__)
// libxxhash's run-time dispatch: the AVX2/AVX-512 kernels where the CPU has them (2.4x the
// SSE2 default on this project's machines, measured in docs/BENCHMARKS.md "Store").
#include <xxh_x86dispatch.h>
#endif

#include <cstring>

#include "le.h"

namespace qzfs::format {
namespace {

// Layout of the v1 header (little-endian):
//   0  2  magic "QR"           8  4  logical_size      36  4  low 32 bits of XXH3-64 of
//   2  1  version (1)         12  4  physical_size            bytes [0, header_len - 4)
//   3  1  header_len (40)     16  8  logical XXH3-64
//   4  1  payload format      24  8  payload XXH3-64
//   5  1  level (int8)        32  4  reserved, zero
//   6  1  producer
//   7  1  flags (none defined; a reader rejects bits it does not know)
constexpr std::byte magic0{'Q'}, magic1{'R'};

std::uint32_t header_check(const std::byte* p, std::size_t header_len) noexcept {
  return static_cast<std::uint32_t>(XXH3_64bits(p, header_len - 4));
}

}  // namespace

std::string_view to_string(frame_error e) noexcept {
  switch (e) {
    case frame_error::ok: return "ok";
    case frame_error::truncated: return "truncated frame";
    case frame_error::bad_magic: return "not a record frame";
    case frame_error::bad_version: return "unsupported frame version";
    case frame_error::bad_header: return "damaged frame header";
    case frame_error::bad_codec: return "unknown codec in frame";
    case frame_error::bad_sizes: return "inconsistent frame sizes";
    case frame_error::payload_checksum: return "payload checksum mismatch";
    case frame_error::logical_checksum: return "data checksum mismatch after decoding";
  }
  return "unknown frame error";
}

std::uint64_t hash(std::span<const std::byte> bytes) noexcept { return XXH3_64bits(bytes.data(), bytes.size()); }

std::uint64_t hash(std::span<const iovec> bytes) noexcept {
  if (bytes.size() == 1) return XXH3_64bits(bytes[0].iov_base, bytes[0].iov_len);
  XXH3_state_t st;
  XXH3_INITSTATE(&st);
  XXH3_64bits_reset(&st);
  for (const auto& v : bytes) XXH3_64bits_update(&st, v.iov_base, v.iov_len);
  return XXH3_64bits_digest(&st);
}

void encode_header(const frame_header& h, std::span<std::byte, frame_header_size> out) noexcept {
  std::byte* p = out.data();
  std::memset(p, 0, frame_header_size);
  p[0] = magic0;
  p[1] = magic1;
  p[2] = std::byte{frame_version};
  p[3] = std::byte{frame_header_size};
  p[4] = std::byte(h.format);
  p[5] = std::byte(static_cast<std::uint8_t>(h.level));
  p[6] = std::byte(h.producer);
  p[7] = std::byte{0};
  put32(p + 8, h.logical_size);
  put32(p + 12, h.physical_size);
  put64(p + 16, h.logical_hash);
  put64(p + 24, h.payload_hash);
  put32(p + 36, header_check(p, frame_header_size));
}

frame_header seal_frame(frame_header h, std::span<std::byte> frame) noexcept {
  // A raw payload is the logical bytes: its hash is the one the caller already computed.
  h.payload_hash = h.format == codec::payload_format::none ? h.logical_hash
                                                          : hash(frame.subspan(frame_header_size, h.physical_size));
  encode_header(h, frame.first<frame_header_size>());
  return h;
}

frame_header seal_raw_header(std::span<const iovec> logical, std::span<std::byte, frame_header_size> out) noexcept {
  frame_header h;
  std::size_t n = 0;
  for (const auto& v : logical) n += v.iov_len;
  h.logical_size = static_cast<std::uint32_t>(n);
  h.physical_size = h.logical_size;
  h.logical_hash = hash(logical);
  h.payload_hash = h.logical_hash;
  encode_header(h, out);
  return h;
}

frame_error parse_frame_header(std::span<const std::byte, frame_header_size> bytes, frame_header& out) noexcept {
  const std::byte* p = bytes.data();
  if (p[0] != magic0 || p[1] != magic1) return frame_error::bad_magic;
  if (p[2] != std::byte{frame_version}) return frame_error::bad_version;
  // Later versions may grow the header; version 1 has exactly this length.
  if (static_cast<std::size_t>(p[3]) != frame_header_size) return frame_error::bad_header;
  if (get32(p + frame_header_size - 4) != header_check(p, frame_header_size)) return frame_error::bad_header;
  if (p[7] != std::byte{0} || get32(p + 32) != 0) return frame_error::bad_header;

  frame_header h;
  const auto fmt = static_cast<std::uint8_t>(p[4]);
  const auto prod = static_cast<std::uint8_t>(p[6]);
  if (fmt >= codec::payload_format_count || prod >= codec::producer_count) return frame_error::bad_codec;
  h.format = static_cast<codec::payload_format>(fmt);
  h.producer = static_cast<codec::producer_id>(prod);
  h.level = static_cast<std::int8_t>(p[5]);
  h.logical_size = get32(p + 8);
  h.physical_size = get32(p + 12);
  h.logical_hash = get64(p + 16);
  h.payload_hash = get64(p + 24);
  if (h.logical_size > max_logical_size || h.physical_size > max_logical_size) return frame_error::bad_sizes;
  if (h.format == codec::payload_format::none && h.physical_size != h.logical_size) return frame_error::bad_sizes;
  // A raw payload is the logical bytes: seal_frame gives it one hash for both, so a reader
  // that has checked the payload need not hash the same bytes again.
  if (h.format == codec::payload_format::none && h.payload_hash != h.logical_hash) return frame_error::bad_header;
  out = h;
  return frame_error::ok;
}

frame_error parse_frame(std::span<const std::byte> bytes, frame_view& out) noexcept {
  // The first four bytes are checked here before the length (a short buffer of another kind
  // says what it is, not "truncated"), and again by parse_frame_header.
  if (bytes.size() < 4) return frame_error::truncated;
  const std::byte* p = bytes.data();
  if (p[0] != magic0 || p[1] != magic1) return frame_error::bad_magic;
  if (p[2] != std::byte{frame_version}) return frame_error::bad_version;
  if (static_cast<std::size_t>(p[3]) != frame_header_size) return frame_error::bad_header;
  if (bytes.size() < frame_header_size) return frame_error::truncated;
  frame_header h;
  if (auto e = parse_frame_header(bytes.first<frame_header_size>(), h); e != frame_error::ok) return e;
  if (bytes.size() - frame_header_size < h.physical_size) return frame_error::truncated;

  auto payload = bytes.subspan(frame_header_size, h.physical_size);
  if (hash(payload) != h.payload_hash) return frame_error::payload_checksum;
  out.header = h;
  out.payload = payload;
  out.frame_size = frame_header_size + h.physical_size;
  return frame_error::ok;
}

frame_error verify_logical(const frame_header& h, std::span<const std::byte> logical) noexcept {
  if (logical.size() != h.logical_size) return frame_error::bad_sizes;
  return hash(logical) == h.logical_hash ? frame_error::ok : frame_error::logical_checksum;
}

}  // namespace qzfs::format
