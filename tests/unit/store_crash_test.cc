// The store under failure: a crash at every write and sync of a workload (with torn writes),
// flipped bits anywhere in a container, random overwrites against the space bound, failed
// commits, and readers and writers of one file at once.
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>

#include "qzfs/format/container.h"
#include "qzfs/format/frame.h"
#include "store_rig.h"

namespace qzfs::store {
namespace {

using namespace test_rig;

// ---------------------------------------------------------------------------------------------
// Crashes

struct crash_outcome {
  std::vector<std::vector<std::byte>> snaps;  // what each sync() call was asked to make durable
  int last_ok = -1;                           // last sync that returned success
  int in_flight = -1;                         // the sync during which the machine died
};

// A workload of partial and whole-record writes, truncates, punches and syncs over 4 KiB records,
// with compaction on at every commit (slack 0), so the crash points cover compaction too. It
// stops at the first error: what a failed call left behind is not in the model, and nothing
// after the crash can become durable anyway.
void workload(file& f, crash_plan* plan, std::uint64_t seed, crash_outcome& out) {
  std::mt19937_64 rng(seed);
  std::vector<std::byte> model;
  auto sync = [&] {
    out.snaps.push_back(model);
    const bool dead_before = plan != nullptr && plan->dead;
    if (!f.sync()) {
      out.last_ok = static_cast<int>(out.snaps.size()) - 1;
      return true;
    }
    if (!dead_before) out.in_flight = static_cast<int>(out.snaps.size()) - 1;
    return false;
  };
  for (int op = 0; op < 48; ++op) {
    const auto p = rng() % 10;
    std::error_code ec;
    if (p < 5) {
      const std::uint64_t off = rng() % (12 * 4096);
      const std::size_t len = rng() % 2 == 0 ? 1 + rng() % 6000 : 4096;
      auto d = some_data(rng, len);
      ec = f.pwrite(d, off);
      if (model.size() < off + len) model.resize(off + len);
      std::copy(d.begin(), d.end(), model.begin() + static_cast<std::ptrdiff_t>(off));
    } else if (p == 5) {
      const std::uint64_t sz = rng() % (12 * 4096);
      ec = f.truncate(sz);
      model.resize(sz);
    } else if (p == 6) {
      const std::uint64_t off = rng() % (12 * 4096), len = rng() % 10000;
      ec = f.punch_hole(off, len);
      for (std::uint64_t i = off; i < std::min<std::uint64_t>(off + len, model.size()); ++i) model[i] = std::byte{0};
    } else if (!sync()) {
      return;
    }
    if (ec) return;
  }
  sync();
}

using workload_fn = void (*)(file&, crash_plan*, std::uint64_t, crash_outcome&);

struct crash_counts {
  std::uint64_t recovered_new = 0;  // crashes whose recovery found the sync in flight
  std::uint64_t log_syncs = 0;      // syncs the reference run made through the sync log
  std::uint64_t replayed = 0;       // log batches the recoveries applied
};

// Runs `work` once to count its mutating calls, then again for every call k with a crash at k
// (torn writes, unsynced writes lost at random or not), and reopens what each crash left: it
// must be exactly the last completed sync's state or the one in flight, check clean, and take
// new work.
void crash_at_every_call(workload_fn work, const options& o, std::uint64_t seed, crash_counts& counts) {
  // The reference run counts the workload's mutating calls.
  std::uint64_t total = 0;
  {
    auto disk = std::make_shared<mem_disk>();
    auto plan = std::make_shared<crash_plan>();
    crash_outcome ref;
    {
      auto f = open_mem(disk, o, plan);
      work(*f, plan.get(), seed, ref);
      ASSERT_EQ(ref.last_ok, static_cast<int>(ref.snaps.size()) - 1);
      counts.log_syncs = f->stats().log_syncs;
    }
    total = plan->calls;
    auto f = open_mem(disk, o);
    ASSERT_EQ(read_all(*f), ref.snaps.back());
  }
  ASSERT_GT(total, 60u);
  for (std::uint64_t k = 1; k <= total; ++k) {
    for (int variant = 0; variant < 6; ++variant) {
      const double tear = std::array{0.0, 0.5, 0.97}[variant % 3];
      const bool lose = variant >= 3;
      SCOPED_TRACE("crash at call " + std::to_string(k) + " of " + std::to_string(total) + ", tear " + std::to_string(tear) +
                   (lose ? ", unsynced writes lost at random" : ", writes in order"));
      auto disk = std::make_shared<mem_disk>();
      auto plan = std::make_shared<crash_plan>();
      plan->stop_at = k;
      plan->tear = tear;
      plan->lose_unsynced = lose;
      plan->seed = seed;
      crash_outcome out;
      {
        auto f = open_mem(disk, o, plan);
        work(*f, plan.get(), seed, out);
      }
      if (!plan->dead) {
        // Write-back order (hence punches, hence the call count) varies from run to run: this
        // run finished before call k. Its end state is the last sync's.
        ASSERT_EQ(out.last_ok, static_cast<int>(out.snaps.size()) - 1);
        continue;
      }
      // Reopen what the crash left: the last completed sync, or the one in flight, exactly.
      std::unique_ptr<file> f;
      ASSERT_FALSE(file::open(std::make_unique<mem_io>(disk), o, f));
      const auto got = read_all(*f);
      const auto empty = std::vector<std::byte>{};
      const auto& last = out.last_ok >= 0 ? out.snaps[static_cast<std::size_t>(out.last_ok)] : empty;
      const bool is_last = got == last;
      const bool is_next = out.in_flight >= 0 && got == out.snaps[static_cast<std::size_t>(out.in_flight)];
      auto first_diff = [&](const std::vector<std::byte>& want) {
        std::size_t i = 0;
        while (i < std::min(got.size(), want.size()) && got[i] == want[i]) ++i;
        return i;
      };
      ASSERT_TRUE(is_last || is_next) << "recovered " << got.size() << " bytes; last synced state has " << last.size()
                                      << ", first difference at byte " << first_diff(last) << "; last ok sync #"
                                      << out.last_ok << " in flight #" << out.in_flight << " of " << out.snaps.size();
      counts.recovered_new += is_next && !is_last;
      counts.replayed += f->stats().log_replayed;
      std::vector<damage> bad;
      ASSERT_FALSE(f->check(bad));
      ASSERT_TRUE(bad.empty()) << bad.front().what;
      // The recovered container takes new work: its free space is really free.
      auto more = test::make_data(test::data_class::text, 3 * 4096 + 5);
      ASSERT_FALSE(f->pwrite(more, 4096));
      ASSERT_FALSE(f->sync());
      auto expect = got;
      if (expect.size() < 4096 + more.size()) expect.resize(4096 + more.size());
      std::copy(more.begin(), more.end(), expect.begin() + 4096);
      f.reset();
      ASSERT_FALSE(file::open(std::make_unique<mem_io>(disk), o, f));
      ASSERT_EQ(read_all(*f), expect);
    }
  }
}

class store_crash : public ::testing::TestWithParam<std::uint64_t> {};

TEST_P(store_crash, every_write_and_sync_of_a_workload) {
  const std::uint64_t seed = GetParam();
  log_sink sink;
  auto o = opts(seed % 2 == 0 ? "gzip-1" : "auto", 4096, &sink);
  o.compact_slack = 0;
  o.batch_records = 2;
  o.max_dirty_records = 3;
  crash_counts counts;
  crash_at_every_call(workload, o, seed, counts);
  if (HasFatalFailure()) return;
  // Some crashes came after the slot of the commit in flight reached the disk.
  EXPECT_GT(counts.recovered_new, 0u);
}

// Small writes and a sync after every one or two, as a database's log does: most syncs go
// through the sync log (made at the second sync, filled, started again by the commits its
// fullness forces), some size changes too (growing ones ride the log, a shrink commits).
void log_workload(file& f, crash_plan* plan, std::uint64_t seed, crash_outcome& out) {
  std::mt19937_64 rng(seed);
  std::vector<std::byte> model;
  auto sync = [&] {
    out.snaps.push_back(model);
    const bool dead_before = plan != nullptr && plan->dead;
    if (!f.sync()) {
      out.last_ok = static_cast<int>(out.snaps.size()) - 1;
      return true;
    }
    if (!dead_before) out.in_flight = static_cast<int>(out.snaps.size()) - 1;
    return false;
  };
  for (int op = 0; op < 40; ++op) {
    const auto p = rng() % 16;
    std::error_code ec;
    if (p == 0) {
      const std::uint64_t sz = model.size() + rng() % 9000;
      ec = f.truncate(sz);
      model.resize(sz);
    } else if (p == 1) {
      const std::uint64_t sz = rng() % (model.size() + 1);
      ec = f.truncate(sz);
      model.resize(sz);
    } else {
      const std::uint64_t off = rng() % 2 == 0 ? model.size() : rng() % (10 * 4096);
      const std::size_t len = 1 + rng() % 1500;
      auto d = some_data(rng, len);
      ec = f.pwrite(d, off);
      if (model.size() < off + len) model.resize(off + len);
      std::copy(d.begin(), d.end(), model.begin() + static_cast<std::ptrdiff_t>(off));
    }
    if (ec) return;
    if (rng() % 3 != 0 && !sync()) return;
  }
  sync();
}

TEST_P(store_crash, every_write_and_sync_through_the_sync_log) {
  const std::uint64_t seed = GetParam();
  log_sink sink;
  auto o = opts(seed % 2 == 0 ? "gzip-1" : "lz4", 4096, &sink);
  o.sync_log_bytes = 24 * 1024;  // fills every dozen syncs or so
  o.batch_records = 2;
  o.max_dirty_records = 3;
  crash_counts counts;
  crash_at_every_call(log_workload, o, seed, counts);
  if (HasFatalFailure()) return;
  // The workload went through the log, and crashes after a batch reached the disk were
  // recovered from it.
  EXPECT_GT(counts.log_syncs, 5u);
  EXPECT_GT(counts.replayed, 0u);
  EXPECT_GT(counts.recovered_new, 0u);
}

INSTANTIATE_TEST_SUITE_P(seeds, store_crash, ::testing::Values(11, 12, 13, 14));

// A failing write, sync or truncate at any call of a write-back and commit (an I/O error or
// ENOSPC that passes, not a crash): nothing acknowledged is lost. The data stays in memory, the
// file takes changes meanwhile, the failure is counted for the file's next fsync or close, the
// next sync() makes everything durable, and reopening finds it. A failed
// commit used to make the file refuse changes, and the let-go file reverted to its old state.
TEST(store_failure, a_failed_commit_keeps_the_data_and_the_next_sync_makes_it_durable) {
  log_sink sink;
  const auto o = opts("gzip-1", 4096, &sink);
  auto a = test::make_data(test::data_class::text, 30000);
  auto b = test::make_data(test::data_class::binary, 29000);
  auto c = test::make_data(test::data_class::text, 5000, 7);
  int failed_somewhere = 0;
  for (std::uint64_t k = 1; k <= 16; ++k) {
    SCOPED_TRACE("failing call " + std::to_string(k));
    auto disk = std::make_shared<mem_disk>();
    auto plan = std::make_shared<crash_plan>();
    auto f = open_mem(disk, o, plan);
    ASSERT_FALSE(f->pwrite(a, 0));
    ASSERT_FALSE(f->sync());
    ASSERT_FALSE(f->pwrite(b, 0));
    ASSERT_FALSE(f->truncate(b.size()));
    plan->stop_at = plan->calls + k;
    const auto seq = f->error_seq();
    const bool failed = static_cast<bool>(f->sync());
    plan->dead = false;
    plan->stop_at = 0;
    if (!failed) continue;  // the commit needed fewer calls than k
    ++failed_somewhere;
    EXPECT_GT(f->error_seq(), seq) << "the failure is counted for the next fsync or close";
    EXPECT_TRUE(f->last_error());
    EXPECT_FALSE(f->clean()) << "the data is still to be made durable";
    EXPECT_EQ(read_all(*f), b) << "nothing was given up";
    // Changes are taken meanwhile, and the next sync makes everything durable.
    ASSERT_FALSE(f->pwrite(c, 1000));
    auto expect = b;
    std::copy(c.begin(), c.end(), expect.begin() + 1000);
    ASSERT_FALSE(f->sync());
    EXPECT_TRUE(f->clean());
    EXPECT_EQ(read_all(*f), expect);
    f.reset();
    f = open_mem(disk, o);
    EXPECT_EQ(read_all(*f), expect);
    std::vector<damage> found;
    ASSERT_FALSE(f->check(found));
    EXPECT_TRUE(found.empty());
  }
  EXPECT_GE(failed_somewhere, 5) << "every call of the commit was made to fail";
}

// After a failed commit, a crash (the page cache reaching the disk in any order) at any later
// call still leaves the last durable state or the new one, never a mix.
TEST(store_failure, a_crash_after_a_failed_commit_leaves_the_old_or_the_new_state) {
  log_sink sink;
  const auto o = opts("gzip-1", 4096, &sink);
  auto a = test::make_data(test::data_class::text, 30000);
  auto b = test::make_data(test::data_class::binary, 29000);
  for (std::uint64_t k = 1; k <= 8; ++k) {
    for (std::uint64_t crash_at = 1; crash_at <= 12; ++crash_at) {
      SCOPED_TRACE("failing call " + std::to_string(k) + ", crash at " + std::to_string(crash_at));
      auto disk = std::make_shared<mem_disk>();
      auto plan = std::make_shared<crash_plan>();
      auto f = open_mem(disk, o, plan);
      ASSERT_FALSE(f->pwrite(a, 0));
      ASSERT_FALSE(f->sync());
      ASSERT_FALSE(f->pwrite(b, 0));
      ASSERT_FALSE(f->truncate(b.size()));
      plan->stop_at = plan->calls + k;
      (void)f->sync();
      plan->dead = false;
      plan->lose_unsynced = true;
      plan->seed = k * 100 + crash_at;
      plan->stop_at = plan->calls + crash_at;
      const bool ok = !f->sync();
      f.reset();
      auto g = open_mem(disk, o);
      const auto got = read_all(*g);
      if (ok) {
        EXPECT_EQ(got, b);
      } else {
        EXPECT_TRUE(got == a || got == b) << "size " << got.size();
      }
    }
  }
}

// A group commit (file::sync_group: the syncs of many files shared, two barriers in all) keeps
// each file's promise: a crash at any call, with unsynced writes lost in any order, leaves every
// file in the state of its last completed commit or of the one in flight, never a mix; after a
// group every member reads what was written before it.
TEST(store_crash, a_group_commit_leaves_each_file_old_or_new) {
  log_sink sink;
  auto o = opts("gzip-1", 4096, &sink);
  o.batch_records = 2;
  constexpr std::size_t files = 3;
  constexpr int rounds = 3;
  // Round r writes file i at a place and size of its own; the model is what each holds.
  auto run = [&](std::vector<std::shared_ptr<mem_disk>>& disks, const std::shared_ptr<crash_plan>& plan,
                 std::vector<std::vector<std::vector<std::byte>>>& snaps, std::vector<int>& last_ok) {
    std::vector<std::unique_ptr<file>> fs;
    for (auto& d : disks) fs.push_back(open_mem(d, o, plan));
    std::vector<std::vector<std::byte>> model(files);
    std::mt19937_64 rng(7);
    for (int r = 0; r < rounds; ++r) {
      for (std::size_t i = 0; i < files; ++i) {
        const std::uint64_t off = rng() % (6 * 4096);
        auto d = some_data(rng, 1 + rng() % 9000);
        if (fs[i]->pwrite(d, off)) return;
        if (model[i].size() < off + d.size()) model[i].resize(off + d.size());
        std::copy(d.begin(), d.end(), model[i].begin() + static_cast<std::ptrdiff_t>(off));
        snaps[i].push_back(model[i]);
      }
      std::vector<file*> members;
      for (auto& f : fs) members.push_back(f.get());
      std::vector<std::error_code> results(files);
      file::sync_group(members, -1, results);
      bool all = true;
      for (std::size_t i = 0; i < files; ++i) {
        if (!results[i]) last_ok[i] = r;
        all = all && !results[i];
      }
      if (!all) return;
    }
  };
  std::uint64_t total = 0;
  {
    std::vector<std::shared_ptr<mem_disk>> disks;
    for (std::size_t i = 0; i < files; ++i) disks.push_back(std::make_shared<mem_disk>());
    auto plan = std::make_shared<crash_plan>();
    std::vector<std::vector<std::vector<std::byte>>> snaps(files);
    std::vector<int> last_ok(files, -1);
    run(disks, plan, snaps, last_ok);
    total = plan->calls;
    for (std::size_t i = 0; i < files; ++i) {
      ASSERT_EQ(last_ok[i], rounds - 1);
      auto f = open_mem(disks[i], o);
      EXPECT_EQ(read_all(*f), snaps[i].back()) << "file " << i;
      EXPECT_GE(disks[i]->syncs, static_cast<std::uint64_t>(2 * rounds)) << "each member's own syncs are the barriers here";
    }
  }
  ASSERT_GT(total, 30u);
  std::uint64_t recovered_new = 0;
  for (std::uint64_t k = 1; k <= total; ++k) {
    for (int variant = 0; variant < 4; ++variant) {
      SCOPED_TRACE("crash at call " + std::to_string(k) + " of " + std::to_string(total) + ", variant " + std::to_string(variant));
      std::vector<std::shared_ptr<mem_disk>> disks;
      for (std::size_t i = 0; i < files; ++i) disks.push_back(std::make_shared<mem_disk>());
      auto plan = std::make_shared<crash_plan>();
      plan->stop_at = k;
      plan->tear = variant % 2 == 0 ? 0.5 : 0.0;
      plan->lose_unsynced = variant >= 2;
      plan->seed = k;
      std::vector<std::vector<std::vector<std::byte>>> snaps(files);
      std::vector<int> last_ok(files, -1);
      run(disks, plan, snaps, last_ok);
      if (!plan->dead) continue;
      for (std::size_t i = 0; i < files; ++i) {
        std::unique_ptr<file> f;
        ASSERT_FALSE(file::open(std::make_unique<mem_io>(disks[i]), o, f)) << "file " << i;
        const auto got = read_all(*f);
        const std::vector<std::byte> none;
        const auto& old_state = last_ok[i] >= 0 ? snaps[i][static_cast<std::size_t>(last_ok[i])] : none;
        const std::size_t next = static_cast<std::size_t>(last_ok[i] + 1);
        const bool is_new = next < snaps[i].size() && got == snaps[i][next];
        ASSERT_TRUE(got == old_state || is_new) << "file " << i << ": recovered " << got.size() << " bytes";
        recovered_new += is_new && got != old_state;
        std::vector<damage> bad;
        ASSERT_FALSE(f->check(bad));
        ASSERT_TRUE(bad.empty()) << bad.front().what;
      }
    }
  }
  EXPECT_GT(recovered_new, 0u) << "no crash came after a slot of the group in flight reached the disk";
}

// ---------------------------------------------------------------------------------------------
// Bad bytes

// The extents a container's current map names, read with the format layer alone.
struct layout {
  format::container_slot slot;
  std::vector<format::indexed_entry> entries;  // the records with data, ascending
};
layout read_layout(const std::vector<std::byte>& disk) {
  layout l;
  for (int i = 0; i < 2; ++i) {
    format::container_slot s;
    if (format::parse_slot(std::span(disk).subspan(i * 64, 64), s) == format::container_error::ok &&
        s.generation > l.slot.generation) {
      l.slot = s;
    }
  }
  if (l.slot.map_records > 0) {
    EXPECT_TRUE(format::decode_map(std::span(disk).subspan(l.slot.map_offset[0]), l.slot, l.entries));
  }
  return l;
}

TEST(store_damage, every_flipped_byte_is_found_or_harmless) {
  log_sink sink;
  const auto o = opts("gzip-1", 4096, &sink);
  auto disk = std::make_shared<mem_disk>();
  std::vector<std::byte> prev, cur;
  {
    auto f = open_mem(disk, o);
    auto text = test::make_data(test::data_class::text, 3 * 4096);
    auto rnd = test::make_data(test::data_class::random, 4096, 5);
    ASSERT_FALSE(f->pwrite(text, 0));
    ASSERT_FALSE(f->pwrite(rnd, 3 * 4096));
    ASSERT_FALSE(f->truncate(5 * 4096 + 1000));        // record 4: a hole
    ASSERT_FALSE(f->pwrite(std::span(text).first(1000), 5 * 4096));  // record 5: partial
    ASSERT_FALSE(f->sync());
    prev = read_all(*f);
    auto other = test::make_data(test::data_class::binary, 4096);
    ASSERT_FALSE(f->pwrite(other, 0));
    ASSERT_FALSE(f->sync());
    cur = read_all(*f);
  }
  const auto clean = disk->bytes;
  const auto l = read_layout(clean);
  ASSERT_EQ(l.entries.size(), 5u);  // six records, one a hole
  auto owner = [&](std::size_t pos) -> int {  // the record whose live frame holds byte `pos`
    for (const auto& x : l.entries) {
      if (x.e.frame() && pos >= x.e.offset && pos < x.e.offset + x.e.length) return static_cast<int>(x.index);
    }
    return -1;
  };
  std::mt19937_64 rng(9);
  std::size_t detected = 0, live_flips = 0;
  for (std::size_t pos = 0; pos < clean.size(); ++pos) {
    disk->bytes = clean;
    disk->bytes[pos] ^= std::byte(1u << (rng() % 8));
    sink.lines->clear();
    std::unique_ptr<file> f;
    ASSERT_FALSE(file::open(std::make_unique<mem_io>(disk), o, f)) << "byte " << pos;
    const int hit = owner(pos);
    live_flips += hit >= 0;
    bool any_error = false;
    for (std::uint64_t r = 0; r * 4096 < cur.size(); ++r) {
      std::vector<std::byte> got(4096);
      std::size_t n = 0;
      auto ec = f->pread(got, r * 4096, n);
      if (ec) {
        ASSERT_EQ(ec, std::errc::io_error);
        ASSERT_FALSE(sink.lines->empty()) << "an error without a log line";
        any_error = true;
        continue;
      }
      got.resize(n);
      auto slice = [&](const std::vector<std::byte>& v) {
        if (r * 4096 >= v.size()) return std::vector<std::byte>{};
        return std::vector<std::byte>(v.begin() + static_cast<std::ptrdiff_t>(r * 4096),
                                      v.begin() + static_cast<std::ptrdiff_t>(std::min<std::uint64_t>(v.size(), (r + 1) * 4096)));
      };
      // A damaged slot never rolls the file back: the other slot holds a copy of the newest
      // state (an older generation is wrong bytes to its reader too).
      const bool ok = got == slice(cur);
      ASSERT_TRUE(ok) << "wrong bytes from record " << r << " after flipping byte " << pos;
      ASSERT_FALSE(hit == static_cast<int>(r)) << "damage in record " << r << "'s frame went unnoticed (byte " << pos << ")";
    }
    detected += any_error;
  }
  EXPECT_GT(live_flips, 4000u);
  EXPECT_GE(detected, live_flips);
}

// The first block of a container destroyed (zeroed, as a bad sector or a stray write leaves
// it): both slots and the magic are gone. The marker kept beside the bytes still says it is a
// container and what its state is, so it reads as before (its frames and maps lie elsewhere),
// or fails, never as a plain file of its own compressed bytes. Without a marker (a file system
// without extended attributes) that is exactly what would happen.
TEST(store_damage, a_zeroed_first_block_is_recovered_from_the_marker_never_read_as_plain) {
  log_sink sink;
  const auto o = opts("gzip-1", 4096, &sink);
  auto disk = std::make_shared<mem_disk>();
  auto data = test::make_data(test::data_class::text, 20 * 4096);
  {
    auto f = open_mem(disk, o);
    ASSERT_FALSE(f->pwrite(data, 0));
    ASSERT_FALSE(f->sync());
  }
  ASSERT_TRUE(disk->marker.has_value());
  const auto clean = disk->bytes;
  std::fill(disk->bytes.begin(), disk->bytes.begin() + 4096, std::byte{0});
  auto f = open_mem(disk, o);
  ASSERT_TRUE(f->is_container()) << "the damaged container was taken for a plain file";
  for (std::size_t r = 0; r < 20; ++r) {
    std::vector<std::byte> got(4096);
    std::size_t n = 0;
    if (auto ec = f->pread(got, r * 4096, n)) {
      EXPECT_EQ(ec, std::errc::io_error);
      continue;
    }
    ASSERT_EQ(n, 4096u);
    EXPECT_TRUE(std::equal(got.begin(), got.end(), data.begin() + static_cast<std::ptrdiff_t>(r * 4096))) << r;
  }
  // A marker whose own bytes are damaged: still a container, and an error, not plain bytes.
  f.reset();
  (*disk->marker)[20] ^= std::byte{1};
  std::unique_ptr<file> g;
  const auto ec = file::open(std::make_unique<mem_io>(disk), o, g);
  EXPECT_TRUE(ec == std::errc::io_error || (g && g->is_container()));
  // And a file with neither magic nor marker is plain, as before.
  disk->marker.reset();
  disk->bytes = clean;
  std::fill(disk->bytes.begin(), disk->bytes.begin() + 4096, std::byte{0});
  std::unique_ptr<file> h;
  ASSERT_FALSE(file::open(std::make_unique<mem_io>(disk), o, h));
  EXPECT_FALSE(h->is_container());
}

TEST(store_damage, one_map_copy_is_enough_and_both_lose_only_their_records) {
  log_sink sink;
  const auto o = opts("lz4", 4096, &sink);
  auto disk = std::make_shared<mem_disk>();
  constexpr std::size_t per_chunk = format::map_chunk_entries_v2;
  const std::size_t records = 2 * per_chunk + 10;  // three map chunks
  auto data = test::make_data(test::data_class::text, records * 4096);
  {
    auto f = open_mem(disk, o);
    ASSERT_FALSE(f->pwrite(data, 0));
  }
  const auto l = read_layout(disk->bytes);
  ASSERT_EQ(l.entries.size(), records);
  // Copy 0 of chunk 1 damaged: read from copy 1, every record intact.
  const auto clean = disk->bytes;
  disk->bytes[l.slot.map_offset[0] + format::map_chunk_offset_v2(1) + 100] ^= std::byte{4};
  {
    auto f = open_mem(disk, o);
    EXPECT_EQ(read_all(*f), data);
    EXPECT_FALSE(sink.lines->empty());
  }
  // Both copies of chunk 1 damaged: its 127 records (all between chunks 0 and 2) are lost, the
  // others read, and stay so.
  disk->bytes = clean;
  disk->bytes[l.slot.map_offset[0] + format::map_chunk_offset_v2(1) + 100] ^= std::byte{4};
  disk->bytes[l.slot.map_offset[1] + format::map_chunk_offset_v2(1) + 7] ^= std::byte{1};
  sink.lines->clear();
  auto f = open_mem(disk, o);
  auto check_reads = [&](file& g) {
    for (std::size_t r = 0; r < records; ++r) {
      std::vector<std::byte> got(4096);
      std::size_t n = 0;
      auto ec = g.pread(got, r * 4096, n);
      const bool lost = r >= per_chunk && r < 2 * per_chunk;
      if (lost) {
        ASSERT_EQ(ec, std::errc::io_error) << r;
      } else {
        ASSERT_FALSE(ec) << r;
        ASSERT_TRUE(std::equal(got.begin(), got.end(), data.begin() + static_cast<std::ptrdiff_t>(r * 4096))) << r;
      }
    }
  };
  check_reads(*f);
  EXPECT_FALSE(sink.lines->empty());
  std::vector<damage> bad;
  ASSERT_FALSE(f->check(bad));
  ASSERT_EQ(bad.size(), 1u) << "one lost range";
  EXPECT_EQ(bad[0].record, per_chunk);
  EXPECT_EQ(f->stats().damaged, per_chunk);
  // Commits write the lost records as lost: never as holes that would read as zeros.
  auto extra = test::make_data(test::data_class::binary, 4096);
  ASSERT_FALSE(f->pwrite(extra, 0));
  std::copy(extra.begin(), extra.end(), data.begin());
  ASSERT_FALSE(f->sync());
  f.reset();
  f = open_mem(disk, o);
  check_reads(*f);
  // A whole-record write replaces a lost record.
  const std::size_t r = per_chunk + 3;
  ASSERT_FALSE(f->pwrite(std::span(data).subspan(r * 4096, 4096), r * 4096));
  std::vector<std::byte> got(4096);
  std::size_t n = 0;
  ASSERT_FALSE(f->pread(got, r * 4096, n));
  // A partial write into a lost record cannot merge: an error, not zeros around new bytes.
  EXPECT_EQ(f->pwrite(std::span(data).first(10), (r + 1) * 4096 + 5), std::errc::io_error);
}

// ---------------------------------------------------------------------------------------------
// Space

// Every overwrite is a little less compressible than any frame before it, so no freed extent
// fits the next frame: without compaction every write lands at the end of the container.
struct growing_overwrites {
  std::mt19937_64 rng{17};
  int round = 0;
  std::vector<std::byte> next() {
    auto d = test::make_data(test::data_class::text, 16384);
    ++round;
    for (int i = 0; i < round; ++i) d[rng() % d.size()] = std::byte(rng());
    return d;
  }
};

std::uint64_t worst_excess(bool compact, std::uint64_t& container_end, std::uint64_t& live) {
  auto o = opts("lz4", 16384);
  o.compact = compact;
  o.compact_slack = 64 * 1024;
  o.sync_log_bytes = 0;  // every sync a commit: the bound is the commits' (the log's own test is below)
  auto disk = std::make_shared<mem_disk>();
  auto f = open_mem(disk, o);
  const std::size_t records = 64;
  growing_overwrites gen;
  std::uint64_t worst = 0;
  for (int round = 0; round < 1500; ++round) {
    const std::size_t r = gen.rng() % records;
    auto d = gen.next();
    EXPECT_FALSE(f->pwrite(d, r * 16384));
    if (round % 10 == 9) {
      EXPECT_FALSE(f->sync());
      const auto st = f->stats();
      container_end = st.container_size;
      live = st.live_bytes;
      const std::uint64_t bound = 2 * st.live_bytes + o.compact_slack;
      worst = std::max(worst, st.container_size > bound ? st.container_size - bound : 0);
      EXPECT_EQ(disk->bytes.size(), st.container_size);
      EXPECT_LE(disk->allocated(), st.container_size + 4096);
    }
  }
  return worst;
}

TEST(store_space, random_overwrites_stay_within_twice_the_live_bytes) {
  std::uint64_t end = 0, live = 0;
  EXPECT_EQ(worst_excess(true, end, live), 0u) << "container " << end << " bytes for " << live << " live";
}

// Best fit with merging keeps most workloads inside the bound by itself; what it cannot undo is
// live data stranded at the end of a container whose front was freed. Compaction can.
TEST(store_space, compaction_moves_stranded_records_down) {
  for (bool compact : {false, true}) {
    auto o = opts("lz4", 16384);
    o.compact = compact;
    o.compact_slack = 0;
    auto disk = std::make_shared<mem_disk>();
    auto f = open_mem(disk, o);
    auto d = test::make_data(test::data_class::text, 64 * 16384);
    ASSERT_FALSE(f->pwrite(d, 0));
    ASSERT_FALSE(f->sync());
    ASSERT_FALSE(f->punch_hole(0, 63 * 16384));
    ASSERT_FALSE(f->sync());
    const auto st = f->stats();
    if (compact) {
      EXPECT_LE(st.container_size, 2 * st.live_bytes) << "live " << st.live_bytes;
      EXPECT_GE(st.compactions, 1u);
    } else {
      EXPECT_GT(st.container_size, 10 * st.live_bytes) << "live " << st.live_bytes;
    }
    EXPECT_EQ(disk->bytes.size(), st.container_size);
    f.reset();
    f = open_mem(disk, o);
    auto all = read_all(*f);
    EXPECT_TRUE(std::equal(all.begin() + 63 * 16384, all.end(), d.begin() + 63 * 16384));
    EXPECT_EQ(std::count(all.begin(), all.begin() + 63 * 16384, std::byte{0}), 63 * 16384);
  }
}

TEST(store_space, freed_blocks_are_punched) {
  auto o = opts("gzip-1", 64 * 1024);
  o.compact = false;
  auto disk = std::make_shared<mem_disk>();
  auto f = open_mem(disk, o);
  auto rnd = test::make_data(test::data_class::random, 1 << 20, 3);
  ASSERT_FALSE(f->pwrite(rnd, 0));
  ASSERT_FALSE(f->sync());
  const auto before = disk->allocated();
  ASSERT_FALSE(f->punch_hole(0, 1 << 20));
  ASSERT_FALSE(f->pwrite(std::span(rnd).first(10), (1 << 20) - 10));  // keeps the size and the last record
  ASSERT_FALSE(f->sync());
  ASSERT_FALSE(f->sync());
  EXPECT_LT(disk->allocated(), before / 8) << "freed extents still allocated";
}

// ---------------------------------------------------------------------------------------------
// Concurrency

// The end of a concurrency test: every thread done without a failure, a commit, and what a
// fresh open of the container reads.
std::vector<std::byte> join_and_reread(std::vector<std::thread>& ts, const std::atomic<int>& failures,
                                       std::unique_ptr<file>& f, const std::shared_ptr<mem_disk>& disk, const options& o) {
  for (auto& t : ts) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_FALSE(f->sync());
  f.reset();
  f = open_mem(disk, o);
  return read_all(*f);
}

TEST(store_concurrency, readers_and_writers_of_different_records) {
  auto o = opts("gzip-1", 16384);
  o.batch_records = 3;
  auto disk = std::make_shared<mem_disk>();
  auto f = open_mem(disk, o);
  constexpr int threads = 4, per = 8;
  const std::size_t rs = 16384;
  std::vector<std::vector<std::byte>> models(threads * per, std::vector<std::byte>(rs));
  ASSERT_FALSE(f->truncate(threads * per * rs));
  std::atomic<int> failures{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      std::mt19937_64 rng(t + 100);
      for (int i = 0; i < 300; ++i) {
        const std::size_t r = static_cast<std::size_t>(t + threads * static_cast<int>(rng() % per));
        const std::size_t at = rng() % rs, len = std::min<std::size_t>(1 + rng() % rs, rs - at);
        if (rng() % 2 == 0) {
          auto d = some_data(rng, len);
          if (f->pwrite(d, r * rs + at)) ++failures;
          std::copy(d.begin(), d.end(), models[r].begin() + static_cast<std::ptrdiff_t>(at));
        } else {
          std::vector<std::byte> got(len);
          std::size_t n = 0;
          if (f->pread(got, r * rs + at, n) || n != len ||
              !std::equal(got.begin(), got.end(), models[r].begin() + static_cast<std::ptrdiff_t>(at))) {
            ++failures;
          }
        }
        if (t == 0 && i % 50 == 0 && f->sync()) ++failures;
      }
    });
  }
  auto all = join_and_reread(ts, failures, f, disk, o);
  for (std::size_t r = 0; r < models.size(); ++r) {
    EXPECT_TRUE(std::equal(models[r].begin(), models[r].end(), all.begin() + static_cast<std::ptrdiff_t>(r * rs))) << r;
  }
}

