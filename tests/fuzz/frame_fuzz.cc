// The whole read path of a record on untrusted bytes: parse the frame, decode its payload,
// verify the logical checksum. Nothing may crash, hang, leak or read out of bounds; a frame
// that passes must decode to bytes that match its checksum.
#include <cstdlib>
#include <vector>

#include "qzfs/codec/workspace.h"
#include "qzfs/format/frame.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace qzfs;
  static codec::workspace ws;
  std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  format::frame_view v;
  if (format::parse_frame(bytes, v) != format::frame_error::ok) return 0;
  if (v.frame_size > size || v.payload.size() != v.header.physical_size) std::abort();
  std::vector<std::byte> out(v.header.logical_size);
  if (ws.decompress(v.header.format, v.payload, out) != codec::status::ok) return 0;
  (void)format::verify_logical(v.header, out);
  return 0;
}
