#include "adapters.h"

namespace qzfs::codec::detail {
namespace {

class none_context final : public context {
 public:
  none_context(const codec::spec& s, std::size_t m) : context(s, m) {}
  compress_result do_compress(std::span<const iovec> in, std::size_t total, std::span<std::byte> out) noexcept override {
    if (total > out.size()) return {status::does_not_fit, 0};
    std::byte* p = out.data();
    for (const auto& v : in) {
      if (v.iov_len != 0) std::memcpy(p, v.iov_base, v.iov_len);
      p += v.iov_len;
    }
    return {status::ok, total};
  }
  status decompress(std::span<const std::byte> in, std::span<std::byte> out) noexcept override {
    if (in.size() != out.size()) return status::corrupt;
    if (!in.empty()) std::memcpy(out.data(), in.data(), in.size());
    return status::ok;
  }
  bool gathers() const noexcept override { return false; }
};

}  // namespace

std::unique_ptr<context> make_none(const spec& s, std::size_t max_input) {
  return std::make_unique<none_context>(s, max_input);
}

}  // namespace qzfs::codec::detail