// Whole-record writes from several threads go to the engine side by side (no write-back lock);
// buffered writes, reads and syncs of the same file run among them.
TEST(store_concurrency, direct_and_buffered_writes_from_many_threads) {
  auto o = opts("gzip-1", 16384);
  o.batch_records = 2;
  auto disk = std::make_shared<mem_disk>();
  auto f = open_mem(disk, o);
  constexpr int threads = 4;
  constexpr std::size_t region = 64 * 16384;  // each thread's own 1 MiB
  std::vector<std::vector<std::byte>> models(threads, std::vector<std::byte>(region));
  std::atomic<int> failures{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      std::mt19937_64 rng(t + 7);
      const std::uint64_t base = static_cast<std::uint64_t>(t) * region;
      for (int i = 0; i < 60; ++i) {
        const auto kind = rng() % 4;
        // Whole records (2-8 of them, so the direct path), or a small unaligned piece.
        const std::size_t len = kind < 2 ? (2 + rng() % 7) * 16384 : 1 + rng() % 20000;
        const std::size_t at = kind < 2 ? (rng() % (64 - len / 16384 + 1)) * 16384 : rng() % (region - len);
        if (kind < 3) {
          auto d = some_data(rng, len);
          if (f->pwrite(d, base + at)) ++failures;
          std::copy(d.begin(), d.end(), models[t].begin() + static_cast<std::ptrdiff_t>(at));
        } else {
          std::vector<std::byte> got(len);
          std::size_t n = 0;
          const std::uint64_t size = f->size();
          const std::size_t want = base + at >= size ? 0 : std::min<std::uint64_t>(len, size - (base + at));
          if (f->pread(got, base + at, n) || n < want ||
              !std::equal(got.begin(), got.begin() + static_cast<std::ptrdiff_t>(n), models[t].begin() + static_cast<std::ptrdiff_t>(at))) {
            ++failures;
          }
        }
        if (i % 20 == 19 && f->sync()) ++failures;
      }
    });
  }
  auto all = join_and_reread(ts, failures, f, disk, o);
  all.resize(threads * region);
  for (int t = 0; t < threads; ++t) {
    EXPECT_TRUE(std::equal(models[t].begin(), models[t].end(), all.begin() + static_cast<std::ptrdiff_t>(t * region))) << t;
  }
}

}  // namespace
}  // namespace qzfs::store
