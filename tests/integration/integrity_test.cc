// Data integrity through a real mount: nothing acknowledged is lost, no wrong byte is
// ever served. Each test is one of the reproducers; each failed on main at bb5109d.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "mount_fixture.h"
#include "qzfs/format/container.h"
#include "qzfs/format/frame.h"
#include "test_data.h"

namespace {

using namespace qzfs::mount_rig;
namespace fs = std::filesystem;
using qzfs::test::read_file;

// The extents a container's newest state names, read with the format layer alone.
struct layout {
  qzfs::format::container_slot slot;
  std::vector<qzfs::format::indexed_entry> entries;  // the records with data, ascending
};
layout read_layout(const std::vector<std::byte>& disk) {
  layout l;
  for (int i = 0; i < 2; ++i) {
    qzfs::format::container_slot s;
    if (qzfs::format::parse_slot(std::span(disk).subspan(i * 64, 64), s) == qzfs::format::container_error::ok &&
        s.generation > l.slot.generation) {
      l.slot = s;
    }
  }
  if (l.slot.map_records > 0) {
    EXPECT_TRUE(qzfs::format::decode_map(std::span(disk).subspan(l.slot.map_offset[0]), l.slot, l.entries));
  }
  return l;
}

void write_bytes(const fs::path& p, const std::vector<std::byte>& d) {
  const int fd = ::open(p.c_str(), O_WRONLY | O_TRUNC);
  ASSERT_GE(fd, 0) << p;
  ASSERT_EQ(::pwrite(fd, d.data(), d.size(), 0), static_cast<ssize_t>(d.size()));
  ::close(fd);
}

class integrity : public mount_test {};

// Item 0: an untar of a tree larger than the daemon's descriptor limit, with symlinks, hard
// links, modes and old times, completes and checks clean (contents, modes, times, links) while
// mounted, after a remount and after the kernel forgot every inode. The daemon used to hold a
// descriptor per known inode and per closed-but-uncommitted file: EMFILE, and sizes that fell
// back to the stored size.
TEST_F(integrity, untar_of_a_tree_larger_than_the_descriptor_limit_checks_clean) {
  const fs::path src = root_ / "src";
  std::mt19937_64 rng(5);
  const auto text = qzfs::test::make_data(qzfs::test::data_class::text, 1 << 20);
  int files = 0;
  for (int d = 0; d < 40; ++d) {
    const fs::path dir = src / ("dir" + std::to_string(d));
    fs::create_directories(dir);
    const int n = d == 0 ? 3000 : 200;  // one directory larger than the limit on its own
    for (int i = 0; i < n; ++i) {
      const fs::path f = dir / ("f" + std::to_string(i));
      const std::size_t len = i % 50 == 0 ? 200000 + rng() % 100000 : rng() % 3000;
      const std::size_t at = rng() % (text.size() - len);
      std::ofstream(f, std::ios::binary).write(reinterpret_cast<const char*>(text.data() + at), static_cast<std::streamsize>(len));
      ++files;
      if (i % 10 == 0) fs::create_symlink("f" + std::to_string(i), dir / ("l" + std::to_string(i)));
      if (i % 97 == 0) fs::create_hard_link(f, dir / ("h" + std::to_string(i)));
      if (i % 7 == 0) fs::permissions(f, fs::perms::owner_read | fs::perms::group_read);
    }
  }
  ASSERT_GE(files, 10000);
  ASSERT_EQ(run({"find", src.string(), "-exec", "touch", "-h", "-d", "2001-02-03 04:05:06", "{}", "+"}), 0);
  const std::string tarball = (root_ / "t.tar").string();
  ASSERT_EQ(run({"tar", "-cf", tarball, "-C", src.string(), "."}), 0);

  auto check = [&](const char* when) {
    std::string out;
    EXPECT_EQ(run({"tar", "-df", tarball, "-C", mnt_.string()}, &out), 0) << when << ": " << out.substr(0, 2000);
    EXPECT_EQ(run({"diff", "-r", "--no-dereference", src.string(), mnt_.string()}, &out), 0) << when << ": " << out.substr(0, 2000);
  };
  mount_limited("commit=5", 256);
  std::string out;
  ASSERT_EQ(run({"tar", "-xpf", tarball, "-C", mnt_.string()}, &out), 0) << out.substr(0, 2000);
  check("mounted");
  unmount();
  mount_limited("commit=5", 256);
  check("after a remount");
  ASSERT_EQ(run({"sh", "-c", "echo 2 > /proc/sys/vm/drop_caches"}), 0);
  check("after the kernel forgot the inodes");
  // Creating, listing and removing thousands of entries in one directory.
  const fs::path many = mnt_ / "many";
  fs::create_directory(many);
  for (int i = 0; i < 5000; ++i) std::ofstream(many / std::to_string(i)) << i;
  EXPECT_EQ(std::distance(fs::directory_iterator(many), fs::directory_iterator()), 5000);
  EXPECT_EQ(run({"ls", "-l", many.string()}, &out), 0) << out.substr(0, 500);
  EXPECT_EQ(read_file(many / "4999").size(), 4u);
  fs::remove_all(many);
  EXPECT_FALSE(fs::exists(many));
}

// rsync -aHAX of a tree with hard links, extended attributes, ACLs, symlinks, FIFOs, device
// nodes and sparse files into the mount, then a remount: a second rsync finds nothing to change
// (times, modes, owners, links, attributes all kept), so backups do not copy everything again.
TEST_F(integrity, rsync_of_a_rich_tree_is_complete_and_a_second_rsync_changes_nothing) {
  const fs::path src = root_ / "src";
  fs::create_directories(src / "d" / "e");
  for (int i = 0; i < 200; ++i) put(src / "d" / ("f" + std::to_string(i)), pattern(static_cast<std::uint64_t>(i), 100 + i * 997));
  fs::create_hard_link(src / "d" / "f1", src / "d" / "e" / "hard");
  fs::create_symlink("../f2", src / "d" / "e" / "link");
  ASSERT_EQ(::mkfifo((src / "fifo").c_str(), 0640), 0);
  ASSERT_EQ(::mknod((src / "null").c_str(), S_IFCHR | 0666, ::makedev(1, 3)), 0);
  ASSERT_EQ(::setxattr((src / "d" / "f3").c_str(), "user.color", "blue", 4, 0), 0);
  ASSERT_EQ(run({"setfacl", "-m", "u:65534:r", (src / "d" / "f4").string()}), 0);
  ASSERT_EQ(run({"setfacl", "-d", "-m", "u:65534:rwx", (src / "d" / "e").string()}), 0);
  {
    const int fd = ::open((src / "sparse").c_str(), O_WRONLY | O_CREAT, 0600);
    ASSERT_EQ(::pwrite(fd, "end", 3, 50 << 20), 3);
    ::close(fd);
  }
  ASSERT_EQ(::chown((src / "d" / "f5").c_str(), 1000, 1000), 0);
  ASSERT_EQ(run({"touch", "-h", "-d", "2003-04-05", (src / "d" / "e" / "link").string()}), 0);
  mount();
  std::string out;
  ASSERT_EQ(run({"rsync", "-aHAX", "--sparse", src.string() + "/", mnt_.string() + "/"}, &out), 0) << out;
  unmount();
  mount();
  ASSERT_EQ(run({"rsync", "-aHAXn", "--itemize-changes", src.string() + "/", mnt_.string() + "/"}, &out), 0) << out;
  EXPECT_EQ(out, "") << "a second rsync after a remount wants to change:\n" << out;
  EXPECT_EQ(run({"diff", "-r", "--no-dereference", (src / "d").string(), (mnt_ / "d").string()}, &out), 0) << out;
}

// Item 1: times set right after a write survive the commit, a remount and the kernel forgetting
// the inode (they were the write-back's time again).
class times : public mount_test, public ::testing::WithParamInterface<const char*> {};
TEST_P(times, set_after_a_write_survive_commit_remount_and_forgetting) {
  mount(GetParam());
  const timespec old_times[2] = {{978307200, 5}, {978307200, 7}};  // 2001-01-01
  // Closed before the times are set.
  std::ofstream(mnt_ / "closed") << "hi\n";
  ASSERT_EQ(::utimensat(AT_FDCWD, (mnt_ / "closed").c_str(), old_times, 0), 0);
  // Still open (with buffered data) when they are set.
  const int fd = ::open((mnt_ / "open").c_str(), O_WRONLY | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  const auto d = qzfs::test::make_data(qzfs::test::data_class::text, 300000);
  ASSERT_EQ(::write(fd, d.data(), d.size()), static_cast<ssize_t>(d.size()));
  ASSERT_EQ(::futimens(fd, old_times), 0);
  ::close(fd);
  auto mtime_of = [&](const char* name) {
    struct stat st {};
    EXPECT_EQ(::stat((mnt_ / name).c_str(), &st), 0);
    return st.st_mtim.tv_sec;
  };
  EXPECT_EQ(mtime_of("closed"), 978307200);
  EXPECT_EQ(mtime_of("open"), 978307200);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // commits done
  ASSERT_EQ(run({"sh", "-c", "echo 2 > /proc/sys/vm/drop_caches"}), 0);
  EXPECT_EQ(mtime_of("closed"), 978307200);
  EXPECT_EQ(mtime_of("open"), 978307200);
  unmount();
  mount(GetParam());
  EXPECT_EQ(mtime_of("closed"), 978307200);
  EXPECT_EQ(mtime_of("open"), 978307200);
  EXPECT_EQ(read_file(mnt_ / "open"), d);
  // A write after the times were set is a modification again.
  std::ofstream(mnt_ / "closed", std::ios::app) << "more\n";
  EXPECT_GT(mtime_of("closed"), 978307200);
}
INSTANTIATE_TEST_SUITE_P(modes, times, ::testing::Values("commit=1", "commit=1,nowriteback"));

// Item 1: a symlink's own times can be set (utimensat with AT_SYMLINK_NOFOLLOW), as tar, cp -a
// and rsync -a do.
TEST_F(integrity, a_symlinks_own_times_can_be_set) {
  mount();
  fs::create_symlink("target", mnt_ / "link");
  const timespec t[2] = {{1000000000, 0}, {1000000000, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (mnt_ / "link").c_str(), t, AT_SYMLINK_NOFOLLOW), 0) << std::strerror(errno);
  struct stat st {};
  ASSERT_EQ(::lstat((mnt_ / "link").c_str(), &st), 0);
  EXPECT_EQ(st.st_mtim.tv_sec, 1000000000);
}

// Item 2: a damaged record is an error to every reader (read, and read-ahead: the kernel fills a
// short answer with zeros), never zeros; mmap readers get SIGBUS; the other records still read.
TEST_F(integrity, a_damaged_record_reads_as_eio_never_as_zeros_and_the_others_still_read) {
  mount();
  const auto text = qzfs::test::make_data(qzfs::test::data_class::text, 8 << 20);
  put(mnt_ / "sam", text);
  unmount();
  auto disk = read_file(backing_ / "sam");
  const auto l = read_layout(disk);
  ASSERT_GE(l.entries.size(), 64u);
  const std::size_t bad = 5;
  ASSERT_EQ(l.entries[bad].index, bad);
  disk[l.entries[bad].e.offset + qzfs::format::frame_header_size + 100] ^= std::byte{0x10};
  write_bytes(backing_ / "sam", disk);
  mount();
  const std::size_t rs = 128 << 10;
  // Sequential reads of the whole file: the one covering the record fails.
  const int fd = ::open((mnt_ / "sam").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  std::vector<std::byte> buf(rs);
  for (std::size_t i = 0; i < 64; ++i) {
    const ssize_t n = ::pread(fd, buf.data(), rs, static_cast<off_t>(i * rs));
    if (i == bad) {
      EXPECT_EQ(n, -1) << "the damaged record was served";
      EXPECT_EQ(errno, EIO);
    } else {
      ASSERT_EQ(n, static_cast<ssize_t>(rs)) << "record " << i;
      EXPECT_TRUE(std::equal(buf.begin(), buf.end(), text.begin() + static_cast<std::ptrdiff_t>(i * rs))) << "record " << i;
    }
  }
  ::close(fd);
  std::string out;
  EXPECT_NE(run({"cat", (mnt_ / "sam").string()}, &out), 0) << "cat read it all";
  // mmap: SIGBUS on the damaged page, in a child.
  const pid_t pid = ::fork();
  if (pid == 0) {
    std::signal(SIGBUS, SIG_DFL);  // not a sanitizer's handler: the signal itself is the answer
    const int f = ::open((mnt_ / "sam").c_str(), O_RDONLY);
    auto* p = static_cast<volatile char*>(::mmap(nullptr, text.size(), PROT_READ, MAP_SHARED, f, 0));
    if (p == MAP_FAILED) ::_exit(3);
    char sum = 0;
    for (std::size_t i = 0; i < text.size(); i += 4096) sum = static_cast<char>(sum + p[i]);
    ::_exit(sum == 42 ? 0 : 0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS) << "status " << status;
}

// Item 4: a write at a huge offset costs what its data costs: the record map is sparse. A byte at
// 2^55 and one at 2^39, each fsynced, keep the backing file small and the daemon alive for
// everyone (a dense map ended in std::bad_alloc and killed the mount); SEEK_DATA, SEEK_HOLE and a
// punch over 2^50 bytes answer at once.
TEST_F(integrity, a_write_at_a_huge_offset_costs_only_its_data) {
  mount("commit=1,nowriteback");  // the store's own SEEK_DATA/SEEK_HOLE (with the cache the kernel answers)
  const int fd = ::open((mnt_ / "sparse").c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  for (const off_t at : {off_t{1} << 55, off_t{1} << 39, off_t{12345}}) {
    ASSERT_EQ(::pwrite(fd, "x", 1, at), 1) << at << ": " << std::strerror(errno);
    ASSERT_EQ(::fsync(fd), 0) << at << ": " << std::strerror(errno);
  }
  struct stat st {};
  ASSERT_EQ(::fstat(fd, &st), 0);
  EXPECT_EQ(st.st_size, (off_t{1} << 55) + 1);
  char c = 0;
  ASSERT_EQ(::pread(fd, &c, 1, off_t{1} << 39), 1);
  EXPECT_EQ(c, 'x');
  EXPECT_EQ(::lseek(fd, 1 << 20, SEEK_DATA), off_t{1} << 39);
  EXPECT_EQ(::lseek(fd, (off_t{1} << 39) + 1, SEEK_DATA), (off_t{1} << 39) + 1) << "inside a record with data";
  EXPECT_EQ(::lseek(fd, (off_t{1} << 39) + (128 << 10), SEEK_DATA), off_t{1} << 55);
  EXPECT_EQ(::lseek(fd, 0, SEEK_HOLE), off_t{128} << 10);
  ASSERT_EQ(::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 1 << 20, off_t{1} << 50), 0);
  EXPECT_EQ(::lseek(fd, 1 << 20, SEEK_DATA), off_t{1} << 55);
  ASSERT_EQ(::fsync(fd), 0);
  ::close(fd);
  EXPECT_LT(fs::file_size(backing_ / "sparse"), 64u << 10) << "the container grew with the offset";
  unmount();
  mount();
  const int g = ::open((mnt_ / "sparse").c_str(), O_RDONLY);
  ASSERT_GE(g, 0);
  ASSERT_EQ(::pread(g, &c, 1, off_t{1} << 55), 1);
  EXPECT_EQ(c, 'x');
  ASSERT_EQ(::pread(g, &c, 1, 12345), 1);
  EXPECT_EQ(c, 'x');
  ::close(g);
}

// SEEK_DATA and SEEK_HOLE see data the kernel's writeback cache holds but has not sent yet (the
// store alone answered ENXIO for a file whose only data was still in the kernel).
TEST_F(integrity, seek_data_and_hole_see_data_not_yet_written_back) {
  mount("commit=5");
  const int fd = ::open((mnt_ / "f").c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  std::vector<char> d(4096, 'x');
  ASSERT_EQ(::pwrite(fd, d.data(), d.size(), off_t{1} << 30), 4096);
  const off_t data = ::lseek(fd, 0, SEEK_DATA);
  EXPECT_GE(data, 0) << std::strerror(errno);
  EXPECT_LE(data, off_t{1} << 30);
  const off_t hole = ::lseek(fd, 0, SEEK_HOLE);
  EXPECT_GE(hole, 0) << std::strerror(errno);
  EXPECT_EQ(::lseek(fd, (off_t{1} << 30) + 4096, SEEK_DATA), -1);
  EXPECT_EQ(errno, ENXIO);
  ::close(fd);
}

// Item 3: the size after close and reopen (with the kernel's caches dropped in between) is the
// last one written, never an earlier one (xfstests' fsx -c found this).
class reopen : public mount_test, public ::testing::WithParamInterface<const char*> {};
TEST_P(reopen, the_size_after_close_and_reopen_is_the_last_one_written) {
  mount(GetParam());
  const fs::path p = mnt_ / "f";
  for (int i = 0; i < 30; ++i) {
    const std::size_t n = 1000 + (static_cast<std::size_t>(i) * 7919) % 60000;
    int fd = ::open(p.c_str(), O_CREAT | O_RDWR | O_TRUNC, 0666);
    ASSERT_GE(fd, 0);
    std::vector<char> d(n, 'x');
    ASSERT_EQ(::pwrite(fd, d.data(), n, 0), static_cast<ssize_t>(n));
    if (i % 3 == 1) {
      ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(n / 2)), 0);
    }
    char b[100];
    ASSERT_GE(::pread(fd, b, sizeof b, 0), 0);
    ::close(fd);
    ASSERT_EQ(run({"sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"}), 0);
    fd = ::open(p.c_str(), O_RDWR);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    struct stat st {};
    ASSERT_EQ(::fstat(fd, &st), 0);
    EXPECT_EQ(static_cast<std::size_t>(st.st_size), i % 3 == 1 ? n / 2 : n) << "iteration " << i;
    ::close(fd);
  }
}
INSTANTIATE_TEST_SUITE_P(modes, reopen, ::testing::Values("commit=1", "commit=1,nowriteback"));

// Item 6: one store file per inode. A file the kernel forgets (drop_caches) while its newest
// changes are not committed is found again, with them, by the next open, and they survive the
// remount (a second store file was opened on the older committed state).
TEST_F(integrity, a_forgotten_inode_with_uncommitted_changes_keeps_them) {
  mount("commit=600,nowriteback");
  const off_t far = off_t{1} << 36;
  int fd = ::open((mnt_ / "f").c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, "A", 1, far), 1);
  ASSERT_EQ(::fsync(fd), 0);
  ::close(fd);
  fd = ::open((mnt_ / "f").c_str(), O_RDWR);
  ASSERT_EQ(::pwrite(fd, "B", 1, far), 1);
  ASSERT_EQ(::close(fd), 0);
  ASSERT_EQ(run({"sh", "-c", "echo 2 > /proc/sys/vm/drop_caches"}), 0);
  char c = 0;
  fd = ::open((mnt_ / "f").c_str(), O_RDONLY);
  ASSERT_EQ(::pread(fd, &c, 1, far), 1);
  ::close(fd);
  EXPECT_EQ(c, 'B');
  unmount();
  mount("commit=600,nowriteback");
  fd = ::open((mnt_ / "f").c_str(), O_RDONLY);
  ASSERT_EQ(::pread(fd, &c, 1, far), 1);
  ::close(fd);
  EXPECT_EQ(c, 'B');
}

// Item 7: a backing file system that is full for a while (ENOSPC at write-back and commit) then
// has room again: nothing acknowledged is lost; the failure reaches close() or fsync of the
// descriptor that had the file open, never silently a later one.
TEST_F(integrity, a_passing_enospc_loses_nothing_acknowledged) {
  ASSERT_EQ(run({"mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", backing_.string()}), 0);
  struct umount_tmpfs {
    fs::path p;
    ~umount_tmpfs() { run({"umount", "-l", p.string()}); }
  } guard{backing_};
  mount("commit=1,compression=off");
  const auto data = qzfs::test::make_data(qzfs::test::data_class::random, (2 << 20) + 3188, 3);
  const int fd = ::open((mnt_ / "f").c_str(), O_WRONLY | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
  // The backing file system fills up before the file is closed and committed.
  run({"dd", "if=/dev/zero", "of=" + (backing_ / "filler").string(), "bs=64k"});
  const int rc = ::close(fd);
  if (rc != 0) {
    EXPECT_EQ(errno, ENOSPC);
  }
  std::this_thread::sleep_for(std::chrono::seconds(2));  // commits fail meanwhile
  fs::remove(backing_ / "filler");
  EXPECT_EQ(read_file(mnt_ / "f"), data);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // a commit succeeds now
  unmount();
  mount("commit=1,compression=off");
  EXPECT_EQ(read_file(mnt_ / "f"), data);
}

// Item 7: an ordinary user writing through the mount stops where the backing file system stops
// that user: its root reserve (and quotas) hold. The daemon, root, used to write into the
// reserve on the user's behalf.
TEST_F(integrity, a_users_writes_stop_at_the_backing_file_systems_root_reserve) {
  const fs::path img = root_ / "img";
  ASSERT_EQ(run({"truncate", "-s", "64M", img.string()}), 0);
  ASSERT_EQ(run({"mkfs.ext4", "-q", "-F", "-m", "10", img.string()}), 0);
  ASSERT_EQ(run({"mount", "-o", "loop", img.string(), backing_.string()}), 0);
  struct umount_img {
    fs::path p;
    ~umount_img() { run({"umount", "-l", p.string()}); }
  } guard{backing_};
  ASSERT_EQ(::chmod(backing_.c_str(), 0777), 0);
  ASSERT_EQ(::chmod(root_.c_str(), 0755), 0);
  ASSERT_EQ(::chmod(mnt_.c_str(), 0755), 0);
  struct statvfs before {};
  ASSERT_EQ(::statvfs(backing_.c_str(), &before), 0);
  const std::uint64_t reserved = (before.f_bfree - before.f_bavail) * before.f_frsize;
  ASSERT_GT(reserved, 4u << 20);
  mount("commit=1,compression=off,allow_other");
  std::string out;
  const int rc = run({"setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "dd", "if=/dev/urandom",
                      "of=" + (mnt_ / "big").string(), "bs=1M", "count=100", "conv=fsync"}, &out);
  EXPECT_NE(rc, 0) << "100 MiB fit in 64 MiB: " << out;
  struct statvfs after {};
  ASSERT_EQ(::statvfs(backing_.c_str(), &after), 0);
  EXPECT_GE(after.f_bfree * after.f_frsize + (1u << 20), reserved)
      << "the user's writes took " << (reserved - after.f_bfree * after.f_frsize) / 1024 << " KiB of the root reserve";
  unmount();
}

// Item 8: a second mount of the same backing directory is refused, with a clear message.
TEST_F(integrity, a_second_mount_of_one_backing_directory_is_refused) {
  mount();
  const fs::path other = root_ / "mnt2";
  fs::create_directories(other);
  std::string out;
  EXPECT_NE(run({QZFS_BINARY, "mount", backing_.string(), other.string()}, &out), 0);
  EXPECT_NE(out.find("already mounted"), std::string::npos) << out;
  EXPECT_FALSE(mounted(other));
  // Nor does `qzfs pack` rewrite files under a mounted backing directory.
  fs::create_directories(backing_ / "sub");
  put(backing_ / "sub" / "plain", pattern(1, 100000));
  EXPECT_EQ(run({QZFS_BINARY, "pack", (backing_ / "sub").string()}, &out), 1) << out;
  EXPECT_NE(out.find("backing directory of a running qzfs mount"), std::string::npos) << out;
  EXPECT_FALSE(qzfs::format::has_container_magic(read_file(backing_ / "sub" / "plain")));
  unmount();
  EXPECT_EQ(run({QZFS_BINARY, "pack", (backing_ / "sub").string()}, &out), 0) << out;
  EXPECT_TRUE(qzfs::format::has_container_magic(read_file(backing_ / "sub" / "plain")));
}

// Item 9: a plain file changed in the backing directory while mounted is never overwritten with
// the mount's stale copy of it: the kernel keeps its own size of a file it caches, so the mount's
// write fails instead (changing the backing directory while mounted is not supported; docs/FS.md).
TEST_F(integrity, a_plain_file_changed_beside_the_mount_is_not_overwritten_with_a_stale_copy) {
  std::ofstream(backing_ / "p") << "v1\n";
  mount();
  EXPECT_EQ(read_file(mnt_ / "p").size(), 3u);
  { std::ofstream(backing_ / "p", std::ios::app) << "more\n"; }
  const int fd = ::open((mnt_ / "p").c_str(), O_WRONLY | O_APPEND);
  ASSERT_GE(fd, 0);
  const ssize_t n = ::write(fd, "x\n", 2);
  const int rc = ::close(fd);
  const auto b = read_file(backing_ / "p");
  const std::string back(reinterpret_cast<const char*>(b.data()), b.size());
  if (n == 2 && rc == 0) {
    EXPECT_EQ(back, "v1\nmore\nx\n");
  } else {
    EXPECT_EQ(back, "v1\nmore\n") << "a failed write changed the file";
  }
}

}  // namespace
