// The codec table (include/qzfs/codec/table.h): the one place codecs, their names, levels,
// defaults, implementations and decoders are listed.
#include "qzfs/codec/table.h"

#include "adapters.h"

namespace qzfs::codec {
namespace {

using detail::make_isal, detail::make_libdeflate, detail::make_lz4, detail::make_none, detail::make_zlib,
    detail::make_zstd;

// zstd: ZSTD_maxCLevel() is 22 in every zstd since 1.3 (tests/unit/codec_test.cc checks the
// library's); -100 is the fastest level offered (the library goes to -131072), kept well inside
// the frame's signed level byte.
// gzip: ISA-L igzip for 1-3, libdeflate for 4-12 (docs/decisions/0001); ISA-L level 0 is not
// offered (streamed, it expands incompressible data by ~23%). `gzip` alone is gzip-1, the level
// QZFS runs on QAT (docs/decisions/0008).
// clang-format off
constexpr std::array<codec_info, payload_format_count> table = {{
  // codec: id           name    alias  default decoder
  {payload_format::none, "none", "off", 0,      producer_id::none, {{
    // implementation: id  own name     levels    default serves    factory          about (help)                               sign
    {producer_id::none,       "none",       {0, 0},   0,      {0, 0},   make_none,       "the bytes as they are"},
  }}},
  {payload_format::gzip, "gzip", "",    1,      producer_id::libdeflate, {{
    {producer_id::isal,       "isal",       {1, 3},   1,      {1, 3},   make_isal,       "ISA-L igzip"},
    {producer_id::libdeflate, "libdeflate", {1, 12},  6,      {4, 12},  make_libdeflate, "libdeflate"},
    {producer_id::zlib,       "zlib",       {1, 9},   6,      {},       make_zlib,       "zlib, the reference gzip of ZFS and btrfs"},
    {producer_id::qat,        "qat",        {1, 9},   1,      {},       nullptr,         "Intel QAT through QATzip (accel=qat)"},
  }}},
  {payload_format::zstd, "zstd", "",    3,      producer_id::zstd, {{
    {producer_id::zstd,       "zstd",       {1, 22},  3,      {1, 22},  make_zstd,       "zstd"},
    {producer_id::zstd,       "zstd-fast",  {1, 100}, 1,      {},       make_zstd,       "zstd's negative levels",                   -1},
  }}},
  {payload_format::lz4,  "lz4",  "",    1,      producer_id::lz4, {{
    {producer_id::lz4,        "lz4",        {1, 1},   1,      {1, 1},   make_lz4,        "LZ4 block"},
    {producer_id::lz4hc,      "lz4hc",      {1, 12},  9,      {},       make_lz4,        "LZ4 HC, same block format"},
  }}},
}};
// clang-format on

// What the rest of the code relies on, checked where the table is written.
consteval bool well_formed() {
  bool seen[producer_count] = {};
  for (std::size_t f = 0; f < table.size(); ++f) {
    const auto& c = table[f];
    if (static_cast<std::size_t>(c.id) != f || c.name.empty()) return false;  // indexed by format
    if (c.levels().empty() || !c.levels().contains(c.default_level)) return false;
    bool decoder_made = false;
    for (const auto& i : c.impls) {
      if (i.name.empty()) continue;
      if (static_cast<std::size_t>(i.id) >= producer_count) return false;
      seen[static_cast<std::size_t>(i.id)] = true;
      if (i.levels.empty() || !i.levels.contains(i.default_level)) return false;
      if (i.sign != 1 && i.sign != -1) return false;
      if (!i.serves.empty() && (i.sign != 1 || i.serves.min < i.levels.min || i.serves.max > i.levels.max)) return false;
      if (i.id == c.decoder && i.make != nullptr && i.sign == 1) decoder_made = true;
      for (const auto& j : c.impls)  // serves ranges do not overlap
        if (&i != &j && !j.name.empty() && !i.serves.empty() && !j.serves.empty() && i.serves.min <= j.serves.max &&
            j.serves.min <= i.serves.max)
          return false;
    }
    if (!decoder_made) return false;
  }
  for (bool s : seen)
    if (!s) return false;  // every producer number has a row
  return true;
}
static_assert(well_formed(), "the codec table is inconsistent");

}  // namespace

std::span<const codec_info, payload_format_count> codecs() noexcept { return table; }

const codec_info* find(payload_format f) noexcept {
  const auto i = static_cast<std::size_t>(f);
  return i < table.size() ? &table[i] : nullptr;
}

const implementation* find(producer_id e) noexcept {
  for (const auto& c : table)
    for (const auto& i : c.impls)
      if (!i.name.empty() && i.id == e) return &i;
  return nullptr;
}

const implementation* find(const spec& s) noexcept {
  const codec_info* c = find(s.format);
  if (c == nullptr) return nullptr;
  for (const auto& i : c->impls)
    if (!i.name.empty() && i.id == s.producer && i.serves.contains(s.level)) return &i;
  for (const auto& i : c->impls)
    if (!i.name.empty() && i.id == s.producer && i.levels.contains(i.sign * s.level)) return &i;
  return nullptr;
}

}  // namespace qzfs::codec
