// gzip levels 1-3 with ISA-L igzip, through its one-shot (stateless) deflate, which returns
// STATELESS_OVERFLOW when the output capacity is reached. Scattered input is gathered first:
// the streaming deflate copies every byte into its own window anyway and runs ~30% slower on
// 32-piece records (docs/decisions/0003).
#include <isa-l/igzip_lib.h>

#include "adapters.h"

namespace qzfs::codec::detail {
namespace {

std::size_t level_buf_size(int level) {
  switch (level) {
    case 0: return 0;
    case 1: return ISAL_DEF_LVL1_DEFAULT;
    case 2: return ISAL_DEF_LVL2_DEFAULT;
    case 3: return ISAL_DEF_LVL3_DEFAULT;
    default: return 0;
  }
}

class isal_context final : public context {
 public:
  isal_context(const codec::spec& s, std::size_t max_input)
      : context(s, max_input), stream_(new isal_zstream()), level_buf_(level_buf_size(s.level)), scratch_(max_input) {}

  compress_result do_compress(std::span<const iovec> in, std::size_t total, std::span<std::byte> out) noexcept override {
    isal_zstream& z = *stream_;
    isal_deflate_stateless_init(&z);
    z.level = static_cast<std::uint32_t>(spec().level);
    z.level_buf = reinterpret_cast<std::uint8_t*>(level_buf_.get());
    z.level_buf_size = static_cast<std::uint32_t>(level_buf_size(spec().level));
    z.gzip_flag = IGZIP_GZIP;
    // stateless_init leaves hist_bits alone; a stale value shrinks the window and the ratio
    // varies with whatever the memory held before. 0 = the full 32 KiB window.
    z.hist_bits = 0;
    z.next_in = reinterpret_cast<std::uint8_t*>(const_cast<std::byte*>(contiguous(in, total, scratch_.get())));
    z.avail_in = static_cast<std::uint32_t>(total);
    z.end_of_stream = 1;
    z.next_out = reinterpret_cast<std::uint8_t*>(out.data());
    z.avail_out = static_cast<std::uint32_t>(out.size());
    int r = isal_deflate_stateless(&z);
    if (r == STATELESS_OVERFLOW) return {status::does_not_fit, 0};
    if (r != COMP_OK) return {status::error, 0};
    return {status::ok, z.total_out};
  }

  status decompress(std::span<const std::byte> in, std::span<std::byte> out) noexcept override {
    return decoder_.decode(in, out);
  }
  bool gathers() const noexcept override { return true; }

 private:
  std::unique_ptr<isal_zstream> stream_;
  scratch_buffer level_buf_;
  scratch_buffer scratch_;
  gzip_decoder decoder_;
};

}  // namespace

std::unique_ptr<context> make_isal(const spec& s, std::size_t max_input) {
  return std::make_unique<isal_context>(s, max_input);
}

}  // namespace qzfs::codec::detail
