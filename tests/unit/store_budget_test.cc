// One memory budget across files (include/qzfs/store/budget.h): buffers of every file are
// charged to it, a file over it writes back at once, and a writer finding it exceeded makes the
// other files shed. Data must come back whole whatever was written back when.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <thread>

#include "qzfs/store/budget.h"
#include "store_rig.h"

namespace qzfs::store {
namespace {

using namespace test_rig;

// Where two byte vectors first differ ("same" when equal): readable failures for large files.
std::string first_diff(const std::vector<std::byte>& a, const std::vector<std::byte>& b) {
  if (a.size() != b.size()) return "size " + std::to_string(a.size()) + " vs " + std::to_string(b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) return "byte " + std::to_string(i) + " (record of 4K page " + std::to_string(i / 4096) + ")";
  }
  return "same";
}

// Page writes scattered over many records of several files, so that every record stays partial
// (buffered) as long as nothing forces it out. Returns the largest sum of the files' charges seen.
std::uint64_t scatter(std::vector<std::unique_ptr<file>>& files, std::vector<std::vector<std::byte>>& shadow,
                      std::uint32_t rs, std::uint64_t seed, int writes) {
  std::mt19937_64 rng(seed);
  std::uint64_t most = 0;
  const std::uint64_t span = shadow[0].size();
  for (int w = 0; w < writes; ++w) {
    const std::size_t k = rng() % files.size();
    const std::uint64_t off = (rng() % (span / 4096)) * 4096;
    auto data = some_data(rng, 4096);
    EXPECT_FALSE(files[k]->pwrite(data, off));
    std::memcpy(shadow[k].data() + off, data.data(), data.size());
    std::uint64_t sum = 0;
    for (auto& f : files) sum += f->charged();
    most = std::max(most, sum);
    if (w % 97 == 0) {  // a partial read now and then: the clean cache is charged too
      std::vector<std::byte> got(100);
      std::size_t n = 0;
      const std::uint64_t at = rng() % (span - 100);
      EXPECT_FALSE(files[k]->pread(got, at, n));
      EXPECT_EQ(n, got.size());
      EXPECT_EQ(0, std::memcmp(got.data(), shadow[k].data() + at, n)) << "file " << k << " at " << at;
    }
  }
  (void)rs;
  return most;
}

TEST(store_budget, many_files_stay_within_one_budget) {
  constexpr std::uint32_t rs = 64 * KiB;
  constexpr std::uint64_t span = 64ull * rs;  // 64 records per file: all of them buffered without a budget
  auto run = [&](memory_budget* budget, std::uint64_t& peak) {
    std::vector<std::shared_ptr<mem_disk>> disks;
    std::vector<std::unique_ptr<file>> files;
    std::vector<std::vector<std::byte>> shadow(8, std::vector<std::byte>(span));
    for (int i = 0; i < 8; ++i) {
      auto o = opts("gzip", rs);
      o.budget = budget;
      o.max_dirty_records = 64;
      disks.push_back(std::make_shared<mem_disk>());
      std::unique_ptr<file> f;
      ASSERT_FALSE(file::create(std::make_unique<mem_io>(disks.back()), o, f));
      ASSERT_FALSE(f->truncate(span));
      files.push_back(std::move(f));
    }
    peak = scatter(files, shadow, rs, 7, 3000);
    for (std::size_t k = 0; k < files.size(); ++k) {
      EXPECT_EQ(first_diff(read_all(*files[k]), shadow[k]), "same") << "file " << k;
      ASSERT_FALSE(files[k]->sync());
    }
    files.clear();
    // And from the backing bytes alone.
    for (std::size_t k = 0; k < disks.size(); ++k) {
      auto o = opts("gzip", rs);
      auto f = open_mem(disks[k], o);
      EXPECT_EQ(first_diff(read_all(*f), shadow[k]), "same") << "file " << k << " reopened";
    }
  };
  std::uint64_t unbounded = 0;
  run(nullptr, unbounded);
  // The workload needs the budget: unbounded, the files buffer far more than it.
  constexpr std::uint64_t limit = 2 << 20;
  EXPECT_GT(unbounded, 8 * limit);

  memory_budget budget(limit);
  std::uint64_t bounded = 0;
  run(&budget, bounded);
  // One writer at a time here: over the limit by at most what it holds while writing back (a
  // record and a batch of frame buffers).
  const std::uint64_t slack = 1 << 20;
  EXPECT_LE(bounded, limit + slack);
  EXPECT_LE(budget.peak(), limit + slack);
  EXPECT_GT(budget.reliefs(), 0u) << "other files were never asked to shed";
  EXPECT_EQ(budget.used(), 0u) << "every buffer given back once the files closed";
}

TEST(store_budget, a_writer_makes_idle_files_write_back) {
  constexpr std::uint32_t rs = 64 * KiB;
  memory_budget budget(4 << 20);
  auto o = opts("gzip", rs);
  o.budget = &budget;
  o.max_dirty_records = 1000;
  auto da = std::make_shared<mem_disk>(), db = std::make_shared<mem_disk>();
  std::unique_ptr<file> a, b;
  ASSERT_FALSE(file::create(std::make_unique<mem_io>(da), o, a));
  ASSERT_FALSE(file::create(std::make_unique<mem_io>(db), o, b));
  ASSERT_FALSE(a->truncate(40ull * rs));
  ASSERT_FALSE(b->truncate(64ull * rs));
  // A: 40 records with one page each (2.5 MiB buffered, under the limit), then idle.
  std::mt19937_64 rng(3);
  std::vector<std::byte> shadow_a(40ull * rs);
  for (std::uint64_t i = 0; i < 40; ++i) {
    auto d = some_data(rng, 4096);
    ASSERT_FALSE(a->pwrite(d, i * rs + 8192));
    std::memcpy(shadow_a.data() + i * rs + 8192, d.data(), d.size());
  }
  EXPECT_EQ(a->stats().dirty, 40u);
  const std::uint64_t a_before = a->charged();
  EXPECT_GE(a_before, 40ull * rs);
  // B writes partial records until the budget is exceeded: A must let go.
  std::vector<std::byte> shadow_b(64ull * rs);
  for (std::uint64_t i = 0; i < 64; ++i) {
    auto d = some_data(rng, 4096);
    ASSERT_FALSE(b->pwrite(d, i * rs));
    std::memcpy(shadow_b.data() + i * rs, d.data(), d.size());
  }
  EXPECT_GT(budget.reliefs(), 0u);
  EXPECT_EQ(a->stats().dirty, 0u) << "A kept its records buffered";
  EXPECT_LT(a->charged(), a_before);
  EXPECT_LE(budget.peak(), budget.limit() + (1 << 20));
  EXPECT_EQ(first_diff(read_all(*a), shadow_a), "same");
  EXPECT_EQ(first_diff(read_all(*b), shadow_b), "same");
}

TEST(store_budget, writers_on_many_threads_share_it) {
  constexpr std::uint32_t rs = 32 * KiB;
  constexpr std::uint64_t span = 48ull * rs;
  memory_budget budget(1 << 20);
  constexpr int n = 4;
  std::vector<std::shared_ptr<mem_disk>> disks;
  std::vector<std::unique_ptr<file>> files;
  std::vector<std::vector<std::byte>> shadow(n, std::vector<std::byte>(span));
  for (int i = 0; i < n; ++i) {
    auto o = opts("zstd-1", rs);
    o.budget = &budget;
    disks.push_back(std::make_shared<mem_disk>());
    std::unique_ptr<file> f;
    ASSERT_FALSE(file::create(std::make_unique<mem_io>(disks.back()), o, f));
    ASSERT_FALSE(f->truncate(span));
    files.push_back(std::move(f));
  }
  std::vector<std::thread> ts;
  for (int t = 0; t < n; ++t) {
    ts.emplace_back([&, t] {
      std::mt19937_64 rng(100 + t);
      for (int w = 0; w < 400; ++w) {
        const std::uint64_t off = (rng() % (span / 4096)) * 4096;
        auto d = some_data(rng, 4096);
        EXPECT_FALSE(files[t]->pwrite(d, off));
        std::memcpy(shadow[t].data() + off, d.data(), d.size());
        if (w % 50 == 0) {
          EXPECT_FALSE(files[t]->flush());
        }
      }
    });
  }
  for (auto& t : ts) t.join();
  // Four writers: each may hold a record and a batch of frames beyond the limit.
  EXPECT_LE(budget.peak(), budget.limit() + n * (1 << 20));
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(first_diff(read_all(*files[i]), shadow[i]), "same") << "file " << i;
  }
}

}  // namespace
}  // namespace qzfs::store

namespace qzfs::store {
namespace {

TEST(store_budget, one_file_over_it_writes_back_at_once) {
  using namespace test_rig;
  constexpr std::uint32_t rs = 64 * KiB;
  memory_budget budget(1 << 20);
  auto o = opts("lz4", rs);
  o.budget = &budget;
  o.max_dirty_records = 64;  // 4 MiB of partial records without the budget
  auto d = std::make_shared<mem_disk>();
  std::unique_ptr<file> f;
  ASSERT_FALSE(file::create(std::make_unique<mem_io>(d), o, f));
  std::mt19937_64 rng(5);
  std::vector<std::byte> shadow(64ull * rs);
  ASSERT_FALSE(f->truncate(shadow.size()));
  for (std::uint64_t i = 0; i < 64; ++i) {
    auto data = some_data(rng, 4096);
    ASSERT_FALSE(f->pwrite(data, i * rs + 4096));
    std::memcpy(shadow.data() + i * rs + 4096, data.data(), data.size());
  }
  EXPECT_LE(budget.peak(), budget.limit() + (1 << 20));
  EXPECT_LT(f->stats().dirty, 64u);
  EXPECT_EQ(first_diff(read_all(*f), shadow), "same");
}

}  // namespace
}  // namespace qzfs::store
