// zstd, levels 1-22 and the negative fast levels, in one ZSTD_compress2 call. Scattered input
// is gathered first: zstd's streaming API copies into its own window anyway and ran ~14%
// slower on 32-piece records (docs/decisions/0003). The frame records its content size and no checksum (the record frame has
// one), so `zstd -d` decodes a payload as it is.
#include <zstd.h>
#include <zstd_errors.h>

#include "adapters.h"

namespace qzfs::codec::detail {
namespace {

class zstd_context final : public context {
 public:
  zstd_context(const codec::spec& s, std::size_t max_input)
      : context(s, max_input), c_(ZSTD_createCCtx()), d_(ZSTD_createDCtx()), scratch_(max_input) {
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
    std::size_t n = ZSTD_compress2(c_, out.data(), out.size(), contiguous(in, total, scratch_.get()), total);
    if (!ZSTD_isError(n)) return {status::ok, n};
    return ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall ? compress_result{status::does_not_fit, 0}
                                                               : compress_result{status::error, 0};
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
  bool gathers() const noexcept override { return true; }

 private:
  ZSTD_CCtx* c_;
  ZSTD_DCtx* d_;
  scratch_buffer scratch_;
};

}  // namespace

std::unique_ptr<context> make_zstd(const spec& s, std::size_t max_input) {
  return std::make_unique<zstd_context>(s, max_input);
}

}  // namespace qzfs::codec::detail
