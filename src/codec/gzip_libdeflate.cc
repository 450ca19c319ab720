// gzip levels 1-12 with libdeflate. libdeflate compresses whole buffers only: scattered input
// is gathered into the context's scratch first (measured in docs/BENCHMARKS.md). A result that
// exceeds the capacity makes libdeflate return 0 ("does not fit").
#include "adapters.h"

namespace qzfs::codec::detail {
namespace {

class libdeflate_context final : public context {
 public:
  libdeflate_context(const codec::spec& s, std::size_t max_input)
      : context(s, max_input), c_(libdeflate_alloc_compressor(s.level)), scratch_(max_input) {
    if (c_ == nullptr) throw std::bad_alloc();
  }
  ~libdeflate_context() override { libdeflate_free_compressor(c_); }

  compress_result do_compress(std::span<const iovec> in, std::size_t total, std::span<std::byte> out) noexcept override {
    const std::byte* src = contiguous(in, total, scratch_.get());
    std::size_t n = libdeflate_gzip_compress(c_, src, total, out.data(), out.size());
    if (n == 0) return {status::does_not_fit, 0};
    return {status::ok, n};
  }
  status decompress(std::span<const std::byte> in, std::span<std::byte> out) noexcept override {
    return decoder_.decode(in, out);
  }
  bool gathers() const noexcept override { return true; }

 private:
  libdeflate_compressor* c_;
  scratch_buffer scratch_;
  gzip_decoder decoder_;
};

}  // namespace

std::unique_ptr<context> make_libdeflate(const spec& s, std::size_t max_input) {
  return std::make_unique<libdeflate_context>(s, max_input);
}

}  // namespace qzfs::codec::detail
