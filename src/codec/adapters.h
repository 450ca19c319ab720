#pragma once
// Internal to codec/: the adapters' factories and the helpers they share.

#include <libdeflate.h>

#include <cstring>
#include <memory>
#include <new>

#include "qzfs/codec/codec.h"

namespace qzfs::codec::detail {

std::unique_ptr<context> make_none(const spec& s, std::size_t max_input);
std::unique_ptr<context> make_isal(const spec& s, std::size_t max_input);
std::unique_ptr<context> make_libdeflate(const spec& s, std::size_t max_input);
std::unique_ptr<context> make_zlib(const spec& s, std::size_t max_input);
std::unique_ptr<context> make_zstd(const spec& s, std::size_t max_input);
std::unique_ptr<context> make_lz4(const spec& s, std::size_t max_input);

/// Contiguous view of `in`: the single buffer itself, or `in` gathered into `scratch`
/// (at least total bytes long). The one copy an adapter over a contiguous-only library makes.
inline const std::byte* contiguous(std::span<const iovec> in, std::size_t total, std::byte* scratch) noexcept {
  // Some library paths (lz4hc's optimal parser) read through a null source even for 0 bytes.
  if (total == 0) return scratch;
  if (in.size() == 1) return static_cast<const std::byte*>(in[0].iov_base);
  std::byte* p = scratch;
  for (const auto& v : in) {
    if (v.iov_len != 0) std::memcpy(p, v.iov_base, v.iov_len);
    p += v.iov_len;
  }
  return scratch;
}

/// Owning scratch memory, made (and zeroed) once per context.
struct scratch_buffer {
  std::unique_ptr<std::byte[]> data;
  // Zeroed: libraries may read a working area before writing it.
  explicit scratch_buffer(std::size_t n) : data(new std::byte[n == 0 ? 1 : n]()) {}
  std::byte* get() noexcept { return data.get(); }
};

/// The libdeflate decompressor owned by every gzip context: it reads any RFC 1952 member and
/// checks its CRC-32 and ISIZE.
struct gzip_decoder {
  libdeflate_decompressor* d;
  gzip_decoder() : d(libdeflate_alloc_decompressor()) {
    if (d == nullptr) throw std::bad_alloc();
  }
  ~gzip_decoder() { libdeflate_free_decompressor(d); }
  gzip_decoder(const gzip_decoder&) = delete;
  gzip_decoder& operator=(const gzip_decoder&) = delete;

  status decode(std::span<const std::byte> in, std::span<std::byte> out) noexcept {
    std::size_t used_in = 0, used_out = 0;
    auto r = libdeflate_gzip_decompress_ex(d, in.data(), in.size(), out.data(), out.size(),
                                           &used_in, &used_out);
    if (r != LIBDEFLATE_SUCCESS || used_in != in.size() || used_out != out.size()) return status::corrupt;
    return status::ok;
  }
};

}  // namespace qzfs::codec::detail
