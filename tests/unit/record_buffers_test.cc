// A container's record buffers (src/store/record_buffers.h): the whole-record count the
// write-back decides by, spare buffers, and the read cache, all charged to one account.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "qzfs/store/budget.h"
#include "store/record_buffers.h"

namespace qzfs::store {
namespace {

constexpr std::uint32_t rs = 4096;

struct rig {
  memory_budget budget{1 << 30};
  record_buffers bufs{&budget, 2};
  rig() { bufs.configure(rs, 2); }
  dirty_record& dirty(std::uint64_t i) { return bufs.add(i, bufs.take_buffer()); }
};

TEST(record_buffers, writes_that_meet_make_a_record_whole) {
  rig r;
  auto& d = r.dirty(0);
  r.bufs.note_written(d, 0, 1000, false);
  EXPECT_FALSE(d.whole);
  r.bufs.note_written(d, 3000, rs, false);  // apart from [0, 1000): not merged
  EXPECT_EQ(d.lo, 0u);
  EXPECT_EQ(d.hi, 1000u);
  r.bufs.note_written(d, 1000, 3000, false);  // adjacent: merged
  EXPECT_EQ(d.hi, 3000u);
  EXPECT_FALSE(d.whole);
  r.bufs.note_written(d, 2000, rs, false);
  EXPECT_TRUE(d.whole);
  EXPECT_EQ(r.bufs.whole_count(), 1u);
  r.bufs.note_written(d, 0, 10, false);  // stays whole, counted once
  EXPECT_EQ(r.bufs.whole_count(), 1u);
}

TEST(record_buffers, a_covering_write_restarts_the_span) {
  rig r;
  auto& d = r.dirty(0);
  r.bufs.note_written(d, 100, 200, false);
  r.bufs.note_written(d, 0, 50, true);  // covers the record as far as the file reaches
  EXPECT_EQ(d.lo, 0u);
  EXPECT_EQ(d.hi, 50u);
  EXPECT_FALSE(d.whole);
}

TEST(record_buffers, frozen_records_are_not_counted_whole) {
  rig r;
  auto& a = r.dirty(1);
  auto& b = r.dirty(2);
  r.bufs.note_written(a, 0, rs, true);
  r.bufs.note_written(b, 0, rs, true);
  EXPECT_EQ(r.bufs.whole_count(), 2u);
  r.bufs.freeze(a);
  EXPECT_TRUE(a.busy);
  EXPECT_EQ(r.bufs.whole_count(), 1u);
  r.bufs.unfreeze(a);
  r.bufs.unfreeze(a);  // twice: no double count
  EXPECT_EQ(r.bufs.whole_count(), 2u);
  r.bufs.freeze(a);
  r.bufs.erase(1);  // written back while frozen
  EXPECT_EQ(r.bufs.whole_count(), 1u);
  r.bufs.unwhole(b);
  EXPECT_EQ(r.bufs.whole_count(), 0u);
  EXPECT_EQ(r.bufs.count(), 1u);
}

TEST(record_buffers, erase_from_cuts_the_tail) {
  rig r;
  for (std::uint64_t i = 0; i < 6; ++i) r.bufs.note_written(r.dirty(i), 0, rs, true);
  r.bufs.erase_from(3);
  EXPECT_EQ(r.bufs.count(), 3u);
  EXPECT_EQ(r.bufs.whole_count(), 3u);
  EXPECT_NE(r.bufs.find(2), nullptr);
  EXPECT_EQ(r.bufs.find(3), nullptr);
}

TEST(record_buffers, spare_buffers_are_reused_and_charged) {
  rig r;
  auto a = r.bufs.take_buffer();
  EXPECT_EQ(r.bufs.charged(), rs);
  EXPECT_EQ(r.budget.used(), rs);
  std::byte* p = a.get();
  r.bufs.give_buffer(std::move(a));
  EXPECT_EQ(r.bufs.charged(), rs);  // kept as a spare
  auto b = r.bufs.take_buffer();
  EXPECT_EQ(b.get(), p);
  // At most `spare_records` are kept; the rest are freed and uncharged.
  auto c = r.bufs.take_buffer(), d = r.bufs.take_buffer();
  EXPECT_EQ(r.bufs.charged(), 3u * rs);
  r.bufs.give_buffer(std::move(b));
  r.bufs.give_buffer(std::move(c));
  r.bufs.give_buffer(std::move(d));
  EXPECT_EQ(r.bufs.charged(), 2u * rs);
  r.bufs.drop_spares();
  EXPECT_EQ(r.bufs.charged(), 0u);
  EXPECT_EQ(r.budget.used(), 0u);
}

TEST(record_buffers, nothing_spare_is_kept_over_the_budget) {
  memory_budget budget(rs);  // one record's worth
  record_buffers bufs(&budget, 2);
  bufs.configure(rs, 8);
  auto a = bufs.take_buffer(), b = bufs.take_buffer();
  EXPECT_TRUE(bufs.over());
  bufs.give_buffer(std::move(a));
  EXPECT_EQ(bufs.charged(), rs);
  bufs.give_buffer(std::move(b));  // no longer over: kept
  EXPECT_EQ(bufs.charged(), rs);
}

TEST(record_buffers, cache_returns_parts_and_zeros_past_the_record) {
  rig r;
  std::vector<std::byte> rec(rs, std::byte{7});
  std::vector<std::byte> out(rs, std::byte{1});
  EXPECT_FALSE(r.bufs.cache_read(5, out, 0, rs));
  r.bufs.cache_put(5, rec.data(), 1000);  // a short last record
  ASSERT_TRUE(r.bufs.cache_read(5, std::span(out).first(200), 900, 1100));
  for (std::size_t i = 0; i < 100; ++i) EXPECT_EQ(out[i], std::byte{7}) << i;
  for (std::size_t i = 100; i < 200; ++i) EXPECT_EQ(out[i], std::byte{0}) << i;
  r.bufs.cache_forget(5);
  EXPECT_FALSE(r.bufs.cache_read(5, out, 0, 10));
}

TEST(record_buffers, cache_evicts_the_least_recently_used) {
  rig r;  // two entries
  std::vector<std::byte> rec(rs, std::byte{3}), out(16);
  r.bufs.cache_put(1, rec.data(), rs);
  r.bufs.cache_put(2, rec.data(), rs);
  ASSERT_TRUE(r.bufs.cache_read(1, out, 0, 16));  // 2 is now the oldest
  r.bufs.cache_put(3, rec.data(), rs);
  EXPECT_TRUE(r.bufs.cache_read(1, out, 0, 16));
  EXPECT_FALSE(r.bufs.cache_read(2, out, 0, 16));
  EXPECT_TRUE(r.bufs.cache_read(3, out, 0, 16));
  r.bufs.cache_forget_from(2);
  EXPECT_TRUE(r.bufs.cache_read(1, out, 0, 16));
  EXPECT_FALSE(r.bufs.cache_read(3, out, 0, 16));
  EXPECT_EQ(r.bufs.charged(), 2u * rs);  // the cache's buffers stay charged until cleared
  r.bufs.cache_clear();
  EXPECT_EQ(r.bufs.charged(), 0u);
}

TEST(record_buffers, cache_off_keeps_nothing) {
  memory_budget budget(1 << 30);
  record_buffers bufs(&budget, 0);
  bufs.configure(rs, 2);
  std::vector<std::byte> rec(rs), out(16);
  bufs.cache_put(1, rec.data(), rs);
  EXPECT_FALSE(bufs.cache_read(1, out, 0, 16));
  EXPECT_EQ(bufs.charged(), 0u);
}

}  // namespace
}  // namespace qzfs::store
