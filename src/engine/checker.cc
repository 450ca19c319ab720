#include "qzfs/engine/checker.h"

#include <algorithm>
#include <functional>
#include <array>
#include <cmath>
#include <cstring>

namespace qzfs::engine {

bool is_zero(std::span<const iovec> in) noexcept {
  static constexpr unsigned char zeros[4096] = {};
  for (const auto& v : in) {
    const auto* p = static_cast<const unsigned char*>(v.iov_base);
    std::size_t n = v.iov_len;
    // memcmp against a zero page runs at memory speed and stops at the first non-zero byte.
    while (n >= sizeof zeros) {
      if (std::memcmp(p, zeros, sizeof zeros) != 0) return false;
      p += sizeof zeros;
      n -= sizeof zeros;
    }
    if (n != 0 && std::memcmp(p, zeros, n) != 0) return false;
  }
  return true;
}

namespace {
constexpr std::size_t sample_len = 16, sample_stride = 256;
// Below this, a record is sampled whole.
constexpr std::size_t whole_below = 16384;  // enough samples for the entropy estimate to mean something
}  // namespace

sample_result sample(std::span<const iovec> in) noexcept {
  // Four histograms, summed at the end: runs of one byte value (zeros, spaces) would otherwise
  // make every increment wait for the one before it.
  std::array<std::array<std::uint32_t, 256>, 4> part{};
  std::size_t total = 0;
  for (const auto& v : in) total += v.iov_len;
  const bool whole = total < whole_below;
  std::uint32_t n = 0;
  std::size_t pos = 0;  // logical offset of the current iovec
  for (const auto& v : in) {
    const auto* p = static_cast<const unsigned char*>(v.iov_base);
    const std::size_t len = v.iov_len;
    if (whole) {
      for (std::size_t i = 0; i < len; ++i) ++part[i & 3][p[i]];
      n += static_cast<std::uint32_t>(len);
    } else {
      // The windows [k * stride, k * stride + len) of the logical record that meet this iovec.
      std::size_t w = pos / sample_stride * sample_stride;
      for (; w < pos + len; w += sample_stride) {
        const std::size_t a = std::max(w, pos), b = std::min(w + sample_len, pos + len);
        if (a >= b) continue;
        const unsigned char* q = p + (a - pos);
        const std::size_t m = b - a;
        if (m == sample_len) {
          for (std::size_t i = 0; i < sample_len; i += 4) {
            ++part[0][q[i]];
            ++part[1][q[i + 1]];
            ++part[2][q[i + 2]];
            ++part[3][q[i + 3]];
          }
        } else {
          for (std::size_t i = 0; i < m; ++i) ++part[i & 3][q[i]];
        }
        n += static_cast<std::uint32_t>(m);
      }
    }
    pos += len;
  }
  std::array<std::uint32_t, 256> hist;
  for (std::size_t c = 0; c < 256; ++c) hist[c] = part[0][c] + part[1][c] + part[2][c] + part[3][c];
  sample_result r;
  r.sampled = n;
  if (n == 0) return r;
  double h = 0;
  for (auto c : hist) {
    if (c == 0) continue;
    ++r.byte_set;
    const double p = static_cast<double>(c) / n;
    h -= p * std::log2(p);
  }
  r.entropy_bits = h;
  // Text, SAM, FASTQ, source: few distinct bytes -> compressible whatever the entropy says.
  if (r.byte_set <= 64 || h < 6.5) return r;
  r.verdict = compressibility::weak;
  if (h < 7.5) return r;
  // The core set is only needed from here on (sorting 256 counts for every record cost more
  // than the sampling itself).
  std::array<std::uint32_t, 256> sorted = hist;
  std::sort(sorted.begin(), sorted.end(), std::greater<>());
  std::uint64_t acc = 0;
  for (auto c : sorted) {
    if (acc * 10 >= static_cast<std::uint64_t>(n) * 9) break;
    acc += c;
    ++r.core_set;
  }
  // Near-uniform bytes: compressed, encrypted or random data. 7.5 bits and a core set of at
  // least 200 values leave no room for the 10% a record must save.
  if (r.core_set >= 200) r.verdict = compressibility::incompressible;
  return r;
}

}  // namespace qzfs::engine
