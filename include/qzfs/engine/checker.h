#pragma once
// engine/: the compressibility checker — what to skip before any codec runs.
//
// - all-zero records become holes (no codec, no bytes written);
// - a sampling heuristic judges the rest: 16 bytes from every 256 (btrfs's sampling), a byte
//   histogram over the sample, the number of distinct byte values, the "core set" (how many
//   values make up 90% of the sample) and the Shannon entropy of the sample. It answers
//   `incompressible` (skip: store raw), `weak` (likely to shrink little: a cheap codec), or
//   `compressible`. Thresholds and their reasons are in docs/ENGINE.md.
//
// Thread-safety: pure functions.

#include <sys/uio.h>

#include <cstdint>
#include <span>

namespace qzfs::engine {

/// True when every byte is zero (an empty list counts as zero).
[[nodiscard]] bool is_zero(std::span<const iovec> in) noexcept;

enum class compressibility : std::uint8_t { compressible, weak, incompressible };

struct sample_result {
  compressibility verdict = compressibility::compressible;
  double entropy_bits = 0;   // Shannon entropy of the sample, bits per byte (0..8)
  unsigned byte_set = 0;     // distinct byte values in the sample
  unsigned core_set = 0;     // byte values covering 90% of the sample; only worked out (and
                             // only needed) when there are over 64 values at 7.5 bits or more
  std::uint32_t sampled = 0; // bytes looked at
};

[[nodiscard]] sample_result sample(std::span<const iovec> in) noexcept;

}  // namespace qzfs::engine
