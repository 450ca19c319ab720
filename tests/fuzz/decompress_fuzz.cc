// Every decoder on hostile payloads, and a differential round trip through every compressor.
// Input: [selector byte][expected size: 3 bytes, little-endian][payload...]
// - selector < 4: decode the payload as that payload format into exactly `expected size`
//   bytes; it must be refused or fill exactly that many bytes.
// - otherwise: compress the payload with the codec the selector picks (capacity = expected
//   size), and when it fits, decoding must give the payload back.
#include <cstdlib>
#include <cstring>
#include <vector>

#include "qzfs/codec/workspace.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace qzfs::codec;
  static workspace ws(256 * 1024);
  static const spec specs[] = {spec::gzip(1), spec::gzip(6),  spec::zlib(1),     spec::zstd(1),
                               spec::zstd(-3), spec::lz4(), spec::lz4hc(4), spec::none()};
  if (size < 4) return 0;
  const std::uint8_t sel = data[0];
  const std::size_t expect = (data[1] | (data[2] << 8) | (data[3] << 16)) % (256 * 1024 + 1);
  std::span<const std::byte> payload(reinterpret_cast<const std::byte*>(data + 4), size - 4);
  if (sel < payload_format_count) {
    std::vector<std::byte> out(expect);
    (void)ws.decompress(static_cast<payload_format>(sel), payload, out);
    return 0;
  }
  if (payload.size() > 256 * 1024) return 0;
  const spec& s = specs[sel % std::size(specs)];
  // Scatter the input in pieces decided by the selector, to cover the streaming paths.
  std::vector<iovec> iov;
  const std::size_t piece = 1 + sel % 61;
  for (std::size_t off = 0; off < payload.size(); off += piece)
    iov.push_back({const_cast<std::byte*>(payload.data() + off), std::min(piece, payload.size() - off)});
  std::vector<std::byte> packed(expect);
  auto r = ws.compress(s, iov, packed);
  if (r.st == status::error) std::abort();
  if (r.st != status::ok) return 0;
  if (r.size > expect) std::abort();
  std::vector<std::byte> back(payload.size());
  if (ws.decompress(s.format, std::span(packed).first(r.size), back) != status::ok) std::abort();
  if (!back.empty() && std::memcmp(back.data(), payload.data(), back.size()) != 0) std::abort();
  return 0;
}
