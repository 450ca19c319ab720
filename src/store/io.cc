#include "qzfs/store/io.h"

#include <sys/statvfs.h>

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <climits>

namespace qzfs::store {
namespace {
std::error_code last_error() noexcept { return {errno, std::generic_category()}; }
}  // namespace

std::error_code io::pread_exact(std::span<std::byte> out, std::uint64_t off) noexcept {
  std::size_t got = 0;
  if (auto ec = pread(out, off, got)) return ec;
  return got == out.size() ? std::error_code{} : std::make_error_code(std::errc::io_error);
}

fd_io::fd_io(int fd) noexcept : fd_(fd) {
  static const bool root = ::geteuid() == 0;
  const int fl = ::fcntl(fd_, F_GETFL);
  writable_ = fl < 0 || (fl & O_ACCMODE) != O_RDONLY;
  struct stat st {};
  if (::fstat(fd_, &st) != 0) return;
  fs_id_ = static_cast<std::uint64_t>(st.st_dev) + 1;
  if (root && st.st_uid != 0) owner_ = static_cast<int>(st.st_uid);
}

namespace {
// The calling thread's fsuid for one write (a per-thread syscall: other threads are unaffected).
struct write_as {
  bool on;
  explicit write_as(int uid) noexcept : on(uid > 0) {
    if (on) (void)::syscall(SYS_setfsuid, uid);
  }
  ~write_as() {
    if (on) (void)::syscall(SYS_setfsuid, 0);
  }
};
}  // namespace

fd_io::~fd_io() {
  if (fd_ >= 0) ::close(fd_);
}

std::error_code fd_io::pread(std::span<std::byte> out, std::uint64_t off, std::size_t& got) noexcept {
  got = 0;
  while (got < out.size()) {
    const ssize_t n = ::pread(fd_, out.data() + got, out.size() - got, static_cast<off_t>(off + got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return last_error();
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  return {};
}

std::error_code fd_io::preadv_exact(std::span<const iovec> bufs, std::uint64_t off) noexcept {
  std::size_t want = 0;
  for (const auto& v : bufs) want += v.iov_len;
  if (bufs.size() <= IOV_MAX) {
    const ssize_t n = ::preadv(fd_, bufs.data(), static_cast<int>(bufs.size()), static_cast<off_t>(off));
    if (n == static_cast<ssize_t>(want)) return {};
    if (n < 0 && errno != EINTR) return last_error();
  }
  return io::preadv_exact(bufs, off);  // short or interrupted: the plain way
}

void fd_io::will_need(std::uint64_t off, std::uint64_t len) noexcept {
  // The kernel starts reading into its page cache and returns (a hint: a failure changes nothing).
  (void)::posix_fadvise(fd_, static_cast<off_t>(off), static_cast<off_t>(len), POSIX_FADV_WILLNEED);
}

std::error_code fd_io::available(std::uint64_t& out) noexcept {
  struct statvfs sv {};
  if (::fstatvfs(fd_, &sv) != 0) return last_error();
  out = static_cast<std::uint64_t>(sv.f_bavail) * sv.f_frsize;
  return {};
}

std::error_code fd_io::pwritev(std::span<const iovec> in, std::uint64_t off) noexcept {
  std::lock_guard lk(write_m_);
  write_as as(owner_);
  // Short writes are possible (signals, a full disk): continue from where the last one ended.
  std::size_t first = 0, skip = 0;
  while (first < in.size()) {
    iovec local[64];
    int n = 0;
    for (std::size_t i = first; i < in.size() && n < 64; ++i, ++n) {
      local[n] = in[i];
      if (i == first) {
        local[n].iov_base = static_cast<char*>(local[n].iov_base) + skip;
        local[n].iov_len -= skip;
      }
    }
    const ssize_t w = ::pwritev(fd_, local, n, static_cast<off_t>(off));
    if (w < 0) {
      if (errno == EINTR) continue;
      return last_error();
    }
    if (w == 0) return std::make_error_code(std::errc::no_space_on_device);
    off += static_cast<std::uint64_t>(w);
    auto left = static_cast<std::size_t>(w);
    while (first < in.size() && left >= in[first].iov_len - skip) {
      left -= in[first].iov_len - skip;
      skip = 0;
      ++first;
    }
    skip += left;
  }
  return {};
}

std::error_code fd_io::sync() noexcept { return ::fdatasync(fd_) == 0 ? std::error_code{} : last_error(); }

std::error_code fd_io::truncate(std::uint64_t size) noexcept {
  return ::ftruncate(fd_, static_cast<off_t>(size)) == 0 ? std::error_code{} : last_error();
}

std::error_code fd_io::punch(std::uint64_t off, std::uint64_t len) noexcept {
  if (len == 0) return {};
  return ::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off), static_cast<off_t>(len)) == 0
             ? std::error_code{}
             : last_error();
}

std::error_code fd_io::allocate(std::uint64_t off, std::uint64_t len, bool keep_size) noexcept {
  write_as as(owner_);
  return ::fallocate(fd_, keep_size ? FALLOC_FL_KEEP_SIZE : 0, static_cast<off_t>(off), static_cast<off_t>(len)) == 0
             ? std::error_code{}
             : last_error();
}

std::error_code fd_io::size(std::uint64_t& out) noexcept {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) return last_error();
  out = static_cast<std::uint64_t>(st.st_size);
  return {};
}

std::error_code fd_io::allocated(std::uint64_t& out) noexcept {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) return last_error();
  out = static_cast<std::uint64_t>(st.st_blocks) * 512;
  return {};
}

std::error_code fd_io::seek(std::uint64_t off, int whence, std::uint64_t& out) noexcept {
  const off_t r = ::lseek(fd_, static_cast<off_t>(off), whence);
  if (r < 0) return last_error();
  out = static_cast<std::uint64_t>(r);
  return {};
}

std::error_code read_marker(int fd, std::span<std::byte, 64> out, bool& found) noexcept {
  found = false;
  const ssize_t n = ::fgetxattr(fd, marker_xattr, out.data(), out.size());
  if (n == static_cast<ssize_t>(out.size())) {
    found = true;
    return {};
  }
  if (n >= 0 || errno == ENODATA) return {};  // none (a wrong length is no marker either)
  return last_error();
}

std::error_code fd_io::get_marker(std::span<std::byte, 64> out, bool& found) noexcept { return read_marker(fd_, out, found); }

std::error_code fd_io::set_marker(std::span<const std::byte, 64> in) noexcept {
  return ::fsetxattr(fd_, marker_xattr, in.data(), in.size(), 0) == 0 ? std::error_code{} : last_error();
}

std::error_code open_fd_io(int dirfd, const char* path, int extra_flags, unsigned mode, std::unique_ptr<io>& out) noexcept {
  const int fd = ::openat(dirfd, path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | extra_flags, mode);
  if (fd < 0) return last_error();
  try {
    out = std::make_unique<fd_io>(fd);
  } catch (...) {
    ::close(fd);
    return std::make_error_code(std::errc::not_enough_memory);
  }
  return {};
}

}  // namespace qzfs::store
