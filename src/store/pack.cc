// pack_file: a plain file rewritten as a container, atomically (new file, sync, rename);
// unpack_file: the way back.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "qzfs/format/container.h"
#include "qzfs/store/file.h"
#include "qzfs/store/io.h"
#include "sync_log.h"

namespace qzfs::store {
namespace {

std::error_code last_error() { return {errno, std::generic_category()}; }

// Extended attributes go with the data (user.*, and trusted.*/security.* where permitted), whatever
// their size. Left out: the container's marker (its commits write it) and the mark of a
// recompression (it describes the old records; recompress writes its own).
void copy_xattrs(int from, int to) {
  std::vector<char> names(std::max<ssize_t>(::flistxattr(from, nullptr, 0), 0));
  const ssize_t n = names.empty() ? 0 : ::flistxattr(from, names.data(), names.size());
  if (n <= 0) return;
  std::vector<char> value;
  for (ssize_t at = 0; at < n;) {
    const char* name = names.data() + at;
    at += static_cast<ssize_t>(std::char_traits<char>::length(name)) + 1;
    if (std::strcmp(name, marker_xattr) == 0 || std::strcmp(name, recompressed_xattr) == 0) continue;
    const ssize_t len = ::fgetxattr(from, name, nullptr, 0);
    if (len < 0) continue;
    value.resize(static_cast<std::size_t>(len) + 1);
    const ssize_t v = ::fgetxattr(from, name, value.data(), value.size());
    if (v >= 0) (void)::fsetxattr(to, name, value.data(), static_cast<std::size_t>(v), 0);
  }
}

// The replacement `dst` takes over what `src` was (owner first, since a change of owner clears
// set-ID bits and security.capability; then mode, extended attributes, times) and is made
// durable. EPERM when the owner cannot be kept (the tool is not root and the file is not its
// own); EAGAIN when `src` changed since `st` was taken (then the original stays).
std::error_code take_over(int src, int dst, const struct stat& st) {
  if (::fchown(dst, st.st_uid, st.st_gid) != 0) return last_error();
  if (::fchmod(dst, st.st_mode & 07777) != 0) return last_error();
  copy_xattrs(src, dst);
  const struct timespec times[2] = {st.st_atim, st.st_mtim};
  if (::futimens(dst, times) != 0) return last_error();
  if (::fsync(dst) != 0) return last_error();
  struct stat now {};
  const auto same = [](const timespec& a, const timespec& b) { return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec; };
  if (::fstat(src, &now) != 0 || now.st_ino != st.st_ino || now.st_dev != st.st_dev || now.st_size != st.st_size ||
      !same(now.st_mtim, st.st_mtim) || !same(now.st_ctim, st.st_ctim) || now.st_nlink != st.st_nlink) {
    return std::make_error_code(std::errc::resource_unavailable_try_again);
  }
  return {};
}

struct fd_closer {
  int fd = -1;
  fd_closer() = default;
  fd_closer(const fd_closer&) = delete;
  fd_closer& operator=(const fd_closer&) = delete;
  ~fd_closer() {
    if (fd >= 0) ::close(fd);
  }
};

// pack and unpack rewrite `name` under `dirfd` only when it is a regular file with no other
// name: its status and a read-only descriptor (EINVAL: not regular, EMLINK: other links).
std::error_code open_sole(int dirfd, const char* name, struct stat& st, fd_closer& src) {
  if (::fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return last_error();
  if (!S_ISREG(st.st_mode)) return std::make_error_code(std::errc::invalid_argument);
  if (st.st_nlink > 1) return std::make_error_code(std::errc::too_many_links);
  src.fd = ::openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (src.fd < 0) return last_error();
  // The file opened is the one looked at (not another put under the name meanwhile).
  struct stat opened {};
  if (::fstat(src.fd, &opened) != 0) return last_error();
  if (opened.st_ino != st.st_ino || opened.st_dev != st.st_dev) return std::make_error_code(std::errc::resource_unavailable_try_again);
  return {};
}

// The new file beside `name` that pack and unpack fill (`fd`, not owned: the caller closes it or
// hands it over); removed again unless rename_over() put it in the original's place.
struct file_beside {
  int dirfd;
  std::string name;
  int fd;
  bool placed = false;
  file_beside(int d, const char* tool, int flags) : dirfd(d) {
    static std::atomic<unsigned> counter{0};
    name = std::string(".qzfs-") + tool + "." + std::to_string(::getpid()) + "." + std::to_string(counter++);
    fd = ::openat(dirfd, name.c_str(), flags | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  }
  file_beside(const file_beside&) = delete;
  file_beside& operator=(const file_beside&) = delete;
  ~file_beside() {
    if (fd >= 0 && !placed) ::unlinkat(dirfd, name.c_str(), 0);
  }
  std::error_code rename_over(const char* target) {
    if (::renameat(dirfd, name.c_str(), dirfd, target) != 0) return last_error();
    placed = true;
    (void)::fsync(dirfd);
    return {};
  }
};

}  // namespace

std::error_code peek_logical_size(int fd, std::uint64_t backing_size, std::uint64_t& out, bool* container) noexcept {
  out = backing_size;
  if (container != nullptr) *container = false;
  std::byte head[format::container_header_size] = {};
  const ssize_t n = backing_size == 0 ? 0 : ::pread(fd, head, sizeof head, 0);
  if (n < 0) return last_error();
  const auto got = static_cast<std::size_t>(n);
  const bool magic = format::has_container_magic(std::span(head, got)) ||
                     (got > format::slot_size && format::has_container_magic(std::span(head + format::slot_size, got - format::slot_size)));
  std::array<std::byte, format::slot_size> mk{};
  bool has_marker = false;
  if (!magic) {
    // Only a container whose first block is damaged has a marker but no magic.
    (void)read_marker(fd, mk, has_marker);
    if (!has_marker) return {};
  } else {
    (void)read_marker(fd, mk, has_marker);
  }
  if (container != nullptr) *container = true;
  std::uint64_t best = 0;
  out = 0;
  format::container_slot log;  // the newest slot (its sync log)
  if (format::container_slot s; has_marker && format::parse_slot(mk, s) == format::container_error::ok) {
    best = s.generation;
    out = s.logical_size;
    log = s;
  }
  for (std::size_t i = 0; i < 2; ++i) {
    format::container_slot s;
    if (got < (i + 1) * format::slot_size) continue;
    if (format::parse_slot(std::span(head + i * format::slot_size, format::slot_size), s) != format::container_error::ok) continue;
    if (s.generation <= best) continue;
    best = s.generation;
    out = s.logical_size;
    log = s;
  }
  // A sync log (a file not closed since it was fsynced through one): the size its batches left.
  if (log.log_len != 0 && log.log_len <= backing_size && log.log_offset <= backing_size - log.log_len) {
    std::vector<std::byte> region(log.log_len);
    const ssize_t r = ::pread(fd, region.data(), region.size(), static_cast<off_t>(log.log_offset));
    if (r > 0) {
      const log_scan scan = scan_log(std::span(region).first(static_cast<std::size_t>(r)), best, nullptr);
      if (scan.batches > 0) out = std::max(out, scan.size);
    }
  }
  // No valid slot in a container longer than its header: damaged, and its size is unknown (the
  // backing size would be the stored one, never the logical one). A torn creation reads as empty.
  if (best == 0 && (backing_size > format::container_header_size || has_marker)) return std::make_error_code(std::errc::io_error);
  return {};
}

std::error_code pack_file(int dirfd, const char* name, const options& o) {
  struct stat st {};
  fd_closer source;
  if (auto ec = open_sole(dirfd, name, st, source)) return ec;
  const int src = source.fd;
  std::byte head[format::container_header_size];
  const ssize_t h = ::pread(src, head, sizeof head, 0);
  if (h < 0) return last_error();
  if (format::has_container_magic(std::span(head, static_cast<std::size_t>(h))) ||
      (h > static_cast<ssize_t>(format::slot_size) &&
       format::has_container_magic(std::span(head + format::slot_size, static_cast<std::size_t>(h) - format::slot_size)))) {
    return std::make_error_code(std::errc::file_exists);
  }

  file_beside dst(dirfd, "pack", O_RDWR);
  if (dst.fd < 0) return last_error();
  std::unique_ptr<file> f;
  if (auto ec = file::create(std::make_unique<fd_io>(dst.fd), o, f)) return ec;  // the io owns dst.fd now
  std::vector<std::byte> buf(std::size_t{f->record_size()} * 8);
  for (std::uint64_t off = 0;;) {
    const ssize_t n = ::pread(src, buf.data(), buf.size(), static_cast<off_t>(off));
    if (n < 0) {
      if (errno == EINTR) continue;
      return last_error();
    }
    if (n == 0) break;
    if (auto ec = f->pwrite(std::span(buf).first(static_cast<std::size_t>(n)), off)) return ec;
    off += static_cast<std::uint64_t>(n);
  }
  if (f->size() != static_cast<std::uint64_t>(st.st_size)) return std::make_error_code(std::errc::resource_unavailable_try_again);
  if (auto ec = f->sync()) return ec;
  if (auto ec = take_over(src, dst.fd, st)) return ec;
  f.reset();
  return dst.rename_over(name);
}

// unpack and recompress read the container `name` under `dirfd`: open_sole's checks, then the
// file opened again as a store file, read-only (opening recovers in memory and writes nothing).
// `plain` for a plain file (ENOTSUP or EEXIST).
static std::error_code open_container(int dirfd, const char* name, const options& o, std::errc plain, struct stat& st,
                                      fd_closer& source, std::unique_ptr<file>& out) {
  if (auto ec = open_sole(dirfd, name, st, source)) return ec;
  bool container = false;
  std::uint64_t logical = 0;
  if (auto ec = peek_logical_size(source.fd, static_cast<std::uint64_t>(st.st_size), logical, &container)) return ec;
  if (!container) return std::make_error_code(plain);
  const int rfd = ::fcntl(source.fd, F_DUPFD_CLOEXEC, 0);
  if (rfd < 0) return last_error();
  options ro = o;
  ro.convert_plain = false;
  return file::open(std::make_unique<fd_io>(rfd), ro, out);
}

std::error_code recompress_file(int dirfd, const char* name, const options& o,
                                const std::function<std::error_code(int, std::uint32_t)>& finish,
                                const std::function<void(std::uint64_t)>& step) {
  struct stat st {};
  fd_closer source;
  std::unique_ptr<file> from;
  if (auto ec = open_container(dirfd, name, o, std::errc::not_supported, st, source, from)) return ec;
  const int src = source.fd;

  file_beside dst(dirfd, "recompress", O_RDWR);
  if (dst.fd < 0) return last_error();
  const int dst_fd = dst.fd;
  options wo = o;
  if (wo.record_size == 0) wo.record_size = from->record_size();
  std::unique_ptr<file> to;
  if (auto ec = file::create(std::make_unique<fd_io>(dst_fd), wo, to)) return ec;  // the io owns dst.fd now
  // A part at a time (whole records of the new size); parts of zeros (holes) stay holes.
  std::vector<std::byte> buf(std::max<std::size_t>(std::size_t{to->record_size()} * 8, 1 << 20));
  const std::uint64_t size = from->size();
  for (std::uint64_t off = 0; off < size;) {
    std::size_t got = 0;
    const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), size - off));
    if (auto ec = from->pread(std::span(buf).first(want), off, got)) return ec;
    if (got == 0) return std::make_error_code(std::errc::io_error);
    const auto part = std::span(buf).first(got);
    if (std::any_of(part.begin(), part.end(), [](std::byte b) { return b != std::byte{0}; })) {
      if (auto ec = to->pwrite(part, off)) return ec;
    }
    off += got;
    if (step) step(got);
  }
  if (auto ec = to->truncate(size)) return ec;  // a hole at the end
  if (auto ec = to->sync()) return ec;
  if (auto ec = take_over(src, dst_fd, st)) return ec;
  if (finish) {
    if (auto ec = finish(dst_fd, wo.record_size)) return ec;
  }
  if (::fsync(dst_fd) != 0) return last_error();
  to.reset();
  from.reset();
  return dst.rename_over(name);
}

