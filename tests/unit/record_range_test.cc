// The record arithmetic of a byte range (src/store/record_range.h), checked on its edges and
// against a byte-by-byte model.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "store/record_range.h"

namespace qzfs::store {
namespace {

constexpr unsigned shift4k = 12;  // 4 KiB records

std::vector<record_part> parts(const record_range& r) {
  std::vector<record_part> out;
  for (const record_part p : r) out.push_back(p);
  return out;
}

TEST(record_range, inside_one_record) {
  const record_range r(100, 50, shift4k);
  EXPECT_EQ(r.first(), 0u);
  EXPECT_EQ(r.last(), 0u);
  EXPECT_EQ(r.count(), 1u);
  EXPECT_EQ(r.head_offset(), 100u);
  EXPECT_EQ(r.tail_end(), 150u);
  EXPECT_TRUE(r.partial_head());
  EXPECT_TRUE(r.partial_tail());
  EXPECT_EQ(r.first_whole(), 1u);
  EXPECT_EQ(r.end_whole(), 1u);  // none
  EXPECT_EQ(parts(r), (std::vector<record_part>{{0, 100, 150, 0}}));
}

TEST(record_range, exactly_one_record) {
  const record_range r(4096, 4096, shift4k);
  EXPECT_EQ(r.first(), 1u);
  EXPECT_EQ(r.last(), 1u);
  EXPECT_FALSE(r.partial_head());
  EXPECT_FALSE(r.partial_tail());
  EXPECT_EQ(r.first_whole(), 1u);
  EXPECT_EQ(r.end_whole(), 2u);
  EXPECT_EQ(parts(r), (std::vector<record_part>{{1, 0, 4096, 0}}));
}

TEST(record_range, partial_head_whole_middle_partial_tail) {
  const record_range r(4000, 3 * 4096, shift4k);  // [4000, 16288)
  EXPECT_EQ(r.first(), 0u);
  EXPECT_EQ(r.last(), 3u);
  EXPECT_EQ(r.count(), 4u);
  EXPECT_TRUE(r.partial_head());
  EXPECT_TRUE(r.partial_tail());
  EXPECT_EQ(r.first_whole(), 1u);
  EXPECT_EQ(r.end_whole(), 3u);
  EXPECT_EQ(parts(r), (std::vector<record_part>{{0, 4000, 4096, 0},
                                                {1, 0, 4096, 96},
                                                {2, 0, 4096, 96 + 4096},
                                                {3, 0, 4000, 96 + 2 * 4096}}));
}

TEST(record_range, aligned_start_partial_tail) {
  const record_range r(8192, 5000, shift4k);
  EXPECT_FALSE(r.partial_head());
  EXPECT_TRUE(r.partial_tail());
  EXPECT_EQ(r.tail_end(), 5000u - 4096u);
  EXPECT_EQ(r.first_whole(), 2u);
  EXPECT_EQ(r.end_whole(), 3u);
}

TEST(record_range, partial_head_aligned_end) {
  const record_range r(10, 4096 - 10 + 4096, shift4k);
  EXPECT_TRUE(r.partial_head());
  EXPECT_FALSE(r.partial_tail());
  EXPECT_EQ(r.tail_end(), 4096u);
  EXPECT_EQ(r.last(), 1u);
}

TEST(record_range, empty_has_no_records) {
  const record_range r(12345, 0, shift4k);
  EXPECT_TRUE(r.empty());
  EXPECT_EQ(r.count(), 0u);
  EXPECT_FALSE(r.partial_head());
  EXPECT_FALSE(r.partial_tail());
  EXPECT_TRUE(parts(r).empty());
}

TEST(record_range, records_for_a_size) {
  EXPECT_EQ(record_range::records_for(0, shift4k), 0u);
  EXPECT_EQ(record_range::records_for(1, shift4k), 1u);
  EXPECT_EQ(record_range::records_for(4096, shift4k), 1u);
  EXPECT_EQ(record_range::records_for(4097, shift4k), 2u);
  // No overflow at the top of the offset range.
  EXPECT_EQ(record_range::records_for(~std::uint64_t{0}, 20), (~std::uint64_t{0} >> 20) + 1);
}

TEST(record_range, far_offsets_and_large_records) {
  const std::uint64_t off = (std::uint64_t{1} << 50) + 3;
  const record_range r(off, (1u << 20) * 2, 20);  // 1 MiB records
  EXPECT_EQ(r.first(), std::uint64_t{1} << 30);
  EXPECT_EQ(r.count(), 3u);
  EXPECT_EQ(r.at(r.first()).lo, 3u);
  EXPECT_EQ(r.at(r.last()).hi, 3u);
  EXPECT_EQ(r.at(r.last()).pos, 2u * (1u << 20) - 3u);
}

// Every byte of random ranges lands in exactly one part, at the right place, in order.
TEST(record_range, matches_a_byte_model) {
  std::mt19937_64 rng(7);
  for (int t = 0; t < 2000; ++t) {
    const unsigned shift = 12 + static_cast<unsigned>(rng() % 9);
    const std::uint64_t rs = std::uint64_t{1} << shift;
    const std::uint64_t off = rng() % (8 * rs);
    const std::uint64_t len = 1 + rng() % (6 * rs);
    const record_range r(off, len, shift);
    std::uint64_t expect_pos = 0;
    std::uint64_t expect_index = off / rs;
    std::uint64_t whole = 0;
    for (const record_part p : r) {
      ASSERT_EQ(p.index, expect_index);
      ASSERT_EQ(p.pos, expect_pos);
      ASSERT_EQ(p.index * rs + p.lo, off + p.pos);  // the part's first byte is the range's byte `pos`
      ASSERT_LT(p.lo, p.hi);
      ASSERT_LE(p.hi, rs);
      if (p.lo == 0 && p.hi == rs) {
        ++whole;
        ASSERT_GE(p.index, r.first_whole());
        ASSERT_LT(p.index, r.end_whole());
      }
      expect_pos += p.size();
      ++expect_index;
    }
    ASSERT_EQ(expect_pos, len);
    ASSERT_EQ(expect_index - off / rs, r.count());
    ASSERT_EQ(whole, r.end_whole() - r.first_whole());
    ASSERT_EQ(r.partial_head(), off % rs != 0 || (r.count() == 1 && len < rs));
    ASSERT_EQ(r.partial_tail(), (off + len) % rs != 0 || (r.count() == 1 && off % rs != 0));
  }
}

}  // namespace
}  // namespace qzfs::store
