// store::file's front (src/store/file.cc): a plain backing file behind plain_file, the switch
// to a container when it is truncated to zero (also from several threads at once), and the
// error record both kinds share.
#include <gtest/gtest.h>

#include <cstring>
#include <thread>
#include <vector>

#include "store_rig.h"

namespace qzfs::store {
namespace {

using namespace test_rig;

std::shared_ptr<mem_disk> plain_disk(std::size_t n) {
  auto d = std::make_shared<mem_disk>();
  d->resize(n);
  for (std::size_t i = 0; i < n; ++i) d->bytes[i] = std::byte(i * 7 + 1);
  std::fill(d->blocks.begin(), d->blocks.end(), true);
  d->durable = d->bytes;
  return d;
}

TEST(store_front, a_plain_file_reports_what_a_plain_file_is) {
  auto d = plain_disk(10000);
  const auto o = opts("gzip-1", 64 << 10);
  auto f = open_mem(d, o);
  ASSERT_TRUE(f);
  EXPECT_FALSE(f->is_container());
  EXPECT_EQ(f->record_size(), 0u);
  EXPECT_EQ(f->size(), 10000u);
  EXPECT_TRUE(f->clean());
  EXPECT_EQ(f->charged(), 0u);
  EXPECT_EQ(f->commits(), 0u);
  std::vector<damage> found{{1, "x"}};
  EXPECT_FALSE(f->check(found));
  EXPECT_TRUE(found.empty());
  EXPECT_FALSE(f->flush());
  const auto st = f->stats();
  EXPECT_EQ(st.logical_size, 10000u);
  EXPECT_EQ(st.container_size, 10000u);
  EXPECT_EQ(st.live_bytes, 10000u);
  EXPECT_EQ(st.records, 0u);
  // Written as it is.
  std::vector<std::byte> patch(100, std::byte{0xee});
  ASSERT_FALSE(f->pwrite(patch, 20000));
  EXPECT_EQ(f->size(), 20100u);
  std::vector<std::byte> back(100);
  std::size_t got = 0;
  ASSERT_FALSE(f->pread(back, 20000, got));
  EXPECT_EQ(got, 100u);
  EXPECT_EQ(back, patch);
  EXPECT_EQ(std::memcmp(d->bytes.data() + 20000, patch.data(), patch.size()), 0);
  // zero_range grows it unless keep_size.
  ASSERT_FALSE(f->zero_range(20100, 50, true));
  EXPECT_EQ(f->size(), 20100u);
  ASSERT_FALSE(f->zero_range(20100, 50, false));
  EXPECT_EQ(f->size(), 20150u);
  // A truncation to anything but zero keeps it plain.
  ASSERT_FALSE(f->truncate(5000));
  EXPECT_FALSE(f->is_container());
  EXPECT_EQ(f->size(), 5000u);
}

TEST(store_front, a_failed_sync_of_a_plain_file_is_counted) {
  auto d = plain_disk(4096);
  auto plan = std::make_shared<crash_plan>();
  plan->stop_at = 1;  // the sync
  const auto o = opts("gzip-1", 64 << 10);
  auto f = open_mem(d, o, plan);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->error_seq(), 0u);
  EXPECT_TRUE(f->sync());
  EXPECT_EQ(f->error_seq(), 1u);
  EXPECT_TRUE(f->last_error());
}

TEST(store_front, no_conversion_without_convert_plain) {
  auto d = plain_disk(4096);
  auto o = opts("gzip-1", 64 << 10);
  o.convert_plain = false;
  auto f = open_mem(d, o);
  ASSERT_FALSE(f->truncate(0));
  EXPECT_FALSE(f->is_container());
  EXPECT_EQ(f->size(), 0u);
}

TEST(store_front, truncating_to_zero_from_several_threads_makes_one_container) {
  const auto o = opts("gzip-1", 64 << 10);
  for (int round = 0; round < 20; ++round) {
    auto d = plain_disk(3 * 4096);
    auto f = open_mem(d, o);
    ASSERT_FALSE(f->is_container());
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; ++t) {
      ts.emplace_back([&] { EXPECT_FALSE(f->truncate(0)); });
    }
    for (auto& t : ts) t.join();
    ASSERT_TRUE(f->is_container());
    EXPECT_EQ(f->record_size(), 64u << 10);
    EXPECT_EQ(f->size(), 0u);
    std::vector<std::byte> data(100000, std::byte{3});
    ASSERT_FALSE(f->pwrite(data, 0));
    ASSERT_FALSE(f->sync());
    f.reset();
    auto g = open_mem(d, o);
    ASSERT_TRUE(g->is_container());
    EXPECT_EQ(read_all(*g), data);
  }
}

}  // namespace
}  // namespace qzfs::store
