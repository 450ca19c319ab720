// zlib's deflate writing a gzip member: the software gzip of ZFS and btrfs, kept as the
// reference the other codecs are measured against. Streams iovec by iovec; stops when the
// output capacity is reached.
#include <zlib.h>

#include "adapters.h"

namespace qzfs::codec::detail {
namespace {

class zlib_context final : public context {
 public:
  zlib_context(const codec::spec& s, std::size_t max_input) : context(s, max_input) {
    // windowBits 15 + 16: a gzip header and trailer around the deflate stream.
    if (deflateInit2(&z_, s.level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) throw std::bad_alloc();
  }
  ~zlib_context() override { deflateEnd(&z_); }

  compress_result do_compress(std::span<const iovec> in, std::size_t /*total*/, std::span<std::byte> out) noexcept override {
    if (deflateReset(&z_) != Z_OK) return {status::error, 0};
    z_.next_out = reinterpret_cast<Bytef*>(out.data());
    z_.avail_out = static_cast<uInt>(out.size());
    for (std::size_t i = 0; i <= in.size(); ++i) {
      const bool last = i == in.size();
      z_.next_in = last ? nullptr : static_cast<Bytef*>(in[i].iov_base);
      z_.avail_in = last ? 0 : static_cast<uInt>(in[i].iov_len);
      for (;;) {
        int r = deflate(&z_, last ? Z_FINISH : Z_NO_FLUSH);
        if (r == Z_STREAM_END) return {status::ok, z_.total_out};
        if (r != Z_OK && r != Z_BUF_ERROR) return {status::error, 0};
        if (z_.avail_out == 0) return {status::does_not_fit, 0};
        if (z_.avail_in == 0 && !last) break;
      }
    }
    return {status::error, 0};
  }
  status decompress(std::span<const std::byte> in, std::span<std::byte> out) noexcept override {
    return decoder_.decode(in, out);
  }
  bool gathers() const noexcept override { return false; }

 private:
  z_stream z_{};
  gzip_decoder decoder_;
};

}  // namespace

std::unique_ptr<context> make_zlib(const spec& s, std::size_t max_input) {
  return std::make_unique<zlib_context>(s, max_input);
}

}  // namespace qzfs::codec::detail
