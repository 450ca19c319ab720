// zstd, levels 1-22 and the negative fast levels. Contiguous input is compressed in one call;
// scattered input is streamed iovec by iovec (zstd keeps its own window, so nothing is
// gathered here). The frame records its content size and no checksum (the record frame has
// one), so `zstd -d` decodes a payload as it is.
#include <zstd.h>
#include <zstd_errors.h>

#include "adapters.h"

namespace qzfs::codec::detail {
namespace {

class zstd_context final : public context {
 public:
  zstd_context(const codec::spec& s, std::size_t max_input)
      : context(s, max_input), c_(ZSTD_createCCtx()), d_(ZSTD_createDCtx()) {
    if (c_ == nullptr || d_ == nullptr) {
      ZSTD_freeCCtx(c_);
      ZSTD_freeDCtx(d_);
      throw std::bad_alloc();
    }
    ZSTD_CCtx_setParameter(c_, ZSTD_c_compressionLevel, s.level);
    ZSTD_CCtx_setParameter(c_, ZSTD_c_checksumFlag, 0);
    ZSTD_CCtx_setParameter(c_, ZSTD_c_contentSizeFlag, 1);
    // Hostile input must not make the decoder ask for a large window: a record is at most
    // max_input bytes, so its window needs no more than that.
    int wlog = 10;
    while ((std::size_t{1} << wlog) < max_input && wlog < 27) ++wlog;
    ZSTD_DCtx_setParameter(d_, ZSTD_d_windowLogMax, wlog);
  }
  ~zstd_context() override {
    ZSTD_freeCCtx(c_);
    ZSTD_freeDCtx(d_);
  }

  compress_result do_compress(std::span<const iovec> in, std::size_t total, std::span<std::byte> out) noexcept override {
    if (in.size() <= 1) {
      std::size_t n = ZSTD_compress2(c_, out.data(), out.size(), in.empty() ? nullptr : in[0].iov_base, total);
      return result(n);
    }
    ZSTD_CCtx_reset(c_, ZSTD_reset_session_only);
    ZSTD_CCtx_setPledgedSrcSize(c_, total);
    ZSTD_outBuffer o{out.data(), out.size(), 0};
    for (std::size_t i = 0; i < in.size(); ++i) {
      const bool last = i + 1 == in.size();
      ZSTD_inBuffer b{in[i].iov_base, in[i].iov_len, 0};
      for (;;) {
        std::size_t r = ZSTD_compressStream2(c_, &o, &b, last ? ZSTD_e_end : ZSTD_e_continue);
        if (ZSTD_isError(r)) return result(r);
        if (last ? r == 0 : b.pos == b.size) break;
        if (o.pos == o.size) {  // output full, work left: it cannot fit
          ZSTD_CCtx_reset(c_, ZSTD_reset_session_only);
          return {status::does_not_fit, 0};
        }
      }
    }
    return {status::ok, o.pos};
  }

  status decompress(std::span<const std::byte> in, std::span<std::byte> out) noexcept override {
    if (ZSTD_getFrameContentSize(in.data(), in.size()) != out.size()) return status::corrupt;
    if (ZSTD_findFrameCompressedSize(in.data(), in.size()) != in.size()) return status::corrupt;
    std::size_t n = ZSTD_decompressDCtx(d_, out.data(), out.size(), in.data(), in.size());
    if (ZSTD_isError(n)) {
      ZSTD_DCtx_reset(d_, ZSTD_reset_session_only);
      return ZSTD_getErrorCode(n) == ZSTD_error_memory_allocation ? status::error : status::corrupt;
    }
    return n == out.size() ? status::ok : status::corrupt;
  }
  bool gathers() const noexcept override { return false; }

 private:
  static compress_result result(std::size_t n) {
    if (!ZSTD_isError(n)) return {status::ok, n};
    return ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall ? compress_result{status::does_not_fit, 0}
                                                               : compress_result{status::error, 0};
  }
  ZSTD_CCtx* c_;
  ZSTD_DCtx* d_;
};

}  // namespace

std::unique_ptr<context> make_zstd(const spec& s, std::size_t max_input) {
  return std::make_unique<zstd_context>(s, max_input);
}

}  // namespace qzfs::codec::detail
