// lz4 and lz4hc: one LZ4 block per record. LZ4's block API needs contiguous input, so
// scattered input is gathered into the context's scratch. With a capacity below
// LZ4_compressBound() LZ4 runs in limited-output mode and aborts as soon as it would overflow.
#include <lz4.h>
#include <lz4hc.h>

#include <climits>

#include "adapters.h"

namespace qzfs::codec::detail {
namespace {

class lz4_context final : public context {
 public:
  lz4_context(const codec::spec& s, std::size_t max_input)
      : context(s, max_input),
        hc_(s.producer == producer_id::lz4hc),
        state_(static_cast<std::size_t>(hc_ ? LZ4_sizeofStateHC() : LZ4_sizeofState())),
        scratch_(max_input) {}

  compress_result do_compress(std::span<const iovec> in, std::size_t total, std::span<std::byte> out) noexcept override {
    const auto* src = reinterpret_cast<const char*>(contiguous(in, total, scratch_.get()));
    const int cap = static_cast<int>(std::min<std::size_t>(out.size(), INT_MAX));
    auto* dst = reinterpret_cast<char*>(out.data());
    int n = hc_ ? LZ4_compress_HC_extStateHC(state_.get(), src, dst, static_cast<int>(total), cap, spec().level)
                : LZ4_compress_fast_extState(state_.get(), src, dst, static_cast<int>(total), cap, 1);
    if (n <= 0) return {status::does_not_fit, 0};
    return {status::ok, static_cast<std::size_t>(n)};
  }
  status decompress(std::span<const std::byte> in, std::span<std::byte> out) noexcept override {
    if (in.size() > INT_MAX || out.size() > INT_MAX) return status::corrupt;
    int n = LZ4_decompress_safe(reinterpret_cast<const char*>(in.data()), reinterpret_cast<char*>(out.data()),
                                static_cast<int>(in.size()), static_cast<int>(out.size()));
    return n >= 0 && static_cast<std::size_t>(n) == out.size() ? status::ok : status::corrupt;
  }
  bool gathers() const noexcept override { return true; }

 private:
  bool hc_;
  scratch_buffer state_;
  scratch_buffer scratch_;
};

}  // namespace

std::unique_ptr<context> make_lz4(const spec& s, std::size_t max_input) {
  return std::make_unique<lz4_context>(s, max_input);
}

}  // namespace qzfs::codec::detail
