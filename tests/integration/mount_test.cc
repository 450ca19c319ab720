// Real mounts: the qzfs binary mounted with FUSE on a fresh directory, used through ordinary
// system calls, unmounted (with retries), and the backing directory inspected.
#include <fcntl.h>
#include <linux/falloc.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>

#include <chrono>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "qzfs/format/container.h"
#include "mount_fixture.h"
#include "test_data.h"

namespace {

using namespace qzfs::mount_rig;
namespace fs = std::filesystem;

TEST_F(mount_test, data_round_trips_compressed_and_du_shows_it) {
  mount();
  auto text = qzfs::test::make_data(qzfs::test::data_class::text, 3 << 20);
  put(mnt_ / "text.txt", text);
  EXPECT_EQ(qzfs::test::read_file(mnt_ / "text.txt"), text);
  struct stat st {};
  ASSERT_EQ(::stat((mnt_ / "text.txt").c_str(), &st), 0);
  EXPECT_EQ(static_cast<std::size_t>(st.st_size), text.size());
  // Writers that size their buffers by st_blksize (cp, stdio) write in 1 MiB pieces, each one
  // FUSE request; the backing file system's 4 KiB would mean 256 round trips a MiB.
  EXPECT_EQ(st.st_blksize, 1 << 20);
  unmount();
  // On the backing side: a container, much smaller than the data.
  auto stored = qzfs::test::read_file(backing_ / "text.txt");
  EXPECT_TRUE(qzfs::format::has_container_magic(stored));
  EXPECT_LT(stored.size(), text.size() / 2);
  mount();
  EXPECT_EQ(qzfs::test::read_file(mnt_ / "text.txt"), text);
  ASSERT_EQ(::stat((mnt_ / "text.txt").c_str(), &st), 0);
  EXPECT_EQ(static_cast<std::size_t>(st.st_size), text.size()) << "st_size is the logical size";
  EXPECT_LT(static_cast<std::size_t>(st.st_blocks) * 512, text.size() / 2) << "st_blocks counts compressed bytes";
}

TEST_F(mount_test, existing_plain_files_are_read_and_left_as_they_are) {
  auto bin = qzfs::test::make_data(qzfs::test::data_class::binary, 200000);
  put(backing_ / "plain.bin", bin);
  fs::create_directories(backing_ / "sub");
  put(backing_ / "sub" / "small", qzfs::test::make_data(qzfs::test::data_class::text, 100));
  mount();
  EXPECT_EQ(qzfs::test::read_file(mnt_ / "plain.bin"), bin);
  EXPECT_EQ(qzfs::test::read_file(mnt_ / "sub" / "small").size(), 100u);
  unmount();
  EXPECT_EQ(qzfs::test::read_file(backing_ / "plain.bin"), bin) << "reading through the mount changed the file";
}

TEST_F(mount_test, shorter_overwrite_through_o_trunc_leaves_no_old_tail) {
  mount();
  put(mnt_ / "f", qzfs::test::make_data(qzfs::test::data_class::text, 300000));
  auto shorter = qzfs::test::make_data(qzfs::test::data_class::random, 5000, 3);
  put(mnt_ / "f", shorter);  // std::ofstream opens with O_TRUNC
  EXPECT_EQ(qzfs::test::read_file(mnt_ / "f"), shorter);
  EXPECT_EQ(fs::file_size(mnt_ / "f"), 5000u) << "no padding, no old tail";
  fs::resize_file(mnt_ / "f", 9000);
  auto grown = qzfs::test::read_file(mnt_ / "f");
  ASSERT_EQ(grown.size(), 9000u);
  EXPECT_TRUE(std::all_of(grown.begin() + 5000, grown.end(), [](std::byte b) { return b == std::byte{0}; }));
}

TEST_F(mount_test, directories_links_rename_and_unlinked_open_files) {
  mount();
  fs::create_directories(mnt_ / "a" / "b");
  put(mnt_ / "a" / "b" / "x", qzfs::test::make_data(qzfs::test::data_class::text, 70000));
  fs::create_symlink("b/x", mnt_ / "a" / "link");
  EXPECT_EQ(fs::read_symlink(mnt_ / "a" / "link"), "b/x");
  EXPECT_EQ(qzfs::test::read_file(mnt_ / "a" / "link").size(), 70000u);
  fs::create_hard_link(mnt_ / "a" / "b" / "x", mnt_ / "a" / "hard");
  EXPECT_EQ(fs::hard_link_count(mnt_ / "a" / "hard"), 2u);
  fs::rename(mnt_ / "a" / "b" / "x", mnt_ / "a" / "y");
  EXPECT_FALSE(fs::exists(mnt_ / "a" / "b" / "x"));
  EXPECT_EQ(qzfs::test::read_file(mnt_ / "a" / "y").size(), 70000u);
  std::vector<std::string> names;
  for (auto& e : fs::directory_iterator(mnt_ / "a")) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"b", "hard", "link", "y"}));
  // An unlinked file stays readable and writable through a descriptor that has it open.
  const int fd = ::open((mnt_ / "a" / "y").c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  fs::remove(mnt_ / "a" / "y");
  fs::remove(mnt_ / "a" / "hard");
  char buf[16] = {};
  EXPECT_EQ(::pwrite(fd, "still here", 10, 0), 10);
  EXPECT_EQ(::pread(fd, buf, 10, 0), 10);
  EXPECT_STREQ(buf, "still here");
  ::close(fd);
  fs::remove(mnt_ / "a" / "link");
  fs::remove_all(mnt_ / "a");
  EXPECT_TRUE(fs::is_empty(mnt_));
  EXPECT_EQ(::rmdir((mnt_ / "nope").c_str()), -1);
  EXPECT_EQ(errno, ENOENT);
}

