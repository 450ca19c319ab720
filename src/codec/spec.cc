#include <zstd.h>

#include <charconv>
#include <string>

#include "qzfs/codec/codec.h"

namespace qzfs::codec {
namespace {

std::optional<int> parse_int(std::string_view s) {
  int v = 0;
  if (s.empty()) return std::nullopt;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size()) return std::nullopt;
  return v;
}

// "name" -> def_level, "name-N" -> N; nullopt when the level is not an integer.
std::optional<int> level_after(std::string_view name, std::string_view prefix, int def_level) {
  if (name == prefix) return def_level;
  if (name.size() <= prefix.size() + 1 || name.substr(0, prefix.size()) != prefix ||
      name[prefix.size()] != '-')
    return std::nullopt;
  return parse_int(name.substr(prefix.size() + 1));
}

constexpr int zstd_fast_min = -100;  // fits the frame's signed level byte with room to spare

std::optional<spec> checked(spec s) {
  auto in = [&](int lo, int hi) { return s.level >= lo && s.level <= hi; };
  bool ok = false;
  switch (s.producer) {
    case engine::none: ok = s.level == 0; break;
    case engine::isal: ok = in(1, 3); break;  // level 0 expands incompressible data by ~23% when streamed
    case engine::libdeflate: ok = in(1, 12); break;
    case engine::zlib: ok = in(1, 9); break;
    case engine::zstd: ok = s.level != 0 && in(std::max(zstd_fast_min, ZSTD_minCLevel()), ZSTD_maxCLevel()); break;
    case engine::lz4: ok = s.level == 1; break;
    case engine::lz4hc: ok = in(1, 12); break;
    case engine::qat: ok = in(1, 9); break;
  }
  if (!ok) return std::nullopt;
  return s;
}

}  // namespace

std::optional<spec> parse_spec(std::string_view name) noexcept {
  if (name == "none" || name == "off") return spec{payload_format::none, engine::none, 0};
  if (name == "lz4") return spec{payload_format::lz4, engine::lz4, 1};
  if (auto l = level_after(name, "lz4hc", 9)) return checked({payload_format::lz4, engine::lz4hc, *l});
  if (auto l = level_after(name, "zstd-fast", 1)) return checked({payload_format::zstd, engine::zstd, -*l});
  if (auto l = level_after(name, "zstd", 3)) return checked({payload_format::zstd, engine::zstd, *l});
  if (auto l = level_after(name, "gzip", 6)) {
    // The split of DESIGN.md: ISA-L igzip where it is fastest, libdeflate for the ratio levels.
    if (*l < 1) return std::nullopt;  // gzip levels are 1-12; isal-0 names ISA-L's level 0
    return checked({payload_format::gzip, *l <= 3 ? engine::isal : engine::libdeflate, *l});
  }
  if (auto l = level_after(name, "isal", 1)) return checked({payload_format::gzip, engine::isal, *l});
  if (auto l = level_after(name, "libdeflate", 6)) return checked({payload_format::gzip, engine::libdeflate, *l});
  if (auto l = level_after(name, "zlib", 6)) return checked({payload_format::gzip, engine::zlib, *l});
  return std::nullopt;
}

std::string to_string(const spec& s) {
  switch (s.producer) {
    case engine::none: return "none";
    case engine::lz4: return "lz4";
    case engine::lz4hc: return "lz4hc-" + std::to_string(s.level);
    case engine::zstd:
      return s.level < 0 ? "zstd-fast-" + std::to_string(-s.level) : "zstd-" + std::to_string(s.level);
    case engine::isal:
      return "gzip-" + std::to_string(s.level);
    case engine::libdeflate:
      return (s.level <= 3 ? "libdeflate-" : "gzip-") + std::to_string(s.level);
    case engine::zlib: return "zlib-" + std::to_string(s.level);
    case engine::qat: return "qat-gzip-" + std::to_string(s.level);
  }
  return "unknown";
}

std::string spec_help() {
  return "none | lz4 | lz4hc-N (1-12) | gzip-N (1-3 ISA-L igzip, 4-12 libdeflate; gzip = gzip-6) | "
         "zstd-N (1-" + std::to_string(ZSTD_maxCLevel()) + "; zstd = zstd-3) | zstd-fast-N (1-" +
         std::to_string(-std::max(zstd_fast_min, ZSTD_minCLevel())) +
         ") | isal-N (1-3) | libdeflate-N (1-12) | zlib-N (1-9, reference)";
}

std::string_view to_string(status s) noexcept {
  switch (s) {
    case status::ok: return "ok";
    case status::does_not_fit: return "does not fit";
    case status::corrupt: return "corrupt";
    case status::error: return "error";
  }
  return "unknown";
}

std::string_view to_string(payload_format f) noexcept {
  switch (f) {
    case payload_format::none: return "none";
    case payload_format::gzip: return "gzip";
    case payload_format::zstd: return "zstd";
    case payload_format::lz4: return "lz4";
  }
  return "unknown";
}

std::string_view to_string(engine e) noexcept {
  switch (e) {
    case engine::none: return "none";
    case engine::isal: return "isal";
    case engine::libdeflate: return "libdeflate";
    case engine::zlib: return "zlib";
    case engine::zstd: return "zstd";
    case engine::lz4: return "lz4";
    case engine::lz4hc: return "lz4hc";
    case engine::qat: return "qat";
  }
  return "unknown";
}

}  // namespace qzfs::codec
