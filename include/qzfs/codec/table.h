#pragma once
// The one table of codecs (after OpenZFS's zio_compress_table and DwarFS's list of compressions).
// One row per codec, indexed by its payload format (the stable numbers of ids.h); each row lists
// the implementations that produce that format, the names and levels that choose them, and the
// one whose context decodes every payload of the format. Parsing and naming specs, level ranges
// and defaults, factories, the decoder a workspace uses and the help text all read this table;
// nothing else in the code base lists codecs or their levels.
//
// Adding a codec: its numbers in ids.h, one row in src/codec/table.cc, its adapter file.
// Adding an implementation of an existing format: one line in that row, its adapter file.
//
// Thread-safety: the table is constant and constant-initialised (usable by other translation
// units' static initialisers); every function here is thread-safe.

#include <array>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "qzfs/codec/codec.h"

namespace qzfs::codec {

struct level_range {
  int min = 0, max = -1;  // empty unless set
  [[nodiscard]] constexpr bool contains(int l) const noexcept { return l >= min && l <= max; }
  [[nodiscard]] constexpr bool empty() const noexcept { return max < min; }
  [[nodiscard]] constexpr bool single() const noexcept { return min == max; }
};

using factory = std::unique_ptr<context> (*)(const spec& s, std::size_t max_input);

/// One implementation of a codec (a library), or a second name of one (zstd's fast levels).
struct implementation {
  producer_id id = producer_id::none;
  /// Its own name: "isal-2", "libdeflate-2", "zlib-6". The first entry of an id also names the
  /// implementation in statistics (to_string(producer_id)).
  std::string_view name;
  /// Levels under its own name (as written after the name when sign is -1).
  level_range levels;
  /// What its own name alone means.
  int default_level = 0;
  /// The levels of the codec's name it makes: "gzip-2" is ISA-L's. The serves ranges of a row
  /// do not overlap; together they are the codec's levels. Empty: reached by its own name only.
  level_range serves;
  /// Makes a context; nullptr: no software implementation (the accelerator's output, which the
  /// row's decoder reads; such names are not accepted by parse_spec).
  factory make = nullptr;
  /// For help text.
  std::string_view about;
  /// -1: "name-N" is level -N (zstd-fast-5 is zstd level -5).
  int sign = 1;
};

inline constexpr std::size_t max_implementations = 4;

/// One codec: one payload format.
struct codec_info {
  payload_format id = payload_format::none;
  /// The codec's name ("gzip"; "gzip-N" for its levels) and the format's name in statistics.
  std::string_view name;
  /// Another name for the codec alone ("off" for none); may be empty.
  std::string_view alias;
  /// What the name alone means, everywhere: mount and pack policies, bench, the API's named
  /// constructors (docs/decisions/0008).
  int default_level = 0;
  /// The implementation whose context decodes every payload of this format, whoever made it.
  producer_id decoder = producer_id::none;
  /// Unused entries have an empty name.
  std::array<implementation, max_implementations> impls{};

  /// The levels of `name`: the union of the implementations' serves ranges.
  [[nodiscard]] constexpr level_range levels() const noexcept {
    level_range r;
    for (const auto& i : impls) {
      if (i.name.empty() || i.serves.empty()) continue;
      if (r.empty()) {
        r = i.serves;
      } else {
        r.min = i.serves.min < r.min ? i.serves.min : r.min;
        r.max = i.serves.max > r.max ? i.serves.max : r.max;
      }
    }
    return r;
  }
};

/// Every codec, indexed by payload format.
[[nodiscard]] std::span<const codec_info, payload_format_count> codecs() noexcept;
/// The row of a format; nullptr for a number outside the table.
[[nodiscard]] const codec_info* find(payload_format f) noexcept;
/// The first entry of an implementation; nullptr for a number outside the table.
[[nodiscard]] const implementation* find(producer_id e) noexcept;
/// The entry of the table that names `s`, or nullptr when `s` is no codec and level of the
/// table (a level out of range, a producer of another format).
[[nodiscard]] const implementation* find(const spec& s) noexcept;

/// "gzip = gzip-1, zstd = zstd-3, ...": what each codec's name alone means (for --help).
[[nodiscard]] std::string default_levels();

}  // namespace qzfs::codec
