#pragma once
// store/: free space inside one container file. Extents are [offset, offset + length) byte
// ranges above the header. allocate() takes the best-fitting free extent (the smallest that
// holds the request, lowest offset among equals) or extends the end; release() merges with its
// neighbours and pulls the end back when the freed extent is the last one.
//
// Thread-safety: none; the container guards it with its map lock.

#include <cstdint>
#include <map>
#include <set>
#include <utility>

namespace qzfs::store {

class space_map {
 public:
  explicit space_map(std::uint64_t start) : end_(start), start_(start) {}

  /// Offset of `len` free bytes (best fit, else at the end).
  [[nodiscard]] std::uint64_t allocate(std::uint64_t len);
  /// Offset of `len` free bytes, the lowest that fits (compaction's second move: pack the front).
  [[nodiscard]] std::uint64_t allocate_low(std::uint64_t len);
  /// Offset of `len` bytes at the end, never inside a gap (compaction's first move).
  [[nodiscard]] std::uint64_t allocate_at_end(std::uint64_t len);
  /// Marks [off, off + len) in use; used when rebuilding from a map (must be free or past the end).
  void take(std::uint64_t off, std::uint64_t len);
  /// Frees [off, off + len); returns the merged free extent that now contains it.
  std::pair<std::uint64_t, std::uint64_t> release(std::uint64_t off, std::uint64_t len);

  /// One past the last byte in use (the container file never needs to be longer).
  [[nodiscard]] std::uint64_t end() const noexcept { return end_; }
  [[nodiscard]] std::uint64_t free_bytes() const noexcept { return free_bytes_; }
  [[nodiscard]] std::size_t free_extents() const noexcept { return by_offset_.size(); }
  [[nodiscard]] const std::map<std::uint64_t, std::uint64_t>& extents() const noexcept { return by_offset_; }

 private:
  void insert(std::uint64_t off, std::uint64_t len);
  void erase(std::map<std::uint64_t, std::uint64_t>::iterator it);

  std::map<std::uint64_t, std::uint64_t> by_offset_;       // offset -> length
  std::set<std::pair<std::uint64_t, std::uint64_t>> by_size_;  // (length, offset)
  std::uint64_t end_, start_, free_bytes_ = 0;
};

}  // namespace qzfs::store
