// gzip levels 0-3 with ISA-L igzip. Contiguous input goes through the one-shot (stateless)
// deflate; scattered input is streamed iovec by iovec through the stateful deflate, so it is
// never gathered. Both stop when the output capacity is reached.
#include <isa-l/igzip_lib.h>

#include "adapters.h"

namespace qzfs::codec::detail {
namespace {

std::size_t level_buf_size(int level) {
  switch (level) {
    case 1: return ISAL_DEF_LVL1_DEFAULT;
    case 2: return ISAL_DEF_LVL2_DEFAULT;
    case 3: return ISAL_DEF_LVL3_DEFAULT;
    default: return 0;
  }
}

class isal_context final : public context {
 public:
  isal_context(const codec::spec& s, std::size_t max_input)
      : context(s, max_input), stream_(new isal_zstream), level_buf_(level_buf_size(s.level)) {}

  compress_result do_compress(std::span<const iovec> in, std::size_t total, std::span<std::byte> out) noexcept override {
    isal_zstream& z = *stream_;
    const bool one_shot = in.size() <= 1;
    if (one_shot) isal_deflate_stateless_init(&z); else isal_deflate_init(&z);
    z.level = static_cast<std::uint32_t>(spec().level);
    z.level_buf = spec().level > 0 ? reinterpret_cast<std::uint8_t*>(level_buf_.get()) : nullptr;
    z.level_buf_size = static_cast<std::uint32_t>(level_buf_size(spec().level));
    z.gzip_flag = IGZIP_GZIP;
    z.next_out = reinterpret_cast<std::uint8_t*>(out.data());
    z.avail_out = static_cast<std::uint32_t>(out.size());

    if (one_shot) {
      z.next_in = in.empty() ? nullptr : static_cast<std::uint8_t*>(in[0].iov_base);
      z.avail_in = static_cast<std::uint32_t>(total);
      z.end_of_stream = 1;
      int r = isal_deflate_stateless(&z);
      if (r == STATELESS_OVERFLOW) return {status::does_not_fit, 0};
      if (r != COMP_OK) return {status::error, 0};
      return {status::ok, z.total_out};
    }

    for (std::size_t i = 0; i < in.size(); ++i) {
      z.next_in = static_cast<std::uint8_t*>(in[i].iov_base);
      z.avail_in = static_cast<std::uint32_t>(in[i].iov_len);
      z.end_of_stream = i + 1 == in.size();
      do {
        if (isal_deflate(&z) != COMP_OK) return {status::error, 0};
        // Output full with input or buffered state left: the payload cannot fit. Stop here.
        if (z.avail_out == 0 && z.internal_state.state != ZSTATE_END) return {status::does_not_fit, 0};
      } while (z.avail_in != 0 || (z.end_of_stream && z.internal_state.state != ZSTATE_END));
    }
    return {status::ok, z.total_out};
  }

  status decompress(std::span<const std::byte> in, std::span<std::byte> out) noexcept override {
    return decoder_.decode(in, out);
  }
  bool gathers() const noexcept override { return false; }

 private:
  std::unique_ptr<isal_zstream> stream_;
  scratch_buffer level_buf_;
  gzip_decoder decoder_;
};

}  // namespace

std::unique_ptr<context> make_isal(const spec& s, std::size_t max_input) {
  return std::make_unique<isal_context>(s, max_input);
}

}  // namespace qzfs::codec::detail
