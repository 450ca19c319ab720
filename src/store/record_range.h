#pragma once
// store/: the record arithmetic of a byte range (after gocryptfs's ExplodePlainRange).
//
// A file is cut into records of 2^shift bytes. A byte range [off, off + len) touches records
// first() .. last(); in each it covers the bytes [lo, hi) of that record, which sit at
// `pos` bytes from the range's start (the position in the caller's buffer). Only the first and
// the last record can be partial (partial_head / partial_tail).
//
// A value type of plain arithmetic: no allocation, nothing to fail. Iterating yields one
// record_part per record, in order; at(i) gives the part of any record i in the range, so a
// loop that skips ahead (whole records written in one batch) stays a plain index loop.
//
// Preconditions: shift < 32 (records are at most 1 MiB); off + len does not overflow. An empty
// range (len 0) has no records: begin() == end(), count() == 0; first()/last() are meaningless.
//
// Thread-safety: a value; const members only.

#include <algorithm>
#include <cstdint>

namespace qzfs::store {

/// One record's share of a byte range.
struct record_part {
  std::uint64_t index = 0;  // record number
  std::uint32_t lo = 0;     // first byte of the record in the range
  std::uint32_t hi = 0;     // one past the last byte of the record in the range
  std::uint64_t pos = 0;    // bytes from the range's start to byte lo of this record
  [[nodiscard]] std::uint32_t size() const noexcept { return hi - lo; }
  friend bool operator==(const record_part&, const record_part&) = default;
};

class record_range {
 public:
  record_range(std::uint64_t off, std::uint64_t len, unsigned shift) noexcept : off_(off), end_(off + len), shift_(shift) {}

  /// Records of a file of `size` bytes (the last one may be short).
  [[nodiscard]] static constexpr std::uint64_t records_for(std::uint64_t size, unsigned shift) noexcept {
    return size == 0 ? 0 : ((size - 1) >> shift) + 1;
  }

  [[nodiscard]] std::uint64_t offset() const noexcept { return off_; }
  [[nodiscard]] std::uint64_t end_offset() const noexcept { return end_; }
  [[nodiscard]] bool empty() const noexcept { return end_ == off_; }
  [[nodiscard]] std::uint32_t record_size() const noexcept { return std::uint32_t{1} << shift_; }

  /// The first and last record touched (inclusive).
  [[nodiscard]] std::uint64_t first() const noexcept { return off_ >> shift_; }
  [[nodiscard]] std::uint64_t last() const noexcept { return (end_ - 1) >> shift_; }
  [[nodiscard]] std::uint64_t count() const noexcept { return empty() ? 0 : last() - first() + 1; }

  /// Offset of the range's start within the first record, and its end within the last (1 .. rs).
  [[nodiscard]] std::uint32_t head_offset() const noexcept { return static_cast<std::uint32_t>(off_ & (record_size() - 1)); }
  [[nodiscard]] std::uint32_t tail_end() const noexcept { return static_cast<std::uint32_t>(((end_ - 1) & (record_size() - 1)) + 1); }
  /// The first (last) record is only partly in the range.
  [[nodiscard]] bool partial_head() const noexcept { return !empty() && (head_offset() != 0 || (count() == 1 && tail_end() != record_size())); }
  [[nodiscard]] bool partial_tail() const noexcept { return !empty() && (tail_end() != record_size() || (count() == 1 && head_offset() != 0)); }

  /// The records entirely inside the range: [first_whole(), end_whole()) (empty when none).
  [[nodiscard]] std::uint64_t first_whole() const noexcept { return (off_ + record_size() - 1) >> shift_; }
  [[nodiscard]] std::uint64_t end_whole() const noexcept { return std::max(end_ >> shift_, first_whole()); }

  /// The part of record `index` (first() <= index <= last()) in the range.
  [[nodiscard]] record_part at(std::uint64_t index) const noexcept {
    const std::uint64_t start = index << shift_;
    const auto lo = static_cast<std::uint32_t>(std::max(off_, start) - start);
    const auto hi = static_cast<std::uint32_t>(std::min<std::uint64_t>(end_, start + record_size()) - start);
    return record_part{index, lo, hi, start + lo - off_};
  }

  class iterator {
   public:
    iterator(const record_range* r, std::uint64_t i) noexcept : r_(r), i_(i) {}
    record_part operator*() const noexcept { return r_->at(i_); }
    iterator& operator++() noexcept {
      ++i_;
      return *this;
    }
    friend bool operator==(const iterator& a, const iterator& b) noexcept { return a.i_ == b.i_; }

   private:
    const record_range* r_;
    std::uint64_t i_;
  };
  [[nodiscard]] iterator begin() const noexcept { return {this, first()}; }
  [[nodiscard]] iterator end() const noexcept { return {this, empty() ? first() : last() + 1}; }

 private:
  std::uint64_t off_, end_;
  unsigned shift_;
};

}  // namespace qzfs::store
