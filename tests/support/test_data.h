#pragma once
// Real data classes for the tests: text and binaries from the system, zeros, random bytes.

#include <sys/uio.h>

#include <cstddef>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

namespace qzfs::test {

inline std::vector<std::byte> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::vector<char> v((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = std::byte(v[i]);
  return out;
}

// Repeats `src` to fill n bytes (sources are larger than the sizes used, except the 1 MiB).
inline std::vector<std::byte> fill_from(const std::vector<std::byte>& src, std::size_t n) {
  std::vector<std::byte> out(n);
  for (std::size_t i = 0; i < n && !src.empty(); ++i) out[i] = src[i % src.size()];
  return out;
}

enum class data_class { text, binary, zeros, random };
inline const char* name(data_class c) {
  switch (c) {
    case data_class::text: return "text";
    case data_class::binary: return "binary";
    case data_class::zeros: return "zeros";
    case data_class::random: return "random";
  }
  return "?";
}

inline const std::vector<std::byte>& text_source() {
  // The project's own sources and Debian's license texts: real prose and code.
  static const std::vector<std::byte> v = [] {
    std::vector<std::byte> all;
    for (const char* p : {"/usr/share/common-licenses/GPL-3", "/usr/share/common-licenses/Apache-2.0",
                          QZFS_SOURCE_DIR "/src/cli/app.cc", QZFS_SOURCE_DIR "/src/codec/gzip_isal.cc",
                          "/usr/share/common-licenses/GPL-2", "/usr/share/common-licenses/LGPL-2.1"}) {
      auto f = read_file(p);
      all.insert(all.end(), f.begin(), f.end());
    }
    return all;
  }();
  return v;
}

inline const std::vector<std::byte>& binary_source() {
  static const std::vector<std::byte> v = read_file("/proc/self/exe");
  return v;
}

inline std::vector<std::byte> make_data(data_class c, std::size_t n, std::uint64_t seed = 1) {
  switch (c) {
    case data_class::text: return fill_from(text_source(), n);
    case data_class::binary: {
      // Skip the ELF header region so records start mid-code.
      const auto& b = binary_source();
      std::vector<std::byte> out(n);
      for (std::size_t i = 0; i < n; ++i) out[i] = b[(4096 + i) % b.size()];
      return out;
    }
    case data_class::zeros: return std::vector<std::byte>(n);
    case data_class::random: {
      std::mt19937_64 rng(seed);
      std::vector<std::byte> out(n);
      for (auto& x : out) x = std::byte(rng());
      return out;
    }
  }
  return {};
}

// Many small, unaligned pieces (sizes cycle through odd numbers), plus empty iovecs.
inline std::vector<iovec> scatter(std::vector<std::byte>& data) {
  static constexpr std::size_t sizes[] = {1, 7, 0, 13, 100, 511, 4093, 3, 65537, 999};
  std::vector<iovec> v;
  std::size_t off = 0, k = 0;
  while (off < data.size()) {
    std::size_t n = std::min(sizes[k++ % std::size(sizes)], data.size() - off);
    v.push_back({data.data() + off, n});
    off += n;
  }
  v.push_back({nullptr, 0});
  return v;
}

inline std::vector<iovec> contiguous(std::vector<std::byte>& data) {
  return {iovec{data.data(), data.size()}};
}

}  // namespace qzfs::test
