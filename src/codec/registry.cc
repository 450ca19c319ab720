#include <stdexcept>

#include "adapters.h"
#include "qzfs/codec/workspace.h"

namespace qzfs::codec {

std::unique_ptr<context> make_context(const codec::spec& s, std::size_t max_input) {
  // Valid exactly when its name parses back to it (levels in range, engine matches format).
  if (parse_spec(to_string(s)) != s)
    throw std::invalid_argument("invalid codec spec: " + to_string(s));
  switch (s.producer) {
    case engine::none: return detail::make_none(s, max_input);
    case engine::isal: return detail::make_isal(s, max_input);
    case engine::libdeflate: return detail::make_libdeflate(s, max_input);
    case engine::zlib: return detail::make_zlib(s, max_input);
    case engine::zstd: return detail::make_zstd(s, max_input);
    case engine::lz4:
    case engine::lz4hc: return detail::make_lz4(s, max_input);
    case engine::qat: break;
  }
  throw std::invalid_argument("no software codec for " + to_string(s));
}

context& workspace::get(const spec& s) {
  for (auto& c : contexts_)
    if (c->spec() == s) return *c;
  contexts_.push_back(make_context(s, max_input_));
  return *contexts_.back();
}

status workspace::decompress(payload_format f, std::span<const std::byte> in,
                             std::span<std::byte> out) noexcept {
  auto i = static_cast<std::size_t>(f);
  if (i >= decoders_.size()) return status::corrupt;
  if (decoders_[i] == nullptr) {
    // The fastest decoder of each format; any producer's payload decodes with it.
    static constexpr spec decoder_for[] = {
        {payload_format::none, engine::none, 0},
        {payload_format::gzip, engine::libdeflate, 6},
        {payload_format::zstd, engine::zstd, 3},
        {payload_format::lz4, engine::lz4, 1},
    };
    try {
      decoders_[i] = &get(decoder_for[i]);
    } catch (...) {
      return status::error;
    }
  }
  return decoders_[i]->decompress(in, out);
}

}  // namespace qzfs::codec
