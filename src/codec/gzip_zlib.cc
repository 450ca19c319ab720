// zlib's deflate writing a gzip member: the software gzip of ZFS and btrfs, kept as the
// reference the other codecs are measured against. One deflate(Z_FINISH) call over gathered
// input, as ZFS and btrfs call it; deflate stops when the output capacity is reached.
#include <zlib.h>

#include "adapters.h"

namespace qzfs::codec::detail {
namespace {

class zlib_context final : public context {
 public:
  zlib_context(const codec::spec& s, std::size_t max_input) : context(s, max_input), scratch_(max_input) {
    // windowBits 15 + 16: a gzip header and trailer around the deflate stream.
    if (deflateInit2(&z_, s.level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) throw std::bad_alloc();
  }
  ~zlib_context() override { deflateEnd(&z_); }

  compress_result do_compress(std::span<const iovec> in, std::size_t total, std::span<std::byte> out) noexcept override {
    if (deflateReset(&z_) != Z_OK) return {status::error, 0};
    z_.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(contiguous(in, total, scratch_.get())));
    z_.avail_in = static_cast<uInt>(total);
    z_.next_out = reinterpret_cast<Bytef*>(out.data());
    z_.avail_out = static_cast<uInt>(out.size());
    int r = deflate(&z_, Z_FINISH);
    if (r == Z_STREAM_END) return {status::ok, z_.total_out};
    // Z_OK or Z_BUF_ERROR with the output full: deflate stopped at the capacity.
    if ((r == Z_OK || r == Z_BUF_ERROR) && z_.avail_out == 0) return {status::does_not_fit, 0};
    return {status::error, 0};
  }

  status decompress(std::span<const std::byte> in, std::span<std::byte> out) noexcept override {
    return decoder_.decode(in, out);
  }
  bool gathers() const noexcept override { return true; }

 private:
  z_stream z_{};
  scratch_buffer scratch_;
  gzip_decoder decoder_;
};

}  // namespace

std::unique_ptr<context> make_zlib(const spec& s, std::size_t max_input) {
  return std::make_unique<zlib_context>(s, max_input);
}

}  // namespace qzfs::codec::detail
