#pragma once
// codec/: adapters over real compression libraries, behind one interface.
//
// Contract
// - compress() reads a scatter-gather list of input (`iovec`s, any number, any alignment) and
//   writes one self-contained payload (a gzip member, a zstd frame, an LZ4 block, or the raw
//   bytes) into a caller-owned buffer whose size is a hard capacity. When the result cannot fit,
//   it stops as early as the library allows and returns status::does_not_fit: a normal outcome,
//   not an error. The caller sets the capacity (the 10% saving rule lives with the caller).
// - decompress() treats its input as untrusted. `out` must be exactly the expected logical
//   size; anything but a payload that decodes to exactly that many bytes, consuming all of the
//   input, is status::corrupt. Never a crash, an overrun or silent garbage.
// - Codecs never throw and never allocate per call: all working memory (library state,
//   gather scratch) is allocated when the context is made.
//
// Thread-safety
// - A context is owned by one thread at a time (no internal locking). make_context() and the
//   spec functions are thread-safe. Workers keep one context per spec (see workspace.h).

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "qzfs/codec/ids.h"

namespace qzfs::codec {

/// A codec and level: "gzip-6" (libdeflate), "gzip-1" (ISA-L), "zstd-3", "zstd-fast-5", "lz4",
/// "lz4hc-9", "zlib-6" (reference), "none". Every name, level range and default comes from the
/// codec table (table.h); make specs in code with the named constructors, not by parsing strings.
struct spec {
  payload_format format = payload_format::none;
  producer_id producer = producer_id::none;
  int level = 0;

  friend bool operator==(const spec&, const spec&) = default;

  /// The codec of format `f` at `level` (the implementation the table gives that level), or
  /// at the codec's default level. An out-of-range level gives an invalid spec (is_valid()
  /// false; make_context() throws).
  [[nodiscard]] static spec of(payload_format f, int level) noexcept;
  [[nodiscard]] static spec of(payload_format f) noexcept;
  /// Implementation `e` itself at `level`, or at its own default level.
  [[nodiscard]] static spec of(producer_id e, int level) noexcept;
  [[nodiscard]] static spec of(producer_id e) noexcept;

  [[nodiscard]] static spec none() noexcept { return of(payload_format::none); }
  /// gzip levels 1-12 (ISA-L for 1-3, libdeflate above); gzip() is gzip-1.
  [[nodiscard]] static spec gzip() noexcept { return of(payload_format::gzip); }
  [[nodiscard]] static spec gzip(int level) noexcept { return of(payload_format::gzip, level); }
  /// zstd levels 1-22 and, negative, the fast levels (zstd(-5) is zstd-fast-5); zstd() is zstd-3.
  [[nodiscard]] static spec zstd() noexcept { return of(payload_format::zstd); }
  [[nodiscard]] static spec zstd(int level) noexcept {
    return level < 0 ? of(producer_id::zstd, level) : of(payload_format::zstd, level);
  }
  [[nodiscard]] static spec lz4() noexcept { return of(payload_format::lz4); }
  [[nodiscard]] static spec lz4hc(int level) noexcept { return of(producer_id::lz4hc, level); }
  [[nodiscard]] static spec zlib(int level) noexcept { return of(producer_id::zlib, level); }
};

/// True when `s` is a codec and level of the table that software can make (make_context()
/// accepts exactly these).
[[nodiscard]] bool is_valid(const spec& s) noexcept;
/// Parses a codec name; nullopt for an unknown name or a level out of range.
[[nodiscard]] std::optional<spec> parse_spec(std::string_view name) noexcept;
/// Parses a codec name; throws std::invalid_argument whose message names the bad name and
/// what is accepted instead ("unknown codec 'gzip-13': gzip levels are 1-12 (gzip = gzip-1)").
[[nodiscard]] spec parse_spec_or_throw(std::string_view name);
/// The canonical name; parse_spec(to_string(s)) == s for every valid spec.
[[nodiscard]] std::string to_string(const spec& s);
/// Human help: every accepted name, its level range and what the name alone means.
[[nodiscard]] std::string spec_help();

enum class status : std::uint8_t {
  ok = 0,
  does_not_fit,  // compress: the payload would exceed the capacity (normal outcome)
  corrupt,       // decompress: the input is not a valid payload of the expected size
  error,         // the library failed for another reason (out of memory, internal error)
};
[[nodiscard]] std::string_view to_string(status s) noexcept;
/// Short names for statistics: "none", "gzip", ...; "isal", "qat", ...
[[nodiscard]] std::string_view to_string(payload_format f) noexcept;
[[nodiscard]] std::string_view to_string(producer_id e) noexcept;

struct compress_result {
  status st = status::error;
  std::size_t size = 0;  // bytes written to `out` when st == ok
};

/// Total bytes of a scatter-gather list.
[[nodiscard]] inline std::size_t total_size(std::span<const iovec> in) noexcept {
  std::size_t n = 0;
  for (const auto& v : in) n += v.iov_len;
  return n;
}

/// Largest logical record a context accepts by default (DESIGN: records up to 1 MiB).
inline constexpr std::size_t default_max_input = std::size_t{1} << 20;

class context {
 public:
  virtual ~context() = default;
  context(const context&) = delete;
  context& operator=(const context&) = delete;

  /// Compresses the concatenation of `in` (total at most max_input(), else status::error)
  /// into `out`.
  [[nodiscard]] compress_result compress(std::span<const iovec> in, std::span<std::byte> out) noexcept {
    const std::size_t total = total_size(in);
    if (total > max_input_ || out.size() > max_output) return {status::error, 0};
    // No payload format fits in zero bytes but the raw one of an empty record.
    if (out.empty() && (total != 0 || spec_.format != payload_format::none)) return {status::does_not_fit, 0};
    return do_compress(in, total, out);
  }
  /// Decodes a payload of this context's format into exactly out.size() bytes.
  [[nodiscard]] virtual status decompress(std::span<const std::byte> in,
                                          std::span<std::byte> out) noexcept = 0;

  /// Largest output capacity a context takes (the libraries count in 32-bit sizes).
  static constexpr std::size_t max_output = std::size_t{1} << 30;

  [[nodiscard]] const codec::spec& spec() const noexcept { return spec_; }
  [[nodiscard]] std::size_t max_input() const noexcept { return max_input_; }
  /// True when the library needs contiguous input: scattered input is first gathered into
  /// the context's scratch buffer (a copy the caller may want to avoid or account for).
  [[nodiscard]] virtual bool gathers() const noexcept = 0;

 protected:
  context(codec::spec s, std::size_t max_input) : spec_(s), max_input_(max_input) {}
  /// The adapter's work; `total` is total_size(in), already checked against max_input(),
  /// and `out` is not empty unless the record is.
  virtual compress_result do_compress(std::span<const iovec> in, std::size_t total,
                                      std::span<std::byte> out) noexcept = 0;

 private:
  codec::spec spec_;
  std::size_t max_input_;
};

/// Makes a context for `s`. Throws std::invalid_argument for an invalid spec and
/// std::bad_alloc when its working memory cannot be had (configuration time, not data path).
[[nodiscard]] std::unique_ptr<context> make_context(const spec& s,
                                                    std::size_t max_input = default_max_input);


}  // namespace qzfs::codec