TEST_F(mount_test, appends_from_two_descriptors_interleave_without_loss) {
  mount();
  const int a = ::open((mnt_ / "log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  const int b = ::open((mnt_ / "log").c_str(), O_WRONLY | O_APPEND);
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  for (int i = 0; i < 200; ++i) {
    ASSERT_EQ(::write(i % 2 ? a : b, i % 2 ? "AAAAAAA\n" : "bbbbbbb\n", 8), 8);
  }
  ::close(a);
  ::close(b);
  auto d = qzfs::test::read_file(mnt_ / "log");
  ASSERT_EQ(d.size(), 1600u);
  EXPECT_EQ(std::count(d.begin(), d.end(), std::byte{'A'}), 700);
  EXPECT_EQ(std::count(d.begin(), d.end(), std::byte{'b'}), 700);
}

TEST_F(mount_test, fsync_makes_data_durable_without_unmount) {
  mount("commit=1000");  // no timer help: only fsync
  auto text = qzfs::test::make_data(qzfs::test::data_class::text, 1 << 20);
  const int fd = ::open((mnt_ / "durable").c_str(), O_WRONLY | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  ASSERT_EQ(::fsync(fd), 0);
  // The backing file alone (as a crash would leave it) holds the data.
  std::string out;
  EXPECT_EQ(run({QZFS_BINARY, "check", (backing_ / "durable").string()}, &out), 0) << out;
  EXPECT_NE(out.find("logical 1.0 MiB"), std::string::npos) << out;
  ::close(fd);
}

// `qzfs umount` returns only once the daemon has committed its files and let go of the backing
// directory: a mount right after it finds the directory free (the daemon is held stopped here,
// as a slow final commit would hold it). A path with a space, a comma and a backslash.
TEST_F(mount_test, umount_waits_for_the_daemon_and_a_remount_right_after_succeeds) {
  backing_ = root_ / "b k,1\\x";
  fs::create_directories(backing_);
  mount();
  put(mnt_ / "f", pattern(1, 300000));
  const std::string pid = daemon_pid();
  ASSERT_FALSE(pid.empty());
  ASSERT_EQ(::kill(std::stoi(pid), SIGSTOP), 0);
  std::atomic<bool> done{false};
  int rc = -1;
  std::thread u([&] {
    rc = run({QZFS_BINARY, "umount", mnt_.string()});
    done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_FALSE(done) << "umount returned while the daemon still held the backing directory";
  ASSERT_EQ(::kill(std::stoi(pid), SIGCONT), 0);
  u.join();
  EXPECT_EQ(rc, 0);
  std::string out;
  ASSERT_EQ(run({QZFS_BINARY, "mount", "-o", "commit=1", backing_.string(), mnt_.string()}, &out), 0) << out;
  EXPECT_EQ(qzfs::test::read_file(mnt_ / "f"), pattern(1, 300000));
}

// A symlink's own extended attributes, as on the backing file system (GlusterFS bricks set
// trusted.gfid on every entry they create, symlinks included): set, read, listed and removed on
// the link, never on its target; user.* stays refused on a symlink, as the kernel rules.
TEST_F(mount_test, a_symlink_keeps_its_own_extended_attributes) {
  mount();
  put(mnt_ / "target", pattern(2, 100));
  fs::create_symlink("target", mnt_ / "link");
  const std::string link = (mnt_ / "link").string();
  ASSERT_EQ(::lsetxattr(link.c_str(), "trusted.gfid", "0123456789abcdef", 16, 0), 0) << std::strerror(errno);
  char buf[64] = {};
  EXPECT_EQ(::lgetxattr(link.c_str(), "trusted.gfid", buf, sizeof buf), 16);
  EXPECT_EQ(std::string(buf, 16), "0123456789abcdef");
  EXPECT_LT(::getxattr((mnt_ / "target").c_str(), "trusted.gfid", buf, sizeof buf), 0);
  EXPECT_GT(::llistxattr(link.c_str(), buf, sizeof buf), 0);
  EXPECT_EQ(std::string(buf), "trusted.gfid");
  EXPECT_LT(::lsetxattr(link.c_str(), "user.x", "1", 1, 0), 0);
  EXPECT_EQ(errno, EPERM);
  // It is the backing link's own attribute, and it survives a remount.
  EXPECT_EQ(::lgetxattr((backing_ / "link").c_str(), "trusted.gfid", buf, sizeof buf), 16);
  unmount();
  mount();
  EXPECT_EQ(::lgetxattr(link.c_str(), "trusted.gfid", buf, sizeof buf), 16);
  EXPECT_EQ(::lremovexattr(link.c_str(), "trusted.gfid"), 0);
  EXPECT_LT(::lgetxattr((backing_ / "link").c_str(), "trusted.gfid", buf, sizeof buf), 0);
}

// A mount point left by a daemon that died (kill -9): `qzfs mount` says what happened and what to
// do; with --recover it detaches the dead mount and mounts again, and what was fsynced is there.
TEST_F(mount_test, a_mount_point_left_by_a_dead_daemon_is_explained_and_recovered) {
  mount();
  const auto data = pattern(3, 500000);
  {
    const int fd = ::open((mnt_ / "kept").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
    ASSERT_EQ(::fsync(fd), 0);
    ::close(fd);
  }
  const std::string pid = daemon_pid();
  ASSERT_FALSE(pid.empty());
  ASSERT_EQ(::kill(std::stoi(pid), SIGKILL), 0);
  for (int i = 0; i < 100 && run({"kill", "-0", pid}) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  struct stat st {};
  ASSERT_NE(::stat(mnt_.c_str(), &st), 0);
  ASSERT_EQ(errno, ENOTCONN);
  std::string out;
  EXPECT_NE(run({QZFS_BINARY, "mount", backing_.string(), mnt_.string()}, &out), 0);
  EXPECT_NE(out.find("Transport endpoint is not connected"), std::string::npos) << out;
  EXPECT_NE(out.find("--recover"), std::string::npos) << out;
  ASSERT_EQ(run({QZFS_BINARY, "mount", "--recover", "-o", "commit=1", backing_.string(), mnt_.string()}, &out), 0) << out;
  ASSERT_TRUE(mounted(mnt_));
  EXPECT_EQ(qzfs::test::read_file(mnt_ / "kept"), data);
}

// A database's commits: a page written and fsynced, over and over (a WAL's tail rewritten with
// more in it, then the next page). From the second fsync on the file has a sync log, and an fsync
// appends the changed bytes there and syncs once, no commit. kill -9 keeps every fsynced byte:
// the next open recovers the log's batches. A clean unmount leaves no log behind (the last
// commit drops it: a version-2 slot, the space given back).
TEST_F(mount_test, small_fsyncs_go_through_the_sync_log_and_survive_kill_9) {
  mount("compression=gzip,commit=60");
  const auto src = pattern(7, 1 << 20);
  std::vector<std::byte> model;
  const int fd = ::open((mnt_ / "wal").c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  for (int i = 0; i < 300; ++i) {
    const std::size_t off = static_cast<std::size_t>(i / 4) * 8192, len = 2048 * static_cast<std::size_t>(i % 4 + 1);
    const std::size_t from = static_cast<std::size_t>(i) * 1237 % (src.size() - len);
    ASSERT_EQ(::pwrite(fd, src.data() + from, len, static_cast<off_t>(off)), static_cast<ssize_t>(len));
    if (model.size() < off + len) model.resize(off + len);
    std::copy_n(src.begin() + static_cast<std::ptrdiff_t>(from), len, model.begin() + static_cast<std::ptrdiff_t>(off));
    ASSERT_EQ(::fsync(fd), 0) << i;
  }
  std::string out;
  ASSERT_EQ(run({QZFS_BINARY, "stats", "--json", mnt_.string()}, &out), 0) << out;
  EXPECT_GE(json_number(out, "fsyncs", "sync"), 300u) << out;
  EXPECT_GE(json_number(out, "logged", "sync"), 250u) << out;
  const std::string pid = daemon_pid();
  ASSERT_FALSE(pid.empty());
  ASSERT_EQ(::kill(std::stoi(pid), SIGKILL), 0);
  for (int i = 0; i < 100 && run({"kill", "-0", pid}) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ::close(fd);
  ASSERT_EQ(run({QZFS_BINARY, "mount", "--recover", "-o", "commit=1", backing_.string(), mnt_.string()}, &out), 0) << out;
  EXPECT_EQ(qzfs::test::read_file(mnt_ / "wal"), model);
  struct stat st {};
  ASSERT_EQ(::stat((mnt_ / "wal").c_str(), &st), 0);
  EXPECT_EQ(static_cast<std::size_t>(st.st_size), model.size());
  ASSERT_EQ(run({QZFS_BINARY, "stats", "--json", mnt_.string()}, &out), 0) << out;
  EXPECT_GE(json_number(out, "recovered", "sync"), 1u) << out;
  unmount();
  // Closed: the slots name no log (version 2), and the file is back to its data and maps.
  const auto head = qzfs::test::read_file(backing_ / "wal");
  ASSERT_GE(head.size(), 128u);
  EXPECT_EQ(head[4], std::byte{2});
  EXPECT_EQ(head[64 + 4], std::byte{2});
  ASSERT_EQ(::stat((backing_ / "wal").c_str(), &st), 0);
  EXPECT_LT(static_cast<std::size_t>(st.st_blocks) * 512, model.size() + (256u << 10)) << "the 1 MiB log is given back";
  mount();
  EXPECT_EQ(qzfs::test::read_file(mnt_ / "wal"), model);
}

// A file with a sync log, closed and opened again at once, over and over (as fsx -c -y does):
// the daemon lets a closed file go only once a commit has dropped its log, never with its
// destructor still owing that commit. It used to: the new open loaded the old slot while the
// old store wrote its last commit and freed the log's space, and records came back as zeros or
// checksum failures.
TEST_F(mount_test, a_file_closed_with_a_sync_log_and_opened_again_at_once_keeps_its_data) {
  mount("compression=gzip,commit=60");
  const auto src = pattern(11, 1 << 20);
  std::vector<std::byte> model(256 << 10);
  std::mt19937_64 rng(3);
  const auto path = mnt_ / "db";
  for (int round = 0; round < 60; ++round) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT, 0644);
    ASSERT_GE(fd, 0);
    if (round > 0) {
      std::vector<std::byte> got(model.size() + 1);
      ASSERT_EQ(::pread(fd, got.data(), got.size(), 0), static_cast<ssize_t>(model.size())) << "round " << round << ": " << std::strerror(errno);
      got.resize(model.size());
      ASSERT_TRUE(got == model) << "round " << round;
    }
    for (int i = 0; i < 10; ++i) {
      const std::size_t len = 1 + rng() % 3000, off = rng() % (model.size() - len), from = rng() % (src.size() - len);
      ASSERT_EQ(::pwrite(fd, src.data() + from, len, static_cast<off_t>(off)), static_cast<ssize_t>(len));
      std::copy_n(src.begin() + static_cast<std::ptrdiff_t>(from), len, model.begin() + static_cast<std::ptrdiff_t>(off));
      if (round == 0 && i == 0) {
        // The file's whole size first (the rounds write inside it).
        ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(model.size())), 0);
      }
      ASSERT_EQ(::fsync(fd), 0);
    }
    ::close(fd);
    // Around the commit thread's gathering of closed files (~20 ms), when it lets them go.
    std::this_thread::sleep_for(std::chrono::milliseconds(10 + rng() % 30));
  }
  std::string out;
  ASSERT_EQ(run({QZFS_BINARY, "stats", "--json", mnt_.string()}, &out), 0) << out;
  EXPECT_GE(json_number(out, "logged", "sync"), 100u) << "the rounds' fsyncs went through sync logs: " << out;
  unmount();
  mount();
  EXPECT_TRUE(qzfs::test::read_file(path) == model);
}

// `qzfs stats` over several mounts (a volume's bricks): each one, then a total of what they hold;
// with --json, {"mounts": [...], "total": {...}}. A mount point that is not one is said, exit 1.
TEST_F(mount_test, stats_of_several_mounts_add_up_to_a_total) {
  mount();
  const fs::path b2 = root_ / "backing2", m2 = root_ / "mnt2";
  fs::create_directories(b2);
  fs::create_directories(m2);
  std::string out;
  ASSERT_EQ(run({QZFS_BINARY, "mount", "-o", "commit=1", b2.string(), m2.string()}, &out), 0) << out;
  struct unmount_second {
    fs::path m;
    ~unmount_second() { run({QZFS_BINARY, "umount", m.string()}); }
  } second{m2};
  put(mnt_ / "a", pattern(4, 400000));
  put(m2 / "b", pattern(5, 300000));
  put(m2 / "c", pattern(6, 200000));
  ASSERT_EQ(run({"sync", (mnt_ / "a").string(), (m2 / "b").string(), (m2 / "c").string()}), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // closed files commit within ~20 ms
  std::string one, two, all;
  ASSERT_EQ(run({QZFS_BINARY, "stats", "--json", mnt_.string()}, &one), 0) << one;
  ASSERT_EQ(run({QZFS_BINARY, "stats", "--json", m2.string()}, &two), 0) << two;
  ASSERT_EQ(run({QZFS_BINARY, "stats", "--json", mnt_.string(), m2.string()}, &all), 0) << all;
  EXPECT_EQ(json_number(all, "mounts", "total"), 2u) << all;
  EXPECT_EQ(json_number(all, "files", "total"), 3u) << all;
  EXPECT_EQ(json_number(all, "logical_bytes", "total"), 900000u) << all;
  EXPECT_EQ(json_number(all, "allocated_bytes", "total"),
            json_number(one, "allocated_bytes") + json_number(two, "allocated_bytes"))
      << all;
  std::string text;
  ASSERT_EQ(run({QZFS_BINARY, "stats", mnt_.string(), m2.string()}, &text), 0) << text;
  EXPECT_NE(text.find("total        2 mounts, 3 files"), std::string::npos) << text;
  EXPECT_NE(run({QZFS_BINARY, "stats", mnt_.string(), root_.string()}, &text), 0);
  EXPECT_NE(text.find("not a qzfs mount point"), std::string::npos) << text;
  EXPECT_NE(text.find("files        1 "), std::string::npos) << "the good one still prints: " << text;
}

TEST_F(mount_test, ten_parallel_copies_of_one_64_mib_file_are_identical) {
  mount("compression=lz4");
  auto src = qzfs::test::make_data(qzfs::test::data_class::text, 64 << 20);
  for (std::size_t i = 0; i < src.size(); i += 4096) src[i] = std::byte(i / 4096);  // no two pages alike
  put(root_ / "src", src);
  std::vector<std::thread> ts;
  std::vector<int> rcs(10, -1);
  for (int i = 0; i < 10; ++i) {
    ts.emplace_back([&, i] { rcs[i] = run({"cp", (root_ / "src").string(), (mnt_ / ("copy" + std::to_string(i))).string()}); });
  }
  for (auto& t : ts) t.join();
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(rcs[i], 0) << i;
    EXPECT_TRUE(qzfs::test::read_file(mnt_ / ("copy" + std::to_string(i))) == src) << "copy " << i;
  }
}

TEST_F(mount_test, a_size_written_by_one_process_is_what_another_stats) {
  mount();
  const int fd = ::open((mnt_ / "grow").c_str(), O_WRONLY | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  std::string out;
  for (int i = 1; i <= 5; ++i) {
    std::vector<char> d(static_cast<std::size_t>(i) * 12345, 'x');
    ASSERT_EQ(::pwrite(fd, d.data(), d.size(), 0), static_cast<ssize_t>(d.size()));
    ASSERT_EQ(run({"stat", "-c", "%s", (mnt_ / "grow").string()}, &out), 0);
    EXPECT_EQ(std::stoul(out), d.size());
  }
  ::close(fd);
}

// The size of a file no one has open comes from the daemon's memory (no open, no read of its
// header) and follows every change: through the mount, and beside it for a plain file.
TEST_F(mount_test, sizes_of_closed_files_follow_every_change) {
  put(backing_ / "plain", qzfs::test::make_data(qzfs::test::data_class::text, 1000));
  mount();
  auto size_of = [&](const fs::path& p) {
    struct stat st {};
    EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
    return static_cast<std::size_t>(st.st_size);
  };
  auto forget = [] {  // the kernel drops its entries and attributes: every stat reaches the daemon
    std::ofstream("/proc/sys/vm/drop_caches") << "2\n";
  };
  const auto text = qzfs::test::make_data(qzfs::test::data_class::text, 300000);
  put(mnt_ / "c", text);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // committed and let go
  forget();
  EXPECT_EQ(size_of(mnt_ / "c"), text.size());
  EXPECT_LT(fs::file_size(backing_ / "c"), text.size() / 2) << "stored compressed: the size is not the backing one";
  for (std::size_t n : {123456u, 7u, 200001u}) {
    ASSERT_EQ(::truncate((mnt_ / "c").c_str(), static_cast<off_t>(n)), 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    forget();
    EXPECT_EQ(size_of(mnt_ / "c"), n) << "after a truncate to " << n;
  }
  {
    std::ofstream out(mnt_ / "c", std::ios::app | std::ios::binary);
    out << std::string(5000, 'a');
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  forget();
  EXPECT_EQ(size_of(mnt_ / "c"), 205001u);
  EXPECT_EQ(size_of(mnt_ / "plain"), 1000u);
  {
    std::ofstream out(backing_ / "plain", std::ios::app | std::ios::binary);  // beside the mount
    out << std::string(777, 'q');
  }
  // (The kernel's writeback cache keeps its own size of an inode it holds: the change is seen
  // once it lets go of it.)
  forget();
  EXPECT_EQ(size_of(mnt_ / "plain"), 1777u) << "a plain file changed beside the mount";
  unmount();
  mount();  // a new daemon: nothing remembered
  EXPECT_EQ(size_of(mnt_ / "c"), 205001u);
}

TEST_F(mount_test, kill_9_keeps_what_fsync_made_durable) {
  mount("commit=1000");
  auto a = qzfs::test::make_data(qzfs::test::data_class::text, 3 << 20);
  const int fa = ::open((mnt_ / "a").c_str(), O_WRONLY | O_CREAT, 0644);
  ASSERT_EQ(::write(fa, a.data(), a.size()), static_cast<ssize_t>(a.size()));
  ASSERT_EQ(::fsync(fa), 0);
  const int fb = ::open((mnt_ / "b").c_str(), O_WRONLY | O_CREAT, 0644);
  ASSERT_EQ(::write(fb, a.data(), 1 << 20), 1 << 20);  // never synced
  ASSERT_EQ(run({"pkill", "-9", "-f", "[q]zfs mount .*" + mnt_.string()}), 0);
  ::close(fa);
  ::close(fb);
  for (int i = 0; i < 50 && run({"pgrep", "-f", "[q]zfs mount .*" + mnt_.string()}) == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  run({"fusermount3", "-u", "-z", mnt_.string()});
  std::string out;
  EXPECT_EQ(run({QZFS_BINARY, "check", backing_.string()}, &out), 0) << out;
  mount();
  EXPECT_EQ(qzfs::test::read_file(mnt_ / "a"), a);
  // b: whatever its last commit held (nothing, here), never garbage.
  auto b = qzfs::test::read_file(mnt_ / "b");
  EXPECT_TRUE(b.empty() || std::equal(b.begin(), b.end(), a.begin())) << b.size();
}

TEST_F(mount_test, works_as_the_mount_helper_of_mount_and_fstab) {
  // mount -t fuse.qzfs BACKING DIR -o ... runs /sbin/mount.fuse.qzfs BACKING DIR -o ... (-n, -t).
  fs::create_symlink(QZFS_BINARY, root_ / "mount.fuse.qzfs");
  std::string out;
  ASSERT_EQ(run({(root_ / "mount.fuse.qzfs").string(), backing_.string(), mnt_.string(), "-n", "-o",
                 "rw,nosuid,compression=zstd-3,commit=1", "-t", "fuse.qzfs"}, &out), 0) << out;
  ASSERT_TRUE(mounted(mnt_));
  auto d = qzfs::test::make_data(qzfs::test::data_class::text, 500000);
  put(mnt_ / "f", d);
  EXPECT_EQ(qzfs::test::read_file(mnt_ / "f"), d);
  unmount();
  // -o source=BACKING with only the mount point, as some fstab lines have it.
  ASSERT_EQ(run({QZFS_BINARY, "mount", "-o", "source=" + backing_.string(), mnt_.string()}, &out), 0) << out;
  ASSERT_TRUE(mounted(mnt_));
  EXPECT_EQ(qzfs::test::read_file(mnt_ / "f"), d);
}

TEST_F(mount_test, live_statistics) {
  put(backing_ / "plain", qzfs::test::make_data(qzfs::test::data_class::binary, 10000));
  mount();
  put(mnt_ / "text", qzfs::test::make_data(qzfs::test::data_class::text, 2 << 20));
  put(mnt_ / "random", qzfs::test::make_data(qzfs::test::data_class::random, 1 << 20, 9));
  std::string out;
  ASSERT_EQ(run({QZFS_BINARY, "stats", "--json", mnt_.string()}, &out), 0) << out;
  const auto pos = out.find('{');
  ASSERT_NE(pos, std::string::npos) << out;
  EXPECT_NE(out.find("\"containers\": 2"), std::string::npos) << out;
  EXPECT_NE(out.find("\"plain_files\": 1"), std::string::npos) << out;
  EXPECT_NE(out.find("\"logical_bytes\": " + std::to_string((3 << 20) + 10000)), std::string::npos) << out;
  EXPECT_NE(out.find("\"checker_skips\": 8"), std::string::npos) << "the random file's 8 records" << out;
  ASSERT_EQ(run({QZFS_BINARY, "stats", mnt_.string()}, &out), 0) << out;
  EXPECT_NE(out.find("ratio"), std::string::npos) << out;
  // qzfs's own attribute is read-only, and not one of the user's.
  EXPECT_NE(::setxattr(mnt_.c_str(), "user.qzfs.stats", "x", 1, 0), 0);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(run({QZFS_BINARY, "stats", root_.string()}, &out), 1);
  EXPECT_NE(out.find("not a qzfs mount point"), std::string::npos) << out;
}

// The statistics are counters, not a walk per read: a scan at mount start, then every
// commit, creation and removal through the mount. A file is counted once however many links it
// has (a GlusterFS brick links every file twice).
// Files made through the mount while the scan at mount start is still walking the backing
// directory are counted once: when made (the scan, reaching their directory later, passes them
// by). They used to be counted twice, once more by the scan.
// The way out: `qzfs unpack` turns the containers a mount wrote back into plain files of their
// bytes, in place, keeping mode, owner, times and extended attributes and holes; a file with
// other links and a container with a damaged record are left as they are (the damaged one named,
// exit 1); never while the backing directory is mounted. Mounted again, the plain files read the
// same.
TEST_F(mount_test, unpack_turns_containers_back_into_plain_files_keeping_everything) {
  mount("commit=1");
  const auto text = pattern(1, 1 << 20), other = pattern(2, 600000), doomed = pattern(3, 700000);
  put(mnt_ / "text", text);
  put(mnt_ / "linked", other);
  ASSERT_EQ(::link((mnt_ / "linked").c_str(), (mnt_ / "linked2").c_str()), 0);
  put(mnt_ / "doomed", doomed);
  {
    const int fd = ::open((mnt_ / "sparse").c_str(), O_WRONLY | O_CREAT, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, "hello", 5, 3000000), 5);
    ASSERT_EQ(::ftruncate(fd, 4 << 20), 0);
    ASSERT_EQ(::close(fd), 0);
  }
  ASSERT_EQ(::setxattr((mnt_ / "text").c_str(), "user.color", "blue", 4, 0), 0);
  ASSERT_EQ(::chmod((mnt_ / "text").c_str(), 0640), 0);
  ASSERT_EQ(::chown((mnt_ / "text").c_str(), 1000, 1001), 0);
  const struct timespec times[2] = {{1500000000, 123456789}, {1600000000, 987654321}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (mnt_ / "text").c_str(), times, 0), 0);
  std::string out;
  EXPECT_EQ(run({QZFS_BINARY, "unpack", backing_.string()}, &out), 1) << out;
  EXPECT_NE(out.find("unmount it first"), std::string::npos) << out;
  unmount();

  // One record of "doomed" damaged in its backing file (the middle of its payload).
  const auto doomed_size = fs::file_size(backing_ / "doomed");
  ASSERT_LT(doomed_size, doomed.size()) << "a container";
  {
    const int fd = ::open((backing_ / "doomed").c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    const std::vector<char> junk(64, '\x5a');
    ASSERT_EQ(::pwrite(fd, junk.data(), junk.size(), static_cast<off_t>(doomed_size / 2)), 64);
    ASSERT_EQ(::close(fd), 0);
  }
  const auto linked_size = fs::file_size(backing_ / "linked");
  EXPECT_EQ(run({QZFS_BINARY, "unpack", "-v", backing_.string()}, &out), 1) << out;
  EXPECT_NE(out.find("doomed"), std::string::npos) << "the damaged container is named: " << out;
  EXPECT_NE(out.find("has other hard links"), std::string::npos) << out;
  EXPECT_NE(out.find("unpacked 2 files (2 skipped, 1 failed)"), std::string::npos) << out;

  struct stat st {};  // before anything reads the file (its atime)
  ASSERT_EQ(::stat((backing_ / "text").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(st.st_uid, 1000u);
  EXPECT_EQ(st.st_gid, 1001u);
  EXPECT_EQ(st.st_mtim.tv_sec, 1600000000);
  EXPECT_EQ(st.st_mtim.tv_nsec, 987654321);
  EXPECT_EQ(st.st_atim.tv_sec, 1500000000);
  char color[16] = {};
  EXPECT_EQ(::getxattr((backing_ / "text").c_str(), "user.color", color, sizeof color), 4);
  EXPECT_STREQ(color, "blue");
  EXPECT_TRUE(qzfs::test::read_file((backing_ / "text").string()) == text) << "plain bytes in the backing directory";
  EXPECT_LT(::getxattr((backing_ / "text").c_str(), "user.qzfs.slot", nullptr, 0), 0) << "the container's marker is gone";
  ASSERT_EQ(::stat((backing_ / "sparse").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 4 << 20);
  EXPECT_LT(st.st_blocks * 512, 1 << 20) << "holes stay holes";
  EXPECT_EQ(fs::file_size(backing_ / "linked"), linked_size) << "hard-linked: left as it was";
  EXPECT_EQ(fs::file_size(backing_ / "doomed"), doomed_size) << "damaged: the container is kept";
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(backing_))
    if (e.path().filename().string().rfind(".qzfs-unpack", 0) == 0) left.push_back(e.path().string());
  EXPECT_TRUE(left.empty()) << "no temporary file left: " << left.front();

  mount("commit=1");
  EXPECT_TRUE(qzfs::test::read_file((mnt_ / "text").string()) == text);
  EXPECT_TRUE(qzfs::test::read_file((mnt_ / "linked2").string()) == other);
  auto sparse = qzfs::test::read_file((mnt_ / "sparse").string());
  ASSERT_EQ(sparse.size(), 4u << 20);
  EXPECT_EQ(std::memcmp(sparse.data() + 3000000, "hello", 5), 0);
  unmount();
}

// A tool run in the background, its output thrown away (to be killed).
pid_t spawn(const std::vector<std::string>& args) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int devnull = ::open("/dev/null", O_WRONLY);
    ::dup2(devnull, 1);
    ::dup2(devnull, 2);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

void kill_hard(pid_t pid) {
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
}

// How far a recompression through the mount has come on `file` (the daemon's answer).
std::uint64_t recompressed_so_far(const fs::path& file, std::uint64_t* size = nullptr) {
  char buf[1024];
  const ssize_t n = ::getxattr(file.c_str(), "user.qzfs.recompress", buf, sizeof buf);
  if (n <= 0) return 0;
  const std::string j(buf, static_cast<std::size_t>(n));
  auto number = [&](const std::string& key) -> std::uint64_t {
    const auto k = j.find("\"" + key + "\":");
    return k == std::string::npos ? 0 : std::stoull(j.substr(k + key.size() + 3));
  };
  if (size != nullptr) *size = number("size");
  return number("done");
}

// qzfs recompress through a mount: the records of existing files compressed again under a new
// policy while the mount serves them. Killed (kill -9) part way through a large file while
// another writer writes into it, nothing is lost: the writes stay, the bytes are the same, the
// daemon's mark says how far it came, and the next run goes on from there (resumed) and leaves
// only records of the new codec. A file's times do not move; a remount reads the same.
TEST_F(mount_test, recompress_through_the_mount_survives_kill_9_and_resumes_where_it_stopped) {
  mount("commit=1,compression=gzip-1");
  auto big = pattern(4, 24 << 20);
  const auto small = pattern(5, 300000);
  put(mnt_ / "big", big);
  put(mnt_ / "small", small);
  const struct timespec times[2] = {{1500000000, 5}, {1600000000, 7}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (mnt_ / "small").c_str(), times, 0), 0);
  std::string out;
  ASSERT_EQ(run({QZFS_BINARY, "du", "--json", mnt_.string()}, &out), 0) << out;
  const std::uint64_t gzip_stored = json_number(out, "allocated_bytes");
  ASSERT_NE(out.find("\"gzip\""), std::string::npos) << out;

  const pid_t pid = spawn({QZFS_BINARY, "recompress", "--policy", "zstd-9", "--rate", "4", mnt_.string()});
  std::uint64_t done = 0, size = 0;
  for (int i = 0; i < 400 && done < (2u << 20); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    done = recompressed_so_far(mnt_ / "big", &size);
  }
  ASSERT_GE(done, 2u << 20) << "the recompression of big did not start";
  // A writer races with it, in the part done and in the part to come.
  {
    const int fd = ::open((mnt_ / "big").c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, "EARLY", 5, 1000), 5);
    ASSERT_EQ(::pwrite(fd, "LATE!", 5, 20 << 20), 5);
    ASSERT_EQ(::close(fd), 0);
    std::memcpy(big.data() + 1000, "EARLY", 5);
    std::memcpy(big.data() + (20 << 20), "LATE!", 5);
  }
  kill_hard(pid);
  done = recompressed_so_far(mnt_ / "big", &size);
  EXPECT_GT(done, 0u);
  EXPECT_LT(done, size) << "killed part way (the rate keeps it under 4 MiB/s)";
  EXPECT_TRUE(qzfs::test::read_file((mnt_ / "big").string()) == big) << "nothing lost, nothing changed";

  ASSERT_EQ(run({QZFS_BINARY, "recompress", "--policy", "zstd-9", mnt_.string()}, &out), 0) << out;
  EXPECT_NE(out.find("1 resumed"), std::string::npos) << out;
  EXPECT_EQ(recompressed_so_far(mnt_ / "big"), big.size());
  ASSERT_EQ(run({QZFS_BINARY, "du", "--json", mnt_.string()}, &out), 0) << out;
  EXPECT_EQ(out.find("\"gzip\""), std::string::npos) << "only zstd records are left: " << out;
  EXPECT_NE(out.find("\"zstd\""), std::string::npos) << out;
  EXPECT_LT(json_number(out, "allocated_bytes"), gzip_stored) << "zstd-9 stores this text in less than gzip-1";
  // Steps asked by hand: text that is not "OFFSET LENGTH" is refused; an offset far past the
  // end (2^64 - 1) does nothing and moves no mark; the bytes stay.
  for (const char* bad : {"abc", "1 2 3", "12x 5", "1 ", " 1 2", "1 99999999999999999999999"}) {
    EXPECT_EQ(::setxattr((mnt_ / "big").c_str(), "user.qzfs.recompress", bad, std::strlen(bad), 0), -1) << bad;
    EXPECT_EQ(errno, EINVAL) << bad;
  }
  const std::string huge = "18446744073709551615 18446744073709551615";
  EXPECT_EQ(::setxattr((mnt_ / "big").c_str(), "user.qzfs.recompress", huge.data(), huge.size(), 0), 0);
  EXPECT_EQ(recompressed_so_far(mnt_ / "big"), big.size());
  EXPECT_TRUE(qzfs::test::read_file((mnt_ / "big").string()) == big);
  // Once more: everything is under zstd-9 already.
  ASSERT_EQ(run({QZFS_BINARY, "recompress", "--policy", "zstd-9", mnt_.string()}, &out), 0) << out;
  EXPECT_NE(out.find("recompressed 0 files (0 resumed, 2 skipped"), std::string::npos) << out;
  char pol[128] = {};
  EXPECT_GT(::getxattr((mnt_ / "big").c_str(), "user.qzfs.policy", pol, sizeof pol), 0);
  EXPECT_STREQ(pol, "compression=zstd-9") << "--policy is the file's policy from now on";

  struct stat st {};
  ASSERT_EQ(::stat((mnt_ / "small").c_str(), &st), 0);
  EXPECT_EQ(st.st_mtim.tv_sec, 1600000000) << "a recompression changes no byte: the times stay";
  EXPECT_EQ(st.st_mtim.tv_nsec, 7);
  unmount();
  mount("commit=1,compression=gzip-1");
  EXPECT_TRUE(qzfs::test::read_file((mnt_ / "big").string()) == big);
  EXPECT_TRUE(qzfs::test::read_file((mnt_ / "small").string()) == small);
  unmount();
}

// A damaged record is never replaced by what a recompression would make of it: the record stays
// as it is (still EIO), the rest of the file is recompressed, and every run says so again (the
// mark does not pass it, so it is not skipped as done).
TEST_F(mount_test, recompress_leaves_a_damaged_record_as_it_is_and_says_so_every_run) {
  mount("commit=1,compression=gzip-1");
  const auto text = pattern(9, 2 << 20);
  put(mnt_ / "f", text);
  unmount();
  const auto stored = fs::file_size(backing_ / "f");
  {
    const int fd = ::open((backing_ / "f").c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    const std::vector<char> junk(64, '\x5a');
    ASSERT_EQ(::pwrite(fd, junk.data(), junk.size(), static_cast<off_t>(stored / 2)), 64);
    ASSERT_EQ(::close(fd), 0);
  }
  mount("commit=1,compression=gzip-1");
  std::string out;
  for (int run_no = 0; run_no < 2; ++run_no) {
    EXPECT_EQ(run({QZFS_BINARY, "recompress", "--policy", "zstd-3", mnt_.string()}, &out), 1) << out;
    EXPECT_NE(out.find("damaged records are left as they are"), std::string::npos) << run_no << ": " << out;
  }
  // Record by record: one fails with EIO, the others read right.
  const int fd = ::open((mnt_ / "f").c_str(), O_RDONLY | O_DIRECT);
  ASSERT_GE(fd, 0);
  void* mem = nullptr;
  ASSERT_EQ(::posix_memalign(&mem, 4096, 128 << 10), 0);
  auto* rec = static_cast<std::byte*>(mem);
  int bad = 0, good = 0;
  for (std::size_t off = 0; off < text.size(); off += 128 << 10) {
    const ssize_t n = ::pread(fd, rec, 128 << 10, static_cast<off_t>(off));
    if (n < 0) {
      EXPECT_EQ(errno, EIO);
      ++bad;
    } else {
      EXPECT_TRUE(n == (128 << 10) && std::equal(rec, rec + n, text.begin() + static_cast<std::ptrdiff_t>(off))) << off;
      ++good;
    }
  }
  std::free(mem);
  ::close(fd);
  EXPECT_EQ(bad, 1) << "the damaged record stays damaged";
  EXPECT_EQ(good, 15);
  ASSERT_EQ(run({QZFS_BINARY, "du", "--json", mnt_.string()}, &out), 0) << out;
  EXPECT_NE(out.find("\"zstd\""), std::string::npos) << "the other records are recompressed: " << out;
  unmount();
}

// qzfs recompress on a backing directory that is not mounted: each container is rewritten
// beside itself and renamed over it. Killed part way, the file it was on keeps its old container
// (its temporary file is removed by the next run), the files done keep their new one, and the
// next run skips those and does the rest. Mode, times and attributes stay; a remount reads the
// same bytes; qzfs check finds only the new codec and record size.
TEST_F(mount_test, recompress_of_a_backing_directory_survives_kill_9_and_resumes) {
  mount("commit=1,compression=gzip-1");
  std::vector<std::vector<std::byte>> data;
  for (int i = 0; i < 4; ++i) {
    data.push_back(pattern(6 + i, 6 << 20));
    put(mnt_ / ("f" + std::to_string(i)), data.back());
  }
  ASSERT_EQ(::setxattr((mnt_ / "f0").c_str(), "user.color", "red", 3, 0), 0);
  ASSERT_EQ(::chmod((mnt_ / "f0").c_str(), 0604), 0);
  const struct timespec times[2] = {{1500000000, 5}, {1600000000, 7}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (mnt_ / "f0").c_str(), times, 0), 0);
  std::string out;
  EXPECT_EQ(run({QZFS_BINARY, "recompress", "--policy", "zstd-3", backing_.string()}, &out), 1) << out;
  EXPECT_NE(out.find("recompress through the mount"), std::string::npos) << out;
  unmount();

  auto marked = [&] {
    int n = 0;
    for (int i = 0; i < 4; ++i)
      n += ::getxattr((backing_ / ("f" + std::to_string(i))).c_str(), "user.qzfs.recompressed", nullptr, 0) > 0;
    return n;
  };
  // A user's file that only looks like a tool's leftover (not root's, not 0600) stays.
  put(backing_ / ".qzfs-pack.999999.1", pattern(1, 100));
  ASSERT_EQ(::chown((backing_ / ".qzfs-pack.999999.1").c_str(), 1000, 1000), 0);
  ASSERT_EQ(::chmod((backing_ / ".qzfs-pack.999999.1").c_str(), 0600), 0);
  const pid_t pid = spawn({QZFS_BINARY, "recompress", "--policy", "zstd-3", "--record-size", "256K", "--rate", "8",
                           backing_.string()});
  int i = 0;
  for (; i < 400 && marked() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_LT(i, 400) << "no file was recompressed";
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // part way into the next one
  kill_hard(pid);
  const int first = marked();
  EXPECT_GE(first, 1);
  EXPECT_LT(first, 4) << "killed part way (the rate keeps it under 8 MiB/s)";

  ASSERT_EQ(run({QZFS_BINARY, "recompress", "--policy", "zstd-3", "--record-size", "256K", backing_.string()}, &out), 0)
      << out;
  EXPECT_NE(out.find(std::to_string(first) + " skipped"), std::string::npos) << "files done before are not redone: " << out;
  EXPECT_EQ(marked(), 4);
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(backing_))
    if (e.path().filename().string().rfind(".qzfs-recompress", 0) == 0) left.push_back(e.path().string());
  EXPECT_TRUE(left.empty()) << "the killed run's temporary file is gone: " << left.front();
  EXPECT_TRUE(fs::exists(backing_ / ".qzfs-pack.999999.1")) << "another user's file is not a leftover";
  fs::remove(backing_ / ".qzfs-pack.999999.1");
  ASSERT_EQ(run({QZFS_BINARY, "check", "--json", backing_.string()}, &out), 0) << out;
  EXPECT_EQ(json_number(out, "gzip"), 0u) << out;
  EXPECT_EQ(json_number(out, "zstd"), 4u * (6 << 20) / (256 << 10)) << "256 KiB records: " << out;

  struct stat st {};
  ASSERT_EQ(::stat((backing_ / "f0").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0604u);
  EXPECT_EQ(st.st_mtim.tv_sec, 1600000000);
  EXPECT_EQ(st.st_mtim.tv_nsec, 7);
  char color[8] = {};
  EXPECT_EQ(::getxattr((backing_ / "f0").c_str(), "user.color", color, sizeof color), 3);
  mount("commit=1,compression=gzip-1");
  for (int k = 0; k < 4; ++k) EXPECT_TRUE(qzfs::test::read_file((mnt_ / ("f" + std::to_string(k))).string()) == data[k]) << k;
  unmount();
}

TEST_F(mount_test, files_made_during_the_scan_at_mount_start_are_counted_once) {
  constexpr int dirs = 40, per_dir = 400;
  for (int d = 0; d < dirs; ++d) {
    const auto dir = backing_ / ("d" + std::to_string(d));
    fs::create_directories(dir);
    for (int i = 0; i < per_dir; ++i) std::ofstream(dir / std::to_string(i)) << "x";
  }
  mount();
  // One new file in every directory, from the last one (the scan's stack takes it first) down.
  for (int d = dirs - 1; d >= 0; --d) {
    const int fd = ::open((mnt_ / ("d" + std::to_string(d)) / "new").c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
    ASSERT_GE(fd, 0);
    ::close(fd);
  }
  std::string out;
  for (int i = 0; i < 500; ++i) {
    ASSERT_EQ(run({QZFS_BINARY, "stats", "--json", mnt_.string()}, &out), 0) << out;
    if (out.find("\"scan\": \"done\"") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_NE(out.find("\"scan\": \"done\""), std::string::npos) << out;
  EXPECT_EQ(json_number(out, "files"), static_cast<std::uint64_t>(dirs * (per_dir + 1))) << out;
  EXPECT_EQ(json_number(out, "plain_files"), static_cast<std::uint64_t>(dirs * (per_dir + 1))) << out;
}

TEST_F(mount_test, statistics_are_counters_kept_by_commits_creations_and_removals) {
  put(backing_ / "plain", qzfs::test::make_data(qzfs::test::data_class::binary, 10000));
  put(backing_ / "linked", qzfs::test::make_data(qzfs::test::data_class::binary, 5000));
  fs::create_hard_link(backing_ / "linked", backing_ / "link2");
  mount();
  auto stats = [&] {
    std::string out;
    for (int i = 0; i < 100; ++i) {
      EXPECT_EQ(run({QZFS_BINARY, "stats", "--json", mnt_.string()}, &out), 0) << out;
      if (out.find("\"scan\": \"done\"") != std::string::npos) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return out;
  };
  auto out = stats();
  EXPECT_EQ(json_number(out, "files"), 2u) << out;
  EXPECT_EQ(json_number(out, "logical_bytes"), 15000u) << out;
  const auto text = qzfs::test::make_data(qzfs::test::data_class::text, 1 << 20);
  put(mnt_ / "text", text);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // committed after the close
  out = stats();
  EXPECT_EQ(json_number(out, "files"), 3u) << out;
  EXPECT_EQ(json_number(out, "containers"), 1u) << out;
  EXPECT_EQ(json_number(out, "logical_bytes"), 15000u + (1u << 20)) << out;
  const auto stored = json_number(out, "allocated_bytes");
  EXPECT_LT(stored, 15000u + (1u << 20) / 2) << "the text is stored compressed";
  fs::remove(mnt_ / "link2");
  EXPECT_EQ(json_number(stats(), "files"), 3u) << "a link went, the file is still there";
  fs::remove(mnt_ / "linked");
  fs::remove(mnt_ / "text");
  out = stats();
  EXPECT_EQ(json_number(out, "files"), 1u) << out;
  EXPECT_EQ(json_number(out, "logical_bytes"), 10000u) << out;
  EXPECT_EQ(json_number(out, "containers"), 0u) << out;
  put(mnt_ / "again", text);
  unmount();
  mount();
  out = stats();
  EXPECT_EQ(json_number(out, "files"), 2u) << out;
  EXPECT_EQ(json_number(out, "logical_bytes"), 10000u + (1u << 20)) << out;
}

TEST_F(mount_test, shared_writable_mmap_reaches_the_store) {
  mount();
  put(mnt_ / "mapped", std::vector<std::byte>(300000));
  const int fd = ::open((mnt_ / "mapped").c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  void* p = ::mmap(nullptr, 300000, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(p, MAP_FAILED);
  std::memcpy(static_cast<char*>(p) + 1000, "0123456789", 10);
  std::memcpy(static_cast<char*>(p) + 250000, "hello", 5);
  ASSERT_EQ(::msync(p, 300000, MS_SYNC), 0);
  ::munmap(p, 300000);
  ::close(fd);
  unmount();
  mount();
  auto d = qzfs::test::read_file(mnt_ / "mapped");
  ASSERT_EQ(d.size(), 300000u);
  EXPECT_EQ(std::memcmp(d.data() + 1000, "0123456789", 10), 0);
  EXPECT_EQ(std::memcmp(d.data() + 250000, "hello", 5), 0);
}

// fsx-style: random operations on one file through the mount, every read checked against a
// shadow copy in memory; the file is reopened now and then and the mount remounted once.
// QZFS_FSX_OPS sets the count (3000 by default; scripts/test.sh, as CI, runs 100,000; scripts/soak.sh more).
// Run on both mounts: with the kernel's writeback cache, and without.
class fsx : public mount_test, public ::testing::WithParamInterface<const char*> {};
INSTANTIATE_TEST_SUITE_P(modes, fsx, ::testing::Values("commit=1,recordsize=16K", "commit=1,recordsize=16K,nowriteback"));
TEST_P(fsx, random_operations_match_a_shadow_copy) {
  mount(GetParam());
  const char* env = std::getenv("QZFS_FSX_OPS");
  const int ops = env != nullptr ? std::atoi(env) : 3000;
  std::mt19937_64 rng(12345);
  std::vector<std::byte> shadow;
  const fs::path path = mnt_ / "fsx";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  const std::size_t max_size = 1 << 20;
  const auto& text = qzfs::test::text_source();
  auto data = [&](std::size_t n) {
    std::vector<std::byte> d(n);
    const auto kind = rng() % 3;
    const std::size_t at = rng() % text.size();
    for (std::size_t i = 0; i < n; ++i) {
      d[i] = kind == 0 ? text[(at + i) % text.size()] : kind == 1 ? std::byte(rng()) : std::byte{0};
    }
    return d;
  };
  auto check_all = [&](const char* when, int op) {
    std::vector<std::byte> got(shadow.size() + 10);
    const ssize_t n = ::pread(fd, got.data(), got.size(), 0);
    ASSERT_EQ(n, static_cast<ssize_t>(shadow.size())) << when << " op " << op;
    got.resize(static_cast<std::size_t>(n));
    ASSERT_TRUE(got == shadow) << when << " op " << op;
  };
  for (int op = 0; op < ops; ++op) {
    const auto kind = rng() % 100;
    const std::size_t off = rng() % (shadow.size() + 40000) % max_size;
    const std::size_t len = 1 + rng() % (rng() % 4 == 0 ? 200000 : 9000);
    if (kind < 30) {  // write
      auto d = data(std::min(len, max_size - off));
      ASSERT_EQ(::pwrite(fd, d.data(), d.size(), static_cast<off_t>(off)), static_cast<ssize_t>(d.size())) << op;
      if (shadow.size() < off + d.size()) shadow.resize(off + d.size());
      std::copy(d.begin(), d.end(), shadow.begin() + static_cast<std::ptrdiff_t>(off));
    } else if (kind < 55) {  // read
      std::vector<std::byte> got(len);
      const ssize_t n = ::pread(fd, got.data(), len, static_cast<off_t>(off));
      const std::size_t want = off >= shadow.size() ? 0 : std::min(len, shadow.size() - off);
      ASSERT_EQ(n, static_cast<ssize_t>(want)) << "read at " << off << " op " << op;
      ASSERT_TRUE(std::equal(got.begin(), got.begin() + static_cast<std::ptrdiff_t>(want),
                             shadow.begin() + static_cast<std::ptrdiff_t>(std::min(off, shadow.size()))))
          << "read at " << off << " op " << op;
    } else if (kind < 63) {  // truncate
      const std::size_t sz = rng() % max_size;
      ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(sz)), 0) << op;
      shadow.resize(sz);
    } else if (kind < 69) {  // punch
      if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off), static_cast<off_t>(len)) == 0) {
        for (std::size_t i = off; i < std::min(off + len, shadow.size()); ++i) shadow[i] = std::byte{0};
      } else {
        ASSERT_EQ(errno, EOPNOTSUPP) << op;
      }
    } else if (kind < 73) {  // zero range / fallocate extending
      const bool zero = rng() % 2 == 0;
      const int mode = zero ? FALLOC_FL_ZERO_RANGE : 0;
      ASSERT_EQ(::fallocate(fd, mode, static_cast<off_t>(off), static_cast<off_t>(len)), 0) << op;
      if (shadow.size() < off + len) shadow.resize(off + len);
      if (zero) std::fill(shadow.begin() + static_cast<std::ptrdiff_t>(off), shadow.begin() + static_cast<std::ptrdiff_t>(off + len), std::byte{0});
    } else if (kind < 80 && !shadow.empty()) {  // mmap read and write
      const std::size_t size = shadow.size();
      void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      ASSERT_NE(p, MAP_FAILED) << op;
      auto* b = static_cast<std::byte*>(p);
      const std::size_t at = off % size, n = std::min<std::size_t>(len % 5000 + 1, size - at);
      ASSERT_TRUE(std::equal(b + at, b + at + n, shadow.begin() + static_cast<std::ptrdiff_t>(at))) << "mmap read op " << op;
      auto d = data(n);
      std::memcpy(b + at, d.data(), n);
      std::copy(d.begin(), d.end(), shadow.begin() + static_cast<std::ptrdiff_t>(at));
      ASSERT_EQ(::msync(p, size, MS_SYNC), 0);
      ::munmap(p, size);
    } else if (kind < 85) {
      ASSERT_EQ(rng() % 2 ? ::fsync(fd) : ::fdatasync(fd), 0) << op;
    } else if (kind < 90) {  // SEEK_DATA / SEEK_HOLE agree with the shadow
      const bool whence_data = rng() % 2 != 0;
      const off_t at = ::lseek(fd, static_cast<off_t>(off), whence_data ? SEEK_DATA : SEEK_HOLE);
      if (off >= shadow.size()) {
        ASSERT_EQ(at, -1) << op;
        ASSERT_EQ(errno, ENXIO) << op;
      } else if (at < 0) {
        // Below the end there is always a hole (at the size at worst); SEEK_DATA may find none.
        ASSERT_EQ(errno, ENXIO) << op;
        ASSERT_TRUE(whence_data) << op << ": SEEK_HOLE below the size found nothing";
      } else {
        ASSERT_GE(static_cast<std::size_t>(at), off) << op;
        ASSERT_LE(static_cast<std::size_t>(at), shadow.size()) << op;
      }
    } else if (kind < 97) {  // close and reopen
      ASSERT_EQ(::close(fd), 0);
      fd = ::open(path.c_str(), O_RDWR);
      ASSERT_GE(fd, 0);
      check_all("after reopen", op);
    } else if (op > ops / 2 && op < ops / 2 + 40) {  // remount, once, around the middle
      ::close(fd);
      unmount();
      mount("commit=1,recordsize=16K");
      fd = ::open(path.c_str(), O_RDWR);
      ASSERT_GE(fd, 0);
      check_all("after remount", op);
    }
    struct stat st {};
    ASSERT_EQ(::fstat(fd, &st), 0);
    ASSERT_EQ(static_cast<std::size_t>(st.st_size), shadow.size()) << "size after op " << op << " kind " << kind;
  }
  check_all("at the end", ops);
  ::close(fd);
}

// POSIX semantics, errno values included: each check runs on the mount and, for comparison,
// directly on a directory of the backing file system; both must pass.
std::vector<std::string> posix_suite(const fs::path& d) {
  std::vector<std::string> failed;
  auto expect = [&](bool ok, const std::string& what) {
    if (!ok) failed.push_back(what + " (errno " + std::to_string(errno) + ": " + std::strerror(errno) + ")");
  };
  auto fails_with = [&](int rc, int e, const std::string& what) { expect(rc == -1 && errno == e, what); };
  const std::string f = (d / "f").string(), dir = (d / "dir").string(), dir2 = (d / "dir2").string();
  int fd = ::open(f.c_str(), O_CREAT | O_RDWR, 0640);
  expect(fd >= 0, "create");
  expect(::write(fd, "hello", 5) == 5, "write");
  ::close(fd);
  fails_with(::open(f.c_str(), O_CREAT | O_EXCL | O_RDWR, 0644), EEXIST, "O_EXCL on an existing file: EEXIST");
  fails_with(::open((d / "missing").c_str(), O_RDONLY), ENOENT, "open missing: ENOENT");
  expect(::mkdir(dir.c_str(), 0755) == 0, "mkdir");
  fails_with(::mkdir(dir.c_str(), 0755), EEXIST, "mkdir existing: EEXIST");
  expect(::close(::open((d / "dir" / "inner").c_str(), O_CREAT | O_WRONLY, 0644)) == 0, "create inner");
  fails_with(::rmdir(dir.c_str()), ENOTEMPTY, "rmdir non-empty: ENOTEMPTY");
  fails_with(::rmdir(f.c_str()), ENOTDIR, "rmdir a file: ENOTDIR");
  fails_with(::unlink(dir.c_str()), EISDIR, "unlink a directory: EISDIR");
  fails_with(::rename(f.c_str(), dir.c_str()), EISDIR, "rename file over directory: EISDIR");
  expect(::mkdir(dir2.c_str(), 0755) == 0, "mkdir 2");
  fails_with(::rename(dir2.c_str(), f.c_str()), ENOTDIR, "rename directory over file: ENOTDIR");
  fails_with(::rename(dir2.c_str(), dir.c_str()), ENOTEMPTY, "rename over a non-empty directory: ENOTEMPTY");
  const std::string g = (d / "g").string();
  expect(::close(::open(g.c_str(), O_CREAT | O_WRONLY, 0644)) == 0, "create g");
  fails_with(::renameat2(AT_FDCWD, f.c_str(), AT_FDCWD, g.c_str(), RENAME_NOREPLACE), EEXIST, "RENAME_NOREPLACE: EEXIST");
  expect(::renameat2(AT_FDCWD, f.c_str(), AT_FDCWD, g.c_str(), RENAME_EXCHANGE) == 0, "RENAME_EXCHANGE");
  struct stat st {};
  expect(::stat(g.c_str(), &st) == 0 && st.st_size == 5, "exchange swapped the files");
  fails_with(::link(dir.c_str(), (d / "dirlink").c_str()), EPERM, "hard link to a directory: EPERM");
  char buf[64];
  fails_with(static_cast<int>(::readlink(g.c_str(), buf, sizeof buf)), EINVAL, "readlink of a file: EINVAL");
  expect(::symlink("loop2", (d / "loop1").c_str()) == 0 && ::symlink("loop1", (d / "loop2").c_str()) == 0, "symlinks");
  fails_with(::open((d / "loop1").c_str(), O_RDONLY), ELOOP, "symlink loop: ELOOP");
  fails_with(::truncate(dir.c_str(), 0), EISDIR, "truncate a directory: EISDIR");
  fd = ::open(g.c_str(), O_WRONLY);
  fails_with(static_cast<int>(::read(fd, buf, 1)), EBADF, "read from O_WRONLY: EBADF");
  ::close(fd);
  fd = ::open(g.c_str(), O_RDONLY);
  fails_with(static_cast<int>(::write(fd, "x", 1)), EBADF, "write to O_RDONLY: EBADF");
  fails_with(static_cast<int>(::lseek(fd, 100, SEEK_DATA)), ENXIO, "SEEK_DATA past the end: ENXIO");
  ::close(fd);
  expect(::chmod(g.c_str(), 0600) == 0 && ::stat(g.c_str(), &st) == 0 && (st.st_mode & 07777) == 0600, "chmod");
  struct timespec ts[2] = {{1000, 0}, {123456789, 5}};
  expect(::utimensat(AT_FDCWD, g.c_str(), ts, 0) == 0 && ::stat(g.c_str(), &st) == 0 && st.st_mtim.tv_sec == 123456789,
         "utimensat");
  expect(::truncate(g.c_str(), 10000) == 0 && ::stat(g.c_str(), &st) == 0 && st.st_size == 10000, "truncate grows");
  fd = ::open(g.c_str(), O_RDONLY);
  std::vector<char> z(10000);
  expect(::pread(fd, z.data(), z.size(), 0) == 10000 && std::all_of(z.begin() + 5, z.end(), [](char c) { return c == 0; }),
         "grown bytes read as zeros");
  ::close(fd);
  expect(::setxattr(g.c_str(), "user.k", "v1", 2, 0) == 0, "setxattr");
  expect(::getxattr(g.c_str(), "user.k", buf, sizeof buf) == 2 && std::memcmp(buf, "v1", 2) == 0, "getxattr");
  fails_with(static_cast<int>(::getxattr(g.c_str(), "user.none", buf, sizeof buf)), ENODATA, "getxattr missing: ENODATA");
  fails_with(::setxattr(g.c_str(), "user.k", "v2", 2, XATTR_CREATE), EEXIST, "XATTR_CREATE existing: EEXIST");
  expect(::removexattr(g.c_str(), "user.k") == 0, "removexattr");
  fails_with(::removexattr(g.c_str(), "user.k"), ENODATA, "removexattr missing: ENODATA");
  // As root, the namespaces distributed engines keep their metadata in pass through too.
  expect(::setxattr(g.c_str(), "trusted.k", "t1", 2, 0) == 0, "setxattr trusted.*");
  expect(::getxattr(g.c_str(), "trusted.k", buf, sizeof buf) == 2 && std::memcmp(buf, "t1", 2) == 0, "getxattr trusted.*");
  expect(::setxattr(g.c_str(), "security.qzfs_test", "s1", 2, 0) == 0, "setxattr security.*");
  expect(::getxattr(g.c_str(), "security.qzfs_test", buf, sizeof buf) == 2, "getxattr security.*");
  {
    char names[1024];
    const ssize_t n = ::listxattr(g.c_str(), names, sizeof names);
    const std::string all(names, n > 0 ? static_cast<std::size_t>(n) : 0);
    expect(all.find("trusted.k") != std::string::npos && all.find("security.qzfs_test") != std::string::npos,
           "listxattr shows trusted.* and security.*");
    expect(all.find("user.qzfs.") == std::string::npos, "no attribute of qzfs listed");
  }
  expect(::link(g.c_str(), (d / "g2").c_str()) == 0 && ::stat(g.c_str(), &st) == 0 && st.st_nlink == 2, "link count");
  // A sparse file past 4 GiB.
  const std::string big = (d / "big").string();
  fd = ::open(big.c_str(), O_CREAT | O_RDWR, 0644);
  const off_t far = (off_t{5} << 30) + 7;
  expect(::pwrite(fd, "tail", 4, far) == 4, "pwrite past 4 GiB");
  expect(::fstat(fd, &st) == 0 && st.st_size == far + 4, "size past 4 GiB");
  expect(::pread(fd, buf, 4, far) == 4 && std::memcmp(buf, "tail", 4) == 0, "pread past 4 GiB");
  expect(::pread(fd, buf, 4, 1 << 30) == 4 && buf[0] == 0 && buf[3] == 0, "hole reads zeros");
  ::close(fd);
  // A directory of many files.
  const fs::path many = d / "many";
  fs::create_directories(many);
  for (int i = 0; i < 3000; ++i) ::close(::open((many / ("file-" + std::to_string(i))).c_str(), O_CREAT | O_WRONLY, 0644));
  expect(std::distance(fs::directory_iterator(many), fs::directory_iterator()) == 3000, "readdir of 3000 entries");
  struct statvfs sv {};
  expect(::statvfs(d.c_str(), &sv) == 0 && sv.f_blocks > 0, "statvfs");
  return failed;
}

TEST_F(mount_test, posix_semantics_match_the_backing_file_system) {
  const fs::path direct = root_ / "direct";
  fs::create_directories(direct);
  auto on_backing = posix_suite(direct);
  EXPECT_TRUE(on_backing.empty()) << "the suite itself fails on the backing file system: " << on_backing.front();
  mount();
  fs::create_directories(mnt_ / "suite");
  for (const auto& f : posix_suite(mnt_ / "suite")) ADD_FAILURE() << "on the mount: " << f;
}

TEST_F(mount_test, qat_through_qatzip_and_its_failures_lose_nothing) {
  // QAT through QATzip, loaded at run time: the stand-in library takes the real dlopen path.
  mount(std::string("commit=1,accel=qat,qatzip=") + QZFS_STANDIN_LIB);
  auto d = pattern(1, 8 << 20);
  put(mnt_ / "q", d);
  std::string out;
  ASSERT_EQ(run({QZFS_BINARY, "stats", "--json", mnt_.string()}, &out), 0) << out;
  EXPECT_NE(out.find("\"state\": \"up\""), std::string::npos) << out;
  const auto by_qat = json_number(out, "qat", "per_producer");
  EXPECT_GT(by_qat, 0u) << out;
  unmount();
  EXPECT_EQ(run({QZFS_BINARY, "check", backing_.string()}, &out), 0) << out;

  // A device that fails: jobs error out, come back as garbage or with a wrong CRC. The device is
  // torn down and re-probed, its jobs redone on the CPU; every byte arrives.
  mount(std::string("commit=1,accel=fault-qat:error=0.2+garbage=0.1+badcrc=0.1+seed=4,qatzip=") + QZFS_STANDIN_LIB);
  // How many records the scheduler gives the device depends on its measured speed: files are
  // written until a failure has torn it down (at most 24; a few suffice at these rates).
  std::vector<std::vector<std::byte>> files;
  for (int i = 0; i < 24; ++i) {
    files.push_back(pattern(10 + static_cast<std::uint64_t>(i), (3 << 20) + i * 4097));
    put(mnt_ / ("f" + std::to_string(i)), files.back());
    ASSERT_EQ(run({QZFS_BINARY, "stats", "--json", mnt_.string()}, &out), 0) << out;
    if (i >= 5 && json_number(out, "teardowns", "accel") > 0 && json_number(out, "redone", "routing") > 0) break;
  }
  EXPECT_GT(json_number(out, "teardowns", "accel"), 0u) << out;
  EXPECT_GT(json_number(out, "redone", "routing"), 0u) << out;
  EXPECT_EQ(json_number(out, "errors", "engine"), 0u) << out;
  unmount();
  EXPECT_EQ(run({QZFS_BINARY, "check", backing_.string()}, &out), 0) << out;
  mount("accel=cpu");
  EXPECT_EQ(qzfs::test::read_file(mnt_ / "q"), d);
  for (std::size_t i = 0; i < files.size(); ++i) EXPECT_EQ(qzfs::test::read_file(mnt_ / ("f" + std::to_string(i))), files[i]) << i;
}

// Reads decode records on the accelerator too: through a device that fails, hangs and answers
// with wrong bytes, every byte read is right (a wrong answer is never served: the device's
// result is checked against the member's CRC-32 and the record's checksum and redone on the
// CPU), and the statistics say who decoded what.
TEST_F(mount_test, reads_through_a_failing_accelerator_return_every_byte_right) {
  mount("compression=gzip,accel=cpu");
  std::vector<std::vector<std::byte>> files;
  for (int i = 0; i < 3; ++i) {
    files.push_back(pattern(40 + static_cast<std::uint64_t>(i), 24 << 20));
    put(mnt_ / ("r" + std::to_string(i)), files.back());
  }
  unmount();
  mount("compression=gzip,accel=fault:error=0.1+garbage=0.05+timeout=0.01+seed=3");
  std::string out;
  for (std::size_t i = 0; i < files.size(); ++i) {
    EXPECT_TRUE(qzfs::test::read_file(mnt_ / ("r" + std::to_string(i))) == files[i]) << "file " << i << " read wrong";
  }
  ASSERT_EQ(run({QZFS_BINARY, "stats", "--json", mnt_.string()}, &out), 0) << out;
  EXPECT_GT(json_number(out, "decompressed", "accel"), 0u) << out;
  EXPECT_GT(json_number(out, "decompressed", "cpu"), 0u) << out;
  EXPECT_GT(json_number(out, "teardowns", "accel"), 0u) << out;
  EXPECT_GT(json_number(out, "decode_redone", "routing"), 0u) << out;
  ASSERT_EQ(run({QZFS_BINARY, "stats", mnt_.string()}, &out), 0) << out;
  EXPECT_NE(out.find("decoded      by backends, cpu: "), std::string::npos) << out;
  unmount();

  // QAT through the stand-in QATzip: its decompressions are counted on the accelerator.
  mount(std::string("compression=gzip,accel=qat,qatzip=") + QZFS_STANDIN_LIB);
  EXPECT_TRUE(qzfs::test::read_file(mnt_ / "r0") == files[0]);
  ASSERT_EQ(run({QZFS_BINARY, "stats", "--json", mnt_.string()}, &out), 0) << out;
  EXPECT_GT(json_number(out, "decompressed", "accel"), 0u) << out;
  EXPECT_EQ(json_number(out, "decode_redone", "routing"), 0u) << out;
}

// compression=auto through a mount: every candidate is measured on the mount's own records, the
// statistics show what it measured, and the data reads back.
TEST_F(mount_test, auto_measures_its_candidates_on_the_mounts_records_and_says_so) {
  mount("compression=auto,accel=cpu");
  const auto text = pattern(77, 24 << 20);
  put(mnt_ / "t", text);
  std::string out;
  ASSERT_EQ(run({QZFS_BINARY, "stats", "--json", mnt_.string()}, &out), 0) << out;
  const auto j = nlohmann::json::parse(out);
  std::set<std::string> measured;
  for (const auto& c : j["engine"]["auto_costs"]) {
    if (c["cls"] == "compressible" && c["samples"].get<std::uint64_t>() > 0) {
      measured.insert(c["codec"].get<std::string>());
      EXPECT_GT(c["ns_per_byte"].get<double>(), 0.0) << c.dump();
      EXPECT_GT(c["stored_per_byte"].get<double>(), 0.0) << c.dump();
      EXPECT_LT(c["stored_per_byte"].get<double>(), 1.0) << c.dump();
    }
  }
  EXPECT_EQ(measured, (std::set<std::string>{"lz4", "gzip-1", "zstd-1", "zstd-3"})) << out;
  ASSERT_EQ(run({QZFS_BINARY, "stats", mnt_.string()}, &out), 0) << out;
  EXPECT_NE(out.find("auto         compressible: "), std::string::npos) << out;
  unmount();
  mount("accel=cpu");
  EXPECT_TRUE(qzfs::test::read_file(mnt_ / "t") == text);
}

TEST_F(mount_test, one_cache_budget_bounds_the_buffers_of_every_file) {
  // Page writes reach the store one by one (no writeback cache), scattered so that every record
  // stays partial: unbounded, four files would buffer 4 x 8 MiB.
  constexpr std::uint64_t limit = 4 << 20, span = 8 << 20;
  mount("commit=1000,nowriteback,cache=4M,recordsize=128K");
  std::vector<std::vector<std::byte>> shadow(4, std::vector<std::byte>(span));
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&, t] {
      const int fd = ::open((mnt_ / ("f" + std::to_string(t))).c_str(), O_RDWR | O_CREAT, 0644);
      ASSERT_GE(fd, 0);
      ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(span)), 0);
      std::mt19937_64 rng(t);
      auto src = pattern(t, 1 << 20);
      for (int w = 0; w < 600; ++w) {
        const std::uint64_t off = (rng() % (span / 4096)) * 4096;
        const std::byte* p = src.data() + (rng() % 256) * 4096;
        ASSERT_EQ(::pwrite(fd, p, 4096, static_cast<off_t>(off)), 4096);
        std::memcpy(shadow[t].data() + off, p, 4096);
      }
      ::close(fd);
    });
  }
  for (auto& t : ts) t.join();
  std::string out;
  ASSERT_EQ(run({QZFS_BINARY, "stats", "--json", mnt_.string()}, &out), 0) << out;
  const auto peak = json_number(out, "peak_bytes", "cache");
  EXPECT_LE(peak, limit + 4 * (1 << 20)) << out;  // a writer over it holds at most a batch
  EXPECT_GE(peak, limit / 2) << "the workload never came near the budget" << out;
  unmount();
  mount();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(qzfs::test::read_file(mnt_ / ("f" + std::to_string(t))), shadow[t]) << t;
}

TEST_F(mount_test, processes_write_and_read_the_same_and_different_files) {
  mount();
  constexpr int procs = 4;
  constexpr std::size_t own_size = 6 << 20, chunk = 128 << 10, shared_chunks = 64;
  const auto shared_path = mnt_ / "shared";
  { const int fd = ::open(shared_path.c_str(), O_RDWR | O_CREAT, 0644); ASSERT_GE(fd, 0); ::close(fd); }
  std::vector<pid_t> kids;
  for (int k = 0; k < procs; ++k) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int bad = 0;
      // Its own file, chunk by chunk, each chunk read back through a second descriptor.
      const auto own = pattern(k, own_size);
      const int fw = ::open((mnt_ / ("own" + std::to_string(k))).c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int fr = ::open((mnt_ / ("own" + std::to_string(k))).c_str(), O_RDONLY);
      const int fs_ = ::open(shared_path.c_str(), O_RDWR);
      std::vector<std::byte> buf(chunk);
      for (std::size_t c = 0; c * chunk < own_size; ++c) {
        if (::pwrite(fw, own.data() + c * chunk, chunk, static_cast<off_t>(c * chunk)) != static_cast<ssize_t>(chunk)) ++bad;
        if (::pread(fr, buf.data(), chunk, static_cast<off_t>(c * chunk)) != static_cast<ssize_t>(chunk) ||
            std::memcmp(buf.data(), own.data() + c * chunk, chunk) != 0) ++bad;
        // Its share of the common file: every procs-th chunk.
        const std::size_t sc = c * procs + k;
        if (sc < shared_chunks) {
          const auto piece = pattern(100 + sc, chunk);
          if (::pwrite(fs_, piece.data(), chunk, static_cast<off_t>(sc * chunk)) != static_cast<ssize_t>(chunk)) ++bad;
        }
        // Another process's file as it grows: whatever is there is that process's data.
        const int other = (k + 1) % procs;
        const int fo = ::open((mnt_ / ("own" + std::to_string(other))).c_str(), O_RDONLY);
        if (fo >= 0) {
          const auto want = pattern(other, own_size);
          const ssize_t n = ::pread(fo, buf.data(), chunk, static_cast<off_t>(c * chunk / 2));
          if (n > 0 && std::memcmp(buf.data(), want.data() + c * chunk / 2, static_cast<std::size_t>(n)) != 0) ++bad;
          ::close(fo);
        }
      }
      if (::fsync(fw) != 0 || ::fsync(fs_) != 0) ++bad;
      ::close(fw), ::close(fr), ::close(fs_);
      ::_exit(bad == 0 ? 0 : 1);
    }
    kids.push_back(pid);
  }
  for (auto pid : kids) {
    int st = 0;
    ASSERT_EQ(::waitpid(pid, &st, 0), pid);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "a process saw wrong bytes or failed a call";
  }
  auto check_all = [&] {
    for (int k = 0; k < procs; ++k) EXPECT_EQ(qzfs::test::read_file(mnt_ / ("own" + std::to_string(k))), pattern(k, own_size)) << k;
    const auto shared = qzfs::test::read_file(shared_path);
    ASSERT_EQ(shared.size(), shared_chunks * chunk);
    for (std::size_t sc = 0; sc < shared_chunks; ++sc) {
      const auto piece = pattern(100 + sc, chunk);
      EXPECT_EQ(0, std::memcmp(shared.data() + sc * chunk, piece.data(), chunk)) << "shared chunk " << sc;
    }
  };
  check_all();
  unmount();
  mount();
  check_all();
}

TEST_F(mount_test, kill_9_during_heavy_writes_repeatedly) {
  std::mt19937_64 rng(11);
  for (int round = 0; round < 3; ++round) {
    mount("commit=1");
    const auto log = root_ / ("synced" + std::to_string(round));
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      // Files of every size, some fsynced (and then listed in the log, off the mount), some not.
      for (int i = 0;; ++i) {
        const std::string name = "r" + std::to_string(round) + "_" + std::to_string(i);
        const std::size_t n = 100000 + static_cast<std::size_t>(i * 7717 % 3000000);
        const auto d = pattern(round * 1000 + i, n);
        const int fd = ::open((mnt_ / name).c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) ::_exit(0);
        for (std::size_t at = 0; at < n;) {
          const std::size_t step = std::min<std::size_t>(n - at, 65536 + (i % 3) * 4096);
          if (::write(fd, d.data() + at, step) != static_cast<ssize_t>(step)) ::_exit(0);
          at += step;
        }
        if (i % 2 == 0) {
          if (::fsync(fd) != 0) ::_exit(0);
          std::ofstream(log, std::ios::app) << name << " " << (round * 1000 + i) << " " << n << "\n";
        }
        ::close(fd);
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(400 + rng() % 800));
    ASSERT_EQ(run({"pkill", "-9", "-f", "[q]zfs mount .*" + mnt_.string()}), 0);
    ::kill(pid, SIGKILL);
    int st = 0;
    ::waitpid(pid, &st, 0);
    for (int i = 0; i < 50 && run({"pgrep", "-f", "[q]zfs mount .*" + mnt_.string()}) == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    run({"fusermount3", "-u", "-z", mnt_.string()});
    std::string out;
    EXPECT_EQ(run({QZFS_BINARY, "check", backing_.string()}, &out), 0) << "round " << round << ": " << out;
    mount();
    // Every fsynced file (of every round so far) is whole.
    std::size_t synced = 0;
    for (int r = 0; r <= round; ++r) {
      std::ifstream in(root_ / ("synced" + std::to_string(r)));
      std::string name;
      std::uint64_t seed = 0, n = 0;
      while (in >> name >> seed >> n) {
        EXPECT_EQ(qzfs::test::read_file(mnt_ / name), pattern(seed, n)) << name;
        ++synced;
      }
    }
    EXPECT_GT(synced, 0u) << "round " << round << ": nothing was fsynced before the kill";
    // Every file opens and reads without an error.
    for (const auto& e : fs::directory_iterator(mnt_)) {
      const int fd = ::open(e.path().c_str(), O_RDONLY);
      ASSERT_GE(fd, 0) << e.path();
      std::vector<char> buf(1 << 20);
      ssize_t n;
      while ((n = ::read(fd, buf.data(), buf.size())) > 0) {
      }
      EXPECT_EQ(n, 0) << e.path() << ": " << std::strerror(errno);
      ::close(fd);
    }
    unmount();
  }
}

TEST_F(mount_test, fio_verify_passes_and_the_data_survives_a_remount) {
  mount();
  ASSERT_EQ(run({"fio", "--version"}), 0) << "fio is missing: scripts/setup.sh installs it";
  // Written with checksummed blocks (half-compressible buffers, as in QZFS's FIO runs), read
  // back and verified; then verified again from the store alone after a remount.
  const std::vector<std::string> jobs[] = {
      {"--name=seq", "--rw=write", "--bs=1M", "--size=48M", "--numjobs=2"},
      {"--name=rand", "--rw=randwrite", "--bs=128k", "--size=32M", "--numjobs=1"},
      {"--name=small", "--rw=randwrite", "--bs=4k", "--size=8M", "--numjobs=1", "--fsync=64"},
  };
  const std::vector<std::string> common = {"--directory=" + mnt_.string(), "--ioengine=psync", "--verify=crc32c",
                                           "--verify_fatal=1", "--buffer_compress_percentage=50",
                                           "--refill_buffers", "--randseed=7", "--group_reporting",
                                           "--verify_state_save=0"};
  for (const auto& j : jobs) {
    std::vector<std::string> args = {"fio"};
    args.insert(args.end(), j.begin(), j.end());
    args.insert(args.end(), common.begin(), common.end());
    std::string out;
    EXPECT_EQ(run(args, &out), 0) << out;
    EXPECT_EQ(out.find("verify: bad"), std::string::npos) << out;
  }
  unmount();
  mount();
  for (const auto& j : jobs) {
    std::vector<std::string> args = {"fio"};
    args.insert(args.end(), j.begin(), j.end());
    args.insert(args.end(), common.begin(), common.end());
    args.emplace_back("--verify_only");
    std::string out;
    EXPECT_EQ(run(args, &out), 0) << out;
  }
}

TEST_F(mount_test, read_ahead_is_raised_to_what_was_asked) {
  // More read-ahead in flight lets several threads decode records at once.
  auto knob = [&] {
    struct stat st {};
    EXPECT_EQ(::stat(mnt_.c_str(), &st), 0);
    std::ifstream in("/sys/class/bdi/" + std::to_string(major(st.st_dev)) + ":" + std::to_string(minor(st.st_dev)) +
                     "/read_ahead_kb");
    unsigned kb = 0;
    in >> kb;
    return kb;
  };
  mount();
  EXPECT_EQ(knob(), 4096u) << "the default";
  unmount();
  mount("readahead=1M");
  EXPECT_EQ(knob(), 1024u);
  unmount();
  mount("readahead=0");
  EXPECT_EQ(knob(), 128u) << "the kernel's own";
  unmount();
  // A mount point whose name mountinfo escapes (a space is \040 there).
  mnt_ = root_ / "mount point";
  fs::create_directories(mnt_);
  mount();
  EXPECT_EQ(knob(), 4096u) << "the daemon found its device under an escaped name";
}

TEST_F(mount_test, fallocate_checks_the_space_and_keeps_compression_on) {
  // A 16 MiB backing file system. (Not in the POSIX comparison: ext4 keeps the blocks a failed
  // fallocate got before it ran out, and the rest of that suite would find the disk full.)
  ASSERT_EQ(run({"mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", backing_.string()}), 0);
  struct unmount_backing {
    fs::path p;
    ~unmount_backing() { run({"umount", "-l", p.string()}); }
  } guard{backing_};
  mount();
  const auto path = mnt_ / "reserved";
  const int fd = ::open(path.c_str(), O_CREAT | O_RDWR, 0644);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(::fallocate(fd, 0, 0, 64 << 20), -1) << "64 MiB cannot fit in 16 MiB";
  EXPECT_EQ(errno, ENOSPC);
  struct stat st {};
  ASSERT_EQ(::fstat(fd, &st), 0);
  EXPECT_EQ(st.st_size, 0) << "a refused fallocate leaves the size";
  ASSERT_EQ(::fallocate(fd, 0, 0, 8 << 20), 0) << std::strerror(errno);
  ASSERT_EQ(::fstat(fd, &st), 0);
  EXPECT_EQ(st.st_size, 8 << 20);
  // The range stays compressed when written (fio's default preallocation, then its writes).
  const auto text = pattern(3, 8 << 20);
  ASSERT_EQ(::pwrite(fd, text.data(), text.size(), 0), static_cast<ssize_t>(text.size()));
  ASSERT_EQ(::fsync(fd), 0);
  ::close(fd);
  ASSERT_EQ(::stat((backing_ / "reserved").c_str(), &st), 0);
  EXPECT_LT(static_cast<std::uint64_t>(st.st_blocks) * 512, (8u << 20) / 2) << "stored raw?";
  EXPECT_EQ(qzfs::test::read_file(path), text);
  unmount();
}

TEST_F(mount_test, clear_errors) {
  std::string out;
  EXPECT_EQ(run({QZFS_BINARY, "mount", (root_ / "missing").string(), mnt_.string()}, &out), 1);
  EXPECT_NE(out.find("backing"), std::string::npos) << out;
  put(root_ / "afile", {});
  EXPECT_EQ(run({QZFS_BINARY, "mount", (root_ / "afile").string(), mnt_.string()}, &out), 1);
  EXPECT_NE(out.find("not a directory"), std::string::npos) << out;
  EXPECT_EQ(run({QZFS_BINARY, "mount", backing_.string(), (root_ / "nomnt").string()}, &out), 1);
  EXPECT_NE(out.find("mount point"), std::string::npos) << out;
  EXPECT_EQ(run({QZFS_BINARY, "mount", "-o", "speed=max", backing_.string(), mnt_.string()}, &out), 2);
  EXPECT_NE(out.find("unknown mount option"), std::string::npos) << out;
  EXPECT_EQ(run({QZFS_BINARY, "mount", "-o", "compression=brotli", backing_.string(), mnt_.string()}, &out), 2);
  EXPECT_EQ(run({QZFS_BINARY, "mount", "-o", "accel=gpu", backing_.string(), mnt_.string()}, &out), 2);
  EXPECT_NE(out.find("accel must be"), std::string::npos) << out;
  EXPECT_EQ(run({QZFS_BINARY, "mount", "-o", "accel=fault:bogus=1", backing_.string(), mnt_.string()}, &out), 2);
  EXPECT_NE(out.find("bogus"), std::string::npos) << out;
  EXPECT_EQ(run({QZFS_BINARY, "mount", "-o", "cache=1K", backing_.string(), mnt_.string()}, &out), 2);
  EXPECT_NE(out.find("cache"), std::string::npos) << out;
  // QAT asked for by name where there is none: no mount, and the reason.
  EXPECT_EQ(run({QZFS_BINARY, "mount", "-o", "accel=qat,qatzip=/nonexistent/libqatzip.so", backing_.string(),
                 mnt_.string()}, &out), 1);
  EXPECT_NE(out.find("accel=qat"), std::string::npos) << out;
  EXPECT_NE(out.find("cannot load"), std::string::npos) << out;
  EXPECT_FALSE(mounted(mnt_));
}

}  // namespace
