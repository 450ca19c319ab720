// fs/ without a mount: the statistics' typed form and its JSON (include/qzfs/fs/stats.h), the
// errno a failed FUSE operation answers (src/fs/boundary.h), and the internal errors that end
// the daemon instead of serving the wrong object (src/fs/state.h).
#include <gtest/gtest.h>

#include <cerrno>
#include <filesystem>
#include <future>
#include <memory>
#include <new>
#include <stdexcept>
#include <system_error>

#include "fs/boundary.h"
#include "fs/state.h"
#include "qzfs/fs/policy.h"
#include "qzfs/fs/stats.h"

namespace qzfs::fs {
namespace {

stats sample() {
  stats s;
  s.backing = "/data/b";
  s.compression = "gzip";
  s.recordsize = 131072;
  s.files = 3;
  s.containers = 2;
  s.plain_files = 1;
  s.logical_bytes = 3155728;
  s.allocated_bytes = 1200000;
  s.ratio = 2.5;
  s.open_files = 1;
  s.scan_done = true;
  s.dirty_records = 4;
  s.engine.records = 24;
  s.engine.checker_skips = 8;
  s.engine.errors = 0;
  s.engine.per_format = {{"gzip", 16}};
  s.engine.per_producer = {{"isal", 10}, {"qat", 6}};
  s.cache = {.limit_bytes = 256u << 20, .used_bytes = 10, .peak_bytes = 4u << 20, .reliefs = 2};
  s.accel.spec = "auto";
  s.accel.present = true;
  s.accel.name = "qat";
  s.accel.state = "up";
  s.accel.reason = "";
  s.accel.teardowns = 1;
  s.accel.device_cpu_ns = 123456789;
  s.routing.redone = 5;
  s.cpu.workers = 2;
  s.cpu.busy_s = 1.5;
  return s;
}

TEST(fs_stats, json_round_trip_keeps_every_field) {
  const stats s = sample();
  const stats back = stats_from_json(to_json(s));
  EXPECT_EQ(to_json(back), to_json(s));
  EXPECT_EQ(back.backing, s.backing);
  EXPECT_EQ(back.containers, 2u);
  EXPECT_TRUE(back.scan_done);
  EXPECT_EQ(back.engine.per_producer.at("qat"), 6u);
  EXPECT_TRUE(back.accel.present);
  EXPECT_EQ(back.accel.teardowns, 1u);
  EXPECT_EQ(back.accel.device_cpu_ns, 123456789u);
  EXPECT_EQ(back.cache.peak_bytes, 4u << 20);
  EXPECT_DOUBLE_EQ(back.cpu.busy_s, 1.5);
}

// What tests/ and bench/ grep in `qzfs stats --json` (indented by 2): the keys and their order
// (a key is found as the first one after its section's name).
TEST(fs_stats, json_keeps_the_keys_scripts_read) {
  const std::string j = to_json(sample(), 2);
  for (const char* k : {"\"containers\": 2", "\"plain_files\": 1", "\"logical_bytes\": 3155728", "\"checker_skips\": 8",
                        "\"scan\": \"done\"", "\"state\": \"up\"", "\"files\": 3", "\"allocated_bytes\": 1200000"}) {
    EXPECT_NE(j.find(k), std::string::npos) << k << " in " << j;
  }
  auto after = [&](const char* section, const char* key) {
    const auto at = j.find(std::string("\"") + section + "\"");
    return at == std::string::npos ? std::string::npos : j.find(std::string("\"") + key + "\": ", at);
  };
  EXPECT_NE(after("per_producer", "qat"), std::string::npos) << j;
  EXPECT_NE(after("accel", "teardowns"), std::string::npos) << j;
  EXPECT_NE(after("routing", "redone"), std::string::npos) << j;
  EXPECT_NE(after("engine", "errors"), std::string::npos) << j;
  EXPECT_NE(after("cache", "peak_bytes"), std::string::npos) << j;
  EXPECT_LT(after("engine", "errors"), j.find("\"files\"")) << "the engine's own errors, not a later section's";
}

TEST(fs_stats, no_accelerator_has_only_spec_and_state) {
  stats s;
  s.accel.spec = "cpu";
  const std::string j = to_json(s);
  EXPECT_NE(j.find(R"("accel":{"spec":"cpu","state":"none"})"), std::string::npos) << j;
  EXPECT_NE(j.find(R"("per_format":{})"), std::string::npos) << j;
  const stats back = stats_from_json(j);
  EXPECT_FALSE(back.accel.present);
  EXPECT_EQ(back.accel.state, "none");
}

TEST(fs_stats, a_backing_path_that_is_not_utf8_is_still_served) {
  stats s;
  s.backing = "/data/\xff\xfe";
  std::string j;
  EXPECT_NO_THROW(j = to_json(s));
  EXPECT_NO_THROW((void)stats_from_json(j));
}

TEST(fs_stats, bad_text_is_an_invalid_argument) {
  EXPECT_THROW((void)stats_from_json("not json"), std::invalid_argument);
  EXPECT_THROW((void)stats_from_json("[1]"), std::invalid_argument);
  EXPECT_THROW((void)stats_from_json(R"({"files": "many"})"), std::invalid_argument);
  EXPECT_EQ(stats_from_json(R"({"files": 7})").files, 7u) << "missing keys keep their defaults";
}

// ---- the boundary of every FUSE operation

template <class E>
int errno_of(E&& e, std::string& why) {
  try {
    throw std::forward<E>(e);
  } catch (...) {
    return detail::errno_of_current_exception(why);
  }
}

// A policy's text (qzfs set, the attribute): canonical whatever the spelling, and everything
// that is not a known property with a valid value refused with a reason.
TEST(fs_policy, text_is_canonical_and_bad_values_are_refused_with_a_reason) {
  std::string why;
  auto p = parse_file_policy("recordsize=1048576,compression=zstd-03", &why);
  ASSERT_TRUE(p) << why;
  EXPECT_EQ(to_string(*p), "compression=zstd-3 recordsize=1M");
  p = parse_file_policy("compression=gzip");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->record_size, 0u);
  EXPECT_EQ(*parse_file_policy(to_string(*p)), *p) << "its own text parses back to it";
  for (const char* bad : {"", "compression", "compression=gzip-13", "compression=zstd-20", "colour=blue",
                          "recordsize=3K", "recordsize=2M", "recordsize=2K", "recordsize=18446744073709551615K",
                          "recordsize=17592186044416M", "recordsize=1Q", "recordsize=-4K"}) {
    why.clear();
    EXPECT_FALSE(parse_file_policy(bad, &why)) << bad;
    EXPECT_FALSE(why.empty()) << bad;
  }
  file_policy inner{.compression = "lz4"}, outer{.compression = "zstd-3", .record_size = 1 << 20};
  EXPECT_EQ(overlay(inner, outer), (file_policy{.compression = "lz4", .record_size = 1 << 20}));
  EXPECT_TRUE(overlay(file_policy{}, file_policy{}).empty());
}

TEST(fs_boundary, a_system_error_keeps_its_errno) {
  std::string why = "x";
  EXPECT_EQ(errno_of(std::system_error(ENOSPC, std::generic_category(), "write"), why), ENOSPC);
  EXPECT_TRUE(why.empty()) << "an errno is an answer, not a log line";
  EXPECT_EQ(errno_of(std::system_error(EACCES, std::system_category()), why), EACCES);
  EXPECT_EQ(errno_of(std::filesystem::filesystem_error("x", std::make_error_code(std::errc::read_only_file_system)), why),
            EROFS);
}

TEST(fs_boundary, bad_alloc_is_enomem_and_the_unexpected_is_eio_with_a_message) {
  std::string why;
  EXPECT_EQ(errno_of(std::bad_alloc(), why), ENOMEM);
  EXPECT_EQ(errno_of(std::runtime_error("boom"), why), EIO);
  EXPECT_EQ(why, "boom");
  EXPECT_EQ(errno_of(42, why), EIO);
  EXPECT_FALSE(why.empty());
  // A code that is no errno (another category, or 0) is not passed on as one.
  EXPECT_EQ(errno_of(std::system_error(std::make_error_code(std::future_errc::broken_promise)), why), EIO);
  EXPECT_FALSE(why.empty());
}

// ---- internal errors abort (they failed silently before: a forged inode was served, a
// lookup count going below zero was clamped)

TEST(fs_internal_error_death_test, an_inode_number_never_given_out_aborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  detail::fs_state s;
  alignas(detail::inode) static unsigned char junk[sizeof(detail::inode)] = {};
  const auto forged = reinterpret_cast<std::uint64_t>(&junk);
  EXPECT_DEATH((void)s.get(forged), "qzfs: INTERNAL ERROR: unknown inode number");
  EXPECT_DEATH((void)s.get(0), "INTERNAL ERROR");
  EXPECT_EQ(&s.get(1), &s.root) << "FUSE_ROOT_ID is the root";
}

TEST(fs_internal_error_death_test, forgetting_more_lookups_than_were_given_aborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  detail::fs_state s;
  auto in = std::make_unique<detail::inode>();
  in->dev = 1;
  in->ino = 42;
  in->nlookup = 1;
  const auto ino = reinterpret_cast<std::uint64_t>(in.get());
  s.table[{1, 42}] = std::move(in);
  EXPECT_EQ(&s.get(ino), s.table.at({1, 42}).get());
  EXPECT_DEATH(detail::forget_one(s, ino, 2), "qzfs: INTERNAL ERROR: negative lookup count");
  detail::forget_one(s, ino, 1);
  EXPECT_TRUE(s.table.empty()) << "at 0 the inode goes";
}

}  // namespace
}  // namespace qzfs::fs