std::error_code unpack_file(int dirfd, const char* name, const options& o) {
  struct stat st {};
  fd_closer source;
  std::unique_ptr<file> f;
  if (auto ec = open_container(dirfd, name, o, std::errc::file_exists, st, source, f)) return ec;
  const int src = source.fd;

  file_beside beside(dirfd, "unpack", O_WRONLY);
  if (beside.fd < 0) return last_error();
  fd_closer dst_closer;
  dst_closer.fd = beside.fd;
  const int dst = beside.fd;
  // Record by record; a record of zeros (a hole, or zeros written) is left a hole.
  std::vector<std::byte> buf(f->record_size());
  for (std::uint64_t off = 0; off < f->size();) {
    std::size_t got = 0;
    const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), f->size() - off));
    if (auto ec = f->pread(std::span(buf).first(want), off, got)) return ec;
    if (got == 0) return std::make_error_code(std::errc::io_error);
    const auto chunk = std::span(buf).first(got);
    if (std::any_of(chunk.begin(), chunk.end(), [](std::byte b) { return b != std::byte{0}; })) {
      for (std::size_t done = 0; done < got;) {
        const ssize_t n = ::pwrite(dst, chunk.data() + done, got - done, static_cast<off_t>(off + done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return n < 0 ? last_error() : std::make_error_code(std::errc::io_error);
        done += static_cast<std::size_t>(n);
      }
    }
    off += got;
  }
  if (::ftruncate(dst, static_cast<off_t>(f->size())) != 0) return last_error();
  if (auto ec = take_over(src, dst, st)) return ec;
  f.reset();
  return beside.rename_over(name);
}

}  // namespace qzfs::store
