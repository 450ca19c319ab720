#pragma once
// A thread's set of codec contexts: one per spec it compresses with, one decoder per payload
// format. Contexts are made on first use (allocation happens then, never again for that spec).
//
// Thread-safety: none; a workspace belongs to one thread (a worker, a bench thread, a test).

#include <array>
#include <memory>
#include <vector>

#include "qzfs/codec/codec.h"

namespace qzfs::codec {

class workspace {
 public:
  explicit workspace(std::size_t max_input = default_max_input) : max_input_(max_input) {}

  /// The context for `s`, made on first use. Throws like make_context() for an invalid spec.
  context& get(const spec& s);

  [[nodiscard]] compress_result compress(const spec& s, std::span<const iovec> in,
                                         std::span<std::byte> out) {
    return get(s).compress(in, out);
  }
  /// Decodes a payload of format `f`; any decoder of that format reads any producer's output.
  [[nodiscard]] status decompress(payload_format f, std::span<const std::byte> in,
                                  std::span<std::byte> out) noexcept;

 private:
  std::size_t max_input_;
  std::vector<std::unique_ptr<context>> contexts_;
  std::array<context*, payload_format_count> decoders_{};
};

}  // namespace qzfs::codec
