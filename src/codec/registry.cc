#include <stdexcept>

#include "qzfs/codec/table.h"
#include "qzfs/codec/workspace.h"

namespace qzfs::codec {

std::unique_ptr<context> make_context(const codec::spec& s, std::size_t max_input) {
  const implementation* i = find(s);
  if (i == nullptr) throw std::invalid_argument("invalid codec spec: " + to_string(s));
  if (i->make == nullptr) throw std::invalid_argument("no software codec for " + to_string(s));
  return i->make(s, max_input);
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
    // The table's decoder of the format; any producer's payload decodes with it. Looked up once
    // per format and workspace.
    const codec_info* c = find(f);
    if (c == nullptr) return status::corrupt;
    const spec decoder = spec::of(c->decoder);
    try {
      decoders_[i] = &get(decoder);
    } catch (...) {
      return status::error;
    }
  }
  return decoders_[i]->decompress(in, out);
}

}  // namespace qzfs::codec
